"""
Tests for L{artcast.server.routes}, L{artcast.server.answers} and
L{artcast.server.outlets.longpoll}: the HTTP resources, driven through treq's
L{StubTreq} with a L{Clock}.
"""

from __future__ import annotations

import io
import json
import time
from time import gmtime as _gmtime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from artcast.server.store import KeyStore
from artcast.server.answers import headerKey, licenseLink
from artcast.server import connections
from artcast.server.connections import (
    ArtcastRequest, BoundedRequest, LimitedSite, boundedRequestFactory,
)
from artcast.server.routes import ArtcastApp
from artcast.wire import Stamp


class AppMixin:
    """
    An L{ArtcastApp} over a fresh L{KeyStore} and a L{StubTreq} to ask it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock, **self.options())
        self.stub = StubTreq(self.app.resource())

    def options(self) -> dict:
        return {}

    def get(self, path: str, headers: dict | None = None):
        return self.stub.get(
            "http://artcast.example" + path, headers=headers, allow_redirects=False
        )

    def answer(self, d):
        self.stub.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response, body


class LongPollTests(AppMixin, SynchronousTestCase):
    """
    C{GET /artcasts/<key>}: the long poll.
    """

    def test_heldUntilDatum(self) -> None:
        """
        A request is held until the next datum for its key, then answered with
        its JSON value.
        """
        d = self.get("/artcasts/weather/oslo/temp")
        self.stub.flush()
        self.assertNoResult(d)
        self.store.publish("weather/oslo", 1)
        self.stub.flush()
        self.assertNoResult(d)
        self.store.publish("weather/oslo/temp", {"c": 21.5})
        response, body = self.answer(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), {"c": 21.5})

    def test_valueHeaders(self) -> None:
        """
        A value answer carries Content-Length, CORS, Artcast-Key, Artcast-Id
        and a weak ETag.
        """
        d = self.get("/artcasts/k")
        self.stub.flush()
        datum = self.store.publish("k", [1, 2])
        response, body = self.answer(d)
        headers = response.headers
        self.assertEqual(response.length, len(body))
        self.assertEqual(headers.getRawHeaders("Content-Type"), ["application/json"])
        self.assertEqual(headers.getRawHeaders("Access-Control-Allow-Origin"), ["*"])
        self.assertIn(
            "Artcast-Id", headers.getRawHeaders("Access-Control-Expose-Headers")[0]
        )
        self.assertEqual(headers.getRawHeaders("Artcast-Key"), ["k"])
        self.assertEqual(headers.getRawHeaders("Artcast-Id"), [datum.id])
        self.assertEqual(headers.getRawHeaders("ETag"), ['W/"%s"' % (datum.id,)])
        self.assertIsNone(headers.getRawHeaders("Transfer-Encoding"))

    def test_licenseLink(self) -> None:
        """
        A key whose source registered a license is answered with a Link header
        naming it.
        """
        self.store.register(
            "k", {"license": {"uri": "https://example.org/l", "title": 'A "B"'}}
        )
        d = self.get("/artcasts/k")
        self.stub.flush()
        self.store.publish("k", 1)
        response, _ = self.answer(d)
        self.assertEqual(
            response.headers.getRawHeaders("Link"),
            ['<https://example.org/l>; rel="license"; title="A \\"B\\""'],
        )

    def test_cancelReleasesWaiter(self) -> None:
        """
        A client that goes away while waiting leaves no waiter behind.
        """
        d = self.get("/artcasts/k")
        self.stub.flush()
        self.assertEqual(self.store.listening, 1)
        d.cancel()
        self.stub.flush()
        self.failureResultOf(d)
        self.assertEqual(self.store.listening, 0)

    def test_timeout(self) -> None:
        """
        With C{timeout=}, a request with no datum is answered with 204 and the
        latest id.
        """
        datum = self.store.publish("k", 1)
        d = self.get("/artcasts/k?timeout=30")
        self.stub.flush()
        self.clock.advance(29)
        self.assertNoResult(d)
        self.clock.advance(1)
        response, body = self.answer(d)
        self.assertEqual((response.code, body), (204, b""))
        self.assertEqual(response.headers.getRawHeaders("Artcast-Id"), [datum.id])
        self.assertEqual(self.store.listening, 0)

    def test_datumBeforeTimeout(self) -> None:
        """
        A datum that comes before the timeout is answered, and the timer goes.
        """
        d = self.get("/artcasts/k?timeout=30")
        self.stub.flush()
        self.store.publish("k", 1)
        response, _ = self.answer(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sinceLatest(self) -> None:
        """
        C{since=latest} answers the current value at once.
        """
        self.store.publish("k", "now")
        response, body = self.answer(self.get("/artcasts/k?since=latest"))
        self.assertEqual(body, b'"now"')

    def test_sinceId(self) -> None:
        """
        C{since=<id>} answers the datum after that id at once from history,
        and so does C{If-None-Match}.
        """
        first = self.store.publish("k", 1)
        self.store.publish("k", 2)
        _, body = self.answer(self.get("/artcasts/k?since=" + first.id))
        self.assertEqual(body, b"2")
        _, body = self.answer(
            self.get("/artcasts/k", {"If-None-Match": 'W/"%s"' % (first.id,)})
        )
        self.assertEqual(body, b"2")

    def test_sinceGap(self) -> None:
        """
        An id older than what is held gives the oldest datum held, with
        C{Artcast-Gap: 1}.
        """
        store = self.store
        for n in range(1, 150):
            store.publish("k", n, Stamp("s", 1, n, 0.0))
        response, body = self.answer(self.get("/artcasts/k?since=s.1.3"))
        self.assertEqual(body, b"50")
        self.assertEqual(response.headers.getRawHeaders("Artcast-Gap"), ["1"])

    def test_sinceNothingHeldNext(self) -> None:
        """
        A poll resuming from an id when nothing is held (the server
        restarted) is answered without C{Artcast-Gap} when the datum that
        comes is the very next of the client's source, and a datum the
        client has is not its answer.
        """
        d = self.get("/artcasts/k?since=s.1.41")
        self.stub.flush()
        self.store.publish("k", 41, Stamp("s", 1, 41, 0.0))
        self.store.publish("k", 42, Stamp("s", 1, 42, 0.0))
        response, body = self.answer(d)
        self.assertEqual(body, b"42")
        self.assertIsNone(response.headers.getRawHeaders("Artcast-Gap"))

    def test_sinceNothingHeldLater(self) -> None:
        """
        A poll resuming from an id when nothing is held is answered with
        C{Artcast-Gap: 1} when the datum that comes is not the very next of
        the client's source.
        """
        d = self.get("/artcasts/k?since=s.1.41")
        self.stub.flush()
        self.store.publish("k", 43, Stamp("s", 1, 43, 0.0))
        response, body = self.answer(d)
        self.assertEqual(body, b"43")
        self.assertEqual(response.headers.getRawHeaders("Artcast-Gap"), ["1"])

    def test_wildcard(self) -> None:
        """
        A wildcard request is answered by the first matching datum, and
        C{Artcast-Key} names the key that matched.
        """
        d = self.get("/artcasts/sensors/...")
        self.stub.flush()
        self.store.publish("sensors/a/b", 3)
        response, body = self.answer(d)
        self.assertEqual(response.headers.getRawHeaders("Artcast-Key"), ["sensors/a/b"])

    def test_percentEncodedKey(self) -> None:
        """
        A key is percent-decoded from the path, and sent back encoded in
        C{Artcast-Key}.
        """
        d = self.get("/artcasts/caf%C3%A9/temp%20now")
        self.stub.flush()
        self.store.publish("café/temp now", 1)
        response, _ = self.answer(d)
        self.assertEqual(
            response.headers.getRawHeaders("Artcast-Key"), ["caf%C3%A9/temp%20now"]
        )


class NegotiationTests(AppMixin, SynchronousTestCase):
    """
    Content negotiation on C{GET /artcasts/<key>}.
    """

    def publishAndGet(self, value, accept):
        self.store.publish("k", value)
        return self.answer(
            self.get("/artcasts/k?since=latest", {"Accept": accept} if accept else None)
        )

    def test_textString(self) -> None:
        """
        As text/plain, a string is sent without quotes.
        """
        response, body = self.publishAndGet("héllo", "text/plain")
        self.assertEqual(body, "héllo".encode())
        self.assertEqual(
            response.headers.getRawHeaders("Content-Type"), ["text/plain; charset=utf-8"]
        )

    def test_textNumber(self) -> None:
        """
        As text/plain, anything but a string is sent as JSON text.
        """
        _, body = self.publishAndGet({"a": None}, "text/plain")
        self.assertEqual(body, b'{"a":null}')

    def test_qValues(self) -> None:
        """
        q-values are honoured.
        """
        response, body = self.publishAndGet(
            "x", "text/plain;q=0.5, application/json;q=0.9"
        )
        self.assertEqual(body, b'"x"')

    def test_notAcceptable(self) -> None:
        """
        Nothing acceptable is answered with 406.
        """
        response, _ = self.publishAndGet(1, "image/png")
        self.assertEqual(response.code, 406)

    def test_htmlPage(self) -> None:
        """
        text/html gets the live page at once, with the key escaped.
        """
        response, body = self.answer(
            self.get("/artcasts/a%3Cb%3E", {"Accept": "text/html"})
        )
        self.assertEqual(response.code, 200)
        self.assertIn(b"a&lt;b&gt;", body)
        self.assertNotIn(b"a<b>", body)


class BadRequestTests(AppMixin, SynchronousTestCase):
    """
    Bad requests get a clear 4xx, never a traceback.
    """

    def code(self, path: str) -> int:
        response, body = self.answer(self.get(path))
        self.assertEqual(response.length, len(body))
        return response.code

    def test_badKeys(self) -> None:
        """
        Keys that are not UTF-8, have empty levels, control characters or are
        too long are refused with 400.
        """
        for path in [
            "/artcasts/%ff",
            "/artcasts/a//b",
            "/artcasts/a/",
            "/artcasts/a%0d%0aSet-Cookie:%20x",
            "/artcasts/" + "a" * 300,
            "/artcasts/a/.../b",
        ]:
            self.assertEqual(self.code(path), 400, path)

    def test_badParameters(self) -> None:
        """
        A timeout that is not a number of seconds, or a since that is not an
        id, is refused with 400.
        """
        for query in ["timeout=abc", "timeout=-1", "timeout=nan", "since=%ff", "since=x"]:
            self.assertEqual(self.code("/artcasts/k?" + query), 400, query)

    def test_notFound(self) -> None:
        """
        An unknown path is a 404.
        """
        self.assertEqual(self.code("/nothing"), 404)

    def test_methodNotAllowed(self) -> None:
        """
        Only GET and HEAD are served.
        """
        d = self.stub.post("http://artcast.example/artcasts/k", data=b"1")
        response, _ = self.answer(d)
        self.assertEqual(response.code, 405)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=40))
    def test_anyPath(self, text: str) -> None:
        """
        Whatever follows C{/artcasts/}, the answer is never a server error.
        """
        from urllib.parse import quote

        d = self.get("/artcasts/" + quote(text, safe="/*.") + "?timeout=0")
        self.stub.flush()
        self.clock.advance(0)
        self.stub.flush()
        response = self.successResultOf(d)
        self.assertIn(response.code, (204, 400, 404))
        self.assertEqual(self.store.listening, 0)


class ListingTests(AppMixin, SynchronousTestCase):
    """
    C{GET /} and C{GET /artcasts}.
    """

    def test_root(self) -> None:
        """
        C{/} redirects to C{/artcasts}.
        """
        response, _ = self.answer(self.get("/"))
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("Location"), ["/artcasts"])

    def test_json(self) -> None:
        """
        The list is sorted by key and holds registered keys and keys seen only
        in data.
        """
        self.store.publish("b", 1)
        self.store.register("a", {"description": "A", "extra": 1})
        _, body = self.answer(self.get("/artcasts"))
        self.assertEqual(
            json.loads(body),
            [{"key": "a", "description": "A", "extra": 1}, {"key": "b"}],
        )

    def test_html(self) -> None:
        """
        Asked for HTML, the list is a page that links to each key and escapes
        what sources sent.
        """
        self.store.register("a/b", {"description": "<script>alert(1)</script>"})
        response, body = self.answer(self.get("/artcasts", {"Accept": "text/html"}))
        self.assertIn(b'href="/artcasts/a/b"', body)
        self.assertIn(b"&lt;script&gt;", body)
        self.assertNotIn(b"<script>alert", body)


class TemplatesTests(AppMixin, SynchronousTestCase):
    """
    C{--templates}: per-key HTML pages, confined to their folder.
    """

    def options(self) -> dict:
        self.folder = FilePath(self.mktemp())
        self.folder.child("weather").makedirs()
        self.folder.child("weather").child("oslo.html").setContent(b"<p>Oslo</p>")
        self.folder.sibling("secret.html").setContent(b"secret")
        return {"templates": self.folder}

    def test_template(self) -> None:
        """
        A key with a template is shown with it.
        """
        _, body = self.answer(self.get("/artcasts/weather/oslo", {"Accept": "text/html"}))
        self.assertEqual(body, b"<p>Oslo</p>")

    def test_confined(self) -> None:
        """
        A key cannot reach a file outside the templates folder.
        """
        for path in ["/artcasts/..%2Fsecret", "/artcasts/../secret", "/artcasts/%2E%2E/secret"]:
            response, body = self.answer(self.get(path, {"Accept": "text/html"}))
            self.assertNotEqual(body, b"secret", path)


class HeaderTests(SynchronousTestCase):
    """
    Header values made from what sources send.
    """

    def test_headerKey(self) -> None:
        """
        A key in a header is ASCII: anything else is percent-encoded.
        """
        self.assertEqual(headerKey("a/b é"), b"a/b%20%C3%A9")

    def test_licenseLinkClean(self) -> None:
        """
        A license's uri and title cannot break out of the Link header.
        """
        link = licenseLink(
            {"license": {"uri": "http://x/\r\n>a", "title": "t\r\nX: y"}}
        )
        self.assertNotIn(b"\r", link)
        self.assertNotIn(b"\n", link)
        self.assertTrue(link.startswith(b"<http://x/%0D%0A%3Ea>"))

    def test_noLicense(self) -> None:
        """
        No usable license, no Link.
        """
        for meta in [None, {}, {"license": None}, {"license": {"title": "x"}}]:
            self.assertIsNone(licenseLink(meta))


class DirectDispatchTests(AppMixin, SynchronousTestCase):
    """
    C{GET} and C{HEAD /artcasts/<key>} are dispatched by L{ArtcastResource}
    itself, not routed by Klein: the answers, errors and cancellation are
    those Klein gave.
    """

    def channel(self, request: bytes):
        """
        A real HTTP channel of a L{Site} serving the app, fed C{request}.
        """
        from twisted.internet.testing import StringTransport
        from twisted.web.server import Site

        site = Site(self.app.resource(), reactor=self.clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        return channel, transport

    def test_emptyFirstLevel(self) -> None:
        """
        A key with an empty first level is refused with 400, as any other
        empty level.
        """
        response, body = self.answer(self.get("/artcasts//a"))
        self.assertEqual(response.code, 400)
        self.assertIn(b"empty level", body)

    def test_connectionLostReleasesWaiter(self) -> None:
        """
        A held poll whose connection is lost leaves no waiter and logs no
        error; a datum that comes later is sent to nobody.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        channel, transport = self.channel(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(self.store.listening, 1)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.store.listening, 0)
        self.store.publish("k", 1)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_http10(self) -> None:
        """
        An HTTP/1.0 poll is answered with the value and Content-Length, and
        the connection closed.
        """
        channel, transport = self.channel(b"GET /artcasts/k HTTP/1.0\r\n\r\n")
        datum = self.store.publish("k", {"a": 1})
        answer = transport.value()
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.0 200 OK\r\n"), head)
        self.assertIn(b"\r\nContent-Length: 7\r\n", head + b"\r\n")
        self.assertIn(b"\r\nArtcast-Id: " + datum.id.encode() + b"\r\n", head + b"\r\n")
        self.assertEqual(body, b'{"a":1}')
        self.assertTrue(transport.disconnecting)

    def test_keepAlive(self) -> None:
        """
        Two polls on one HTTP/1.1 connection are each answered in turn.
        """
        channel, transport = self.channel(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.store.publish("k", 1)
        channel.dataReceived(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.store.publish("k", 2)
        answers = transport.value().split(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(len(answers), 3)
        self.assertTrue(answers[1].endswith(b"\r\n\r\n1"))
        self.assertTrue(answers[2].endswith(b"\r\n\r\n2"))
        self.assertFalse(transport.disconnecting)

    def test_head(self) -> None:
        """
        C{HEAD} is answered with the headers of C{GET}, Content-Length
        included, and no body.
        """
        self.store.publish("k", {"value": "x" * 20})
        get, getBody = self.answer(self.get("/artcasts/k?since=latest"))
        head, headBody = self.answer(
            self.stub.head("http://artcast.example/artcasts/k?since=latest")
        )
        self.assertEqual(head.code, 200)
        self.assertEqual(headBody, b"")
        self.assertEqual(
            head.headers.getRawHeaders("Content-Length"), [str(len(getBody))]
        )
        self.assertEqual(
            head.headers.getRawHeaders("Artcast-Id"),
            get.headers.getRawHeaders("Artcast-Id"),
        )

    def test_unexpectedError(self) -> None:
        """
        An unexpected error while taking the request is a 500, and logged.
        """

        def broken(*args: object) -> None:
            raise RuntimeError("broken")

        self.store.since = broken  # type: ignore[method-assign]
        response, _ = self.answer(self.get("/artcasts/k?since=src.1.1"))
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_answerFailed(self) -> None:
        """
        A held poll whose answer fails when its datum comes is a 500, and
        logged; another poll of the same key still gets the datum.
        """

        def broken(*args: object) -> bytes:
            raise RuntimeError("broken")

        prebuiltAnswer = self.app.prebuiltAnswer
        self.app.prebuiltAnswer = broken  # type: ignore[method-assign]
        failing = self.get("/artcasts/k")
        self.stub.flush()
        self.app.prebuiltAnswer = prebuiltAnswer
        other = self.get("/artcasts/k")
        self.stub.flush()
        self.assertNoResult(failing)
        self.store.publish("k", 1)
        response, _ = self.answer(failing)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        response, body = self.answer(other)
        self.assertEqual((response.code, body), (200, b"1"))

    def test_artcastRequestHeldWithoutDeferreds(self) -> None:
        """
        With the server's own request class, a held poll is one L{LongPoll}
        the request points to: no C{notifyFinish} L{Deferred}; when the
        connection is lost the request cancels it and nothing waits.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure
        from twisted.web.http import HTTPChannel
        from twisted.web.server import Site

        from artcast.server.connections import ArtcastRequest
        from artcast.server.outlets.longpoll import LongPoll

        site = Site(self.app.resource(), reactor=self.clock)
        site.requestFactory = ArtcastRequest
        site.protocol = HTTPChannel
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET /artcasts/k?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        request = channel.requests[0]
        self.assertIsInstance(request.poll, LongPoll)
        self.assertEqual(request.notifications, [])
        self.assertEqual((self.store.listening, len(self.clock.getDelayedCalls())), (1, 1))
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(request.poll)
        self.assertEqual((self.store.listening, len(self.clock.getDelayedCalls())), (0, 0))
        self.store.publish("k", 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_answeredPollLetsGo(self) -> None:
        """
        Once a held poll is answered, its request no longer points to it (no
        reference cycle is left for the garbage collector).
        """
        from twisted.internet.testing import StringTransport
        from twisted.web.http import HTTPChannel
        from twisted.web.server import Site

        from artcast.server.connections import ArtcastRequest

        site = Site(self.app.resource(), reactor=self.clock)
        site.requestFactory = ArtcastRequest
        site.protocol = HTTPChannel
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        request = channel.requests[0]
        self.assertIsNotNone(request.poll)
        self.store.publish("k", 1)
        self.assertTrue(transport.value().endswith(b"\r\n\r\n1"))
        self.assertIsNone(request.poll)

    def test_answerPerRepresentation(self) -> None:
        """
        One datum answered as JSON and as text gets each its own
        Content-Type and Content-Length.
        """
        self.store.publish("k", "héllo")
        json_, jsonBody = self.answer(self.get("/artcasts/k?since=latest"))
        text, textBody = self.answer(
            self.get("/artcasts/k?since=latest", {"Accept": ["text/plain"]})
        )
        again, _ = self.answer(self.get("/artcasts/k?since=latest"))
        self.assertEqual(jsonBody, '"héllo"'.encode())
        self.assertEqual(textBody, "héllo".encode())
        self.assertEqual(json_.headers.getRawHeaders("Content-Type"), ["application/json"])
        self.assertEqual(
            text.headers.getRawHeaders("Content-Type"), ["text/plain; charset=utf-8"]
        )
        self.assertEqual(text.length, len(textBody))
        self.assertEqual(again.length, len(jsonBody))

    def test_licenseRegisteredLater(self) -> None:
        """
        A license registered after a datum was first sent is named in the
        Link header of its later answers.
        """
        self.store.publish("k", 1)
        before, _ = self.answer(self.get("/artcasts/k?since=latest"))
        self.store.register("k", {"license": {"uri": "https://example.org/l"}})
        after, _ = self.answer(self.get("/artcasts/k?since=latest"))
        self.assertIsNone(before.headers.getRawHeaders("Link"))
        self.assertEqual(
            after.headers.getRawHeaders("Link"), ['<https://example.org/l>; rel="license"']
        )

    def test_gapNotKept(self) -> None:
        """
        C{Artcast-Gap} is sent with the answer that has a gap, not with later
        answers of the same datum.
        """
        first = self.store.publish("k", 1)
        self.store.publish("k", 2)
        for n in range(3, 200):
            self.store.publish("k", n)
        gapped, _ = self.answer(self.get("/artcasts/k?since=" + first.id))
        latest, _ = self.answer(self.get("/artcasts/k?since=latest"))
        self.assertEqual(gapped.headers.getRawHeaders("Artcast-Gap"), ["1"])
        self.assertIsNone(latest.headers.getRawHeaders("Artcast-Gap"))

    def test_keysCacheBounded(self) -> None:
        """
        The keys made of request paths are kept up to a bound, whatever the
        number of different paths asked for.
        """
        from artcast.server import routes as web

        self.patch(web, "_CACHED", 5)
        for n in range(20):
            d = self.get(f"/artcasts/k{n}?timeout=0")
            self.stub.flush()
            self.clock.advance(0)
            self.assertEqual(self.answer(d)[0].code, 204)
            self.assertLessEqual(len(self.app._keys), 5)
        self.store.publish("k19", 1)
        response, body = self.answer(self.get("/artcasts/k19?since=latest"))
        self.assertEqual((response.code, body), (200, b"1"))


class PrebuiltAnswerTests(AppMixin, SynchronousTestCase):
    """
    A long poll dispatched by L{ArtcastResource} is answered with a prebuilt
    answer (L{Answers.prebuiltAnswer}) written at once: the same status
    line, headers and body as Twisted's own header writing gives, with a
    current C{Date}.
    """

    #: The site's request class, or L{None} for Twisted's.
    requestFactory: Any = None

    def serve(self, request: bytes, direct: bool = True):
        """
        A real HTTP channel of a L{Site} serving the app, fed C{request}:
        dispatched directly (the prebuilt answer) or routed by Klein (the
        answer Twisted writes).  Returns the transport and the requests
        the site logged.
        """
        from twisted.internet.testing import StringTransport
        from twisted.web.server import Site

        from artcast.server.routes import ArtcastResource

        resource = ArtcastResource(self.app.app, self.app if direct else None)
        site = Site(resource, reactor=self.clock)
        if self.requestFactory is not None:
            site.requestFactory = self.requestFactory
        logged: list = []
        site.log = logged.append  # type: ignore[method-assign]
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        self.channels = getattr(self, "channels", []) + [channel]
        return transport, logged

    def withoutDate(self, answer: bytes) -> tuple[list[bytes], bytes]:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        dates = [line for line in lines if line.startswith(b"Date: ")]
        self.assertEqual(len(dates), 1, lines)
        return [line for line in lines if not line.startswith(b"Date: ")], body

    def compare(self, request: bytes, path: str = "k") -> bytes:
        """
        Publish to C{path} while C{request} waits both ways; assert that the
        answers are the same but for the C{Date} value, and return the
        prebuilt one.
        """
        self.clock.advance(1_700_000_000)
        fast, fastLog = self.serve(request, direct=True)
        slow, slowLog = self.serve(request, direct=False)
        self.store.publish(path, {"a": "é"})
        self.assertEqual(self.withoutDate(fast.value()), self.withoutDate(slow.value()))
        self.assertEqual(fast.disconnecting, slow.disconnecting)
        self.assertEqual(
            [(r.code, r.sentLength) for r in fastLog],
            [(r.code, r.sentLength) for r in slowLog],
        )
        return fast.value()

    def test_sameAsTwisted(self) -> None:
        """
        An HTTP/1.1 keep-alive answer has the status line, headers (CORS,
        Artcast-*, ETag, Content-Length, Link) and body Twisted's header
        writing gives, and keeps the connection.
        """
        self.store.register("k", {"license": {"uri": "https://example.org/l"}})
        answer = self.compare(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        lines, body = self.withoutDate(answer)
        self.assertEqual(lines[0], b"HTTP/1.1 200 OK")
        for name in (
            b"Access-Control-Allow-Origin: *", b"Content-Length: 10",
            b"Artcast-Key: k", b'Link: <https://example.org/l>; rel="license"',
        ):
            self.assertIn(name, lines)
        self.assertTrue(any(line.startswith(b"Etag: ") or line.startswith(b"ETag: ")
                            for line in lines))
        self.assertEqual(body, '{"a":"é"}'.encode())

    def test_sameDatumAfterRegistration(self) -> None:
        """
        The same datum answered again after its key is registered anew (a
        poll resuming from before it) carries the new C{Link}, not the one
        of the answer made just before.
        """
        self.clock.advance(1_700_000_000)
        before = self.store.publish("k", 0)
        fast, _ = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.store.publish("k", 1)
        self.assertNotIn(b"\r\nLink: ", fast.value())
        self.store.register("k", {"license": {"uri": "https://example.org/l"}})
        again, _ = self.serve(
            b"GET /artcasts/k?since=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (before.id.encode(),)
        )
        self.assertIn(b'\r\nLink: <https://example.org/l>; rel="license"\r\n', again.value())
        self.assertTrue(again.value().endswith(b"\r\n\r\n1"))

    def test_http10Closes(self) -> None:
        """
        An HTTP/1.0 poll gets the same answer as from Twisted, and the
        connection is closed after it.
        """
        answer = self.compare(b"GET /artcasts/k HTTP/1.0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.0 200 OK\r\n"))

    def test_connectionClose(self) -> None:
        """
        An HTTP/1.1 poll asking C{Connection: close} is answered with
        C{Connection: close}, as Twisted does, and the connection closed.
        """
        answer = self.compare(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"\r\nConnection: close\r\n", answer)

    def test_textAndGap(self) -> None:
        """
        The text representation and an answer with a gap are the same as
        Twisted's too.
        """
        first = self.store.publish("k", 0)
        for n in range(1, 200):
            self.store.publish("k", n)
        fast, _ = self.serve(
            b"GET /artcasts/k?since=%s HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
            % (first.id.encode(),)
        )
        slow, _ = self.serve(
            b"GET /artcasts/k?since=%s HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
            % (first.id.encode(),),
            direct=False,
        )
        self.assertIn(b"\r\nArtcast-Gap: 1\r\n", fast.value())
        self.assertEqual(self.withoutDate(fast.value()), self.withoutDate(slow.value()))

    def test_date(self) -> None:
        """
        The C{Date} header is the time of the answer (RFC 7231 format), made
        anew when the clock has moved to another second.
        """
        self.clock.advance(784111777)  # Sun, 06 Nov 1994 08:49:37 GMT
        first, _ = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(60)
        second, _ = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(1)
        self.store.publish("k", 1)
        self.assertIn(b"\r\nDate: Sun, 06 Nov 1994 08:50:38 GMT\r\n", first.value())
        self.assertIn(b"\r\nDate: Sun, 06 Nov 1994 08:50:38 GMT\r\n", second.value())

    def test_keepAliveAndLog(self) -> None:
        """
        Two prebuilt answers in turn on one connection are both sent, and each
        is logged with status 200 and its body's size.
        """
        transport, logged = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.store.publish("k", 1)
        self.channels[-1].dataReceived(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.store.publish("k", 22)
        answers = transport.value().split(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(len(answers), 3)
        self.assertTrue(answers[2].endswith(b"\r\n\r\n22"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual([(r.code, r.sentLength) for r in logged], [(200, 1), (200, 2)])


class LeanPrebuiltAnswerTests(PrebuiltAnswerTests):
    """
    The same answers as Twisted's with Artcast's own request class, whose
    held long polls let go of the request state they do not use while they
    wait (L{ArtcastRequest.hold}) and make it again when asked.
    """

    def setUp(self) -> None:
        super().setUp()
        made: list[ArtcastRequest] = []
        self.made = made

        class Recorded(BoundedRequest):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        self.requestFactory = Recorded

    def options(self) -> dict:
        return {"pollTimeout": 300.0}

    def heldRequest(self) -> Any:
        return self.made[-1]

    def test_heldLetsGo(self) -> None:
        """
        A held poll's request has not made again its header objects, empty
        content buffer, cookie, argument and notification containers while
        it waits; they are made again, as they were, when asked for.
        """
        self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\n\r\n")
        request = self.heldRequest()
        self.assertIsInstance(request, ArtcastRequest)
        self.assertIsNotNone(request.poll)
        own = vars(request)
        for name in (
            "requestHeaders", "responseHeaders", "content", "cookies",
            "received_cookies", "args", "notifications", "prepath", "sitepath",
            "_adapterCache",
        ):
            self.assertNotIn(name, own)
        self.assertEqual(
            (request.prepath, request.sitepath, request._adapterCache),
            ([b"artcasts"], [], {}),
        )
        for name in ("prepath", "sitepath", "_adapterCache"):
            self.assertIn(name, vars(request))
        self.assertEqual(
            list(request.requestHeaders.getAllRawHeaders()),
            [(b"Host", [b"x"]), (b"User-Agent", [b"ua"])],
        )
        self.assertEqual(
            [name for name, _ in request.responseHeaders.getAllRawHeaders()],
            [b"Server", b"Date"],
        )
        self.assertEqual(request.content.read(), b"")
        self.assertEqual(
            (request.cookies, request.received_cookies, request.args, request.notifications),
            ([], {}, {}, []),
        )
        for name in ("requestHeaders", "responseHeaders", "content", "args"):
            self.assertIn(name, vars(request))
        with self.assertRaises(AttributeError):
            request.noSuchAttribute

    def test_valuesShared(self) -> None:
        """
        Held polls share one object for their equal method, version and
        header names and values, read and made again as they were.
        """
        for _ in range(2):
            self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: shared.example\r\n\r\n")
        first, second = self.made[-2:]
        for name in ("method", "clientproto"):
            self.assertIs(getattr(first, name), getattr(second, name))
        self.assertIs(first._lean[-1], second._lean[-1])
        self.assertEqual(first._lean[-1], b"shared.example")
        self.assertEqual(second.getHeader(b"host"), b"shared.example")
        self.assertEqual((second.method, second.clientproto), (b"GET", b"HTTP/1.1"))

    def test_prebuiltStillLean(self) -> None:
        """
        The prebuilt answer does not make the response headers again, and
        the access log still sees the request's headers.
        """
        transport, logged = self.serve(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\n\r\n"
        )
        request = self.heldRequest()
        self.store.publish("k", 1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn("responseHeaders", vars(request))
        self.assertEqual(logged[0].getHeader(b"user-agent"), b"ua")
        self.assertIsNone(request.content)

    def test_argumentsKept(self) -> None:
        """
        A held poll with a query keeps its arguments, and is answered as by
        Twisted.
        """
        latest = self.store.publish("k", 0)
        self.compare(
            b"GET /artcasts/k?since=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (latest.id.encode(),)
        )
        self.assertEqual(self.made[0].args, {b"since": [latest.id.encode()]})

    def test_timeoutSameAsTwisted(self) -> None:
        """
        A held poll whose timeout passes is answered with the C{204}
        Twisted's own writing gives, its C{Date} the one Twisted set when it
        came, made again with the response headers.
        """
        fast, _ = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        request = self.heldRequest()
        date = request._lean[1]
        slow, _ = self.serve(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n", direct=False)
        self.clock.advance(300)
        self.assertTrue(fast.value().startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertIn(b"\r\nDate: %s\r\n" % (date,), fast.value())
        self.assertEqual(self.withoutDate(fast.value()), self.withoutDate(slow.value()))

    def test_headSameAsTwisted(self) -> None:
        """
        A held C{HEAD} poll is answered as by Twisted.
        """
        fast, _ = self.serve(b"HEAD /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        slow, _ = self.serve(b"HEAD /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n", direct=False)
        self.store.publish("k", {"a": 1})
        self.assertTrue(fast.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.withoutDate(fast.value()), self.withoutDate(slow.value()))


class LongPollStructureTests(SynchronousTestCase):
    """
    L{LongPoll} answers through the store, the clock and an L{Answers}
    object, not through the routes.
    """

    def setUp(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        from artcast.server.answers import Answers
        from artcast.server.negotiate import JSON
        from artcast.server.outlets.longpoll import LongPoll

        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.answers = Answers(self.store, self.clock)
        self.request = DummyRequest([b""])
        self.poll = LongPoll(
            self.store, self.clock, self.answers, self.request, "k", JSON, False,
            self.answers.valueAnswer, timeout=5.0,
        )

    def test_builtWithoutApp(self) -> None:
        """
        A long poll made of a store, a clock and an L{Answers} alone is
        answered with the next datum, and holds no L{ArtcastApp}.
        """
        from artcast.server.outlets.longpoll import LongPoll
        from artcast.server.store import Waiter

        d = self.poll.wait()
        self.store.publish("k", [1])
        self.assertEqual(self.successResultOf(d), b"[1]")
        self.assertEqual(self.request.responseCode, 200)
        held = [
            getattr(self.poll, name, None)
            for name in LongPoll.__slots__ + Waiter.__slots__
        ]
        self.assertEqual([v for v in held if isinstance(v, ArtcastApp)], [])
        self.assertIs(self.poll.store, self.store)

    def test_timeoutByGivenClock(self) -> None:
        """
        A long poll whose timeout passes on the clock it was given is answered
        with its L{Answers}' C{204}.
        """
        d = self.poll.wait()
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(d), b"")
        self.assertEqual(self.request.responseCode, 204)

    def test_fastPathAnswersThroughAnswers(self) -> None:
        """
        A long poll L{ArtcastResource} holds itself answers through its app's
        L{Answers}, with the prebuilt answer.
        """
        from twisted.internet.testing import StringTransport
        from twisted.web.http import HTTPChannel
        from twisted.web.server import Site

        from artcast.server.connections import ArtcastRequest

        app = ArtcastApp(self.store, self.clock)
        site = Site(app.resource(), reactor=self.clock)
        site.requestFactory = ArtcastRequest
        site.protocol = HTTPChannel
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\n\r\n")
        poll = channel.requests[0].poll
        self.assertIs(poll.answers, app.answers)
        self.assertEqual(poll.answer, app.answers.prebuiltAnswer)

    def test_fanOutLetsGo(self) -> None:
        """
        Every poll of a fan-out, in one step or (with a timeout) the long
        way, is answered, taken out of the store and let go of by its
        request, and no timer is left.
        """
        from twisted.internet.testing import StringTransport
        from twisted.web.http import HTTPChannel
        from twisted.web.server import Site

        from artcast.server.connections import ArtcastRequest

        app = ArtcastApp(self.store, self.clock)
        site = Site(app.resource(), reactor=self.clock)
        site.requestFactory = ArtcastRequest
        site.protocol = HTTPChannel
        held = []
        for target in (b"/artcasts/k", b"/artcasts/k?timeout=30", b"/artcasts/k"):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (target,))
            request = channel.requests[0]
            held.append((request, request.poll, transport))
        self.assertEqual(self.store.listening, 3)
        self.store.publish("k", [1])
        self.assertEqual(self.store.listening, 0)
        for request, poll, transport in held:
            self.assertIsNone(request.poll)
            self.assertTrue(request.finished)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
            self.assertTrue(transport.value().endswith(b"\r\n\r\n[1]"))
        self.assertEqual(held[1][1].timeout, 30.0)
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if call.func == held[1][1]._timedOut],
            [],
        )


class PlainPollTests(SynchronousTestCase):
    """
    A long poll whose path is plain (printable ASCII, no percent-escape) is
    given by the request straight to L{ArtcastResource.pollPlain}, not
    through the site's resource lookup and the resource's C{render}: the
    answers, and what the request holds, are those of that dispatch.
    """

    def setUp(self) -> None:
        # The Date of Twisted's own answers (errors, pages).
        self.patch(time, "time", lambda: 1_700_000_000.25)
        if hasattr(http, "gmtime"):
            self.patch(http, "gmtime", lambda at=None: _gmtime(1_700_000_000 if at is None else at))

    def serve(
        self, data: bytes, direct: bool, closing: bool = False
    ) -> tuple[bytes, list[Any], int]:
        """
        Serve C{data} on one connection of a fresh server, publish a datum
        of C{k}, and give what was sent, what each poll's request held when
        the application took it, and how many resource lookups the site made.
        """
        plainPath = connections._PLAIN_POLL_PATH
        if not direct:
            connections._PLAIN_POLL_PATH = lambda path: None
        try:
            return self._serve(data, closing)
        finally:
            connections._PLAIN_POLL_PATH = plainPath

    def _serve(self, data: bytes, closing: bool) -> tuple[bytes, list[Any], int]:
        clock = Clock()
        store = KeyStore(clock, instance="srv")
        app = ArtcastApp(store, clock, pollTimeout=300.0)
        site = LimitedSite(app.resource(), None, reactor=clock, stderr=io.StringIO())
        # The server's request class.
        site.requestFactory = boundedRequestFactory(10)
        site.closing = closing
        seen: list[Any] = []
        poll = app.poll

        def recording(request: Any, answer: Any) -> Any:
            seen.append((request.prepath, request.postpath, request.sitepath,
                         request.site is site, request.uri))
            return poll(request, answer)

        app.poll = recording  # type: ignore[method-assign]
        lookups = []
        lookup = site.getResourceFor

        def counted(request: Any) -> Any:
            lookups.append(request)
            return lookup(request)

        site.getResourceFor = counted  # type: ignore[method-assign]
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        store.publish("k", {"a": 1})
        store.publish("a/b", 2)
        channel.connectionLost(Failure(ConnectionDone()))
        return transport.value(), seen, len(lookups)

    def test_sameAsThroughTheSite(self) -> None:
        """
        Plain polls, polls of keys with levels, with a query, C{HEAD}, a
        page, and paths with escapes or bad bytes (which take the site's
        way) are answered as through the site's lookup and C{render}; only
        the plain ones skip the lookup.
        """
        for head, plain in (
            (b"GET /artcasts/k HTTP/1.1", True),
            (b"GET /artcasts/a/b HTTP/1.1", True),
            (b"GET /artcasts/k?timeout=5 HTTP/1.1", True),
            (b"HEAD /artcasts/k HTTP/1.1", True),
            (b"GET /artcasts/k//x HTTP/1.1", True),
            (b"GET /artcasts/%6b HTTP/1.1", False),
            (b"GET /artcasts%2Fk HTTP/1.1", False),
            (b"GET /artcasts/k%2Fx HTTP/1.1", False),
            (b"GET /artcasts/%FF HTTP/1.1", False),
            (b"GET /artcasts/%01 HTTP/1.1", False),
            (b"GET /artcasts/ HTTP/1.1", False),
            (b"GET /artcasts HTTP/1.1", False),
        ):
            for extra in (b"", b"Accept: text/html\r\n", b"Connection: close\r\n"):
                data = head + b"\r\nHost: x\r\n" + extra + b"\r\n"
                direct = self.serve(data, True)
                through = self.serve(data, False)
                self.assertEqual(direct[:2], through[:2], data)
                self.assertEqual(through[2], 1, data)
                # (Connection: close is processed by Twisted.)
                skips = plain and not extra.startswith(b"Connection")
                self.assertEqual(direct[2], 0 if skips else 1, data)
        self.assertEqual(
            self.serve(b"GET /artcasts/a/b HTTP/1.1\r\n\r\n", True)[1],
            [([b"artcasts"], [b"a", b"b"], [], True, b"/artcasts/a/b")],
        )

    def test_refused(self) -> None:
        """
        While the server shuts down, a plain poll is refused as any other
        request.
        """
        sent, seen, lookups = self.serve(b"GET /artcasts/k HTTP/1.1\r\n\r\n", True, True)
        self.assertTrue(sent.startswith(b"HTTP/1.1 503 "), sent)
        self.assertEqual(seen, [])


class RememberedWaitTests(SynchronousTestCase):
    """
    What a plain head's long poll waited on is remembered by the head
    (L{artcast.server.connections.PlainHead}): the next request with the
    same head waits on the same, without asking again.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(self.store, self.clock, pollTimeout=30.0)
        self.site = LimitedSite(self.app.resource(), None, reactor=self.clock, stderr=io.StringIO())
        self.site.requestFactory = boundedRequestFactory(10)
        self.polls: list[Any] = []
        self.requests: list[Any] = []
        poll = self.app.poll

        def recording(request: Any, answer: Any) -> Any:
            result = poll(request, answer)
            self.polls.append(result)
            self.requests.append(request)
            return result

        self.app.poll = recording  # type: ignore[method-assign]

    def send(self, data: bytes) -> StringTransport:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return transport

    def test_sameWait(self) -> None:
        """
        A second poll with the same head waits as the first (key,
        representation, timeout), and both get the same answer.
        """
        head = b"GET /artcasts/a/b HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
        transports = [self.send(head), self.send(head)]
        first, second = self.polls
        self.assertIs(first.request.plainHead, second.request.plainHead)
        self.assertEqual(first.request.plainHead.waited[1:], ("a/b", "text/plain"))
        for name in ("pattern", "contentType", "timeout", "gap", "skipThrough", "origin"):
            self.assertEqual(getattr(first, name), getattr(second, name), name)
        self.assertEqual((second.pattern, second.contentType, second.timeout),
                         ("a/b", "text/plain", 30.0))
        self.store.publish("a/b", "v")
        answers = [t.value() for t in transports]
        self.assertEqual(answers[0], answers[1])
        self.assertTrue(answers[0].endswith(b"\r\n\r\nv"), answers[0])
        self.clock.advance(30)

    def test_ownArgumentsNotRemembered(self) -> None:
        """
        A head with a query (C{since}, C{timeout}) or C{If-None-Match}, or
        one whose poll is answered at once, is not remembered: each such
        request is read again.
        """
        self.store.publish("k", 1)
        for head in (
            b"GET /artcasts/k?timeout=5 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /artcasts/k HTTP/1.1\r\nIf-None-Match: \"nope\"\r\n\r\n",
            b"GET /artcasts/k HTTP/1.1\r\nAccept: text/html\r\n\r\n",
            b"GET /artcasts/k HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /artcasts/k?since=latest HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            self.send(head)
            self.send(head)
        self.assertEqual(len(self.requests), 10)
        for request in self.requests:
            self.assertIsNone(request.plainHead.waited)
        self.assertEqual(self.polls[0].timeout, 5.0)
        self.clock.advance(30)
