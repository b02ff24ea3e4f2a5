"""
Tests for L{artcast.server.feeds.repair}: the receiving half of repair,
driven by a simulated source that answers NACKs as C{docs/protocol.md}
says, through a seeded loss, reorder and duplication injector, to three
servers, all on one L{Clock}.
"""

from __future__ import annotations

from random import Random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.feeds.repair import RepairEngine
from artcast.server.feeds.reception import SourceTracker
from artcast.server.store import Datum, KeyStore
from artcast.wire import (
    MAX_RANGES,
    DataMessage,
    Confirm,
    Gone,
    Heartbeat,
    Stamp,
    batchItem,
    encodeBatch,
    encodeConfirm,
    encodeData,
    encodeGone,
    encodeHeartbeat,
    parseNack,
)

SOURCE = "oslo"
BOOT = 1795312345123
SOURCE_ADDRESS = ("10.0.0.9", 40000)
KEY = b"k" * 32


class Network:
    """
    A seeded injector between one source and several servers: each
    datagram to each server (and each NACK to the source) is lost with
    probability C{loss}, delayed 1-9 ms (so reordered) and duplicated with
    probability C{duplicate}.
    """

    def __init__(self, clock: Clock, seed: int, loss: float = 0.0,
                 duplicate: float = 0.0) -> None:
        self.clock = clock
        self.random = Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.servers: list[DatagramHandler] = []
        self.source: SimulatedSource | None = None
        self.lost = 0

    def _carry(self, deliver: Any, *args: Any) -> None:
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            if self.random.random() < self.loss:
                self.lost += 1
                continue
            self.clock.callLater(self.random.uniform(0.001, 0.009), deliver, *args)

    def multicast(self, data: bytes) -> None:
        """
        The source sends C{data} to the group.
        """
        for server in self.servers:
            self._carry(server.dataReceived, data, SOURCE_ADDRESS)

    def unicast(self, data: bytes, address: tuple[str, int]) -> None:
        """
        A server sends a NACK to C{address}.
        """
        assert address == SOURCE_ADDRESS
        assert self.source is not None
        self._carry(self.source.nackReceived, data)


class SimulatedSource:
    """
    A repairing source: keeps every datagram it sent by sequence number
    (the last C{window}), answers a NACK with an NCF for the asked seqs it
    holds and did not re-send in the last 10 ms, then their original
    datagrams, a gone for seqs below its window and a heartbeat for seqs
    above its last; heartbeats 0.2 s after its last datum, doubling.
    """

    def __init__(self, network: Network, clock: Clock, signingKey: bytes | None = None,
                 window: int = 100_000, answer: bool = True) -> None:
        self.network = network
        self.clock = clock
        self.signingKey = signingKey
        self.window = window
        self.answer = answer
        self.sent: dict[int, bytes] = {}
        self.repaired: dict[int, float] = {}
        self.last = 0
        self.nacks: list[Any] = []
        self._heartbeat: Any = None
        network.source = self

    def _stamp(self, seq: int = 0) -> Stamp:
        return Stamp(SOURCE, BOOT, seq, self.clock.seconds())

    def send(self, value: object, key: str = "k") -> None:
        """
        Send one datum (its datagram may be lost on the way).
        """
        self.last += 1
        [datagram] = encodeData(key, value, self._stamp(self.last), self.signingKey,
                                repairable=True)
        self.keep(self.last, datagram)
        self.network.multicast(datagram)
        self._idle()

    def sendBatch(self, values: list[object]) -> None:
        """
        Send several datums in one batch datagram.
        """
        first = self.last + 1
        datagram = encodeBatch([batchItem("k", value) for value in values],
                               self._stamp(first), self.signingKey)
        for seq in range(first, first + len(values)):
            self.keep(seq, datagram)
        self.last += len(values)
        self.network.multicast(datagram)
        self._idle()

    def keep(self, seq: int, datagram: bytes) -> None:
        self.sent[seq] = datagram
        self.sent.pop(seq - self.window, None)

    def _idle(self, delay: float = 0.2) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        if delay <= 10.0:
            self._heartbeat = self.clock.callLater(delay, self._beat, delay)

    def _beat(self, delay: float) -> None:
        self.network.multicast(encodeHeartbeat(self._stamp(), self.last, self.signingKey))
        self._idle(delay * 2)

    def nackReceived(self, data: bytes) -> None:
        nack = parseNack(data, self.signingKey)
        self.nacks.append(nack)
        if not self.answer:
            return
        now = self.clock.seconds()
        confirm, gone, repairs, above = [], [], [], False
        for first, last in nack.ranges:
            for seq in range(first, last + 1):
                if seq > self.last:
                    above = True
                elif seq not in self.sent:
                    gone.append(seq)
                elif now - self.repaired.get(seq, -1.0) >= 0.01:
                    confirm.append(seq)
                    self.repaired[seq] = now
                    if self.sent[seq] not in repairs:
                        repairs.append(self.sent[seq])
        if confirm:
            self.network.multicast(
                encodeConfirm(self._stamp(), _ranges(confirm), self.signingKey)
            )
        for datagram in repairs:
            self.network.multicast(datagram)
        if gone:
            self.network.multicast(encodeGone(self._stamp(), _ranges(gone), self.signingKey))
        if above:
            self.network.multicast(encodeHeartbeat(self._stamp(), self.last, self.signingKey))


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and ranges[-1][1] + 1 == seq:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges[:MAX_RANGES]


