# -*- test-case-name: tests.test_bounds_sources -*-
"""
Issue 9, the sources' part: what a stranger sending datagrams can make the
server hold or refuse.  Duplicate JSON members, the size of a registration,
a C{boot} far in the future, fragment starvation and the table of sources.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast import wire

from artcast.server.feeds import reception
from artcast.server import tap
from artcast.server.store import KeyStore
from artcast.server.feeds.multicast import DatagramHandler, MulticastFeed
from artcast.server.feeds.publish import Refused, readValue
from artcast.server.feeds.reception import (
    Reassembler,
    SourceTracker,
)
from artcast.wire import (
    MAX_COUNTER,
    BadDatagram,
    Fragment,
    Stamp,
    encodeData,
    encodeRegister,
    parseData,
    parseRegister,
)
from tests.harness import ArtcastProcess

ADDRESS = ("127.0.0.1", 5555)
STRANGER = ("192.0.2.66", 4444)
KEY = b"s" * 32
NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)

jsonScalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
jsonValues = st.recursive(
    jsonScalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15,
)


def _fragments(key: str, value: object, stamp: Stamp, signingKey: bytes | None = None,
               size: int = 400) -> list[bytes]:
    """
    C{value} as fragments of at most C{size} bytes each.
    """
    datagrams = encodeData(key, value, stamp, signingKey, maxDatagram=size)
    assert len(datagrams) > 1, "not fragmented"
    return datagrams


def _withDuplicate(document: dict[str, Any], name: str, other: object) -> str:
    """
    The JSON text of C{document} with the member C{name} written a second
    time, with the value C{other}, at the end.
    """
    text = json.dumps(document)
    return text[:-1] + ", " + json.dumps(name) + ": " + json.dumps(other) + "}"


def _nested(value: object, inner: str) -> str:
    """
    The JSON text of C{value} (an array) with C{inner} as its last element.
    """
    text = json.dumps(value)
    return text[:-1] + (", " if value else "") + inner + "]"


class DuplicateMemberTests(SynchronousTestCase):
    """
    Finding 13: an object that names a member twice is refused everywhere
    Artcast parses JSON from outside, under C{duplicate-member}.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        st.dictionaries(st.text(max_size=6), jsonValues, min_size=1, max_size=4),
        st.data(),
        jsonValues,
        st.lists(jsonValues, max_size=3),
    )
    def test_anywhere(self, obj: dict[str, Any], data: Any, other: object,
                      around: list[Any]) -> None:
        """
        An object with a duplicated member, at any depth of a version 1 or 2
        datum, a registration, a value put together from fragments or an
        HTTP publish body, is refused as
        C{duplicate-member} (a lenient parser would keep the last one).
        """
        name = data.draw(st.sampled_from(sorted(obj)))
        bad = _withDuplicate(obj, name, other)
        value = _nested(around, bad)
        for datagram in (
            ('["k", %s]' % (value,)).encode(),
            ('{"v":2,"src":"s","boot":1,"seq":1,"t":0,"key":"k","value":%s}' % (value,)).encode(),
            ('["k", {"description": "d", "x": %s}]' % (value,)).encode(),
        ):
            with self.assertRaises(BadDatagram) as caught:
                if b'"x"' in datagram:
                    parseRegister(datagram)
                else:
                    parseData(datagram)
            self.assertEqual(caught.exception.reason, "duplicate-member")
        refused = self.assertRaises(Refused, readValue, b"application/json",
                                    value.encode(), 100_000)
        self.assertEqual(refused.code, 400)
        whole = Fragment("k", Stamp("s", 1, 1, 0.0), 0, 1, value)
        caught = self.assertRaises(BadDatagram, Reassembler(Clock()).feed, whole)
        self.assertEqual(caught.reason, "duplicate-member")

    @settings(max_examples=150, deadline=None)
    @given(jsonValues)
    def test_uniqueKept(self, value: object) -> None:
        """
        JSON without duplicated members parses as before, to the value the
        standard library gives.
        """
        datagram = json.dumps(["k", value]).encode()
        self.assertEqual(parseData(datagram).value, json.loads(datagram)[1])

    def test_envelope(self) -> None:
        """
        A version 2 datagram that gives C{key} or C{v} twice is refused.
        """
        for text in (
            b'{"v":2,"src":"s","boot":1,"seq":1,"t":0,"key":"a","key":"b","value":1}',
            b'{"v":2,"v":2,"src":"s","boot":1,"seq":1,"t":0,"key":"a","value":1}',
        ):
            self.assertRaises(BadDatagram, parseData, text)

    def test_counted(self) -> None:
        """
        The server drops such a datagram, counts it under
        C{duplicate-member}, and publishes nothing.
        """
        store = KeyStore(Clock())
        handler = DatagramHandler(store, Clock())
        handler.dataReceived(b'["k", {"on": false, "on": true}]', ADDRESS)
        handler.registerReceived(b'["k", {"description": "a", "description": "b"}]', ADDRESS)
        self.assertEqual(handler.stats.dropped["duplicate-member"], 2)
        self.assertIsNone(store.latest("k"))
        self.assertNotIn("duplicate-member", wire.REASONS[:-1])
        self.assertIn("duplicate-member", wire.REASONS)


