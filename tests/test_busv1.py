"""
Tests for the version 1 datums of the Redis bus (L{BusFeed.version1},
L{RedisBus.claim}) and for the outbox added when the server stops.

The feed runs against L{tests.test_bus.FakeBus}; the integration test runs
three real C{twistd artcast} servers on one multicast group and one real
C{redis-server}.
"""

from __future__ import annotations

import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txredisapi import ResponseError

from artcast.server.feeds.bus import (
    MAX_V1_WAITING,
    STOP_DRAIN,
    V1_WINDOW,
    BusAddress,
    BusFeed,
    RedisBus,
    version1Digest,
)
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.stats import ServerStatistics, Stats, metricsText
from artcast.server.store import KeyStore
from artcast.wire import DataMessage, Stamp, encodeData
from tests.harness import REDIS_SERVER, ArtcastProcess, RedisServer
from tests.test_bus import FakeBus, _Events

_SENDER = ("127.0.0.1", 4000)


class DigestTests(SynchronousTestCase):
    """
    L{version1Digest} names a version 1 datum by its sender, key and value.
    """

    def test_digest(self) -> None:
        """
        The same sender, key and value give the same digest; another port,
        address, key or value another.
        """
        digest = version1Digest(_SENDER, "k", {"a": [1, 2]})
        self.assertEqual(len(digest), 40)
        self.assertEqual(digest, version1Digest(("127.0.0.1", 4000), "k", {"a": [1, 2]}))
        for other in (
            version1Digest(("127.0.0.1", 4001), "k", {"a": [1, 2]}),
            version1Digest(("127.0.0.2", 4000), "k", {"a": [1, 2]}),
            version1Digest(_SENDER, "k2", {"a": [1, 2]}),
            version1Digest(_SENDER, "k", {"a": [1, 3]}),
            version1Digest(_SENDER, "k", "1"),
        ):
            self.assertNotEqual(digest, other)


