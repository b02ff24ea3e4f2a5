# -*- test-case-name: tests.test_streams -*-
"""
Tests for L{artcast.server.outlets.streams}: Server-Sent Events, newline-delimited JSON and
WebSocket streams, and the live page that reads them.

The unit tests drive the Klein resource through a real L{HTTPChannel} over
a L{StringTransport}, so headers, chunking and flow control are Twisted's
own; a L{Clock} runs the heartbeats.  The integration tests at the end talk
to the real C{twistd artcast} with treq, Autobahn's client and raw sockets.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
from typing import Any, Callable

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.server import Site

from artcast.server.outlets import pages
from artcast.server.store import KeyStore
from artcast.server.outlets.streams import (
    NDJSON,
    shutdownMessage,
    STREAM_TYPES,
    StreamManager,
    envelope,
    gapMessage,
    originPattern,
)
from artcast.server.routes import VALUE_TYPES, ArtcastApp
from artcast.wire import Stamp
from tests.harness import ArtcastProcess, readAvailable
from tests.test_connections import idleTimers

# Helpers


class HookedTransport(StringTransport):
    """
    A L{StringTransport} that can call a function on each write, to act out
    things happening while a stream writes.
    """

    onWrite: Callable[[bytes], None] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.onWrite is not None:
            self.onWrite(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))


class Connection:
    """
    One client connection to the app's resource, through a real HTTP
    channel over a L{HookedTransport}.
    """

    def __init__(self, app: ArtcastApp, clock: Clock) -> None:
        self.site = Site(app.resource(), reactor=clock)
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = HookedTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.transport.protocol = self.protocol  # type: ignore[attr-defined]
        self.protocol.makeConnection(self.transport)

    def request(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        version: str = "HTTP/1.1",
    ) -> None:
        lines = [f"{method} {path} {version}", "Host: artcast.example"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))

    def stream(self, path: str, accept: str = "text/event-stream", **headers: str) -> None:
        self.request(path, {"Accept": accept, **headers})

    def head(self) -> tuple[int, dict[str, list[str]], bytes]:
        """
        The status, the headers (lower-cased names) and the raw bytes after
        them so far.
        """
        raw = self.transport.value()
        top, _, rest = raw.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers, rest

    def body(self) -> bytes:
        """
        The body so far, with the chunked encoding taken off (whole chunks).
        """
        status, headers, rest = self.head()
        if headers.get("transfer-encoding") != ["chunked"]:
            return rest
        body = bytearray()
        while True:
            line, found, after = rest.partition(b"\r\n")
            if not found:
                break
            size = int(line, 16)
            if size == 0 or len(after) < size + 2:
                break
            body += after[:size]
            rest = after[size + 2:]
        return bytes(body)

    def events(self) -> list[dict[str, Any]]:
        return parseEventStream(self.body())[0]

    def lines(self) -> list[bytes]:
        body = self.body()
        return body.split(b"\n")[:-1] if body.endswith(b"\n") else body.split(b"\n")

    def pause(self) -> None:
        """
        Act out a full socket buffer: the transport pauses its producer.
        """
        self.transport.producer.pauseProducing()

    def resume(self) -> None:
        self.transport.producer.resumeProducing()

    def lose(self) -> None:
        self.transport.protocol.connectionLost(  # type: ignore[attr-defined]
            Failure(ConnectionDone())
        )


def parseEventStream(stream: bytes) -> tuple[list[dict[str, Any]], int, int | None]:
    """
    Parse an event stream as the HTML standard's EventSource does.

    @return: the dispatched events (C{type}, C{data}, C{lastEventId}), the
        number of comments, and the last C{retry} value.
    """
    events = []
    comments = 0
    retry = None
    data: list[str] = []
    eventType = ""
    lastEventId = ""
    text = stream.decode("utf-8")
    complete = re.split(r"\r\n|\r|\n", text)[:-1]
    for line in complete:
        if line == "":
            if data:
                events.append(
                    {
                        "type": eventType or "message",
                        "data": "\n".join(data),
                        "lastEventId": lastEventId,
                    }
                )
            data = []
            eventType = ""
            continue
        if line.startswith(":"):
            comments += 1
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            eventType = value
        elif field == "id" and "\0" not in value:
            lastEventId = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
    return events, comments, retry


def messages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(event["data"]) for event in events]


class StreamMixin:
    """
    An L{ArtcastApp} over a fresh L{KeyStore}, and connections to it.
    """

    heartbeat = 15.0
    maxQueued = 1 << 20

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        self.app = ArtcastApp(
            self.store, self.clock, heartbeat=self.heartbeat, maxQueued=self.maxQueued
        )
        self.streams: StreamManager = self.app.streams

    def connect(self) -> Connection:
        return Connection(self.app, self.clock)


# Server-Sent Events


class EventStreamTests(StreamMixin, SynchronousTestCase):
    """
    C{Accept: text/event-stream}.
    """

    def test_headers(self) -> None:
        """
        An SSE stream is a chunked 200 with the event-stream type, no-store,
        CORS headers and X-Accel-Buffering: no, and tells the client to
        retry after 2 s before any event.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        status, headers, _ = client.head()
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], ["text/event-stream"])
        self.assertEqual(headers["cache-control"], ["no-store"])
        self.assertEqual(headers["x-accel-buffering"], ["no"])
        self.assertEqual(headers["access-control-allow-origin"], ["*"])
        self.assertEqual(headers["transfer-encoding"], ["chunked"])
        self.assertNotIn("content-length", headers)
        self.assertTrue(client.body().startswith(b"retry: 2000\n\n"))
        self.assertEqual(parseEventStream(client.body())[2], 2000)

    def test_currentThenLive(self) -> None:
        """
        Without since, the stream starts with the current value, then every
        datum as it comes, each an unnamed event whose id is the datum id and
        whose data is the key, id and value.
        """
        first = self.store.publish("k", 1)
        client = self.connect()
        client.stream("/artcasts/k")
        second = self.store.publish("k", {"a": [1, 2]})
        self.store.publish("other", 3)
        third = self.store.publish("k", "x")
        events = client.events()
        self.assertEqual([event["type"] for event in events], ["message"] * 3)
        self.assertEqual(
            [event["lastEventId"] for event in events],
            [first.id, second.id, third.id],
        )
        self.assertEqual(
            messages(events),
            [
                {"key": "k", "id": first.id, "value": 1},
                {"key": "k", "id": second.id, "value": {"a": [1, 2]}},
                {"key": "k", "id": third.id, "value": "x"},
            ],
        )

    def test_nothingYet(self) -> None:
        """
        For a key with no value yet the stream sends nothing until the first
        datum, and the connection stays open.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        self.assertEqual(client.events(), [])
        self.assertFalse(client.transport.disconnecting)
        datum = self.store.publish("k", 5)
        self.assertEqual(messages(client.events()), [{"key": "k", "id": datum.id, "value": 5}])

    def test_newlinesInValues(self) -> None:
        """
        A value holding newlines still travels as one data line.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        self.store.publish("k", "two\nlines\r\nand\rmore\u2028")
        body = client.body()
        dataLines = [line for line in body.split(b"\n") if line.startswith(b"data:")]
        self.assertEqual(len(dataLines), 1)
        self.assertEqual(
            messages(client.events())[0]["value"], "two\nlines\r\nand\rmore\u2028"
        )

    def test_wildcard(self) -> None:
        """
        A pattern's stream starts with the current value of every matching
        key in the order they came, then carries the datums of matching keys
        only, each naming its key.
        """
        self.store.publish("sensors/a", 1)
        self.store.publish("sensors/b", 2)
        self.store.publish("sensors/a", 3)
        self.store.publish("elsewhere", 4)
        client = self.connect()
        client.stream("/artcasts/sensors/*")
        self.store.publish("sensors/c", 5)
        self.store.publish("sensors/c/deep", 6)
        self.assertEqual(
            [(m["key"], m["value"]) for m in messages(client.events())],
            [("sensors/b", 2), ("sensors/a", 3), ("sensors/c", 5)],
        )

    def test_sinceParameter(self) -> None:
        """
        With ?since=<id> the stream sends every held datum after that id,
        then the live ones.
        """
        datums = [self.store.publish("k", n) for n in range(5)]
        client = self.connect()
        client.stream("/artcasts/k?since=" + datums[1].id)
        self.store.publish("k", 5)
        self.assertEqual([m["value"] for m in messages(client.events())], [2, 3, 4, 5])

    def test_lastEventIdWins(self) -> None:
        """
        A Last-Event-ID header (an EventSource reconnecting) wins over the
        since parameter of the URL it first opened.
        """
        datums = [self.store.publish("k", n) for n in range(5)]
        client = self.connect()
        client.stream("/artcasts/k?since=" + datums[0].id, **{"Last-Event-ID": datums[3].id})
        self.assertEqual([m["value"] for m in messages(client.events())], [4])

    def test_upToDate(self) -> None:
        """
        Resuming from the latest id sends nothing until the next datum.
        """
        latest = [self.store.publish("k", n) for n in range(3)][-1]
        client = self.connect()
        client.stream("/artcasts/k", **{"Last-Event-ID": latest.id})
        self.assertEqual(client.events(), [])
        self.store.publish("k", 3)
        self.assertEqual([m["value"] for m in messages(client.events())], [3])

    def test_sinceLatest(self) -> None:
        """
        since=latest starts from the current value, as no since does.
        """
        self.store.publish("k", 1)
        client = self.connect()
        client.stream("/artcasts/k?since=latest")
        self.assertEqual([m["value"] for m in messages(client.events())], [1])

    def test_gap(self) -> None:
        """
        When the id is older than what the server holds, a gap event comes
        first (naming the id), then every datum held, then the live ones.
        """
        store = KeyStore(self.clock, history=3, instance="srv")
        self.app = ArtcastApp(store, self.clock)
        for seq in range(1, 11):
            store.publish("k", seq, Stamp("src", 7, seq, None))
        client = self.connect()
        client.stream("/artcasts/k?since=src.7.2")
        store.publish("k", 11, Stamp("src", 7, 11, None))
        events = client.events()
        self.assertEqual(events[0]["type"], "gap")
        self.assertEqual(json.loads(events[0]["data"]), {"gap": True, "since": "src.7.2"})
        self.assertEqual([m["value"] for m in messages(events[1:])], [8, 9, 10, 11])
        self.assertTrue(all(event["type"] == "message" for event in events[1:]))

    def test_unknownIdNothingHeld(self) -> None:
        """
        Resuming from an id when nothing is held gives a gap event, then the
        live datums.
        """
        client = self.connect()
        client.stream("/artcasts/k?since=other.1.1")
        self.store.publish("k", 1)
        events = client.events()
        self.assertEqual([event["type"] for event in events], ["gap", "message"])

    def test_nothingHeldNextDatum(self) -> None:
        """
        Resuming from an id when nothing is held (the server restarted) gives
        no gap event when the first datum is the very next of the client's
        source, and skips what the client already has.
        """
        client = self.connect()
        client.stream("/artcasts/k?since=src.7.41")
        self.store.publish("k", 41, Stamp("src", 7, 41, None))
        self.store.publish("k", 42, Stamp("src", 7, 42, None))
        events = client.events()
        self.assertEqual([event["type"] for event in events], ["message"])
        self.assertEqual([m["value"] for m in messages(events)], [42])

    def test_nothingHeldLaterDatum(self) -> None:
        """
        Resuming from an id when nothing is held gives the gap event before
        the first datum when that datum is not the very next of the client's
        source (here, one was skipped).
        """
        client = self.connect()
        client.stream("/artcasts/k?since=src.7.41")
        self.store.publish("k", 43, Stamp("src", 7, 43, None))
        self.store.publish("k", 44, Stamp("src", 7, 44, None))
        events = client.events()
        self.assertEqual([event["type"] for event in events], ["gap", "message", "message"])
        self.assertEqual(json.loads(events[0]["data"]), {"gap": True, "since": "src.7.41"})

    def test_otherServerAhead(self) -> None:
        """
        A client that saw a datum on another server before this one got it
        is not sent that datum again when it arrives here.
        """
        self.store.publish("k", 1, Stamp("src", 7, 1, None))
        client = self.connect()
        client.stream("/artcasts/k", **{"Last-Event-ID": "src.7.2"})
        self.store.publish("k", 2, Stamp("src", 7, 2, None))
        self.store.publish("k", 3, Stamp("src", 7, 3, None))
        self.assertEqual([m["value"] for m in messages(client.events())], [3])

    def test_badSince(self) -> None:
        """
        A since that is not an Artcast id is a 400, and nothing subscribes.
        """
        for headers in ({"Last-Event-ID": "nonsense"}, {}):
            client = self.connect()
            path = "/artcasts/k" if headers else "/artcasts/k?since=a.b.c"
            client.stream(path, **headers)
            status, _, _ = client.head()
            self.assertEqual(status, 400)
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.open, 0)

    def test_historyThenLiveInOrder(self) -> None:
        """
        A datum published while the history is being written comes after
        it, once, in order.
        """
        for n in range(3):
            self.store.publish("k", n)
        first = self.store.held("k")[0]
        client = self.connect()
        published = []

        def publishOnce(data: bytes) -> None:
            if not published and b'"value":1}' in data:
                published.append(self.store.publish("k", 99))

        client.transport.onWrite = publishOnce
        client.stream("/artcasts/k?since=" + first.id)
        self.assertEqual(len(published), 1)
        self.assertEqual([m["value"] for m in messages(client.events())], [1, 2, 99])

    def test_heartbeat(self) -> None:
        """
        A comment is sent every heartbeat interval, and only then.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        self.clock.advance(14.9)
        self.assertEqual(parseEventStream(client.body())[1], 0)
        self.clock.advance(0.1)
        self.assertEqual(parseEventStream(client.body())[1], 1)
        self.assertTrue(client.body().endswith(b": keepalive\n\n"))
        self.clock.advance(15)
        self.clock.advance(15)
        self.assertEqual(parseEventStream(client.body())[1], 3)

    def test_clientGoes(self) -> None:
        """
        When the client goes away its subscription and the heartbeat stop.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        self.assertEqual(self.store.listening, 1)
        self.assertEqual(self.streams.streamsOpen["sse"], 1)
        client.lose()
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.streamsOpen["sse"], 0)
        self.assertEqual(self.streams.open, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.store.publish("k", 1)

    def test_http10(self) -> None:
        """
        An HTTP/1.0 client gets the events unchunked, the end of the stream
        being the end of the connection.
        """
        client = self.connect()
        client.request("/artcasts/k", {"Accept": "text/event-stream"}, version="HTTP/1.0")
        datum = self.store.publish("k", 1)
        status, headers, rest = client.head()
        self.assertEqual(status, 200)
        self.assertNotIn("transfer-encoding", headers)
        self.assertEqual(rest, b"retry: 2000\n\nid: %s\ndata: %s\n\n" % (
            datum.id.encode(), envelope(datum)))

    def test_head(self) -> None:
        """
        HEAD with Accept: text/event-stream answers the headers only and
        subscribes nothing.
        """
        client = self.connect()
        client.request("/artcasts/k", {"Accept": "text/event-stream"}, method="HEAD")
        status, headers, rest = client.head()
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], ["text/event-stream"])
        self.assertEqual(rest, b"")
        self.assertEqual(self.store.listening, 0)

    def test_closeAll(self) -> None:
        """
        Ending every stream finishes the response in good order and the
        connection can carry the next request.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        self.streams.closeAll()
        self.assertTrue(client.transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.open, 0)
        client.transport.clear()
        client.request("/artcasts/k")
        self.store.publish("k", 1)
        status, _, _ = client.head()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(client.body()), 1)

    def test_shutdown(self) -> None:
        """
        When the server shuts down, each SSE stream is told when to come
        back (a retry field with the Retry-After given) and is finished, and
        each NDJSON stream is finished.
        """
        self.app.closing.retryAfter = lambda: 3
        sse, ndjson = self.connect(), self.connect()
        sse.stream("/artcasts/k")
        ndjson.stream("/artcasts/k", NDJSON)
        self.assertEqual(len(self.app.closing), 2)
        self.app.closing.close()
        self.assertTrue(sse.body().endswith(b"retry: 3000\n\n"))
        self.assertEqual(parseEventStream(sse.body())[2], 3000)
        for client in (sse, ndjson):
            self.assertTrue(client.transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.open, 0)

    def test_shutdownSaysWhy(self) -> None:
        """
        At shutdown an SSE stream's last event is named C{shutdown} with the
        Retry-After in its data, before the C{retry:} field, and an NDJSON
        stream's last line is C{{"shutdown":true,"retryAfter":N}}.
        """
        self.app.closing.retryAfter = lambda: 4
        sse, ndjson = self.connect(), self.connect()
        sse.stream("/artcasts/k")
        ndjson.stream("/artcasts/k", NDJSON)
        self.store.publish("k", 1)
        self.app.closing.close()
        self.assertTrue(sse.body().endswith(
            b'event: shutdown\ndata: {"retryAfter":4}\n\nretry: 4000\n\n'
        ))
        events, _, retry = parseEventStream(sse.body())
        self.assertEqual(
            [(e["type"], json.loads(e["data"])) for e in events][-1],
            ("shutdown", {"retryAfter": 4}),
        )
        self.assertEqual(retry, 4000)
        lines = [json.loads(line) for line in ndjson.lines()]
        self.assertEqual(lines[-1], {"shutdown": True, "retryAfter": 4})
        self.assertEqual(lines[-2]["value"], 1)
        self.assertEqual(shutdownMessage(None), b'{"shutdown":true}')

    def test_shutdownForgetsEndedStreams(self) -> None:
        """
        A stream that ended is no longer registered for shutdown, and one
        opened while shutting down ends at once.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        client.lose()
        self.assertEqual(len(self.app.closing), 0)
        self.app.closing.close()
        late = self.connect()
        late.stream("/artcasts/k")
        self.assertTrue(late.transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.open, 0)

    @settings(max_examples=200, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(),
            lambda children: st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4),
            max_leaves=10,
        )
    )
    def test_anyValueRoundTrips(self, value: object) -> None:
        """
        Whatever the JSON value, an EventSource parser reads back exactly the
        value, key and id that were sent.
        """
        store = KeyStore(self.clock, instance="srv")
        manager = StreamManager(store, self.clock)
        datum = store.publish("k/ü", value)
        frame = manager._frame(manager._formats["text/event-stream"], datum)
        events = parseEventStream(frame)[0]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["lastEventId"], datum.id)
        self.assertEqual(
            json.loads(events[0]["data"]), {"key": "k/ü", "id": datum.id, "value": value}
        )

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=40), st.booleans())
    def test_anySinceIsAnsweredCleanly(self, since: str, asHeader: bool) -> None:
        """
        Any resume point is either a 400 or a stream, never a server error,
        and a 400 leaves nothing subscribed.
        """
        client = self.connect()
        quoted = "".join("%%%02X" % byte for byte in since.encode("utf-8"))
        if asHeader:
            if not since.isprintable() or not since.isascii() or since != since.strip():
                return
            client.stream("/artcasts/k", **{"Last-Event-ID": since})
        else:
            client.stream("/artcasts/k?since=" + quoted)
        status, _, _ = client.head()
        self.assertIn(status, (200, 400))
        if status == 400:
            self.assertEqual(self.streams.open, 0)
        client.lose()
        self.assertEqual(self.store.listening, 0)


