# -*- test-case-name: tests.test_lost -*-
"""
Tests that nothing is lost silently (issue 11): datums a server declared
unrecoverable (L{Datum.lost}) are made visible to clients, as C{Artcast-Gap:
1} on a resuming long poll and as a gap marker in a stream.

The store is driven directly, the long polls through L{StubTreq} (Klein's
path) and through a real L{HTTPChannel} (the prebuilt answers), the streams
through a real channel over a L{StringTransport}, the client through
L{StubTreq}; a seeded model of loss checks every answer against what was
really declared lost.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from artcast.client import ArtcastClient
from artcast.server.outlets import pages
from artcast.server.outlets.streams import NDJSON
from artcast.server.routes import ArtcastApp
from artcast.server.store import Datum, KeyStore
from artcast.wire import Stamp
from tests.test_streams import UPGRADE, Connection, frames, messages


def stamp(seq: int, source: str = "src", boot: int = 7) -> Stamp:
    return Stamp(source, boot, seq, 1.0)


class Source:
    """
    A version 2 source as a server sees it after its repair engine: each
    datum published with the count of the source's datums declared
    unrecoverable before it (C{lost}).
    """

    def __init__(self, store: KeyStore, name: str = "src", boot: int = 7) -> None:
        self.store = store
        self.name = name
        self.boot = boot
        self.seq = 0
        self.lost = 0

    def send(self, key: str, value: Any) -> Datum:
        """
        The next datum arrives.
        """
        self.seq += 1
        datum = self.store.publish(key, value, stamp(self.seq, self.name, self.boot), self.lost)
        assert datum is not None
        return datum

    def lose(self, count: int = 1) -> None:
        """
        The next C{count} datums are declared unrecoverable.
        """
        self.seq += count
        self.lost += count

    def reboot(self) -> None:
        self.boot += 1
        self.seq = 0
        self.lost = 0


class StoreTests(SynchronousTestCase):
    """
    L{KeyStore.publish} with C{lost}, and L{KeyStore.since} across a loss.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.source = Source(self.store)

    def test_lostKept(self) -> None:
        """
        A datum keeps the C{lost} it was published with; without it, 0.
        """
        self.assertEqual(self.source.send("k", 1).lost, 0)
        self.source.lose(2)
        self.assertEqual(self.source.send("k", 2).lost, 2)

    def test_versionOneAndHTTPNeverLost(self) -> None:
        """
        A datum without a stamp (version 1, HTTP) has C{lost} 0, whatever is
        passed, and resuming across such datums never says gap.
        """
        first = self.store.publish("k", 1)
        self.assertEqual(self.store.publish("k", 2, None, 5).lost, 0)
        found = self.store.since("k", first.id)
        self.assertEqual((found.datum.value, found.gap), (2, False))

    def test_sinceAcrossLoss(self) -> None:
        """
        Resuming from a held id, the answer says gap when its C{lost} differs
        from that of the client's datum, and not otherwise.
        """
        first = self.source.send("k", 1)
        second = self.source.send("k", 2)
        self.source.lose()
        fourth = self.source.send("k", 4)
        found = self.store.since("k", first.id)
        self.assertEqual((found.datum, found.gap), (second, False))
        found = self.store.since("k", second.id)
        self.assertEqual((found.datum, found.gap), (fourth, True))
        found = self.store.since("k", fourth.id)
        self.assertEqual((found.datum, found.gap), (None, False))

    def test_lossInAnotherKey(self) -> None:
        """
        A datum declared unrecoverable may have been of another key: a client
        of one key is told it may have missed it all the same.
        """
        first = self.source.send("x", 1)
        self.source.send("y", 2)
        self.source.lose()
        self.source.send("y", 4)
        fifth = self.source.send("x", 5)
        found = self.store.since("x", first.id)
        self.assertEqual((found.datum, found.gap), (fifth, True))

    def test_notAcrossSources(self) -> None:
        """
        A datum of another source than the client's is compared with that
        source's datum before it, not with the client's: a loss of one
        source says nothing about another.
        """
        other = Source(self.store, "other")
        other.lose(3)
        mine = self.source.send("k", 1)
        theirs = other.send("k", 2)
        found = self.store.since("k", mine.id)
        self.assertEqual((found.datum, found.gap), (theirs, False))

    def test_patternComparesWithTheSourcesOwn(self) -> None:
        """
        On a pattern, resuming from another source's id, the answer says gap
        when the latest datum of its own source before it has another C{lost}.
        """
        other = Source(self.store, "other")
        self.source.send("a/x", 1)
        self.source.lose()
        theirs = other.send("a/y", 2)
        after = self.source.send("a/x", 4)
        found = self.store.since("a/...", theirs.id)
        self.assertEqual((found.datum, found.gap), (after, True))
        found = self.store.since("a/y", theirs.id)
        self.assertEqual((found.datum, found.gap), (None, False))

    def test_notAcrossBoots(self) -> None:
        """
        A source that restarts starts counting again: its first datums are
        not compared with those of its earlier boot.
        """
        self.source.lose(2)
        before = self.source.send("k", 3)
        self.source.reboot()
        first = self.source.send("k", 1)
        second = self.source.send("k", 2)
        found = self.store.since("k", before.id)
        self.assertEqual((found.datum, found.gap), (first, False))
        found = self.store.since("k", first.id)
        self.assertEqual((found.datum, found.gap), (second, False))

    def test_idNotHeld(self) -> None:
        """
        For an id this server does not hold, the answer is compared with the
        source's datum just before it.
        """
        first = self.source.send("k", 1)
        self.source.lose(2)
        fourth = self.source.send("k", 4)
        self.assertEqual(first.seq, 1)
        found = self.store.since("k", "src.7.2")
        self.assertEqual((found.datum, found.gap), (fourth, True))

    def test_verySuccessorNeverGap(self) -> None:
        """
        The datum right after the client's id follows nothing missed, even
        when this server declared the client's own datum unrecoverable.
        """
        self.source.send("k", 1)
        self.source.lose()
        third = self.source.send("k", 3)
        found = self.store.since("k", "src.7.2")
        self.assertEqual((found.datum, found.gap), (third, False))

    def test_lossBefore(self) -> None:
        """
        L{KeyStore.lossBefore} names the datum before a loss, and nothing for
        a datum with C{lost} 0 or with the same C{lost} as the one before.
        """
        first = self.source.send("k", 1)
        self.assertIsNone(self.store.lossBefore("k", first))
        second = self.source.send("k", 2)
        self.source.lose()
        fourth = self.source.send("k", 4)
        fifth = self.source.send("k", 5)
        self.assertIsNone(self.store.lossBefore("k", second))
        self.assertIs(self.store.lossBefore("k", fourth), second)
        self.assertIs(self.store.lossBefore("k", fourth), second)
        self.assertIsNone(self.store.lossBefore("k", fifth))
        self.assertIs(self.store.previous("k", fifth), fourth)
        self.assertIsNone(self.store.previous("k", first))

    def test_historyGapStill(self) -> None:
        """
        An id older than anything held is still answered with the oldest
        datum and a gap.
        """
        store = KeyStore(self.clock, history=2, instance="srv")
        source = Source(store)
        for n in range(5):
            source.send("k", n)
        found = store.since("k", "src.7.1")
        self.assertEqual((found.datum.seq, found.gap), (4, True))


