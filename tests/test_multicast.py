"""
Tests for L{artcast.server.feeds.multicast}: datagrams in, KeyStore updates out.
"""

from __future__ import annotations

import json
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from artcast.server.store import KeyStore
from artcast.server.logs import RateLimitedLog
from artcast.server.stats import Stats
from artcast.server.feeds.multicast import (
    DatagramHandler,
    HeldDatagrams,
    MulticastFeed,
    MulticastServerProtocol,
    NackSender,
)
from artcast.server.interfaces import IFeed
from artcast.wire import (
    REASONS,
    Stamp,
    batchItem,
    encodeBatch,
    encodeConfirm,
    encodeData,
    encodeGone,
    encodeHeartbeat,
    encodeRegister,
    parseNack,
)

ADDRESS = ("127.0.0.1", 5555)


class HandlerTests(SynchronousTestCase):
    """
    L{DatagramHandler} turns good datagrams into datums and drops bad ones,
    counting each under its reason.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock, maxValueSize=1000)
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_version1(self) -> None:
        """
        A version 1 datagram, as the original sources send it, updates its key.
        """
        d = self.store.next("test/tick")
        self.handler.dataReceived(b'["test/tick", 42]', ADDRESS)
        self.assertEqual(self.successResultOf(d).value, 42)
        self.assertEqual(self.handler.stats.datums, 1)

    def test_version2(self) -> None:
        """
        A version 2 datagram updates its key, with the source's id.
        """
        [datagram] = encodeData("k", [1], Stamp("src", 7, 3, 100.0))
        self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(self.store.latest("k").id, "src.7.3")

    def test_fragments(self) -> None:
        """
        A value split into fragments is published once, whole.
        """
        handler = DatagramHandler(self.store, self.clock)
        value = "x" * 5000
        datagrams = encodeData("k", value, Stamp("src", 7, 1, 0.0), maxDatagram=1200)
        self.assertGreater(len(datagrams), 3)
        d = self.store.next("k")
        for datagram in reversed(datagrams):
            handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(self.successResultOf(d).value, value)

    def test_register(self) -> None:
        """
        Registrations of either version set a key's metadata.
        """
        self.handler.registerReceived(
            b'["a", {"description": "A", "license": null}]', ADDRESS
        )
        self.handler.registerReceived(
            encodeRegister("b", {"description": "B"}, Stamp("src", 1, 0, 0.0)),
            ADDRESS,
        )
        self.assertEqual(self.store.metadata("a")["description"], "A")
        self.assertEqual(self.store.metadata("b"), {"description": "B"})

    def test_badDatagramsCounted(self) -> None:
        """
        Bad datagrams are dropped and counted by reason, and the next good one
        is still delivered.
        """
        d = self.store.next("k")
        for datagram, reason in [
            (b"\xff\xfe", "not-utf8"),
            (b"[1, 2", "not-json"),
            (b'{"v": 3}', "bad-version"),
            (b'["k"]', "bad-shape"),
            (b'["a\\nb", 1]', "bad-key"),
            (b'["k", "' + b"x" * 2000 + b'"]', "too-large"),
        ]:
            self.handler.dataReceived(datagram, ADDRESS)
            self.assertEqual(self.handler.stats.dropped[reason], 1, reason)
        self.assertNoResult(d)
        self.handler.dataReceived(b'["k", 1]', ADDRESS)
        self.assertEqual(self.successResultOf(d).value, 1)

    def test_replayDropped(self) -> None:
        """
        A version 2 datagram received twice is published once.
        """
        [datagram] = encodeData("k", 1, Stamp("src", 7, 1, 0.0))
        got = []
        self.store.subscribe("k", got.append)
        self.handler.dataReceived(datagram, ADDRESS)
        self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(len(got), 1)
        self.assertEqual(self.handler.stats.dropped["replayed"], 1)

    def test_gapsCounted(self) -> None:
        """
        Sequence numbers a source skipped are counted as missed.
        """
        for seq in (1, 2, 5):
            [datagram] = encodeData("k", seq, Stamp("src", 7, seq, 0.0))
            self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(self.handler.stats.missed, 2)
        self.assertEqual(self.handler.stats.sources["gap"], 1)

    def test_badLoggedAtBoundedRate(self) -> None:
        """
        A flood of bad datagrams is logged a bounded number of times, then
        summarised.
        """
        for _ in range(100):
            self.handler.dataReceived(b"junk", ADDRESS)
        warnings = [e for e in self.logged if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 10)
        self.clock.advance(61)
        self.handler.dataReceived(b"junk", ADDRESS)
        warnings = [e for e in self.logged if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warnings[10]["count"], 90)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300) | st.from_regex(rb'\A\["[a-z/]{0,5}", .{0,20}\]\Z'))
    def test_fuzzData(self, data: bytes) -> None:
        """
        Whatever bytes arrive, each datagram is either a datum or counted as
        dropped; nothing escapes.
        """
        stats = self.handler.stats
        before = stats.datums + sum(stats.dropped.values())
        self.handler.dataReceived(data, ADDRESS)
        after = stats.datums + sum(stats.dropped.values())
        self.assertEqual(after, before + 1)
        self.assertLessEqual(set(stats.dropped), set(REASONS) | {"replayed", "stale"})

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def test_fuzzRegister(self, data: bytes) -> None:
        """
        Whatever bytes arrive on the register group, nothing escapes.
        """
        self.handler.registerReceived(data, ADDRESS)


class _Written:
    """
    A datagram transport that keeps what is written (or fails).
    """

    def __init__(self, error: Exception | None = None) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.error = error

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((data, address))


class RepairHandlerTests(SynchronousTestCase):
    """
    L{DatagramHandler} hands the datagrams of repair to its engine, delivers
    a source's datums in order, and sends NACKs through the data group.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock, random=Random(1))
        self.transport = _Written()
        self.handler.nacks.transport = self.transport
        self.got: list = []
        self.store.subscribe("k", self.got.append)

    def send(self, seq: int, **options) -> None:
        for datagram in encodeData("k", seq, Stamp("src", 7, seq, 1000.0),
                                   repairable=True, **options):
            self.handler.dataReceived(datagram, ADDRESS)

    def test_inOrder(self) -> None:
        """
        A datum after a hole waits for the hole's datum; both are then
        published in sequence order.
        """
        self.send(1)
        self.send(3)
        self.assertEqual([d.seq for d in self.got], [1])
        self.send(2)
        self.assertEqual([d.seq for d in self.got], [1, 2, 3])
        self.assertEqual(self.handler.stats.sources["filled"], 1)

    def test_batch(self) -> None:
        """
        A batch's datums are published one by one with their own sequence
        numbers; a copy of it is replayed.
        """
        datagram = encodeBatch([batchItem("k", n) for n in (10, 11, 12)],
                               Stamp("src", 7, 1, 1000.0))
        self.handler.dataReceived(datagram, ADDRESS)
        self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual([(d.seq, d.value) for d in self.got], [(1, 10), (2, 11), (3, 12)])
        self.assertEqual(self.handler.stats.dropped["replayed"], 3)

    def test_heartbeatNacked(self) -> None:
        """
        A heartbeat naming a seq after the last seen makes a hole that is
        NACKed to the source's address, from the data group's socket.
        """
        self.send(1)
        self.handler.dataReceived(encodeHeartbeat(Stamp("src", 7, 0, 1000.0), 3), ADDRESS)
        self.assertEqual(self.handler.stats.missed, 2)
        self.clock.advance(0.02)
        [(data, address)] = self.transport.written
        self.assertEqual(address, ADDRESS)
        self.assertEqual(parseNack(data).ranges, ((2, 3),))

    def test_signedNack(self) -> None:
        """
        A NACK is signed with the key that verified the source's datagrams.
        """
        keys = [b"a" * 32, b"b" * 32]
        handler = DatagramHandler(self.store, self.clock, signingKeys=keys, freshness=30.0)
        handler.nacks.transport = self.transport
        for seq in (1, 3):
            [datagram] = encodeData("k", seq, Stamp("src", 7, seq, 1000.0), keys[1],
                                    repairable=True)
            handler.dataReceived(datagram, ADDRESS)
        self.clock.advance(0.02)
        [(data, _)] = self.transport.written
        self.assertEqual(parseNack(data, keys[1]).ranges, ((2, 2),))

    def test_confirmAndGone(self) -> None:
        """
        An NCF suppresses this server's NACK; a gone then declares the hole
        unrecoverable and publishes what waited, marked with the loss.
        """
        self.send(1)
        self.send(3)
        self.handler.dataReceived(encodeConfirm(Stamp("src", 7, 0, 1000.0), [(2, 2)]), ADDRESS)
        self.clock.advance(0.03)
        self.assertEqual(self.transport.written, [])
        self.handler.dataReceived(encodeGone(Stamp("src", 7, 0, 1000.0), [(2, 2)]), ADDRESS)
        self.assertEqual([(d.seq, d.lost) for d in self.got], [(1, 0), (3, 1)])

    def test_staleControlDropped(self) -> None:
        """
        With a freshness window, a heartbeat whose time is outside it is
        dropped as stale.
        """
        handler = DatagramHandler(self.store, self.clock, freshness=30.0)
        handler.dataReceived(encodeHeartbeat(Stamp("src", 7, 0, 1.0), 3), ADDRESS)
        self.assertEqual(handler.stats.dropped["stale"], 1)

    def test_fragmentOfHole(self) -> None:
        """
        The fragments of a hole's datum are let through and fill it.
        """
        self.send(1)
        self.send(3)
        value = "x" * 3000
        for datagram in encodeData("k", value, Stamp("src", 7, 2, 1000.0), maxDatagram=1200,
                                   repairable=True):
            self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual([d.seq for d in self.got], [1, 2, 3])

    def test_nackErrorsLogged(self) -> None:
        """
        A NACK that cannot be sent (no socket yet, or an error) is counted
        and logged at a bounded rate, never raised.
        """
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        sender = NackSender(self.clock)
        sender.send(b"x", ADDRESS)
        sender.transport = _Written(OSError("unreachable"))
        for _ in range(100):
            sender.send(b"x", ADDRESS)
        self.assertEqual(sender.failed, 101)
        warnings = [e for e in logged if "NACK" in formatEvent(e)]
        self.assertGreaterEqual(len(warnings), 1)
        self.assertLessEqual(len(warnings), 10)


