# -*- test-case-name: tests.test_publish -*-
"""
Publishing over HTTP: C{POST} or C{PUT /artcasts/<key>} with a bearer token.

A server started with C{--publish-token-file} takes datums over HTTP, for
sources that cannot send multicast (a browser, a panel's reply channel, a
program on another network).  The request carries C{Authorization: Bearer
<token>}; the token file says which tokens exist and which keys each may
publish to (L{parseTokenFile}).  The body is the value: JSON
(C{application/json}) or a string (C{text/plain}).

The server stamps each published datum as a version 2 source of its own,
C{<instance>-http}, puts it in its store at once (so the answer carries its
id and local waiters have it before the answer is sent), and sends it to the
data group through its outlet (L{artcast.server.outlets.multicast}), signed
with the server's first C{--source-key-file} key when it has one, so that
every server fed by the group, behind the same load balancer, gets it with
the same id.

The sending socket keeps C{IP_MULTICAST_LOOP} on: other servers on the same
host (and the tests, where every server joins on 127.0.0.1) hear a datagram
only through the loop, and turning it off would hide the datum from them.
So the server hears its own datagram back; its L{DatagramHandler} ignores
datagrams of its own publisher's source name (C{ownSources}) rather than
publishing the datum twice.

Guessing tokens is throttled per client address (L{AuthThrottle}): past
C{--publish-auth-failures} unknown tokens in a minute, the address is
answered C{429} with C{Retry-After}, its token not checked.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from collections import Counter, OrderedDict
from typing import Any, Iterable, Sequence

import attr
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from zope.interface import implementer

from artcast.server.patterns import matches
from artcast.server.defaults import DEFAULT_AUTH_FAILURES
from artcast.server.interfaces import IFeed, IOutlet
from artcast.server.store import Datum, KeyStore
from artcast.server.stats import countRejected
from artcast.wire import (
    MAX_VALUE_DEPTH,
    BadDatagram,
    BadKey,
    DatumId,
    Stamp,
    encodeJSON,
    loadJSON,
    validateKey,
    valueTooDeep,
)

__all__ = [
    "AUTH_THROTTLED",
    "AUTH_WINDOW",
    "MAX_THROTTLED_ADDRESSES",
    "MIN_TOKEN_LENGTH",
    "AuthThrottle",
    "Grant",
    "HTTPPublisher",
    "Refused",
    "Tokens",
    "bearerToken",
    "clientKey",
    "parseTokenFile",
    "readValue",
]

MIN_TOKEN_LENGTH = 16
"""The shortest token a token file may hold, in characters."""

#: RFC 6750's b64token: what may follow C{Bearer }.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

#: The challenge of a 401 or 403 (RFC 6750, section 3).
_REALM = b'Bearer realm="artcast"'


class Refused(Exception):
    """
    A publish request that is not carried out.

    @ivar code: the HTTP status to answer with.
    @ivar message: a sentence for the client (never holding the token).
    @ivar headers: extra response headers, as C{(name, value)} pairs.
    """

    def __init__(
        self, code: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = tuple(headers)


# --- tokens -----------------------------------------------------------------


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Grant:
    """
    One line of a token file: a token and the keys it may publish to.

    @ivar digest: the SHA-256 digest of the token (the token itself is not
        kept, so it cannot end up in a C{repr} or a traceback).
    @ivar patterns: key patterns (with C{*} and C{...} wildcards) the token
        may publish to; empty for every key.
    @ivar line: the line of the token file, to name the token in messages.
    """

    digest: bytes = attr.ib(repr=False)
    patterns: tuple[str, ...]
    line: int

    def allows(self, key: str) -> bool:
        """
        May this token publish to C{key}?
        """
        return not self.patterns or any(matches(p, key) for p in self.patterns)


class Tokens:
    """
    The tokens of a token file.
    """

    def __init__(self, grants: Iterable[Grant]) -> None:
        self.grants = tuple(grants)

    def __len__(self) -> int:
        return len(self.grants)

    def find(self, token: bytes) -> Grant | None:
        """
        The grant of a token a client presented, or L{None}.

        Every known token is compared, each in constant time
        (L{hmac.compare_digest} of SHA-256 digests, so not even the length
        of a token leaks), and the loop never stops early: how long this
        takes says nothing about which token, or how much of one, matched.
        """
        presented = _digest(token)
        found = None
        for grant in self.grants:
            if hmac.compare_digest(grant.digest, presented) and found is None:
                found = grant
        return found


def parseTokenFile(contents: bytes) -> Tokens:
    """
    Read a token file (C{--publish-token-file}).

    One token per line, optionally followed by whitespace-separated key
    patterns it may publish to (wildcards as in requests: C{*} is one
    level, C{...} as the last level one or more); a token without patterns
    may publish to every key.  A C{#} at the start of a field begins a
    comment; blank lines are ignored.  For example::

        # panel in the lobby: replies only
        3q2+7w9cXk1vS0pQeM4tY2hGdA  panels/lobby/...
        Zm9vYmFyYmF6cXV4cXV1eDEyMw  sensors/* weather/oslo/temp

    A token is RFC 6750's C{b64token} (letters, digits, C{-._~+/}, then
    optional C{=}), at least L{MIN_TOKEN_LENGTH} characters: make one with
    C{openssl rand -base64 32}.

    @raise ValueError: naming the line (never the token) of a malformed
        token, a bad pattern or a repeated token; or when the file holds no
        token.
    """
    try:
        text = contents.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the token file is not UTF-8") from None
    grants: list[Grant] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        for index, field in enumerate(fields):
            if field.startswith("#"):
                del fields[index:]
                break
        if not fields:
            continue
        token, patterns = fields[0], fields[1:]
        if _TOKEN_RE.fullmatch(token) is None:
            raise ValueError(
                f"line {number}: a token is letters, digits and -._~+/ "
                "(then optional '=')"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"line {number}: a token must be at least {MIN_TOKEN_LENGTH} "
                "characters (use e.g. openssl rand -base64 32)"
            )
        for pattern in patterns:
            try:
                validateKey(pattern, allowWildcards=True)
            except BadKey as error:
                raise ValueError(f"line {number}: {error}") from None
        digest = _digest(token.encode("ascii"))
        if digest in seen:
            raise ValueError(f"line {number}: the same token as line {seen[digest]}")
        seen[digest] = number
        grants.append(Grant(digest, tuple(patterns), number))
    if not grants:
        raise ValueError("the token file holds no token")
    return Tokens(grants)


def bearerToken(request: IRequest) -> bytes | None:
    """
    The token of the request's C{Authorization: Bearer <token>} header, or
    L{None} when there is none, another scheme, or more than one header.
    """
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values or len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


# --- guessing ---------------------------------------------------------------

#: The window of L{AuthThrottle}, in seconds.
AUTH_WINDOW = 60.0

#: The addresses L{AuthThrottle} remembers at most; past it the one that
#: failed least recently is forgotten.
MAX_THROTTLED_ADDRESSES = 10_000

#: The C{rejected} reason of a request refused by L{AuthThrottle}.
AUTH_THROTTLED = "auth-throttled"


def clientKey(host: str) -> str:
    """
    What L{AuthThrottle} counts failures under: an IPv4 address, the C{/64}
    network of an IPv6 address (one machine usually has a whole C{/64}), or
    the text given (C{""} for a UNIX socket's peers, all on this machine).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthThrottle:
    """
    Failed bearer-token checks by client address, so that tokens cannot be
    guessed at the speed the server answers.

    An address (see L{clientKey}) that failed C{failures} times within
    C{window} seconds of its first failure is refused without a check until
    that window ends.  At most C{maxAddresses} addresses are remembered: a
    new one past it makes the throttle forget the address that failed least
    recently, so the table cannot be made to grow.

    @param clock: gives the time.
    """

    def __init__(
        self,
        clock: IReactorTime,
        failures: int = DEFAULT_AUTH_FAILURES,
        window: float = AUTH_WINDOW,
        maxAddresses: int = MAX_THROTTLED_ADDRESSES,
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self.maxAddresses = maxAddresses
        #: Per address key, the start of its window and its failures in it;
        #: the one that failed least recently first.
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def retryAfter(self, host: str) -> int | None:
        """
        In how many seconds (at least 1) C{host} may have a token checked
        again, or L{None} if it may now.
        """
        key = clientKey(host)
        entry = self._table.get(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        if now - entry[0] >= self.window:
            del self._table[key]
            return None
        if entry[1] < self.failures:
            return None
        return max(1, math.ceil(entry[0] + self.window - now))

    def failed(self, host: str) -> None:
        """
        C{host} presented a token that is not known.
        """
        key = clientKey(host)
        now = self.clock.seconds()
        entry = self._table.get(key)
        if entry is None or now - entry[0] >= self.window:
            self._table[key] = [now, 1]
        else:
            entry[1] += 1
        self._table.move_to_end(key)
        while len(self._table) > self.maxAddresses:
            self._table.popitem(last=False)


from artcast.server.defaults import DEFAULT_AUTH_FAILURES
def _mediaType(header: bytes | None) -> tuple[str, dict[str, str]]:
    """
    Split a C{Content-Type} into its lower-cased media type and parameters.
    """
    text = (header or b"").decode("latin-1")
    pieces = text.split(";")
    params = {}
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        params[name.strip().lower()] = value.strip().strip('"').lower()
    return pieces[0].strip().lower(), params


def _tooLarge(maxValueSize: int) -> Refused:
    return Refused(413, f"A value may be at most {maxValueSize} bytes of JSON.")


def readValue(contentType: bytes | None, body: bytes, maxValueSize: int) -> object:
    """
    The value a publish request's body holds.

    @param contentType: the C{Content-Type} header: C{application/json}
        (also when absent) for a JSON value, C{text/plain} for a string;
        UTF-8 either way.
    @raise Refused: C{413} for a body or value over C{maxValueSize} bytes
        (the value counted as compact JSON), C{415} for another type or
        charset, C{400} for a body that is not UTF-8 or not strict JSON.
    """
    if len(body) > maxValueSize:
        raise _tooLarge(maxValueSize)
    mediaType, params = _mediaType(contentType)
    charset = params.get("charset", "utf-8")
    if mediaType not in ("", "application/json", "text/plain") or charset not in (
        "utf-8",
        "us-ascii",
    ):
        if mediaType == "application/x-www-form-urlencoded":
            # What curl -d sends without -H 'Content-Type: ...'.
            raise Refused(
                415,
                "A form (application/x-www-form-urlencoded, what curl -d sends) is not "
                "taken: send the value with Content-Type: application/json, or a string "
                "with text/plain; charset=utf-8.",
            )
        raise Refused(
            415,
            "Send the value as application/json, or a string as text/plain; "
            "charset=utf-8.",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "The body is not UTF-8.") from None
    if mediaType == "text/plain":
        value: object = text
    else:
        try:
            value = loadJSON(text)
        except BadDatagram as error:
            raise Refused(400, f"The body is not strict JSON: {error}") from None
        # A datagram's own object is one more level around the value.
        if valueTooDeep(text):
            raise Refused(400, f"The value nests more than {MAX_VALUE_DEPTH} levels.")
    if len(encodeJSON(value)) > maxValueSize:
        raise _tooLarge(maxValueSize)
    return value


# --- publishing -------------------------------------------------------------


@implementer(IFeed)
class HTTPPublisher(MultiService):
    """
    The feed of HTTP publishing: carries out publish requests (checks the
    token, reads the value, sends the datum through its outlet and puts it
    in the store).

    A service, so that it sits in the service tree; the server makes the
    outlet its child, so that the outlet starts and stops with it.

    @ivar outlet: sends each datum on and names it.
    @ivar published: how many datums were published over HTTP.
    @ivar refused: publish requests refused, by HTTP status.
    """

    name = "publish"

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        tokens: Tokens,
        outlet: IOutlet,
        maxValueSize: int,
        stats: Any = None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        """
        @param outlet: sends each datum on (to the data group, an
            L{artcast.server.outlets.multicast.MulticastOutlet}) and gives
            its id.
        @param stats: the server's L{artcast.server.stats.Stats}, whose
            C{datums} counts HTTP-published datums too.
        @param throttle: bounds failed token checks per client address; by
            default an L{AuthThrottle} with its defaults.
        """
        super().__init__()
        self.throttle = throttle if throttle is not None else AuthThrottle(clock)
        self.store = store
        self.clock = clock
        self.tokens = tokens
        self.outlet = outlet
        self.maxValueSize = maxValueSize
        self.stats = stats
        self.published = 0
        self.refused: Counter[int] = Counter()

    def statistics(self) -> dict[str, object]:
        """
        C{published}, and C{publish_refused}: refused requests by HTTP
        status (as text).
        """
        return {
            "published": self.published,
            "publish_refused": {str(code): count for code, count in self.refused.items()},
        }

    def _refuse(self, refusal: Refused) -> Refused:
        self.refused[refusal.code] += 1
        return refusal

    def authorize(self, request: IRequest) -> Grant:
        """
        The grant of the request's bearer token.

        @raise Refused: C{401} with a C{WWW-Authenticate} challenge when the
            request has no bearer token or an unknown one; C{429} with
            C{Retry-After}, the token not checked, when the client's address
            failed too often (L{AuthThrottle}), counted as C{auth-throttled}
            in the site's C{rejected}.
        """
        host = getattr(request.getClientAddress(), "host", "")
        wait = self.throttle.retryAfter(host)
        if wait is not None:
            countRejected(request, AUTH_THROTTLED)
            raise self._refuse(
                Refused(
                    429,
                    "Too many unknown tokens from your address; try again later.",
                    [(b"Retry-After", b"%d" % (wait,))],
                )
            )
        token = bearerToken(request)
        if token is None:
            raise self._refuse(
                Refused(
                    401,
                    "Publishing needs an Authorization: Bearer <token> header.",
                    [(b"WWW-Authenticate", _REALM)],
                )
            )
        grant = self.tokens.find(token)
        if grant is None:
            self.throttle.failed(host)
            raise self._refuse(
                Refused(
                    401,
                    "That token is not known here.",
                    [(b"WWW-Authenticate", _REALM + b', error="invalid_token"')],
                )
            )
        return grant

    def publish(self, request: IRequest, grant: Grant, key: str) -> tuple[Datum, bool]:
        """
        Publish the value in the request's body under C{key}.

        @param key: a valid key (L{artcast.wire.validateKey}); a pattern is
            refused.
        @return: the datum and whether the key was new on this server.
        @raise Refused: C{400} for a pattern or a bad body, C{403} when the
            token may not publish to C{key}, C{413}, C{415} (see
            L{readValue}), C{503} when the datum cannot be sent or stored.
        """
        try:
            validateKey(key)
        except BadKey as error:
            raise self._refuse(Refused(400, f"Publish to a key, not a pattern: {error}"))
        if not grant.allows(key):
            raise self._refuse(
                Refused(
                    403,
                    f"The token of line {grant.line} may not publish to that key.",
                    [(b"WWW-Authenticate", _REALM + b', error="insufficient_scope"')],
                )
            )
        if getattr(request, "bodyTooLarge", False):
            raise self._refuse(_tooLarge(self.maxValueSize))
        body = request.content.read(self.maxValueSize + 1)
        try:
            value = readValue(
                request.getHeader(b"Content-Type"), body, self.maxValueSize
            )
        except Refused as refusal:
            raise self._refuse(refusal)
        created = self.store.latest(key) is None
        try:
            datumId = self.outlet.send(key, value)
        except RuntimeError:
            raise self._refuse(
                Refused(503, "Not ready to publish yet.", [(b"Retry-After", b"1")])
            )
        except ValueError as error:
            # The key and the value are valid: only size is left.
            raise self._refuse(Refused(413, f"The value cannot be sent: {error}"))
        source, boot, seq = DatumId.parse(datumId)
        datum = self.store.publish(key, value, Stamp(source, boot, seq, self.clock.seconds()))
        if datum is None:
            raise self._refuse(
                Refused(413, "The value alone is more than this server's store may hold.")
            )
        self.published += 1
        if self.stats is not None:
            self.stats.datums += 1
        return datum, created
