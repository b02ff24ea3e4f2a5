"""
Tests for L{artcast.send}: the C{artcast-send} console script.
"""

from __future__ import annotations

import io
import socket
import struct
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from artcast.send import main, parseValue
from artcast.wire import DataMessage, Fragment, Heartbeat, parseData
from tests.test_source import FakeSocket, FakeTime, MulticastReceiver


class ParseValueTests(SynchronousTestCase):
    """
    L{parseValue}: JSON when it is strict JSON, else the text.
    """

    def test_json(self) -> None:
        """
        Valid JSON becomes its value.
        """
        for text, value in [("42", 42), ("-1.5", -1.5), ('"42"', "42"), ("true", True),
                            ("null", None), ('{"a": [1]}', {"a": [1]}), (" [] ", [])]:
            self.assertEqual(parseValue(text), value)

    def test_text(self) -> None:
        """
        Anything else, including what lenient JSON parsers accept, stays text.
        """
        for text in ["hello", "", "NaN", "Infinity", "1e400", "{'a': 1}", "12abc",
                     "[" * 100000, "héllo wörld"]:
            self.assertEqual(parseValue(text), text)


class MainTests(SynchronousTestCase):
    """
    L{main} with a fake socket.
    """

    def setUp(self) -> None:
        self.socket = FakeSocket()
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.time = FakeTime()

    def send(self, *argv: str) -> int:
        """
        Run C{artcast-send} with C{argv} on the fake socket and clock.
        """
        return main(list(argv), stdout=self.stdout, stderr=self.stderr, sock=self.socket,
                    now=self.time, sleep=self.time.sleep)

    def datums(self) -> list[tuple[bytes, tuple[str, int]]]:
        """
        The datagrams sent that carry datums (not the heartbeats of the
        linger).
        """
        return [(datagram, address) for datagram, address in self.socket.sent
                if isinstance(parseData(datagram), (DataMessage, Fragment))]

    def test_send(self) -> None:
        """
        A datum goes to 224.1.1.1:5007 as version 2 with TTL 1, repairable
        (C{"r":1}), and its id is printed; the program then lingers one
        second, heartbeating every 0.1 s, before it closes the socket.
        """
        self.assertEqual(self.send("test/greeting", "hello"), 0)
        [(datagram, address)] = self.datums()
        self.assertEqual(address, ("224.1.1.1", 5007))
        message = parseData(datagram)
        self.assertEqual((message.key, message.value), ("test/greeting", "hello"))
        self.assertTrue(message.repairable)
        self.assertIn(b'"r":1,', datagram)
        self.assertEqual(self.stdout.getvalue(), message.stamp.datumId() + "\n")
        self.assertEqual(message.stamp.seq, 1)
        self.assertEqual(self.socket.options[socket.IPPROTO_IP, socket.IP_MULTICAST_TTL],
                         struct.pack("B", 1))
        self.assertTrue(self.socket.closed)
        self.assertEqual(sum(self.time.sleeps), 1.0)
        heartbeats = [parseData(d) for d, _ in self.socket.sent[1:]]
        self.assertEqual([(h.last, round(h.stamp.sent - message.stamp.sent, 2))
                          for h in heartbeats], [(1, round(0.1 * i, 2)) for i in range(11)])
        self.assertTrue(all(isinstance(h, Heartbeat) for h in heartbeats))

    def test_linger(self) -> None:
        """
        C{--linger SECONDS} sets how long the program stays; 0 leaves at once.
        """
        self.assertEqual(self.send("k", "1", "--linger", "2.5"), 0)
        self.assertEqual(sum(self.time.sleeps), 2.5)
        self.time.sleeps.clear()
        self.assertEqual(self.send("k", "1", "--linger", "0"), 0)
        self.assertEqual(self.time.sleeps, [])
        self.assertEqual(len(self.datums()), 2)

    def test_noRepair(self) -> None:
        """
        C{--no-repair} sends exactly one datagram without C{"r"} and leaves
        at once.
        """
        self.assertEqual(self.send("k", "1", "--no-repair"), 0)
        [(datagram, _)] = self.socket.sent
        self.assertNotIn(b'"r"', datagram)
        self.assertFalse(parseData(datagram).repairable)
        self.assertEqual(self.time.sleeps, [])

    def test_badLinger(self) -> None:
        """
        A C{--linger} that is not a number from 0 to 3600 exits with 2.
        """
        self.patch(sys, "stderr", self.stderr)
        for text in ["-1", "x", "nan", "3601"]:
            error = self.assertRaises(SystemExit, self.send, "k", "1", "--linger", text)
            self.assertEqual(error.code, 2)
        self.assertIn("--linger is 0 to 3600 seconds", self.stderr.getvalue())
        self.assertEqual(self.socket.sent, [])

    def test_help(self) -> None:
        """
        C{--help} says what C{--linger} and C{--no-repair} do.
        """
        self.patch(sys, "stdout", self.stdout)
        self.assertRaises(SystemExit, self.send, "--help")
        text = " ".join(self.stdout.getvalue().split())
        self.assertIn("--linger SECONDS stay this long after sending to re-send the datum", text)
        self.assertIn("(default 1; 0: exit at once)", text)
        self.assertIn("--no-repair send a datagram that servers never ask for again", text)

    def test_jsonValue(self) -> None:
        """
        A VALUE that is JSON is sent as that JSON value.
        """
        self.send("k", '{"temp": 21.5}')
        self.send("k", '"42"')
        self.send("k", "42")
        self.assertEqual([parseData(d).value for d, _ in self.datums()],
                         [{"temp": 21.5}, "42", 42])

    def test_options(self) -> None:
        """
        C{--group} (repeatable), C{--port}, C{--ttl}, C{--interface} and
        C{--src} are honoured.
        """
        self.assertEqual(self.send("k", "1", "--group", "239.255.0.1", "--group", "239.255.0.2",
                                  "--port", "15007", "--ttl", "0", "--interface", "127.0.0.1",
                                  "--src", "shell"), 0)
        self.assertEqual([address for _, address in self.datums()],
                         [("239.255.0.1", 15007), ("239.255.0.2", 15007)])
        self.assertEqual(self.socket.options, {
            (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL): struct.pack("B", 0),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP): struct.pack("B", 1),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_IF): socket.inet_aton("127.0.0.1"),
        })
        self.assertTrue(self.stdout.getvalue().startswith("shell."))

    def test_v1(self) -> None:
        """
        C{--v1} sends an original Artcast datagram and prints nothing.
        """
        self.assertEqual(self.send("test/tick", "42", "--v1"), 0)
        [(datagram, _)] = self.socket.sent
        self.assertEqual(datagram, b'["test/tick",42]')
        self.assertEqual(self.stdout.getvalue(), "")

    def test_keyFile(self) -> None:
        """
        C{--key-file} signs with the file's key, trailing newline left out.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"s3cret\n")
        self.assertEqual(self.send("k", "1", "--key-file", path.path), 0)
        [(datagram, _)] = self.datums()
        self.assertEqual(parseData(datagram, [b"s3cret"], True).value, 1)

    def test_keyFileProblems(self) -> None:
        """
        A missing or empty key file, or a key file with C{--v1}, is an error
        and nothing is sent.
        """
        empty = FilePath(self.mktemp())
        empty.setContent(b"\n")
        for argv in [("--key-file", self.mktemp()), ("--key-file", empty.path),
                     ("--key-file", empty.path, "--v1")]:
            self.assertEqual(self.send("k", "1", *argv), 2)
        self.assertEqual(self.socket.sent, [])
        self.assertIn("cannot be signed", self.stderr.getvalue())
        self.assertIn("empty", self.stderr.getvalue())

    def test_badKey(self) -> None:
        """
        A bad key exits with 2 and says what is wrong, sending nothing.
        """
        for key, words in [("a//b", "empty level"), ("/a", "empty level"),
                           ("test/*", "wildcard"), ("a\tb", "U+0009"), ("x" * 257, "256")]:
            self.stderr = io.StringIO()
            self.assertEqual(self.send(key, "1"), 2)
            message = self.stderr.getvalue()
            self.assertTrue(message.startswith("artcast-send: bad key: "), message)
            self.assertIn(words, message)
        self.assertEqual(self.socket.sent, [])

    def test_badSrc(self) -> None:
        """
        A bad source name exits with 2.
        """
        self.assertEqual(self.send("k", "1", "--src", "a.b"), 2)
        self.assertIn("source name", self.stderr.getvalue())
        self.assertEqual(self.send("k", "1", "--src", "a", "--v1"), 2)

    def test_badArguments(self) -> None:
        """
        Malformed options exit with argparse's status 2 and a message.
        """
        self.patch(sys, "stderr", self.stderr)
        for argv in [("k",), ("k", "1", "--port", "70000"), ("k", "1", "--ttl", "300"),
                     ("k", "1", "--group", "example.com"), ("k", "1", "--interface", "1.2")]:
            error = self.assertRaises(SystemExit, main, list(argv), stderr=self.stderr,
                                      sock=self.socket)
            self.assertEqual(error.code, 2)
        self.assertEqual(self.socket.sent, [])
        self.assertIn("not a port number: '70000'", self.stderr.getvalue())
        self.assertIn("not an IPv4 address: 'example.com'", self.stderr.getvalue())

    def test_tooLargeV1(self) -> None:
        """
        A value too large for one version 1 datagram exits with 2.
        """
        self.assertEqual(self.send("k", "x" * 70000, "--v1"), 2)
        self.assertIn("exceeds", self.stderr.getvalue())

    def test_largeV2(self) -> None:
        """
        A value too large for one datagram is sent in fragments.
        """
        self.assertEqual(self.send("k", "x" * 70000), 0)
        self.assertEqual(len(self.datums()), 2)

    def test_networkError(self) -> None:
        """
        A network error exits with 1 and names the group.
        """
        self.socket.failFor = ("224.1.1.1", 5007)
        self.assertEqual(self.send("k", "1"), 1)
        self.assertIn("cannot send to 224.1.1.1:5007", self.stderr.getvalue())


class LoopbackTests(SynchronousTestCase):
    """
    L{main} on a real socket.
    """

    def test_arrives(self) -> None:
        """
        A datum sent with TTL 0 from 127.0.0.1 arrives at a group member.
        """
        receiver = MulticastReceiver()
        self.addCleanup(receiver.close)
        status = main(["sensors/door", "true", "--group", receiver.group,
                       "--port", str(receiver.port), "--ttl", "0", "--interface", "127.0.0.1",
                       "--linger", "0"],
                      stdout=io.StringIO())
        self.assertEqual(status, 0)
        [datagram] = receiver.receive()
        message = parseData(datagram)
        self.assertEqual((message.key, message.value), ("sensors/door", True))