class NegotiationTests(StreamMixin, SynchronousTestCase):
    """
    Which requests stream.
    """

    def test_offered(self) -> None:
        """
        The stream types are offered after JSON, text and HTML.
        """
        self.assertEqual(VALUE_TYPES[:3], ("application/json", "text/plain", "text/html"))
        for mediaType in STREAM_TYPES:
            self.assertIn(mediaType, VALUE_TYPES)

    def test_noAcceptStillLongPolls(self) -> None:
        """
        A request with no Accept header is still a long poll answered with
        JSON and a Content-Length.
        """
        client = self.connect()
        client.request("/artcasts/k")
        self.assertEqual(self.streams.open, 0)
        self.store.publish("k", [1])
        status, headers, _ = client.head()
        self.assertEqual(headers["content-length"], ["3"])
        self.assertEqual(client.body(), b"[1]")

    def test_preferenceHonoured(self) -> None:
        """
        A client preferring JSON to event streams gets JSON.
        """
        client = self.connect()
        client.request("/artcasts/k", {"Accept": "text/event-stream;q=0.5, application/json"})
        self.assertEqual(self.streams.open, 0)

    def test_notAcceptable(self) -> None:
        """
        The 406 body names every type offered, streams included.
        """
        client = self.connect()
        client.request("/artcasts/k", {"Accept": "image/png"})
        status, _, _ = client.head()
        self.assertEqual(status, 406)
        self.assertIn(b"text/event-stream", client.body())
        self.assertIn(NDJSON.encode(), client.body())


