# -*- test-case-name: tests.test_connections -*-
"""
Tests for L{artcast.server.connections}: connection limits, the request-head
deadline, the idle timeout, TCP keepalive and the bounded request body.

The unit tests drive the real site and limiter over L{StringTransport}s with
a L{Clock}; the integration tests run the real C{twistd artcast}.
"""

from __future__ import annotations

import gc
import io
import socket
import time
import weakref
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.http import datetimeToString
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory, Request, Site
from twisted.web.test.requesthelper import DummyChannel

from artcast.server import connections, internals, tap
from artcast.server.connections import (
    ABORT_DELAY,
    ArtcastChannel,
    BoundedRequest,
    ConnectionLimiter,
    HeadDeadlines,
    LimitedSite,
    RetrySpread,
    TrackedConnection,
    boundedRequestFactory,
    configureSocket,
    ensureFileLimit,
)
from artcast.server.logs import addressHost, apacheCombinedLogFormatter
from artcast.server.shutdown import ServingService
from tests.harness import ArtcastProcess
from tests.test_integration import rawConnect, requestBytes

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 75.0


class Held(Resource):
    """
    Answers C{/now} at once; holds any other request (a long poll), keeping
    it in L{held}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        if request.path == b"/now":
            request.setHeader(b"Content-Length", b"3")
            return b"now"
        self.held.append(request)
        return NOT_DONE_YET


def makeLimiter(
    clock: Clock, resource: Resource | None = None, **kw: Any
) -> ConnectionLimiter:
    """
    A started limiter over a L{LimitedSite} with a 10 s head deadline, a
    75 s idle timeout, C{Retry-After} values from 1 up, and its access log in
    C{limiter.site.accessLog} (a L{io.StringIO}).
    """
    accessLog = io.StringIO()
    site = LimitedSite(
        resource if resource is not None else Held(),
        None,
        reactor=clock,
        stderr=accessLog,
        headerTimeout=HEADER_TIMEOUT,
        idleTimeout=IDLE_TIMEOUT,
        retryAfter=RetrySpread(5, start=1),
    )
    site.accessLog = accessLog  # type: ignore[attr-defined]
    limiter = ConnectionLimiter(site, **kw)
    limiter.doStart()
    return limiter


def idleTimers(clock: Any, limiter: Any) -> list[Any]:
    """
    The pending timers of the idle timeouts of C{limiter}'s connections:
    the live entries of its site's queue of them, and the reactor's calls
    of one.
    """
    return [
        entry for entry in limiter.site.idleDeadlines._entries
        if entry.active() and entry.function.__name__ == "_idleDue"
    ] + [
        call for call in clock.getDelayedCalls()
        if getattr(call.func, "__name__", "") == "_idleDue"
    ]


def connect(
    limiter: ConnectionLimiter, host: str = "10.0.0.1", port: int = 40000,
    transportType: type[StringTransport] = StringTransport,
) -> tuple[TrackedConnection, Any]:
    """
    Accept a connection from C{host} as a port would, over a new
    C{transportType}.
    """
    address = IPv4Address("TCP", host, port)
    connection = limiter.buildProtocol(address)
    assert connection is not None
    transport = transportType(peerAddress=address)
    connection.makeConnection(transport)
    return connection, transport


def disconnect(connection: TrackedConnection) -> None:
    """
    Report the connection closed, as the reactor does.
    """
    connection.connectionLost(Failure(ConnectionDone()))


def countCalls(obj: Any, name: str) -> list[int]:
    """
    Count the calls of a method of C{obj}: the list returned grows by one
    with each.
    """
    calls: list[int] = []
    method = getattr(obj, name)

    def counting(*args: Any) -> Any:
        calls.append(1)
        return method(*args)

    setattr(obj, name, counting)
    return calls


def get(path: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + path + b" " + version + b"\r\nHost: example\r\n\r\n"


class RetrySpreadTests(SynchronousTestCase):
    """
    L{RetrySpread} spreads C{Retry-After} values.
    """

    def test_roundRobin(self) -> None:
        """
        Values go round 1..maximum from the start given.
        """
        spread = RetrySpread(3, start=2)
        self.assertEqual([spread.next() for _ in range(7)], [2, 3, 1, 2, 3, 1, 2])

    def test_randomStartInRange(self) -> None:
        """
        Without a start, every value is still within 1..maximum and all of
        them come round.
        """
        spread = RetrySpread(4)
        values = [spread() for _ in range(8)]
        self.assertEqual(sorted(set(values)), [1, 2, 3, 4])

    def test_atLeastOne(self) -> None:
        """
        A maximum below one second is refused.
        """
        self.assertRaises(ValueError, RetrySpread, 0)


class _Collector(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        self.seen.append((request.bodyTooLarge, request.content.read()))
        return b"ok"


class BoundedRequestTests(SynchronousTestCase):
    """
    L{BoundedRequest} keeps at most C{maxBody} bytes of any body.
    """

    def post(self, head: bytes, body: bytes) -> tuple[bool, bytes]:
        collector = _Collector()
        site = Site(collector, requestFactory=boundedRequestFactory(10))
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n" + body)
        self.assertIn(b"200 OK", transport.value())
        channel.connectionLost(None)
        [seen] = collector.seen
        return seen

    def test_withinBound(self) -> None:
        """
        A body up to the bound is kept whole.
        """
        self.assertEqual(self.post(b"Content-Length: 10\r\n", b"0123456789"),
                         (False, b"0123456789"))

    def test_declaredTooLarge(self) -> None:
        """
        A body whose Content-Length is over the bound is not stored.
        """
        self.assertEqual(self.post(b"Content-Length: 11\r\n", b"01234567890"), (True, b""))

    def test_chunkedTooLarge(self) -> None:
        """
        A chunked body is counted as it arrives and dropped once it passes the
        bound.
        """
        body = b"6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n"
        self.assertEqual(self.post(b"Transfer-Encoding: chunked\r\n", body), (True, b""))

    def test_factory(self) -> None:
        """
        L{boundedRequestFactory} makes a L{BoundedRequest} class with the
        bound.
        """
        factory = boundedRequestFactory(123)
        self.assertTrue(issubclass(factory, BoundedRequest))
        self.assertEqual(factory.maxBody, 123)


class _Poll:
    """
    What a held request waits on, for L{HeldRequestTests}.
    """

    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Holding(Resource):
    """
    Holds every request as a long poll does (L{ArtcastRequest.hold}),
    keeping it in L{held}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.held.append(request)
        request.hold(_Poll())
        return NOT_DONE_YET


