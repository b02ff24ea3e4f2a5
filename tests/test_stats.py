"""
Tests for L{artcast.server.stats} and the C{/stats} and C{/metrics} resources.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from artcast.server.store import KeyStore
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.stats import (
    Meter,
    Networks,
    ServerStatistics,
    Stats,
    residentMemory,
    statsPage,
)
from artcast.server.routes import ArtcastApp
from artcast.wire import Stamp, encodeData


class MeterTests(SynchronousTestCase):
    """
    L{Meter} gives a rate over about the last minute.
    """

    def test_rate(self) -> None:
        """
        The rate is the counter's growth over the time between samples.
        """
        clock = Clock()
        count = [0]
        meter = Meter(clock, lambda: count[0], window=60)
        clock.advance(10)
        count[0] = 50
        self.assertEqual(meter.rate(), 5.0)

    def test_window(self) -> None:
        """
        Samples older than the window stop counting.
        """
        clock = Clock()
        count = [0]
        meter = Meter(clock, lambda: count[0], window=60)
        for _ in range(10):
            meter.sample()
            clock.advance(30)
            count[0] += 300
        count[0] += 0
        self.assertAlmostEqual(meter.rate(), 10.0)
        self.assertLessEqual(len(meter._samples), 4)


class NetworksTests(SynchronousTestCase):
    """
    L{Networks} limits who may see the statistics.
    """

    def test_allows(self) -> None:
        """
        Addresses inside a listed network are allowed, others not; IPv4-mapped
        IPv6 addresses count as IPv4.
        """
        networks = Networks.parse("127.0.0.0/8, 10.1.0.0/16,::1")
        self.assertTrue(networks.allows("127.0.0.1"))
        self.assertTrue(networks.allows("10.1.2.3"))
        self.assertTrue(networks.allows("::ffff:10.1.2.3"))
        self.assertTrue(networks.allows("::1"))
        self.assertFalse(networks.allows("10.2.0.1"))
        self.assertFalse(networks.allows("192.0.2.1"))

    def test_bad(self) -> None:
        """
        Something that is not a network is refused.
        """
        self.assertRaises(ValueError, Networks.parse, "10.0.0.0/33")
        self.assertRaises(ValueError, Networks.parse, "nowhere")


class ResourceTests(SynchronousTestCase):
    """
    C{/stats}, C{/stats.json} and C{/metrics}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock)
        self.counters = Stats()
        self.handler = DatagramHandler(self.store, self.clock, self.counters)
        self.app = ArtcastApp(self.store, self.clock, stats=self.counters)
        self.stub = StubTreq(self.app.resource())

    def get(self, path: str, accept: str | None = None):
        d = self.stub.get(
            "http://artcast.example" + path,
            headers={"Accept": accept} if accept else None,
        )
        self.stub.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def test_json(self) -> None:
        """
        C{/stats.json} counts datums, drops by reason and waiting clients per
        key.
        """
        self.handler.dataReceived(b'["k", 1]', ("127.0.0.1", 1))
        self.handler.dataReceived(b"junk", ("127.0.0.1", 1))
        self.store.next("k")
        self.store.next("k")
        self.store.next("a/*")
        self.clock.advance(10)
        _, body = self.get("/stats.json")
        stats = json.loads(body)
        self.assertEqual(stats["datums"], 1)
        self.assertEqual(stats["dropped"], {"not-json": 1})
        self.assertEqual(stats["waiting"], 3)
        self.assertEqual(stats["waiting_per_key"], {"k": 2, "a/*": 1})
        self.assertEqual(stats["streams_open"], {})
        self.assertEqual(stats["uptime"], 10)
        self.assertGreater(stats["memory"], 0)

    def test_html(self) -> None:
        """
        C{/stats} for a browser is a page, with what sources control escaped.
        """
        self.store.next("<b>")
        response, body = self.get("/stats", "text/html")
        self.assertIn(b"<h1>Artcast statistics</h1>", body)
        self.assertIn(b"&lt;b&gt;", body)

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text that its parser reads, with drops by
        reason.
        """
        self.handler.dataReceived(b"\xff", ("127.0.0.1", 1))
        self.handler.dataReceived(b'["k", 1]', ("127.0.0.1", 1))
        response, body = self.get("/metrics")
        families = {
            family.name: family
            for family in text_string_to_metric_families(body.decode())
        }
        self.assertEqual(families["artcast_datums"].samples[0].value, 1)
        [dropped] = families["artcast_dropped"].samples
        self.assertEqual((dropped.labels, dropped.value), ({"reason": "not-utf8"}, 1))
        self.assertIn("artcast_waiting_requests", families)
        self.assertIn("artcast_streams_dropped", families)

    def test_repair(self) -> None:
        """
        The repair engine's figures are C{/stats.json}'s C{"repair"} object
        and C{/metrics}' per-source counters, with the totals unlabelled.
        """
        statistics = ServerStatistics(self.clock, self.counters, self.store,
                                      parts=[self.handler.repair])
        self.stub = StubTreq(ArtcastApp(self.store, self.clock, statistics=statistics).resource())
        for seq in (1, 3):
            [datagram] = encodeData("k", seq, Stamp("oslo", 7, seq, 0.0), repairable=True)
            self.handler.dataReceived(datagram, ("127.0.0.1", 1))
        _, body = self.get("/stats.json")
        repair = json.loads(body)["repair"]
        self.assertEqual(repair["enabled"], True)
        self.assertEqual(repair["repairGaps"], 1)
        self.assertEqual(repair["repairHeld"], 1)
        self.assertEqual(repair["repairLatency"], {"count": 0, "p50": None, "p99": None})
        self.assertEqual(repair["sources"], {"oslo": {
            "repairGaps": 1, "nacksSent": 0, "nacksSuppressed": 0,
            "repairsReceived": 0, "unrecoverable": 0}})
        _, body = self.get("/metrics")
        families = {
            family.name: family
            for family in text_string_to_metric_families(body.decode())
        }
        samples = {
            tuple(sample.labels.items()): sample.value
            for sample in families["artcast_repair_gaps"].samples
        }
        self.assertEqual(samples, {(): 1, (("source", "oslo"),): 1})
        for name in ("nacks_sent", "nacks_suppressed", "repairs_received", "unrecoverable"):
            self.assertIn(f"artcast_{name}", families)
        response, body = self.get("/stats", "text/html")
        self.assertIn(b"<h2>Repair</h2>", body)

    def test_forbidden(self) -> None:
        """
        Outside the allowed networks, C{/stats} and C{/metrics} are 403.
        """
        app = ArtcastApp(
            self.store, self.clock, statsNetworks=Networks.parse("10.9.9.0/24")
        )
        self.stub = StubTreq(app.resource())
        for path in ("/stats", "/stats.json", "/metrics"):
            response, _ = self.get(path)
            self.assertEqual(response.code, 403, path)


class Figures:
    """
    A part with figures of its own.
    """

    def __init__(self, figures: dict) -> None:
        self.figures = figures

    def statistics(self) -> dict:
        return dict(self.figures)


class ServerStatisticsTests(SynchronousTestCase):
    """
    L{ServerStatistics} gathers the figures C{/stats} shows.
    """

    def test_order(self) -> None:
        """
        The counters' and the store's figures come first, then each part's in
        the order the parts were given or added, then the identity; a later
        part's figure of the same name wins.
        """
        clock = Clock()
        store = KeyStore(clock)
        statistics = ServerStatistics(
            clock, Stats(), store, [Figures({"first": 1, "shared": 1})],
            identity={"worker": 3},
        )
        statistics.add(Figures({"second": 2, "shared": 2}))
        clock.advance(5)
        figures = statistics.figures()
        names = list(figures)
        self.assertEqual(
            names[:13],
            ["uptime", "waiting", "keys", "datagrams", "datums", "datums_per_second",
             "registrations", "missed", "memory", "keys_evicted", "dropped", "sources",
             "waiting_per_key"],
        )
        self.assertEqual(names[13:-4], list(store.statistics()))
        self.assertEqual(names[-4:], ["first", "shared", "second", "worker"])
        self.assertEqual((figures["shared"], figures["uptime"]), (2, 5))

    def test_app(self) -> None:
        """
        The application's C{/stats.json} shows the figures of the
        L{ServerStatistics} it is given, parts included.
        """
        clock = Clock()
        store = KeyStore(clock)
        statistics = ServerStatistics(clock, Stats(), store, [Figures({"mine": 7})])
        app = ArtcastApp(store, clock, statistics=statistics)
        self.assertIs(app.serverStatistics, statistics)
        stub = StubTreq(app.resource())
        d = stub.get("http://artcast.example/stats.json")
        stub.flush()
        body = self.successResultOf(self.successResultOf(d).content())
        self.assertEqual(json.loads(body)["mine"], 7)


class PageTests(SynchronousTestCase):
    """
    L{statsPage} renders any figures.
    """

    def test_memory(self) -> None:
        """
        The resident memory of this process is a plausible number of bytes.
        """
        self.assertGreater(residentMemory(), 1_000_000)

    def test_render(self) -> None:
        """
        Scalars and tables are shown.
        """
        page = statsPage({"uptime": 1.5, "dropped": {"not-json": 3}})
        self.assertIn(b"not-json", page)
        self.assertIn(b"1.5", page)
