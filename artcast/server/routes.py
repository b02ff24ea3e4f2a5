# -*- test-case-name: tests.test_web -*-
"""
The HTTP face of Artcast: a Klein application over a L{KeyStore}.

C{GET /artcasts/<key>} is a long poll: it is answered when the next datum
for the key arrives, in the representation the client's C{Accept} header
asks for.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from typing import Any, Callable, cast
from urllib.parse import quote, unquote_to_bytes

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath, InsecurePath
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request
from werkzeug.exceptions import HTTPException, NotFound

from artcast.server import internals
from artcast.server import negotiate
from artcast.server.outlets import pages
from artcast.server.patterns import validatePattern
from artcast.server.connections import (
    CHUNK_SIZE,
    ArtcastRequest,
    ConnectionLimiter,
    writeBody,
)
from artcast.server.store import Datum, Found, KeyStore, Waiter, encodeJSON
from artcast.server.feeds.multicast import Stats
from artcast.server.feeds.publish import HTTPPublisher, Refused
from artcast.server.stats import (
    EVERYONE,
    Meter,
    Networks,
    metricsText,
    residentMemory,
    statsPage,
)
from artcast.server.shutdown import Closing
from artcast.server.outlets.streams import NDJSON, STREAM_TYPES, BadStart, StreamManager, isWebSocket
from artcast.wire import BadKey, validateKey

# werkzeug encodes host names with the idna codec on every request it routes;
# load it now, before twistd drops privileges and the standard library may no
# longer be readable.
codecs.lookup("idna")

#: The headers a cross-origin script may read (CORS).
ARTCAST_HEADERS = b"Artcast-Key, Artcast-Id, Artcast-Gap, ETag, Link"

#: What C{GET /artcasts/<key>} can answer with, in the server's preference.
VALUE_TYPES = (
    negotiate.JSON, negotiate.TEXT, negotiate.HTML, negotiate.EVENT_STREAM, NDJSON,
)

#: What C{GET /artcasts} can answer with.
LIST_TYPES = (negotiate.JSON, negotiate.HTML)

PREFIX = b"/artcasts/"

#: Characters left as they are when a key is put in a header or a URL.
KEY_SAFE = "/!$&'()*+,;=:@-._~"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_log = Logger(namespace="artcast.web")

#: How many paths' keys, and keys' license links, an L{ArtcastApp} keeps
#: made; past it, it starts again.
_CACHED = 4096


class BadRequest(Exception):
    """
    The request cannot be answered as asked; the message says why, and is
    sent to the client as the body of a C{400}.
    """


def headerKey(key: str) -> bytes:
    """
    A key as it is sent in the C{Artcast-Key} header: ASCII, with anything
    else percent-encoded as in the key's URL.
    """
    return quote(key, safe=KEY_SAFE).encode("ascii")


def _quoted(text: str) -> str:
    """
    A quoted-string for a header parameter, with controls removed.
    """
    clean = "".join(c for c in text if c >= " " and c != "\x7f")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def licenseLink(meta: dict[str, Any] | None) -> bytes | None:
    """
    The C{Link} header naming a registered license, if there is one.
    """
    if not meta:
        return None
    license = meta.get("license")
    if not isinstance(license, dict) or not isinstance(license.get("uri"), str):
        return None
    uri = quote(license["uri"], safe=";/?:@&=+$,-_.!~*'()#%[]")
    link = f'<{uri}>; rel="license"'
    title = license.get("title")
    if isinstance(title, str):
        link += "; title=" + _quoted(title)
    return link.encode("utf-8")


def readTemplate(folder: FilePath[str], key: str) -> bytes | None:
    """
    The content of a key's template, C{<folder>/<key>.html}, or L{None}
    when there is none.

    Only a regular file reached through real folders is a template: if the
    file, or any folder below C{folder} on its way, is a symbolic link, the
    key has no template, wherever the link points (even inside C{folder}).
    The file itself is opened with C{O_NOFOLLOW}, so a link put in its place
    after the check is not followed either.  C{folder} itself may be a link.

    @raise InsecurePath: if a level of the key would leave the folder.
    """
    template = folder.descendant((key + ".html").split("/"))
    step = folder
    for segment in template.segmentsFrom(folder)[:-1]:
        step = step.child(segment)
        if step.islink() or not step.isdir():
            return None
    try:
        fd = os.open(template.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as opened:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return opened.read()


class ArtcastResource(KleinResource):
    """
    Klein's resource, but a path that is not UTF-8 or holds control
    characters is a C{400} (Klein would give a C{500} or a C{404}), and a
    long poll, C{GET} or C{HEAD /artcasts/<key>}, goes straight to
    L{ArtcastApp.poll} without Klein's per-request routing (URL parts,
    werkzeug's bind and match, several L{Deferred}s): it is most of the
    requests a busy server takes.  Everything else is routed by Klein.

    @param application: the L{ArtcastApp} whose long polls are dispatched
        directly; without one, every request goes through Klein.
    """

    def __init__(self, app: Klein, application: ArtcastApp | None = None) -> None:
        super().__init__(app)
        self.application = application

    def render(self, request: IRequest) -> Any:
        postpath = request.postpath or []
        try:
            path = b"/".join(postpath).decode("utf-8")
        except UnicodeDecodeError:
            code, problem = 400, b"The path is not UTF-8.\n"
        else:
            if _CONTROL.search(path):
                code, problem = 400, b"The path holds control characters.\n"
            elif postpath and b"/" in postpath[0]:
                # /artcasts%2Fk is not /artcasts/k: Klein would route the
                # segments joined again, as if the %2F were a /.
                code, problem = 404, b"No such resource.\n"
            else:
                if (
                    self.application is not None
                    and request.method in _POLL_METHODS
                    and len(postpath) > 1
                    and postpath[0] == _POLL_SEGMENT
                ):
                    return self._poll(cast(Request, request), self.application)
                return super().render(request)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % (len(problem),))
        return problem

    def _poll(self, request: Request, application: ArtcastApp) -> Any:
        """
        Answer C{GET} or C{HEAD /artcasts/<key>} as Klein would: the answer
        written when it is ready, the wait cancelled if the client goes away,
        an unexpected error a C{500}.
        """
        postpath = request.postpath or []
        request.prepath = (request.prepath or []) + postpath[:1]
        request.postpath = postpath[1:]
        try:
            result = application.poll(request, application.prebuiltAnswer)
            if isinstance(result, LongPoll):
                result.hold()
                return NOT_DONE_YET
        except Exception:
            request.processingFailed(Failure())
            return NOT_DONE_YET
        if isinstance(result, bytes):
            _writeAnswer(result, request)
        elif isinstance(result, Deferred):
            # A stream: its Deferred fires when it ends.
            request.notifyFinish().addErrback(lambda _: result.cancel())
            result.addCallbacks(
                _writeAnswer, _answerFailed,
                callbackArgs=(request,), errbackArgs=(request,),
            )
        else:
            request.render(getChildForRequest(result, request))
        return NOT_DONE_YET


class LongPoll(Waiter):
    """
    A long poll waiting for the next datum of a key (or of the keys a
    pattern matches): one object per held request, registered with the
    L{KeyStore} as its L{Waiter}.

    It answers its request itself (L{hold}, what L{ArtcastResource} does):
    no L{Deferred}, no callbacks, no C{notifyFinish}; the request
    (L{ArtcastRequest}) cancels it when the client goes away.  Through Klein,
    L{wait} gives a L{Deferred} of the body instead.  Either way an answer is
    made by C{answer} when the datum comes, a C{204} by
    L{ArtcastApp._noContent} after C{timeout} seconds, and an unexpected error
    is a logged C{500}.
    """

    __slots__ = (
        "app", "request", "contentType", "gap", "answer", "timeout", "timer", "deferred",
    )

    def __init__(
        self,
        app: ArtcastApp,
        request: IRequest,
        key: str,
        contentType: str,
        gap: bool,
        answer: Callable[[IRequest, Datum, str, bool], bytes],
        skipThrough: tuple[str, int, int] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(app.store, key, skipThrough)
        self.app = app
        self.request = request
        self.contentType = contentType
        self.gap = gap
        self.answer = answer
        self.timeout = timeout
        self.timer: IDelayedCall | None = None
        self.deferred: Deferred[bytes] | None = None

    def hold(self) -> None:
        """
        Wait, and answer the request when the datum comes.
        """
        request = self.request
        if isinstance(request, ArtcastRequest):
            request.poll = self
        else:
            request.notifyFinish().addErrback(lambda _: self.cancel())
        self._begin()

    def wait(self) -> Deferred[bytes]:
        """
        Wait, and fire the returned L{Deferred} with the body of the answer
        (its headers set on the request); cancelling it stops the wait.
        """
        self.deferred = Deferred(lambda _: self.cancel())
        self._begin()
        return self.deferred

    def _begin(self) -> None:
        self.start()
        if self.timeout is not None:
            self.timer = self.app.clock.callLater(self.timeout, self._timedOut)

    def cancel(self) -> None:
        super().cancel()
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        request = self.request
        if isinstance(request, ArtcastRequest) and request.poll is self:
            # No cycle left for the garbage collector: the poll and its
            # request are freed as soon as the channel lets go.
            request.poll = None

    def arrived(self, datum: Datum) -> None:
        self.cancel()
        self._respond(self.answer, self.request, datum, self.contentType, self.gap)

    def _timedOut(self) -> None:
        self.timer = None
        self.cancel()
        self._respond(self.app._noContent, self.request, self.pattern)

    def stopped(self) -> None:
        self.cancel()
        self._fail(Failure(CancelledError()))

    def _respond(self, make: Callable[..., bytes], *args: Any) -> None:
        """
        Answer with what C{make(*args)} gives, unless the request is over.
        """
        request = cast(Request, self.request)
        if self.deferred is None and internals.requestOver(request):
            return
        try:
            body = make(*args)
        except Exception:
            self._fail(Failure())
            return
        if self.deferred is not None:
            self.deferred.callback(body)
        else:
            _writeAnswer(body, request)

    def _fail(self, failure: Failure) -> None:
        """
        The wait failed: a C{500}, and logged (when stopped by the store, a
        request already answered is left alone).
        """
        if self.deferred is not None:
            if not self.deferred.called:
                self.deferred.errback(failure)
            return
        _answerFailed(failure, cast(Request, self.request))


#: Where L{ArtcastApp.prebuiltAnswer} keeps a datum's prebuilt answers in
#: L{Datum.answers}, and how many kinds (representation, HTTP version,
#: C{Connection}) it keeps at most: the oldest made goes first.  Only a
#: key's latest datum keeps answers (the one many clients are sent at
#: once), and the store lets them go when a newer datum arrives, so what
#: the cache holds is bounded by the keys held, not by their history.
_PREBUILT = "prebuilt"
_CACHED_ANSWERS = 4

#: The methods of a long poll, and the (percent-decoded) first path segment
#: its key follows: the requests L{ArtcastResource} dispatches itself.
_POLL_METHODS = frozenset((b"GET", b"HEAD"))
_POLL_SEGMENT = b"artcasts"


def _representation(datum: Datum, contentType: str) -> tuple[bytes, bytes]:
    """
    A datum's body and C{Content-Type} for a negotiated long-poll answer:
    text for C{text/plain}, JSON otherwise.
    """
    if contentType == negotiate.TEXT:
        return datum.text, b"text/plain; charset=utf-8"
    return datum.json, b"application/json"


def _writeAnswer(body: bytes, request: Request) -> None:
    """
    Send a long poll's (or a stream's last) answer, unless the request is
    over: a large body in pieces, each as the client reads the ones before
    (L{writeBody}).
    """
    if not internals.requestOver(request):
        writeBody(request, body)


class SharedBody(Resource):
    """
    Answers with one body, shared by every request that sends it (the
    C{/artcasts} listing), written through a L{BodyProducer}: a client that
    reads slowly holds no copy of it.  The request's headers are set.
    """

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render(self, request: IRequest) -> Any:  # type: ignore[override]
        writeBody(request, self.body)
        return NOT_DONE_YET


def _answerFailed(failure: Failure, request: Request) -> None:
    """
    A long poll (or a stream) that failed: cancelled because its client went
    away (nothing to say), or an error, answered with a C{500} and logged
    (only logged when the request is already over).
    """
    if internals.requestOver(request):
        if not failure.check(CancelledError):
            _log.failure("Unhandled error answering a long poll.", failure)
        return
    request.processingFailed(failure)


class ArtcastApp:
    """
    The Klein application serving one L{KeyStore}.

    @param allowOrigin: the C{Access-Control-Allow-Origin} value.
    @param pollTimeout: the default long-poll timeout in seconds, or L{None}
        to hold a request until a datum comes.
    @param templates: a folder of per-key HTML pages, C{<key>.html}.
    @param publisher: takes C{POST}/C{PUT /artcasts/<key>}; without one
        those methods are a C{405}.
    """

    app = Klein()
    # A key is a path with no empty level; a request for one gets a 400, not
    # a redirect to a different key.
    app.url_map.merge_slashes = False

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        allowOrigin: str = "*",
        pollTimeout: float | None = None,
        templates: FilePath[str] | None = None,
        stats: Stats | None = None,
        statsNetworks: Networks | None = None,
        publisher: HTTPPublisher | None = None,
        heartbeat: float = 15.0,
        maxQueued: int = 1 << 20,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.stats = stats if stats is not None else Stats()
        self.statsNetworks = statsNetworks or Networks.parse(EVERYONE)
        self.started = clock.seconds()
        self._datumRate = Meter(clock, lambda: self.stats.datums)
        self.clock = clock
        self.allowOrigin = allowOrigin.encode("latin-1")
        self.pollTimeout = pollTimeout
        self.templates = templates
        self._keys: dict[bytes, str] = {}
        self._links: dict[str, tuple[bytes | None, bytes | None]] = {}
        self._dateSecond = -1
        self._dateLine = b""
        #: The C{/artcasts} listing: the store's C{keysVersion} it was made
        #: at, and its JSON and HTML bodies, each made when first asked for.
        self._listing: list[Any] = [None, None, None]
        #: The HTTP connections, set by L{artcast.server.tap.makeService}; their
        #: figures (open connections, refusals by reason) join C{/stats}.
        self.connections: ConnectionLimiter | None = None
        #: Where long-lived answers (streams) register to be told of shutdown.
        self.closing = Closing()
        #: Figures naming this process in C{/stats}: a worker's C{worker}
        #: and C{pid} (set by L{artcast.server.tap.makeService}, L{artcast.server.workers}).
        self.identity: dict[str, Any] = {}
        #: The SSE, NDJSON and WebSocket streams (see L{artcast.server.outlets.streams}).
        self.streams = StreamManager(
            store, clock, heartbeat=heartbeat, maxQueued=maxQueued,
            allowOrigin=allowOrigin, closing=self.closing,
        )

    def resource(self) -> KleinResource:
        """
        The resource to serve.
        """
        return ArtcastResource(self.app, self)

    # Helpers

    def _common(self, request: IRequest) -> None:
        request.setHeader(b"Access-Control-Allow-Origin", self.allowOrigin)
        request.setHeader(b"Access-Control-Expose-Headers", ARTCAST_HEADERS)

    def _body(
        self, request: IRequest, body: bytes, contentType: bytes, code: int = 200
    ) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", contentType)
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        return body

    def _error(self, request: IRequest, code: int, message: str) -> bytes:
        self._common(request)
        return self._body(
            request,
            message.encode("utf-8") + b"\n",
            b"text/plain; charset=utf-8",
            code,
        )

    def _key(self, request: IRequest) -> str:
        """
        The key named by the request's path, percent-decoded and validated
        (once per path: a busy key's polls all name the same one).

        The path is split at each C{/} into segments, and each segment
        percent-decoded, as Twisted does (C{request.postpath}): the first
        must be C{artcasts} (also spelt C{%61rtcasts}), and the key is the
        other segments joined with C{/}.  A C{%2F} in a key segment is a
        C{/}, the level separator (a level cannot hold one): C{a%2Fb} and
        C{a/b} name the same key.

        @raise BadRequest: if it is not a valid key or pattern.
        @raise NotFound: if the path is not C{/artcasts/<key>}.
        """
        path = request.path
        key = self._keys.get(path)
        if key is not None:
            return key
        # As Twisted splits it into request.postpath.
        first, _, rest = path[1:].partition(b"/")
        if unquote_to_bytes(first) != _POLL_SEGMENT:
            raise NotFound()
        try:
            key = unquote_to_bytes(rest).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The key is not UTF-8.")
        try:
            validateKey(key, allowWildcards=True)
            validatePattern(key)
        except BadKey as error:
            raise BadRequest(str(error))
        if len(self._keys) >= _CACHED:
            self._keys.clear()
        self._keys[path] = key
        return key

    def _link(self, key: str) -> bytes | None:
        """
        The C{Link} header of a key's registered license, made once per
        registration.
        """
        registration = self.store.registration(key)
        cached = self._links.get(key)
        if cached is not None and cached[0] is registration:
            return cached[1]
        link = licenseLink(self.store.metadata(key))
        if len(self._links) >= _CACHED:
            self._links.clear()
        self._links[key] = (registration, link)
        return link

    def _argument(self, request: IRequest, name: bytes) -> str | None:
        values = request.args.get(name)
        if not values:
            return None
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"The {name.decode()} parameter is not UTF-8.")

    def _timeout(self, request: IRequest) -> float | None:
        text = self._argument(request, b"timeout")
        if text is None:
            return self.pollTimeout
        try:
            timeout = float(text)
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= 86400:
            raise BadRequest(
                "timeout must be a number of seconds from 0 to 86400."
            )
        return timeout

    def _since(self, request: IRequest, key: str) -> Found | None:
        """
        Where the client says it is: C{since=} or C{If-None-Match}.
        """
        since = self._argument(request, b"since")
        if since is None:
            match = request.getHeader(b"If-None-Match")
            if match:
                since = (
                    match.decode("latin-1").strip().removeprefix("W/").strip('"')
                )
        if since is None:
            return None
        if since == "latest":
            return Found(self.store.latest(key))
        try:
            return self.store.since(key, since)
        except ValueError:
            raise BadRequest(f"{since!r} is not an Artcast id.")

    def valueAnswer(
        self, request: IRequest, datum: Datum, contentType: str, gap: bool = False
    ) -> bytes:
        """
        Answer a request with a datum in the negotiated representation.

        The headers and body are made once per datum and representation
        (and kept with the datum), however many clients it is sent to.
        """
        link = self._link(datum.key)
        answers = self._answersOf(datum)
        answer = answers.get(contentType)
        if answer is None or answer[0] is not link or answer[1] is not self.allowOrigin:
            answer = answers[contentType] = (
                link, self.allowOrigin, self._answerHeaders(datum, contentType, link)
            )
        setHeader = request.setHeader
        for name, value in answer[2]:
            setHeader(name, value)
        if gap:
            setHeader(b"Artcast-Gap", b"1")
        request.setResponseCode(200)
        return _representation(datum, contentType)[0]

    def _answersOf(self, datum: Datum) -> dict[Any, Any]:
        """
        Where the answers made of a datum are kept: with the datum when it
        is its key's latest (its answers go with it when a newer one
        arrives), else in a dict thrown away after this answer, so that
        clients resuming through a key's history cannot make every datum
        held keep headers of its own.
        """
        if not self.store.isLatest(datum):
            return {}
        answers = datum.answers
        if answers is None:
            answers = datum.answers = {}
        return answers

    def prebuiltAnswer(
        self, request: IRequest, datum: Datum, contentType: str, gap: bool = False
    ) -> bytes:
        """
        Answer a long poll with a datum in one transport write: the status
        line and the headers made once per datum, representation, HTTP
        version and C{Connection} header, with a C{Date} made at most once a
        second, instead of Twisted's per-request header building, and the
        datum's own body bytes (not a copy: the cache holds only heads).  A
        body larger than L{CHUNK_SIZE} is not written with the head: it is
        returned, for the caller to write as the client reads (L{writeBody}).

        The request is left as Twisted's own write would leave it (code,
        C{startedWriting}, C{sentLength}): C{finish}, persistence, the access
        log and C{notifyFinish} work as for any answer.  A request this does
        not fit (C{HEAD}, headers or a code already set, an encoder, not
        HTTP/1.x) gets L{valueAnswer}.

        @return: C{b""} when the answer is written, else the body to write
            (then finish the request).
        """
        req = cast(Request, request)
        headers = req.responseHeaders
        server = headers.getRawHeaders(b"Server")
        connection = headers.getRawHeaders(b"Connection")
        if (
            req.method != b"GET"
            or req.startedWriting
            or not internals.prebuiltFits(req)
            or req.code != 200
            or req.code_message != b"OK"
            or not isinstance(req.channel, HTTPChannel)
            or server is None
            or len(list(headers.getAllRawHeaders()))
            != (3 if connection is not None else 2)
            or not headers.hasHeader(b"Date")
        ):
            return self.valueAnswer(request, datum, contentType, gap)
        link = self._link(datum.key)
        answers = self._answersOf(datum)
        prebuilt = answers.get(_PREBUILT)
        if prebuilt is None:
            prebuilt = answers[_PREBUILT] = {}
        cacheKey = (
            contentType, req.clientproto, server[0],
            connection[0] if connection is not None else None, gap,
        )
        cached = prebuilt.get(cacheKey)
        if cached is None or cached[0] is not link or cached[1] is not self.allowOrigin:
            if len(prebuilt) >= _CACHED_ANSWERS:
                del prebuilt[next(iter(prebuilt))]
            cached = prebuilt[cacheKey] = (
                link, self.allowOrigin,
                self._prebuild(datum, contentType, link, req.clientproto,
                               server, connection, gap),
            )
        head, rest = cached[2]
        body = _representation(datum, contentType)[0]
        now = int(self.clock.seconds())
        if now != self._dateSecond:
            self._dateSecond = now
            self._dateLine = b"Date: %s\r\n" % (datetimeToString(now),)
        req.startedWriting = 1
        if len(body) > CHUNK_SIZE:
            # Counted by the request as it writes it.
            req.sentLength = 0
            req.channel.writeSequence((head, self._dateLine, rest))
            return body
        req.sentLength = len(body)
        req.channel.writeSequence((head, self._dateLine, rest, body))
        return b""

    def _prebuild(
        self,
        datum: Datum,
        contentType: str,
        link: bytes | None,
        version: bytes,
        server: list[bytes],
        connection: list[bytes] | None,
        gap: bool,
    ) -> tuple[bytes, bytes]:
        """
        A prebuilt answer's head: what comes before the C{Date} line (status
        line, C{Connection} and C{Server}, set before it by Twisted), and what
        comes after it (the other headers and the blank line); the headers in
        the order and spelling Twisted's C{writeHeaders} gives them.  The
        body is not in it: it is the datum's own (L{Datum.json} or
        L{Datum.text}), so a cached answer costs its head, not a copy of the
        value.
        """
        before = Headers()
        if connection is not None:
            before.setRawHeaders(b"Connection", connection)
        before.setRawHeaders(b"Server", server)
        after = Headers()
        for name, value in self._answerHeaders(datum, contentType, link):
            after.setRawHeaders(name, [value])
        if gap:
            after.setRawHeaders(b"Artcast-Gap", [b"1"])

        def lines(headers: Headers) -> bytes:
            return b"".join(
                b"%s: %s\r\n" % (name, value)
                for name, values in headers.getAllRawHeaders()
                for value in values
            )

        head = b"%s 200 OK\r\n" % (version,) + lines(before)
        return head, lines(after) + b"\r\n"

    def _answerHeaders(
        self, datum: Datum, contentType: str, link: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """
        The headers of an answer carrying C{datum}, but C{Artcast-Gap}.
        """
        datumId = datum.id.encode("ascii")
        body, mediaType = _representation(datum, contentType)
        headers = [
            (b"Access-Control-Allow-Origin", self.allowOrigin),
            (b"Access-Control-Expose-Headers", ARTCAST_HEADERS),
            (b"Artcast-Key", headerKey(datum.key)),
            (b"Artcast-Id", datumId),
            (b"ETag", b'W/"%s"' % (datumId,)),
            (b"Cache-Control", b"no-store"),
            (b"Vary", b"Accept"),
            (b"Content-Type", mediaType),
            (b"Content-Length", b"%d" % (len(body),)),
        ]
        if link is not None:
            headers.append((b"Link", link))
        return headers

    def _noContent(self, request: IRequest, key: str) -> bytes:
        self._common(request)
        request.setResponseCode(204)
        request.setHeader(b"Cache-Control", b"no-store")
        latest = self.store.latest(key)
        if latest is not None:
            request.setHeader(b"Artcast-Id", latest.id.encode("ascii"))
            request.setHeader(b"ETag", b'W/"%s"' % (latest.id.encode("ascii"),))
        return b""

    # Routes

    @app.route("/", methods=["GET", "HEAD"])
    def root(self, request: IRequest) -> bytes:
        request.redirect(b"/artcasts")
        return self._body(request, b"", b"text/plain; charset=utf-8", 302)

    @app.route("/artcasts", methods=["GET", "HEAD"])
    def listing(self, request: IRequest) -> bytes | IResource:
        """
        The list of artcasts.  Each representation is made once per change
        of the keys or their metadata, and a large one is written from that
        one body to every client, in pieces as each reads (L{SharedBody}).
        """
        chosen = negotiate.negotiate(request.getHeader(b"Accept"), LIST_TYPES)
        if chosen is None:
            return self._error(request, 406, "Only JSON and HTML are offered.")
        self._common(request)
        request.setHeader(b"Vary", b"Accept")
        html = chosen == negotiate.HTML
        body = self._listingBody(html)
        self._body(
            request, body,
            b"text/html; charset=utf-8" if html else b"application/json",
        )
        if len(body) > CHUNK_SIZE:
            return SharedBody(body)
        return body

    def _listingBody(self, html: bool) -> bytes:
        """
        The listing's JSON or HTML body, made anew only when the keys or
        their metadata changed since it was last made (metadata registered
        again with the same content is no change).
        """
        cache = self._listing
        if cache[0] != self.store.keysVersion:
            cache[:] = [self.store.keysVersion, None, None]
        index = 2 if html else 1
        body = cache[index]
        if body is None:
            artcasts = []
            for key, meta in self.store.keys():
                entry = {"key": key}
                if meta:
                    entry.update((k, v) for k, v in meta.items() if k != "key")
                artcasts.append(entry)
            body = cache[index] = (
                pages.listPage(artcasts) if html else encodeJSON(artcasts)
            )
        return body

    @app.route("/artcasts/", branch=True, methods=["GET", "HEAD"])
    def artcast(self, request: IRequest) -> bytes | Deferred[bytes] | IResource:
        """
        A long poll (or a stream, a page) of one key, routed by Klein.
        """
        result = self.poll(request, self.valueAnswer)
        if isinstance(result, LongPoll):
            return result.wait()
        return result

    def poll(
        self,
        request: IRequest,
        answer: Callable[[IRequest, Datum, str, bool], bytes],
    ) -> bytes | Deferred[bytes] | IResource | LongPoll:
        """
        Take C{GET} or C{HEAD /artcasts/<key>}: the answer at once (a datum
        from history, an error), a stream's L{Deferred} (fired when it
        ends), a resource that answers it (a page, a WebSocket), or a
        L{LongPoll} to hold.

        @param answer: what answers the request with a datum:
            L{valueAnswer}, or L{prebuiltAnswer} from L{ArtcastResource}.
        """
        try:
            key = self._key(request)
            if request.method == b"GET" and isWebSocket(request):
                return self.streams.webSocket(request, key)
            chosen = negotiate.negotiate(request.getHeader(b"Accept"), VALUE_TYPES)
            if chosen is None:
                return self._error(
                    request, 406, "Offered: " + ", ".join(VALUE_TYPES) + "."
                )
            if chosen == negotiate.HTML:
                return self.page(request, key)
            if chosen in STREAM_TYPES:
                self._common(request)
                return self.streams.stream(request, key, chosen)
            timeout = self._timeout(request)
            found = self._since(request, key)
        except (BadRequest, BadStart) as error:
            return self._error(request, 400, str(error))
        except NotFound:
            return self._error(request, 404, "No such resource.")
        if found is not None and found.datum is not None:
            return answer(request, found.datum, chosen, found.gap)
        return LongPoll(
            self, request, key, chosen, found is not None and found.gap, answer,
            found.skipThrough if found else None, timeout,
        )

    @app.route("/artcasts/", branch=True, methods=["POST", "PUT"])
    def publishing(self, request: IRequest) -> bytes:
        """
        C{POST} or C{PUT /artcasts/<key>}: publish the body as the key's next
        datum (see L{artcast.server.feeds.publish}).  C{201} when the key was new on this
        server, else C{200}, with the datum's id in C{Artcast-Id}.
        """
        if self.publisher is None:
            request.setHeader(b"Allow", b"GET, HEAD")
            return self._error(
                request, 405, "This server does not take datums over HTTP."
            )
        try:
            grant = self.publisher.authorize(request)
            key = self._key(request)
            datum, created = self.publisher.publish(request, grant, key)
        except BadRequest as error:
            return self._error(request, 400, str(error))
        except Refused as refusal:
            for name, value in refusal.headers:
                request.setHeader(name, value)
            body = self._error(request, refusal.code, refusal.message)
            if refusal.code == 429:
                # Twisted knows no reason phrase for it.
                request.setResponseCode(429, b"Too Many Requests")
            return body
        self._common(request)
        request.setHeader(b"Artcast-Key", headerKey(datum.key))
        request.setHeader(b"Artcast-Id", datum.id.encode("ascii"))
        request.setHeader(b"ETag", b'W/"%s"' % (datum.id.encode("ascii"),))
        request.setHeader(b"Cache-Control", b"no-store")
        if created:
            request.setHeader(b"Location", PREFIX + headerKey(datum.key))
        return self._body(
            request,
            encodeJSON({"key": datum.key, "id": datum.id}),
            b"application/json",
            201 if created else 200,
        )

    def _statsAllowed(self, request: IRequest) -> bool:
        peer = request.getClientAddress()
        return self.statsNetworks.allows(getattr(peer, "host", ""))

    def _statsError(self, request: IRequest, code: int, message: str) -> bytes:
        """
        An error answer of C{/stats}, C{/stats.json} or C{/metrics}: for
        operators only, so without CORS headers (see L{statsHTML}).
        """
        return self._body(
            request, message.encode("utf-8") + b"\n", b"text/plain; charset=utf-8", code
        )

    @app.route("/stats", methods=["GET", "HEAD"])
    def statsHTML(self, request: IRequest) -> bytes:
        """
        C{/stats}, C{/stats.json} and C{/metrics} are for operators: they
        carry no C{Access-Control-Allow-Origin}, so a web page (from any
        origin but the server's own) cannot read them through the browser
        of someone inside the allowed networks.
        """
        if not self._statsAllowed(request):
            return self._statsError(request, 403, "Statistics are not shown to your network.")
        chosen = negotiate.negotiate(request.getHeader(b"Accept"), LIST_TYPES)
        if chosen is None:
            return self._statsError(request, 406, "Only JSON and HTML are offered.")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Vary", b"Accept")
        if chosen == negotiate.HTML:
            return self._body(
                request, statsPage(self.statistics()), b"text/html; charset=utf-8"
            )
        return self._body(request, encodeJSON(self.statistics()), b"application/json")

    @app.route("/stats.json", methods=["GET", "HEAD"])
    def statsJSON(self, request: IRequest) -> bytes:
        if not self._statsAllowed(request):
            return self._statsError(request, 403, "Statistics are not shown to your network.")
        request.setHeader(b"Cache-Control", b"no-store")
        return self._body(request, encodeJSON(self.statistics()), b"application/json")

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics(self, request: IRequest) -> bytes:
        if not self._statsAllowed(request):
            return self._statsError(request, 403, "Metrics are not shown to your network.")
        return self._body(
            request,
            metricsText(self.statistics),
            b"text/plain; version=0.0.4; charset=utf-8",
        )

    def statistics(self) -> dict[str, Any]:
        """
        What C{/stats} shows.
        """
        counters = self.stats
        figures = {
            "uptime": self.clock.seconds() - self.started,
            "waiting": self.store.listening,
            "keys": len(self.store),
            "datagrams": counters.datagrams,
            "datums": counters.datums,
            "datums_per_second": round(self._datumRate.rate(), 3),
            "registrations": counters.registrations,
            "missed": counters.missed,
            "memory": residentMemory(),
            "keys_evicted": self.store.evicted,
            "dropped": dict(counters.dropped),
            "sources": dict(counters.sources),
            "waiting_per_key": self.store.waitingByPattern(),
        }
        figures.update(self.store.statistics())
        if self.connections is not None:
            figures.update(self.connections.statistics())
        figures.update(self.streams.statistics())
        if self.publisher is not None:
            figures["published"] = self.publisher.published
            figures["publish_refused"] = {
                str(code): count for code, count in self.publisher.refused.items()
            }
        figures.update(self.identity)
        return figures

    def page(self, request: IRequest, key: str) -> bytes:
        """
        The HTML page of a key: the template for it if there is one, else the
        built-in live page.
        """
        self._common(request)
        request.setHeader(b"Vary", b"Accept")
        if self.templates is not None:
            try:
                template = readTemplate(self.templates, key)
            except InsecurePath:
                return self._error(request, 400, "That key has no page.")
            if template is not None:
                return self._body(request, template, b"text/html; charset=utf-8")
        return self._body(request, pages.livePage(key), b"text/html; charset=utf-8")

    @app.handle_errors(BadRequest)
    def badRequest(self, request: IRequest, failure: Any) -> bytes:
        return self._error(request, 400, str(failure.value))

    @app.handle_errors(HTTPException)
    def httpError(self, request: IRequest, failure: Any) -> bytes:
        error = failure.value
        for name, value in error.get_headers():
            if name.lower() == "allow":
                request.setHeader(b"Allow", value.encode("latin-1"))
        return self._error(request, error.code or 500, error.description or error.name)
