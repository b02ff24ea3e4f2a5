"""
Tests for L{artcast.server.feeds.upstream}: relays (C{--upstream URL}).

The feed is driven through a fake agent whose requests the tests answer by
hand, with a L{Clock}; the loop refusal through L{StubTreq} on the real
application; and a chain of real C{twistd artcast} processes, with an
origin killed and restarted, through L{tests.harness}.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from artcast.server import tap
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.feeds.upstream import (
    LINE_MARGIN,
    UpstreamFeed,
    parseUpstreamTokens,
    parseUpstreams,
    upstreamURL,
)
from artcast.server.interfaces import IFeed
from artcast.server.outlets.multicast import RelayOutlet
from artcast.server.routes import ArtcastApp
from artcast.server.stats import metricsText
from artcast.server.store import KeyStore
from artcast.wire import DataMessage, Stamp, encodeData, parseData, parseRegister

from tests.harness import ArtcastProcess, HAProxy, PacedSender, freePort, randomGroup

A = "http://a.example:8888/"
B = "http://b.example:8888/"
C = "http://c.example:8888/"


class _BodyTransport:
    """
    The transport a response's body protocol is given.
    """

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class _Response:
    """
    An answer to a fake request: a code, headers, and a body the test feeds.
    """

    def __init__(self, code: int = 200, headers: dict[bytes, list[bytes]] | None = None) -> None:
        self.code = code
        self.headers = Headers(headers or {})
        self.protocol: Any = None
        self.transport = _BodyTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self, reason: Any = None) -> None:
        self.protocol.connectionLost(Failure(reason or ResponseDone()))


class _Request:
    def __init__(self, method: bytes, uri: bytes, headers: Headers) -> None:
        self.method = method
        self.uri = uri.decode("ascii")
        self.headers = headers
        self.deferred: Deferred[Any] = Deferred()
        self.response: _Response | None = None

    @property
    def root(self) -> str:
        parts = urlsplit(self.uri)
        return f"{parts.scheme}://{parts.netloc}/"

    @property
    def since(self) -> str | None:
        values = parse_qs(urlsplit(self.uri).query).get("since")
        return values[-1] if values else None

    def answer(self, code: int = 200, headers: dict[bytes, list[bytes]] | None = None) -> _Response:
        self.response = _Response(code, headers)
        self.deferred.callback(self.response)
        return self.response


class _Agent:
    """
    An agent whose requests are answered by the test.
    """

    def __init__(self) -> None:
        self.requests: list[_Request] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: Any = None) -> Deferred[Any]:
        request = _Request(method, uri, headers or Headers())
        self.requests.append(request)
        return request.deferred

    def streams(self) -> list[_Request]:
        return [r for r in self.requests if r.method == b"GET" and "/artcasts/..." in r.uri]

    def last(self) -> _Request:
        return self.streams()[-1]

    def probes(self) -> list[_Request]:
        return [r for r in self.requests if r.method == b"HEAD"]

    def listings(self) -> list[_Request]:
        return [r for r in self.requests if r.uri.endswith("/artcasts")]


def line(key: str, datumId: str, value: object) -> bytes:
    return json.dumps({"key": key, "id": datumId, "value": value}).encode() + b"\n"


class UpstreamFeedTests(SynchronousTestCase):
    """
    L{UpstreamFeed} follows one upstream at a time and fails over.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        # Now, not 1970: a boot is a start time in milliseconds, and one
        # past now is from the future (HostileUpstreamTests).
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.agent = _Agent()
        self.feed = UpstreamFeed(
            [A, B, C], self.handler, self.clock, self.agent, maxValueSize=1000, silence=45.0,
        )
        self.feed.startService()
        self.addCleanup(self.feed.stopService)

    def stream(self, index: int = -1, headers: dict[bytes, list[bytes]] | None = None) -> _Response:
        return self.agent.streams()[index].answer(200, headers)

    def ids(self, key: str) -> list[str]:
        return [d.id for d in self.store.held(key)]

    def test_interface(self) -> None:
        """
        The feed is an L{IFeed} named C{upstream}.
        """
        self.assertTrue(verifyObject(IFeed, self.feed))
        self.assertEqual(self.feed.name, "upstream")

    def test_firstRequest(self) -> None:
        """
        The first request is one NDJSON stream of every key of the first
        upstream, naming this server in C{Artcast-Via}, from the oldest datum
        the upstream holds (an id it cannot know).
        """
        [request] = self.agent.requests
        self.assertEqual(request.root, A)
        self.assertTrue(urlsplit(request.uri).path.endswith("/artcasts/..."))
        self.assertEqual(request.headers.getRawHeaders(b"Accept"), [b"application/x-ndjson"])
        self.assertEqual(
            request.headers.getRawHeaders(b"Artcast-Via"), [self.store.instance.encode()]
        )
        self.assertEqual(request.since, f"{self.store.instance}.0.1")
        self.assertEqual(self.feed.state, "connecting")

    def test_sameIds(self) -> None:
        """
        Each datum is published under the upstream's id, version 2 ids and
        an upstream's version 1 pseudo-source ids alike.
        """
        response = self.stream()
        response.send(line("a/b", "src.5.1", 1) + line("a/b", "src.5.2", {"x": [1]}))
        response.send(line("c", "s0bad1dea.1700000000000.7", "v1"))
        self.assertEqual(self.ids("a/b"), ["src.5.1", "src.5.2"])
        self.assertEqual(self.store.latest("a/b").value, {"x": [1]})
        self.assertEqual(self.ids("c"), ["s0bad1dea.1700000000000.7"])
        self.assertEqual(self.feed.statistics()["upstream"]["upstreamDatums"], 3)
        self.assertEqual(self.feed.lastId, "s0bad1dea.1700000000000.7")
        self.assertEqual(self.feed.state, "streaming")

    def test_linesInPieces(self) -> None:
        """
        A line split across reads is put together; blank lines (heartbeats)
        are skipped.
        """
        response = self.stream()
        data = b"\n" + line("k", "src.1.1", "hello") + b"\n"
        for i in range(len(data)):
            response.send(data[i:i + 1])
        self.assertEqual(self.ids("k"), ["src.1.1"])

    def test_duplicates(self) -> None:
        """
        A datum the server has already, from multicast or from the stream
        before a reconnect, is dropped as a duplicate and never delivered
        twice.
        """
        for datagram in encodeData("k", 1, Stamp("src", 5, 1, self.clock.seconds())):
            self.handler.dataReceived(datagram, ("127.0.0.1", 9))
        response = self.stream()
        response.send(line("k", "src.5.1", 1) + line("k", "src.5.2", 2) + line("k", "src.5.2", 2))
        self.assertEqual(self.ids("k"), ["src.5.1", "src.5.2"])
        self.assertEqual(self.feed.statistics()["upstream"]["upstreamDuplicates"], 2)

    def test_resumeWithSince(self) -> None:
        """
        After the stream ends, the feed reconnects, to the next upstream,
        from the last id it took, after the first back-off (0.5 s).
        """
        response = self.stream()
        response.send(line("k", "src.5.1", 1) + line("k", "src.5.2", 2))
        response.end()
        self.assertEqual(self.feed.state, "waiting")
        self.assertEqual(len(self.agent.streams()), 1)
        self.clock.advance(0.5)
        request = self.agent.last()
        self.assertEqual(request.root, B)
        self.assertEqual(request.since, "src.5.2")
        second = self.stream()
        second.send(line("k", "src.5.2", 2) + line("k", "src.5.3", 3))
        self.assertEqual(self.ids("k"), ["src.5.1", "src.5.2", "src.5.3"])
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamFailovers"], 1)
        self.assertEqual(figures["upstreams"][A]["upstreamFailures"], 1)
        self.assertEqual(figures["upstreams"][B]["upstreamConnects"], 1)

    def test_refused(self) -> None:
        """
        A connection refused, or an answer other than C{200}, moves the feed
        to the next upstream, and from the last one back to the first.
        """
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(0.5)
        self.assertEqual(self.agent.last().root, B)
        self.agent.last().answer(503)
        self.clock.advance(1.0)
        self.assertEqual(self.agent.last().root, C)
        self.agent.last().answer(404)
        self.clock.advance(2.0)
        self.assertEqual(self.agent.last().root, A)
        self.assertEqual(self.feed.failures, {A: 1, B: 1, C: 1})

    def test_silence(self) -> None:
        """
        Heartbeats keep a stream; one silent for the bound is given up, its
        connection aborted, and the next upstream tried.
        """
        response = self.stream()
        self.clock.advance(30)
        response.send(b"\n")
        self.clock.advance(30)
        self.assertEqual(self.feed.state, "streaming")
        self.clock.advance(15)
        self.assertEqual(self.feed.state, "waiting")
        self.assertTrue(response.transport.stopped)
        # What the aborted stream still says is ignored.
        response.send(line("k", "src.1.1", 1))
        response.end()
        self.assertEqual(self.ids("k"), [])
        self.clock.advance(0.5)
        self.assertEqual(self.agent.last().root, B)

    def test_headersTimeout(self) -> None:
        """
        An upstream that does not answer within the silence bound is given
        up.
        """
        self.clock.advance(45)
        self.assertEqual(self.feed.state, "waiting")
        self.clock.advance(0.5)
        self.assertEqual(self.agent.last().root, B)

    def test_backoff(self) -> None:
        """
        The wait between attempts doubles from 0.5 s to at most 10 s, and is
        back to 0.5 s once a stream opens.
        """
        waits = []
        for _ in range(8):
            self.agent.last().deferred.errback(ConnectionRefusedError())
            [call] = self.clock.getDelayedCalls()
            waits.append(call.getTime() - self.clock.seconds())
            self.clock.advance(waits[-1])
        self.assertEqual(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0])
        self.assertEqual(len(self.agent.streams()), 9)
        self.stream().end()
        calls = [c for c in self.clock.getDelayedCalls() if c.func == self.feed._connect]
        self.assertEqual([c.getTime() - self.clock.seconds() for c in calls], [0.5])

    def test_backToTheFirst(self) -> None:
        """
        While it follows a later upstream, the feed probes the earlier ones
        every 5 s (C{HEAD}) and goes back to the first that answers, from
        the last id it took, with one stream open at a time.
        """
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(0.5)
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(1.0)
        onC = self.stream()
        onC.send(line("k", "src.1.1", 1))
        self.clock.advance(5)
        probes = self.agent.probes()
        self.assertEqual([p.root for p in probes], [A, B])
        probes[0].deferred.errback(ConnectionRefusedError())
        probes[1].answer(200)
        self.assertTrue(onC.transport.stopped)
        request = self.agent.last()
        self.assertEqual((request.root, request.since), (B, "src.1.1"))
        onB = self.stream()
        onB.send(line("k", "src.1.2", 2))
        self.assertEqual(self.ids("k"), ["src.1.1", "src.1.2"])
        self.clock.advance(5)
        probes = self.agent.probes()[2:]
        self.assertEqual([p.root for p in probes], [A])
        probes[0].answer(508)
        self.assertFalse(onB.transport.stopped)
        self.clock.advance(5)
        self.assertEqual(len(self.agent.probes()), 4)

    def test_noProbeOnFirst(self) -> None:
        """
        Following the first upstream, the feed probes nothing.
        """
        self.stream()
        self.clock.advance(60)
        self.assertEqual(self.agent.probes(), [])

    def test_badLines(self) -> None:
        """
        Lines that are not JSON, not envelopes, with a bad key, a bad id or
        a value past the bound are dropped and counted, and gap markers
        counted (but the one starting a stream from the oldest datum held);
        the stream goes on.
        """
        response = self.stream()
        response.send(b'{"gap": true, "since": null}\n')
        self.assertEqual(self.feed.gaps, 0)
        response.send(b"garbage\n[1,2]\n{\"key\":\"k\"}\n\xff\xfe\n")
        response.send(line("bad//key", "src.1.1", 1) + line("*", "src.1.1", 1))
        response.send(line("k", "src.1.x", 1) + line("k", "not an id", 1))
        response.send(line("k", "src.99999999999999999999.1", 1))
        response.send(line("k", "src.1.1", "x" * 1001))
        response.send(b'{"gap": true, "since": "src.1.1"}\n')
        response.send(line("k", "src.1.2", "fine"))
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(
            figures["upstreamDropped"],
            {"not-json": 2, "not-envelope": 2, "bad-key": 2, "bad-id": 3, "too-large": 1},
        )
        self.assertEqual(figures["upstreamGaps"], 1)
        self.assertEqual(self.store.latest("k").value, "fine")
        self.assertEqual(self.feed.state, "streaming")

    def test_lineTooLong(self) -> None:
        """
        A line longer than the largest value plus the margin ends the stream
        without being held, and the feed fails over.
        """
        response = self.stream()
        limit = 1000 + LINE_MARGIN
        response.send(b'{"key":"k","id":"src.1.1","value":"' + b"x" * limit)
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.feed.dropped["line-too-long"], 1)
        self.assertEqual(self.feed.state, "waiting")

    def test_registrations(self) -> None:
        """
        When a stream opens and every 30 s after, the upstream's listing is
        read and each registered key's metadata kept; bad entries counted.
        """
        self.stream()
        [listing] = self.agent.listings()
        self.assertEqual(listing.uri, A + "artcasts")
        body = json.dumps([
            {"key": "a", "description": "A"},
            {"key": "b"},
            {"key": "bad//key", "description": "no"},
            "nonsense",
            {"key": "big", "description": "x" * 2000},
        ]).encode()
        response = listing.answer(200)
        response.send(body)
        response.end()
        self.assertEqual(self.store.metadata("a"), {"description": "A"})
        self.assertIsNone(self.store.metadata("b"))
        self.assertEqual(self.feed.dropped["bad-registration"], 3)
        self.clock.advance(30)
        self.assertEqual(len(self.agent.listings()), 2)

    def test_loopByHeader(self) -> None:
        """
        An upstream whose C{Artcast-Upstreams} names this server is refused;
        the names of a good one are learned, and given with this server's.
        """
        self.stream(headers={b"Artcast-Upstreams": [self.store.instance.encode() + b", x"]})
        self.assertEqual(self.feed.state, "waiting")
        self.clock.advance(0.5)
        self.stream(headers={b"Artcast-Upstreams": [b"up1, up2, bad name!"]})
        self.assertEqual(self.feed.upstreamNames(), (self.store.instance, "up1", "up2"))

    def test_stop(self) -> None:
        """
        Stopping the feed closes its stream and leaves no timer behind.
        """
        response = self.stream()
        self.feed.stopService()
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.feed.state, "stopped")

    def test_metrics(self) -> None:
        """
        C{/metrics} shows the upstream figures, those of sending on among them.
        """
        self.stream().send(line("k", "src.1.1", 1))
        text = metricsText(lambda: {**_baseFigures(), **self.feed.statistics()}).decode()
        self.assertIn("artcast_upstream_datums_total 1.0", text)
        self.assertIn('artcast_upstream_following{url="%s"} 1.0' % (A,), text)
        for name in ("sent_on", "echoes", "send_failures"):
            self.assertIn("artcast_upstream_%s_total 0.0" % (name,), text)


