"""
Tests for the bounds of issue 9 on streams, publishing, pages and
statistics: WebSocket pings from a client that never reads, the key of a
percent-encoded path, symbolic links in C{--templates}, CORS on the
operators' pages, bearer-token guessing, and malformed WebSocket handshakes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server.outlets import streams
from artcast.server.store import KeyStore
from artcast.server.outlets.streams import CLIENT_FRAMES_BURST
from artcast.server.routes import ArtcastApp
from tests.harness import ArtcastProcess
from tests.test_web import AppMixin


# --- 11: the key of a percent-encoded path ----------------------------------


class PathKeyTests(AppMixin, SynchronousTestCase):
    """
    The key a request waits on comes from the percent-decoded path segments.
    """

    def test_encodedSlashInFirstSegment(self) -> None:
        """
        C{GET /artcasts%2Foslo/temp} is a 404: its first segment decodes to
        C{artcasts/oslo}, which is not C{artcasts}; nothing waits.
        """
        for path in ("/artcasts%2Foslo/temp", "/artcasts%2foslo/temp"):
            response, body = self.answer(self.get(path + "?timeout=5"))
            self.assertEqual(response.code, 404, path)
            self.assertEqual(self.store.listening, 0)

    def test_encodedSlashPublish(self) -> None:
        """
        C{POST /artcasts%2Fk} is a 404 too, not a publish to another key.
        """
        d = self.stub.post("http://artcast.example/artcasts%2Fk", data=b"1")
        response, _ = self.answer(d)
        self.assertEqual(response.code, 404)

    def test_encodedFirstSegment(self) -> None:
        """
        C{/%61rtcasts/x} is C{/artcasts/x}: it waits on key C{x}.
        """
        d = self.get("/%61rtcasts/x")
        self.stub.flush()
        self.assertEqual(self.store.waitingByPattern(), {"x": 1})
        self.store.publish("x", 7)
        response, body = self.answer(d)
        self.assertEqual((response.code, json.loads(body)), (200, 7))

    def test_encodedSlashInKey(self) -> None:
        """
        A C{%2F} inside the key is the level separator: C{a%2Fb} waits on
        C{a/b}, as documented.
        """
        d = self.get("/artcasts/a%2Fb")
        self.stub.flush()
        self.assertEqual(self.store.waitingByPattern(), {"a/b": 1})
        self.store.publish("a/b", 1)
        self.assertEqual(self.answer(d)[0].code, 200)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.text(alphabet="ab/%*.2Ff6 ", min_size=1, max_size=6),
            min_size=1,
            max_size=4,
        ),
        st.booleans(),
    )
    def test_keyOfDecodedSegments(self, segments: list[str], encodeFirst: bool) -> None:
        """
        Whatever the path, a request waits on the key made of its decoded
        segments after a first segment that decodes to C{artcasts}, or on
        nothing.
        """
        first = "%61rtcasts" if encodeFirst else "artcasts"
        raw = "/" + first + "/" + "/".join(quote(s, safe="/*%") for s in segments)
        d = self.get(raw + "?timeout=1")
        self.stub.flush()
        waiting = self.store.waitingByPattern()
        parts = raw[1:].split("/")
        decoded = [unquote_to_bytes(p).decode("utf-8", "replace") for p in parts]
        if waiting:
            self.assertEqual(decoded[0], "artcasts")
            self.assertEqual(list(waiting), ["/".join(decoded[1:])])
        self.clock.advance(1)
        self.stub.flush()
        response = self.successResultOf(d)
        self.assertIn(response.code, (204, 400, 404))
        self.assertEqual(self.store.listening, 0)


# --- 12: symbolic links in --templates --------------------------------------


class TemplateLinkTests(AppMixin, SynchronousTestCase):
    """
    A template reached through a symbolic link is not served.
    """

    def options(self) -> dict:
        base = FilePath(self.mktemp())
        base.makedirs()
        self.folder = base.child("templates")
        self.folder.child("real").makedirs()
        self.folder.child("real").child("page.html").setContent(b"<p>real</p>")
        self.outside = base.child("passwd")
        self.outside.setContent(b"root:x:0:0:root:/root:/bin/sh\n")
        os.symlink(self.outside.path, self.folder.child("passwd.html").path)
        os.symlink(
            self.folder.child("real").child("page.html").path,
            self.folder.child("inside.html").path,
        )
        os.symlink(self.folder.child("real").path, self.folder.child("linked").path)
        return {"templates": self.folder}

    def html(self, key: str) -> bytes:
        response, body = self.answer(
            self.get("/artcasts/" + key, {"Accept": "text/html"})
        )
        self.assertEqual(response.code, 200)
        return body

    def test_realFile(self) -> None:
        """
        A regular file in a real folder is served.
        """
        self.assertEqual(self.html("real/page"), b"<p>real</p>")

    def test_linkOutside(self) -> None:
        """
        A link to a file outside the folder (standing in for /etc/passwd) is
        not served: the key gets the built-in live page.
        """
        body = self.html("passwd")
        self.assertNotIn(b"root:x:0:0", body)
        self.assertIn(b"<!DOCTYPE html>", body)

    def test_linkInside(self) -> None:
        """
        A link is not followed even when it points inside the folder.
        """
        self.assertNotIn(b"<p>real</p>", self.html("inside"))

    def test_linkedFolder(self) -> None:
        """
        A folder on the way that is a link is not followed.
        """
        self.assertNotIn(b"<p>real</p>", self.html("linked/page"))


# --- 14: no CORS on the operators' pages ------------------------------------


class StatsCORSTests(AppMixin, SynchronousTestCase):
    """
    C{/stats}, C{/stats.json} and C{/metrics} carry no
    C{Access-Control-Allow-Origin}.
    """

    def test_noAllowOrigin(self) -> None:
        """
        None of the three answers a cross-origin read, allowed or refused;
        a long poll still does.
        """
        from artcast.server.stats import Networks

        for path, accept in (
            ("/stats", "text/html"), ("/stats", "application/json"),
            ("/stats.json", None), ("/metrics", None), ("/stats", "image/png"),
        ):
            response, _ = self.answer(self.get(path, {"Accept": accept} if accept else None))
            self.assertIn(response.code, (200, 406))
            self.assertFalse(
                response.headers.hasHeader("Access-Control-Allow-Origin"), path
            )
        self.app.statsNetworks = Networks.parse("10.9.9.0/24")
        for path in ("/stats", "/stats.json", "/metrics"):
            response, _ = self.answer(self.get(path))
            self.assertEqual(response.code, 403)
            self.assertFalse(
                response.headers.hasHeader("Access-Control-Allow-Origin"), path
            )
        self.store.publish("k", 1)
        response, _ = self.answer(self.get("/artcasts/k?since=latest"))
        self.assertEqual(
            response.headers.getRawHeaders("Access-Control-Allow-Origin"), ["*"]
        )


# --- 17: bearer-token guessing ----------------------------------------------


class AuthThrottleTests(SynchronousTestCase):
    """
    L{AuthThrottle} bounds failed token checks per client address.
    """

    def setUp(self) -> None:
        from artcast.server.feeds.publish import AuthThrottle

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.throttle = AuthThrottle(self.clock, failures=3, window=60, maxAddresses=4)

    def test_throttledAfterFailures(self) -> None:
        """
        After C{failures} failures in the window an address waits until the
        window ends; then it may try again.
        """
        for _ in range(3):
            self.assertIsNone(self.throttle.retryAfter("10.0.0.1"))
            self.throttle.failed("10.0.0.1")
        self.assertEqual(self.throttle.retryAfter("10.0.0.1"), 60)
        self.clock.advance(59.5)
        self.assertEqual(self.throttle.retryAfter("10.0.0.1"), 1)
        self.clock.advance(0.5)
        self.assertIsNone(self.throttle.retryAfter("10.0.0.1"))

    def test_otherAddressNotAffected(self) -> None:
        """
        One address's failures do not throttle another.
        """
        for _ in range(10):
            self.throttle.failed("10.0.0.1")
        self.assertIsNotNone(self.throttle.retryAfter("10.0.0.1"))
        self.assertIsNone(self.throttle.retryAfter("10.0.0.2"))

    def test_ipv6Network(self) -> None:
        """
        The addresses of one IPv6 /64 count as one; an IPv4-mapped address
        as its IPv4 address.
        """
        for n in range(3):
            self.throttle.failed(f"2001:db8::{n + 1}")
        self.assertIsNotNone(self.throttle.retryAfter("2001:db8::ffff:1"))
        self.assertIsNone(self.throttle.retryAfter("2001:db8:0:1::1"))
        for _ in range(3):
            self.throttle.failed("::ffff:10.0.0.9")
        self.assertIsNotNone(self.throttle.retryAfter("10.0.0.9"))

    def test_tableBounded(self) -> None:
        """
        The table holds at most C{maxAddresses} addresses, forgetting the one
        that failed least recently.
        """
        for _ in range(3):
            self.throttle.failed("10.0.0.1")
        for n in range(2, 1000):
            self.throttle.failed(f"10.0.{n // 256}.{n % 256}")
            self.assertLessEqual(len(self.throttle), 4)
        self.assertIsNone(self.throttle.retryAfter("10.0.0.1"))


class PublishThrottleTests(SynchronousTestCase):
    """
    C{POST /artcasts/<key>} answers C{429} to an address that guessed too
    often, without checking its token, and counts it.
    """

    def test_429(self) -> None:
        """
        Past C{--publish-auth-failures} unknown tokens, even a good token
        from that address gets C{429} with C{Retry-After} until the window
        ends, counted as C{auth-throttled}; then it publishes again.
        """
        from collections import Counter

        from tests.test_publish import TOKEN, TOKEN_FILE, FakeMulticastReactor, Server
        from artcast.server.feeds.publish import parseTokenFile

        reactor = FakeMulticastReactor()
        reactor.advance(1_800_000_000)
        server = Server(self, reactor, parseTokenFile(TOKEN_FILE))
        # StubTreq's site has no rejected counter: give each request's one.
        rejected: Counter[str] = Counter()
        original = server.publisher.authorize

        def authorize(request):
            request.site.rejected = rejected
            return original(request)

        server.publisher.authorize = authorize
        codes = [
            server.request("POST", "/artcasts/k", b"1", token="guess%016d" % n)[0].code
            for n in range(25)
        ]
        self.assertEqual(codes, [401] * 10 + [429] * 15)
        response, body = server.request("POST", "/artcasts/k", b"1", token=TOKEN)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("Retry-After"), ["60"])
        self.assertEqual(rejected["auth-throttled"], 16)
        self.assertEqual(server.publisher.refused[429], 16)
        reactor.advance(60)
        response, _ = server.request("POST", "/artcasts/k", b"1", token=TOKEN)
        self.assertEqual(response.code, 201)


# --- 4: pings from a client that never reads --------------------------------


class PingTests(SynchronousTestCase):
    """
    Pongs obey the slow-reader bound of streams.
    """

    def setUp(self) -> None:
        from tests.test_streams import UPGRADE, Connection

        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock, maxQueued=10_000)
        self.client = Connection(self.app, self.clock)
        self.client.request("/artcasts/k", UPGRADE)
        self.protocol = self.client.transport.protocol
        self.assertTrue(self.client.transport.value().startswith(b"HTTP/1.1 101"))

    def ping(self, payload: bytes) -> None:
        from tests.test_streams import clientFrame

        self.protocol.dataReceived(clientFrame(9, payload))

    def pongs(self) -> list[bytes]:
        from tests.test_streams import frames

        rest = self.client.transport.value().partition(b"\r\n\r\n")[2]
        return [payload for op, payload in frames(rest) if op == 10]

    def test_pongWhileReading(self) -> None:
        """
        A client that reads gets a pong for each ping.
        """
        self.ping(b"one")
        self.ping(b"two")
        self.assertEqual(self.pongs(), [b"one", b"two"])

    def test_pausedOwesOnePong(self) -> None:
        """
        While the client's socket is full no pong is written; when it drains
        the latest ping is answered once.
        """
        self.client.pause()
        for n in range(20):
            self.ping(b"p%d" % (n,))
        self.assertEqual(self.pongs(), [])
        self.client.resume()
        self.assertEqual(self.pongs(), [b"p19"])
        self.assertFalse(self.client.transport.disconnecting)
        self.assertEqual(self.app.streams.streamsDropped, {})

    def test_pingerDropped(self) -> None:
        """
        A client that keeps pinging without reading is dropped as a slow
        reader and counted; nothing more is written to it.
        """
        self.client.pause()
        before = len(self.client.transport.value())
        for n in range(10_000):
            self.ping(b"x" * 125)
            if self.client.transport.disconnecting:
                break
        self.assertLess(n, 100)
        self.assertTrue(self.client.transport.disconnected)
        self.assertEqual(self.app.streams.streamsDropped, {"websocket": 1})
        self.assertEqual(len(self.client.transport.value()), before)
        self.assertEqual(self.store.listening, 0)


    def test_frameFloodClosed(self) -> None:
        """
        A client that reads but sends more frames than a stream's client
        needs (a burst, then some a second) is closed and counted as
        C{websocket-flood}; one that pings now and then is never closed.
        """
        from artcast.server.outlets.streams import CLIENT_FRAMES_BURST, CLIENT_FRAMES_PER_SECOND

        for _ in range(CLIENT_FRAMES_BURST):
            self.ping(b"x")
        self.assertFalse(self.client.transport.disconnecting)
        self.clock.advance(1.0)
        allowed = int(CLIENT_FRAMES_PER_SECOND)
        for _ in range(allowed):
            self.ping(b"y")
        self.assertFalse(self.client.transport.disconnecting)
        self.assertEqual(len(self.pongs()), CLIENT_FRAMES_BURST + allowed)
        self.ping(b"z")
        self.assertTrue(self.client.transport.disconnected)
        self.assertEqual(self.app.streams.streamsDropped, {})
        self.assertEqual(self.store.listening, 0)
        for _ in range(50):
            self.ping(b"after")
        self.assertEqual(len(self.pongs()), CLIENT_FRAMES_BURST + allowed)

    def test_frameFloodCounted(self) -> None:
        """
        The close is counted in the site's C{rejected} as C{websocket-flood}.
        """
        counted: list[str] = []
        self.patch(streams, "countRejected", lambda request, reason: counted.append(reason))
        for _ in range(CLIENT_FRAMES_BURST + 1):
            self.ping(b"x")
        self.assertEqual(counted, ["websocket-flood"])

    def test_slowPingerNeverClosed(self) -> None:
        """
        Pings a second apart, for longer than the burst, are all answered.
        """
        for _ in range(3 * CLIENT_FRAMES_BURST):
            self.ping(b"p")
            self.clock.advance(1.0)
        self.assertFalse(self.client.transport.disconnecting)
        self.assertEqual(len(self.pongs()), 3 * CLIENT_FRAMES_BURST)


# --- 18: malformed WebSocket handshakes -------------------------------------


class HandshakeLogTests(SynchronousTestCase):
    """
    Malformed WebSocket handshakes are counted and logged at a bounded rate.
    """

    def test_boundedAndCounted(self) -> None:
        """
        1,000 malformed handshakes write at most a few warnings and are
        counted under C{websocket-handshake}.
        """
        from collections import Counter

        from twisted.logger import LogLevel, globalLogPublisher

        from tests.test_streams import Connection

        clock = Clock()
        app = ArtcastApp(KeyStore(clock, instance="srv"), clock)
        rejected: Counter[str] = Counter()
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for n in range(1000):
            client = Connection(app, clock)
            client.site.rejected = rejected
            client.request("/artcasts/k", {"Upgrade": "websocket", "Connection": "Upgrade"})
            self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 400"))
            client.lose()
            if n == 500:
                clock.advance(61)
        warnings = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertLessEqual(len(warnings), 25)
        self.assertGreater(len(warnings), 0)
        self.assertEqual(rejected["websocket-handshake"], 1000)


# --- against the real server ------------------------------------------------


def residentKiB(pid: int) -> int:
    """
    A process's resident memory (C{VmRSS}) in KiB.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawClient:
    """
    A blocking HTTP/1.1 client on one loopback connection, from a chosen
    local address, with a deadline on every read.
    """

    def __init__(self, port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> None:
        import socket

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.socket.bind((source, 0))
        self.socket.settimeout(10)
        self.socket.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def _more(self) -> bytes:
        data = self.socket.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._more()
        top, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = top.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        code, headers = self.head()
        length = int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self.buffer += self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return code, headers, body

    def frames(self, count: int) -> list[tuple[int, bytes]]:
        """
        Read C{count} unmasked server frames (short ones).
        """
        found = []
        while len(found) < count:
            while len(self.buffer) < 2 or len(self.buffer) < 2 + (self.buffer[1] & 0x7F):
                self.buffer += self._more()
            length = self.buffer[1] & 0x7F
            found.append((self.buffer[0] & 0x0F, self.buffer[2:2 + length]))
            self.buffer = self.buffer[2 + length:]
        return found

    def close(self) -> None:
        self.socket.close()


def upgradeRequest(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def quietServer(testCase: TestCase, *extra: str) -> Any:
    """
    Start a real server whose access log goes to a file: these tests block
    the reactor while they talk to it, and a full stderr pipe would stall it.
    """
    accessLog = os.path.abspath(testCase.mktemp())
    return ArtcastProcess(testCase, extra=["--access-log", accessLog, *extra]).start()


class RealServerBoundsTests(TestCase):
    """
    The bounds against the real C{twistd artcast} over loopback.
    """

    timeout = 90

    @inlineCallbacks
    def test_pingFlood(self) -> Any:
        """
        A WebSocket client that sends megabytes of pings and never reads is
        cut off (as a slow reader, or first for sending more frames than a
        stream's client may), the server's RSS stays bounded, and another
        client still gets its datums.
        """
        proc = yield quietServer(self)
        reader = RawClient(proc.httpPort)
        self.addCleanup(reader.close)
        reader.send(upgradeRequest("/artcasts/k"))
        self.assertEqual(reader.head()[0], 101)
        yield proc.waitFor(lambda s: s["streams_open"].get("websocket") == 1)
        before = residentKiB(proc.pid)
        pinger = RawClient(proc.httpPort, rcvbuf=4096)
        self.addCleanup(pinger.close)
        pinger.send(upgradeRequest("/artcasts/k"))
        # RFC 6455: a client sends frames only once the handshake is answered.
        self.assertEqual(pinger.head()[0], 101)
        # A masked ping with a zero mask and 125 bytes of payload, many times.
        burst = (b"\x89\xfd\0\0\0\0" + b"p" * 125) * 2000
        sent = 0
        limit = 60 * 1024 * 1024
        try:
            while sent < limit:
                pinger.send(burst)
                sent += len(burst)
        except OSError:
            pass
        stats = yield proc.waitFor(
            lambda s: s["streams_dropped"].get("websocket", 0)
            + s["rejected"].get("websocket-flood", 0) == 1,
            limit=20,
        )
        grown = residentKiB(proc.pid) - before
        self.assertLess(sent, limit, "the pinger was never cut off")
        self.assertLess(grown, 16 * 1024, f"RSS grew by {grown} KiB after {sent} bytes")
        print(f"\n{sent} bytes of pings sent before the cut; RSS grew {grown} KiB")
        self.assertEqual(stats["streams_open"].get("websocket"), 1)
        proc.data.sendDatum("k", 42)
        [(opcode, payload)] = reader.frames(1)
        self.assertEqual((opcode, json.loads(payload)["value"]), (1, 42))

    @inlineCallbacks
    def test_badHandshakes(self) -> Any:
        """
        1,000 malformed WebSocket handshakes write at most a few lines of
        error log, and are counted under C{rejected} C{websocket-handshake}.
        """
        errorLog = os.path.abspath(self.mktemp())
        proc = yield quietServer(self, "--error-log", errorLog)
        start = os.path.getsize(errorLog) if os.path.exists(errorLog) else 0

        def handshakes() -> list[int]:
            codes = []
            for n in range(1000):
                client = RawClient(proc.httpPort)
                client.send(
                    b"GET /artcasts/k HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n"
                )
                codes.append(client.head()[0])
                client.close()
            return codes

        # In a thread, so that the reactor reads the server's output meanwhile.
        codes = yield deferToThread(handshakes)
        self.assertEqual(set(codes), {400})
        stats = yield proc.waitFor(
            lambda s: s.get("rejected", {}).get("websocket-handshake") == 1000
        )
        with open(errorLog, "rb") as log:
            log.seek(start)
            written = log.read()
        self.assertLessEqual(written.count(b"\n"), 12, written[:2000])
        print(f"\n1000 bad handshakes: {len(written)} bytes of error log")
        self.assertIn(
            "artcast_rejected_total{reason=\"websocket-handshake\"} 1000.0",
            (yield (yield treq.get(proc.url + "/metrics", persistent=False)).text()),
        )
        del stats

    @inlineCallbacks
    def test_guessingThrottled(self) -> Any:
        """
        Bearer-token guesses on one connection drop from the server's speed
        to the throttle's rate (10 a minute), the rest answered 429 and
        counted; a good token from another address still publishes.
        """
        from tests.test_publish import TOKEN, _writeTokens

        proc = yield quietServer(
            self, "--publish-token-file", _writeTokens(self), "--publish-ttl", "0"
        )
        guesser = RawClient(proc.httpPort)
        self.addCleanup(guesser.close)
        codes: dict[int, int] = {}
        deadline = time.monotonic() + 1.5
        n = 0
        while time.monotonic() < deadline:
            n += 1
            guesser.send(
                b"POST /artcasts/k HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                b"Content-Type: application/json\r\n"
                b"Authorization: Bearer guess%016d\r\n\r\n1" % (n,)
            )
            code = guesser.response()[0]
            codes[code] = codes.get(code, 0) + 1
        self.assertEqual(codes[401], 10, codes)
        self.assertGreater(codes[429], 100, codes)
        self.assertEqual(set(codes), {401, 429})
        other = RawClient(proc.httpPort, source="127.0.0.2")
        self.addCleanup(other.close)
        other.send(
            b"POST /artcasts/k HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Content-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n1"
        )
        self.assertEqual(other.response()[0], 201)
        stats = yield proc.stats()
        self.assertEqual(stats["rejected"].get("auth-throttled"), codes[429])
        print(f"\n{n} guesses in 1.5 s on one connection, {codes[401]} checked")
