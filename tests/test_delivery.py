"""
Delivery without loss, against real C{twistd artcast} processes: datum ids,
C{since=} resume from history, and ids shared by servers fed by one group.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from artcast.source import Source
from tests.harness import ArtcastProcess

#: How long one test may take, at most, in seconds.
LIMIT = 60.0


def loopbackSource(proc: ArtcastProcess) -> Source:
    """
    A version 2 source sending to C{proc}'s groups over loopback only.
    """
    source = Source(
        src="burst",
        groups=[(proc.group, proc.dataPort)],
        registerGroups=[(proc.group, proc.registerPort)],
        ttl=0,
        interface="127.0.0.1",
    )
    return source


class DeliveryTests(TestCase):
    """
    A client that resumes with C{since=} gets every datum, in order, once.
    """

    timeout = 120

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def poll(self, url: str, since: str | None) -> Any:
        """
        One long poll on a keep-alive connection; returns the id and the
        value.
        """
        query = "" if since is None else "?since=" + since
        response = yield treq.get(url + query, pool=self.pool)
        body = yield response.content()
        self.assertEqual(response.code, 200, body)
        returnValue((response.headers.getRawHeaders("Artcast-Id")[0], json.loads(body)))

    @inlineCallbacks
    def burst(self, proc: ArtcastProcess, count: int, plain: bool = False) -> Any:
        """
        Send C{count} datums at full speed while one client polls in a loop,
        with C{since=} unless C{plain}; return what the client got and what
        the server received.
        """
        source = loopbackSource(proc)
        self.addCleanup(source.close)
        url = proc.url + "/artcasts/burst"
        got: list[int] = []
        deadline = reactor.seconds() + LIMIT

        @inlineCallbacks
        def client() -> Any:
            since = None
            while len(got) < count and reactor.seconds() < deadline:
                datumId, value = yield self.poll(url, None if plain else since)
                got.append(value)
                since = datumId
                if value == count - 1:
                    break

        polling = client()
        yield proc.waitForWaiters(1)
        for n in range(count):
            source.send("burst", n)
        stats = yield proc.waitFor(lambda s: s["datums"] >= count, limit=20)
        if plain:
            # The server got everything; a plain poller gets the last datum
            # for sure only if it happens to be waiting: stop it by sending a
            # final marker once it is.
            yield proc.waitForWaiters(1)
            source.send("burst", count - 1)
        yield polling
        returnValue((got, stats))

    @inlineCallbacks
    def test_sinceLosesNothing(self) -> Any:
        """
        A client that polls in a loop with C{since=} receives every one of
        1,000 datums sent at full speed, in order, with no duplicate.
        """
        proc = yield ArtcastProcess(self, extra=["--history", "2000"]).start()
        got, stats = yield self.burst(proc, 1000)
        self.assertEqual(stats["datums"], 1000, stats)
        self.assertEqual(got, list(range(1000)))

    @inlineCallbacks
    def test_plainPollingLoses(self) -> Any:
        """
        Without C{since=}, the same client loses the datums that arrive
        between two of its polls: that is what C{since=} is for.
        """
        proc = yield ArtcastProcess(self, extra=["--history", "2000"]).start()
        got, stats = yield self.burst(proc, 1000, plain=True)
        self.assertEqual(stats["datums"], 1000, stats)
        self.assertLess(len(set(got)), 1000)
        self.assertEqual(got, sorted(got))


class SharedIdsTests(TestCase):
    """
    Servers fed by one group give each datum the same id, so a client can
    move between them.
    """

    timeout = 120

    @inlineCallbacks
    def collect(self, url: str, since: str | None, count: int) -> Any:
        got = []
        for _ in range(count):
            query = "?since=" + (since or "latest")
            response = yield treq.get(url + query, persistent=False)
            body = yield response.content()
            self.assertEqual(response.code, 200, body)
            self.assertIsNone(response.headers.getRawHeaders("Artcast-Gap"))
            since = response.headers.getRawHeaders("Artcast-Id")[0]
            got.append((since, json.loads(body)))
        returnValue(got)

    @inlineCallbacks
    def test_sameIdsAndMove(self) -> Any:
        """
        Two servers on one group give the same ids to the same datums, and a
        client moved from one to the other mid-stream misses nothing.
        """
        first = yield ArtcastProcess(self).start()
        second = yield ArtcastProcess(
            self,
            group=first.group,
            dataPort=first.dataPort,
            registerPort=first.registerPort,
        ).start()
        source = loopbackSource(first)
        self.addCleanup(source.close)
        url = "/artcasts/k"
        source.send("k", 0)
        for proc in (first, second):
            yield proc.waitFor(lambda s: s["datums"] >= 1)
        [(start, _)] = yield self.collect(first.url + url, None, 1)
        [(again, _)] = yield self.collect(second.url + url, None, 1)
        self.assertEqual(start, again)

        for n in range(1, 20):
            source.send("k", n)
        for proc in (first, second):
            yield proc.waitFor(lambda s: s["datums"] >= 20)
        fromFirst = yield self.collect(first.url + url, start, 19)
        fromSecond = yield self.collect(second.url + url, start, 19)
        self.assertEqual(fromFirst, fromSecond)
        self.assertEqual([value for _, value in fromFirst], list(range(1, 20)))

        # Move mid-stream: nine from the first server, the rest from the second.
        head = yield self.collect(first.url + url, start, 9)
        tail = yield self.collect(second.url + url, head[-1][0], 10)
        self.assertEqual([value for _, value in head + tail], list(range(1, 20)))