class HeldRequestTests(SynchronousTestCase):
    """
    L{ArtcastRequest.hold}: a held long poll lets go of the request state it
    does not use, and any user still sees Twisted's L{Request}.
    """

    def held(self, head: bytes = b"Host: a\r\n", target: bytes = b"/") -> Any:
        holding = _Holding()
        made = holding.held
        site = Site(holding, requestFactory=boundedRequestFactory(10))
        channel = site.buildProtocol(None)
        self.transport = StringTransport()
        channel.makeConnection(self.transport)
        channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\n" + head + b"\r\n")
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        [request] = made
        return request

    def test_nothingMadeWhileHeld(self) -> None:
        """
        A held request holds no header objects, content buffer, cookie,
        argument or notification containers of its own.
        """
        request = self.held()
        for name in (
            "requestHeaders", "responseHeaders", "content", "cookies",
            "received_cookies", "args", "notifications",
        ):
            self.assertNotIn(name, vars(request))
        poll = request.poll
        request.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(poll.cancelled)

    def test_headerValuesAnyCase(self) -> None:
        """
        A held request's header values are found by the lower case of their
        name, however the client wrote it, without making its headers'
        object again.
        """
        request = self.held(b"user-AGENT: ua\r\nX-ODD-name: 1\r\n")
        self.assertEqual(
            [request.requestHeaderValues(name) for name in (b"user-agent", b"x-odd-name", b"referer")],
            [[b"ua"], [b"1"], None],
        )
        self.assertNotIn("requestHeaders", vars(request))

    def test_madeAgainAsTheyWere(self) -> None:
        """
        What a held request let go of is made again, as it was, when asked.
        """
        request = self.held(b"Host: a\r\nAccept: x\r\nX-Two: 2\r\n")
        self.assertEqual(
            list(request.requestHeaders.getAllRawHeaders()),
            [(b"Host", [b"a"]), (b"Accept", [b"x"]), (b"X-Two", [b"2"])],
        )
        headers = list(request.responseHeaders.getAllRawHeaders())
        self.assertEqual([name for name, _ in headers], [b"Server", b"Date"])
        self.assertEqual(request.content.read(), b"")
        self.assertEqual((request.args, request.cookies, request.received_cookies,
                          request.notifications), ({}, [], {}, []))
        request.setHeader(b"X-A", b"1")
        request.write(b"ok")
        request.finish()
        self.assertIn(b"\r\nX-A: 1\r\n", self.transport.value())
        self.assertTrue(self.transport.value().endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n"))

    def test_keptWhenUsed(self) -> None:
        """
        What a held request uses is kept: its arguments, a header with two
        values, response headers set before it is held.
        """
        request = self.held(b"Host: a\r\nX-Two: 1\r\nX-Two: 2\r\n", b"/?a=1")
        own = vars(request)
        self.assertIn("args", own)
        self.assertIn("requestHeaders", own)
        self.assertEqual(request.requestHeaders.getRawHeaders(b"x-two"), [b"1", b"2"])

    def test_twistedDefaults(self) -> None:
        """
        An attribute Twisted's L{Request} has as a class attribute
        (C{content}, C{args}) is L{None} when not set, as in Twisted, and an
        unknown attribute is an L{AttributeError}.
        """
        request = BoundedRequest(DummyChannel())
        self.assertIsNone(request.content)
        self.assertIsNone(request.args)
        self.assertIsNone(request.heldServer())
        with self.assertRaises(AttributeError):
            request.noSuchAttribute
        with self.assertRaises(AttributeError):
            request.cookiesX

    def test_notHeldUntouched(self) -> None:
        """
        A request that is not held keeps all of Twisted's state.
        """
        request = BoundedRequest(DummyChannel())
        for name in ("requestHeaders", "responseHeaders", "cookies", "received_cookies",
                     "notifications"):
            self.assertIn(name, vars(request))


class _Echo(Resource):
    """
    Answers with a header of its own and the path, or fails, for
    L{LeanProcessTests}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/fail":
            raise RuntimeError("failed on purpose")
        request.setHeader(b"X-Own", b"1")
        return b"path " + request.path


class LeanProcessTests(SynchronousTestCase):
    """
    L{ArtcastRequest.process}: the answers are Twisted's, byte for byte,
    with the C{Server} and C{Date} headers let go of until used.
    """

    def setUp(self) -> None:
        self.now(1_700_000_000.75)

    def now(self, when: float) -> None:
        """
        Make C{when} the time Artcast's and Twisted's C{Date} are made of.
        """
        self.patch(time, "time", lambda: when)
        if hasattr(http, "gmtime"):
            # Twisted 25 and later: gmtime() of now.
            self.patch(http, "gmtime", lambda at=None: time.gmtime(when if at is None else at))

    def answer(self, data: bytes, requestFactory: Any, resource: Any = None) -> bytes:
        site = Site(resource or _Echo(), requestFactory=requestFactory)
        site.log = lambda request: None  # type: ignore[method-assign]
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        channel.connectionLost(Failure(ConnectionDone()))
        return transport.value()

    def assertSameAsTwisted(self, data: bytes, resource: Any = None) -> bytes:
        ours = self.answer(data, boundedRequestFactory(10), resource)
        self.assertEqual(ours, self.answer(data, Request, resource))
        return ours

    def test_sameAnswers(self) -> None:
        """
        An answer with headers of its own, one to C{Connection: close},
        HTTP/1.0, an error and C{OPTIONS *} are as Twisted writes them.
        """
        for data in (
            b"GET /a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            answer = self.assertSameAsTwisted(data)
            self.assertIn(b"\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n", answer)
        self.assertIn(b"path /a%20b", self.assertSameAsTwisted(b"GET /a%20b HTTP/1.1\r\n\r\n"))
        # The failure, logged by both.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_encoder(self) -> None:
        """
        A resource that encodes its answers (gzip) still does.
        """
        gzipped = EncodingResourceWrapper(_Echo(), [GzipEncoderFactory()])
        answer = self.assertSameAsTwisted(
            b"GET /a HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", gzipped
        )
        self.assertIn(b"\r\nContent-Encoding: gzip\r\n", answer)

    def test_headersLetGo(self) -> None:
        """
        Until something uses them, a request has no response headers
        object, and its path is split as Twisted splits it.
        """
        seen: list[Any] = []

        class Looking(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:
                seen.append(("responseHeaders" in vars(request), request.postpath))
                return b""

        self.answer(b"GET /a/b%2Fc HTTP/1.1\r\n\r\n", boundedRequestFactory(10), Looking())
        self.assertEqual(seen, [(False, [b"a", b"b/c"])])

    def test_dateOncePerSecond(self) -> None:
        """
        The C{Date} is Twisted's for the current second, made once in it.
        """
        first = connections._httpDate()
        self.assertIs(connections._httpDate(), first)
        self.assertEqual(first, datetimeToString(1_700_000_000))
        self.now(1_700_000_001.25)
        self.assertEqual(connections._httpDate(), datetimeToString(1_700_000_001))

    def test_fallback(self) -> None:
        """
        Where L{internals.processFits} says no, Twisted's own process sets
        the headers, and the answer is the same.
        """
        self.patch(internals, "processFits", internals._prebuiltNever)
        seen: list[bool] = []

        class Looking(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:
                seen.append("responseHeaders" in vars(request))
                return b"x"

        self.assertSameAsTwisted(b"GET /a HTTP/1.1\r\n\r\n", Looking())
        self.assertEqual(seen, [True, True])


class _Recording(Resource):
    """
    Keeps each request; answers C{/now} at once and holds the others, for
    L{FastHeadTests}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        if request.path == b"/now":
            request.setHeader(b"Content-Length", b"3")
            return b"now"
        return NOT_DONE_YET


#: Parts of request heads for L{FastHeadTests}: plain ones and every kind
#: Twisted must read itself.
_METHODS = st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"G\x00T"])
_TARGETS = st.sampled_from([
    b"/artcasts/k", b"/now", b"/artcasts/k?since=1&x=%20y", b"/a%2Fb", b"*", b"",
    b"/\xc3\xa9", b"/a b", b"/a\tb",
])
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"])
_HEADER_LINE_KINDS = [
    b"Host: example.org", b"user-agent:  ua/1.0 ", b"X-Odd:\ta b\t", b"Accept: */*",
    b"Connection: keep-alive", b"Connection: close", b"connection: Keep-Alive close",
    b"Cookie: a=b; c=d", b"Content-Length: 0", b"Content-Length: 3",
    b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Bad Name: x", b"NoColon",
    b" continued", b"\tfolded", b"X-Null: a\x00b", b"X-Cr: a\rb", b"X-Lf: a\nb",
    b"X-Empty:", b": no name", b"Referer: http://x/", b"Upgrade: websocket",
]
_HEADER_LINES = st.sampled_from(_HEADER_LINE_KINDS)