class RegistrationBoundTests(SynchronousTestCase):
    """
    Finding 3, the datagram side: a registration's metadata is bounded like
    a datum's value, and in the number of values it holds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock)

    def test_maxValueSize(self) -> None:
        """
        Metadata over C{--max-value-size} bytes of compact JSON is dropped as
        C{too-large}; smaller metadata is kept.
        """
        handler = DatagramHandler(self.store, self.clock, maxValueSize=1000)
        big = {"description": "x" * 1000}
        handler.registerReceived(json.dumps(["k", big]).encode(), ADDRESS)
        handler.registerReceived(
            encodeRegister("v2", big, Stamp("s", 1, 0, 0.0)), ADDRESS
        )
        self.assertEqual(handler.stats.dropped["too-large"], 2)
        self.assertEqual(handler.stats.registrations, 0)
        self.assertIsNone(self.store.metadata("k"))
        handler.registerReceived(b'["k", {"description": "small"}]', ADDRESS)
        self.assertEqual(self.store.metadata("k"), {"description": "small"})

    def test_manyValues(self) -> None:
        """
        Metadata of many small values (C{{"x": [{}, {}, ...]}}, held at about
        twenty times its size) is dropped as C{too-large} whatever
        C{--max-value-size} is.
        """
        handler = DatagramHandler(self.store, self.clock, maxValueSize=10_000_000)
        datagram = json.dumps(["k", {"x": [{}] * 20000}], separators=(",", ":")).encode()
        self.assertLess(len(datagram), wire.MAX_DATAGRAM)
        handler.registerReceived(datagram, ADDRESS)
        self.assertEqual(handler.stats.dropped["too-large"], 1)
        self.assertIsNone(self.store.metadata("k"))
        fits = {"x": [0] * (wire.MAX_META_VALUES - 2)}
        handler.registerReceived(json.dumps(["k", fits]).encode(), ADDRESS)
        self.assertEqual(self.store.metadata("k"), fits)
        self.assertRaises(ValueError, encodeRegister, "k", {"x": [0] * wire.MAX_META_VALUES})


class BootTests(SynchronousTestCase):
    """
    Finding 9: a C{boot} far in the future does not make every later datum
    of its source a replay.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = KeyStore(self.clock)
        self.got: list[Any] = []
        self.store.subscribe("k", lambda datum: self.got.append(datum.value))

    def send(self, handler: DatagramHandler, value: object, boot: int, seq: int,
             sent: float, signingKey: bytes | None = None, src: str = "dev") -> bytes:
        [datagram] = encodeData("k", value, Stamp(src, boot, seq, sent), signingKey)
        handler.dataReceived(datagram, ADDRESS)
        return datagram

    def test_forgedMaximum(self) -> None:
        """
        After one datagram with C{boot} = C{seq} = 2**63-1, the real source's
        next datum is delivered (a C{reset}), and so are the following ones.
        """
        handler = DatagramHandler(self.store, self.clock)
        self.send(handler, "real-1", NOW_MS - 5000, 1, NOW - 1)
        self.send(handler, "forged", MAX_COUNTER, MAX_COUNTER, NOW)
        self.clock.advance(1)
        self.send(handler, "real-2", NOW_MS - 5000, 2, NOW + 1)
        self.send(handler, "real-3", NOW_MS - 5000, 3, NOW + 1.1)
        self.assertEqual(self.got, ["real-1", "forged", "real-2", "real-3"])
        self.assertEqual(handler.stats.sources["reset"], 1)

    def test_forgedFarFutureTime(self) -> None:
        """
        A forged datagram whose C{t} is also far ahead does not block the
        reset: an implausible C{t} is not remembered as the newest.
        """
        handler = DatagramHandler(self.store, self.clock)
        self.send(handler, "real-1", NOW_MS - 5000, 1, NOW)
        self.send(handler, "forged", MAX_COUNTER, MAX_COUNTER, 1e15)
        self.clock.advance(1)
        self.send(handler, "real-2", NOW_MS - 5000, 2, NOW + 1)
        self.assertEqual(self.got, ["real-1", "forged", "real-2"])

    def test_forgedTimeAheadUnsigned(self) -> None:
        """
        Without signatures a forged datagram whose C{t} is as far ahead as
        a reset allows, with a forged C{boot} or only a forged C{seq},
        holds back none of the real source's datums, and a copy of a real
        one is still dropped.
        """
        handler = DatagramHandler(self.store, self.clock)
        boot = NOW_MS - 5000
        self.send(handler, "real-1", boot, 1, NOW)
        self.send(handler, "forged-boot", MAX_COUNTER, MAX_COUNTER, NOW + 59)
        self.send(handler, "real-2", boot, 2, NOW + 0.1)
        self.send(handler, "forged-seq", boot, MAX_COUNTER, NOW + 59)
        copy = self.send(handler, "real-3", boot, 3, NOW + 0.2)
        self.send(handler, "real-4", boot, 4, NOW + 0.3)
        handler.dataReceived(copy, ADDRESS)
        self.assertEqual(
            self.got, ["real-1", "forged-boot", "real-2", "forged-seq", "real-3", "real-4"]
        )
        self.assertEqual(handler.stats.dropped["replayed"], 1)
        self.assertEqual(
            (handler.stats.sources["reset"], handler.stats.sources["late"]), (1, 2)
        )

    def test_wrongClockSigned(self) -> None:
        """
        With signatures and a window: a device whose clock was ten years
        ahead when it booted, then restarted with the right time, is
        delivered again at once; no datagram of either run can be replayed.
        """
        handler = DatagramHandler(self.store, self.clock, signingKeys=[KEY], freshness=30.0)
        future = NOW_MS + 10 * 365 * 86400 * 1000
        copies = [self.send(handler, f"bad-{seq}", future, seq, NOW + seq, KEY)
                  for seq in (1, 2)]
        self.clock.advance(5)
        copies += [self.send(handler, f"good-{seq}", NOW_MS + 4000, seq, NOW + 4 + seq, KEY)
                   for seq in (1, 2)]
        self.assertEqual(self.got, ["bad-1", "bad-2", "good-1", "good-2"])
        self.assertEqual(handler.stats.sources["reset"], 1)
        for copy in copies * 2:
            handler.dataReceived(copy, ADDRESS)
        self.assertEqual(self.got, ["bad-1", "bad-2", "good-1", "good-2"])
        self.assertEqual(handler.stats.dropped["replayed"], 8)
        self.send(handler, "good-3", NOW_MS + 4000, 3, NOW + 7, KEY)
        self.assertEqual(self.got[-1], "good-3")

    def test_noResetWithoutWindow(self) -> None:
        """
        A server that checks signatures without a window does not reset (a
        copy could then reset it), as before.
        """
        handler = DatagramHandler(self.store, self.clock, signingKeys=[KEY])
        self.send(handler, "a", 10, 5, NOW, KEY)
        self.send(handler, "b", 9, 1, NOW + 1, KEY)
        self.assertEqual(self.got, ["a"])

    def test_duplicatesStillDropped(self) -> None:
        """
        Reordered and duplicated datagrams of a live source are still
        dropped as C{replayed}, not taken for a reset.
        """
        handler = DatagramHandler(self.store, self.clock)
        first = self.send(handler, 1, NOW_MS, 1, NOW)
        second = self.send(handler, 2, NOW_MS, 2, NOW + 0.5)
        handler.dataReceived(first, ADDRESS)
        handler.dataReceived(second, ADDRESS)
        self.assertEqual(self.got, [1, 2])
        self.assertEqual(handler.stats.dropped["replayed"], 2)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 4), st.floats(-40, 40),
                  st.floats(0, 20), st.booleans()),
        max_size=30,
    ))
    def test_neverTwice(self, steps: list[tuple[int, int, float, float, bool]]) -> None:
        """
        With a window, whatever stamps arrive in whatever order, resets
        included, no stamp is accepted twice: a copy cannot be replayed.
        """
        clock = Clock()
        clock.advance(NOW)
        tracker = SourceTracker(clock, window=30.0)
        accepted: set[Stamp] = set()
        seen: list[Stamp] = []
        for boot, seq, offset, wait, again in steps:
            clock.advance(wait)
            stamp = seen[(boot * 7 + seq) % len(seen)] if again and seen else \
                Stamp("s", boot, seq, clock.seconds() + offset)
            seen.append(stamp)
            if tracker.check(stamp) not in ("replayed", "stale"):
                self.assertNotIn(stamp, accepted)
                accepted.add(stamp)


