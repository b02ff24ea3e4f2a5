# -*- test-case-name: tests.test_browser -*-
"""
Hostile values and keys: what a browser, a response header and a log line
make of a source's (or a client's) worst text.

The browser tests load the server's HTML pages in headless Chromium, with
keys, values and metadata that would run a script if they were not escaped,
and check in the DOM that no such script ran.  They skip when Chromium is
not installed (on Debian: C{apt-get install -y chromium}).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import ArtcastProcess

#: What every payload does when it runs: a marker that appears in the DOM
#: only if the script ran (the text of the payload never holds it whole).
RUN = "document.title='XSS'+'RAN';document.documentElement.setAttribute('data-x','XSS'+'RAN')"
MARKER = b"XSSRAN"

HOSTILE_VALUE = (
    f"</script><script>{RUN}</script><img src=x onerror=\"{RUN}\">"
    f"<svg onload=\"{RUN}\"></svg>\"'><script>{RUN}</script>"
)
HOSTILE_KEY = f"xss/</script><script>{RUN}</script>"
HOSTILE_META = {
    "description": f"<script>{RUN}</script>",
    "provenance": f"<img src=x onerror=\"{RUN}\">",
    "license": {"uri": f"https://l.example/\"><script>{RUN}</script>",
                "title": f"\"><svg onload=\"{RUN}\">"},
    "note": f"<iframe srcdoc=\"<script>{RUN}</script>\"></iframe>",
}
REGISTERED_KEY = f"xss/<img src=x onerror=\"{RUN}\">"

#: Chromium's own limit, past which it is stopped by its PID.
BROWSER_LIMIT = 60.0


def chromium() -> str | None:
    """
    The Chromium (or Chrome) executable, if one is installed.
    """
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


def runChromium(
    testCase: TestCase, url: str, options: list[str]
) -> tuple[Deferred[bytes], int]:
    """
    Run headless Chromium on C{url} with C{options}, in a profile of its own,
    stopped by its PID past L{BROWSER_LIMIT}.

    @return: a L{Deferred} of what it wrote on its standard output, and its
        PID.
    """
    executable = chromium()
    if executable is None:
        raise SkipTest("Chromium is not installed (apt-get install -y chromium)")
    profile = os.path.abspath(testCase.mktemp())
    os.makedirs(profile)
    output = _Output()
    process = reactor.spawnProcess(
        output,
        executable,
        [
            executable, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--user-data-dir=" + profile,
            *options, url,
        ],
        env={"HOME": profile, "PATH": os.environ.get("PATH", "/usr/bin")},
    )
    pid = process.pid

    def kill() -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = reactor.callLater(BROWSER_LIMIT, kill)

    def ended(_: None) -> bytes:
        if timer.active():
            timer.cancel()
        return bytes(output.out)

    testCase.addCleanup(lambda: output.ended)
    testCase.addCleanup(lambda: timer.active() and kill())
    return output.ended.addCallback(ended), pid


def dumpDOM(testCase: TestCase, url: str) -> tuple[Deferred[bytes], int]:
    """
    Load C{url} in headless Chromium, let its scripts run for 10 seconds of
    virtual time, and give the DOM it ends with.

    @return: a L{Deferred} of the serialized DOM, and Chromium's PID.
    """
    return runChromium(testCase, url, ["--virtual-time-budget=10000", "--dump-dom"])


def streamsOpen(count: int) -> Any:
    """
    A condition on C{/stats}: at least C{count} streams are open.
    """
    return lambda stats: sum(stats["streams_open"].values()) >= count


def _path(key: str) -> str:
    return "/artcasts/" + quote(key, safe="/")


class BrowserTests(TestCase):
    """
    The server's pages in a real browser.
    """

    timeout = 120

    def setUp(self) -> None:
        if chromium() is None:
            raise SkipTest("Chromium is not installed (apt-get install -y chromium)")

    def assertNothingRan(self, dom: bytes, scripts: int) -> None:
        """
        No payload ran, and none became an element: the page holds its own
        C{scripts} script elements and no image, SVG or frame.
        """
        self.assertIn(b"</html>", dom)
        self.assertNotIn(MARKER, dom)
        for tag in (b"<img", b"<svg", b"<iframe"):
            self.assertNotIn(tag, dom)
        self.assertEqual(dom.count(b"<script"), scripts)

    @inlineCallbacks
    def test_detectsScripts(self) -> Any:
        """
        The check can fail: a template (trusted, served as it is) whose script
        runs leaves the marker in the DOM.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "control.html"), "w") as f:
            f.write(f"<!DOCTYPE html><html><head><title>c</title></head>"
                    f"<body><script>{RUN}</script></body></html>")
        proc = yield ArtcastProcess(self, extra=["--templates", folder]).start()
        dom, _ = dumpDOM(self, proc.url + "/artcasts/control")
        self.assertIn(MARKER, (yield dom))

    @inlineCallbacks
    def test_listPage(self) -> Any:
        """
        The list of artcasts shows hostile keys and metadata as text.
        """
        proc = yield ArtcastProcess(self).start()
        proc.register.send(json.dumps([REGISTERED_KEY, HOSTILE_META]).encode())
        proc.data.sendDatum(HOSTILE_KEY, HOSTILE_VALUE)
        yield proc.waitFor(lambda s: s["keys"] >= 2 and s["registrations"] >= 1)
        dom, _ = dumpDOM(self, proc.url + "/artcasts")
        # The dashboard follows every key with one stream: once it is open,
        # stop the server so that Chromium's virtual time runs out.
        yield proc.waitFor(streamsOpen(1))
        proc.data.sendDatum(HOSTILE_KEY + "/live", HOSTILE_VALUE)
        proc.data.sendDatum(HOSTILE_KEY, {"n": 1, "<b>x</b>": HOSTILE_VALUE})
        yield proc.waitFor(lambda s: s["datums"] >= 3)
        yield proc.stop()
        dom = yield dom
        # The page's own script, and none else.
        self.assertNothingRan(dom, scripts=1)
        # The rows made live hold the hostile key and value as text.
        self.assertIn(
            html.escape(HOSTILE_KEY + "/live", quote=False).encode() + b"</code>", dom)
        self.assertIn(b"&lt;b&gt;x&lt;/b&gt;", dom)
        self.assertIn(b"&lt;script&gt;document.title=", dom)
        self.assertIn(b"&lt;img src=x onerror=", dom)
        self.assertIn(b"&lt;iframe srcdoc=", dom)

    @inlineCallbacks
    def test_livePage(self) -> Any:
        """
        The live page of a hostile key shows the key, and the hostile value it
        fetches, as text; neither runs.
        """
        proc = yield ArtcastProcess(self).start()
        proc.data.sendDatum(HOSTILE_KEY, HOSTILE_VALUE)
        yield proc.waitFor(lambda s: s["datums"] >= 1)
        dom, _ = dumpDOM(self, proc.url + _path(HOSTILE_KEY))
        # The page shows the latest value, then polls for the next one: once
        # that poll is held, stop the server so that Chromium's virtual time
        # runs out instead of waiting on the poll.
        yield proc.waitForWaiters(1)
        yield proc.stop()
        dom = yield dom
        self.assertNothingRan(dom, scripts=1)
        [value] = re.findall(rb'<div id="value">(.*?)</div>', dom, re.S)
        self.assertIn(b"&lt;/script&gt;&lt;script&gt;document.title=", value)
        self.assertIn(b"&lt;img src=x onerror=", value)
        [title] = re.findall(rb"<title>(.*?)</title>", dom, re.S)
        self.assertIn(b"xss/&lt;/script&gt;&lt;script&gt;", title)


