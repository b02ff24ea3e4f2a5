# -*- test-case-name: tests.test_bounds_patterns -*-
"""
The bounds on wildcard patterns (issue 9, findings 6 and 8): a pattern from a
request has at most L{MAX_PATTERN_LEVELS} levels, what a held pattern costs
the index grows linearly with its length, and a datum's matching costs at
most a small constant per pattern held.

The unit tests drive L{ArtcastApp} through L{StubTreq}; the integration
tests hold thousands of real long polls on the real C{twistd artcast} over
loopback, reading its resident memory from C{/proc} and timing one
legitimate datum.  The index's own bounds are proven by counting in
L{tests.test_wildcard}.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, returnValue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server.patterns import MAX_PATTERN_LEVELS
from artcast.server.store import KeyStore
from artcast.server.routes import ArtcastApp
from bench.patterns import binaryPatterns, deepPatterns
from tests.harness import ArtcastProcess

#: Held long polls per batch in the integration tests: finding 6's 2,000.
POLLS = 2000

#: Connections opened at once, so the server's listen queue never overflows.
CONNECTING = 200

#: Datagrams of an attacker's deep key sent ahead of the legitimate datum.
QUEUED = 50


def tooDeep(levels: int = MAX_PATTERN_LEVELS + 1) -> str:
    """
    A valid pattern of C{levels} levels, one more than allowed by default.
    """
    return "/".join(["a"] * (levels - 1) + ["*"])


class PatternRequestTests(SynchronousTestCase):
    """
    How C{GET /artcasts/<pattern>} treats the depth bound, through
    L{StubTreq}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.stub = StubTreq(ArtcastApp(self.store, self.clock).resource())

    def get(self, key: str, accept: str | None = None) -> Deferred[Any]:
        return self.stub.get(
            "http://artcast.example/artcasts/" + quote(key, safe="/*"),
            headers={"Accept": accept} if accept else None,
        )

    def answer(self, d: Deferred[Any]) -> tuple[Any, bytes]:
        self.stub.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def test_deepPatternRefused(self) -> None:
        """
        A pattern deeper than the bound is refused with 400 and a one-line
        text naming the bound, for a long poll and every stream alike, and
        nothing is held for it.
        """
        for pattern in [tooDeep(), tooDeep(126), "/".join(["a"] * 40 + ["..."])]:
            for accept in [None, "text/plain", "text/event-stream",
                           "application/x-ndjson", "text/html"]:
                response, body = self.answer(self.get(pattern, accept))
                self.assertEqual(response.code, 400, (pattern, accept))
                text = body.decode("utf-8")
                self.assertEqual(text.count("\n"), 1, text)
                self.assertTrue(text.endswith("\n"))
                self.assertIn(f"at most {MAX_PATTERN_LEVELS} levels", text)
        self.assertEqual(self.store.listening, 0)

    def test_deepestPatternHeld(self) -> None:
        """
        A pattern of exactly the bound is held and answered as before.
        """
        pattern = tooDeep(MAX_PATTERN_LEVELS)
        d = self.get(pattern)
        self.stub.flush()
        self.assertNoResult(d)
        key = "/".join(["a"] * MAX_PATTERN_LEVELS)
        self.store.publish(key, 1)
        response, body = self.answer(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Artcast-Key"), [key])
        self.assertEqual(json.loads(body), 1)

    def test_deepKeysUnbounded(self) -> None:
        """
        Keys without wildcards are not bound by the depth of patterns, and
        a short pattern ending in C{...} still matches a key of any depth.
        """
        key = "/".join(["a"] * 120)
        exact = self.get(key)
        rest = self.get("a/...")
        self.stub.flush()
        self.assertNoResult(exact)
        self.assertNoResult(rest)
        self.store.publish(key, 2)
        for d in (exact, rest):
            response, body = self.answer(d)
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(body), 2)


class RawPoll(Protocol):
    """
    One long poll over its own connection: the request is written on
    connect, the answer read until the server closes.

    @ivar done: Fires with the bytes received when the connection is lost.
    @ivar firstByte: When the answer's first byte came, or L{None}.
    """

    def __init__(self, path: str) -> None:
        self.request = (
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % (path,)
        ).encode("ascii")
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()
        self.firstByte: float | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.firstByte is None:
            self.firstByte = reactor.seconds()
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(bytes(self.received))

    @property
    def code(self) -> int | None:
        """
        The answer's status code, if its status line has come.
        """
        line, found, _ = bytes(self.received).partition(b"\r\n")
        return int(line.split(b" ")[1]) if found else None


