"""
Repair with the real C{twistd artcast} on 127.0.0.1: a sender that drops
one datagram is NACKed by the server over a real UDP socket, answers by
hand, and the repair reaches clients in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, returnValue
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bench import lossy

from artcast.wire import Stamp, encodeConfirm, encodeData, parseNack
from tests.harness import ArtcastProcess
from tests.test_integration import fetch

SOURCE = "repairing"


class RepairIntegrationTests(TestCase):
    """
    The server NACKs a lost datagram to the socket it came from, and the
    repair is delivered.
    """

    timeout = 60

    @inlineCallbacks
    def receiveNack(self, proc: ArtcastProcess, limit: float = 10.0) -> Any:
        """
        Wait, a bounded time, for a datagram on the sender's own socket.
        """
        sock = proc.data.socket
        sock.setblocking(False)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                data, address = sock.recvfrom(65535)
            except BlockingIOError:
                yield deferLater(reactor, 0.01, lambda: None)
                continue
            returnValue((data, address))
        self.fail("no NACK within %s s; server output:\n%s" % (limit, proc.output[-2000:]))

    @inlineCallbacks
    def test_nackedAndRepaired(self) -> None:
        """
        Seq 2 dropped: the server holds seq 3, NACKs seq 2 by unicast from
        its data port, and the re-sent datagram (after an NCF) delivers 2
        then 3 to a client resuming after 1.
        """
        proc = yield ArtcastProcess(self).start()
        boot = int(time.time() * 1000)
        datagrams = {
            seq: encodeData("r/k", seq, Stamp(SOURCE, boot, seq, time.time()),
                            repairable=True)[0]
            for seq in (1, 2, 3)
        }
        proc.data.send(datagrams[1])
        yield proc.waitFor(lambda stats: stats["datums"] == 1)
        proc.data.send(datagrams[3])
        data, address = yield self.receiveNack(proc)
        self.assertEqual(address[1], proc.dataPort)
        nack = parseNack(data)
        self.assertEqual((nack.source, nack.boot, nack.ranges), (SOURCE, boot, ((2, 2),)))
        stats = yield proc.stats()
        self.assertEqual(stats["datums"], 1)
        self.assertEqual(stats["repair"]["repairHeld"], 1)
        proc.data.send(encodeConfirm(Stamp(SOURCE, boot, 0, time.time()), [(2, 2)]))
        proc.data.send(datagrams[2])
        stats = yield proc.waitFor(lambda stats: stats["datums"] == 3)
        self.assertEqual(stats["repair"]["repairsReceived"], 1)
        self.assertEqual(stats["repair"]["sources"][SOURCE]["nacksSent"], 1)
        self.assertEqual(stats["repair"]["unrecoverable"], 0)
        seen = []
        since = f"{SOURCE}.{boot}.1"
        for _ in range(2):
            response, body = yield fetch(proc.url + "/artcasts/r/k?since=" + since)
            since = response.headers.getRawHeaders("artcast-id")[0]
            seen.append(since)
            self.assertIsNone(response.headers.getRawHeaders("artcast-gap"))
        self.assertEqual(seen, [f"{SOURCE}.{boot}.2", f"{SOURCE}.{boot}.3"])

    @inlineCallbacks
    def test_noRepair(self) -> None:
        """
        With C{--no-repair} the server sends no NACK: the datum after the
        dropped one is published once the reorder window is over, and the
        dropped one is counted unrecoverable, and a client resuming across
        it is told of the gap.
        """
        proc = yield ArtcastProcess(self, extra=["--no-repair"]).start()
        boot = int(time.time() * 1000)
        for seq in (1, 3):
            [datagram] = encodeData("r/k", seq, Stamp(SOURCE, boot, seq, time.time()),
                                    repairable=True)
            proc.data.send(datagram)
        stats = yield proc.waitFor(lambda stats: stats["datums"] == 2)
        self.assertEqual(stats["repair"]["enabled"], False)
        self.assertEqual(stats["repair"]["unrecoverable"], 1)
        self.assertEqual(stats["repair"]["nacksSent"], 0)
        proc.data.socket.setblocking(False)
        self.assertRaises(BlockingIOError, proc.data.socket.recvfrom, 65535)
        response, _ = yield fetch(proc.url + f"/artcasts/r/k?since={SOURCE}.{boot}.1")
        self.assertEqual(response.headers.getRawHeaders("artcast-id"), [f"{SOURCE}.{boot}.3"])
        self.assertEqual(response.headers.getRawHeaders("artcast-gap"), ["1"])


class RealLossTests(SynchronousTestCase):
    """
    Under real kernel loss (nftables in a private network namespace), both
    ways, Artcast's own source and server repair what is lost.
    """

    skip = None if lossy.available()[0] else lossy.available()[1]

    def test_repairedUnderLoss(self) -> None:
        """
        A server losing 20 % of what it receives and of what it sends (its
        NACKs) hands a C{since=} follower every datum from the first it
        heard, in order, once, without a gap, and counts the repairs.
        """
        network = lossy.Network()
        self.addCleanup(network.close)
        source = network.addHost()
        server = network.addHost()
        server.artcast(os.path.abspath(self.mktemp()), ["--history", "1000"])
        base = "http://%s:8080" % (server.address,)
        server.waitForHTTP(base + "/stats.json")
        follower = server.python(["-m", "bench.lossy", "follow", base, "test/repair", "3"],
                                 stdout=subprocess.PIPE)
        self.assertEqual(follower.stdout.readline(), b"ready\n")
        server.setLoss(20, direction="both")
        sender = source.python(
            ["-m", "bench.lossy", "send", lossy.GROUP, str(lossy.DATA_PORT),
             str(lossy.REGISTER_PORT), source.address, "test/repair", "400", "500"],
            stdout=subprocess.PIPE)
        sender.communicate(timeout=60)
        answers = [json.loads(line) for line in
                   follower.communicate(timeout=60)[0].decode().splitlines() if line.strip()]
        numbers = [answer["n"] for answer in answers]
        self.assertLessEqual(numbers[0], 5)
        self.assertEqual(numbers, list(range(numbers[0], 400)))
        self.assertFalse(any(answer["gap"] for answer in answers[1:]))
        server.setLoss(0, direction="both")
        repair = json.loads(server.get(base + "/stats.json")["body"])["repair"]
        self.assertGreater(repair["nacksSent"], 0)
        self.assertGreater(repair["repairsReceived"], 0)
        self.assertEqual(repair["unrecoverable"], 0)
