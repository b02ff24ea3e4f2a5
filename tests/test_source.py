"""
Tests for L{artcast.source} (L{Source}, L{SourceService}) and for
C{sources/test-sources.py}.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import random
import socket
import struct
import threading
import weakref
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import artcast.source
from artcast.repair import HOLDBACK
from artcast.source import (
    DEFAULT_GROUPS,
    DEFAULT_REGISTER_GROUPS,
    Source,
    SourceService,
    defaultSourceName,
)
from artcast.server.outlets.multicast import MulticastOutlet
from artcast.server.feeds.reception import (
    Reassembler,
)
from artcast.wire import (
    BadDatagram,
    BadKey,
    Batch,
    Confirm,
    DataMessage,
    Fragment,
    RegisterMessage,
    Heartbeat,
    Stamp,
    encodeNack,
    parseData,
    parseRegister,
    validateSource,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP_A = ("239.255.1.1", 15007)
GROUP_B = ("239.255.1.2", 15017)
REGISTER = ("239.255.1.1", 15008)

#: How long a test waits for a datagram on loopback, in seconds.
RECEIVE_LIMIT = 5.0


def randomGroup() -> str:
    """
    A random group in 239.255.0.0/16.
    """
    return "239.255.%d.%d" % (random.randint(0, 255), random.randint(1, 254))


def _isHeartbeat(data: bytes) -> bool:
    """
    Is C{data} a source's heartbeat?
    """
    try:
        return isinstance(parseData(data), Heartbeat)
    except BadDatagram:
        return False


class MulticastReceiver:
    """
    A blocking socket joined to a random group on 127.0.0.1, on a free port,
    that gives up after L{RECEIVE_LIMIT} seconds.
    """

    def __init__(self) -> None:
        self.group = randomGroup()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("0.0.0.0", 0))
        self.port = self.socket.getsockname()[1]
        self.socket.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                               socket.inet_aton(self.group) + socket.inet_aton("127.0.0.1"))
        self.socket.settimeout(RECEIVE_LIMIT)

    @property
    def address(self) -> tuple[str, int]:
        return (self.group, self.port)

    def receive(self, count: int = 1) -> list[bytes]:
        """
        The next C{count} datagrams but heartbeats (a repairing source
        heartbeats when it starts and when idle), C{socket.timeout} if they
        do not come.
        """
        received: list[bytes] = []
        for _ in range(count + 20):
            if len(received) == count:
                break
            data = self.socket.recv(65536)
            if not _isHeartbeat(data):
                received.append(data)
        return received

    def close(self) -> None:
        self.socket.close()


class FakeSocket:
    """
    Records what a L{Source} does to its socket; datagrams put in C{inbox}
    are what it reads.
    """

    def __init__(self, failFor: tuple[str, int] | None = None) -> None:
        self.options: dict[tuple[int, int], bytes] = {}
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.inbox: list[bytes] = []
        self.failFor = failFor
        self.closed = False

    def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        if not self.inbox:
            raise BlockingIOError()
        return self.inbox.pop(0), ("127.0.0.1", 5007)

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        self.options[level, option] = value

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if address == self.failFor:
            raise OSError(101, "Network is unreachable")
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True

    def to(self, address: tuple[str, int]) -> list[bytes]:
        """
        The datagrams sent to C{address}, in order.
        """
        return [data for data, where in self.sent if where == address]


class FakeTime:
    """
    A clock whose sleep moves it forward.
    """

    def __init__(self, now: float = 1795312345.123) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class SourceTests(SynchronousTestCase):
    """
    The blocking L{Source} without repair (C{repair=False}, exactly the
    datagrams and timing of a source before repair; L{RepairSourceTests}
    has the rest).
    """

    def setUp(self) -> None:
        self.socket = FakeSocket()
        self.time = FakeTime()
        self.source = self.makeSource()

    def makeSource(self, **kwargs: Any) -> Source:
        """
        A source named C{oslo-station} sending to groups A and B, on fakes.
        """
        arguments: dict[str, Any] = dict(
            src="oslo-station", groups=[GROUP_A, GROUP_B], registerGroups=[REGISTER],
            now=self.time, sleep=self.time.sleep, sock=self.socket, repair=False,
        )
        arguments.update(kwargs)
        return Source(**arguments)

    def test_socketOptions(self) -> None:
        """
        The socket gets the TTL, loopback on and, when given, the interface.
        """
        self.makeSource(ttl=0, interface="127.0.0.1")
        self.assertEqual(self.socket.options, {
            (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL): struct.pack("B", 0),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP): struct.pack("B", 1),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_IF): socket.inet_aton("127.0.0.1"),
        })

    def test_defaults(self) -> None:
        """
        By default a source sends with TTL 1, no chosen interface, to
        224.1.1.1 ports 5007 and 5008.
        """
        sock = FakeSocket()
        source = Source(now=self.time, sock=sock)
        self.assertEqual(sock.options[socket.IPPROTO_IP, socket.IP_MULTICAST_TTL],
                         struct.pack("B", 1))
        self.assertNotIn((socket.IPPROTO_IP, socket.IP_MULTICAST_IF), sock.options)
        source.register("a")
        source.send("a", 1)
        self.assertEqual([where for _, where in sock.sent],
                         [DEFAULT_REGISTER_GROUPS[0], DEFAULT_GROUPS[0]])
        self.assertEqual(DEFAULT_GROUPS, (("224.1.1.1", 5007),))
        self.assertEqual(DEFAULT_REGISTER_GROUPS, (("224.1.1.1", 5008),))

    def test_send(self) -> None:
        """
        Each datum goes to every group as a version 2 datagram; seq counts
        datums across keys from 1 and boot is the start time in ms.
        """
        self.assertEqual(self.source.send("a/b", {"x": 1}), "oslo-station.1795312345123.1")
        self.time.now += 1.5
        self.assertEqual(self.source.send("c", [None]), "oslo-station.1795312345123.2")
        for group in (GROUP_A, GROUP_B):
            self.assertEqual([parseData(d) for d in self.socket.to(group)], [
                DataMessage("a/b", {"x": 1}, Stamp("oslo-station", 1795312345123, 1,
                                                   1795312345.123)),
                DataMessage("c", [None], Stamp("oslo-station", 1795312345123, 2,
                                               1795312346.623)),
            ])
        self.assertEqual(self.source.boot, 1795312345123)
        self.assertEqual(self.source.src, "oslo-station")

    def test_badDatum(self) -> None:
        """
        A bad key or value raises L{ValueError}, sends nothing and does not
        use up a sequence number.
        """
        self.assertRaises(BadKey, self.source.send, "a//b", 1)
        self.assertRaises(ValueError, self.source.send, "a", float("nan"))
        self.assertEqual(self.socket.sent, [])
        self.assertTrue(self.source.send("a", 1).endswith(".1"))

    def test_register(self) -> None:
        """
        A registration is sent at once to the register groups, with the
        metadata given; a license may be just a URI.
        """
        self.source.register("test/tick", description="d", provenance="p",
                             license="https://example.com/l", unit="s")
        self.source.register("test/now")
        [first, second] = [parseRegister(d) for d in self.socket.to(REGISTER)]
        self.assertEqual(first, RegisterMessage(
            "test/tick",
            {"description": "d", "provenance": "p", "license": {"uri": "https://example.com/l"},
             "unit": "s"},
            Stamp("oslo-station", 1795312345123, 0, 1795312345.123)))
        self.assertEqual(second.meta, {})
        self.assertEqual(self.socket.to(GROUP_A), [])
        self.assertRaises(ValueError, self.source.register, "a", description=5)
        self.assertRaises(BadKey, self.source.register, "a/*")

    def test_reRegisterOnSend(self) -> None:
        """
        Sending re-sends every registration once 30 seconds have passed since
        the first was sent, and again every 30 seconds.
        """
        self.source.register("a", description="A")
        self.source.register("b", description="B")
        self.time.now += 29.9
        self.source.send("a", 1)
        self.assertEqual(len(self.socket.to(REGISTER)), 2)
        self.time.now += 0.1
        self.source.send("a", 2)
        self.assertEqual([parseRegister(d).key for d in self.socket.to(REGISTER)],
                         ["a", "b", "a", "b"])
        self.time.now += 20
        self.source.send("a", 3)
        self.assertEqual(len(self.socket.to(REGISTER)), 4)
        self.time.now += 10
        self.source.send("a", 4)
        self.assertEqual(len(self.socket.to(REGISTER)), 6)

    def test_sleepKeepsRegistrations(self) -> None:
        """
        L{Source.sleep} waits the whole time and re-sends the registrations
        every 30 seconds meanwhile.
        """
        self.source.register("a")
        start = self.time.now
        self.source.sleep(95)
        self.assertEqual(self.time.now, start + 95)
        stamps = [parseRegister(d).stamp.sent - start for d in self.socket.to(REGISTER)]
        self.assertEqual(stamps, [0, 30, 60, 90])
        self.assertLessEqual(len(self.time.sleeps), 5)

    def test_sleepWithoutRegistrations(self) -> None:
        """
        Without registrations, L{Source.sleep} is one plain sleep.
        """
        self.source.sleep(100)
        self.assertEqual(self.time.sleeps, [100])
        self.assertEqual(self.socket.sent, [])

    def test_run(self) -> None:
        """
        L{Source.run} sends what the producer returns every interval, on a
        schedule that does not drift, and sends nothing for L{None}.
        """
        start = self.time.now
        calls = []

        def produce() -> dict[str, object] | None:
            calls.append(self.time.now - start)
            self.time.now += 0.25  # the producer takes time
            return None if len(calls) == 2 else {"n": len(calls), "m": "x"}

        self.source.run(1.0, produce, count=4)
        self.assertEqual(calls, [0, 1, 2, 3])
        values = [parseData(d) for d in self.socket.to(GROUP_A)]
        self.assertEqual([(m.key, m.value) for m in values],
                         [("n", 1), ("m", "x"), ("n", 3), ("m", "x"), ("n", 4), ("m", "x")])
        self.assertEqual([m.stamp.seq for m in values], [1, 2, 3, 4, 5, 6])

    def test_runLate(self) -> None:
        """
        When the producer overruns the interval, L{Source.run} goes on at
        once instead of sending a burst to catch up.
        """
        start = self.time.now
        calls = []

        def produce() -> None:
            calls.append(self.time.now - start)
            if len(calls) == 1:
                self.time.now += 3.5

        self.source.run(1.0, produce, count=3)
        self.assertEqual(calls, [0, 3.5, 4.5])

    def test_signed(self) -> None:
        """
        With a signing key, every datagram verifies with that key.
        """
        source = self.makeSource(signingKey=b"key")
        source.register("a")
        source.send("a", 1)
        self.assertEqual(parseRegister(self.socket.to(REGISTER)[0], [b"key"], True).key, "a")
        self.assertEqual(parseData(self.socket.to(GROUP_A)[0], [b"key"], True).value, 1)

    def test_fragments(self) -> None:
        """
        A value larger than C{maxDatagram} goes out in fragments that re-assemble.
        """
        source = self.makeSource(maxDatagram=500)
        value = {"long": "z" * 3000}
        source.send("big", value)
        datagrams = self.socket.to(GROUP_A)
        self.assertGreater(len(datagrams), 1)
        reassembler = Reassembler(Clock())
        results = []
        for datagram in datagrams:
            self.assertLessEqual(len(datagram), 500)
            fragment = parseData(datagram)
            self.assertIsInstance(fragment, Fragment)
            results.append(reassembler.feed(fragment))
        self.assertEqual(results[-1].value, value)

    def test_networkError(self) -> None:
        """
        When one group cannot be reached, the others still get the datum and
        the error is raised afterwards.
        """
        self.socket.failFor = GROUP_A
        error = self.assertRaises(OSError, self.source.send, "a", 1)
        self.assertEqual(error.errno, 101)
        self.assertEqual(len(self.socket.to(GROUP_B)), 1)

    def test_names(self) -> None:
        """
        A bad source name is refused; the default one is valid and differs
        between sources.
        """
        self.assertRaises(ValueError, self.makeSource, src="a.b")
        self.assertRaises(ValueError, self.makeSource, src="")
        names = {defaultSourceName() for _ in range(5)}
        self.assertEqual(len(names), 5)
        for name in names:
            self.assertEqual(validateSource(name), name)
            self.assertRegex(name, r"-[0-9a-f]{6}$")
        self.assertRegex(Source(now=self.time, sock=FakeSocket()).src, r"-[0-9a-f]{6}$")

    def test_close(self) -> None:
        """
        Leaving the C{with} block closes the socket.
        """
        with self.source as source:
            self.assertIs(source, self.source)
        self.assertTrue(self.socket.closed)

    def test_badTtl(self) -> None:
        """
        A TTL outside 0-255 is refused.
        """
        self.assertRaises(OSError, self.makeSource, ttl=256)


class SourceOverLoopbackTests(SynchronousTestCase):
    """
    L{Source} on a real socket, to a group joined on 127.0.0.1.
    """

    def test_sendAndRegister(self) -> None:
        """
        A registration and a datum sent with TTL 0 from 127.0.0.1 arrive.
        """
        receiver = MulticastReceiver()
        self.addCleanup(receiver.close)
        with Source("loop", groups=[receiver.address], registerGroups=[receiver.address],
                    ttl=0, interface="127.0.0.1") as source:
            source.register("test/x", description="X")
            datumId = source.send("test/x", [1, "two"])
        first, second = receiver.receive(2)
        self.assertEqual(parseRegister(first).meta, {"description": "X"})
        message = parseData(second)
        self.assertEqual((message.key, message.value), ("test/x", [1, "two"]))
        self.assertEqual(message.stamp.datumId(), datumId)


class RepairSourceTests(SynchronousTestCase):
    """
    The blocking L{Source} repairing (the default), without its thread
    (C{threaded=False}): L{Source.poll}, L{Source.sleep} and L{Source.close}
    do the thread's work on a fake socket and clock.
    """

    def setUp(self) -> None:
        self.socket = FakeSocket()
        self.time = FakeTime()

    def makeSource(self, **kwargs: Any) -> Source:
        """
        A repairing source named C{oslo-station} sending to group A, on fakes.
        """
        arguments: dict[str, Any] = dict(
            src="oslo-station", groups=[GROUP_A], registerGroups=[REGISTER],
            now=self.time, sleep=self.time.sleep, sock=self.socket, threaded=False,
        )
        arguments.update(kwargs)
        source = Source(**arguments)
        self.addCleanup(source.close)
        return source

    def sendSlowly(self, source: Source, count: int) -> list[bytes]:
        """
        Send C{count} datums one second apart (the clock left at the last);
        return their datagrams.
        """
        for n in range(1, count + 1):
            if n > 1:
                self.time.now += 1
            source.send("k", n)
        return self.socket.to(GROUP_A)

    def test_marked(self) -> None:
        """
        A repairing source's datums carry C{"r":1}.
        """
        source = self.makeSource()
        [datagram] = self.sendSlowly(source, 1)
        self.assertIn(b'"t":1795312345.123,"r":1,"key":"k"', datagram)
        self.assertTrue(parseData(datagram).repairable)

    def test_answersNack(self) -> None:
        """
        A NACK read from the socket is answered on the data group with an
        NCF and the original datagram, byte for byte.
        """
        source = self.makeSource()
        original = self.sendSlowly(source, 3)
        self.socket.sent.clear()
        self.socket.inbox.append(encodeNack(source.src, source.boot, [(2, 2)], 0.0))
        source.poll()
        [confirm, repair] = self.socket.to(GROUP_A)
        self.assertEqual(parseData(confirm).ranges, ((2, 2),))
        self.assertEqual(repair, original[1])
        stats = source.repairStatistics()
        self.assertEqual((stats["nacksReceived"], stats["repairsSent"], stats["confirmsSent"]),
                         (1, 1, 1))

    def test_signedNacks(self) -> None:
        """
        A signing source ignores (and counts) a NACK unsigned, signed with
        another key, or for another boot or source; it answers one signed
        with its key, signing the answer.
        """
        source = self.makeSource(signingKey=b"key")
        original = self.sendSlowly(source, 1)
        self.socket.sent.clear()
        self.socket.inbox += [
            encodeNack(source.src, source.boot, [(1, 1)], 0.0),
            encodeNack(source.src, source.boot, [(1, 1)], 0.0, b"other"),
            encodeNack(source.src, source.boot - 1, [(1, 1)], 0.0, b"key"),
            encodeNack("bergen", source.boot, [(1, 1)], 0.0, b"key"),
            b"noise",
        ]
        source.poll()
        self.assertEqual(self.socket.sent, [])
        self.assertEqual(source.repairStatistics()["nacksIgnored"], 5)
        self.socket.inbox.append(encodeNack(source.src, source.boot, [(1, 1)], 0.0, b"key"))
        source.poll()
        [confirm, repair] = self.socket.to(GROUP_A)
        self.assertIsInstance(parseData(confirm, [b"key"], True), Confirm)
        self.assertEqual(repair, original[0])

    def test_sleepRepairs(self) -> None:
        """
        Without the thread, L{Source.sleep} answers NACKs and heartbeats
        while it waits.
        """
        source = self.makeSource()
        source.send("k", 1)
        self.socket.inbox.append(encodeNack(source.src, source.boot, [(1, 1)], 0.0))
        source.sleep(1.0)
        kinds = [type(parseData(d)) for d in self.socket.to(GROUP_A)]
        self.assertEqual(kinds, [DataMessage, Confirm, DataMessage, Heartbeat, Heartbeat])
        self.assertEqual(sum(self.time.sleeps), 1.0)

    def test_closeLingers(self) -> None:
        """
        L{Source.close} sends an open batch at once, then answers NACKs and
        heartbeats every 0.1 s until one second after the last datum, then
        closes the socket; a second call does nothing.
        """
        source = self.makeSource()
        source.send("k", 1)
        source.send("k", 2)
        self.assertEqual(len(self.socket.to(GROUP_A)), 1)
        self.time.now += 0.001
        self.socket.inbox.append(encodeNack(source.src, source.boot, [(2, 2)], 0.0))
        start = self.time.now
        source.close()
        self.assertAlmostEqual(self.time.now - start, 0.999, places=6)
        self.assertTrue(self.socket.closed)
        kinds = [type(parseData(d)) for d in self.socket.to(GROUP_A)]
        self.assertEqual(kinds, [DataMessage, DataMessage, Heartbeat, Confirm, DataMessage]
                         + [Heartbeat] * 9)
        sleeps = list(self.time.sleeps)
        source.close()
        self.assertEqual(self.time.sleeps, sleeps)

    def test_flush(self) -> None:
        """
        L{Source.flush} sends the open batch at once; with none open, or
        without repair, it sends nothing.
        """
        source = self.makeSource()
        source.send("k", 1)
        source.send("k", 2)
        source.send("k", 3)
        self.assertEqual(len(self.socket.to(GROUP_A)), 1)
        source.flush()
        [_, batch] = self.socket.to(GROUP_A)
        self.assertEqual([m.value for m in parseData(batch).messages()], [2, 3])
        source.flush()
        self.makeSource(repair=False).flush()
        self.assertEqual(len(self.socket.to(GROUP_A)), 2)

    def test_lingerPast(self) -> None:
        """
        A source whose last datum is older than its linger (or that sent
        none) closes at once.
        """
        source = self.makeSource(linger=2.0)
        source.send("k", 1)
        self.time.now += 2.5
        source.close()
        self.assertEqual(self.time.sleeps, [])
        self.makeSource().close()
        self.assertEqual(self.time.sleeps, [])

    def test_noRepair(self) -> None:
        """
        C{repair=False} sends datums without C{"r"}, answers no NACK, never
        lingers, and its counters are all 0.
        """
        source = self.makeSource(repair=False)
        source.send("k", 1)
        source.send("k", 2)
        self.socket.inbox.append(encodeNack(source.src, source.boot, [(1, 1)], 0.0))
        source.sleep(5)
        source.close()
        datagrams = self.socket.to(GROUP_A)
        self.assertEqual(len(datagrams), 2)
        self.assertTrue(all(b'"r"' not in d for d in datagrams))
        self.assertEqual(self.time.sleeps, [5])
        self.assertEqual(set(source.repairStatistics().values()), {0})
        self.assertIn("nacksReceived", source.repairStatistics())

    def test_badParameters(self) -> None:
        """
        A window, rate or batch size below 1, or a negative holdback, is
        refused.
        """
        for bad in [dict(window=0), dict(windowBytes=0), dict(repairRate=0),
                    dict(holdback=-1), dict(batchSize=0), dict(batchThreshold=-1)]:
            self.assertRaises(ValueError, Source, sock=FakeSocket(), now=self.time, **bad)

    def test_atExit(self) -> None:
        """
        Sources still open when the interpreter exits are closed then, with
        their linger; a source dropped without being closed is not kept.
        """
        source = self.makeSource()
        source.send("k", 1)
        self.assertIn(source, list(artcast.source._openSources))
        artcast.source._closeOpenSources()
        self.assertTrue(self.socket.closed)
        self.assertEqual(sum(self.time.sleeps), 1.0)
        self.assertNotIn(source, list(artcast.source._openSources))
        dropped = Source(sock=FakeSocket(), now=self.time, threaded=False)
        reference = weakref.ref(dropped)
        del dropped
        gc.collect()
        self.assertIsNone(reference())


class RepairThreadTests(SynchronousTestCase):
    """
    L{Source}'s repair thread, on real loopback sockets (each wait bounded
    by L{RECEIVE_LIMIT}).
    """

    def test_nackAnswered(self) -> None:
        """
        A NACK sent to the source's own address is answered from its thread
        (named C{artcast-source-<src>}) with an NCF and the original bytes
        on the data group; close() stops the thread.
        """
        receiver = MulticastReceiver()
        self.addCleanup(receiver.close)
        source = Source("loop-thread", groups=[receiver.address], registerGroups=[], ttl=0,
                        interface="127.0.0.1", linger=0)
        self.addCleanup(source.close)
        [thread] = [t for t in threading.enumerate() if t.name == "artcast-source-loop-thread"]
        self.assertTrue(thread.daemon)
        datumId = source.send("test/x", 1)
        for _ in range(5):
            original, address = receiver.socket.recvfrom(65536)
            if not _isHeartbeat(original):
                break
        self.assertEqual(parseData(original).stamp.datumId(), datumId)
        asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(asker.close)
        asker.sendto(encodeNack("loop-thread", source.boot, [(1, 1)], 0.0), address)
        answers = []
        for _ in range(10):
            data = receiver.receive()[0]
            if not isinstance(parseData(data), Heartbeat):
                answers.append(data)
            if len(answers) == 2:
                break
        self.assertIsInstance(parseData(answers[0]), Confirm)
        self.assertEqual(answers[1], original)
        self.assertEqual(source.repairStatistics()["nacksReceived"], 1)
        source.close()
        self.assertFalse(thread.is_alive())

    def test_batchFlushedByThread(self) -> None:
        """
        The thread sends an open batch after the holdback, while the script
        does nothing.
        """
        receiver = MulticastReceiver()
        self.addCleanup(receiver.close)
        source = Source("loop-batch", groups=[receiver.address], registerGroups=[], ttl=0,
                        interface="127.0.0.1", linger=0)
        self.addCleanup(source.close)
        for n in range(3):
            source.send("k", n)
        messages = []
        for _ in range(10):
            message = parseData(receiver.receive()[0])
            if isinstance(message, Batch):
                messages += message.messages()
            elif isinstance(message, DataMessage):
                messages.append(message)
            if len(messages) == 3:
                break
        self.assertEqual([m.value for m in messages], [0, 1, 2])
        self.assertTrue(all(m.repairable for m in messages))

    def test_droppedSourceEnds(self) -> None:
        """
        The thread of a source dropped without close() ends by itself.
        """
        source = Source("loop-dropped", groups=[("239.255.1.1", 9)], registerGroups=[],
                        ttl=0, interface="127.0.0.1")
        [thread] = [t for t in threading.enumerate() if t.name == "artcast-source-loop-dropped"]
        del source
        gc.collect()
        thread.join(RECEIVE_LIMIT)
        self.assertFalse(thread.is_alive())


class FakePort:
    """
    What L{FakeMulticastReactor.listenMulticast} returns: records settings
    and writes.
    """

    def __init__(self) -> None:
        self.ttl: int | None = None
        self.loopback: bool | None = None
        self.interface: str | None = None
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.listening = True
        self.failWrites = False

    def setTTL(self, ttl: int) -> None:
        self.ttl = ttl

    def setLoopbackMode(self, mode: bool) -> None:
        self.loopback = bool(mode)

    def setOutgoingInterface(self, interface: str) -> defer.Deferred[int]:
        self.interface = interface
        return defer.succeed(1)

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        if self.failWrites:
            raise OSError(101, "Network is unreachable")
        self.written.append((datagram, address))

    def stopListening(self) -> defer.Deferred[None]:
        self.listening = False
        return defer.succeed(None)

    def to(self, address: tuple[str, int]) -> list[bytes]:
        return [data for data, where in self.written if where == address]


class FakeMulticastReactor(Clock):
    """
    A clock that also hands out L{FakePort}s for C{listenMulticast}, and
    keeps the protocols given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []
        self.protocols: list[DatagramProtocol] = []

    def listenMulticast(self, port: int, protocol: DatagramProtocol, interface: str = "",
                        maxPacketSize: int = 8192, listenMultiple: bool = False) -> FakePort:
        fake = FakePort()
        self.ports.append(fake)
        self.protocols.append(protocol)
        return fake