# Newline-delimited JSON


class NDJSONTests(StreamMixin, SynchronousTestCase):
    """
    C{Accept: application/x-ndjson}.
    """

    def test_lines(self) -> None:
        """
        An NDJSON stream is one JSON envelope per line: the current value,
        then the live datums, with the NDJSON type and CORS headers.
        """
        first = self.store.publish("k", "a\nb")
        client = self.connect()
        client.stream("/artcasts/k", NDJSON)
        second = self.store.publish("k", {"x": None})
        status, headers, _ = client.head()
        self.assertEqual(headers["content-type"], [NDJSON])
        self.assertEqual(headers["access-control-allow-origin"], ["*"])
        self.assertEqual(headers["transfer-encoding"], ["chunked"])
        self.assertEqual(
            [json.loads(line) for line in client.lines()],
            [
                {"key": "k", "id": first.id, "value": "a\nb"},
                {"key": "k", "id": second.id, "value": {"x": None}},
            ],
        )

    def test_gapAndHeartbeat(self) -> None:
        """
        A gap is a line of its own, and the heartbeat is an empty line; when
        the server holds nothing for the key, the gap comes with the first
        datum that does not follow the client's.
        """
        client = self.connect()
        client.stream("/artcasts/k?since=gone.1.1", NDJSON)
        self.clock.advance(15)
        self.store.publish("k", 1)
        lines = client.lines()
        self.assertEqual(lines[0], b"")
        self.assertEqual(json.loads(lines[1]), {"gap": True, "since": "gone.1.1"})
        self.assertEqual(json.loads(lines[2])["value"], 1)