class ArtcastSource:
    """
    The source side Artcast's sources run (L{artcast.repair.RepairEngine},
    sans-IO), batching included, on the simulated network and clock.
    """

    def __init__(self, network: Network, clock: Clock, **options: Any) -> None:
        from artcast.repair import RepairEngine as SourceEngine

        self.network = network
        self.clock = clock
        self.engine = SourceEngine(SOURCE, BOOT, **options)
        self.seq = 0
        self._tick: Any = None
        network.source = self  # type: ignore[assignment]

    def _send(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            self.network.multicast(datagram)
        self._schedule()

    def _schedule(self) -> None:
        if self._tick is not None and self._tick.active():
            self._tick.cancel()
        now = self.clock.seconds()
        deadline = self.engine.nextDeadline(now)
        if deadline is not None:
            self._tick = self.clock.callLater(max(0.0, deadline - now), self._ticked)

    def _ticked(self) -> None:
        self._tick = None
        self._send(self.engine.tick(self.clock.seconds()))

    def send(self, value: object) -> None:
        self.seq += 1
        self._send(self.engine.datum("k", value, Stamp(SOURCE, BOOT, self.seq,
                                                       self.clock.seconds())))

    def nackReceived(self, data: bytes) -> None:
        self._send(self.engine.nack(data, self.clock.seconds()))


class Server:
    """
    A server: a store, a handler whose NACKs go on the network, and the
    datums of key C{k} as the store got them.
    """

    def __init__(self, clock: Clock, network: Network, seed: int, **options: Any) -> None:
        self.store = KeyStore(clock, history=100_000, maxKeys=10)
        self.handler = DatagramHandler(self.store, clock, random=Random(seed), **options)
        self.handler.nacks.transport = _Transport(network)
        self.got: list[Datum] = []
        self.store.subscribe("k", self.got.append)
        network.servers.append(self.handler)

    @property
    def seqs(self) -> list[int]:
        return [datum.seq for datum in self.got]

    @property
    def repair(self) -> dict[str, Any]:
        return self.handler.repair.statistics()["repair"]


class _Transport:
    def __init__(self, network: Network) -> None:
        self.network = network
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        self.written.append((data, address))
        self.network.unicast(data, address)


def _run(clock: Clock, seconds: float, step: float = 0.001) -> None:
    """
    Advance C{clock} by C{seconds} in steps (each step runs what is due).
    """
    for _ in range(int(seconds / step)):
        clock.advance(step)


class LossyNetworkTests(SynchronousTestCase):
    """
    Three servers behind a seeded loss, reorder and duplication injector get
    every datum of a repairing source, in order, once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1795312399.0)

    def build(self, loss: float, seed: int = 1, duplicate: float = 0.0,
              signingKey: bytes | None = None, **options: Any) -> None:
        self.network = Network(self.clock, seed, loss=loss, duplicate=duplicate)
        self.source = SimulatedSource(self.network, self.clock, signingKey, **options)
        keys = {} if signingKey is None else {"signingKeys": [signingKey]}
        self.servers = [Server(self.clock, self.network, seed * 10 + i, **keys)
                        for i in range(3)]

    def prime(self) -> None:
        """
        Send the first datum without loss: a server delivers a source from
        the first datum it hears, and one heard first out of order is
        delivered as it comes.
        """
        loss, self.network.loss = self.network.loss, 0.0
        self.source.send(0)
        _run(self.clock, 0.01)
        self.network.loss = loss

    def sendAll(self, count: int, rate: float = 1000.0) -> None:
        self.prime()
        for index in range(1, count):
            self.source.send(index)
            _run(self.clock, 1 / rate)
        _run(self.clock, 15.0, step=0.005)

    def test_everyDatumInOrder(self) -> None:
        """
        At 10 % loss both ways, with reordering and duplicates, each server
        delivers 1..N in order without a duplicate or an unrecoverable
        datum, and some NACKs are suppressed by another server's NCF.
        """
        self.build(loss=0.10, duplicate=0.02)
        self.sendAll(1000)
        for server in self.servers:
            self.assertEqual(server.seqs, list(range(1, 1001)))
            self.assertEqual({datum.lost for datum in server.got}, {0})
            self.assertEqual(server.repair["unrecoverable"], 0)
            self.assertEqual(server.repair["repairHeld"], 0)
            self.assertGreater(server.repair["repairsReceived"], 0)
            self.assertEqual(server.repair["repairLatency"]["count"],
                             server.repair["repairsReceived"])
        self.assertGreater(sum(s.repair["nacksSuppressed"] for s in self.servers), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_suppressionKeepsNacksFew(self) -> None:
        """
        At 20 % loss, the servers together send fewer NACKs than the
        datagrams they found missing (the bench's goal is at most 1.5).
        """
        self.build(loss=0.20, seed=3)
        self.sendAll(500)
        gaps = sum(s.repair["repairGaps"] for s in self.servers)
        nacks = sum(s.repair["nacksSent"] for s in self.servers)
        self.assertGreater(gaps, 0)
        self.assertLessEqual(nacks / gaps, 1.5)
        for server in self.servers:
            self.assertEqual(server.seqs, list(range(1, 501)))

    def test_batchesAndSignatures(self) -> None:
        """
        Batches of a signed source are repaired whole, and the NACKs are
        signed with the source's key (the source refuses others).
        """
        self.build(loss=0.15, seed=5, signingKey=KEY)
        self.source.sendBatch([-2, -1, 0])
        _run(self.clock, 0.01)
        for index in range(200):
            self.source.sendBatch([index * 3, index * 3 + 1, index * 3 + 2])
            _run(self.clock, 0.003)
        _run(self.clock, 15.0, step=0.005)
        self.assertTrue(self.source.nacks)
        for server in self.servers:
            self.assertEqual(server.seqs, list(range(1, 604)))

    def test_withArtcastSources(self) -> None:
        """
        Against the source side Artcast's sources run (window, NCF, repairs
        at a bounded rate, gone, heartbeats, batches at 2,000 datums/s), at
        20 % loss both ways, each server delivers every datum in order.
        """
        self.network = Network(self.clock, 9, loss=0.20, duplicate=0.01)
        self.source = ArtcastSource(self.network, self.clock)  # type: ignore[assignment]
        self.servers = [Server(self.clock, self.network, 90 + i) for i in range(3)]
        loss, self.network.loss = self.network.loss, 0.0
        self.source.send(0)
        _run(self.clock, 0.02)
        self.network.loss = loss
        for index in range(1, 2000):
            self.source.send(index)
            _run(self.clock, 0.0005, step=0.0005)
        _run(self.clock, 15.0, step=0.005)
        self.assertGreater(self.source.engine.batchesSent, 0)  # type: ignore[attr-defined]
        for server in self.servers:
            self.assertEqual(server.seqs, list(range(1, 2001)))
            self.assertEqual(server.repair["unrecoverable"], 0)
        gaps = sum(s.repair["repairGaps"] for s in self.servers)
        nacks = sum(s.repair["nacksSent"] for s in self.servers)
        self.assertLessEqual(nacks / gaps, 1.5)

    def test_tailLoss(self) -> None:
        """
        A burst's last datum lost to one server is found by the source's
        heartbeat, NACKed and repaired.
        """
        self.build(loss=0.0)
        self.prime()
        for index in range(1, 5):
            self.source.send(index)
        self.network.loss = 1.0
        self.source.send(5)
        self.network.loss = 0.0
        _run(self.clock, 1.0)
        for server in self.servers:
            self.assertEqual(server.seqs, [1, 2, 3, 4, 5, 6])
            self.assertEqual(server.repair["repairsReceived"], 1)

    def loseSecondAtOneServer(self) -> None:
        """
        Keep one server; send datums 0, 1 and 2 (seqs 1 to 3), the second
        lost on the way.
        """
        self.servers = self.servers[:1]
        self.network.servers[1:] = []
        self.source.send(0)
        self.network.loss = 1.0
        self.source.send(1)
        self.network.loss = 0.0
        self.source.send(2)

    def test_unrecoverableAfterRetries(self) -> None:
        """
        A source that never answers is NACKed for the configured rounds,
        then the hole is declared unrecoverable and the datums held behind
        it are delivered, marked with the loss.
        """
        self.build(loss=0.0, answer=False)
        self.loseSecondAtOneServer()
        _run(self.clock, 0.5)
        server = self.servers[0]
        self.assertEqual(server.seqs, [1])
        self.assertEqual(server.repair["repairHeld"], 1)
        _run(self.clock, 30.0, step=0.01)
        self.assertEqual(server.seqs, [1, 3])
        self.assertEqual([datum.lost for datum in server.got], [0, 1])
        self.assertEqual(server.repair["nacksSent"], 16)
        self.assertEqual(server.repair["unrecoverable"], 1)
        self.assertEqual(server.repair["sources"][SOURCE]["unrecoverable"], 1)
        self.assertEqual(len(self.source.nacks), 16)
        self.assertEqual(server.handler.repair._sources, {})

    def test_goneDeclaresAtOnce(self) -> None:
        """
        Seqs the source no longer holds are answered gone, declared
        unrecoverable after one NACK, and what was held is delivered.
        """
        self.build(loss=0.0, window=1)
        self.loseSecondAtOneServer()
        self.source.send(3)
        _run(self.clock, 0.2)
        server = self.servers[0]
        self.assertEqual(server.seqs, [1, 3, 4])
        self.assertEqual([datum.lost for datum in server.got], [0, 1, 1])
        self.assertEqual(server.repair["nacksSent"], 1)


class EngineTests(SynchronousTestCase):
    """
    The engine alone, fed by hand: timers, suppression, bounds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.tracker = SourceTracker(self.clock, maxHoles=1000)
        self.delivered: list[tuple[int, int]] = []
        self.nacks: list[tuple[bytes, tuple[str, int]]] = []
        self.engine = RepairEngine(
            self.tracker, self.deliver, self.clock,
            lambda data, address: self.nacks.append((data, address)), Random(7),
            maxHeld=20, holdMemory=100_000,
        )

    def deliver(self, message: DataMessage, lost: int) -> None:
        assert message.stamp is not None
        self.delivered.append((message.stamp.seq, lost))

    def feed(self, seq: int, source: str = SOURCE, repairable: bool = True,
             boot: int = BOOT, value: object = 0) -> str:
        """
        Judge and hand on a datum as the handler does.
        """
        message = DataMessage("k", value, Stamp(source, boot, seq, 1000.0), repairable)
        verdict = self.tracker.check(message.stamp)  # type: ignore[arg-type]
        if verdict == "ok" and not self.tracker.holding:
            self.deliver(message, self.tracker.lost)
        elif verdict not in ("replayed", "stale"):
            self.engine.datum(message, verdict, SOURCE_ADDRESS)
        return verdict

    def test_oneTimerPerSourceWithHoles(self) -> None:
        """
        A source without holes has no timer; one with holes has one, however
        many holes; it goes when the holes do.
        """
        for seq in (1, 2, 3):
            self.feed(seq)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for seq in (5, 7, 9):
            self.feed(seq)
        self.feed(1, source="other")
        self.feed(3, source="other")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        for seq in (4, 6, 8):
            self.feed(seq)
        self.assertEqual([seq for seq, _ in self.delivered if seq > 3][:6], [4, 5, 6, 7, 8, 9])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_nackAfterBackoffWithRanges(self) -> None:
        """
        One NACK per source per round lists its due holes as ranges, sent to
        the source's address, within the back-off.
        """
        self.feed(1)
        self.feed(4)
        self.feed(6)
        self.clock.advance(0.02)
        [(data, address)] = self.nacks
        self.assertEqual(address, SOURCE_ADDRESS)
        nack = parseNack(data)
        self.assertEqual((nack.source, nack.boot, nack.ranges), (SOURCE, BOOT, ((2, 3), (5, 5))))

    def test_atMost64Ranges(self) -> None:
        """
        More than 64 holes due are asked in two rounds: 64 ranges first.
        """
        self.engine.maxHeld = 1000
        for seq in range(1, 200, 2):
            self.feed(seq)
        self.clock.advance(0.02)
        self.assertEqual(len(parseNack(self.nacks[0][0]).ranges), MAX_RANGES)
        self.clock.advance(0.04)
        self.assertEqual(parseNack(self.nacks[1][0]).ranges[0], (2 * MAX_RANGES + 2,) * 2)

    def test_confirmSuppresses(self) -> None:
        """
        An NCF for a hole in back-off stands for this server's NACK: none is
        sent, the suppression is counted, and the repair is awaited.
        """
        self.feed(1)
        self.feed(3)
        self.engine.confirm(_parse(encodeConfirm(Stamp(SOURCE, BOOT, 0, 1000.0), [(2, 2)])))
        self.clock.advance(0.03)
        self.assertEqual(self.nacks, [])
        self.assertEqual(self.engine.totals["nacksSuppressed"], 1)
        self.feed(2)
        self.assertEqual(self.delivered, [(1, 0), (2, 0), (3, 0)])
        self.assertEqual(self.engine.totals["repairsReceived"], 1)

    def test_notRepairingWaitsReorderWindow(self) -> None:
        """
        A hole of a source without C{"r":1} is never NACKed: a reordered
        datum is delivered in order within the window, a lost one declared
        after it.
        """
        self.feed(1, repairable=False)
        self.feed(3, repairable=False)
        self.feed(2, repairable=False)
        self.assertEqual([seq for seq, _ in self.delivered], [1, 2, 3])
        self.assertEqual(self.engine.reordered, 1)
        self.feed(5, repairable=False)
        self.clock.advance(0.049)
        self.assertEqual(len(self.delivered), 3)
        self.clock.advance(0.002)
        self.assertEqual(self.delivered[-1], (5, 1))
        self.assertEqual(self.nacks, [])

    def test_disabled(self) -> None:
        """
        With repair off (C{--no-repair}) a repairing source is not NACKed
        either, and C{enabled} says so.
        """
        engine = RepairEngine(self.tracker, self.deliver, self.clock,
                              lambda *args: self.nacks.append(args), enabled=False)
        self.engine = engine
        self.feed(1)
        self.feed(3)
        self.clock.advance(1)
        self.assertEqual(self.nacks, [])
        self.assertEqual(self.delivered, [(1, 0), (3, 1)])
        self.assertFalse(engine.statistics()["repair"]["enabled"])

    def test_heldBounded(self) -> None:
        """
        A flood of gaps holds at most C{maxHeld} datums of a source: past
        it, the oldest holes are declared and what they held delivered, in
        order.
        """
        for seq in range(1, 400, 2):
            self.feed(seq)
            self.assertLessEqual(self.engine.held, 20)
        seqs = [seq for seq, _ in self.delivered]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(seqs) + self.engine.held, 200)
        losts = [lost for _, lost in self.delivered]
        self.assertEqual(losts, sorted(losts))

    def test_memoryBounded(self) -> None:
        """
        Held datums of all sources stay within C{holdMemory} bytes, the
        source holding the most giving way.
        """
        self.engine.holdMemory = 5_000
        self.feed(1, source="small")
        self.feed(3, source="small")
        for seq in range(1, 100, 2):
            self.feed(seq, value="x" * 500)
            self.assertLessEqual(self.engine.heldBytes, 5_000)
        self.assertNotIn(("small", 3), self.delivered)
        self.assertEqual(len(self.tracker.holes("small")), 1)

    def test_forgedSeqHoldsNothing(self) -> None:
        """
        A gap too large to hold (a forged seq of 2**63-1) is declared at
        once with every hole, releasing everything held, in order.
        """
        for seq in (1, 3, 4, 6):
            self.feed(seq)
        self.assertEqual(self.feed(2**63 - 1), "gap")
        self.assertEqual([seq for seq, _ in self.delivered], [1, 3, 4, 6, 2**63 - 1])
        self.assertEqual([lost for _, lost in self.delivered],
                         [0, 1, 1, 2, 2 + (2**63 - 2 - 6)])
        self.assertEqual(self.engine.held, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_newBootReleases(self) -> None:
        """
        A new boot declares the old boot's holes unrecoverable and delivers
        what was held of it before its own datum.
        """
        self.feed(1)
        self.feed(3)
        self.feed(4)
        self.assertEqual(self.feed(1, boot=BOOT + 1), "restart")
        self.assertEqual(self.delivered, [(1, 0), (3, 1), (4, 1), (1, 0)])
        self.assertEqual(self.engine.totals["unrecoverable"], 1)

    def test_heartbeatBelowHolesRemovesThem(self) -> None:
        """
        A heartbeat naming a last seq below the tail holes a previous one
        made removes them: they were never sent, nothing is declared.
        """
        from artcast.wire import Heartbeat

        self.feed(1)
        self.engine.heartbeat(Heartbeat(Stamp(SOURCE, BOOT, 0, 1000.0), 5), SOURCE_ADDRESS)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.engine.heartbeat(Heartbeat(Stamp(SOURCE, BOOT, 0, 1000.0), 1), SOURCE_ADDRESS)
        self.assertEqual(self.tracker.holes(SOURCE), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.feed(2), "ok")
        self.assertEqual(self.delivered, [(1, 0), (2, 0)])

    def test_firstDatumRepaired(self) -> None:
        """
        A source that heartbeats when it starts (C{last} 0) has its first
        datum NACKed when it is lost.
        """
        self.engine.heartbeat(Heartbeat(Stamp(SOURCE, BOOT, 0, 1000.0), 0), SOURCE_ADDRESS)
        self.feed(2)
        self.clock.advance(0.02)
        self.assertEqual(parseNack(self.nacks[0][0]).ranges, ((1, 1),))
        self.feed(1)
        self.assertEqual(self.delivered, [(1, 0), (2, 0)])

    def test_heartbeatOfNewBootReleases(self) -> None:
        """
        A new boot's heartbeat hands on what was held of the old boot, with
        its loss, and NACKs the new boot's datums it names.
        """
        self.feed(1)
        self.feed(3)
        self.engine.heartbeat(Heartbeat(Stamp(SOURCE, BOOT + 1, 0, 1000.0), 1),
                              SOURCE_ADDRESS)
        self.assertEqual(self.delivered, [(1, 0), (3, 1)])
        self.clock.advance(0.02)
        nack = parseNack(self.nacks[-1][0])
        self.assertEqual((nack.boot, nack.ranges), (BOOT + 1, ((1, 1),)))

    def test_gone(self) -> None:
        """
        A gone declares what it names at once.
        """
        self.feed(1)
        self.feed(4)
        self.engine.gone(_parse(encodeGone(Stamp(SOURCE, BOOT, 0, 1000.0), [(1, 2)])))
        self.assertEqual(self.delivered, [(1, 0)])
        self.engine.gone(_parse(encodeGone(Stamp(SOURCE, BOOT, 0, 1000.0), [(3, 3)])))
        self.assertEqual(self.delivered, [(1, 0), (4, 2)])

    def test_forgottenSourceReleased(self) -> None:
        """
        A source the tracker forgets has what it held handed on, its timer
        cancelled and its counters dropped (the totals keep them).
        """
        self.tracker = SourceTracker(self.clock, maxSources=1, maxHoles=1000,
                                     forgetting=lambda *args: self.engine.forgetting(*args))
        self.engine.tracker = self.tracker
        self.feed(1)
        self.feed(3)
        self.assertEqual(self.delivered, [(1, 0)])
        self.feed(1, source="other")
        self.assertEqual(self.delivered, [(1, 0), (3, 1), (1, 0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.engine.statistics()["repair"]["sources"], {})
        self.assertEqual(self.engine.totals["repairGaps"], 1)

    def test_latencyReservoir(self) -> None:
        """
        Repair latencies are kept for the last 1,024 repairs; p50 and p99
        are read from them.
        """
        self.feed(1)
        self.feed(3)
        self.clock.advance(0.02)
        self.clock.advance(0.01)
        self.feed(2)
        latency = self.engine.statistics()["repair"]["repairLatency"]
        self.assertEqual(latency["count"], 1)
        self.assertAlmostEqual(latency["p50"], 0.03)
        self.assertAlmostEqual(latency["p99"], 0.03)


def _parse(data: bytes) -> Any:
    from artcast.wire import parseData

    return parseData(data)


_SEQ = st.integers(1, 40)
_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("datum"), _SEQ, st.booleans()),
        st.tuples(st.just("heartbeat"), st.integers(0, 45)),
        st.tuples(st.just("ncf"), _SEQ, st.integers(0, 5)),
        st.tuples(st.just("gone"), _SEQ, st.integers(0, 5)),
        st.tuples(st.just("wait"), st.sampled_from([0.001, 0.01, 0.03, 0.1, 1.0])),
        st.tuples(st.just("restart")),
    ),
    max_size=80,
)


