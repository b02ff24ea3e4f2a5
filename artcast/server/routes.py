# -*- test-case-name: tests.test_web -*-
"""
The HTTP face of Artcast: a Klein application over a L{KeyStore}.

C{GET /artcasts/<key>} is a long poll: it is answered when the next datum
for the key arrives, in the representation the client's C{Accept} header
asks for.

Here are the routes (L{ArtcastApp}), the parsing of their requests, and
L{ArtcastResource}, which takes long polls itself ahead of Klein's routing.
The answers are made by L{artcast.server.answers.Answers}; a held long poll
is an L{artcast.server.outlets.longpoll.LongPoll}.
"""

from __future__ import annotations

import codecs
import hashlib
import weakref
from importlib.resources import files
from typing import Any, Callable, Mapping, Sequence, cast
from urllib.parse import unquote_to_bytes

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath, InsecurePath
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request
from werkzeug.exceptions import HTTPException, NotFound

from artcast.server import negotiate
from artcast.server.answers import Answers, SharedBody, answerFailed, headerKey, writeAnswer
from artcast.server.outlets import pages
from artcast.server.outlets.longpoll import LongPoll
from artcast.server.patterns import validatePattern
from artcast.server.connections import CHUNK_SIZE
from artcast.server.store import Datum, Found, KeyStore
from artcast.server.feeds.publish import HTTPPublisher, Refused
from artcast.server.feeds.upstream import UPSTREAMS_HEADER, VIA_HEADER, parseUpstreams
from artcast.server.stats import (
    EVERYONE,
    Networks,
    ServerStatistics,
    Stats,
    metricsText,
    statsPage,
)
from artcast.server.shutdown import Closing
from artcast.server.outlets.streams import NDJSON, STREAM_TYPES, BadStart, StreamManager, isWebSocket
from artcast.server.outlets.streams import DEFAULT_HEARTBEAT, DEFAULT_MAX_QUEUED
from artcast.wire import CONTROL_CHARACTERS, BadKey, encodeJSON, validateKey

__all__ = [
    "LIST_TYPES",
    "PREFIX",
    "SCRIPT",
    "VALUE_TYPES",
    "ArtcastApp",
    "ArtcastResource",
    "BadRequest",
]

# werkzeug encodes host names with the idna codec on every request it routes;
# load it now, before twistd drops privileges and the standard library may no
# longer be readable.
codecs.lookup("idna")

#: What C{GET /artcasts/<key>} can answer with, in the server's preference.
VALUE_TYPES = (
    negotiate.JSON, negotiate.TEXT, negotiate.HTML, negotiate.EVENT_STREAM, NDJSON,
)

#: What C{GET /artcasts} can answer with.
LIST_TYPES = (negotiate.JSON, negotiate.HTML)

PREFIX = b"/artcasts/"

#: The browser client served at C{/artcast.js}, read once, at import (before
#: twistd drops privileges): package data of L{artcast.server.outlets}.
SCRIPT = files("artcast.server.outlets").joinpath("artcast.js").read_bytes()

#: Its weak C{ETag}: it changes only with the file.
_SCRIPT_TAG = b'W/"%s"' % (hashlib.sha256(SCRIPT).hexdigest()[:16].encode("ascii"),)

#: How long, in seconds, a browser may keep C{/artcast.js} without asking.
_SCRIPT_MAX_AGE = 3600

#: How many paths' keys an L{ArtcastApp} keeps made; past it, it starts
#: again.
_CACHED = 4096

#: The shortest time, in seconds, between two makings of the HTML listing
#: for datums that arrived (a new key or new metadata makes it at once).
_LISTING_REFRESH = 1.0


def _matches(ifNoneMatch: bytes, tag: bytes) -> bool:
    """
    Whether an C{If-None-Match} value names C{tag}, by the weak comparison
    (C{W/} ignored), or is C{*}.
    """
    wanted = tag.removeprefix(b"W/")
    tags = [one.strip().removeprefix(b"W/") for one in ifNoneMatch.split(b",")]
    return b"*" in tags or wanted in tags