# Flow control


class SlowReaderTests(StreamMixin, SynchronousTestCase):
    """
    A client that does not read cannot make the server hold without bound.
    """

    maxQueued = 10_000

    def test_pausedQueuesThenDelivers(self) -> None:
        """
        While the socket is full datums wait, and when it drains they are
        sent in order with nothing lost.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        client.pause()
        for n in range(10):
            self.store.publish("k", n)
        self.assertEqual(client.events(), [])
        client.resume()
        self.assertEqual([m["value"] for m in messages(client.events())], list(range(10)))

    def test_noHeartbeatWhilePaused(self) -> None:
        """
        A paused stream gets no heartbeat: nothing is written to a full
        socket.
        """
        client = self.connect()
        client.stream("/artcasts/k")
        client.pause()
        before = client.transport.value()
        self.clock.advance(60)
        self.assertEqual(client.transport.value(), before)

    def test_dropped(self) -> None:
        """
        A stream whose queue passes the limit is aborted and counted, and
        its subscription ends, while another stream keeps receiving.
        """
        slow, fast = self.connect(), self.connect()
        slow.stream("/artcasts/k")
        fast.stream("/artcasts/k", NDJSON)
        slow.pause()
        value = "x" * 1000
        for n in range(9):
            self.store.publish("k", value)
        self.assertFalse(slow.transport.disconnecting)
        self.store.publish("k", value)
        self.assertTrue(slow.transport.disconnecting)
        self.assertTrue(slow.transport.disconnected)
        self.assertEqual(self.streams.streamsDropped, {"sse": 1})
        self.assertEqual(self.streams.streamsOpen["sse"], 0)
        self.assertEqual(self.store.listening, 1)
        slow.lose()
        self.assertEqual(self.streams.streamsDropped, {"sse": 1})
        self.store.publish("k", "last")
        values = [json.loads(line)["value"] for line in fast.lines()]
        self.assertEqual(values, [value] * 10 + ["last"])
        self.assertEqual(self.streams.statistics()["streams_dropped"], {"sse": 1})

    def test_historyDoesNotCount(self) -> None:
        """
        A long history for a client whose socket fills up while it is sent
        is not a reason to drop it: only live datums queued count against
        the limit, and the rest of the history follows when it drains.
        """
        for n in range(50):
            self.store.publish("k", "y" * 500)
        first = self.store.held("k")[0]
        client = self.connect()

        def fullAfterFirstDatum(data: bytes) -> None:
            if b"data:" in data:
                client.transport.onWrite = None
                client.pause()

        client.transport.onWrite = fullAfterFirstDatum
        client.stream("/artcasts/k?since=" + first.id)
        self.assertEqual(len(client.events()), 1)
        self.assertFalse(client.transport.disconnecting)
        client.resume()
        self.assertEqual(len(client.events()), 49)
        self.assertEqual(self.streams.streamsDropped, {})


# WebSocket


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The unmasked frames a server sent: C{(opcode, payload)}.
    """
    found = []
    while len(data) >= 2:
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            break
        found.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return found


def clientFrame(opcode: int, payload: bytes) -> bytes:
    """
    A masked client frame (payloads under 126 bytes).
    """
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    "Sec-WebSocket-Version": "13",
}


