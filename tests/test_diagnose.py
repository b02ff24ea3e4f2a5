"""
Tests for the diagnosis of "nothing arrives": where the server listens and
when it last heard a datagram (L{artcast.server.feeds.multicast}, C{/stats},
the dashboard, the logs), and where C{artcast-send} sent
(L{artcast.send.sentLines}).
"""

from __future__ import annotations

import io
from typing import Any

import treq
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.send import main, routeInterface, sentLines
from artcast.server.defaults import SILENCE_WARNING
from artcast.server.feeds.multicast import (
    DatagramHandler,
    Listening,
    MulticastFeed,
    MulticastServerProtocol,
)
from artcast.server.outlets.pages import listPage, listeningLine
from artcast.server.routes import ArtcastApp
from artcast.server.stats import (
    ArtcastCollector,
    ServerStatistics,
    Stats,
    isoTime,
    listeningText,
    metricsText,
    statsPage,
)
from artcast.server.store import KeyStore
from artcast.wire import Stamp, encodeData
from tests.harness import ArtcastProcess
from tests.test_multicast import FakeMulticastTransport, _MulticastReactor
from tests.test_source import FakeSocket, FakeTime

ADDRESS = ("127.0.0.1", 5555)

#: 2026-12-05T15:27:30Z
NOW = 1796484450.0


def logged(testCase: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    The events logged during the test, as they come.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def dataProtocol(clock: Clock, got: list[Any] | None = None) -> MulticastServerProtocol:
    """
    A data group's protocol on C{239.255.10.1:11111} via C{127.0.0.1},
    warning after L{SILENCE_WARNING} seconds of silence.
    """
    return MulticastServerProtocol(
        "239.255.10.1", "127.0.0.1",
        (lambda *a: got.append(a)) if got is not None else (lambda *a: None),
        port=11111, clock=clock, carries="datums", silence=SILENCE_WARNING,
    )


class ProtocolFiguresTests(SynchronousTestCase):
    """
    L{MulticastServerProtocol} counts what it hears and when it last heard.
    """

    def test_countsAndLastHeard(self) -> None:
        """
        Each datagram is counted and its clock time kept, and still handed on.
        """
        clock = Clock()
        clock.advance(NOW)
        got: list[Any] = []
        protocol = dataProtocol(clock, got)
        protocol.makeConnection(FakeMulticastTransport(succeed(None)))
        self.assertEqual((protocol.heard, protocol.lastHeard), (0, None))
        clock.advance(2)
        protocol.datagramReceived(b"x", ADDRESS)
        clock.advance(3)
        protocol.datagramReceived(b"y", ADDRESS)
        self.assertEqual((protocol.heard, protocol.lastHeard), (2, NOW + 5))
        self.assertEqual(got, [(b"x", ADDRESS), (b"y", ADDRESS)])
        clock.advance(4)
        self.assertEqual(protocol.figures(), {
            "group": "239.255.10.1", "port": 11111, "interface": "127.0.0.1",
            "carries": "datums", "datagrams": 2,
            "last_datagram": isoTime(NOW + 5), "last_datagram_ago": 4.0,
        })

    def test_nothingHeard(self) -> None:
        """
        Before any datagram, the figures say none and have no time.
        """
        protocol = dataProtocol(Clock())
        figures = protocol.figures()
        self.assertEqual(figures["datagrams"], 0)
        self.assertIsNone(figures["last_datagram"])
        self.assertIsNone(figures["last_datagram_ago"])

    def test_isoTime(self) -> None:
        """
        L{isoTime} gives UTC to the second.
        """
        self.assertEqual(isoTime(NOW + 0.9), "2026-12-05T15:27:30Z")

    def test_listeningLogged(self) -> None:
        """
        Once its group is joined, the protocol logs where it listens, at info
        level.
        """
        events = logged(self)
        dataProtocol(Clock()).makeConnection(FakeMulticastTransport(succeed(None)))
        [event] = [e for e in events if "Listening" in formatEvent(e)]
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(
            formatEvent(event),
            "Listening for datums on 239.255.10.1:11111 on interface 127.0.0.1",
        )

    def test_notJoinedNotListening(self) -> None:
        """
        A group that cannot be joined is not said to be listened on.
        """
        events = logged(self)
        dataProtocol(Clock()).makeConnection(FakeMulticastTransport(fail(OSError("no route"))))
        self.assertFalse([e for e in events if "Listening" in formatEvent(e)])

    def test_silenceWarnedOnce(self) -> None:
        """
        With nothing heard L{SILENCE_WARNING} seconds after start, one warning
        names the group, port and interface and how a local source reaches a
        loopback server; never again.
        """
        events = logged(self)
        clock = Clock()
        protocol = dataProtocol(clock)
        protocol.makeConnection(FakeMulticastTransport(succeed(None)))
        clock.advance(SILENCE_WARNING - 1)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])
        clock.advance(1)
        for _ in range(5):
            clock.advance(SILENCE_WARNING)
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(
            formatEvent(warning),
            "No datagram heard on 239.255.10.1:11111 via 127.0.0.1 in 60 s; "
            "a source on this host must send with --interface 127.0.0.1 --ttl 0 "
            "when the server listens on 127.0.0.1 (artcast-send --help, "
            "docs/running.md#nothing-arrives)",
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noWarningWhenHeard(self) -> None:
        """
        A datagram heard before the minute is up means no warning.
        """
        events = logged(self)
        clock = Clock()
        protocol = dataProtocol(clock)
        protocol.makeConnection(FakeMulticastTransport(succeed(None)))
        protocol.datagramReceived(b"x", ADDRESS)
        clock.advance(SILENCE_WARNING * 2)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    def test_stopCancels(self) -> None:
        """
        Stopping the protocol cancels the pending silence check.
        """
        clock = Clock()
        protocol = dataProtocol(clock)
        protocol.makeConnection(FakeMulticastTransport(succeed(None)))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])


