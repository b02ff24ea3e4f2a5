# -*- test-case-name: tests.test_nginx -*-
"""
The nginx configuration docs/operations.md shows
(C{docs/examples/nginx-artcast.conf}), run by a real nginx in front of a
real C{twistd artcast} on loopback ports: long polls with resume, an SSE
stream that is not buffered, a WebSocket, and keep-alive on both sides of
the proxy.  Skipped, with the reason, where nginx is not installed.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.harness import NGINX_EXAMPLE, ArtcastProcess, Nginx
from tests.test_streams import StreamBody, WebSocketReader, messages


class AdaptTests(SynchronousTestCase):
    """
    The harness runs the documented file with only its addresses changed.
    """

    def test_addressesReplaced(self) -> None:
        """
        The example's listen line becomes 127.0.0.1 and the test's port, its
        upstream server line one line per test server, and nothing else
        changes.
        """
        with open(NGINX_EXAMPLE) as f:
            text = f.read()
        adapted = Nginx.adapt(text, [8001, 8002], 9000)
        self.assertIn("    listen 127.0.0.1:9000;\n", adapted)
        self.assertIn("    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n", adapted)
        self.assertNotIn("listen 80;", adapted)
        kept = [line for line in text.splitlines() if "listen" not in line
                and not line.strip().startswith("server ")]
        self.assertEqual(
            kept,
            [line for line in adapted.splitlines() if "listen" not in line
             and not line.strip().startswith("server ")],
        )

    def test_documentedSettings(self) -> None:
        """
        The example passes WebSocket upgrades through a map, keeps upstream
        connections alive, and does not buffer answers.
        """
        with open(NGINX_EXAMPLE) as f:
            text = f.read()
        for needed in [
            "map $http_upgrade $connection_upgrade",
            "proxy_set_header Connection $connection_upgrade;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_http_version 1.1;",
            "proxy_buffering off;",
            "keepalive 64;",
        ]:
            self.assertIn(needed, text)
        self.assertNotIn('Connection ""', text)

    def test_noAddresses(self) -> None:
        """
        A configuration without a listen or upstream server line is refused,
        so that a changed example cannot go untested.
        """
        self.assertRaises(ValueError, Nginx.adapt, "server { }\n", [1], 2)


class NginxTests(TestCase):
    """
    Clients through the documented nginx configuration get what they get
    from the server itself.
    """

    timeout = 60
    skip = Nginx.missing()

    @inlineCallbacks
    def serve(self) -> Any:
        proc = yield ArtcastProcess(self).start()
        proxy = yield Nginx(self, [proc.httpPort]).start()
        returnValue((proc, proxy))

    @inlineCallbacks
    def send(self, proc: ArtcastProcess, key: str, value: Any) -> Any:
        """
        Send a datum and wait until the server has it.
        """
        before = (yield proc.stats())["datums"]
        proc.data.sendDatum(key, value)
        yield proc.waitFor(lambda stats: stats["datums"] > before)

    @inlineCallbacks
    def test_longPoll(self) -> None:
        """
        A long poll through nginx is held and answered when a datum comes,
        and a poll with since= that datum's id gets the next one.
        """
        proc, proxy = yield self.serve()
        held = treq.get(proxy.url + "/artcasts/k?since=latest", persistent=False, timeout=15)
        yield proc.waitForWaiters(1)
        proc.data.sendDatum("k", "first")
        response = yield held
        self.assertEqual(response.code, 200)
        self.assertEqual((yield response.json()), "first")
        first = response.headers.getRawHeaders("Artcast-Id")[0]
        yield self.send(proc, "k", "second")
        response = yield treq.get(
            proxy.url + "/artcasts/k", params={"since": first}, persistent=False, timeout=15
        )
        self.assertEqual(response.code, 200)
        self.assertEqual((yield response.json()), "second")
        self.assertNotEqual(response.headers.getRawHeaders("Artcast-Id")[0], first)

    @inlineCallbacks
    def test_eventStream(self) -> None:
        """
        An SSE stream through nginx delivers each datum while the stream is
        still open: nginx does not buffer it.
        """
        proc, proxy = yield self.serve()
        response = yield treq.get(
            proxy.url + "/artcasts/k", headers={"Accept": ["text/event-stream"]},
            unbuffered=True, persistent=False, timeout=15,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["text/event-stream"])
        body = StreamBody()
        response.deliverBody(body)
        self.addCleanup(body.close)
        yield proc.waitForWaiters(1)
        for n in (1, 2):
            proc.data.sendDatum("k", n)
            yield body.waitForEvents(n)
        self.assertEqual([m["value"] for m in messages(body.events())], [1, 2])
        self.assertFalse(body.ended.called)

    @inlineCallbacks
    def test_webSocket(self) -> None:
        """
        A WebSocket through nginx is upgraded and receives the current value
        and then live datums.
        """
        proc, proxy = yield self.serve()
        yield self.send(proc, "k", "first")
        factory = WebSocketClientFactory("ws://127.0.0.1:%d/artcasts/k" % (proxy.port,))
        factory.protocol = WebSocketReader
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port).connect(factory)
        self.addCleanup(client.close)
        yield client.opened.addTimeout(10, reactor)
        yield client.waitForMessages(1)
        proc.data.sendDatum("k", {"second": True})
        yield client.waitForMessages(2)
        self.assertEqual(
            [(m["key"], m["value"]) for m in client.received],
            [("k", "first"), ("k", {"second": True})],
        )

    @inlineCallbacks
    def test_keepAlive(self) -> None:
        """
        Two polls go over one client connection to nginx, and nginx keeps
        its connection to the server open after them.
        """
        proc, proxy = yield self.serve()
        yield self.send(proc, "k", 1)
        yield self.send(proc, "k", 2)

        def twoPolls() -> list[Any]:
            connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            try:
                answers = []
                socketUsed = None
                for _ in range(2):
                    connection.request("GET", "/artcasts/k?since=latest")
                    response = connection.getresponse()
                    answers.append((response.status, json.loads(response.read()),
                                    response.will_close))
                    if socketUsed is None:
                        socketUsed = connection.sock
                    answers.append(connection.sock is socketUsed)
                return answers
            finally:
                connection.close()

        answers = yield deferToThread(twoPolls)
        self.assertEqual(answers, [(200, 2, False), True, (200, 2, False), True])
        stats = yield proc.stats()
        # This request's own connection, and nginx's, kept for the next.
        self.assertGreaterEqual(stats["connections"], 2, stats)