class BadRequest(Exception):
    """
    The request cannot be answered as asked; the message says why, and is
    sent to the client as the body of a C{400}.
    """


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
            if CONTROL_CHARACTERS.search(path):
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
        return self._answerPoll(request, application)

    def pollPlain(self, request: Request) -> bool:
        """
        Answer a long poll as L{render} would, its path already checked and
        its C{prepath} and C{postpath} set as L{_poll} sets them
        (L{artcast.server.connections.ArtcastRequest.process} does so for a
        path of printable ASCII without percent-escapes, which passes every
        check of L{render}).

        @return: Whether it was taken (without an application, it is not).
        """
        application = self.application
        if application is None:
            return False
        self._answerPoll(request, application)
        return True

    def _answerPoll(self, request: Request, application: ArtcastApp) -> Any:
        """
        The rest of L{_poll}.
        """
        try:
            result = application.poll(request, application.prebuiltAnswer)
            if isinstance(result, LongPoll):
                result.hold()
                return NOT_DONE_YET
        except Exception:
            request.processingFailed(Failure())
            return NOT_DONE_YET
        if isinstance(result, bytes):
            writeAnswer(result, request)
        elif isinstance(result, Deferred):
            # A stream: its Deferred fires when it ends.
            request.notifyFinish().addErrback(lambda _: result.cancel())
            result.addCallbacks(
                writeAnswer, answerFailed,
                callbackArgs=(request,), errbackArgs=(request,),
            )
        else:
            request.render(getChildForRequest(result, request))
        return NOT_DONE_YET


#: The methods of a long poll, and the (percent-decoded) first path segment
#: its key follows: the requests L{ArtcastResource} dispatches itself.
_POLL_METHODS = frozenset((b"GET", b"HEAD"))
_POLL_SEGMENT = b"artcasts"