class FeedListeningTests(SynchronousTestCase):
    """
    L{MulticastFeed.listening} shows both groups; only the data group warns.
    """

    def test_groups(self) -> None:
        """
        The data and register groups are listed with their ports and what
        they carry, and a datagram on the data group counts there only.
        """
        reactor = _MulticastReactor()
        handler = DatagramHandler(KeyStore(reactor), reactor)
        feed = MulticastFeed(handler, reactor, ("239.255.1.1", 5007),
                             ("239.255.1.2", 5008), "127.0.0.1")
        self.assertIsInstance(feed.listening, Listening)
        feed.privilegedStartService()
        feed.startService()
        self.addCleanup(feed.stopService)
        [(_, data, *_), (_, register, *_)] = self.recordedListens(reactor)
        self.assertEqual((data.silence, register.silence), (SILENCE_WARNING, None))
        [datagram] = encodeData("k", 1, Stamp("src", 7, 1, 0.0))
        data.datagramReceived(datagram, ADDRESS)
        figures = feed.listening.figures()
        self.assertEqual(sorted(figures), ["data", "register"])
        self.assertEqual(
            [(f["group"], f["port"], f["carries"], f["datagrams"]) for f in figures.values()],
            [("239.255.1.1", 5007, "datums", 1), ("239.255.1.2", 5008, "registrations", 0)],
        )
        self.assertEqual(feed.listening.statistics(), {"listening": figures})
        self.assertEqual(handler.store.latest("k").value, 1)

    def recordedListens(self, reactor: _MulticastReactor) -> list[tuple]:
        """
        The multicast listens recorded, the data group's first.
        """
        return sorted(reactor.multicast, key=lambda listen: listen[0])


