# -*- test-case-name: tests.test_integration -*-
"""
Integration tests: the real C{twistd artcast} process, real loopback HTTP
sockets and real multicast datagrams (see L{tests.harness}).

No test sleeps and hopes: before a datum is sent, the test waits (through
C{/stats.json}) until the server holds the long poll that should get it.
"""

from __future__ import annotations

import datetime
import grp
import json
import os
import pwd
import re
import signal
import socket
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    inlineCallbacks,
    returnValue,
)
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web._newclient import ResponseNeverReceived

from tests.harness import STOP_LIMIT, ArtcastProcess, freePort, freePorts


class HarnessTests(TestCase):
    """
    The harness gives each server ports of its own.
    """

    def test_portsDiffer(self) -> None:
        """
        The ports handed out together are different, and a server's data
        and register ports differ even when its data port is given.
        """
        ports = freePorts(64, socket.SOCK_DGRAM)
        self.assertEqual(len(set(ports)), 64)
        given = ArtcastProcess(self, dataPort=ports[0])
        self.assertNotEqual(given.registerPort, given.dataPort)
        made = ArtcastProcess(self)
        self.assertNotEqual(made.registerPort, made.dataPort)

    @inlineCallbacks
    def test_portTakenMeanwhile(self) -> Any:
        """
        A server whose HTTP port, found free, was taken before it bound it
        is started again on another free port.
        """
        import tests.harness as harness

        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        ports = [taken.getsockname()[1]]
        real = harness.freePort
        self.patch(harness, "freePort", lambda *a: ports.pop() if ports else real(*a))
        proc = yield ArtcastProcess(self).start()
        self.assertNotEqual(proc.httpPort, taken.getsockname()[1])
        response = yield treq.get(proc.url + "/stats.json", persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()


class RawResponse:
    """
    One HTTP response as it came off the socket.

    @ivar code: the status code.
    @ivar headers: lower-cased header name to the list of its values.
    @ivar body: the body bytes (by C{Content-Length}, or up to the close).
    """

    def __init__(self, statusLine: bytes, headerBlock: bytes, body: bytes) -> None:
        self.statusLine = statusLine
        self.code = int(statusLine.split(b" ")[1])
        self.headers: dict[bytes, list[bytes]] = {}
        for line in headerBlock.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b":")
                self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """
        The only value of a header, or L{None} if it is absent.
        """
        values = self.headers.get(name.lower())
        if values is None:
            return None
        assert len(values) == 1, (name, values)
        return values[0]


def _dechunk(data: bytes) -> tuple[bytes | None, int]:
    """
    Decode a chunked body (without trailers): the body and how many bytes it
    took, or L{None} if it is not all there yet.
    """
    body = b""
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return None, 0
        size = int(data[position:end].split(b";")[0], 16)
        start = end + 2
        if size == 0:
            if data[start:start + 2] != b"\r\n":
                return None, 0
            return body, start + 2
        if len(data) < start + size + 2:
            return None, 0
        body += data[start:start + size]
        position = start + size + 2


