"""
Tests for L{artcast.repair}: the sans-IO source side of repair, on a fake
clock.
"""

from __future__ import annotations

import math

import heapq
import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import artcast.repair
from artcast.repair import (
    BATCH_SIZE,
    HEARTBEAT_FIRST,
    HEARTBEAT_MAX,
    LINGER_HEARTBEAT,
    REPAIR_HOLDOFF,
    Batcher,
    HeartbeatSchedule,
    RepairEngine,
    SendWindow,
    TokenBucket,
)
from artcast.wire import (
    MAX_BATCH,
    Batch,
    Confirm,
    DataMessage,
    Fragment,
    Gone,
    Heartbeat,
    Stamp,
    encodeData,
    encodeNack,
    parseData,
    toRanges,
)
from tests.test_wire import PublicNamesTests

SRC = "oslo"
BOOT = 1795312345123
START = 1795312399.0


def stamp(seq: int, now: float = START) -> Stamp:
    """
    The stamp of datum C{seq} of the test source, sent at C{now}.
    """
    return Stamp(SRC, BOOT, seq, now)


def nack(*ranges: tuple[int, int], source: str = SRC, boot: int = BOOT,
         key: bytes | None = None) -> bytes:
    """
    A NACK for C{ranges}.
    """
    return encodeNack(source, boot, list(ranges), START, key)


class PublicNamesRepairTests(SynchronousTestCase):
    """
    C{__all__} of L{artcast.repair}.
    """

    def test_all(self) -> None:
        """
        C{__all__} names exactly the public names L{artcast.repair} defines.
        """
        PublicNamesTests("test_all").assertPublicNames(artcast.repair)