class FragmentTests(SynchronousTestCase):
    """
    Finding 10: fragments are judged before they take memory, and one
    sender's flood of one-fragment sets cannot evict another's value.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = KeyStore(self.clock)
        self.got: list[Any] = []
        self.store.subscribe("real", lambda datum: self.got.append(datum.value))

    def flood(self, handler: DatagramHandler, count: int, sent: float = NOW,
              signingKey: bytes | None = None, sources: int = 1,
              address: tuple[str, int] = ADDRESS) -> None:
        """
        Send C{count} one-fragment sets (the first of two fragments each).
        """
        for index in range(count):
            src = f"flood{index % sources}"
            first = _fragments("flood", "f" * 600, Stamp(src, 1, index + 1, sent),
                               signingKey)[0]
            handler.dataReceived(first, address)

    def deliver(self, handler: DatagramHandler, rounds: int = 10, **flood: Any) -> int:
        """
        Send C{rounds} real values, each with a flood between its fragments;
        return how many were delivered.
        """
        key = flood.get("signingKey")
        for round in range(rounds):
            value = f"value {round} " + "v" * 900
            datagrams = _fragments("real", value, Stamp("real", NOW_MS, round + 1, NOW), key)
            handler.dataReceived(datagrams[0], ADDRESS)
            self.flood(handler, 70, **flood)
            for datagram in datagrams[1:]:
                handler.dataReceived(datagram, ADDRESS)
        return len(self.got)

    def test_oneSourceFlood(self) -> None:
        """
        70 one-fragment sets of one source between the fragments of a real
        value: the real value is delivered 10 times of 10, and the flood's
        evictions are counted.
        """
        handler = DatagramHandler(self.store, self.clock)
        self.assertEqual(self.deliver(handler), 10)
        self.assertGreater(handler.stats.dropped["fragments-evicted"], 600)
        self.assertLessEqual(handler.reassembler.pending, 4)

    def test_otherAddressFlood(self) -> None:
        """
        A flood from another address, under 70 source names, cannot evict
        the real value either.
        """
        handler = DatagramHandler(self.store, self.clock)
        self.assertEqual(self.deliver(handler, sources=70, address=STRANGER), 10)
        self.assertLessEqual(handler.reassembler.pending, 16)

    def test_sameAddressManySources(self) -> None:
        """
        A flood from the real source's own address under 70 source names
        cannot evict the value in progress: on a tie the newcomer is refused.
        """
        handler = DatagramHandler(self.store, self.clock)
        self.assertEqual(self.deliver(handler, sources=70), 10)
        self.assertEqual(handler.stats.dropped["fragments-evicted"], 10 * (70 - 15))

    def test_capturedSigned(self) -> None:
        """
        With signatures, captured hour-old signed fragments are dropped as
        C{stale} before they take any memory; the real value is delivered
        10 times of 10.
        """
        handler = DatagramHandler(self.store, self.clock, signingKeys=[KEY], freshness=30.0)
        held = []
        real = handler.reassembler.feed

        def feed(fragment: Fragment, sender: str = "") -> Any:
            held.append(fragment.stamp.source)
            return real(fragment, sender)

        handler.reassembler.feed = feed  # type: ignore[method-assign]
        self.assertEqual(self.deliver(handler, sent=NOW - 3600, signingKey=KEY, sources=70), 10)
        self.assertEqual(handler.stats.dropped["stale"], 700)
        self.assertEqual(set(held), {"real"})

    def test_replayedFragments(self) -> None:
        """
        Fragments of a datum already delivered are dropped as C{replayed}
        and take no memory.
        """
        handler = DatagramHandler(self.store, self.clock)
        datagrams = _fragments("real", "x" * 900, Stamp("real", 1, 1, NOW))
        for datagram in datagrams + datagrams:
            handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(self.got, ["x" * 900])
        self.assertEqual(handler.stats.dropped["replayed"], len(datagrams))
        self.assertEqual(handler.reassembler.pending, 0)

    def test_expiredCounted(self) -> None:
        """
        A value whose fragments do not all come within 5 seconds is dropped
        and counted as C{fragments-expired}.
        """
        handler = DatagramHandler(self.store, self.clock)
        datagrams = _fragments("real", "x" * 900, Stamp("real", 1, 1, NOW))
        handler.dataReceived(datagrams[0], ADDRESS)
        self.clock.advance(5)
        for datagram in datagrams[1:]:
            handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(handler.stats.dropped["fragments-expired"], 1)
        self.assertEqual(self.got, [])

    def test_bytes(self) -> None:
        """
        The bytes held are bounded; a sender that fills them evicts its own
        values, not another sender's.
        """
        reassembler = Reassembler(self.clock, maxBytes=20_000, maxPerSource=64,
                                  maxPerAddress=64)
        mine = Stamp("mine", 1, 1, NOW)
        self.assertIsNone(reassembler.feed(Fragment("k", mine, 0, 2, '"' + "m" * 5000),
                                           "10.0.0.1"))
        for seq in range(1, 50):
            reassembler.feed(Fragment("k", Stamp("big", 1, seq, NOW), 0, 2, "b" * 3000),
                             "10.0.0.2")
            self.assertLessEqual(reassembler.held, 20_000)
        self.assertGreater(reassembler.evicted, 40)
        done = reassembler.feed(Fragment("k", mine, 1, 2, '"'), "10.0.0.1")
        self.assertEqual(done.value, "m" * 5000)

    def test_options(self) -> None:
        """
        C{--fragment-memory} and C{--max-sources} have the library's
        defaults and reach the server's reassembler and source tracker.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(options["fragment-memory"], reception.FRAGMENT_MEMORY)
        self.assertEqual(options["max-sources"], reception.MAX_SOURCES)
        options = tap.Options()
        options.parseOptions(["--fragment-memory", "5000", "--max-sources", "3",
                              "--error-log", "-"])
        service = tap.makeService(options, reactor=MemoryReactorClock())
        [handler] = {child.handler for child in service
                     if isinstance(child, MulticastFeed)}
        self.assertEqual(handler.reassembler._maxBytes, 5000)
        self.assertEqual(handler.tracker._maxSources, 3)