class RawHTTPClient(Protocol):
    """
    A byte-exact HTTP client: what is sent is what the test wrote, and
    responses are parsed from the raw bytes, so headers such as
    C{Content-Length} and C{Transfer-Encoding} are seen as the server sent
    them.

    @ivar lost: fires when the connection is closed, by either side.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.lost: Deferred[None] = Deferred()
        self._waiting: Deferred[RawResponse] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._deliver()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        self._deliver()
        self.lost.callback(None)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def nextResponse(self) -> Deferred[RawResponse]:
        """
        The next whole response on the connection.
        """
        assert self._waiting is None
        self._waiting = Deferred()
        waiting = self._waiting
        self._deliver()
        return waiting

    def _parse(self) -> RawResponse | None:
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return None
        statusLine, _, headerBlock = head.partition(b"\r\n")
        response = RawResponse(statusLine, headerBlock, b"")
        if response.header(b"transfer-encoding") is not None:
            # Chunked: read it, so that a test can see it and fail at once.
            body, consumed = _dechunk(rest)
            if body is None:
                return None
            response.body = body
            self.buffer = rest[consumed:]
            return response
        length = response.header(b"content-length")
        if length is None:
            if not self.closed:
                return None
            size = len(rest)
        else:
            size = int(length)
        if len(rest) < size:
            return None
        response.body = rest[:size]
        self.buffer = rest[size:]
        return response

    def _deliver(self) -> None:
        if self._waiting is None:
            return
        response = self._parse()
        waiting = self._waiting
        if response is not None:
            self._waiting = None
            waiting.callback(response)
        elif self.closed:
            self._waiting = None
            waiting.errback(
                ConnectionError("closed before a whole response: %r" % (self.buffer,))
            )


@inlineCallbacks
def rawConnect(
    testCase: TestCase, proc: ArtcastProcess, source: str = "127.0.0.1"
) -> Any:
    """
    Open a raw connection to the server from C{source} (any 127/8 address
    on Linux), aborted at the test's cleanup.
    """
    client = RawHTTPClient()
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", proc.httpPort, timeout=10, bindAddress=(source, 0)
    )
    yield connectProtocol(endpoint, client)

    def close() -> Deferred[None]:
        if not client.closed:
            client.transport.abortConnection()
        return client.lost

    testCase.addCleanup(close)
    returnValue(client)


def requestBytes(path: bytes, headers: dict[bytes, bytes] | None = None) -> bytes:
    """
    An HTTP/1.1 GET request for C{path}.
    """
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


@inlineCallbacks
def rawGet(
    testCase: TestCase, proc: ArtcastProcess, path: bytes, headers: dict[bytes, bytes] | None = None
) -> Any:
    """
    Send one raw request and return its L{RawResponse}.
    """
    client = yield rawConnect(testCase, proc)
    client.send(requestBytes(path, headers))
    response = yield client.nextResponse()
    returnValue(response)


@inlineCallbacks
def fetch(url: str, accept: str | None = None, headers: dict[str, list[str]] | None = None,
          **kw: Any) -> Any:
    """
    GET C{url} with treq (a fresh connection) and return the response and
    its whole body.
    """
    headers = dict(headers or {})
    if accept is not None:
        headers["Accept"] = [accept]
    response = yield treq.get(url, headers=headers, persistent=False, **kw)
    body = yield response.content()
    returnValue((response, body))


def header(response: Any, name: str) -> str | None:
    """
    The only value of a treq response's header, or L{None}.
    """
    values = response.headers.getRawHeaders(name.encode("ascii"))
    if values is None:
        return None
    assert len(values) == 1, (name, values)
    return values[0].decode("latin-1")


def canonical(value: Any) -> str:
    """
    A JSON text that tells C{true} from C{1} and C{1} from C{1.0}.
    """
    return json.dumps(value, sort_keys=True)


class ServerTestsMixin:
    """
    Start a server and wait for long polls.
    """

    timeout = 60

    @inlineCallbacks
    def serve(self, *extra: str, **kw: Any) -> Any:
        proc = yield ArtcastProcess(self, extra=list(extra), **kw).start()
        returnValue(proc)

    @inlineCallbacks
    def poll(self, proc: ArtcastProcess, key: str, value: Any, accept: str | None = None,
             path: str | None = None) -> Any:
        """
        Start a long poll for C{key}, wait until the server holds it, send
        C{value}, and return the response and body.
        """
        before = (yield proc.stats())["waiting"]
        answer = fetch(proc.url + (path or "/artcasts/" + key), accept)
        yield proc.waitForWaiters(before + 1)
        proc.data.sendDatum(key, value)
        result = yield answer
        returnValue(result)


class ContentTypeTests(ServerTestsMixin, TestCase):
    """
    Content negotiation on C{GET /artcasts/<key>} over a real socket.
    """

    @inlineCallbacks
    def test_json(self) -> Any:
        """
        No C{Accept}, C{*/*} and C{application/json} all get the value as JSON.
        """
        proc = yield self.serve()
        value = {"temperature": 21.5, "unit": "C"}
        answers = [fetch(proc.url + "/artcasts/k", accept)
                   for accept in (None, "*/*", "application/json")]
        yield proc.waitForWaiters(3)
        proc.data.sendDatum("k", value)
        for answer in answers:
            response, body = yield answer
            self.assertEqual(response.code, 200)
            self.assertEqual(header(response, "Content-Type"), "application/json")
            self.assertEqual(json.loads(body), value)

    @inlineCallbacks
    def test_textPlain(self) -> Any:
        """
        C{text/plain} gets a string without its quotes and a number as JSON text.
        """
        proc = yield self.serve()
        response, body = yield self.poll(proc, "s", 'say "hi" ✓', "text/plain")
        self.assertEqual(response.code, 200)
        self.assertTrue(header(response, "Content-Type").startswith("text/plain"))
        self.assertEqual(body.decode("utf-8"), 'say "hi" ✓')
        response, body = yield self.poll(proc, "n", 42.5, "text/plain")
        self.assertEqual(body, b"42.5")

    @inlineCallbacks
    def test_html(self) -> Any:
        """
        C{text/html} gets a page naming the key, HTML-escaped.
        """
        proc = yield self.serve()
        response, body = yield fetch(
            proc.url + "/artcasts/a/%3Cb%3E%26%22c%22", "text/html"
        )
        self.assertEqual(response.code, 200)
        self.assertTrue(header(response, "Content-Type").startswith("text/html"))
        self.assertIn(b"a/&lt;b&gt;&amp;&quot;c&quot;", body)
        self.assertNotIn(b"<b>", body)

    @inlineCallbacks
    def test_qValues(self) -> Any:
        """
        The type with the higher q-value wins: JSON at 0.9 over text at 0.5.
        """
        proc = yield self.serve()
        response, body = yield self.poll(
            proc, "k", "hello", "text/plain;q=0.5, application/json;q=0.9"
        )
        self.assertEqual(header(response, "Content-Type"), "application/json")
        self.assertEqual(body, b'"hello"')

    @inlineCallbacks
    def test_notAcceptable(self) -> Any:
        """
        A client that accepts only C{image/png} gets C{406} at once.
        """
        proc = yield self.serve()
        response, body = yield fetch(proc.url + "/artcasts/k", "image/png")
        self.assertEqual(response.code, 406)
        self.assertEqual((yield proc.stats())["waiting"], 0)


class HeaderTests(ServerTestsMixin, TestCase):
    """
    The headers of a value answer.
    """

    @inlineCallbacks
    def test_contentLength(self) -> Any:
        """
        A value answer carries a correct C{Content-Length} and is not chunked.
        """
        proc = yield self.serve()
        client = yield rawConnect(self, proc)
        client.send(requestBytes(b"/artcasts/k"))
        yield proc.waitForWaiters(1)
        proc.data.sendDatum("k", ["ü", 1, None])
        response = yield client.nextResponse()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (len(response.body),))
        self.assertEqual(json.loads(response.body), ["ü", 1, None])
        self.assertIsNone(response.header(b"transfer-encoding"))

    @inlineCallbacks
    def test_artcastHeaders(self) -> Any:
        """
        A value answer carries CORS headers (origin C{*}), C{Artcast-Key},
        C{Artcast-Id} and C{ETag: W/"<id>"}.
        """
        proc = yield self.serve()
        response, body = yield self.poll(proc, "room/temp", 20)
        self.assertEqual(header(response, "Access-Control-Allow-Origin"), "*")
        exposed = {name.strip().lower() for name in
                   header(response, "Access-Control-Expose-Headers").split(",")}
        self.assertLessEqual(
            {"artcast-key", "artcast-id", "etag", "link"}, exposed
        )
        self.assertEqual(header(response, "Artcast-Key"), "room/temp")
        datumId = header(response, "Artcast-Id")
        self.assertRegex(datumId, r"^[A-Za-z0-9_-]+\.\d+\.[1-9]\d*$")
        self.assertEqual(header(response, "ETag"), 'W/"%s"' % (datumId,))

    @inlineCallbacks
    def test_customOrigin(self) -> Any:
        """
        C{--access-control-allow-origin} sets the CORS origin of value answers.
        """
        proc = yield self.serve("--access-control-allow-origin", "https://example.org")
        response, body = yield self.poll(proc, "k", 1)
        self.assertEqual(
            header(response, "Access-Control-Allow-Origin"), "https://example.org"
        )

    @inlineCallbacks
    def test_licenseLink(self) -> Any:
        """
        After a registration with a license, value answers carry
        C{Link: <uri>; rel="license"; title="..."}.
        """
        proc = yield self.serve()
        proc.register.send(json.dumps(["lic", {
            "description": "A licensed artcast.",
            "license": {"uri": "https://creativecommons.org/licenses/by/4.0/",
                        "title": "CC BY 4.0"},
        }]).encode("utf-8"))
        yield proc.waitFor(lambda stats: stats["registrations"] >= 1)
        response, body = yield self.poll(proc, "lic", 7)
        self.assertEqual(
            header(response, "Link"),
            '<https://creativecommons.org/licenses/by/4.0/>; rel="license"; '
            'title="CC BY 4.0"',
        )


