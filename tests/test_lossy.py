# -*- test-case-name: tests.test_lossy -*-
"""
Tests on real kernel loss (issue 11's test bed, L{bench.lossy}): private
network namespaces joined by a bridge, nftables dropping a random share of
UDP in one host's namespace, the real C{twistd artcast} and
L{artcast.source.Source} in namespaces of their own.

They need root, C{ip netns} and C{nft}, and skip with the reason otherwise.
They show the behaviour I{without} repair: what repair will change is
marked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from bench import lossy, repair

AVAILABLE, WHY = lossy.available()
SKIP = None if AVAILABLE else WHY
KEY = "test/loss"


def _lines(output: bytes) -> list[dict]:
    return [json.loads(line) for line in output.decode().splitlines() if line.strip()]


class OutsideTests(SynchronousTestCase):
    """
    The senders of L{lossy}, which use TTL 1, send nothing from the
    machine's own network.
    """

    def test_refusedOutsideTheNetwork(self) -> None:
        """
        C{blast} and C{send} run in the machine's own namespace exit with
        a one-line refusal and send nothing, even when given an address of
        the test network (which exists only inside its namespaces).
        """
        for command in (
            ["blast", lossy.GROUP, "6000", "127.0.0.1", "1", "1"],
            ["blast", lossy.GROUP, "6000", lossy.SUBNET + ".1", "1", "1"],
            ["send", lossy.GROUP, "6000", "6001", "127.0.0.1", KEY, "1", "1"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "bench.lossy", *command],
                cwd=lossy.ROOT, capture_output=True, text=True, timeout=60,
            )
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("sends only from a host of its own network", done.stderr)
            self.assertEqual(done.stdout, "")

class LossTests(SynchronousTestCase):
    """
    The network and its loss rules, with plain UDP.
    """

    skip = SKIP

    def setUp(self) -> None:
        self.network = lossy.Network()
        self.addCleanup(self.network.close)
        self.sender = self.network.addHost()
        self.receiver = self.network.addHost()

    def received(self, count: int) -> int:
        """
        Send C{count} multicast datagrams from the sender to the receiver,
        paced, and return how many arrived.
        """
        receiver = self.receiver.python(
            ["-m", "bench.lossy", "receive", lossy.GROUP, "6000", self.receiver.address, "2"],
            stdout=subprocess.PIPE)
        self.assertEqual(receiver.stdout.readline(), b"ready\n")
        sender = self.sender.python(
            ["-m", "bench.lossy", "blast", lossy.GROUP, "6000", self.sender.address,
             str(count), "5000"],
            stdout=subprocess.PIPE)
        self.assertEqual(_lines(sender.communicate(timeout=30)[0]), [{"sent": count}])
        return _lines(receiver.communicate(timeout=40)[0])[0]["received"]

    def test_noLoss(self) -> None:
        """
        Without a loss rule, every one of 2000 multicast datagrams from one
        host reaches the other over the bridge.
        """
        self.assertEqual(self.received(2000), 2000)

    def test_twentyPercent(self) -> None:
        """
        With 20 % incoming UDP loss on the receiver, between 75 % and 85 % of
        2000 multicast datagrams arrive (over 10 standard deviations wide).
        """
        self.receiver.setLoss(20)
        received = self.received(2000)
        self.assertTrue(1500 <= received <= 1700, received)

    def test_lossRemoved(self) -> None:
        """
        A loss of 0 % removes the rule: everything arrives again.
        """
        self.receiver.setLoss(100)
        self.receiver.setLoss(0)
        self.assertEqual(self.received(500), 500)


class ServerTests(SynchronousTestCase):
    """
    The real C{twistd artcast} in a lossy namespace, fed by a version 2
    L{artcast.source.Source} from another one.
    """

    skip = SKIP

    def test_gapsWithoutRepair(self) -> None:
        """
        A server without repair (C{--no-repair}) losing 20 % of its
        datagrams counts the lost datums as
        C{missed}; a live C{since=} follower gets the rest in order, once
        each; a client resuming from before the lost first datums gets
        C{Artcast-Gap: 1}.
        """
        network = lossy.Network()
        self.addCleanup(network.close)
        source = network.addHost()
        server = network.addHost()
        directory = os.path.abspath(self.mktemp())
        server.artcast(directory, ["--history", "1000", "--no-repair"])
        base = "http://%s:8080" % (server.address,)
        server.waitForHTTP(base + "/stats.json")
        follower = server.python(["-m", "bench.lossy", "follow", base, KEY, "2"],
                                 stdout=subprocess.PIPE)
        self.assertEqual(follower.stdout.readline(), b"ready\n")
        # The first 3 datums are all lost, then 20 % of the rest.
        server.setLoss(100)
        sender = source.python(
            ["-m", "bench.lossy", "send", lossy.GROUP, str(lossy.DATA_PORT),
             str(lossy.REGISTER_PORT), source.address, KEY, "400", "500", "3"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        paused = json.loads(sender.stdout.readline())["paused"]
        server.setLoss(20)
        sent = _lines(sender.communicate(b"\n", timeout=30)[0])[0]
        firstId = sent["first"]
        self.assertEqual(paused.rsplit(".", 1)[1], "3")

        answers = _lines(follower.communicate(timeout=60)[0])
        numbers = [answer["n"] for answer in answers]
        self.assertTrue(250 <= len(numbers) < 397, len(numbers))
        self.assertEqual(numbers, sorted(set(numbers)))

        stats = json.loads(server.get(base + "/stats.json")["body"])
        self.assertGreater(stats["missed"], 0)

        resumed = server.get(base + "/artcasts/%s?since=%s&timeout=1" % (KEY, firstId))
        self.assertEqual(resumed["status"], 200)
        self.assertEqual(resumed["headers"].get("Artcast-Gap"), "1")
        self.assertEqual(json.loads(resumed["body"])["n"], numbers[0])


class TeardownTests(SynchronousTestCase):
    """
    L{lossy.Network.close} removes what the network made.
    """

    skip = SKIP

    def test_noNamespaceLeft(self) -> None:
        """
        After C{close}, C{ip netns list} is as it was before the network,
        and the processes it started are gone.
        """
        before = lossy.netnsList()
        network = lossy.Network()
        host = network.addHost()
        network.addHost()
        host.setLoss(50, direction="both")
        sleeper = host.spawn(["sleep", "60"])
        self.assertEqual(len(lossy.netnsList()), len(before) + 3)
        network.close()
        self.assertEqual(sorted(lossy.netnsList()), sorted(before))
        self.assertIsNotNone(sleeper.poll())
        network.close()


    def test_sweepsWhatAKilledRunLeft(self) -> None:
        """
        A new network removes the namespaces named for a process that no
        longer exists (a run killed before its C{atexit}), and leaves the
        others alone.
        """
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = "ac%dx1h1" % (gone.pid,)
        subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", stale], capture_output=True)
        network = lossy.Network()
        self.addCleanup(network.close)
        names = lossy.netnsList()
        self.assertNotIn(stale, names)
        self.assertIn(network.bridge, names)

class RepairBenchTests(SynchronousTestCase):
    """
    C{bench/repair.py --quick} end to end, so that the baseline cannot rot.
    """

    skip = SKIP

    def test_quick(self) -> None:
        """
        The quick run prints a well-formed table and JSON; at 0 % loss every
        datum reaches every client in order, once, with no gap and nothing
        missed; at 10 % every server misses some.
        """
        path = os.path.join(self.mktemp() + ".json")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(repair.main(["--quick", "--json", path]), 0)
        with open(path) as f:
            result = json.load(f)
        rows = result["rows"]
        self.assertEqual([(row["loss"], row["server"]) for row in rows],
                         [(loss, server) for loss in (0, 10) for server in (1, 2, 3)])
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "| " + " | ".join(repair.COLUMNS) + " |")
        self.assertEqual(len(lines), 2 + len(rows) + 1)
        for line in lines[2:-1]:
            self.assertEqual(line.count("|"), len(repair.COLUMNS) + 1)
            self.assertTrue(line.endswith("| - | - | - |"), line)
        for row in rows:
            self.assertEqual(row["sent"], 1000)
            self.assertEqual(row["duplicates"], 0)
            self.assertTrue(row["inOrder"])
            if row["loss"] == 0:
                self.assertEqual((row["delivered"], row["gaps"], row["missed"]), (1000, 0, 0))
            else:
                self.assertGreater(row["missed"], 0)