class _MulticastPort:
    """
    A fake UDP port that records its settings and the datagrams written.
    """

    def __init__(self) -> None:
        self.ttl: int | None = None
        self.loop: bool | None = None
        self.interface: str | None = None
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def setTTL(self, ttl: int) -> None:
        self.ttl = ttl

    def setLoopbackMode(self, mode: bool) -> None:
        self.loop = mode

    def setOutgoingInterface(self, address: str) -> Deferred[None]:
        self.interface = address
        return succeed(None)

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        self.written.append((datagram, address))

    def stopListening(self) -> None:
        self.stopped = True


class _MulticastClock(Clock):
    """
    A clock that also listens on fake multicast ports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_MulticastPort] = []

    def listenMulticast(self, port: int, protocol: Any, interface: str = "",
                        maxPacketSize: int = 8192, listenMultiple: bool = False) -> _MulticastPort:
        self.ports.append(_MulticastPort())
        return self.ports[-1]


GROUP = ("239.255.1.2", 4000)
REGISTER_GROUP = ("239.255.1.2", 4001)
KEY = b"k" * 32


class SendOnTests(SynchronousTestCase):
    """
    With C{--upstream-multicast}, the feed's L{RelayOutlet} sends every new
    datum on to the data group with its original stamp.
    """

    def makeFeed(
        self, signingKey: bytes | None = None, outlet: bool = True,
        registerGroup: tuple[str, int] | None = None,
    ) -> None:
        self.clock = _MulticastClock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(
            self.store, self.clock, signingKeys=[signingKey] if signingKey else []
        )
        self.agent = _Agent()
        self.outlet = RelayOutlet(
            self.clock, GROUP, "127.0.0.1", 0, signingKey, registerGroup=registerGroup,
        ) if outlet else None
        self.feed = UpstreamFeed(
            [A], self.handler, self.clock, self.agent, maxValueSize=1_000_000,
            outlet=self.outlet,
        )
        self.feed.startService()
        self.addCleanup(self.feed.stopService)
        self.response = self.agent.last().answer(200)

    def written(self) -> list[bytes]:
        if not self.clock.ports:
            return []
        [port] = self.clock.ports
        self.assertTrue(all(address == GROUP for _, address in port.written))
        return [datagram for datagram, _ in port.written]

    def test_sentOn(self) -> None:
        """
        A relayed datum is written to the data group as one version 2
        datagram with the upstream's id, not repairable, from a socket set
        as the HTTP publisher's (TTL, interface, loop on).
        """
        self.makeFeed()
        [port] = self.clock.ports
        self.assertEqual((port.ttl, port.loop, port.interface), (0, True, "127.0.0.1"))
        self.response.send(line("a/b", "src.5.1", {"x": 1}))
        [datagram] = self.written()
        message = parseData(datagram)
        assert isinstance(message, DataMessage) and message.stamp is not None
        self.assertEqual((message.key, message.value), ("a/b", {"x": 1}))
        stamp = message.stamp
        self.assertEqual((stamp.source, stamp.boot, stamp.seq), ("src", 5, 1))
        self.assertEqual(stamp.sent, self.clock.seconds())
        self.assertFalse(message.repairable)
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamSentOn"], 1)

    def test_registrationsSentOn(self) -> None:
        """
        A registration read from the upstream's listing is sent on to the
        register group when it is new or changed, not when it is the same,
        and signed (version 2) when the relay has a key.
        """
        for signingKey in (None, KEY):
            self.makeFeed(signingKey, registerGroup=REGISTER_GROUP)
            for description, expected in (("A", 1), ("A", 1), ("B", 2)):
                [listing] = self.agent.listings()[-1:]
                response = listing.answer(200)
                response.send(json.dumps([{"key": "a", "description": description}]).encode())
                response.end()
                sent = [d for d, address in self.clock.ports[0].written if address == REGISTER_GROUP]
                self.assertEqual(len(sent), expected)
                message = parseRegister(sent[-1], signingKeys=[signingKey] if signingKey else [])
                self.assertEqual((message.key, message.meta), ("a", {"description": description}))
                self.assertEqual(message.stamp is not None, signingKey is not None)
                self.response.send(b"\n")  # the stream's heartbeat
                self.clock.advance(30)
            self.assertEqual(self.feed.statistics()["upstream"]["upstreamRegistrationsSentOn"], 2)

    def test_duplicateNotSentOn(self) -> None:
        """
        A datum the server had already (from multicast, or twice on the
        stream) is not sent on.
        """
        self.makeFeed()
        for datagram in encodeData("k", 1, Stamp("src", 5, 1, self.clock.seconds())):
            self.handler.dataReceived(datagram, ("127.0.0.9", 9))
        self.response.send(line("k", "src.5.1", 1) + line("k", "src.5.2", 2)
                           + line("k", "src.5.2", 2))
        self.assertEqual(
            [parseData(d).stamp.seq for d in self.written()], [2]  # type: ignore[union-attr]
        )
        self.assertEqual(self.feed.statistics()["upstream"]["upstreamSentOn"], 1)

    def test_signedAndFragmented(self) -> None:
        """
        With a source key the datagrams are signed with it, a large value
        goes in fragments, and another server with the key keeps the datum
        under the upstream's id.
        """
        self.makeFeed(signingKey=KEY)
        big = "v" * 150_000
        self.response.send(line("big", "src.7.3", big))
        datagrams = self.written()
        self.assertGreater(len(datagrams), 1)
        other = KeyStore(Clock())
        receiver = DatagramHandler(other, Clock(), signingKeys=[KEY])
        for datagram in datagrams:
            receiver.dataReceived(datagram, ("127.0.0.1", 9))
        [datum] = other.held("big")
        self.assertEqual((datum.id, datum.value), ("src.7.3", big))
        unsigned = DatagramHandler(KeyStore(Clock()), Clock(), signingKeys=[b"x" * 32])
        for datagram in datagrams:
            unsigned.dataReceived(datagram, ("127.0.0.1", 9))
        self.assertEqual(unsigned.stats.datums, 0)

    def test_echoes(self) -> None:
        """
        The relay's own datagrams heard back through the loop are counted as
        echoes, not drops, and not delivered twice; a replay of an id it
        never sent is still a drop.
        """
        self.makeFeed()
        self.response.send(line("k", "src.5.1", 1) + line("big", "src.5.2", "w" * 150_000))
        datagrams = self.written()
        for datagram in datagrams:
            self.handler.dataReceived(datagram, ("127.0.0.1", 5555))
        self.assertEqual([d.id for d in self.store.held("k")], ["src.5.1"])
        self.assertEqual([d.id for d in self.store.held("big")], ["src.5.2"])
        self.assertEqual(dict(self.handler.stats.dropped), {})
        self.assertNotIn("replayed", self.handler.stats.sources)
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamEchoes"], len(datagrams))
        self.assertEqual(figures["upstreamSentOn"], 2)
        # Not one of its own: a replay as before.
        self.handler.dataReceived(
            encodeData("k", 1, Stamp("other", 1, 1, self.clock.seconds()))[0], ("127.0.0.9", 9)
        )
        self.handler.dataReceived(
            encodeData("k", 1, Stamp("other", 1, 1, self.clock.seconds()))[0], ("127.0.0.9", 9)
        )
        self.assertEqual(dict(self.handler.stats.dropped), {"replayed": 1})
        self.assertEqual(self.feed.statistics()["upstream"]["upstreamEchoes"], len(datagrams))

    def test_echoMemoryBounded(self) -> None:
        """
        The outlet remembers only the last C{memory} ids it sent.
        """
        clock = _MulticastClock()
        outlet = RelayOutlet(clock, GROUP, "0.0.0.0", 1, None, memory=3)
        outlet.startService()
        self.assertIsNone(clock.ports[0].interface)
        for seq in range(1, 11):
            outlet.sendOn(DataMessage("k", seq, Stamp("s", 1, seq, 0.0)))
        self.assertEqual(outlet.sentOn, 10)
        self.assertEqual(len(outlet._sent), 3)
        self.assertFalse(outlet.isEcho(Stamp("s", 1, 7, 0.0)))
        self.assertTrue(outlet.isEcho(Stamp("s", 1, 8, 0.0)))
        outlet.stopService()
        self.assertTrue(clock.ports[0].stopped)
        outlet.sendOn(DataMessage("k", 11, Stamp("s", 1, 11, 0.0)))
        self.assertEqual((outlet.sentOn, outlet.failed), (10, 1))

    def test_withoutFlag(self) -> None:
        """
        Without an outlet nothing is sent and the handler asks about no
        echoes.
        """
        self.makeFeed(outlet=False)
        self.response.send(line("k", "src.5.1", 1))
        self.assertEqual(self.clock.ports, [])
        self.assertIsNone(self.handler.echoes)
        self.assertEqual(self.feed.statistics()["upstream"]["upstreamSentOn"], 0)
        self.assertEqual([d.id for d in self.store.held("k")], ["src.5.1"])


def _logged() -> tuple[list[str], Any]:
    """
    Collect the text of every event logged from now on.

    @return: the list the texts go to, and what to call to stop.
    """
    from twisted.logger import formatEvent, globalLogPublisher

    texts: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        texts.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    return texts, lambda: globalLogPublisher.removeObserver(observe)


def _bearer(request: _Request) -> list[bytes] | None:
    return request.headers.getRawHeaders(b"Authorization")


class TokenTests(SynchronousTestCase):
    """
    With tokens, the feed sends C{Authorization: Bearer} to the upstreams
    that have one, and counts the answers C{401} and C{403}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.agent = _Agent()
        self.feed = UpstreamFeed(
            [A, B, C], self.handler, self.clock, self.agent, maxValueSize=1000,
            tokens={A: "token-for-A", B: "token+for/B=="},
        )
        self.logged, stop = _logged()
        self.addCleanup(stop)
        self.feed.startService()
        self.addCleanup(self.feed.stopService)

    def test_perUpstream(self) -> None:
        """
        Each stream request carries the token of its upstream, and none goes
        to an upstream without one.
        """
        self.assertEqual(_bearer(self.agent.last()), [b"Bearer token-for-A"])
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(0.5)
        self.assertEqual(self.agent.last().root, B)
        self.assertEqual(_bearer(self.agent.last()), [b"Bearer token+for/B=="])
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(1.0)
        self.assertEqual(self.agent.last().root, C)
        self.assertIsNone(_bearer(self.agent.last()))

    def test_probesAndListings(self) -> None:
        """
        The listing of the upstream followed and the probes of the earlier
        ones carry each upstream's own token.
        """
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(0.5)
        self.agent.last().answer(200)
        [listing] = self.agent.listings()
        self.assertEqual((listing.root, _bearer(listing)), (B, [b"Bearer token+for/B=="]))
        self.clock.advance(5)
        [probe] = self.agent.probes()
        self.assertEqual((probe.root, _bearer(probe)), (A, [b"Bearer token-for-A"]))

    def test_refusals(self) -> None:
        """
        A C{403} or C{401} is counted per upstream (C{/stats} and
        C{/metrics}), logged as a token refused or wanted without the token,
        and failed over as any refusal.
        """
        self.agent.last().answer(403)
        self.assertEqual(self.feed.state, "waiting")
        self.clock.advance(0.5)
        self.agent.last().answer(401)
        self.clock.advance(1.0)
        self.assertEqual(self.agent.last().root, C)
        self.agent.last().answer(401)
        self.clock.advance(2.0)
        self.assertEqual(self.agent.last().root, A)
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamAuthFailures"], 3)
        self.assertEqual(
            {url: figures["upstreams"][url]["upstreamAuthFailures"] for url in (A, B, C)},
            {A: 1, B: 1, C: 1},
        )
        self.assertEqual(self.feed.failures, {A: 1, B: 1, C: 1})
        text = "\n".join(self.logged).lower()
        self.assertIn(f"upstream {A} refused the token (403)", text)
        self.assertIn(f"upstream {B} refused the token (401)", text)
        self.assertIn(f"upstream {C} wants a token (401)", text)
        self.assertNotIn("token-for-A", text)
        self.assertNotIn("token+for/B", text)
        metrics = metricsText(lambda: {**_baseFigures(), **self.feed.statistics()}).decode()
        self.assertIn('artcast_upstream_auth_failures_total{url="%s"} 1.0' % (A,), metrics)

    def test_probeRefused(self) -> None:
        """
        A probe answered C{403} is counted, and the feed stays where it is.
        """
        self.agent.last().deferred.errback(ConnectionRefusedError())
        self.clock.advance(0.5)
        onB = self.agent.last().answer(200)
        self.clock.advance(5)
        self.agent.probes()[0].answer(403)
        self.assertEqual(self.feed.authFailures, {A: 1})
        self.assertFalse(onB.transport.stopped)
        self.assertEqual(self.feed.state, "streaming")

    def test_boundedLog(self) -> None:
        """
        Refusals are logged at most ten a minute (then a count), each
        counted, and a stream's refusal in one line with its failover.
        """
        self.agent.last().answer(403)
        self.assertEqual(sum("token" in t for t in self.logged), 1)
        for _ in range(100):
            self.feed._authRefused(B, 401)
        self.assertEqual(self.feed.authFailures, {A: 1, B: 100})
        self.assertEqual(sum("token" in t for t in self.logged), 11)