def model(seed: int, count: int = 300) -> tuple[KeyStore, list[Datum], dict[str, set[int]]]:
    """
    A seeded run of two sources over three keys, some of their datums
    declared unrecoverable (in runs of 1 to 3) and one restart, all held.

    @return: the store, the datums in arrival order, and each source's
        declared seqs as C{"source.boot"} -> seqs.
    """
    rng = random.Random(seed)
    store = KeyStore(Clock(), history=count, instance="srv")
    sources = [Source(store, "a"), Source(store, "b", boot=3)]
    declared: dict[str, set[int]] = {}
    datums = []
    for n in range(count):
        source = rng.choice(sources)
        if rng.random() < 0.1:
            before = source.seq
            source.lose(rng.randint(1, 3))
            declared.setdefault(f"{source.name}.{source.boot}", set()).update(
                range(before + 1, source.seq + 1)
            )
        if n == count // 2 and rng.random() < 0.5:
            source.reboot()
        datums.append(source.send(rng.choice(["k/x", "k/y", "k/z"]), n))
    return store, datums, declared


def missedBetween(declared: dict[str, set[int]], had: Datum | None, datum: Datum) -> bool:
    """
    Were datums of C{datum}'s source and boot declared unrecoverable after
    C{had} (the client's latest of that source and boot) and before it?
    """
    if had is None or (had.source, had.boot) != (datum.source, datum.boot):
        return False
    lost = declared.get(f"{datum.source}.{datum.boot}", set())
    return any(had.seq < seq < datum.seq for seq in lost)


