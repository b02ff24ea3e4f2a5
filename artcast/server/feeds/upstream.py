# -*- test-case-name: tests.test_upstream -*-
"""
Relays: C{--upstream URL}.  The L{UpstreamFeed} follows another Artcast
server over HTTP and puts what it serves into this server's store, with the
same ids.

It keeps ONE NDJSON stream of every key open, C{GET <root>artcasts/...}
with C{Accept: application/x-ndjson}, to the first upstream that answers,
in the order given.  Each line of the stream is an envelope
C{{"key","id","value"}} (or a gap marker, counted; blank lines are the
stream's heartbeats).  Each datum is published under its own id, through
the server's L{SourceTracker}, so a datum the server has already (heard on
multicast too, or from another upstream after a failover) is dropped as a
duplicate; relayed datums are never NACKed for (they are not
C{repairable}).

After any break the feed reconnects with C{?since=<the last id it took>},
so a datum the upstream still holds is never missed.  It moves to the next
upstream when the current one refuses (connection refused, an answer other
than C{200}), ends the stream, or says nothing (not even a heartbeat) for
C{silence} seconds; between attempts it waits a back-off (0.5 s doubling to
10 s, back to 0.5 s once a stream is open).  While it follows a later
upstream it probes the earlier ones (C{HEAD}, every 5 s) and goes back to
the first that answers.

Loops: each request says C{Artcast-Via: <this server's instance name>}; an
upstream answers its streams with C{Artcast-Upstreams: <the servers it
follows, transitively, itself first>}, and refuses with C{508} a stream
whose C{Artcast-Via} is among them (L{artcast.server.routes}).  The names
learned from the current upstream are L{UpstreamFeed.upstreamNames}.

What a hostile upstream sends is bounded: a line longer than the largest
value plus L{LINE_MARGIN} ends the stream (and fails over); a line that is
not JSON, not an envelope, or has a bad key, a bad id or a value larger than
C{maxValueSize} is dropped and counted; the store's own bounds (keys, bytes)
hold as for any feed.  Relayed datums are judged by the tracker as copies
(L{artcast.server.feeds.reception.SourceTracker.checkRelayed}), so a forged
mark is reset by the source's next datum; an id from the future (a boot past now in milliseconds, a seq
past L{MAX_PLAUSIBLE_SEQ}) is taken but counted and never resumed from.

An upstream may be fronted by a proxy that wants a token (reading is
public on an Artcast server itself): with C{--upstream-token-file}
(L{parseUpstreamTokens}) each request to that upstream, the stream, the
probes and the listing, carries C{Authorization: Bearer <token>}.  A C{401}
or C{403} answer is counted (C{upstreamAuthFailures}), logged at a bounded
rate without the token, and failed over as any refusal.

An upstream that shuts down says so as the last line of its stream,
C{{"shutdown": true, "retryAfter": N}}: the feed moves to the next upstream
at once, without a back-off, counting it as C{upstreamShutdowns}, not as a
failure.

With C{--upstream-multicast} the feed has a
L{artcast.server.outlets.multicast.RelayOutlet}: every new datum it takes
(not a duplicate, not dropped) is also sent to this server's data group
with its original stamp, so that a whole LAN behind the relay is fed with
the same ids.  The relay's own datagrams heard back through the loop are
counted as C{upstreamEchoes}, not as drops.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface import implementer

from artcast.server.defaults import (
    DEFAULT_UPSTREAM_BACKOFF,
    DEFAULT_UPSTREAM_MAX_BACKOFF,
    DEFAULT_UPSTREAM_PROBE,
    DEFAULT_UPSTREAM_REGISTRATIONS,
    DEFAULT_UPSTREAM_SILENCE,
)
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.feeds.reception import MAX_AHEAD
from artcast.server.interfaces import IFeed
from artcast.server.logs import NamedLogger, RateLimitedLog
from artcast.server.outlets.multicast import RelayOutlet
from artcast.wire import (
    MAX_SOURCE_LENGTH,
    BadDatagram,
    BadKey,
    DataMessage,
    DatumId,
    Stamp,
    encodeJSON,
    loadJSON,
    validateKey,
)

__all__ = [
    "LINE_MARGIN",
    "MAX_PLAUSIBLE_SEQ",
    "MAX_UPSTREAM_NAMES",
    "UPSTREAMS_HEADER",
    "VIA_HEADER",
    "UpstreamFeed",
    "parseUpstreamTokens",
    "parseUpstreams",
    "upstreamURL",
]

#: The header a follower names itself in, and the one a server names the
#: servers it follows in (itself first).
VIA_HEADER = b"Artcast-Via"
UPSTREAMS_HEADER = b"Artcast-Upstreams"

#: What a stream's line may hold beyond the value: the key, the id, the
#: envelope's punctuation.
LINE_MARGIN = 64 * 1024

#: The largest sequence number a relay resumes from: a source sending a
#: million datums a second reaches it in 285 years.
MAX_PLAUSIBLE_SEQ = 2**53

#: The most server names taken from an upstream's C{Artcast-Upstreams}.
MAX_UPSTREAM_NAMES = 64

#: Where relayed datums say they came from (never NACKed: not repairable).
_ADDRESS = ("upstream", 0)

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,%d}" % (MAX_SOURCE_LENGTH,))

#: RFC 6750's b64token: what may follow C{Bearer }.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

#: The most lines a token file may hold.
_MAX_TOKEN_LINES = 10_000


def upstreamURL(text: str) -> str:
    """
    Check an C{--upstream} URL, an Artcast server's root, and give it with a
    final C{/}.

    @raise ValueError: if it is not an C{http} or C{https} URL with a host,
        or carries a query or fragment.
    """
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: an upstream is a server's root, without ? or #")
    parts.port  # raises ValueError for a bad port
    if not text.endswith("/"):
        text += "/"
    return text


def parseUpstreams(header: bytes | None) -> tuple[str, ...]:
    """
    The server names of an C{Artcast-Upstreams} header (comma-separated),
    keeping only well-formed ones, at most L{MAX_UPSTREAM_NAMES}.
    """
    if not header:
        return ()
    names = []
    for piece in header.decode("latin-1").split(",")[:MAX_UPSTREAM_NAMES]:
        name = piece.strip()
        if _NAME_RE.fullmatch(name):
            names.append(name)
    return tuple(names)


def parseUpstreamTokens(data: bytes, upstreams: Sequence[str]) -> dict[str, str]:
    """
    Read an C{--upstream-token-file}: each line C{TOKEN} (sent to every
    upstream) or C{URL TOKEN} (sent to that upstream only, which wins);
    blank lines and lines starting with C{#} are ignored.  No error message
    holds a token.

    @param upstreams: the C{--upstream} roots given (L{upstreamURL}).
    @return: the token of each upstream that has one, by root.
    @raise ValueError: for a file that is not UTF-8 text, a malformed line,
        a URL not among C{upstreams}, a URL or the default given twice, or
        no token at all.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text")
    default: str | None = None
    tokens: dict[str, str] = {}
    lines = text.splitlines()
    if len(lines) > _MAX_TOKEN_LINES:
        raise ValueError(f"more than {_MAX_TOKEN_LINES} lines")
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise ValueError(f"line {number}: expected TOKEN or URL TOKEN")
        token = fields[-1]
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(
                f"line {number}: a token is made of letters, digits and -._~+/ "
                "(then = signs)"
            )
        if len(fields) == 1:
            if default is not None:
                raise ValueError(f"line {number}: a second token for every upstream")
            default = token
            continue
        try:
            root = upstreamURL(fields[0])
        except ValueError:
            # Not the field itself: it may be a token written first.
            raise ValueError(f"line {number}: expected URL TOKEN, the URL an http(s) root")
        if root not in upstreams:
            raise ValueError(f"line {number}: {root} is not among the --upstream given")
        if root in tokens:
            raise ValueError(f"line {number}: a second token for {root}")
        tokens[root] = token
    if default is None and not tokens:
        raise ValueError("no token in it")
    if default is not None:
        for root in upstreams:
            tokens.setdefault(root, default)
    return tokens


class _Lines(Protocol):
    """
    Reads a stream's body as lines, holding at most C{maxLine} bytes of an
    unfinished one: past it, the stream is aborted.
    """

    def __init__(self, feed: UpstreamFeed, maxLine: int) -> None:
        self.feed: UpstreamFeed | None = feed
        self.maxLine = maxLine
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        feed = self.feed
        if feed is None:
            return
        feed._heard(self)
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while self.feed is feed:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.maxLine:
                self._buffer = b""
                feed._tooLong(self)
                return
            line = buffer[start:end]
            start = end + 1
            feed._line(self, line)
        if self.feed is not feed:
            return
        rest = buffer[start:]
        if len(rest) > self.maxLine:
            self._buffer = b""
            feed._tooLong(self)
            return
        self._buffer = rest

    def abort(self) -> None:
        """
        Stop reading: nothing more goes to the feed.
        """
        self.feed = None
        self._buffer = b""
        transport = self.transport
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        feed, self.feed = self.feed, None
        if feed is not None:
            feed._ended(self, reason)


class _Discard(Protocol):
    """
    Reads an unwanted body (a refusal's) and ignores it.
    """

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        pass


class _Body(Protocol):
    """
    Reads a whole body of at most C{maxBytes} bytes (the C{/artcasts}
    listing); past it, the body is dropped.
    """

    def __init__(self, maxBytes: int) -> None:
        self.maxBytes = maxBytes
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.maxBytes:
            self.parts = []
            self.transport.stopProducing()
            self.done.errback(ValueError(f"the listing is larger than {self.maxBytes} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


@implementer(IFeed)
class UpstreamFeed(MultiService):
    """
    The feed of C{--upstream}: follows the first upstream that answers, over
    one NDJSON stream of every key, and fails over (see the module's
    docstring).

    @ivar upstreams: the upstreams' roots, in order of preference.
    @ivar current: the index of the upstream followed or tried, in
        C{upstreams}.
    @ivar state: C{"stopped"}, C{"connecting"}, C{"streaming"} or
        C{"waiting"} (between attempts).
    @ivar lastId: the id of the last envelope taken from a stream: where the
        next stream starts (C{since}).
    @ivar learned: the server names the current upstream said it follows
        (its C{Artcast-Upstreams}), itself among them.
    """

    name = "upstream"

    log = NamedLogger(namespace="artcast.upstream")

    def __init__(
        self,
        upstreams: Sequence[str],
        handler: DatagramHandler,
        clock: IReactorTime,
        agent: Any,
        maxValueSize: int,
        silence: float = DEFAULT_UPSTREAM_SILENCE,
        backoff: float = DEFAULT_UPSTREAM_BACKOFF,
        maxBackoff: float = DEFAULT_UPSTREAM_MAX_BACKOFF,
        probe: float = DEFAULT_UPSTREAM_PROBE,
        registrations: float = DEFAULT_UPSTREAM_REGISTRATIONS,
        maxListing: int | None = None,
        outlet: RelayOutlet | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param upstreams: the roots, each ending in C{/} (L{upstreamURL}).
        @param handler: the multicast handler, whose store, tracker, repair
            engine and counters relayed datums go through.
        @param agent: an L{twisted.web.iweb.IAgent} the requests are made
            with.
        @param maxValueSize: the largest value taken, in bytes of JSON.
        @param silence: seconds without a line (a heartbeat included) after
            which a stream is given up.
        @param backoff: the first wait between attempts, doubled after each
            failure up to C{maxBackoff}.
        @param probe: seconds between probes of the earlier upstreams.
        @param registrations: seconds between reads of the C{/artcasts}
            listing while a stream is open.
        @param maxListing: the largest listing read, in bytes (by default
            the store's budget).
        @param outlet: with C{--upstream-multicast}, where new datums are
            sent on to the data group; it starts and stops with the feed,
            and the handler asks it about echoes.
        @param tokens: the bearer token sent to each upstream that has one,
            by root (L{parseUpstreamTokens}).
        """
        if not upstreams:
            raise ValueError("an UpstreamFeed needs at least one upstream")
        super().__init__()
        self.upstreams = [upstreamURL(url) for url in upstreams]
        self.tokens = {upstreamURL(url): token for url, token in (tokens or {}).items()}
        self.handler = handler
        self.store = handler.store
        self.tracker = handler.tracker
        self.clock = clock
        self.agent = agent
        self.maxValueSize = maxValueSize
        self.maxLine = maxValueSize + LINE_MARGIN
        self.silence = silence
        self.firstBackoff = backoff
        self.maxBackoff = maxBackoff
        self.probeInterval = probe
        self.registrationInterval = registrations
        self.maxListing = maxListing if maxListing is not None else self.store.maxBytes
        self.instance = self.store.instance
        self.current = 0
        self.state = "stopped"
        self.lastId: str | None = None
        self.learned: tuple[str, ...] = ()
        self.backoff = backoff
        # Counters.
        self.datums = 0
        self.duplicates = 0
        self.gaps = 0
        self.futureIds = 0
        self.reconnects = 0
        self.failovers = 0
        self.dropped: Counter[str] = Counter()
        self.connects: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.authFailures: Counter[str] = Counter()
        self.shutdowns: Counter[str] = Counter()
        # What is in flight.
        self._request: Deferred[Any] | None = None
        self._lines: _Lines | None = None
        self._lastHeard = 0.0
        self._silenceCall: IDelayedCall | None = None
        self._retryCall: IDelayedCall | None = None
        self._probeCall: IDelayedCall | None = None
        self._probes: Deferred[Any] | None = None
        self._listing: Deferred[Any] | None = None
        self._registrations = LoopingCall(self._readListing)
        self._registrations.clock = clock
        self._followed: int | None = None
        #: When an upstream last said it was shutting down.
        self._lastShutdown = -math.inf
        #: Whether the stream started from the oldest datum the upstream
        #: holds (nothing taken yet): its first gap marker is no news.
        self._fromStart = True
        self._errorLog = RateLimitedLog(self.log, clock, what="upstream errors")
        self._switchLog = RateLimitedLog(self.log, clock, what="upstream switches")
        self._authLog = RateLimitedLog(self.log, clock, what="upstream token refusals")
        self.outlet = outlet
        if outlet is not None:
            outlet.setServiceParent(self)
            handler.echoes = outlet.isEcho

    # --- the service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> Any:
        self.state = "stopped"
        self._closeStream()
        for call in (self._retryCall, self._probeCall):
            if call is not None and call.active():
                call.cancel()
        self._retryCall = self._probeCall = None
        for pending in (self._probes, self._listing):
            if pending is not None:
                pending.cancel()
        self._probes = self._listing = None
        return super().stopService()

    # --- names, for loop refusal ------------------------------------------------

    def upstreamNames(self) -> tuple[str, ...]:
        """
        This server's name and those of the servers it follows, transitively
        (what its streams' C{Artcast-Upstreams} says).
        """
        return (self.instance,) + tuple(n for n in self.learned if n != self.instance)

    # --- connecting -------------------------------------------------------------

    def _headers(self, accept: bytes, url: str) -> Headers:
        headers = Headers({
            b"Accept": [accept],
            VIA_HEADER: [self.instance.encode("ascii")],
            b"User-Agent": [b"Artcast relay"],
        })
        token = self.tokens.get(url)
        if token is not None:
            headers.setRawHeaders(b"Authorization", [b"Bearer " + token.encode("ascii")])
        return headers

    def _authRefused(self, url: str, code: int, log: bool = True) -> str | None:
        """
        Count and log (at a bounded rate, never the token) an answer C{401}
        or C{403} of C{url}.

        @param log: whether to log it here (a stream's refusal is logged
            with the failover, L{_failed}).

        @return: what it means, or L{None} for another answer.
        """
        if code not in (401, 403):
            return None
        self.authFailures[url] += 1
        sent = url in self.tokens
        if code == 401:
            why = "refused the token (401)" if sent else "wants a token (401)"
        else:
            why = "refused the token (403)" if sent else "refused the request (403; no token sent)"
        if log:
            self._authLog.warn("upstream {url} {why}", url=url, why=why)
        return why

    def _streamURL(self, root: str) -> bytes:
        url = root + "artcasts/..."
        # A fresh relay starts from the oldest datum the upstream holds: an
        # id of this server's own (unknown upstream) gives all its history.
        since = self.lastId if self.lastId is not None else f"{self.instance}.0.1"
        url += "?since=" + quote(since, safe="")
        return url.encode("ascii")

    def _connect(self) -> None:
        """
        Open a stream to the current upstream.
        """
        self._retryCall = None
        if not self.running:
            return
        self.state = "connecting"
        self._fromStart = self.lastId is None
        url = self.upstreams[self.current]
        request = self.agent.request(
            b"GET", self._streamURL(url), self._headers(b"application/x-ndjson", url), None
        )
        request.addTimeout(self.silence, self.clock)
        self._request = request
        request.addCallbacks(self._answered, self._refused, (self.current,), None, (self.current,))
        request.addErrback(self._unexpected)

    def _answered(self, response: Any, index: int) -> None:
        self._request = None
        if self.state != "connecting" or index != self.current:
            self._discard(response)
            return
        if response.code != 200:
            self._discard(response)
            why = self._authRefused(self.upstreams[index], response.code, log=False)
            self._failed(why or f"answered {response.code}")
            return
        self.learned = parseUpstreams(
            response.headers.getRawHeaders(UPSTREAMS_HEADER, [b""])[-1]
        )
        if self.instance in self.learned:
            # This server is among the upstream's upstreams: a loop.
            self._discard(response)
            self.learned = ()
            self._failed("is following this server (a loop)")
            return
        url = self.upstreams[index]
        self.state = "streaming"
        self.connects[url] += 1
        self.backoff = self.firstBackoff
        if self._followed is not None and self._followed != index:
            self.failovers += 1
        if self._followed != index:
            # A warning, so that the error log (warnings and errors) shows
            # it; switches are few (the back-off, the probe interval).
            self._switchLog.warn(
                "following {url} (upstream {number} of {count}) from {since}",
                url=url, number=index + 1, count=len(self.upstreams),
                since=self.lastId or "the oldest datum it holds",
            )
        self._followed = index
        lines = _Lines(self, self.maxLine)
        self._lines = lines
        self._lastHeard = self.clock.seconds()
        self._silenceCall = self.clock.callLater(self.silence, self._checkSilence)
        response.deliverBody(lines)
        if not self._registrations.running:
            self._registrations.start(self.registrationInterval, now=True)
        if index > 0:
            self._scheduleProbe()

    def _refused(self, failure: Failure, index: int) -> None:
        self._request = None
        if self.state != "connecting" or index != self.current:
            return
        self._failed(failure.getErrorMessage() or failure.type.__name__)

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("The upstream feed failed", failure)

    def _discard(self, response: Any) -> None:
        response.deliverBody(_Discard())

    # --- the stream -------------------------------------------------------------

    def _heard(self, lines: _Lines) -> None:
        self._lastHeard = self.clock.seconds()

    def _checkSilence(self) -> None:
        self._silenceCall = None
        if self.state != "streaming":
            return
        quiet = self.clock.seconds() - self._lastHeard
        if quiet >= self.silence:
            self._failed(f"was silent for {quiet:.1f} s")
            return
        self._silenceCall = self.clock.callLater(self.silence - quiet, self._checkSilence)

    def _tooLong(self, lines: _Lines) -> None:
        self.dropped["line-too-long"] += 1
        self._failed(f"sent a line longer than {self.maxLine} bytes")

    def _ended(self, lines: _Lines, reason: Failure) -> None:
        if lines is not self._lines:
            return
        self._lines = None
        if reason.check(ResponseDone):
            self._failed("ended the stream")
        else:
            self._failed("broke the stream: " + (reason.getErrorMessage() or reason.type.__name__))

    def _drop(self, reason: str, line: bytes) -> None:
        self.dropped[reason] += 1
        self._errorLog.warn(
            "Dropped a line from upstream {url}: {reason}: {line!r}",
            url=self.upstreams[self.current], reason=reason, line=line[:100],
        )

    def _line(self, lines: _Lines, line: bytes) -> None:
        """
        One line of the stream: a heartbeat, a gap marker or a datum.
        """
        if not line.strip():
            return
        try:
            envelope = loadJSON(line.decode("utf-8"))
        except (BadDatagram, UnicodeDecodeError):
            self._drop("not-json", line)
            return
        if not isinstance(envelope, dict):
            self._drop("not-envelope", line)
            return
        if envelope.get("shutdown") is True:
            self._shuttingDown()
            return
        if envelope.get("gap") is True:
            # A stream from the oldest datum held starts with one: no news.
            if not self._fromStart:
                self.gaps += 1
            return
        if set(envelope) != {"key", "id", "value"}:
            self._drop("not-envelope", line)
            return
        key, datumId, value = envelope["key"], envelope["id"], envelope["value"]
        try:
            if not isinstance(key, str):
                raise BadKey("not a string")
            validateKey(key)
        except BadKey:
            self._drop("bad-key", line)
            return
        try:
            ident = DatumId.parse(datumId)
        except ValueError:
            self._drop("bad-id", line)
            return
        if ident.seq > MAX_PLAUSIBLE_SEQ or ident.boot > (
            self.clock.seconds() + MAX_AHEAD
        ) * 1000:
            # An id from the future (a boot past now in milliseconds, a seq
            # no source reaches): taken as a multicast server would take it
            # (the tracker resets a forged mark at the source's next
            # datum), but never resumed from, since an upstream asked for
            # what follows it would skip the source's real datums.
            self.futureIds += 1
            self._errorLog.warn(
                "Upstream {url} sent an id from the future, {id}: taken, not resumed from",
                url=self.upstreams[self.current], id=datumId,
            )
        else:
            # Where the upstream's stream is, even for a value not taken.
            self.lastId = datumId
        self._fromStart = False
        if len(line) > self.maxValueSize and len(encodeJSON(value)) > self.maxValueSize:
            self._drop("too-large", line)
            return
        self._take(key, value, ident)

    def _take(self, key: str, value: object, ident: DatumId) -> None:
        """
        Publish a datum under its id, unless the tracker has it already
        (L{DatagramHandler.relayed}).
        """
        message = DataMessage(
            key, value, Stamp(ident.source, ident.boot, ident.seq, self.clock.seconds())
        )
        taken = self.handler.relayed(message, _ADDRESS)
        if taken == "duplicate":
            self.duplicates += 1
            return
        self.datums += 1
        if taken == "taken" and self.outlet is not None:
            self.outlet.sendOn(message)

    # --- failing over -----------------------------------------------------------

    def _closeStream(self) -> None:
        lines, self._lines = self._lines, None
        if lines is not None:
            lines.abort()
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        if self._silenceCall is not None and self._silenceCall.active():
            self._silenceCall.cancel()
        self._silenceCall = None
        if self._registrations.running:
            self._registrations.stop()
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        self._probeCall = None
        probes, self._probes = self._probes, None
        if probes is not None:
            probes.cancel()

    def _shuttingDown(self) -> None:
        """
        The upstream said it is shutting down: follow the next one at once,
        without a back-off and without counting a failure.  Only once per
        C{maxBackoff} seconds though: an upstream that says it again and
        again is left after the back-off, so no loop runs unchecked.
        """
        url = self.upstreams[self.current]
        self.shutdowns[url] += 1
        self.current = (self.current + 1) % len(self.upstreams)
        self._switchLog.warn(
            "upstream {url} is shutting down; following {next}",
            url=url, next=self.upstreams[self.current],
        )
        self.state = "waiting"
        self._closeStream()
        self.learned = ()
        now = self.clock.seconds()
        last, self._lastShutdown = self._lastShutdown, now
        if now - last < self.maxBackoff:
            self._retry(self.backoff)
            self.backoff = min(self.backoff * 2, self.maxBackoff)
            return
        self.reconnects += 1
        self._connect()

    def _failed(self, why: str) -> None:
        """
        The current upstream refused, ended, broke or went silent: close
        what is open and try the next one after the back-off.
        """
        if self.state == "stopped":
            return
        url = self.upstreams[self.current]
        self.failures[url] += 1
        self._errorLog.warn(
            "Upstream {url} {why}; trying {next} in {delay} s",
            url=url, why=why,
            next=self.upstreams[(self.current + 1) % len(self.upstreams)],
            delay=self.backoff,
        )
        self.state = "waiting"
        self._closeStream()
        self.learned = ()
        self.current = (self.current + 1) % len(self.upstreams)
        self._retry(self.backoff)
        self.backoff = min(self.backoff * 2, self.maxBackoff)

    def _retry(self, delay: float) -> None:
        self.reconnects += 1
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = self.clock.callLater(delay, self._connect)

    # --- going back to an earlier upstream -------------------------------------

    def _scheduleProbe(self) -> None:
        if self._probeCall is None or not self._probeCall.active():
            self._probeCall = self.clock.callLater(self.probeInterval, self._probe)

    def _probe(self) -> None:
        """
        Ask each upstream before the current one whether it would take a
        stream (C{HEAD}, with C{Artcast-Via}); switch to the first that
        answers C{200}.
        """
        self._probeCall = None
        if self.state != "streaming" or self.current == 0:
            return
        asked = []
        for index in range(self.current):
            url = self.upstreams[index]
            request = self.agent.request(
                b"HEAD", self._streamURL(url),
                self._headers(b"application/x-ndjson", url), None,
            )
            request.addTimeout(min(self.silence, self.probeInterval), self.clock)
            request.addCallback(self._probed, url)
            asked.append(request)
        probes: Deferred[Any] = DeferredList(asked, consumeErrors=True)
        self._probes = probes
        probes.addCallback(self._probesDone, self.current)

    def _probed(self, response: Any, url: str) -> bool:
        self._discard(response)
        self._authRefused(url, response.code)
        return response.code == 200 and self.instance not in parseUpstreams(
            response.headers.getRawHeaders(UPSTREAMS_HEADER, [b""])[-1]
        )

    def _probesDone(self, results: list[tuple[bool, Any]], current: int) -> None:
        self._probes = None
        if self.state != "streaming" or self.current != current:
            return
        for index, (ok, answered) in enumerate(results):
            if ok and answered:
                self._errorLog.warn(
                    "Upstream {url} answers again: leaving {current}",
                    url=self.upstreams[index], current=self.upstreams[current],
                )
                self._closeStream()
                self.learned = ()
                self.current = index
                self._connect()
                return
        self._scheduleProbe()

    # --- registrations ---------------------------------------------------------

    def _readListing(self) -> None:
        """
        Read the current upstream's C{/artcasts} listing and register each
        entry's metadata.
        """
        if self._listing is not None:
            return
        url = self.upstreams[self.current]
        request = self.agent.request(
            b"GET", (url + "artcasts").encode("ascii"),
            self._headers(b"application/json", url), None,
        )
        request.addTimeout(self.silence, self.clock)
        self._listing = request

        def answered(response: Any) -> Any:
            if response.code != 200:
                self._discard(response)
                self._authRefused(url, response.code)
                raise ValueError(f"the listing answered {response.code}")
            body = _Body(self.maxListing)
            response.deliverBody(body)
            return body.done

        def done(result: Any) -> None:
            self._listing = None
            if isinstance(result, Failure):
                if not result.check(Exception) or self.state == "stopped":
                    return
                self._errorLog.warn(
                    "Could not read the registrations of {url}: {error}",
                    url=url, error=result.getErrorMessage(),
                )
                return
            self._register(result, url)

        request.addCallback(answered)
        request.addBoth(done)

    def _register(self, body: bytes, url: str) -> None:
        try:
            listing = loadJSON(body.decode("utf-8"))
        except (BadDatagram, UnicodeDecodeError):
            self._drop("bad-listing", body)
            return
        if not isinstance(listing, list):
            self._drop("bad-listing", body)
            return
        for entry in listing:
            if not isinstance(entry, dict):
                self.dropped["bad-registration"] += 1
                continue
            key = entry.get("key")
            meta = {name: value for name, value in entry.items() if name != "key"}
            if not meta:
                continue  # a key seen in data, never registered
            try:
                if not isinstance(key, str):
                    raise BadKey("not a string")
                validateKey(key)
            except BadKey:
                self.dropped["bad-registration"] += 1
                continue
            if len(encodeJSON(meta)) > self.maxValueSize:
                self.dropped["bad-registration"] += 1
                continue
            before = self.store.registration(key) if self.outlet is not None else None
            if (
                self.store.register(key, meta) and self.outlet is not None
                and self.store.registration(key) != before
            ):
                # New or changed: the LAN behind the relay learns it too.
                self.outlet.registerOn(key, meta)

    # --- figures -----------------------------------------------------------------

    def statistics(self) -> dict[str, object]:
        """
        The C{"upstream"} figures of C{/stats}.
        """
        return {
            "upstream": {
                "url": self.upstreams[self.current],
                "state": self.state,
                "upstreamIndex": self.current + 1,
                "upstreamLastId": self.lastId,
                "upstreamNames": list(self.upstreamNames()),
                "upstreamDatums": self.datums,
                "upstreamDuplicates": self.duplicates,
                "upstreamGaps": self.gaps,
                "upstreamFutureIds": self.futureIds,
                "upstreamReconnects": self.reconnects,
                "upstreamFailovers": self.failovers,
                "upstreamAuthFailures": sum(self.authFailures.values()),
                "upstreamShutdowns": sum(self.shutdowns.values()),
                "upstreamDropped": dict(self.dropped),
                "upstreamSentOn": self.outlet.sentOn if self.outlet is not None else 0,
                "upstreamRegistrationsSentOn": (
                    self.outlet.registrationsSentOn if self.outlet is not None else 0
                ),
                "upstreamEchoes": self.outlet.echoes if self.outlet is not None else 0,
                "upstreamSendFailures": self.outlet.failed if self.outlet is not None else 0,
                "upstreams": {
                    url: {
                        "upstreamConnects": self.connects[url],
                        "upstreamFailures": self.failures[url],
                        "upstreamAuthFailures": self.authFailures[url],
                        "upstreamShutdowns": self.shutdowns[url],
                    }
                    for url in self.upstreams
                },
            }
        }