class FakeMulticastTransport:
    def __init__(self, joined) -> None:
        self.joined = joined
        self.calls: list = []

    def setLoopbackMode(self, mode: bool) -> None:
        self.calls.append(("loopback", mode))

    def joinGroup(self, group: str, interface: str):
        self.calls.append(("join", group, interface))
        return self.joined


class ProtocolTests(SynchronousTestCase):
    """
    L{MulticastServerProtocol} joins its group and hands datagrams on.
    """

    def test_joins(self) -> None:
        """
        Starting the protocol joins the group on the configured interface.
        """
        got = []
        protocol = MulticastServerProtocol("239.255.1.1", "127.0.0.1", lambda *a: got.append(a))
        transport = FakeMulticastTransport(succeed(None))
        protocol.makeConnection(transport)
        self.assertIn(("join", "239.255.1.1", "127.0.0.1"), transport.calls)
        protocol.datagramReceived(b"x", ADDRESS)
        self.assertEqual(got, [(b"x", ADDRESS)])

    def test_joinFailureLogged(self) -> None:
        """
        A group that cannot be joined is logged as an error and the server
        goes on.
        """
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        protocol = MulticastServerProtocol("239.255.1.1", "127.0.0.1", lambda *a: None)
        protocol.makeConnection(FakeMulticastTransport(fail(OSError("no route"))))
        errors = [e for e in logged if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["group"], "239.255.1.1")