class ModelTests(SynchronousTestCase):
    """
    Against a seeded model of loss: a client that resumes from each answer
    is told of a gap exactly before the datums that follow a loss of their
    source since the latest it got of that source.
    """

    def follow(self, seed: int, pattern: str) -> None:
        store, datums, declared = model(seed)
        wanted = [d for d in datums if d.key == pattern or pattern == "k/..."]
        got: list[tuple[Datum, bool]] = []
        found = store.since(pattern, "nobody.1.1")
        while found.datum is not None:
            got.append((found.datum, found.gap))
            found = store.since(pattern, found.datum.id)
        self.assertEqual([d for d, _ in got], wanted)
        latest: dict[str, Datum] = {}
        expected = []
        for datum in wanted:
            expected.append(missedBetween(declared, latest.get(datum.source), datum))
            latest[datum.source] = datum
        # The first answer is the oldest held, after an unknown id: a gap.
        self.assertEqual([gap for _, gap in got][1:], expected[1:])
        self.assertTrue(any(expected))

    def test_oneKey(self) -> None:
        """
        Following one key: a gap exactly where the source lost datums since
        the client's datum (of that key or another).
        """
        for seed in range(5):
            self.follow(seed, "k/x")

    def test_pattern(self) -> None:
        """
        Following every key: a gap exactly where seqs of the source are
        missing since its latest datum the client got.
        """
        for seed in range(5):
            self.follow(seed, "k/...")

    def test_stream(self) -> None:
        """
        An NDJSON stream sees every datum live, with a gap marker exactly
        before those that follow a loss of their source since the latest it
        sent of that source, naming that datum.
        """
        for seed in range(5):
            clock = Clock()
            store = KeyStore(clock, history=1, instance="srv")
            app = ArtcastApp(store, clock)
            client = Connection(app, clock)
            client.stream("/artcasts/k/...", NDJSON)
            rng = random.Random(seed)
            sources = [Source(store, "a"), Source(store, "b", boot=3)]
            expected: list[Any] = []
            latest: dict[str, Datum] = {}
            for n in range(300):
                source = rng.choice(sources)
                if rng.random() < 0.1:
                    source.lose(rng.randint(1, 3))
                if n == 150:
                    source.reboot()
                datum = source.send(rng.choice(["k/x", "k/y"]), n)
                had = latest.get(datum.source)
                if had is not None and had.boot == datum.boot and had.lost != datum.lost:
                    expected.append({"gap": True, "since": had.id})
                expected.append(n)
                latest[datum.source] = datum
            lines = [json.loads(line) for line in client.lines() if line]
            self.assertEqual(
                [line if line.get("gap") else line["value"] for line in lines], expected
            )
            self.assertTrue(any(isinstance(item, dict) for item in expected))


    def test_longPollsInStep(self) -> None:
        """
        A long-poll client in step (each datum answers its waiting poll, and
        it asks again after it) is told of a gap exactly where its source
        lost datums since the client's latest of it: with one source even
        when the server holds one datum per key, with two when it holds them.
        """
        for seed, names, history in [(s, ["a"], 1) for s in range(3)] + [
            (s, ["a", "b"], 100) for s in range(3)
        ]:
            clock = Clock()
            store = KeyStore(clock, history=history, instance="srv")
            app = ArtcastApp(store, clock)
            rng = random.Random(seed)
            sources = [Source(store, name) for name in names]
            since = "latest"
            store.publish("k", "start")
            latest: dict[str, Datum] = {}
            gaps, expected = [], []
            for n in range(200):
                client = Connection(app, clock)
                client.request("/artcasts/k?since=" + since)
                if n:
                    self.assertEqual(client.transport.value(), b"")
                source = rng.choice(sources)
                if rng.random() < 0.15:
                    source.lose(rng.randint(1, 3))
                if n == 100:
                    source.reboot()
                datum = source.send("k", n)
                answer = client.transport.value()
                if n:
                    gaps.append(b"\r\nArtcast-Gap: 1\r\n" in answer)
                    had = latest.get(datum.source)
                    expected.append(
                        had is not None and had.boot == datum.boot and had.lost != datum.lost
                    )
                latest[datum.source] = datum
                since = datum.id
            self.assertEqual(gaps, expected, (seed, names))
            self.assertTrue(any(expected))