class LongPollTests(ServerTestsMixin, TestCase):
    """
    Long polls: who gets what, and when.
    """

    @inlineCallbacks
    def test_twoClients(self) -> Any:
        """
        Two clients waiting on one key both get the datum.
        """
        proc = yield self.serve()
        first = fetch(proc.url + "/artcasts/k")
        second = fetch(proc.url + "/artcasts/k")
        yield proc.waitForWaiters(2)
        proc.data.sendDatum("k", "both")
        (one, oneBody), (two, twoBody) = (yield first), (yield second)
        self.assertEqual((oneBody, twoBody), (b'"both"', b'"both"'))
        self.assertEqual(header(one, "Artcast-Id"), header(two, "Artcast-Id"))

    @inlineCallbacks
    def test_levels(self) -> Any:
        """
        A key with C{/} levels (and a non-ASCII level) is served at its path.
        """
        proc = yield self.serve()
        response, body = yield self.poll(
            proc, "house/küche/temp", 19, path="/artcasts/house/k%C3%BCche/temp"
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"19")
        self.assertEqual(header(response, "Artcast-Key"), "house/k%C3%BCche/temp")

    @inlineCallbacks
    def test_jsonTypes(self) -> Any:
        """
        Every JSON type comes back exactly as it was sent.
        """
        proc = yield self.serve()
        values = [
            None, True, False, 0, -17, 2**70, 3.141592653589793, 1e-7,
            'quote " backslash \\ ünïcødé ✓ 🎉 tab\t',
            [1, "two", [3.0, None]],
            {"a": {"b": [True, {"c": False}]}, "é": ""},
        ]
        answers = [fetch(proc.url + "/artcasts/t/%d" % (i,)) for i in range(len(values))]
        yield proc.waitForWaiters(len(values))
        for i, value in enumerate(values):
            # Real UTF-8 on the wire, not \\u escapes.
            proc.data.send(json.dumps(["t/%d" % (i,), value], ensure_ascii=False).encode("utf-8"))
        for value, answer in zip(values, answers):
            response, body = yield answer
            self.assertEqual(canonical(json.loads(body)), canonical(value))

    @inlineCallbacks
    def test_heldWithoutDatum(self) -> Any:
        """
        A long poll for a key that gets no datum stays unanswered while other
        keys' datums are delivered.
        """
        proc = yield self.serve()
        quiet = treq.get(proc.url + "/artcasts/quiet", persistent=False)
        quiet.addErrback(lambda failure: failure.trap(CancelledError, ResponseNeverReceived))
        yield proc.waitForWaiters(1)
        response, body = yield self.poll(proc, "busy", 1)
        self.assertEqual(body, b"1")
        response, body = yield self.poll(proc, "quiet/sub", 2)
        self.assertEqual(body, b"2")
        self.assertNoResult(quiet)
        self.assertEqual((yield proc.stats())["waiting"], 1)
        quiet.cancel()
        yield quiet

    @inlineCallbacks
    def test_rawDisconnect(self) -> Any:
        """
        A client that closes its connection while waiting is forgotten: the
        waiting count returns to zero.
        """
        proc = yield self.serve()
        client = yield rawConnect(self, proc)
        client.send(requestBytes(b"/artcasts/k"))
        yield proc.waitForWaiters(1)
        client.transport.loseConnection()
        yield client.lost
        yield proc.waitFor(lambda stats: stats["waiting"] == 0)

    @inlineCallbacks
    def test_cancelledRequest(self) -> Any:
        """
        A treq request cancelled while waiting is forgotten by the server.
        """
        proc = yield self.serve()
        waiting = treq.get(proc.url + "/artcasts/k", persistent=False)
        yield proc.waitForWaiters(1)
        waiting.cancel()
        yield self.assertFailure(waiting, CancelledError, ResponseNeverReceived)
        yield proc.waitFor(lambda stats: stats["waiting"] == 0)
        # The server still answers the next poll for that key.
        response, body = yield self.poll(proc, "k", "after")
        self.assertEqual(body, b'"after"')

    @inlineCallbacks
    def test_http10(self) -> Any:
        """
        An HTTP/1.0 request gets the value with C{Content-Length}, then the
        server closes the connection.
        """
        proc = yield self.serve()
        client = yield rawConnect(self, proc)
        client.send(b"GET /artcasts/k HTTP/1.0\r\n\r\n")
        yield proc.waitForWaiters(1)
        proc.data.sendDatum("k", {"v": 1})
        response = yield client.nextResponse()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (len(response.body),))
        self.assertEqual(json.loads(response.body), {"v": 1})
        yield client.lost
        self.assertEqual(client.buffer, b"")

    @inlineCallbacks
    def test_keepAlive(self) -> Any:
        """
        One HTTP/1.1 connection answers two long polls in turn.
        """
        proc = yield self.serve()
        client = yield rawConnect(self, proc)
        for value in ("first", "second"):
            client.send(requestBytes(b"/artcasts/k"))
            yield proc.waitForWaiters(1)
            proc.data.sendDatum("k", value)
            response = yield client.nextResponse()
            self.assertEqual(response.code, 200)
            self.assertEqual(json.loads(response.body), value)
            self.assertFalse(client.closed)