class RateLimitedLogTests(SynchronousTestCase):
    """
    L{RateLimitedLog} bounds how often it logs.
    """

    def test_window(self) -> None:
        """
        At most C{burst} messages per period; the rest are counted.
        """
        from twisted.logger import Logger

        logged: list[dict] = []
        clock = Clock()
        log = RateLimitedLog(Logger(observer=logged.append), clock, burst=2, period=10)
        for n in range(5):
            log.warn("m {n}", n=n)
        self.assertEqual([e["n"] for e in logged], [0, 1])
        clock.advance(10)
        log.warn("m {n}", n=9)
        self.assertEqual(logged[2]["count"], 3)
        self.assertEqual(formatEvent(logged[2]), "3 more bad datagrams were not logged")
        self.assertEqual(logged[3]["n"], 9)
        json.dumps([e.get("n") for e in logged])

    def test_what(self) -> None:
        """
        The summary line names what was not logged.
        """
        from twisted.logger import Logger

        logged: list[dict] = []
        clock = Clock()
        log = RateLimitedLog(
            Logger(observer=logged.append), clock, burst=1, period=10, what="pings"
        )
        log.warn("one")
        log.warn("two")
        clock.advance(10)
        log.warn("three")
        self.assertEqual(
            [formatEvent(e) for e in logged],
            ["one", "1 more pings were not logged", "three"],
        )


    def test_error(self) -> None:
        """
        Errors are logged at the error level, within the same bound as
        warnings.
        """
        from twisted.logger import Logger, LogLevel

        logged: list[dict] = []
        log = RateLimitedLog(Logger(observer=logged.append), Clock(), burst=1, period=10)
        log.error("bad")
        log.warn("not logged")
        self.assertEqual([(formatEvent(e), e["log_level"]) for e in logged],
                         [("bad", LogLevel.error)])