class LongPollMixin:
    """
    An L{ArtcastApp} over a fresh L{KeyStore}, asked through L{StubTreq}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock)
        self.stub = StubTreq(self.app.resource())
        self.source = Source(self.store)

    def get(self, path: str) -> Deferred[Any]:
        d = self.stub.get("http://artcast.example" + path)
        self.stub.flush()
        return d

    def answer(self, d: Deferred[Any]) -> tuple[Any, bytes]:
        self.stub.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def gapOf(self, d: Deferred[Any]) -> list[str] | None:
        response, _ = self.answer(d)
        self.assertEqual(response.code, 200)
        return response.headers.getRawHeaders("Artcast-Gap")


class LongPollTests(LongPollMixin, SynchronousTestCase):
    """
    A resuming long poll, answered at once or later, says C{Artcast-Gap: 1}
    across a loss.
    """

    def test_fromHistory(self) -> None:
        """
        Answered at once from history across a loss: C{Artcast-Gap: 1}; the
        next, after the answer, none.
        """
        first = self.source.send("k", 1)
        self.source.lose()
        third = self.source.send("k", 3)
        self.source.send("k", 4)
        self.assertEqual(self.gapOf(self.get("/artcasts/k?since=" + first.id)), ["1"])
        self.assertIsNone(self.gapOf(self.get("/artcasts/k?since=" + third.id)))

    def test_ifNoneMatch(self) -> None:
        """
        Resuming with C{If-None-Match} instead of C{since} is the same.
        """
        first = self.source.send("k", 1)
        self.source.lose()
        self.source.send("k", 3)
        d = self.stub.get(
            "http://artcast.example/artcasts/k", headers={"If-None-Match": 'W/"%s"' % first.id}
        )
        self.assertEqual(self.gapOf(d), ["1"])

    def test_waiting(self) -> None:
        """
        A poll that waits after the client's datum is answered with
        C{Artcast-Gap: 1} when the datum that comes follows a loss.
        """
        first = self.source.send("k", 1)
        d = self.get("/artcasts/k?since=" + first.id)
        self.assertNoResult(d)
        self.source.lose()
        self.source.send("k", 3)
        self.assertEqual(self.gapOf(d), ["1"])

    def test_waitingNoLoss(self) -> None:
        """
        A waiting poll whose datum follows no loss carries no gap, even when
        its source lost datums before the client's.
        """
        self.source.lose(4)
        first = self.source.send("k", 5)
        d = self.get("/artcasts/k?since=" + first.id)
        self.source.send("k", 6)
        self.assertIsNone(self.gapOf(d))

    def test_waitingIdNotHeld(self) -> None:
        """
        A client ahead of this server (its id came from another) waits, and
        the datum that comes is compared with the source's latest held here.
        """
        self.source.send("k", 1)
        self.source.lose(2)
        d = self.get("/artcasts/k?since=src.7.3")
        self.assertNoResult(d)
        self.source.send("k", 4)
        self.assertEqual(self.gapOf(d), ["1"])

    def test_waitingPatternOtherSource(self) -> None:
        """
        On a pattern, a poll waiting after one source's datum is told of a
        loss of another source since that source's latest held.
        """
        other = Source(self.store, "other")
        other.send("a/y", 1)
        mine = self.source.send("a/x", 1)
        d = self.get("/artcasts/a/...?since=" + mine.id)
        other.lose()
        other.send("a/y", 3)
        self.assertEqual(self.gapOf(d), ["1"])

    def test_waitingOtherSourceNoGap(self) -> None:
        """
        A datum of a source that lost datums, but none since its latest held,
        carries no gap, and a datum of a source that lost none neither.
        """
        other = Source(self.store, "other")
        other.lose()
        other.send("a/y", 2)
        mine = self.source.send("a/x", 1)
        d = self.get("/artcasts/a/...?since=" + mine.id)
        other.send("a/y", 3)
        self.assertIsNone(self.gapOf(d))

    def test_freshPollNoGap(self) -> None:
        """
        A poll without C{since}, or with C{since=latest}, has nothing to have
        missed: no gap, whatever the datum's C{lost}.
        """
        self.source.send("k", 1)
        self.source.lose()
        d = self.get("/artcasts/k")
        self.source.send("k", 3)
        self.assertIsNone(self.gapOf(d))
        self.assertIsNone(self.gapOf(self.get("/artcasts/k?since=latest")))

    def test_acrossBootsNoGap(self) -> None:
        """
        A source's first datum after a restart is not compared with its
        earlier boot's.
        """
        self.source.lose()
        first = self.source.send("k", 2)
        d = self.get("/artcasts/k?since=" + first.id)
        self.source.reboot()
        self.source.send("k", 1)
        self.assertIsNone(self.gapOf(d))

    def test_versionOneNoGap(self) -> None:
        """
        Datums without a stamp never carry a gap on a resume.
        """
        first = self.store.publish("k", 1)
        d = self.get("/artcasts/k?since=" + first.id)
        self.store.publish("k", 2, None, 3)
        self.assertIsNone(self.gapOf(d))


class PrebuiltTests(SynchronousTestCase):
    """
    The long polls L{artcast.server.routes.ArtcastResource} answers itself
    with prebuilt answers carry the gap too.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock)
        self.source = Source(self.store)

    def poll(self, path: str) -> bytes:
        client = Connection(self.app, self.clock)
        client.request(path)
        return client.transport.value()

    def test_waitingAndFromHistory(self) -> None:
        """
        Waiting polls answered by the same datum get the gap when they resume
        across the loss and not otherwise; from history likewise.
        """
        first = self.source.send("k", 1)
        second = self.source.send("k", 2)
        clients = []
        for since in (second.id, "", "latest"):
            client = Connection(self.app, self.clock)
            client.request("/artcasts/k" + ("?since=" + since if since else ""))
            clients.append(client)
        self.source.lose()
        self.source.send("k", 4)
        answers = [client.transport.value() for client in clients]
        self.assertIn(b"\r\nArtcast-Gap: 1\r\n", answers[0])
        self.assertNotIn(b"Artcast-Gap: 1", answers[1])
        self.assertIn(b"HTTP/1.1 200 OK", answers[1])
        self.assertNotIn(b"Artcast-Gap: 1", answers[2])
        self.assertIn(b"\r\nArtcast-Gap: 1\r\n", self.poll("/artcasts/k?since=" + second.id))
        self.assertNotIn(b"Artcast-Gap: 1", self.poll("/artcasts/k?since=" + first.id))


