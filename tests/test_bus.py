"""
Tests for L{artcast.server.feeds.bus}: the Redis bus of C{--bus}.

The feed's state machine runs against L{FakeBus}, an in-memory stand-in for
the thin interface it talks to Redis through; the integration tests run real
C{twistd artcast} servers on a real C{redis-server}.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txredisapi import ConnectionError as RedisConnectionError
from txredisapi import ResponseError
from zope.interface.verify import verifyObject

from artcast.server.connections import ConnectionLimiter, LimitedSite
from artcast.server.feeds.bus import (
    BadEntry,
    BusAddress,
    BusFeed,
    DatumEntry,
    Outbox,
    RedisBus,
    RegistrationEntry,
    parseBusURL,
    parseEntry,
    streamOrder,
)
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.interfaces import IFeed
from artcast.server.service import StartWhenReady
from artcast.server.shutdown import ServingService
from artcast.server.stats import ServerStatistics, Stats, metricsText
from artcast.server.store import KeyStore
from artcast.server.tap import Options
from artcast.wire import DatumId, Stamp, encodeData
from tests.harness import REDIS_SERVER, ArtcastProcess, RedisServer


class FakeBus:
    """
    An in-memory stand-in for L{artcast.server.feeds.bus.RedisBus}: a
    stream, a hash and the "seen" ids; C{down} makes every command fail, as
    a Redis that is away; C{hang} makes none answer.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.stream: list[tuple[bytes, list[bytes]]] = []
        self.hash: dict[bytes, bytes] = {}
        self.seen: set[str] = set()
        self.down = False
        self.hang = False
        self.closed = False
        self.resets = 0
        self._last = (0, 0)
        #: Milliseconds added to the clock for new ids (a restarted Redis
        #: may give lower ones).
        self.offset = 0
        self._reading: tuple[Deferred[Any], bytes] | None = None
        #: Version 1 claims: digest -> when the claim ends.
        self.claimed: dict[bytes, float] = {}
        #: When a list, claims wait in it (as C{(Deferred, digest, window)})
        #: rather than being answered; when an exception, claims fail with it.
        self.heldClaims: list[tuple[Deferred[Any], bytes, float]] | None = None
        self.claimError: Exception | None = None
        #: When a list, adds wait in it (as C{(Deferred, key, id, text)}) for
        #: L{answerAdds}.
        self.heldAdds: list[tuple[Deferred[Any], str, str, bytes]] | None = None

    def _failure(self, kind: type = RedisConnectionError, text: str = "Connection refused") -> Deferred[Any]:
        failed: Deferred[Any] = Deferred()
        failed.errback(kind(text))
        return failed

    def _answer(self, value: Any) -> Deferred[Any]:
        if self.hang:
            return Deferred()
        if self.down:
            return self._failure()
        return succeed(value)

    def append(self, fields: list[bytes]) -> bytes:
        """
        Add an entry as another server (or anyone) would.
        """
        ms = int(self.clock.seconds() * 1000) + self.offset
        last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        self._last = last
        streamId = b"%d-%d" % last
        self.stream.append((streamId, fields))
        reading, self._reading = self._reading, None
        if reading is not None:
            deferred, after = reading
            deferred.callback(self._after(after, 500))
        return streamId

    def appendDatum(self, key: str, datumId: str, value: Any) -> bytes:
        return self.append(
            [b"k", key.encode(), b"i", datumId.encode(), b"v", json.dumps(value).encode()]
        )

    def _after(self, after: bytes | None, count: int, minimum: int = 0) -> list[Any]:
        if after is None:
            chosen = [e for e in self.stream if streamOrder(e[0]) >= (minimum, 0)]
        else:
            chosen = [e for e in self.stream if streamOrder(e[0]) > streamOrder(after)]
        return chosen[:count]

    def claim(self, digest: bytes, window: float) -> Deferred[bool]:
        if self.down or self.hang:
            return self._answer(None)
        if self.claimError is not None:
            return self._failure(type(self.claimError), str(self.claimError))
        if self.heldClaims is not None:
            waiting: Deferred[Any] = Deferred()
            self.heldClaims.append((waiting, digest, window))
            return waiting
        now = self.clock.seconds()
        if self.claimed.get(digest, 0) > now:
            return succeed(False)
        self.claimed[digest] = now + window
        return succeed(True)

    def add(self, key: str, datumId: str, text: bytes) -> Deferred[bytes | None]:
        if self.down or self.hang:
            return self._answer(None)
        if self.heldAdds is not None:
            waiting: Deferred[Any] = Deferred()
            self.heldAdds.append((waiting, key, datumId, text))
            return waiting
        return succeed(self._add(key, datumId, text))

    def answerAdds(self) -> int:
        """
        Answer the adds held in L{heldAdds} (and those they lead to), as
        Redis would.

        @return: how many were answered.
        """
        count = 0
        while self.heldAdds:
            waiting, key, datumId, text = self.heldAdds.pop(0)
            waiting.callback(self._add(key, datumId, text))
            count += 1
        return count

    def _add(self, key: str, datumId: str, text: bytes) -> bytes | None:
        if datumId in self.seen:
            return None
        self.seen.add(datumId)
        return self.append([b"k", key.encode(), b"i", datumId.encode(), b"v", text])

    def register(self, key: str, meta: bytes) -> Deferred[Any]:
        if self.down or self.hang:
            return self._answer(None)
        self.hash[key.encode()] = meta
        return succeed(self.append([b"k", key.encode(), b"m", meta]))

    def registrations(self) -> Deferred[Any]:
        return self._answer(list(self.hash.items()))

    def range(self, after: bytes | None, minimum: int, count: int) -> Deferred[Any]:
        return self._answer(self._after(after, count, minimum))

    def read(self, after: bytes, count: int, block: int) -> Deferred[Any]:
        if self.down or self.hang:
            return self._answer(None)
        entries = self._after(after, count)
        if entries:
            return succeed(entries)
        waiting: Deferred[Any] = Deferred()
        self._reading = (waiting, after)
        return waiting

    def last(self) -> Deferred[Any]:
        return self._answer(self.stream[-1][0] if self.stream else None)

    def trim(self, minimum: int) -> Deferred[Any]:
        return self._answer(0)

    def reset(self) -> None:
        self.resets += 1
        reading, self._reading = self._reading, None
        if reading is not None:
            reading[0].errback(RedisConnectionError("Lost connection"))

    def close(self) -> None:
        self.closed = True
        self.reset()

    def restartEmpty(self) -> None:
        """
        Redis restarted without its data.
        """
        self.stream.clear()
        self.hash.clear()
        self.seen.clear()
        self._last = (0, 0)
        self.offset = -10_000


