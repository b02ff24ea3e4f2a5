# -*- test-case-name: tests.test_script -*-
"""
C{GET /artcast.js}: the browser client the server serves.  Its behaviour in
a browser is checked in L{tests.test_browser.ScriptBrowserTests}.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib.resources import files
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File

from artcast.server.routes import SCRIPT
from tests.harness import ROOT, ArtcastProcess, PacedSender
from tests.test_browser import chromium, dumpDOM, streamsOpen
from tests.test_esp32 import loopbackSource
from tests.test_web import AppMixin

#: The page of the docs (docs/clients.md) the browser test loads.
EXAMPLE = os.path.join(ROOT, "examples", "browser", "follow.html")


class ScriptRouteTests(AppMixin, SynchronousTestCase):
    """
    The route serving L{SCRIPT}.
    """

    def test_served(self) -> None:
        """
        C{GET /artcast.js} answers the package's C{artcast.js} as JavaScript,
        with its length, CORS, a weak ETag and an hour of caching.
        """
        response, body = self.answer(self.get("/artcast.js"))
        headers = response.headers
        self.assertEqual(response.code, 200)
        self.assertEqual(body, SCRIPT)
        self.assertEqual(
            body, files("artcast.server.outlets").joinpath("artcast.js").read_bytes())
        self.assertIn(b"Artcast", body)
        self.assertEqual(
            headers.getRawHeaders("Content-Type"), ["text/javascript; charset=utf-8"])
        self.assertEqual(response.length, len(SCRIPT))
        self.assertEqual(headers.getRawHeaders("Access-Control-Allow-Origin"), ["*"])
        [tag] = headers.getRawHeaders("ETag")
        self.assertTrue(tag.startswith('W/"') and tag.endswith('"'), tag)
        self.assertEqual(headers.getRawHeaders("Cache-Control"), ["public, max-age=3600"])

    def test_head(self) -> None:
        """
        C{HEAD /artcast.js} has the same headers and no body.
        """
        response, body = self.answer(self.stub.head("http://artcast.example/artcast.js"))
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(
            response.headers.getRawHeaders("Content-Type"), ["text/javascript; charset=utf-8"])
        self.assertEqual(
            response.headers.getRawHeaders("Content-Length"), [str(len(SCRIPT))])

    def test_notModified(self) -> None:
        """
        C{If-None-Match} naming its ETag (weak or strong form, in a list, or
        C{*}) gets a C{304} with no body; another tag gets the script.
        """
        response, _ = self.answer(self.get("/artcast.js"))
        [tag] = response.headers.getRawHeaders("ETag")
        for match in (tag, tag.removeprefix("W/"), 'W/"other", ' + tag, "*"):
            response, body = self.answer(self.get("/artcast.js", {"If-None-Match": match}))
            self.assertEqual(response.code, 304, match)
            self.assertEqual(body, b"", match)
            self.assertEqual(response.headers.getRawHeaders("ETag"), [tag])
        response, body = self.answer(self.get("/artcast.js", {"If-None-Match": 'W/"old"'}))
        self.assertEqual(response.code, 200)
        self.assertEqual(body, SCRIPT)

    def test_allowOrigin(self) -> None:
        """
        The script carries the server's C{--access-control-allow-origin}.
        """
        self.options = lambda: {"allowOrigin": "https://a.example"}  # type: ignore[method-assign]
        self.setUp()
        response, _ = self.answer(self.get("/artcast.js"))
        self.assertEqual(
            response.headers.getRawHeaders("Access-Control-Allow-Origin"),
            ["https://a.example"])

    def test_otherMethods(self) -> None:
        """
        C{POST /artcast.js} is a C{405}.
        """
        response, _ = self.answer(self.stub.post("http://artcast.example/artcast.js", b"x"))
        self.assertEqual(response.code, 405)


class ScriptSyntaxTests(SynchronousTestCase):
    """
    The script parses, where Node.js is installed to check it.
    """

    def test_syntax(self) -> None:
        """
        C{node --check} accepts the script.
        """
        node = shutil.which("node")
        if node is None:
            raise SkipTest("Node.js is not installed")
        path = files("artcast.server.outlets").joinpath("artcast.js")
        done = subprocess.run(
            [node, "--check", str(path)], capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)


class _Hold(Resource):
    """
    Holds every request until L{release}: while the test page's request to
    it is open, Chromium's virtual time stands still (it waits for pending
    fetches), so the page's reconnect timers wait for the restarted server
    instead of running through their back-off in no real time.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []
        self.released = False

    def render_GET(self, request: Any) -> Any:
        if self.released:
            return b"released"
        self.held.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        self.released = True
        held, self.held = self.held, []
        for request in held:
            if not request.finished and not request._disconnected:
                request.write(b"released")
                request.finish()