class SourceServiceTests(SynchronousTestCase):
    """
    L{SourceService} on a fake reactor.
    """

    def setUp(self) -> None:
        self.reactor = FakeMulticastReactor()
        self.reactor.advance(1795312345.123)
        self.service = SourceService(self.reactor, "svc", groups=[GROUP_A, GROUP_B],
                                     registerGroups=[REGISTER], ttl=0, interface="127.0.0.1")

    def test_start(self) -> None:
        """
        Starting opens a port with the TTL, loopback on and the interface,
        and begins a boot at the current time in ms.
        """
        self.service.startService()
        [port] = self.reactor.ports
        self.assertEqual((port.ttl, port.loopback, port.interface), (0, True, "127.0.0.1"))
        self.assertEqual(self.service.boot, 1795312345123)

    def test_registerEvery30Seconds(self) -> None:
        """
        Registrations go out at start and every 30 seconds while running.
        """
        self.service.register("a", description="A", license={"uri": "u", "title": "t"})
        self.service.startService()
        port = self.reactor.ports[0]
        self.assertEqual(len(port.to(REGISTER)), 1)
        self.reactor.advance(29)
        self.assertEqual(len(port.to(REGISTER)), 1)
        self.reactor.advance(1)
        self.reactor.advance(30)
        messages = [parseRegister(d) for d in port.to(REGISTER)]
        self.assertEqual(len(messages), 3)
        self.assertEqual(messages[-1].meta,
                         {"description": "A", "license": {"uri": "u", "title": "t"}})
        self.assertEqual(messages[-1].stamp.sent, 1795312345.123 + 60)

    def test_registerWhileRunning(self) -> None:
        """
        A registration made while running is sent at once.
        """
        self.service.startService()
        self.service.register("b", provenance="P")
        [datagram] = self.reactor.ports[0].to(REGISTER)
        self.assertEqual(parseRegister(datagram).meta, {"provenance": "P"})

    def test_publish(self) -> None:
        """
        L{SourceService.publish} sends a version 2 datum to every group and
        returns its id; a second datum in the same instant opens a batch, so
        it goes out (alone, as a plain datum) after the holdback.
        """
        self.service.startService()
        self.assertEqual(self.service.publish("k", "v"), "svc.1795312345123.1")
        self.assertEqual(self.service.publish("k", 2), "svc.1795312345123.2")
        port = self.reactor.ports[0]
        for group in (GROUP_A, GROUP_B):
            self.assertEqual([parseData(d).value for d in port.to(group)], ["v"])
        self.reactor.advance(HOLDBACK)
        for group in (GROUP_A, GROUP_B):
            self.assertEqual([parseData(d).value for d in port.to(group)], ["v", 2])

    def test_publishStopped(self) -> None:
        """
        Publishing before start or after stop raises L{RuntimeError}.
        """
        self.assertRaises(RuntimeError, self.service.publish, "k", 1)
        self.service.startService()
        self.service.stopService()
        self.assertRaises(RuntimeError, self.service.publish, "k", 1)

    def test_stop(self) -> None:
        """
        Stopping closes the port and ends the registrations.
        """
        self.service.register("a")
        self.service.startService()
        port = self.reactor.ports[0]
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertFalse(port.listening)
        self.reactor.advance(100)
        self.assertEqual(len(port.to(REGISTER)), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_restartIsNewBoot(self) -> None:
        """
        Each start is a new, larger boot, and seq starts again at 1.
        """
        self.service.startService()
        self.service.publish("k", 1)
        self.service.stopService()
        self.service.startService()
        self.assertEqual(self.service.boot, 1795312345124)
        self.assertEqual(self.service.publish("k", 1), "svc.1795312345124.1")

    def test_networkErrorLogged(self) -> None:
        """
        A failed write is logged, not raised, and the registrations go on.
        """
        self.service.register("a")
        self.service.startService()
        port = self.reactor.ports[0]
        port.failWrites = True
        self.service.publish("k", 1)
        self.reactor.advance(30)
        port.failWrites = False
        self.reactor.advance(30)
        self.assertEqual(len(port.to(REGISTER)), 2)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_signed(self) -> None:
        """
        With a signing key, the service signs datums and registrations.
        """
        service = SourceService(self.reactor, "svc", groups=[GROUP_A],
                                registerGroups=[REGISTER], signingKey=b"k")
        service.register("a")
        service.startService()
        port = self.reactor.ports[-1]
        service.publish("a", 1)
        self.assertEqual(parseData(port.to(GROUP_A)[0], [b"k"], True).value, 1)
        self.assertEqual(parseRegister(port.to(REGISTER)[0], [b"k"], True).key, "a")


class SourceServiceRepairTests(SynchronousTestCase):
    """
    L{SourceService} repairing (the default) on a fake reactor: NACKs
    arrive through its port's protocol, timers run on the clock.
    """

    def setUp(self) -> None:
        self.reactor = FakeMulticastReactor()
        self.reactor.advance(1795312345.123)
        self.service = SourceService(self.reactor, "svc", groups=[GROUP_A],
                                     registerGroups=[REGISTER])

    def start(self) -> FakePort:
        """
        Start the service; return its port.
        """
        self.service.startService()
        return self.reactor.ports[-1]

    def nack(self, *ranges: tuple[int, int], key: bytes | None = None) -> None:
        """
        Deliver a NACK for C{ranges} to the service's port.
        """
        protocol = self.reactor.protocols[-1]
        protocol.datagramReceived(encodeNack("svc", self.service.boot, list(ranges), 0.0, key),
                                  ("127.0.0.1", 5007))

    def test_answersNack(self) -> None:
        """
        A NACK arriving on the service's port is answered on the data group
        with an NCF and the original datagram; one for another boot is
        ignored and counted.
        """
        port = self.start()
        self.service.publish("k", 1)
        self.reactor.advance(1)
        self.service.publish("k", 2)
        original = [d for d in port.to(GROUP_A) if isinstance(parseData(d), DataMessage)]
        self.assertEqual(len(original), 2)
        self.assertTrue(all(b'"r":1,' in d for d in original))
        port.written.clear()
        self.nack((1, 1))
        [confirm, repair] = port.to(GROUP_A)
        self.assertIsInstance(parseData(confirm), Confirm)
        self.assertEqual(repair, original[0])
        self.reactor.protocols[-1].datagramReceived(
            encodeNack("svc", self.service.boot + 1, [(1, 1)], 0.0), ("127.0.0.1", 5007))
        stats = self.service.repairStatistics()
        self.assertEqual((stats["nacksReceived"], stats["nacksIgnored"]), (1, 1))

    def test_heartbeats(self) -> None:
        """
        An idle service heartbeats its last seq 0.2 s after its last datum,
        then 0.4 s later, and so on.
        """
        port = self.start()
        self.service.publish("k", 1)
        start = self.reactor.seconds()
        self.reactor.advance(0.2)
        self.reactor.advance(0.4)
        self.reactor.advance(0.8)
        beats = [parseData(d) for d in port.to(GROUP_A)[1:]]
        self.assertEqual([(b.last, round(b.stamp.sent - start, 6)) for b in beats],
                         [(1, 0.2), (1, 0.6), (1, 1.4)])

    def test_rateLimitedRepairs(self) -> None:
        """
        Repairs over C{repairRate} follow on the clock.
        """
        service = SourceService(self.reactor, "svc", groups=[GROUP_A], registerGroups=[],
                                repairRate=100, holdback=0)
        service.startService()
        port = self.reactor.ports[-1]
        for n in range(100):
            service.publish("k", n)
        port.written.clear()
        self.reactor.protocols[-1].datagramReceived(
            encodeNack("svc", service.boot, [(1, 100)], 0.0), ("127.0.0.1", 5007))
        self.assertEqual(len(port.to(GROUP_A)), 1 + 64)
        self.reactor.pump([0.01] * 40)
        repaired = [parseData(d) for d in port.to(GROUP_A)[1:]]
        values = [m.value for m in repaired if isinstance(m, DataMessage)]
        self.assertEqual(values, list(range(100)))

    def test_stopLingers(self) -> None:
        """
        L{SourceService.stopService} sends an open batch at once, answers
        NACKs until one second after the last datum, then closes the port
        and fires; no timer is left.
        """
        port = self.start()
        self.service.publish("k", 1)
        self.service.publish("k", 2)
        self.reactor.advance(0.1)
        self.service.publish("k", 3)
        self.service.publish("k", 4)
        self.assertEqual(len(port.to(GROUP_A)), 3)
        stopped = self.service.stopService()
        self.assertEqual([parseData(d).value for d in port.to(GROUP_A)], [1, 2, 3, 4])
        self.assertNoResult(stopped)
        self.assertRaises(RuntimeError, self.service.publish, "k", 5)
        self.reactor.advance(0.5)
        port.written.clear()
        self.nack((4, 4))
        self.assertEqual(len(port.to(GROUP_A)), 2)
        self.assertTrue(port.listening)
        self.reactor.advance(0.5)
        self.successResultOf(stopped)
        self.assertFalse(port.listening)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_flush(self) -> None:
        """
        L{SourceService.flush} sends the open batch at once.
        """
        port = self.start()
        self.service.publish("k", 1)
        self.service.publish("k", 2)
        self.service.flush()
        self.assertEqual([parseData(d).value for d in port.to(GROUP_A)], [1, 2])
        self.service.flush()
        self.assertEqual(len(port.to(GROUP_A)), 2)

    def test_restartWhileLingering(self) -> None:
        """
        Starting again while the last stop lingers ends the linger (its
        Deferred fires) and begins a new boot on a new port.
        """
        port = self.start()
        self.service.publish("k", 1)
        stopped = self.service.stopService()
        newPort = self.start()
        self.successResultOf(stopped)
        self.assertFalse(port.listening)
        self.assertIsNot(newPort, port)
        self.assertEqual(self.service.publish("k", 1), "svc.1795312345124.1")

    def test_noRepair(self) -> None:
        """
        C{repair=False} sends datums without C{"r"}, at once, sets no timer,
        answers no NACK and stops at once.
        """
        service = SourceService(self.reactor, "svc", groups=[GROUP_A], registerGroups=[],
                                repair=False)
        service.startService()
        port = self.reactor.ports[-1]
        service.publish("k", 1)
        service.publish("k", 2)
        self.reactor.protocols[-1].datagramReceived(
            encodeNack("svc", service.boot, [(1, 1)], 0.0), ("127.0.0.1", 5007))
        self.assertEqual(len(port.to(GROUP_A)), 2)
        self.assertTrue(all(b'"r"' not in d for d in port.to(GROUP_A)))
        self.successResultOf(defer.maybeDeferred(service.stopService))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(set(service.repairStatistics().values()), {0})

    def test_outletPassesThrough(self) -> None:
        """
        L{MulticastOutlet} repairs by default and passes the repair
        parameters on.
        """
        outlet = MulticastOutlet(self.reactor, "x-http", GROUP_A, "0.0.0.0", 1, None)
        outlet.startService()
        outlet.send("k", 1)
        self.assertIn(b'"r":1,', self.reactor.ports[-1].to(GROUP_A)[0])
        plain = MulticastOutlet(self.reactor, "y-http", GROUP_A, "0.0.0.0", 1, None,
                                repair=False)
        plain.startService()
        plain.send("k", 1)
        self.assertNotIn(b'"r"', self.reactor.ports[-1].to(GROUP_A)[0])


class DatagramCollector(DatagramProtocol):
    """
    Fires C{self.arrived} with the first datagram received.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.arrived: defer.Deferred[bytes] = defer.Deferred()

    def startProtocol(self) -> None:
        self.joined = self.transport.joinGroup(self.group, "127.0.0.1")

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.arrived.called:
            self.arrived.callback(data)


class SourceServiceOverLoopbackTests(TestCase):
    """
    L{SourceService} on the real reactor, over loopback.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_publish(self):
        """
        A datum published by a running service arrives at a group member.
        """
        group = randomGroup()
        collector = DatagramCollector(group)
        listening = reactor.listenMulticast(0, collector, listenMultiple=True)
        self.addCleanup(listening.stopListening)
        yield collector.joined
        address = (group, listening.getHost().port)
        service = SourceService(reactor, "loop", groups=[address], registerGroups=[],
                                ttl=0, interface="127.0.0.1")
        service.startService()
        self.addCleanup(service.stopService)
        datumId = service.publish("test/x", {"ok": True})
        message = parseData((yield collector.arrived))
        self.assertEqual((message.key, message.value), ("test/x", {"ok": True}))
        self.assertEqual(message.stamp.datumId(), datumId)


def loadTestSources() -> Any:
    """
    Import C{sources/test-sources.py} (its name is not a module name).
    """
    spec = importlib.util.spec_from_file_location(
        "artcast_test_sources", os.path.join(ROOT, "sources", "test-sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestSourcesTests(SynchronousTestCase):
    """
    C{sources/test-sources.py}: C{test/tick} and C{test/now} over multicast.
    """

    def setUp(self) -> None:
        self.module = loadTestSources()

    def test_isoNow(self) -> None:
        """
        C{test/now} is ISO 8601 UTC to the second.
        """
        self.assertEqual(self.module.isoNow(1795312399.9), "2026-11-22T01:53:19Z")
        self.assertEqual(self.module.isoNow(0), "1970-01-01T00:00:00Z")

    def test_sends(self) -> None:
        """
        Over loopback with TTL 0, the script registers both artcasts with a
        license, then sends an increasing tick and the time once a second;
        closing, its source lingers one second (the last sleep) and may
        heartbeat meanwhile (heartbeats are left out here).
        """
        data, register = MulticastReceiver(), MulticastReceiver()
        self.addCleanup(data.close)
        self.addCleanup(register.close)
        clock = FakeTime(now=1795312399.25)
        status = self.module.main(
            ["--group", data.group, "--port", str(data.port),
             "--register-group", register.group, "--register-port", str(register.port),
             "--ttl", "0", "--interface", "127.0.0.1", "--count", "3", "--src", "test-src"],
            now=clock, sleep=clock.sleep)
        self.assertEqual(status, 0)
        registrations = {m.key: m.meta for m in map(parseRegister, register.receive(2))}
        self.assertEqual(sorted(registrations), ["test/now", "test/tick"])
        for meta in registrations.values():
            self.assertEqual(set(meta), {"description", "provenance", "license"})
            self.assertEqual(meta["license"]["title"], "CC0 1.0 Universal")
        messages = []
        for _ in range(50):
            message = parseData(data.receive()[0])
            if isinstance(message, DataMessage):
                messages.append(message)
                if len(messages) == 6:
                    break
        self.assertEqual([m.value for m in messages if m.key == "test/tick"], [1, 2, 3])
        self.assertEqual([m.value for m in messages if m.key == "test/now"],
                         ["2026-11-22T01:53:20Z", "2026-11-22T01:53:21Z",
                          "2026-11-22T01:53:22Z"])
        self.assertEqual([m.stamp.seq for m in messages], [1, 2, 3, 4, 5, 6])
        self.assertTrue(all(m.stamp.source == "test-src" for m in messages))
        self.assertEqual(clock.sleeps, [0.75, 1.0, 1.0, 1.0])

    def test_defaults(self) -> None:
        """
        By default the script sends with TTL 1 to 224.1.1.1:5007 and :5008.
        """
        options = self.module.parseArguments([])
        self.assertEqual((options.group, options.port, options.register_group,
                          options.register_port, options.ttl, options.interface),
                         ("224.1.1.1", 5007, None, 5008, 1, None))
