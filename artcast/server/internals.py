# -*- test-case-name: tests.test_internals -*-
"""
Everything Artcast reads or writes of Twisted's and Autobahn's private
state, each behind a small named function, and the check that this state is
still what these functions expect.

Artcast uses private state only where the public API cannot do the job, or
not fast enough:

  - L{requestOver} and L{prebuiltFits}: a request's C{_disconnected},
    C{_encoder} and C{_inFakeHead} (L{twisted.web.server.Request}), for the
    long poll's prebuilt answer written ahead of Twisted's header building;
  - L{finishWritten}: what Twisted's L{Request.finish} and C{_cleanup} do
    (the names their code uses), and a request's C{_encoder} and
    C{_disconnected}, to finish a long poll's prebuilt answer in one step;
  - L{requestMade}: what Twisted's L{Request.__init__} sets on a new
    request (C{channel}, C{client}, C{host}, C{transport}, C{queued},
    C{_parsePOSTFormSubmission}) besides the empty containers a plain long
    poll never uses, so that
    L{artcast.server.connections.ArtcastRequest.madePlain} may make one
    without them;
  - L{processFits} and L{encoderOf}: that Twisted's L{Request.process}
    still does only what L{artcast.server.connections.ArtcastRequest.process}
    does in its place (the names its code uses), and
    L{twisted.web.resource}'s C{_IEncodingResource}, through which it asks
    a resource for an encoder (such as gzip);
  - L{headFits}, L{receiving} and L{headRead}: the state in which
    L{HTTPChannel} and L{LineReceiver} wait for a request (C{_buffer},
    C{_busyReceiving}, C{_HTTPChannel__first_line}, C{_HTTPChannel__header},
    C{_handlingRequest}, C{_transferDecoder}, the header counts) and what
    the methods that read a head do (the names their code uses), so that
    L{artcast.server.connections.ArtcastChannel} may read a whole simple
    head in one step and leave them as Twisted would;
  - L{queuedOutput} and L{dropQueuedOutput}: the output buffer of a
    transport (L{twisted.internet.abstract.FileDescriptor}'s C{dataBuffer},
    C{offset}, C{_tempDataBuffer}, C{_tempDataLen}, and
    L{twisted.internet.tcp.Connection}'s C{_aborting}), for the output
    bounds;
  - L{sendNow}: a TCP transport's output buffer and state
    (C{dataBuffer}, C{_tempDataBuffer}, C{TLS}, C{_aborting},
    C{_writeDisconnecting}, C{_writeDisconnected}) and its C{socket}, to
    send a long poll's answer (or a stream's event) in the reactor turn it
    is made, without Twisted's two C{epoll_ctl} calls per answer;
  - L{presetTransport}: a TCP transport's C{offset}, set at once for the
    same reason as L{presetAttributes};
  - L{presetAttributes}: the names of the attributes L{HTTPChannel} sets
    only with a connection's first request (two of them name-mangled), set
    at once to save memory per connection;
  - L{holdsPipeline}, L{transportFull}, L{readingTooFar} and
    L{pauseReading}: L{HTTPChannel}'s C{_waitingForTransport},
    C{_networkProducer}, C{_handlingRequest}, C{_dataBuffer} and
    C{_optimisticEagerReadSize}, to start no pipelined request while the
    client does not read;
  - L{webSocketFrameFits}: an Autobahn protocol's sending state
    (C{_perMessageCompress}, C{send_state}, C{send_queue}), so that a
    datum's WebSocket frame is made once for all its streams; read with a
    fallback per call;
  - L{useClock}: Autobahn's C{WebSocketServerFactory._batched_timer}, so
    that its timeouts run on the clock given;
  - L{quietIdleTimeouts}: L{HTTPChannel}'s C{_log}, which logs every idle
    connection it closes;
  - L{endpointAddress}: what L{TCP4ServerEndpoint} and L{TCP6ServerEndpoint}
    keep of their description (C{_interface}, C{_port}, C{_backlog}), so
    that C{--workers} binds a socket per worker on the same address without
    parsing C{--client-port} again (read where it is used: a Twisted that
    keeps them elsewhere makes C{--workers} share one socket, as before).

L{check}, called once when the service is made (L{InternalsService}), looks
at that state on objects made in memory.  Where it is not as expected
(another Twisted or Autobahn), it puts the ordinary path in place of each
function concerned, and the service says so in one error-log line: then no output is
counted beyond what the public API gives, no pipelined request is held, no long poll gets the
prebuilt answer, every request head is read and processed by Twisted, and Autobahn keeps its own
timer.  The choice is made
there, once: the functions read no flag per call.  Their users call them
through this module (C{internals.requestOver(request)}), so that they get
the choice made.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet import abstract, tcp
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.protocols import basic
from twisted.python import components
from twisted.web import http, resource, server

__all__ = [
    "InternalsService",
    "check",
    "dropQueuedOutput",
    "encoderOf",
    "endpointAddress",
    "finishWritten",
    "headFits",
    "headRead",
    "holdsPipeline",
    "pauseReading",
    "prebuiltFits",
    "presetAttributes",
    "presetTransport",
    "processFits",
    "queuedOutput",
    "quietIdleTimeouts",
    "readingTooFar",
    "receiving",
    "requestMade",
    "requestOver",
    "sendNow",
    "transportFull",
    "useClock",
    "webSocketFrameFits",
]

_log = Logger(namespace="artcast.internals")

_Channel = TypeVar("_Channel", bound=http.HTTPChannel)


# Requests


def requestOver(request: Any) -> bool:
    """
    Is the request over: answered, or its client gone?
    """
    return bool(request.finished or request._disconnected)


def _requestOverPublic(request: Any) -> bool:
    # Twisted's Request.connectionLost sets its (public) channel to None.
    return bool(request.finished or request.channel is None)


def prebuiltFits(request: Any) -> bool:
    """
    May the answer to C{request} be written as prebuilt bytes straight to
    its channel: its client is still there, and Twisted would not change
    the body it writes (no encoder such as gzip, not a C{HEAD} answered as
    a C{GET})?
    """
    return not (
        request._disconnected
        or getattr(request, "_encoder", None) is not None
        or getattr(request, "_inFakeHead", False)
    )


def _prebuiltNever(request: Any) -> bool:
    return False


#: The names the code of Twisted's L{Request.finish} (L{server.Request}'s and
#: L{http.Request}'s) and of the C{_cleanup} it calls uses (26.10 and 24.7):
#: should one use others, it may do what L{finishWritten} does not.
_FINISH_NAMES = {
    (server.Request, "finish"): ("_HTTPRequest", "_encoder", "finish", "write"),
    (http.Request, "finish"): (
        "RuntimeError", "_cleanup", "_disconnected", "channel", "chunked", "factory",
        "finished", "hasattr", "log", "queued", "startedWriting", "warn", "warnings", "write",
    ),
    (http.Request, "_cleanup"): (
        "Failure", "OSError", "RuntimeError", "_log", "callback", "channel", "close",
        "content", "failure", "notifications", "producer", "requestDone",
        "unregisterProducer", "uri",
    ),
}


def finishWritten(request: Any) -> None:
    """
    Finish a request whose answer is written whole (a long poll's prebuilt
    answer): what Twisted's L{Request.finish} and its C{_cleanup} do for
    such a request (no encoder, not chunked, first in its channel's queue,
    no producer), in one step: the access log, the channel's next request,
    the content and the notifications let go of.  Any other request is
    finished by Twisted.
    """
    if (
        request._encoder
        or request.chunked
        or not request.startedWriting
        or request.queued
        or request.producer
        or request.finished
        or request._disconnected
    ):
        request.finish()
        return
    channel = request.channel
    factory = getattr(channel, "factory", None)
    if factory is not None:
        factory.log(request)
    request.finished = 1
    channel.requestDone(request)
    del request.channel
    content = request.content
    if content is not None:
        try:
            content.close()
        except OSError:
            pass
        del request.content
    for d in request.notifications:
        d.callback(None)
    request.notifications = []


def _finishTwisted(request: Any) -> None:
    request.finish()


# Making a request


#: The names the code of Twisted's request constructors uses (26.10 and
#: 24.7), and the attributes a request has once made: should either differ,
#: L{requestMade} may not set all a request needs, and every request is made
#: by Twisted.
_INIT_NAMES = {
    (http.Request, "__init__"): (
        "Headers", "_QUEUED_SENTINEL", "_parsePOSTFormSubmission", "channel", "client",
        "cookies", "getHost", "getPeer", "host", "notifications", "queued",
        "received_cookies", "requestHeaders", "responseHeaders", "transport",
    ),
    (server.Request, "__init__"): (
        "Componentized", "_HTTPRequest", "__init__", "_parsePOSTFormSubmission",
        "components", "site",
    ),
    (components.Componentized, "__init__"): ("_adapterCache",),
}
#: What L{requestMade} leaves out: each made empty by Twisted.
_INIT_CONTAINERS = frozenset((
    "notifications", "requestHeaders", "received_cookies", "responseHeaders",
    "cookies", "_adapterCache",
))
#: Whether requests have C{_parsePOSTFormSubmission}, from the site
#: (Twisted 24.10 and later).
_PARSES_POST = "_parsePOSTFormSubmission" in server.Request.__init__.__code__.co_names
#: What L{requestMade} sets.
_INIT_SET = frozenset(
    ("channel", "client", "host", "transport", "queued")
    + (("_parsePOSTFormSubmission",) if _PARSES_POST else ())
)


def requestMade(request: Any, channel: Any) -> bool:
    """
    Set on C{request}, made without its constructor, what Twisted's
    L{server.Request} constructor sets, for C{channel} and a request first
    in its queue, but the empty containers it makes (C{notifications},
    C{requestHeaders}, C{received_cookies}, C{responseHeaders}, C{cookies},
    C{_adapterCache}): the caller stands in for them.

    @return: Whether it was done; if not, the request must be made by its
        constructor.
    """
    request.channel = channel
    request.client = channel.getPeer()
    request.host = channel.getHost()
    request.transport = channel.transport
    # (What HTTPChannel passes: the length of its queue, empty.)
    request.queued = 0
    if _PARSES_POST:
        request._parsePOSTFormSubmission = channel.site._parsePOSTFormSubmission
    return True


def _requestMadeNever(request: Any, channel: Any) -> bool:
    return False


# Processing a request


#: The names the code of Twisted's L{server.Request.process} uses (26.10 and
#: 24.7): should it use others, it may do what
#: L{artcast.server.connections.ArtcastRequest.process} does not, and
#: Twisted's own is used.
_PROCESS_NAMES = frozenset((
    "channel", "site", "setHeader", "version", "datetimeToString", "prepath",
    "list", "map", "unquote", "path", "split", "postpath", "_handleStar",
    "getResourceFor", "resource", "_IEncodingResource", "providedBy",
    "getEncoder", "_encoder", "render", "BaseException", "processingFailed",
    "failure", "Failure",
))


def processFits(request: Any) -> bool:
    """
    May C{request} be processed by Artcast's own L{Request.process}
    (L{artcast.server.connections.ArtcastRequest.process}): does the
    installed Twisted's do no more than it?
    """
    return True


def encoderOf(resrc: Any, request: Any) -> Any:
    """
    The encoder (such as gzip) a resource wraps C{request}'s answer in, as
    Twisted's L{Request.process} asks it, or L{None}.
    """
    if resource._IEncodingResource.providedBy(resrc):
        return resrc.getEncoder(request)
    return None


def _noEncoder(resrc: Any, request: Any) -> Any:
    return None


# Reading a request's head


#: The names the code of the methods that read a request's head uses, in
#: Twisted 26.10 and 24.7: should one use others, it may do what
#: L{artcast.server.connections.ArtcastChannel}'s own reading of a head does
#: not, and every head is read by Twisted.
_HEAD_NAMES = {
    (http.HTTPChannel, "dataReceived"): ("LineReceiver", "basic", "dataReceived", "resetTimeout"),
    (basic.LineReceiver, "dataReceived"): (
        "MAX_LENGTH", "ValueError", "_buffer", "_busyReceiving", "delimiter", "disconnecting",
        "len", "lineLengthExceeded", "lineReceived", "line_mode", "paused", "rawDataReceived",
        "split", "transport",
    ),
    (http.HTTPChannel, "lineReceived"): (
        "INonQueuedRequestFactory", "ValueError", "_HTTPChannel__first_line",
        "_HTTPChannel__header", "_command", "_parseRequestLine", "_path",
        "_receivedHeaderSize", "_respondToBadRequestAndDisconnect", "_version",
        "allContentReceived", "allHeadersReceived", "append", "dataReceived",
        "headerReceived", "len", "length", "lineReceived", "lstrip", "persistent",
        "providedBy", "requestFactory", "requests", "setRawMode", "totalHeadersSize",
    ),
    (http.HTTPChannel, "headerReceived"): (
        "InvalidHeaderName", "ValueError", "_istoken", "_maybeChooseTransferDecoder",
        "_nameEncoder", "_receivedHeaderCount", "_respondToBadRequestAndDisconnect",
        "addRawHeader", "encode", "len", "lower", "maxHeaders", "requestHeaders",
        "requests", "split", "strip", "translate",
    ),
    (http.HTTPChannel, "allHeadersReceived"): (
        "_send100Continue", "_version", "checkPersistence", "getRawHeaders", "gotLength",
        "length", "lower", "parseCookies", "persistent", "requestHeaders", "requests",
    ),
    (http.HTTPChannel, "checkPersistence"): (
        "getRawHeaders", "requestHeaders", "responseHeaders", "setRawHeaders", "split",
    ),
    (http.HTTPChannel, "allContentReceived"): (
        "_HTTPChannel__first_line", "_command", "_handlingRequest", "_path",
        "_receivedHeaderCount", "_receivedHeaderSize", "_savedTimeOut", "_transferDecoder",
        "_version", "length", "requestReceived", "requests", "setRawMode", "setTimeout",
        "timeOut",
    ),
    (http.Request, "requestReceived"): (
        "_MultiPartParseException", "_getMultiPartArgs", "_parseContentType",
        "_parsePOSTFormSubmission", "_respondToBadRequestAndDisconnect", "args", "channel",
        "clientproto", "content", "getRawHeaders", "len", "method", "parse_qs", "path",
        "process", "read", "requestHeaders", "seek", "split", "tell", "update", "uri",
    ),
    (http.Request, "getHeader"): ("getRawHeaders", "requestHeaders"),
    (server.Request, "gotLength"): (
        "AttributeError", "_HTTPRequest", "channel", "content", "getContentFile", "gotLength",
        "site",
    ),
    (http.Request, "gotLength"): ("_getContentFile", "content"),
    (http.Request, "parseCookies"): (
        "ValueError", "getRawHeaders", "lstrip", "received_cookies", "requestHeaders", "split",
    ),
}


def headFits(channel: Any) -> bool:
    """
    Is C{channel} waiting for a request as Twisted leaves it between
    requests, with nothing of one buffered, so that a whole head just
    received may be read in one step
    (L{artcast.server.connections.ArtcastChannel.dataReceived})?
    """
    return bool(
        channel._buffer == b""
        and channel.line_mode
        and not channel._busyReceiving
        and not channel.paused
        and channel._HTTPChannel__first_line == 1
        and channel._HTTPChannel__header == b""
        and channel.length == 0
        and channel._transferDecoder is None
        and not channel._handlingRequest
        and channel._receivedHeaderCount == 0
        and channel._receivedHeaderSize == 0
        and channel.persistent
        and not channel.requests
    )


def receiving(channel: Any, busy: bool) -> None:
    """
    Mark C{channel} as in the middle of reading what it received (or no
    longer), as L{LineReceiver.dataReceived} does: what comes meanwhile is
    buffered.
    """
    channel._busyReceiving = busy


def headRead(channel: Any) -> None:
    """
    What L{HTTPChannel.allContentReceived} does, the counts of the head
    aside (a head read in one step leaves them as they were): the idle
    timeout suspended, the request marked as being handled, what comes
    next buffered.
    """
    if channel.timeOut:
        channel._savedTimeOut = channel.setTimeout(None)
    channel._handlingRequest = True
    channel.setRawMode()


# Transports


def _bufferingTransport(transport: Any) -> Any:
    """
    The transport under C{transport} that buffers what is written: Twisted's
    L{FileDescriptor}, found by its private C{_tempDataLen} looking through
    wrappers (TLS, L{ProtocolWrapper}), or L{None}.

    L{queuedOutput} reads its private buffer and L{dropQueuedOutput} empties
    it.  C{tests.test_bounds_output} and C{tests.test_bounds_outtotal} check
    both against a real socket, so that a Twisted that changes it fails
    there; at run time such a Twisted gets no bound (L{None} here).
    """
    for _ in range(4):
        if transport is None:
            return None
        try:
            state = transport.__dict__
        except AttributeError:
            return None
        if "_tempDataLen" in state:
            return transport
        transport = state.get("transport")
    return None


def queuedOutput(transport: Any) -> int | None:
    """
    The bytes written to a connection and not yet sent: what its transport
    still holds in memory (C{dataBuffer} from C{offset} on, and
    C{_tempDataLen} bytes waiting to join it; see L{_bufferingTransport}).

    @return: The byte count, or L{None} for a transport whose buffer cannot
        be read (then no bound is applied to it).
    """
    buffering = _bufferingTransport(transport)
    if buffering is None:
        return None
    try:
        return len(buffering.dataBuffer) - buffering.offset + buffering._tempDataLen
    except (AttributeError, TypeError):
        return None


def _queuedOutputUnknown(transport: Any) -> int | None:
    return None


def dropQueuedOutput(transport: Any) -> bool:
    """
    Let go at once of what an aborted connection's transport holds written
    and not yet sent, as L{queuedOutput} finds it.

    Twisted's C{abortConnection} discards a TCP transport's buffer, but only
    when it calls C{connectionLost}, a reactor turn later; until then the
    buffer is held, so every connection aborted in one turn (a burst of
    clients that do not read, all cut for the output budget) would hold its
    output at once.  This empties the buffer only on a transport Twisted
    marked as aborting (C{_aborting}), whose C{doWrite} it has replaced with
    a no-op: nothing will read the buffer again.  On a Twisted without that
    state, nothing is done (the buffer goes a turn later, as before).

    @return: Whether a buffer was let go of.
    """
    buffering = _bufferingTransport(transport)
    if buffering is None:
        return False
    state = buffering.__dict__
    if state.get("_aborting") is not True or not isinstance(
        state.get("_tempDataBuffer"), list
    ):
        return False
    buffering._tempDataBuffer = []
    buffering._tempDataLen = 0
    buffering.dataBuffer = b""
    buffering.offset = 0
    return True


def _dropNothing(transport: Any) -> bool:
    return False


def presetTransport(transport: Any) -> None:
    """
    Set on a new TCP transport, to the value it has anyway, the C{offset}
    into its buffer that Twisted sets only when it first sends from it: set
    now, its name goes in the class's shared table of names with the first
    connection (see L{presetAttributes}); set later, on connections opened
    together, each makes a dict of its own (768 bytes).
    """
    if type(transport) is tcp.Server:
        offset = getattr(transport, "offset", None)
        if type(offset) is int:
            transport.offset = offset


def sendNow(transport: Any, data: bytes) -> bytes:
    """
    Send C{data} on a plain TCP transport at once, with one C{send}, when
    it holds nothing written before and not yet sent.

    Twisted's C{write} only buffers: it asks the reactor to watch the
    socket for writability (an C{epoll_ctl}), sends on the next turn, and
    stops watching (another).  A long poll's answer almost always fits in
    the socket's buffer at once, so sending it now costs one system call
    instead of three, and the client has it before the server goes on.
    Whatever the socket does not take (it is full, or the connection is
    ending: Twisted's own write then finds out) is returned, to be written
    the ordinary way after it, so the order of bytes is kept.

    @param transport: Twisted's L{tcp.Server} (anything else, a TLS
        connection among them, is never sent to here).
    @return: What is left to write: C{b""} when all of C{data} was sent.
    """
    if (
        type(transport) is not tcp.Server
        or transport.TLS
        or transport.disconnecting
        or transport._aborting
        or transport._writeDisconnecting
        or transport._writeDisconnected
        or transport.dataBuffer
        or transport._tempDataBuffer
        or not transport.connected
    ):
        return data
    try:
        sent = transport.socket.send(data)
    except OSError:
        # Full (EAGAIN), interrupted, or the connection is ending.
        return data
    return data[sent:] if sent < len(data) else b""


def _sendLater(transport: Any, data: bytes) -> bytes:
    return data


_MISSING = object()


def webSocketFrameFits(protocol: Any) -> bool:
    """
    May a text message be written to an Autobahn WebSocket protocol as a
    frame made beforehand, the same bytes for every client (a server's
    frames are not masked), instead of through C{sendMessage}, which makes
    the frame again for each client?  Only when C{sendMessage} would write
    one plain frame at once: the connection open, no compression
    (C{_perMessageCompress}) or fragmentation, no message in progress
    (C{send_state}), nothing queued before it (C{send_queue}), no message
    size limit, no frame or octet logging, no timings.  Any of these
    attributes missing (another Autobahn) gives C{False}: the ordinary way.
    """
    get = getattr
    return (
        get(protocol, "state", _MISSING) == get(protocol, "STATE_OPEN", None)
        and get(protocol, "_perMessageCompress", _MISSING) is None
        and get(protocol, "send_state", _MISSING) == get(protocol, "SEND_STATE_GROUND", None)
        and not get(protocol, "send_queue", True)
        and get(protocol, "autoFragmentSize", None) == 0
        and get(protocol, "maxMessagePayloadSize", None) == 0
        and get(protocol, "logFrames", True) is False
        and get(protocol, "logOctets", True) is False
        and get(protocol, "trackedTimings", True) is None
    )


# Channels


#: The attributes Twisted's L{HTTPChannel} sets on a channel after it is
#: made, but for the request line's (see L{presetAttributes}).
_CHANNEL_LATER_ATTRIBUTES = (
    "_busyReceiving", "_buffer", "_receivedHeaderSize", "_HTTPChannel__first_line",
    "_HTTPChannel__header", "_receivedHeaderCount", "persistent", "length",
    "_savedTimeOut", "line_mode",
)


def presetAttributes(channel: http.HTTPChannel, own: tuple[str, ...] = ()) -> None:
    """
    Set on a new channel, to the values they have anyway, the attributes
    Twisted's L{HTTPChannel} sets only when its first request comes, then
    C{own} (its subclass's), then the request line's (C{_command},
    C{_path}, C{_version}) to L{None}.

    CPython (3.11, 3.12) keeps the attribute names of a class's instances
    in one shared table, each instance holding only its values, but lets
    only the first few instances made add names to it.  When many
    connections are opened at once, the table is closed by the time their
    first requests come, and every channel gets a whole dict of its own
    (832 bytes instead of about 300).  Setting them now puts their names in
    the table with the first channel.
    """
    for name in _CHANNEL_LATER_ATTRIBUTES:
        setattr(channel, name, getattr(channel, name))
    for name in own:
        setattr(channel, name, getattr(channel, name))
    # The request line's, which Twisted sets with each request and deletes
    # once its body is in.
    channel._command = channel._path = channel._version = None  # type: ignore[attr-defined]


def _presetOwn(channel: http.HTTPChannel, own: tuple[str, ...] = ()) -> None:
    for name in own:
        setattr(channel, name, getattr(channel, name))


def holdsPipeline(channel: Any) -> bool:
    """
    Should the channel, as an answer is finished, hold its next pipelined
    request: is its transport full (it paused the channel) and is there a
    network producer to pause reading with (see L{pauseReading})?
    """
    return bool(channel._waitingForTransport and channel._networkProducer is not None)


def transportFull(channel: Any) -> bool:
    """
    Is the channel's transport full: did it pause the channel?
    """
    return bool(channel._waitingForTransport)


def readingTooFar(channel: Any) -> bool:
    """
    Has the channel, while a request is being answered and its transport
    is full, buffered more of what the client sends than Twisted's own
    limit to stop reading at (C{_optimisticEagerReadSize})?
    """
    return bool(
        channel._handlingRequest
        and channel._waitingForTransport
        and sum(map(len, channel._dataBuffer)) > channel._optimisticEagerReadSize
    )


def _never(channel: Any) -> bool:
    return False


def pauseReading(channel: Any) -> None:
    """
    Stop reading from the channel's client (until Twisted resumes it).
    """
    network = getattr(channel, "_networkProducer", None)
    if network is not None:
        network.pauseProducing()


# Autobahn


def useClock(factory: Any, timer: Any) -> None:
    """
    Have the protocols of an Autobahn C{WebSocketServerFactory} schedule
    their timeouts (the opening and closing handshakes, pings) with
    C{timer}, an object with txaio's C{call_later}, instead of the one
    Autobahn makes on txaio's (the global) reactor.
    """
    factory._batched_timer = timer


def _keepAutobahnTimer(factory: Any, timer: Any) -> None:
    pass


class _QuietTimeouts(Logger):
    """
    The log of L{ArtcastChannel}'s idle timeouts: Twisted's L{HTTPChannel}
    emits C{Timing out client} at C{info} for every connection it closes
    for being idle, and twistd's log writes every level: one line for each
    connection anyone opens and leaves (15,000 lines, 2 MB, in the abuse
    soak's 10 minutes).  A keep-alive client going quiet is ordinary, so
    those events are not emitted.  Twisted uses its channel's C{_log} for
    nothing else.
    """

    def info(self, format: str | None = None, **kwargs: object) -> None:
        pass


def quietIdleTimeouts(channelClass: type[_Channel]) -> type[_Channel]:
    """
    A class decorator for a subclass of L{http.HTTPChannel}: the idle
    timeouts of its connections are not logged (L{_QuietTimeouts}), by
    giving it its own C{_log}, the private logger of L{http.HTTPChannel}.
    Should Twisted stop using C{_log}, this does nothing at all, so it needs
    no check.
    """
    channelClass._log = _QuietTimeouts(namespace="twisted.web.http.HTTPChannel")
    return channelClass


# The check


#: For each function above, its ordinary path, and the area of private state
#: it depends on (see L{_problems}).
_FALLBACKS: dict[str, tuple[str, Callable[..., Any]]] = {
    "requestOver": ("disconnected", _requestOverPublic),
    "finishWritten": ("finish", _finishTwisted),
    "prebuiltFits": ("request", _prebuiltNever),
    "headFits": ("head", _never),
    "processFits": ("process", _prebuiltNever),
    "requestMade": ("init", _requestMadeNever),
    "encoderOf": ("process", _noEncoder),
    "queuedOutput": ("transport", _queuedOutputUnknown),
    "dropQueuedOutput": ("transport", _dropNothing),
    "sendNow": ("send", _sendLater),
    "presetAttributes": ("later", _presetOwn),
    "holdsPipeline": ("pipeline", _never),
    "transportFull": ("pipeline", _never),
    "readingTooFar": ("pipeline", _never),
    "useClock": ("autobahn", _keepAutobahnTimer),
}

_FAST: dict[str, Callable[..., Any]] = {name: globals()[name] for name in _FALLBACKS}


def _expect(problems: dict[str, list[str]], area: str, what: str, test: Callable[[], bool]) -> None:
    try:
        ok = test()
    except Exception:
        ok = False
    if not ok:
        problems.setdefault(area, []).append(what)


def _expectNames(
    problems: dict[str, list[str]], area: str, known: dict[tuple[type, str], tuple[str, ...]]
) -> None:
    """
    Expect the code of each method in C{known} to use no names but those
    listed for it (as in Twisted 26.10 and 24.7); a method that uses others
    is a problem of C{area}, named as C{Class.method}.
    """
    for (owner, method), names in known.items():
        _expect(problems, area, "%s.%s" % (owner.__name__, method),
                lambda owner=owner, method=method, names=names: (
                    set(getattr(owner, method).__code__.co_names) <= set(names)
                ))


def _problems() -> dict[str, list[str]]:
    """
    Look at the private state the functions above use, on objects of the
    installed Twisted and Autobahn made in memory.

    @return: What is not as expected, by area.
    """
    problems: dict[str, list[str]] = {}
    request = server.Request
    _expect(problems, "disconnected", "Request._disconnected",
            lambda: request._disconnected is False)
    for name, value in (("_disconnected", False), ("_encoder", None), ("_inFakeHead", False)):
        _expect(problems, "request", "Request.%s" % (name,),
                lambda name=name, value=value: getattr(request, name) is value)

    _expect(problems, "process", "Request.process", lambda: (
        set(server.Request.process.__code__.co_names) <= _PROCESS_NAMES
        and callable(resource._IEncodingResource.providedBy)
        and callable(server.Request._handleStar)
    ))

    _expectNames(problems, "finish", _FINISH_NAMES)
    _expectNames(problems, "init", _INIT_NAMES)

    def made() -> bool:
        # What a request made by Twisted has, against one made by
        # requestMade (the function itself, not the one chosen).
        making = http.HTTPChannel()
        making.site = server.Site(resource.Resource())
        making.makeConnection(StringTransport())
        making.setTimeout(None)
        twisteds = server.Request(making, 0)
        ours = server.Request.__new__(server.Request)
        _FAST["requestMade"](ours, making)
        return (
            set(vars(twisteds)) == _INIT_CONTAINERS | _INIT_SET
            and set(vars(ours)) == _INIT_SET
            and all(getattr(ours, name) == getattr(twisteds, name) for name in _INIT_SET)
        )

    _expect(problems, "init", "Request's attributes when made", made)

    descriptor = abstract.FileDescriptor(reactor=MemoryReactorClock())
    _expect(problems, "transport", "FileDescriptor buffer", lambda: (
        type(descriptor.dataBuffer) is bytes
        and type(descriptor.offset) is int
        and descriptor.__dict__.get("_tempDataBuffer") == []
        and descriptor.__dict__.get("_tempDataLen") == 0
    ))
    _expect(problems, "transport", "tcp.Connection._aborting",
            lambda: tcp.Connection._aborting is False)
    _expect(problems, "send", "tcp.Server's buffer and state", lambda: (
        tcp.Server.TLS is False
        and tcp.Server._aborting is False
        and tcp.Server._writeDisconnecting is False
        and tcp.Server._writeDisconnected is False
        and tcp.Server.disconnecting == 0
        and tcp.Server.connected == 0
        and descriptor.__dict__.get("_tempDataBuffer") == []
        and type(descriptor.dataBuffer) is bytes
    ))

    channel = http.HTTPChannel()
    channel.callLater = Clock().callLater  # type: ignore[method-assign]
    transport = StringTransport()
    _expect(problems, "later", "HTTPChannel's later attributes",
            lambda: all(hasattr(channel, name) for name in _CHANNEL_LATER_ATTRIBUTES))

    def requestLine() -> bool:
        reading = http.HTTPChannel()
        reading.callLater = Clock().callLater  # type: ignore[method-assign]
        reading.makeConnection(StringTransport())
        reading.dataReceived(b"GET / HTTP/1.1\r\n")
        line = (reading._command, reading._path, reading._version)  # type: ignore[attr-defined]
        reading.setTimeout(None)
        return line == (b"GET", b"/", b"HTTP/1.1")

    _expect(problems, "later", "HTTPChannel's request line", requestLine)

    _expectNames(problems, "head", _HEAD_NAMES)

    class Received(http.Request):
        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            pass

    def between() -> bool:
        # The function itself, not the one the last check chose.
        headFits = _FAST["headFits"]
        reading = http.HTTPChannel()
        reading.callLater = Clock().callLater  # type: ignore[method-assign]
        reading.requestFactory = Received  # type: ignore[assignment]
        reading.makeConnection(StringTransport())
        fresh = headFits(reading)
        reading.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
        midway = (
            reading._HTTPChannel__header == b"Host: x"  # type: ignore[attr-defined]
            and reading._HTTPChannel__first_line == 0  # type: ignore[attr-defined]
            and not headFits(reading)
        )
        reading.dataReceived(b"\r\n")
        read = (
            reading._handlingRequest is True  # type: ignore[attr-defined]
            and reading._HTTPChannel__first_line == 1  # type: ignore[attr-defined]
            and reading._receivedHeaderCount == 0
            and not reading.line_mode
            and not reading._busyReceiving
        )
        reading.setTimeout(None)
        return fresh and midway and read

    _expect(problems, "head", "HTTPChannel's state between requests", between)

    def pipeline() -> bool:
        channel.makeConnection(transport)
        before = (
            channel._waitingForTransport is False
            and channel._handlingRequest is False
            and channel._dataBuffer == []
            and type(channel._optimisticEagerReadSize) is int
        )
        channel.pauseProducing()
        paused = (
            channel._waitingForTransport is True
            and channel._networkProducer is transport
        )
        channel.resumeProducing()
        return before and paused and channel._waitingForTransport is False

    _expect(problems, "pipeline", "HTTPChannel's producer state", pipeline)
    channel.setTimeout(None)

    def autobahn() -> bool:
        from autobahn.twisted.websocket import WebSocketServerFactory

        factory = WebSocketServerFactory(reactor=Clock())
        return callable(getattr(factory._batched_timer, "call_later", None))

    _expect(problems, "autobahn", "WebSocketServerFactory._batched_timer", autobahn)
    return problems


def check() -> list[str]:
    """
    Check that Twisted's and Autobahn's private state is what the functions
    of this module expect, and put each function's ordinary path in place
    where it is not (see L{InternalsService}, which calls this once, when
    the service is made, and logs what it found).

    @return: What was not as expected (empty when all is).
    """
    problems = _problems()
    found: list[str] = []
    for area in problems.values():
        for what in area:
            if what not in found:
                found.append(what)
    chosen = globals()
    for name, (area, fallback) in _FALLBACKS.items():
        chosen[name] = fallback if area in problems else _FAST[name]
    return found


class InternalsService(Service):
    """
    Checks Twisted's and Autobahn's private state when made (L{check}), so
    that the objects made after it use the functions chosen, and says what
    was not as expected in one error-log line when started (after the error
    log, so that the line is in it).

    @ivar problems: What L{check} found not as expected.
    """

    def __init__(self) -> None:
        self.problems = check()

    def startService(self) -> None:
        super().startService()
        if self.problems:
            _log.error(
                "Twisted's or Autobahn's internals are not as expected ({what}): "
                "using the ordinary path where they are concerned (no output "
                "accounting, pipelining hold, prebuilt long-poll answers, heads "
                "read in one step, or WebSocket timeouts on our clock)",
                what=", ".join(self.problems),
            )


def endpointAddress(endpoint: object) -> tuple[str, int, int] | None:
    """
    The interface, port and backlog a C{tcp:} or C{tcp6:} server endpoint was
    made with.

    @return: C{(interface, port, backlog)}, or L{None} for another kind of
        endpoint or a Twisted whose TCP endpoints keep them elsewhere.
    """
    if not isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        return None
    try:
        return (endpoint._interface, endpoint._port, endpoint._backlog)
    except AttributeError:
        return None