class InvariantTests(SynchronousTestCase):
    """
    Whatever arrives, in whatever order, the engine hands datums on in
    order, once, each with the count of the datums before it that were
    declared unrecoverable, and holds nothing once the waits are over.
    """

    @settings(max_examples=300, deadline=None)
    @given(_OPERATIONS, st.integers(1, 30))
    def test_inOrderOnceLostExact(self, operations: list[tuple], maxHeld: int) -> None:
        """
        Delivered C{(boot, seq)} strictly increase across restarts, each
        datum's C{lost} is the number of seqs of its boot below it never
        delivered, and at the end nothing is held and no timer is left.
        """
        clock = Clock()
        clock.advance(1000)
        # Holes up to 50 (no gap too large to hold, so nothing is "late"),
        # held datums bounded lower.
        tracker = SourceTracker(clock, maxHoles=50)
        delivered: list[tuple[int, int, int]] = []
        boots = [BOOT]

        def deliver(message: DataMessage, lost: int) -> None:
            stamp = message.stamp
            assert stamp is not None
            delivered.append((stamp.boot, stamp.seq, lost))

        engine = RepairEngine(tracker, deliver, clock, lambda *args: None, Random(3),
                              maxHeld=maxHeld, holdMemory=20_000)

        def stamp(seq: int = 0) -> Stamp:
            return Stamp(SOURCE, boots[-1], seq, 1000.0)

        def datum(seq: int, repairable: bool) -> None:
            message = DataMessage("k", "v" * 100, stamp(seq), repairable)
            verdict = tracker.check(message.stamp)  # type: ignore[arg-type]
            if verdict == "ok" and not tracker.holding:
                deliver(message, tracker.lost)
            elif verdict not in ("replayed", "stale"):
                engine.datum(message, verdict, SOURCE_ADDRESS)

        datum(1, True)
        for operation in operations:
            kind = operation[0]
            if kind == "datum":
                datum(operation[1], operation[2])
            elif kind == "heartbeat":
                engine.heartbeat(Heartbeat(stamp(), operation[1]), SOURCE_ADDRESS)
            elif kind == "ncf":
                engine.confirm(Confirm(stamp(), ((operation[1], operation[1] + operation[2]),)))
            elif kind == "gone":
                engine.gone(Gone(stamp(), ((operation[1], operation[1] + operation[2]),)))
            elif kind == "restart":
                boots.append(boots[-1] + 1)
            else:
                clock.advance(operation[1])
            self.assertLessEqual(engine.held, maxHeld)
            self.assertLessEqual(engine.heldBytes, 20_000)
        for _ in range(100):
            clock.advance(1.0)
        ids = [(boot, seq) for boot, seq, _ in delivered]
        self.assertEqual(ids, sorted(set(ids)))
        got = set(ids)
        for boot, seq, lost in delivered:
            self.assertEqual(
                lost, sum(1 for s in range(1, seq) if (boot, s) not in got), delivered
            )
        self.assertEqual(engine.held, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
