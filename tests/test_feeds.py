"""
Tests for the feeds as a whole (L{artcast.server.interfaces.IFeed}) and for
L{artcast.server.feeds.demo}: the C{--demo} feed, and the feeds and outlet
that L{artcast.server.tap.makeService} puts in the service tree.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from artcast.server import tap
from artcast.server.feeds.demo import DemoFeed
from artcast.server.feeds.multicast import DatagramHandler, MulticastFeed
from artcast.server.feeds.publish import HTTPPublisher
from artcast.server.interfaces import IFeed, IOutlet
from artcast.server.outlets.multicast import MulticastOutlet
from artcast.server.store import KeyStore

TOKEN = "s3cr3t-t0ken-0123456789abcdef"


class _Port:
    """
    A UDP port that stops at once.
    """

    def setTTL(self, ttl: int) -> None:
        pass

    def setLoopbackMode(self, mode: bool) -> None:
        pass

    def setOutgoingInterface(self, address: str) -> Deferred[None]:
        return succeed(None)

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        pass

    def stopListening(self) -> None:
        pass


class _MulticastReactor(MemoryReactorClock):
    """
    A memory reactor that also listens on fake multicast ports.
    """

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        return _Port()


class DemoFeedTests(SynchronousTestCase):
    """
    L{DemoFeed} is the feed of the two test artcasts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(self.store, self.clock)
        self.feed = DemoFeed(self.handler, self.clock)

    def test_interface(self) -> None:
        """
        A L{DemoFeed} provides L{IFeed}, named C{demo}, with no figures of its
        own in C{/stats}.
        """
        self.assertTrue(verifyObject(IFeed, self.feed))
        self.assertEqual(self.feed.name, "demo")
        self.assertEqual(self.feed.statistics(), {})

    def test_startAndStop(self) -> None:
        """
        Started, the feed registers both artcasts and ticks once a second
        through its handler; stopped, it sends nothing more.
        """
        self.feed.startService()
        self.assertEqual(self.store.latest("test/tick").value, 1)
        self.assertEqual(self.store.metadata("test/now")["license"]["title"],
                         "CC0 1.0 Universal")
        self.clock.advance(1)
        self.assertEqual(self.store.latest("test/tick").value, 2)
        self.assertEqual(self.handler.stats.datums, 4)
        self.feed.stopService()
        self.clock.advance(5)
        self.assertEqual(self.store.latest("test/tick").value, 2)


class ServiceTreeTests(SynchronousTestCase):
    """
    L{tap.makeService} builds the feeds and the outlet into the service tree.
    """

    def test_feeds(self) -> None:
        """
        With publishing and C{--demo}, the tree holds the publish, multicast
        and demo feeds, each an L{IFeed}, all sharing one handler; the
        publisher's only child is its L{MulticastOutlet}, which starts and
        stops with it.
        """
        tokens = self.mktemp()
        with open(tokens, "w") as f:
            f.write(TOKEN + "\n")
        options = tap.Options()
        options.parseOptions(["--publish-token-file", tokens, "--demo",
                              "--error-log", "-"])
        top = tap.makeService(options, reactor=_MulticastReactor())
        feeds = [child for child in top if IFeed.providedBy(child)]
        self.assertEqual([feed.name for feed in feeds], ["publish", "multicast", "demo"])
        for feed in feeds:
            self.assertTrue(verifyObject(IFeed, feed))
        publisher, multicast, demo = feeds
        self.assertIsInstance(publisher, HTTPPublisher)
        self.assertIsInstance(multicast, MulticastFeed)
        self.assertIs(demo.handler, multicast.handler)
        [outlet] = list(publisher)
        self.assertIsInstance(outlet, MulticastOutlet)
        self.assertTrue(verifyObject(IOutlet, outlet))
        self.assertTrue(IService.providedBy(outlet))
        self.assertIs(publisher.outlet, outlet)
        self.assertIn(outlet.src, multicast.handler.ownSources)
        publisher.startService()
        self.assertTrue(outlet.running)
        publisher.stopService()
        self.assertFalse(outlet.running)