class WebSocketTests(StreamMixin, SynchronousTestCase):
    """
    An C{Upgrade: websocket} request to C{/artcasts/<key>}.
    """

    def upgrade(self, path: str) -> Connection:
        client = self.connect()
        client.request(path, UPGRADE)
        return client

    def received(self, client: Connection) -> list[tuple[int, bytes]]:
        raw = client.transport.value()
        _, _, rest = raw.partition(b"\r\n\r\n")
        return frames(rest)

    def test_upgradeAndCurrentValue(self) -> None:
        """
        The upgrade is answered with 101, then the current value and each
        live datum come as JSON text messages with key, id and value.
        """
        first = self.store.publish("k", 1)
        client = self.upgrade("/artcasts/k")
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 101"))
        second = self.store.publish("k", [2])
        self.assertEqual(
            [(op, json.loads(payload)) for op, payload in self.received(client)],
            [
                (1, {"key": "k", "id": first.id, "value": 1}),
                (1, {"key": "k", "id": second.id, "value": [2]}),
            ],
        )
        self.assertEqual(self.streams.streamsOpen["websocket"], 1)

    def test_since(self) -> None:
        """
        ?since=<id> sends the history after it, and a gap marker first when
        the id is too old.
        """
        datums = [self.store.publish("k", n) for n in range(4)]
        client = self.upgrade("/artcasts/k?since=" + datums[1].id)
        self.assertEqual(
            [json.loads(p)["value"] for _, p in self.received(client)], [2, 3]
        )
        client = self.upgrade("/artcasts/k?since=gone.1.1")
        received = [json.loads(p) for _, p in self.received(client)]
        self.assertEqual(received[0], {"gap": True, "since": "gone.1.1"})
        self.assertEqual([m["value"] for m in received[1:]], [0, 1, 2, 3])

    def test_largeValues(self) -> None:
        """
        A value far larger than anything a client may send still goes out
        whole.
        """
        client = self.upgrade("/artcasts/k")
        datum = self.store.publish("k", "w" * 200_000)
        self.assertEqual(self.received(client), [(1, envelope(datum))])

    def test_clientMessagesIgnored(self) -> None:
        """
        What the client sends, even fragmented past the frame limit in
        total, is ignored and the stream goes on.
        """
        client = self.upgrade("/artcasts/k")
        protocol = client.transport.protocol  # type: ignore[attr-defined]
        protocol.dataReceived(clientFrame(1, b'{"hello": 1}'))
        for opcode in [0x01] + [0x00] * 99:
            # Fragments of one long text message, masked with zeros.
            protocol.dataReceived(
                bytes([opcode, 0x80 | 126]) + struct.pack("!H", 4000) + b"\0" * 4
                + b"a" * 4000
            )
        self.assertEqual(protocol.message_data_total_length, 400_000)
        self.assertEqual(protocol.message_data, [])
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        datum = self.store.publish("k", 1)
        self.assertEqual(self.received(client), [(1, envelope(datum))])

    def test_prebuiltFrameAsAutobahnWrites(self) -> None:
        """
        A datum's frame, made once for all its WebSocket streams, is the
        bytes Autobahn's own C{sendMessage} writes for the same message, at
        each of the three length encodings, and Autobahn's traffic counters
        move as they do for it.
        """
        from artcast.server import internals

        fast = self.upgrade("/artcasts/k")
        ordinary = self.upgrade("/artcasts/k")
        ordinaryProtocol = ordinary.transport.protocol  # type: ignore[attr-defined]
        fastProtocol = fast.transport.protocol  # type: ignore[attr-defined]
        self.assertTrue(internals.webSocketFrameFits(fastProtocol))
        self.patch(
            internals, "webSocketFrameFits",
            lambda protocol: protocol is not ordinaryProtocol,
        )
        for size in (10, 1_000, 100_000):
            fast.transport.clear()
            ordinary.transport.clear()
            datum = self.store.publish("k", "v" * size)
            self.assertEqual(fast.transport.value(), ordinary.transport.value())
            self.assertEqual(frames(fast.transport.value()), [(1, envelope(datum))])
        self.assertEqual(
            fastProtocol.trafficStats.__json__(), ordinaryProtocol.trafficStats.__json__()
        )

    def test_prebuiltFrameOnlyWhenPlain(self) -> None:
        """
        A protocol that compresses, has a message in progress or queued, or
        lacks Autobahn's state (another version) gets its messages through
        C{sendMessage}.
        """
        from artcast.server import internals

        client = self.upgrade("/artcasts/k")
        protocol = client.transport.protocol  # type: ignore[attr-defined]
        self.assertTrue(internals.webSocketFrameFits(protocol))
        for name, value in (
            ("_perMessageCompress", object()),
            ("send_state", protocol.SEND_STATE_INSIDE_MESSAGE),
            ("send_queue", [(b"x", True)]),
            ("autoFragmentSize", 10),
        ):
            original = getattr(protocol, name)
            setattr(protocol, name, value)
            self.assertFalse(internals.webSocketFrameFits(protocol), name)
            setattr(protocol, name, original)
        self.assertFalse(internals.webSocketFrameFits(object()))

    def test_badSince(self) -> None:
        """
        A bad since is a 400 before any upgrade.
        """
        client = self.upgrade("/artcasts/k?since=bad")
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 400"))
        self.assertEqual(self.store.listening, 0)

    def test_pingHeartbeat(self) -> None:
        """
        The heartbeat of a WebSocket is a ping.
        """
        client = self.upgrade("/artcasts/k")
        self.clock.advance(15)
        self.assertEqual([op for op, _ in self.received(client)], [9])

    def test_clientCloses(self) -> None:
        """
        When the client starts the closing handshake, datums are no longer
        sent (nor raise), and the subscription ends.
        """
        client = self.upgrade("/artcasts/k")
        self.assertEqual(self.store.listening, 1)
        client.transport.protocol.dataReceived(  # type: ignore[attr-defined]
            clientFrame(8, struct.pack("!H", 1000))
        )
        self.assertIn(8, [op for op, _ in self.received(client)])
        before = client.transport.value()
        self.store.publish("k", 1)
        self.assertEqual(client.transport.value(), before)
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.streamsOpen["websocket"], 0)
        client.lose()
        self.assertEqual(self.streams.open, 0)

    def test_shutdown(self) -> None:
        """
        When the server shuts down, a WebSocket is closed with 1001 (going
        away) and its subscription ends.
        """
        client = self.upgrade("/artcasts/k")
        self.app.closing.close()
        closes = [p for op, p in self.received(client) if op == 8]
        self.assertEqual(closes, [struct.pack("!H", 1001) + b"shutting down"])
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(len(self.app.closing), 0)
        # A client that does not answer the close is cut off, on our clock.
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(client.transport.disconnecting)

    def test_connectionLost(self) -> None:
        """
        When the connection is lost, the subscription ends.
        """
        client = self.upgrade("/artcasts/k")
        client.lose()
        self.assertEqual(self.store.listening, 0)
        self.assertEqual(self.streams.open, 0)

    def test_slowReaderDropped(self) -> None:
        """
        A WebSocket whose socket stays full past the limit is aborted and
        counted.
        """
        client = self.upgrade("/artcasts/k")
        client.pause()
        for n in range(1100):
            self.store.publish("k", "z" * 1000)
            if client.transport.disconnecting:
                break
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(self.streams.streamsDropped, {"websocket": 1})
        self.assertEqual(self.store.listening, 0)


class OriginTests(SynchronousTestCase):
    """
    The WebSocket origin policy follows the CORS setting.
    """

    def test_patterns(self) -> None:
        """
        A configured origin gets its default port made explicit, as
        Autobahn compares origins with one.
        """
        self.assertEqual(originPattern("*"), "*")
        self.assertEqual(originPattern("https://example.com"), "https://example.com:443")
        self.assertEqual(originPattern("http://Example.com:8080"), "http://example.com:8080")

    def test_foreignOriginRefused(self) -> None:
        """
        With a configured origin, a WebSocket from another origin is refused
        and one from the configured origin accepted.
        """
        clock = Clock()
        app = ArtcastApp(KeyStore(clock), clock, allowOrigin="https://ok.example")
        for origin, accepted in (
            ("https://evil.example", False),
            ("https://ok.example", True),
        ):
            client = Connection(app, clock)
            client.request("/artcasts/k", {**UPGRADE, "Origin": origin})
            self.assertEqual(
                client.transport.value().startswith(b"HTTP/1.1 101"), accepted, origin
            )
            client.lose()


