# -*- test-case-name: tests.test_pagenoise -*-
"""
The pages' noise of issue 14: a key page with no value says why and how to
send one, a pattern page's heading stays the pattern, and C{/stats} (HTML)
shows units and loads itself again; first as HTML, then in headless
Chromium against a real server (skipped when Chromium is not installed).
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from artcast.server.outlets import pages
from artcast.server.routes import ArtcastApp
from artcast.server.stats import statsPage, withUnit
from artcast.server.store import KeyStore
from tests.harness import ArtcastProcess
from tests.test_browser import chromium, dumpDOM
from tests.test_charts import _opened, _text
from tests.test_web import AppMixin


def group(interface: str = "127.0.0.1") -> dict[str, Any]:
    """
    The figures of a data group that heard nothing yet.
    """
    return {
        "group": "239.255.10.1", "port": 11111, "interface": interface,
        "carries": "datums", "datagrams": 0, "last_datagram": None,
        "last_datagram_ago": None,
    }


def heading(page: bytes) -> str:
    """
    The text of a page's C{h1}.
    """
    [found] = re.findall(rb"<h1>(.*?)</h1>", page, re.S)
    return html.unescape(re.sub(rb"<[^>]*>", b"", found).decode())


class WaitingHintTests(AppMixin, SynchronousTestCase):
    """
    A key's page while the server holds no value for it.
    """

    def options(self) -> dict:
        return {"listening": lambda: {"data": group()}}

    def html(self, path: str) -> bytes:
        response, body = self.answer(self.get(path, {"Accept": "text/html"}))
        self.assertEqual(response.code, 200)
        return body

    def test_hint(self) -> None:
        """
        The page says nothing arrived for the key since the server started,
        with an artcast-send line naming this server's group, port and
        loopback interface with --ttl 0, and where to read more.
        """
        page = self.html("/artcasts/plant/door").decode("utf-8")
        self.assertIn(
            "Nothing has arrived for <code>plant/door</code> since the server started.", page)
        self.assertIn(
            "<pre><code>artcast-send --group 239.255.10.1 --port 11111 "
            "--interface 127.0.0.1 --ttl 0 plant/door 42</code></pre>", page)
        self.assertIn("docs/running.md#nothing-arrives", page)
        self.assertIn('<a href="/artcasts">/artcasts</a>', page)

    def test_noHintWithValue(self) -> None:
        """
        A key with a value gets no hint.
        """
        self.store.publish("plant/door", "open")
        self.assertNotIn(b'id="hint"', self.html("/artcasts/plant/door"))

    def test_escaped(self) -> None:
        """
        A key that looks like markup shows as text in the hint, and is quoted
        for the shell in its command.
        """
        page = self.html("/artcasts/%3Cscript%3Ealert(1)%3C%2Fscript%3E").decode("utf-8")
        self.assertEqual(page.count("<script"), 1)
        self.assertIn("<code>&lt;script&gt;alert(1)&lt;/script&gt;</code> since", page)
        self.assertIn("--ttl 0 &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27; 42", page)

    def test_sendLine(self) -> None:
        """
        The command names no interface for a server on every interface and
        adds --ttl 0 only on loopback; a pattern's levels become example.
        """
        self.assertEqual(
            pages.sendLine(group("0.0.0.0"), "a/b"),
            "artcast-send --group 239.255.10.1 --port 11111 a/b 42")
        self.assertEqual(
            pages.sendLine(group("192.0.2.2"), "a/*/..."),
            "artcast-send --group 239.255.10.1 --port 11111 --interface 192.0.2.2 "
            "a/example/example 42")
        self.assertEqual(pages.sendLine(None, "it's"), "artcast-send 'it'\"'\"'s' 42")

    def test_pattern(self) -> None:
        """
        A pattern's page with nothing yet says so of any key matching it.
        """
        page = self.html("/artcasts/plant/*").decode("utf-8")
        self.assertIn("Nothing has arrived for any key matching <code>plant/*</code>", page)
        self.assertIn("--ttl 0 plant/example 42", page)

    def test_dashboard(self) -> None:
        """
        The dashboard with no key yet says nothing arrived and how to send one.
        """
        page = self.html("/artcasts").decode("utf-8")
        self.assertIn('<tr id="empty"><td colspan="7">No artcasts yet: nothing has arrived', page)
        self.assertIn("--interface 127.0.0.1 --ttl 0 greeting 42", page)


class PatternHeadingTests(SynchronousTestCase):
    """
    A pattern's page: its heading is the pattern, the key beside the value.
    """

    def setUp(self) -> None:
        self.store = KeyStore(Clock())

    def test_heading(self) -> None:
        """
        The heading is the pattern, not the key of the latest value, which
        is shown above the value.
        """
        self.store.publish("weather/oslo", 3)
        page = pages.livePage("weather/*", self.store.latest("weather/*"))
        self.assertEqual(heading(page), "weather/*")
        self.assertIn(b'<p id="from">from <code id="matched">weather/oslo</code></p>', page)
        self.assertIn(b'"pattern": true', page)

    def test_keyPage(self) -> None:
        """
        A key's page has the key as its heading, and no line naming it again.
        """
        self.store.publish("weather/oslo", 3)
        page = pages.livePage("weather/oslo", self.store.latest("weather/oslo"))
        self.assertEqual(heading(page), "weather/oslo")
        self.assertIn(b'<p id="from" hidden>', page)
        self.assertIn(b'"pattern": false', page)


class StatsUnitsTests(SynchronousTestCase):
    """
    C{/stats} as HTML: units, and a page that loads itself again.
    """

    def test_units(self) -> None:
        """
        Seconds, bytes (B, KiB, MiB) and rates carry their unit; counts none.
        """
        page = statsPage({
            "uptime": 12.3456, "memory": 50_000_000, "store_bytes": 1536,
            "store_bytes_max": 100, "datums_per_second": 3.5, "keys": 12000,
            "dropped": {"not-json": 3},
            "repair": {"repairLatency": {"count": 2, "p50": 0.012, "p99": None}},
        }).decode("utf-8")
        for row in [("uptime", "12.346 s"), ("memory", "47.7 MiB"),
                    ("store_bytes", "1.5 KiB"), ("store_bytes_max", "100 B"),
                    ("datums_per_second", "3.5/s"), ("keys", "12,000"),
                    ("not-json", "3"),
                    ("repairLatency", "count: 2, p50: 0.012 s, p99: none")]:
            self.assertIn('<tr><th>%s</th><td class="n">%s</td></tr>' % row, page)
        self.assertEqual(withUnit("last_datagram_ago", 3), "3 s")

    def test_refresh(self) -> None:
        """
        The page loads itself again every 2 seconds.
        """
        page = statsPage({"uptime": 1.0}).decode("utf-8")
        self.assertIn('<meta http-equiv="refresh" content="2">', page)

    def test_jsonUnchanged(self) -> None:
        """
        C{/stats.json} still has bare numbers: the units are the HTML page's.
        """
        clock = Clock()
        stub = StubTreq(ArtcastApp(KeyStore(clock), clock).resource())
        d = stub.get("http://artcast.example/stats.json")
        stub.flush()
        figures = json.loads(self.successResultOf(self.successResultOf(d).content()))
        self.assertIsInstance(figures["uptime"], (int, float))
        self.assertIsInstance(figures["memory"], int)


class PageNoiseBrowserTests(TestCase):
    """
    The hint and the pattern's heading in headless Chromium, against a real
    server.
    """

    timeout = 120

    def setUp(self) -> None:
        if chromium() is None:
            raise SkipTest("Chromium is not installed (apt-get install -y chromium)")

    @inlineCallbacks
    def test_hintGoesHeadingStays(self) -> None:
        """
        A pattern page opened with no value shows the hint; once values of
        two keys arrive, the hint is gone, the heading is still the pattern
        and the last value is shown with its key.
        """
        proc = yield ArtcastProcess(self).start()
        opened = _opened((yield proc.stats()))
        dom, _ = dumpDOM(self, proc.url + "/artcasts/weather/*")
        yield proc.waitFor(lambda s: _opened(s) > opened)
        count = (yield proc.stats())["datums"]
        for key, value in [("weather/oslo", 3), ("weather/bergen", "rain")]:
            proc.data.sendDatum(key, value)
            count += 1
            yield proc.waitFor(lambda s, count=count: s["datums"] >= count)
        yield proc.stop()
        dom = yield dom
        self.assertNotIn(b'id="hint"', dom)
        self.assertEqual(heading(dom), "weather/*")
        self.assertEqual(_text(dom, "matched"), "weather/bergen")
        self.assertEqual(_text(dom, "value"), "rain")
        self.assertIn(b'<p id="from">', dom)

    @inlineCallbacks
    def test_hintShown(self) -> None:
        """
        A key page with no value shows, in the browser, the hint with the
        real server's own group, port and interface.
        """
        proc = yield ArtcastProcess(self).start()
        stats = yield proc.stats()
        data = stats["listening"]["data"]
        dom, _ = dumpDOM(self, proc.url + "/artcasts/plant/door")
        yield proc.waitFor(lambda s: _opened(s) > _opened(stats))
        yield proc.stop()
        dom = yield dom
        self.assertIn(b'id="hint"', dom)
        self.assertIn(
            ("artcast-send --group %s --port %d --interface %s --ttl 0 plant/door 42"
             % (data["group"], data["port"], data["interface"])).encode(), dom)