class _Events:
    """
    The log events of a test, at warn level and above.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.texts: list[str] = []
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        from twisted.logger import LogLevel, formatEvent

        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.texts.append(formatEvent(event))

    def matching(self, text: str) -> list[str]:
        return [line for line in self.texts if text in line]


class ParsingTests(SynchronousTestCase):
    """
    The C{--bus} URL and the stream's entries.
    """

    def test_url(self) -> None:
        """
        A redis:// URL gives its host, port (6379 by default) and database.
        """
        self.assertEqual(parseBusURL("redis://127.0.0.1:6380/2"), BusAddress("127.0.0.1", 6380, 2))
        self.assertEqual(parseBusURL("redis://cache"), BusAddress("cache", 6379, 0))
        self.assertEqual(parseBusURL("redis://cache:7000/").url(), "redis://cache:7000")
        self.assertEqual(BusAddress("h", 1, 3).url(), "redis://h:1/3")

    def test_badURL(self) -> None:
        """
        Anything but redis://HOST:PORT[/DB] is refused with a reason.
        """
        for text in (
            "http://h:1", "redis://", "redis://h:99999", "redis://h:1/x",
            "redis://u:p@h:1", "redis://h:1?db=2", "h:6379",
        ):
            self.assertRaises(ValueError, parseBusURL, text)
        error = self.assertRaises(ValueError, parseBusURL, "redis+sentinel://h:1")
        self.assertIn("service name is missing", str(error))

    def test_sentinelURL(self) -> None:
        """
        A redis+sentinel:// URL gives its sentinels (port 26379 by default),
        the master's service name and the database, and reads back the same.
        """
        address = parseBusURL("redis+sentinel://127.0.0.1:26390,s2,[::1]:5/my-master.1/3")
        self.assertEqual(
            address,
            BusAddress("", 0, 3, (("127.0.0.1", 26390), ("s2", 26379), ("::1", 5)), "my-master.1"),
        )
        self.assertEqual(
            address.url(), "redis+sentinel://127.0.0.1:26390,s2:26379,[::1]:5/my-master.1/3"
        )
        self.assertEqual(parseBusURL(address.url()), address)
        self.assertEqual(
            parseBusURL("redis+sentinel://h:1/m/").url(), "redis+sentinel://h:1/m"
        )

    def test_badSentinelURL(self) -> None:
        """
        A redis+sentinel:// URL without a service name, with a bad, missing
        or repeated sentinel, a bad database, a user or a query is refused
        with a one-line reason.
        """
        for text in (
            "redis+sentinel://h:1", "redis+sentinel://h:1/", "redis+sentinel://h:x/m",
            "redis+sentinel:///m", "redis+sentinel://a,,b/m", "redis+sentinel://a,a:26379/m",
            "redis+sentinel://a:1/m/x", "redis+sentinel://a:1/m/1/2", "redis+sentinel://u@a/m",
            "redis+sentinel://a:1/m?db=1", "redis+sentinel://a:1/m m",
            "redis+sentinel://" + ",".join(f"h{n}" for n in range(17)) + "/m",
        ):
            error = self.assertRaises(ValueError, parseBusURL, text)
            self.assertNotIn("\n", str(error))

    def test_datumEntry(self) -> None:
        """
        A datum entry gives its key, id and parsed value.
        """
        entry = parseEntry([b"k", b"a/b", b"i", b"s.1.2", b"v", b'{"x":1}'], 100)
        self.assertEqual(entry, DatumEntry("a/b", DatumId("s", 1, 2), {"x": 1}))

    def test_registrationEntry(self) -> None:
        """
        A registration entry gives its key and metadata.
        """
        entry = parseEntry([b"k", b"a", b"m", b'{"description":"d"}'], 100)
        self.assertEqual(
            entry, RegistrationEntry("a", {"description": "d"}, b'{"description":"d"}')
        )

    def test_badEntries(self) -> None:
        """
        Each kind of bad entry is refused with its own reason.
        """
        cases = [
            ([b"k", b"a/../", b"i", b"s.1.1", b"v", b"1"], "bad-key"),
            ([b"k", b"\xff", b"i", b"s.1.1", b"v", b"1"], "bad-key"),
            ([b"k", b"a", b"i", b"s.1.0", b"v", b"1"], "bad-id"),
            ([b"k", b"a", b"i", b"s.99999999999999999999.1", b"v", b"1"], "bad-id"),
            ([b"k", b"a", b"i", b"s.1.1", b"v", b"{"], "not-json"),
            ([b"k", b"a", b"i", b"s.1.1", b"v", b"NaN"], "not-json"),
            ([b"k", b"a", b"i", b"s.1.1", b"v", b"1" * 101], "too-large"),
            ([b"k", b"a", b"m", b"[1]"], "bad-metadata"),
            ([b"k", b"a", b"x", b"1"], "bad-entry"),
            ([b"k", b"a", b"i"], "bad-entry"),
            ("not a list", "bad-entry"),
            ([b"k", 1], "bad-entry"),
        ]
        for fields, reason in cases:
            error = self.assertRaises(BadEntry, parseEntry, fields, 100)
            self.assertEqual(error.reason, reason, fields)

    def test_streamOrder(self) -> None:
        """
        Stream ids sort by milliseconds, then sequence, as numbers.
        """
        self.assertLess(streamOrder(b"9-5"), streamOrder(b"10-0"))
        self.assertLess(streamOrder(b"10-2"), streamOrder(b"10-10"))


class OutboxTests(SynchronousTestCase):
    """
    The outbox is bounded in entries and in bytes.
    """

    def test_entries(self) -> None:
        """
        Past its entry bound, a new entry is refused.
        """
        outbox = Outbox(maxEntries=2, maxBytes=10_000)
        self.assertTrue(outbox.append(("d", "k", "s.1.1", b"1")))
        self.assertTrue(outbox.append(("d", "k", "s.1.2", b"2")))
        self.assertFalse(outbox.append(("d", "k", "s.1.3", b"3")))
        self.assertEqual(len(outbox), 2)
        self.assertEqual(outbox.popleft()[2], "s.1.1")

    def test_bytes(self) -> None:
        """
        Past its byte bound, a new entry is refused; taking one frees its
        bytes, and putting it back charges them again.
        """
        outbox = Outbox(maxEntries=100, maxBytes=1_000)
        self.assertTrue(outbox.append(("d", "k", "s.1.1", b"x" * 500)))
        self.assertFalse(outbox.append(("d", "k", "s.1.2", b"x" * 500)))
        entry = outbox.popleft()
        self.assertEqual(outbox.bytes, 0)
        outbox.putBack(entry)
        self.assertEqual(len(outbox), 1)
        self.assertGreater(outbox.bytes, 500)


class BusFeedTests(SynchronousTestCase):
    """
    L{BusFeed} against L{FakeBus}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.bus = FakeBus(self.clock)
        self.events = _Events(self)

    def makeFeed(self, **kw: Any) -> BusFeed:
        feed = BusFeed(self.bus, self.handler, self.clock, "redis://fake:1", 1000, **kw)
        self.addCleanup(lambda: feed.running and feed.stopService())
        return feed

    def started(self, **kw: Any) -> BusFeed:
        feed = self.makeFeed(**kw)
        feed.startService()
        return feed

    def fromOthers(self, count: int, source: str = "other", first: int = 1) -> None:
        for seq in range(first, first + count):
            self.bus.appendDatum("k", f"{source}.1.{seq}", seq)

    def test_interface(self) -> None:
        """
        The feed is an IFeed.
        """
        verifyObject(IFeed, self.makeFeed())

    def test_history(self) -> None:
        """
        At start the registrations and the stream's history are read into
        the store, with their ids, and then the feed is ready.
        """
        self.bus.hash[b"k"] = b'{"description":"d"}'
        self.fromOthers(3)
        feed = self.makeFeed()
        ready = feed.whenReady()
        feed.startService()
        self.successResultOf(ready)
        self.assertEqual(feed.state, "up")
        self.assertEqual([d.id for d in self.store.held("k")], ["other.1.1", "other.1.2", "other.1.3"])
        self.assertEqual(self.store.metadata("k"), {"description": "d"})
        self.assertEqual((feed.loaded, feed.taken, feed.registrations), (3, 3, 1))

    def test_historyBounded(self) -> None:
        """
        At most C{history} entries are taken at start; reading goes on from
        the stream's end.
        """
        self.fromOthers(2500)
        feed = self.started(history=1000)
        self.assertEqual(feed.state, "up")
        self.assertEqual(feed.taken, 1000)
        self.assertEqual(feed.cursor, self.bus.stream[-1][0])

    def test_oldHistoryLeft(self) -> None:
        """
        Entries older than C{historyAge} are not read at start.
        """
        self.fromOthers(2)
        self.clock.advance(100)
        self.fromOthers(1, first=3)
        feed = self.started(historyAge=50)
        self.assertEqual([d.id for d in self.store.held("k")], ["other.1.3"])
        self.assertEqual(feed.loaded, 1)

    def test_takes(self) -> None:
        """
        A datum another server adds later reaches the store with its id.
        """
        feed = self.started()
        self.fromOthers(2)
        self.assertEqual([d.id for d in self.store.held("k")], ["other.1.1", "other.1.2"])
        self.assertEqual(feed.taken, 2)

    def test_adds(self) -> None:
        """
        A datum the store takes from elsewhere is added with its key, id and
        JSON text, and is not taken again when read back.
        """
        feed = self.started()
        stamp = Stamp("src", 7, 1, self.clock.seconds())
        for datagram in encodeData("a/b", {"x": [1, 2]}, stamp):
            self.handler.dataReceived(datagram, ("127.0.0.1", 9))
        self.assertEqual(
            self.bus.stream[-1][1], [b"k", b"a/b", b"i", b"src.7.1", b"v", b'{"x":[1,2]}']
        )
        self.assertEqual(feed.added, 1)
        self.assertEqual(feed.own, 1)
        self.assertEqual(len(self.store.held("a/b")), 1)

    def test_version1Added(self) -> None:
        """
        A version 1 datum is added with the id this server gave it, and is
        not taken back.
        """
        feed = self.started()
        self.handler.dataReceived(b'["k", 5]', ("127.0.0.1", 9))
        [datum] = self.store.held("k")
        self.assertEqual(self.bus.stream[-1][1][3], datum.id.encode())
        self.assertEqual(len(self.store.held("k")), 1)
        self.assertEqual(feed.own, 1)

    def test_duplicate(self) -> None:
        """
        A datum from the bus that the server heard on multicast already is
        counted as a duplicate, not served twice.
        """
        feed = self.started()
        stamp = Stamp("src", 7, 1, self.clock.seconds())
        feed._mine.clear()
        self.bus.down = True  # heard, not added
        for datagram in encodeData("k", 1, stamp):
            self.handler.dataReceived(datagram, ("127.0.0.1", 9))
        self.bus.down = False
        feed._mine.clear()
        feed._take(b"99999999999999-0", [b"k", b"k", b"i", b"src.7.1", b"v", b"1"])
        self.assertEqual(feed.duplicates, 1)
        self.assertEqual(len(self.store.held("k")), 1)

    def test_seenOnce(self) -> None:
        """
        A datum whose id was added already is not added again (the script's
        C{NX}): counted as seen.
        """
        feed = self.started()
        self.bus.seen.add("src.7.1")
        for datagram in encodeData("k", 1, Stamp("src", 7, 1, self.clock.seconds())):
            self.handler.dataReceived(datagram, ("127.0.0.1", 9))
        self.assertEqual((feed.added, feed.seen), (0, 1))
        self.assertEqual(self.bus.stream, [])

    def test_badEntries(self) -> None:
        """
        Bad entries are dropped and counted by reason; the good ones around
        them are still taken.
        """
        feed = self.started()
        self.bus.appendDatum("k", "other.1.1", 1)
        self.bus.append([b"k", b"k", b"i", b"nope", b"v", b"1"])
        self.bus.append([b"k", b"k", b"i", b"other.1.2", b"v", b"{"])
        self.bus.append([b"junk"])
        self.bus.append([b"k", b"k", b"i", b"other.1.3", b"v", b"1" * 2000])
        self.bus.appendDatum("k", "other.1.4", 4)
        self.clock.advance(1)  # after the hole, held a moment for reordering
        self.assertEqual(
            dict(feed.dropped), {"bad-id": 1, "not-json": 1, "bad-entry": 1, "too-large": 1}
        )
        self.assertIn("other.1.4", [d.id for d in self.store.held("k")])
        self.assertEqual(feed.state, "up")
        self.assertTrue(self.events.matching("bus: dropped entry"))

    def test_registrations(self) -> None:
        """
        A registration is shared once (the hash and a stream entry), and one
        from the bus is held.
        """
        feed = self.started()
        self.store.register("k", {"description": "d"})
        self.store.register("k", {"description": "d"})
        self.assertEqual(self.bus.hash, {b"k": b'{"description":"d"}'})
        self.assertEqual(len(self.bus.stream), 1)
        self.bus.append([b"k", b"j", b"m", b'{"description":"e"}'])
        self.assertEqual(self.store.metadata("j"), {"description": "e"})
        self.assertEqual(feed.registrations, 1)
        self.assertEqual(len(self.bus.stream), 2)

    def test_downAndBack(self) -> None:
        """
        When Redis fails the bus goes down (one error line, counted), local
        datums wait in the outbox, and when Redis answers again the feed
        catches up on what others added meanwhile and sends the outbox.
        """
        feed = self.started()
        self.fromOthers(1)
        self.bus.down = True
        self.bus.reset()  # the blocking read fails
        self.assertEqual(feed.state, "down")
        self.assertEqual(feed.disconnects, 1)
        self.assertEqual(len(self.events.matching("bus: lost redis://fake:1")), 1)
        self.assertIn("serving local datums only", self.events.matching("bus: lost")[0])
        self.handler.dataReceived(b'["mine", 1]', ("127.0.0.1", 9))
        self.assertEqual(len(feed.outbox), 1)
        self.clock.advance(0.5)  # tried again: still down
        self.assertEqual(feed.state, "down")
        self.assertEqual(feed.disconnects, 1)
        self.assertEqual(feed.backoff, 2.0)
        self.bus.down = False
        self.fromOthers(2, first=2)  # added by another server meanwhile
        self.clock.advance(1.0)
        self.assertEqual(feed.state, "up")
        self.assertEqual(len(feed.outbox), 0)
        self.assertEqual(self.bus.stream[-1][1][1], b"mine")
        self.assertEqual([d.id for d in self.store.held("k")], ["other.1.1", "other.1.2", "other.1.3"])
        back = self.events.matching("bus: redis://fake:1 is back")
        self.assertEqual(len(back), 1)
        self.assertIn("caught up 2 datums", back[0])
        self.assertEqual(feed.backoff, 0.5)

    def test_errorAnswers(self) -> None:
        """
        An error answer (Redis full) puts the bus down like a lost
        connection; the datum waits in the outbox.
        """
        feed = self.started()
        failing: Deferred[Any] = Deferred()
        self.patch(self.bus, "add", lambda *a: failing)
        self.handler.dataReceived(b'["k", 1]', ("127.0.0.1", 9))
        failing.errback(ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
        self.assertEqual(feed.state, "down")
        self.assertEqual(len(feed.outbox), 1)
        self.assertEqual(feed.errors, 1)
        self.assertIn("OOM", self.events.matching("bus: lost")[0])

    def test_fullRedis(self) -> None:
        """
        A Redis that answers reads but refuses writes (full) is tried less
        and less often, and the error lines about it stay bounded.
        """
        oom = ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        self.patch(self.bus, "add", lambda *a: self.bus._failure(ResponseError, str(oom)))
        feed = self.started()
        self.handler.dataReceived(b'["k", 1]', ("127.0.0.1", 9))
        start = self.clock.seconds()
        for _ in range(30):
            self.clock.advance(feed.backoff)
        self.assertEqual(feed.backoff, 10.0)
        self.assertEqual(len(feed.outbox), 1)
        self.assertGreater(feed.disconnects, 20)
        # At most 10 lines (lost and back) a minute.
        minutes = (self.clock.seconds() - start) // 60 + 1
        lines = self.events.matching("bus: lost") + self.events.matching("is back")
        self.assertLessEqual(len(lines), 10 * minutes)
        self.assertTrue(self.events.matching("more bus state changes were not logged"))

    def test_backoffBounded(self) -> None:
        """
        The wait between tries doubles from 0.5 s up to 10 s.
        """
        self.bus.down = True
        feed = self.started()
        waits = []
        for _ in range(8):
            waits.append(feed.backoff)
            self.clock.advance(feed.backoff)
        self.assertEqual(waits, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0])
        self.assertEqual(feed.disconnects, 1)

    def test_outboxBounded(self) -> None:
        """
        While Redis is away, past the outbox's bound local datums are
        dropped and counted; the server still serves them.
        """
        self.bus.down = True
        feed = self.started(outbox=Outbox(maxEntries=3))
        for n in range(5):
            self.handler.dataReceived(json.dumps(["k", n]).encode(), ("127.0.0.1", 9))
        self.assertEqual((len(feed.outbox), feed.outboxDropped), (3, 2))
        self.assertEqual(self.store.latest("k").value, 4)

    def test_restartedEmpty(self) -> None:
        """
        When Redis comes back without the entries the feed read, it reads
        the new stream from its start.
        """
        feed = self.started()
        self.fromOthers(3)
        self.bus.down = True
        self.bus.reset()
        self.bus.restartEmpty()
        self.bus.down = False
        self.fromOthers(1, source="fresh")
        self.clock.advance(0.5)
        self.assertEqual(feed.state, "up")
        self.assertIn("fresh.1.1", [d.id for d in self.store.held("k")])
        self.assertTrue(self.events.matching("Redis lost it"))

    def test_startDown(self) -> None:
        """
        If Redis refuses at start the feed is ready at once (serving
        without history) and reads the history once Redis answers.
        """
        self.bus.down = True
        feed = self.makeFeed()
        ready = feed.whenReady()
        feed.startService()
        self.successResultOf(ready)
        self.assertEqual(feed.state, "down")
        self.fromOthers(2)
        self.bus.down = False
        self.clock.advance(0.5)
        self.assertEqual(feed.state, "up")
        self.assertEqual(len(self.store.held("k")), 2)

    def test_startSlow(self) -> None:
        """
        If Redis does not answer within the timeout, the feed is ready
        anyway, with an error line.
        """
        self.bus.hang = True
        feed = self.makeFeed(timeout=5)
        ready = feed.whenReady()
        feed.startService()
        self.assertNoResult(ready)
        self.clock.advance(5)
        self.successResultOf(ready)
        self.assertTrue(self.events.matching("did not answer within 5"))

    def test_stop(self) -> None:
        """
        Stopping closes the bus and stops taking local datums.
        """
        feed = self.started()
        feed.stopService()
        self.assertTrue(self.bus.closed)
        self.handler.dataReceived(b'["k", 1]', ("127.0.0.1", 9))
        self.assertEqual(len(feed.outbox), 0)
        self.assertEqual(feed.state, "stopped")

    def test_statistics(self) -> None:
        """
        Every figure of the bus's part of /stats names the bus, and
        /metrics shows them as artcast_bus_* metrics.
        """
        feed = self.started()
        figures = feed.statistics()["bus"]
        for name in figures:
            self.assertIn("bus", name)
        for name in ("busState", "busAdded", "busTaken", "busDuplicates", "busDropped",
                     "busErrors", "busDisconnects", "busOutbox", "busOutboxDropped",
                     "busLoaded"):
            self.assertIn(name, figures)
        statistics = ServerStatistics(self.clock, Stats(), self.store)
        statistics.add(feed)
        text = metricsText(statistics.figures).decode()
        for name in ("artcast_bus_added_total", "artcast_bus_disconnects_total",
                     "artcast_bus_outbox ", "artcast_bus_up 1.0"):
            self.assertIn(name, text)


