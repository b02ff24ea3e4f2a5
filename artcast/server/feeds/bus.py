# -*- test-case-name: tests.test_bus -*-
"""
The Redis bus: C{--bus redis://HOST:PORT[/DB]}.  Servers that share a Redis
exchange every datum any of them takes in (multicast, HTTP publishing, an
upstream) through one Redis Stream, C{artcast:datums}, with the datum's own
id, and keep their history there (C{docs/bus.md}).

  - B{Adding.}  Every datum the store takes that did not come from the bus
    (a L{Subscription} on C{...}) goes to a bounded L{Outbox} and from there
    to Redis, through one Lua script that adds it to the stream only if its
    id was not added in the last minute (C{SET artcast:seen:<id> NX PX}):
    servers that heard the same datagram add it once.  Registrations go to
    the hash C{artcast:registrations} and, as an entry, to the stream.
  - B{Taking.}  A second connection reads the stream (C{XRANGE} in pages
    until it is caught up, then C{XREAD BLOCK}); each datum is taken with
    its id through the server's source tracker
    (L{DatagramHandler.relayed}), so one heard on multicast too is a
    duplicate, counted and not served twice.  Every entry is checked (key,
    id, JSON, size); a bad one is dropped, counted and logged at a bounded
    rate.
  - B{Start.}  The history of the stream (entries newer than
    C{--history-age}, at most C{--bus-history}) is read before the HTTP
    port is bound (L{BusFeed.whenReady}), within C{--bus-timeout}.
  - B{Version 1 datums.}  A version 1 datagram has no id: each server
    that hears it stamps it itself.  So that servers on one group serve it
    once, under one id, the server that hears one asks Redis first
    (L{BusFeed.version1}, C{SET artcast:v1:<hash> 1 NX PX 250}, the hash
    naming the sender's address and port, the key and the value): the one
    that sets the key stamps the datum and publishes it (it is then added
    as any datum); the others take it from the stream under its id.  While
    the bus is down, or Redis does not answer within C{--bus-timeout}, it is
    published at once, as without a bus.
  - B{Stopping.}  What the outbox still holds is added first, for at most
    C{min(--bus-timeout, 2 s)} (L{BusFeed.stopService} returns a
    L{Deferred} twistd waits for).
  - B{Redis going away.}  Any failure (refused, lost, an error answer such
    as C{OOM}) puts the bus down: one error-log line, local datums wait in
    the outbox (bounded), Redis is tried again after a back-off (0.5 s
    doubling to 10 s); when it answers, the reader catches up from the last
    entry it read (from the start of the stream if Redis came back empty),
    the outbox is sent, and one line says so.

The feed talks to Redis through a thin interface, L{RedisBus}'s methods
(C{add}, C{claim}, C{register}, C{registrations}, C{range}, C{read}, C{last},
C{trim}, C{reset}, C{close}); the tests drive it with an in-memory fake.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, OrderedDict, deque
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ClientFactory
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from txredisapi import BaseRedisProtocol, ConnectionError as RedisConnectionError
from zope.interface import implementer

from artcast.server.defaults import (
    DEFAULT_BUS_BACKOFF,
    DEFAULT_BUS_HISTORY,
    DEFAULT_BUS_MAX_BACKOFF,
    DEFAULT_BUS_OUTBOX,
    DEFAULT_BUS_OUTBOX_BYTES,
    DEFAULT_BUS_SEEN_TTL,
    DEFAULT_BUS_TIMEOUT,
    DEFAULT_BUS_TRIM_INTERVAL,
    DEFAULT_HISTORY_AGE,
)
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.interfaces import IFeed
from artcast.server.logs import NamedLogger, RateLimitedLog
from artcast.server.store import Datum
from artcast.wire import (
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
    "ADD_SCRIPT",
    "BadEntry",
    "BusAddress",
    "BusFeed",
    "DatumEntry",
    "MAX_IN_FLIGHT",
    "MAX_V1_WAITING",
    "Outbox",
    "READ_BLOCK",
    "READ_COUNT",
    "RANGE_PAGE",
    "REGISTRATIONS_KEY",
    "RedisBus",
    "RegistrationEntry",
    "STOP_DRAIN",
    "STREAM_KEY",
    "V1_WINDOW",
    "parseBusURL",
    "parseEntry",
    "registrationEntry",
    "streamOrder",
    "version1Digest",
]

#: The stream every datum and registration goes through, and the hash of the
#: registrations.
STREAM_KEY = b"artcast:datums"
REGISTRATIONS_KEY = b"artcast:registrations"
_SEEN_PREFIX = b"artcast:seen:"
_V1_PREFIX = b"artcast:v1:"

#: Seconds within which a version 1 datum heard by several servers (the same
#: sender's address and port, key and value) is taken as one datum: the
#: first server to claim it stamps it, the others take it from the stream.
#: A source that sends the same value for the same key twice within this
#: time has the second taken as a copy of the first (on a bus only).
V1_WINDOW = 0.25

#: Version 1 datums waiting for Redis to say whether they are this server's
#: to stamp, at most; beyond, each is published at once.
MAX_V1_WAITING = 1000

#: Seconds a stopping server waits, at most, for its outbox to be added
#: (and never more than C{--bus-timeout}).
STOP_DRAIN = 2.0

#: Adds a datum to the stream unless its id was added in the last C{ttl}
#: milliseconds: C{KEYS} are the stream and the id's "seen" key; C{ARGV}
#: the ttl, the stream's C{MAXLEN ~}, the key, the id and the value's JSON.
ADD_SCRIPT = b"""\
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                    'k', ARGV[3], 'i', ARGV[4], 'v', ARGV[5])
end
return false
"""
_ADD_SHA = hashlib.sha1(ADD_SCRIPT).hexdigest().encode("ascii")

#: Entries read at once: a page of C{XRANGE} while catching up, and
#: C{XREAD}'s C{COUNT} and C{BLOCK} (milliseconds) once caught up.
RANGE_PAGE = 1000
READ_COUNT = 500
READ_BLOCK = 5000

#: Commands adding datums or registrations in flight at once, at most.
MAX_IN_FLIGHT = 64

#: What an outbox entry costs beyond its key, id and value, in bytes.
_ENTRY_OVERHEAD = 100

#: How many ids of this server's own datums are remembered, so that they are
#: skipped when read back.
_OWN_MEMORY = 10_000

#: Where datums from the bus say they came from (never NACKed).
_ADDRESS = ("bus", 0)


class BusAddress(NamedTuple):
    """
    Where the bus's Redis is: C{redis://HOST:PORT[/DB]}, or, with Redis
    Sentinel, C{redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]}
    (then C{host} is C{""} and C{port} 0: the master is asked of the
    sentinels each time the bus connects).
    """

    host: str
    port: int
    db: int
    #: The sentinels' C{(host, port)}, in the URL's order; empty without
    #: Sentinel.
    sentinels: tuple[tuple[str, int], ...] = ()
    #: The name the sentinels monitor the master under.
    service: str = ""

    def url(self) -> str:
        """
        @return: the address as a URL, the database shown only when not 0.
        """
        db = f"/{self.db}" if self.db else ""
        if self.sentinels:
            where = ",".join(_hostPort(host, port) for host, port in self.sentinels)
            return f"redis+sentinel://{where}/{self.service}{db}"
        return f"redis://{_hostPort(self.host, self.port)}{db}"


def _hostPort(host: str, port: int) -> str:
    """
    C{HOST:PORT}, an IPv6 address in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: The most sentinels a C{redis+sentinel://} URL may name.
_MAX_SENTINELS = 16

_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,100}\Z")
_SENTINEL_FORM = "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"