#: What the test page adds to the example: the request that stops virtual
#: time until the server is back (L{_Hold}).
_HOLDING = b"<script>fetch('/hold', {cache: 'no-store'});</script>\n</body>"


class ScriptBrowserTests(TestCase):
    """
    The docs' example page, on another origin, follows a key with
    C{/artcast.js} in headless Chromium.
    """

    timeout = 90

    def setUp(self) -> None:
        if chromium() is None:
            raise SkipTest("Chromium is not installed (apt-get install -y chromium)")

    def servePage(self, artcastURL: str, key: str) -> tuple[str, _Hold]:
        """
        Serve the example page, adapted to C{artcastURL} and C{key}, from a
        static server of the test's own on another loopback port (another
        origin); the URL of the page and its L{_Hold}.
        """
        with open(EXAMPLE, "rb") as f:
            page = f.read()
        original = page
        page = page.replace(b"http://127.0.0.1:8888", artcastURL.encode("ascii"))
        page = page.replace(b'"test/tick"', b'"' + key.encode("ascii") + b'"')
        page = page.replace(b"</body>", _HOLDING)
        self.assertEqual(page.count(artcastURL.encode("ascii")), 1, original)
        self.assertEqual(page.count(key.encode("ascii")), 1, original)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "follow.html"), "wb") as f:
            f.write(page)
        root = File(folder)
        hold = _Hold()
        root.putChild(b"hold", hold)
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(hold.release)
        return "http://127.0.0.1:%d/follow.html" % (port.getHost().port,), hold

    @inlineCallbacks
    def test_followAcrossRestart(self) -> Any:
        """
        The page shows every value once and in order, with no gap, across a
        restart of the server on the same port: it obeys the shutdown event
        and opens a new EventSource with C{?since=} its last id, so it also
        gets the values sent while it was away.
        """
        first = yield ArtcastProcess(self, extra=["--retry-after", "1"]).start()
        url, hold = self.servePage(first.url, "web/n")
        dom, _ = dumpDOM(self, url)
        yield first.waitFor(streamsOpen(1), limit=30)
        sender = PacedSender(loopbackSource(first, self), "web/n")
        yield sender.upTo(20)
        yield first.waitFor(lambda s: s["datums"] >= 20)
        yield first.stop()
        second = yield ArtcastProcess(
            self, group=first.group, dataPort=first.dataPort,
            registerPort=first.registerPort, httpPort=first.httpPort,
            extra=["--retry-after", "1"],
        ).start()
        # Sent while the page is away: it gets them only by resuming.
        yield sender.upTo(30)
        yield second.waitFor(lambda s: s["datums"] >= 10)
        hold.release()
        yield second.waitFor(streamsOpen(1), limit=30)
        yield sender.upTo(40)
        yield second.waitFor(lambda s: s["datums"] >= 20)
        # Once stopped, the page's reconnects fail and its back-off runs
        # Chromium's virtual time out: it writes the DOM.
        yield second.stop()
        dom = yield dom
        # Each value as the page wrote it: a gap would add text to its item.
        values = re.findall(rb'<li data-id="[^"]+">([^<]*)</li>', dom)
        self.assertEqual(values, [b"%d" % (n,) for n in range(1, 41)], dom)
