"""
Tests for L{artcast.server.store}.
"""

from __future__ import annotations

import gc
from typing import Any, Callable

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from artcast.server.interfaces import IListener
from artcast.server.store import _FAN_OUT_UNCOLLECTED, DeferredWaiter, KeyStore
from artcast.wire import DatumId, Stamp


def stamp(seq: int, source: str = "src", boot: int = 1000) -> Stamp:
    return Stamp(source, boot, seq, 1.0)


class PublishTests(SynchronousTestCase):
    """
    Publishing datums and reading them back.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, history=5, historyAge=60, instance="srv")

    def test_latest(self) -> None:
        """
        The latest datum of a key is the last one published.
        """
        self.store.publish("a", 1)
        self.store.publish("a", 2)
        self.assertEqual(self.store.latest("a").value, 2)
        self.assertIsNone(self.store.latest("b"))

    def test_serverIds(self) -> None:
        """
        A datum without a stamp (wire version 1) gets an id from the server:
        its instance name, its boot time and a counter shared by all keys.
        """
        self.clock.advance(12.5)
        store = KeyStore(self.clock, instance="srv")
        first = store.publish("a", 1)
        second = store.publish("b", 2)
        self.assertEqual(first.id, "srv.12500.1")
        self.assertEqual(second.id, "srv.12500.2")

    def test_sourceIds(self) -> None:
        """
        A stamped datum (wire version 2) takes its id from the stamp, so every
        server gives it the same id.
        """
        datum = self.store.publish("a", 1, stamp(7))
        self.assertEqual(datum.id, "src.1000.7")
        self.assertEqual(datum.sent, 1.0)

    def test_encodingsCached(self) -> None:
        """
        A datum's JSON and text encodings are made once and reused.
        """
        datum = self.store.publish("a", {"b": "ü"})
        self.assertEqual(datum.json, '{"b":"ü"}'.encode())
        self.assertIs(datum.json, datum.json)
        self.assertIs(datum.text, datum.json)
        self.assertEqual(self.store.publish("a", "plain").text, b"plain")

    def test_historyBoundedByCount(self) -> None:
        """
        A key keeps at most C{history} datums.
        """
        for n in range(12):
            self.store.publish("a", n)
        self.assertEqual([d.value for d in self.store.held("a")], [7, 8, 9, 10, 11])

    def test_historyBoundedByAge(self) -> None:
        """
        Datums older than C{historyAge} leave history, but the latest value of
        a key stays however old it is.
        """
        self.store.publish("a", 1)
        self.clock.advance(30)
        self.store.publish("a", 2)
        self.clock.advance(45)
        self.assertEqual([d.value for d in self.store.held("a")], [2])
        self.clock.advance(1000)
        self.assertEqual([d.value for d in self.store.held("a")], [2])
        self.assertEqual(self.store.latest("a").value, 2)

    def test_keysAndMetadata(self) -> None:
        """
        Keys are listed sorted, registered ones with their metadata and ones
        seen only in data without.
        """
        self.store.publish("b", 1)
        self.store.register("a", {"description": "A"})
        self.assertEqual(
            list(self.store.keys()), [("a", {"description": "A"}), ("b", None)]
        )
        self.assertEqual(self.store.metadata("a"), {"description": "A"})

    def test_maxKeysEvictsLeastRecentlyUpdated(self) -> None:
        """
        Past C{maxKeys}, the least recently updated key goes.
        """
        store = KeyStore(self.clock, maxKeys=2)
        store.publish("a", 1)
        store.publish("b", 1)
        store.publish("a", 2)
        store.publish("c", 1)
        self.assertEqual([k for k, _ in store.keys()], ["a", "c"])
        self.assertEqual(store.evicted, 1)

    def test_maxKeysForgetsWaitedKeys(self) -> None:
        """
        Past C{maxKeys} the least recently updated key goes even when somebody
        waits for it (so held polls cannot pin every key and keep new ones
        out), and its waiter still gets the key's next datum.
        """
        store = KeyStore(self.clock, maxKeys=2)
        store.publish("a", 1)
        store.publish("b", 1)
        waiting = store.next("a")
        store.publish("c", 1)
        self.assertEqual([k for k, _ in store.keys()], ["b", "c"])
        store.next("b")
        store.next("c")
        self.assertIsNotNone(store.publish("d", 1))
        self.assertEqual((store.evicted, store.refused), (2, 0))
        self.assertNoResult(waiting)
        datum = store.publish("a", 2)
        self.assertIs(self.successResultOf(waiting), datum)


class WaitTests(SynchronousTestCase):
    """
    Waiting for the next datum.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")

    def test_nextFires(self) -> None:
        """
        A waiter fires with the next datum of its key, and only its key.
        """
        d = self.store.next("a")
        self.store.publish("b", 1)
        self.assertNoResult(d)
        self.store.publish("a", 2)
        self.assertEqual(self.successResultOf(d).value, 2)
        self.assertEqual(self.store.listening, 0)

    def test_manyWaiters(self) -> None:
        """
        Every waiter of a key gets the same datum, once.
        """
        waiters = [self.store.next("a") for _ in range(3)]
        datum = self.store.publish("a", 1)
        self.assertEqual([self.successResultOf(d) for d in waiters], [datum] * 3)
        self.store.publish("a", 2)
        self.assertEqual(self.store.listening, 0)

    def test_cancelUnregisters(self) -> None:
        """
        Cancelling a waiter (a client that went away) removes it at once.
        """
        d = self.store.next("a")
        other = self.store.next("a")
        self.assertEqual(self.store.listening, 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.store.listening, 1)
        self.store.publish("a", 1)
        self.successResultOf(other)
        self.assertEqual(self.store.listening, 0)

    def test_wildcardWaiter(self) -> None:
        """
        A waiter on a pattern fires with the first datum of any key it
        matches.
        """
        star = self.store.next("test/*")
        rest = self.store.next("sensors/...")
        self.store.publish("test/a/b", 1)
        self.store.publish("sensors/a/b", 2)
        self.store.publish("test/tick", 3)
        self.assertEqual(self.successResultOf(rest).key, "sensors/a/b")
        self.assertEqual(self.successResultOf(star).key, "test/tick")

    def test_subscription(self) -> None:
        """
        A subscription gets every datum until it is cancelled.
        """
        got = []
        subscription = self.store.subscribe("a", got.append)
        self.store.publish("a", 1)
        self.store.publish("a", 2)
        subscription.cancel()
        subscription.cancel()
        self.store.publish("a", 3)
        self.assertEqual([d.value for d in got], [1, 2])
        self.assertEqual(self.store.listening, 0)

    def test_failingListener(self) -> None:
        """
        A listener that raises is logged, and the listeners after it still get
        the datum.
        """
        got = []

        def broken(datum: object) -> None:
            raise RuntimeError("broken")

        self.store.subscribe("a", broken)
        self.store.subscribe("a", got.append)
        d = self.store.next("a")
        datum = self.store.publish("a", 1)
        self.assertEqual(got, [datum])
        self.assertIs(self.successResultOf(d), datum)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_waiterSubclass(self) -> None:
        """
        A L{Waiter} subclass is told of the first matching datum once, after
        it stopped waiting; one the store stops (L{KeyStore.cancelWaiters}) is
        told so instead, and a cancelled one is told nothing.
        """
        from artcast.server.store import Waiter

        events = []

        class Recorder(Waiter):
            __slots__ = ()

            def arrived(self, datum: object) -> None:
                events.append((self.pattern, "arrived", self.store.listening))

            def stopped(self) -> None:
                events.append((self.pattern, "stopped", self.store.listening))

        for pattern in ("a/*", "b", "c"):
            Recorder(self.store, pattern).start()
        self.store.publish("a/x", 1)
        self.store.publish("a/y", 2)
        cancelled = Recorder(self.store, "d")
        cancelled.start()
        cancelled.cancel()
        self.assertEqual(self.store.cancelWaiters(), 2)
        self.assertEqual(
            sorted(events),
            [("a/*", "arrived", 2), ("b", "stopped", 1), ("c", "stopped", 0)],
        )

    def test_skipThrough(self) -> None:
        """
        A waiter told to skip through an id ignores datums of that source up to
        it (the client already has them from another server).
        """
        d = self.store.next("a", skipThrough=DatumId("src", 1000, 5))
        self.store.publish("a", "old", stamp(5))
        self.assertNoResult(d)
        self.store.publish("a", "new", stamp(6))
        self.assertEqual(self.successResultOf(d).value, "new")