def _database(text: str, path: str, form: str) -> int:
    if path and (not path.isdigit() or int(path) > 1_000_000):
        raise ValueError(f"{text!r}: the database must be a number ({form})")
    return int(path) if path else 0


def _parseSentinelURL(text: str) -> BusAddress:
    rest = text[len("redis+sentinel://"):]
    where, _, path = rest.partition("/")
    if any(mark in rest for mark in "@?#"):
        raise ValueError(f"{text!r}: only {_SENTINEL_FORM} is understood")
    sentinels: list[tuple[str, int]] = []
    for one in where.split(","):
        parts = urlsplit("//" + one.strip())
        try:
            port = parts.port or 26379
        except ValueError:
            raise ValueError(f"{text!r}: the port of {one!r} is not a number from 1 to 65535")
        if not parts.hostname or parts.path:
            raise ValueError(f"{text!r}: {one!r} is not a sentinel's HOST:PORT ({_SENTINEL_FORM})")
        if (parts.hostname, port) in sentinels:
            raise ValueError(f"{text!r}: the sentinel {one!r} is given twice")
        sentinels.append((parts.hostname, port))
    if len(sentinels) > _MAX_SENTINELS:
        raise ValueError(f"{text!r}: more than {_MAX_SENTINELS} sentinels")
    service, _, db = path.partition("/")
    if not _SERVICE.match(service):
        raise ValueError(
            f"{text!r}: the master's service name is missing or not letters, digits,"
            f" '.', '_', '-' ({_SENTINEL_FORM})"
        )
    return BusAddress("", 0, _database(text, db.strip("/"), _SENTINEL_FORM), tuple(sentinels), service)