def figures(heard: int = 0) -> dict[str, dict[str, Any]]:
    """
    C{/stats}' C{listening} figures of a data group that heard C{heard}
    datagrams, the last 3 s ago, and a register group that heard nothing.
    """
    return {
        "data": {
            "group": "239.255.10.1", "port": 11111, "interface": "127.0.0.1",
            "carries": "datums", "datagrams": heard,
            "last_datagram": isoTime(NOW) if heard else None,
            "last_datagram_ago": 3.0 if heard else None,
        },
        "register": {
            "group": "239.255.10.1", "port": 11112, "interface": "127.0.0.1",
            "carries": "registrations", "datagrams": 0,
            "last_datagram": None, "last_datagram_ago": None,
        },
    }


class ShownTests(SynchronousTestCase):
    """
    The listening figures in C{/stats} (JSON, HTML), C{/metrics} and the
    dashboard.
    """

    def test_text(self) -> None:
        """
        L{listeningText} says where a group listens and what it heard.
        """
        self.assertEqual(
            listeningText(figures(12)["data"]),
            "datums on 239.255.10.1:11111 via 127.0.0.1: 12 datagrams, "
            "the last 3 s ago (2026-12-05T15:27:30Z)",
        )
        self.assertEqual(
            listeningText(figures()["register"]),
            "registrations on 239.255.10.1:11112 via 127.0.0.1: nothing heard yet",
        )

    def test_serverStatistics(self) -> None:
        """
        L{ServerStatistics} shows the figures it is given under C{listening},
        and the HTML page a line per group.
        """
        clock = Clock()
        statistics = ServerStatistics(clock, Stats(), KeyStore(clock),
                                      listening=lambda: figures(1))
        shown = statistics.figures()
        self.assertEqual(shown["listening"], figures(1))
        page = statsPage(shown).decode("utf-8")
        self.assertIn("<h2>Listening</h2>", page)
        self.assertIn("datums on 239.255.10.1:11111 via 127.0.0.1: 1 datagram, the last", page)
        self.assertIn("registrations on 239.255.10.1:11112 via 127.0.0.1: nothing heard yet",
                      page)
        self.assertNotIn("listening", ServerStatistics(clock, Stats(), KeyStore(clock)).figures())

    def test_metrics(self) -> None:
        """
        C{/metrics} counts each group's datagrams, and gives the last one's
        age where there is one.
        """
        clock = Clock()
        statistics = ServerStatistics(clock, Stats(), KeyStore(clock),
                                      listening=lambda: figures(5))
        text = metricsText(ArtcastCollector(statistics.figures).read).decode("utf-8")
        self.assertIn(
            'artcast_group_datagrams_total{carries="datums",group="239.255.10.1",'
            'port="11111"} 5.0', text)
        self.assertIn(
            'artcast_group_last_datagram_age_seconds{carries="datums",'
            'group="239.255.10.1",port="11111"} 3.0', text)
        self.assertNotIn('last_datagram_age_seconds{carries="registrations"', text)

    def test_dashboardLine(self) -> None:
        """
        The dashboard says, under the table, where each group listens and
        when it last heard, or that nothing was heard and where to read why.
        """
        page = listPage([], {}, list(figures(1).values())).decode("utf-8")
        self.assertIn(
            '<p id="listening"><span class="group">Listening for datums on '
            "239.255.10.1:11111 via 127.0.0.1 \u2014 last datagram at "
            '<time datetime="2026-12-05T15:27:30Z">2026-12-05T15:27:30Z</time></span><br>'
            '<span class="group">Listening for registrations on 239.255.10.1:11112 via '
            "127.0.0.1 \u2014 nothing heard yet: see "
            "<code>docs/running.md#nothing-arrives</code></span></p>",
            page,
        )
        self.assertLess(page.index("</table>"), page.index('id="listening"'))
        self.assertNotIn('id="listening"', listPage([], {}).decode("utf-8"))

    def test_dashboardEscaped(self) -> None:
        """
        What the line shows is escaped as the rest of the page is.
        """
        group = dict(figures()["data"], interface="<b>&")
        self.assertIn("via &lt;b&gt;&amp; \u2014", listeningLine([group]))

    def test_dashboardFollowsDatagrams(self) -> None:
        """
        The served dashboard, made again at most once a second, shows a
        datagram heard even when no datum changed.
        """
        clock = Clock()
        clock.advance(NOW)
        shown = [figures()]
        app = ArtcastApp(KeyStore(clock), clock,
                         listening=lambda: shown[0])
        self.assertIn(b"nothing heard yet", app._listingBody(True))
        shown[0] = figures(1)
        self.assertIn(b"nothing heard yet", app._listingBody(True))
        clock.advance(1)
        body = app._listingBody(True)
        self.assertIn(b"last datagram at", body)
        self.assertNotIn(b'id="listening"', ArtcastApp(KeyStore(clock), clock)._listingBody(True))