class StreamMixin:
    """
    An L{ArtcastApp} over a fresh L{KeyStore}, and streams of it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock)
        self.source = Source(self.store)

    def ndjson(self, path: str) -> Connection:
        client = Connection(self.app, self.clock)
        client.stream(path, NDJSON)
        return client

    def received(self, client: Connection) -> list[Any]:
        """
        What an NDJSON stream sent: values, and gap markers as themselves.
        """
        lines = [json.loads(line) for line in client.lines() if line]
        return [line if line.get("gap") else line["value"] for line in lines]


class StreamTests(StreamMixin, SynchronousTestCase):
    """
    A stream sends a gap marker before a datum that follows a loss of its
    source since the latest it sent of that source.
    """

    def test_live(self) -> None:
        """
        Live, the marker comes before the first datum after a loss, naming
        the datum before it; none between datums with the same C{lost}.
        """
        self.source.send("k", 1)
        client = self.ndjson("/artcasts/k")
        second = self.source.send("k", 2)
        self.source.lose(2)
        self.source.send("k", 5)
        self.source.send("k", 6)
        self.assertEqual(
            self.received(client), [1, 2, {"gap": True, "since": second.id}, 5, 6]
        )

    def test_sseEvent(self) -> None:
        """
        In SSE the marker is an event named C{gap}, before the datum.
        """
        client = Connection(self.app, self.clock)
        client.stream("/artcasts/k")
        first = self.source.send("k", 1)
        self.source.lose()
        self.source.send("k", 3)
        events = client.events()
        self.assertEqual([event["type"] for event in events], ["message", "gap", "message"])
        self.assertEqual(json.loads(events[1]["data"]), {"gap": True, "since": first.id})
        self.assertEqual([m.get("value") for m in messages(events)], [1, None, 3])

    def test_webSocket(self) -> None:
        """
        Over a WebSocket the marker is a message of its own, before the datum.
        """
        first = self.source.send("k", 1)
        client = Connection(self.app, self.clock)
        client.request("/artcasts/k", UPGRADE)
        self.source.lose()
        self.source.send("k", 3)
        _, _, rest = client.transport.value().partition(b"\r\n\r\n")
        self.assertEqual(
            [json.loads(payload) for _, payload in frames(rest)],
            [
                {"key": "k", "id": first.id, "value": 1},
                {"gap": True, "since": first.id},
                {"key": "k", "id": "src.7.3", "value": 3},
            ],
        )

    def test_firstLiveAfterNothing(self) -> None:
        """
        A fresh stream whose first datum of a source has a C{lost} sends no
        marker (its client had nothing to miss), but one at the next loss.
        """
        self.source.lose()
        client = self.ndjson("/artcasts/k")
        self.source.send("k", 2)
        self.source.send("k", 3)
        self.source.lose()
        self.source.send("k", 5)
        self.assertEqual(
            self.received(client), [2, 3, {"gap": True, "since": "src.7.3"}, 5]
        )

    def test_notBeforeItsStart(self) -> None:
        """
        A fresh stream does not compare with a datum held from before it
        began that it did not send (history of a key, not its current value).
        """
        self.source.send("k", 1)
        self.source.send("k", 2)
        client = self.ndjson("/artcasts/k/...")
        self.source.lose()
        self.source.send("k/x", 4)
        self.assertEqual(self.received(client), [4])

    def test_otherKeysOfThePattern(self) -> None:
        """
        On a pattern, the marker names the latest datum sent of that source,
        whatever its key.
        """
        client = self.ndjson("/artcasts/k/...")
        self.source.send("k/x", 1)
        second = self.source.send("k/y", 2)
        self.source.lose()
        self.source.send("k/x", 4)
        self.assertEqual(
            self.received(client), [1, 2, {"gap": True, "since": second.id}, 4]
        )

    def test_notAcrossSourcesOrBoots(self) -> None:
        """
        Datums of another source, or of a new boot, are not compared with
        those of the source or boot before.
        """
        other = Source(self.store, "other")
        self.source.lose(3)
        client = self.ndjson("/artcasts/k")
        self.source.send("k", 4)
        other.send("k", "a")
        self.source.send("k", 5)
        self.source.reboot()
        self.source.send("k", 1)
        self.source.lose()
        self.source.send("k", 3)
        received = self.received(client)
        self.assertEqual(received, [4, "a", 5, 1, {"gap": True, "since": "src.8.1"}, 3])

    def test_versionOneNever(self) -> None:
        """
        Datums without a stamp never bring a marker.
        """
        client = self.ndjson("/artcasts/k")
        self.store.publish("k", 1)
        self.store.publish("k", 2, None, 4)
        self.assertEqual(self.received(client), [1, 2])

    def test_resumeAcrossLoss(self) -> None:
        """
        Resuming, the history after the id comes with a marker before each
        datum after a loss (one only, when the first is), then the live ones.
        """
        first = self.source.send("k", 1)
        second = self.source.send("k", 2)
        self.source.lose()
        self.source.send("k", 4)
        client = self.ndjson("/artcasts/k?since=" + first.id)
        self.source.lose()
        fourth = self.source.send("k", 6)
        self.source.send("k", 7)
        self.assertEqual(
            self.received(client),
            [2, {"gap": True, "since": second.id}, 4,
             {"gap": True, "since": "src.7.4"}, 6, 7],
        )
        self.assertEqual(fourth.seq, 6)
        client = self.ndjson("/artcasts/k?since=" + second.id)
        self.assertEqual(
            self.received(client),
            [{"gap": True, "since": second.id}, 4,
             {"gap": True, "since": "src.7.4"}, 6, 7],
        )

    def test_resumeWaiting(self) -> None:
        """
        A stream that resumes up to date marks the first live datum after a
        loss, compared with the client's datum.
        """
        first = self.source.send("k", 1)
        client = self.ndjson("/artcasts/k?since=" + first.id)
        self.source.lose()
        self.source.send("k", 3)
        self.assertEqual(self.received(client), [{"gap": True, "since": first.id}, 3])

    def test_pausedKeepsOrder(self) -> None:
        """
        While the client does not read, the marker waits in the queue in its
        place.
        """
        client = self.ndjson("/artcasts/k")
        first = self.source.send("k", 1)
        client.pause()
        self.source.send("k", 2)
        self.source.lose()
        self.source.send("k", 4)
        self.assertEqual(self.received(client), [1])
        client.resume()
        self.assertEqual(
            self.received(client), [1, 2, {"gap": True, "since": "src.7.2"}, 4]
        )
        self.assertEqual(first.seq, 1)


class ClientTests(SynchronousTestCase):
    """
    L{ArtcastClient.follow} surfaces a loss as it does a history gap.
    """

    def test_followMarksTheDatumAfterALoss(self) -> None:
        """
        A follower's datum after a loss comes with C{gap=True}, whether it
        was waited for or read from history; the others without.
        """
        clock = Clock()
        store = KeyStore(clock, instance="srv")
        stub = StubTreq(ArtcastApp(store, clock).resource())
        client = ArtcastClient("http://artcast.example", clock, httpClient=stub)
        source = Source(store)
        source.send("k", 1)
        follower = client.follow("k", since="latest")
        got = []
        for step in range(4):
            d = follower.next()
            stub.flush()
            if step == 1:
                source.send("k", 2)
                source.lose()
                source.send("k", 4)
            if step == 2:
                source.lose()
                source.send("k", 6)
            stub.flush()
            datum = self.successResultOf(d)
            got.append((datum.value, datum.gap))
        self.assertEqual(got, [(1, False), (2, False), (4, True), (6, True)])


class LivePageTests(SynchronousTestCase):
    """
    The live page shows a live gap marker as it does a resume's.
    """

    def test_liveGapShown(self) -> None:
        """
        A gap event on an open EventSource makes the next value say some
        were missed, and the one after not.
        """
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise SkipTest("Node is not installed.")
        page = pages.livePage("k").decode("utf-8")
        script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
        harness = r"""