def parseBusURL(text: str) -> BusAddress:
    """
    Read a C{--bus} URL: C{redis://HOST:PORT[/DB]} (the port is 6379 when
    left out, the database 0), or
    C{redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]} (a sentinel's
    port is 26379 when left out).

    @raise ValueError: for anything else (another scheme, a user or password,
        a query, a bad port, service name or database).
    """
    text = text.strip()
    if text.startswith("redis+sentinel://"):
        return _parseSentinelURL(text)
    parts = urlsplit(text)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(
            f"{text!r} is not a redis://HOST:PORT[/DB] URL (or {_SENTINEL_FORM})"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: only redis://HOST:PORT[/DB] is understood")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535")
    return BusAddress(
        parts.hostname, port, _database(text, parts.path.strip("/"), "redis://HOST:PORT/DB")
    )


def streamOrder(streamId: bytes) -> tuple[int, int]:
    """
    A stream entry id C{b"<ms>-<seq>"} as a pair that sorts as Redis does.

    @raise ValueError: if it is not one.
    """
    ms, _, seq = streamId.partition(b"-")
    return (int(ms), int(seq or 0))


def version1Digest(address: tuple[str, int], key: str, value: object) -> bytes:
    """
    What names a version 1 datum among servers that heard it: the SHA-1,
    in hexadecimal, of its sender's address and port, its key and its
    value's compact JSON text.
    """
    digest = hashlib.sha1(b"%s:%d\0" % (str(address[0]).encode("utf-8", "replace"), address[1]))
    digest.update(key.encode("utf-8"))
    digest.update(b"\0")
    digest.update(encodeJSON(value))
    return digest.hexdigest().encode("ascii")


class BadEntry(ValueError):
    """
    A stream entry that is not a datum or a registration this server takes.

    @ivar reason: a stable label, counted in C{busDropped}.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DatumEntry(NamedTuple):
    """
    A datum read from the stream.
    """

    key: str
    ident: DatumId
    value: object


class RegistrationEntry(NamedTuple):
    """
    A registration read from the stream (or the registrations' hash).
    """

    key: str
    meta: dict[str, Any]
    #: The metadata's JSON text, as read.
    text: bytes


def _key(raw: object) -> str:
    if not isinstance(raw, bytes):
        raise BadEntry("bad-key", "the key is missing")
    try:
        return validateKey(raw.decode("utf-8"))
    except (UnicodeDecodeError, BadKey) as error:
        raise BadEntry("bad-key", f"bad key {raw[:100]!r}: {error}")


def _json(raw: object, maxValueSize: int, what: str) -> object:
    if not isinstance(raw, bytes):
        raise BadEntry("bad-" + what, f"the {what} is missing")
    if len(raw) > maxValueSize:
        raise BadEntry("too-large", f"the {what} is {len(raw)} bytes, more than {maxValueSize}")
    try:
        return loadJSON(raw.decode("utf-8"))
    except (UnicodeDecodeError, BadDatagram) as error:
        raise BadEntry("not-json", f"the {what} is not JSON: {error}")


def registrationEntry(key: object, meta: object, maxValueSize: int) -> RegistrationEntry:
    """
    Check a registration's key and metadata JSON text.

    @raise BadEntry: if either is bad.
    """
    checked = _key(key)
    value = _json(meta, maxValueSize, "metadata")
    if not isinstance(value, dict):
        raise BadEntry("bad-metadata", "the metadata is not a JSON object")
    assert isinstance(meta, bytes)
    return RegistrationEntry(checked, value, meta)


def parseEntry(fields: object, maxValueSize: int) -> DatumEntry | RegistrationEntry:
    """
    Check one stream entry's fields, as Redis gives them (a flat list of
    names and values): a datum has C{k}, C{i}, C{v}; a registration C{k},
    C{m}.

    @raise BadEntry: for anything else, with its reason.
    """
    if (
        not isinstance(fields, list)
        or len(fields) % 2
        or len(fields) > 16
        or not all(isinstance(field, bytes) for field in fields)
    ):
        raise BadEntry("bad-entry", "the entry's fields are not names and values")
    entry = dict(zip(fields[::2], fields[1::2]))
    if set(entry) == {b"k", b"i", b"v"}:
        key = _key(entry[b"k"])
        try:
            ident = DatumId.parse(entry[b"i"].decode("ascii"))
        except (UnicodeDecodeError, ValueError) as error:
            raise BadEntry("bad-id", f"bad id {entry[b'i'][:100]!r}: {error}")
        return DatumEntry(key, ident, _json(entry[b"v"], maxValueSize, "value"))
    if set(entry) == {b"k", b"m"}:
        return registrationEntry(entry[b"k"], entry[b"m"], maxValueSize)
    raise BadEntry("bad-entry", f"an entry with the fields {sorted(entry)!r:.100}")


class Outbox:
    """
    What waits to be added to the bus, in order, bounded in entries and in
    bytes: past either bound a new entry is refused (and counted by the
    caller).  An entry is C{(kind, key, id, json)}: C{kind} C{"d"} for a
    datum, C{"m"} for a registration (C{id} L{None}).
    """

    def __init__(
        self, maxEntries: int = DEFAULT_BUS_OUTBOX, maxBytes: int = DEFAULT_BUS_OUTBOX_BYTES
    ) -> None:
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.bytes = 0
        self._entries: deque[tuple[str, str, str | None, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(entry: tuple[str, str, str | None, bytes]) -> int:
        return len(entry[1]) + len(entry[2] or "") + len(entry[3]) + _ENTRY_OVERHEAD

    def append(self, entry: tuple[str, str, str | None, bytes]) -> bool:
        """
        Add an entry at the end, unless a bound is reached.

        @return: whether it was added.
        """
        cost = self._cost(entry)
        if len(self._entries) >= self.maxEntries or self.bytes + cost > self.maxBytes:
            return False
        self._entries.append(entry)
        self.bytes += cost
        return True

    def putBack(self, entry: tuple[str, str, str | None, bytes]) -> None:
        """
        Put an entry taken with L{popleft} back at the front (one whose
        sending failed); the bounds are exceeded by at most the entries in
        flight.
        """
        self._entries.appendleft(entry)
        self.bytes += self._cost(entry)

    def popleft(self) -> tuple[str, str, str | None, bytes]:
        """
        Take the first entry.
        """
        entry = self._entries.popleft()
        self.bytes -= self._cost(entry)
        return entry


class _Protocol(BaseRedisProtocol):
    """
    txredisapi's protocol, telling its L{_Link} when the connection is lost,
    and reading a whole answer in one go.

    txredisapi hands the bytes that follow each bulk string to the next turn
    of the global reactor, pausing the transport meanwhile: an C{XREAD} of
    500 entries took some 3,500 turns.  Here they are read in a loop in the
    same turn (L{setLineMode} keeps them, L{dataReceived} goes on with
    them), without recursion.
    """

    link: _Link | None = None
    _rest = b""

    def setLineMode(self, extra: bytes = b"") -> None:
        self.line_mode = 1
        if extra:
            self._rest = extra

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        while data:
            self._rest = b""
            super().dataReceived(data)
            data = self._rest

    def connectionLost(self, why: Failure) -> None:
        link = self.link
        if link is not None:
            link._lost(self)
        super().connectionLost(why)


class _Factory(ClientFactory):
    """
    Gives its one protocol, quietly (no "Starting factory" line each time
    Redis is connected again).
    """

    noisy = False

    def __init__(self, protocol: _Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> _Protocol:
        return self.protocol_


class _Master:
    """
    Where a L{RedisBus}'s master is, shared by its two L{_Link}s.

    With Redis Sentinel, each connection is made to the address the
    sentinels give, asked afresh each time (one lookup at once, shared by the
    links that connect then): the sentinels in turn, each over a short
    connection of its own bounded by the timeout, C{SENTINEL
    get-master-addr-by-name SERVICE}; the one that answered is asked first
    the next time.  Without it, the master is the URL's address.

    @ivar current: the master the bus last connected to, C{HOST:PORT}.
    @ivar changes: times it changed (the first connection not counted).
    @ivar notMaster: connections given up because the server the sentinels
        named did not say C{ROLE} C{master}.
    """

    log = NamedLogger(namespace="artcast.bus")

    def __init__(self, reactor: Any, address: BusAddress, timeout: float) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.sentinels = list(address.sentinels)
        self.current: str | None = None
        self.changes = 0
        self.notMaster = 0
        self._waiting: list[Deferred[tuple[str, int]]] | None = None
        self._asking: Deferred[Any] | None = None
        self._closed = False

    def find(self) -> Deferred[tuple[str, int]]:
        """
        The master's C{(host, port)}: asked of the sentinels, if there are.

        @return: a L{Deferred} that fails with txredisapi's
            C{ConnectionError} when no sentinel names the master.
        """
        if not self.sentinels:
            return succeed((self.address.host, self.address.port))
        if self._closed:
            return _failed(RedisConnectionError("the bus is stopped"))
        waiting: Deferred[tuple[str, int]] = Deferred()
        if self._waiting is None:
            self._waiting = [waiting]
            self._ask(0, [])
        else:
            self._waiting.append(waiting)
        return waiting

    def _ask(self, index: int, reasons: list[str]) -> None:
        """
        Ask the sentinel at C{index}, and the next ones if it does not name
        the master.
        """
        if self._closed:
            reasons.append("the bus is stopped")
            index = len(self.sentinels)
        if index >= len(self.sentinels):
            self._found(Failure(RedisConnectionError(
                f"no sentinel named the master {self.address.service}: " + "; ".join(reasons)
            )))
            return
        host, port = self.sentinels[index]
        protocol = _Protocol(charset=None, convertNumbers=False)
        protocol.callLater = self.reactor.callLater
        endpoint = TCP4ClientEndpoint(self.reactor, host, port, timeout=self.timeout)
        service = self.address.service.encode("ascii")

        def ask(protocol: _Protocol) -> Any:
            return protocol.execute_command(b"SENTINEL", b"get-master-addr-by-name", service)

        asking = endpoint.connect(_Factory(protocol)).addCallback(ask)
        # Connecting and answering, bounded together.
        asking.addTimeout(self.timeout, self.reactor)
        self._asking = asking

        def done(result: Any) -> Any:
            self._asking = None
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            return result

        def answered(reply: object) -> None:
            try:
                master = _masterAddress(reply)
            except ValueError as error:
                reasons.append(f"{_hostPort(host, port)}: {error}")
                self._ask(index + 1, reasons)
                return
            # The sentinel that answered is asked first next time.
            self.sentinels.insert(0, self.sentinels.pop(index))
            self._found(master)

        def failed(failure: Failure) -> None:
            if not self._closed:
                if failure.check(TimeoutError):
                    reason = f"no answer within {self.timeout:g} s"
                else:
                    reason = (failure.getErrorMessage() or failure.type.__name__).rstrip(".")
                reasons.append(f"{_hostPort(host, port)}: {reason}")
            self._ask(index + 1, reasons)

        asking.addBoth(done)
        asking.addCallbacks(answered, failed)

    def _found(self, result: tuple[str, int] | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for one in waiting:
            if isinstance(result, Failure):
                one.errback(result)
            else:
                one.callback(result)

    def confirmed(self, host: str, port: int) -> None:
        """
        The bus connected to the master at C{host}:C{port}.
        """
        where = _hostPort(host, port)
        if self.current is not None and self.current != where:
            self.changes += 1
            self.log.warn(
                "bus: {url}: the master is now {master} (was {previous})",
                url=self.address.url(), master=where, previous=self.current,
            )
        self.current = where

    def close(self) -> None:
        """
        Ask no sentinel any more (a lookup under way fails).
        """
        self._closed = True
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()


def _masterAddress(reply: object) -> tuple[str, int]:
    """
    The C{(host, port)} of a sentinel's answer to C{SENTINEL
    get-master-addr-by-name}.

    @raise ValueError: if it names none.
    """
    if reply is None:
        raise ValueError("it does not know the master")
    if not (isinstance(reply, list) and len(reply) == 2
            and all(isinstance(part, bytes) for part in reply)):
        raise ValueError(f"a strange answer {reply!r:.100}")
    try:
        host = reply[0].decode("ascii")
        port = int(reply[1])
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"a strange answer {reply!r:.100}")
    if not host or not 0 < port < 65536:
        raise ValueError(f"a strange answer {reply!r:.100}")
    return host, port


class _Link:
    """
    One connection to Redis, made when a command needs it, never queueing
    more than the commands its caller has in flight: a failed connection
    fails them, and the next command connects again (with Sentinel, to the
    master the sentinels name then, once it says C{ROLE} C{master}).
    """

    def __init__(
        self, reactor: Any, address: BusAddress, timeout: float, master: _Master | None = None
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.master = master if master is not None else _Master(reactor, address, timeout)
        self._protocol: _Protocol | None = None
        self._connecting: list[Deferred[_Protocol]] | None = None
        self._closed = False

    def command(self, *args: bytes | int, timeout: float | None = None) -> Deferred[Any]:
        """
        Send a command and give its answer (an error answer fails the
        L{Deferred} with txredisapi's C{ResponseError}).

        @param timeout: seconds to wait for the answer (C{self.timeout} by
            default); past it the connection is dropped.
        """
        if self._closed:
            return _failed(RedisConnectionError("the bus is stopped"))
        protocol = self._protocol
        if protocol is not None and protocol.connected and self._connecting is None:
            return self._send(protocol, args, timeout)
        waiting: Deferred[_Protocol] = Deferred()
        if self._connecting is None:
            self._connecting = [waiting]
            self._connect()
        else:
            self._connecting.append(waiting)
        return waiting.addCallback(self._send, args, timeout)

    def _connect(self) -> None:
        found = self.master.find()
        found.addCallback(self._connectTo)
        found.addBoth(self._connected)

    def _connectTo(self, where: tuple[str, int]) -> Deferred[_Protocol]:
        host, port = where
        protocol = _Protocol(charset=None, convertNumbers=False)
        protocol.link = self
        protocol.callLater = self.reactor.callLater
        endpoint = TCP4ClientEndpoint(self.reactor, host, port, timeout=self.timeout)
        connected = endpoint.connect(_Factory(protocol))

        def select(protocol: _Protocol) -> Any:
            self._protocol = protocol
            if not self.address.db:
                return protocol
            answer = self._send(protocol, (b"SELECT", self.address.db), None)
            return answer.addCallback(lambda _: protocol)

        def role(protocol: _Protocol) -> Any:
            if not self.address.sentinels:
                return protocol

            def check(reply: object) -> _Protocol:
                if isinstance(reply, list) and reply and reply[0] == b"master":
                    return protocol
                self.master.notMaster += 1
                said = reply[0] if isinstance(reply, list) and reply else reply
                raise RedisConnectionError(
                    f"{_hostPort(host, port)}, named by the sentinels, is not the master"
                    f" (ROLE: {said!r:.40})"
                )

            return self._send(protocol, (b"ROLE",), None).addCallback(check)

        def confirm(protocol: _Protocol) -> _Protocol:
            self.master.confirmed(host, port)
            return protocol

        return connected.addCallback(select).addCallback(role).addCallback(confirm)

    def _connected(self, result: Any) -> None:
        waiting, self._connecting = self._connecting or [], None
        if isinstance(result, Failure):
            self.reset()
            for one in waiting:
                one.errback(result)
            return
        if self._closed:
            self.reset()
            for one in waiting:
                one.errback(RedisConnectionError("the bus is stopped"))
            return
        for one in waiting:
            one.callback(result)

    def _send(self, protocol: _Protocol, args: tuple[Any, ...], timeout: float | None) -> Deferred[Any]:
        try:
            answer = protocol.execute_command(*args)
        except Exception as error:
            return _failed(error)
        answer.addTimeout(self.timeout if timeout is None else timeout, self.reactor)

        def timedOut(failure: Failure) -> Failure:
            if failure.check(TimeoutError) and protocol.transport is not None:
                protocol.transport.abortConnection()
            return failure

        return answer.addErrback(timedOut)

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def reset(self) -> None:
        """
        Drop the connection: what is in flight fails.
        """
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()

    def close(self) -> None:
        """
        Drop the connection and refuse every later command.
        """
        self._closed = True
        self.reset()


def _failed(error: BaseException) -> Deferred[Any]:
    failed: Deferred[Any] = Deferred()
    failed.errback(Failure(error))
    return failed


def _entries(reply: object) -> list[tuple[bytes, object]]:
    """
    The C{(stream id, fields)} pairs of an C{XRANGE} answer, shape checked.
    """
    if not isinstance(reply, list):
        return []
    entries = []
    for entry in reply:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], bytes):
            try:
                streamOrder(entry[0])
            except ValueError:
                continue
            entries.append((entry[0], entry[1]))
    return entries


class RedisBus:
    """
    The feed's thin interface to Redis, over two connections (txredisapi's
    protocol): one for the blocking reads, one for everything else.

    @param address: where Redis is.
    @param maxLength: the stream's C{MAXLEN ~} (C{--bus-history}).
    @param timeout: seconds any command may take (C{--bus-timeout}); a
        blocking read may take its block time more.
    @param seenTTL: seconds an added id is remembered, so it is added once.
    """

    def __init__(
        self,
        reactor: Any,
        address: BusAddress,
        maxLength: int = DEFAULT_BUS_HISTORY,
        timeout: float = DEFAULT_BUS_TIMEOUT,
        seenTTL: float = DEFAULT_BUS_SEEN_TTL,
    ) -> None:
        self.address = address
        self.maxLength = maxLength
        self.timeout = timeout
        self.seenTTL = int(seenTTL * 1000)
        #: Where the master is (asked of the sentinels with Sentinel),
        #: shared by both connections.
        self.master = _Master(reactor, address, timeout)
        self._commands = _Link(reactor, address, timeout, self.master)
        self._reader = _Link(reactor, address, timeout, self.master)

    def add(self, key: str, datumId: str, json: bytes) -> Deferred[bytes | None]:
        """
        Add a datum unless its id was added lately.

        @return: the entry's stream id, or L{None} if the id was added lately.
        """
        args = (
            2, STREAM_KEY, _SEEN_PREFIX + datumId.encode("ascii"),
            self.seenTTL, self.maxLength, key.encode("utf-8"), datumId.encode("ascii"), json,
        )
        answer = self._commands.command(b"EVALSHA", _ADD_SHA, *args)

        def noScript(failure: Failure) -> Any:
            if str(failure.value).startswith("NOSCRIPT"):
                return self._commands.command(b"EVAL", ADD_SCRIPT, *args)
            return failure

        return answer.addErrback(noScript)

    def claim(self, digest: bytes, window: float = V1_WINDOW) -> Deferred[bool]:
        """
        Claim a version 1 datum for this server: C{SET artcast:v1:<digest>
        1 NX PX <window>}, atomic in Redis.

        @param digest: the datum's L{version1Digest}.
        @param window: seconds the claim holds.
        @return: whether this server claimed it (C{False}: another server
            did, within the window).
        """
        return self._commands.command(
            b"SET", _V1_PREFIX + digest, b"1", b"NX", b"PX", max(1, int(window * 1000))
        ).addCallback(lambda reply: reply is not None)

    def register(self, key: str, meta: bytes) -> Deferred[Any]:
        """
        Keep a key's metadata in the registrations' hash and add it to the
        stream as a registration entry.
        """
        raw = key.encode("utf-8")
        self._commands.command(b"HSET", REGISTRATIONS_KEY, raw, meta).addErrback(lambda _: None)
        return self._commands.command(
            b"XADD", STREAM_KEY, b"MAXLEN", b"~", self.maxLength, b"*", b"k", raw, b"m", meta
        )

    def registrations(self) -> Deferred[list[tuple[object, object]]]:
        """
        Every registration in the hash, as C{(key, metadata)} pairs of bytes.
        """
        def pairs(reply: object) -> list[tuple[object, object]]:
            if not isinstance(reply, list):
                return []
            return list(zip(reply[::2], reply[1::2]))

        return self._commands.command(b"HGETALL", REGISTRATIONS_KEY).addCallback(pairs)

    def range(self, after: bytes | None, minimum: int, count: int) -> Deferred[list[tuple[bytes, object]]]:
        """
        Up to C{count} entries after the stream id C{after} or, without one,
        from the time C{minimum} (Unix milliseconds) on.
        """
        start = b"(" + after if after is not None else b"%d" % (max(0, minimum),)
        return self._reader.command(
            b"XRANGE", STREAM_KEY, start, b"+", b"COUNT", count
        ).addCallback(_entries)

    def read(self, after: bytes, count: int, block: int) -> Deferred[list[tuple[bytes, object]]]:
        """
        Up to C{count} entries after C{after}, waiting at most C{block}
        milliseconds for the first.
        """
        def entries(reply: object) -> list[tuple[bytes, object]]:
            if not isinstance(reply, list) or not reply or not isinstance(reply[0], list):
                return []
            return _entries(reply[0][1] if len(reply[0]) == 2 else None)

        return self._reader.command(
            b"XREAD", b"COUNT", count, b"BLOCK", block, b"STREAMS", STREAM_KEY, after,
            timeout=block / 1000 + self.timeout,
        ).addCallback(entries)

    def last(self) -> Deferred[bytes | None]:
        """
        The stream id of the stream's last entry, L{None} when it is empty.
        """
        def first(reply: object) -> bytes | None:
            entries = _entries(reply)
            return entries[0][0] if entries else None

        return self._commands.command(
            b"XREVRANGE", STREAM_KEY, b"+", b"-", b"COUNT", 1
        ).addCallback(first)

    def trim(self, minimum: int) -> Deferred[Any]:
        """
        Forget the entries older than the time C{minimum} (Unix ms).
        """
        return self._commands.command(b"XTRIM", STREAM_KEY, b"MINID", b"~", max(0, minimum))

    def reset(self) -> None:
        """
        Drop both connections (what is in flight fails); the next command
        connects again.
        """
        self._commands.reset()
        self._reader.reset()

    def close(self) -> None:
        """
        Drop both connections for good.
        """
        self.master.close()
        self._commands.close()
        self._reader.close()

    def statistics(self) -> dict[str, object]:
        """
        The connection's figures in C{/stats}' C{"bus"} part: the master
        (C{HOST:PORT}) last connected to, how often it changed, and the
        servers the sentinels named that were not the master.
        """
        return {
            "busMaster": self.master.current,
            "busMasterChanges": self.master.changes,
            "busNotMaster": self.master.notMaster,
        }


@implementer(IFeed)
class BusFeed(Service):
    """
    The feed of C{--bus} (see the module's docstring).

    @ivar state: C{"stopped"}, C{"loading"} (reading the history at start),
        C{"up"}, C{"down"} (Redis failed; trying again after the back-off),
        C{"catching-up"} (Redis answers again; reading what was added
        meanwhile) or C{"stopping"} (adding what the outbox holds before
        the bus is closed).
    @ivar cursor: the stream id of the last entry read, where reading goes
        on.
    """

    name = "bus"

    log = NamedLogger(namespace="artcast.bus")

    def __init__(
        self,
        bus: Any,
        handler: DatagramHandler,
        clock: IReactorTime,
        url: str,
        maxValueSize: int,
        history: int = DEFAULT_BUS_HISTORY,
        historyAge: float = DEFAULT_HISTORY_AGE,
        timeout: float = DEFAULT_BUS_TIMEOUT,
        backoff: float = DEFAULT_BUS_BACKOFF,
        maxBackoff: float = DEFAULT_BUS_MAX_BACKOFF,
        outbox: Outbox | None = None,
        trimInterval: float = DEFAULT_BUS_TRIM_INTERVAL,
        v1Window: float = V1_WINDOW,
        maxV1Waiting: int = MAX_V1_WAITING,
        stopDrain: float = STOP_DRAIN,
    ) -> None:
        """
        @param bus: the interface to Redis (a L{RedisBus}).
        @param handler: the multicast handler, whose store, tracker and
            repair engine datums from the bus go through.
        @param url: the bus's URL, for the log and C{/stats}.
        @param maxValueSize: the largest value or metadata taken, in bytes.
        @param history: the most entries read at start (C{--bus-history}).
        @param historyAge: only entries newer than this many seconds are
            read at start; older ones are trimmed (C{--history-age}).
        @param timeout: seconds the start may wait for Redis before the
            server serves without the bus's history; seconds a version 1
            datum may wait for its claim.
        @param v1Window: seconds within which one version 1 datum heard by
            several servers is taken as one (L{V1_WINDOW}).
        @param maxV1Waiting: version 1 datums waiting for their claim, at
            most (L{MAX_V1_WAITING}).
        @param stopDrain: seconds a stop may wait for the outbox to be added
            (at most C{timeout}).
        """
        self.bus = bus
        self.handler = handler
        self.store = handler.store
        self.clock = clock
        self.url = url
        self.maxValueSize = maxValueSize
        self.history = history
        self.historyAge = historyAge
        self.timeout = timeout
        self.firstBackoff = backoff
        self.maxBackoff = maxBackoff
        self.backoff = backoff
        self.outbox = outbox if outbox is not None else Outbox()
        self.trimInterval = trimInterval
        self.v1Window = v1Window
        self.maxV1Waiting = maxV1Waiting
        self.stopDrain = min(timeout, stopDrain)
        self.instance = self.store.instance
        self.state = "stopped"
        self.cursor: bytes | None = None
        # Counters.
        self.added = 0
        self.seen = 0
        self.taken = 0
        self.duplicates = 0
        self.own = 0
        self.registrations = 0
        self.errors = 0
        self.disconnects = 0
        self.outboxDropped = 0
        self.loaded = 0
        self.dropped: Counter[str] = Counter()
        self.v1Claimed = 0
        self.v1Copies = 0
        #: Version 1 datums published at once, by why: C{"down"} (the bus
        #: was not up), C{"failed"} (the claim failed), C{"timeout"} (no
        #: answer within C{timeout}), C{"full"} (L{MAX_V1_WAITING} wait
        #: already), C{"stopped"} (waiting when the server stopped).
        self.v1Local: Counter[str] = Counter()
        #: Entries of the outbox not added when the server stopped.
        self.stopUnsent = 0
        # Work in progress.
        self._generation = 0
        self._inFlight = 0
        self._pumping = False
        #: The id of the datum being taken from the bus, if one is.
        self._taking: str | None = None
        self._registering = False
        self._caughtUp = 0
        self._registrationsLoaded = False
        self._ready = False
        self._readyWaiters: list[Deferred[None]] = []
        self._readyCall: Any = None
        self._retryCall: Any = None
        self._subscription: Any = None
        self._unwatch: Any = None
        self._shared: dict[str, bytes] = {}
        #: The ids of the datums this server added lately, skipped when read
        #: back (without asking the source tracker).
        self._mine: OrderedDict[str, None] = OrderedDict()
        #: Version 1 datums waiting for their claim, in the order heard:
        #: number -> (the datum, when it stops waiting).
        self._claims: OrderedDict[int, tuple[DataMessage, float]] = OrderedDict()
        self._claimNumber = 0
        self._claimCall: Any = None
        self._drained: Deferred[None] | None = None
        self._drainCall: Any = None
        self._trimmer = LoopingCall(self._trim)
        self._trimmer.clock = clock
        self._badLog = RateLimitedLog(self.log, clock, what="bad bus entries")
        self._outboxLog = RateLimitedLog(self.log, clock, what="bus outbox drops")
        self._stateLog = RateLimitedLog(self.log, clock, what="bus state changes")
        self._v1Log = RateLimitedLog(self.log, clock, what="version 1 datums not claimed")

    # --- the service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._subscription = self.store.subscribe("...", self._local)
        self._unwatch = self.store.watchRegistrations(self._localRegistration)
        self._readyCall = self.clock.callLater(self.timeout, self._slow)
        self._trimmer.start(self.trimInterval, now=False)
        self.state = "loading"
        self.handler.version1 = self.version1
        self._load()

    def stopService(self) -> Any:
        """
        Stop taking and reading; add what the outbox holds first, for at
        most C{stopDrain} seconds, if Redis answers.

        @return: a L{Deferred} that fires when the bus is closed.
        """
        # Waiting version 1 datums are published, into the outbox.
        self._publishClaims("stopped")
        if self.handler.version1 == self.version1:
            self.handler.version1 = None
        draining = self.state in ("up", "catching-up") and bool(self.outbox or self._inFlight)
        self.state = "stopping" if draining else "stopped"
        self._generation += 1
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for call in (self._readyCall, self._retryCall):
            if call is not None and call.active():
                call.cancel()
        self._readyCall = self._retryCall = None
        if self._trimmer.running:
            self._trimmer.stop()
        # Whoever waits for the history (the HTTP port) is stopping too.
        super().stopService()
        if not draining:
            self._closed()
            return succeed(None)
        self._drained = Deferred()
        self._drainCall = self.clock.callLater(self.stopDrain, self._drainEnd)
        self._pump()
        return self._drained

    def _drainEnd(self) -> None:
        """
        The outbox is added, or could not be (Redis failed, or the time is
        up): close the bus.
        """
        if self.state != "stopping":
            return
        self.state = "stopped"
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self._closed()
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    def _closed(self) -> None:
        """
        Count, and say, what the outbox still holds (and what was in flight,
        unanswered), and close the bus.
        """
        unsent = len(self.outbox) + self._inFlight
        if unsent:
            self.stopUnsent += unsent
            self.log.error(
                "bus: stopping: {count} entries were not added to {url}",
                count=unsent, url=self.url,
            )
        self.bus.close()

    def whenReady(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once the history is read at start, or
        Redis failed or was slower than C{timeout}: when the HTTP port may
        be bound.
        """
        if self._ready:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._readyWaiters.append(waiting)
        return waiting

    def _setReady(self) -> None:
        if self._ready:
            return
        self._ready = True
        if self._readyCall is not None and self._readyCall.active():
            self._readyCall.cancel()
        self._readyCall = None
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiting in waiters:
            waiting.callback(None)

    def _slow(self) -> None:
        self._readyCall = None
        if self._ready:
            return
        self.log.error(
            "bus: {url} did not answer within {timeout} s; serving before its"
            " history is read",
            url=self.url, timeout=self.timeout,
        )
        self._setReady()

    # --- reading ---------------------------------------------------------------

    def _minimum(self) -> int:
        return int((self.clock.seconds() - self.historyAge) * 1000)

    def _load(self) -> None:
        """
        Read the registrations, then the stream from its history on.
        """
        generation = self._generation
        answer = self.bus.registrations()
        answer.addCallbacks(
            self._registrationsRead, self._failed, (generation,), None, (generation,)
        )

    def _registrationsRead(self, pairs: list[tuple[object, object]], generation: int) -> None:
        if generation != self._generation:
            return
        self._registrationsLoaded = True
        if self.state == "down":
            self.state = "catching-up"
        for key, meta in pairs[: self.store.maxKeys]:
            try:
                entry = registrationEntry(key, meta, self.maxValueSize)
            except BadEntry as error:
                self._drop(error, b"(registrations)")
                continue
            self._register(entry)
        self._catchUp()

    def _catchUp(self) -> None:
        self._caughtUp = 0
        self._next()

    def _next(self) -> None:
        """
        Read the next entries: a page of the stream while catching up, then
        a blocking read.
        """
        if self.state in ("stopped", "stopping"):
            return
        generation = self._generation
        if self.state in ("loading", "catching-up"):
            answer = self.bus.range(self.cursor, self._minimum(), RANGE_PAGE)
            answer.addCallbacks(self._ranged, self._failed, (generation,), None, (generation,))
        else:
            assert self.cursor is not None
            answer = self.bus.read(self.cursor, READ_COUNT, READ_BLOCK)
            answer.addCallbacks(self._read, self._failed, (generation,), None, (generation,))
        answer.addErrback(self._crashed, generation)

    def _ranged(self, entries: list[tuple[bytes, object]], generation: int) -> Any:
        if generation != self._generation:
            return None
        for streamId, fields in entries:
            self._take(streamId, fields)
        self._caughtUp += len(entries)
        if self.state == "loading" and self.loaded + self._caughtUp >= self.history:
            # At most --bus-history entries at start: go on from the end.
            answer = self.bus.last()
            answer.addCallbacks(self._skipped, self._failed, (generation,), None, (generation,))
            return answer
        if len(entries) >= RANGE_PAGE:
            self._next()
            return None
        self._upToDate()
        return None

    def _skipped(self, last: bytes | None, generation: int) -> None:
        if generation != self._generation:
            return
        if last is not None and (self.cursor is None or streamOrder(last) > streamOrder(self.cursor)):
            self.cursor = last
        self._upToDate()

    def _upToDate(self) -> None:
        """
        Caught up with the stream: serve (at start), say so (after a
        failure), send the outbox and read on with blocking reads.
        """
        if self.cursor is None:
            self.cursor = b"%d-0" % (max(0, self._minimum()),)
        if self.state == "loading":
            self.loaded += self._caughtUp
            self.log.info(
                "bus: {url}: read {count} entries of history", url=self.url, count=self._caughtUp
            )
            self._setReady()
        else:
            self._stateLog.warn(
                "bus: {url} is back; caught up {count} datums",
                url=self.url, count=self._caughtUp,
            )
        self.state = "up"
        if not self.outbox:
            self.backoff = self.firstBackoff
        self._pump()
        self._next()

    def _read(self, entries: list[tuple[bytes, object]], generation: int) -> None:
        if generation != self._generation:
            return
        for streamId, fields in entries:
            self._take(streamId, fields)
        self._next()

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("bus: unexpected failure", failure)

    def _crashed(self, failure: Failure, generation: int) -> None:
        """
        Taking what was read failed (a bug): logged, and the bus is put
        down, so that reading starts again after the back-off rather than
        stopping.
        """
        self.log.failure("bus: taking entries failed", failure)
        self._failed(failure, generation)

    def _take(self, streamId: bytes, fields: object) -> None:
        """
        Take one entry: a datum with its id (unless it is this server's
        own), or a registration.
        """
        try:
            order = streamOrder(streamId)
        except ValueError:
            self.dropped["bad-entry"] += 1
            return
        if self.cursor is None or order > streamOrder(self.cursor):
            self.cursor = streamId
        try:
            entry = parseEntry(fields, self.maxValueSize)
        except BadEntry as error:
            self._drop(error, streamId)
            return
        if isinstance(entry, RegistrationEntry):
            self._register(entry)
            return
        ident = entry.ident
        datumId = str(ident)
        if datumId in self._mine:
            # A datum this server added (or tried to: another added it first).
            del self._mine[datumId]
            self.own += 1
            return
        if ident.source == self.instance or ident.source in self.handler.ownSources:
            # This server's own (a version 1 datum, an HTTP publish), older
            # than what it remembers adding.
            self.own += 1
            return
        message = DataMessage(
            entry.key, entry.value, Stamp(ident.source, ident.boot, ident.seq, self.clock.seconds())
        )
        # The store hands this datum to the subscription too: not added
        # back (held datums it releases are: Redis drops those it has).
        self._taking = datumId
        try:
            taken = self.handler.relayed(message, _ADDRESS)
        finally:
            self._taking = None
        if taken == "duplicate":
            self.duplicates += 1
        else:
            self.taken += 1

    def _register(self, entry: RegistrationEntry) -> None:
        if self._shared.get(entry.key) == entry.text:
            # This server's own, read back.
            self.own += 1
            return
        self._registering = True
        try:
            if self.store.register(entry.key, entry.meta):
                self.registrations += 1
        finally:
            self._registering = False

    def _drop(self, error: BadEntry, streamId: bytes) -> None:
        self.dropped[error.reason] += 1
        self._badLog.warn(
            "bus: dropped entry {id} of {url}: {reason}: {error}",
            id=streamId.decode("ascii", "replace"), url=self.url,
            reason=error.reason, error=str(error),
        )

    # --- adding ----------------------------------------------------------------

    def _local(self, datum: Datum) -> None:
        """
        A datum the store took: unless it came from the bus, it goes to the
        outbox.
        """
        datumId = datum.id
        if datumId == self._taking:
            return
        # Remembered first: the add may be answered, and the entry read
        # back, before the outbox returns.
        self._mine[datumId] = None
        if len(self._mine) > _OWN_MEMORY:
            self._mine.popitem(last=False)
        if not self._queue(("d", datum.key, datumId, datum.json)):
            self._mine.pop(datumId, None)

    def _localRegistration(self, key: str, meta: bytes) -> None:
        if self._registering:
            self._shared[key] = meta
            return
        if self._shared.get(key) == meta:
            return
        if len(self._shared) > 2 * self.store.maxKeys:
            self._shared.clear()
        self._shared[key] = meta
        self._queue(("m", key, None, meta))

    def _queue(self, entry: tuple[str, str, str | None, bytes]) -> bool:
        """
        Put an entry in the outbox, and send it if the bus is up.

        @return: whether the outbox took it.
        """
        if not self.outbox.append(entry):
            self.outboxDropped += 1
            self._outboxLog.warn(
                "bus: the outbox is full ({count} entries, {bytes} bytes) while"
                " {url} is away; dropped {key!r} {id}",
                count=len(self.outbox), bytes=self.outbox.bytes, url=self.url,
                key=entry[1], id=entry[2],
            )
            return False
        if self.state == "up" and not self._pumping:
            self._pump()
        return True

    def _pump(self) -> None:
        """
        Send what the outbox holds, at most L{MAX_IN_FLIGHT} at once.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            while (
                self.state in ("up", "stopping")
                and self.outbox
                and self._inFlight < MAX_IN_FLIGHT
            ):
                entry = self.outbox.popleft()
                kind, key, datumId, text = entry
                self._inFlight += 1
                generation = self._generation
                if kind == "d":
                    assert datumId is not None
                    answer = self.bus.add(key, datumId, text)
                else:
                    answer = self.bus.register(key, text)
                answer.addCallbacks(
                    self._sent, self._notSent, (entry,), None, (entry, generation)
                )
                answer.addErrback(self._unexpected)
        finally:
            self._pumping = False

    def _sent(self, result: object, entry: tuple[str, str, str | None, bytes]) -> None:
        self._inFlight -= 1
        # Redis takes writes again (one that answers reads but refuses
        # writes, when full, is tried again less and less often).
        self.backoff = self.firstBackoff
        if entry[0] == "d":
            if isinstance(result, bytes):
                self.added += 1
            else:
                self.seen += 1
        if not self._pumping:
            self._pump()
        if self.state == "stopping" and not self.outbox and not self._inFlight:
            self._drainEnd()

    def _notSent(
        self, failure: Failure, entry: tuple[str, str, str | None, bytes], generation: int
    ) -> None:
        self._inFlight -= 1
        self.outbox.putBack(entry)
        if entry[0] == "m":
            self._shared.pop(entry[1], None)
        if self.state == "stopping":
            self._drainEnd()
            return
        self._failed(failure, generation)

    # --- version 1 datums -------------------------------------------------------

    def version1(self, message: DataMessage, address: tuple[str, int]) -> bool:
        """
        The handler's hook (L{DatagramHandler.version1}) for a version 1
        datum heard on multicast: claim it in Redis, so that of the servers
        that heard it only one stamps it (L{RedisBus.claim}).

        @return: whether the datum waits for its claim; if not (the bus is
            down, too many wait already) the handler publishes it at once.
        """
        if self.state not in ("loading", "up", "catching-up"):
            self.v1Local["down"] += 1
            return False
        if len(self._claims) >= self.maxV1Waiting:
            self.v1Local["full"] += 1
            self._v1Log.warn(
                "bus: {count} version 1 datums wait for {url} already; published"
                " {key!r} at once", count=len(self._claims), url=self.url, key=message.key,
            )
            return False
        try:
            digest = version1Digest(address, message.key, message.value)
        except ValueError:
            # Not JSON the store can hold either: the handler says so.
            return False
        self._claimNumber += 1
        number = self._claimNumber
        self._claims[number] = (message, self.clock.seconds() + self.timeout)
        if self._claimCall is None:
            self._claimCall = self.clock.callLater(self.timeout, self._claimsTimedOut)
        generation = self._generation
        answer = self.bus.claim(digest, self.v1Window)
        answer.addCallbacks(
            self._claimed, self._notClaimed, (number,), None, (number, generation)
        )
        answer.addErrback(self._unexpected)
        return True

    def _claimed(self, mine: bool, number: int) -> None:
        waiting = self._claims.pop(number, None)
        if waiting is None:
            # Published already: the claim took too long, or the bus failed.
            return
        if mine:
            self.v1Claimed += 1
            self.handler.publishVersion1(waiting[0])
        else:
            # Another server claimed it: it comes through the stream, with
            # that server's id.
            self.v1Copies += 1

    def _notClaimed(self, failure: Failure, number: int, generation: int) -> None:
        waiting = self._claims.pop(number, None)
        if waiting is not None:
            self.v1Local["failed"] += 1
            self.handler.publishVersion1(waiting[0])
        self._failed(failure, generation)

    def _claimsTimedOut(self) -> None:
        """
        Publish the version 1 datums that waited C{timeout} for their claim
        (the oldest first), and wait for the next.
        """
        self._claimCall = None
        now = self.clock.seconds()
        claims = self._claims
        while claims:
            number, (message, deadline) = next(iter(claims.items()))
            if deadline > now:
                self._claimCall = self.clock.callLater(deadline - now, self._claimsTimedOut)
                return
            del claims[number]
            self.v1Local["timeout"] += 1
            self._v1Log.warn(
                "bus: {url} did not answer a claim within {timeout} s; published"
                " {key!r} at once", url=self.url, timeout=self.timeout, key=message.key,
            )
            self.handler.publishVersion1(message)

    def _publishClaims(self, why: str) -> None:
        """
        Publish every version 1 datum waiting for its claim, in order.
        """
        if self._claimCall is not None and self._claimCall.active():
            self._claimCall.cancel()
        self._claimCall = None
        claims, self._claims = self._claims, OrderedDict()
        for message, _ in claims.values():
            self.v1Local[why] += 1
            self.handler.publishVersion1(message)

    # --- Redis going away -------------------------------------------------------

    def _failed(self, failure: Failure, generation: int) -> None:
        """
        A command failed: unless the bus is down already, it is now.
        """
        if self.state == "stopped" or generation != self._generation:
            # Stopped, or failed because an earlier failure reset the bus.
            return
        self.errors += 1
        if self.state == "down":
            # A try while down failed: try again later.
            self._retryLater()
            return
        self._generation += 1
        self.state = "down"
        self.disconnects += 1
        self._shared.clear()
        reason = failure.getErrorMessage() or failure.type.__name__
        self._stateLog.error(
            "bus: lost {url}: {reason}; serving local datums only",
            url=self.url, reason=reason,
        )
        # Version 1 datums waiting for their claim are published now.
        self._publishClaims("failed")
        # What is still in flight fails, and is ignored.
        self.bus.reset()
        self._setReady()
        self._retryLater()

    def _retryLater(self) -> None:
        self._retryCall = self.clock.callLater(self.backoff, self._resume)
        self.backoff = min(self.backoff * 2, self.maxBackoff)

    def _resume(self) -> None:
        """
        Try Redis again: read on from the last entry read (from the stream's
        start if Redis came back without it).
        """
        self._retryCall = None
        if self.state != "down":
            return
        generation = self._generation
        if not self._registrationsLoaded:
            self._load()
            return
        answer = self.bus.last()
        answer.addCallbacks(self._resumed, self._failed, (generation,), None, (generation,))
        answer.addErrback(self._unexpected)

    def _resumed(self, last: bytes | None, generation: int) -> None:
        if generation != self._generation:
            return
        if self.cursor is not None and (last is None or streamOrder(last) < streamOrder(self.cursor)):
            self.log.warn(
                "bus: the stream of {url} ends before the last entry read ({cursor}):"
                " Redis lost it; reading the stream from its start",
                url=self.url, cursor=self.cursor.decode("ascii", "replace"),
            )
            self.cursor = b"0-0"
            self._mine.clear()
        self.state = "catching-up"
        self._catchUp()

    def _trim(self) -> None:
        if self.state != "up":
            return
        generation = self._generation
        self.bus.trim(self._minimum()).addErrback(self._failed, generation)

    # --- figures ----------------------------------------------------------------

    def statistics(self) -> dict[str, object]:
        """
        The C{"bus"} figures of C{/stats}.
        """
        return {
            "bus": {
                "busURL": self.url,
                "busState": self.state,
                "busAdded": self.added,
                "busSeen": self.seen,
                "busTaken": self.taken,
                "busDuplicates": self.duplicates,
                "busOwn": self.own,
                "busRegistrations": self.registrations,
                "busDropped": dict(self.dropped),
                "busErrors": self.errors,
                "busDisconnects": self.disconnects,
                "busOutbox": len(self.outbox),
                "busOutboxDropped": self.outboxDropped,
                "busLoaded": self.loaded,
                "busV1Claimed": self.v1Claimed,
                "busV1Copies": self.v1Copies,
                "busV1Local": dict(self.v1Local),
                "busV1Waiting": len(self._claims),
                "busStopUnsent": self.stopUnsent,
                # The connection's: the master (busMaster, busMasterChanges).
                **getattr(self.bus, "statistics", dict)(),
            }
        }