# The live page


class LivePageTests(SynchronousTestCase):
    """
    The built-in page follows the key through an EventSource.
    """

    def test_eventSource(self) -> None:
        """
        The page opens an EventSource on the key's URL, resumes with since=
        after it gives up, and no longer long-polls.
        """
        page = pages.livePage("weather/oslo").decode("utf-8")
        self.assertIn("new EventSource(", page)
        self.assertIn('"/artcasts/weather/oslo"', page)
        self.assertIn("?since=", page)
        self.assertIn("EventSource.CLOSED", page)
        self.assertNotIn("fetch(", page)

    def test_nothingBeyondTheServer(self) -> None:
        """
        The page loads nothing from anywhere but the server.
        """
        page = pages.livePage("k").decode("utf-8")
        self.assertNotRegex(page, r"(?i)(src|href)\s*=\s*[\"']?(https?:)?//")
        self.assertNotIn("http://", page)
        self.assertNotIn("https://", page)

    def test_escaped(self) -> None:
        """
        A key that looks like markup or script is escaped in the page and in
        the script.
        """
        key = "a</script><b>'\"&"
        page = pages.livePage(key).decode("utf-8")
        self.assertNotIn("</script><b>", page)
        self.assertEqual(page.count("</script>"), 1)
        self.assertNotIn("<b>", page)

    def test_envelopeHelpers(self) -> None:
        """
        The envelope and the gap marker are compact JSON on one line.
        """
        clock = Clock()
        datum = KeyStore(clock, instance="srv").publish("k", {"a": "b\nc"})
        self.assertEqual(
            envelope(datum), b'{"key":"k","id":"%s","value":{"a":"b\\nc"}}' % datum.id.encode()
        )
        self.assertEqual(gapMessage("x.1.1"), b'{"gap":true,"since":"x.1.1"}')


_PAGE_HARNESS = r"""
const fs = require("fs");
const script = fs.readFileSync(0, "utf-8");
const elements = {};
for (const id of ["value", "status", "matched"]) elements[id] = {textContent: ""};
const sources = [], timers = [], log = [];
class FakeEventSource {
  constructor(url) { this.url = url; this.readyState = 0; this.listeners = {}; sources.push(this); }
  addEventListener(type, listener) { this.listeners[type] = listener; }
  close() { this.readyState = FakeEventSource.CLOSED; }
}
FakeEventSource.CLOSED = 2;
const context = {
  document: {getElementById: (id) => elements[id]},
  window: {EventSource: FakeEventSource},
  EventSource: FakeEventSource,
  setTimeout: (f, delay) => timers.push([f, delay]),
};
new Function(...Object.keys(context), script)(...Object.values(context));
function record(what) {
  log.push({what, value: elements.value.textContent, key: elements.matched.textContent,
            status: elements.status.textContent, urls: sources.map((s) => s.url),
            delays: timers.map((t) => t[1])});
}
const first = sources[0];
first.readyState = 1; first.onopen();
first.onmessage({data: JSON.stringify({key: "k/a", id: "s.1.1", value: "<b>hi</b>"}),
                 lastEventId: "s.1.1"});
record("string");
first.onmessage({data: JSON.stringify({key: "k/b", id: "s.1.2", value: {"n": [1, 2]}}),
                 lastEventId: "s.1.2"});
record("object");
first.readyState = 0; first.onerror();
record("reconnecting");
first.readyState = 2; first.onerror();
record("closed");
timers.shift()[0]();
const second = sources[1];
second.listeners.gap({data: "{}"});
second.onmessage({data: JSON.stringify({key: "k/a", id: "s.1.9", value: 3}), lastEventId: "s.1.9"});
record("resumed");
second.readyState = 2; second.onerror();
timers.shift()[0]();
sources[2].readyState = 2; sources[2].onerror();
record("backoff");
process.stdout.write(JSON.stringify(log));
"""