class SendWindowTests(SynchronousTestCase):
    """
    L{SendWindow}: what a source keeps and what it re-sends.
    """

    def test_boundedByCount(self) -> None:
        """
        The window keeps the last C{window} datums; a batch's seqs all count.
        """
        window = SendWindow(window=3)
        window.add(1, 1, [b"a"])
        window.add(2, 3, [b"batch"])
        window.add(4, 4, [b"d"])
        self.assertEqual((len(window), window.lowest, window.last), (3, 2, 4))
        window.add(5, 5, [b"e"])
        self.assertEqual((len(window), window.lowest), (2, 4))

    def test_boundedByBytes(self) -> None:
        """
        The window keeps at most C{windowBytes} bytes, a batch counted once,
        but always the newest datum whatever its size.
        """
        window = SendWindow(windowBytes=10)
        window.add(1, 4, [b"12345"])
        window.add(5, 5, [b"12345"])
        self.assertEqual((window.size, window.lowest), (10, 1))
        window.add(6, 6, [b"1"])
        self.assertEqual((window.size, window.lowest), (6, 5))
        window.add(7, 7, [b"x" * 50])
        self.assertEqual((window.size, window.lowest, len(window)), (50, 7, 1))

    def test_answer(self) -> None:
        """
        A NACK is answered with the original datagrams of the asked seqs (all
        fragments of a datum, the whole batch holding one), confirmed; seqs
        below the window are gone and seqs above the last ask a heartbeat.
        """
        window = SendWindow(window=4)
        window.add(1, 1, [b"one"])
        window.add(2, 2, [b"two"])
        window.add(3, 3, [b"3a", b"3b"])
        window.add(4, 5, [b"batch45"])
        window.add(6, 6, [b"six"])
        self.assertEqual(window.lowest, 3)
        answer = window.answer([(1, 3), (5, 5), (8, 9)], START)
        self.assertEqual(answer.datagrams, [b"3a", b"3b", b"batch45"])
        self.assertEqual(answer.confirmed, [(3, 3), (5, 5)])
        self.assertEqual(answer.gone, [(1, 2)])
        self.assertTrue(answer.heartbeat)
        plain = window.answer([(6, 6)], START)
        self.assertEqual((plain.datagrams, plain.confirmed, plain.gone, plain.heartbeat),
                         ([b"six"], [(6, 6)], [], False))

    def test_holdoff(self) -> None:
        """
        A datum is re-sent at most once per L{REPAIR_HOLDOFF}: a second NACK
        within it gets no repair and no NCF for that datum.
        """
        window = SendWindow()
        window.add(1, 1, [b"one"])
        window.add(2, 2, [b"two"])
        self.assertEqual(window.answer([(1, 1)], START).datagrams, [b"one"])
        again = window.answer([(1, 2)], START + REPAIR_HOLDOFF / 2)
        self.assertEqual((again.datagrams, again.confirmed), ([b"two"], [(2, 2)]))
        later = window.answer([(1, 2)], START + REPAIR_HOLDOFF * 1.01)
        self.assertEqual((later.datagrams, later.confirmed), ([b"one"], [(1, 1)]))

    def test_boundedWork(self) -> None:
        """
        A NACK for every seq there could be costs no more than the window:
        below it is one gone range, above it one heartbeat.
        """
        window = SendWindow(window=5)
        for seq in range(1, 11):
            window.add(seq, seq, [b"%d" % seq])
        answer = window.answer([(1, 2**63 - 1)], START)
        self.assertEqual(answer.datagrams, [b"6", b"7", b"8", b"9", b"10"])
        self.assertEqual((answer.confirmed, answer.gone, answer.heartbeat),
                         ([(6, 10)], [(1, 5)], True))

    def test_confirmedCapped(self) -> None:
        """
        An NCF names at most 64 ranges: past that the last range covers the
        rest.
        """
        window = SendWindow()
        for seq in range(1, 201):
            window.add(seq, seq, [b"x"])
        window.answer([(seq, seq) for seq in range(2, 129, 2)], START)
        answer = window.answer([(1, 200)], START)
        self.assertEqual(len(answer.datagrams), 136)
        self.assertEqual(len(answer.confirmed), 64)
        self.assertEqual(answer.confirmed[:2], [(1, 1), (3, 3)])
        self.assertEqual(answer.confirmed[-2:], [(125, 125), (127, 200)])

    def test_badBounds(self) -> None:
        """
        A window must hold at least one datum and one byte.
        """
        self.assertRaises(ValueError, SendWindow, window=0)
        self.assertRaises(ValueError, SendWindow, windowBytes=0)


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket}: repairs at a bounded rate.
    """

    def test_rate(self) -> None:
        """
        A burst goes at once; the rest follows at C{rate} per second, and
        L{TokenBucket.nextTime} says when.
        """
        bucket = TokenBucket(rate=100, burst=2)
        bucket.offer([b"a", b"b", b"c", b"d"])
        self.assertEqual(bucket.take(START), [b"a", b"b"])
        self.assertEqual(bucket.take(START), [])
        self.assertAlmostEqual(bucket.nextTime(START), START + 0.01)
        self.assertEqual(bucket.take(START + 0.01), [b"c"])
        self.assertEqual(bucket.take(START + 1), [b"d"])
        self.assertIsNone(bucket.nextTime(START + 1))

    def test_boundedQueue(self) -> None:
        """
        Repairs past the queue's limit are dropped and counted.
        """
        bucket = TokenBucket(rate=10, burst=1, limit=3)
        bucket.offer([b"1", b"2", b"3", b"4", b"5"])
        self.assertEqual((len(bucket), bucket.dropped), (3, 2))

    def test_defaults(self) -> None:
        """
        By default 2,000 datagrams per second, in bursts of 100, at least
        64 (a whole fragmented datum) whatever the rate.
        """
        self.assertEqual((TokenBucket().rate, TokenBucket().burst), (2000, 100))
        self.assertEqual(TokenBucket(rate=10).burst, 64)
        self.assertRaises(ValueError, TokenBucket, rate=0)


class HeartbeatScheduleTests(SynchronousTestCase):
    """
    L{HeartbeatSchedule}: 0.2 s after the last datum, doubling to 10 s.
    """

    def test_schedule(self) -> None:
        """
        One is due at once when the source starts, the next 0.2 s later;
        after a datum 0.2, 0.4, 0.8 ... s apart, up to 10 s; a datum starts
        over.
        """
        schedule = HeartbeatSchedule()
        self.assertTrue(schedule.due(START - 1000))
        schedule.sent(START - 1)
        self.assertAlmostEqual(schedule.next, START - 1 + HEARTBEAT_FIRST)
        schedule.datum(START)
        times = []
        now = START
        for _ in range(10):
            now = schedule.next
            self.assertFalse(schedule.due(now - 0.001))
            self.assertTrue(schedule.due(now))
            times.append(round(now - START, 6))
            schedule.sent(now)
        self.assertEqual(times, [0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 22.6, 32.6, 42.6, 52.6])
        schedule.datum(now)
        self.assertEqual(schedule.next, now + HEARTBEAT_FIRST)
        self.assertEqual((HEARTBEAT_FIRST, HEARTBEAT_MAX), (0.2, 10.0))


class BatcherTests(SynchronousTestCase):
    """
    L{Batcher}: the adaptive holdback.
    """

    def test_slowNotBatched(self) -> None:
        """
        Datums at most 200 a second are never batched.
        """
        batcher = Batcher()
        for seq in range(1, 5):
            self.assertEqual(batcher.add("k", seq, stamp(seq, START + seq * 0.0051)),
                             ([], False))
            batcher.previous = START + seq * 0.0051

    def test_fastBatched(self) -> None:
        """
        A datum sent sooner than 1/200 s after the previous opens a batch
        that the next ones join; it closes as one repairable batch datagram
        whose items have consecutive seqs and the batch's time.
        """
        batcher = Batcher()
        batcher.previous = START
        for seq in range(2, 5):
            self.assertEqual(batcher.add("k/%d" % seq, seq, stamp(seq, START + seq * 0.001)),
                             ([], True))
        self.assertEqual(batcher.deadline, START + 0.002 + 0.005)
        flushed = batcher.close()
        self.assertEqual((flushed.first, flushed.last, flushed.batched), (2, 4, True))
        [datagram] = flushed.datagrams
        batch = parseData(datagram)
        self.assertIsInstance(batch, Batch)
        self.assertTrue(batch.repairable)
        self.assertEqual([(m.key, m.value, m.stamp.seq, m.stamp.sent) for m in batch.messages()],
                         [("k/2", 2, 2, START + 0.002), ("k/3", 3, 3, START + 0.002),
                          ("k/4", 4, 4, START + 0.002)])
        self.assertIsNone(batcher.close())
        self.assertIsNone(batcher.deadline)

    def test_oneItemIsData(self) -> None:
        """
        A batch closed with one datum goes out as that datum's own
        repairable data datagram.
        """
        batcher = Batcher(signingKey=b"k")
        batcher.previous = START
        batcher.add("k", {"a": 1}, stamp(7, START))
        flushed = batcher.close()
        self.assertEqual(flushed.datagrams,
                         encodeData("k", {"a": 1}, stamp(7, START), b"k", repairable=True))
        self.assertFalse(flushed.batched)

    def test_full(self) -> None:
        """
        A datum that would make the batch larger than C{size} closes it and
        opens the next; no batch datagram is larger than C{size}.
        """
        batcher = Batcher(size=300, signingKey=b"key")
        batcher.previous = START
        closed = []
        for seq in range(1, 40):
            flushed, batched = batcher.add("k", "v" * 20, stamp(seq, START))
            self.assertTrue(batched)
            closed += flushed
        closed.append(batcher.close())
        seqs = []
        for flushed in closed:
            [datagram] = flushed.datagrams
            self.assertLessEqual(len(datagram), 300)
            message = parseData(datagram, [b"key"], True)
            seqs += [m.stamp.seq for m in
                     (message.messages() if isinstance(message, Batch) else [message])]
        self.assertEqual(seqs, list(range(1, 40)))
        self.assertGreater(len(closed), 3)

    def test_maxItems(self) -> None:
        """
        A batch holds at most L{MAX_BATCH} datums.
        """
        batcher = Batcher(size=60000)
        batcher.previous = START
        closed = []
        for seq in range(1, MAX_BATCH + 3):
            closed += batcher.add("k", 0, stamp(seq, START))[0]
        self.assertEqual([(f.first, f.last) for f in closed], [(1, MAX_BATCH)])

    def test_tooLargeAlone(self) -> None:
        """
        A datum too large for a batch of its own is not batched (it goes
        alone, fragmented if need be); the open batch stays to be closed
        first.
        """
        batcher = Batcher()
        batcher.previous = START
        batcher.add("k", 1, stamp(1, START))
        self.assertEqual(batcher.add("k", "x" * BATCH_SIZE, stamp(2, START)), ([], False))
        self.assertEqual(batcher.close().first, 1)

    def test_overdue(self) -> None:
        """
        A datum given after the open batch's holdback closes it, and is
        batched only if it came fast.
        """
        batcher = Batcher()
        batcher.previous = START
        batcher.add("k", 1, stamp(1, START))
        flushed, batched = batcher.add("k", 2, stamp(2, START + 0.1))
        self.assertEqual((flushed, batched), ([], False))
        batcher.previous = START + 0.0049
        flushed, batched = batcher.add("k", 2, stamp(2, START + 0.0051))
        self.assertEqual(([f.first for f in flushed], batched), ([1], True))

    def test_off(self) -> None:
        """
        C{holdback=0} turns batching off.
        """
        batcher = Batcher(holdback=0)
        batcher.previous = START
        self.assertEqual(batcher.add("k", 1, stamp(1, START)), ([], False))

    def test_badDatum(self) -> None:
        """
        A bad key or value raises L{ValueError} and changes nothing.
        """
        batcher = Batcher()
        batcher.previous = START
        self.assertRaises(ValueError, batcher.add, "a//b", 1, stamp(1, START))
        self.assertRaises(ValueError, batcher.add, "k", float("nan"), stamp(1, START))
        self.assertIsNone(batcher.close())


class RepairEngineTests(SynchronousTestCase):
    """
    L{RepairEngine}: a repairing source's datagrams, without a socket.
    """

    def setUp(self) -> None:
        self.engine = RepairEngine(SRC, BOOT)

    def send(self, count: int, gap: float = 0.1) -> list[bytes]:
        """
        Give the engine C{count} datums C{gap} seconds apart from L{START}.
        """
        out = []
        for seq in range(1, count + 1):
            out += self.engine.datum("k", seq, stamp(seq, START + (seq - 1) * gap))
        return out

    def test_datums(self) -> None:
        """
        Datums sent slowly go out at once, marked C{"r":1}, and are held.
        """
        out = self.send(3)
        self.assertEqual([parseData(d).value for d in out], [1, 2, 3])
        self.assertTrue(all(b'"r":1,' in d for d in out))
        self.assertEqual(self.engine.window.last, 3)
        self.assertEqual(self.engine.statistics()["datagramsSent"], 3)

    def test_answer(self) -> None:
        """
        A NACK is answered by an NCF, the original bytes, a gone for seqs
        never held, and a heartbeat for seqs never sent, in that order.
        """
        engine = RepairEngine(SRC, BOOT, window=2)
        out = []
        for seq in range(1, 4):
            out += engine.datum("k", seq, stamp(seq, START + seq))
        answer = [parseData(d) for d in engine.nack(nack((1, 3), (9, 9)), START + 5)]
        self.assertEqual([type(m) for m in answer], [Confirm, DataMessage, DataMessage, Gone,
                                                     Heartbeat])
        self.assertEqual(answer[0].ranges, ((2, 3),))
        self.assertEqual(engine.nack(nack((2, 2)), START + 6)[1], out[1])
        self.assertEqual(answer[3].ranges, ((1, 1),))
        self.assertEqual(answer[4].last, 3)
        self.assertEqual({m.stamp.sent for m in answer[:1] + answer[3:]}, {START + 5})
        stats = engine.statistics()
        self.assertEqual((stats["nacksReceived"], stats["confirmsSent"], stats["repairsSent"],
                          stats["goneSent"], stats["heartbeatsSent"]), (2, 2, 3, 1, 1))

    def test_ignored(self) -> None:
        """
        A datagram that is not a NACK, a NACK for another source or boot,
        and (when the source signs) a NACK unsigned or signed with another
        key make nothing be sent, and are counted.
        """
        engine = RepairEngine(SRC, BOOT, b"key")
        engine.datum("k", 1, stamp(1))
        for data in [b"", b"[1]", b'{"v":2}', nack((1, 1)), nack((1, 1), key=b"other"),
                     nack((1, 1), source="bergen", key=b"key"),
                     nack((1, 1), boot=BOOT - 1, key=b"key")]:
            self.assertEqual(engine.nack(data, START), [])
        self.assertEqual(engine.statistics()["nacksIgnored"], 7)
        self.assertEqual(engine.statistics()["nacksReceived"], 0)
        [confirm, repair] = engine.nack(nack((1, 1), key=b"key"), START)
        self.assertEqual(parseData(confirm, [b"key"], True).ranges, ((1, 1),))
        self.assertEqual(parseData(repair, [b"key"], True).value, 1)

    def test_unsignedSourceAcceptsSigned(self) -> None:
        """
        A source without a key answers signed and unsigned NACKs alike.
        """
        self.send(1)
        self.assertEqual(len(self.engine.nack(nack((1, 1), key=b"any"), START)), 2)
        self.assertEqual(len(self.engine.nack(nack((1, 1)), START + 1)), 2)

    def test_rateLimited(self) -> None:
        """
        Repairs past the rate wait for L{RepairEngine.tick}, which
        L{RepairEngine.nextDeadline} times.
        """
        engine = RepairEngine(SRC, BOOT, repairRate=100)
        for seq in range(1, 201):
            engine.datum("k", seq, stamp(seq, START + seq))
        now = START + 300
        engine.tick(now)  # the heartbeat due
        out = engine.nack(nack((1, 200)), now)
        self.assertEqual(len(out), 1 + 64)
        self.assertAlmostEqual(engine.nextDeadline(now), now + 0.01)
        repaired = [parseData(d).value for d in out[1:]]
        for _ in range(200):
            now = engine.nextDeadline(now)
            if now is None:
                break
            repaired += [parseData(d).value for d in engine.tick(now)
                         if isinstance(parseData(d), DataMessage)]
        self.assertEqual(repaired, list(range(1, 201)))

    def test_batchTimer(self) -> None:
        """
        An open batch is due after the holdback: L{RepairEngine.tick} sends
        it then, and L{RepairEngine.flush} at once.
        """
        out = self.send(3, gap=0.001)
        self.assertEqual(len(out), 1)
        self.assertEqual(self.engine.nextDeadline(START), START + 0.001 + 0.005)
        self.assertEqual(self.engine.tick(START + 0.0059), [])
        [batch] = self.engine.tick(START + 0.006)
        self.assertEqual([m.stamp.seq for m in parseData(batch).messages()], [2, 3])
        self.engine.datum("k", 4, stamp(4, START + 0.0061))
        self.assertEqual(len(self.engine.flush(START + 0.0062)), 1)
        self.assertEqual(self.engine.statistics()["batchesSent"], 1)

    def test_heartbeats(self) -> None:
        """
        A source heartbeats seq 0 when it starts, and an idle one its last
        seq 0.2 s after its last datum.
        """
        self.assertEqual(self.engine.nextDeadline(START), -math.inf)
        [start] = self.engine.tick(START - 1)
        self.assertEqual(parseData(start), Heartbeat(Stamp(SRC, BOOT, 0, START - 1), 0))
        self.send(2)
        self.assertEqual(self.engine.nextDeadline(START + 0.1), START + 0.3)
        [beat] = self.engine.tick(START + 0.3)
        self.assertEqual(parseData(beat), Heartbeat(Stamp(SRC, BOOT, 0, START + 0.3), 2))
        self.assertAlmostEqual(self.engine.nextDeadline(START + 0.3), START + 0.7)

    def test_tooLarge(self) -> None:
        """
        A value too large even for fragments raises L{ValueError} and sends
        nothing, even with a batch open.
        """
        self.send(2, gap=0.001)
        self.assertRaises(ValueError, self.engine.datum, "k", "x" * 5_000_000,
                          stamp(3, START + 0.002))
        self.assertEqual(self.engine.window.last, 1)
        self.assertEqual(len(self.engine.flush(START + 0.003)), 1)

    def test_fragmentsAlone(self) -> None:
        """
        A large datum sent fast is never batched: its fragments go at once,
        after the open batch, and a NACK re-sends all of them.
        """
        engine = RepairEngine(SRC, BOOT, maxDatagram=500)
        engine.datum("k", 1, stamp(1, START))
        engine.datum("k", 2, stamp(2, START))
        out = engine.datum("k", "z" * 2000, stamp(3, START))
        kinds = [type(parseData(d)) for d in out]
        self.assertEqual(kinds[0], DataMessage)
        self.assertEqual(set(kinds[1:]), {Fragment})
        repaired = engine.nack(nack((3, 3)), START + 1)[1:]
        self.assertEqual(repaired, out[1:])


class LossyLink:
    """
    A seeded in-process network: each datagram is dropped, duplicated and
    delayed (so reordered) at random, both ways.
    """

    def __init__(self, seed: int, loss: float, duplicate: float = 0.05,
                 delay: float = 0.004) -> None:
        self.random = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.count = 0

    def send(self, now: float, direction: str, datagram: bytes) -> None:
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            if self.random.random() < self.loss:
                continue
            self.count += 1
            arrival = now + self.random.uniform(0, self.delay)
            heapq.heappush(self.queue, (arrival, self.count, direction, datagram))

    def due(self, now: float) -> list[tuple[str, bytes]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, direction, datagram = heapq.heappop(self.queue)
            out.append((direction, datagram))
        return out


class FakeReceiver:
    """
    A minimal server: notes the seqs it got (datums, batches), the last
    seq a heartbeat names, and what is gone; NACKs what is missing.
    """

    def __init__(self) -> None:
        self.got: dict[int, Any] = {}
        self.known = 0
        self.gone: set[int] = set()
        self.duplicates = 0

    def feed(self, datagram: bytes) -> None:
        message = parseData(datagram)
        if isinstance(message, Batch):
            messages = message.messages()
        elif isinstance(message, DataMessage):
            messages = [message]
        else:
            messages = []
        for m in messages:
            if m.stamp.seq in self.got:
                self.duplicates += 1
            self.got[m.stamp.seq] = m.value
            self.known = max(self.known, m.stamp.seq)
        if isinstance(message, Heartbeat):
            self.known = max(self.known, message.last)
        if isinstance(message, Gone):
            for first, last in message.ranges:
                self.gone.update(range(first, last + 1))

    def missing(self) -> list[int]:
        return [seq for seq in range(1, self.known + 1)
                if seq not in self.got and seq not in self.gone]

    def nack(self, now: float) -> bytes | None:
        missing = self.missing()
        if not missing:
            return None
        return encodeNack(SRC, BOOT, toRanges(missing)[:64], now)


class LossTests(SynchronousTestCase):
    """
    A source's engine and a fake receiver over a seeded lossy, reordering,
    duplicating link.
    """

    def simulate(self, seed: int, loss: float, count: int, rate: float,
            window: int = 10_000) -> tuple[FakeReceiver, RepairEngine]:
        """
        Send C{count} datums at C{rate} a second over a link losing C{loss}
        of the datagrams each way; the receiver NACKs every 30 ms while it
        misses some.  Runs 1 ms steps, at most 20 s of simulated time.
        """
        engine = RepairEngine(SRC, BOOT, window=window)
        receiver = FakeReceiver()
        link = LossyLink(seed, loss)
        step = 0.001
        sent = 0
        nextSend = START
        nextNack = START
        for tick in range(20_000):
            now = START + tick * step
            while sent < count and nextSend <= now:
                sent += 1
                for d in engine.datum("k", {"n": sent}, stamp(sent, now)):
                    link.send(now, "down", d)
                nextSend += 1.0 / rate
            for d in engine.tick(now):
                link.send(now, "down", d)
            for direction, datagram in link.due(now):
                if direction == "down":
                    receiver.feed(datagram)
                else:
                    for d in engine.nack(datagram, now):
                        link.send(now, "down", d)
            if now >= nextNack:
                nextNack = now + 0.03
                request = receiver.nack(now)
                if request is not None:
                    link.send(now, "up", request)
            if sent == count and receiver.known == count and not receiver.missing():
                break
        return receiver, engine

    def test_everyDatumRepaired(self) -> None:
        """
        At 20 % loss each way (NACKs and repairs lost too), with reordering
        and duplicates, every datum of 1,000 sent at 1,000/s (batched)
        arrives, the last ones found by heartbeats.
        """
        for seed in range(3):
            receiver, engine = self.simulate(seed, 0.2, 1000, 1000.0)
            self.assertEqual(sorted(receiver.got), list(range(1, 1001)), seed)
            self.assertEqual(receiver.got[1000], {"n": 1000})
            self.assertEqual(receiver.gone, set())
            stats = engine.statistics()
            self.assertGreater(stats["batchesSent"], 0)
            self.assertGreater(stats["repairsSent"], 0)
            self.assertLess(stats["datagramsSent"], 1000)

    def test_slowSourceRepaired(self) -> None:
        """
        At 10 % loss, 200 datums sent 50 a second (not batched) all arrive.
        """
        receiver, engine = self.simulate(7, 0.1, 200, 50.0)
        self.assertEqual(sorted(receiver.got), list(range(1, 201)))
        self.assertEqual(engine.statistics()["batchesSent"], 0)

    def test_goneBelowWindow(self) -> None:
        """
        With a window of 5 datums, what fell out of it before it was asked
        for is answered gone, and everything else arrives: nothing is
        silently missing.
        """
        receiver, _ = self.simulate(3, 0.3, 300, 1000.0, window=5)
        self.assertEqual(receiver.missing(), [])
        self.assertEqual(receiver.known, 300)
        self.assertEqual(set(receiver.got) | receiver.gone, set(range(1, 301)))
        self.assertTrue(receiver.gone)
        self.assertEqual(json.dumps(receiver.got[300]), '{"n": 300}')


class ClosingHeartbeatTests(SynchronousTestCase):
    """
    L{HeartbeatSchedule.closing}: a lingering source heartbeats often.
    """

    def test_closing(self) -> None:
        """
        Once closing, a heartbeat is due at once and then every
        L{LINGER_HEARTBEAT} seconds, not doubling.
        """
        schedule = HeartbeatSchedule()
        schedule.sent(START - 5)
        schedule.datum(START)
        schedule.closing(START + 0.05, LINGER_HEARTBEAT)
        self.assertTrue(schedule.due(START + 0.05))
        times = []
        now = START + 0.05
        for _ in range(5):
            schedule.sent(now)
            now = schedule.next
            times.append(round(now - START, 3))
        self.assertEqual(times, [0.15, 0.25, 0.35, 0.45, 0.55])
        self.assertEqual(LINGER_HEARTBEAT, 0.1)