class FastHeadTests(SynchronousTestCase):
    """
    L{ArtcastChannel} reads a whole plain request head in one step
    (C{_readHead}), leaving the channel and the request as Twisted's own
    reading would, and lets Twisted read every other.
    """

    def serve(self, data: bytes, fast: bool, then: bytes = b"") -> dict[str, Any]:
        """
        Feed C{data} (then, once its request is answered, C{then}) to a new
        connection, with the head read in one step where it may be, or by
        Twisted alone, and return what can be seen of the result.
        """
        self.patch(time, "time", lambda: 1_700_000_000.5)
        if hasattr(http, "gmtime"):
            self.patch(http, "gmtime", lambda at=None: time.gmtime(1_700_000_000 if at is None else at))
        headFits = internals.headFits
        if not fast:
            internals.headFits = internals._never
        try:
            return self._serve(data, then)
        finally:
            internals.headFits = headFits

    def _serve(self, data: bytes, then: bytes) -> dict[str, Any]:
        resource = _Recording()
        limiter = makeLimiter(Clock(), resource)
        # The server's request class.
        limiter.site.requestFactory = boundedRequestFactory(10)
        connection, transport = connect(limiter)
        channel = connection.wrappedProtocol
        lines = countCalls(channel, "lineReceived")
        connection.dataReceived(data)
        seen: dict[str, Any] = {}

        def look(when: str) -> None:
            seen[when + " channel"] = (
                channel.persistent, channel.length, channel.line_mode,
                vars(channel).get("_handlingRequest"), channel._receivedHeaderCount,
                channel._receivedHeaderSize, channel._HTTPChannel__first_line,
                channel._HTTPChannel__header, len(channel.requests), channel._phase,
                channel._buffer, transport.disconnecting,
            )
            seen[when + " requests"] = [
                (
                    r.method, r.uri, r.path, r.args, r.clientproto, r.code,
                    list(r.requestHeaders.getAllRawHeaders()), r.received_cookies,
                    None if r.content is None else r.content.getvalue(),
                    list(r.responseHeaders.getAllRawHeaders()), r.prepath, r.postpath,
                    r.cookies, r.client, r.host, r.queued, r.transport is connection,
                    vars(r).get("channel") is channel,
                )
                for r in resource.requests
            ]
            seen[when + " sent"] = transport.value()

        look("read")
        for request in list(resource.requests):
            if not request.finished and not request._disconnected:
                request.setHeader(b"Content-Length", b"4")
                request.write(b"late")
                request.finish()
        if not transport.disconnecting:
            # (A closed connection reads no more.)
            connection.dataReceived(then)
        look("answered")
        seen["lines"] = len(lines) > 0
        self.flushLoggedErrors()
        return seen

    @settings(max_examples=400, deadline=None)
    @given(
        method=_METHODS, target=_TARGETS, version=_VERSIONS,
        headers=st.lists(_HEADER_LINES, max_size=5),
    )
    def test_sameAsTwisted(self, method: bytes, target: bytes, version: bytes,
                           headers: list[bytes]) -> None:
        """
        Whatever the head, the channel, the requests and the answers are
        those of Twisted's own reading, for it and for a request after it.
        """
        head = b"\r\n".join([b" ".join((method, target, version))] + headers) + b"\r\n\r\n"
        after = b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n"
        fast = self.serve(head, True, after)
        slow = self.serve(head, False, after)
        fast.pop("lines")
        slow.pop("lines")
        self.assertEqual(fast, slow)

    def test_eachHeaderSameAsTwisted(self) -> None:
        """
        Each kind of header line, alone or after another, after each plain
        request line, gives what Twisted's own reading gives.
        """
        after = b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n"
        lines = _HEADER_LINE_KINDS
        for requestLine in (
            b"GET /artcasts/k HTTP/1.1", b"HEAD /now HTTP/1.1", b"GET /now?a=1 HTTP/1.1",
        ):
            for first in [b"Host: x", *lines]:
                for line in lines:
                    head = b"\r\n".join((requestLine, first, line)) + b"\r\n\r\n"
                    fast = self.serve(head, True, after)
                    slow = self.serve(head, False, after)
                    fast.pop("lines")
                    slow.pop("lines")
                    self.assertEqual(fast, slow, head)

    def test_pollReadInOneStep(self) -> None:
        """
        A long poll's head, in one piece, is read without Twisted's line by
        line reading; the same head in two pieces, or with a cookie, by it.
        """
        head = b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\nAccept: */*\r\n\r\n"
        self.assertFalse(self.serve(head, True)["lines"])
        self.assertTrue(self.serve(head[:20], True, head[20:])["lines"])
        cookie = head.replace(b"Accept", b"Cookie")
        self.assertTrue(self.serve(cookie, True)["lines"])

    def test_headersKeptAsRead(self) -> None:
        """
        A request whose head was read in one step keeps its headers as
        names and values: read as Twisted's L{Request.getHeader} reads
        them (the last value, any case; a text name gives text), without
        making their object until something else asks for it.
        """
        resource = _Recording()
        limiter = makeLimiter(Clock(), resource)
        limiter.site.requestFactory = boundedRequestFactory(10)
        connection, _ = connect(limiter)
        connection.dataReceived(
            b"GET /artcasts/k HTTP/1.1\r\nX-Twice: 1\r\nuser-AGENT: ua\r\nX-Twice: 2\r\n\r\n"
        )
        [request] = resource.requests
        self.assertEqual(
            [request.getHeader(name) for name in (b"x-twice", b"User-Agent", b"referer")],
            [b"2", b"ua", None],
        )
        self.assertNotIn("requestHeaders", vars(request))
        self.assertEqual(request.getHeader("user-agent"), "ua")
        # A value that is also a name is not taken for one.
        other = self.readOne(b"X-A: x-b\r\nX-B: 1\r\nX-C: x-c\r\nX-D: x-z\r\n")
        self.assertEqual(
            [other.getHeader(name) for name in (b"x-b", b"x-c", b"x-a", b"x-z")],
            [b"1", b"x-c", b"x-b", None],
        )
        self.assertEqual(
            [other.requestHeaderValues(name) for name in (b"x-b", b"x-z")], [[b"1"], None]
        )
        self.assertNotIn("requestHeaders", vars(other))
        self.assertEqual(
            list(request.requestHeaders.getAllRawHeaders()),
            [(b"X-Twice", [b"1", b"2"]), (b"User-Agent", [b"ua"])],
        )

    def test_headsRemembered(self) -> None:
        """
        A plain head read again is taken from those remembered, with the
        same request; the remembered heads are bounded in number and
        length, and a channel's own limits still apply to them.
        """
        self.patch(connections, "_heads", {})
        self.patch(connections, "_HEADS_MAX", 3)
        head = b"X-A: 1\r\nUser-Agent: ua\r\n"
        first, again = self.readOne(head), self.readOne(head)
        self.assertEqual(len(connections._heads), 1)
        self.assertEqual(
            (first.uri, first.requestHeaderValues(b"x-a"), first.getHeader(b"user-agent")),
            (again.uri, again.requestHeaderValues(b"x-a"), again.getHeader(b"user-agent")),
        )
        for i in range(5):
            self.readOne(b"X-N: %d\r\n" % (i,))
            self.assertLessEqual(len(connections._heads), 3)
        self.readOne(b"X-Long: " + b"a" * connections._HEADS_LONGEST + b"\r\n")
        self.assertNotIn(b"a" * connections._HEADS_LONGEST, b"".join(connections._heads))
        # Fewer header lines allowed than the remembered head has: Twisted
        # reads it, and refuses it.
        self.patch(ArtcastChannel, "maxHeaders", 1)
        seen = self.serve(b"GET /now HTTP/1.1\r\n" + head + b"\r\n", True)
        self.assertTrue(seen["lines"])
        self.assertIn(b"400", seen["read sent"])

    def test_logFieldsRemembered(self) -> None:
        """
        The access log's fields read of a plain head (request line,
        C{Referer}, C{User-Agent}) are made once for every request read
        from it, and not used for a request that no longer is what its head
        said.
        """
        head = b"User-Agent: ua \"1\"\r\nReferer: r\r\n"
        first, second = self.readOne(head), self.readOne(head)
        self.assertIs(first.plainHead, second.plainHead)
        for request in (first, second):
            request.code, request.sentLength = 200, 2
        line = apacheCombinedLogFormatter("[x]", first)
        self.assertTrue(line.endswith(' "GET /artcasts/k HTTP/1.1" 200 2 "r" "ua \\"1\\""'), line)
        self.assertIsNotNone(first.plainHead.logged)
        self.assertEqual(apacheCombinedLogFormatter("[x]", second), line)
        second.requestHeaders.setRawHeaders(b"User-Agent", [b"other"])
        self.assertIsNone(second.headAsRead())
        self.assertTrue(apacheCombinedLogFormatter("[x]", second).endswith('"r" "other"'))
        first.uri = b"/else"
        self.assertIn('"GET /else HTTP/1.1"', apacheCombinedLogFormatter("[x]", first))

    def test_madeWithoutContainers(self) -> None:
        """
        The request of a head read in one step is made without the empty
        containers Twisted's constructor makes (headers, cookies,
        notifications, adapter cache), each made, as Twisted's, when asked
        for; the rest is what Twisted's constructor sets.
        """
        request = self.readOne(b"Host: x\r\n")
        containers = (
            "requestHeaders", "responseHeaders", "cookies", "received_cookies",
            "notifications", "_adapterCache",
        )
        for name in containers:
            self.assertNotIn(name, vars(request))
        twisteds = boundedRequestFactory(10)(request.channel, 0)
        for name in ("channel", "client", "host", "transport", "queued"):
            self.assertEqual(getattr(request, name), getattr(twisteds, name), name)
        self.assertEqual(request.cookies, [])
        self.assertEqual(request.received_cookies, {})
        self.assertEqual(request.notifications, [])
        self.assertEqual(request._adapterCache, {})
        request.setHeader(b"X-Made", b"1")
        self.assertEqual(
            [name for name, _ in request.responseHeaders.getAllRawHeaders()],
            [b"Server", b"Date", b"X-Made"],
        )
        self.assertEqual(
            list(request.requestHeaders.getAllRawHeaders()), [(b"Host", [b"x"])]
        )

    def test_attributesReadPlainly(self) -> None:
        """
        No class of a request reads its attributes with a C{__getattr__} or
        a C{__getattribute__} of its own (CPython reads every attribute of
        such an object the slow way): what a held request let go of is made
        again by its class's attributes, and an attribute it never had is
        missing as on Twisted's.
        """
        request = self.readOne(b"Host: x\r\n")
        for cls in type(request).__mro__[:-1]:
            self.assertNotIn("__getattr__", vars(cls), cls)
            self.assertNotIn("__getattribute__", vars(cls), cls)
        with self.assertRaises(AttributeError) as caught:
            request.neverSet
        self.assertIn("'neverSet'", str(caught.exception))
        self.assertFalse(hasattr(request, "_neverSetEither"))

    def test_madeByTwistedOtherwise(self) -> None:
        """
        Where L{internals.requestMade} may not make a request (another
        Twisted), a head read in one step gets a request made by Twisted's
        constructor.
        """
        self.patch(internals, "requestMade", internals._requestMadeNever)
        request = self.readOne(b"Host: x\r\n")
        self.assertIn("cookies", vars(request))
        self.assertEqual(request.getHeader(b"host"), b"x")

    def readOne(self, headers: bytes) -> Any:
        """
        The request of a poll with C{headers}, read in one step.
        """
        resource = _Recording()
        limiter = makeLimiter(Clock(), resource)
        limiter.site.requestFactory = boundedRequestFactory(10)
        connection, _ = connect(limiter)
        connection.dataReceived(b"GET /artcasts/k HTTP/1.1\r\n" + headers + b"\r\n")
        [request] = resource.requests
        return request

    def test_pipelinedReadByTwisted(self) -> None:
        """
        Two heads in one piece are read by Twisted, in order.
        """
        head = b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n"
        seen = self.serve(head + head, True)
        self.assertTrue(seen["lines"])
        self.assertEqual(seen["read sent"].count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(seen, self.serve(head + head, False) | {"lines": True})

    def test_tooLongReadByTwisted(self) -> None:
        """
        A head longer than the one-step reading takes is read by Twisted.
        """
        head = b"GET /now HTTP/1.1\r\nX-Long: %s\r\n\r\n" % (b"x" * connections._FAST_HEAD_MAX,)
        self.assertTrue(self.serve(head, True)["lines"])


class ReadingTests(SynchronousTestCase):
    """
    L{TrackedConnection} pauses and resumes reading from its client.
    """

    def test_resumedOnlyWhenPaused(self) -> None:
        """
        The transport is asked to read again only after it was paused, not
        after every answer, as the HTTP channel asks.
        """
        connection, transport = connect(makeLimiter(Clock(), _Recording()))
        resumed = countCalls(transport, "resumeProducing")
        for _ in range(3):
            connection.dataReceived(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)
        self.assertEqual(resumed, [])
        connection.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        connection.dataReceived(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 4)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(resumed), 1)


class PeerKeyTests(SynchronousTestCase):
    """
    L{addressHost} names the address a connection is counted under.
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 peer is counted under its address, whatever its port.
        """
        self.assertEqual(addressHost(IPv4Address("TCP", "192.0.2.7", 1)), "192.0.2.7")

    def test_ipv4Mapped(self) -> None:
        """
        An IPv4-mapped IPv6 peer (a dual-stack socket) counts as the IPv4
        address, so one client is one address on either socket.
        """
        self.assertEqual(
            addressHost(IPv6Address("TCP", "::ffff:192.0.2.7", 1)), "192.0.2.7"
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 peer is counted under its address.
        """
        self.assertEqual(addressHost(IPv6Address("TCP", "2001:db8::1", 1)), "2001:db8::1")

    def test_unix(self) -> None:
        """
        A UNIX-socket peer has no address to cap.
        """
        self.assertIsNone(addressHost(UNIXAddress(b"/run/artcast.sock")))


class MaxClientsTests(SynchronousTestCase):
    """
    C{--max-clients}: past it a request gets a C{503} with C{Retry-After}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Held()
        self.limiter = makeLimiter(self.clock, self.resource, maxClients=1)

    def test_refusedWith503(self) -> None:
        """
        With one client held, a second connection's request is answered
        with 503, Retry-After and Connection: close, is closed, and never
        reaches the application.
        """
        first, _ = connect(self.limiter)
        first.dataReceived(get(b"/poll"))
        second, transport = connect(self.limiter, port=40001)
        second.dataReceived(get(b"/now"))
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer)
        self.assertIn(b"\r\nRetry-After: 1\r\n", answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertIn(b"\r\nAccess-Control-Allow-Origin: *\r\n", answer)
        self.assertTrue(answer.endswith(b"Try again in 1 seconds.\n"), answer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([r.path for r in self.resource.held], [b"/poll"])
        self.assertEqual(self.limiter.rejected, {"max-clients": 1})

    def test_refusalLogged(self) -> None:
        """
        The refused request has its line in the access log, with 503.
        """
        connect(self.limiter)
        second, _ = connect(self.limiter, port=40001)
        second.dataReceived(get(b"/now"))
        self.clock.advance(0)  # the access log is written at the end of the turn
        self.assertIn('"GET /now HTTP/1.1" 503 ', self.limiter.site.accessLog.getvalue())

    def test_refusedNotCounted(self) -> None:
        """
        A connection being refused is not a client, and is forgotten when it
        closes.
        """
        connect(self.limiter)
        second, _ = connect(self.limiter, port=40001)
        self.assertEqual((self.limiter.admitted, self.limiter.refusing), (1, 1))
        disconnect(second)
        self.assertEqual((self.limiter.admitted, self.limiter.refusing), (1, 0))

    def test_placeGivenBack(self) -> None:
        """
        A client that disconnects gives its place back at once: the next
        connection is served.
        """
        first, _ = connect(self.limiter)
        first.dataReceived(get(b"/poll"))
        disconnect(first)
        self.assertEqual(self.limiter.admitted, 0)
        third, transport = connect(self.limiter, port=40002)
        third.dataReceived(get(b"/now"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_heldRequestReleased(self) -> None:
        """
        A held request whose client disconnects is told so (the application
        can drop what it held for it).
        """
        first, _ = connect(self.limiter)
        first.dataReceived(get(b"/poll"))
        lost: list[Any] = []
        self.resource.held[0].notifyFinish().addErrback(lost.append)
        disconnect(first)
        self.assertEqual(len(lost), 1)

    def test_upgradedConnectionReleased(self) -> None:
        """
        A connection whose protocol was swapped (a WebSocket upgrade, as
        Autobahn does it) still gives its place back when it closes.
        """
        first, _ = connect(self.limiter)
        first.wrappedProtocol = Protocol()
        disconnect(first)
        self.assertEqual(self.limiter.admitted, 0)

    def test_maxRefusing(self) -> None:
        """
        Past C{maxRefusing} connections being refused, one more is closed as
        soon as accepted (no protocol), and counted.
        """
        limiter = makeLimiter(self.clock, maxClients=1, maxRefusing=1)
        connect(limiter)
        connect(limiter, port=40001)
        self.assertIsNone(limiter.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40002)))
        self.assertEqual(limiter.rejected, {"max-clients": 1})
        self.assertEqual(limiter.refusing, 1)

    def test_statistics(self) -> None:
        """
        The statistics name the open clients, those being refused and the
        refusals by reason.
        """
        connect(self.limiter)
        second, _ = connect(self.limiter, port=40001)
        second.dataReceived(get(b"/now"))
        self.assertEqual(
            self.limiter.statistics(),
            {"connections": 1, "connections_refusing": 1, "rejected": {"max-clients": 1}},
        )

    def test_fileLimitWanted(self) -> None:
        """
        The open files wanted cover the clients, the refusals and headroom.
        """
        limiter = makeLimiter(self.clock, maxClients=100, maxRefusing=10)
        self.assertEqual(limiter.fileLimitWanted(), 100 + 10 + 64)


class PerAddressTests(SynchronousTestCase):
    """
    C{--max-clients-per-address}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = makeLimiter(self.clock, maxPerAddress=2)

    def test_capped(self) -> None:
        """
        A third connection from one address is refused with a 503 while
        another address is served.
        """
        connect(self.limiter, "10.0.0.1", 1)
        connect(self.limiter, "10.0.0.1", 2)
        third, transport = connect(self.limiter, "10.0.0.1", 3)
        third.dataReceived(get(b"/now"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertIn(b"Your address has as many connections", transport.value())
        other, otherTransport = connect(self.limiter, "10.0.0.2", 4)
        other.dataReceived(get(b"/now"))
        self.assertTrue(otherTransport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.limiter.rejected, {"per-address": 1})

    def test_forgotten(self) -> None:
        """
        An address whose connections all closed is forgotten, so the
        per-address table does not grow with every client ever seen.
        """
        connections = [connect(self.limiter, f"10.0.{i}.1", i)[0] for i in range(50)]
        self.assertEqual(self.limiter.addresses, 50)
        for connection in connections:
            disconnect(connection)
        self.assertEqual(self.limiter.addresses, 0)

    def test_offByDefault(self) -> None:
        """
        Without a cap, many connections from one address (a school behind
        one NAT) are all served.
        """
        limiter = makeLimiter(self.clock)
        for port in range(20):
            connection, transport = connect(limiter, "10.0.0.1", port)
            connection.dataReceived(get(b"/now"))
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(limiter.addresses, 0)


class ChannelAttributeTests(SynchronousTestCase):
    """
    An L{ArtcastChannel} has, from the moment it is made, every attribute
    it will have (so that CPython keeps their names in one table shared by
    all channels, however many are opened before the first request).
    """

    def test_madeWithEveryAttribute(self) -> None:
        """
        Serving requests (a poll held and answered, a keep-alive request, a
        request cut by the head deadline) adds no attribute to a channel that
        it did not have when it was made and connected, and those it sets
        early have the values of the class, so Twisted's behaviour is
        unchanged.
        """
        from twisted.web.http import HTTPChannel

        from artcast.server.connections import ArtcastChannel

        fresh = ArtcastChannel()
        for name in set(vars(fresh)) - {"_command", "_path", "_version"}:
            if hasattr(HTTPChannel, name):
                self.assertEqual(getattr(fresh, name), getattr(HTTPChannel, name), name)
        clock = Clock()
        resource = Held()
        limiter = makeLimiter(clock, resource)
        connection, transport = connect(limiter)
        channel = connection.wrappedProtocol
        self.assertIsInstance(channel, ArtcastChannel)
        # What the site and the connection set as it is accepted, before
        # another is.
        made = set(vars(channel))
        connection.dataReceived(get(b"/poll"))
        resource.held[0].write(b"x")
        resource.held[0].finish()
        connection.dataReceived(get(b"/now"))
        connection.dataReceived(b"GET /poll HT")
        clock.advance(HEADER_TIMEOUT)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(set(vars(channel)) - made, set())


    def test_streamFitsTheSharedTable(self) -> None:
        """
        A stream's request and channel (a streaming producer registered,
        written through, unregistered) keep at most 30 attribute names each,
        the most CPython's shared table of names holds (past it, each makes
        a dict of its own), and the channel adds none it was not made with.
        """
        from artcast.server.connections import ArtcastRequest, boundedRequestFactory

        clock = Clock()
        resource = Held()
        limiter = makeLimiter(clock, resource)
        limiter.wrappedFactory.requestFactory = boundedRequestFactory(1000)
        connection, transport = connect(limiter)
        channel = connection.wrappedProtocol
        made = set(vars(channel))
        connection.dataReceived(get(b"/stream"))
        request = resource.held[0]
        self.assertIsInstance(request, ArtcastRequest)
        producer = Held()
        request.registerProducer(producer, True)
        request.write(b"event")
        self.assertLessEqual(len(vars(request)), 30, sorted(vars(request)))
        request.unregisterProducer()
        request.finish()
        self.assertEqual(set(vars(channel)) - made, set())
        self.assertLessEqual(len(vars(channel)), 30)

    def test_transportOffsetPreset(self) -> None:
        """
        A TCP transport's C{offset} is set when its connection is made, not
        at its first send.
        """
        import socket

        from twisted.internet import tcp
        from twisted.internet.testing import MemoryReactor

        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        theirs = socket.create_connection(listening.getsockname())
        self.addCleanup(theirs.close)
        ours, _ = listening.accept()
        self.addCleanup(ours.close)
        limiter = makeLimiter(Clock(), Held())
        connection = limiter.buildProtocol(IPv4Address("TCP", "10.0.0.8", 1))
        transport = tcp.Server(
            ours, connection, ("10.0.0.8", 1), None, 1, MemoryReactor()
        )
        self.assertNotIn("offset", vars(transport))
        connection.makeConnection(transport)
        self.assertIn("offset", vars(transport))
        self.assertEqual(transport.offset, 0)

    def test_connectionMadeWithEveryAttribute(self) -> None:
        """
        The same for the L{TrackedConnection} around each channel: a request
        answered, the output charged, the connection aborted and lost add no
        attribute it did not have when made.
        """
        clock = Clock()
        resource = Held()
        limiter = makeLimiter(clock, resource, maxPerAddress=4)
        fresh = limiter.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1))
        made = set(vars(fresh))
        connection, transport = connect(limiter)
        self.assertEqual(set(vars(connection)), made)
        connection.dataReceived(get(b"/poll"))
        resource.held[0].write(b"x")
        resource.held[0].finish()
        connection.dataReceived(get(b"/now"))
        connection.abortConnection()
        disconnect(connection)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(set(vars(connection)) - made, set())


class DeadlineTests(SynchronousTestCase):
    """
    The request-head deadline (C{--header-timeout}) and the idle timeout
    (C{--idle-timeout}).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Held()
        self.limiter = makeLimiter(self.clock, self.resource)

    def test_partialHead(self) -> None:
        """
        A connection that sent half a request line is answered 408 and
        closed when the deadline passes, not before.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(b"GET /poll HT")
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.limiter.rejected, {"header-timeout": 1})

    def test_silent(self) -> None:
        """
        A connection that sent nothing (like a browser's speculative
        connection) is closed at the deadline without an answer.
        """
        _, transport = connect(self.limiter)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_drip(self) -> None:
        """
        A slowloris sending a byte a second does not push the deadline back
        (as it pushes the idle timeout back).
        """
        connection, transport = connect(self.limiter)
        for byte in b"GET /poll HTTP/1.1\r\n"[:10]:
            connection.dataReceived(bytes([byte]))
            self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_abortIfStuck(self) -> None:
        """
        A connection closed for its deadline that does not go (its client
        does not read) is aborted a little later.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(b"GET")
        self.clock.advance(HEADER_TIMEOUT)
        self.assertFalse(transport.disconnected)
        self.clock.advance(ABORT_DELAY)
        self.assertTrue(transport.disconnected)

    def test_noAbortOnceGone(self) -> None:
        """
        A connection that closes after its deadline is not aborted later.
        """
        connection, transport = connect(self.limiter)
        self.clock.advance(HEADER_TIMEOUT)
        disconnect(connection)
        self.clock.advance(ABORT_DELAY)
        self.assertFalse(transport.disconnected)

    def test_heldRequestKept(self) -> None:
        """
        A held long poll is closed neither by the head deadline nor by the
        idle timeout, however long it waits.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/poll"))
        for _ in range(100):
            self.clock.advance(IDLE_TIMEOUT)
        self.assertFalse(transport.disconnecting)
        request = self.resource.held[0]
        request.write(b"late")
        request.finish()
        self.assertIn(b"late", transport.value())

    def test_idleKeepAlive(self) -> None:
        """
        A keep-alive connection idle between requests is closed by the idle
        timeout, and not by the head deadline.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.limiter.rejected, {})

    def test_idleTimeoutQuiet(self) -> None:
        """
        An idle connection timed out emits no log event (Twisted emits one
        per connection, which twistd's log writes whatever its level: a
        line for every connection a stranger opens and leaves).
        """
        from twisted.logger import globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [e for e in events if "Timing out" in (e.get("log_format") or "")], []
        )

    def idleCalls(self, limiter: Any = None) -> list[Any]:
        """
        The pending timers of the idle timeouts of the connections of
        C{limiter} (by default the test's).
        """
        return idleTimers(self.clock, limiter or self.limiter)

    def test_idleTimerKept(self) -> None:
        """
        A keep-alive connection's requests neither cancel nor make its idle
        timer: one timer, made when it connected, is kept, and the
        connection is closed a whole timeout after its last request.
        """
        made: list[Any] = []
        callLater = self.clock.callLater

        def recording(delay: float, f: Any, *a: Any, **kw: Any) -> Any:
            made.append(getattr(f, "__name__", None))
            return callLater(delay, f, *a, **kw)

        self.patch(self.clock, "callLater", recording)
        deadlines = self.limiter.site.idleDeadlines
        add = deadlines.add
        self.patch(deadlines, "add", lambda *a: made.append("queued") or add(*a))
        connection, transport = connect(self.limiter)
        [timer] = self.idleCalls()
        step = IDLE_TIMEOUT / 10
        for _ in range(9):
            connection.dataReceived(get(b"/now"))
            self.clock.advance(step)
        self.assertTrue(timer.active())
        for _ in range(11):
            connection.dataReceived(get(b"/now"))
            self.clock.advance(step)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 20)
        # Made when connected (in the site's queue), then again only when
        # due (at 75 s and 142.5 s), for the time left.
        self.assertEqual(made.count("queued"), 1)
        self.assertEqual(made.count("_idleDue"), 2)
        self.clock.advance(IDLE_TIMEOUT - step - 0.01)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.01)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.idleCalls(), [])

    def test_idleAfterHeldRequest(self) -> None:
        """
        A timer that falls due while a request is held does nothing; the
        whole timeout runs again when the request is answered.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/poll"))
        self.clock.advance(IDLE_TIMEOUT * 3)
        self.assertEqual(self.idleCalls(), [])
        request = self.resource.held[0]
        request.setHeader(b"Content-Length", b"4")
        request.write(b"late")
        request.finish()
        self.clock.advance(IDLE_TIMEOUT - 0.01)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.01)
        self.assertTrue(transport.disconnecting)

    def test_heldPollReleasesIdleTimer(self) -> None:
        """
        A held long poll keeps no idle timer in memory while it waits; the
        timer is made again when it is answered.
        """
        holding = _Holding()
        made = holding.held
        limiter = makeLimiter(self.clock, holding)
        limiter.site.requestFactory = boundedRequestFactory(10)
        connection, transport = connect(limiter)
        self.assertEqual(len(self.idleCalls(limiter)), 1)
        connection.dataReceived(get(b"/poll"))
        self.assertEqual(self.idleCalls(limiter), [])
        [request] = made
        request.setHeader(b"Content-Length", b"0")
        request.finish()
        self.assertEqual(len(self.idleCalls(limiter)), 1)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_shorterIdleTimeout(self) -> None:
        """
        A shorter period than the one waited on is kept to.
        """
        connection, transport = connect(self.limiter)
        channel = connection.wrappedProtocol
        self.assertEqual(channel.setTimeout(5), IDLE_TIMEOUT)
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_idleTimerGoesWithConnection(self) -> None:
        """
        A connection lost leaves no idle timer behind (which would keep it
        in memory until due).
        """
        connection, _ = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        disconnect(connection)
        self.assertEqual(self.idleCalls(), [])

    def test_takenChannelNotKept(self) -> None:
        """
        A channel taken from its connection without being told (another
        protocol put in its place) is not kept by its idle timer, which
        then does nothing.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        channel = weakref.ref(connection.wrappedProtocol)
        connection.wrappedProtocol = Protocol()
        # As a transport lets go of its producer when its connection goes.
        transport.unregisterProducer()
        gc.collect()
        self.assertIsNone(channel())
        self.clock.advance(IDLE_TIMEOUT)
        self.assertFalse(transport.disconnecting)

    def upgraded(self) -> tuple[Any, Any, Any, Any]:
        """
        A connection of a server with the server's request class, upgraded
        to a WebSocket stream of C{k}: its limiter, connection, transport
        and store.
        """
        from artcast.server.routes import ArtcastApp
        from artcast.server.store import KeyStore

        store = KeyStore(self.clock, instance="srv")
        limiter = makeLimiter(self.clock, ArtcastApp(store, self.clock).resource())
        limiter.site.requestFactory = boundedRequestFactory(10)
        connection, transport = connect(limiter)
        connection.dataReceived(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.assertIn(b" 101 Switching Protocols\r\n", transport.value())
        return limiter, connection, transport, store

    def test_webSocketStopsIdleTimer(self) -> None:
        """
        A connection upgraded to a WebSocket, whose HTTP channel is never
        told it is lost, leaves no idle timer of it behind.
        """
        limiter, _, _, _ = self.upgraded()
        self.assertEqual(self.idleCalls(limiter), [])

    def test_webSocketRequestLetsGoOfItsHeaders(self) -> None:
        """
        The request of a WebSocket stream, kept as long as the stream, lets
        go again of the headers' object and content buffer made for the
        upgrade; its headers still read as they came, and the stream
        streams.
        """
        _, connection, transport, store = self.upgraded()
        request = connection.wrappedProtocol.opening.request
        self.assertNotIn("requestHeaders", vars(request))
        self.assertNotIn("content", vars(request))
        self.assertEqual(request.getHeader(b"Sec-WebSocket-Version"), b"13")
        self.assertEqual(
            list(request.requestHeaders.getRawHeaders(b"upgrade")), [b"websocket"]
        )
        transport.clear()
        store.publish("k", "v")
        self.assertIn(b'"v"', transport.value())

    def test_nextRequestDeadline(self) -> None:
        """
        On a keep-alive connection the deadline runs again from the first
        byte of the next request.
        """
        self.assertNextHeadCut(30)

    def test_nextRequestSoon(self) -> None:
        """
        A next request whose first byte comes before the earlier head's
        deadline would have passed gets a whole deadline of its own, from
        that byte.
        """
        self.assertNextHeadCut(HEADER_TIMEOUT / 2)
        self.assertEqual(self.limiter.rejected, {"header-timeout": 1})

    def test_wholeHeadNoDeadline(self) -> None:
        """
        A kept-alive connection's next request whose head comes whole in one
        read makes no head deadline at all.
        """
        connection, _ = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        deadlines = self.limiter.site.headDeadlines
        added = countCalls(deadlines, "add")
        connection.dataReceived(get(b"/poll"))
        self.assertEqual(len(self.resource.held), 1)
        self.assertEqual(added, [])
        self.assertEqual(len(deadlines), 0)

    def assertNextHeadCut(self, pause: float) -> None:
        """
        On a keep-alive connection, one request answered, C{pause} seconds,
        then part of a next head: the connection is cut with a C{408} a whole
        head deadline after that part came, and not before.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        self.clock.advance(pause)
        connection.dataReceived(b"GET /n")
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_noTimerLeftWhenGone(self) -> None:
        """
        A connection that closes leaves no head-deadline timer behind, even
        one whose head came in time.
        """
        before = set(self.clock.getDelayedCalls())
        connection, _ = connect(self.limiter)
        connection.dataReceived(get(b"/now"))
        connection.dataReceived(get(b"/poll"))
        disconnect(connection)
        self.clock.advance(0)  # the end of the turn writes the access log
        self.assertEqual(set(self.clock.getDelayedCalls()) - before, set())

    def test_localAddressAskedOnce(self) -> None:
        """
        The connection's local address is asked of the transport once,
        however many requests it carries.
        """
        connection, transport = connect(self.limiter)
        asked = countCalls(transport, "getHost")
        connection.dataReceived(get(b"/now") * 3)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertEqual(len(asked), 1)

    def test_peerAddressMadeOnce(self) -> None:
        """
        The client's address is asked of the transport once, however many
        requests the connection carries, and each request has it.
        """
        connection, transport = connect(self.limiter, "10.0.0.9", 41000)
        asked = countCalls(transport, "getPeer")
        connection.dataReceived(get(b"/poll") * 2)
        self.resource.held[0].finish()
        self.assertEqual(len(asked), 1)
        self.assertEqual(
            [request.getClientAddress() for request in self.resource.held],
            [IPv4Address("TCP", "10.0.0.9", 41000)] * 2,
        )

    def test_pipelined(self) -> None:
        """
        Requests sent together are all answered, each within the deadline.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/now") * 3)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertFalse(transport.disconnecting)

    def test_noDeadline(self) -> None:
        """
        With no head deadline, a silent connection is left to the idle
        timeout.
        """
        site = LimitedSite(
            Held(), None, reactor=self.clock, stderr=io.StringIO(),
            headerTimeout=None, idleTimeout=IDLE_TIMEOUT,
        )
        limiter = ConnectionLimiter(site)
        _, transport = connect(limiter)
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)


class HeadDeadlinesTests(SynchronousTestCase):
    """
    L{HeadDeadlines}: the site's head deadlines, one queue and one timer.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.queue = HeadDeadlines(self.clock)
        self.fired: list[str] = []

    def add(self, name: str, timeout: float = HEADER_TIMEOUT) -> Any:
        return self.queue.add(timeout, lambda: self.fired.append(name))

    def test_inOrderOneTimer(self) -> None:
        """
        Deadlines pass in the order they were added, each at its own time,
        with one timer on the clock at most.
        """
        self.add("a")
        self.clock.advance(1)
        self.add("b")
        self.clock.advance(0.5)
        self.add("c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(HEADER_TIMEOUT - 1.5)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(1)
        self.assertEqual(self.fired, ["a", "b"])
        self.clock.advance(0.5)
        self.assertEqual(self.fired, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled(self) -> None:
        """
        A cancelled deadline is not called, is no longer active, and the
        others still are called.
        """
        a = self.add("a")
        self.add("b")
        self.assertTrue(a.active())
        a.cancel()
        a.cancel()
        self.assertFalse(a.active())
        self.assertEqual(len(self.queue), 1)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, ["b"])

    def test_noneLiveNoTimer(self) -> None:
        """
        When every deadline is cancelled, no timer is left on the clock.
        """
        entries = [self.add(str(i)) for i in range(3)]
        for entry in entries:
            entry.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.queue), 0)
        self.add("d")
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, ["d"])

    def test_compacted(self) -> None:
        """
        Cancelled deadlines do not pile up: past 64, and more than half of
        the queue, the queue is rebuilt without them.
        """
        self.add("kept")
        for i in range(1000):
            self.add(str(i)).cancel()
        self.assertLess(len(self.queue._entries), 200)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, ["kept"])

    def test_otherTimeout(self) -> None:
        """
        A deadline with another timeout than those held gets a timer of its
        own, and still passes at its time.
        """
        self.add("a")
        self.add("short", 1.0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["short"])
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, ["short", "a"])

    def test_addedWhileDue(self) -> None:
        """
        A deadline added by one that passes (a connection closed, another
        made) is timed like any other.
        """
        self.queue.add(HEADER_TIMEOUT, lambda: self.add("later"))
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, [])
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.fired, ["later"])

    def test_oneTimerForManyConnections(self) -> None:
        """
        A site's connections waiting for their heads share one timer, and
        their idle timeouts another.
        """
        limiter = makeLimiter(self.clock)
        before = len(self.clock.getDelayedCalls())
        transports = [connect(limiter, port=40000 + i)[1] for i in range(5)]
        self.assertEqual(len(self.clock.getDelayedCalls()), before + 2)
        self.assertEqual(len(idleTimers(self.clock, limiter)), 5)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertTrue(all(t.disconnecting for t in transports))


class _Wrapper:
    """
    A transport wrapping another (like TLS) whose handle is not a socket.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def getHandle(self) -> object:
        return object()


class _SocketTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


class SocketOptionTests(SynchronousTestCase):
    """
    L{configureSocket} sets TCP keepalive and no-delay on accepted sockets.
    """

    def tcpSocket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        return sock

    def test_keepAlive(self) -> None:
        """
        SO_KEEPALIVE and TCP_NODELAY are on, and where the platform has
        them the probe idle time, interval and count are set.
        """
        sock = self.tcpSocket()
        self.assertTrue(configureSocket(_SocketTransport(sock), 60))
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 60)
        if hasattr(socket, "TCP_KEEPINTVL"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 10)
        if hasattr(socket, "TCP_KEEPCNT"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 6)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            self.assertEqual(
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), 120_000
            )

    def test_throughWrapper(self) -> None:
        """
        The socket is found under a wrapping transport such as TLS.
        """
        sock = self.tcpSocket()
        self.assertTrue(configureSocket(_Wrapper(_SocketTransport(sock)), 30))
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)

    def test_noKeepAlive(self) -> None:
        """
        With keepalive off, SO_KEEPALIVE is off and no-delay still on.
        """
        sock = self.tcpSocket()
        configureSocket(_SocketTransport(sock), None)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    def test_notTCP(self) -> None:
        """
        A UNIX socket or a transport with no socket is left alone.
        """
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(unix.close)
        self.assertFalse(configureSocket(_SocketTransport(unix), 60))
        self.assertFalse(configureSocket(StringTransport(), 60))

    def test_limiterConfigures(self) -> None:
        """
        The limiter configures each accepted connection's socket with its
        keepalive time.
        """
        sock = self.tcpSocket()
        limiter = makeLimiter(Clock(), tcpKeepAlive=42)
        connection = limiter.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        transport = StringTransport()
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]
        connection.makeConnection(transport)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 42)


class FileLimitTests(SynchronousTestCase):
    """
    L{ensureFileLimit} raises the soft open-files limit as far as allowed.
    """

    def test_raised(self) -> None:
        """
        A low soft limit is raised to what is wanted.
        """
        calls: list[Any] = []
        limit = ensureFileLimit(
            5000, lambda which: (1024, 100_000), lambda which, pair: calls.append(pair)
        )
        self.assertEqual((limit, calls), (5000, [(5000, 100_000)]))

    def test_hardCeiling(self) -> None:
        """
        It is not raised past the hard limit.
        """
        calls: list[Any] = []
        limit = ensureFileLimit(
            50_000, lambda which: (1024, 4096), lambda which, pair: calls.append(pair)
        )
        self.assertEqual((limit, calls), (4096, [(4096, 4096)]))

    def test_neverLowered(self) -> None:
        """
        A soft limit above what is wanted is left as it is.
        """
        calls: list[Any] = []
        limit = ensureFileLimit(
            100, lambda which: (1024, 4096), lambda which, pair: calls.append(pair)
        )
        self.assertEqual((limit, calls), (1024, []))

    def test_refused(self) -> None:
        """
        If the system refuses, the limit as it was is reported.
        """

        def refuse(which: int, pair: Any) -> None:
            raise ValueError("not allowed")

        self.assertEqual(ensureFileLimit(5000, lambda which: (1024, 8192), refuse), 1024)


class OptionTests(SynchronousTestCase):
    """
    The limit options of C{twistd artcast} and their wiring.
    """

    def test_defaults(self) -> None:
        """
        The defaults: 10,000 clients, no per-address cap, a 10 s head
        deadline, a 75 s idle timeout, 60 s keepalive, Retry-After up to 5 s
        and 5 s to shut down.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(
            [options[name] for name in (
                "max-clients", "max-clients-per-address", "header-timeout",
                "idle-timeout", "tcp-keepalive", "retry-after", "shutdown-timeout",
            )],
            [10_000, None, 10.0, 75.0, 60.0, 5, 5.0],
        )

    def test_badValues(self) -> None:
        """
        A limit that is not a positive number is a usage error.
        """
        for args in (
            ["--max-clients", "0"],
            ["--max-clients-per-address", "-1"],
            ["--header-timeout", "0"],
            ["--idle-timeout", "forever"],
            ["--tcp-keepalive", "-5"],
            ["--retry-after", "0"],
            ["--shutdown-timeout", "inf"],
        ):
            self.assertRaises(UsageError, tap.Options().parseOptions, args)

    def test_wired(self) -> None:
        """
        The server's port serves a L{ConnectionLimiter} with the options'
        limits, under the graceful L{ServingService}, which cancels the
        store's waiters once it has answered them.
        """
        options = tap.Options()
        options.parseOptions([
            "--max-clients", "7", "--max-clients-per-address", "3",
            "--header-timeout", "2", "--idle-timeout", "90", "--tcp-keepalive", "30",
            "--retry-after", "9", "--shutdown-timeout", "4",
        ])
        top = tap.makeService(options, reactor=MemoryReactorClock())
        limiter = top.connections
        self.assertIsInstance(limiter, ConnectionLimiter)
        self.assertEqual(
            (limiter.maxClients, limiter.maxPerAddress, limiter.tcpKeepAlive), (7, 3, 30.0)
        )
        site = limiter.site
        self.assertEqual((site.headerTimeout, site.timeOut), (2.0, 90.0))
        self.assertEqual(site.retryAfter.maximum, 9)
        [serving] = [s for s in top if isinstance(s, ServingService)]
        self.assertEqual(serving.timeout, 4.0)
        [port] = list(serving)
        self.assertIs(port.factory, limiter)
        self.assertEqual(serving.afterAnswer, top.store.cancelWaiters)


# Integration tests against the real server.


def pollRequest(key: str) -> bytes:
    """
    A long poll that asks the server to close the connection after the
    answer (so the client's place is given back when it is answered).
    """
    return requestBytes(b"/artcasts/" + key.encode(), {b"Connection": b"close"})


class LimitsIntegrationTests(TestCase):
    """
    The limits of the real C{twistd artcast}, over loopback.
    """

    timeout = 60

    @inlineCallbacks
    def serve(self, *extra: str) -> Any:
        proc = yield ArtcastProcess(self, extra=list(extra)).start()
        returnValue(proc)

    @inlineCallbacks
    def test_maxClients(self) -> Any:
        """
        With --max-clients 2 and two long polls held, a third request is
        answered 503 with Retry-After, and the two held ones still get their
        datum.
        """
        proc = yield self.serve("--max-clients", "2", "--retry-after", "3")
        first = yield rawConnect(self, proc)
        first.send(pollRequest("limits/a"))
        # /stats.json is the second client while it is asked.
        yield proc.waitForWaiters(1)
        second = yield rawConnect(self, proc)
        second.send(pollRequest("limits/a"))
        third = yield rawConnect(self, proc)
        third.send(pollRequest("limits/a"))
        refused = yield third.nextResponse()
        self.assertEqual(refused.code, 503)
        self.assertIn(refused.header(b"Retry-After"), (b"1", b"2", b"3"))
        yield third.lost
        proc.data.sendDatum("limits/a", 7)
        for client in (first, second):
            answer = yield client.nextResponse()
            self.assertEqual((answer.code, answer.body), (200, b"7"))
            yield client.lost
        stats = yield proc.stats()
        self.assertEqual(stats["rejected"], {"max-clients": 1})

    @inlineCallbacks
    def test_perAddress(self) -> Any:
        """
        With --max-clients-per-address 2, a third connection from one
        address is refused with 503 while another address is served.
        """
        proc = yield self.serve("--max-clients-per-address", "2")
        for _ in range(2):
            client = yield rawConnect(self, proc, source="127.0.0.2")
            client.send(pollRequest("limits/b"))
        # Asked from 127.0.0.1: a different address.
        yield proc.waitForWaiters(2)
        third = yield rawConnect(self, proc, source="127.0.0.2")
        third.send(pollRequest("limits/b"))
        refused = yield third.nextResponse()
        self.assertEqual(refused.code, 503)
        self.assertIsNotNone(refused.header(b"Retry-After"))
        stats = yield proc.stats()
        self.assertEqual(stats["rejected"], {"per-address": 1})
        self.assertEqual(stats["waiting"], 2)

    @inlineCallbacks
    def test_slowloris(self) -> Any:
        """
        With --header-timeout 1, a connection that sent half a request line
        is answered 408 and closed by the server, and counted.
        """
        proc = yield self.serve("--header-timeout", "1")
        client = yield rawConnect(self, proc)
        client.send(b"GET /artcasts/limits/c HT")
        yield client.lost
        answer = yield client.nextResponse()
        self.assertEqual(answer.code, 408)
        stats = yield proc.stats()
        self.assertEqual(stats["rejected"], {"header-timeout": 1})

    @inlineCallbacks
    def test_heldPollOutlivesIdleTimeout(self) -> Any:
        """
        With --idle-timeout 1 and --header-timeout 1, an idle keep-alive
        connection is closed by the server, while a long poll held since
        before it is not: it still gets its datum.
        """
        proc = yield self.serve("--idle-timeout", "1", "--header-timeout", "1")
        poll = yield rawConnect(self, proc)
        poll.send(pollRequest("limits/d"))
        yield proc.waitForWaiters(1)
        idle = yield rawConnect(self, proc)
        idle.send(requestBytes(b"/artcasts"))
        listing = yield idle.nextResponse()
        self.assertEqual(listing.code, 200)
        # The server closes the idle connection (the poll's connection has
        # been open longer).
        yield idle.lost
        self.assertFalse(poll.closed)
        proc.data.sendDatum("limits/d", "still here")
        answer = yield poll.nextResponse()
        self.assertEqual((answer.code, answer.body), (200, b'"still here"'))


class ChurnBenchTests(SynchronousTestCase):
    """
    C{bench/churn.py} runs end to end (a short run, so it cannot rot).
    """

    def test_short(self) -> None:
        """
        A short churn run against the real server completes its cycles and
        leaves the server holding no waiter and no client.
        """
        from bench import churn

        figures = churn.run(churn.parseArgs(
            ["--cycles", "300", "--batch", "60", "--warmup", "60", "--duration", "60"]
        ))
        self.assertEqual(figures["cycles"], 300)
        self.assertEqual(figures["server_waiting"], 0)
        self.assertLessEqual(figures["server_connections"], 1)
        self.assertEqual(figures["server_rejected"], {})
        self.assertGreater(figures["rss_after_kib"], 0)