class TokenFileTests(SynchronousTestCase):
    """
    L{parseUpstreamTokens} and C{--upstream-token-file}.
    """

    def test_lines(self) -> None:
        """
        A line C{TOKEN} is for every upstream, a line C{URL TOKEN} for that
        one (it wins); blank lines and comments are ignored.
        """
        data = b"# tokens\n\n  shared-token  \nhttp://b.example:8888 b-token\n"
        self.assertEqual(
            parseUpstreamTokens(data, [A, B]), {A: "shared-token", B: "b-token"},
        )
        self.assertEqual(parseUpstreamTokens(b"%s t\n" % (C.encode(),), [A, C]), {C: "t"})

    def test_bad(self) -> None:
        """
        A malformed line, a URL not among the upstreams, a second token for
        the same upstreams, a file that is not UTF-8 or holds no token is a
        one-line error that never shows a token.
        """
        for data, words in [
            (b"a b c\n", "line 1: expected TOKEN or URL TOKEN"),
            (b"secret1 http://a.example:8888/\n", "line 1: a token is made of"),
            (b"secret1 secret2\n", "line 1: expected URL TOKEN"),
            (b"\nsecret\xff\n", "not UTF-8"),
            (b"sec ret\"\n".replace(b" ", b""), "line 1: a token is made of"),
            (b"http://other:1/ secret\n", "http://other:1/ is not among the --upstream given"),
            (b"secret\nsecret2\n", "line 2: a second token for every upstream"),
            (b"%s secret\n%s secret2\n" % (A.encode(), A.encode()),
             f"line 2: a second token for {A}"),
            (b"# nothing\n\n", "no token in it"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseUpstreamTokens(data, [A, B])
            message = str(caught.exception)
            self.assertIn(words, message)
            self.assertNotIn("secret", message)
            self.assertNotIn("\n", message)

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def tokenFile(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_option(self) -> None:
        """
        C{--upstream-token-file} gives the feed each upstream's token,
        wherever it is among the options.
        """
        from tests.test_feeds import _MulticastReactor

        path = self.tokenFile(b"http://127.0.0.1:2 two\none\n")
        options = self.parse(
            "--upstream-token-file", path,
            "--upstream", "http://127.0.0.1:1", "--upstream", "http://127.0.0.1:2/",
        )
        self.assertEqual(
            options["upstream-tokens"],
            {"http://127.0.0.1:1/": "one", "http://127.0.0.1:2/": "two"},
        )
        top = tap.makeService(options, reactor=_MulticastReactor())
        self.assertEqual(top.getServiceNamed("upstream").tokens, options["upstream-tokens"])
        self.assertEqual(self.parse()["upstream-tokens"], {})

    def test_optionErrors(self) -> None:
        """
        A missing or malformed file, a URL not among the C{--upstream}
        given, or no C{--upstream} at all, is a usage error naming the file.
        """
        missing = os.path.join(self.mktemp(), "none")
        bad = self.tokenFile(b"http://127.0.0.1:9/ secret\n")
        for args, words in [
            (["--upstream-token-file", missing], "No such file"),
            (["--upstream-token-file", bad], "not among the --upstream given"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--upstream", "http://127.0.0.1:1/", *args)
            self.assertIn(words, str(caught.exception))
            self.assertIn("--upstream-token-file", str(caught.exception))
            self.assertNotIn("secret", str(caught.exception))
        self.assertRaises(
            usage.UsageError, self.parse, "--upstream-token-file", self.tokenFile(b"t\n")
        )


class ShutdownLineTests(SynchronousTestCase):
    """
    An upstream's last line C{{"shutdown": true, ...}} moves the feed to the
    next upstream at once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.agent = _Agent()
        self.feed = UpstreamFeed([A, B, C], self.handler, self.clock, self.agent, maxValueSize=1000)
        self.logged, stop = _logged()
        self.addCleanup(stop)
        self.feed.startService()
        self.addCleanup(self.feed.stopService)

    def test_atOnce(self) -> None:
        """
        On the line the stream is closed and the next upstream asked at
        once, from the last id, without a back-off; it is counted as a
        shutdown, not as a failure, and logged.
        """
        onA = self.agent.last().answer(200)
        onA.send(line("k", "src.5.1", 1) + b'{"shutdown":true,"retryAfter":3}\n')
        self.assertTrue(onA.transport.stopped)
        request = self.agent.last()
        self.assertEqual((request.root, request.since), (B, "src.5.1"))
        self.assertEqual(self.feed.state, "connecting")
        onA.end()
        self.assertEqual(self.agent.last(), request)
        request.answer(200).send(line("k", "src.5.2", 2))
        self.assertEqual([d.id for d in self.store.held("k")], ["src.5.1", "src.5.2"])
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamShutdowns"], 1)
        self.assertEqual(figures["upstreams"][A]["upstreamShutdowns"], 1)
        self.assertEqual(figures["upstreams"][A]["upstreamFailures"], 0)
        self.assertEqual(figures["upstreamFailovers"], 1)
        self.assertEqual(figures["upstreamDropped"], {})
        self.assertIn(f"upstream {A} is shutting down; following {B}", "\n".join(self.logged))
        metrics = metricsText(lambda: {**_baseFigures(), **self.feed.statistics()}).decode()
        self.assertIn('artcast_upstream_shutdowns_total{url="%s"} 1.0' % (A,), metrics)

    def test_againSoon(self) -> None:
        """
        A second shutdown line within ten seconds is followed after the
        back-off, so an upstream that says it again and again makes no busy
        loop.
        """
        self.agent.last().answer(200).send(b'{"shutdown":true}\n')
        self.clock.advance(1)
        self.agent.last().answer(200).send(b'{"shutdown":true}\n')
        self.assertEqual(self.agent.last().root, B)
        self.assertEqual(self.feed.state, "waiting")
        self.clock.advance(0.5)
        self.assertEqual(self.agent.last().root, C)
        self.assertEqual(self.feed.shutdowns, {A: 1, B: 1})
        self.assertEqual(sum(self.feed.failures.values()), 0)


class HostileUpstreamTests(SynchronousTestCase):
    """
    An upstream that sends ids from the future, values too large, endless
    keys and garbage: each is counted and logged at a bounded rate, the store
    stays within its bounds, and good datums after them are delivered.
    """

    BOOT = 1_799_000_000_000

    def makeFeed(self, freshness: float | None = None, maxKeys: int = 100) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock, maxKeys=maxKeys, maxBytes=2_000_000)
        self.handler = DatagramHandler(self.store, self.clock, freshness=freshness)
        self.agent = _Agent()
        self.feed = UpstreamFeed([A, B], self.handler, self.clock, self.agent, maxValueSize=1000)
        self.logged, stop = _logged()
        self.addCleanup(stop)
        self.feed.startService()
        self.addCleanup(self.feed.stopService)
        self.response = self.agent.last().answer(200)

    def real(self, seq: int) -> str:
        return f"src.{self.BOOT}.{seq}"

    def ids(self, key: str = "k") -> list[str]:
        return [d.id for d in self.store.held(key)]

    def futureIds(self, freshness: float | None) -> None:
        self.makeFeed(freshness)
        self.response.send(line("k", self.real(1), 1))
        self.response.send(line("k", f"src.{2**62}.{2**62}", "forged"))
        # The real source's next datums, in the same instant, then later.
        self.response.send(line("k", self.real(2), 2) + line("k", self.real(3), 3))
        self.clock.advance(1)
        self.response.send(
            line("k", f"src.{self.BOOT}.{2**62}", "forged") + line("k", self.real(4), 4)
        )
        self.clock.advance(1)
        self.response.send(line("k", self.real(5), 5) + line("k", self.real(5), 5))
        self.assertEqual(
            self.ids(),
            [self.real(1), f"src.{2**62}.{2**62}", self.real(2), self.real(3),
             f"src.{self.BOOT}.{2**62}", self.real(4), self.real(5)],
        )
        figures = self.feed.statistics()["upstream"]
        self.assertEqual(figures["upstreamFutureIds"], 2)
        self.assertEqual(figures["upstreamDuplicates"], 1)
        self.assertEqual(self.feed.lastId, self.real(5))
        self.assertEqual(sum("from the future" in t for t in self.logged), 2)
        metrics = metricsText(lambda: {**_baseFigures(), **self.feed.statistics()}).decode()
        self.assertIn("artcast_upstream_future_ids_total 2.0", metrics)
        # Failing over, the next upstream is asked from the last real id.
        self.response.end()
        self.clock.advance(0.5)
        request = self.agent.last()
        self.assertEqual((request.root, request.since), (B, self.real(5)))
        request.answer(200).send(line("k", self.real(5), 5) + line("k", self.real(6), 6))
        self.assertEqual(self.ids()[-2:], [self.real(5), self.real(6)])

    def test_futureIds(self) -> None:
        """
        A forged id from the future (boot and seq 2**62, or seq 2**62 in the
        real boot) is taken but never resumed from, and does not make the
        real source's next datums, even in the same instant, be dropped;
        a real duplicate still is.
        """
        self.futureIds(None)

    def test_futureIdsWindow(self) -> None:
        """
        The same holds on a server with a freshness window, where relayed
        datums' send times (when the relay took them) prove nothing.
        """
        self.futureIds(60.0)

    def test_resetNotDuplicate(self) -> None:
        """
        With a window, a datum an upstream sends again after a failover is a
        duplicate, not a reset, though it was taken later.
        """
        self.makeFeed(60.0)
        self.response.send(line("k", self.real(1), 1) + line("k", self.real(2), 2))
        self.response.end()
        self.clock.advance(0.5)
        self.agent.last().answer(200).send(line("k", self.real(1), 1) + line("k", self.real(2), 2)
                                          + line("k", self.real(3), 3))
        self.assertEqual(self.ids(), [self.real(n) for n in (1, 2, 3)])
        self.assertEqual(self.feed.duplicates, 2)

    def test_largeValues(self) -> None:
        """
        Values past C{--max-value-size} are dropped, counted and logged at a
        bounded rate; the good datums between them are delivered.
        """
        self.makeFeed()
        for seq in range(1, 201):
            value = "x" * 5000 if seq % 2 else seq
            self.response.send(line("k", self.real(seq), value))
        # The datums dropped are holes, waited for 50 ms, then lost.
        self.clock.advance(1)
        held = [d.value for d in self.store.held("k")]
        self.assertEqual(held, list(range(2, 201, 2))[-len(held):])
        self.assertEqual(self.store.latest("k").value, 200)
        self.assertEqual(self.feed.dropped, {"too-large": 100})
        self.assertLessEqual(sum("Dropped a line" in t for t in self.logged), 10)
        self.assertTrue(all(d.size <= 1000 for d in self.store.held("k")))

    def test_endlessKeys(self) -> None:
        """
        An upstream sending new keys without end makes the store forget the
        least recently updated ones: it holds at most C{--max-keys} keys and
        its byte budget, and the latest datums are delivered.
        """
        self.makeFeed(maxKeys=100)
        for seq in range(1, 5001):
            self.response.send(line(f"spam/{seq}", self.real(seq), "v" * 200))
        self.assertLessEqual(len(self.store), 100)
        self.assertLessEqual(self.store.bytes, self.store.maxBytes)
        self.assertGreaterEqual(self.store.evicted, 4900)
        self.assertEqual(self.ids("spam/5000"), [self.real(5000)])
        self.assertEqual(self.feed.datums, 5000)
        self.assertEqual(self.feed.state, "streaming")

    def test_garbageMixed(self) -> None:
        """
        Garbage lines between good ones are dropped, counted and logged at a
        bounded rate; every good datum is delivered, in order.
        """
        self.makeFeed()
        garbage = [b"garbage", b"\xff\xfe", b"[1,2]", b'{"key":"k"}',
                   line("k", "not an id", 1).strip(), line("bad//key", self.real(1), 1).strip()]
        for seq in range(1, 301):
            self.response.send(garbage[seq % len(garbage)] + b"\n" + line("k", self.real(seq), seq))
        self.assertEqual(self.store.latest("k").value, 300)
        self.assertEqual(
            [d.value for d in self.store.held("k")],
            list(range(301 - len(self.store.held("k")), 301)),
        )
        self.assertEqual(sum(self.feed.dropped.values()), 300)
        self.assertEqual(self.feed.datums, 300)
        self.assertLessEqual(sum("Dropped a line" in t for t in self.logged), 10)
        self.assertEqual(self.feed.state, "streaming")


def _baseFigures() -> dict[str, Any]:
    from artcast.server.stats import ServerStatistics, Stats

    clock = Clock()
    return ServerStatistics(clock, Stats(), KeyStore(clock)).figures()


class NamesTests(SynchronousTestCase):
    """
    The upstream URLs and the C{Artcast-Upstreams} header.
    """

    def test_url(self) -> None:
        """
        An upstream is an http or https root, given with a final slash.
        """
        self.assertEqual(upstreamURL("http://127.0.0.1:8888"), "http://127.0.0.1:8888/")
        self.assertEqual(upstreamURL("https://a.example/x/"), "https://a.example/x/")
        for bad in ("ftp://a/", "a.example:8888", "http:///", "http://a/?x=1", "http://a:99999/"):
            self.assertRaises(ValueError, upstreamURL, bad)

    def test_header(self) -> None:
        """
        Only well-formed names are taken, and at most 64.
        """
        self.assertEqual(parseUpstreams(b" a , b-c,, d e,\xff"), ("a", "b-c"))
        self.assertEqual(len(parseUpstreams(b",".join([b"n"] * 1000))), 64)
        self.assertEqual(parseUpstreams(None), ())


class LoopRefusalTests(SynchronousTestCase):
    """
    A server names its upstreams on its streams and refuses, with C{508}, a
    follower among them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock)
        names = (self.store.instance, "up1", "up2")
        self.stub = StubTreq(ArtcastApp(self.store, self.clock, upstreamNames=lambda: names).resource())

    def head(self, via: bytes | None) -> Any:
        headers = {b"Accept": [b"application/x-ndjson"]}
        if via is not None:
            headers[b"Artcast-Via"] = [via]
        response = self.successResultOf(
            self.stub.head("http://server/artcasts/...", headers=headers)
        )
        return response

    def test_upstreamsHeader(self) -> None:
        """
        A stream answer names this server and the servers it follows.
        """
        response = self.head(b"someone")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"Artcast-Upstreams"),
            [f"{self.store.instance}, up1, up2".encode()],
        )

    def test_loop(self) -> None:
        """
        A follower that is this server or one it follows gets C{508}.
        """
        for via in (b"up2", self.store.instance.encode()):
            response = self.head(via)
            self.assertEqual(response.code, 508)
        get = self.successResultOf(self.stub.get(
            "http://server/artcasts/...",
            headers={b"Accept": [b"application/x-ndjson"], b"Artcast-Via": [b"up1"]},
        ))
        self.assertEqual(get.code, 508)
        self.assertIn(b"Loop", self.successResultOf(get.content()))

    def test_default(self) -> None:
        """
        A server that follows none names itself alone.
        """
        store = KeyStore(self.clock)
        stub = StubTreq(ArtcastApp(store, self.clock).resource())
        response = self.successResultOf(stub.head(
            "http://server/artcasts/...", headers={b"Accept": [b"application/x-ndjson"]}
        ))
        self.assertEqual(
            response.headers.getRawHeaders(b"Artcast-Upstreams"), [store.instance.encode()]
        )


class OptionTests(SynchronousTestCase):
    """
    C{--upstream} and C{--upstream-silence}.
    """

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_options(self) -> None:
        """
        C{--upstream} repeats, in order, each URL given a final slash; the
        silence bound defaults to three stream heartbeats.
        """
        options = self.parse("--upstream", "http://a:1", "--upstream", "http://b:2/")
        self.assertEqual(options["upstream"], ["http://a:1/", "http://b:2/"])
        self.assertEqual(options["upstream-silence"], 45.0)
        self.assertEqual(self.parse()["upstream"], [])
        self.assertEqual(self.parse("--upstream-silence", "3")["upstream-silence"], 3.0)

    def test_bad(self) -> None:
        """
        A URL that is not an http root, or given twice, is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--upstream", "ftp://a/")
        self.assertRaises(
            usage.UsageError, self.parse, "--upstream", "http://a/", "--upstream", "http://a"
        )
        self.assertRaises(usage.UsageError, self.parse, "--upstream-silence", "0")

    def test_service(self) -> None:
        """
        The feed is in the service tree only with C{--upstream}, and its
        figures in C{/stats}.
        """
        from tests.test_feeds import _MulticastReactor

        top = tap.makeService(self.parse("--upstream", "http://127.0.0.1:1/"),
                              reactor=_MulticastReactor())
        feed = top.getServiceNamed("upstream")
        self.assertIsInstance(feed, UpstreamFeed)
        self.assertIn("upstream", top.statistics.figures())
        plain = tap.makeService(self.parse(), reactor=_MulticastReactor())
        self.assertRaises(KeyError, plain.getServiceNamed, "upstream")
        self.assertIsNone(feed.outlet)

    def test_multicastOption(self) -> None:
        """
        C{--upstream-multicast} gives the feed a L{RelayOutlet} to the data
        group, with the publish TTL, the interface and the first source key;
        it needs C{--upstream}.
        """
        from tests.test_feeds import _MulticastReactor

        keyFile = self.mktemp()
        with open(keyFile, "w") as f:
            f.write("k" * 64 + "\n")
        options = self.parse(
            "--upstream", "http://127.0.0.1:1/", "--upstream-multicast",
            "--data-group", "239.255.3.4", "--data-port", "4100", "--publish-ttl", "0",
            "--interface", "127.0.0.1", "--source-key-file", keyFile,
        )
        top = tap.makeService(options, reactor=_MulticastReactor())
        outlet = top.getServiceNamed("upstream").getServiceNamed("relay-outlet")
        self.assertIsInstance(outlet, RelayOutlet)
        self.assertEqual(
            (outlet.group, outlet.ttl, outlet.interface, outlet.signingKey),
            (("239.255.3.4", 4100), 0, "127.0.0.1", options["source-keys"][0]),
        )
        self.assertFalse(self.parse()["upstream-multicast"])
        self.assertRaises(usage.UsageError, self.parse, "--upstream-multicast")


class _Follower:
    """
    A C{since=} client of a key on a real server: it starts from the
    latest datum, then asks C{since=} each id it got, until it has
    C{count} datums or C{limit} seconds have passed.

    @ivar received: the values, in the order they came.
    @ivar ids: their C{Artcast-Id}s.
    @ivar first: fires when the first datum came.
    """

    def __init__(self, test: TestCase, url: str, count: int, limit: float) -> None:
        self.test = test
        self.url = url
        self.count = count
        self.limit = limit
        self.received: list[int] = []
        self.ids: list[str] = []
        self.first: Deferred[None] = Deferred()

    @inlineCallbacks
    def run(self) -> Any:
        """
        Follow the key.
        """
        deadline = reactor.seconds() + self.limit
        since = "latest"
        while len(self.received) < self.count and reactor.seconds() < deadline:
            response = yield treq.get(
                self.url, params={"since": since, "timeout": "5"}, persistent=False,
            )
            body = yield response.content()
            if response.code == 204:
                continue
            self.test.assertEqual(response.code, 200, body)
            since = response.headers.getRawHeaders(b"Artcast-Id")[0].decode()
            self.ids.append(since)
            self.received.append(json.loads(body))
            if not self.first.called:
                self.first.callback(None)


class ChainTests(TestCase):
    """
    A chain of real servers: two origins on one multicast group -> a relay
    that follows both, in order -> a relay; the first origin is killed with
    SIGKILL and restarted while datums flow.
    """

    timeout = 120

    #: Datums sent, in four rounds.
    COUNT = 400

    @inlineCallbacks
    def test_chainWithFailover(self) -> Any:
        """
        A C{since=} client on the last relay gets every datum the servers
        held, in order and once each, across the first origin's death and
        return; the first relay fails over to the second origin and back.
        """
        import os
        import signal

        from artcast.source import Source

        group = randomGroup()
        dataPort, registerPort = freePort(2), freePort(2)
        originArgs = dict(group=group, dataPort=dataPort, registerPort=registerPort)
        origin1 = ArtcastProcess(self, **originArgs)
        origin2 = ArtcastProcess(self, **originArgs)
        yield origin1.start()
        yield origin2.start()
        relay1 = ArtcastProcess(self, [
            "--upstream", origin1.url, "--upstream", origin2.url, "--upstream-silence", "5",
        ])
        yield relay1.start()
        relay2 = ArtcastProcess(self, ["--upstream", relay1.url, "--upstream-silence", "5"])
        yield relay2.start()

        def following(url: str) -> Any:
            return lambda s: (
                s["upstream"]["state"] == "streaming" and s["upstream"]["url"] == url + "/"
            )

        yield relay1.waitFor(following(origin1.url))
        yield relay2.waitFor(following(relay1.url))

        source = Source(
            src="chain", groups=[(group, dataPort)], registerGroups=[(group, registerPort)],
            ttl=0, interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        send = PacedSender(source, "chain/n").upTo
        follower = _Follower(self, relay2.url + "/artcasts/chain/n", self.COUNT, 90)
        received, ids = follower.received, follower.ids

        def has(count: int) -> Any:
            return relay2.waitFor(lambda s: s["upstream"]["upstreamDatums"] >= count, limit=30)

        # The client starts from the first datum, then asks since= each id.
        yield send(1)
        yield has(1)
        done = follower.run()
        yield follower.first

        yield send(self.COUNT // 4)
        yield has(self.COUNT // 4)

        # The first origin dies: the first relay follows the second.
        os.kill(origin1.pid, signal.SIGKILL)
        yield origin1.watcher.ended
        yield send(self.COUNT // 2)
        yield relay1.waitFor(following(origin2.url), limit=30)
        yield has(self.COUNT // 2)

        # It comes back, on the same port: the first relay goes back to it.
        origin1b = ArtcastProcess(self, httpPort=origin1.httpPort, **originArgs)
        yield origin1b.start()
        yield send(3 * self.COUNT // 4)
        yield relay1.waitFor(
            lambda s: following(origin1.url)(s) and s["upstream"]["upstreamFailovers"] >= 2,
            limit=30,
        )
        yield send(self.COUNT)
        yield done

        self.assertEqual(received, list(range(1, self.COUNT + 1)))
        self.assertEqual(len(set(ids)), len(ids))
        self.assertTrue(all(i.startswith("chain.") for i in ids))
        stats1 = yield relay1.stats()
        self.assertEqual(stats1["upstream"]["upstreams"][origin2.url + "/"]["upstreamConnects"], 1)
        stats2 = yield relay2.stats()
        self.assertEqual(stats2["upstream"]["upstreamDropped"], {})
        self.assertEqual(stats2["upstream"]["upstreamDuplicates"], 0)
        # The second relay refuses to be followed by the first: a loop.
        response = yield treq.get(
            relay2.url + "/artcasts/...",
            headers={"Accept": "application/x-ndjson",
                     "Artcast-Via": stats1["upstream"]["upstreamNames"][0]},
            persistent=False,
        )
        yield response.content()
        self.assertEqual(response.code, 508)


class SendOnChainTests(TestCase):
    """
    Real servers: an origin fed on one group -> a relay with
    C{--upstream-multicast} on a second group -> a server on that second
    group with no upstream at all.
    """

    timeout = 120

    #: Datums sent.
    COUNT = 200

    @inlineCallbacks
    def test_lanBehindRelay(self) -> Any:
        """
        A C{since=} client on the server behind the relay gets every datum,
        in order, with the origin's ids, and the relay counts its own
        datagrams heard back as echoes, not drops.
        """
        from artcast.source import Source

        origin = ArtcastProcess(self)
        yield origin.start()
        lanGroup = randomGroup()
        while lanGroup == origin.group:
            lanGroup = randomGroup()
        lan = dict(group=lanGroup, dataPort=freePort(2), registerPort=freePort(2))
        relay = ArtcastProcess(self, [
            "--upstream", origin.url, "--upstream-multicast", "--publish-ttl", "0",
        ], **lan)
        yield relay.start()
        # A history longer than the run: a client slowed by a loaded
        # machine still finds the datum after its own.
        behind = ArtcastProcess(self, ["--history", str(2 * self.COUNT)], **lan)
        yield behind.start()
        yield relay.waitFor(lambda s: s["upstream"]["state"] == "streaming")

        source = Source(
            src="lan", groups=[(origin.group, origin.dataPort)],
            registerGroups=[(origin.group, origin.registerPort)], ttl=0, interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        send = PacedSender(source, "lan/n").upTo
        follower = _Follower(self, behind.url + "/artcasts/lan/n", self.COUNT, 60)
        received, ids = follower.received, follower.ids

        # The client starts from the first datum, then asks since= each id.
        yield send(1)
        yield behind.waitFor(lambda s: s["datums"] >= 1, limit=30)
        done = follower.run()
        yield follower.first
        yield send(self.COUNT)
        yield done

        behindStats = yield behind.stats()
        relayStats = yield relay.stats()
        self.assertEqual(received, list(range(1, self.COUNT + 1)), (behindStats, relayStats))
        # The origin's ids: its latest, and the source's one boot counting
        # from 1.
        response = yield treq.get(
            origin.url + "/artcasts/lan/n", params={"since": "latest"}, persistent=False,
        )
        yield response.content()
        latest = response.headers.getRawHeaders(b"Artcast-Id")[0].decode()
        boot = latest.split(".")[1]
        self.assertEqual(ids, ["lan.%s.%d" % (boot, n) for n in range(1, self.COUNT + 1)])
        self.assertEqual(ids[-1], latest)
        stats = yield relay.waitFor(
            lambda s: s["upstream"]["upstreamEchoes"] >= self.COUNT, limit=30
        )
        self.assertEqual(stats["upstream"]["upstreamSentOn"], self.COUNT)
        self.assertEqual(stats["upstream"]["upstreamEchoes"], self.COUNT)
        self.assertEqual(stats["dropped"], {})
        self.assertEqual(stats["datums"], self.COUNT)


class TokenThroughProxyTests(TestCase):
    """
    A real haproxy in front of a real origin lets through only requests
    with C{Authorization: Bearer s3cret}; relays follow the origin through
    it, with and without the token file.
    """

    timeout = 120

    #: Datums sent.
    COUNT = 60

    @inlineCallbacks
    def test_tokenThroughProxy(self) -> Any:
        """
        A relay with the token file follows the origin through the proxy,
        and a since= client on it gets every datum with the origin's ids; a
        relay without it is refused with 403s, counted, and takes nothing;
        neither logs the token.
        """
        from artcast.source import Source

        reason = HAProxy.missing()
        if reason is not None:
            raise SkipTest(reason)
        origin = ArtcastProcess(self)
        yield origin.start()
        proxy = HAProxy(self, [origin.httpPort], frontend=[
            "http-request deny deny_status 403"
            ' unless { req.hdr(authorization) -m str "Bearer s3cret" }',
        ])
        yield proxy.start()
        tokenFile = os.path.abspath(self.mktemp())
        with open(tokenFile, "w") as f:
            f.write("# the proxy's token\n%s s3cret\n" % (proxy.url,))
        relay = ArtcastProcess(self, ["--upstream", proxy.url, "--upstream-token-file", tokenFile])
        refused = ArtcastProcess(self, ["--upstream", proxy.url])
        yield relay.start()
        yield refused.start()
        yield relay.waitFor(lambda s: s["upstream"]["state"] == "streaming", limit=30)

        source = Source(
            src="proxied", groups=[(origin.group, origin.dataPort)],
            registerGroups=[(origin.group, origin.registerPort)], ttl=0, interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        send = PacedSender(source, "proxied/n").upTo
        follower = _Follower(self, relay.url + "/artcasts/proxied/n", self.COUNT, 60)
        yield send(1)
        yield relay.waitFor(lambda s: s["upstream"]["upstreamDatums"] >= 1, limit=30)
        done = follower.run()
        yield follower.first
        yield send(self.COUNT)
        yield done

        self.assertEqual(follower.received, list(range(1, self.COUNT + 1)))
        response = yield treq.get(
            origin.url + "/artcasts/proxied/n", params={"since": "latest"}, persistent=False,
        )
        yield response.content()
        latest = response.headers.getRawHeaders(b"Artcast-Id")[0].decode()
        boot = latest.split(".")[1]
        self.assertEqual(
            follower.ids, ["proxied.%s.%d" % (boot, n) for n in range(1, self.COUNT + 1)]
        )
        root = proxy.url + "/"
        stats = yield relay.stats()
        self.assertEqual(stats["upstream"]["upstreamAuthFailures"], 0)
        stats = yield refused.waitFor(
            lambda s: s["upstream"]["upstreams"][root]["upstreamAuthFailures"] >= 2, limit=30,
        )
        self.assertNotEqual(stats["upstream"]["state"], "streaming")
        self.assertEqual(stats["upstream"]["upstreamDatums"], 0)
        self.assertIn("refused the request (403; no token sent)", refused.output)
        for server in (relay, refused):
            self.assertNotIn("s3cret", server.output)


class ShutdownSwitchTests(TestCase):
    """
    A relay following two real origins on one group, the first stopped with
    SIGTERM.
    """

    timeout = 120

    @inlineCallbacks
    def test_switchAtOnce(self) -> Any:
        """
        When its upstream shuts down, the relay follows the next one at once:
        its C{/stats} counts a shutdown and no failure of the first, and
        datums keep coming through the second.
        """
        from artcast.source import Source

        group = randomGroup()
        originArgs = dict(group=group, dataPort=freePort(2), registerPort=freePort(2))
        origin1 = ArtcastProcess(self, **originArgs)
        origin2 = ArtcastProcess(self, **originArgs)
        yield origin1.start()
        yield origin2.start()
        relay = ArtcastProcess(self, ["--upstream", origin1.url, "--upstream", origin2.url])
        yield relay.start()
        yield relay.waitFor(
            lambda s: s["upstream"]["state"] == "streaming" and s["upstream"]["upstreamIndex"] == 1,
            limit=30,
        )
        source = Source(
            src="bye", groups=[(group, originArgs["dataPort"])],
            registerGroups=[(group, originArgs["registerPort"])], ttl=0, interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        send = PacedSender(source, "bye/n").upTo
        yield send(10)
        yield relay.waitFor(lambda s: s["upstream"]["upstreamDatums"] >= 10, limit=30)

        yield origin1.stop()
        stats = yield relay.waitFor(
            lambda s: s["upstream"]["state"] == "streaming" and s["upstream"]["upstreamIndex"] == 2,
            limit=30,
        )
        first = stats["upstream"]["upstreams"][origin1.url + "/"]
        self.assertEqual((first["upstreamShutdowns"], first["upstreamFailures"]), (1, 0))
        self.assertEqual(stats["upstream"]["upstreamShutdowns"], 1)
        self.assertIn(
            "upstream %s/ is shutting down; following %s/" % (origin1.url, origin2.url),
            relay.output,
        )
        yield send(20)
        stats = yield relay.waitFor(lambda s: s["upstream"]["upstreamDatums"] >= 20, limit=30)
        self.assertEqual(stats["upstream"]["upstreamDuplicates"], 0)