class Route:
    """
    A fake L{routeInterface}: answers C{address} and records what it was
    asked.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.asked: list[tuple[str, int]] = []

    def __call__(self, group: str, port: int) -> str | None:
        self.asked.append((group, port))
        return self.address


class ProbeSocket:
    """
    A fake UDP socket for L{routeInterface}.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.connected: tuple[str, int] | None = None
        self.closed = False

    def connect(self, address: tuple[str, int]) -> None:
        if self.address is None:
            raise OSError(101, "Network is unreachable")
        self.connected = address

    def getsockname(self) -> tuple[str, int]:
        assert self.address is not None
        return (self.address, 40000)

    def close(self) -> None:
        self.closed = True


class SentTests(SynchronousTestCase):
    """
    C{artcast-send} says on standard error where it sent.
    """

    def test_defaultRoute(self) -> None:
        """
        Without C{--interface}: the default route's interface, the TTL, and
        the hint for a server listening on loopback.
        """
        route = Route("10.0.0.5")
        self.assertEqual(sentLines([("239.255.10.1", 11111)], None, 1, route), [
            "artcast-send: sent to 239.255.10.1:11111 via 10.0.0.5 "
            "(the default route's interface), TTL 1",
            "artcast-send: a server started with --interface 127.0.0.1 hears this "
            "only with --interface 127.0.0.1 --ttl 0",
        ])
        self.assertEqual(route.asked, [("239.255.10.1", 11111)])

    def test_interface(self) -> None:
        """
        With C{--interface}: that interface, no route asked, no hint.
        """
        route = Route("10.0.0.5")
        self.assertEqual(
            sentLines([("224.1.1.1", 5007), ("224.1.1.2", 5007)], "127.0.0.1", 0, route),
            ["artcast-send: sent to 224.1.1.1:5007, 224.1.1.2:5007 via 127.0.0.1 "
             "(--interface), TTL 0"],
        )
        self.assertEqual(route.asked, [])

    def test_loopbackRoute(self) -> None:
        """
        Where the kernel sends by loopback anyway, no hint.
        """
        self.assertEqual(len(sentLines([("224.1.1.1", 5007)], None, 1, Route("127.0.0.1"))), 1)

    def test_noRoute(self) -> None:
        """
        Without a route to the group, the line says so.
        """
        [line, _] = sentLines([("224.1.1.1", 5007)], None, 1, Route(None))
        self.assertIn("via the interface the kernel chooses (no route to the group found)",
                      line)

    def test_routeInterface(self) -> None:
        """
        L{routeInterface} connects a UDP socket to the group (nothing is
        sent) and reads its local address; no route gives L{None}.
        """
        probe = ProbeSocket("192.0.2.2")
        self.assertEqual(routeInterface("224.1.1.1", 5007, probe), "192.0.2.2")
        self.assertEqual(probe.connected, ("224.1.1.1", 5007))
        self.assertTrue(probe.closed)
        probe = ProbeSocket(None)
        self.assertIsNone(routeInterface("224.1.1.1", 5007, probe))
        self.assertTrue(probe.closed)

    def test_main(self) -> None:
        """
        C{artcast-send} prints the id alone on standard output and where it
        sent on standard error, for version 2 and version 1 datagrams.
        """
        for extra in ([], ["--v1"]):
            stdout, stderr, fakeTime = io.StringIO(), io.StringIO(), FakeTime()
            status = main(["k", "1", "--ttl", "0", *extra], stdout=stdout, stderr=stderr,
                          sock=FakeSocket(), now=fakeTime, sleep=fakeTime.sleep,
                          route=Route("10.0.0.5"))
            self.assertEqual(status, 0)
            self.assertEqual(stderr.getvalue().splitlines()[0],
                             "artcast-send: sent to 224.1.1.1:5007 via 10.0.0.5 "
                             "(the default route's interface), TTL 0")
            self.assertEqual(len(stderr.getvalue().splitlines()), 2)
            self.assertNotIn("sent to", stdout.getvalue())

    def test_notSent(self) -> None:
        """
        When the network refuses, no "sent to" line.
        """
        stderr, fakeTime = io.StringIO(), FakeTime()
        self.assertEqual(
            main(["k", "1"], stdout=io.StringIO(), stderr=stderr,
                 sock=FakeSocket(failFor=("224.1.1.1", 5007)), now=fakeTime,
                 sleep=fakeTime.sleep, route=Route("10.0.0.5")),
            1,
        )
        self.assertNotIn("sent to", stderr.getvalue())


