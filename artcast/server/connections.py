# -*- test-case-name: tests.test_connections -*-
"""
Holding up under abuse: connection limits, dead and slow clients.

Three pieces, from the socket up:

  - L{ConnectionLimiter}, a L{WrappingFactory} around the site: it counts
    every open connection (and, when asked, the connections of each client
    address), refuses connections past C{--max-clients} or
    C{--max-clients-per-address}, and turns TCP keepalive on for each
    accepted socket so that a client that vanished without a FIN is reaped
    by the kernel.  It works on the wrapper (L{TrackedConnection}) rather
    than on the HTTP channel, because a WebSocket upgrade replaces the
    channel's C{connectionLost} (Twisted) or the transport's protocol
    (Autobahn): the wrapper is told of every disconnection, so a client that
    goes away always gives back its place at once.
  - L{ArtcastChannel}, an L{HTTPChannel} with a deadline for the request
    head (slowloris: a connection that has not sent a whole request head
    within C{--header-timeout} seconds is closed) and one for the request
    body (C{--body-timeout}), that answers a refused connection's request
    with a C{503} and C{Retry-After} at once instead of passing it to the
    application, and that starts no pipelined request while the answers
    already written are still waiting for the client to read them.
  - L{LimitedSite}, the access-logging L{ArtcastSite} whose channels are
    L{ArtcastChannel}s, whose idle timeout (Twisted's C{timeOut}, suspended
    while a request is in progress, so a held long poll is never cut by it)
    is C{--idle-timeout}, and which counts refusals by reason.

Output is bounded too (see L{BodyProducer},
L{artcast.server.internals.queuedOutput}): a large
answer is written in chunks as the client reads it, a connection whose
queued output passes C{--max-output-buffer} bytes is aborted, and when the
queued output of all connections together passes C{--max-output-total},
the connections holding the most are (L{ConnectionLimiter.chargeOutput}).

So is input: every request is a L{BoundedRequest} (made by
L{boundedRequestFactory}), which keeps at most C{--max-value-size} bytes of
its body.

Refusals are counted by reason in L{LimitedSite.rejected}: C{max-clients},
C{per-address}, C{header-timeout}, C{body-timeout}, C{slow-reader},
C{output-full} and C{shutting-down}.
"""

from __future__ import annotations

import random
import re
import resource as _resource
import socket
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, Sequence, TextIO
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString, parse_qs
from twisted.web.iweb import INonQueuedRequestFactory, IRequest
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from twisted.web.server import version as serverVersion
from zope.interface import directlyProvides, implementer

from artcast.server import internals
# The defaults of the options (see docs/operations.md).
from artcast.server.defaults import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LOG_COUNT,
    DEFAULT_LOG_SIZE,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_OUTPUT_BUFFER,
    DEFAULT_MAX_OUTPUT_TOTAL,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_RETRY_AFTER,
    DEFAULT_TCP_KEEPALIVE,
)
from artcast.server.logs import (
    ArtcastSite,
    NamedLogger,
    RateLimitedLog,
    addressHost,
)

__all__ = [
    "ABORT_DELAY",
    "BODY_TIMEOUT",
    "CHUNK_SIZE",
    "FILE_HEADROOM",
    "HEADER_TIMEOUT",
    "KEEPALIVE_COUNT",
    "KEEPALIVE_INTERVAL",
    "MAX_CLIENTS",
    "OUTPUT_FULL",
    "OUTPUT_HEADROOM",
    "OUTPUT_SLACK_DIVISOR",
    "PER_ADDRESS",
    "SHUTTING_DOWN",
    "SLOW_READER",
    "ArtcastChannel",
    "ArtcastRequest",
    "BodyProducer",
    "BoundedRequest",
    "ConnectionLimiter",
    "HeadDeadlines",
    "LimitedSite",
    "PlainHead",
    "RetrySpread",
    "TrackedConnection",
    "boundedRequestFactory",
    "configureSocket",
    "ensureFileLimit",
    "sendStreamAtOnce",
    "unavailable",
    "writeBody",
]

#: What the output bound is never set below, beyond C{--max-value-size}: a
#: stream's or a WebSocket's message with the largest value is one write,
#: made while up to Twisted's 64 KiB buffer may still be queued.
OUTPUT_HEADROOM = 128 * 1024
#: What the charges may pass the real total by before they are measured
#: again, as a fraction of C{--max-output-total} (see
#: L{ConnectionLimiter.chargeOutput}).
OUTPUT_SLACK_DIVISOR = 16
#: A body larger than this is written in pieces of this size, each when the
#: client has read the ones before (L{BodyProducer}).
CHUNK_SIZE = 64 * 1024

#: Keepalive probes: one every C{KEEPALIVE_INTERVAL} seconds after the idle
#: time, C{KEEPALIVE_COUNT} unanswered ones and the kernel drops the socket.
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6

#: After closing a connection for its header deadline, how long it may take
#: to take our last bytes before it is aborted.
ABORT_DELAY = 2.0

#: File descriptors kept for everything that is not a client (logs,
#: multicast sockets, the listening socket, Python's own).
FILE_HEADROOM = 64

#: The refusal reasons, as counted and as shown in C{/stats}.
MAX_CLIENTS = "max-clients"
PER_ADDRESS = "per-address"
HEADER_TIMEOUT = "header-timeout"
BODY_TIMEOUT = "body-timeout"
SLOW_READER = "slow-reader"
OUTPUT_FULL = "output-full"
SHUTTING_DOWN = "shutting-down"

_MESSAGES = {
    MAX_CLIENTS: "The server has as many clients as it takes.",
    PER_ADDRESS: "Your address has as many connections open as it may.",
    SHUTTING_DOWN: "The server is shutting down.",
}

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class RetrySpread:
    """
    C{Retry-After} values spread over C{1..maximum} seconds, round-robin
    from a random start, so that clients turned away together do not all
    come back in the same second.

    @ivar maximum: The largest value, in seconds.
    """

    def __init__(self, maximum: int = DEFAULT_RETRY_AFTER, start: int | None = None) -> None:
        """
        @param maximum: The largest value, at least 1.
        @param start: The first value (for tests); random by default.
        """
        if maximum < 1:
            raise ValueError(f"Retry-After must be at least 1 second, not {maximum!r}")
        self.maximum = maximum
        if start is None:
            start = random.randint(1, maximum)
        self._next = (start - 1) % maximum

    def next(self) -> int:
        """
        @return: The next value, from 1 to C{maximum}.
        """
        value = self._next + 1
        self._next = value % self.maximum
        return value

    __call__ = next


def unavailable(
    request: IRequest, retryAfter: int, reason: str, allowOrigin: bytes | None
) -> bytes:
    """
    Make C{request}'s answer a C{503 Service Unavailable} with
    C{Retry-After}, closing the connection after it.

    @param retryAfter: Seconds the client should wait before trying again.
    @param reason: One of the refusal reasons; it picks the message.
    @param allowOrigin: The C{Access-Control-Allow-Origin} value, so that a
        script on another origin can see the answer (and, through
        C{Access-Control-Expose-Headers}, its C{Retry-After}).

    @return: The body, for the caller to write.
    """
    body = (
        f"{_MESSAGES.get(reason, 'The server cannot answer now.')} "
        f"Try again in {retryAfter} seconds.\n"
    ).encode("utf-8")
    request.setResponseCode(503)
    request.setHeader(b"Retry-After", b"%d" % (retryAfter,))
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Connection", b"close")
    if allowOrigin is not None:
        request.setHeader(b"Access-Control-Allow-Origin", allowOrigin)
        request.setHeader(b"Access-Control-Expose-Headers", b"Retry-After")
    return body


def _socketOf(transport: Any) -> socket.socket | None:
    """
    The TCP socket under a transport, looking through wrappers such as TLS
    (whose C{getHandle} is the TLS connection, not the socket).
    """
    for _ in range(4):
        if transport is None:
            return None
        getHandle = getattr(transport, "getHandle", None)
        if getHandle is not None:
            try:
                handle = getHandle()
            except Exception:
                handle = None
            if isinstance(handle, socket.socket):
                if handle.family in (socket.AF_INET, socket.AF_INET6) and (
                    handle.type == socket.SOCK_STREAM
                ):
                    return handle
                return None
        transport = getattr(transport, "transport", None)
    return None


