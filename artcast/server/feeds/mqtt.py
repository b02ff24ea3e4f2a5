# -*- test-case-name: tests.test_mqtt -*-
"""
The MQTT bridge (C{--mqtt URL}): MQTT messages become datums, and datums
become MQTT messages.

B{In.}  The bridge subscribes to each C{--mqtt-topic} filter.  A message's
topic is the datum's key (it must be a valid key: L{validateKey}); its
payload, UTF-8, is the value: JSON when it parses as strict JSON, else the
text.  An empty payload (MQTT's way to delete a retained message), a topic
that is not a key, a payload that is not UTF-8 or is larger than
C{--max-value-size} are counted, logged at a bounded rate and dropped.  A
retained message gives the key's current value: it is published unless the
store's latest datum of the key already holds that value (a reconnect
replays every retained message).  Each datum is stamped as a version 2
source of the bridge's own, C{<instance>-mqtt}, sent to the data group
through the bridge's outlet (so every server on the group has it with the
same id) and put in the store, as L{artcast.server.feeds.publish} does.

B{Out.}  Every datum the store takes for a key a C{--mqtt-publish} pattern
matches, whatever its feed, is published to the broker under the topic of
its key, the payload being the value's compact JSON text, QoS 0, retained
(so that a device subscribing later gets the current value at once).  While
the broker is away, what is to be published waits in a bounded outbox; past
its bound the oldest is dropped, and counted.

B{Loops.}  A datum of the bridge's own source is never published back.
Every message the bridge publishes carries the MQTT 5 user property
C{artcast-origin} (the server's instance name), and every message that
arrives with that property is dropped and counted (C{mqttEchoes}): the
bridge's own messages coming back through an overlapping filter, their
retained copies, and those of other Artcast servers' bridges on the same
broker.

B{The client.}  paho-mqtt (the Eclipse project's client: maintained,
widely used, MQTT 5 and TLS) driven by the reactor through its external
loop API: the reactor watches paho's socket (L{_PahoSocket}) and calls
C{loop_read} and C{loop_write}, a L{LoopingCall} calls C{loop_misc} (keep
alive) each second.  Only paho's connect (TCP, then the TLS handshake)
blocks: it runs in the reactor's thread pool (L{deferToThread}), and
nothing else touches the client until it returns; the socket is watched
from then on.  When the broker goes away the bridge connects again after a
back-off (0.5 s, doubled up to 10 s), says so once per outage, and counts.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import Any, Callable, Sequence
from urllib.parse import unquote, urlsplit

import attr
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from artcast.server.defaults import (
    DEFAULT_MQTT_BACKOFF,
    DEFAULT_MQTT_KEEPALIVE,
    DEFAULT_MQTT_MAX_BACKOFF,
    DEFAULT_MQTT_OUTBOX,
    DEFAULT_MQTT_OUTBOX_BYTES,
)
from artcast.server.interfaces import IFeed, IOutlet
from artcast.server.logs import RateLimitedLog
from artcast.server.store import Datum, KeyStore
from artcast.wire import (
    BadDatagram,
    BadKey,
    DatumId,
    Stamp,
    encodeJSON,
    loadJSON,
    validateKey,
    valueTooDeep,
)

__all__ = [
    "ORIGIN_PROPERTY",
    "MQTTAddress",
    "MQTTFeed",
    "MQTTRefused",
    "checkTopicFilter",
    "parseMQTTURL",
    "payloadValue",
    "readPasswordFile",
]

#: The MQTT 5 user property naming the Artcast server that published a
#: message; a message carrying it is never taken in.
ORIGIN_PROPERTY = "artcast-origin"

#: Packets paho may hold unwritten at once; the rest wait in the outbox.
_MAX_UNWRITTEN = 256


@attr.s(frozen=True, auto_attribs=True)
class MQTTAddress:
    """
    Where the broker is, from C{--mqtt URL} (L{parseMQTTURL}).

    @ivar password: never shown: not in C{repr}, not in L{url}.
    """

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = attr.ib(default=None, repr=False)

    def url(self) -> str:
        """
        The URL without the password, to show in logs and C{/stats}.
        """
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"

    def withPassword(self, username: str | None, password: str) -> MQTTAddress:
        """
        The same address with the user and password of a password file.

        @param username: the file's user, or L{None} to keep the URL's.
        """
        return attr.evolve(self, username=username or self.username, password=password)


def parseMQTTURL(url: str) -> MQTTAddress:
    """
    Read C{mqtt://[USER[:PASSWORD]@]HOST[:PORT]} (port 1883) or
    C{mqtts://...} (TLS, port 8883).

    @raise ValueError: with a sentence that never holds the password.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("the URL must start mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the URL is mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT], nothing after")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    host = parts.hostname
    if not host:
        raise ValueError("the URL names no host")
    tls = parts.scheme == "mqtts"
    if port is None:
        port = 8883 if tls else 1883
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError("a password in the URL needs a user before it")
    return MQTTAddress(host, port, tls, username, password)


def readPasswordFile(contents: bytes) -> tuple[str | None, str]:
    """
    Read C{--mqtt-password-file}: one line, C{USER:PASSWORD} or C{PASSWORD}.

    @return: the user (L{None} when the file names none) and the password.
    @raise ValueError: for a file that is not UTF-8 or holds no password.
    """
    try:
        text = contents.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the password file is not UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError("the password file must hold one line, USER:PASSWORD or PASSWORD")
    line = lines[0].strip()
    username, colon, password = line.partition(":")
    if not colon:
        return None, line
    if not username or not password:
        raise ValueError("the password file's line is USER:PASSWORD or PASSWORD")
    return username, password


def checkTopicFilter(topicFilter: str) -> str:
    """
    Check an MQTT topic filter (C{--mqtt-topic}): not empty, C{+} only as a
    whole level, C{#} only as the whole last level.

    @raise ValueError: saying what is wrong.
    """
    if not topicFilter or len(topicFilter.encode("utf-8")) > 65535:
        raise ValueError("a topic filter is 1 to 65535 bytes")
    if "\x00" in topicFilter:
        raise ValueError("a topic filter holds no NUL character")
    levels = topicFilter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"{topicFilter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"{topicFilter!r}: '+' must be a whole level")
    return topicFilter


def payloadValue(text: str) -> object:
    """
    The value of a message's payload (UTF-8 text): the JSON value when it
    is strict JSON no deeper than a datum may nest, else the text itself.
    """
    try:
        value = loadJSON(text)
    except BadDatagram:
        return text
    if valueTooDeep(text):
        return text
    return value


class MQTTRefused(Exception):
    """
    A message not taken in.

    @ivar reason: the counter it is counted under (C{badTopic}, C{notUTF8},
        C{tooLarge}, C{empty}, C{echoes}).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """
    paho's socket as the reactor sees it: readable means C{loop_read},
    writable C{loop_write}.  Should paho raise, C{failed} is called (the
    bridge drops the connection and connects again) instead of the reactor
    being left watching a socket paho still thinks is fine.
    """

    def __init__(self, client: Any, sock: Any, failed: Callable[[], None]) -> None:
        self.client = client
        self.sock = sock
        self.failed = failed

    def fileno(self) -> int:
        try:
            return self.sock.fileno()
        except OSError:
            return -1

    def logPrefix(self) -> str:
        return "mqtt"

    def doRead(self) -> None:
        try:
            self.client.loop_read()
            # TLS may hold decrypted bytes the socket no longer signals.
            pending = getattr(self.sock, "pending", None)
            for _ in range(1000):
                if pending is None or self.client.socket() is not self.sock or not pending():
                    break
                self.client.loop_read()
        except Exception:
            MQTTFeed.log.failure("mqtt: reading from the broker failed")
            self.failed()

    def doWrite(self) -> None:
        try:
            self.client.loop_write()
        except Exception:
            MQTTFeed.log.failure("mqtt: writing to the broker failed")
            self.failed()

    def connectionLost(self, reason: object) -> None:
        pass


@implementer(IFeed)
class MQTTFeed(MultiService):
    """
    The MQTT bridge: a feed of the messages of C{topics}, and a way out for
    the datums of keys C{patterns} match.

    A service; the server makes the outlet its child, so that it starts
    and stops with the bridge.

    @ivar state: C{"down"}, C{"connecting"} or C{"up"}.
    """

    name = "mqtt"
    log = Logger()

    def __init__(
        self,
        store: KeyStore,
        reactor: Any,
        address: MQTTAddress,
        topics: Sequence[str],
        patterns: Sequence[str],
        outlet: IOutlet | None,
        maxValueSize: int,
        stats: Any = None,
        tlsFiles: tuple[str | None, str | None, str | None] | None = None,
        client: Any = None,
        outbox: int = DEFAULT_MQTT_OUTBOX,
        outboxBytes: int = DEFAULT_MQTT_OUTBOX_BYTES,
        backoff: float = DEFAULT_MQTT_BACKOFF,
        maxBackoff: float = DEFAULT_MQTT_MAX_BACKOFF,
        keepalive: int = DEFAULT_MQTT_KEEPALIVE,
        connect: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        """
        @param reactor: watches the client's socket, gives the time.
        @param address: the broker (L{parseMQTTURL}).
        @param topics: MQTT topic filters whose messages become datums.
        @param patterns: key patterns whose datums are published.
        @param outlet: sends the datums taken from MQTT to the data group
            (a L{artcast.server.outlets.multicast.MulticastOutlet} named
            C{<instance>-mqtt}); L{None} to only put them in the store,
            stamped with the store's own ids.
        @param stats: the server's L{artcast.server.stats.Stats}.
        @param tlsFiles: C{(CA file, certificate file, key file)} for
            C{mqtts://}.
        @param client: a paho client (a fake in tests); by default one is
            made for MQTT 5.
        @param connect: runs paho's blocking connect and gives a
            L{Deferred}; by default L{deferToThread}.
        """
        super().__init__()
        self.store = store
        self.reactor = reactor
        self.address = address
        self.url = address.url()
        self.topics = list(topics)
        self.patterns = list(patterns)
        self.outlet = outlet
        self.maxValueSize = maxValueSize
        self.stats = stats
        self.origin = store.instance
        self.source = getattr(outlet, "src", None)
        self.outboxLimit = outbox
        self.outboxBytesLimit = outboxBytes
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self.keepalive = keepalive
        self._connect = connect if connect is not None else deferToThread
        self.state = "down"
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.outboxBytes = 0
        self.counts = {
            "received": 0,
            "taken": 0,
            "retainedKnown": 0,
            "published": 0,
            "badTopic": 0,
            "notUTF8": 0,
            "tooLarge": 0,
            "empty": 0,
            "echoes": 0,
            "outboxDropped": 0,
            "connects": 0,
            "reconnects": 0,
            "disconnects": 0,
            "connectFailures": 0,
        }
        self._delay = backoff
        self._retry: Any = None
        self._connecting: Any = None
        self._descriptor: _PahoSocket | None = None
        self._writing = False
        self._subscriptions: list[Any] = []
        self._lastSent: str | None = None
        self._outage = False
        self._badLog = RateLimitedLog(self.log, reactor, what="MQTT messages dropped")
        self._outboxLog = RateLimitedLog(self.log, reactor, what="MQTT outbox drops")
        self._misc = LoopingCall(self._loopMisc)
        self._misc.clock = reactor
        self._properties = Properties(PacketTypes.PUBLISH)
        self._properties.UserProperty = (ORIGIN_PROPERTY, self.origin)
        self.client = client if client is not None else self._makeClient(tlsFiles)

    # --- the client ------------------------------------------------------------

    def _makeClient(self, tlsFiles: tuple[str | None, str | None, str | None] | None) -> Client:
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"artcast-{self.origin}",
            protocol=MQTTv5,
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            ca, cert, key = tlsFiles or (None, None, None)
            client.tls_set(
                ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED
            )
        return client

    def _hook(self) -> None:
        client = self.client
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_socket_open = self._socketOpen
        client.on_socket_close = self._socketClose
        client.on_socket_register_write = self._registerWrite
        client.on_socket_unregister_write = self._unregisterWrite

    def _socketOpen(self, client: Any, userdata: Any, sock: Any) -> None:
        # During a connect, in the thread: watched once the connect returns.
        if isInIOThread():
            self._watch(sock)

    def _watch(self, sock: Any) -> None:
        self._unwatch()
        self._descriptor = _PahoSocket(self.client, sock, self._failed)
        self.reactor.addReader(self._descriptor)
        if self.client.want_write():
            self._registerWrite(self.client, None, sock)

    def _failed(self) -> None:
        """
        paho raised while reading or writing: stop watching its socket and
        connect again (paho's reconnect closes the old socket).
        """
        self._unwatch()
        if self.state == "up":
            self.counts["disconnects"] += 1
        if self.running:
            self._down("the connection failed")

    def _unwatch(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            self.reactor.removeReader(descriptor)
            if self._writing:
                self.reactor.removeWriter(descriptor)
        self._writing = False

    def _socketClose(self, client: Any, userdata: Any, sock: Any) -> None:
        if isInIOThread() and self._descriptor is not None and self._descriptor.sock is sock:
            self._unwatch()

    def _registerWrite(self, client: Any, userdata: Any, sock: Any) -> None:
        if isInIOThread() and self._descriptor is not None and not self._writing:
            self._writing = True
            self.reactor.addWriter(self._descriptor)

    def _unregisterWrite(self, client: Any, userdata: Any, sock: Any) -> None:
        if isInIOThread() and self._descriptor is not None and self._writing:
            self._writing = False
            self.reactor.removeWriter(self._descriptor)
            # Room again in paho's queue.
            self._flush()

    def _loopMisc(self) -> None:
        if self._connecting is None and self.client.socket() is not None:
            self.client.loop_misc()

    # --- the service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._hook()
        for pattern in self.patterns:
            self._subscriptions.append(self.store.subscribe(pattern, self._local))
        self._misc.start(1.0, now=False)
        self._tryConnect()

    def stopService(self) -> Any:
        for subscription in self._subscriptions:
            subscription.cancel()
        del self._subscriptions[:]
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._misc.running:
            self._misc.stop()
        stopping = super().stopService()
        if self._connecting is not None:
            # The connect must end before the client is closed: a bounded
            # wait (paho's connect timeout, then the TLS handshake's).
            connecting = self._connecting
            connecting.addBoth(lambda _: self._close())
            return connecting.addBoth(lambda _: stopping)
        self._close()
        return stopping

    def _close(self) -> None:
        self.state = "down"
        if self.client.socket() is not None:
            try:
                self.client.disconnect()
                self.client.loop_write()
            except Exception:
                pass
        self._unwatch()

    # --- connecting ------------------------------------------------------------

    def _tryConnect(self) -> None:
        self._retry = None
        if not self.running:
            return
        self.state = "connecting"
        client = self.client
        first = self.counts["connects"] + self.counts["connectFailures"] == 0

        def connect() -> Any:
            if first:
                return client.connect(
                    self.address.host, self.address.port, keepalive=self.keepalive,
                    clean_start=True,
                )
            return client.reconnect()

        self._connecting = self._connect(connect)
        self._connecting.addCallbacks(self._connectReturned, self._connectFailed)

    def _connectReturned(self, result: object) -> None:
        self._connecting = None
        if not self.running:
            return
        sock = self.client.socket()
        if sock is None:
            self._connectFailed(None)
            return
        self._watch(sock)

    def _connectFailed(self, failure: Any) -> None:
        self._connecting = None
        self.counts["connectFailures"] += 1
        if not self.running:
            return
        self._down(failure.getErrorMessage() if failure is not None else "no socket")

    def _down(self, why: str) -> None:
        self.state = "down"
        if not self._outage:
            self._outage = True
            self.log.warn(
                "mqtt: the broker {url} cannot be reached ({why}); trying again "
                "every {most} seconds at most", url=self.url, why=why, most=self.maxBackoff,
            )
        if self.running and self._retry is None:
            self._retry = self.reactor.callLater(self._delay, self._tryConnect)
            self._delay = min(self._delay * 2, self.maxBackoff)

    def _connected(
        self, client: Any, userdata: Any, flags: Any, reasonCode: Any, properties: Any
    ) -> None:
        if getattr(reasonCode, "is_failure", False):
            # paho closes the connection: _disconnected follows.
            self._badLog.error(
                "mqtt: the broker {url} refused the connection: {reason}",
                url=self.url, reason=str(reasonCode),
            )
            return
        if self.counts["connects"]:
            self.counts["reconnects"] += 1
        self.counts["connects"] += 1
        self.state = "up"
        self._delay = self.backoff
        if self._outage:
            self.log.info("mqtt: connected to {url} again", url=self.url)
        else:
            self.log.info("mqtt: connected to {url}", url=self.url)
        self._outage = False
        if self.topics:
            client.subscribe([(topic, 0) for topic in self.topics])
        self._flush()

    def _disconnected(
        self, client: Any, userdata: Any, flags: Any, reasonCode: Any, properties: Any
    ) -> None:
        wasUp = self.state == "up"
        if wasUp:
            self.counts["disconnects"] += 1
        self._unwatch()
        if not self.running:
            self.state = "down"
            return
        self._down(str(reasonCode))

    # --- in --------------------------------------------------------------------

    def _message(self, client: Any, userdata: Any, message: MQTTMessage) -> None:
        self.counts["received"] += 1
        try:
            self.take(message)
        except MQTTRefused as refused:
            self.counts[refused.reason] += 1
            self._badLog.warn(
                "mqtt: dropped a message of {url}: {why}", url=self.url, why=str(refused)
            )
        except Exception:
            # Never out into paho's loop_read, and from there the reactor's.
            self.log.failure("mqtt: a message of {url} failed", url=self.url)

    def take(self, message: Any) -> Datum | None:
        """
        Take in one message: publish its datum (see the module's
        docstring).

        @return: the datum, or L{None} for a retained message whose value
            the key holds already (or one the store could not hold).
        @raise MQTTRefused: for a message dropped.
        """
        properties = getattr(message, "properties", None)
        for name, _ in getattr(properties, "UserProperty", None) or ():
            if name == ORIGIN_PROPERTY:
                # Not logged: expected wherever filters and patterns overlap.
                self.counts["echoes"] += 1
                return None
        try:
            key = message.topic
        except UnicodeDecodeError:
            raise MQTTRefused("badTopic", "a topic that is not UTF-8") from None
        try:
            validateKey(key)
        except BadKey as error:
            raise MQTTRefused("badTopic", f"topic {key[:100]!r} is not a key: {error}") from None
        payload = message.payload
        if not payload:
            raise MQTTRefused("empty", f"an empty payload on {key!r} (ignored)")
        if len(payload) > self.maxValueSize:
            raise MQTTRefused(
                "tooLarge", f"{len(payload)} bytes on {key!r}, more than {self.maxValueSize}"
            )
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise MQTTRefused("notUTF8", f"a payload on {key!r} that is not UTF-8") from None
        value = payloadValue(text)
        try:
            encoded = encodeJSON(value, strict=True)
        except ValueError:
            value = text
            encoded = encodeJSON(text)
        if len(encoded) > self.maxValueSize:
            raise MQTTRefused(
                "tooLarge", f"a value of {len(encoded)} bytes on {key!r}, more than "
                f"{self.maxValueSize}"
            )
        if message.retain:
            latest = self.store.latest(key)
            if latest is not None and latest.json == encoded:
                self.counts["retainedKnown"] += 1
                return None
        stamp = None
        if self.outlet is not None:
            try:
                datumId = self.outlet.send(key, value)
            except (RuntimeError, ValueError) as error:
                raise MQTTRefused("tooLarge", f"{key!r} cannot be sent: {error}") from None
            source, boot, seq = DatumId.parse(datumId)
            stamp = Stamp(source, boot, seq, self.reactor.seconds())
        datum = self.store.publish(key, value, stamp)
        if datum is None:
            raise MQTTRefused("tooLarge", f"a value on {key!r} larger than the store")
        self.counts["taken"] += 1
        if self.stats is not None:
            self.stats.datums += 1
        return datum

    # --- out -------------------------------------------------------------------

    def _local(self, datum: Datum) -> None:
        """
        A datum of a key a pattern matches: to the broker, unless it came
        from MQTT (or was sent already, for a key two patterns match).
        """
        datumId = datum.id
        if datum.source == self.source or datumId == self._lastSent:
            return
        self._lastSent = datumId
        self.queue(datum.key, datum.json)

    def queue(self, topic: str, payload: bytes) -> None:
        """
        Publish C{payload} under C{topic} now, or once the broker is up;
        past the outbox's bounds the oldest waiting is dropped, and counted.
        """
        self.outbox.append((topic, payload))
        self.outboxBytes += len(topic) + len(payload)
        dropped = 0
        while len(self.outbox) > 1 and (
            len(self.outbox) > self.outboxLimit or self.outboxBytes > self.outboxBytesLimit
        ):
            oldTopic, oldPayload = self.outbox.popleft()
            self.outboxBytes -= len(oldTopic) + len(oldPayload)
            dropped += 1
        if dropped:
            self.counts["outboxDropped"] += dropped
            self._outboxLog.warn(
                "mqtt: the outbox is full ({count} messages) while {url} is {state}: "
                "dropped the oldest", count=len(self.outbox), url=self.url, state=self.state,
            )
        self._flush()

    def _unwritten(self) -> int:
        # paho's queue of packets not yet written (no public accessor).
        return len(getattr(self.client, "_out_packet", ()))

    def _flush(self) -> None:
        if self.state != "up":
            return
        client = self.client
        while self.outbox and self._unwritten() < _MAX_UNWRITTEN:
            topic, payload = self.outbox.popleft()
            self.outboxBytes -= len(topic) + len(payload)
            client.publish(topic, payload, qos=0, retain=True, properties=self._properties)
            self.counts["published"] += 1

    # --- figures ---------------------------------------------------------------

    def statistics(self) -> dict[str, object]:
        """
        The C{"mqtt"} figures of C{/stats}.
        """
        counts = self.counts
        return {
            "mqtt": {
                "mqttURL": self.url,
                "mqttState": self.state,
                "mqttTopics": list(self.topics),
                "mqttPublishPatterns": list(self.patterns),
                "mqttReceived": counts["received"],
                "mqttTaken": counts["taken"],
                "mqttRetainedKnown": counts["retainedKnown"],
                "mqttPublished": counts["published"],
                "mqttBadTopic": counts["badTopic"],
                "mqttNotUTF8": counts["notUTF8"],
                "mqttTooLarge": counts["tooLarge"],
                "mqttEmpty": counts["empty"],
                "mqttEchoes": counts["echoes"],
                "mqttOutbox": len(self.outbox),
                "mqttOutboxDropped": counts["outboxDropped"],
                "mqttConnects": counts["connects"],
                "mqttReconnects": counts["reconnects"],
                "mqttDisconnects": counts["disconnects"],
                "mqttConnectFailures": counts["connectFailures"],
            }
        }