class SourceTableTests(SynchronousTestCase):
    """
    The table of sources, keyed by names strangers choose, is bounded and
    what it forgets is counted.
    """

    def test_forgottenCounted(self) -> None:
        """
        Past C{maxSources}, each source forgotten is counted under
        C{sources} -> C{forgotten}.
        """
        clock = Clock()
        handler = DatagramHandler(KeyStore(clock), clock, maxSources=5)
        for index in range(12):
            [datagram] = encodeData("k", index, Stamp(f"s{index}", 1, 1, 0.0))
            handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(handler.stats.sources["forgotten"], 7)
        self.assertEqual(len(handler.tracker._sources), 5)


def _rss(pid: int) -> int:
    """
    The resident memory of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class ServerTests(TestCase):
    """
    The same findings against a real C{twistd artcast} over loopback.
    """

    timeout = 60

    def keyFile(self) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(KEY)
        return path

    @inlineCallbacks
    def starve(self, proc: ArtcastProcess, sent: float, signingKey: bytes | None,
               sources: int) -> Any:
        """
        Ten real values with 70 one-fragment sets between their fragments;
        return the server's stats once all ten arrived (or fail).
        """
        boot = int(time.time() * 1000)
        for round in range(10):
            value = f"value {round} " + "v" * 900
            now = time.time()
            datagrams = _fragments("real", value, Stamp("real", boot, round + 1, now),
                                   signingKey)
            proc.data.send(datagrams[0])
            for index in range(70):
                src = f"flood{index % sources}"
                stamp = Stamp(src, 1, round * 70 + index + 1, sent if sent else now)
                proc.data.send(_fragments("flood", "f" * 600, stamp, signingKey)[0])
            for datagram in datagrams[1:]:
                proc.data.send(datagram)
            # Paced, so that the kernel's receive buffer never overflows.
            yield proc.waitFor(lambda stats: stats["datums"] == round + 1)
        stats = yield proc.waitFor(lambda stats: stats["datums"] == 10)
        return stats

    @inlineCallbacks
    def test_fragmentStarvation(self) -> Any:
        """
        A real server delivers 10 of 10 fragmented values with a flood of
        one-fragment sets between their fragments, and counts the evictions.
        """
        proc = yield ArtcastProcess(self).start()
        stats = yield self.starve(proc, 0.0, None, 1)
        self.assertGreater(stats["dropped"]["fragments-evicted"], 600)

    @inlineCallbacks
    def test_capturedSignedFragments(self) -> Any:
        """
        With signatures, captured hour-old signed fragments are dropped as
        stale; 10 of 10 real values are delivered.
        """
        proc = yield ArtcastProcess(self, ["--source-key-file", self.keyFile()]).start()
        stats = yield self.starve(proc, time.time() - 3600, KEY, 70)
        self.assertEqual(stats["dropped"]["stale"], 700)

    @inlineCallbacks
    def test_bootAndRegistrations(self) -> Any:
        """
        A real server: one forged datagram with C{boot} = C{seq} = 2**63-1 does
        not silence the source; 300 registrations of C{{"x": [{}] * 20000}}
        are dropped as too large and leave resident memory where it was.
        """
        proc = yield ArtcastProcess(self).start()
        boot = int(time.time() * 1000) - 1000
        [datagram] = encodeData("k", 1, Stamp("dev", boot, 1, time.time()))
        proc.data.send(datagram)
        yield proc.waitFor(lambda stats: stats["datums"] == 1)
        [forged] = encodeData("k", "forged", Stamp("dev", MAX_COUNTER, MAX_COUNTER, time.time()))
        proc.data.send(forged)
        yield proc.waitFor(lambda stats: stats["datums"] == 2)
        yield deferLater(reactor, 0.01, lambda: None)
        [real] = encodeData("k", 2, Stamp("dev", boot, 2, time.time()))
        proc.data.send(real)
        stats = yield proc.waitFor(lambda stats: stats["datums"] == 3)
        self.assertEqual(stats["sources"]["reset"], 1)

        before = _rss(proc.pid)
        registration = json.dumps(["big", {"x": [{}] * 20000}], separators=(",", ":")).encode()
        for batch in range(30):
            for _ in range(10):
                proc.register.send(registration)
            yield proc.waitFor(
                lambda stats: stats["dropped"].get("too-large", 0) >= 10 * (batch + 1),
                limit=20,
            )
        after = _rss(proc.pid)
        self.assertEqual(stats["registrations"], 0)
        self.assertLess(after - before, 40 * 1024, f"RSS {before} KiB -> {after} KiB")
        if os.environ.get("ARTCAST_PRINT_FIGURES"):
            print(f"\nRSS before {before} KiB, after 300 registrations {after} KiB")