class ListingTests(ServerTestsMixin, TestCase):
    """
    C{GET /} and C{GET /artcasts}.
    """

    @inlineCallbacks
    def test_rootRedirects(self) -> Any:
        """
        C{GET /} redirects to C{/artcasts}.
        """
        proc = yield self.serve()
        response, body = yield fetch(proc.url + "/", allow_redirects=False)
        self.assertIn(response.code, (301, 302, 303, 307, 308))
        self.assertTrue(header(response, "Location").endswith("/artcasts"))

    @inlineCallbacks
    def fill(self, proc: ArtcastProcess) -> Any:
        """
        Register C{reg/<one>} and send data for two keys never registered.
        """
        proc.register.send(json.dumps(
            ["reg/<one>", {"description": "Registered & described", "colour": "blue"}]
        ).encode("utf-8"))
        proc.data.sendDatum("data/only", 1)
        proc.data.sendDatum("a/first", 2)
        yield proc.waitFor(lambda stats: stats["keys"] == 3)

    @inlineCallbacks
    def test_listJSON(self) -> Any:
        """
        C{/artcasts} lists registered keys and keys seen only in data,
        sorted by key, as JSON with the registered metadata.
        """
        proc = yield self.serve()
        yield self.fill(proc)
        response, body = yield fetch(proc.url + "/artcasts", "application/json")
        self.assertEqual(header(response, "Content-Type"), "application/json")
        self.assertEqual(json.loads(body), [
            {"key": "a/first"},
            {"key": "data/only"},
            {"key": "reg/<one>", "description": "Registered & described", "colour": "blue"},
        ])

    @inlineCallbacks
    def test_listHTML(self) -> Any:
        """
        C{/artcasts} with C{Accept: text/html} is a page linking to each key,
        escaped.
        """
        proc = yield self.serve()
        yield self.fill(proc)
        response, body = yield fetch(proc.url + "/artcasts", "text/html")
        self.assertTrue(header(response, "Content-Type").startswith("text/html"))
        self.assertIn(b'href="/artcasts/a/first"', body)
        self.assertIn(b'href="/artcasts/data/only"', body)
        self.assertIn(b'href="/artcasts/reg/%3Cone%3E"', body)
        self.assertIn(b"reg/&lt;one&gt;", body)
        self.assertIn(b"Registered &amp; described", body)
        self.assertNotIn(b"<one>", body)


