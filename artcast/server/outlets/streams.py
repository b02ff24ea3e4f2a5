# -*- test-case-name: tests.test_streams -*-
"""
Streams: the datums of a key (or pattern) over one lasting connection.

C{GET /artcasts/<key>} can stream instead of answering once:

  - Server-Sent Events (C{Accept: text/event-stream}), for a browser's
    C{EventSource};
  - newline-delimited JSON (C{Accept: application/x-ndjson}), for devices
    and programs that keep one connection open;
  - WebSocket (an C{Upgrade: websocket} request), through Autobahn.

Each stream carries the same messages, the I{envelope}
C{{"key": ..., "id": ..., "value": ...}} of each datum; a gap marker
C{{"gap": true, "since": <id>}} says that datums after the id may have been
missed: on resume, those after the id the client resumed from were no longer
held; before any datum, the server declared datums of its source (and boot)
unrecoverable since the datum C{<id>} of that source the client has
(L{Datum.lost}; they may have been of other keys).  In SSE a datum is an
unnamed event (C{onmessage}) whose C{id:} is the datum id and whose C{data:} is the
envelope; the gap marker is an event named C{gap}.

Where a stream starts (L{startOf}): with C{?since=<id>} (or, for SSE, a
C{Last-Event-ID} header, which wins because C{EventSource} sends it on its
reconnects while keeping the URL of its first request) every held datum
after that id, then the live ones; without it the current value (for a
pattern, the current value of each matching key), then the live ones.  The
subscription is made before the history is read, and no datum is sent twice
or out of order across the switch from history to live.

Flow control: each stream is an L{IPushProducer} registered on its request,
so Twisted says when the socket's buffer is full.  While paused a stream
queues datums instead of writing them; when the live datums queued pass
C{maxQueued} bytes the client is not reading, and its connection is aborted
and counted in L{StreamManager.streamsDropped}.  A WebSocket client's pings
obey the same bound: while paused, no pong is written (one is owed for the
latest ping) and each ping counts against C{maxQueued}.  A slow reader costs
at most the transport's own buffer plus C{maxQueued}.

What Autobahn logs about a connection (a malformed handshake, a bad frame),
which any client can cause at will, is logged at a bounded rate
(L{_BoundedLog}); refused handshakes are counted as C{websocket-handshake} in
the site's C{rejected}.

A comment (SSE), an empty line (NDJSON) or a ping (WebSocket) is sent to
every stream each C{heartbeat} seconds, so that proxies do not cut idle
connections and dead ones are found.

At shutdown (through an L{artcast.server.shutdown.Closing}) each stream says
why it ends (L{shutdownMessage}): an NDJSON stream's last line is
C{{"shutdown":true,"retryAfter":N}}; an SSE stream ends with an event
C{shutdown} whose C{data:} is C{{"retryAfter":N}}, then a C{retry:} field
saying when to come back; a WebSocket is closed with code 1001 ("going
away", reason "shutting down").  A relay following the stream moves to its
next upstream at once (L{artcast.server.feeds.upstream}); clients ignore
lines and events they do not know.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from typing import Any, Callable, Protocol, Sequence, cast
from urllib.parse import urlsplit

import attr
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from artcast.server import internals
from artcast.server.connections import sendStreamAtOnce
from artcast.server.defaults import DEFAULT_STREAM_HEARTBEAT
from artcast.server import negotiate
from artcast.server.store import Datum, KeyStore
from artcast.server.logs import RateLimitedLog
from artcast.server.stats import countRejected
from artcast.wire import DatumId, encodeJSON

__all__ = [
    "CLIENT_FRAMES_BURST",
    "CLIENT_FRAMES_PER_SECOND",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_RETRY",
    "NDJSON",
    "NDJSON_MODE",
    "SSE",
    "STREAM_TYPES",
    "WEBSOCKET",
    "WEBSOCKET_FLOOD",
    "WEBSOCKET_HANDSHAKE",
    "BadStart",
    "Start",
    "StreamManager",
    "StreamProtocol",
    "currentValues",
    "envelope",
    "gapMessage",
    "isWebSocket",
    "originPattern",
    "requestedSince",
    "shutdownMessage",
    "startOf",
]

#: The media type of a newline-delimited JSON stream.
NDJSON = "application/x-ndjson"

#: The media types answered with a stream.
STREAM_TYPES = (negotiate.EVENT_STREAM, NDJSON)

#: Seconds between heartbeats (a relay gives up an upstream silent for
#: three of them: L{artcast.server.defaults.DEFAULT_UPSTREAM_SILENCE}).
DEFAULT_HEARTBEAT = DEFAULT_STREAM_HEARTBEAT

#: Bytes of live datums a stream may queue for a client that does not read.
DEFAULT_MAX_QUEUED = 1 << 20

#: What an SSE client waits before it reconnects, in milliseconds.
DEFAULT_RETRY = 2000

#: What a queued datum is counted as beyond its own bytes.
_ITEM_OVERHEAD = 64

#: The longest frame a WebSocket client may send (what it sends is ignored).
_MAX_CLIENT_FRAME = 4096

#: The C{rejected} reason of a refused WebSocket opening handshake.
WEBSOCKET_HANDSHAKE = "websocket-handshake"

#: The frames (pings, pongs, message frames) a WebSocket stream's client may
#: send: a burst, then so many a second.  A stream's client has nothing to
#: say; each frame costs the server Autobahn's parsing, so a client past
#: this is closed and counted in C{rejected} as L{WEBSOCKET_FLOOD}.
CLIENT_FRAMES_BURST = 200
CLIENT_FRAMES_PER_SECOND = 10.0
WEBSOCKET_FLOOD = "websocket-flood"

#: The namespace of the WebSocket protocols' log lines.
_WEBSOCKET_LOG = "artcast.streams.websocket"

SSE = "sse"
NDJSON_MODE = "ndjson"
WEBSOCKET = "websocket"

log = Logger(namespace="artcast.streams")


class BadStart(ValueError):
    """
    The place a stream is to start from is not an Artcast id; the message
    says why and is sent as the body of a C{400}.
    """


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Start:
    """
    Where a stream starts.

    @ivar datums: what to send before the live datums, oldest first.
    @ivar gap: whether datums after C{since} may have been missed: no
        longer held, or declared unrecoverable (L{KeyStore.since}).  A
        stream queues a C{Start} of only C{gap} and C{since} as the gap
        marker it sends before a live datum that follows such a loss.
    @ivar since: the id the client resumed from, if any.
    @ivar skipThrough: ignore live datums of this id or earlier
        (L{DatumId.covers}): the client already has them.
    @ivar origin: when nothing is sent before the live datums, the datum the
        client has, if known (L{artcast.server.store.Found.origin}).
    @ivar unlessNext: the gap marker is sent before the first live datum
        unless that datum is the very next of C{skipThrough}'s source
        (L{artcast.server.store.Found.unlessNext}).
    """

    datums: Sequence[Datum] = ()
    gap: bool = False
    since: str | None = None
    skipThrough: DatumId | None = None
    origin: Datum | None = None
    unlessNext: bool = False


def currentValues(store: KeyStore, pattern: str) -> list[Datum]:
    """
    The current value of a key, or of each key a pattern matches, in the
    order they arrived (no history is looked at).
    """
    return store.current(pattern)


def startOf(store: KeyStore, pattern: str, since: str | None) -> Start:
    """
    What a stream sends before the live datums.

    @param since: the id of the last datum the client has, or L{None} to
        start from the current value.
    @raise ValueError: if C{since} is not an id.
    """
    if since is None:
        return Start(currentValues(store, pattern))
    found = store.since(pattern, since)
    if found.datum is None:
        return Start((), found.gap, since, found.skipThrough, found.origin,
                     found.unlessNext)
    return Start(store.following(pattern, found.datum), found.gap, since)


def requestedSince(request: IRequest) -> str | None:
    """
    The id a stream request resumes from: its C{Last-Event-ID} header, else
    its C{since} parameter; L{None} for neither, an empty one or C{latest}.

    @raise BadStart: if it is not an Artcast id.
    """
    header = request.getHeader(b"Last-Event-ID")
    if header:
        text = header.decode("latin-1").strip()
    else:
        values = request.args.get(b"since")
        if not values:
            return None
        try:
            text = values[-1].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadStart("The since parameter is not UTF-8.")
    if not text or text == "latest":
        return None
    try:
        DatumId.parse(text)
    except ValueError:
        raise BadStart(f"{text[:100]!r} is not an Artcast id.")
    return text


def isWebSocket(request: IRequest) -> bool:
    """
    Does the request ask to be upgraded to a WebSocket?
    """
    upgrade = request.getHeader(b"Upgrade")
    if not upgrade:
        return False
    return b"websocket" in (token.strip().lower() for token in upgrade.split(b","))


def originPattern(origin: str) -> str:
    """
    The Autobahn origin pattern for an C{Access-Control-Allow-Origin}
    value: Autobahn compares patterns with C{scheme://host:port}, so a
    default port is made explicit.
    """
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    try:
        explicit = parts.port
    except ValueError:
        return origin
    if not parts.scheme or not parts.hostname:
        return origin
    port = explicit or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{parts.hostname}:{port}"


def envelope(datum: Datum) -> bytes:
    """
    A datum as a stream sends it: C{{"key":...,"id":...,"value":...}}, one
    line of compact JSON.
    """
    return b'{"key":%s,"id":"%s","value":%s}' % (
        encodeJSON(datum.key),
        datum.id.encode("ascii"),
        datum.json,
    )


def gapMessage(since: str | None) -> bytes:
    """
    The marker saying that datums after C{since} may have been missed: no
    longer held, or declared unrecoverable by the server.
    """
    return encodeJSON({"gap": True, "since": since})


def shutdownMessage(retryAfter: int | None) -> bytes:
    """
    The last message of an NDJSON stream when the server shuts down:
    C{{"shutdown":true,"retryAfter":N}}, N being in how many seconds to come
    back (left out when not known).
    """
    if retryAfter is None:
        return b'{"shutdown":true}'
    return b'{"shutdown":true,"retryAfter":%d}' % (retryAfter,)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _Format:
    """
    How an HTTP stream writes its messages.
    """

    mode: str
    contentType: bytes
    preamble: bytes
    heartbeat: bytes
    datumTemplate: bytes
    gapTemplate: bytes

    def datum(self, datum: Datum, body: bytes) -> bytes:
        return self.datumTemplate % {b"id": datum.id.encode("ascii"), b"body": body}

    def gap(self, since: str | None) -> bytes:
        return self.gapTemplate % {b"body": gapMessage(since)}

    def farewell(self, retryAfter: int | None) -> bytes:
        """
        What is written before the server ends a stream (it is shutting
        down): for NDJSON a last line L{shutdownMessage}; for SSE an event
        C{shutdown}, then when to reconnect.
        """
        if self.mode == SSE:
            if retryAfter is None:
                return b"event: shutdown\ndata: {}\n\n"
            return b'event: shutdown\ndata: {"retryAfter":%d}\n\nretry: %d\n\n' % (
                retryAfter, retryAfter * 1000,
            )
        return shutdownMessage(retryAfter) + b"\n"


def _sseFormat(retry: int) -> _Format:
    return _Format(
        SSE,
        b"text/event-stream",
        b"retry: %d\n\n" % (retry,),
        b": keepalive\n\n",
        b"id: %(id)s\ndata: %(body)s\n\n",
        b"event: gap\ndata: %(body)s\n\n",
    )


_NDJSON_FORMAT = _Format(
    NDJSON_MODE,
    NDJSON.encode("ascii"),
    b"",
    b"\n",
    b"%(body)s\n",
    b"%(body)s\n",
)


class _Closing(Protocol):
    """
    Where streams register to hear of shutdown (L{artcast.server.shutdown.Closing}).
    """

    def onClose(self, callback: Callable[[int], Any]) -> Callable[[], None]:
        ...


@implementer(IPushProducer)
class _Stream:
    """
    One client's stream: a subscription, a queue for when the client's
    socket is full, and the order and de-duplication rules.

    Subclasses say how to write a datum, a gap marker and a heartbeat, and
    how to cut the connection.

    @ivar paused: whether the transport asked us to stop writing.
    @ivar queued: the bytes of live datums waiting while paused.
    """

    mode = ""

    def __init__(self, manager: StreamManager, pattern: str) -> None:
        self.manager = manager
        self.pattern = pattern
        self.paused = False
        self.closed = False
        self.queued = 0
        #: What waits for the client to read, made when something does (an
        #: empty deque costs 760 bytes: most streams never wait).
        self._queue: deque[tuple[Datum | Start, int]] | tuple[()] = ()
        self._pending: list[Datum] | None = None
        self._lastSerial = 0
        self._skipThrough: DatumId | None = None
        #: The gap marker held back until the first live datum says whether
        #: it is due (L{Start.unlessNext}).
        self._heldGap: Start | None = None
        #: The latest datum of each source the stream sent (or, resuming,
        #: that its client has), for L{_lossBefore}.
        self._sent: dict[str, Datum] = {}
        #: Whether the client resumed from an id (so it has the datums held
        #: before it).
        self._resumed = False
        self._subscription: Any = None
        self._pumping = False
        self._forget: Callable[[], object] | None = None

    # Subclasses

    def _sendDatum(self, datum: Datum) -> None:
        raise NotImplementedError()

    def _sendGap(self, since: str | None) -> None:
        raise NotImplementedError()

    def _sendHeartbeat(self) -> None:
        raise NotImplementedError()

    def _abort(self) -> None:
        raise NotImplementedError()

    def end(self, retryAfter: int | None = None) -> None:
        """
        Close the stream in good order (the server is stopping).

        @param retryAfter: in how many seconds the client should reconnect.
        """
        raise NotImplementedError()

    # Delivery

    def begin(self, since: str | None) -> None:
        """
        Subscribe, then queue the history (or the current value), then the
        live datums that came meanwhile, and start writing.
        """
        self.manager._add(self)
        self._pending = []
        self._subscription = self.manager.store.subscribe(self.pattern, self._live)
        start = startOf(self.manager.store, self.pattern, since)
        self._skipThrough = start.skipThrough
        self._resumed = since is not None
        if start.origin is not None:
            self._sent[start.origin.source] = start.origin
        if start.unlessNext:
            self._heldGap = start
        elif start.gap:
            self._enqueue((start, 0))
        # A fresh stream's first datums follow nothing its client has; the
        # first datum of a stream that resumes is compared with what the
        # client has by the store (start.gap).
        check = False
        for datum in start.datums:
            if check and datum.lost:
                missed = self._lossBefore(datum)
                if missed is not None:
                    self._enqueue((Start((), True, missed), 0))
            else:
                self._sent[datum.source] = datum
            check = self._resumed
            self._enqueue((datum, 0))
            self._lastSerial = datum.serial
        pending, self._pending = self._pending, None
        for datum in pending:
            self._offer(datum)
        self._pump()
        closing = self.manager.closing
        if closing is not None and not self.closed:
            self._forget = closing.onClose(self.end)

    def _live(self, datum: Datum) -> None:
        if self._pending is not None:
            self._pending.append(datum)
            return
        try:
            self._offer(datum)
        except Exception:
            # One broken stream must not stop the datum reaching the others.
            log.failure("Closing a {mode} stream of {pattern!r}", mode=self.mode,
                        pattern=self.pattern)
            self.close()
            self._abort()

    def _offer(self, datum: Datum) -> None:
        if self.closed or datum.serial <= self._lastSerial:
            return
        skip = self._skipThrough
        if skip is not None and skip.covers(datum.source, datum.boot, datum.seq):
            return
        self._lastSerial = datum.serial
        held = self._heldGap
        if held is not None:
            self._heldGap = None
            if skip is None or not skip.isNext(datum.source, datum.boot, datum.seq):
                if not self.paused and not self._queue:
                    self._sendGap(held.since)
                else:
                    self._enqueue((held, 0))
        if datum.lost:
            missed = self._lossBefore(datum)
            if missed is not None:
                if not self.paused and not self._queue:
                    self._sendGap(missed)
                else:
                    self._enqueue((Start((), True, missed), 0))
        else:
            self._sent[datum.source] = datum
        if not self.paused and not self._queue:
            self._sendDatum(datum)
            return
        cost = datum.size + len(datum.key) + len(datum.id) + _ITEM_OVERHEAD
        self._enqueue((datum, cost))
        self.queued += cost
        if self.queued > self.manager.maxQueued:
            self.drop()

    def _lossBefore(self, datum: Datum) -> str | None:
        """
        Does a datum whose C{lost} is not 0 follow datums of its (source,
        boot) that the server declared unrecoverable since the one before it
        that this stream sent?  For a stream that resumed and sent none of
        that source yet, the store's latest held before it is the client's
        (L{KeyStore.previous}).  The datum becomes its source's latest sent.

        @return: the id of the datum before the loss (the gap marker's
            C{since}), or L{None}.
        """
        sent = self._sent
        seen = sent.get(datum.source)
        sent[datum.source] = datum
        if seen is not None and seen.boot == datum.boot:
            return seen.id if seen.lost != datum.lost else None
        if not self._resumed:
            return None
        before = self.manager.store.previous(self.pattern, datum)
        if before is None or before.lost == datum.lost:
            return None
        return before.id

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and not self.paused and not self.closed:
                item, cost = cast(deque, self._queue).popleft()
                self.queued -= cost
                if isinstance(item, Start):
                    self._sendGap(item.since)
                else:
                    self._sendDatum(item)
        finally:
            self._pumping = False
            if not self._queue:
                self._queue = ()

    def _enqueue(self, item: tuple[Datum | Start, int]) -> None:
        """
        Queue C{item} for when the client reads.
        """
        queue = self._queue
        if type(queue) is not deque:
            queue = self._queue = deque()
        queue.append(item)

    def heartbeat(self) -> None:
        """
        Show the connection is alive, unless the client is behind anyway.
        """
        if not self.paused and not self.closed and not self._queue:
            self._sendHeartbeat()

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.close()

    # Ending

    def drop(self) -> None:
        """
        Cut off a client that does not read.
        """
        if self.closed:
            return
        self.manager.streamsDropped[self.mode] += 1
        log.info(
            "Dropped a {mode} stream of {pattern!r}: the client does not read "
            "({queued} bytes waiting)",
            mode=self.mode,
            pattern=self.pattern,
            queued=self.queued,
        )
        self.close()
        self._abort()

    def close(self) -> None:
        """
        Stop delivering and forget the queue; calling it twice is harmless.
        """
        if self.closed:
            return
        self.closed = True
        if self._subscription is not None:
            self._subscription.cancel()
        self._queue = ()
        self.queued = 0
        self.manager._remove(self)
        if self._forget is not None:
            self._forget()


class _HTTPStream(_Stream):
    """
    A stream written to an HTTP response (SSE or NDJSON).
    """

    def __init__(
        self, manager: StreamManager, pattern: str, request: Request, format: _Format
    ) -> None:
        super().__init__(manager, pattern)
        self.request = request
        self.format = format
        self.mode = format.mode
        self.done: Deferred[bytes] = Deferred(lambda d: self.close())

    def _sendDatum(self, datum: Datum) -> None:
        self.request.write(self.manager._frame(self.format, datum))

    def _sendGap(self, since: str | None) -> None:
        self.request.write(self.format.gap(since))

    def _sendHeartbeat(self) -> None:
        self.request.write(self.format.heartbeat)

    def _abort(self) -> None:
        transport = getattr(self.request, "transport", None)
        if transport is None:
            transport = getattr(self.request.channel, "transport", None)
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def end(self, retryAfter: int | None = None) -> None:
        if self.closed:
            return
        self.close()
        channel = getattr(self.request, "channel", None)
        if channel is not None:
            sendStreamAtOnce(channel.transport, False)
        self.request.unregisterProducer()
        # Klein writes the last bytes and finishes the response.
        self.done.callback(self.format.farewell(retryAfter))


class _WebSocketStream(_Stream):
    """
    A stream of WebSocket text messages.
    """

    mode = WEBSOCKET

    def __init__(
        self, manager: StreamManager, pattern: str, protocol: StreamProtocol
    ) -> None:
        super().__init__(manager, pattern)
        self.protocol = protocol
        #: The payload of the pong owed while paused (only the latest ping
        #: is answered, as RFC 6455 allows), and what the pings cost.
        self._pong: bytes | None = None
        self._pongCost = 0

    def pinged(self, payload: bytes) -> None:
        """
        The client sent a ping.  Answered at once while the client reads;
        while its socket is full, a pong is owed instead (sent when it
        drains) and each ping counts against C{maxQueued} like a queued
        datum, so a client that pings without reading is dropped as a slow
        reader.
        """
        if self.closed:
            return
        if not self.paused:
            if self._open():
                self.protocol.sendPong(payload)
            return
        cost = len(payload) + _ITEM_OVERHEAD
        self._pong = payload
        self._pongCost += cost
        self.queued += cost
        if self.queued > self.manager.maxQueued:
            self.drop()

    def resumeProducing(self) -> None:
        pong, self._pong = self._pong, None
        if not self.closed:
            self.queued -= self._pongCost
        self._pongCost = 0
        if pong is not None and not self.closed and self._open():
            self.protocol.sendPong(pong)
        super().resumeProducing()

    def _open(self) -> bool:
        """
        Can the protocol still send?  Once a closing handshake has begun it
        cannot, and the stream ends.
        """
        if self.protocol.state == WebSocketServerProtocol.STATE_OPEN:
            return True
        self.close()
        return False

    def _sendDatum(self, datum: Datum) -> None:
        if not self._open():
            return
        protocol = self.protocol
        if internals.webSocketFrameFits(protocol):
            # The frame sendMessage would write, made once for all the
            # streams the datum goes to; Autobahn's counters kept as it does.
            payload, frame = self.manager._webSocketFrame(datum)
            protocol.transport.write(frame)
            stats = protocol.trafficStats
            stats.outgoingWebSocketMessages += 1
            stats.outgoingOctetsAppLevel += len(payload)
            stats.outgoingOctetsWebSocketLevel += len(payload)
            stats.outgoingWebSocketFrames += 1
            stats.outgoingOctetsWireLevel += len(frame)
            return
        protocol.sendMessage(envelope(datum))

    def _sendGap(self, since: str | None) -> None:
        if self._open():
            self.protocol.sendMessage(gapMessage(since))

    def _sendHeartbeat(self) -> None:
        if self._open():
            self.protocol.sendPing()

    def _abort(self) -> None:
        self.protocol.dropConnection(abort=True)

    def end(self, retryAfter: int | None = None) -> None:
        if self.closed:
            return
        self.close()
        if self.protocol.state == WebSocketServerProtocol.STATE_OPEN:
            # 1001, "going away", is what a server shutting down sends;
            # sendClose only takes application codes.
            self.protocol.sendCloseFrame(code=1001, reasonUtf8=b"shutting down")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _Opening:
    """
    What a WebSocket connection is to stream, known before the upgrade.
    """

    manager: StreamManager
    request: Request
    pattern: str
    since: str | None


class _BoundedLog:
    """
    The log of the server's WebSocket protocols (Autobahn's C{self.log}).

    What Autobahn logs about one connection an anonymous client can cause at
    will (a malformed handshake, a bad frame, a dropped connection), so its
    warnings and errors go through a L{RateLimitedLog} (a few a minute, then
    one line saying how many were not logged), and its C{info} lines, which
    repeat its warnings, become C{debug}.  Anything else goes to Autobahn's
    own logger.
    """

    def __init__(self, log: Any, limited: RateLimitedLog) -> None:
        self._log = log
        self._limited = limited

    def warn(self, format: str, **kw: Any) -> None:
        self._limited.warn(format, **kw)

    error = critical = warn

    def info(self, format: str, **kw: Any) -> None:
        self._log.debug(format, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class StreamProtocol(WebSocketServerProtocol):
    """
    The server side of a streaming WebSocket: it sends, and ignores what
    the client sends.
    """

    opening: _Opening | None = None
    stream: _WebSocketStream | None = None
    #: The client's frame budget (L{CLIENT_FRAMES_BURST}), when last filled,
    #: and whether it was closed for overdrawing it.
    _frames = float(CLIENT_FRAMES_BURST)
    _framesAt: float | None = None
    _flooded = False

    def _frameAllowed(self) -> bool:
        """
        Take one frame from the client's budget.  A client that sends more
        than a stream's client needs is closed (counted in C{rejected} as
        L{WEBSOCKET_FLOOD}), and what it still sent is not looked at.
        """
        if self._flooded:
            return False
        opening = self.opening
        if opening is None:
            return True
        now = opening.manager.clock.seconds()
        if self._framesAt is not None:
            self._frames = min(
                float(CLIENT_FRAMES_BURST),
                self._frames + (now - self._framesAt) * CLIENT_FRAMES_PER_SECOND,
            )
        self._framesAt = now
        if self._frames >= 1:
            self._frames -= 1
            return True
        self._flooded = True
        countRejected(opening.request, WEBSOCKET_FLOOD)
        if self.stream is not None:
            self.stream.close()
        self.dropConnection(abort=True)
        return False

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        """
        Refuse a malformed (or disallowed) opening handshake as Autobahn
        does, and count it under C{websocket-handshake} in the site's
        C{rejected}.
        """
        if self.opening is not None:
            countRejected(self.opening.request, WEBSOCKET_HANDSHAKE)
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:
        opening = self.opening
        if opening is None:
            self.dropConnection(abort=True)
            return
        self.stream = _WebSocketStream(opening.manager, opening.pattern, self)
        sendStreamAtOnce(self.transport)
        # The HTTP channel is still the transport's producer: through the
        # request it tells the stream when the socket is full.
        opening.request.registerProducer(self.stream, True)
        # (Autobahn read the request's head to upgrade it; kept as long as
        # the stream, it need not keep the headers it made for that.)
        release = getattr(opening.request, "releaseHeaders", None)
        if release is not None:
            release()
        self.stream.begin(opening.since)

    def onPing(self, payload: bytes) -> None:
        """
        Answer a ping with a pong only as fast as the client reads (see
        L{_WebSocketStream.pinged}): Autobahn would write every pong to the
        transport, which buffers them without a bound.
        """
        if not self._frameAllowed():
            return
        if self.stream is None:
            super().onPing(payload)
        else:
            self.stream.pinged(payload)

    def onPong(self, payload: bytes) -> None:
        if self._frameAllowed():
            super().onPong(payload)

    def onMessageFrameBegin(self, length: int) -> None:
        # Autobahn's own frame state is kept either way; what the client
        # sends is dropped (L{onMessageFrameData}).
        self._frameAllowed()
        super().onMessageFrameBegin(length)

    def onMessageFrameData(self, payload: bytes) -> None:
        """
        Drop what the client sends instead of gathering it into a message,
        so that a long fragmented message costs no memory.
        """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.stream is not None:
            self.stream.close()


class _OneConnection:
    """
    The factory L{WebSocketResource} asks for one connection's protocol:
    the shared factory's, told what to stream.
    """

    def __init__(self, factory: WebSocketServerFactory, opening: _Opening) -> None:
        self.factory = factory
        self.opening = opening

    def buildProtocol(self, addr: Any) -> StreamProtocol:
        # The HTTP channel is done with: Autobahn takes its transport, and
        # it is never told the connection is lost.
        stopIdleTimer = getattr(self.opening.request.channel, "stopIdleTimer", None)
        if stopIdleTimer is not None:
            stopIdleTimer()
        protocol = cast(StreamProtocol, self.factory.buildProtocol(addr))
        protocol.opening = self.opening
        protocol.log = self.opening.manager.protocolLog
        return protocol


class _ClockTimer:
    """
    What Autobahn's protocols schedule their timeouts with (txaio's
    C{IBatchedTimer}), on a given clock.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def call_later(self, delay: float, function: Callable[..., object],
                   *args: object, **kwargs: object) -> _Cancellable:
        return _Cancellable(self.clock.callLater(delay, function, *args, **kwargs))


