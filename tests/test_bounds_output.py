"""
Tests for the bounds on output and connections (issue 9, findings 1, 5 and
15): a client that does not read its answers costs a bounded amount of
memory, the prebuilt-answer cache holds no copies of bodies, and a request
body has a deadline.

The unit tests drive the real site, limiter and application over
L{StringTransport}s (one that fills up and drains as a socket's buffer
does); the integration tests run the real C{twistd artcast} over loopback
and read its resident memory from C{/proc}.
"""

from __future__ import annotations

import io
import json
import socket
import time
from typing import Any

import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from artcast.server import tap
from artcast.server.connections import (
    CHUNK_SIZE,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_OUTPUT_BUFFER,
    BodyProducer,
    ConnectionLimiter,
    LimitedSite,
    RetrySpread,
    writeBody,
)
from artcast.server.internals import queuedOutput
from artcast.server.store import KeyStore
from artcast.wire import Stamp, encodeData
from artcast.server.answers import _CACHED_ANSWERS
from artcast.server.routes import ArtcastApp
from tests import test_connections
from tests.harness import ArtcastProcess
from tests.test_integration import rawConnect, requestBytes

HEADER_TIMEOUT = 10.0

#: The size at which L{FillingTransport} pauses its producer, as Twisted's
#: C{FileDescriptor.bufferSize}.
BUFFER_SIZE = 65536