class BadInputTests(ServerTestsMixin, TestCase):
    """
    Bad datagrams and bad requests never stop the server.
    """

    @inlineCallbacks
    def test_badDatagrams(self) -> Any:
        """
        Malformed datagrams are dropped and counted by reason, and the next
        good datum still reaches a waiting client.
        """
        proc = yield self.serve()
        answer = fetch(proc.url + "/artcasts/k")
        yield proc.waitForWaiters(1)
        for datagram in (
            b'\xff\xfe["k", 1]',  # not UTF-8
            b'["k", 1',  # not JSON
            b'["k"]',  # wrong shape
            b'{"key": "k", "value": 1}',  # an object without "v"
            json.dumps(["k\u0001", 1]).encode("utf-8"),  # control character
        ):
            proc.data.send(datagram)
        expected = {"not-utf8": 1, "not-json": 1, "bad-shape": 2, "bad-key": 1}
        yield proc.waitFor(lambda stats: stats["dropped"] == expected)
        self.assertNoResult(answer)
        proc.data.sendDatum("k", "good")
        response, body = yield answer
        self.assertEqual(body, b'"good"')
        stats = yield proc.stats()
        self.assertEqual(stats["dropped"], expected)
        self.assertEqual(stats["datums"], 1)

    @inlineCallbacks
    def test_largeDatagram(self) -> Any:
        """
        A datagram of 60,000 bytes is read whole, not cut at 8,192.
        """
        proc = yield self.serve()
        prefix = b'["big", "'
        value = "x" * (60000 - len(prefix) - len(b'"]'))
        datagram = json.dumps(["big", value]).encode("utf-8")
        self.assertEqual(len(datagram), 60000)
        answer = fetch(proc.url + "/artcasts/big")
        yield proc.waitForWaiters(1)
        proc.data.send(datagram)
        stats = yield proc.waitFor(
            lambda stats: stats["datums"] + sum(stats["dropped"].values()) >= 1
        )
        self.assertEqual((stats["datums"], stats["dropped"]), (1, {}))
        response, body = yield answer
        self.assertEqual(json.loads(body), value)

    @inlineCallbacks
    def test_badPaths(self) -> Any:
        """
        Bad keys in paths get a 4xx, not a 500, and are not held.
        """
        proc = yield self.serve()
        for path in (
            b"/artcasts/%ff",
            b"/artcasts/a//b",
            b"/artcasts/" + b"x" * 300,
            b"/artcasts/a%0d%0aSet-Cookie:%20x=1",
            b"/artcasts/",
            b"/artcasts/a/../b",
        ):
            response = yield rawGet(self, proc, path)
            self.assertTrue(400 <= response.code < 500, (path, response.statusLine))
            self.assertIsNone(response.header(b"set-cookie"))
        self.assertEqual((yield proc.stats())["waiting"], 0)

    @inlineCallbacks
    def test_badTimeout(self) -> Any:
        """
        C{?timeout=abc} is a C{400}.
        """
        proc = yield self.serve()
        response, body = yield fetch(proc.url + "/artcasts/k?timeout=abc")
        self.assertEqual(response.code, 400)


