"""
The device clients under C{examples/} (the C client on POSIX sockets and the
MicroPython-style client), built and run as processes against the real
C{twistd artcast} and against a scripted stub server: each follows C{since}
through 200 datums without a loss, survives a server restart, and handles
C{204}, C{Artcast-Gap}, a value past its bound, C{4xx} and C{503} with
C{Retry-After} as docs/clients.md says.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from artcast.source import Source
from tests.harness import ROOT, ArtcastProcess, PacedSender

C_SOURCE = os.path.join(ROOT, "examples", "c", "artcast_follow.c")
PY_SOURCE = os.path.join(ROOT, "examples", "micropython", "artcast_follow.py")

#: The compiler flags the C client must build cleanly with.
CFLAGS = ["-Wall", "-Wextra", "-Werror", "-O2"]

#: How long a client may take to do what a test asks, in seconds.
LIMIT = 30.0

_built: dict[str, str] = {}


def buildC() -> str:
    """
    Compile the C client once per test process (in trial's working
    directory) and give the binary's path; L{SkipTest} without gcc.
    """
    if "c" not in _built:
        gcc = shutil.which("gcc")
        if gcc is None:
            raise SkipTest("gcc is not installed (apt-get install gcc)")
        binary = os.path.abspath("artcast_follow_c")
        result = subprocess.run(
            [gcc, *CFLAGS, "-o", binary, C_SOURCE],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError("gcc failed:\n" + result.stderr)
        _built["c"] = binary
    return _built["c"]


class _Client(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[Any] = Deferred()
        self.code: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.code = reason.value.exitCode
        self.ended.callback(self.code)

    @property
    def lines(self) -> list[str]:
        return self.out.decode("utf-8", "replace").splitlines()


class _Stub(Resource):
    """
    Answers each request with the next answer of a script, and records when
    each came and what it asked.
    """

    isLeaf = True

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        super().__init__()
        self.script = list(script)
        self.requests: list[tuple[float, str, dict[str, list[str]]]] = []
        self.ports: list[int] = []

    def render_GET(self, request: Any) -> bytes:
        uri = request.uri.decode()
        self.ports.append(request.getClientAddress().port)
        self.requests.append((
            reactor.seconds(), request.clientproto.decode(), parse_qs(urlsplit(uri).query),
        ))
        if not self.script:
            request.setResponseCode(400)
            return b"the script is over\n"
        code, headers, body = self.script.pop(0)
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


class DeviceClientMixin:
    """
    The behaviour every device client has; a subclass says how to run it.
    """

    #: Flags given to every run (C{-0}: HTTP/1.0).
    flags: list[str] = []
    protocol = "HTTP/1.1"

    def command(self) -> list[str]:
        raise NotImplementedError()

    def startClient(self, host: str, port: int, key: str, *rest: str, timeout: int = 5) -> _Client:
        """
        Start the client (C{-t timeout -b 0.5}); it is killed by its PID at
        cleanup if it has not ended.
        """
        client = _Client()
        args = [*self.command(), *self.flags, "-t", str(timeout), "-b", "0.5",
                host, str(port), key, *rest]
        transport = reactor.spawnProcess(client, args[0], args, env=dict(os.environ))
        pid = transport.pid

        def kill() -> Any:
            if client.code is None and client.ended.called is False:
                os.kill(pid, signal.SIGKILL)
                return client.ended
            return None

        self.addCleanup(kill)
        return client

    @inlineCallbacks
    def ended(self, client: _Client) -> Any:
        """
        Wait, a bounded time, until the client exits; give its exit code.
        """
        limit = reactor.callLater(LIMIT, client.ended.cancel)
        try:
            code = yield client.ended
        finally:
            if limit.active():
                limit.cancel()
        return code

    @inlineCallbacks
    def linesAtLeast(self, client: _Client, count: int) -> Any:
        """
        Wait, a bounded time, until the client printed C{count} lines.
        """
        deadline = reactor.seconds() + LIMIT
        while len(client.lines) < count:
            if client.code is not None or reactor.seconds() > deadline:
                self.fail(f"the client printed {client.lines!r}; stderr: {client.err!r}")
            yield deferLater(reactor, 0.02, lambda: None)

    def source(self, server: ArtcastProcess) -> Source:
        source = Source(
            src="device", groups=[(server.group, server.dataPort)], ttl=0,
            interface="127.0.0.1",
        )
        self.addCleanup(source.close)
        return source

    @inlineCallbacks
    def test_follows200(self) -> Any:
        """
        The client follows C{since} through 200 datums and prints each value
        once, in order, with no gap.
        """
        server = ArtcastProcess(self, ["--history", "1000"])
        yield server.start()
        client = self.startClient("127.0.0.1", server.httpPort, "device/n", "200")
        yield server.waitForWaiters(1)
        yield PacedSender(self.source(server), "device/n").upTo(200)
        code = yield self.ended(client)
        self.assertEqual((code, client.err.decode()), (0, ""))
        self.assertEqual(client.lines, [str(n) for n in range(1, 201)])

    @inlineCallbacks
    def test_restart(self) -> Any:
        """
        Across a server restart on the same port (its held poll answered
        C{503} with C{Retry-After}), the client comes back and gets the
        datums sent after the restart.
        """
        args = ["--retry-after", "1"]
        first = ArtcastProcess(self, args)
        yield first.start()
        client = self.startClient("127.0.0.1", first.httpPort, "device/n", "6")
        yield first.waitForWaiters(1)
        sender = PacedSender(self.source(first), "device/n")
        yield sender.upTo(3)
        yield self.linesAtLeast(client, 3)
        yield first.waitForWaiters(1)
        yield first.stop()
        second = ArtcastProcess(
            self, args, group=first.group, dataPort=first.dataPort,
            registerPort=first.registerPort, httpPort=first.httpPort,
        )
        yield second.start()
        yield second.waitFor(lambda stats: stats["waiting"] >= 1, limit=LIMIT)
        yield sender.upTo(6)
        code = yield self.ended(client)
        self.assertEqual(code, 0, client.err.decode())
        # The new server holds nothing yet, and datum 4 is the very next of
        # the client's: no gap.
        self.assertEqual(client.lines, ["1", "2", "3", "4", "5", "6"])
        self.assertIn("503", client.err.decode())

    @inlineCallbacks
    def test_badKey(self) -> Any:
        """
        A C{4xx} (a key with an empty level) is printed on stderr and stops
        the client with exit code 2.
        """
        server = ArtcastProcess(self)
        yield server.start()
        client = self.startClient("127.0.0.1", server.httpPort, "bad//key")
        code = yield self.ended(client)
        self.assertEqual(code, 2)
        self.assertEqual(client.lines, [])
        self.assertIn("error 400: key 'bad//key' has an empty level", client.err.decode())

    @inlineCallbacks
    def test_script(self) -> Any:
        """
        Against a stub: a C{204} makes it ask again with the C{204}'s id; a
        value past the bound is skipped (its id followed); a C{503} with
        C{Retry-After: 1} makes it wait a second before asking again; a value
        with C{Artcast-Gap: 1} is printed after C{gap}.
        """
        stub = _Stub([
            (204, {"Artcast-Id": "s1.1.1"}, b""),
            (200, {"Artcast-Id": "s1.1.2"}, b'"' + b"x" * 5000 + b'"'),
            (503, {"Retry-After": "1"}, b"Shutting down.\n"),
            (200, {"Artcast-Id": "s1.1.3", "Artcast-Gap": "1"}, b'"hello"'),
            (200, {"Artcast-Id": "s1.1.4"}, b"7"),
        ])
        port = reactor.listenTCP(0, Site(stub), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = self.startClient("127.0.0.1", port.getHost().port, "a/b c", "2", timeout=1)
        code = yield self.ended(client)
        self.assertEqual(code, 0, client.err.decode())
        self.assertEqual(client.lines, ["gap", '"hello"', "7"])
        self.assertIn("a value of 5002 bytes skipped", client.err.decode())
        times = [when for when, _, _ in stub.requests]
        self.assertEqual([proto for _, proto, _ in stub.requests], [self.protocol] * 5)
        self.assertEqual(
            [query for _, _, query in stub.requests],
            [{"timeout": ["1"]}] + [
                {"timeout": ["1"], "since": [since]}
                for since in ["s1.1.1", "s1.1.2", "s1.1.2", "s1.1.3"]
            ],
        )
        # Keep-alive: one connection until the 503, another after it;
        # HTTP/1.0: a connection per request.
        if self.protocol == "HTTP/1.1":
            self.assertEqual(len(set(stub.ports[:3])), 1)
            self.assertEqual(len(set(stub.ports[3:])), 1)
            self.assertNotEqual(stub.ports[2], stub.ports[3])
        else:
            self.assertEqual(len(set(stub.ports)), 5)
        # It waited the Retry-After (measured where the stub got the requests).
        self.assertGreaterEqual(times[3] - times[2], 0.95)


class CTests(DeviceClientMixin, TestCase):
    """
    The C client, with HTTP/1.1 keep-alive.
    """

    def command(self) -> list[str]:
        return [buildC()]


class CHTTP10Tests(CTests):
    """
    The C client, with HTTP/1.0 (C{-0}).
    """

    flags = ["-0"]
    protocol = "HTTP/1.0"


class MicroPythonTests(DeviceClientMixin, TestCase):
    """
    The MicroPython-style client, run unchanged on CPython, with HTTP/1.1
    keep-alive.
    """

    def command(self) -> list[str]:
        return [sys.executable, PY_SOURCE]


class MicroPythonHTTP10Tests(MicroPythonTests):
    """
    The MicroPython-style client with HTTP/1.0 (C{-0}).
    """

    flags = ["-0"]
    protocol = "HTTP/1.0"