class FillingTransport(StringTransport):
    """
    A L{StringTransport} that behaves like a socket's transport whose client
    reads only when told: it pauses its producer when more than
    L{BUFFER_SIZE} bytes are waiting, and L{drain} sends them all and
    resumes it.  It keeps the figures L{queuedOutput} reads from Twisted's
    transports.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent = 0
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.paused = False
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def write(self, data: bytes) -> None:
        super().write(data)
        self._written()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._written()

    def _written(self) -> None:
        self._tempDataLen = self.waiting()
        if self.producer is not None and self.waiting() > BUFFER_SIZE:
            self.paused = True
            self.producer.pauseProducing()

    def waiting(self) -> int:
        """
        Bytes written and not yet read by the client.
        """
        return len(self.value()) - self.sent

    def drain(self) -> None:
        """
        The client reads everything written so far.
        """
        self.sent = len(self.value())
        self._tempDataLen = 0
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()

    def drainAll(self, limit: int = 10_000) -> None:
        """
        Let the client read until nothing more is written (a bounded loop).
        """
        for _ in range(limit):
            before = len(self.value())
            self.drain()
            if len(self.value()) == before:
                return
        raise AssertionError("the server never stopped writing")


class Writer(Resource):
    """
    C{/big} answers with C{size} bytes in one write, C{/flood} writes
    C{size} bytes in 64 KiB writes without waiting for the client (as a
    WebSocket's pongs would), anything else is held.
    """

    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        if request.path == b"/big":
            request.setHeader(b"Content-Length", b"%d" % (self.size,))
            return b"x" * self.size
        if request.path == b"/shared":
            # ?N asks for N bytes.
            size = int(request.uri.partition(b"?")[2] or self.size)
            request.setHeader(b"Content-Length", b"%d" % (size,))
            writeBody(request, b"s" * size)
            return NOT_DONE_YET
        if request.path == b"/flood":
            for _ in range(self.size // 65536):
                request.write(b"y" * 65536)
            return NOT_DONE_YET
        self.held.append(request)
        return NOT_DONE_YET

    render_POST = render_GET


def makeLimiter(
    clock: Clock, resource: Any, bodyTimeout: float | None = DEFAULT_BODY_TIMEOUT,
    **kw: Any,
) -> ConnectionLimiter:
    """
    A started limiter over a L{LimitedSite} serving C{resource}.
    """
    site = LimitedSite(
        resource,
        None,
        reactor=clock,
        stderr=io.StringIO(),
        headerTimeout=HEADER_TIMEOUT,
        bodyTimeout=bodyTimeout,
        idleTimeout=75.0,
        retryAfter=RetrySpread(5, start=1),
    )
    limiter = ConnectionLimiter(site, **kw)
    limiter.doStart()
    return limiter


def connect(limiter: ConnectionLimiter) -> tuple[Any, FillingTransport]:
    """
    Accept a connection as a port would, over a L{FillingTransport}.
    """
    return test_connections.connect(limiter, transportType=FillingTransport)


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: example\r\n\r\n"


class PipelineTests(SynchronousTestCase):
    """
    Finding 1: a client that sends pipelined requests and does not read the
    answers gets one answer queued at a time, not one per request.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Writer(1_000_000)
        self.limiter = makeLimiter(self.clock, self.resource)

    def test_nextRequestWaitsForTheClient(self) -> None:
        """
        Of three pipelined requests for a large answer, only the first is
        answered while the client reads nothing; each later one is answered
        when the client has read the one before, and all three arrive.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/big") * 3)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 1)
        self.assertLess(transport.waiting(), 1_100_000)
        transport.drain()
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        transport.drainAll()
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertFalse(transport.disconnecting)

    def test_piecesThenNextRequest(self) -> None:
        """
        When the last piece of an answer written in pieces fills the
        transport, the next pipelined request waits for the client to read
        it: at no time is more than Twisted's buffer, one piece and a head
        waiting.
        """
        # Written as: the head and a piece (full), two pieces (full), one
        # and a half (full, and the answer is done).
        self.resource.size = int(4.5 * CHUNK_SIZE)
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/shared") * 3)
        for _ in range(20):
            self.assertLessEqual(transport.waiting(), BUFFER_SIZE + CHUNK_SIZE + 1024)
            transport.drain()
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertEqual(transport.waiting(), 0)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.one_of(
                # Whole quarters of a piece, where the rounds end just so.
                st.integers(0, 20).map(lambda quarters: quarters * CHUNK_SIZE // 4),
                st.integers(0, 5 * CHUNK_SIZE + 10),
            ),
            min_size=1, max_size=4,
        ),
        st.lists(st.booleans(), min_size=5, max_size=40),
    )
    def test_anySizesAnyReading(self, sizes: list[int], reads: list[bool]) -> None:
        """
        Whatever the sizes of pipelined answers written in pieces, and
        however the client reads (now and then, or not at all), the answers
        arrive whole and in order, and no more than Twisted's buffer, one
        piece and a head is ever waiting.
        """
        clock = Clock()
        resource = Writer(0)
        limiter = makeLimiter(clock, resource)
        connection, transport = connect(limiter)
        connection.dataReceived(b"".join(get(b"/shared?%d" % (n,)) for n in sizes))
        for read in reads:
            self.assertLessEqual(transport.waiting(), BUFFER_SIZE + CHUNK_SIZE + 1024)
            if read:
                transport.drain()
        transport.drainAll()
        answers = transport.value().split(b"HTTP/1.1 200 OK\r\n")[1:]
        self.assertEqual(
            [answer.partition(b"\r\n\r\n")[2] for answer in answers],
            [b"s" * n for n in sizes],
        )

    def test_heldConnectionLost(self) -> None:
        """
        A client that goes away while its pipelined requests wait is
        forgotten cleanly: its place is given back, no request is started.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/big") + get(b"/held"))
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.limiter.admitted, 0)
        self.assertEqual(self.resource.held, [])

    def test_noReadingWhileFull(self) -> None:
        """
        While a request is answered and the transport is full, the channel
        stops reading from the client once 16 KiB are buffered (Twisted
        would go on buffering without end).
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/held"))
        self.resource.held[0].write(b"z" * (BUFFER_SIZE + 1))
        self.assertTrue(transport.paused)
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(get(b"/held") * 1000)
        self.assertEqual(transport.producerState, "paused")
        request = self.resource.held[0]
        request.finish()
        transport.drain()
        # Reading went on: the next request was read and dispatched.
        self.assertEqual(len(self.resource.held), 2)

    def test_heldConnectionClosedAtShutdown(self) -> None:
        """
        A connection whose pipelined requests wait for the client to read is
        closed, not served further, once the client has read, when the
        server is shutting down.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/big") * 2)
        self.limiter.shutDown()
        self.assertFalse(transport.disconnecting)
        transport.drain()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 1)

    def test_twistedStateFenced(self) -> None:
        """
        The private state of Twisted's L{HTTPChannel} that L{ArtcastChannel}
        reads is still there and means what it did: C{_waitingForTransport}
        set by C{pauseProducing}, C{_handlingRequest}, C{_dataBuffer},
        C{_networkProducer} and C{_optimisticEagerReadSize}.
        """
        channel = HTTPChannel()
        channel.makeConnection(StringTransport())
        self.assertFalse(channel._waitingForTransport)
        self.assertFalse(channel._handlingRequest)
        self.assertEqual(channel._dataBuffer, [])
        self.assertIsInstance(channel._optimisticEagerReadSize, int)
        channel.pauseProducing()
        self.assertTrue(channel._waitingForTransport)
        self.assertIs(channel._networkProducer, channel.transport)
        channel.resumeProducing()
        self.assertFalse(channel._waitingForTransport)