class RedisBusTests(SynchronousTestCase):
    """
    L{RedisBus} speaks Redis's protocol over its two connections.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.bus = RedisBus(self.reactor, BusAddress("127.0.0.1", 6390, 2), maxLength=77, timeout=5)
        self.addCleanup(self.bus.close)

    def connect(self, index: int = -1) -> tuple[Any, StringTransport]:
        """
        Complete the connection the bus asked the reactor for.
        """
        host, port, factory, timeout, _ = self.reactor.tcpClients[index]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 6390, 5))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_add(self) -> None:
        """
        A datum is added with the script (EVALSHA, after SELECT of the
        URL's database), and the answer is the entry's stream id.
        """
        added = self.bus.add("a/b", "s.1.2", b'{"x":1}')
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n")
        transport.clear()
        protocol.dataReceived(b"+OK\r\n")
        sent = transport.value()
        self.assertTrue(sent.startswith(b"*10\r\n$7\r\nEVALSHA\r\n"))
        for part in (b"artcast:datums", b"artcast:seen:s.1.2", b"60000", b"77", b"a/b",
                     b"s.1.2", b'{"x":1}'):
            self.assertIn(b"\r\n" + part + b"\r\n", sent)
        protocol.dataReceived(b"$15\r\n1700000000000-0\r\n")
        self.assertEqual(self.successResultOf(added), b"1700000000000-0")

    def test_noScript(self) -> None:
        """
        When Redis does not have the script (NOSCRIPT), it is sent with
        EVAL; an id added lately gives L{None}.
        """
        added = self.bus.add("k", "s.1.1", b"1")
        protocol, transport = self.connect()
        protocol.dataReceived(b"+OK\r\n")
        transport.clear()
        protocol.dataReceived(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
        self.assertTrue(transport.value().startswith(b"*10\r\n$4\r\nEVAL\r\n"))
        self.assertIn(b"redis.call('SET', KEYS[2]", transport.value())
        protocol.dataReceived(b"$-1\r\n")
        self.assertIsNone(self.successResultOf(added))

    def test_errorAnswer(self) -> None:
        """
        An error answer fails the command.
        """
        added = self.bus.add("k", "s.1.1", b"1")
        protocol, _ = self.connect()
        protocol.dataReceived(b"+OK\r\n")
        protocol.dataReceived(b"-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        self.assertIn("OOM", str(self.failureResultOf(added, ResponseError).value))

    def test_read(self) -> None:
        """
        A blocking read goes on its own connection and gives the entries;
        a read that times out (no entry) gives none.
        """
        self.bus.last()  # the other connection
        reading = self.bus.read(b"5-0", 500, 5000)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        protocol, transport = self.connect()
        protocol.dataReceived(b"+OK\r\n")
        self.assertIn(b"XREAD\r\n$5\r\nCOUNT\r\n$3\r\n500\r\n$5\r\nBLOCK\r\n$4\r\n5000", transport.value())
        protocol.dataReceived(
            b"*1\r\n*2\r\n$14\r\nartcast:datums\r\n*1\r\n*2\r\n$3\r\n6-0\r\n"
            b"*2\r\n$1\r\nk\r\n$1\r\na\r\n"
        )
        self.assertEqual(self.successResultOf(reading), [(b"6-0", [b"k", b"a"])])
        reading = self.bus.read(b"6-0", 500, 5000)
        protocol.dataReceived(b"*-1\r\n")
        self.assertEqual(self.successResultOf(reading), [])

    def test_wholeAnswerAtOnce(self) -> None:
        """
        An answer of many bulk strings is read in the same turn, whether it
        comes in one piece or byte by byte.
        """
        entries = [(b"%d-0" % (n,), [b"k", b"key", b"i", b"s.1.%d" % (n,), b"v", b"%d" % (n,)])
                   for n in range(1, 201)]
        answer = b"*200\r\n" + b"".join(
            b"*2\r\n$%d\r\n%s\r\n*6\r\n" % (len(sid), sid)
            + b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
            for sid, fields in entries
        )
        ranged = self.bus.range(None, 0, 1000)
        protocol, _ = self.connect()
        protocol.dataReceived(b"+OK\r\n")
        protocol.dataReceived(answer)
        self.assertEqual(self.successResultOf(ranged), entries)
        ranged = self.bus.range(None, 0, 1000)
        for index in range(len(answer)):
            protocol.dataReceived(answer[index:index + 1])
        self.assertEqual(self.successResultOf(ranged), entries)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        A command not answered within the timeout fails, and its connection
        is dropped.
        """
        answer = self.bus.last()
        protocol, transport = self.connect()
        protocol.dataReceived(b"+OK\r\n")
        self.reactor.advance(5)
        self.failureResultOf(answer, TimeoutError)
        self.assertTrue(transport.disconnecting)

    def test_refused(self) -> None:
        """
        A refused connection fails the commands waiting for it, and the next
        command connects again.
        """
        first = self.bus.last()
        second = self.bus.trim(0)
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.failureResultOf(first, ConnectionRefusedError)
        self.failureResultOf(second, ConnectionRefusedError)
        self.bus.last()
        self.assertEqual(len(self.reactor.tcpClients), 2)


#: A sentinel's answer naming the master 127.0.0.1:6391, and a master's
#: and a replica's answers to ROLE.
_MASTER_6391 = b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6391\r\n"
_ROLE_MASTER = b"*3\r\n$6\r\nmaster\r\n:10\r\n*0\r\n"
_ROLE_REPLICA = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6390\r\n$9\r\nconnected\r\n:10\r\n"
_ASK_MASTER = b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n"


class SentinelTests(SynchronousTestCase):
    """
    With C{redis+sentinel://}, L{RedisBus} asks the sentinels for the master
    each time it connects, and checks the master's C{ROLE}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.bus = self.makeBus("redis+sentinel://127.0.0.1:26390,127.0.0.1:26391/mymaster")

    def makeBus(self, url: str) -> RedisBus:
        bus = RedisBus(self.reactor, parseBusURL(url), timeout=5)
        self.addCleanup(bus.close)
        return bus

    def connect(self, index: int, where: tuple[str, int]) -> tuple[Any, StringTransport]:
        """
        Complete the connection the bus asked the reactor for, to C{where}.
        """
        host, port, factory, timeout, _ = self.reactor.tcpClients[index]
        self.assertEqual((host, port, timeout), (*where, 5))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def sentinelAnswers(self, index: int, answer: bytes, port: int = 26390) -> StringTransport:
        """
        The sentinel asked in connection C{index} is asked for the master,
        and answers C{answer}.
        """
        protocol, transport = self.connect(index, ("127.0.0.1", port))
        self.assertEqual(transport.value(), _ASK_MASTER)
        protocol.dataReceived(answer)
        return transport

    def test_lookup(self) -> None:
        """
        The first command asks the first sentinel, over a connection of its
        own closed once it answers, then connects to the master it names,
        checks that it says ROLE master, SELECTs the database and sends the
        command; /stats' figures name the master.
        """
        bus = self.makeBus("redis+sentinel://127.0.0.1:26390/mymaster/2")
        answer = bus.last()
        sentinel = self.sentinelAnswers(0, _MASTER_6391)
        self.assertTrue(sentinel.disconnecting)
        protocol, transport = self.connect(1, ("127.0.0.1", 6391))
        self.assertEqual(transport.value(), b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n")
        transport.clear()
        protocol.dataReceived(b"+OK\r\n")
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")
        self.assertNoResult(answer)
        transport.clear()
        protocol.dataReceived(_ROLE_MASTER)
        self.assertIn(b"XREVRANGE", transport.value())
        protocol.dataReceived(b"*0\r\n")
        self.assertIsNone(self.successResultOf(answer))
        self.assertEqual(
            bus.statistics(),
            {"busMaster": "127.0.0.1:6391", "busMasterChanges": 0, "busNotMaster": 0},
        )
        # Connected: the next command goes straight to the master.
        bus.trim(0)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_oneLookupForBoth(self) -> None:
        """
        The two connections, made at once, share one lookup; commands given
        while the master's ROLE is checked wait for it.
        """
        first = self.bus.last()
        reading = self.bus.read(b"0-0", 10, 5000)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.sentinelAnswers(0, _MASTER_6391)
        self.assertEqual(len(self.reactor.tcpClients), 3)
        protocol, transport = self.connect(1, ("127.0.0.1", 6391))
        self.bus.trim(0)
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")
        transport.clear()
        protocol.dataReceived(_ROLE_MASTER)
        self.assertIn(b"XREVRANGE", transport.value())
        self.assertIn(b"XTRIM", transport.value())
        self.assertNoResult(first)
        self.assertNoResult(reading)

    def test_notMaster(self) -> None:
        """
        A server the sentinels name that says it is a replica is dropped:
        the commands fail, it is counted, and the next command asks the
        sentinels again.
        """
        answer = self.bus.last()
        self.sentinelAnswers(0, _MASTER_6391)
        protocol, transport = self.connect(1, ("127.0.0.1", 6391))
        protocol.dataReceived(_ROLE_REPLICA)
        error = self.failureResultOf(answer, RedisConnectionError).value
        self.assertIn("127.0.0.1:6391, named by the sentinels, is not the master", str(error))
        self.assertIn("slave", str(error))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.bus.statistics()["busNotMaster"], 1)
        self.assertIsNone(self.bus.statistics()["busMaster"])
        again = self.bus.last()
        self.assertEqual(self.reactor.tcpClients[2][:2], ("127.0.0.1", 26390))
        self.bus.close()
        self.failureResultOf(again, RedisConnectionError)

    def test_nextSentinel(self) -> None:
        """
        A sentinel that refuses, or does not know the master, is passed
        over for the next; the one that answered is asked first next time.
        """
        self.bus.last()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.sentinelAnswers(1, _MASTER_6391, port=26391)
        protocol, _ = self.connect(2, ("127.0.0.1", 6391))
        protocol.dataReceived(_ROLE_MASTER)
        self.bus.reset()
        self.bus.last()
        self.assertEqual(self.reactor.tcpClients[3][:2], ("127.0.0.1", 26391))
        self.sentinelAnswers(3, b"*-1\r\n", port=26391)
        self.sentinelAnswers(4, _MASTER_6391, port=26390)
        self.assertEqual(self.reactor.tcpClients[5][:2], ("127.0.0.1", 6391))

    def test_noSentinel(self) -> None:
        """
        When no sentinel names the master (one refuses, one never answers
        within the timeout), the command fails with a reason naming each
        sentinel, and no master is connected to.
        """
        answer = self.bus.last()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        _, transport = self.connect(1, ("127.0.0.1", 26391))
        self.assertNoResult(answer)
        self.reactor.advance(5)
        self.assertTrue(transport.disconnecting)
        error = str(self.failureResultOf(answer, RedisConnectionError).value)
        self.assertIn("no sentinel named the master mymaster", error)
        self.assertIn("127.0.0.1:26390: Connection was refused", error)
        self.assertIn("127.0.0.1:26391: no answer within 5 s", error)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_badAnswer(self) -> None:
        """
        A sentinel's answer that is not a host and a port, or an error
        answer, is passed over like a silent sentinel.
        """
        answer = self.bus.last()
        self.sentinelAnswers(0, b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n")
        self.sentinelAnswers(1, b"-ERR unknown command\r\n", port=26391)
        error = str(self.failureResultOf(answer, RedisConnectionError).value)
        self.assertIn("127.0.0.1:26390: a strange answer", error)
        self.assertIn("127.0.0.1:26391: ERR unknown command", error)

    def test_masterChanges(self) -> None:
        """
        After the connection is lost, the next command asks the sentinels
        again; a new master is counted in busMasterChanges.
        """
        answer = self.bus.last()
        self.sentinelAnswers(0, _MASTER_6391)
        protocol, _ = self.connect(1, ("127.0.0.1", 6391))
        protocol.dataReceived(_ROLE_MASTER)
        protocol.connectionLost(Failure(RedisConnectionError("lost")))
        self.failureResultOf(answer, RedisConnectionError)
        self.bus.last()
        self.sentinelAnswers(2, b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6392\r\n")
        protocol, _ = self.connect(3, ("127.0.0.1", 6392))
        protocol.dataReceived(_ROLE_MASTER)
        figures = self.bus.statistics()
        self.assertEqual((figures["busMaster"], figures["busMasterChanges"]), ("127.0.0.1:6392", 1))

    def test_closeDuringLookup(self) -> None:
        """
        Closed while a sentinel is asked, the bus fails the command, drops
        that connection and asks no other sentinel.
        """
        answer = self.bus.last()
        _, transport = self.connect(0, ("127.0.0.1", 26390))
        self.bus.close()
        self.failureResultOf(answer, RedisConnectionError)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.failureResultOf(self.bus.last(), RedisConnectionError)

    def test_withoutSentinel(self) -> None:
        """
        Without Sentinel, busMaster is the URL's address once connected, and
        no ROLE is asked.
        """
        bus = self.makeBus("redis://127.0.0.1:6390")
        self.assertIsNone(bus.statistics()["busMaster"])
        bus.last()
        protocol, transport = self.connect(0, ("127.0.0.1", 6390))
        self.assertIn(b"XREVRANGE", transport.value())
        self.assertNotIn(b"ROLE", transport.value())
        self.assertEqual(bus.statistics()["busMaster"], "127.0.0.1:6390")

    def test_feedStatistics(self) -> None:
        """
        The feed's /stats part has the connection's figures, and /metrics
        their counters.
        """
        clock = Clock()
        store = KeyStore(clock)
        feed = BusFeed(self.bus, DatagramHandler(store, clock), clock, self.bus.address.url(), 1000)
        figures = feed.statistics()["bus"]
        self.assertEqual(
            (figures["busMaster"], figures["busMasterChanges"], figures["busNotMaster"]),
            (None, 0, 0),
        )
        statistics = ServerStatistics(clock, Stats(), store)
        statistics.add(feed)
        text = metricsText(statistics.figures).decode()
        self.assertIn("artcast_bus_master_changes_total 0.0", text)
        self.assertIn("artcast_bus_not_master_total 0.0", text)


class _Child(Service):
    privileged = False

    def privilegedStartService(self) -> None:
        self.privileged = True
        super().privilegedStartService()


class ReadyTests(SynchronousTestCase):
    """
    With a C{ready} L{Deferred}, the L{ServingService} binds its port only
    once it fires.
    """

    def serving(self, ready: Deferred[Any] | None) -> tuple[ServingService, _Child]:
        limiter = ConnectionLimiter(LimitedSite(Service()), maxClients=10)
        serving = ServingService(limiter, Clock(), ready=ready, fileLimit=lambda n: n)
        child = _Child()
        child.setServiceParent(serving)
        return serving, child

    def test_waits(self) -> None:
        """
        The port is started only once C{ready} fires.
        """
        ready: Deferred[Any] = Deferred()
        serving, child = self.serving(ready)
        serving.privilegedStartService()
        serving.startService()
        self.assertFalse(child.privileged or child.running)
        ready.callback(None)
        self.assertTrue(child.privileged and child.running)

    def test_stopBeforeReady(self) -> None:
        """
        Stopping before C{ready} fires never starts the port.
        """
        ready: Deferred[Any] = Deferred()
        serving, child = self.serving(ready)
        serving.privilegedStartService()
        serving.startService()
        serving.stopService()
        ready.callback(None)
        self.assertFalse(child.running)


class StartWhenReadyTests(SynchronousTestCase):
    """
    With C{--bus}, the feeds other than multicast (the demo, an upstream)
    start only once the history is read (L{StartWhenReady}).
    """

    def test_waits(self) -> None:
        """
        The services start once C{ready} fires, whether it fires before or
        after the parent starts.
        """
        for early in (False, True):
            ready: Deferred[Any] = Deferred()
            child = Service()
            gate = StartWhenReady(ready, [child])
            if early:
                ready.callback(None)
            gate.startService()
            self.assertEqual(child.running, early)
            if not early:
                ready.callback(None)
            self.assertTrue(child.running)
            gate.stopService()
            self.assertFalse(child.running)

    def test_stopBeforeReady(self) -> None:
        """
        Stopped before C{ready} fires, the services never start.
        """
        ready: Deferred[Any] = Deferred()
        child = Service()
        gate = StartWhenReady(ready, [child])
        gate.startService()
        gate.stopService()
        ready.callback(None)
        self.assertFalse(child.running)


class OptionTests(SynchronousTestCase):
    """
    The C{--bus} options.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_options(self) -> None:
        """
        --bus, --bus-history and --bus-timeout are read, with their defaults.
        """
        options = self.parse("--bus", "redis://127.0.0.1:6390/1")
        self.assertEqual(options["bus"], "redis://127.0.0.1:6390/1")
        self.assertEqual((options["bus-history"], options["bus-timeout"]), (100_000, 5.0))
        options = self.parse("--bus", "redis://h:1", "--bus-history", "50", "--bus-timeout", "2")
        self.assertEqual((options["bus-history"], options["bus-timeout"]), (50, 2.0))
        self.assertIsNone(self.parse()["bus"])

    def test_bad(self) -> None:
        """
        A bad --bus URL is a one-line usage error.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--bus", "http://h:1")
        self.assertTrue(str(error).startswith("--bus: "))
        self.assertNotIn("\n", str(error))

    def test_sentinel(self) -> None:
        """
        --bus takes a redis+sentinel:// URL, written back in full; a bad one
        is a one-line usage error.
        """
        options = self.parse("--bus", "redis+sentinel://127.0.0.1,127.0.0.1:26391/mymaster/1")
        self.assertEqual(
            options["bus"], "redis+sentinel://127.0.0.1:26379,127.0.0.1:26391/mymaster/1"
        )
        error = self.assertRaises(
            usage.UsageError, self.parse, "--bus", "redis+sentinel://127.0.0.1:26390"
        )
        self.assertTrue(str(error).startswith("--bus: "))
        self.assertNotIn("\n", str(error))

    def test_workers(self) -> None:
        """
        --bus with --workers is refused with a one-line error.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "--bus", "redis://h:1", "--workers", "2"
        )
        self.assertIn("--bus cannot be used with --workers", str(error))


