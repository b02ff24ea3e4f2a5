# -*- test-case-name: tests.test_client -*-
"""
A treq-based client of Artcast servers.

    >>> client = ArtcastClient("http://127.0.0.1:8888", reactor)
    >>> datum = await client.next("test/tick")              # the next value
    >>> datum = await client.latest("test/tick")            # the latest value
    >>> async for datum in client.follow("test/tick"):      # every value, resuming
    ...     print(datum.id, datum.value)

Every method returns a L{Deferred} (or, for L{ArtcastClient.follow}, an async
iterator whose steps are L{Deferred}s), so it can be used from Twisted code
with callbacks, from C{@inlineCallbacks}, or from an C{async def} run with
L{Deferred.fromCoroutine} under the reactor (for example by
L{twisted.internet.task.react}).  See C{docs/clients.md}.

C{python -m artcast.client URL [KEY]} (the C{artcast-follow} command) follows
a key (or lists the artcasts) from a shell; with C{--write PATH} it also
keeps a file holding the latest value (L{writeAtomically}).
"""

from __future__ import annotations

import json
import os
import random as _random
import sys
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Protocol, Sequence, cast
from urllib.parse import unquote

import attr
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgent

from artcast.wire import keyPath

__all__ = [
    "ArtcastClient",
    "ArtcastError",
    "Datum",
    "Follower",
    "LATEST",
    "DEFAULT_GRACE",
    "DEFAULT_INITIAL_DELAY",
    "backoffDelay",
    "describeFailure",
    "parseRetryAfter",
    "programName",
    "run",
    "main",
    "valueText",
    "writeAtomically",
]

#: The C{since} value asking for the latest datum at once.
LATEST = "latest"

#: A syntactically valid id that no source sends.  After a C{204} without
#: C{Artcast-Id} (the key has never had a datum), the next poll asks for what
#: follows it: the server answers with the oldest datum it holds, so datums that
#: arrive between the two polls are not skipped.  The server flags that answer
#: with C{Artcast-Gap}, which the client knows to be spurious and clears.
_BEGINNING = "_artcast-client-beginning.0.1"

#: How long (seconds) to wait, beyond the poll timeout, for a server's answer
#: before the request is given up.
DEFAULT_GRACE = 10.0

#: The first backoff bound, in seconds; it doubles with each failure.
DEFAULT_INITIAL_DELAY = 0.5

_log = Logger(namespace="artcast.client")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Datum:
    """
    A value received from an Artcast server.

    @ivar key: the key it was published under (for a wildcard request, the key
        that matched).
    @ivar id: its id, C{<source>.<boot>.<seq>}; pass it as C{since} to get what
        follows it.
    @ivar value: the value, parsed from JSON.
    @ivar gap: C{True} when the server said (C{Artcast-Gap: 1}) that datums
        between the one asked after and this one may have been missed: they
        are no longer held (the server restarted, or the client was away
        longer than the server's history reaches), or the server declared
        datums of this one's source unrecoverable since the client's datum
        (lost on the network and not repaired; they may have been of other
        keys).
    """

    key: str
    id: str
    value: Any
    gap: bool = False


class ArtcastError(Exception):
    """
    The server answered with an error status, or with something that is not
    an Artcast answer.

    @ivar status: the HTTP status code.
    @ivar body: the body of the answer (the server explains its errors there).
    @ivar url: the URL that was asked for.
    @ivar retryAfter: the seconds a C{Retry-After} header asked to wait, or
        L{None}.
    """

    def __init__(
        self,
        status: int,
        body: bytes,
        url: str,
        retryAfter: float | None = None,
        message: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.url = url
        self.retryAfter = retryAfter
        if message is None:
            text = body.decode("utf-8", "replace").strip()
            message = text[:500] or "(no explanation)"
        super().__init__(f"{url} answered {status}: {message}")

    @property
    def retryable(self) -> bool:
        """
        Is it worth asking again later?  Yes for server errors (C{5xx}),
        C{429 Too Many Requests} and C{408 Request Timeout}; no for the other
        client errors (a bad key, a bad id: asking again gets the same answer).
        """
        return self.status >= 500 or self.status in (408, 429)


class _HTTPGetter(Protocol):
    """
    What the client needs of a L{treq.client.HTTPClient} (or a
    L{treq.testing.StubTreq}).
    """

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]: ...


