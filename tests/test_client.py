"""
Tests for L{artcast.client}: the client against the real Klein resource
through treq's L{StubTreq}, with a L{Clock} for poll timeouts and backoff, and
once against the real C{twistd artcast} process across a server restart.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    fail,
    inlineCallbacks,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from artcast.client import (
    _options,
    ArtcastClient,
    ArtcastError,
    Datum,
    backoffDelay,
    parseRetryAfter,
    programName,
    run,
)
from artcast.server.store import KeyStore
from artcast.server.routes import ArtcastApp
from tests.harness import ArtcastProcess

BASE = "http://artcast.example"


class Network:
    """
    An C{httpClient} standing between the client and a L{StubTreq}: it records
    every request, can refuse or lose some, and can hold requests (as a slow
    network would) so that a test can publish while a poll is on its way.

    @ivar requests: C{(url, params)} of every request, in order.
    @ivar refuse: how many of the next requests fail with connection refused.
    @ivar hang: how many of the next requests are never answered.
    @ivar cancelled: the URLs of the unanswered requests the client cancelled.
    @ivar holding: whether new requests are held until L{release}.
    """

    def __init__(self, stub: StubTreq) -> None:
        self.stub = stub
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.headers: list[Any] = []
        self.refuse = 0
        self.hang = 0
        self.holding = False
        self.held: list[tuple[Deferred[Any], str, dict[str, Any]]] = []
        self.cancelled: list[str] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.requests.append((url, dict(kwargs.get("params") or {})))
        self.headers.append(kwargs.get("headers"))
        if self.refuse:
            self.refuse -= 1
            return fail(ConnectionRefusedError())
        if self.hang:
            self.hang -= 1
            return Deferred(lambda d: self.cancelled.append(url))
        if self.holding:
            held: Deferred[Any] = Deferred()
            self.held.append((held, url, kwargs))
            return held
        return self.stub.get(url, **kwargs)

    def release(self) -> None:
        """
        Let the held requests reach the server.
        """
        held, self.held = self.held, []
        self.holding = False
        for d, url, kwargs in held:
            self.stub.get(url, **kwargs).chainDeferred(d)
        self.stub.flush()

    @property
    def since(self) -> list[str | None]:
        """
        The C{since} of every request, in order.
        """
        return [params.get("since") for url, params in self.requests]


class Failing(Resource):
    """
    A resource that answers the next requests with the given error statuses
    (and headers), and then passes requests on to the real resource.
    """

    isLeaf = True

    def __init__(self, real: Resource) -> None:
        super().__init__()
        self.real = real
        self.errors: list[tuple[int, dict[bytes, bytes]]] = []

    def render(self, request: Any) -> Any:
        if self.errors:
            code, headers = self.errors.pop(0)
            request.setResponseCode(code)
            for name, value in headers.items():
                request.setHeader(name, value)
            return b"Trouble.\n"
        return self.real.render(request)


class ClientMixin:
    """
    A real L{ArtcastApp} over a L{KeyStore}, served through L{StubTreq} and a
    L{Network}, and an L{ArtcastClient} of it, all on one L{Clock}.
    """

    maxHistory = 100
    randomValue = 1.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv", history=self.maxHistory)
        self.app = ArtcastApp(self.store, self.clock)
        self.resource = Failing(self.app.resource())
        self.stub = StubTreq(self.resource)
        self.network = Network(self.stub)
        self.client = ArtcastClient(
            BASE,
            self.clock,
            httpClient=self.network,
            pollTimeout=30.0,
            grace=10.0,
            random=lambda: self.randomValue,
        )

    def flush(self) -> None:
        self.stub.flush()

    def publish(self, key: str, value: Any) -> str:
        datum = self.store.publish(key, value)
        assert datum is not None
        self.flush()
        return datum.id

    def delays(self) -> list[float]:
        """
        When the pending timed calls (backoff sleeps) are due, from now.
        """
        now = self.clock.seconds()
        return sorted(call.getTime() - now for call in self.clock.getDelayedCalls())


async def take(iterator: Any, count: int) -> list[Datum]:
    """
    Take C{count} datums from an async iterator with C{async for}.
    """
    taken: list[Datum] = []
    async for datum in iterator:
        taken.append(datum)
        if len(taken) == count:
            break
    return taken


class NextTests(ClientMixin, SynchronousTestCase):
    """
    L{ArtcastClient.next} and L{ArtcastClient.latest}.
    """

    def test_next(self) -> None:
        """
        C{next} waits for the next datum of the key and gives its key, id and
        JSON value.
        """
        d = self.client.next("weather/oslo/temp")
        self.flush()
        self.assertNoResult(d)
        datumId = self.publish("weather/oslo/temp", {"c": 21.5})
        self.assertEqual(
            self.successResultOf(d),
            Datum("weather/oslo/temp", datumId, {"c": 21.5}, gap=False),
        )

    def test_asksForJSON(self) -> None:
        """
        Each request asks for C{application/json} and for the poll timeout.
        """
        self.client.next("a")
        url, params = self.network.requests[0]
        self.assertEqual(url, BASE + "/artcasts/a")
        self.assertEqual(params, {"timeout": "30"})
        self.assertEqual(self.network.headers[0], {b"Accept": [b"application/json"]})

    def test_nextSince(self) -> None:
        """
        C{next} with C{since} gives the datum after that id at once.
        """
        first = self.publish("k", 1)
        second = self.publish("k", 2)
        self.publish("k", 3)
        datum = self.successResultOf(self.client.next("k", since=first))
        self.assertEqual((datum.id, datum.value), (second, 2))

    def test_latest(self) -> None:
        """
        C{latest} gives the latest datum at once.
        """
        self.publish("k", 1)
        last = self.publish("k", "two")
        datum = self.successResultOf(self.client.latest("k"))
        self.assertEqual((datum.id, datum.value), (last, "two"))

    def test_latestWaitsWhenThereIsNone(self) -> None:
        """
        C{latest} of a key with no datum waits for the first one, across poll
        timeouts.
        """
        d = self.client.latest("k")
        self.flush()
        self.clock.advance(30)
        self.flush()
        self.assertNoResult(d)
        self.assertEqual(self.network.since, ["latest", "latest"])
        datumId = self.publish("k", 5)
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_rePollsOn204(self) -> None:
        """
        When the server's poll timeout passes with no datum (C{204}), C{next}
        asks again, and gets the datum that comes later.
        """
        d = self.client.next("k")
        self.flush()
        for _ in range(3):
            self.clock.advance(30)
            self.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.network.requests), 4)
        self.assertEqual(self.store.listening, 1)
        datumId = self.publish("k", "late")
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_rePollAsksAfterTheLatestOf204(self) -> None:
        """
        After a C{204} naming the latest datum, the next poll asks for what
        follows it, so a datum published between the two polls is not missed.
        """
        old = self.publish("k", 0)
        d = self.client.next("k")
        self.flush()
        self.network.holding = True
        self.clock.advance(30)
        self.flush()
        self.assertEqual(self.network.since, [None, old])
        between = self.publish("k", 1)
        self.network.release()
        self.assertEqual(self.successResultOf(d).id, between)

    def test_rePollAfter204WithoutIdMissesNothing(self) -> None:
        """
        After a C{204} for a key that never had a datum, datums published
        before the next poll arrives are all given, the first one first, and
        not flagged as a gap.
        """
        follower = self.client.follow("k")
        d = Deferred.fromCoroutine(take(follower, 3))
        self.flush()
        self.network.holding = True
        self.clock.advance(30)
        self.flush()
        ids = [self.publish("k", n) for n in range(3)]
        self.network.release()
        datums = self.successResultOf(d)
        self.assertEqual([datum.id for datum in datums], ids)
        self.assertEqual([datum.gap for datum in datums], [False] * 3)

    def test_badKey(self) -> None:
        """
        A key the server refuses fails with an L{ArtcastError} carrying the
        status and the server's explanation, after one request.
        """
        d = self.client.next("a//b")
        self.flush()
        error = self.failureResultOf(d, ArtcastError).value
        self.assertEqual(error.status, 400)
        self.assertIn(b"empty", error.body)
        self.assertIn("400", str(error))
        self.assertIn("empty", str(error))
        self.assertFalse(error.retryable)
        self.assertEqual(len(self.network.requests), 1)

    def test_badSince(self) -> None:
        """
        A C{since} that is not an id fails with a C{400} L{ArtcastError}.
        """
        d = self.client.next("k", since="nonsense")
        self.flush()
        self.assertEqual(self.failureResultOf(d, ArtcastError).value.status, 400)

    def test_serverErrorIsNotRetriedByNext(self) -> None:
        """
        C{next} reports a server error instead of retrying (C{follow} is the
        one that rides errors out).
        """
        self.resource.errors.append((503, {}))
        d = self.client.next("k")
        self.flush()
        error = self.failureResultOf(d, ArtcastError).value
        self.assertEqual(error.status, 503)
        self.assertTrue(error.retryable)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notAnArtcastAnswer(self) -> None:
        """
        A C{200} without C{Artcast-Id} fails with an L{ArtcastError} that says
        so.
        """
        self.resource.errors.append((200, {b"Content-Type": b"text/plain"}))
        d = self.client.next("k")
        self.flush()
        error = self.failureResultOf(d, ArtcastError).value
        self.assertIn("Artcast-Id", str(error))

    def test_timeout(self) -> None:
        """
        A request not answered by the poll timeout plus the grace fails with
        L{TimeoutError}, and the request is cancelled.
        """
        self.network.hang = 1
        d = self.client.next("k")
        self.clock.advance(39.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(self.network.cancelled, [BASE + "/artcasts/k"])

    def test_cancel(self) -> None:
        """
        Cancelling C{next} abandons the request: the server stops waiting.
        """
        d = self.client.next("k")
        self.flush()
        self.assertEqual(self.store.listening, 1)
        d.cancel()
        self.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wildcardAndKeyEncoding(self) -> None:
        """
        A wildcard pattern gets datums of any matching key, and the datum names
        the key that matched, non-ASCII characters and all.
        """
        d = self.client.next("sensors/...")
        self.flush()
        self.assertEqual(self.network.requests[0][0], BASE + "/artcasts/sensors/...")
        self.publish("sensors/tromsø/temp", -3)
        self.assertEqual(self.successResultOf(d).key, "sensors/tromsø/temp")

    def test_keyURL(self) -> None:
        """
        Keys are percent-encoded into the URL, keeping C{/} and the base URL's
        path.
        """
        client = ArtcastClient(
            "https://example.com/live/", MemoryReactorClock(), httpClient=self.network
        )
        self.assertEqual(
            client.keyURL("a b/ø?#"),
            "https://example.com/live/artcasts/a%20b/%C3%B8%3F%23",
        )

    def test_noPollTimeout(self) -> None:
        """
        With C{pollTimeout=None} the server is asked to hold the request until
        a datum comes, and the client sets no timeout of its own.
        """
        client = ArtcastClient(BASE, self.clock, httpClient=self.network, pollTimeout=None)
        d = client.next("k")
        self.flush()
        self.assertEqual(self.network.requests[0][1], {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        datumId = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, datumId)


class FollowTests(ClientMixin, SynchronousTestCase):
    """
    L{ArtcastClient.follow}: every datum, in order, through anything.
    """

    def settle(self) -> None:
        """
        Let held requests through and pump the connections until the client
        has nothing more to ask (a bounded number of rounds).
        """
        for _ in range(1000):
            before = len(self.network.requests)
            self.network.release()
            self.flush()
            if len(self.network.requests) == before and not self.network.held:
                return
        self.fail("the client kept asking")

    def test_everyDatumOfBursts(self) -> None:
        """
        C{follow} yields every one of many datums published in bursts, while
        its poll is held by the server, while the next poll is on its way, and
        around poll timeouts, in order and none twice.
        """
        sizes = [1, 7, 0, 3, 25, 2, 1, 11, 4]
        follower = self.client.follow("k")
        d = Deferred.fromCoroutine(take(follower, sum(sizes) + 3))
        self.settle()
        published: list[str] = []
        for round, size in enumerate(sizes):
            mode = round % 3
            if mode == 1:
                # One datum answers the open poll; the next poll is held on
                # its way while the burst is published.
                self.network.holding = True
                published.append(self.store.publish("k", [round, "lead"]).id)
                self.flush()
                self.assertEqual(len(self.network.held), 1)
            elif mode == 2:
                # The server's poll timeout passes and the re-poll is on its
                # way while the burst is published.
                self.network.holding = True
                self.clock.advance(30)
                self.flush()
            published += [self.store.publish("k", [round, n]).id for n in range(size)]
            self.settle()
        datums = self.successResultOf(d)
        self.assertEqual(len(published), sum(sizes) + 3)
        self.assertEqual([datum.id for datum in datums], published)
        self.assertFalse(any(datum.gap for datum in datums))
        self.assertEqual(follower.lastId, published[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_asyncFor(self) -> None:
        """
        A follower is an async iterator: C{async for} in a coroutine run by
        L{Deferred.fromCoroutine} gets the datums.
        """
        d = Deferred.fromCoroutine(take(self.client.follow("k"), 3))
        self.flush()
        values = ["a", {"b": [1, None]}, 3.5]
        for value in values:
            self.publish("k", value)
        self.assertEqual([datum.value for datum in self.successResultOf(d)], values)

    def test_resumeSince(self) -> None:
        """
        C{follow} with C{since} starts with the datum after that id.
        """
        ids = [self.publish("k", n) for n in range(5)]
        d = Deferred.fromCoroutine(take(self.client.follow("k", since=ids[1]), 3))
        self.assertEqual([datum.id for datum in self.successResultOf(d)], ids[2:])

    def test_sinceLatest(self) -> None:
        """
        C{follow} with C{since="latest"} starts with the latest datum.
        """
        ids = [self.publish("k", n) for n in range(3)]
        d = Deferred.fromCoroutine(take(self.client.follow("k", since="latest"), 2))
        self.flush()
        later = self.publish("k", 3)
        self.assertEqual([datum.id for datum in self.successResultOf(d)], [ids[-1], later])

    def test_gap(self) -> None:
        """
        When the server no longer holds what follows the last id, the first
        datum it still holds comes marked as a gap, and the rest unmarked.
        """
        self.store.history = 3
        ids = [self.publish("k", n) for n in range(10)]
        d = Deferred.fromCoroutine(take(self.client.follow("k", since=ids[0]), 3))
        datums = self.successResultOf(d)
        self.assertEqual([datum.id for datum in datums], ids[7:])
        self.assertEqual([datum.gap for datum in datums], [True, False, False])

    def test_unknownIdWaitsAndMarksGap(self) -> None:
        """
        Resuming after an id the server never saw (a restarted server) waits
        for the next datum and marks it as a gap.
        """
        d = self.client.follow("k", since="elsewhere.1.7").next()
        self.flush()
        self.assertNoResult(d)
        self.publish("k", 1)
        self.assertTrue(self.successResultOf(d).gap)

    def test_204ThenNextAfterLatest(self) -> None:
        """
        A follower that saw no datum adopts the latest id a C{204} names, and
        keeps a poll open across many poll timeouts.
        """
        old = self.publish("k", 0)
        d = self.client.follow("k").next()
        self.flush()
        for _ in range(3):
            self.clock.advance(30)
            self.flush()
        self.assertEqual(self.network.since, [None, old, old, old])
        datumId = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_connectionRefusedBacksOff(self) -> None:
        """
        Refused connections are retried after waits that double each time up
        to C{maxDelay}, and then the datum comes.
        """
        self.network.refuse = 6
        d = self.client.follow("k", maxDelay=4.0, initialDelay=0.5).next()
        waits = []
        for _ in range(6):
            [wait] = self.delays()
            waits.append(wait)
            self.clock.advance(wait)
        self.flush()
        self.assertEqual(waits, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual(len(self.network.requests), 7)
        datumId = self.publish("k", "back")
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_backoffIsJittered(self) -> None:
        """
        Each wait is the random function's value times the backoff bound
        (full jitter).
        """
        draws = iter([0.5, 0.25, 0.375, 0.75])
        self.client.random = lambda: next(draws)
        self.network.refuse = 4
        self.client.follow("k", maxDelay=30.0, initialDelay=1.0).next()
        waits = []
        for _ in range(4):
            [wait] = self.delays()
            waits.append(wait)
            self.clock.advance(wait)
        self.assertEqual(waits, [0.5 * 1, 0.25 * 2, 0.375 * 4, 0.75 * 8])

    def test_backoffResetsAfterSuccess(self) -> None:
        """
        After an answer, the next failure waits the first, shortest bound
        again.
        """
        follower = self.client.follow("k", initialDelay=0.5)
        self.network.refuse = 3
        d = follower.next()
        for _ in range(3):
            self.clock.advance(self.delays()[0])
        self.flush()
        self.publish("k", 1)
        self.successResultOf(d)
        self.assertEqual(follower.failures, 0)
        self.network.refuse = 1
        follower.next()
        self.assertEqual(self.delays(), [0.5])

    def test_serverErrorsRetried(self) -> None:
        """
        C{5xx} answers are ridden out with backoff, without skipping the datum
        after the last one given.
        """
        first = self.publish("k", 1)
        second = self.publish("k", 2)
        follower = self.client.follow("k", since=first)
        self.resource.errors += [(500, {}), (502, {}), (503, {})]
        d = follower.next()
        self.flush()
        for expected in [0.5, 1.0, 2.0]:
            self.assertEqual(self.delays(), [expected])
            self.clock.advance(expected)
            self.flush()
        self.assertEqual(self.successResultOf(d).id, second)
        self.assertEqual(self.network.since, [first] * 4)

    def test_retryAfterRespected(self) -> None:
        """
        A C{429} or C{503} with C{Retry-After} is retried after exactly that
        many seconds.
        """
        self.resource.errors += [
            (429, {b"Retry-After": b"7"}),
            (503, {b"Retry-After": b"120"}),
        ]
        d = self.client.follow("k", maxDelay=1.0).next()
        self.flush()
        self.assertEqual(self.delays(), [7.0])
        self.clock.advance(7)
        self.flush()
        self.assertEqual(self.delays(), [120.0])
        self.clock.advance(119.9)
        self.assertEqual(len(self.network.requests), 2)
        self.clock.advance(0.1)
        self.flush()
        self.assertEqual(len(self.network.requests), 3)
        datumId = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_clientErrorEndsIteration(self) -> None:
        """
        A C{4xx} (here a bad key) ends the iteration with L{ArtcastError} at
        once: no retry is made or scheduled.
        """
        d = Deferred.fromCoroutine(take(self.client.follow("a//b"), 1))
        self.flush()
        self.assertEqual(self.failureResultOf(d, ArtcastError).value.status, 400)
        self.assertEqual(len(self.network.requests), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_404NotRetried(self) -> None:
        """
        A C{404} with C{Retry-After} is still not retried: only C{408},
        C{429} and C{5xx} are.
        """
        self.resource.errors.append((404, {b"Retry-After": b"1"}))
        d = self.client.follow("k").next()
        self.flush()
        self.assertEqual(self.failureResultOf(d, ArtcastError).value.status, 404)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostRequestRetried(self) -> None:
        """
        A poll that gets no answer at all is given up after the poll timeout
        plus the grace and asked again after a backoff.
        """
        self.network.hang = 1
        d = self.client.follow("k", since=None).next()
        self.clock.advance(40)
        self.assertEqual(self.network.cancelled, [BASE + "/artcasts/k"])
        self.assertEqual(self.delays(), [0.5])
        self.clock.advance(0.5)
        self.flush()
        self.assertEqual(len(self.network.requests), 2)
        datumId = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_cancelWhilePolling(self) -> None:
        """
        Cancelling a step abandons its request (the server stops waiting), is
        not taken for a failure to retry, and the follower can go on.
        """
        follower = self.client.follow("k")
        d = follower.next()
        self.flush()
        d.cancel()
        self.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d = follower.next()
        self.flush()
        datumId = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, datumId)

    def test_oneStepAtATime(self) -> None:
        """
        Asking for the next datum while a step is still waiting raises
        L{RuntimeError}; once it fired, the next step may be taken.
        """
        follower = self.client.follow("k")
        d = follower.next()
        self.flush()
        self.assertRaises(RuntimeError, follower.next)
        first = self.publish("k", 1)
        self.assertEqual(self.successResultOf(d).id, first)
        second = self.publish("k", 2)
        self.assertEqual(self.successResultOf(follower.next()).id, second)
        self.assertEqual(len(self.network.requests), 2)

    def test_cancelWhileWaiting(self) -> None:
        """
        Cancelling a step during a backoff wait ends the wait and schedules
        nothing more.
        """
        self.network.refuse = 1
        d = self.client.follow("k").next()
        self.assertEqual(len(self.delays()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.network.requests), 1)


class ArtcastsTests(ClientMixin, SynchronousTestCase):
    """
    L{ArtcastClient.artcasts}.
    """

    def test_list(self) -> None:
        """
        C{artcasts} gives the server's list: registered metadata and keys seen
        only in data.
        """
        self.store.register("b", {"description": "Bee"})
        self.publish("a", 1)
        d = self.client.artcasts()
        self.flush()
        self.assertEqual(
            self.successResultOf(d), [{"key": "a"}, {"key": "b", "description": "Bee"}]
        )
        self.assertEqual(self.network.requests[0][0], BASE + "/artcasts")

    def test_error(self) -> None:
        """
        An error status fails with L{ArtcastError}.
        """
        self.resource.errors.append((500, {}))
        d = self.client.artcasts()
        self.flush()
        self.assertEqual(self.failureResultOf(d, ArtcastError).value.status, 500)


class HelperTests(SynchronousTestCase):
    """
    The pure functions and small pieces.
    """

    def test_backoffDelay(self) -> None:
        """
        The bound doubles with each failure from C{initialDelay} and stops at
        C{maxDelay}; the delay is the random draw times the bound.
        """
        bounds = [backoffDelay(n, 0.25, 3.0, lambda: 1.0) for n in range(1, 7)]
        self.assertEqual(bounds, [0.25, 0.5, 1.0, 2.0, 3.0, 3.0])
        self.assertEqual(backoffDelay(3, 1.0, 30.0, lambda: 0.1), 0.4)
        self.assertEqual(backoffDelay(10_000, 1.0, 30.0, lambda: 0.5), 15.0)

    def test_parseRetryAfter(self) -> None:
        """
        C{Retry-After} is read as seconds or as an HTTP date; anything else is
        ignored.
        """
        self.assertEqual(parseRetryAfter(b"120", 0.0), 120.0)
        self.assertEqual(
            parseRetryAfter(b"Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0), 10.0
        )
        self.assertEqual(parseRetryAfter(b"Wed, 21 Oct 2015 07:28:00 GMT", 2e9), 0.0)
        self.assertIsNone(parseRetryAfter(b"soon", 0.0))
        self.assertIsNone(parseRetryAfter(b"-5", 0.0))
        self.assertIsNone(parseRetryAfter(None, 0.0))

    def test_retryable(self) -> None:
        """
        Server errors, C{408} and C{429} are worth retrying; other client
        errors are not.
        """
        retryable = {
            code: ArtcastError(code, b"", "u").retryable
            for code in (400, 403, 404, 406, 408, 429, 500, 503)
        }
        self.assertEqual(
            retryable,
            {400: False, 403: False, 404: False, 406: False,
             408: True, 429: True, 500: True, 503: True},
        )

    def test_agentOrHTTPClient(self) -> None:
        """
        Passing both an agent and an HTTP client is refused.
        """
        self.assertRaises(
            ValueError, ArtcastClient, BASE, Clock(), agent=object(), httpClient=object()
        )

    def test_ownPoolClosed(self) -> None:
        """
        A client that made its own agent closes its connection pool on
        C{close}.
        """
        client = ArtcastClient(BASE, MemoryReactorClock())
        self.assertIsNotNone(client._pool)
        self.successResultOf(client.close())


class CommandLineTests(ClientMixin, SynchronousTestCase):
    """
    C{python -m artcast.client}.
    """

    def runCommand(self, argv: list[str]) -> tuple[Deferred[None], io.StringIO]:
        out = io.StringIO()
        d = Deferred.fromCoroutine(run(self.clock, argv, out, client=self.client))
        self.flush()
        return d, out

    def test_follow(self) -> None:
        """
        With a key, it prints each datum as a line of JSON, marking gaps, and
        stops after C{--count}.
        """
        self.store.history = 2
        ids = [self.publish("k", n) for n in range(4)]
        d, out = self.runCommand([BASE, "k", "--since", ids[0], "--count", "3"])
        self.assertNoResult(d)
        last = self.publish("k", "ø")
        self.successResultOf(d)
        self.assertEqual(
            [json.loads(line) for line in out.getvalue().splitlines()],
            [
                {"key": "k", "id": ids[2], "value": 2, "gap": True},
                {"key": "k", "id": ids[3], "value": 3},
                {"key": "k", "id": last, "value": "ø"},
            ],
        )

    def test_usageNamesTheCommand(self) -> None:
        """
        Run as the installed C{artcast-follow}, its usage line names
        C{artcast-follow}; run otherwise, C{python -m artcast.client}.
        """
        for argv0, expected in [
            ("/venv/bin/artcast-follow", "artcast-follow"),
            ("/checkout/artcast/client.py", "python -m artcast.client"),
        ]:
            self.patch(sys, "argv", [argv0])
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertRaises(SystemExit, _options, [])
            self.assertTrue(err.getvalue().startswith("usage: %s [-h]" % (expected,)), err.getvalue())
            self.assertIn("\n%s: error: " % (expected,), err.getvalue())

    def test_list(self) -> None:
        """
        Without a key, it prints the list of artcasts, one JSON object a line.
        """
        self.store.register("k", {"description": "Kay"})
        d, out = self.runCommand([BASE])
        self.successResultOf(d)
        self.assertEqual(out.getvalue(), '{"key": "k", "description": "Kay"}\n')

    def test_programName(self) -> None:
        """
        The usage line names C{artcast-follow} when run as the installed command, and C{python -m
        artcast.client} when run as a module.
        """
        self.assertEqual(programName("/venv/bin/artcast-follow"), "artcast-follow")
        self.assertEqual(programName("artcast-follow-script.py"), "artcast-follow")
        self.assertEqual(programName("/src/artcast/client.py"), "python -m artcast.client")
        self.assertEqual(programName(""), "python -m artcast.client")


class RestartTests(TestCase):
    """
    The client against the real C{twistd artcast} process.
    """

    timeout = 90

    @inlineCallbacks
    def test_followSurvivesRestart(self) -> Any:
        """
        A follower rides out its server being stopped and a new one started on
        the same ports: it waits (as the old server's C{503} and
        C{Retry-After} asks, or with backoff while nothing listens) and
        reconnects, the first datum of the new server comes marked as a gap
        (the new server does not know the old ids), and every datum after it
        comes in order.
        """
        warnings: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "artcast.client":
                warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        first = ArtcastProcess(self)
        yield first.start()
        client = ArtcastClient(first.url, reactor, pollTimeout=5.0, grace=5.0)
        self.addCleanup(client.close)
        follower = client.follow("test/restart", maxDelay=0.5, initialDelay=0.1)
        got: list[Datum] = []

        def collect(count: int) -> Deferred[list[Datum]]:
            return Deferred.fromCoroutine(take(follower, count))

        d = collect(1)
        yield first.waitForWaiters(1)
        first.data.sendDatum("test/restart", 1)
        got += yield d
        # Sent while no request is open: the server's history holds them.
        for value in (2, 3):
            first.data.sendDatum("test/restart", value)
        got += yield collect(2)

        d = collect(3)
        yield first.waitForWaiters(1)
        yield first.stop()
        self.assertNoResult(d)
        second = ArtcastProcess(
            self,
            group=first.group,
            dataPort=first.dataPort,
            registerPort=first.registerPort,
            httpPort=first.httpPort,
        )
        yield second.start()
        yield second.waitForWaiters(1)
        second.data.sendDatum("test/restart", 4)
        second.data.sendDatum("test/restart", 5)
        second.data.sendDatum("test/restart", 6)
        got += yield d

        self.assertEqual([datum.value for datum in got], [1, 2, 3, 4, 5, 6])
        self.assertEqual(
            [datum.gap for datum in got], [False, False, False, True, False, False]
        )
        self.assertEqual(len({datum.id for datum in got}), 6)
        # It failed, waited and tried again, and said so.
        self.assertNotEqual(warnings, [])
        self.assertEqual(follower.failures, 0)