class HandlerHookTests(SynchronousTestCase):
    """
    L{DatagramHandler.version1}: the hook a bus sets for version 1 datums.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.asked: list[tuple[DataMessage, tuple[str, int]]] = []

    def test_noHook(self) -> None:
        """
        Without a bus there is no hook, and a version 1 datum is published
        at once.
        """
        self.assertIsNone(self.handler.version1)
        self.handler.dataReceived(b'["k", 1]', _SENDER)
        self.assertEqual(len(self.store.held("k")), 1)

    def test_taken(self) -> None:
        """
        A hook that takes the datum gets it with its sender's address, and
        the handler does not publish it; L{DatagramHandler.publishVersion1}
        does, stamped by the store.
        """
        self.handler.version1 = lambda message, addr: self.asked.append((message, addr)) or True
        self.handler.dataReceived(b'["k", 1]', _SENDER)
        self.assertEqual(self.store.held("k"), [])
        [(message, addr)] = self.asked
        self.assertEqual((message.key, message.value, addr), ("k", 1, _SENDER))
        self.handler.publishVersion1(message)
        [datum] = self.store.held("k")
        self.assertEqual(datum.source, self.store.instance)
        self.assertEqual(self.handler.stats.datums, 1)

    def test_declined(self) -> None:
        """
        A hook that declines the datum leaves the handler to publish it at
        once.
        """
        self.handler.version1 = lambda message, addr: self.asked.append((message, addr)) and False
        self.handler.dataReceived(b'["k", 1]', _SENDER)
        self.assertEqual(len(self.asked), 1)
        self.assertEqual(len(self.store.held("k")), 1)

    def test_version2NotAsked(self) -> None:
        """
        A version 2 datum (with its id) never goes to the hook.
        """
        self.handler.version1 = lambda message, addr: self.asked.append((message, addr)) or True
        for datagram in encodeData("k", 1, Stamp("src", 1, 1, self.clock.seconds())):
            self.handler.dataReceived(datagram, _SENDER)
        self.assertEqual(self.asked, [])
        self.assertEqual([d.id for d in self.store.held("k")], ["src.1.1"])


class Version1Tests(SynchronousTestCase):
    """
    L{BusFeed.version1} against L{FakeBus}: claimed, a copy, or published at
    once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.bus = FakeBus(self.clock)
        self.events = _Events(self)

    def started(self, **kw: Any) -> BusFeed:
        feed = BusFeed(self.bus, self.handler, self.clock, "redis://fake:1", 1000, **kw)
        self.addCleanup(lambda: feed.running and feed.stopService())
        feed.startService()
        self.assertEqual(feed.state, "up")
        return feed

    def send(self, key: str, value: Any, sender: tuple[str, int] = _SENDER) -> None:
        self.handler.dataReceived(b'["%s", %s]' % (key.encode(), str(value).encode()), sender)

    def test_hookSet(self) -> None:
        """
        The feed sets the handler's hook while it runs, and takes it away
        when it stops.
        """
        feed = self.started()
        self.assertEqual(self.handler.version1, feed.version1)
        feed.stopService()
        self.assertIsNone(self.handler.version1)

    def test_claimed(self) -> None:
        """
        A version 1 datum this server claims first is stamped by it,
        published, and added to the stream with that id (its "seen" id set
        too), once.
        """
        feed = self.started()
        self.send("k", 5)
        [datum] = self.store.held("k")
        self.assertEqual(datum.source, self.store.instance)
        self.assertEqual(
            self.bus.stream[-1][1], [b"k", b"k", b"i", datum.id.encode(), b"v", b"5"]
        )
        self.assertIn(datum.id, self.bus.seen)
        self.assertEqual(list(self.bus.claimed), [version1Digest(_SENDER, "k", 5)])
        self.assertEqual((feed.v1Claimed, feed.v1Copies, feed.added, feed.own), (1, 0, 1, 1))

    def test_copy(self) -> None:
        """
        A version 1 datum another server claimed first is not published
        here: it is taken from the stream with the other server's id.
        """
        feed = self.started()
        self.bus.claimed[version1Digest(_SENDER, "k", 5)] = self.clock.seconds() + V1_WINDOW
        self.send("k", 5)
        self.assertEqual(self.store.held("k"), [])
        self.assertEqual((feed.v1Claimed, feed.v1Copies), (0, 1))
        self.bus.appendDatum("k", "other.1.1", 5)
        self.assertEqual([d.id for d in self.store.held("k")], ["other.1.1"])
        self.assertEqual(len(self.bus.stream), 1)

    def test_window(self) -> None:
        """
        The same value for the same key from the same sender is a copy
        within the window; after it, or from another port, it is a new
        datum.
        """
        feed = self.started()
        self.send("k", 5)
        self.clock.advance(V1_WINDOW / 2)
        self.send("k", 5)
        self.assertEqual((feed.v1Claimed, feed.v1Copies), (1, 1))
        self.send("k", 5, ("127.0.0.1", 4001))
        self.clock.advance(V1_WINDOW)
        self.send("k", 5)
        self.assertEqual((feed.v1Claimed, feed.v1Copies), (3, 1))
        self.assertEqual(len(self.store.held("k")), 3)
        self.assertEqual(len(self.bus.stream), 3)

    def test_down(self) -> None:
        """
        While the bus is down, a version 1 datum is published at once (and
        waits in the outbox), counted as C{down}.
        """
        feed = self.started()
        self.bus.down = True
        feed._trim()
        self.bus.reset()
        self.assertEqual(feed.state, "down")
        self.send("k", 5)
        self.assertEqual(len(self.store.held("k")), 1)
        self.assertEqual(feed.v1Local, {"down": 1})
        self.assertEqual(len(feed.outbox), 1)

    def test_failed(self) -> None:
        """
        A claim that fails (an error answer) publishes the datum at once and
        puts the bus down.
        """
        feed = self.started()
        self.bus.claimError = ResponseError("OOM command not allowed")
        self.send("k", 5)
        self.assertEqual(len(self.store.held("k")), 1)
        self.assertEqual(feed.v1Local, {"failed": 1})
        self.assertEqual(feed.state, "down")
        self.assertTrue(self.events.matching("OOM"))

    def test_failedWaiting(self) -> None:
        """
        When the bus goes down, every datum waiting for its claim is
        published at once, in order, and a late answer is ignored.
        """
        feed = self.started()
        self.bus.heldClaims = []
        for value in (1, 2, 3):
            self.send("k", value)
        self.assertEqual(self.store.held("k"), [])
        self.assertEqual(feed.statistics()["bus"]["busV1Waiting"], 3)
        self.bus.down = True
        feed._trim()
        self.assertEqual(feed.state, "down")
        self.assertEqual([d.json for d in self.store.held("k")], [b"1", b"2", b"3"])
        self.assertEqual(feed.v1Local, {"failed": 3})
        self.bus.heldClaims[0][0].callback(True)
        self.assertEqual(len(self.store.held("k")), 3)
        self.assertEqual(feed.v1Claimed, 0)

    def test_timeout(self) -> None:
        """
        A claim not answered within the bus's timeout publishes the datum
        at once (the oldest first); its late answer is ignored.
        """
        feed = self.started(timeout=2)
        self.bus.heldClaims = []
        self.send("k", 1)
        self.clock.advance(1)
        self.send("k", 2)
        self.clock.advance(0.9)
        self.assertEqual(self.store.held("k"), [])
        self.clock.advance(0.1)
        self.assertEqual([d.json for d in self.store.held("k")], [b"1"])
        self.clock.advance(1)
        self.assertEqual([d.json for d in self.store.held("k")], [b"1", b"2"])
        self.assertEqual(feed.v1Local, {"timeout": 2})
        self.assertTrue(self.events.matching("did not answer a claim within 2"))
        for waiting, _, _ in self.bus.heldClaims:
            waiting.callback(True)
        self.assertEqual(len(self.store.held("k")), 2)
        self.assertEqual(feed.v1Claimed, 0)
        self.assertEqual(self.clock.getDelayedCalls()[0].func, feed._trimmer)

    def test_answeredBeforeTimeout(self) -> None:
        """
        A claim answered in time is not published again when its time
        would have run out.
        """
        feed = self.started(timeout=2)
        self.bus.heldClaims = []
        self.send("k", 1)
        self.bus.heldClaims.pop(0)[0].callback(True)
        self.clock.advance(3)
        self.assertEqual(len(self.store.held("k")), 1)
        self.assertEqual((feed.v1Claimed, feed.v1Local), (1, {}))

    def test_bounded(self) -> None:
        """
        At most C{maxV1Waiting} datums wait for their claim; beyond, each is
        published at once and counted as C{full}.
        """
        self.assertEqual(MAX_V1_WAITING, 1000)
        feed = self.started(maxV1Waiting=3)
        self.bus.heldClaims = []
        for value in range(5):
            self.send("k", value)
        self.assertEqual(len(self.bus.heldClaims), 3)
        self.assertEqual([d.json for d in self.store.held("k")], [b"3", b"4"])
        self.assertEqual(feed.v1Local, {"full": 2})
        self.assertTrue(self.events.matching("3 version 1 datums wait"))

    def test_stopWaiting(self) -> None:
        """
        Datums waiting for their claim when the server stops are published,
        and added with the outbox.
        """
        feed = self.started()
        self.bus.heldClaims = []
        self.send("k", 1)
        stopped = feed.stopService()
        self.successResultOf(stopped)
        [datum] = self.store.held("k")
        self.assertEqual(self.bus.stream[-1][1][3], datum.id.encode())
        self.assertEqual(feed.v1Local, {"stopped": 1})

    def test_statistics(self) -> None:
        """
        The version 1 figures are in /stats and /metrics.
        """
        feed = self.started()
        self.send("k", 1)
        self.bus.claimed[version1Digest(_SENDER, "k", 2)] = self.clock.seconds() + 1
        self.send("k", 2)
        figures = feed.statistics()["bus"]
        self.assertEqual(
            (figures["busV1Claimed"], figures["busV1Copies"], figures["busV1Local"],
             figures["busV1Waiting"], figures["busStopUnsent"]),
            (1, 1, {}, 0, 0),
        )
        statistics = ServerStatistics(self.clock, Stats(), self.store)
        statistics.add(feed)
        text = metricsText(statistics.figures).decode()
        for name in ("artcast_bus_v1_claimed_total 1.0", "artcast_bus_v1_copies_total 1.0",
                     "artcast_bus_v1_waiting 0.0", "artcast_bus_stop_unsent_total 0.0"):
            self.assertIn(name, text)