# --- with a real redis-server --------------------------------------------------


def _v2(key: str, value: Any, source: str, seq: int) -> bytes:
    [datagram] = encodeData(key, value, Stamp(source, 1, seq, reactor.seconds()))
    return datagram


class IntegrationTests(TestCase):
    """
    Real C{twistd artcast} servers on a real C{redis-server}.
    """

    timeout = 120

    def setUp(self) -> Any:
        if not os.path.exists(REDIS_SERVER):
            raise self.skipTest(f"{REDIS_SERVER} is not installed")
        self.redis = RedisServer(self)
        return self.redis.start()

    def server(self, *extra: str, **kw: Any) -> ArtcastProcess:
        return ArtcastProcess(self, extra=["--bus", self.redis.url, *extra], **kw)

    @inlineCallbacks
    def since(self, server: ArtcastProcess, key: str, datumId: str) -> Any:
        response = yield treq.get(
            f"{server.url}/artcasts/{key}?since={datumId}&timeout=10", persistent=False
        )
        body = yield response.content()
        ident = response.headers.getRawHeaders(b"Artcast-Id", [None])[0]
        return (response.code, ident, body)

    @inlineCallbacks
    def sendUntil(self, server: ArtcastProcess, datagram: bytes, check: Any, limit: float = 10) -> Any:
        """
        Send a datagram (again, loopback may drop it) until C{check(stats)}.
        """
        deadline = reactor.seconds() + limit
        while True:
            server.data.send(datagram)
            stats = yield server.stats()
            if check(stats):
                return stats
            if reactor.seconds() > deadline:
                raise self.failureException(f"condition not met: {stats!r}")
            yield deferLater(reactor, 0.1, lambda: None)

    @inlineCallbacks
    def xlen(self) -> Any:
        answer = yield self.redis.command(b"XLEN", b"artcast:datums")
        return int(answer[1:].strip())

    @inlineCallbacks
    def test_differentGroups(self) -> Any:
        """
        A datum sent to one server's group reaches a since= client of
        another server, on another group, with the first server's id.
        """
        a = yield self.server().start()
        b = yield self.server().start()
        self.assertNotEqual(a.group, b.group)
        yield self.sendUntil(a, _v2("t/x", 1, "srcA", 1), lambda s: s["bus"]["busAdded"] >= 1)
        yield self.sendUntil(a, _v2("t/x", 2, "srcA", 2), lambda s: s["bus"]["busAdded"] >= 2)
        code, ident, body = yield self.since(b, "t/x", "srcA.1.1")
        self.assertEqual((code, ident, body), (200, b"srcA.1.2", b"2"))
        stats = yield b.stats()
        self.assertEqual(stats["bus"]["busState"], "up")
        self.assertGreaterEqual(stats["bus"]["busTaken"], 2)

    @inlineCallbacks
    def test_sameGroup(self) -> Any:
        """
        Two servers on one group and one bus: Redis holds each datum once,
        and each server serves each datum once.
        """
        a = yield self.server().start()
        b = yield self.server(
            group=a.group, dataPort=a.dataPort, registerPort=a.registerPort
        ).start()
        for seq in range(1, 6):
            yield self.sendUntil(
                a, _v2("t/same", seq, "srcS", seq), lambda s, seq=seq: s["datums"] >= seq
            )
            yield b.waitFor(lambda s, seq=seq: s["datums"] >= seq)
        for server in (a, b):
            yield server.waitFor(
                lambda s: s["bus"]["busAdded"] + s["bus"]["busSeen"] + s["bus"]["busDuplicates"]
                + s["bus"]["busOwn"] >= 5 and s["bus"]["busOutbox"] == 0
            )
        length = yield self.xlen()
        self.assertEqual(length, 5)
        for server in (a, b):
            stats = yield server.stats()
            self.assertEqual(stats["datums"], 5)
            for seq in range(1, 5):
                code, ident, body = yield self.since(server, "t/same", f"srcS.1.{seq}")
                self.assertEqual(
                    (code, ident, body), (200, f"srcS.1.{seq + 1}".encode(), b"%d" % (seq + 1,))
                )
            response = yield treq.get(
                f"{server.url}/artcasts/t/same?since=srcS.1.5&timeout=0.2", persistent=False
            )
            yield response.content()
            self.assertEqual(response.code, 204)

    @inlineCallbacks
    def test_history(self) -> Any:
        """
        A server started after datums were sent answers since= at once from
        the bus's history.
        """
        a = yield self.server().start()
        for seq in range(1, 4):
            yield self.sendUntil(
                a, _v2("t/h", seq, "srcH", seq), lambda s, seq=seq: s["bus"]["busAdded"] >= seq
            )
        b = yield self.server().start()
        stats = yield b.stats()
        self.assertGreaterEqual(stats["bus"]["busLoaded"], 3)
        response = yield treq.get(
            f"{b.url}/artcasts/t/h?since=srcH.1.1&timeout=0.5", persistent=False
        )
        body = yield response.content()
        self.assertEqual((response.code, body), (200, b"2"))
        self.assertEqual(response.headers.getRawHeaders(b"Artcast-Id"), [b"srcH.1.2"])

    @inlineCallbacks
    def test_redisAway(self) -> Any:
        """
        Redis stopped: the servers say so (a counter, an error line) and
        keep serving; Redis restarted on the same port: datums flow between
        the servers again.
        """
        errors = os.path.abspath(self.mktemp())
        a = yield self.server("--error-log", errors).start()
        b = yield self.server().start()
        yield self.sendUntil(a, _v2("t/r", 1, "srcR", 1), lambda s: s["bus"]["busAdded"] >= 1)
        yield b.waitFor(lambda s: s["bus"]["busTaken"] >= 1)
        yield self.redis.stop()
        yield self.sendUntil(
            a, _v2("t/r", 2, "srcR", 2),
            lambda s: s["bus"]["busDisconnects"] >= 1 and s["datums"] >= 2,
        )
        code, ident, _ = yield self.since(a, "t/r", "srcR.1.1")
        self.assertEqual((code, ident), (200, b"srcR.1.2"))
        with open(errors) as log:
            self.assertIn(f"bus: lost {self.redis.url}", log.read())
        yield self.redis.start()
        stats = yield a.waitFor(lambda s: s["bus"]["busState"] == "up", limit=20)
        self.assertEqual(stats["bus"]["busOutbox"], 0)
        yield b.waitFor(lambda s: s["bus"]["busState"] == "up", limit=20)
        # Sent while Redis was away: from the outbox, then a new one.
        yield self.sendUntil(a, _v2("t/r", 3, "srcR", 3), lambda s: s["datums"] >= 3)
        code, ident, body = yield self.since(b, "t/r", "srcR.1.2")
        self.assertEqual((code, ident, body), (200, b"srcR.1.3", b"3"))
        code, ident, body = yield self.since(b, "t/r", "srcR.1.1")
        self.assertEqual((code, ident, body), (200, b"srcR.1.2", b"2"))
        with open(errors) as log:
            self.assertIn(f"bus: {self.redis.url} is back", log.read())

    @inlineCallbacks
    def test_redisFull(self) -> Any:
        """
        A Redis at its C{maxmemory} refuses the adds (C{OOM}): the server
        says so (a counter, an error line naming the refusal) and keeps
        serving its own datums; given room again, it adds what it kept and
        the other server gets it.
        """
        errors = os.path.abspath(self.mktemp())
        a = yield self.server("--error-log", errors).start()
        b = yield self.server().start()
        yield self.sendUntil(a, _v2("t/full", 1, "srcF", 1), lambda s: s["bus"]["busAdded"] >= 1)
        yield b.waitFor(lambda s: s["bus"]["busTaken"] >= 1)
        # No room for one more byte: every write is refused from now on.
        answer = yield self.redis.command(b"CONFIG", b"SET", b"maxmemory", b"1")
        self.assertEqual(answer, b"+OK\r\n")
        big = "x" * 20_000
        yield self.sendUntil(
            a, _v2("t/full", big, "srcF", 2),
            lambda s: s["bus"]["busErrors"] >= 1 and s["datums"] >= 2,
        )
        code, ident, body = yield self.since(a, "t/full", "srcF.1.1")
        self.assertEqual((code, ident, json.loads(body)), (200, b"srcF.1.2", big))
        with open(errors) as log:
            self.assertIn("OOM", log.read())
        answer = yield self.redis.command(b"CONFIG", b"SET", b"maxmemory", b"0")
        self.assertEqual(answer, b"+OK\r\n")
        yield a.waitFor(
            lambda s: s["bus"]["busState"] == "up" and s["bus"]["busOutbox"] == 0, limit=30
        )
        code, ident, body = yield self.since(b, "t/full", "srcF.1.1")
        self.assertEqual((code, ident, json.loads(body)), (200, b"srcF.1.2", big))