class TemplateTests(ServerTestsMixin, TestCase):
    """
    C{--templates DIR}.
    """

    def templates(self) -> str:
        """
        A templates folder holding C{k.html} and C{sub/page.html}, next to a
        C{secret.html} outside it.
        """
        top = os.path.abspath(self.mktemp())
        folder = os.path.join(top, "templates")
        os.makedirs(os.path.join(folder, "sub"))
        with open(os.path.join(folder, "k.html"), "wb") as f:
            f.write(b"<html><body>The page of k</body></html>")
        with open(os.path.join(folder, "sub", "page.html"), "wb") as f:
            f.write(b"<html><body>The page of sub/page</body></html>")
        with open(os.path.join(top, "secret.html"), "wb") as f:
            f.write(b"SECRET outside the templates folder")
        return folder

    @inlineCallbacks
    def test_template(self) -> Any:
        """
        C{<key>.html} in the folder is served for C{Accept: text/html}.
        """
        proc = yield self.serve("--templates", self.templates())
        response, body = yield fetch(proc.url + "/artcasts/k", "text/html")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"<html><body>The page of k</body></html>")
        response, body = yield fetch(proc.url + "/artcasts/sub/page", "text/html")
        self.assertEqual(body, b"<html><body>The page of sub/page</body></html>")

    @inlineCallbacks
    def test_confined(self) -> Any:
        """
        An encoded C{..} in the key cannot reach a file outside the folder.
        """
        proc = yield self.serve("--templates", self.templates())
        for path in (
            b"/artcasts/..%2f..%2fetc%2fpasswd",
            b"/artcasts/..%2fsecret",
            b"/artcasts/%2e%2e/secret",
            b"/artcasts/..%5csecret",
        ):
            response = yield rawGet(self, proc, path, {b"Accept": b"text/html"})
            self.assertNotEqual(response.code, 500, path)
            self.assertNotIn(b"SECRET", response.body)
            self.assertNotIn(b"root:", response.body)


