"""
The MQTT bridge (C{--mqtt}): L{artcast.server.feeds.mqtt} alone with fakes,
and a real C{twistd artcast} against a real C{mosquitto} on a loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Any

import treq
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server.feeds.mqtt import (
    ORIGIN_PROPERTY,
    MQTTFeed,
    MQTTRefused,
    checkTopicFilter,
    parseMQTTURL,
    payloadValue,
    readPasswordFile,
)
from artcast.server.stats import Stats
from artcast.server.store import KeyStore
from artcast.server.tap import Options
from artcast.wire import Stamp
from tests.harness import ArtcastProcess, Mosquitto, subprocessRun


class URLTests(SynchronousTestCase):
    """
    L{parseMQTTURL} and L{readPasswordFile}.
    """

    def test_defaults(self) -> None:
        """
        C{mqtt://} defaults to port 1883 and C{mqtts://} to 8883, with TLS.
        """
        plain = parseMQTTURL("mqtt://broker.local")
        secure = parseMQTTURL("mqtts://broker.local")
        self.assertEqual((plain.host, plain.port, plain.tls), ("broker.local", 1883, False))
        self.assertEqual((secure.port, secure.tls), (8883, True))

    def test_userAndPassword(self) -> None:
        """
        The URL's user and password are read, and the password is shown
        neither by L{MQTTAddress.url} nor by its C{repr}.
        """
        address = parseMQTTURL("mqtt://sam:s%40cret@127.0.0.1:1999")
        self.assertEqual((address.username, address.password, address.port),
                         ("sam", "s@cret", 1999))
        self.assertEqual(address.url(), "mqtt://sam@127.0.0.1:1999")
        self.assertNotIn("cret", repr(address))

    def test_bad(self) -> None:
        """
        Another scheme, a bad port, no host or a path are refused with a
        sentence that does not hold the password.
        """
        for url in ["http://h", "mqtt://h:0", "mqtt://h:99999", "mqtt://", "mqtt://h/x",
                    "mqtt://u:hunter2@h:x"]:
            with self.assertRaises(ValueError) as caught:
                parseMQTTURL(url)
            self.assertNotIn("hunter2", str(caught.exception))

    def test_passwordFile(self) -> None:
        """
        A password file holds C{USER:PASSWORD} or C{PASSWORD}; more lines,
        none or an empty half are refused.
        """
        self.assertEqual(readPasswordFile(b"sam:pw\n"), ("sam", "pw"))
        self.assertEqual(readPasswordFile(b"pw\n"), (None, "pw"))
        for bad in [b"", b"a\nb\n", b":pw", b"sam:", b"\xff"]:
            self.assertRaises(ValueError, readPasswordFile, bad)

    def test_topicFilters(self) -> None:
        """
        C{+} and C{#} are whole levels, C{#} the last one only.
        """
        for good in ["a/b", "a/+/c", "a/#", "#", "+"]:
            self.assertEqual(checkTopicFilter(good), good)
        for bad in ["", "a/#/c", "a/b#", "a+/b", "a\x00"]:
            self.assertRaises(ValueError, checkTopicFilter, bad)


class OptionsTests(SynchronousTestCase):
    """
    The C{--mqtt} options of C{twistd artcast}.
    """

    def parse(self, *arguments: str) -> Options:
        options = Options()
        options.parseOptions(list(arguments))
        return options

    def test_needsMQTT(self) -> None:
        """
        C{--mqtt-topic} and C{--mqtt-publish} without C{--mqtt} are refused,
        and so is C{--mqtt} with neither.
        """
        self.assertRaises(usage.UsageError, self.parse, "--mqtt-topic", "a/#")
        self.assertRaises(usage.UsageError, self.parse, "--mqtt-publish", "a/...")
        self.assertRaises(usage.UsageError, self.parse, "--mqtt", "mqtt://h")

    def test_badURL(self) -> None:
        """
        A bad URL is one line saying what is wrong.
        """
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--mqtt", "mqtp://h", "--mqtt-topic", "a")
        self.assertEqual(str(caught.exception), "--mqtt: the URL must start mqtt:// or mqtts://")

    def test_badFilterAndPattern(self) -> None:
        """
        A bad topic filter or key pattern is refused.
        """
        self.assertRaises(usage.UsageError, self.parse, "--mqtt", "mqtt://h",
                          "--mqtt-topic", "a/#/b")
        self.assertRaises(usage.UsageError, self.parse, "--mqtt", "mqtt://h",
                          "--mqtt-publish", "a//b")

    def test_passwordFile(self) -> None:
        """
        C{--mqtt-password-file} gives the address its user and password;
        TLS files need C{mqtts://}.
        """
        path = self.mktemp()
        with open(path, "w") as secret:
            secret.write("sam:pw\n")
        options = self.parse("--mqtt", "mqtt://h", "--mqtt-topic", "a/+",
                             "--mqtt-topic", "b/#", "--mqtt-password-file", path)
        address = options["mqtt-address"]
        self.assertEqual((address.username, address.password), ("sam", "pw"))
        self.assertEqual(options["mqtt-topic"], ["a/+", "b/#"])
        self.assertRaises(usage.UsageError, self.parse, "--mqtt", "mqtt://h",
                          "--mqtt-topic", "a", "--mqtt-ca-file", path)


class _Message:
    """
    What paho hands C{on_message}.
    """

    def __init__(self, topic: Any, payload: bytes, retain: bool = False,
                 origin: str | None = None) -> None:
        self._topic = topic
        self.payload = payload
        self.retain = retain
        self.properties = type("P", (), {"UserProperty": [(ORIGIN_PROPERTY, origin)]})() \
            if origin else None

    @property
    def topic(self) -> str:
        if isinstance(self._topic, bytes):
            return self._topic.decode("utf-8")
        return self._topic


class _Outlet:
    src = "me-mqtt"

    def __init__(self) -> None:
        self.seq = 0

    def send(self, key: str, value: object) -> str:
        self.seq += 1
        return f"{self.src}.1.{self.seq}"


class _Client:
    """
    A paho client that records what it is asked to publish.
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool, Any]] = []
        self.subscribed: list[Any] = []
        self._out_packet: list[object] = []

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                properties: Any) -> None:
        self.published.append((topic, payload, retain, properties))

    def subscribe(self, topics: Any) -> None:
        self.subscribed.append(topics)

    def socket(self) -> None:
        return None

    def want_write(self) -> bool:
        return False