class LivePageScriptTests(SynchronousTestCase):
    """
    The live page's script, run by Node against a fake EventSource and
    document.
    """

    def setUp(self) -> None:
        import shutil

        self.node = shutil.which("node") or shutil.which("nodejs")
        if self.node is None:
            raise SkipTest("Node is not installed.")

    def runScript(self, key: str) -> list[dict[str, Any]]:
        import subprocess

        page = pages.livePage(key).decode("utf-8")
        script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
        done = subprocess.run(
            [self.node, "-e", _PAGE_HARNESS],
            input=script.encode("utf-8"),
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(done.returncode, 0, done.stderr.decode("utf-8", "replace"))
        return json.loads(done.stdout)

    def test_showsValuesTextually(self) -> None:
        """
        A string value is shown as text (never markup), anything else as
        JSON, with the key that matched and the datum id.
        """
        log = self.runScript("k/*")
        self.assertEqual(log[0]["urls"], ["/artcasts/k/*"])
        self.assertEqual(log[0]["value"], "<b>hi</b>")
        self.assertEqual(log[0]["key"], "k/a")
        self.assertIn("s.1.1", log[0]["status"])
        self.assertEqual(json.loads(log[1]["value"]), {"n": [1, 2]})
        self.assertEqual(log[1]["key"], "k/b")

    def test_resumesAfterGivingUp(self) -> None:
        """
        While the EventSource reconnects by itself nothing new is opened;
        once it gives up a new one resumes with since= the last id seen,
        after a delay that doubles.
        """
        log = self.runScript("k/*")
        self.assertEqual(log[2]["urls"], ["/artcasts/k/*"])
        self.assertEqual(log[2]["delays"], [])
        self.assertEqual(log[3]["delays"], [1000])
        self.assertEqual(
            log[4]["urls"], ["/artcasts/k/*", "/artcasts/k/*?since=s.1.2"]
        )
        self.assertEqual(log[4]["value"], "3")
        self.assertIn("missed", log[4]["status"])
        self.assertEqual(log[5]["urls"][2], "/artcasts/k/*?since=s.1.9")
        self.assertEqual(log[5]["delays"], [4000])


# Against the real server


class StreamBody(Protocol):
    """
    A response body read as it comes, with a way to wait for enough of it
    and to close the connection.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: Deferred[Any] = Deferred()
        self._waiting: list[tuple[Callable[[bytes], bool], Deferred[Any]]] = []
        self.eventCount = 0
        self._blockStart = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        while True:
            end = self.data.find(b"\n\n", self._blockStart)
            if end < 0:
                break
            block = b"\n" + bytes(self.data[self._blockStart:end])
            if b"\ndata:" in block:
                self.eventCount += 1
            self._blockStart = end + 2
        for entry in list(self._waiting):
            if entry[0](self.data):
                self._waiting.remove(entry)
                entry[1].callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.callback(None)
        for _, waiting in self._waiting:
            waiting.errback(AssertionError("the stream ended: %r" % (bytes(self.data[-500:]),)))
        self._waiting = []

    def waitFor(self, condition: Callable[[bytes], bool], limit: float = 10.0) -> Deferred[Any]:
        """
        Fire once C{condition(data so far)} holds; fail after C{limit} s.
        """
        if condition(self.data):
            return succeed(None)
        waiting: Deferred[Any] = Deferred()
        self._waiting.append((condition, waiting))
        return waiting.addTimeout(limit, reactor)

    def events(self) -> list[dict[str, Any]]:
        return parseEventStream(bytes(self.data))[0]

    def waitForEvents(self, count: int, limit: float = 10.0) -> Deferred[Any]:
        return self.waitFor(lambda data: self.eventCount >= count, limit)

    def close(self) -> Deferred[Any]:
        if not self.ended.called:
            self.transport.stopProducing()
        return self.ended


class WebSocketReader(WebSocketClientProtocol):
    """
    An Autobahn client that keeps every message.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []
        self.opened: Deferred[Any] = Deferred()
        self.closed: Deferred[Any] = Deferred()
        self._waiting: list[tuple[int, Deferred[Any]]] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(json.loads(payload))
        for entry in list(self._waiting):
            if len(self.received) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(None)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(AssertionError("refused: %r" % (reason,)))
        self.closed.callback(None)

    def waitForMessages(self, count: int, limit: float = 10.0) -> Deferred[Any]:
        if len(self.received) >= count:
            return succeed(None)
        waiting: Deferred[Any] = Deferred()
        self._waiting.append((count, waiting))
        return waiting.addTimeout(limit, reactor)

    def close(self) -> Deferred[Any]:
        if not self.closed.called:
            self.dropConnection(abort=True)
        return self.closed


class RealServerTests(TestCase):
    """
    Streams from the real C{twistd artcast} over loopback.
    """

    timeout = 90

    @inlineCallbacks
    def serve(self) -> Any:
        proc = yield ArtcastProcess(self).start()
        returnValue(proc)

    @inlineCallbacks
    def openStream(
        self, proc: ArtcastProcess, path: str, accept: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> Any:
        allHeaders = {"Accept": [accept]}
        for name, value in (headers or {}).items():
            allHeaders[name] = [value]
        response = yield treq.get(
            proc.url + path, headers=allHeaders, unbuffered=True, persistent=False
        )
        body = StreamBody()
        response.deliverBody(body)
        self.addCleanup(body.close)
        returnValue((response, body))

    @inlineCallbacks
    def openWebSocket(self, proc: ArtcastProcess, path: str) -> Any:
        factory = WebSocketClientFactory("ws://127.0.0.1:%d%s" % (proc.httpPort, path))
        factory.protocol = WebSocketReader
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proc.httpPort)
        protocol = yield endpoint.connect(factory)
        self.addCleanup(protocol.close)
        yield protocol.opened.addTimeout(10, reactor)
        returnValue(protocol)

    @inlineCallbacks
    def send(self, proc: ArtcastProcess, key: str, value: Any) -> Any:
        """
        Send a datum and wait until the server has it.
        """
        before = (yield proc.stats())["datums"]
        proc.data.sendDatum(key, value)
        yield proc.waitFor(lambda stats: stats["datums"] > before)

    @inlineCallbacks
    def test_eventStream(self) -> None:
        """
        treq reads an SSE stream: the current value, then live datums, each
        with its id; a reconnect with Last-Event-ID or ?since= gets what
        followed that id, then the live ones.
        """
        proc = yield self.serve()
        yield self.send(proc, "k", 0)
        response, first = yield self.openStream(proc, "/artcasts/k")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("Content-Type"), ["text/event-stream"]
        )
        yield proc.waitForWaiters(1)
        for n in (1, 2):
            proc.data.sendDatum("k", n)
        yield first.waitForEvents(3)
        events = first.events()
        self.assertEqual([m["value"] for m in messages(events)], [0, 1, 2])
        ids = [event["lastEventId"] for event in events]
        self.assertEqual(ids, [m["id"] for m in messages(events)])
        yield first.close()

        _, byHeader = yield self.openStream(
            proc, "/artcasts/k", headers={"Last-Event-ID": ids[0]}
        )
        _, byQuery = yield self.openStream(proc, "/artcasts/k?since=" + ids[1])
        yield byHeader.waitForEvents(2)
        yield byQuery.waitForEvents(1)
        yield proc.waitForWaiters(2)
        proc.data.sendDatum("k", 3)
        yield byHeader.waitForEvents(3)
        yield byQuery.waitForEvents(2)
        self.assertEqual([m["value"] for m in messages(byHeader.events())], [1, 2, 3])
        self.assertEqual([m["value"] for m in messages(byQuery.events())], [2, 3])
        yield byHeader.close()
        yield proc.waitFor(lambda stats: stats["waiting"] == 1)
        self.assertNotIn("Traceback", proc.output)

    @inlineCallbacks
    def test_ndjson(self) -> None:
        """
        An NDJSON stream gives one JSON line per datum, and resumes with
        ?since=.
        """
        proc = yield self.serve()
        response, body = yield self.openStream(proc, "/artcasts/sensors/...", NDJSON)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), [NDJSON])
        yield proc.waitForWaiters(1)
        proc.data.sendDatum("sensors/a", {"t": 1})
        proc.data.sendDatum("sensors/b/c", "two\nlines")
        yield body.waitFor(lambda data: data.count(b"\n") >= 2)
        lines = [json.loads(line) for line in bytes(body.data).splitlines()]
        self.assertEqual(
            [(m["key"], m["value"]) for m in lines],
            [("sensors/a", {"t": 1}), ("sensors/b/c", "two\nlines")],
        )
        _, resumed = yield self.openStream(
            proc, "/artcasts/sensors/...?since=" + lines[0]["id"], NDJSON
        )
        yield resumed.waitFor(lambda data: data.count(b"\n") >= 1)
        self.assertEqual(json.loads(bytes(resumed.data).splitlines()[0]), lines[1])

    @inlineCallbacks
    def test_webSocket(self) -> None:
        """
        Autobahn's client gets the current value and then live datums as
        JSON messages, resumes with ?since=, and sees a gap marker when the
        id is unknown.
        """
        proc = yield self.serve()
        yield self.send(proc, "k", "first")
        client = yield self.openWebSocket(proc, "/artcasts/k")
        yield client.waitForMessages(1)
        proc.data.sendDatum("k", {"second": True})
        yield client.waitForMessages(2)
        first, second = client.received
        self.assertEqual((first["key"], first["value"]), ("k", "first"))
        self.assertEqual(second["value"], {"second": True})
        yield client.close()

        resumed = yield self.openWebSocket(proc, "/artcasts/k?since=" + first["id"])
        yield resumed.waitForMessages(1)
        self.assertEqual(resumed.received, [second])
        unknown = yield self.openWebSocket(proc, "/artcasts/k?since=gone.1.1")
        yield unknown.waitForMessages(3)
        self.assertEqual(unknown.received, [{"gap": True, "since": "gone.1.1"}, first, second])
        yield proc.waitForWaiters(2)
        proc.data.sendDatum("k", 3)
        yield resumed.waitForMessages(2)
        yield unknown.waitForMessages(4)
        self.assertEqual(resumed.received[-1]["value"], 3)
        self.assertEqual(unknown.received[-1]["value"], 3)
        yield resumed.close()
        yield proc.waitFor(lambda stats: stats["waiting"] == 1)
        self.assertNotIn("Traceback", proc.output)

    @inlineCallbacks
    def stalledReader(self, request: bytes, mode: str) -> Any:
        """
        Open a raw connection that sends C{request} and never reads, and
        a healthy SSE client of the same key; send large datums until the
        server drops the stalled one (a bounded number), and check that the
        healthy one received every datum in order.
        """
        proc = yield self.serve()
        _, healthy = yield self.openStream(proc, "/artcasts/big")
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", proc.httpPort))
        stalled.sendall(request)
        yield proc.waitForWaiters(2)
        value = "v" * 60_000
        sent = 0
        for sent in range(1, 301):
            proc.data.sendDatum("big", "%d %s" % (sent, value))
            yield healthy.waitForEvents(sent, limit=20)
            if sent % 5 == 0:
                stats = yield proc.stats()
                if stats["waiting"] < 2:
                    break
        stats = yield proc.stats()
        self.assertEqual(stats["waiting"], 1, "the stalled reader was never dropped")
        if "streams_dropped" in stats:
            self.assertEqual(stats["streams_dropped"], {mode: 1})
        # The server reset (or closed) the stalled connection.
        stalled.settimeout(10)
        ended = False
        for _ in range(100_000):
            try:
                if not stalled.recv(65536):
                    ended = True
                    break
            except ConnectionResetError:
                ended = True
                break
        self.assertTrue(ended)
        # The healthy client got every datum, in order, and still gets more.
        proc.data.sendDatum("big", "after")
        yield healthy.waitForEvents(sent + 1, limit=20)
        values = [m["value"] for m in messages(healthy.events())]
        self.assertEqual(values[:-1], ["%d %s" % (n, value) for n in range(1, sent + 1)])
        self.assertEqual(values[-1], "after")

    def test_stalledEventStreamDropped(self) -> None:
        """
        A client that sends an SSE request and never reads is cut off once
        the server would have to hold too much for it, while another client
        of the same key receives every datum.
        """
        return self.stalledReader(
            b"GET /artcasts/big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\n\r\n",
            "sse",
        )

    def test_stalledWebSocketDropped(self) -> None:
        """
        A WebSocket client that completes the handshake and never reads is
        cut off the same way, while another client receives every datum.
        """
        headers = "".join("%s: %s\r\n" % item for item in UPGRADE.items())
        return self.stalledReader(
            b"GET /artcasts/big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + headers.encode("ascii") + b"\r\n",
            "websocket",
        )

    @inlineCallbacks
    def test_shutdownEndsStreams(self) -> None:
        """
        When the server is stopped, an SSE stream is ended with a retry
        field (when to come back) and a WebSocket with close code 1001, and
        the server exits.
        """
        proc = yield self.serve()
        _, body = yield self.openStream(proc, "/artcasts/k")
        client = yield self.openWebSocket(proc, "/artcasts/k")
        yield proc.waitForWaiters(2)
        yield proc.stop()
        yield body.ended.addTimeout(10, reactor)
        yield client.closed.addTimeout(10, reactor)
        retries = re.findall(rb"(?m)^retry: (\d+)$", bytes(body.data))
        self.assertEqual(len(retries), 2, bytes(body.data))
        self.assertEqual(retries[0], b"2000")
        self.assertGreaterEqual(int(retries[1]), 1000)
        self.assertEqual(client.remoteCloseCode, 1001)
        self.assertNotIn("Traceback", proc.output)


