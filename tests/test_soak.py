# -*- test-case-name: tests.test_soak -*-
"""
Tests for the soak test (C{bench/soak.py}): its short mode run end to end
against the real server, so that it cannot rot, and its pure parts (the
garbage really is garbage, the response parser, the verdict).

Nothing here asserts on the churn soak's timing or memory figures: its
end-to-end test checks that the run passed and that its summary is
well-formed, with cycles completed and datums delivered.

The abuse soak (C{bench/soak.py --abuse}, L{bench.abuse}) is run in its
short mode with every attack, and its verdict asserted: the legitimate
clients lost nothing, their latency p99 stayed under a second and the
server's RSS under the ceiling of its options.  Its checks, option parsing
and datagrams are tested on their own too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from artcast import wire

from artcast.server.feeds import reception
from bench import abuse, soak

ROOT = Path(__file__).resolve().parent.parent

#: How long the short mode may take, start and stop included.
QUICK_LIMIT = 240

SKIP_QUICK = None if os.path.exists("/proc/self/status") else "the soak reads /proc"

#: The lines the summary must hold, each with the start of its text.
SUMMARY_LINES = (
    "duration:", "cycles:", "answers:", "datums sent:", "datums delivered:",
    "errors:", "dropped datagrams:", "rss:", "server:", "verdict:",
)

_quick: dict[str, Any] = {}


def runOnce(
    cache: dict[str, Any], arguments: list[str], prefix: str, limit: float
) -> dict[str, Any]:
    """
    Run C{bench/soak.py} with C{arguments} once, bounded in time, and keep
    its exit status, output and JSON document in C{cache}.
    """
    if not cache:
        outDir = tempfile.mkdtemp(prefix=prefix)
        jsonPath = os.path.join(outDir, "soak.json")
        try:
            result = subprocess.run(
                [
                    sys.executable, str(ROOT / "bench" / "soak.py"), *arguments,
                    "--json", jsonPath, "--out-dir", outDir,
                ],
                cwd=str(ROOT),
                capture_output=True,
                text=True,
                timeout=limit,
            )
            cache["returncode"] = result.returncode
            cache["stdout"] = result.stdout
            cache["stderr"] = result.stderr
            if os.path.exists(jsonPath):
                with open(jsonPath) as f:
                    cache["document"] = json.load(f)
        finally:
            shutil.rmtree(outDir, ignore_errors=True)
    return cache


def quickRun() -> dict[str, Any]:
    """
    Run C{bench/soak.py --quick} once, bounded in time, and keep its exit
    status, output and JSON document.
    """
    return runOnce(_quick, ["--quick"], "artcast-soak-", QUICK_LIMIT)


def changed(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """
    A made-up run's document with C{changes} applied: each name is a path
    through the document's dictionaries, levels joined with C{__}
    (C{legit__missing}).
    """
    for path, value in changes.items():
        target = document
        *parents, name = path.split("__")
        for parent in parents:
            target = target[parent]
        target[name] = value
    return document


def summaryLines(stdout: str) -> dict[str, str]:
    """
    The summary's lines by their label (the text before the first colon).
    """
    lines: dict[str, str] = {}
    for line in stdout.splitlines():
        for label in SUMMARY_LINES:
            if line.startswith(label):
                lines[label] = line[len(label):].strip()
    return lines


class QuickModeTests(SynchronousTestCase):
    """
    The short mode, as CI runs it: 10 s, 200 clients, against the real
    C{twistd artcast}.
    """

    skip = SKIP_QUICK

    def run_(self) -> dict[str, Any]:
        run = quickRun()
        self.assertEqual(
            run["returncode"], 0,
            f"soak.py --quick failed:\n{run['stdout']}\n{run['stderr'][-4000:]}",
        )
        return run

    def test_passes(self) -> None:
        """
        The short soak exits 0 and prints a passing verdict: the server
        lived, answered no 5xx and did not grow past the bound.
        """
        run = self.run_()
        self.assertTrue(summaryLines(run["stdout"])["verdict:"].startswith("PASS"))
        self.assertTrue(run["document"]["verdict"]["passed"])
        self.assertFalse(run["document"]["server"]["died"])
        self.assertNotIn("5xx", run["document"]["errors"])

    def test_summaryWellFormed(self) -> None:
        """
        The printed summary has every line, and its cycle and delivery
        counts are positive whole numbers.
        """
        lines = summaryLines(self.run_()["stdout"])
        self.assertEqual(sorted(lines), sorted(SUMMARY_LINES))
        cycles = int(lines["cycles:"].split()[0])
        delivered = int(lines["datums delivered:"].split()[0])
        self.assertGreater(cycles, 0)
        self.assertGreater(delivered, 0)
        self.assertIn("start", lines["rss:"])
        self.assertIn("end", lines["rss:"])

    def test_documentFigures(self) -> None:
        """
        The JSON document holds the figures: cycles by kind, datums sent,
        published and delivered, RSS at start and end, and the server's
        stats at the end.
        """
        document = self.run_()["document"]
        self.assertTrue(document["settings"]["quick"])
        self.assertEqual(document["settings"]["clients"], 200)
        self.assertGreater(document["cycles"], 0)
        self.assertEqual(document["cycles"], sum(document["cycles_by_kind"].values()))
        self.assertGreater(document["datums"]["steady_sent"], 0)
        self.assertGreater(document["datums"]["server_published"], 0)
        self.assertGreater(document["datums"]["delivered"], 0)
        self.assertIsInstance(document["rss"]["start_kib"], int)
        self.assertIsInstance(document["rss"]["end_kib"], int)
        self.assertIn("dropped", document["stats_end"])
        self.assertGreater(sum(document["dropped"].values()), 0)


class GarbageTests(SynchronousTestCase):
    """
    The garbage sender's datagrams.
    """

    def setUp(self) -> None:
        self.garbage = soak.GarbageSender("239.255.1.1", 9, 10, seed=1)
        self.addCleanup(self.garbage.close)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.garbage.sendto = self.record  # type: ignore[method-assign]

    def record(self, datagram: bytes, address: tuple[str, int]) -> bool:
        """
        Stand in for the socket: keep what would have been sent.
        """
        self.sent.append((datagram, address))
        return True

    def datagrams(self, count: int) -> list[tuple[str, bytes, tuple[str, int]]]:
        out = []
        for _ in range(count):
            kind, body, toRegister = self.garbage.datagram()
            if body:
                out.append((kind, body, self.garbage.register if toRegister else self.garbage.data))
            else:
                out.extend((kind, b, address) for b, address in self.sent)
                self.sent.clear()
        return out

    def test_everyKindSent(self) -> None:
        """
        Every kind of garbage occurs (a replay's first copy under its own
        name), and no datagram is larger than a UDP datagram can be.
        """
        expected = set(soak.GARBAGE_KINDS) | {"valid-then-replayed"}
        kinds: set[str] = set()
        for _ in range(100):
            datagrams = self.datagrams(1000)
            kinds.update(kind for kind, _, _ in datagrams)
            self.assertLessEqual(
                max(len(body) for _, body, _ in datagrams), soak.MAX_DATAGRAM
            )
            if kinds == expected:
                break
        self.assertEqual(kinds, expected)

    def test_garbageIsRefused(self) -> None:
        """
        Every datagram the server's parser takes is one the sender means to
        be valid (a replay's first copy or a datagram-sized value); a
        fragment never joins into a value that passes --max-value-size.
        """
        reassembler = reception.Reassembler(Clock(), maxValueSize=soak.DEFAULT_MAX_VALUE_SIZE)
        for kind, body, address in self.datagrams(3000):
            try:
                if address == self.garbage.register:
                    wire.parseRegister(body)
                    message: Any = "registration"
                else:
                    message = wire.parseData(body, maxValueSize=soak.DEFAULT_MAX_VALUE_SIZE)
                    if isinstance(message, wire.Fragment):
                        message = reassembler.feed(message)
                        if message is None:
                            continue
            except wire.BadDatagram:
                continue
            self.assertIn(kind, soak.VALID_GARBAGE | {"replay"}, (kind, body[:200]))

    def test_sprayKeysDistinct(self) -> None:
        """
        The spray sends valid version 1 datums, each on a key of its own.
        """
        for _ in range(500):
            self.garbage.spray()
        keys = {wire.parseData(body).key for body, _ in self.sent}
        self.assertEqual(len(keys), 500)
        self.assertEqual(self.garbage.sprayed, 500)


class ResponseTests(SynchronousTestCase):
    """
    The client's reading of response heads.
    """

    def test_parseHead(self) -> None:
        """
        A status line and headers are split into version, status and
        lower-cased header names.
        """
        version, status, headers = soak.parseHead(
            b"HTTP/1.1 204 No Content\r\nArtcast-Id: a.1.2\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual((version, status), ("HTTP/1.1", 204))
        self.assertEqual(headers, {"artcast-id": "a.1.2", "content-length": "0"})

    def test_parseHeadRefusesNonHTTP(self) -> None:
        """
        A head that does not start with an HTTP/1.x status line is a
        protocol error.
        """
        self.assertRaises(soak.ProtocolError, soak.parseHead, b"SSH-2.0-x\r\n\r\n")
        self.assertRaises(soak.ProtocolError, soak.parseHead, b"HTTP/1.1 abc\r\n\r\n")


class VerdictTests(SynchronousTestCase):
    """
    The verdict follows the exit conditions.
    """

    def document(self, **changes: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "settings": {"kinds": dict(soak.KINDS)},
            "server": {"died": False, "exit_code": 0, "after_drain": None},
            "stats_end": {"dropped": {}},
            "errors": {},
            "rss": {"diff_kib": 1024, "bound_mib": 50.0},
            "cycles": 10,
            "datums": {
                "delivered": 5, "server_published_total": 3, "valid_sent_total": 3,
            },
            "server_log": {"tracebacks": 0, "unhandled": 0, "shut_down": True},
        }
        return changed(document, changes)

    def test_passes(self) -> None:
        """
        A run with no failure passes with no warning.
        """
        self.assertEqual(soak.judge(self.document(), strict=False), (True, [], []))

    def test_serverDied(self) -> None:
        """
        A server that died fails the run.
        """
        passed, failures, _ = soak.judge(self.document(server__died=True), strict=False)
        self.assertFalse(passed)
        self.assertIn("the server died", failures)

    def test_fiveHundreds(self) -> None:
        """
        Any 5xx answer fails the run.
        """
        passed, failures, _ = soak.judge(self.document(errors={"5xx": 1}), strict=False)
        self.assertFalse(passed)

    def test_rssBound(self) -> None:
        """
        Growing past the RSS bound fails the run; growing less does not.
        """
        self.assertFalse(soak.judge(self.document(rss__diff_kib=51 * 1024), False)[0])
        self.assertTrue(soak.judge(self.document(rss__diff_kib=49 * 1024), False)[0])

    def test_strictFailsOnWarnings(self) -> None:
        """
        Client errors are a warning, and a failure with --strict.
        """
        document = self.document(errors={"timeout": 2})
        self.assertEqual(soak.judge(document, strict=False)[:2], (True, []))
        self.assertFalse(soak.judge(document, strict=True)[0])


class OptionTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_quickDefaults(self) -> None:
        """
        --quick is 10 s with 200 clients; without it, 60 s with 1000.
        """
        quick = soak.parseArgs(["--quick"])
        self.assertEqual((quick.duration, quick.clients), (10.0, 200))
        full = soak.parseArgs([])
        self.assertEqual((full.duration, full.clients), (60.0, 1000))

    def test_kinds(self) -> None:
        """
        --kinds takes kind=weight pairs, a bare kind weighing 1, and refuses
        unknown kinds.
        """
        self.assertEqual(soak.parseKinds("poll=2,rst"), {"poll": 2.0, "rst": 1.0})
        self.assertRaises(Exception, soak.parseKinds, "nonsense")

    def test_slope(self) -> None:
        """
        The RSS trend is the least-squares slope in KiB per minute.
        """
        self.assertEqual(soak.slope([(0, 100), (1, 101), (2, 102)]), 60.0)
        self.assertIsNone(soak.slope([(0, 1)]))


# --------------------------------------------------------------------------
# The abuse soak (bench/soak.py --abuse, bench/abuse.py)

#: How long the abuse soak's short mode may take, start and stop included.
ABUSE_LIMIT = 150

_abuse: dict[str, Any] = {}


def abuseRun() -> dict[str, Any]:
    """
    Run C{bench/soak.py --abuse --quick} once, every attack on, bounded in
    time, and keep its exit status, output and JSON document.
    """
    return runOnce(_abuse, ["--abuse", "--quick"], "artcast-abuse-", ABUSE_LIMIT)


class AbuseQuickTests(SynchronousTestCase):
    """
    The abuse soak's short mode, every attack on, against the real
    C{twistd artcast}.
    """

    skip = SKIP_QUICK

    def test_verdict(self) -> None:
        """
        Under every attack the legitimate since-clients lose nothing, their
        latency p99 stays under a second, the server's RSS stays under the
        ceiling its options give, and the attacks judged on their own hold:
        the run exits 0 with a passing verdict.
        """
        run = abuseRun()
        self.assertIn("document", run, run["stderr"][-4000:])
        verdict = run["document"]["verdict"]
        self.assertEqual(
            (run["returncode"], verdict["failures"]), (0, []),
            f"soak.py --abuse --quick failed:\n{run['stdout']}",
        )
        self.assertTrue(run["stdout"].splitlines()[-1].startswith("verdict: PASS"))

    def test_documentFigures(self) -> None:
        """
        The run reports, whatever its verdict: every attack with what it
        did (unless the run was stopped early), the legitimate datums sent
        and delivered with their latency, the RSS against the ceiling and
        its terms, and a last line that is the verdict.
        """
        run = abuseRun()
        self.assertIn("document", run, run["stderr"][-4000:])
        document = run["document"]
        self.assertEqual(list(document["attacks"]), list(abuse.ATTACKS))
        if document["rss"]["aborted_at_kib"] is None:
            # A run stopped early may end before an attack began.
            for name, attack in document["attacks"].items():
                self.assertTrue(attack["counts"], name)
        legit = document["legit"]
        self.assertGreater(legit["expected"], 0)
        self.assertGreater(legit["delivered"], 0)
        self.assertGreater(legit["latency_s"]["count"], 0)
        rss = document["rss"]
        self.assertIsInstance(rss["start_kib"], int)
        self.assertGreaterEqual(rss["peak_kib"], rss["start_kib"])
        ceiling, terms = abuse.rssCeiling(document["settings"]["server_options"])
        self.assertEqual((rss["ceiling_mib"], rss["ceiling_terms_mib"]), (ceiling, terms))
        self.assertIn(run["returncode"], (0, 1))
        self.assertEqual(run["returncode"] == 0, document["verdict"]["passed"])
        self.assertTrue(run["stdout"].splitlines()[-1].startswith("verdict: "))


class AbuseOptionTests(SynchronousTestCase):
    """
    The abuse soak's command line and RSS ceiling.
    """

    def test_defaults(self) -> None:
        """
        The abuse soak runs 10 minutes with every attack by default, and 20
        seconds with --quick.
        """
        full = abuse.parseArgs([])
        self.assertEqual((full.duration, full.attacks), (600.0, list(abuse.ATTACKS)))
        self.assertEqual(abuse.parseArgs(["--quick"]).duration, 20.0)
        self.assertEqual(abuse.parseArgs(["--quick", "--duration", "45"]).duration, 45.0)

    def test_attacks(self) -> None:
        """
        --attacks takes names (kept in the order of ATTACKS), all or none,
        and refuses an unknown name.
        """
        self.assertEqual(
            abuse.parseAttacks("future-boot,history-bloat"), ["history-bloat", "future-boot"]
        )
        self.assertEqual(abuse.parseAttacks("all"), list(abuse.ATTACKS))
        self.assertEqual(abuse.parseAttacks("none"), [])
        self.assertRaises(Exception, abuse.parseAttacks, "history-bloat,nonsense")

    def test_dispatch(self) -> None:
        """
        soak.py hands --abuse and the other arguments to the abuse soak.
        """
        seen: list[list[str]] = []
        self.patch(abuse, "main", lambda argv: seen.append(argv) or 7)
        self.assertEqual(soak.main(["--quick", "--abuse", "--attacks", "none"]), 7)
        self.assertEqual(seen, [["--quick", "--attacks", "none"]])

    def test_ceiling(self) -> None:
        """
        The ceiling is the documented base plus a term per option: 16 KiB
        per client, the store's budget and a quarter, the output budget and
        a sixteenth, the fragments' memory, eight values of the largest size;
        the server is started with the budgets the ceiling is made of.
        """
        options = abuse.serverOptions(abuse.parseArgs([
            "--max-clients", "1024", "--max-store-bytes", str(16 * 2**20),
            "--max-output-total", str(32 * 2**20),
        ]))
        ceiling, terms = abuse.rssCeiling(options)
        self.assertEqual(terms["base"], 96.0)
        self.assertEqual(terms["max-clients"], 16.0)
        self.assertEqual(terms["max-store-bytes"], 20.0)
        self.assertEqual(terms["max-output-total"], 34.0)
        self.assertEqual(terms["fragment-memory"], round(16_000_000 / 2**20, 1))
        self.assertEqual(terms["max-value-size"], round(8 * options["max-value-size"] / 2**20, 1))
        self.assertEqual(ceiling, round(sum(terms.values()), 1))
        bigger, _ = abuse.rssCeiling(dict(options, **{"max-clients": 2048}))
        self.assertEqual(bigger, ceiling + 16.0)


class AbuseCheckTests(SynchronousTestCase):
    """
    What the abuse soak checks, on figures made up for the purpose.
    """

    def client(self, received: list[int], gaps: int = 0) -> abuse.SinceClient:
        client = abuse.SinceClient(1, "legit/k/00", "legit.1.0")
        client.received = received
        client.gaps = gaps
        return client

    def test_lossless(self) -> None:
        """
        A client that got every datum after the first, in order, once, is
        lossless.
        """
        self.assertTrue(self.client([1, 2, 3]).check(3)["lossless"])

    def test_losses(self) -> None:
        """
        A missing datum, a duplicate, a datum out of order or an
        Artcast-Gap each make a client lose.
        """
        missing = self.client([1, 3]).check(3)
        self.assertEqual((missing["lossless"], missing["missing"]), (False, 1))
        twice = self.client([1, 2, 2, 3]).check(3)
        self.assertEqual((twice["lossless"], twice["duplicates"]), (False, 1))
        swapped = self.client([2, 1, 3]).check(3)
        self.assertEqual((swapped["lossless"], swapped["out_of_order"]), (False, 1))
        self.assertFalse(self.client([1, 2, 3], gaps=1).check(3)["lossless"])

    def document(self, **changes: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "server": {"died": False, "log_bytes": 0, "log_limit_bytes": 65536},
            "legit": {
                "statuses": {"200": 10}, "clients": 2, "lossless_clients": 2, "missing": 0,
                "duplicates": 0, "out_of_order": 0, "gaps": 0,
                "latency_s": {"p99": 0.01},
            },
            "rss": {"peak_kib": 100 * 1024, "ceiling_mib": 200.0, "aborted_at_kib": None,
                    "abort_mib": 712.0},
            "attacks": {"slow-body": {"failures": []}},
            "server_log": {"tracebacks": 0, "unhandled": 0},
        }
        return changed(document, changes)

    def test_passes(self) -> None:
        """
        A run where every check holds passes without warning.
        """
        self.assertEqual(abuse.judge(self.document()), (True, [], []))

    def test_failures(self) -> None:
        """
        A lossy client, a p99 of a second, RSS over the ceiling, a 5xx, a
        dead server or an attack's own failed check each fail the run.
        """
        for change in [
            {"legit__lossless_clients": 1},
            {"legit__latency_s": {"p99": 1.0}},
            {"legit__latency_s": {"p99": None}},
            {"rss__peak_kib": 201 * 1024},
            {"rss__aborted_at_kib": 800 * 1024},
            {"legit__statuses": {"200": 9, "503": 1}},
            {"server__died": True},
            {"attacks__slow-body__failures": ["1 of 1 slow bodies outlived 14 s"]},
        ]:
            passed, failures, _ = abuse.judge(self.document(**change))
            self.assertFalse(passed, change)
            self.assertEqual(len(failures), 1, (change, failures))

    def test_logBound(self) -> None:
        """
        A server log that grew past its allowance fails the run; one that
        grew less does not.
        """
        passed, failures, _ = abuse.judge(self.document(server__log_bytes=65537))
        self.assertEqual((passed, len(failures)), (False, 1))
        self.assertTrue(abuse.judge(self.document(server__log_bytes=65536))[0])


class AbuseDatagramTests(SynchronousTestCase):
    """
    The legitimate source's and the attacks' datagrams are what they claim.
    """

    def test_bigValueInFragments(self) -> None:
        """
        The legitimate source's big value goes in several fragments, and
        the fragment flood is sent between the first and the others.
        """
        source = abuse.LegitSource("239.255.1.1", 9, ["legit/k/00"])
        self.addCleanup(source.close)
        sent: list[bytes] = []
        self.patch(source, "sock", _Recorder(sent))
        source.between = lambda: sent.append(b"flood")
        source.big()
        self.assertGreater(len(sent), 2)
        self.assertEqual(sent[1], b"flood")
        reassembler = reception.Reassembler(Clock())
        parts = [wire.parseData(d) for d in sent if d != b"flood"]
        self.assertTrue(all(isinstance(p, wire.Fragment) for p in parts))
        whole = [reassembler.feed(p) for p in parts][-1]
        self.assertEqual((whole.key, whole.value["n"]), (abuse.LEGIT_BIG, 0))

    def test_floodFragments(self) -> None:
        """
        A flood is 70 first fragments of two-part values, each from a
        source of its own.
        """
        sent: list[bytes] = []
        ctx = abuse.Context.__new__(abuse.Context)
        ctx.data = ("239.255.1.1", 9)
        ctx.sock = _Recorder(sent)
        abuse.fragmentFlood(ctx, abuse.Figures())()
        parts = [wire.parseData(d) for d in sent]
        self.assertEqual(len(parts), 70)
        self.assertTrue(all(isinstance(p, wire.Fragment) and p.parts == 2 for p in parts))
        self.assertEqual(len({p.stamp.source for p in parts}), 70)

    def test_pingFrames(self) -> None:
        """
        The ping frames are masked client frames with a 125-byte payload.
        """
        frames = abuse.pingFrames(2)
        self.assertEqual(len(frames), 2 * 131)
        self.assertEqual(frames[:2], bytes([0x89, 0x80 | 125]))
        mask = frames[2:6]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(frames[6:131]))
        self.assertEqual(payload, b"p" * 125)

    def test_deepKeys(self) -> None:
        """
        A 126-level key of one-character levels fits in a key.
        """
        self.assertEqual(wire.validateKey(abuse.deepKey(["a"] * abuse.DEEP)).count("/"),
                         abuse.DEEP - 1)


class _Recorder:
    """
    Stands in for a UDP socket: keeps what is sent.
    """

    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    def sendto(self, datagram: bytes, address: tuple[str, int]) -> int:
        self.sent.append(datagram)
        return len(datagram)

    def close(self) -> None:
        pass