class _Reason:
    is_failure = False


class FeedTests(SynchronousTestCase):
    """
    L{MQTTFeed} with a fake client and a memory reactor.
    """

    def feed(self, maxValueSize: int = 100, outbox: int = 3, **kw: Any) -> MQTTFeed:
        self.reactor = MemoryReactorClock()
        self.store = KeyStore(self.reactor)
        self.stats = Stats()
        self.client = _Client()
        feed = MQTTFeed(
            self.store, self.reactor, parseMQTTURL("mqtt://127.0.0.1"),
            ["sensors/#"], kw.pop("patterns", ["lamps/...", "lamps/*"]), _Outlet(),
            maxValueSize, self.stats, client=self.client, outbox=outbox,
            connect=lambda connect: succeed(None),
        )
        feed.startService()
        self.addCleanup(feed.stopService)
        return feed

    def test_payloads(self) -> None:
        """
        A payload that is strict JSON gives its value; anything else, the
        text.
        """
        self.assertEqual(payloadValue('{"a": [1]}'), {"a": [1]})
        self.assertEqual(payloadValue("21.5"), 21.5)
        self.assertEqual(payloadValue("on"), "on")
        self.assertEqual(payloadValue("NaN"), "NaN")
        self.assertEqual(payloadValue("[" * 200 + "]" * 200), "[" * 200 + "]" * 200)

    def test_take(self) -> None:
        """
        A message becomes a datum of the topic's key, stamped through the
        outlet, counted.
        """
        feed = self.feed()
        datum = feed.take(_Message("sensors/temp", b"21.5"))
        self.assertEqual((datum.key, datum.value, datum.source), ("sensors/temp", 21.5, "me-mqtt"))
        self.assertEqual(self.store.latest("sensors/temp"), datum)
        self.assertEqual((feed.counts["taken"], self.stats.datums), (1, 1))

    def test_refused(self) -> None:
        """
        Topics that are not keys, payloads not UTF-8, too large or empty are
        refused for their reason, counted, and the store is untouched.
        """
        feed = self.feed()
        for message, reason in [
            (_Message("sensors//x", b"1"), "badTopic"),
            (_Message("sensors/x/", b"1"), "badTopic"),
            (_Message(b"sensors/\xff", b"1"), "badTopic"),
            (_Message("sensors/x", b"\xff\xfe"), "notUTF8"),
            (_Message("sensors/x", b"x" * 101), "tooLarge"),
            # Not JSON: the text, 101 bytes once quoted.
            (_Message("sensors/x", b"x" * 99), "tooLarge"),
            (_Message("sensors/x", b""), "empty"),
        ]:
            feed._message(self.client, None, message)
            self.assertGreaterEqual(feed.counts[reason], 1, reason)
        self.assertEqual(len(self.store), 0)
        self.assertEqual(feed.counts["received"], 7)
        self.assertEqual(
            sum(feed.counts[r] for r in ("badTopic", "notUTF8", "tooLarge", "empty")), 7
        )
        self.assertRaises(MQTTRefused, feed.take, _Message("a b/", b"1"))

    def test_echo(self) -> None:
        """
        A message carrying the C{artcast-origin} property is dropped and
        counted as an echo, whoever's it is.
        """
        feed = self.feed()
        self.assertIsNone(feed.take(_Message("sensors/x", b"1", origin="other")))
        self.assertEqual((feed.counts["echoes"], len(self.store)), (1, 0))

    def test_retained(self) -> None:
        """
        A retained message is published unless the key's latest datum holds
        its value already.
        """
        feed = self.feed()
        first = feed.take(_Message("sensors/x", b"1", retain=True))
        self.assertIsNotNone(first)
        self.assertIsNone(feed.take(_Message("sensors/x", b"1", retain=True)))
        self.assertEqual(feed.counts["retainedKnown"], 1)
        self.assertIsNotNone(feed.take(_Message("sensors/x", b"2", retain=True)))
        self.assertIsNotNone(feed.take(_Message("sensors/x", b"2")))

    def test_publish(self) -> None:
        """
        Once up, a datum of a key a pattern matches is published once
        (though two patterns match it), retained, with the origin property;
        other keys and the bridge's own datums are not.
        """
        feed = self.feed()
        self.assertEqual(feed.state, "down")
        feed._connected(self.client, None, None, _Reason(), None)
        self.assertEqual(feed.state, "up")
        self.assertEqual(self.client.subscribed, [[("sensors/#", 0)]])
        self.store.publish("lamps/red", {"on": True})
        self.store.publish("sensors/other", 1)
        self.store.publish("lamps/mine", 1, Stamp("me-mqtt", 1, 1, 0.0))
        self.assertEqual(len(self.client.published), 1)
        topic, payload, retain, properties = self.client.published[0]
        self.assertEqual((topic, payload, retain), ("lamps/red", b'{"on":true}', True))
        self.assertEqual(properties.UserProperty, [(ORIGIN_PROPERTY, self.store.instance)])
        self.assertEqual(feed.statistics()["mqtt"]["mqttPublished"], 1)

    def test_outbox(self) -> None:
        """
        While the broker is away datums wait in a bounded outbox, the oldest
        dropped and counted, and are published once it is up.
        """
        feed = self.feed()
        for n in range(5):
            self.store.publish("lamps/red", n)
        self.assertEqual(self.client.published, [])
        self.assertEqual((len(feed.outbox), feed.counts["outboxDropped"]), (3, 2))
        feed._connected(self.client, None, None, _Reason(), None)
        self.assertEqual([p[1] for p in self.client.published], [b"2", b"3", b"4"])
        self.assertEqual(len(feed.outbox), 0)

    def test_backoff(self) -> None:
        """
        A failed connect is tried again after 0.5 s, then 1 s, doubling up
        to 10 s; a connection resets the wait.
        """
        feed = self.feed()
        waits = []
        for _ in range(7):
            (call,) = [c for c in self.reactor.getDelayedCalls()
                       if c.func == feed._tryConnect]
            waits.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(waits[-1])
        self.assertEqual(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertEqual(feed.counts["connectFailures"], 8)
        feed._connected(self.client, None, None, _Reason(), None)
        self.assertEqual(feed._delay, 0.5)

    def test_clientRaises(self) -> None:
        """
        When paho raises while reading, the socket is no longer watched and
        the bridge connects again after the back-off.
        """
        feed = self.feed()
        feed._connected(self.client, None, None, _Reason(), None)
        sock = type("S", (), {"fileno": lambda self: 99})()

        def broken() -> None:
            raise RuntimeError("boom")

        self.client.loop_read = broken  # type: ignore[attr-defined]
        for call in self.reactor.getDelayedCalls():
            call.cancel()
        feed._retry = None
        feed._watch(sock)
        self.assertEqual(self.reactor.readers, {feed._descriptor})
        feed._descriptor.doRead()
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual((feed.state, feed.counts["disconnects"]), ("down", 1))
        self.assertTrue(any(c.func == feed._tryConnect for c in self.reactor.getDelayedCalls()))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


# --- a real broker and a real server ------------------------------------------


class _TestClient:
    """
    A paho client of the test's own, in its own thread (C{loop_start}),
    recording the messages it gets.
    """

    def __init__(self, testCase: Any, port: int, username: str | None = None,
                 password: str | None = None, caFile: str | None = None) -> None:
        self.client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if caFile:
            self.client.tls_set(ca_certs=caFile)
        self.port = port
        self.messages: list[Any] = []
        self.lock = threading.Lock()
        self.client.on_message = self._message
        testCase.addCleanup(self.close)

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append(message)

    @inlineCallbacks
    def connect(self, *topics: str) -> Any:
        yield deferToThread(self.client.connect, "127.0.0.1", self.port, 30)
        self.client.loop_start()
        for topic in topics:
            info = self.client.subscribe(topic, 0)
            self.assertSuccess(info[0])
        # A round trip, so the subscriptions are in place.
        yield self.publish("test-client/ping", b"1")

    def assertSuccess(self, code: Any) -> None:
        if code != 0:
            raise AssertionError(f"paho: {code}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Deferred[Any]:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return deferToThread(info.wait_for_publish, 5)

    @inlineCallbacks
    def waitFor(self, count: int, limit: float = 10.0) -> Any:
        deadline = reactor.seconds() + limit
        while True:
            with self.lock:
                got = [m for m in self.messages if m.topic != "test-client/ping"]
            if len(got) >= count:
                returnValue(got)
            if reactor.seconds() > deadline:
                raise AssertionError(f"{len(got)} messages, not {count}")
            yield deferLater(reactor, 0.02, lambda: None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@inlineCallbacks
def _get(url: str) -> Any:
    response = yield treq.get(url, persistent=False)
    body = yield response.content()
    returnValue((response.code, body))


class BridgeTests(TestCase):
    """
    A real C{twistd artcast} bridged to a real C{mosquitto}.
    """

    timeout = 30

    skip = Mosquitto.missing()

    @inlineCallbacks
    def start(self, *extra: str, broker: Mosquitto | None = None) -> Any:
        self.broker = broker or Mosquitto(self)
        if self.broker.pid is None:
            yield self.broker.start()
        self.server = ArtcastProcess(
            self, ["--mqtt", self.broker.url, "--max-value-size", "1000", *extra]
        )
        yield self.server.start()
        yield self.up()

    def up(self) -> Any:
        return self.server.waitFor(lambda s: s["mqtt"]["mqttState"] == "up")

    @inlineCallbacks
    def test_messagesBecomeDatums(self) -> None:
        """
        A retained message sent before the server started is the key's
        current value at once, and a later message wakes a long poll, as
        JSON when it parses, else text.
        """
        broker = Mosquitto(self)
        yield broker.start()
        device = _TestClient(self, broker.port)
        yield device.connect()
        yield device.publish("sensors/temp", b"21.5", retain=True)
        yield self.start("--mqtt-topic", "sensors/#", broker=broker)
        code, body = yield _get(self.server.url + "/artcasts/sensors/temp?since=latest")
        self.assertEqual((code, json.loads(body)), (200, 21.5))
        poll = _get(self.server.url + "/artcasts/sensors/name")
        yield self.server.waitForWaiters(1)
        yield device.publish("sensors/name", b"hall lamp")
        code, body = yield poll
        self.assertEqual((code, json.loads(body)), (200, "hall lamp"))

    @inlineCallbacks
    def test_datumsGoToBroker(self) -> None:
        """
        A multicast datum of a key C{--mqtt-publish} matches reaches an MQTT
        subscriber, retained, with the origin property; with a topic filter
        that overlaps the pattern, it comes back as an echo, counted, and
        is not taken in again; a device's message is taken in once and not
        published back.
        """
        yield self.start("--mqtt-topic", "lamps/#", "--mqtt-publish", "lamps/...")
        watcher = _TestClient(self, self.broker.port)
        yield watcher.connect("lamps/#")
        self.server.data.sendDatum("lamps/hall", {"on": True})
        (message,) = yield watcher.waitFor(1)
        self.assertEqual((message.topic, message.payload), ("lamps/hall", b'{"on":true}'))
        self.assertIn(ORIGIN_PROPERTY, dict(message.properties.UserProperty))
        stats = yield self.server.waitFor(lambda s: s["mqtt"]["mqttEchoes"] >= 1)
        self.assertEqual(stats["mqtt"]["mqttTaken"], 0)
        self.assertEqual(stats["datums"], 1)
        yield watcher.publish("lamps/porch", b"off")
        stats = yield self.server.waitFor(lambda s: s["mqtt"]["mqttTaken"] == 1)
        self.assertEqual((stats["datums"], stats["mqtt"]["mqttPublished"]), (2, 1))
        code, body = yield _get(self.server.url + "/artcasts/lamps/porch?since=latest")
        self.assertEqual(json.loads(body), "off")
        # A late subscriber gets the retained value at once.
        late = _TestClient(self, self.broker.port)
        yield late.connect("lamps/hall")
        (retained,) = yield late.waitFor(1)
        self.assertTrue(retained.retain)
        messages = yield watcher.waitFor(2)
        self.assertEqual([m.topic for m in messages], ["lamps/hall", "lamps/porch"])

    @inlineCallbacks
    def test_badInput(self) -> None:
        """
        Topics that are not keys, payloads not UTF-8, too large or empty are
        counted in C{/stats}, and the server goes on serving.
        """
        yield self.start("--mqtt-topic", "#")
        device = _TestClient(self, self.broker.port)
        yield device.connect()
        yield device.publish("bad//topic", b"1")
        yield device.publish("bin/x", b"\xff\xfe\x00")
        yield device.publish("big/x", b"x" * 2000)
        yield device.publish("empty/x", b"")
        yield device.publish("good/x", b"[1,2]")
        stats = yield self.server.waitFor(lambda s: s["mqtt"]["mqttTaken"] >= 2)
        mqtt = stats["mqtt"]
        self.assertEqual(
            (mqtt["mqttBadTopic"], mqtt["mqttNotUTF8"], mqtt["mqttTooLarge"], mqtt["mqttEmpty"]),
            (1, 1, 1, 1),
        )
        code, body = yield _get(self.server.url + "/artcasts/good/x?since=latest")
        self.assertEqual((code, json.loads(body)), (200, [1, 2]))
        code, metrics = yield _get(self.server.url + "/metrics")
        self.assertIn(b"artcast_mqtt_bad_topic_total 1.0", metrics)
        self.assertIn(b"artcast_mqtt_up 1.0", metrics)

    @inlineCallbacks
    def test_brokerRestart(self) -> None:
        """
        A broker killed and started again on the same port: the bridge says
        it is down, connects again and data flows again.
        """
        yield self.start("--mqtt-topic", "sensors/#")
        yield self.broker.kill()
        yield self.server.waitFor(lambda s: s["mqtt"]["mqttState"] != "up")
        yield self.broker.start()
        stats = yield self.server.waitFor(
            lambda s: s["mqtt"]["mqttState"] == "up", limit=15
        )
        self.assertEqual(stats["mqtt"]["mqttReconnects"], 1)
        device = _TestClient(self, self.broker.port)
        yield device.connect()
        yield device.publish("sensors/after", b"1")
        yield self.server.waitFor(lambda s: s["mqtt"]["mqttTaken"] == 1)
        self.assertIn("cannot be reached", self.server.output)

    @inlineCallbacks
    def test_passwordFile(self) -> None:
        """
        With C{--mqtt-password-file} the bridge logs in to a broker that
        refuses anonymous clients; the password is never in its output.
        """
        broker = Mosquitto(self, passwords={"artcast": "s3cret-pw", "device": "d-pw"})
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as file:
            file.write("artcast:s3cret-pw\n")
        yield self.start("--mqtt-topic", "sensors/#", "--mqtt-password-file", secret,
                         broker=broker)
        device = _TestClient(self, broker.port, "device", "d-pw")
        yield device.connect()
        yield device.publish("sensors/locked", b"1")
        yield self.server.waitFor(lambda s: s["mqtt"]["mqttTaken"] == 1)
        self.assertNotIn("s3cret-pw", self.server.output)

    @inlineCallbacks
    def test_tls(self) -> None:
        """
        C{mqtts://} with C{--mqtt-ca-file}: the bridge checks the broker's
        certificate against the CA and messages flow over TLS.
        """
        if shutil.which("openssl") is None:
            raise self.skipTest("openssl is not installed")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ca, cert, key = (os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem"))
        caKey, request = os.path.join(directory, "ca.key"), os.path.join(directory, "req.csr")
        extensions = os.path.join(directory, "ext.cnf")
        with open(extensions, "w") as text:
            text.write("subjectAltName=IP:127.0.0.1\n")
        for command in [
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", caKey, "-out", ca, "-subj", "/CN=artcast test CA"],
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", request, "-subj", "/CN=127.0.0.1"],
            ["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", caKey,
             "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", extensions],
        ]:
            yield deferToThread(subprocessRun, command)
        broker = Mosquitto(self, tls=(cert, key))
        yield self.start("--mqtt-topic", "sensors/#", "--mqtt-ca-file", ca, broker=broker)
        device = _TestClient(self, broker.port, caFile=ca)
        yield device.connect()
        yield device.publish("sensors/secure", b'"yes"')
        yield self.server.waitFor(lambda s: s["mqtt"]["mqttTaken"] == 1)
        code, body = yield _get(self.server.url + "/artcasts/sensors/secure?since=latest")
        self.assertEqual(json.loads(body), "yes")