class ServerTests(TestCase):
    """
    A real server says in C{/stats} where it listens and what it heard.
    """

    timeout = 60

    @inlineCallbacks
    def test_stats(self) -> Any:
        """
        Before any datagram C{/stats.json} lists both groups as silent; after
        a datum sent over loopback, the data group counts it with its time,
        and the dashboard and the HTML C{/stats} say so.
        """
        proc = yield ArtcastProcess(self).start()
        stats = yield proc.stats()
        data = stats["listening"]["data"]
        self.assertEqual(
            (data["group"], data["port"], data["interface"], data["datagrams"],
             data["last_datagram"]),
            (proc.group, proc.dataPort, "127.0.0.1", 0, None),
        )
        self.assertEqual(stats["listening"]["register"]["port"], proc.registerPort)
        response = yield treq.get(proc.url + "/artcasts", headers={"Accept": ["text/html"]},
                                  persistent=False)
        page = yield response.text("utf-8")
        self.assertIn("nothing heard yet", page)
        proc.data.sendDatum("diagnose/k", 1)
        stats = yield proc.waitFor(lambda s: s["listening"]["data"]["datagrams"] == 1)
        data = stats["listening"]["data"]
        self.assertRegex(data["last_datagram"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertGreaterEqual(data["last_datagram_ago"], 0)
        self.assertEqual(stats["listening"]["register"]["datagrams"], 0)
        response = yield treq.get(proc.url + "/stats", headers={"Accept": ["text/html"]},
                                  persistent=False)
        page = yield response.text("utf-8")
        self.assertIn(f"datums on {proc.group}:{proc.dataPort} via 127.0.0.1: 1 datagram,",
                      page)
        self.assertIn("Listening for datums on", proc.output)


class DocsTests(SynchronousTestCase):
    """
    The docs tell a newcomer how a local source reaches a loopback server.
    """

    def test_docs(self) -> None:
        """
        docs/running.md has the "Nothing arrives?" section the messages point
        to, and the README sends to its own loopback server by loopback.
        """
        root = FilePath(__file__).parent().parent()
        running = root.descendant(["docs", "running.md"]).getContent().decode("utf-8")
        self.assertIn("\n## Nothing arrives?\n", running)
        self.assertIn("artcast-send --interface 127.0.0.1 --ttl 0 greeting", running)
        readme = root.child("README.md").getContent().decode("utf-8")
        self.assertIn("`artcast-send --interface 127.0.0.1 --ttl 0 greeting '\"hello\"'`", readme)