def backoffDelay(
    failures: int,
    initialDelay: float,
    maxDelay: float,
    random: Callable[[], float],
) -> float:
    """
    How long to wait before the next attempt: exponential backoff with full
    jitter, a random time between 0 and C{min(maxDelay, initialDelay * 2 **
    (failures - 1))}, so that many clients cut off at once do not come back at
    once.

    @param failures: how many attempts in a row have failed (at least 1).
    @param random: returns a float in M{[0, 1)}, like L{random.random}.
    """
    exponent = min(max(failures - 1, 0), 64)
    bound = min(maxDelay, initialDelay * 2.0**exponent)
    return random() * bound


def parseRetryAfter(value: bytes | None, now: float) -> float | None:
    """
    The seconds a C{Retry-After} header asks to wait: a number of seconds or
    an HTTP date.

    @param now: the current POSIX time, to turn a date into seconds.
    @return: the seconds (never negative), or L{None} if the header is absent
        or unreadable.
    """
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _header(response: Any, name: bytes) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return values[-1] if values else None


def _cancelled(error: BaseException) -> bool:
    """
    Was this failure caused by cancelling the request?  Twisted's agent
    reports a cancelled request as a L{ResponseNeverReceived} wrapping the
    L{CancelledError}.
    """
    if isinstance(error, CancelledError):
        return True
    reasons = getattr(error, "reasons", None) or ()
    return any(reason.check(CancelledError) for reason in reasons)


#: Failures of the network or of the server that a follower rides out.
_TRANSIENT = (
    netError.ConnectError,  # refused, no route, DNS
    netError.ConnectionClosed,  # lost or closed mid-answer
    netError.TimeoutError,
    defer.TimeoutError,
    ResponseFailed,  # includes ResponseNeverReceived
    RequestTransmissionFailed,
    RequestNotSent,
    OSError,
)


def _transient(error: BaseException) -> bool:
    if isinstance(error, ArtcastError):
        return error.retryable
    return isinstance(error, _TRANSIENT)


