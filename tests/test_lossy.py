# -*- test-case-name: tests.test_lossy -*-
"""
Tests on real kernel loss (issue 11's test bed, L{bench.lossy}): private
network namespaces joined by a bridge, nftables dropping a random share of
UDP in one host's namespace, the real C{twistd artcast} and
L{artcast.source.Source} in namespaces of their own.

They need root, C{ip netns} and C{nft}, and skip with the reason otherwise.
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
        A server started with C{--no-repair} and losing 20 % of its
        datagrams counts the lost datums as C{missed}; a live C{since=}
        follower gets the rest in order, once each; a client resuming from
        before the lost first datums gets C{Artcast-Gap: 1}.
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
             str(lossy.REGISTER_PORT), source.address, KEY, "400", "500", "3", "0"],
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


class RepairTests(SynchronousTestCase):
    """
    NACK repair on real loss: three real servers in namespaces of their
    own, fed by L{artcast.source.Source} (repair on, as it comes).
    """

    skip = SKIP

    def run3(self, count: int, rate: float, serverLoss: int, sourceLoss: int) -> list[dict]:
        """
        Send C{count} datums at C{rate}/s to 3 servers, each losing
        C{serverLoss} % of the UDP it receives and sends, the source host
        C{sourceLoss} % of what it sends; each server has a C{since=}
        follower.

        @return: per server, its follower's answers and its C{/stats.json}.
        """
        network = lossy.Network()
        self.addCleanup(network.close)
        source = network.addHost()
        hosts = [network.addHost() for _ in range(3)]
        directory = os.path.abspath(self.mktemp())
        for i, host in enumerate(hosts):
            host.artcast(os.path.join(directory, "server%d" % (i,)), ["--history", "5000"])
        followers = []
        for host in hosts:
            host.waitForHTTP("http://%s:8080/stats.json" % (host.address,))
            host.setLoss(serverLoss, direction="both")
            follower = host.python(
                ["-m", "bench.lossy", "follow", "http://%s:8080" % (host.address,), KEY, "3"],
                stdout=subprocess.PIPE)
            self.assertEqual(follower.stdout.readline(), b"ready\n")
            followers.append(follower)
        source.setLoss(sourceLoss, direction="out")
        sender = source.python(
            ["-m", "bench.lossy", "send", lossy.GROUP, str(lossy.DATA_PORT),
             str(lossy.REGISTER_PORT), source.address, KEY, str(count), str(rate)],
            stdout=subprocess.PIPE)
        self.assertEqual(_lines(sender.communicate(timeout=60)[0])[0]["sent"], count)
        results = []
        for host, follower in zip(hosts, followers):
            answers = _lines(follower.communicate(timeout=90)[0])
            stats = json.loads(host.get("http://%s:8080/stats.json" % (host.address,))["body"])
            results.append({"answers": answers, "stats": stats})
        return results

    def test_twentyPercentEverywhere(self) -> None:
        """
        With 20 % loss both ways at each of 3 servers (NACKs, NCFs and
        repairs lost too), every one of 1,000 datums reaches every server's
        C{since=} follower, in order, once, with no gap; each server lost
        some on arrival, asked for them and got them repaired.
        """
        for result in self.run3(1000, 500.0, 20, 0):
            numbers = [answer["n"] for answer in result["answers"]]
            self.assertEqual(numbers, list(range(1000)))
            self.assertFalse(any(answer["gap"] for answer in result["answers"]))
            counts = result["stats"]["repair"]
            self.assertGreater(counts["repairGaps"], 0)
            self.assertGreater(counts["nacksSent"], 0)
            self.assertGreater(counts["repairsReceived"], 0)
            self.assertEqual(counts["unrecoverable"], 0)

    def test_suppression(self) -> None:
        """
        When the source's own link loses 20 % of what it sends, every
        server misses the same datums: they are all repaired, some servers'
        NACKs are suppressed by another's, and the 3 servers together send
        fewer NACKs than the datums they found missing.
        """
        results = self.run3(1000, 500.0, 0, 20)
        for result in results:
            self.assertEqual([answer["n"] for answer in result["answers"]], list(range(1000)))
        counts = [result["stats"]["repair"] for result in results]
        self.assertGreater(sum(c["nacksSuppressed"] for c in counts), 0)
        self.assertLess(sum(c["nacksSent"] for c in counts), sum(c["repairGaps"] for c in counts))


class TeardownTests(SynchronousTestCase):
    """
    L{lossy.Network.close} removes what the network made.
    """

    skip = SKIP

    def test_noNamespaceLeft(self) -> None:
        """
        After C{close}, none of the network's namespaces (its bridge's and
        its hosts') is left, and the processes it started are gone.  (Only
        its own names are looked at: other runs on the machine may make
        and remove namespaces meanwhile.)
        """
        network = lossy.Network()
        host = network.addHost()
        network.addHost()
        host.setLoss(50, direction="both")
        sleeper = host.spawn(["sleep", "60"])

        def mine() -> list[str]:
            return sorted(name for name in lossy.netnsList()
                          if name.startswith(network.prefix)
                          and name[len(network.prefix):] in ("br", "h1", "h2"))

        self.assertEqual(mine(), sorted(network.prefix + end for end in ("br", "h1", "h2")))
        network.close()
        self.assertEqual(mine(), [])
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
        missed, with or without repair; at 10 % every server misses some on
        arrival, and with repair every client still gets every datum.
        """
        path = os.path.join(self.mktemp() + ".json")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(repair.main(["--quick", "--json", path]), 0)
        with open(path) as f:
            result = json.load(f)
        rows = result["rows"]
        self.assertEqual([(row["loss"], row["repair"], row["server"]) for row in rows],
                         [(loss, mode == "repair", server) for loss in (0, 10)
                          for mode in repair.MODES for server in (1, 2, 3)])
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "| " + " | ".join(repair.COLUMNS) + " |")
        self.assertEqual(len(lines), 2 + len(rows) + 1 + 2 + 1)
        for line, row in zip(lines[2:2 + len(rows)], rows):
            self.assertEqual(line.count("|"), len(repair.COLUMNS) + 1)
            if not row["repair"]:
                self.assertTrue(line.endswith("| - | - | - | - |"), line)
        self.assertEqual([s["loss"] for s in result["summaries"]], [0, 10])
        for row in rows:
            self.assertEqual(row["sent"], 1000)
            self.assertEqual(row["duplicates"], 0)
            self.assertTrue(row["inOrder"])
            if row["loss"] == 0:
                self.assertEqual((row["delivered"], row["gaps"], row["missed"]), (1000, 0, 0))
            else:
                self.assertGreater(row["missed"], 0)
            if row["repair"]:
                self.assertEqual((row["delivered"], row["unrecoverable"]), (1000, 0))
