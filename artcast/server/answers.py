# -*- test-case-name: tests.test_web -*-
"""
How a datum is answered over HTTP: the headers, the representation and the
prebuilt raw-bytes answers of C{GET /artcasts/<key>}, and the C{204} of a
long poll that timed out.

An L{Answers} object owns all of it for one server: the headers every
answer of the API carries (CORS), a datum's (C{Artcast-Key}, C{Artcast-Id},
C{Artcast-Gap}, C{ETag}, the license C{Link}), the body in the negotiated
representation (JSON or text), the answers made once per datum and kept with
it (L{Answers.valueAnswer}, and L{Answers.prebuiltAnswer}, written in one
transport write with a C{Date} line made at most once a second) and the
C{204} (L{Answers.noContent}).  The routes (L{artcast.server.routes}) and
the long polls (L{artcast.server.outlets.longpoll}) answer through it.
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import quote

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from artcast.server import internals, negotiate
from artcast.server.connections import CHUNK_SIZE, ArtcastRequest, writeBody
from artcast.server.store import Datum, KeyStore
from artcast.wire import quoteKey

__all__ = [
    "ARTCAST_HEADERS",
    "Answers",
    "SharedBody",
    "answerFailed",
    "headerKey",
    "licenseLink",
    "writeAnswer",
]

#: The headers a cross-origin script may read (CORS).
ARTCAST_HEADERS = b"Artcast-Key, Artcast-Id, Artcast-Gap, ETag, Link"


_log = Logger(namespace="artcast.web")

#: How many keys' license links an L{Answers} keeps made; past it, it
#: starts again.
_CACHED_LINKS = 4096

#: Where L{Answers.prebuiltAnswer} keeps a datum's prebuilt answers in
#: L{Datum.answers}, and how many kinds (representation, HTTP version,
#: C{Connection}) it keeps at most: the oldest made goes first.  Only a
#: key's latest datum keeps answers (the one many clients are sent at
#: once), and the store lets them go when a newer datum arrives, so what
#: the cache holds is bounded by the keys held, not by their history.
_PREBUILT = "prebuilt"
_CACHED_ANSWERS = 4


def headerKey(key: str) -> bytes:
    """
    A key as it is sent in the C{Artcast-Key} header: ASCII, with anything
    else percent-encoded as in the key's URL.
    """
    return quoteKey(key).encode("ascii")


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


def _representation(datum: Datum, contentType: str) -> tuple[bytes, bytes]:
    """
    A datum's body and C{Content-Type} for a negotiated long-poll answer:
    text for C{text/plain}, JSON otherwise.
    """
    if contentType == negotiate.TEXT:
        return datum.text, b"text/plain; charset=utf-8"
    return datum.json, b"application/json"


def writeAnswer(body: bytes, request: Request) -> None:
    """
    Send a long poll's (or a stream's last) answer, unless the request is
    over: a large body in pieces, each as the client reads the ones before
    (L{writeBody}).
    """
    if not internals.requestOver(request):
        writeBody(request, body)


def answerFailed(failure: Failure, request: Request) -> None:
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


class Answers:
    """
    The answers of one server's API: their headers, the representation of a
    datum, the answers made once per datum, the cached C{Date} line and the
    C{204} of a long poll that timed out.

    @param store: the L{KeyStore} whose datums, licenses and latest ids the
        answers carry.
    @param clock: what gives the time of the C{Date} line.
    @param allowOrigin: the C{Access-Control-Allow-Origin} value.
    """

    def __init__(self, store: KeyStore, clock: IReactorTime, allowOrigin: str = "*") -> None:
        self.store = store
        self.clock = clock
        self.allowOrigin = allowOrigin.encode("latin-1")
        self._links: dict[str, tuple[bytes | None, bytes | None]] = {}
        self._dateSecond = -1
        self._dateLine = b""
        #: The last prebuilt answer joined whole, with the second of its
        #: C{Date}: C{(cached entry, second, bytes)}.
        self._whole: tuple[Any, int, bytes] = (None, -1, b"")
        #: The last prebuilt answer made: its datum, cache key, the store's
        #: C{keysVersion} (which grows when a key's metadata, so its
        #: C{Link}, changes), C{Access-Control-Allow-Origin}, cached entry
        #: and body.
        self._last: tuple[Any, ...] = (None, None, -1, None, None, b"")

    def cors(self, request: IRequest) -> None:
        """
        Set the headers every answer of the API carries: the CORS ones.
        """
        request.setHeader(b"Access-Control-Allow-Origin", self.allowOrigin)
        request.setHeader(b"Access-Control-Expose-Headers", ARTCAST_HEADERS)

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
        if len(self._links) >= _CACHED_LINKS:
            self._links.clear()
        self._links[key] = (registration, link)
        return link

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
        # (Not typing.cast: a call per answer.)
        req: Any = request
        held = req.heldServer() if isinstance(req, ArtcastRequest) else None
        if held is not None:
            # A held request's headers, let go of while it waited: only
            # Twisted's Server and Date (see ArtcastRequest.hold).
            server: Sequence[bytes] | None = [held]
            connection: Sequence[bytes] | None = None
            onlyDefaults = True
        else:
            headers = req.responseHeaders
            server = headers.getRawHeaders(b"Server")
            connection = headers.getRawHeaders(b"Connection")
            onlyDefaults = (
                server is not None
                and len(list(headers.getAllRawHeaders()))
                == (3 if connection is not None else 2)
                and headers.hasHeader(b"Date")
            )
        if (
            req.method != b"GET"
            or req.startedWriting
            or not internals.prebuiltFits(req)
            or req.code != 200
            or req.code_message != b"OK"
            or not isinstance(req.channel, HTTPChannel)
            or not onlyDefaults
        ):
            return self.valueAnswer(request, datum, contentType, gap)
        assert server is not None
        cacheKey = (
            contentType, req.clientproto, server[0],
            connection[0] if connection is not None else None, gap,
        )
        last = self._last
        version = self.store.keysVersion
        if (
            last[0] is datum
            and last[1] == cacheKey
            and last[2] == version
            and last[3] is self.allowOrigin
        ):
            # The same answer as the one before (the other waiters of a
            # fan-out): nothing it is made of can have changed.
            cached, body = last[4], last[5]
        else:
            link = self._link(datum.key)
            answers = self._answersOf(datum)
            prebuilt = answers.get(_PREBUILT)
            if prebuilt is None:
                prebuilt = answers[_PREBUILT] = {}
            cached = prebuilt.get(cacheKey)
            if cached is None or cached[0] is not link or cached[1] is not self.allowOrigin:
                if len(prebuilt) >= _CACHED_ANSWERS:
                    del prebuilt[next(iter(prebuilt))]
                cached = prebuilt[cacheKey] = (
                    link, self.allowOrigin,
                    self._prebuild(datum, contentType, link, req.clientproto,
                                   server, connection, gap),
                )
            body = _representation(datum, contentType)[0]
            self._last = (datum, cacheKey, version, self.allowOrigin, cached, body)
        head, rest = cached[2]
        now = int(self.clock.seconds())
        if now != self._dateSecond:
            self._dateSecond = now
            self._dateLine = b"Date: %s\r\n" % (datetimeToString(now),)
        req.startedWriting = 1
        channel = req.channel
        if len(body) > CHUNK_SIZE:
            # Counted by the request as it writes it.
            req.sentLength = 0
            channel.writeSequence((head, self._dateLine, rest))
            return body
        req.sentLength = len(body)
        sendNow = getattr(channel.transport, "sendNow", None)
        if sendNow is not None:
            # Sent in this turn, most often whole (see
            # TrackedConnection.sendNow); joined once for all the waiters of
            # a fan-out that get the same answer in the same second.
            whole = self._whole
            if whole[0] is not cached or whole[1] != now:
                whole = self._whole = (
                    cached, now, b"".join((head, self._dateLine, rest, body))
                )
            sendNow(whole[2])
        else:
            channel.writeSequence((head, self._dateLine, rest, body))
        return b""

    def _prebuild(
        self,
        datum: Datum,
        contentType: str,
        link: bytes | None,
        version: bytes,
        server: Sequence[bytes],
        connection: Sequence[bytes] | None,
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

    def noContent(self, request: IRequest, key: str) -> bytes:
        """
        Answer a long poll of C{key} (a key or a pattern) whose timeout
        passed before a datum came: a C{204}, with the id of the key's
        latest datum when it has one.
        """
        self.cors(request)
        request.setResponseCode(204)
        request.setHeader(b"Cache-Control", b"no-store")
        latest = self.store.latest(key)
        if latest is not None:
            request.setHeader(b"Artcast-Id", latest.id.encode("ascii"))
            request.setHeader(b"ETag", b'W/"%s"' % (latest.id.encode("ascii"),))
        return b""