class SentAtOnceTests(SynchronousTestCase):
    """
    A stream's events are sent on the socket as they are written, once its
    headers have gone the ordinary way (L{sendStreamAtOnce}).
    """

    def setUp(self) -> None:
        from twisted.internet import tcp
        from twisted.internet.testing import MemoryReactor

        from tests.test_bounds_output import makeLimiter

        self.clock = Clock()
        self.store = KeyStore(self.clock, instance="srv")
        app = ArtcastApp(self.store, self.clock)
        limiter = self.limiter = makeLimiter(self.clock, app.resource())
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        self.theirs = socket.create_connection(listening.getsockname())
        self.addCleanup(self.theirs.close)
        self.theirs.setblocking(False)
        ours, _ = listening.accept()
        self.addCleanup(ours.close)
        ours.setblocking(False)
        self.reactor = MemoryReactor()
        self.connection = limiter.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = tcp.Server(
            ours, self.connection, ("127.0.0.1", 1), None, 1, self.reactor
        )
        self.connection.makeConnection(self.transport)

    def received(self) -> bytes:
        """
        What the client has received so far.
        """
        return readAvailable(self.theirs)

    def test_eventsSentAsWritten(self) -> None:
        """
        The headers wait for the reactor, as every answer's do; then each
        event of the stream is on the wire when the datum is published, and
        the reactor was not asked to watch the socket for it.
        """
        self.connection.dataReceived(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.assertTrue(self.connection.streaming)
        self.assertEqual(self.received(), b"")
        self.transport.doWrite()
        self.assertIn(b"text/event-stream", self.received())
        self.reactor.writers.clear()
        for value in (1, 2):
            datum = self.store.publish("k", value)
            event = self.received()
            self.assertIn(b"id: %s\n" % (datum.id.encode(),), event)
            self.assertIn(b'"value":%d}\n\n' % (value,), event)
            self.assertEqual(self.reactor.writers, set())

    def test_noIdleTimerKept(self) -> None:
        """
        An open stream keeps no idle timer of its connection in memory.
        """
        self.connection.dataReceived(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.assertTrue(self.connection.streaming)
        self.assertEqual(idleTimers(self.clock, self.limiter), [])

    def test_endedStreamOrdinary(self) -> None:
        """
        A stream the server ends puts the ordinary way back for what the
        connection writes next.
        """
        self.connection.dataReceived(
            b"GET /artcasts/k HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        request = self.connection.wrappedProtocol.requests[0]
        stream = request.producer
        stream.end()
        self.assertFalse(self.connection.streaming)