class _Port:
    """
    A multicast port that stops at once.
    """

    def stopListening(self) -> None:
        pass


class _MulticastReactor(MemoryReactorClock):
    """
    A memory reactor that records multicast listens.
    """

    def __init__(self) -> None:
        super().__init__()
        self.multicast: list[tuple] = []

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        self.multicast.append((port, protocol, interface, maxPacketSize, listenMultiple))
        return _Port()


class MulticastFeedTests(SynchronousTestCase):
    """
    L{MulticastFeed} is the feed of the data and register groups.
    """

    def setUp(self) -> None:
        self.reactor = _MulticastReactor()
        self.store = KeyStore(self.reactor)
        self.handler = DatagramHandler(self.store, self.reactor)
        self.feed = MulticastFeed(self.handler, self.reactor, ("239.255.1.1", 5007),
                                  ("239.255.1.2", 5008), "127.0.0.1")

    def test_nackSender(self) -> None:
        """
        The data group's protocol hands its socket to the handler's NACK
        sender while it listens; the register group's does not.
        """
        self.feed.privilegedStartService()
        self.feed.startService()
        [(_, data, *_), (_, register, *_)] = self.reactor.multicast
        self.assertIs(data.sender, self.handler.nacks)
        self.assertIsNone(register.sender)
        transport = FakeMulticastTransport(succeed(None))
        data.makeConnection(transport)
        self.assertIs(self.handler.nacks.transport, transport)
        data.doStop()
        self.assertIsNone(self.handler.nacks.transport)

    def test_interface(self) -> None:
        """
        A L{MulticastFeed} provides L{IFeed}, named C{multicast}.
        """
        self.assertTrue(verifyObject(IFeed, self.feed))
        self.assertEqual(self.feed.name, "multicast")

    def test_ports(self) -> None:
        """
        Starting the feed binds both groups in C{privilegedStartService}, each
        port handing its datagrams to its side of the feed's handler.
        """
        self.feed.privilegedStartService()
        self.feed.startService()
        self.addCleanup(self.feed.stopService)
        ports = {group: (port, proto, size, multiple)
                 for port, proto, group, size, multiple in self.reactor.multicast}
        self.assertEqual(sorted(ports), ["239.255.1.1", "239.255.1.2"])
        self.assertEqual([ports[g][0] for g in sorted(ports)], [5007, 5008])
        self.assertTrue(all(size == 65535 and multiple for _, _, size, multiple
                            in ports.values()))
        self.assertEqual({p[1].interface for p in ports.values()}, {"127.0.0.1"})
        [datagram] = encodeData("k", 1, Stamp("src", 7, 1, 0.0))
        ports["239.255.1.1"][1].datagramReceived(datagram, ADDRESS)
        ports["239.255.1.2"][1].datagramReceived(
            encodeRegister("k", {"description": "d"}, Stamp("src", 7, 0, 0.0)), ADDRESS)
        self.assertEqual(self.store.latest("k").id, "src.7.1")
        self.assertEqual(self.store.metadata("k")["description"], "d")

    def test_statistics(self) -> None:
        """
        The feed's statistics are its handler's counters, under their
        C{/stats} names.
        """
        [datagram] = encodeData("k", 1, Stamp("src", 7, 1, 0.0))
        self.handler.dataReceived(datagram, ADDRESS)
        self.handler.dataReceived(b"junk", ADDRESS)
        self.handler.registerReceived(
            encodeRegister("k", {"description": "d"}, Stamp("src", 7, 0, 0.0)), ADDRESS)
        figures = self.feed.statistics()
        counters = self.handler.stats
        self.assertEqual(figures, {
            "datagrams": 2,
            "datums": 1,
            "registrations": 1,
            "missed": 0,
            "dropped": dict(counters.dropped),
            "sources": dict(counters.sources),
        })
        self.assertEqual(sum(figures["dropped"].values()), 1)