class OutputBoundTests(SynchronousTestCase):
    """
    Finding 1: the output a connection queues is bounded in bytes
    (C{--max-output-buffer}).
    """

    def test_floodAborted(self) -> None:
        """
        A connection whose queued output passes the bound is aborted,
        counted as C{slow-reader}, and what is written after is dropped.
        """
        clock = Clock()
        limiter = makeLimiter(clock, Writer(4_000_000), maxOutputBuffer=1_000_000)
        connection, transport = connect(limiter)
        connection.dataReceived(get(b"/flood"))
        self.assertTrue(transport.aborted)
        self.assertEqual(limiter.rejected["slow-reader"], 1)
        self.assertLess(len(transport.value()), 1_100_000)

    def test_readerKept(self) -> None:
        """
        A client that reads keeps its connection however much it is sent.
        """
        clock = Clock()
        limiter = makeLimiter(clock, Writer(900_000), maxOutputBuffer=1_000_000)
        connection, transport = connect(limiter)
        for _ in range(3):
            connection.dataReceived(get(b"/big"))
            transport.drainAll()
        self.assertFalse(transport.aborted)
        self.assertEqual(limiter.rejected, {})

    def test_noBound(self) -> None:
        """
        With no bound (L{None}) nothing is cut.
        """
        clock = Clock()
        limiter = makeLimiter(clock, Writer(4_000_000), maxOutputBuffer=None)
        connection, transport = connect(limiter)
        connection.dataReceived(get(b"/flood"))
        self.assertFalse(transport.aborted)

    def test_notMeasurable(self) -> None:
        """
        A transport whose buffer cannot be read has no measure (and no
        bound is applied to it).
        """
        self.assertIsNone(queuedOutput(StringTransport()))
        self.assertIsNone(queuedOutput(None))


class QueuedOutputSocketTests(TestCase):
    """
    L{queuedOutput} reads what a real TCP transport of this Twisted holds
    (the fence on Twisted's private C{FileDescriptor} buffer).
    """

    timeout = 20

    @inlineCallbacks
    def test_realTransport(self) -> Any:
        """
        Right after a write, a TCP transport holds exactly what was written;
        as the client reads, the figure falls to 0.
        """
        accepted: Deferred[Protocol] = Deferred()

        class Server(Protocol):
            def connectionMade(self) -> None:
                accepted.callback(self)

        port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        server = yield accepted
        self.addCleanup(server.transport.abortConnection)
        self.assertEqual(queuedOutput(server.transport), 0)
        server.transport.write(b"a" * 300_000)
        server.transport.writeSequence([b"b" * 1000, b"c" * 24])
        self.assertEqual(queuedOutput(server.transport), 301_024)
        client.setblocking(False)
        received = 0
        deadline = time.monotonic() + 10
        while received < 301_024 and time.monotonic() < deadline:
            yield deferLater(reactor, 0.01, lambda: None)
            try:
                while True:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
            except BlockingIOError:
                pass
            self.assertEqual(queuedOutput(server.transport) + received <= 301_024, True)
        self.assertEqual(received, 301_024)
        self.assertEqual(queuedOutput(server.transport), 0)


