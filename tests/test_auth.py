# -*- test-case-name: tests.test_auth -*-
"""
Tests of authenticated sources: C{--source-key-file} and
C{--source-max-skew}.  A server with keys accepts only datagrams signed with
one of them and fresh in time and sequence; the rest are dropped and counted
as C{bad-signature}, C{unsigned}, C{replayed} or C{stale}.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import treq
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server import tap
from artcast.server.store import KeyStore
from artcast.server.feeds.multicast import DatagramHandler, MulticastFeed
from artcast.wire import Stamp, encodeData, encodeRegister
from tests.harness import ArtcastProcess

ADDRESS = ("127.0.0.1", 5555)
KEY = b"k" * 32
OLD_KEY = b"o" * 32
NOW = 1_800_000_000.0


def signed(key: str, value: object, seq: int, sent: float = NOW, boot: int = 1,
           signingKey: bytes | None = KEY, src: str = "src") -> bytes:
    [datagram] = encodeData(key, value, Stamp(src, boot, seq, sent), signingKey)
    return datagram


class SignedHandlerTests(SynchronousTestCase):
    """
    L{DatagramHandler} with signing keys and a freshness window.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = KeyStore(self.clock)
        self.handler = DatagramHandler(
            self.store, self.clock, signingKeys=[KEY, OLD_KEY], freshness=30.0
        )
        self.got: list = []
        self.store.subscribe("k", self.got.append)

    def dropped(self) -> dict[str, int]:
        return dict(self.handler.stats.dropped)

    def test_signedAccepted(self) -> None:
        """
        A datum signed with any of the keys is published, so a key can be
        rotated without a moment where sources and servers disagree.
        """
        self.handler.dataReceived(signed("k", 1, 1), ADDRESS)
        self.handler.dataReceived(signed("k", 2, 2, signingKey=OLD_KEY), ADDRESS)
        self.assertEqual([d.value for d in self.got], [1, 2])
        self.assertEqual(self.dropped(), {})

    def test_forged(self) -> None:
        """
        A datum signed with another key, or whose signed bytes were changed,
        is dropped as C{bad-signature}.
        """
        self.handler.dataReceived(signed("k", 1, 1, signingKey=b"x" * 32), ADDRESS)
        tampered = signed("k", 1, 1).replace(b'"value":1', b'"value":9')
        self.handler.dataReceived(tampered, ADDRESS)
        self.assertEqual(self.got, [])
        self.assertEqual(self.dropped(), {"bad-signature": 2})

    def test_unsigned(self) -> None:
        """
        Version 1 datagrams and unsigned version 2 ones are dropped as
        C{unsigned}, on both groups.
        """
        self.handler.dataReceived(b'["k", 1]', ADDRESS)
        self.handler.dataReceived(signed("k", 1, 1, signingKey=None), ADDRESS)
        self.handler.registerReceived(b'["k", {"description": "forged"}]', ADDRESS)
        self.assertEqual(self.got, [])
        self.assertIsNone(self.store.metadata("k"))
        self.assertEqual(self.dropped(), {"unsigned": 3})

    def test_replayed(self) -> None:
        """
        A signed datagram sent again, or an older one, is dropped as
        C{replayed}; the next one in sequence is still accepted.
        """
        first, second = signed("k", 1, 1), signed("k", 2, 2)
        for datagram in (first, second, second, first):
            self.handler.dataReceived(datagram, ADDRESS)
        self.handler.dataReceived(signed("k", 3, 3), ADDRESS)
        self.assertEqual([d.value for d in self.got], [1, 2, 3])
        self.assertEqual(self.dropped(), {"replayed": 2})

    def test_stale(self) -> None:
        """
        A signed datum sent further than the window from the server's clock,
        before or after it, or with C{t} 0, is dropped as C{stale}; one just
        inside is accepted.
        """
        for seq, sent in enumerate((NOW - 31, NOW + 31, 0.0), 1):
            self.handler.dataReceived(signed("k", seq, seq, sent=sent), ADDRESS)
        self.assertEqual(self.got, [])
        self.handler.dataReceived(signed("k", 4, 4, sent=NOW - 29.5), ADDRESS)
        self.assertEqual([d.value for d in self.got], [4])
        self.assertEqual(self.dropped(), {"stale": 3})

    def test_staleRegistration(self) -> None:
        """
        A signed registration outside the window is dropped as C{stale}, so a
        copied one cannot be replayed later; a fresh one is kept.
        """
        stamp = Stamp("src", 1, 0, NOW - 60)
        self.handler.registerReceived(encodeRegister("k", {"description": "old"}, stamp, KEY),
                                      ADDRESS)
        self.assertIsNone(self.store.metadata("k"))
        fresh = Stamp("src", 1, 0, NOW)
        self.handler.registerReceived(encodeRegister("k", {"description": "new"}, fresh, KEY),
                                      ADDRESS)
        self.assertEqual(self.store.metadata("k"), {"description": "new"})
        self.assertEqual(self.dropped(), {"stale": 1})

    def test_replayedFragments(self) -> None:
        """
        A fragmented signed datum replayed whole is published once; each
        replayed fragment is dropped, and counted, before it takes memory.
        """
        datagrams = encodeData("k", "x" * 3000, Stamp("src", 1, 1, NOW), KEY,
                               maxDatagram=1000)
        self.assertGreater(len(datagrams), 2)
        for datagram in datagrams + datagrams:
            self.handler.dataReceived(datagram, ADDRESS)
        self.assertEqual(len(self.got), 1)
        self.assertEqual(self.dropped(), {"replayed": len(datagrams)})


