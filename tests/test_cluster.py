# -*- test-case-name: tests.test_cluster -*-
"""
A cluster as operators run it: three real C{twistd artcast} servers on one
real Redis bus, behind a real HAProxy, on loopback ports; clients through
HAProxy follow a key while one server is killed and another is stopped and
restarted.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python import log
from twisted.trial.unittest import TestCase

from tests.harness import (
    REDIS_SERVER,
    ArtcastProcess,
    HAProxy,
    PacedSender,
    RedisServer,
    freePort,
    randomGroup,
)

#: The HAProxy configuration docs/scaling.md gives.
DOCUMENTED_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "docs", "examples", "haproxy-cluster.cfg",
)


def documentedBackend() -> list[str]:
    """
    The lines of the documented configuration's backend that say how
    requests fail over (not its C{balance} or its C{server}s, which the
    harness writes for the test's ports).
    """
    lines: list[str] = []
    inBackend = False
    with open(DOCUMENTED_CONFIG) as config:
        for line in config:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.split()[0] in ("global", "defaults", "frontend", "backend", "listen"):
                inBackend = line.split()[0] == "backend"
                continue
            if inBackend and line.split()[0] not in ("server", "balance"):
                lines.append(line)
    return lines


#: Why the cluster test cannot run here, or None.
_SKIP = HAProxy.missing() or (
    None if os.access(REDIS_SERVER, os.X_OK)
    else f"{REDIS_SERVER} is not installed (apt-get install redis-server)"
)


class _Client:
    """
    What both followers share: the values and ids received, in order, the
    gaps they were told of, and how often they had to come back.

    @ivar received: the values, in the order they came.
    @ivar ids: their ids.
    @ivar gaps: the gap markers or C{Artcast-Gap} answers seen.
    @ivar reconnects: how many times the client had to ask again after a
        connection failed, was refused or ended.
    @ivar first: fires when the first datum came.
    """

    def __init__(self, url: str, count: int, limit: float) -> None:
        self.url = url
        self.count = count
        self.limit = limit
        self.received: list[Any] = []
        self.ids: list[str] = []
        self.gaps = 0
        self.reconnects = 0
        self.answers: dict[int, int] = {}
        self.first: Deferred[None] = Deferred()

    def took(self, datumId: str, value: Any) -> None:
        self.ids.append(datumId)
        self.received.append(value)
        if not self.first.called:
            self.first.callback(None)

    @property
    def done(self) -> bool:
        return len(self.received) >= self.count


class _SinceFollower(_Client):
    """
    A long-poll client: asks C{since=} the last id it got, one datum per
    answer, as a microcontroller would; on a failed connection or a C{503}
    it asks again after a short pause.
    """

    @inlineCallbacks
    def run(self) -> Any:
        deadline = reactor.seconds() + self.limit
        since = "latest"
        while not self.done and reactor.seconds() < deadline:
            try:
                response = yield treq.get(
                    self.url, params={"since": since, "timeout": "5"},
                    persistent=False, timeout=15,
                )
                body = yield response.content()
            except Exception:
                self.reconnects += 1
                yield deferLater(reactor, 0.05, lambda: None)
                continue
            self.answers[response.code] = self.answers.get(response.code, 0) + 1
            if response.code == 204:
                continue
            if response.code != 200:
                self.reconnects += 1
                yield deferLater(reactor, 0.1, lambda: None)
                continue
            if response.headers.getRawHeaders(b"Artcast-Gap"):
                self.gaps += 1
            since = response.headers.getRawHeaders(b"Artcast-Id")[0].decode()
            self.took(since, json.loads(body))


class _SSEFollower(_Client):
    """
    An C{EventSource} as a browser runs it: one stream, and when it ends or
    breaks, a new one with C{Last-Event-ID}.
    """

    @inlineCallbacks
    def run(self) -> Any:
        deadline = reactor.seconds() + self.limit
        last: str | None = None
        while not self.done and reactor.seconds() < deadline:
            headers = {"Accept": ["text/event-stream"]}
            if last is not None:
                headers["Last-Event-ID"] = [last]
            try:
                response = yield treq.get(
                    self.url, headers=headers, persistent=False, timeout=15,
                )
            except Exception:
                self.reconnects += 1
                yield deferLater(reactor, 0.05, lambda: None)
                continue
            self.answers[response.code] = self.answers.get(response.code, 0) + 1
            if response.code != 200:
                yield response.content()
                self.reconnects += 1
                yield deferLater(reactor, 0.1, lambda: None)
                continue
            events = _Events(self)
            response.deliverBody(events)
            yield events.ended
            if events.last is not None:
                last = events.last
            if not self.done:
                self.reconnects += 1


class _Events(Protocol):
    """
    Reads an event stream's bytes into events: a datum (an event with an
    id and no name) is taken, a C{gap} event counted, any other ignored.
    Once the client has all it wants, the stream is closed.

    @ivar ended: fires when the stream ended, whyever.
    """

    def __init__(self, client: _SSEFollower) -> None:
        self.client = client
        self.buffer = b""
        self.last: str | None = None
        self.ended: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.feed(data)
        if self.client.done:
            self.transport.stopProducing()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode("utf-8").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
            event = fields.get("event", "message")
            if event == "gap":
                self.client.gaps += 1
            elif event == "message" and "id" in fields and "data" in fields:
                self.last = fields["id"]
                self.client.took(fields["id"], json.loads(fields["data"])["value"])


class ClusterTests(TestCase):
    """
    Three servers on one Redis bus behind HAProxy.
    """

    timeout = 120
    if _SKIP:
        skip = _SKIP

    #: Datums sent.
    COUNT = 2000

    @inlineCallbacks
    def test_killAndRestartBehindHAProxy(self) -> Any:
        """
        A C{since=} client and an SSE client through HAProxy each get every
        one of 2,000 datums, in order, once, without a gap, while one server
        is killed (SIGKILL) and another stopped (SIGTERM) and restarted; Redis
        holds each datum once.
        """
        from artcast.source import Source

        redis = RedisServer(self)
        yield redis.start()
        group = randomGroup()
        net = dict(group=group, dataPort=freePort(2), registerPort=freePort(2))
        args = ["--bus", redis.url, "--history", str(self.COUNT + 100)]
        servers = [ArtcastProcess(self, args, **net) for _ in range(3)]
        for server in servers:
            yield server.start()
        # As docs/scaling.md has it: a request that cannot reach its server
        # goes to another at once.
        proxy = HAProxy(self, [server.httpPort for server in servers], backend=documentedBackend())
        yield proxy.start()

        source = Source(
            src="cluster", groups=[(group, net["dataPort"])], ttl=0, interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        # About 200 a second, so that the clients are in the middle of the
        # stream when servers go.
        send = PacedSender(source, "cluster/n", pause=0.05).upTo
        url = proxy.url + "/artcasts/cluster/n"
        polls = _SinceFollower(url, self.COUNT, 240)
        events = _SSEFollower(url, self.COUNT, 240)

        def note(what: str) -> None:
            # Where the run is, in the test's log (_trial_temp/test.log).
            log.msg(f"cluster: {what}: polls {len(polls.received)} {polls.answers}"
                    f" events {len(events.received)} {events.answers}")

        yield send(1)
        note("1 sent")
        for server in servers:
            yield server.waitFor(lambda s: s["keys"] >= 1, limit=30)
        # Each starts with the first datum (the latest), then follows.
        pollsDone = polls.run()
        eventsDone = events.run()
        yield polls.first
        note("long polls started")
        yield events.first
        note("event stream started")

        yield send(500)
        note("500 sent")
        # The server that holds the SSE stream is killed: the event stream
        # breaks, and the long polls lose the server they were taking turns on.
        holders = []
        for server in servers:
            figures = yield server.stats()
            holders.append(sum(figures["streams_open"].values()))
        self.assertEqual(sorted(holders), [0, 0, 1])
        killed = servers[holders.index(1)]
        stopped = servers[(holders.index(1) + 1) % 3]
        os.kill(killed.pid, signal.SIGKILL)
        yield killed.watcher.ended
        note("a server killed")
        yield send(1000)
        note("1000 sent")
        yield stopped.stop()
        note("a server stopped")
        yield send(1300)
        note("1300 sent")
        restarted = ArtcastProcess(self, args, httpPort=stopped.httpPort, **net)
        yield restarted.start()
        note("the server restarted")
        yield send(self.COUNT)
        note("all sent")
        yield pollsDone
        note("long polls done")
        yield eventsDone

        expected = list(range(1, self.COUNT + 1))
        for client in (polls, events):
            self.assertEqual(client.received, expected)
            self.assertEqual(len(set(client.ids)), self.COUNT)
            self.assertTrue(all(i.startswith("cluster.") for i in client.ids))
            self.assertEqual(client.gaps, 0)
        self.assertEqual(polls.ids, events.ids)
        # The event stream broke (its server was killed) and came back.
        self.assertGreaterEqual(events.reconnects, 1)
        # The restarted server read the history from Redis before it took
        # requests: it answers since= a datum sent before it started.
        loaded = yield restarted.stats()
        self.assertGreaterEqual(loaded["bus"]["busLoaded"], 1300)
        response = yield treq.get(
            restarted.url + "/artcasts/cluster/n",
            params={"since": polls.ids[0], "timeout": "0"}, persistent=False,
        )
        body = yield response.content()
        self.assertEqual((response.code, json.loads(body)), (200, 2))
        self.assertEqual(response.headers.getRawHeaders(b"Artcast-Id"), [polls.ids[1].encode()])
        # Each datum is in Redis once, whichever server heard it first.
        length = yield redis.command(b"XLEN", b"artcast:datums")
        self.assertEqual(length, b":%d\r\n" % (self.COUNT,))

    def test_documentedConfig(self) -> None:
        """
        The configuration docs/scaling.md gives is one HAProxy accepts, and
        says how requests fail over (the lines the cluster test runs with).
        """
        import subprocess

        from tests.harness import HAPROXY

        checked = subprocess.run(
            [HAPROXY, "-c", "-f", DOCUMENTED_CONFIG], capture_output=True, timeout=30,
        )
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("option redispatch 1", documentedBackend())