@inlineCallbacks
def _until(ask: Any, check: Any, what: str, limit: float) -> Any:
    """
    Call C{ask()} (a L{Deferred}) every 0.1 s until C{check} holds for its
    answer, C{limit} seconds at most.
    """
    deadline = reactor.seconds() + limit
    while True:
        answer = yield ask()
        if answer is not None and check(answer):
            return answer
        if reactor.seconds() > deadline:
            raise AssertionError(f"waited {limit} s for {what}; the last answer: {answer!r}")
        yield deferLater(reactor, 0.1, lambda: None)


class SentinelIntegrationTests(TestCase):
    """
    Real C{twistd artcast} servers on C{--bus redis+sentinel://}, with a real
    Redis master, replica and sentinel, through a failover.
    """

    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:
        if not os.path.exists(REDIS_SERVER):
            raise self.skipTest(f"{REDIS_SERVER} is not installed")
        self.master = yield RedisServer(self).start()
        self.replica = yield RedisServer(
            self, extra=["--replicaof", "127.0.0.1", str(self.master.port)]
        ).start()
        replicaPort = b"\r\n%d\r\n" % (self.replica.port,)
        yield _until(
            lambda: self.master.command(b"ROLE"), lambda answer: replicaPort in answer,
            "the replica to follow the master", 20,
        )
        self.sentinel = RedisServer(self, sentinel=[
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1",
            "sentinel down-after-milliseconds mymaster 1000",
            "sentinel failover-timeout mymaster 5000",
        ])
        try:
            yield self.sentinel.start()
        except RuntimeError as error:
            raise self.skipTest(f"{REDIS_SERVER} cannot run as a sentinel: {error}")
        name = b"127.0.0.1:%d" % (self.replica.port,)
        yield _until(
            lambda: self.sentinel.command(b"SENTINEL", b"replicas", b"mymaster"),
            lambda answer: name in answer, "the sentinel to know the replica", 20,
        )
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel.port}/mymaster"

    def masterPort(self) -> Deferred[bytes | None]:
        return self.sentinel.command(b"SENTINEL", b"get-master-addr-by-name", b"mymaster")

    @inlineCallbacks
    def sendUntil(self, server: ArtcastProcess, datagram: bytes, check: Any, limit: float) -> Any:
        """
        Send a datagram (again, loopback may drop it) until C{check(stats)}.
        """
        deadline = reactor.seconds() + limit
        while True:
            server.data.send(datagram)
            stats = yield server.stats()
            if check(stats):
                return stats
            if reactor.seconds() > deadline:
                raise self.failureException(f"condition not met: {stats!r}")
            yield deferLater(reactor, 0.1, lambda: None)

    @inlineCallbacks
    def since(self, server: ArtcastProcess, key: str, datumId: str) -> Any:
        response = yield treq.get(
            f"{server.url}/artcasts/{key}?since={datumId}&timeout=10", persistent=False
        )
        body = yield response.content()
        ident = response.headers.getRawHeaders(b"Artcast-Id", [None])[0]
        return (response.code, ident, body)

    @inlineCallbacks
    def test_failover(self) -> Any:
        """
        Datums sent to one server's group reach a since= client of another
        server, on another group, before and after the master is killed and
        the sentinel promotes the replica; the second server counts the
        change of master and logs the outage naming the sentinel.
        """
        errors = os.path.abspath(self.mktemp())
        a = yield ArtcastProcess(self, extra=["--bus", self.url]).start()
        b = yield ArtcastProcess(self, extra=["--bus", self.url, "--error-log", errors]).start()
        self.assertNotEqual(a.group, b.group)
        yield self.sendUntil(a, _v2("t/f", 1, "srcF", 1), lambda s: s["bus"]["busAdded"] >= 1, 10)
        yield self.sendUntil(a, _v2("t/f", 2, "srcF", 2), lambda s: s["bus"]["busAdded"] >= 2, 10)
        code, ident, body = yield self.since(b, "t/f", "srcF.1.1")
        self.assertEqual((code, ident, body), (200, b"srcF.1.2", b"2"))
        stats = yield b.stats()
        self.assertEqual(
            (stats["bus"]["busMaster"], stats["bus"]["busMasterChanges"]),
            (f"127.0.0.1:{self.master.port}", 0),
        )
        # What the master took has reached the replica; then the master dies.
        yield _until(
            lambda: self.replica.command(b"XLEN", b"artcast:datums"),
            lambda answer: answer.startswith(b":") and int(answer[1:]) >= 2,
            "the replica to hold the datums", 10,
        )
        yield self.master.kill()
        replicaPort = b"\r\n%d\r\n" % (self.replica.port,)
        yield _until(
            self.masterPort, lambda answer: replicaPort in answer,
            "the sentinel to promote the replica", 30,
        )
        yield self.sendUntil(
            a, _v2("t/f", 3, "srcF", 3),
            lambda s: s["bus"]["busAdded"] >= 3 and s["bus"]["busState"] == "up", 40,
        )
        stats = yield b.waitFor(
            lambda s: s["bus"]["busState"] == "up" and s["bus"]["busMasterChanges"] >= 1,
            limit=40,
        )
        self.assertEqual(stats["bus"]["busMaster"], f"127.0.0.1:{self.replica.port}")
        code, ident, body = yield self.since(b, "t/f", "srcF.1.2")
        self.assertEqual((code, ident, body), (200, b"srcF.1.3", b"3"))
        code, ident, body = yield self.since(b, "t/f", "srcF.1.1")
        self.assertEqual((code, ident, body), (200, b"srcF.1.2", b"2"))
        with open(errors) as log:
            text = log.read()
        self.assertIn(f"bus: lost {self.url}", text)
        self.assertIn(f"the master is now 127.0.0.1:{self.replica.port}", text)