class ArtcastClient:
    """
    A client of one Artcast server.

    @param url: the server's base URL, C{http://host:port} (a path prefix is
        kept: C{https://example.com/live} asks for
        C{https://example.com/live/artcasts/<key>}).
    @param reactor: the reactor, for timeouts and backoff sleeps (and for the
        HTTP agent, unless one is given); by default the global reactor.
    @param agent: an L{IAgent} to send requests with (for example one with a
        TLS policy); by default an L{Agent} with a persistent connection pool
        of this client's own, closed by L{close}.
    @param httpClient: a L{treq.client.HTTPClient} (or a
        L{treq.testing.StubTreq}) instead of C{agent}.
    @param pollTimeout: the C{timeout} each long poll asks the server for: it
        answers C{204} after that many seconds without a datum and the client
        asks again.  Keep it below what proxies on the way allow an idle
        request (often 60 seconds).  L{None}: ask the server to wait forever.
    @param grace: how many seconds past C{pollTimeout} to wait for an answer
        before giving the request up as lost; also the whole timeout of
        L{artcasts}.
    @param random: returns a float in M{[0, 1)}; the jitter of the backoff.
    """

    def __init__(
        self,
        url: str,
        reactor: IReactorTime | None = None,
        *,
        agent: IAgent | None = None,
        httpClient: _HTTPGetter | None = None,
        pollTimeout: float | None = 30.0,
        grace: float = DEFAULT_GRACE,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if agent is not None and httpClient is not None:
            raise ValueError("Pass an agent or an httpClient, not both.")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor  # type: ignore[assignment]
        assert reactor is not None
        self.url = url.rstrip("/")
        self.reactor = reactor
        self.pollTimeout = pollTimeout
        self.grace = grace
        self.random = random
        self._pool: HTTPConnectionPool | None = None
        if httpClient is None:
            if agent is None:
                self._pool = HTTPConnectionPool(reactor, persistent=True)
                agent = Agent(reactor, pool=self._pool)
            httpClient = cast(_HTTPGetter, HTTPClient(agent))
        self.http: _HTTPGetter = httpClient

    def __repr__(self) -> str:
        return f"<ArtcastClient {self.url}>"

    def close(self) -> Deferred[None]:
        """
        Close the idle connections this client keeps open (when it made its
        own agent).  Call it before the program ends.
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def keyURL(self, key: str) -> str:
        """
        The URL of a key (or wildcard pattern) on this server.
        """
        return self.url + keyPath(key)

    # Requests

    async def _get(
        self, url: str, params: dict[str, str], timeout: float | None
    ) -> tuple[Any, bytes]:
        """
        Send one C{GET} asking for JSON and read the whole answer, giving up
        after C{timeout} seconds with L{defer.TimeoutError}.

        @return: the treq response and its body.
        """

        async def fetch() -> tuple[Any, bytes]:
            response = await self.http.get(
                url, params=params, headers={b"Accept": [b"application/json"]}
            )
            body = await response.content()
            return response, body

        request = Deferred.fromCoroutine(fetch())
        timedOut = []

        def giveUp() -> None:
            timedOut.append(True)
            request.cancel()

        call = None if timeout is None else self.reactor.callLater(timeout, giveUp)
        try:
            return await request
        except Exception as failure:
            if timedOut:
                raise defer.TimeoutError(
                    f"{url} gave no answer in {timeout:g} seconds"
                ) from failure
            if _cancelled(failure):
                # Our caller cancelled; say so plainly, whatever the agent
                # wrapped the cancellation in.
                raise CancelledError() from failure
            raise
        finally:
            if call is not None and call.active():
                call.cancel()

    def _failed(self, response: Any, body: bytes, url: str) -> ArtcastError:
        return ArtcastError(
            response.code,
            body,
            url,
            parseRetryAfter(_header(response, b"Retry-After"), self.reactor.seconds()),
        )

    async def _poll(self, key: str, since: str | None) -> tuple[Datum | None, str | None]:
        """
        One long poll: one request, answered with a datum or, after the poll
        timeout, with nothing.

        @param since: where to start: L{None} (the next datum from now),
            C{"latest"}, or the id of a datum.
        @return: the datum or L{None}, and the C{since} to ask with next, so
            that nothing published between the two polls is skipped.
        @raise ArtcastError: if the server answered with an error.
        """
        url = self.keyURL(key)
        params = {}
        if since is not None:
            params["since"] = since
        timeout = None
        if self.pollTimeout is not None:
            params["timeout"] = "%g" % (self.pollTimeout,)
            timeout = self.pollTimeout + self.grace
        response, body = await self._get(url, params, timeout)
        if response.code == 204:
            if since is None:
                # Nothing came; the 204 names the latest datum there is (if
                # any), so asking after it next misses nothing.
                latest = _header(response, b"Artcast-Id")
                since = latest.decode("ascii") if latest else _BEGINNING
            return None, since
        if response.code != 200:
            raise self._failed(response, body, url)
        datumId = _header(response, b"Artcast-Id")
        if datumId is None:
            raise ArtcastError(
                200, body, url, message="the answer has no Artcast-Id: is this an Artcast server?"
            )
        try:
            value = json.loads(body.decode("utf-8"))
        except ValueError:
            raise ArtcastError(200, body, url, message="the answer is not JSON")
        answeredKey = _header(response, b"Artcast-Key")
        datum = Datum(
            key=unquote(answeredKey.decode("ascii")) if answeredKey else key,
            id=datumId.decode("ascii"),
            value=value,
            gap=_header(response, b"Artcast-Gap") == b"1" and since != _BEGINNING,
        )
        return datum, datum.id

    async def _next(self, key: str, since: str | None) -> Datum:
        while True:
            datum, since = await self._poll(key, since)
            if datum is not None:
                return datum

    def next(self, key: str, since: str | None = None) -> Deferred[Datum]:
        """
        The next datum of a key (or of any key a wildcard pattern matches).

        Polls again each time the server's poll timeout passes without a datum,
        until one comes.  It does not retry on errors (use L{follow} for that).

        @param since: L{None} for the next datum published from now on, or the
            id of a datum to get the one after it (at once if the server holds
            it).
        @return: a L{Deferred} firing with the L{Datum}, or failing with
            L{ArtcastError} (the server refused: a bad key or id, a server
            error), L{defer.TimeoutError} (no answer at all in time), or the
            network's error.  Cancelling it abandons the request.
        """
        return Deferred.fromCoroutine(self._next(key, since))

    def latest(self, key: str) -> Deferred[Datum]:
        """
        The latest datum of a key, at once if there is one, else the next.

        @return: as for L{next}.
        """
        return Deferred.fromCoroutine(self._next(key, LATEST))

    def follow(
        self,
        key: str,
        since: str | None = None,
        maxDelay: float = 30.0,
        initialDelay: float = DEFAULT_INITIAL_DELAY,
    ) -> Follower:
        """
        Every datum of a key, as an async iterator, for as long as you iterate.

        It asks each time for the datum after the last one it gave you, so no
        datum the server still holds is skipped and none comes twice, however
        fast they come and across reconnections.  When the server no longer
        holds what follows (it restarted, or you were away too long), or
        declared datums of the source unrecoverable in between, the next
        datum comes with C{gap=True}.

        Network failures, timeouts, server errors (C{5xx}), C{408} and C{429}
        are ridden out: it waits and asks again with exponential backoff and
        full jitter (honouring C{Retry-After}).  Other client errors
        (C{4xx}: a bad key or id) end the iteration with L{ArtcastError}.

        @param since: L{None} to start with the next datum published from now,
            C{"latest"} to start with the latest one, or the id of a datum to
            resume after it (for example L{Follower.lastId} saved from an
            earlier run).
        @param maxDelay: the longest wait between attempts, in seconds.
        @param initialDelay: the bound of the first wait; it doubles with each
            failure in a row, up to C{maxDelay}.
        """
        return Follower(self, key, since, maxDelay, initialDelay)

    def artcasts(self) -> Deferred[list[dict[str, Any]]]:
        """
        The artcasts the server knows: a list of C{{"key": ...,
        "description": ..., "provenance": ..., "license": ...}} sorted by key
        (only C{key} is always there).

        @return: a L{Deferred} firing with the list, or failing with
            L{ArtcastError}.
        """

        async def listing() -> list[dict[str, Any]]:
            url = self.url + "/artcasts"
            response, body = await self._get(url, {}, self.grace)
            if response.code != 200:
                raise self._failed(response, body, url)
            try:
                result = json.loads(body.decode("utf-8"))
            except ValueError:
                raise ArtcastError(200, body, url, message="the answer is not JSON")
            if not isinstance(result, list):
                raise ArtcastError(200, body, url, message="the answer is not a list")
            return result

        return Deferred.fromCoroutine(listing())


class Follower:
    """
    The async iterator L{ArtcastClient.follow} returns: each step is a
    L{Deferred} firing with the next L{Datum}.

    Use it with C{async for}, or call L{next} from callback-style code.
    Take one step at a time: asking for the next datum before the last step
    fired raises L{RuntimeError}.  Cancelling a step abandons its request; the
    follower can go on from where it was.

    @ivar key: the key or pattern followed.
    @ivar lastId: the id of the last datum given, or the C{since} it started
        with; save it to resume later with C{follow(key, since=lastId)}.
    @ivar failures: how many attempts in a row have failed.
    """

    def __init__(
        self,
        client: ArtcastClient,
        key: str,
        since: str | None,
        maxDelay: float,
        initialDelay: float,
    ) -> None:
        self.client = client
        self.key = key
        self.maxDelay = maxDelay
        self.initialDelay = initialDelay
        self.lastId = since
        self.failures = 0
        self._since = since
        self._stepping = False

    def __repr__(self) -> str:
        return f"<Follower {self.key!r} of {self.client.url} after {self.lastId!r}>"

    def __aiter__(self) -> Follower:
        return self

    def __anext__(self) -> Deferred[Datum]:
        if self._stepping:
            raise RuntimeError("The follower is already waiting for a datum.")
        self._stepping = True

        def stepped(result: Any) -> Any:
            self._stepping = False
            return result

        return Deferred.fromCoroutine(self._step()).addBoth(stepped)

    next = __anext__

    def _delay(self, error: BaseException) -> float:
        if isinstance(error, ArtcastError) and error.retryAfter is not None:
            return error.retryAfter
        return backoffDelay(
            self.failures, self.initialDelay, self.maxDelay, self.client.random
        )

    async def _step(self) -> Datum:
        while True:
            try:
                datum, self._since = await self.client._poll(self.key, self._since)
            except Exception as error:
                if not _transient(error):
                    # A client error, or a cancellation (which _get reports
                    # as a plain CancelledError): the caller hears of it.
                    raise
                self.failures += 1
                delay = self._delay(error)
                _log.warn(
                    "Following {key!r} at {url}: {error}; attempt {failures} "
                    "failed, trying again in {delay:.2f} s",
                    key=self.key,
                    url=self.client.url,
                    error=error,
                    failures=self.failures,
                    delay=delay,
                )
                await deferLater(self.client.reactor, delay, lambda: None)
                continue
            self.failures = 0
            if datum is not None:
                self.lastId = datum.id
                return datum


# The command line


def programName(argv0: str | None = None) -> str:
    """
    The command's name for its usage line and its errors: C{artcast-follow} when run as the
    installed command, C{python -m artcast.client} otherwise.

    @param argv0: the program's C{argv[0]}; by default C{sys.argv[0]}.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0 or "")
    if name.startswith("artcast-follow"):
        return "artcast-follow"
    return "python -m artcast.client"


def _options(argv: Sequence[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog=programName(),
        description="Follow an artcast and print each datum as a line of JSON "
        '({"key", "id", "value"}, and "gap": true after missed datums); '
        "without KEY, print the list of artcasts.",
    )
    parser.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8888")
    parser.add_argument("key", metavar="KEY", nargs="?", help="a key or wildcard pattern")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", metavar="ID", help="start after this datum id")
    start.add_argument(
        "--latest", action="store_true", help="start with the latest value"
    )
    parser.add_argument(
        "--count", type=int, metavar="N", help="stop after N datums"
    )
    parser.add_argument(
        "--poll-timeout", type=float, default=30.0, metavar="S",
        help="seconds each long poll may be held (default 30)",
    )
    parser.add_argument(
        "--max-delay", type=float, default=30.0, metavar="S",
        help="longest wait between reconnection attempts (default 30)",
    )
    parser.add_argument(
        "--write", metavar="PATH",
        help="also replace the file at PATH (atomically) with each value: "
        "a JSON string as its bare text, any other value as its JSON text",
    )
    options = parser.parse_args(argv)
    if options.write is not None and options.key is None:
        parser.error("--write needs a KEY")
    return options


def valueText(value: Any) -> str:
    """
    The text C{artcast-follow --write} writes for a value: a JSON string as
    its bare text, any other value as its JSON text (as C{text/plain}
    answers).
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def writeAtomically(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data} so that a reader sees the old
    content or the new, never a part: write a temporary file in the same
    directory, flush it to the disk, and rename it over C{path} (then flush
    the directory, where the system allows).  A file already at C{path}
    keeps its permissions; a new one gets C{0666} less the umask.

    @raise OSError: when it cannot be written (the temporary file removed).
    """
    import os
    import tempfile

    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        folder = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def _commandURL(options: Any) -> str:
    """
    The URL C{artcast-follow} asks first: the key's, or the list's.
    """
    base = options.url.rstrip("/")
    if options.key is None:
        return base + "/artcasts"
    return base + keyPath(options.key)


def describeFailure(url: str, error: BaseException) -> str:
    """
    The one line C{artcast-follow} prints when it gives up: the URL, what
    happened, and what to check.

    @param url: the URL that was asked for.
    @param error: what the request failed with.
    """
    return " ".join(_describe(url, error).split())


def _describe(url: str, error: BaseException) -> str:
    if isinstance(error, ArtcastError):
        return str(error)
    if isinstance(error, netError.ConnectionRefusedError):
        return (
            f"cannot connect to {url}: connection refused; is the server running? "
            "(twistd -n artcast ...)"
        )
    if isinstance(error, netError.DNSLookupError):
        return (
            f"cannot connect to {url}: the host name does not resolve; "
            "check the host name in the URL"
        )
    if isinstance(error, (netError.TimeoutError, netError.TCPTimedOutError)):
        return (
            f"cannot connect to {url}: no answer to the connection (timed out); "
            "check the address, the port and any firewall on the way"
        )
    if isinstance(error, netError.ConnectError):
        reason = str(error).rstrip(".") or error.__class__.__name__
        return f"cannot connect to {url}: {reason}; check the address and the port"
    if isinstance(error, defer.TimeoutError):
        return (
            f"{url}: {error}; is it an Artcast server, and does a proxy "
            "on the way hold the request?"
        )
    if isinstance(
        error,
        (ResponseFailed, RequestTransmissionFailed, RequestNotSent, netError.ConnectionClosed),
    ):
        return (
            f"{url}: the connection closed before the answer was complete; "
            "is the URL an Artcast server's (http://HOST:PORT), and is it still running?"
        )
    if isinstance(error, (SchemeNotSupported, ValueError)):
        return f"cannot use the URL {url}: {error}; write it as http://HOST:PORT"
    if isinstance(error, OSError):
        return f"{url}: {error}"
    return f"{url}: {error.__class__.__name__}: {error}"


def _line(datum: Datum) -> str:
    record: dict[str, Any] = {"key": datum.key, "id": datum.id, "value": datum.value}
    if datum.gap:
        record["gap"] = True
    return json.dumps(record, ensure_ascii=False)


async def run(
    reactor: IReactorTime,
    argv: Sequence[str],
    out: Any = None,
    client: ArtcastClient | None = None,
) -> None:
    """
    What C{python -m artcast.client} does, with its arguments C{argv}.
    """
    out = out if out is not None else sys.stdout
    options = _options(argv)
    if client is None:
        client = ArtcastClient(options.url, reactor, pollTimeout=options.poll_timeout)
    try:
        if options.key is None:
            for entry in await client.artcasts():
                print(json.dumps(entry, ensure_ascii=False), file=out, flush=True)
            return
        since = LATEST if options.latest else options.since
        count = 0
        async for datum in client.follow(options.key, since, options.max_delay):
            if options.write is not None:
                try:
                    writeAtomically(options.write, valueText(datum.value).encode("utf-8"))
                except OSError as e:
                    _log.warn("Cannot write {path}: {error}", path=options.write, error=e)
            print(_line(datum), file=out, flush=True)
            count += 1
            if options.count is not None and count >= options.count:
                break
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    """
    The command line: C{python -m artcast.client URL [KEY] [--since ID |
    --latest] [--count N] [--write PATH]}.
    """
    from twisted.internet.task import react
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    arguments = list(sys.argv[1:] if argv is None else argv)
    # Parsed here too, to name the URL in an error (bad arguments end here).
    url = _commandURL(_options(arguments))
    # Reconnection warnings go to stderr; the datums alone go to stdout.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )

    def start(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(run(reactor, arguments))

        def failed(failure: Any) -> None:
            # Whatever ended it (a refused key, the network, a timeout, a bad
            # URL): one line naming the URL and what to check, status 1.
            failure.trap(Exception)
            if failure.check(CancelledError):
                return failure
            print(f"{programName()}: {describeFailure(url, failure.value)}", file=sys.stderr)
            raise SystemExit(1)

        return d.addErrback(failed)

    react(start)


if __name__ == "__main__":
    main()
