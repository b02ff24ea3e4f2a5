# -*- test-case-name: tests.test_script -*-
"""
C{GET /artcast.js}: the browser client the server serves.  Its behaviour in
a browser is checked in L{tests.test_browser.ScriptBrowserTests}.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.resources import files

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from artcast.server.routes import SCRIPT
from tests.test_web import AppMixin


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