def rssKiB(pid: int) -> int:
    """
    A process's resident memory in KiB, from C{/proc/<pid>/status}.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class PatternServerTests(TestCase):
    """
    Deep and binary-prefix patterns against the real server, over loopback.
    """

    timeout = 120

    def setUp(self) -> None:
        if not os.path.exists("/proc/self/status"):
            self.skipTest("reads the server's memory from /proc")
        self.polls: list[RawPoll] = []
        self.addCleanup(self.hangUp)

    @inlineCallbacks
    def hangUp(self) -> Any:
        """
        Close every poll still open, and wait until each connected one is
        closed.
        """
        connected = [poll for poll in self.polls if poll.transport is not None]
        for poll in connected:
            if not poll.done.called:
                poll.transport.loseConnection()
        yield gatherResults([poll.done for poll in connected])

    @inlineCallbacks
    def openPolls(self, proc: ArtcastProcess, paths: list[str]) -> Any:
        """
        Open one connection per path and send its long poll, a bounded
        number of connections at a time.

        @return: The L{RawPoll}s, in order.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proc.httpPort, timeout=10)
        polls = [RawPoll(path) for path in paths]
        self.polls.extend(polls)
        for start in range(0, len(polls), CONNECTING):
            yield gatherResults(
                [connectProtocol(endpoint, poll) for poll in polls[start:start + CONNECTING]]
            )
        returnValue(polls)

    @inlineCallbacks
    def test_deepPatternsRefused(self) -> Any:
        """
        Finding 6: 2,000 polls on deep patterns (126 levels, each its own)
        are each refused with 400, and the server's memory is as it was; it
        still holds polls on the deepest patterns allowed.
        """
        proc = yield ArtcastProcess(self).start()
        before = rssKiB(proc.pid)
        paths = ["/artcasts/%s?timeout=60" % (pattern,)
                 for pattern in deepPatterns(POLLS, 126)]
        polls = yield self.openPolls(proc, paths)
        # Each is answered, or (as before the bound) held: wait for either.
        yield proc.waitFor(
            lambda stats: stats["waiting"] + sum(poll.done.called for poll in polls)
            >= POLLS,
            limit=30,
        )
        self.assertEqual(
            {poll.code for poll in polls}, {400},
            "waiting: %d" % ((yield proc.stats())["waiting"],),
        )
        self.assertLess(rssKiB(proc.pid) - before, 16 * 1024)
        allowed = yield self.openPolls(
            proc, ["/artcasts/%s?timeout=60" % (tooDeep(MAX_PATTERN_LEVELS),)]
        )
        yield proc.waitForWaiters(1)
        self.assertIsNone(allowed[0].code)

    @inlineCallbacks
    def test_heldPatternBytes(self) -> Any:
        """
        Finding 6: 2,000 polls on distinct patterns of the deepest depth
        allowed cost the server at most a few KiB each more than 2,000 polls
        on plain keys (they cost about 18 KiB more each when every level of
        a pattern was a node keeping its whole prefix).
        """
        proc = yield ArtcastProcess(self).start()
        start = rssKiB(proc.pid)
        yield self.openPolls(
            proc, ["/artcasts/plain/k%d?timeout=60" % (number,) for number in range(POLLS)]
        )
        yield proc.waitForWaiters(POLLS)
        plain = rssKiB(proc.pid) - start
        middle = rssKiB(proc.pid)
        yield self.openPolls(
            proc,
            ["/artcasts/%s?timeout=60" % (pattern,)
             for pattern in deepPatterns(POLLS, MAX_PATTERN_LEVELS)],
        )
        yield proc.waitForWaiters(2 * POLLS)
        patterns = rssKiB(proc.pid) - middle
        extra = (patterns - plain) / POLLS
        self.assertLess(extra, 6, (plain, patterns))

    @inlineCallbacks
    def test_datumPromptBehindBinaryPrefixes(self) -> Any:
        """
        Finding 8: with 2,000 polls held on binary-prefix patterns of the
        deepest depth allowed, 50 datagrams of a deep key that walks every
        prefix of every one of them delay a legitimate datum queued behind
        them by well under half a second (about 0.84 s when the walk visited
        one node per pattern and level).
        """
        proc = yield ArtcastProcess(self).start()
        yield self.openPolls(
            proc,
            ["/artcasts/%s?timeout=60" % (pattern,)
             for pattern in binaryPatterns(POLLS, MAX_PATTERN_LEVELS)],
        )
        [legitimate] = yield self.openPolls(proc, ["/artcasts/legit/temp?timeout=60"])
        yield proc.waitForWaiters(POLLS + 1)
        deepKey = "/".join(["a"] * MAX_PATTERN_LEVELS)
        for _ in range(QUEUED):
            proc.data.sendDatum(deepKey, 0)
        sent = reactor.seconds()
        proc.data.sendDatum("legit/temp", 21.5)
        body = yield legitimate.done
        self.assertEqual(legitimate.code, 200, body)
        self.assertTrue(body.endswith(b"21.5"), body)
        assert legitimate.firstByte is not None
        delay = legitimate.firstByte - sent
        self.assertLess(delay, 0.4)
        stats = yield proc.stats()
        self.assertEqual(stats["waiting"], POLLS)
