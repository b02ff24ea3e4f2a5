# -*- test-case-name: tests.test_publish -*-
"""
Tests for L{artcast.server.feeds.publish}: C{POST}/C{PUT /artcasts/<key>} with bearer
tokens, through L{StubTreq} against L{ArtcastApp} with a L{Clock}, and
against real C{twistd artcast} processes sharing one multicast group.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks, returnValue, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from artcast.server.store import KeyStore
from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.stats import Stats
from artcast.server.feeds.publish import (
    MIN_TOKEN_LENGTH,
    HTTPPublisher,
    Refused,
    Tokens,
    parseTokenFile,
    readValue,
)
from artcast.server.interfaces import IFeed, IOutlet
from artcast.server.outlets.multicast import MulticastOutlet
from artcast.server.routes import ArtcastApp
from artcast.wire import parseData
from tests.harness import ArtcastProcess
from tests.test_browser import linesOf

TOKEN = "s3cr3t-t0ken-0123456789abcdef"
SENSORS = "sens0rs-only-0123456789abcdef"
TOKEN_FILE = f"""\
# the lead's token: every key
{TOKEN}
{SENSORS}  sensors/*  # one level below sensors only
""".encode()
GROUP = ("239.255.9.9", 17007)


class TokenFileTests(SynchronousTestCase):
    """
    L{parseTokenFile} reads C{--publish-token-file}.
    """

    def test_format(self) -> None:
        """
        One token per line with optional patterns; comments and blank lines
        are skipped; a token without patterns may publish anywhere.
        """
        tokens = parseTokenFile(TOKEN_FILE)
        self.assertEqual(len(tokens), 2)
        every = tokens.find(TOKEN.encode())
        sensors = tokens.find(SENSORS.encode())
        self.assertEqual((every.line, every.patterns), (2, ()))
        self.assertEqual((sensors.line, sensors.patterns), (3, ("sensors/*",)))
        self.assertTrue(every.allows("anything/at/all"))
        self.assertTrue(sensors.allows("sensors/a"))
        self.assertFalse(sensors.allows("sensors/a/b"))
        self.assertFalse(sensors.allows("weather"))

    def test_unknown(self) -> None:
        """
        An unknown token, a prefix of a known one or an empty one finds
        nothing.
        """
        tokens = parseTokenFile(TOKEN_FILE)
        for presented in (b"nope-nope-nope-nope", TOKEN[:-1].encode(), b"",
                          TOKEN.encode() + b"x"):
            self.assertIsNone(tokens.find(presented), presented)

    def test_tokenNotKept(self) -> None:
        """
        Neither a grant's repr nor the token collection holds the token
        itself, only its digest, so a traceback cannot show it.
        """
        tokens = parseTokenFile(TOKEN_FILE)
        self.assertNotIn(TOKEN, repr(tokens.grants))
        for grant in tokens.grants:
            self.assertNotIn(TOKEN.encode(), grant.digest)

    def test_bad(self) -> None:
        """
        Malformed tokens, short tokens, bad patterns, repeated tokens and a
        file without tokens are refused, naming the line but not the token.
        """
        longEnough = "x" * MIN_TOKEN_LENGTH
        for contents, line in [
            (b"\xff\n", None),
            (b"# nothing\n\n", None),
            (b"short\n", "line 1"),
            (f"# c\n{longEnough}\"bad\n".encode(), "line 2"),
            (f"{longEnough} a//b\n".encode(), "line 1"),
            (f"{longEnough} .../x\n".encode(), "line 1"),
            (f"{longEnough}\n{longEnough} k\n".encode(), "line 2"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseTokenFile(contents)
            if line is not None:
                self.assertIn(line, str(caught.exception))
            self.assertNotIn(longEnough, str(caught.exception))


class ReadValueTests(SynchronousTestCase):
    """
    L{readValue} turns a body into a value.
    """

    def test_json(self) -> None:
        """
        A JSON body (or one without a type) is its JSON value.
        """
        for contentType in (b"application/json", b"application/json; charset=UTF-8",
                            None):
            self.assertEqual(readValue(contentType, b'{"a": [1, 2.5]}', 100),
                             {"a": [1, 2.5]})

    def test_text(self) -> None:
        """
        A text/plain body is a string, whatever it looks like.
        """
        self.assertEqual(readValue(b"text/plain; charset=utf-8", b"42", 100), "42")
        self.assertEqual(readValue(b"text/plain", "é\n".encode(), 100), "é\n")

    def test_refused(self) -> None:
        """
        Bad bodies get 400, other types 415, and large ones 413, counting
        the value as compact JSON.
        """
        for contentType, body, code in [
            (b"application/json", b"{", 400),
            (b"application/json", b"NaN", 400),
            (b"application/json", b"1e400", 400),
            (b"application/json", b'"\\ud800"', 400),
            (b"application/json", b"[" * 100 + b"]" * 100, 400),
            (b"application/json", b"\xff", 400),
            (b"text/plain", b"\xff", 400),
            (b"application/x-www-form-urlencoded", b"a=1", 415),
            (b"text/plain; charset=latin-1", b"a", 415),
            (b"application/json", b'"' + b"x" * 300 + b'"', 413),
            (b"text/plain", b'"' * 200, 413),
        ]:
            with self.assertRaises(Refused) as caught:
                readValue(contentType, body, 300)
            self.assertEqual(caught.exception.code, code, (contentType, body))

    def test_formRefusedWithHint(self) -> None:
        """
        A form body (curl's C{-d} without a C{Content-Type}) gets a C{415} saying which
        C{Content-Type} to send instead.
        """
        with self.assertRaises(Refused) as caught:
            readValue(b"application/x-www-form-urlencoded", b"42", 300)
        self.assertEqual(caught.exception.code, 415)
        self.assertIn("curl -d", caught.exception.message)
        self.assertIn("Content-Type: application/json", caught.exception.message)


class FakePort:
    """
    The sending socket of a L{SourceService}: datagrams written to it are
    delivered at once to every handler on the fake group, including the
    sender's own server (the multicast loop).
    """

    def __init__(self, group: list[DatagramHandler]) -> None:
        self.group = group
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.ttl: int | None = None
        self.loop: bool | None = None
        self.interface: str | None = None

    def setTTL(self, ttl: int) -> None:
        self.ttl = ttl

    def setLoopbackMode(self, mode: bool) -> None:
        self.loop = mode

    def setOutgoingInterface(self, address: str) -> Any:
        self.interface = address
        return succeed(None)

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        self.written.append((datagram, address))
        for handler in self.group:
            handler.dataReceived(datagram, ("127.0.0.1", 40000))

    def stopListening(self) -> Any:
        return succeed(None)


class FakeMulticastReactor(Clock):
    """
    A clock that hands out L{FakePort}s on one fake group.
    """

    def __init__(self) -> None:
        super().__init__()
        self.group: list[DatagramHandler] = []
        self.ports: list[FakePort] = []

    def listenMulticast(self, port: int, protocol: Any, **kw: Any) -> FakePort:
        fake = FakePort(self.group)
        self.ports.append(fake)
        return fake


class Server:
    """
    One server on the fake group: store, handler, publisher and app.
    """

    def __init__(self, testCase: SynchronousTestCase, reactor: FakeMulticastReactor,
                 tokens: Tokens | None, signingKeys: tuple[bytes, ...] = (),
                 maxValueSize: int = 1000) -> None:
        self.testCase = testCase
        self.store = KeyStore(reactor)
        self.stats = Stats()
        self.handler = DatagramHandler(self.store, reactor, self.stats,
                                       signingKeys=signingKeys, maxValueSize=maxValueSize)
        reactor.group.append(self.handler)
        self.publisher = None
        if tokens is not None:
            sender = MulticastOutlet(
                reactor, self.store.instance + "-http", GROUP, "127.0.0.1", 0,
                signingKeys[0] if signingKeys else None,
            )
            sender.startService()
            testCase.addCleanup(sender.stopService)
            self.port = reactor.ports[-1]
            self.handler.ownSources.add(sender.src)
            self.publisher = HTTPPublisher(self.store, reactor, tokens, sender,
                                           maxValueSize, self.stats)
        self.app = ArtcastApp(self.store, reactor, stats=self.stats,
                              publisher=self.publisher)
        self.stub = StubTreq(self.app.resource())

    def request(self, method: str, path: str, body: bytes = b"",
                token: str | None = TOKEN, contentType: str | None = "application/json",
                headers: dict | None = None) -> tuple[Any, bytes]:
        """
        Send a request; its response and body.
        """
        allHeaders = dict(headers or {})
        if token is not None:
            allHeaders["Authorization"] = "Bearer " + token
        if contentType is not None:
            allHeaders["Content-Type"] = contentType
        d = self.stub.request(method, "http://artcast.example" + path, data=body,
                              headers=allHeaders)
        self.stub.flush()
        response = self.testCase.successResultOf(d)
        return response, self.testCase.successResultOf(response.content())


class PublishAppTests(SynchronousTestCase):
    """
    C{POST}/C{PUT /artcasts/<key>} through L{ArtcastApp}.
    """

    def setUp(self) -> None:
        self.reactor = FakeMulticastReactor()
        self.reactor.advance(1_800_000_000)
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.server = self.serve(parseTokenFile(TOKEN_FILE))

    def serve(self, tokens: Tokens | None, **kw: Any) -> Server:
        return Server(self, self.reactor, tokens, **kw)


    def test_publish(self) -> None:
        """
        A POST with a good token publishes its JSON body to the key's waiters
        and answers 201 with the datum's id, key and location.
        """
        waiting = self.server.store.next("weather/oslo")
        response, body = self.server.request("POST", "/artcasts/weather/oslo",
                                             b'{"c": 21.5}')
        self.assertEqual(response.code, 201)
        datum = self.successResultOf(waiting)
        self.assertEqual(datum.value, {"c": 21.5})
        self.assertEqual(response.headers.getRawHeaders("Artcast-Id"), [datum.id])
        self.assertEqual(response.headers.getRawHeaders("Artcast-Key"), ["weather/oslo"])
        self.assertEqual(response.headers.getRawHeaders("Location"),
                         ["/artcasts/weather/oslo"])
        self.assertEqual(json.loads(body), {"key": "weather/oslo", "id": datum.id})
        self.assertTrue(datum.id.startswith(self.server.store.instance + "-http."))

    def test_moreThanTheStore(self) -> None:
        """
        A value that alone costs more than the store's whole budget is
        answered C{413}, not stored, and counted as refused by the store; a
        datagram of such a value is dropped as C{too-large}.
        """
        self.server = self.serve(parseTokenFile(TOKEN_FILE), maxValueSize=5_000)
        self.server.store.maxBytes = 2_000
        response, body = self.server.request(
            "POST", "/artcasts/big", json.dumps("x" * 900).encode("ascii")
        )
        self.assertEqual(response.code, 413)
        self.assertIn(b"store", body)
        self.assertIsNone(self.server.store.latest("big"))
        self.assertEqual(self.server.store.refused, 1)
        self.server.handler.dataReceived(
            json.dumps(["big", "y" * 1900]).encode("ascii"), ("127.0.0.1", 1)
        )
        self.assertEqual(self.server.stats.dropped["too-large"], 1)
        self.assertIsNone(self.server.store.latest("big"))

    def test_putAndSecond(self) -> None:
        """
        PUT publishes too; publishing to a key that already has a value is a
        200, and the ids follow each other.
        """
        first, _ = self.server.request("PUT", "/artcasts/k", b"1")
        second, _ = self.server.request("POST", "/artcasts/k", b"2")
        self.assertEqual((first.code, second.code), (201, 200))
        [firstId] = first.headers.getRawHeaders("Artcast-Id")
        [secondId] = second.headers.getRawHeaders("Artcast-Id")
        self.assertEqual(int(secondId.rsplit(".", 1)[1]), int(firstId.rsplit(".", 1)[1]) + 1)
        self.assertEqual(self.server.store.latest("k").value, 2)

    def test_text(self) -> None:
        """
        A text/plain body is published as a string.
        """
        self.server.request("POST", "/artcasts/k", b"[1, 2]", contentType="text/plain")
        self.assertEqual(self.server.store.latest("k").value, "[1, 2]")

    def test_sentToGroup(self) -> None:
        """
        The datum is sent to the data group as a version 2 datagram with the
        server's stamp, TTL and interface, multicast loop on.
        """
        response, _ = self.server.request("POST", "/artcasts/k", b"[1]")
        port = self.server.port
        [(datagram, address)] = port.written
        self.assertEqual(address, GROUP)
        self.assertEqual((port.ttl, port.loop, port.interface), (0, True, "127.0.0.1"))
        message = parseData(datagram)
        self.assertEqual((message.key, message.value), ("k", [1]))
        self.assertEqual(
            [message.stamp.datumId()], response.headers.getRawHeaders("Artcast-Id")
        )
        self.assertEqual(message.stamp.sent, self.reactor.seconds())

    def test_otherServerSameId(self) -> None:
        """
        Another server on the group gets the datum with the same id, and the
        publishing server, hearing its own datagram back, does not publish it
        twice.
        """
        other = self.serve(None)
        mine: list = []
        theirs: list = []
        self.server.store.subscribe("k", mine.append)
        other.store.subscribe("k", theirs.append)
        self.server.request("POST", "/artcasts/k", b'"v"')
        self.assertEqual([d.id for d in mine], [d.id for d in theirs])
        self.assertEqual(len(mine), 1)
        self.assertEqual(self.server.stats.sources["own"], 1)
        self.assertEqual(self.server.stats.datums, 1)
        self.assertEqual(dict(self.server.stats.dropped), {})
        self.assertEqual(other.stats.sources["new"], 1)

    def test_signed(self) -> None:
        """
        With signing keys the datagram is signed with the first, and a
        server requiring that key accepts it.
        """
        self.reactor.group.clear()
        server = self.serve(parseTokenFile(TOKEN_FILE), signingKeys=(b"k1" * 16, b"k0" * 16))
        other = self.serve(None, signingKeys=(b"k1" * 16,))
        server.request("POST", "/artcasts/k", b"7")
        [(datagram, _)] = server.port.written
        parseData(datagram, signingKeys=[b"k1" * 16], requireSignature=True)
        self.assertEqual(other.store.latest("k").value, 7)
        self.assertEqual(dict(other.stats.dropped), {})

    def test_disabled(self) -> None:
        """
        Without a token file, POST and PUT are 405 naming GET and HEAD, and
        GET still works.
        """
        server = self.serve(None)
        for method in ("POST", "PUT"):
            response, _ = server.request(method, "/artcasts/k", b"1")
            self.assertEqual(response.code, 405)
            self.assertEqual(response.headers.getRawHeaders("Allow"), ["GET, HEAD"])
        self.assertIsNone(server.store.latest("k"))
        server.store.publish("k", 1)
        response, body = server.request("GET", "/artcasts/k?since=latest", token=None)
        self.assertEqual((response.code, body), (200, b"1"))

    def test_otherMethods(self) -> None:
        """
        Methods other than GET, HEAD, POST and PUT are still a 405.
        """
        response, _ = self.server.request("DELETE", "/artcasts/k")
        self.assertEqual(response.code, 405)

    def test_unauthorized(self) -> None:
        """
        No token, another scheme, an unknown token or two Authorization
        headers are a 401 with a Bearer challenge, and nothing is published.
        """
        cases = [
            (None, {}, 'Bearer realm="artcast"'),
            (None, {"Authorization": "Basic " + TOKEN}, 'Bearer realm="artcast"'),
            ("wrong-token-0123456789", {}, 'Bearer realm="artcast", error="invalid_token"'),
            (TOKEN + "x", {}, 'Bearer realm="artcast", error="invalid_token"'),
        ]
        for token, headers, challenge in cases:
            response, body = self.server.request("POST", "/artcasts/k", b"1", token=token,
                                                 headers=headers)
            self.assertEqual(response.code, 401, (token, headers))
            self.assertEqual(response.headers.getRawHeaders("WWW-Authenticate"), [challenge])
            self.assertNotIn(TOKEN.encode(), body)
        d = self.server.stub.request(
            "POST", "http://artcast.example/artcasts/k", data=b"1",
            headers={"Authorization": ["Bearer " + TOKEN, "Bearer " + TOKEN]})
        self.server.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 401)
        self.assertIsNone(self.server.store.latest("k"))
        self.assertEqual(self.server.publisher.refused[401], 5)

    def test_forbidden(self) -> None:
        """
        A token may publish only to the keys its patterns match: 403
        elsewhere.
        """
        ok, _ = self.server.request("POST", "/artcasts/sensors/a", b"1", token=SENSORS)
        self.assertEqual(ok.code, 201)
        for path in ("/artcasts/sensors/a/b", "/artcasts/weather"):
            response, body = self.server.request("POST", path, b"1", token=SENSORS)
            self.assertEqual(response.code, 403, path)
            self.assertIn(b"line 3", body)
        self.assertIsNone(self.server.store.latest("weather"))

    def test_badRequests(self) -> None:
        """
        Patterns, bad keys and bodies that are not values are a 400; other
        types a 415; large values a 413; none publishes.
        """
        for path, body, contentType, code in [
            ("/artcasts/sensors/*", b"1", "application/json", 400),
            ("/artcasts/a/...", b"1", "application/json", 400),
            ("/artcasts/a%0Ab", b"1", "application/json", 400),
            ("/artcasts/a//b", b"1", "application/json", 400),
            ("/artcasts/" + "x" * 300, b"1", "application/json", 400),
            ("/artcasts/k", b"{", "application/json", 400),
            ("/artcasts/k", b"1", "image/png", 415),
            ("/artcasts/k", b"1" * 1001, "application/json", 413),
        ]:
            response, _ = self.server.request("POST", path, body, contentType=contentType)
            self.assertEqual(response.code, code, path)
        self.assertEqual(len(self.server.store), 0)
        self.assertEqual(self.server.port.written, [])

    def test_tokenNeverLogged(self) -> None:
        """
        Nothing logged while publishing and refusing mentions the token.
        """
        self.server.request("POST", "/artcasts/k", b"1")
        self.server.request("POST", "/artcasts/k", b"{")
        self.server.request("POST", "/artcasts/weather", b"1", token=SENSORS)
        self.server.request("POST", "/artcasts/k", b"1", token=TOKEN + "x")
        for event in self.logged:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(TOKEN, text)
            self.assertNotIn(SENSORS, text)

    @settings(max_examples=200, deadline=None)
    @given(
        body=st.binary(max_size=200),
        contentType=st.sampled_from(
            ["application/json", "text/plain", "text/plain; charset=utf-8", None,
             "application/xml", "application/json; charset=utf-16"]
        ),
        path=st.text(max_size=20),
    )
    def test_fuzz(self, body: bytes, contentType: str | None, path: str) -> None:
        """
        Whatever the body, type and path, the answer is a publish or a 4xx,
        never a server error.
        """
        from urllib.parse import quote

        response, _ = self.server.request(
            "POST", "/artcasts/" + quote(path, safe="/"), body, contentType=contentType
        )
        self.assertIn(response.code, (200, 201, 400, 404, 413, 415))


# --- real processes -------------------------------------------------------------


def _writeTokens(testCase: TestCase) -> str:
    path = os.path.abspath(testCase.mktemp())
    with open(path, "wb") as f:
        f.write(TOKEN_FILE)
    return path


@inlineCallbacks
def _send(method: str, url: str, body: bytes, token: str | None = TOKEN,
          contentType: str = "application/json", **headers: str) -> Any:
    allHeaders = {"Content-Type": contentType, **headers}
    if token is not None:
        allHeaders["Authorization"] = "Bearer " + token
    response = yield treq.request(method, url, data=body, headers=allHeaders,
                                  persistent=False)
    content = yield response.content()
    returnValue((response, content))


@inlineCallbacks
def _get(url: str) -> Any:
    response = yield treq.get(url, persistent=False)
    content = yield response.content()
    returnValue((response, content))


@implementer(IBodyProducer)
class _Chunked:
    """
    A body of unknown length, so that it is sent chunked.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, body: bytes) -> None:
        self.body = body

    def startProducing(self, consumer: Any) -> Any:
        for start in range(0, len(self.body), 100):
            consumer.write(self.body[start:start + 100])
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class PublishProcessTests(TestCase):
    """
    Publishing over HTTP to real servers sharing one group.
    """

    timeout = 90

    @inlineCallbacks
    def test_reachesOtherServer(self) -> Any:
        """
        A POST to one server answers its own long polls and those of a second
        server on the same group, with the same id, and the first server does
        not publish its own datagram a second time when it loops back.
        """
        first = yield ArtcastProcess(
            self, extra=["--publish-token-file", _writeTokens(self), "--publish-ttl", "0"]
        ).start()
        second = yield ArtcastProcess(
            self, group=first.group, dataPort=first.dataPort,
            registerPort=first.registerPort,
        ).start()
        answers = [_get(first.url + "/artcasts/panel/reply"),
                   _get(second.url + "/artcasts/panel/reply")]
        yield first.waitForWaiters(1)
        yield second.waitForWaiters(1)
        response, body = yield _send("POST", first.url + "/artcasts/panel/reply",
                                     b'{"pressed": true}')
        self.assertEqual(response.code, 201)
        [datumId] = response.headers.getRawHeaders("Artcast-Id")
        for answer in answers:
            got, value = yield answer
            self.assertEqual(json.loads(value), {"pressed": True})
            self.assertEqual(got.headers.getRawHeaders("Artcast-Id"), [datumId])
        stats = yield first.waitFor(lambda s: s["sources"].get("own", 0) >= 1)
        self.assertEqual(stats["datums"], 1)
        late, _ = yield _get(first.url + f"/artcasts/panel/reply?since={datumId}&timeout=0")
        self.assertEqual(late.code, 204)
        resumed, value = yield _get(
            second.url + "/artcasts/panel/reply?since=latest&timeout=0")
        self.assertEqual(resumed.headers.getRawHeaders("Artcast-Id"), [datumId])

    @inlineCallbacks
    def test_refusals(self) -> Any:
        """
        Over a real socket: 401 without or with a wrong token, 403 outside the
        token's keys, 400 for bad JSON, 413 past --max-value-size (declared or
        chunked), 405 on a server without a token file.
        """
        proc = yield ArtcastProcess(
            self, extra=["--publish-token-file", _writeTokens(self), "--publish-ttl", "0",
                         "--max-value-size", "1000"]
        ).start()
        url = proc.url + "/artcasts/k"
        for args, kw, code in [
            ((b"1",), {"token": None}, 401),
            ((b"1",), {"token": "not-a-known-token-123"}, 401),
            ((b"1",), {"token": SENSORS}, 403),
            ((b"{",), {}, 400),
            ((b"1" * 5000,), {}, 413),
            ((_Chunked(b"1" * 3000),), {}, 413),
        ]:
            response, _ = yield _send("PUT", url, *args, **kw)
            self.assertEqual(response.code, code, (args, kw))
        listing = yield _send("GET", proc.url + "/artcasts", b"", token=None)
        self.assertEqual(json.loads(listing[1]), [])
        other = yield ArtcastProcess(self).start()
        response, _ = yield _send("POST", other.url + "/artcasts/k", b"1")
        self.assertEqual(response.code, 405)

    @inlineCallbacks
    def test_tokenNotLogged(self) -> Any:
        """
        The access log shows publish requests without the token, and the
        error log never holds it.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        access = os.path.join(folder, "access.log")
        errors = os.path.join(folder, "error.log")
        proc = yield ArtcastProcess(
            self, extra=["--publish-token-file", _writeTokens(self), "--publish-ttl", "0",
                         "--access-log", access, "--error-log", errors]
        ).start()
        url = proc.url + "/artcasts/k"
        codes = []
        for token, body in [(TOKEN, b"1"), (TOKEN, b"{"), (SENSORS, b"1"),
                            (TOKEN + "x", b"1")]:
            response, _ = yield _send("POST", url, body, token=token,
                                      **{"User-Agent": "publisher-test"})
            codes.append(response.code)
        self.assertEqual(codes, [201, 400, 403, 401])
        lines = yield linesOf(
            access, lambda lines: sum(b"POST /artcasts/k" in line for line in lines) >= 4)
        publishes = [line for line in lines if b"POST /artcasts/k" in line]
        self.assertEqual([line.split(b'"')[2].split()[0] for line in publishes],
                         [b"201", b"400", b"403", b"401"])
        self.assertTrue(all(line.endswith(b'"publisher-test"') for line in publishes))
        for path in (access, errors):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    contents = f.read()
                self.assertNotIn(TOKEN.encode(), contents)
                self.assertNotIn(SENSORS.encode(), contents)
        self.assertNotIn(TOKEN, proc.output)


class FeedAndOutletTests(SynchronousTestCase):
    """
    HTTP publishing is a feed (L{HTTPPublisher}), whose re-send to the data
    group is an outlet (L{MulticastOutlet}).
    """

    def setUp(self) -> None:
        self.reactor = FakeMulticastReactor()
        self.reactor.advance(1_800_000_000)
        self.server = Server(self, self.reactor, parseTokenFile(TOKEN_FILE))

    def test_feed(self) -> None:
        """
        L{HTTPPublisher} provides L{IFeed}, named C{publish}.
        """
        self.assertTrue(verifyObject(IFeed, self.server.publisher))
        self.assertEqual(self.server.publisher.name, "publish")

    def test_statistics(self) -> None:
        """
        The publisher's statistics are C{published} and C{publish_refused} by
        status, as C{/stats} shows them.
        """
        self.assertEqual(self.server.publisher.statistics(),
                         {"published": 0, "publish_refused": {}})
        self.server.request("POST", "/artcasts/k", b"1")
        self.server.request("POST", "/artcasts/k", b"1", token=None)
        self.server.request("POST", "/artcasts/k", b"{")
        self.assertEqual(self.server.publisher.statistics(),
                         {"published": 1, "publish_refused": {"401": 1, "400": 1}})

    def test_outlet(self) -> None:
        """
        L{MulticastOutlet} provides L{IOutlet}: C{send} writes the datum to
        the data group and gives its id.
        """
        outlet = self.server.publisher.outlet
        self.assertIsInstance(outlet, MulticastOutlet)
        self.assertTrue(verifyObject(IOutlet, outlet))
        datumId = outlet.send("k", [1])
        [(datagram, address)] = self.server.port.written
        self.assertEqual(address, GROUP)
        message = parseData(datagram)
        self.assertEqual((message.key, message.value), ("k", [1]))
        self.assertEqual(datumId, "%s.%d.%d" % (message.stamp.source, message.stamp.boot,
                                                message.stamp.seq))

    def test_outletNotRunning(self) -> None:
        """
        An outlet that is not running refuses to send with L{RuntimeError}.
        """
        outlet = MulticastOutlet(self.reactor, "x-http", GROUP, "0.0.0.0", 1, None)
        self.assertRaises(RuntimeError, outlet.send, "k", 1)