class HeldDatagramsTests(SynchronousTestCase):
    """
    L{HeldDatagrams} holds what the groups hear until the feed may start
    (with C{--bus}: the history is read), then hands it on in order.
    """

    def setUp(self) -> None:
        self.ready: Deferred[object] = Deferred()
        self.stats = Stats()
        self.heard: list[tuple[str, bytes]] = []
        self.held = HeldDatagrams(self.ready, self.stats, maxDatagrams=3, maxBytes=100)
        self.data = self.held.wrap(lambda data, addr: self.heard.append(("data", data)))
        self.register = self.held.wrap(lambda data, addr: self.heard.append(("register", data)))

    def test_heldThenInOrder(self) -> None:
        """
        Nothing is handed on before C{ready} fires; then everything held, in
        the order heard across both groups, and what comes later at once.
        """
        self.data(b"1", ("127.0.0.1", 1))
        self.register(b"2", ("127.0.0.1", 1))
        self.data(b"3", ("127.0.0.1", 1))
        self.assertEqual(self.heard, [])
        self.ready.callback(None)
        self.assertEqual(self.heard, [("data", b"1"), ("register", b"2"), ("data", b"3")])
        self.data(b"4", ("127.0.0.1", 1))
        self.assertEqual(self.heard[-1], ("data", b"4"))
        self.assertIsNone(self.held.held)

    def test_bounded(self) -> None:
        """
        Past its count or its bytes, a datagram is dropped and counted
        C{held-overflow}, not held.
        """
        for n in range(5):
            self.data(b"%d" % (n,), ("127.0.0.1", 1))
        self.register(b"x" * 101, ("127.0.0.1", 1))
        self.assertEqual(self.stats.dropped["held-overflow"], 3)
        self.ready.callback(None)
        self.assertEqual([data for _, data in self.heard], [b"0", b"1", b"2"])