def configureSocket(transport: Any, keepAliveIdle: float | None) -> bool:
    """
    Set the options a server socket for long-held clients wants:
    C{TCP_NODELAY} (an answer is one small write, send it now), and
    C{SO_KEEPALIVE} with, where the platform has them, C{TCP_KEEPIDLE}
    (C{TCP_KEEPALIVE} on macOS), C{TCP_KEEPINTVL} and C{TCP_KEEPCNT}, so that
    the kernel finds a client that vanished (a phone that left the network,
    a NAT that forgot the mapping) and the connection's C{connectionLost}
    runs; and C{TCP_USER_TIMEOUT} (Linux) with the same bound, for a client
    that vanished while data to it is unacknowledged, which keepalive does
    not probe.

    @param transport: The connection's transport; anything without a TCP
        socket under it (a UNIX socket, a test transport) is left alone.
    @param keepAliveIdle: Seconds of silence before the first probe, or
        L{None} for no keepalive.

    @return: Whether a TCP socket was found and configured.
    """
    sock = _socketOf(transport)
    if sock is None:
        return False
    settings: list[tuple[int, int, int]] = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0 if keepAliveIdle is None else 1),
    ]
    if keepAliveIdle is not None:
        idle = max(1, int(keepAliveIdle))
        idleOption = getattr(socket, "TCP_KEEPIDLE", None)
        if idleOption is None:
            idleOption = getattr(socket, "TCP_KEEPALIVE", None)
        for option, value in (
            (idleOption, idle),
            (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
            (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
            (
                getattr(socket, "TCP_USER_TIMEOUT", None),
                (idle + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000,
            ),
        ):
            if option is not None:
                settings.append((socket.IPPROTO_TCP, option, value))
    for level, option, value in settings:
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            # Not on this platform or this kind of socket: keep the others.
            pass
    return True


@implementer(IPushProducer)
class BodyProducer:
    """
    Writes one body, an immutable L{bytes} shared by every request that
    sends it, to a request in pieces of L{CHUNK_SIZE} bytes, each as soon as
    the transport has room for it (it is registered as the request's
    streaming producer, so the transport pauses it), then finishes the
    request.  A client that does not read costs at most Twisted's buffer
    and one piece, not a copy of the body.

    @ivar request: The request, or L{None} once done.
    @ivar body: The body, or L{None} once done.
    @ivar offset: How much of it is written.
    """

    def __init__(self, request: Any, body: bytes) -> None:
        """
        @param request: The request to answer; its headers are set.
        @param body: The body.
        """
        self.request: Any = request
        self.body: bytes | None = body
        self.offset = 0
        self.paused = False

    def start(self) -> None:
        """
        Register with the request and write while the transport takes it.
        """
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        body, request = self.body, self.request
        if body is None or request is None:
            return
        end = len(body)
        while not self.paused and self.offset < end and self.body is not None:
            start = self.offset
            self.offset = start + CHUNK_SIZE
            request.write(body[start : self.offset])
        if self.offset >= end and self.body is not None:
            self._done()
            if not internals.requestOver(request):
                request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self._done()

    def _done(self) -> None:
        request, self.request, self.body = self.request, None, None
        if request is not None and request.channel is not None:
            request.unregisterProducer()


def writeBody(request: Any, body: bytes) -> None:
    """
    Write C{body} as the answer to C{request} (its headers set) and finish
    it: at once when it is small, else through a L{BodyProducer}.
    """
    if len(body) <= CHUNK_SIZE or request.method == b"HEAD":
        if not internals.requestOver(request):
            request.write(body)
            request.finish()
        return
    BodyProducer(request, body).start()


def sendStreamAtOnce(transport: Any, streaming: bool = True) -> None:
    """
    From now on, send what is written on a connection (its
    L{TrackedConnection}, the transport of its HTTP channel or of the
    WebSocket protocol that took it over) at once (L{internals.sendNow}): a
    stream's events (SSE, NDJSON, WebSocket frames), each one write,
    written after its headers went the ordinary way.  Twisted would buffer
    each event and send it on the next reactor turn, watching and
    unwatching the socket for it (two C{epoll_ctl}); a datum's fan-out to
    many streams would send none until every stream had its event.
    C{streaming=False} puts the ordinary way back.  Any other transport is
    left as it is.
    """
    if isinstance(transport, TrackedConnection):
        transport.streaming = streaming


def ensureFileLimit(
    wanted: int,
    getrlimit: Callable[[int], tuple[int, int]] = _resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = _resource.setrlimit,
) -> int:
    """
    Raise the soft limit of open files towards C{wanted}, no further than the
    hard limit (which needs no privilege).  Many systems start a process
    with a soft limit of 1024 files, far below a long-poll server's clients.

    @return: The soft limit now.
    """
    soft, hard = getrlimit(_resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == _resource.RLIM_INFINITY else min(wanted, hard)
    if soft != _resource.RLIM_INFINITY and soft < ceiling:
        try:
            setrlimit(_resource.RLIMIT_NOFILE, (ceiling, hard))
        except (ValueError, OSError):
            return soft
        return ceiling
    return soft


class _Unavailable(Resource):
    """
    The resource a refused connection's request gets: a C{503} with
    C{Retry-After}, counted under its reason.
    """

    isLeaf = True

    def __init__(self, site: LimitedSite, reason: str) -> None:
        super().__init__()
        self.site = site
        self.reason = reason

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        self.site.rejected[self.reason] += 1
        return unavailable(
            request, self.site.retryAfter(), self.reason, self.site.allowOrigin
        )


class _Deadline:
    """
    One entry of L{HeadDeadlines}: what to call at C{time}, with C{args},
    unless cancelled.  It has what a channel uses of an L{IDelayedCall}:
    C{active}, C{cancel}, C{seconds} and C{time}.
    """

    __slots__ = ("time", "function", "queue", "args")

    def __init__(
        self, time: float, function: Callable[..., Any], queue: HeadDeadlines,
        args: tuple[Any, ...] = (),
    ) -> None:
        self.time = time
        self.function: Callable[..., Any] | None = function
        self.queue = queue
        self.args = args

    def active(self) -> bool:
        return self.function is not None

    def seconds(self) -> float:
        """
        @return: Now, by the clock that times it.
        """
        return self.queue.clock.seconds()

    def cancel(self) -> None:
        if self.function is not None:
            self.function = None
            self.queue._cancelled()


class HeadDeadlines:
    """
    The request-head deadlines of a site's connections, or their idle
    timeouts: one queue and one timer for all of them, instead of a
    L{DelayedCall} per request (made, pushed on the reactor's heap and
    cancelled for every request).

    Every deadline is now plus the same timeout, so they come in the order
    they are added: a deque, whose first live entry is the next to pass.  A
    cancelled entry stays until it reaches the front, or until the queue is
    rebuilt without them when they are more than half of it (as Twisted's
    reactor does with its cancelled calls); when none is live, the queue
    is emptied and its timer cancelled, so an idle site holds no timer.  A
    deadline with another timeout than the entries held (a site whose
    C{headerTimeout} changed) gets a timer of its own.

    @ivar clock: What times them.
    @ivar timeout: The timeout of the entries held.
    """

    _log = NamedLogger(namespace="artcast.connections.HeadDeadlines")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.timeout: float | None = None
        self._entries: deque[_Deadline] = deque()
        self._stale = 0
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """
        @return: How many deadlines are live.
        """
        return len(self._entries) - self._stale

    def add(self, timeout: float, function: Callable[..., Any], *args: Any) -> Any:
        """
        Call C{function(*args)} in C{timeout} seconds unless the returned
        entry is cancelled first.

        @return: An object with C{active()}, C{cancel()}, C{seconds()} and
            C{time}, as an L{IDelayedCall} has them.
        """
        entries = self._entries
        if timeout != self.timeout:
            if entries:
                return self.clock.callLater(timeout, function, *args)
            self.timeout = timeout
        entry = _Deadline(self.clock.seconds() + timeout, function, self, args)
        entries.append(entry)
        if self._timer is None:
            self._timer = self.clock.callLater(timeout, self._due)
        return entry

    def _cancelled(self) -> None:
        self._stale += 1
        entries = self._entries
        if self._stale == len(entries):
            entries.clear()
            self._stale = 0
            timer, self._timer = self._timer, None
            if timer is not None and timer.active():
                timer.cancel()
        elif self._stale > 64 and self._stale * 2 > len(entries):
            self._entries = deque(e for e in entries if e.function is not None)
            self._stale = 0

    def _due(self) -> None:
        self._timer = None
        entries = self._entries
        now = self.clock.seconds()
        while entries:
            entry = entries[0]
            function = entry.function
            if function is None:
                entries.popleft()
                self._stale -= 1
                continue
            if entry.time > now:
                break
            entries.popleft()
            entry.function = None
            try:
                function(*entry.args)
            except Exception:
                self._log.failure("A deadline failed")
            # What it called may have added or cancelled entries.
            entries = self._entries
        if entries and self._timer is None:
            self._timer = self.clock.callLater(
                max(0.0, entries[0].time - self.clock.seconds()), self._due
            )


#: The phases of a request on an L{ArtcastChannel}: waiting for one; some of
#: its head came; its head came (its body is being read); handed to the site;
#: answered, but the answer is not yet read by the client (the transport
#: paused the channel), so the next pipelined request waits; the connection
#: is lost.
_IDLE, _HEAD, _READING, _DISPATCHED, _HELD, _GONE = range(6)


#: The attributes L{ArtcastRequest.hold} may let go of, each with its bit.
_LEAN_BITS = {
    name: 1 << i
    for i, name in enumerate((
        "responseHeaders", "requestHeaders", "content", "cookies",
        "received_cookies", "args", "notifications", "prepath", "sitepath",
        "_adapterCache",
    ))
}
_ABSENT = object()


class _LeanAttribute:
    """
    An attribute of L{ArtcastRequest} that L{ArtcastRequest.hold} may let
    go of: the request's own value when it has one (an instance's value
    comes first: this has no C{__set__}), else the one let go of, made
    again, else, as in Twisted, its class attribute (L{None}: C{content},
    C{args}) or an L{AttributeError}.
    """

    def __init__(self, default: Any = _ABSENT) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.bit = _LEAN_BITS[name]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is not None:
            lean = instance._lean
            if lean is not None and lean[0] & self.bit:
                if instance.finished and self.name in _LEAN_FINISHED:
                    # Twisted's _cleanup, closing and dropping the content
                    # and firing and dropping the notifications: none to
                    # make again.
                    return _LEAN_FINISHED[self.name]
                return instance._madeAgain(self.name)
        if self.default is _ABSENT:
            raise AttributeError(
                f"{(owner or type(instance)).__name__!r} object has no attribute {self.name!r}"
            )
        return self.default


class ArtcastRequest(Request):
    """
    The server's request: it tells what it waits on when its client goes.

    A held long poll is one object
    (L{artcast.server.outlets.longpoll.LongPoll}) that the request points to,
    instead of the L{Deferred} of C{notifyFinish} and the callbacks on it,
    which would cost more memory than the rest of a waiting request.

    @ivar poll: What the request is waiting on, or L{None}: its C{cancel()}
        is called if the connection is lost before the answer is finished.
    """

    # Slots, outside the instance's table of names: CPython shares one such
    # table among a class's instances for at most 30 names, and Twisted's
    # request, answering a stream, already sets 29 (past 30, each request
    # makes a dict of its own, 1.5 KB).
    __slots__ = ("poll", "_lean", "plainHead")

    poll: Any
    #: The head, when it was read in one step (L{ArtcastChannel._readHead}),
    #: else L{None}.
    plainHead: PlainHead | None
    #: What a held request let go of (see L{hold}): L{None}, or a tuple of
    #: a bit mask of the attributes dropped (L{_LEAN_BITS}), the C{Date}
    #: value of the response headers dropped, and the request headers'
    #: names and values in turn.
    _lean: tuple[Any, ...] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.poll = None
        self._lean = None
        self.plainHead = None
        super().__init__(*args, **kwargs)

    @classmethod
    def madePlain(cls, channel: HTTPChannel) -> ArtcastRequest | None:
        """
        A request for C{channel}, first in its queue, made as Twisted's
        constructor makes it, but with the empty containers it makes
        (request and response headers, cookies, notifications, adapter
        cache) let go of from the start, as L{hold} lets go of them, and
        made when something asks for them: most requests of a busy server
        are long polls, which use none.

        @return: The request, or L{None} where L{internals.requestMade} may
            not make it (then the constructor must).
        """
        request = cls.__new__(cls)
        if not internals.requestMade(request, channel):
            return None
        request.poll = None
        request.plainHead = None
        request._lean = (_MADE_LEAN, None)
        return request

    def hold(self, poll: Any) -> None:
        """
        Wait on C{poll}, letting go meanwhile of what a held long poll does
        not use and Twisted made anyway: the request headers' and the
        response headers' objects (kept as their names and values), and the
        empty content buffer, cookie, argument and notification
        containers.  Each is made again, as it was, when
        something asks for it (the access log, an answer that is not
        prebuilt), so that every user still sees Twisted's L{Request}.
        """
        self.poll = poll
        channel = self.channel
        if isinstance(channel, ArtcastChannel):
            channel.releaseIdleTimer()
        lean = self._lean
        if lean is None:
            mask = 0
            date = None
        elif lean[0] & _HELD_BIT:
            return
        else:
            # What process let go of (the response headers, unless made
            # again since).
            mask, date = lean[0], lean[1]
        # Straight-line: this runs for every held poll.
        raw = () if mask & _RESPONSE_HEADERS_BIT else list(self.responseHeaders.getAllRawHeaders())
        if len(raw) == 2:
            (server, servers), (dateName, dates) = raw
            if (
                server == b"Server" and dateName == b"Date"
                and len(servers) == 1 and servers[0] == _SERVER and len(dates) == 1
            ):
                date = dates[0]
                # One value for every request held in the same second.
                if date == _lastDate[0]:
                    date = _lastDate[0]
                else:
                    _lastDate[0] = date
                mask |= _RESPONSE_HEADERS_BIT
                del self.responseHeaders
        pairs: Any
        if mask & _REQUEST_HEADERS_BIT:
            # Kept so since the head was read (ArtcastChannel._readHead).
            pairs = None
        else:
            pairs = []
            for name, values in self.requestHeaders.getAllRawHeaders():
                if len(values) != 1:
                    pairs = []
                    break
                pairs += (name.lower(), values[0])
            else:
                mask |= _REQUEST_HEADERS_BIT
                del self.requestHeaders
            pairs = map(_shared, pairs)
        if not mask & _CONTENT_BIT:
            content = self.content
            if type(content) is BytesIO and not content.getvalue():
                mask |= _CONTENT_BIT
                del self.content
        if mask & _MADE_LEAN != _MADE_LEAN:
            # (A request made by Twisted, not by madePlain.)
            if not mask & _COOKIES_BIT and self.cookies == []:
                mask |= _COOKIES_BIT
                del self.cookies
            if not mask & _RECEIVED_COOKIES_BIT and self.received_cookies == {}:
                mask |= _RECEIVED_COOKIES_BIT
                del self.received_cookies
            if not mask & _NOTIFICATIONS_BIT and self.notifications == []:
                mask |= _NOTIFICATIONS_BIT
                del self.notifications
            # getattr, not __dict__, which would make the instance a dict of
            # its own.
            if not mask & _ADAPTER_CACHE_BIT and getattr(self, "_adapterCache", None) == {}:
                mask |= _ADAPTER_CACHE_BIT
                del self._adapterCache
        if not mask & _ARGS_BIT and self.args == {}:
            mask |= _ARGS_BIT
            del self.args
        if not mask & _PREPATH_BIT and self.prepath == _POLL_PREPATH:
            mask |= _PREPATH_BIT
            del self.prepath
        if not mask & _SITEPATH_BIT and getattr(self, "sitepath", None) == []:
            mask |= _SITEPATH_BIT
            del self.sitepath
        # One object for the values every held request shares.
        if self.method == b"GET":
            self.method = b"GET"
        if self.clientproto == b"HTTP/1.1":
            self.clientproto = b"HTTP/1.1"
        if pairs is None:
            assert lean is not None
            if mask == lean[0] and date is lean[1]:
                # Nothing more let go of (a request made lean from the
                # start, see madePlain).
                return
            pairs = lean[2:]
        self._lean = (mask | _HELD_BIT, date, *pairs)

    def process(self) -> None:
        """
        Twisted's L{Request.process}, but the C{Server} and C{Date} headers
        it sets first on headers still empty are let go of at once, as
        L{hold} lets go of them, and made again, as Twisted makes them, when
        something reads or sets the response headers (most requests are
        long polls, whose prebuilt answer carries its own); and the C{Date}
        is made once a second.
        Twisted's own is used where L{internals.processFits} says ours may
        not do all it does, and for the path C{*}.
        """
        path = self.path
        if (
            path == b"*"
            or not internals.processFits(self)
            # Twisted's channel set Connection: close (Server and Date come
            # after it).
            or next(self.responseHeaders.getAllRawHeaders(), None) is not None
        ):
            super().process()
            return
        self._processLean()

    def _processLean(
        self, mask: int | None = None, headers: Sequence[bytes] = ()
    ) -> None:
        """
        L{process}, once it is known that Twisted's would do no more.

        @param mask: What L{receivedPlain} let go of (and C{headers}, what
            it kept), not yet set: set with what this lets go of, in one
            step; else L{None}, and they are the request's.
        """
        path = self.path
        site = self.site = self.channel.site
        if mask is None:
            lean = self._lean
            if lean is None:
                mask = 0
            else:
                mask, headers = lean[0], lean[2:]
        if not mask & _RESPONSE_HEADERS_BIT:
            del self.responseHeaders
        # (Let go of empty since made, or made again: empty, as process
        # would find them.)
        mask |= _RESPONSE_HEADERS_BIT
        date = _httpDate()
        resrc = site.resource
        pollPlain = getattr(resrc, "pollPlain", None)
        if (
            pollPlain is not None
            and self.method in _FAST_METHODS
            and _PLAIN_POLL_PATH(path)
            and isinstance(site, LimitedSite)
            and resrc.isLeaf
            and site.refusalReason(self) is None
        ):
            # What getResourceFor and the resource's render would find: the
            # resource itself (a leaf), the sitepath and prepath those of a
            # poll, let go of as hold lets go of them; the path needs no
            # decoding and passes render's checks.
            self._lean = (mask | _SITEPATH_BIT | _PREPATH_BIT, date, *headers)
            # (A list of its own length: split's holds room for twelve.)
            self.postpath = list(path[10:].split(b"/"))
            try:
                if pollPlain(self):
                    return
            except BaseException:
                self.processingFailed(Failure())
                return
        self._lean = (mask, date, *headers)
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, path[1:].split(b"/")))
        try:
            resrc = site.getResourceFor(self)
            encoder = internals.encoderOf(resrc, self)
            if encoder is not None:
                self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(Failure())

    def _madeAgain(self, name: str) -> Any:
        """
        Make again an attribute L{hold} let go of, and set it.
        """
        lean = self._lean
        assert lean is not None
        bit = _LEAN_BITS[name]
        self._lean = (lean[0] & ~bit,) + lean[1:]
        value: Any
        if name == "responseHeaders":
            value = Headers()
            if lean[1] is not None:
                value.setRawHeaders(b"Server", [_SERVER])
                value.setRawHeaders(b"Date", [lean[1]])
        elif name == "requestHeaders":
            value = Headers()
            for i in range(2, len(lean), 2):
                value.addRawHeader(lean[i], lean[i + 1])
        elif name == "content":
            value = BytesIO()
        elif name == "prepath":
            value = list(_POLL_PREPATH)
        else:
            value = _LEAN_KINDS[name]()
        setattr(self, name, value)
        return value

    #: What L{hold} may let go of (L{_LeanAttribute}s, not a C{__getattr__}:
    #: a class with one has every attribute of its instances read the slow
    #: way, which CPython cannot specialize); Twisted's L{Request} has
    #: C{content}, C{args} and C{prepath} as class attributes, L{None}.
    content = _LeanAttribute(None)
    args = _LeanAttribute(None)
    notifications = _LeanAttribute()
    prepath = _LeanAttribute(None)
    responseHeaders = _LeanAttribute()
    requestHeaders = _LeanAttribute()
    cookies = _LeanAttribute()
    received_cookies = _LeanAttribute()
    sitepath = _LeanAttribute()
    _adapterCache = _LeanAttribute()

    def requestHeaderValues(self, name: bytes) -> list[bytes] | None:
        """
        The values of a request header (C{name} in lower case), from those
        L{hold} kept when it let go of the headers' object, without making
        it again (the access log asks for two headers of every request).
        """
        lean = self._lean
        if lean is None or not lean[0] & _REQUEST_HEADERS_BIT:
            return self.requestHeaders.getRawHeaders(name)
        if name not in lean:
            # (Most headers asked for are absent: found so in C.)
            return None
        i = lean.index(name)
        if not i % 2 and lean.count(name) == 1:
            # Once, as a name (names are at even places; found in C too).
            return [lean[i + 1]]
        values = None
        for i in range(2, len(lean), 2):
            if lean[i] == name:
                if values is None:
                    values = [lean[i + 1]]
                else:
                    values.append(lean[i + 1])
        return values

    def getHeader(self, key: Any) -> Any:
        """
        Twisted's L{Request.getHeader} (the last value), read from the
        headers kept as names and values while their object is let go of
        (see L{hold}, L{ArtcastChannel._readHead}).
        """
        lean = self._lean
        if lean is None or not lean[0] & _REQUEST_HEADERS_BIT or type(key) is not bytes:
            return super().getHeader(key)
        name = key.lower()
        if name not in lean:
            return None
        i = lean.index(name)
        if not i % 2 and lean.count(name) == 1:
            # (As in requestHeaderValues.)
            return lean[i + 1]
        values = self.requestHeaderValues(name)
        return values[-1] if values else None

    def receivedPlain(
        self, command: bytes, path: bytes, version: bytes, headers: list[bytes]
    ) -> None:
        """
        Twisted's L{Request.gotLength} (of 0) and L{Request.requestReceived}
        for a head read in one step by L{ArtcastChannel._readHead} (a C{GET}
        or C{HEAD} without a body), but the empty content buffer it would
        make and the request headers (given as lower-case names and values
        in turn) are kept as L{hold} keeps them, made when asked for.
        """
        lean = self._lean
        if lean is None:
            mask = _REQUEST_HEADERS_BIT | _CONTENT_BIT
            date = None
            del self.requestHeaders
        else:
            # Made by madePlain.
            mask = lean[0] | _CONTENT_BIT
            date = lean[1]
        self.method, self.uri = command, path
        self.clientproto = version
        parts = path.split(b"?", 1)
        if len(parts) == 1:
            self.path = path
            # No arguments: let go of from the start (made, empty, if read).
            mask |= _ARGS_BIT
        else:
            self.path, query = parts
            self.args = parse_qs(query, 1)
        if self.path != b"*" and internals.processFits(self):
            # (The response headers are still empty: no Connection: close.)
            self._processLean(mask, headers)
        else:
            self._lean = (mask, date, *headers)
            self.process()

    def releaseHeaders(self) -> None:
        """
        Let go again of the request headers' object and the empty content
        buffer, made again from what L{hold} or L{receivedPlain} kept when
        something read them, if they still say only that: a WebSocket's
        request, whose head Autobahn reads to upgrade it, is kept as long as
        its stream.
        """
        lean = self._lean
        if lean is None:
            return
        mask = lean[0]
        own = vars(self)
        headers = own.get("requestHeaders")
        if not mask & _REQUEST_HEADERS_BIT and headers is not None:
            made: list[bytes] = []
            for name, values in headers.getAllRawHeaders():
                for value in values:
                    made += (name.lower(), value)
            if tuple(made) == lean[2:]:
                mask |= _REQUEST_HEADERS_BIT
                del self.requestHeaders
        content = own.get("content")
        if not mask & _CONTENT_BIT and type(content) is BytesIO and not content.getvalue():
            mask |= _CONTENT_BIT
            del self.content
        if mask != lean[0]:
            self._lean = (mask,) + lean[1:]

    def headAsRead(self) -> PlainHead | None:
        """
        @return: The head the request was read from in one step
            (L{plainHead}), if its method, target, version and headers are
            still those of the head (nothing has made its headers' object
            again, or set them); else L{None}.
        """
        head = self.plainHead
        lean = self._lean
        if (
            head is None
            or lean is None
            or not lean[0] & _REQUEST_HEADERS_BIT
            or self.uri is not head.target
            or self.method != head.method
            or self.clientproto != head.version
        ):
            return None
        return head

    def heldServer(self) -> bytes | None:
        """
        @return: The C{Server} header when the response headers are still
            only the C{Server} and C{Date} Twisted set, as let go of by
            L{hold} (without making them again), else L{None}.
        """
        lean = self._lean
        if lean is not None and lean[0] & _RESPONSE_HEADERS_BIT and lean[1] is not None:
            return _SERVER
        return None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        poll = self.poll
        if poll is not None:
            self.poll = None
            poll.cancel()


#: The C{Server} header Twisted's L{Request.process} sets.
_SERVER = serverVersion
#: The C{Date} value of the last request held (see L{ArtcastRequest.hold}).
_lastDate = [b""]
#: In the mask of L{ArtcastRequest._lean}: L{ArtcastRequest.hold} is done.
_HELD_BIT = 1 << len(_LEAN_BITS)
#: The second and the C{Date} value of L{_httpDate}.
_date: list[Any] = [None, b""]


def _httpDate() -> bytes:
    """
    The C{Date} Twisted's L{Request.process} sets (L{datetimeToString} of
    now), made once a second.
    """
    second = int(time.time())
    if second != _date[0]:
        _date[0] = second
        _date[1] = datetimeToString(second)
    return _date[1]
_CONTENT_BIT = _LEAN_BITS["content"]
_REQUEST_HEADERS_BIT = _LEAN_BITS["requestHeaders"]
_RESPONSE_HEADERS_BIT = _LEAN_BITS["responseHeaders"]
#: Those let go of when empty, with their type.
_LEAN_KINDS: dict[str, type] = {
    "cookies": list, "received_cookies": dict, "args": dict, "notifications": list,
    "sitepath": list, "_adapterCache": dict,
}
_PREPATH_BIT = _LEAN_BITS["prepath"]
_SITEPATH_BIT = _LEAN_BITS["sitepath"]
_ADAPTER_CACHE_BIT = _LEAN_BITS["_adapterCache"]
#: A held long poll's C{prepath} (L{artcast.server.routes.ArtcastResource}).
_POLL_PREPATH = [b"artcasts"]
_COOKIES_BIT = _LEAN_BITS["cookies"]
_RECEIVED_COOKIES_BIT = _LEAN_BITS["received_cookies"]
_ARGS_BIT = _LEAN_BITS["args"]
_NOTIFICATIONS_BIT = _LEAN_BITS["notifications"]
#: What L{ArtcastRequest.madePlain} lets go of (with empty response
#: headers: no C{Date} yet).
_MADE_LEAN = (
    _REQUEST_HEADERS_BIT | _RESPONSE_HEADERS_BIT | _COOKIES_BIT | _RECEIVED_COOKIES_BIT
    | _NOTIFICATIONS_BIT | _ADAPTER_CACHE_BIT
)
#: What a finished request's let-go-of attributes are when Twisted's
#: C{_cleanup} asks for them: the content L{None} (Twisted's class
#: attribute, as after its C{del}), no notifications to fire.
_LEAN_FINISHED: dict[str, Any] = {"content": None, "notifications": ()}

#: Request header names and values held requests share (see L{_shared}).
_SHARED: dict[bytes, bytes] = {}
_SHARED_MAX = 256


def _shared(value: bytes) -> bytes:
    """
    One object for equal header names and values of held requests (every
    client of a server sends the same C{Host}), among the first
    L{_SHARED_MAX} short ones seen; others are kept as they are.
    """
    found = _SHARED.get(value)
    if found is not None:
        return found
    if len(_SHARED) < _SHARED_MAX and len(value) <= 64:
        _SHARED[value] = value
    return value


class BoundedRequest(ArtcastRequest):
    """
    A request that keeps at most C{maxBody} bytes of its body: every
    request's class (the one L{artcast.server.tap} gives the site).

    Twisted buffers every request body whole (in a temporary file past
    100 kB) before any resource sees it, whatever its size.  This request
    stops storing a body that passes C{maxBody} (declared in
    C{Content-Length} or counted as it arrives) and sets C{bodyTooLarge},
    so a client cannot fill the server's memory or disk; the rest of the
    body is read and thrown away.  Make one with L{boundedRequestFactory}.

    @ivar bodyTooLarge: whether the body was larger than C{maxBody}.
    """

    maxBody = DEFAULT_MAX_VALUE_SIZE
    bodyTooLarge = False
    _bodyLength = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBody:
            self.bodyTooLarge = True
            self.content = BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        self._bodyLength += len(data)
        if self._bodyLength > self.maxBody:
            self.bodyTooLarge = True
            self.content.close()
            self.content = BytesIO()
            return
        super().handleContentChunk(data)


def boundedRequestFactory(maxBody: int) -> type[BoundedRequest]:
    """
    A L{BoundedRequest} class for L{twisted.web.server.Site}'s
    C{requestFactory}.
    """
    return type("BoundedRequest", (BoundedRequest,), {"maxBody": maxBody})


#: The longest request head L{ArtcastChannel} reads in one step.
_FAST_HEAD_MAX = 8192
_FAST_METHODS = frozenset((b"GET", b"HEAD"))
#: A request target, a header name (a token) and a value's bad bytes, for
#: the heads read in one step: no wider than what Twisted accepts.
_FAST_TARGET = re.compile(rb"[!-~]+\Z").match
#: The path of a long poll that L{ArtcastRequest.process} gives straight to
#: the resource (see C{pollPlain}): printable ASCII, no percent-escape.
_PLAIN_POLL_PATH = re.compile(rb"/artcasts/[!-$&-~]+\Z").match
_FAST_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z").match
_FAST_BAD_VALUE = re.compile(rb"[\x00\r\n]").search
#: Headers whose heads Twisted reads itself (body, cookies, C{100-continue}),
#: and C{Connection}, read only when not C{close}.
_SLOW_HEADERS = frozenset((
    b"content-length", b"transfer-encoding", b"cookie", b"expect", b"connection",
))


@dataclass(slots=True, eq=False)
class PlainHead:
    """
    A plain request head as L{ArtcastChannel._readHead} reads it (see
    L{_plainHead}), one object for every request whose head has the same
    bytes (L{ArtcastRequest.plainHead}): what is made of the head alone may
    be remembered by it (as L{artcast.server.routes.ArtcastApp.poll} does).

    @ivar method: The method, C{GET} or C{HEAD}.
    @ivar target: The request target.
    @ivar version: The HTTP version, C{HTTP/1.1}.
    @ivar pairs: The header names, in lower case, and values in turn.
    @ivar lineCount: Its number of lines (the request line's among them).
    @ivar logged: What the access log made of it (see
        L{artcast.server.logs.apacheCombinedLogFormatter}), or L{None}.
    @ivar waited: What a long poll of it waited on, as its application
        remembered it (see L{artcast.server.routes.ArtcastApp.poll}), or
        L{None}.
    """

    method: bytes
    target: bytes
    version: bytes
    pairs: tuple[bytes, ...]
    lineCount: int
    logged: Any = None
    waited: Any = None


def _plainHead(data: bytes) -> PlainHead | None:
    """
    Read a whole request head (ending with its empty line) if it is a plain
    one, as L{ArtcastChannel._readHead} takes it: a C{GET} or C{HEAD},
    HTTP/1.1, no body, cookie, C{Expect} or C{Connection: close}, nothing
    unusual in its lines.

    @return: The head, or L{None}.
    """
    lines = data[:-4].split(b"\r\n")
    requestLine = lines[0].split(b" ")
    if len(requestLine) != 3:
        return None
    method, target, version = requestLine
    if method not in _FAST_METHODS or version != b"HTTP/1.1" or not _FAST_TARGET(target):
        return None
    pairs: list[bytes] = []
    connection = None
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        if not colon or not _FAST_NAME(name):
            return None
        value = value.strip(b" \t")
        if _FAST_BAD_VALUE(value):
            return None
        lower = name.lower()
        if lower in _SLOW_HEADERS:
            if lower != b"connection":
                return None
            if connection is None:
                # Twisted's checkPersistence reads the first one.
                connection = value
                if b"close" in [token.lower() for token in value.split(b" ")]:
                    return None
        pairs += (_shared(lower), _shared(value))
    return PlainHead(method, target, version, tuple(pairs), len(lines))


#: Plain heads already read (L{_plainHead}), by their bytes: a long poll's
#: client sends the same head again and again.  At most L{_HEADS_MAX} of
#: them, each at most L{_HEADS_LONGEST} bytes; emptied when full.
_heads: dict[bytes, PlainHead] = {}
_HEADS_MAX = 512
_HEADS_LONGEST = 1024
#: The request factory last asked about, and what L{_factoryKind} said.
_lastFactory: list[Any] = [None, None]


def _factoryKind(factory: Any) -> bool | None:
    """
    What kind of requests a channel's C{requestFactory} makes, for a head
    read in one step: L{None} if Twisted must read their heads (a
    non-queued request factory), L{True} if it is Artcast's own request,
    made by L{ArtcastRequest.madePlain}, else L{False}.
    """
    if factory is _lastFactory[0]:
        return _lastFactory[1]
    kind: bool | None
    if INonQueuedRequestFactory.providedBy(factory):
        kind = None
    else:
        kind = (
            isinstance(factory, type)
            and issubclass(factory, ArtcastRequest)
            and factory.__init__ is ArtcastRequest.__init__
            and factory.gotLength is BoundedRequest.gotLength
        )
    _lastFactory[:] = [factory, kind]
    return kind


def _idleDue(channel: weakref.ref[ArtcastChannel]) -> None:
    """
    An idle timer is due: tell its channel, if it is still there (see
    L{ArtcastChannel.setTimeout}).
    """
    alive = channel()
    if alive is not None:
        alive._idled()


@internals.quietIdleTimeouts
class ArtcastChannel(HTTPChannel):
    """
    An L{HTTPChannel} with a deadline for each request head and body, a way
    to turn a request away without the application seeing it, and no
    pipelined request started while the client is not reading the answers.

    The head deadline starts when the connection is made and, on a
    keep-alive connection, with the first byte of each later request; it
    ends when the last header line is in.  The body deadline starts then and
    ends when the body is in.  Between requests Twisted's idle timeout
    applies, and while a request is being answered (a held long poll, a
    stream) neither does.

    Twisted's channel stops reading from a client whose transport is full
    only between requests: when an answer is finished while the transport
    is full, it goes on to parse and answer every pipelined request it has
    buffered, each answer queued in memory (see L{requestDone}).  The
    private state of L{HTTPChannel} this needs is read through
    L{artcast.server.internals} (L{requestDone}, L{resumeProducing} and
    L{rawDataReceived}), which falls back to Twisted's own behaviour when
    that state is not as expected.

    @ivar site: The L{LimitedSite} (set by L{twisted.web.server.Site}).
    @ivar refusal: Why the connection was refused (see L{ConnectionLimiter}),
        or L{None}: its request is answered with a C{503} and it is closed.
    @ivar closing: The server is shutting down: a request whose head
        arrives now gets a C{503}, and the connection is closed after the
        current answer.
    """

    site: LimitedSite
    refusal: str | None = None
    closing = False
    #: Where the current request is (L{_IDLE}, L{_HEAD}, L{_READING},
    #: L{_DISPATCHED}), and the timer of the head deadline, or once the head
    #: is late, of the abort that follows the close.  Two slots, not five
    #: attributes: CPython's shared table of attribute names (see
    #: L{__init__}) holds at most 30, and Twisted's L{HTTPChannel} sets 28,
    #: with those of a stream's producer.
    __slots__ = ("_phase", "_timer", "_idleCall", "_idleSince")
    _phase: int
    _timer: IDelayedCall | None
    #: The call that checks the idle timeout (see L{setTimeout}), and when
    #: the connection was last seen busy.
    _idleCall: IDelayedCall | None
    _idleSince: float

    def __init__(self) -> None:
        self._phase = _IDLE
        self._timer = None
        self._idleCall = None
        self._idleSince = 0.0
        super().__init__()
        # Twisted sets many of a channel's attributes only when its first
        # request comes (or, the producer's, its first stream): set now, with
        # ours, they cost a shared table of names instead of a dict per
        # channel.
        internals.presetAttributes(self, ("_requestProducer", "_requestProducerStreaming"))

    def connectionMade(self) -> None:
        super().connectionMade()
        self._phase = _IDLE
        self._startHeaderDeadline()

    def _startHeaderDeadline(self) -> None:
        site = self.site
        timeout = site.headerTimeout
        if timeout is not None:
            self._timer = site.headDeadlines.add(timeout, self._deadlinePassed)

    def _stopTimer(self) -> None:
        call, self._timer = self._timer, None
        if call is not None and call.active():
            call.cancel()

    def _deadlinePassed(self) -> None:
        """
        The head or the body did not come in time: say so if some of it came
        (a client that sent nothing, like a browser's speculative connection,
        is just closed), close the connection, and abort it if it will not
        take our last bytes either.
        """
        self._timer = None
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        self.site.rejected[BODY_TIMEOUT if self._phase == _READING else HEADER_TIMEOUT] += 1
        if self._phase in (_HEAD, _READING):
            self.transport.write(_REQUEST_TIMEOUT)
        self.loseConnection()
        self._timer = self.callLater(ABORT_DELAY, self._abort)

    def _abort(self) -> None:
        self._timer = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._phase == _IDLE and data[-4:] == b"\r\n\r\n" and self._readHead(data):
            return
        if data and self._phase < _READING:
            self._phase = _HEAD
            if self._timer is None:
                # A later request on a kept-alive connection: its deadline
                # starts now, but is made only if its head is not all in
                # this read (nearly always it is: a long poll's next
                # request is one small segment).
                super().dataReceived(data)
                if self._phase == _HEAD and self._timer is None:
                    self._startHeaderDeadline()
                return
        super().dataReceived(data)

    def _readHead(self, data: bytes) -> bool:
        """
        Read a whole request head received in one piece, when it is a plain
        one (C{GET} or C{HEAD}, HTTP/1.1, no body, cookie, C{Expect} or
        C{Connection: close}, nothing unusual in its lines) and the channel
        waits for it as Twisted leaves it between requests
        (L{internals.headFits}): in one step, leaving the channel and the
        request as Twisted's line-by-line reading would, instead of a
        method call or two per line.  Most requests of a busy server are
        long polls, a head of a few lines in one segment.

        @return: Whether it was read; if not, nothing was done, and Twisted
            reads it.
        """
        if (
            len(data) > _FAST_HEAD_MAX
            or not internals.headFits(self)
            or self.refusal is not None
            or self.closing
        ):
            return False
        head = _heads.get(data)
        if head is None:
            head = _plainHead(data)
            if head is None:
                return False
            if len(data) <= _HEADS_LONGEST:
                if len(_heads) >= _HEADS_MAX:
                    _heads.clear()
                _heads[data] = head
        factory = self.requestFactory
        if (
            head.lineCount > self.maxHeaders
            or len(data) > self.totalHeadersSize
            or _factoryKind(factory) is None
        ):
            return False
        # (No resetTimeout, as Twisted's dataReceived does: the idle timeout
        # is suspended below, and starts again when the request is done.)
        internals.receiving(self, True)
        try:
            if self._timer is not None:
                self._stopTimer()
            self._phase = _DISPATCHED
            request = None
            # (A site's getContentFile would make the content.)
            lean = not hasattr(self.site, "getContentFile")
            if lean and _factoryKind(factory):
                request = factory.madePlain(self)
            if request is None:
                request = factory(self, len(self.requests))
            self.requests.append(request)
            if lean and type(request).gotLength is BoundedRequest.gotLength:
                # Artcast's request, which keeps what is empty and the
                # headers lean from the start (see ArtcastRequest.hold).
                internals.headRead(self)
                request.plainHead = head
                request.receivedPlain(head.method, head.target, head.version, head.pairs)
            else:
                pairs = head.pairs
                headers = request.requestHeaders
                for i in range(0, len(pairs), 2):
                    headers.addRawHeader(pairs[i], pairs[i + 1])
                request.gotLength(0)
                internals.headRead(self)
                request.requestReceived(head.method, head.target, head.version)
        finally:
            internals.receiving(self, False)
        return True

    def allHeadersReceived(self) -> None:
        self._stopTimer()
        self._phase = _READING
        super().allHeadersReceived()
        if self.refusalReason() is not None:
            # Turned away: answered with a 503 now, and closed, without
            # waiting for a body (Twisted goes on to dispatch the request
            # when its length is 0).
            self.length = 0
        elif self.length != 0 and self.site.bodyTimeout is not None:
            self._timer = self.callLater(self.site.bodyTimeout, self._deadlinePassed)

    def refusalReason(self) -> str | None:
        """
        @return: Why this connection's requests are turned away, or L{None}.
        """
        if self.refusal is not None:
            return self.refusal
        if self.closing:
            return SHUTTING_DOWN
        return None

    def allContentReceived(self) -> None:
        self._stopTimer()
        if self.refusalReason() is not None:
            # Answered with a 503 by the site; close after it.
            self.persistent = False
        self._phase = _DISPATCHED
        super().allContentReceived()

    def requestDone(self, request: IRequest) -> None:
        """
        An answer is finished.  If the transport is full (it paused the
        channel: the client is not reading), the next pipelined request is
        not started, and nothing more is read from the client, until the
        transport has sent what it holds (L{resumeProducing}); Twisted
        would answer every request it has buffered at once, queueing every
        answer.
        """
        if self.closing:
            self.persistent = False
        if (
            self.persistent
            and internals.holdsPipeline(self)
            and not getattr(self.transport, "disconnecting", False)
            and self.requests
            and request is self.requests[0]
        ):
            self._phase = _HELD
            internals.pauseReading(self)
            return
        self._phase = _IDLE
        super().requestDone(request)

    def resumeProducing(self) -> None:
        """
        The transport has sent what it held: go on with a held connection's
        next request (see L{requestDone}).
        """
        super().resumeProducing()
        # The producer of an answer being written may have finished it (and
        # filled the transport again) just now.
        if (
            self._phase == _HELD
            and self.requests
            and not internals.transportFull(self)
        ):
            self._phase = _IDLE
            super().requestDone(self.requests[0])

    def rawDataReceived(self, data: bytes) -> None:
        """
        Twisted buffers what a client sends while a request is answered, and
        stops reading past 16 KiB, but not while the transport is full: then
        a client that does not read could fill the buffer without end.
        Stop reading then too (reading resumes when the request is done).
        """
        super().rawDataReceived(data)
        if internals.readingTooFar(self):
            internals.pauseReading(self)

    def shutDown(self, retryAfter: Callable[[], int]) -> None:
        """
        The server is shutting down: answer a request held waiting (a long
        poll that has not started its answer) with a C{503} and a
        C{Retry-After} from C{retryAfter}; close an idle connection now; let
        an answer being written (a stream, whose owner closes it) finish and
        close after it; and let a request whose head is on its way arrive,
        to answer it with a C{503} (the head deadline bounds the wait).
        """
        self.closing = True
        transport = self.transport
        if transport is None or getattr(transport, "disconnecting", False):
            return
        if self._phase == _DISPATCHED:
            self.persistent = False
            request = self.requests[0] if self.requests else None
            if (
                request is not None
                and not request.startedWriting
                and not request.finished
            ):
                body = unavailable(
                    request, retryAfter(), SHUTTING_DOWN, self.site.allowOrigin
                )
                request.write(body)
                request.finish()
        elif self._phase == _HELD:
            # Closed once the client has read the answer.
            self.persistent = False
        elif self._phase == _IDLE:
            self._stopTimer()
            self.loseConnection()

    def setTimeout(self, period: float | None) -> float | None:
        """
        Twisted's idle timeout (L{TimeoutMixin}), kept with one timer per
        connection (an entry of the site's queue of them, not one of the
        reactor's) that is not cancelled when a request comes and made
        again when it is answered, as Twisted's is (two of the reactor's
        timer operations per request): suspending it (C{None}) only says so,
        and the timer, when it is due, looks at when the connection was last
        idle and waits again for what is left.  The timer holds the channel
        weakly: a channel taken from its connection without being told (as
        a WebSocket upgrade takes it) is not kept by it.

        @return: The period before.
        """
        before = self.timeOut
        self.timeOut = period
        if period is not None:
            call = self._idleCall
            if call is None:
                call = self._idleCall = self._idleTimer(period)
                self._idleSince = call.seconds()
            else:
                now = self._idleSince = call.seconds()
                # (When due: it is never put later.)
                if call.time > now + period:
                    # A shorter period than the one waited on.
                    call.cancel()
                    self._idleCall = self._idleCallLater(period)
        return before

    def _idleTimer(self, period: float) -> Any:
        """
        A timer of a whole idle timeout: an entry of the site's queue of
        them (L{LimitedSite.idleDeadlines}), else a reactor's timer; it
        holds the channel weakly.
        """
        deadlines = getattr(self.site, "idleDeadlines", None)
        if deadlines is None:
            return self._idleCallLater(period)
        return deadlines.add(period, _idleDue, weakref.ref(self))

    def _idleCallLater(self, delay: float) -> IDelayedCall:
        """
        A reactor's timer of the idle timeout, due in C{delay} seconds,
        holding the channel weakly.
        """
        return self.callLater(delay, _idleDue, weakref.ref(self))

    def resetTimeout(self) -> None:
        """
        The connection is busy: its idle time starts again (if the timeout
        is not suspended or past).
        """
        call = self._idleCall
        if call is not None and self.timeOut is not None:
            self._idleSince = call.seconds()

    def _idled(self) -> None:
        call = self._idleCall
        self._idleCall = None
        period = self.timeOut
        if call is None or period is None:
            # Suspended (a request is being answered): made again after it.
            return
        left = self._idleSince + period - call.seconds()
        if left > 0:
            # (Not in the site's queue, whose entries all wait a whole
            # period.)
            self._idleCall = self._idleCallLater(left)
        else:
            self.timeoutConnection()

    def releaseIdleTimer(self) -> None:
        """
        A request is held (a long poll, a stream), so the idle timeout,
        suspended, will not be due for a while: let go of its timer now
        rather than keep it in memory until due (made again, as Twisted
        makes it, when the request is answered).
        """
        if self.timeOut is None:
            call, self._idleCall = self._idleCall, None
            # (Not a float of its own per waiting connection.)
            self._idleSince = 0.0
            if call is not None and call.active():
                call.cancel()

    def stopIdleTimer(self) -> None:
        """
        Cancel the idle timer, for good: the connection is lost, or taken
        over by another protocol (a WebSocket).
        """
        self.timeOut = None
        self.releaseIdleTimer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopTimer()
        self._phase = _GONE
        super().connectionLost(reason)
        self.stopIdleTimer()


class LimitedSite(ArtcastSite):
    """
    The access-logging site whose channels are L{ArtcastChannel}s.

    @ivar headerTimeout: Seconds a connection has to send a request head.
    @ivar bodyTimeout: Seconds it has to send a request body after its head.
    @ivar retryAfter: Gives the C{Retry-After} of each C{503}.
    @ivar allowOrigin: The C{Access-Control-Allow-Origin} of the C{503}s.
    @ivar rejected: Refusals by reason.
    @ivar closing: Set at shutdown: every new request is refused.
    """

    protocol = ArtcastChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Any,
        accessLog: str | None = None,
        accessLogSize: int = DEFAULT_LOG_SIZE,
        accessLogCount: int = DEFAULT_LOG_COUNT,
        reactor: IReactorTime | None = None,
        *,
        headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT,
        bodyTimeout: float | None = DEFAULT_BODY_TIMEOUT,
        idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
        retryAfter: RetrySpread | None = None,
        allowOrigin: str | bytes | None = "*",
        stderr: TextIO | None = None,
        **kw: Any,
    ) -> None:
        """
        @param resource: The root resource.
        @param accessLog: See L{ArtcastSite}.
        @param accessLogSize: See L{ArtcastSite}.
        @param accessLogCount: See L{ArtcastSite}.
        @param reactor: The reactor (or a clock, in tests): the header
            deadline and idle timeout run on it.
        @param headerTimeout: Seconds to send a whole request head, or
            L{None} for no deadline.
        @param bodyTimeout: Seconds to send a whole request body once its
            head is in, or L{None} for no deadline.
        @param idleTimeout: Seconds an idle keep-alive connection is kept, or
            L{None} to keep it.
        @param retryAfter: The C{Retry-After} values; spread over 1 to 5
            seconds by default.
        @param allowOrigin: The C{Access-Control-Allow-Origin} of the
            C{503}s, or L{None} for none.
        @param stderr: See L{ArtcastSite}.
        @param kw: Passed on to L{ArtcastSite}.
        """
        super().__init__(
            resource,
            accessLog,
            accessLogSize,
            accessLogCount,
            reactor=reactor,
            stderr=stderr,
            timeout=idleTimeout,
            **kw,
        )
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.retryAfter = retryAfter if retryAfter is not None else RetrySpread()
        if isinstance(allowOrigin, str):
            allowOrigin = allowOrigin.encode("latin-1")
        self.allowOrigin = allowOrigin
        self.rejected: Counter[str] = Counter()
        self.closing = False
        self.headDeadlines = HeadDeadlines(self.reactor)
        #: The idle timeouts of its connections (see
        #: L{ArtcastChannel.setTimeout}).
        self.idleDeadlines = HeadDeadlines(self.reactor)

    def refusalReason(self, request: IRequest) -> str | None:
        """
        @return: Why C{request} is turned away (its connection was refused,
            the server is shutting down), or L{None}.
        """
        channel = request.channel  # type: ignore[attr-defined]
        reason = channel.refusalReason() if isinstance(channel, ArtcastChannel) else None
        if reason is None and self.closing:
            reason = SHUTTING_DOWN
        return reason

    def getResourceFor(self, request: IRequest) -> Any:
        """
        The application's resource, or for a refused connection (or any new
        request while shutting down) the C{503}.
        """
        reason = self.refusalReason(request)
        if reason is not None:
            return _Unavailable(self, reason)
        # Site.getResourceFor, without copy.copy for a list.
        request.site = self  # type: ignore[attr-defined]
        request.sitepath = list(request.prepath)  # type: ignore[attr-defined]
        return getChildForRequest(self.resource, request)


class TrackedConnection(ProtocolWrapper):
    """
    One client connection, as L{ConnectionLimiter} counts it.

    @ivar peer: The address it is counted under (see L{addressHost}).
    @ivar admitted: Counted as a client (else it is being refused).
    """

    factory: ConnectionLimiter
    peer: str | None = None
    admitted = False
    #: Aborted (L{abortConnection}): what is written now is dropped.
    cut = False
    #: What it was last charged against the server's output budget: its
    #: queued output as measured after its last write (see
    #: L{ConnectionLimiter.chargeOutput}).
    outputCharge = 0
    #: Carrying a stream (L{sendStreamAtOnce}): each write is sent at once.
    streaming = False
    #: Reading from the client is paused (L{pauseProducing}).
    readingPaused = False
    _host: IAddress | None = None
    _peer: IAddress | None = None

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        # Every attribute a connection gets later, set now in one order, so
        # that their names go in the class's shared table of names with the
        # first connection instead of a dict of its own per connection (see
        # L{artcast.server.internals.presetAttributes}).
        self.peer = None
        self.connected = 0
        self.transport = None
        self.admitted = False
        self._host = None
        self._peer = None
        self.outputCharge = 0
        self.cut = False
        self.streaming = False
        self.readingPaused = False
        self.disconnecting = 0
        # What makeConnection declares (the transport's interfaces).
        directlyProvides(self)

    def makeConnection(self, transport: Any) -> None:
        configureSocket(transport, self.factory.tcpKeepAlive)
        internals.presetTransport(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        if self.cut:
            return
        if self.streaming:
            self.sendNow(data)
            return
        transport: Any = self.transport
        transport.write(data)
        self._checkOutput()

    def writeSequence(self, data: Any) -> None:
        if self.cut:
            return
        if self.streaming:
            self.write(b"".join(data))
            return
        transport: Any = self.transport
        transport.writeSequence(data)
        self._checkOutput()

    def sendNow(self, data: bytes) -> None:
        """
        Write C{data}, sending it at once when the socket takes it and
        nothing written before waits (L{internals.sendNow}); what it does
        not take goes to the transport's buffer after it, charged as by
        L{write}.
        """
        if self.cut:
            return
        transport: Any = self.transport
        rest = internals.sendNow(transport, data)
        if rest:
            # Not tried again: the socket just refused it.
            transport.write(rest)
            self._checkOutput()

    def _checkOutput(self) -> None:
        """
        Abort the connection, counted as C{slow-reader}, when what it has
        written and not yet sent passes the factory's C{maxOutputBuffer};
        else charge it against the factory's budget for all connections.
        """
        factory = self.factory
        bound = factory.maxOutputBuffer
        if bound is None and factory.maxOutputTotal is None:
            return
        queued = internals.queuedOutput(self.transport)
        if queued is None:
            return
        if bound is not None and queued > bound:
            factory.rejected[SLOW_READER] += 1
            factory._log.info(
                "Closing a connection from {peer} that does not read its answers "
                "({queued} bytes waiting)",
                peer=self.peer, queued=queued,
            )
            self.abortConnection()
            return
        factory.chargeOutput(self, queued)

    def resumeProducing(self) -> None:
        """
        Read from the client again, if reading was paused: the HTTP channel
        asks for this after every answer, and the transport would ask the
        reactor to watch a socket it already watches.  (Only what the
        connection wraps pauses the transport, through L{pauseProducing}:
        nothing else holds it.)
        """
        if self.readingPaused:
            self.readingPaused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        """
        Stop reading from the client (see L{resumeProducing}).
        """
        self.readingPaused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """
        The connection's local address, asked of the socket once: Twisted's
        L{Request} asks for it with every request (a C{getsockname} each).
        """
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def getPeer(self) -> IAddress:
        """
        The client's address, made once: Twisted's L{Request} asks for it
        with every request (a new address object each).
        """
        peer = self._peer
        if peer is None:
            peer = self._peer = super().getPeer()
        return peer

    def shutDown(self, retryAfter: Callable[[], int]) -> None:
        """
        Tell the HTTP channel the server is shutting down (see
        L{ArtcastChannel.shutDown}).  A connection upgraded to something
        else (a WebSocket) is left to its owner's shutdown hook.
        """
        channel = self.wrappedProtocol
        if isinstance(channel, ArtcastChannel):
            channel.shutDown(retryAfter)

    def abortConnection(self) -> None:
        """
        Abort the connection, dropping what it holds written and not yet
        sent now (see L{artcast.server.internals.dropQueuedOutput}) and
        whatever is written to it from now on, and giving back its charge.
        """
        self.cut = True
        self.disconnecting = 1
        transport: Any = self.transport
        transport.abortConnection()
        internals.dropQueuedOutput(transport)
        if self.outputCharge:
            self.factory.dischargeOutput(self)


class ConnectionLimiter(WrappingFactory):
    """
    Counts the site's connections and refuses those past the limits.

    A connection past C{maxClients} (or past C{maxPerAddress} for its
    address) is still accepted, so that its request can be answered with a
    C{503} and a C{Retry-After} (L{ArtcastChannel}); it does not count as a
    client, and at most C{maxRefusing} such connections are open at once
    (past that one is closed as soon as accepted), so refusals cannot eat
    every file descriptor either.

    The output of all connections together is bounded as well: see
    L{chargeOutput}.

    @ivar admitted: Connections counted as clients.
    @ivar refusing: Connections open only to be told C{503}.
    @ivar outputCharged: The sum of the connections' C{outputCharge}: at
        least the bytes they hold written and not yet sent.
    @ivar outputWalks: How many times every charged connection's queued
        output was measured again (for tests and benchmarks).
    """

    protocol = TrackedConnection
    _log = NamedLogger(namespace="artcast.connections.ConnectionLimiter")

    def __init__(
        self,
        site: LimitedSite,
        maxClients: int = DEFAULT_MAX_CLIENTS,
        maxPerAddress: int | None = None,
        tcpKeepAlive: float | None = DEFAULT_TCP_KEEPALIVE,
        maxRefusing: int | None = None,
        maxOutputBuffer: int | None = DEFAULT_MAX_OUTPUT_BUFFER,
        maxOutputTotal: int | None = DEFAULT_MAX_OUTPUT_TOTAL,
    ) -> None:
        """
        @param site: The site whose connections these are.
        @param maxClients: Open client connections at most.
        @param maxPerAddress: Open connections per client address at most,
            or L{None} for no such cap.
        @param tcpKeepAlive: Seconds of silence before TCP keepalive probes a
            connection, or L{None} for no keepalive.
        @param maxRefusing: Connections being refused at once at most;
            C{maxClients} by default.
        @param maxOutputBuffer: Bytes a connection may have written and not
            yet sent; past it the connection is aborted (C{slow-reader}).
            L{None} for no bound.
        @param maxOutputTotal: Bytes all connections together may have
            written and not yet sent; past it those holding the most are
            aborted (C{output-full}).  L{None} for no bound.
        """
        super().__init__(site)
        self.site = site
        self.maxClients = maxClients
        self.maxPerAddress = maxPerAddress
        self.tcpKeepAlive = tcpKeepAlive
        self.maxRefusing = maxClients if maxRefusing is None else maxRefusing
        self.maxOutputBuffer = maxOutputBuffer
        self.maxOutputTotal = maxOutputTotal
        self.outputCharged = 0
        self.outputWalks = 0
        self._charged: set[TrackedConnection] = set()
        self._measureAbove = maxOutputTotal
        self._outputLog = RateLimitedLog(
            self._log, site.reactor, what="closings for the output budget"
        )
        self.admitted = 0
        self.refusing = 0
        self._perAddress: dict[str, int] = {}
        self._whenIdle: list[Deferred[None]] = []
        self._stopPending = False

    @property
    def rejected(self) -> Counter[str]:
        """
        Refusals by reason (the site's counter).
        """
        return self.site.rejected

    def fileLimitWanted(self) -> int:
        """
        The open files this limiter may need: every client, every refusal
        being answered, and some headroom.
        """
        return self.maxClients + self.maxRefusing + FILE_HEADROOM

    def _refusal(self, peer: str | None) -> str | None:
        if self.site.closing:
            return SHUTTING_DOWN
        if self.admitted >= self.maxClients:
            return MAX_CLIENTS
        if (
            self.maxPerAddress is not None
            and peer is not None
            and self._perAddress.get(peer, 0) >= self.maxPerAddress
        ):
            return PER_ADDRESS
        return None

    def buildProtocol(self, addr: IAddress | None) -> TrackedConnection | None:  # type: ignore[override]
        peer = addressHost(addr)
        reason = self._refusal(peer)
        if reason is not None and self.refusing >= self.maxRefusing:
            # Too many being refused already: close this one at once.
            self.rejected[reason] += 1
            return None
        connection = super().buildProtocol(addr)
        connection.peer = peer
        return connection

    def registerProtocol(self, p: TrackedConnection) -> None:  # type: ignore[override]
        """
        Count a connection that has just been made, as a client or as one to
        refuse.
        """
        super().registerProtocol(p)
        reason = self._refusal(p.peer)
        if reason is None:
            p.admitted = True
            self.admitted += 1
            if self.maxPerAddress is not None and p.peer is not None:
                self._perAddress[p.peer] = self._perAddress.get(p.peer, 0) + 1
        else:
            self.refusing += 1
            channel = p.wrappedProtocol
            if isinstance(channel, ArtcastChannel):
                channel.refusal = reason

    def unregisterProtocol(self, p: TrackedConnection) -> None:  # type: ignore[override]
        """
        A connection is gone: give its place back at once.
        """
        super().unregisterProtocol(p)
        self.dischargeOutput(p)
        if p.admitted:
            p.admitted = False
            self.admitted -= 1
            if self.maxPerAddress is not None and p.peer is not None:
                left = self._perAddress.get(p.peer, 0) - 1
                if left > 0:
                    self._perAddress[p.peer] = left
                else:
                    self._perAddress.pop(p.peer, None)
        else:
            self.refusing -= 1
        if not self.protocols:
            waiting, self._whenIdle = self._whenIdle, []
            for d in waiting:
                d.callback(None)
            if self._stopPending:
                self._stopPending = False
                super().doStop()

    def chargeOutput(self, connection: TrackedConnection, queued: int) -> None:
        """
        Charge a connection that has just written with what it now holds
        written and not yet sent, and when the charges of all connections
        pass C{maxOutputTotal}, measure and enforce it.

        A charge is what the connection held after its last write; its
        transport sends without telling us, so a charge is at least what
        the connection holds, often more (a client that reads has emptied
        its queue since).  So when the sum passes the budget, every charged
        connection (those in C{_charged}, the ones holding something at
        their last write) is measured again (L{_measureOutput}), and only
        if the real total is still over the budget are the connections
        holding the most aborted, as C{output-full}, until it is under.

        The walk is amortised over the bytes written.  After it the sum is
        the real total, C{R}, at most the budget, and it is next made when
        the sum passes M{max(budget, R + budget / 16)}: a charge grows the
        sum by at most the bytes just written (it was at least what the
        connection held before the write), so between two walks at least a
        sixteenth of the budget (16 MiB by default) has been written, and a
        walk measures at most one connection per client.  Without the
        sixteenth, a load whose real total stayed just under the budget
        (say, many clients that do not read, each under its own bound)
        would make every later write, by anyone, walk every connection.
        The price: the real total can pass the budget by a sixteenth of it
        (and one write) before anything is aborted.

        @param queued: The connection's queued output, just measured.
        """
        if self.maxOutputTotal is None or connection not in self.protocols:
            # Gone already (a write while it is being closed): nothing to
            # give back later.
            return
        self.outputCharged += queued - connection.outputCharge
        connection.outputCharge = queued
        if queued:
            self._charged.add(connection)
        else:
            self._charged.discard(connection)
        measureAbove = self._measureAbove
        if measureAbove is not None and self.outputCharged > measureAbove:
            self._measureOutput()

    def dischargeOutput(self, connection: TrackedConnection) -> None:
        """
        Give back a connection's charge: it is gone, or aborted (what it
        holds is dropped).
        """
        self.outputCharged -= connection.outputCharge
        connection.outputCharge = 0
        self._charged.discard(connection)

    def _measureOutput(self) -> None:
        """
        Measure every charged connection's queued output again; if the real
        total is over C{maxOutputTotal}, abort the connections holding the
        most until it is under (see L{chargeOutput}).
        """
        budget = self.maxOutputTotal
        assert budget is not None
        self.outputWalks += 1
        holders: list[tuple[int, TrackedConnection]] = []
        total = 0
        for connection in list(self._charged):
            queued = internals.queuedOutput(connection.transport) or 0
            connection.outputCharge = queued
            if queued:
                holders.append((queued, connection))
                total += queued
            else:
                self._charged.discard(connection)
        self.outputCharged = total
        if total > budget:
            holders.sort(key=lambda holder: holder[0], reverse=True)
            aborted = 0
            freed = 0
            for queued, connection in holders:
                if self.outputCharged <= budget:
                    break
                # Given back before the abort, which could fail.
                self.dischargeOutput(connection)
                aborted += 1
                freed += queued
                try:
                    connection.abortConnection()
                except Exception:
                    self._log.failure("Cannot abort a connection")
            self.rejected[OUTPUT_FULL] += aborted
            self._outputLog.warn(
                "Closing {count} connections holding the most output ({freed} "
                "bytes): all connections held {total} bytes not yet sent, "
                "more than --max-output-total {budget}",
                count=aborted, freed=freed, total=total, budget=budget,
            )
        self._measureAbove = max(
            budget, self.outputCharged + budget // OUTPUT_SLACK_DIVISOR
        )

    @property
    def addresses(self) -> int:
        """
        How many addresses have connections counted (0 without a per-address
        cap).
        """
        return len(self._perAddress)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires when no connection is open (at
            once if none is).
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenIdle.append(d)
        return d

    def doStop(self) -> None:
        """
        The port stopped listening.  The site is stopped (its access log
        closed) only when the last connection has gone, so that the answers
        written while shutting down are logged.
        """
        if self.protocols:
            self._stopPending = True
        else:
            super().doStop()

    def shutDown(self, retryAfter: Callable[[], int] | None = None) -> None:
        """
        Start shutting down: refuse every new request, answer every held
        request with a C{503}, close idle connections (see
        L{ArtcastChannel.shutDown}).
        """
        self.site.closing = True
        spread = retryAfter if retryAfter is not None else self.site.retryAfter
        for connection in list(self.protocols):
            if connection.wrappedProtocol is None:
                continue
            try:
                connection.shutDown(spread)
            except Exception:
                self._log.failure("Cannot shut down a connection")

    def abortAll(self) -> int:
        """
        Abort every connection still open.

        @return: How many there were.
        """
        connections = list(self.protocols)
        for connection in connections:
            try:
                connection.abortConnection()
            except Exception:
                self._log.failure("Cannot abort a connection")
        return len(connections)

    def statistics(self) -> dict[str, Any]:
        """
        The figures C{/stats} shows: open client connections, connections
        being refused, and refusals by reason.
        """
        return {
            "connections": self.admitted,
            "connections_refusing": self.refusing,
            "rejected": dict(self.rejected),
        }
