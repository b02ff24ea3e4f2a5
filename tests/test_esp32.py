"""
The ESP32 sketch of docs/clients.md (examples/esp32/artcast_follow/), built
with g++ against the POSIX stand-in for the Arduino API in tests/arduino/,
and run against a real C{twistd artcast} (and, for C{503}, a small Twisted
server in the test).

The sketch file is compiled as it is; the test sets its host, port, key and
poll timeout with C{-D}.  The stand-in prints what the sketch prints on
standard output, and logs each connection and request line on standard
error (C{arduino: request GET ...}); C{ARDUINO_LINES} and C{ARDUINO_SECONDS}
bound a run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from artcast.source import Source
from tests.harness import ROOT, ArtcastProcess, PacedSender

#: The sketch, and the stand-in's folder.
SKETCH = os.path.join(ROOT, "examples", "esp32", "artcast_follow", "artcast_follow.ino")
STANDIN = os.path.join(ROOT, "tests", "arduino")

#: How long a test waits for the sketch, at most, in seconds.
LIMIT = 45.0


def build(testCase: TestCase, port: int, key: str, timeout: int = 30) -> str:
    """
    Compile the sketch with C{g++ -std=c++17 -Wall -Werror} against the
    stand-in, for a server on 127.0.0.1:C{port}; return the program's path.
    """
    compiler = shutil.which("g++")
    if compiler is None:
        raise SkipTest("g++ is not installed (apt-get install g++)")
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    program = os.path.join(directory, "artcast_follow")
    command = [
        compiler, "-std=c++17", "-Wall", "-Werror", "-I", STANDIN,
        '-DARTCAST_HOST="127.0.0.1"', "-DARTCAST_PORT=%d" % (port,),
        '-DARTCAST_KEY="%s"' % (key,), "-DARTCAST_TIMEOUT=%d" % (timeout,),
        "-o", program, os.path.join(STANDIN, "main.cpp"), "-x", "c++", SKETCH,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    testCase.assertEqual(result.returncode, 0, result.stderr)
    return program


class Sketch(ProcessProtocol):
    """
    The built sketch, running: its printed lines and its stand-in log.
    """

    def __init__(self, testCase: TestCase, program: str, **env: Any) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[Any] = Deferred()
        self.status: Any = None
        self.transport: Any = None
        testCase.addCleanup(self.stop)
        reactor.spawnProcess(
            self, program, [program],
            env={name: str(value) for name, value in env.items()},
        )

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.status = reason.value
        self.ended.callback(None)

    @property
    def lines(self) -> list[str]:
        """
        The whole lines the sketch printed.
        """
        return self.out.decode("utf-8", "replace").splitlines()[
            : self.out.count(b"\n")
        ]

    @property
    def values(self) -> list[int]:
        """
        The printed lines that are numbers (the values), in order.
        """
        return [int(line) for line in self.lines if line.isdigit()]

    @property
    def requests(self) -> list[str]:
        """
        The request lines the sketch sent, from the stand-in's log.
        """
        prefix = "arduino: request "
        return [
            line[len(prefix):]
            for line in self.err.decode("utf-8", "replace").splitlines()
            if line.startswith(prefix)
        ]

    @inlineCallbacks
    def waitUntil(
        self, condition: Callable[[], bool], what: str, limit: float = LIMIT,
        running: bool = True,
    ) -> Any:
        """
        Wait, a bounded time, until C{condition()} is true; with C{running},
        fail at once if the program has ended without it.
        """
        deadline = reactor.seconds() + limit
        while not condition():
            if reactor.seconds() > deadline or (
                running and self.status is not None and not condition()
            ):
                raise AssertionError(
                    "the sketch did not get to %s; it printed:\n%s\nlog:\n%s"
                    % (what, self.out.decode("utf-8", "replace")[-2000:],
                       self.err.decode("utf-8", "replace")[-2000:])
                )
            yield deferLater(reactor, 0.02, lambda: None)

    def waitForEnd(self) -> Deferred[Any]:
        """
        Wait, a bounded time, until the program has ended by itself.
        """
        return self.waitUntil(lambda: self.status is not None, "its end", running=False)

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Kill the program by its own PID if it still runs, and wait for its end.
        """
        if self.status is None and self.transport is not None:
            self.transport.signalProcess(signal.SIGKILL)
            yield self.ended


def loopbackSource(proc: ArtcastProcess, testCase: TestCase) -> Source:
    """
    A version 2 source sending to C{proc}'s group over loopback only.
    """
    source = Source(
        src="esp32",
        groups=[(proc.group, proc.dataPort)],
        registerGroups=[(proc.group, proc.registerPort)],
        ttl=0,
        interface="127.0.0.1",
    )
    testCase.addCleanup(source.close)
    return source