const script = require("fs").readFileSync(0, "utf-8");
const elements = {};
for (const id of ["value", "status", "matched"]) elements[id] = {textContent: ""};
const sources = [], statuses = [];
class FakeEventSource {
  constructor(url) { this.listeners = {}; sources.push(this); }
  addEventListener(type, listener) { this.listeners[type] = listener; }
}
const context = {document: {getElementById: (id) => elements[id]},
                 window: {EventSource: FakeEventSource}, EventSource: FakeEventSource,
                 setTimeout: () => {}};
new Function(...Object.keys(context), script)(...Object.values(context));
const source = sources[0];
source.onopen();
for (const [n, gap] of [[1, false], [3, true], [4, false]]) {
  if (gap) source.listeners.gap({data: JSON.stringify({gap: true, since: "s.1.1"})});
  source.onmessage({data: JSON.stringify({key: "k", id: "s.1." + n, value: n})});
  statuses.push(elements.status.textContent);
}
process.stdout.write(JSON.stringify(statuses));
"""
        done = subprocess.run(
            [node, "-e", harness], input=script.encode("utf-8"),
            capture_output=True, timeout=30,
        )
        self.assertEqual(done.returncode, 0, done.stderr.decode("utf-8", "replace"))
        statuses = json.loads(done.stdout)
        self.assertEqual(["missed" in status for status in statuses], [False, True, False])