class SinceTests(SynchronousTestCase):
    """
    Resuming from an id: L{KeyStore.since}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, history=4, instance="srv")

    def test_next(self) -> None:
        """
        The datum after a held id is answered at once, without a gap.
        """
        for n in range(1, 4):
            self.store.publish("a", n, stamp(n))
        found = self.store.since("a", "src.1000.1")
        self.assertEqual((found.datum.value, found.gap), (2, False))

    def test_latestWaits(self) -> None:
        """
        Since the latest id, there is nothing yet: wait, skipping through it.
        """
        self.store.publish("a", 1, stamp(1))
        found = self.store.since("a", "src.1000.1")
        self.assertIsNone(found.datum)
        self.assertFalse(found.gap)
        self.assertEqual(found.skipThrough, ("src", 1000, 1))

    def test_tooOld(self) -> None:
        """
        An id older than anything held gives the oldest datum held, with a gap.
        """
        for n in range(1, 11):
            self.store.publish("a", n, stamp(n))
        found = self.store.since("a", "src.1000.2")
        self.assertEqual((found.datum.value, found.gap), (7, True))

    def test_unknownId(self) -> None:
        """
        An id of a source that never sent this key gives the oldest datum
        held, with a gap.
        """
        self.store.publish("a", 1)
        self.store.publish("a", 2)
        found = self.store.since("a", "other.5.5")
        self.assertEqual((found.datum.value, found.gap), (1, True))

    def test_nothingHeld(self) -> None:
        """
        With nothing held, the client waits for the next datum and is told of a
        gap.
        """
        found = self.store.since("a", "other.5.5")
        self.assertEqual((found.datum, found.gap), (None, True))

    def test_newerThanHeld(self) -> None:
        """
        An id newer than what this server holds of the source (it came from a
        server that is ahead) waits, skipping through it.
        """
        self.store.publish("a", 1, stamp(1))
        found = self.store.since("a", "src.1000.3")
        self.assertEqual((found.datum, found.skipThrough), (None, ("src", 1000, 3)))

    def test_missingInTheMiddle(self) -> None:
        """
        An id this server never received, between two it holds, gives the next
        one without a gap: the client is in step.
        """
        self.store.publish("a", 1, stamp(1))
        self.store.publish("a", 3, stamp(3))
        found = self.store.since("a", "src.1000.2")
        self.assertEqual((found.datum.value, found.gap), (3, False))

    def test_contiguousAfterEviction(self) -> None:
        """
        An id just before the oldest held of its source is not a gap.
        """
        for n in range(1, 7):
            self.store.publish("a", n, stamp(n))
        found = self.store.since("a", "src.1000.2")
        self.assertEqual((found.datum.value, found.gap), (3, False))

    def test_restartedSource(self) -> None:
        """
        Ids of an earlier boot of the same source are older than a later boot.
        """
        self.store.publish("a", 1, stamp(9, boot=1000))
        self.store.publish("a", 2, stamp(1, boot=2000))
        found = self.store.since("a", "src.1000.9")
        self.assertEqual((found.datum.value, found.gap), (2, False))

    def test_wildcard(self) -> None:
        """
        Since an id on a pattern follows arrival order across the matching
        keys.
        """
        self.store.publish("t/a", 1, stamp(1))
        self.store.publish("x/b", 2, stamp(2))
        self.store.publish("t/b", 3, stamp(3))
        found = self.store.since("t/*", "src.1000.1")
        self.assertEqual(found.datum.key, "t/b")
        self.assertEqual(self.store.latest("t/*").value, 3)

    def test_badId(self) -> None:
        """
        Something that is not an id is refused with L{ValueError}.
        """
        self.assertRaises(ValueError, self.store.since, "a", "nonsense")


class ListenerTests(SynchronousTestCase):
    """
    The store's waiters and subscriptions are L{IListener}s.
    """

    def test_waiter(self) -> None:
        """
        A one-shot waiter provides L{IListener}.
        """
        waiter = DeferredWaiter(KeyStore(Clock()), "a/*")
        self.assertTrue(verifyObject(IListener, waiter))

    def test_subscription(self) -> None:
        """
        A subscription provides L{IListener}.
        """
        subscription = KeyStore(Clock()).subscribe("a", lambda datum: None)
        self.assertTrue(verifyObject(IListener, subscription))


class AfterFanOutTests(SynchronousTestCase):
    """
    L{KeyStore.afterFanOut}: what a listener asks to be done once every
    listener of the datum being published has it.
    """

    def setUp(self) -> None:
        self.store = KeyStore(Clock())
        self.events: list[str] = []

    def listener(self, name: str, later: Callable[[], object] | None = None) -> None:
        """
        Subscribe a listener to C{a} that records its datum and asks for
        C{later} (or the recording of C{name} done) after the fan-out.
        """

        def notified(datum: Any) -> None:
            self.events.append(f"{name} got {datum.value}")
            self.store.afterFanOut(later or self.events.append, f"{name} done")

        self.store.subscribe("a", notified)

    def test_afterEveryListener(self) -> None:
        """
        What the listeners ask for runs after the last of them has the datum,
        in the order asked, before C{publish} returns.
        """
        for name in ("one", "two", "three"):
            self.listener(name)
        self.store.publish("a", 1)
        self.assertEqual(self.events, [
            "one got 1", "two got 1", "three got 1", "one done", "two done", "three done",
        ])

    def test_outsideFanOut(self) -> None:
        """
        Outside a fan-out, the call is made at once.
        """
        self.store.afterFanOut(self.events.append, "now")
        self.assertEqual(self.events, ["now"])

    def test_failureIsolated(self) -> None:
        """
        A call that fails is logged, and the others are still made.
        """

        def failing(_: str) -> None:
            raise ZeroDivisionError()

        self.listener("one", failing)
        self.listener("two")
        self.store.publish("a", 1)
        self.assertEqual(self.events, ["one got 1", "two got 1", "two done"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_publishedWithin(self) -> None:
        """
        A datum published by a listener during a fan-out has its own
        listeners' calls made with the outer fan-out's, at its end.
        """
        self.listener("one")

        def forward(datum: Any) -> None:
            if datum.key == "a":
                self.store.publish("b", 2)

        self.store.subscribe("a", forward)
        self.store.subscribe(
            "b", lambda datum: self.store.afterFanOut(self.events.append, "b done")
        )
        self.store.publish("a", 1)
        self.assertEqual(self.events, ["one got 1", "one done", "b done"])
        self.store.publish("b", 3)
        self.assertEqual(self.events[-1], "b done")
        self.assertEqual(len(self.events), 4)

    def test_collectorPausedForLargeFanOut(self) -> None:
        """
        A fan-out to many listeners runs with the cyclic garbage collector
        paused, and turns it back on after; a small one leaves it alone.
        """
        self.addCleanup(gc.enable)
        seen: list[bool] = []
        for _ in range(_FAN_OUT_UNCOLLECTED + 1):
            self.store.subscribe("many", lambda datum: seen.append(gc.isenabled()))
        self.store.subscribe("few", lambda datum: seen.append(gc.isenabled()))
        self.store.publish("many", 1)
        self.assertEqual(set(seen), {False})
        self.assertTrue(gc.isenabled())
        del seen[:]
        self.store.publish("few", 1)
        self.assertEqual(seen, [True])