class UnsignedServerTests(SynchronousTestCase):
    """
    Without keys, a server accepts what it accepted before.
    """

    def test_acceptsAll(self) -> None:
        """
        Version 1, unsigned and signed version 2 datums are all published; a
        signature is not checked (there is nothing to check it with), and no
        freshness window applies.
        """
        clock = Clock()
        store = KeyStore(clock)
        handler = DatagramHandler(store, clock)
        got: list = []
        store.subscribe("k", got.append)
        handler.dataReceived(b'["k", 1]', ADDRESS)
        handler.dataReceived(signed("k", 2, 1, signingKey=None, sent=0.0), ADDRESS)
        handler.dataReceived(signed("k", 3, 2, signingKey=b"any key at all"), ADDRESS)
        self.assertEqual([d.value for d in got], [1, 2, 3])
        self.assertEqual(dict(handler.stats.dropped), {})


def _keyFile(testCase: SynchronousTestCase, contents: bytes) -> str:
    path = testCase.mktemp()
    with open(path, "wb") as f:
        f.write(contents)
    return path


def _handler(service: Any) -> DatagramHandler:
    """
    The L{DatagramHandler} behind the data group of a service from
    L{tap.makeService}.
    """
    for child in service:
        if isinstance(child, MulticastFeed):
            return child.handler
    raise AssertionError("no multicast service")


class OptionsTests(SynchronousTestCase):
    """
    C{--source-key-file} and C{--source-max-skew}.
    """

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_keys(self) -> None:
        """
        C{--source-key-file} may be given several times; each file's bytes,
        without trailing white space, are a key, the first one first.
        """
        options = self.parse(
            "--source-key-file", _keyFile(self, KEY + b"\n"),
            "--source-key-file", _keyFile(self, OLD_KEY),
        )
        self.assertEqual(options["source-keys"], [KEY, OLD_KEY])
        self.assertEqual(self.parse()["source-keys"], [])

    def test_badKeyFiles(self) -> None:
        """
        A missing or empty key file stops the server at start-up.
        """
        for path in (self.mktemp(), _keyFile(self, b" \n")):
            self.assertRaises(UsageError, self.parse, "--source-key-file", path)

    def test_skew(self) -> None:
        """
        The window is 30 seconds unless told; 0 turns it off; a negative
        number is refused.
        """
        self.assertEqual(self.parse()["source-max-skew"], 30.0)
        self.assertEqual(self.parse("--source-max-skew", "0")["source-max-skew"], 0.0)
        self.assertRaises(UsageError, self.parse, "--source-max-skew", "-1")

    def test_wired(self) -> None:
        """
        The server's handler gets the keys and the window; without keys, no
        signature is required and no window applies.
        """
        options = self.parse("--source-key-file", _keyFile(self, KEY),
                             "--source-max-skew", "5", "--error-log", "-")
        handler = _handler(tap.makeService(options, reactor=MemoryReactorClock()))
        self.assertEqual((handler.signingKeys, handler.freshness), ((KEY,), 5.0))
        plain = _handler(tap.makeService(self.parse("--error-log", "-"),
                                         reactor=MemoryReactorClock()))
        self.assertEqual((plain.signingKeys, plain.freshness), ((), None))
        noWindow = self.parse("--source-key-file", _keyFile(self, KEY),
                              "--source-max-skew", "0", "--error-log", "-")
        handler = _handler(tap.makeService(noWindow, reactor=MemoryReactorClock()))
        self.assertIsNone(handler.freshness)


@inlineCallbacks
def _get(url: str) -> Any:
    response = yield treq.get(url, persistent=False)
    content = yield response.content()
    returnValue((response, content))


class SignedProcessTests(TestCase):
    """
    A real server started with C{--source-key-file}.
    """

    timeout = 60

    @inlineCallbacks
    def test_onlySignedFresh(self) -> Any:
        """
        Signed datums reach a long poll; forged, unsigned, replayed and stale
        ones are dropped and counted under exactly those reasons in
        C{/stats.json}, and do not reach it.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(KEY + b"\n")
        proc = yield ArtcastProcess(
            self, extra=["--source-key-file", path, "--source-max-skew", "30"]
        ).start()
        boot = int(time.time() * 1000)
        first = signed("k", "first", 1, sent=time.time(), boot=boot)
        answer = _get(proc.url + "/artcasts/k")
        yield proc.waitForWaiters(1)
        proc.data.send(first)
        response, body = yield answer
        self.assertEqual(json.loads(body), "first")
        self.assertEqual(response.headers.getRawHeaders("Artcast-Id"), [f"src.{boot}.1"])

        answer = _get(proc.url + "/artcasts/k")
        yield proc.waitForWaiters(1)
        now = time.time()
        for datagram in (
            signed("k", "forged", 2, sent=now, boot=boot, signingKey=b"f" * 32),
            b'["k", "unsigned v1"]',
            signed("k", "unsigned", 2, sent=now, boot=boot, signingKey=None),
            first,
            signed("k", "stale", 2, sent=now - 3600, boot=boot),
        ):
            proc.data.send(datagram)
        stats = yield proc.waitFor(lambda s: sum(s["dropped"].values()) >= 5)
        self.assertEqual(
            stats["dropped"],
            {"bad-signature": 1, "unsigned": 2, "replayed": 1, "stale": 1},
        )
        proc.data.send(signed("k", "second", 2, sent=time.time(), boot=boot))
        response, body = yield answer
        self.assertEqual(json.loads(body), "second")
        self.assertEqual(response.headers.getRawHeaders("Artcast-Id"), [f"src.{boot}.2"])