class _Cancellable:
    """
    A delayed call whose cancellation is harmless once it ran, as txaio's.
    """

    def __init__(self, call: Any) -> None:
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class StreamManager:
    """
    The streams of one server.

    @param store: where datums come from.
    @param clock: schedules the heartbeats.
    @param heartbeat: seconds between heartbeats.
    @param maxQueued: bytes of live datums a stream may hold for a client
        that does not read before it is dropped.
    @param retry: the reconnection delay an SSE client is told, in ms.
    @param allowOrigin: the origin allowed to open WebSockets (C{*}: any).
    @param closing: where each stream registers to be ended in good order
        when the server shuts down (an L{artcast.server.shutdown.Closing}).

    @ivar streamsOpen: the open streams by kind (C{sse}, C{ndjson},
        C{websocket}): a gauge.
    @ivar streamsOpened: the streams ever opened, by kind.
    @ivar streamsDropped: the streams dropped because the client did not
        read, by kind.
    """

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        heartbeat: float = DEFAULT_HEARTBEAT,
        maxQueued: int = DEFAULT_MAX_QUEUED,
        retry: int = DEFAULT_RETRY,
        allowOrigin: str = "*",
        closing: _Closing | None = None,
    ) -> None:
        self.store = store
        self.closing = closing
        self.clock = clock
        self.heartbeatInterval = heartbeat
        self.maxQueued = maxQueued
        self.streamsOpen: Counter[str] = Counter()
        self.streamsOpened: Counter[str] = Counter()
        self.streamsDropped: Counter[str] = Counter()
        self._streams: set[_Stream] = set()
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = clock
        self._formats = {
            negotiate.EVENT_STREAM: _sseFormat(retry),
            NDJSON: _NDJSON_FORMAT,
        }
        self._lastFrame: tuple[_Format | None, Datum | None, bytes] = (None, None, b"")
        self._lastWebSocketFrame: tuple[Datum | None, bytes, bytes] = (None, b"", b"")
        #: The log of every WebSocket protocol: bounded, see L{_BoundedLog}.
        self.protocolLog = _BoundedLog(
            StreamProtocol.log, RateLimitedLog(
                Logger(namespace=_WEBSOCKET_LOG), clock, what="WebSocket warnings"
            )
        )
        self.webSocketFactory = WebSocketServerFactory(server="Artcast", reactor=clock)
        self.webSocketFactory.protocol = StreamProtocol
        # Autobahn's own timeouts (the closing handshake) run on our clock,
        # not on the global reactor txaio would pick.
        internals.useClock(self.webSocketFactory, _ClockTimer(clock))
        self.webSocketFactory.setProtocolOptions(
            # The handshake is answered as soon as Twisted parsed it.
            openHandshakeTimeout=0,
            # Bounds what a client frame may make us buffer (only incoming
            # frames are checked; a message limit would bound ours too).
            maxFramePayloadSize=_MAX_CLIENT_FRAME,
            allowedOrigins=[originPattern(allowOrigin)],
            allowNullOrigin=allowOrigin == "*",
        )

    # Opening

    def stream(self, request: IRequest, pattern: str, mediaType: str) -> bytes | Deferred[bytes]:
        """
        Answer a request with an SSE or NDJSON stream.  The caller has set
        the CORS headers.

        @param mediaType: a member of L{STREAM_TYPES}.
        @return: what Klein is to render: an empty body for C{HEAD}, else a
            L{Deferred} that fires only if the server ends the stream, and
            whose cancellation (the client went away) closes it.
        @raise BadStart: if the request resumes from something not an id.
        """
        since = requestedSince(request)
        format = self._formats[mediaType]
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", format.contentType)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.setHeader(b"Vary", b"Accept")
        if request.method == b"HEAD":
            return b""
        twistedRequest = cast(Request, request)
        stream = _HTTPStream(self, pattern, twistedRequest, format)
        # Sends the headers at once, even when the preamble is empty.
        request.write(format.preamble)
        sendStreamAtOnce(twistedRequest.channel.transport)
        releaseIdleTimer = getattr(twistedRequest.channel, "releaseIdleTimer", None)
        if releaseIdleTimer is not None:
            releaseIdleTimer()
        twistedRequest.registerProducer(stream, True)
        twistedRequest.notifyFinish().addBoth(lambda ignored: stream.close())
        stream.begin(since)
        return stream.done

    def webSocket(self, request: IRequest, pattern: str) -> IResource:
        """
        The resource that upgrades a request to a WebSocket streaming the
        datums of C{pattern}.

        @raise BadStart: if C{since} is not an id.
        """
        since = requestedSince(request)
        opening = _Opening(self, cast(Request, request), pattern, since)
        return WebSocketResource(_OneConnection(self.webSocketFactory, opening))

    # Book-keeping

    def _add(self, stream: _Stream) -> None:
        self._streams.add(stream)
        self.streamsOpen[stream.mode] += 1
        self.streamsOpened[stream.mode] += 1
        if not self._beat.running:
            self._beat.start(self.heartbeatInterval, now=False)

    def _remove(self, stream: _Stream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
            self.streamsOpen[stream.mode] -= 1
        if not self._streams and self._beat.running:
            self._beat.stop()

    def _heartbeat(self) -> None:
        for stream in list(self._streams):
            stream.heartbeat()

    def _frame(self, format: _Format, datum: Datum) -> bytes:
        """
        A datum's frame in a format, made once for all the streams a datum
        goes to one after another.
        """
        lastFormat, lastDatum, frame = self._lastFrame
        if lastFormat is not format or lastDatum is not datum:
            frame = format.datum(datum, envelope(datum))
            self._lastFrame = (format, datum, frame)
        return frame

    def _webSocketFrame(self, datum: Datum) -> tuple[bytes, bytes]:
        """
        A datum's WebSocket message (L{envelope}) and its frame as a server
        sends it (text, final, not masked), made once for all the streams a
        datum goes to one after another.
        """
        lastDatum, payload, frame = self._lastWebSocketFrame
        if lastDatum is not datum:
            payload = envelope(datum)
            size = len(payload)
            if size < 126:
                head = bytes((0x81, size))
            elif size < 65536:
                head = struct.pack("!BBH", 0x81, 126, size)
            else:
                head = struct.pack("!BBQ", 0x81, 127, size)
            frame = head + payload
            self._lastWebSocketFrame = (datum, payload, frame)
        return payload, frame

    def closeAll(self, retryAfter: int | None = None) -> None:
        """
        End every stream in good order (for a server that is stopping).
        """
        for stream in list(self._streams):
            stream.end(retryAfter)

    def statistics(self) -> dict[str, Any]:
        """
        The figures for C{/stats}.
        """
        return {
            "streams_open": dict(self.streamsOpen),
            "streams_opened": dict(self.streamsOpened),
            "streams_dropped": dict(self.streamsDropped),
        }

    @property
    def open(self) -> int:
        """
        How many streams are open.
        """
        return len(self._streams)