class _Raw(Protocol):
    """
    Send bytes as they are and collect the answer until the server closes.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(bytes(self.received))


@inlineCallbacks
def rawRequest(proc: ArtcastProcess, request: bytes) -> Any:
    """
    Send one raw HTTP/1.1 request with C{Connection: close}; the status code
    and the header block of the answer.
    """
    protocol = _Raw(request)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", proc.httpPort), protocol)
    answer = yield protocol.done
    head = answer.split(b"\r\n\r\n", 1)[0]
    returnValue((int(head.split(b" ", 2)[1]), head))


@inlineCallbacks
def linesOf(path: str, condition: Any, limit: float = 10.0) -> Any:
    """
    The lines of a file once C{condition(lines)} holds, a bounded time.
    """
    deadline = reactor.seconds() + limit
    while True:
        lines: list[bytes] = []
        if os.path.exists(path):
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        if condition(lines):
            returnValue(lines)
        if reactor.seconds() > deadline:
            raise AssertionError(f"{path}: condition not met: {lines!r}")
        yield deferLater(reactor, 0.02, lambda: None)


_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


class HostileKeyTests(TestCase):
    """
    Keys with control characters, line breaks or too many characters are
    refused, and cannot reach a response header or a log line unescaped.
    """

    timeout = 60

    @inlineCallbacks
    def test_refusedAndEscaped(self) -> Any:
        """
        Each hostile request line gets a 400 without an injected header;
        those Twisted's parser lets through (percent-encoded, or too long) are
        one printable line each in the access log, and raw control or
        non-ASCII bytes are refused before any resource or log sees them.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        access = os.path.join(folder, "access.log")
        tokens = os.path.join(folder, "tokens")
        with open(tokens, "w") as f:
            f.write("hostile-test-token-0123456789\n")
        proc = yield ArtcastProcess(
            self, extra=["--access-log", access, "--publish-token-file", tokens,
                         "--publish-ttl", "0"]
        ).start()
        encoded = [
            b"/artcasts/a%0d%0aSet-Cookie:%20x=1",
            b"/artcasts/a%0aX-Injected:%201",
            b"/artcasts/a%c2%85b",
            b"/artcasts/a%7fb",
            b"/artcasts/" + b"x" * 257,
        ]
        raw = [b"/artcasts/a\x01b", b"/artcasts/a\x1b[2Jb", b"/artcasts/a\xc2\x85b",
               b"/artcasts/\xff"]
        targets = encoded + raw
        requests = []
        for target in targets:
            requests.append(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n"
                            b"User-Agent: ua\x1b[31m\"\r\nConnection: close\r\n\r\n")
            requests.append(b"POST " + target + b" HTTP/1.1\r\nHost: a\r\n"
                            b"Authorization: Bearer hostile-test-token-0123456789\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 1\r\n"
                            b"Connection: close\r\n\r\n1")
        for request in requests:
            code, head = yield rawRequest(proc, request)
            self.assertEqual(code, 400, request)
            for name in (b"set-cookie", b"x-injected"):
                self.assertNotIn(b"\r\n" + name + b":", head.lower(), request)
        self.assertEqual((yield proc.stats())["keys"], 0)
        lines = yield linesOf(
            access, lambda lines: sum(b" 400 " in line for line in lines) >= 2 * len(encoded))
        for line in lines:
            self.assertIsNotNone(_PRINTABLE.fullmatch(line), line)
        logged = b"\n".join(lines)
        self.assertIn(b'"GET /artcasts/a%0d%0aSet-Cookie:%20x=1 HTTP/1.1" 400', logged)
        self.assertIn(b'"ua\\x1b[31m\\""', logged)
        self.assertNotIn(b"hostile-test-token", b"\n".join(lines))

    @inlineCallbacks
    def test_datagramKeysInErrorLog(self) -> Any:
        """
        A datagram whose key or version holds a line break and a fake log
        line is dropped, and the error log says so without starting a line
        with the fake text.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        errors = os.path.join(folder, "error.log")
        proc = yield ArtcastProcess(self, extra=["--error-log", errors]).start()
        fake = "FAKE-LOG-LINE [-] server compromised"
        proc.data.send(json.dumps(["a\n" + fake, 1]).encode())
        proc.data.send(json.dumps({"v": "\n" + fake}).encode())
        proc.data.send(json.dumps([{"\r\n" + fake: 1}, 1]).encode())
        stats = yield proc.waitFor(lambda s: sum(s["dropped"].values()) >= 3)
        self.assertEqual(stats["dropped"], {"bad-key": 1, "bad-version": 1, "bad-shape": 1})
        lines = yield linesOf(
            errors, lambda lines: sum(b"Dropped" in line for line in lines) >= 3)
        for line in lines:
            self.assertFalse(line.startswith(b"FAKE"), line)
            self.assertNotIn(b"\r", line)