class DemoTests(ServerTestsMixin, TestCase):
    """
    C{--demo}.
    """

    @inlineCallbacks
    def test_demo(self) -> Any:
        """
        With C{--demo}, C{test/tick} counts up, C{test/now} is an ISO 8601
        UTC time, and both are registered with a license.
        """
        proc = yield self.serve("--demo")
        response, body = yield fetch(proc.url + "/artcasts/test/tick?since=latest")
        first = json.loads(body)
        self.assertIsInstance(first, int)
        datumId = header(response, "Artcast-Id")
        response, body = yield fetch(proc.url + "/artcasts/test/tick?since=" + datumId)
        self.assertEqual(json.loads(body), first + 1)

        response, body = yield fetch(proc.url + "/artcasts/test/now?since=latest")
        now = json.loads(body)
        self.assertRegex(now, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
        parsed = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
        self.assertEqual(parsed.utcoffset(), datetime.timedelta(0))
        self.assertIn("license", header(response, "Link"))

        response, body = yield fetch(proc.url + "/artcasts", "application/json")
        listed = {entry["key"]: entry for entry in json.loads(body)}
        for key in ("test/tick", "test/now"):
            self.assertIsInstance(listed[key]["license"]["uri"], str)
            self.assertTrue(listed[key]["description"])


def freeLowPort() -> int | None:
    """
    A TCP port from 900 to 1000 free on 127.0.0.1, or L{None}.
    """
    for port in range(900, 1001):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return None


def unprivilegedIds() -> tuple[int, int]:
    """
    The uid of C{nobody} and the gid of C{nogroup}, for tests that start a
    server as root and have it drop privileges.

    @raise SkipTest: if this process is not root, or there is no such user
        or group.
    """
    if os.geteuid() != 0:
        raise SkipTest("binding a port below 1024 and changing uid need root")
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        raise SkipTest("this system has no nobody user or nogroup group")


def effectiveUid(pid: int) -> int:
    """
    The effective uid of a process, from C{/proc/<pid>/status}.
    """
    with open("/proc/%d/status" % (pid,)) as status:
        for line in status:
            if line.startswith("Uid:"):
                return int(line.split()[2])
    raise AssertionError("no Uid: line for %d" % (pid,))


class ProcessTests(ServerTestsMixin, TestCase):
    """
    How the server is started: ports, daemonizing, privileges.
    """

    @inlineCallbacks
    def test_barePort(self) -> Any:
        """
        C{--client-port} given as a bare number serves HTTP on that port.
        """
        port = freePort()
        proc = yield self.serve("--client-port", str(port), httpPort=port)
        self.assertIn("--client-port", proc.args)
        self.assertEqual(proc.args[-1], str(port))
        response, body = yield self.poll(proc, "k", "bare")
        self.assertEqual(body, b'"bare"')

    @inlineCallbacks
    def test_daemon(self) -> Any:
        """
        Without C{-n} the server daemonizes, writes its pid to C{--pidfile},
        answers, and on SIGTERM exits and removes the pidfile.
        """
        proc = ArtcastProcess(self, daemon=True)
        launcher = None

        def spawn(original: Any = proc.spawn) -> None:
            nonlocal launcher
            original()
            launcher = proc.pid

        proc.spawn = spawn  # type: ignore[method-assign]
        yield proc.start()
        with open(proc.pidfile) as f:
            pid = int(f.read().strip())
        self.assertEqual(pid, proc.pid)
        self.assertNotEqual(pid, launcher)
        self.assertTrue(proc.alive())
        response, body = yield self.poll(proc, "k", "daemon")
        self.assertEqual(body, b'"daemon"')
        os.kill(pid, signal.SIGTERM)
        deadline = reactor.seconds() + STOP_LIMIT
        while (proc.alive() or os.path.exists(proc.pidfile)) and reactor.seconds() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(proc.alive())
        self.assertFalse(os.path.exists(proc.pidfile))

    @inlineCallbacks
    def test_dropPrivileges(self) -> Any:
        """
        Started as root with C{--uid nobody} on a port below 1024, the server
        binds the port, then runs as nobody.
        """
        uid, gid = unprivilegedIds()
        port = freeLowPort()
        if port is None:
            raise SkipTest("no free port from 900 to 1000")
        proc = yield self.serve(
            httpPort=port,
            twistdArgs=["--pidfile", "", "--uid", str(uid), "--gid", str(gid)],
        )
        response, body = yield self.poll(proc, "k", "low")
        self.assertEqual(body, b'"low"')
        self.assertEqual(effectiveUid(proc.pid), uid)


APACHE_COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
    r'"GET /[^" ]* HTTP/1\.1" 200 \d+ "-" "[^"]*"$'
)


