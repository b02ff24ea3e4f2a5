"""
Tests for L{artcast.server.feeds.multicast}: datagrams in, KeyStore updates out.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from artcast.server.store import KeyStore
from artcast.server.logs import RateLimitedLog
from artcast.server.feeds.multicast import (
    DatagramHandler,
    MulticastFeed,
    MulticastServerProtocol,
)
from artcast.server.interfaces import IFeed
from artcast.wire import REASONS, Stamp, encodeData, encodeRegister

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
