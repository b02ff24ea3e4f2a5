# -*- test-case-name: tests.test_charts -*-
"""
The live chart of a key's page and the C{/artcasts} dashboard
(L{artcast.server.outlets.pages}): the HTML the server makes, then the pages
in headless Chromium against a real server, with screenshots written to the
test's output folder (C{_trial_temp/screenshots/}).

The browser tests skip when Chromium is not installed (on Debian:
C{apt-get install -y chromium}).
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from artcast.server.outlets import pages
from artcast.server.store import KeyStore
from tests.test_browser import chromium, dumpDOM, runChromium
from tests.harness import ArtcastProcess
from tests.test_web import AppMixin

log = Logger()

_CONFIG = re.compile(rb"var config = (.*?);\n", re.S)


def embedded(page: bytes) -> Any:
    """
    The configuration a page's script was given, decoded.
    """
    [config] = _CONFIG.findall(page)
    return json.loads(config)


class ChartHTMLTests(SynchronousTestCase):
    """
    What the server embeds in a key's live page and the dashboard.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = KeyStore(self.clock, history=500, maxBytes=50_000_000)

    def page(self, key: str) -> bytes:
        return pages.livePage(
            key, self.store.latest(key),
            self.store.recent(key, pages.CHART_POINTS), self.clock.seconds(),
        )

    def test_numbers(self) -> None:
        """
        A key of numbers embeds its last values with their times, and the id
        of the latest, which the page follows from.
        """
        for n in range(5):
            self.store.publish("t", n * 1.5)
            self.clock.advance(2)
        config = embedded(self.page("t"))
        self.assertEqual([value for _, value in config["history"]], [0, 1.5, 3, 4.5, 6])
        self.assertEqual(config["history"][0][0], 1_700_000_000_000)
        self.assertEqual(config["history"][1][0] - config["history"][0][0], 2000)
        self.assertEqual(config["lastId"], self.store.latest("t").id)
        self.assertEqual(config["now"], 1_700_000_010_000)

    def test_capped(self) -> None:
        """
        Only the last L{pages.CHART_POINTS} values are embedded, and none
        past L{pages.CHART_BYTES} of JSON: older ones are left out.
        """
        for n in range(pages.CHART_POINTS + 50):
            self.store.publish("t", n)
        history = embedded(self.page("t"))["history"]
        self.assertEqual([v for _, v in history], list(range(50, 150)))
        big = {"n": 1, "pad": "x" * (pages.CHART_BYTES // 4 - 100)}
        for n in range(10):
            self.store.publish("big", dict(big, n=n))
        page = self.page("big")
        self.assertEqual([v for _, v in embedded(page)["history"]],
                         [{"n": 6}, {"n": 7}, {"n": 8}, {"n": 9}])
        self.assertLess(len(page), 2 * pages.CHART_BYTES)

    def test_objects(self) -> None:
        """
        Of an object only numeric top-level fields are embedded, the first
        L{pages.CHART_SERIES} names met; booleans, strings and arrays are not.
        """
        self.store.publish("o", {"a": 1, "ok": True, "s": "x", "l": [1], "b": 2.5})
        self.store.publish("o", {f"f{n}": n for n in range(10)})
        history = [v for _, v in embedded(self.page("o"))["history"]]
        self.assertEqual(history, [{"a": 1, "b": 2.5},
                                   {"f0": 0, "f1": 1, "f2": 2, "f3": 3}])

    def test_notNumeric(self) -> None:
        """
        A key of strings, booleans or arrays embeds no chart data, and a
        pattern none at all; the latest value is shown as text.
        """
        for value in ["12", True, [1, 2], None, {"s": "x"}]:
            self.store.publish("s", value)
        self.store.publish("n/a", 3)
        self.assertEqual(embedded(self.page("s"))["history"], [])
        config = embedded(self.page("n/*"))
        self.assertEqual((config["history"], config["chart"]), ([], False))
        self.assertIn(b'<code id="matched">n/a</code>', self.page("n/*"))
        self.assertIn(b'<div id="value">{&quot;s&quot;: &quot;x&quot;}</div>'
                      .replace(b": ", b":"), self.page("s"))

    def test_escaped(self) -> None:
        """
        Hostile keys, field names and values never close the script or make
        markup: they are embedded with C{<}, C{>} and C{&} escaped.
        """
        key = "x/</script><script>alert(1)</script>"
        self.store.publish(key, {"</script><b>&": 1})
        self.store.publish(key, {"</script><b>&": 2, "v": "</script><i>"})
        page = self.page(key)
        script = page.split(b"<script>", 1)[1]
        self.assertEqual(script.count(b"</script>"), 1)
        self.assertNotIn(b"<b>", page)
        self.assertNotIn(b"<i>", page)
        self.assertEqual(embedded(page)["history"][1][1], {"</script><b>&": 2})
        self.assertIn(html.escape('"</script><i>"').encode(), page)

    def test_hugeLatest(self) -> None:
        """
        A huge latest value is shown cut at L{pages.LATEST_TEXT} characters,
        and is not charted.
        """
        self.store.publish("h", "y" * (3 * pages.LATEST_TEXT))
        page = self.page("h")
        self.assertIn(b"y" * pages.LATEST_TEXT + "\u2026".encode(), page)
        self.assertNotIn(b"y" * (pages.LATEST_TEXT + 1), page)

    def test_dashboard(self) -> None:
        """
        The dashboard shows each key's current value cut at
        L{pages.DASHBOARD_TEXT} characters and escaped, and follows all keys
        from the latest datum it shows.
        """
        self.store.publish("a", "<b>" + "z" * 500)
        self.store.publish("b", {"n": 1})
        self.store.register("c", {"description": "no value yet"})
        latest = {k: self.store.latest(k) for k in "ab"}
        page = pages.listPage([{"key": "a"}, {"key": "b"}, {"key": "c"}], latest)
        self.assertIn(b'<td class="value">&lt;b&gt;' + b"z" * 117 + "\u2026".encode() + b"</td>",
                      page)
        self.assertIn(b'<td class="value">{&quot;n&quot;:1}</td>', page)
        self.assertIn(b'<td class="changed"></td>', page)
        config = embedded(page)
        self.assertEqual(config["url"], "/artcasts/...")
        self.assertEqual(config["lastId"], self.store.latest("b").id)
        self.assertNotIn(b"<b>", page)

    def test_recent(self) -> None:
        """
        L{KeyStore.recent} gives a key's last datums, oldest first, and
        nothing for a pattern or an unknown key.
        """
        for n in range(5):
            self.store.publish("k", n)
        self.assertEqual([d.value for d in self.store.recent("k", 3)], [2, 3, 4])
        self.assertEqual(self.store.recent("k", 0), [])
        self.assertEqual(self.store.recent("*", 3), [])
        self.assertEqual(self.store.recent("nothing", 3), [])


def _points(dom: bytes) -> dict[str, int]:
    """
    The number of points of each polyline of a chart, by its field.
    """
    lines = {}
    for tag in re.findall(rb"<polyline[^>]*>", dom):
        [field] = re.findall(rb'data-field="([^"]*)"', tag)
        [points] = re.findall(rb'points="([^"]*)"', tag)
        lines[html.unescape(field.decode())] = len(points.split())
    return lines


def _opened(stats: dict[str, Any]) -> int:
    return sum(stats["streams_opened"].values())


def _text(dom: bytes, id: str) -> str:
    [found] = re.findall(rb'id="' + id.encode() + rb'"[^>]*>([^<]*)<', dom)
    return html.unescape(found.decode())


class ChartBrowserTests(TestCase):
    """
    The chart and the dashboard in headless Chromium, against a real server.
    """

    timeout = 120

    def setUp(self) -> None:
        if chromium() is None:
            raise SkipTest("Chromium is not installed (apt-get install -y chromium)")

    @inlineCallbacks
    def send(self, proc: ArtcastProcess, key: str, values: list[Any]) -> Any:
        """
        Send values one at a time, each once the server holds the one before
        (so that loopback drops none in a burst).
        """
        stats = yield proc.stats()
        count = stats["datums"]
        for value in values:
            proc.data.sendDatum(key, value)
            count += 1
            yield proc.waitFor(lambda s, count=count: s["datums"] >= count)

    @inlineCallbacks
    def openLive(self, proc: ArtcastProcess, path: str, key: str, more: list[Any]) -> Any:
        """
        Load a page, send C{more} once its stream is open, then stop the
        server so that Chromium's virtual time runs out; the DOM.
        """
        opened = _opened((yield proc.stats()))
        dom, _ = dumpDOM(self, proc.url + path)
        yield proc.waitFor(lambda s: _opened(s) > opened)
        yield self.send(proc, key, more)
        yield proc.stop()
        return (yield dom)

    @inlineCallbacks
    def screenshot(self, url: str, name: str) -> Any:
        """
        A screenshot of a page, 1000 by 700, in C{screenshots/} of the test
        run's folder; its path, logged.
        """
        folder = os.path.abspath("screenshots")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name + ".png")
        if os.path.exists(path):
            os.remove(path)
        done, _ = runChromium(self, url, [
            "--hide-scrollbars", "--window-size=1000,700",
            "--screenshot=" + path,
        ])
        yield done
        log.info("Screenshot of {url}: {path}", url=url, path=path)
        with open(path, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 10_000)
        return path

    @inlineCallbacks
    def test_numbers(self) -> Any:
        """
        The page of a key of numbers draws its history and the values that
        follow, each once, with the minimum and maximum as labels.
        """
        proc = yield ArtcastProcess(self).start()
        yield self.send(proc, "plant/temperature", [20 + (n % 7) * 0.5 for n in range(20)])
        yield self.screenshot(proc.url + "/artcasts/plant/temperature", "chart-numbers")
        dom = yield self.openLive(proc, "/artcasts/plant/temperature",
                                  "plant/temperature", [17.25, 24])
        self.assertEqual(_points(dom), {"": 22})
        self.assertEqual((_text(dom, "ymin"), _text(dom, "ymax")), ("17.25", "24"))
        self.assertEqual(_text(dom, "value"), "24")
        self.assertNotIn(b'id="legend"><span', dom)

    @inlineCallbacks
    def test_objects(self) -> Any:
        """
        The page of a key of objects draws one line per numeric field, with
        a legend naming them as text; strings and booleans are not drawn.
        """
        proc = yield ArtcastProcess(self).start()
        key = "plant/air"
        values = [{"temperature": 18 + n % 5, "humidity": 40 + (n * 3) % 11,
                   "<b>co2</b>": 4 + n % 3, "ok": True, "room": "hall"}
                  for n in range(15)]
        yield self.send(proc, key, values)
        yield self.screenshot(proc.url + "/artcasts/plant/air", "chart-objects")
        dom = yield self.openLive(proc, "/artcasts/plant/air", key,
                                  [{"temperature": 30, "humidity": 41, "ok": False}])
        self.assertEqual(_points(dom), {"temperature": 16, "humidity": 16, "<b>co2</b>": 15})
        self.assertEqual((_text(dom, "ymin"), _text(dom, "ymax")), ("4", "50"))
        self.assertIn(b"&lt;b&gt;co2&lt;/b&gt;</span>", dom)
        self.assertNotIn(b"<b>", dom)

    @inlineCallbacks
    def test_dashboard(self) -> Any:
        """
        The dashboard shows each key's current value; a value that changes
        and a key that appears while it is open are shown live.
        """
        proc = yield ArtcastProcess(self).start()
        proc.register.send(json.dumps(
            ["plant/temperature", {"description": "Hall temperature, \u00b0C"}]).encode())
        yield self.send(proc, "plant/temperature", [20.5])
        yield self.send(proc, "plant/air", [{"temperature": 19, "humidity": 44}])
        yield self.send(proc, "plant/door", ["closed"])
        yield self.send(proc, "plant/log", ["x" * 400])
        yield self.screenshot(proc.url + "/artcasts", "dashboard")
        dom = yield self.openLive(proc, "/artcasts", "plant/door", ["open"])
        proc2 = yield ArtcastProcess(self).start()
        yield self.send(proc2, "a/first", [1])
        yield self.send(proc2, "c/last", [5])
        dom2 = yield self.openLive(proc2, "/artcasts", "b/new", [2])
        rows = dict(re.findall(
            rb'<code>([^<]*)</code></a></td><td class="value">([^<]*)</td>', dom))
        self.assertEqual(rows[b"plant/door"], b"open")
        self.assertEqual(rows[b"plant/temperature"], b"20.5")
        self.assertEqual(rows[b"plant/log"], b"x" * 120 + "\u2026".encode())
        self.assertIn(b"Hall temperature, \xc2\xb0C", dom)
        rows2 = re.findall(
            rb'<code>([^<]*)</code></a></td><td class="value">([^<]*)</td>', dom2)
        self.assertEqual(rows2, [(b"a/first", b"1"), (b"b/new", b"2"), (b"c/last", b"5")])


class PageRouteTests(AppMixin, SynchronousTestCase):
    """
    The pages as the app serves them: what it embeds, and how often it makes
    the dashboard again.
    """

    def html(self, path: str) -> bytes:
        response, body = self.answer(self.get(path, {"Accept": "text/html"}))
        self.assertEqual(response.code, 200)
        return body

    def test_liveChart(self) -> None:
        """
        A key's page embeds its history, the id of its latest datum and the
        server's time.
        """
        self.clock.advance(100)
        for n in range(3):
            self.store.publish("k", n)
        config = embedded(self.html("/artcasts/k"))
        self.assertEqual([v for _, v in config["history"]], [0, 1, 2])
        self.assertEqual(config["lastId"], self.store.latest("k").id)
        self.assertEqual(config["now"], 100_000)

    def test_dashboardRefresh(self) -> None:
        """
        The dashboard is made again for a datum at most once a second (its
        live part resumes from the id it shows), and at once for a new key.
        """
        self.clock.advance(100)
        self.store.publish("k", 1)
        first = self.html("/artcasts")
        self.store.publish("k", 2)
        self.assertEqual(self.html("/artcasts"), first)
        self.clock.advance(1)
        second = self.html("/artcasts")
        self.assertIn(b'<td class="value">2</td>', second)
        self.assertEqual(embedded(second)["lastId"], self.store.latest("k").id)
        self.store.publish("new", 3)
        self.assertIn(b'<td class="value">3</td>', self.html("/artcasts"))