class LogTests(ServerTestsMixin, TestCase):
    """
    C{--access-log} and C{--error-log}.
    """

    @inlineCallbacks
    def test_accessLogRotation(self) -> Any:
        """
        The access log is rotated by size, keeps C{--access-log-count} files,
        and every line is Apache's combined format.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "access.log")
        proc = yield self.serve(
            "--access-log", path, "--access-log-size", "2000", "--access-log-count", "2"
        )
        # Each line is about 110 bytes: 100 lines fill five files of 2,000.
        for _ in range(100):
            yield fetch(proc.url + "/stats.json", headers={"User-Agent": ["artcast-test/1.0"]})
        names = sorted(os.listdir(folder))
        self.assertEqual(names, ["access.log", "access.log.1", "access.log.2"])
        lines = []
        for name in names:
            with open(os.path.join(folder, name), encoding="ascii") as f:
                lines.extend(f.read().splitlines())
            self.assertLessEqual(os.path.getsize(os.path.join(folder, name)), 2000 + 200)
        self.assertGreater(len(lines), 20)
        for line in lines:
            self.assertRegex(line, APACHE_COMBINED)
        self.assertTrue(any(line.endswith('"artcast-test/1.0"') for line in lines))

    @inlineCallbacks
    def test_errorLog(self) -> Any:
        """
        C{--error-log} receives the warning about a dropped datagram, and
        neither access lines nor info events.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "error.log")
        proc = yield self.serve("--error-log", path)
        proc.data.send(b"not json at all")
        yield proc.waitFor(lambda stats: stats["dropped"].get("not-json") == 1)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertRegex(
            text, r"\[artcast\.multicast\.\w+#warn\] Dropped a data datagram "
            r"from 127\.0\.0\.1:\d+: not JSON"
        )
        # Access lines and info events stay out of the error log.
        self.assertNotIn("GET /stats.json", text)
        self.assertNotIn("#info]", text)