class ArtcastApp:
    """
    The Klein application serving one L{KeyStore}.

    @param allowOrigin: the C{Access-Control-Allow-Origin} value.
    @param pollTimeout: the default long-poll timeout in seconds, or L{None}
        to hold a request until a datum comes.
    @param templates: a folder of per-key HTML pages, C{<key>.html}.
    @param publisher: takes C{POST}/C{PUT /artcasts/<key>}; without one
        those methods are a C{405}.
    @param closing: where streams register to be told of shutdown (the
        graceful L{artcast.server.shutdown.ServingService}'s).
    @param statistics: what C{/stats}, C{/stats.json} and C{/metrics} show;
        without it, the figures of C{stats} (the counters of what arrived;
        new ones without it), the store, the streams and the publisher.
    @param upstreamNames: gives this server's name and the names of the
        servers it follows (L{artcast.server.feeds.upstream.UpstreamFeed});
        by default the store's instance name alone.
    @param listening: gives the multicast groups' figures, by group
        (L{artcast.server.feeds.multicast.Listening.figures}): the
        dashboard says where the server listens and when it last heard a
        datagram.
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
        heartbeat: float = DEFAULT_HEARTBEAT,
        maxQueued: int = DEFAULT_MAX_QUEUED,
        closing: Closing | None = None,
        statistics: ServerStatistics | None = None,
        upstreamNames: Callable[[], Sequence[str]] | None = None,
        listening: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        self.publisher = publisher
        #: Gives where the server listens for datagrams and when it last
        #: heard one, by group (L{artcast.server.feeds.multicast.Listening.figures}),
        #: for the dashboard's status line; L{None}: no such line.
        self.listening = listening
        #: This server's name and those of the servers it follows,
        #: transitively (a relay's L{UpstreamFeed.upstreamNames}): its
        #: streams' C{Artcast-Upstreams}, and the followers it refuses.
        self.upstreamNames = upstreamNames or (lambda: (store.instance,))
        self.store = store
        self.statsNetworks = statsNetworks or Networks.parse(EVERYONE)
        self.clock = clock
        #: What makes its answers: their headers, a datum's representation,
        #: the prebuilt answers and the C{204} (L{artcast.server.answers}).
        self.answers = Answers(store, clock, allowOrigin)
        #: The answer of a long poll dispatched by L{ArtcastResource}, bound
        #: once (L{Answers.prebuiltAnswer}).
        self.prebuiltAnswer = self.answers.prebuiltAnswer
        self.pollTimeout = pollTimeout
        self.templates = templates
        self._keys: dict[bytes, str] = {}
        #: The C{/artcasts} listing: the store's C{keysVersion} it was made
        #: at, its JSON and HTML bodies, each made when first asked for, and
        #: the store's C{lastSerial} the HTML (which shows values) was made at,
        #: and when, and the last datagram's time on each group it shows.
        self._listing: list[Any] = [None, None, None, None, 0.0, None]
        #: Where long-lived answers (streams) register to be told of shutdown.
        self.closing = closing if closing is not None else Closing()
        #: The SSE, NDJSON and WebSocket streams (see L{artcast.server.outlets.streams}).
        self.streams = StreamManager(
            store, clock, heartbeat=heartbeat, maxQueued=maxQueued,
            allowOrigin=allowOrigin, closing=self.closing,
        )
        if statistics is None:
            statistics = ServerStatistics(
                clock, stats if stats is not None else Stats(), store, [self.streams]
            )
            if publisher is not None:
                statistics.add(publisher)
        #: What C{/stats} shows (L{artcast.server.service.makeService} gives
        #: it with the connections' figures among its parts).
        self.serverStatistics = statistics

    def resource(self) -> KleinResource:
        """
        The resource to serve.
        """
        return ArtcastResource(self.app, self)

    # Helpers

    def _body(
        self, request: IRequest, body: bytes, contentType: bytes, code: int = 200
    ) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", contentType)
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        return body

    def _error(self, request: IRequest, code: int, message: str) -> bytes:
        self.answers.cors(request)
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

    def _upstreamHeaders(self, request: IRequest) -> bool:
        """
        Name the servers this one follows in the answer's
        C{Artcast-Upstreams}; refuse (C{False}) a follower, named in the
        request's C{Artcast-Via}, that is among them: following it would
        make a loop.
        """
        names = self.upstreamNames()
        request.setHeader(UPSTREAMS_HEADER, ", ".join(names).encode("ascii"))
        via = request.getHeader(VIA_HEADER)
        if via is None:
            return True
        return not (set(parseUpstreams(via)) & set(names))

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

    # Routes

    @app.route("/", methods=["GET", "HEAD"])
    def root(self, request: IRequest) -> bytes:
        request.redirect(b"/artcasts")
        return self._body(request, b"", b"text/plain; charset=utf-8", 302)

    @app.route("/artcast.js", methods=["GET", "HEAD"])
    def script(self, request: IRequest) -> bytes:
        """
        The browser client, L{SCRIPT}: cached by browsers for an hour, then
        asked again with C{If-None-Match} (a C{304} while it is the same).
        """
        self.answers.cors(request)
        request.setHeader(b"ETag", _SCRIPT_TAG)
        request.setHeader(b"Cache-Control", b"public, max-age=%d" % (_SCRIPT_MAX_AGE,))
        match = request.getHeader(b"If-None-Match")
        if match is not None and _matches(match, _SCRIPT_TAG):
            request.setResponseCode(304)
            return b""
        return self._body(request, SCRIPT, b"text/javascript; charset=utf-8")

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
        self.answers.cors(request)
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
        again with the same content is no change); the HTML one, which shows
        the latest values, also when datums arrived, at most once a
        L{_LISTING_REFRESH}.
        """
        cache = self._listing
        now = self.clock.seconds()
        if cache[0] != self.store.keysVersion:
            cache[:] = [self.store.keysVersion, None, None, None, 0.0, None]
        listening = None
        heard = None
        if html and self.listening is not None:
            listening = list(self.listening().values())
            heard = tuple(group["last_datagram"] for group in listening)
        if (
            html
            and (cache[3] != self.store.lastSerial or cache[5] != heard)
            and now - cache[4] >= _LISTING_REFRESH
        ):
            # The dashboard shows the latest values too, and when each group
            # last heard a datagram: made again when a datum or a datagram
            # arrived, at most once a _LISTING_REFRESH however many ask (its
            # live part resumes after the latest value it shows, so a page a
            # little behind misses nothing).
            cache[2] = None
        index = 2 if html else 1
        body = cache[index]
        if body is None:
            artcasts = []
            latest = {}
            for key, meta in self.store.keys():
                entry = {"key": key}
                if meta:
                    entry.update((k, v) for k, v in meta.items() if k != "key")
                artcasts.append(entry)
                if html:
                    datum = self.store.latest(key)
                    if datum is not None:
                        latest[key] = datum
            if html:
                cache[3], cache[4], cache[5] = self.store.lastSerial, now, heard
            body = cache[index] = (
                pages.listPage(artcasts, latest, listening) if html
                else encodeJSON(artcasts)
            )
        return body

    @app.route("/artcasts/", branch=True, methods=["GET", "HEAD"])
    def artcast(self, request: IRequest) -> bytes | Deferred[bytes] | IResource:
        """
        A long poll (or a stream, a page) of one key, routed by Klein.
        """
        result = self.poll(request, self.answers.valueAnswer)
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
            L{Answers.valueAnswer}, or L{Answers.prebuiltAnswer} from
            L{ArtcastResource}.
        """
        head = getattr(request, "plainHead", None)
        if head is not None:
            waited = head.waited
            if waited is not None and waited[0]() is self:
                # The same head as a poll that waited: the same key and
                # representation, no since, the default timeout.
                return LongPoll(
                    self.store, self.clock, self.answers, request, waited[1], waited[2],
                    False, answer, None, self.pollTimeout,
                )
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
                self.answers.cors(request)
                if not self._upstreamHeaders(request):
                    body = self._error(
                        request, 508,
                        "Loop detected: this server follows the server asking.",
                    )
                    # Twisted knows no reason phrase for it.
                    request.setResponseCode(508, b"Loop Detected")
                    return body
                return self.streams.stream(request, key, chosen)
            timeout = self._timeout(request)
            found = self._since(request, key)
        except (BadRequest, BadStart) as error:
            return self._error(request, 400, str(error))
        except NotFound:
            return self._error(request, 404, "No such resource.")
        if found is not None and found.datum is not None:
            return answer(request, found.datum, chosen, found.gap)
        if (
            head is not None
            and found is None
            and b"?" not in head.target
            and b"if-none-match" not in head.pairs
        ):
            # Made of the head alone (no query, so no since or timeout of
            # its own): remembered by the head, for the next request that
            # sends it (the application held weakly).
            head.waited = (weakref.ref(self), key, chosen)
        return LongPoll(
            self.store, self.clock, self.answers, request, key, chosen,
            found is not None and found.gap, answer,
            found.skipThrough if found else None, timeout,
            found.origin if found else None,
            found is not None and found.unlessNext,
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
        self.answers.cors(request)
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
            metricsText(self.serverStatistics.figures),
            b"text/plain; version=0.0.4; charset=utf-8",
        )

    def statistics(self) -> dict[str, Any]:
        """
        What C{/stats} shows: the figures of L{serverStatistics}.
        """
        return self.serverStatistics.figures()

    def page(self, request: IRequest, key: str) -> bytes:
        """
        The HTML page of a key: the template for it if there is one, else the
        built-in live page.
        """
        self.answers.cors(request)
        request.setHeader(b"Vary", b"Accept")
        if self.templates is not None:
            try:
                template = pages.readTemplate(self.templates, key)
            except InsecurePath:
                return self._error(request, 400, "That key has no page.")
            if template is not None:
                return self._body(request, template, b"text/html; charset=utf-8")
        latest = self.store.latest(key)
        group = None
        if latest is None and self.listening is not None:
            # Where the server hears datums, for the page's hint on sending one.
            group = self.listening().get("data")
        page = pages.livePage(
            key,
            latest,
            self.store.recent(key, pages.CHART_POINTS),
            self.clock.seconds(),
            group,
        )
        return self._body(request, page, b"text/html; charset=utf-8")

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