class SharedListingTests(SynchronousTestCase):
    """
    Finding 1: the C{/artcasts} listing is made once per change of the keys
    or their metadata, and a large one is written in pieces from that one
    body as each client reads.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock)
        for n in range(300):
            self.store.register("k/%03d" % (n,), {"description": "d" * 1000})
        self.limiter = makeLimiter(self.clock, self.app.resource())

    def test_slowReaderHoldsAPiece(self) -> None:
        """
        A client that does not read has at most Twisted's buffer and one
        piece queued, not the listing; when it reads it gets the whole
        listing, byte for byte.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/artcasts"))
        body = self.app._listing[1]
        self.assertGreater(len(body), 4 * CHUNK_SIZE)
        self.assertLessEqual(transport.waiting(), BUFFER_SIZE + CHUNK_SIZE + 1024)
        transport.drainAll()
        self.assertTrue(transport.value().endswith(b"\r\n\r\n" + body))
        self.assertEqual(json.loads(body)[0]["key"], "k/000")
        self.assertFalse(transport.disconnecting)

    def test_madeOnce(self) -> None:
        """
        Two clients are sent the same body object; metadata registered again
        unchanged keeps it, a change of metadata or a new key makes a new
        one.
        """
        producers: list[BodyProducer] = []
        for _ in range(2):
            connection, transport = connect(self.limiter)
            connection.dataReceived(get(b"/artcasts"))
            producers.append(transport.producer._requestProducer)
        self.assertIs(producers[0].body, producers[1].body)
        first = self.app._listing[1]
        self.store.register("k/000", {"description": "d" * 1000})
        self.assertIs(self.app._listingBody(False), first)
        self.store.register("k/000", {"description": "e"})
        second = self.app._listingBody(False)
        self.assertIsNot(second, first)
        self.store.publish("new", 1)
        self.assertIn(b'"new"', self.app._listingBody(False))

    def test_unchangedNotWalked(self) -> None:
        """
        While no key is added or forgotten and no metadata changes, asking
        for the listing again does not go through the keys (decoding every
        key's metadata per request would let one client take the server's
        time).
        """
        self.app._listingBody(False)
        walks: list[int] = []
        keys = self.store.keys

        def counted() -> Any:
            walks.append(1)
            return keys()

        self.patch(self.store, "keys", counted)
        for _ in range(3):
            self.app._listingBody(False)
        self.store.register("k/000", {"description": "d" * 1000})
        self.app._listingBody(False)
        self.assertEqual(walks, [])
        self.store.register("k/000", {"description": "changed"})
        self.app._listingBody(False)
        self.assertEqual(walks, [1])

    def test_html(self) -> None:
        """
        The HTML listing is made once too, and sent whole to a reader.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(
            b"GET /artcasts HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"
        )
        transport.drainAll()
        page = self.app._listing[2]
        self.assertTrue(transport.value().endswith(page))
        self.assertIn(b"k/299", page)

    def test_head(self) -> None:
        """
        C{HEAD /artcasts} gets the listing's headers and no body.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(b"HEAD /artcasts HTTP/1.1\r\nHost: x\r\n\r\n")
        head = transport.value()
        self.assertIn(b"Content-Length: %d" % (len(self.app._listing[1]),), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))

    def test_clientGoneMidway(self) -> None:
        """
        A client that goes away in the middle of the listing lets go of it:
        the producer holds nothing, and the connection is forgotten.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/artcasts"))
        producer = transport.producer._requestProducer
        transport.producer.stopProducing()
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(producer.body)
        self.assertIsNone(producer.request)
        self.assertEqual(self.limiter.admitted, 0)


class LargeDatumTests(SynchronousTestCase):
    """
    Findings 1 and 5: a long poll's answer carries the datum's own bytes,
    in pieces when large, and the prebuilt-answer cache holds heads only.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = KeyStore(self.clock, instance="srv", history=2)
        self.app = ArtcastApp(self.store, self.clock)
        self.limiter = makeLimiter(self.clock, self.app.resource())

    def answersSize(self, value: Any) -> int:
        """
        The bytes of every L{bytes} object in C{value} (a datum's cache).
        """
        if isinstance(value, bytes):
            return len(value)
        if isinstance(value, dict):
            return sum(self.answersSize(k) + self.answersSize(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return sum(self.answersSize(item) for item in value)
        return 0

    def ask(self, since: str, accept: bytes, version: bytes, extra: bytes) -> bytes:
        """
        One long poll for C{big} from C{since}, on a connection of its own;
        the whole answer.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(
            b"GET /artcasts/big?since=%s %s\r\nHost: x\r\nAccept: %s\r\n%s\r\n"
            % (since.encode(), version, accept, extra)
        )
        transport.drainAll()
        return transport.value()

    def test_cacheHoldsNoBody(self) -> None:
        """
        After a key's latest datum, 900 KB, is sent in every variant (JSON
        and text, HTTP/1.0 and 1.1, with and without C{Connection: close}),
        its cache holds at most L{_CACHED_ANSWERS} heads, a few KB, not a
        copy of the value per variant; each client still gets the whole
        value.  A datum answered from history (C{since}, with a gap or not)
        keeps no answers at all, and a datum lets its answers go when a
        newer one arrives: what the cache holds is bounded by the keys, not
        by their history.
        """
        value = "v" * 900_000
        old = self.store.publish("big", 0)
        after = self.store.publish("big", 1)
        target = self.store.publish("big", value)
        variants = [
            (accept, version, extra)
            for accept in (b"application/json", b"text/plain")
            for version, extra in (
                (b"HTTP/1.1", b""), (b"HTTP/1.1", b"Connection: close\r\n"),
                (b"HTTP/1.0", b""),
            )
        ]
        for accept, version, extra in variants:
            answer = self.ask(after.id, accept, version, extra)
            expected = target.text if accept == b"text/plain" else target.json
            self.assertTrue(answer.endswith(b"\r\n\r\n" + expected), answer[:300])
        self.assertEqual(len(target.answers["prebuilt"]), _CACHED_ANSWERS)
        self.assertLess(self.answersSize(target.answers), 5_000)

        self.store.publish("big", 2)
        self.assertIsNone(target.answers)
        for since, gap in ((after.id, False), (old.id, True)):
            for accept, version, extra in variants:
                answer = self.ask(since, accept, version, extra)
                self.assertEqual(b"Artcast-Gap: 1" in answer, gap)
                expected = target.text if accept == b"text/plain" else target.json
                self.assertTrue(answer.endswith(b"\r\n\r\n" + expected), answer[:300])
        self.assertIsNone(target.answers)

    def test_largeAnswerInPieces(self) -> None:
        """
        A held long poll answered with a 900 KB datum has at most Twisted's
        buffer and one piece queued while its client does not read, and the
        access log counts the whole body.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/artcasts/big"))
        datum = self.store.publish("big", "w" * 900_000)
        self.assertLessEqual(transport.waiting(), BUFFER_SIZE + CHUNK_SIZE + 1024)
        transport.drainAll()
        self.assertTrue(transport.value().endswith(b"\r\n\r\n" + datum.json))
        request = connection.wrappedProtocol
        self.assertEqual(request.requests, [])

    def test_smallAnswerOneWrite(self) -> None:
        """
        A small datum's answer (head and the datum's body) is one transport
        write, as before: joined in one piece for the one C{send} that
        L{TrackedConnection.sendNow} tries first (this transport, not a
        socket's, takes it as a write).
        """
        connection, transport = connect(self.limiter)
        writes: list[Any] = []
        for name in ("write", "writeSequence"):
            original = getattr(transport, name)

            def counting(data: Any, original: Any = original, name: str = name) -> None:
                writes.append((name, data))
                original(data)

            setattr(transport, name, counting)
        connection.dataReceived(get(b"/artcasts/small"))
        datum = self.store.publish("small", {"a": 1})
        self.assertEqual(len(writes), 1)
        name, data = writes[0]
        self.assertEqual(name, "write")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(data.endswith(b"\r\n\r\n" + datum.json))


class BodyDeadlineTests(SynchronousTestCase):
    """
    Finding 15: a request body has a deadline (C{--body-timeout}), and a
    refused connection is answered without waiting for its body.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Writer(10)
        self.limiter = makeLimiter(self.clock, self.resource, bodyTimeout=30.0)

    def post(self, length: int) -> bytes:
        return b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (length,)

    def test_drip(self) -> None:
        """
        A body sent a byte every 2 s is cut at the body deadline with a 408,
        counted as C{body-timeout}; the request never reaches the resource.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(self.post(100))
        for _ in range(14):
            self.clock.advance(2)
            connection.dataReceived(b"a")
            self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(self.limiter.rejected, {"body-timeout": 1})
        self.assertEqual(self.resource.held, [])

    def test_bodyInTime(self) -> None:
        """
        A body that is in before the deadline is served, and no deadline is
        left running after it.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(self.post(3))
        self.clock.advance(29)
        connection.dataReceived(b"abc")
        self.assertEqual(len(self.resource.held), 1)
        self.clock.advance(60)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.limiter.rejected, {})

    def test_noDeadline(self) -> None:
        """
        With no body deadline (L{None}) a slow body is waited for.
        """
        limiter = makeLimiter(self.clock, self.resource, bodyTimeout=None)
        connection, transport = connect(limiter)
        connection.dataReceived(self.post(100))
        for _ in range(30):
            self.clock.advance(2)
            connection.dataReceived(b"a")
        self.assertFalse(transport.disconnecting)

    def test_refusedAnsweredAtOnce(self) -> None:
        """
        A refused connection's request is answered 503 and closed as soon as
        its head is in, without waiting for the body it announced.
        """
        limiter = makeLimiter(self.clock, self.resource, maxClients=1)
        connect(limiter)[0].dataReceived(get(b"/held"))
        connection, transport = connect(limiter)
        connection.dataReceived(self.post(1_000_000) + b"abc")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(limiter.rejected, {"max-clients": 1})


class OptionTests(SynchronousTestCase):
    """
    C{--body-timeout} and C{--max-output-buffer}: their defaults and wiring.
    """

    def test_defaults(self) -> None:
        """
        The defaults are 30 s for a body and 2 MiB of queued output, the
        constants of L{artcast.server.connections}.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(
            (options["body-timeout"], options["max-output-buffer"]),
            (DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_OUTPUT_BUFFER),
        )
        self.assertEqual((DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_OUTPUT_BUFFER), (30.0, 2 << 20))

    def test_badValues(self) -> None:
        """
        A body deadline or output bound that is not positive is a usage
        error.
        """
        for args in (
            ["--body-timeout", "0"], ["--body-timeout", "inf"],
            ["--max-output-buffer", "0"], ["--max-output-buffer", "lots"],
        ):
            self.assertRaises(UsageError, tap.Options().parseOptions, args)

    def test_wired(self) -> None:
        """
        The site gets the body deadline and the limiter the output bound,
        raised to C{--max-value-size} + 128 KiB when it is below (an answer
        with the largest value must fit).
        """
        for args, bound in (
            (["--max-output-buffer", "5000000"], 5_000_000),
            (["--max-output-buffer", "1000", "--max-value-size", "300000"],
             300_000 + 128 * 1024),
        ):
            options = tap.Options()
            options.parseOptions(["--body-timeout", "7", *args])
            top = tap.makeService(options, reactor=MemoryReactorClock())
            self.assertEqual(top.connections.maxOutputBuffer, bound)
            self.assertEqual(top.connections.site.bodyTimeout, 7.0)


def residentKiB(pid: int) -> int:
    """
    A process's resident memory (C{VmRSS}), in KiB.
    """
    with open("/proc/%d/status" % (pid,)) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def nonReader(port: int) -> socket.socket:
    """
    A connection to the server that will not read, with a small receive
    buffer.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


class OutputIntegrationTests(TestCase):
    """
    The real C{twistd artcast} over loopback: clients that do not read their
    answers cost bounded memory, and a legitimate client is served at once
    meanwhile; a slow body is cut.
    """

    timeout = 90

    @inlineCallbacks
    def test_nonReaders(self) -> Any:
        """
        With a 3 MB listing, one connection sending 35 KB of pipelined
        C{GET /artcasts} and 300 connections each asking for it once, none of
        them reading, the server's resident memory grows by less than 100
        MB (it grew by gigabytes), and a long poll held meanwhile gets its
        datum within a second.
        """
        proc = yield ArtcastProcess(self, extra=["--max-clients", "1000"]).start()
        yield proc.registerKeys(1000, "d" * 3000)
        poll = yield rawConnect(self, proc)
        poll.send(requestBytes(b"/artcasts/legit/key"))
        yield proc.waitForWaiters(1)
        before = residentKiB(proc.pid)
        sockets = []
        self.addCleanup(lambda: [s.close() for s in sockets])
        pipelining = nonReader(proc.httpPort)
        sockets.append(pipelining)
        request = requestBytes(b"/artcasts")
        pipelining.setblocking(True)
        pipelining.sendall(request * (35_000 // len(request)))
        pipelining.setblocking(False)
        for _ in range(300):
            sock = nonReader(proc.httpPort)
            sock.send(request)
            sockets.append(sock)
        grown = 0
        for _ in range(40):
            stats = yield proc.stats()
            grown = max(grown, residentKiB(proc.pid) - before)
            if grown > 100 * 1024:
                break
        self.assertLess(grown, 100 * 1024)
        # The 301 that do not read, the long poll, and this request.
        self.assertEqual(stats["connections"], 303)
        sent = time.monotonic()
        proc.data.sendDatum("legit/key", 42)
        answer = yield poll.nextResponse()
        self.assertEqual((answer.code, answer.body), (200, b"42"))
        self.assertLess(time.monotonic() - sent, 1.0)
        self.assertLess(residentKiB(proc.pid) - before, 100 * 1024)

    @inlineCallbacks
    def test_slowBody(self) -> Any:
        """
        With C{--body-timeout 1}, a request body sent a byte every 0.2 s is
        cut by the server (it outlived every deadline), counted as
        C{body-timeout}.
        """
        proc = yield ArtcastProcess(
            self, extra=["--body-timeout", "1", "--idle-timeout", "60"]
        ).start()
        client = yield rawConnect(self, proc)
        client.send(
            b"POST /artcasts/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        )
        started = time.monotonic()
        for _ in range(50):
            if client.closed:
                break
            client.send(b"1")
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertTrue(client.closed)
        self.assertLess(time.monotonic() - started, 5)
        stats = yield proc.stats()
        self.assertEqual(stats["rejected"], {"body-timeout": 1})
        response = yield treq.get(proc.url + "/metrics", persistent=False)
        metrics = yield response.text("utf-8")
        self.assertIn('artcast_rejected_total{reason="body-timeout"} 1.0', metrics)

    @inlineCallbacks
    def test_answerCache(self) -> Any:
        """
        Finding 5 against the real server: 30 keys whose latest value is
        900 KB, each fetched in six kinds of answer (JSON and text, HTTP/1.0,
        1.1 and 1.1 with C{Connection: close}), cost the server what the
        store holds of them (about 1.8 MB a key), not a copy of the value
        per kind: its resident memory grows by less than 100 MB (the six
        copies a key took 162 MB more).
        """
        proc = yield ArtcastProcess(self).start()
        value = "c" * 900_000
        before = residentKiB(proc.pid)
        requests = [
            b"GET /artcasts/%s?since=latest %s\r\nHost: x\r\nAccept: %s\r\n%s\r\n"
            % (b"%s", version, accept, extra)
            for accept in (b"application/json", b"text/plain")
            for version, extra in (
                (b"HTTP/1.1", b""), (b"HTTP/1.1", b"Connection: close\r\n"),
                (b"HTTP/1.0", b""),
            )
        ]
        for index in range(30):
            key = "cache/%02d" % (index,)
            stamp = Stamp("cache-test", 1, index + 1, time.time())
            for datagram in encodeData(key, value, stamp):
                proc.data.send(datagram)
            yield proc.waitFor(lambda s: s["datums"] >= index + 1)
            for template in requests:
                client = yield rawConnect(self, proc)
                client.send(template.replace(b"%s", key.encode("ascii"), 1))
                answer = yield client.nextResponse()
                self.assertEqual((answer.code, len(answer.body)), (200, len(value) + (
                    0 if b"text/plain" in template else 2)))
        grown = residentKiB(proc.pid) - before
        self.assertLess(grown, 100 * 1024, f"RSS grew by {grown} KiB")


class FanOutOrderTests(SynchronousTestCase):
    """
    A datum's long polls are all answered before any of their requests is
    finished (logged, its connection's next request taken).
    """

    def test_answersBeforeFinishing(self) -> None:
        """
        When the first request of a fan-out is logged, every waiting client
        already has its answer; after the fan-out each request is finished.
        """
        clock = Clock()
        store = KeyStore(clock, instance="srv")
        app = ArtcastApp(store, clock)
        limiter = makeLimiter(clock, app.resource())
        site = limiter.wrappedFactory
        connections = [connect(limiter) for _ in range(3)]
        for connection, _ in connections:
            connection.dataReceived(get(b"/artcasts/k"))
        answeredAtLog: list[int] = []
        original = site.log

        def log(request: Any) -> None:
            answeredAtLog.append(sum(
                b"200 OK" in transport.value() for _, transport in connections
            ))
            original(request)

        site.log = log  # type: ignore[method-assign]
        datum = store.publish("k", 1)
        self.assertEqual(answeredAtLog, [3, 3, 3])
        for connection, transport in connections:
            self.assertTrue(transport.value().endswith(b"\r\n\r\n" + datum.json))
            self.assertEqual(connection.wrappedProtocol.requests, [])

    def test_joinedOncePerSecond(self) -> None:
        """
        The answer joined for the waiters of a fan-out is made again when
        the second of its C{Date} passes, and for another datum.
        """
        clock = Clock()
        clock.advance(1_700_000_000.5)
        store = KeyStore(clock, instance="srv")
        app = ArtcastApp(store, clock)
        limiter = makeLimiter(clock, app.resource())
        answers: list[bytes] = []
        for step in (0.0, 0.4, 1.0):
            clock.advance(step)
            transports = []
            for _ in range(2):
                connection, transport = connect(limiter)
                connection.dataReceived(get(b"/artcasts/k"))
                transports.append(transport)
            datum = store.publish("k", step)
            first, second = (t.value() for t in transports)
            self.assertEqual(first, second)
            self.assertTrue(first.endswith(b"\r\n\r\n" + datum.json))
            answers.append(first)
        dates = [
            next(line for line in answer.split(b"\r\n") if line.startswith(b"Date: "))
            for answer in answers
        ]
        self.assertEqual(dates[0], dates[1])
        self.assertNotEqual(dates[1], dates[2])
        self.assertEqual(
            dates[2], b"Date: " + http.datetimeToString(1_700_000_001)
        )
