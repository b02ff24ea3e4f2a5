# -*- test-case-name: tests.test_cli_errors -*-
"""
The installed commands C{artcast-follow}, C{artcast-send} and
C{artcast-watch}, run as real processes from this checkout, end a failure
with one line on standard error (the URL or the option, what happened, what
to check) and a non-zero exit status, never a traceback; and
L{artcast.client.describeFailure}, which words C{artcast-follow}'s line.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer
from twisted.internet import error as netError
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import ResponseFailed
from twisted.web.error import SchemeNotSupported

from artcast.client import ArtcastError, describeFailure
from tests.harness import ROOT, freePort

#: Seconds a command that fails may take to end.
END_LIMIT = 30

#: An address that is no address of this host (TEST-NET-2, RFC 5737).
FOREIGN = "198.51.100.77"


def command(name: str) -> str:
    """
    The installed command C{name}, next to the interpreter running the tests.
    """
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        raise SkipTest(f"{path} is not installed next to {sys.executable}")
    return path


def environment() -> dict[str, str]:
    """
    The environment running the commands with this checkout's C{artcast}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return env


def runCommand(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """
    Run an installed command to its end (bounded).
    """
    return subprocess.run(
        [command(name), *args], env=environment(), capture_output=True, text=True,
        timeout=END_LIMIT, stdin=subprocess.DEVNULL,
    )


class DescribeFailureTests(SynchronousTestCase):
    """
    L{describeFailure} names the URL, what happened and what to check.
    """

    url = "http://127.0.0.1:8888/artcasts/greeting"

    def test_refused(self) -> None:
        """
        A refused connection asks whether the server is running.
        """
        self.assertEqual(
            describeFailure(self.url, netError.ConnectionRefusedError()),
            f"cannot connect to {self.url}: connection refused; is the server "
            "running? (twistd -n artcast ...)",
        )

    def test_dns(self) -> None:
        """
        A name that does not resolve says so and points at the URL's host.
        """
        line = describeFailure(self.url, netError.DNSLookupError("x.invalid"))
        self.assertIn("the host name does not resolve", line)
        self.assertIn(self.url, line)

    def test_connectTimeout(self) -> None:
        """
        A connection that times out points at the address, port and firewalls.
        """
        line = describeFailure(self.url, netError.TCPTimedOutError())
        self.assertIn("timed out", line)
        self.assertIn("firewall", line)

    def test_answerTimeout(self) -> None:
        """
        No answer in time repeats the timeout's own words and asks about
        proxies.
        """
        error = defer.TimeoutError(f"{self.url} gave no answer in 10 seconds")
        line = describeFailure(self.url, error)
        self.assertIn("gave no answer in 10 seconds", line)
        self.assertIn("proxy", line)

    def test_closedMidAnswer(self) -> None:
        """
        A connection closed before the answer was complete says so.
        """
        line = describeFailure(self.url, ResponseFailed([]))
        self.assertIn("the connection closed before the answer was complete", line)

    def test_badURL(self) -> None:
        """
        A URL of another scheme shows how to write one.
        """
        line = describeFailure("ftp://x", SchemeNotSupported("Unsupported scheme: b'ftp'"))
        self.assertTrue(line.endswith("write it as http://HOST:PORT"), line)

    def test_serverRefused(self) -> None:
        """
        An error status is the L{ArtcastError}'s own line.
        """
        error = ArtcastError(404, b"no such key", self.url)
        self.assertEqual(describeFailure(self.url, error), str(error))

    def test_oneLine(self) -> None:
        """
        Whatever the error, the description is one line.
        """
        for error in [netError.ConnectError("a\nb"), OSError("x"), RuntimeError("y")]:
            self.assertNotIn("\n", describeFailure(self.url, error))


class _Canned(Protocol):
    """
    Answers the first request with the factory's canned bytes, then closes.
    """

    def dataReceived(self, data: bytes) -> None:
        if self.transport is not None and b"\r\n\r\n" in data:
            self.transport.write(self.factory.answer)  # type: ignore[attr-defined]
            self.transport.loseConnection()


class FollowTests(TestCase):
    """
    C{artcast-follow} against a closed port, a name under C{.invalid}, a
    server that closes mid-answer or refuses.
    """

    timeout = 60

    def test_refused(self) -> None:
        """
        Listing a closed port is one line naming the URL and the fix, and
        exit status 1.
        """
        port = freePort()
        result = runCommand("artcast-follow", f"http://127.0.0.1:{port}")
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(
            result.stderr,
            f"artcast-follow: cannot connect to http://127.0.0.1:{port}/artcasts: "
            "connection refused; is the server running? (twistd -n artcast ...)\n",
        )

    def test_unresolvable(self) -> None:
        """
        A host name under C{.invalid} is one line saying that it does not
        resolve, and exit status 1.
        """
        result = runCommand("artcast-follow", "http://artcast-test.invalid:8888")
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(
            result.stderr,
            "artcast-follow: cannot connect to http://artcast-test.invalid:8888/artcasts: "
            "the host name does not resolve; check the host name in the URL\n",
        )

    def test_badScheme(self) -> None:
        """
        A URL without C{http://} is one line showing how to write it.
        """
        result = runCommand("artcast-follow", "127.0.0.1:8888")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("write it as http://HOST:PORT", result.stderr)

    def test_followRetries(self) -> None:
        """
        Following a key on a closed port keeps retrying as before, each
        attempt one warning line and no traceback.
        """
        port = freePort()
        process = subprocess.Popen(
            [command("artcast-follow"), f"http://127.0.0.1:{port}", "greeting"],
            env=environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(process.wait, END_LIMIT)
        self.addCleanup(process.kill)
        assert process.stderr is not None
        self.addCleanup(process.stderr.close)
        output = b""
        deadline = time.monotonic() + END_LIMIT
        while output.count(b"\n") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096)
                if not chunk:
                    break
                output += chunk
        lines = output.decode("utf-8", "replace").splitlines()
        self.assertGreaterEqual(len(lines), 2, output)
        for line in lines[:2]:
            self.assertIn("Connection was refused", line)
            self.assertIn("trying again in", line)
        self.assertNotIn(b"Traceback", output)
        self.assertIsNone(process.poll())

    @inlineCallbacks
    def canned(self, answer: bytes, *args: str) -> Any:
        """
        Run C{artcast-follow URL ARGS} against a loopback server answering
        every request with C{answer}; its output and status.
        """
        factory = Factory.forProtocol(_Canned)
        factory.answer = answer  # type: ignore[attr-defined]
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}"
        d = getProcessOutputAndValue(
            command("artcast-follow"), (url, *args), env=environment(), reactor=reactor
        )
        d.addTimeout(END_LIMIT, reactor)
        out, err, status = yield d
        return url, out.decode(), err.decode(), status

    @inlineCallbacks
    def test_closedMidAnswer(self) -> Any:
        """
        A server that closes before the answer is complete is one line and
        exit status 1.
        """
        url, out, err, status = yield self.canned(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[{\"key\""
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            f"artcast-follow: {url}/artcasts: the connection closed before the answer "
            "was complete; is the URL an Artcast server's (http://HOST:PORT), and is it "
            "still running?\n",
        )

    @inlineCallbacks
    def test_notRetried(self) -> Any:
        """
        A C{404} while following (not retried) is one line with the URL and
        the server's explanation, and exit status 1.
        """
        url, out, err, status = yield self.canned(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\nno such key\n",
            "greeting",
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err, f"artcast-follow: {url}/artcasts/greeting answered 404: no such key\n"
        )


class SendWatchTests(SynchronousTestCase):
    """
    C{artcast-send} and C{artcast-watch} with a bad destination, a bad
    interface address, an unreadable file.
    """

    def test_sendBadInterface(self) -> None:
        """
        C{artcast-send --interface} with an address this host does not have is
        one line and exit status 1; nothing is printed as sent.
        """
        result = runCommand("artcast-send", "test/greeting", "1", "--ttl", "0",
                            "--interface", FOREIGN)
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(
            result.stderr,
            f"artcast-send: cannot send from --interface {FOREIGN}: Cannot assign "
            "requested address; is it an address of this host? (ip -4 addr)\n",
        )

    def test_sendBadDestination(self) -> None:
        """
        C{artcast-send} to a destination the system refuses (the broadcast
        address) is one line naming it, and exit status 1.
        """
        result = runCommand("artcast-send", "test/greeting", "1", "--ttl", "0",
                            "--interface", "127.0.0.1", "--group", "255.255.255.255",
                            "--linger", "0")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertTrue(
            result.stderr.startswith("artcast-send: cannot send to 255.255.255.255:"),
            result.stderr,
        )

    def test_sendUnreadableKeyFile(self) -> None:
        """
        C{artcast-send --key-file} of a file that cannot be read is one line
        naming it, and exit status 2.
        """
        missing = os.path.abspath(self.mktemp())
        result = runCommand("artcast-send", "test/greeting", "1", "--ttl", "0",
                            "--key-file", missing)
        self.assertEqual((result.returncode, result.stdout), (2, ""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(f"cannot read the key file {missing}", result.stderr)

    def test_watchBadInterface(self) -> None:
        """
        C{artcast-watch --interface} with an address this host does not have
        is one line and exit status 1, before it watches anything.
        """
        path = os.path.abspath(self.mktemp())
        result = runCommand("artcast-watch", path, "test/greeting", "--ttl", "0",
                            "--interface", FOREIGN)
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(
            result.stderr,
            f"artcast-watch: cannot send from --interface {FOREIGN}: Cannot assign "
            "requested address; is it an address of this host? (ip -4 addr)\n",
        )

    def test_watchUnreadableKeyFile(self) -> None:
        """
        C{artcast-watch --key-file} of a file that cannot be read is one line
        naming it, and exit status 2.
        """
        missing = os.path.abspath(self.mktemp())
        result = runCommand("artcast-watch", missing, "test/greeting", "--ttl", "0",
                            "--key-file", missing)
        self.assertEqual((result.returncode, result.stdout), (2, ""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(f"cannot read the key file {missing}", result.stderr)