class StopTests(SynchronousTestCase):
    """
    L{BusFeed.stopService} adds what the outbox holds first, bounded in time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.bus = FakeBus(self.clock)
        self.events = _Events(self)

    def started(self, **kw: Any) -> BusFeed:
        feed = BusFeed(self.bus, self.handler, self.clock, "redis://fake:1", 1000, **kw)
        self.addCleanup(lambda: feed.running and feed.stopService())
        feed.startService()
        return feed

    def publish(self, count: int) -> None:
        for seq in range(1, count + 1):
            self.store.publish("k", seq, Stamp("src", 1, seq, self.clock.seconds()))

    def test_drained(self) -> None:
        """
        The outbox (past the adds in flight) is added before the stop's
        L{Deferred} fires and the bus is closed.
        """
        feed = self.started()
        self.bus.heldAdds = []
        self.publish(70)
        self.assertEqual((feed._inFlight, len(feed.outbox)), (64, 6))
        stopped = feed.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(feed.state, "stopping")
        self.assertFalse(self.bus.closed)
        self.assertEqual(self.bus.answerAdds(), 70)
        self.successResultOf(stopped)
        self.assertEqual(feed.state, "stopped")
        self.assertTrue(self.bus.closed)
        self.assertEqual(len(self.bus.stream), 70)
        self.assertEqual((feed.added, feed.stopUnsent), (70, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bounded(self) -> None:
        """
        When Redis does not answer, the stop waits C{min(timeout, 2 s)} at
        most, then closes the bus, counting and logging what was not added.
        """
        self.assertEqual(STOP_DRAIN, 2.0)
        feed = self.started()
        self.bus.heldAdds = []
        self.publish(70)
        stopped = feed.stopService()
        self.clock.advance(STOP_DRAIN - 0.01)
        self.assertNoResult(stopped)
        self.clock.advance(0.01)
        self.successResultOf(stopped)
        self.assertTrue(self.bus.closed)
        self.assertEqual(feed.stopUnsent, 70)
        self.assertTrue(self.events.matching("stopping: 70 entries were not added"))
        # Late answers change nothing.
        self.bus.answerAdds()
        self.assertEqual(feed.state, "stopped")

    def test_boundedByTimeout(self) -> None:
        """
        A C{--bus-timeout} shorter than 2 s bounds the stop's wait.
        """
        feed = self.started(timeout=0.5)
        self.bus.heldAdds = []
        self.publish(1)
        stopped = feed.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(feed.stopUnsent, 1)

    def test_failedWhileStopping(self) -> None:
        """
        An add that fails while stopping ends the wait at once.
        """
        feed = self.started()
        self.bus.heldAdds = []
        self.publish(3)
        stopped = feed.stopService()
        waiting = self.bus.heldAdds.pop(0)[0]
        waiting.errback(ResponseError("OOM command not allowed"))
        self.successResultOf(stopped)
        self.assertEqual(feed.stopUnsent, 3)
        self.assertTrue(self.bus.closed)

    def test_down(self) -> None:
        """
        With the bus down, the stop does not wait: what the outbox holds is
        counted as not added.
        """
        feed = self.started()
        self.bus.down = True
        feed._trim()
        self.publish(4)
        self.assertEqual(len(feed.outbox), 4)
        self.successResultOf(feed.stopService())
        self.assertEqual(feed.stopUnsent, 4)
        self.assertTrue(self.bus.closed)

    def test_nothing(self) -> None:
        """
        With nothing to add, the stop is done at once, silently.
        """
        feed = self.started()
        self.publish(2)
        self.successResultOf(feed.stopService())
        self.assertEqual(feed.stopUnsent, 0)
        self.assertEqual(self.events.matching("stopping"), [])


class RedisClaimTests(SynchronousTestCase):
    """
    L{RedisBus.claim} speaks Redis's protocol.
    """

    def test_claim(self) -> None:
        """
        A claim is C{SET artcast:v1:<digest> 1 NX PX <ms>}; C{OK} claims it,
        a null answer says another server did.
        """
        memory = MemoryReactorClock()
        bus = RedisBus(memory, BusAddress("127.0.0.1", 6390, 0), timeout=5)
        self.addCleanup(bus.close)
        claimed = bus.claim(b"ab" * 20, 0.25)
        _, _, factory, _, _ = memory.tcpClients[0]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(
            transport.value(),
            b"*6\r\n$3\r\nSET\r\n$51\r\nartcast:v1:" + b"ab" * 20 + b"\r\n$1\r\n1\r\n"
            b"$2\r\nNX\r\n$2\r\nPX\r\n$3\r\n250\r\n",
        )
        protocol.dataReceived(b"+OK\r\n")
        self.assertTrue(self.successResultOf(claimed))
        claimed = bus.claim(b"ab" * 20, 0.25)
        protocol.dataReceived(b"$-1\r\n")
        self.assertFalse(self.successResultOf(claimed))


class IntegrationTests(TestCase):
    """
    Three real C{twistd artcast} servers on one multicast group and one real
    C{redis-server}.
    """

    timeout = 120

    def setUp(self) -> Any:
        if not os.path.exists(REDIS_SERVER):
            raise self.skipTest(f"{REDIS_SERVER} is not installed")
        self.redis = RedisServer(self)
        return self.redis.start()

    @inlineCallbacks
    def xlen(self) -> Any:
        answer = yield self.redis.command(b"XLEN", b"artcast:datums")
        return int(answer[1:].strip())

    @inlineCallbacks
    def get(self, server: ArtcastProcess, query: str) -> Any:
        response = yield treq.get(f"{server.url}/artcasts/t/v1?{query}", persistent=False)
        body = yield response.content()
        ident = response.headers.getRawHeaders(b"Artcast-Id", [None])[0]
        return (response.code, ident, body)

    @inlineCallbacks
    def sendOnce(self, sender: ArtcastProcess, servers: list[ArtcastProcess], value: int) -> Any:
        """
        Send the version 1 datum C{value} of C{t/v1} until the stream holds
        C{value} entries (sent again only if no server took it: loopback may
        drop a datagram), then wait until every server serves it.
        """
        length = 0
        for attempt in range(5):
            sender.data.sendDatum("t/v1", value)
            deadline = reactor.seconds() + 3
            while reactor.seconds() < deadline:
                length = yield self.xlen()
                if length >= value:
                    break
                yield deferLater(reactor, 0.02, lambda: None)
            if length >= value:
                break
        self.assertEqual(length, value)
        for server in servers:
            yield server.waitFor(lambda s: s["datums"] >= value)

    @inlineCallbacks
    def test_version1Once(self) -> Any:
        """
        Version 1 datagrams sent to one group that three servers on one bus
        hear: each server serves each datum once, all with the same id, and
        the stream holds each once.
        """
        a = yield ArtcastProcess(self, extra=["--bus", self.redis.url]).start()
        servers = [a]
        for _ in range(2):
            other = yield ArtcastProcess(
                self, extra=["--bus", self.redis.url],
                group=a.group, dataPort=a.dataPort, registerPort=a.registerPort,
            ).start()
            servers.append(other)
        count = 12
        yield self.sendOnce(a, servers, 1)
        code, first, body = yield self.get(a, "since=latest")
        self.assertEqual((code, body), (200, b"1"))
        for value in range(2, count + 1):
            yield self.sendOnce(a, servers, value)
        for server in servers:
            yield server.waitFor(
                lambda s: s["bus"]["busV1Waiting"] == 0 and s["bus"]["busOutbox"] == 0
            )
        self.assertEqual((yield self.xlen()), count)
        claimed = 0
        for server in servers:
            stats = yield server.stats()
            self.assertEqual(stats["datums"], count)
            self.assertEqual(stats["bus"]["busV1Local"], {})
            claimed += stats["bus"]["busV1Claimed"]
        self.assertEqual(claimed, count)
        # Each server, from the first datum on: the same ids, each value
        # once, in order, and nothing after the last.
        chains = []
        for server in servers:
            ident, chain = first, [first]
            for value in range(2, count + 1):
                code, ident, body = yield self.get(server, f"since={ident.decode()}&timeout=5")
                self.assertEqual((code, body), (200, b"%d" % (value,)))
                chain.append(ident)
            code, _, _ = yield self.get(server, f"since={ident.decode()}&timeout=0.2")
            self.assertEqual(code, 204)
            chains.append(chain)
        self.assertEqual(chains[0], chains[1])
        self.assertEqual(chains[0], chains[2])
        self.assertEqual(len(set(chains[0])), count)