class FollowTests(TestCase):
    """
    The sketch against a real C{twistd artcast}.
    """

    timeout = 120

    @inlineCallbacks
    def test_follows200(self) -> Any:
        """
        The sketch prints each of 200 datums sent in bursts, in order, once,
        with no gap.
        """
        proc = yield ArtcastProcess(self, extra=["--history", "500"]).start()
        sketch = Sketch(self, build(self, proc.httpPort, "esp/n"), ARDUINO_LINES=200)
        yield proc.waitForWaiters(1)
        yield PacedSender(loopbackSource(proc, self), "esp/n").upTo(200)
        yield sketch.waitForEnd()
        self.assertEqual(sketch.lines, [str(n) for n in range(1, 201)])

    @inlineCallbacks
    def test_restart(self) -> Any:
        """
        Across a server restart on the same port the sketch obeys the
        shutdown's C{503}, comes back, and goes on from its last id: every
        value once, in order.
        """
        first = yield ArtcastProcess(self, extra=["--retry-after", "1"]).start()
        sketch = Sketch(self, build(self, first.httpPort, "esp/r"))
        yield first.waitForWaiters(1)
        sender = PacedSender(loopbackSource(first, self), "esp/r")
        yield sender.upTo(50)
        yield sketch.waitUntil(lambda: len(sketch.values) >= 50, "value 50")
        yield first.stop()
        second = yield ArtcastProcess(
            self, group=first.group, dataPort=first.dataPort,
            registerPort=first.registerPort, httpPort=first.httpPort,
        ).start()
        yield second.waitForWaiters(1)
        yield sender.upTo(100)
        yield sketch.waitUntil(lambda: len(sketch.values) >= 100, "value 100")
        self.assertEqual(sketch.values, list(range(1, 101)))
        # The first server's shutdown answered the held poll 503 with a
        # Retry-After; the new one, holding nothing yet, answers with datum
        # 51, the very next, so it says nothing was missed.
        others = [line for line in sketch.lines if not line.isdigit()]
        self.assertEqual(len(others), 1, others)
        self.assertTrue(others[0].startswith("error 503: The server is shutting down."), others)
        self.assertGreater(len([r for r in sketch.requests if "since=" in r]), 50)

    @inlineCallbacks
    def test_badKeyStops(self) -> Any:
        """
        A C{4xx} (a key with an empty level) is printed and not asked again.
        """
        proc = yield ArtcastProcess(self).start()
        sketch = Sketch(self, build(self, proc.httpPort, "bad//key"), ARDUINO_SECONDS=3)
        yield sketch.waitForEnd()
        self.assertTrue(sketch.lines[0].startswith("error 400: "), sketch.lines)
        self.assertEqual(sketch.lines[-1], "stopped: fix the key or the server, then reset")
        self.assertEqual(len(sketch.requests), 1, sketch.requests)

    @inlineCallbacks
    def test_asksAgainOn204(self) -> Any:
        """
        With C{?timeout=1} the server answers C{204}s; the sketch asks again
        from the latest id they carry, prints nothing for them, and prints
        the next value.
        """
        proc = yield ArtcastProcess(self).start()
        source = loopbackSource(proc, self)
        source.send("esp/t", 1)
        yield proc.waitFor(lambda s: s["datums"] >= 1)
        sketch = Sketch(self, build(self, proc.httpPort, "esp/t", timeout=1), ARDUINO_LINES=1)
        yield sketch.waitUntil(lambda: len(sketch.requests) >= 3, "a third request")
        first, second, third = sketch.requests[:3]
        self.assertEqual(first, "GET /artcasts/esp/t?timeout=1 HTTP/1.1")
        self.assertIn("&since=", second)
        self.assertEqual(second, third)
        self.assertEqual(sketch.lines, [])
        yield proc.waitForWaiters(1)
        source.send("esp/t", 2)
        yield sketch.waitForEnd()
        self.assertEqual(sketch.lines, ["2"])


class Busy(Resource):
    """
    A server that answers its first request C{503} with C{Retry-After: 1},
    then C{200} with a value; it records when each request came.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.paths: list[bytes] = []

    def render_GET(self, request: Any) -> bytes:
        self.times.append(reactor.seconds())
        self.paths.append(request.uri)
        if len(self.times) == 1:
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", b"1")
            return b"busy"
        request.setHeader(b"Artcast-Id", b"s-1-7")
        request.setHeader(b"Content-Type", b"application/json")
        return b"42"


class _Channel(HTTPChannel):
    """
    A connection of a L{CountingSite}: counted while open.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.open += 1

    def connectionLost(self, reason: Any) -> None:
        self.site.open -= 1
        super().connectionLost(reason)


class CountingSite(Site):
    """
    A L{Site} that knows how many connections it has open, so a test can
    wait until they are all closed.
    """

    protocol = _Channel
    open = 0


class RetryAfterTests(TestCase):
    """
    The sketch obeys a C{503}'s C{Retry-After}.
    """

    timeout = 60

    @inlineCallbacks
    def test_waitsRetryAfter(self) -> Any:
        """
        After a C{503} with C{Retry-After: 1} the sketch asks again no sooner
        than a second later (its backoff alone would be under half a second).
        """
        busy = Busy()
        site = CountingSite(busy)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sketch = Sketch(self, build(self, port.getHost().port, "esp/b"), ARDUINO_LINES=2)
        yield sketch.waitForEnd()
        self.assertEqual(sketch.lines, ["error 503: busy", "42"])
        self.assertEqual(len(busy.times), 2, busy.paths)
        self.assertGreaterEqual(busy.times[1] - busy.times[0], 1.0)
        self.assertEqual(busy.paths, [b"/artcasts/esp/b?timeout=30"] * 2)
        yield sketch.waitUntil(lambda: site.open == 0, "its connection closed", running=False)
