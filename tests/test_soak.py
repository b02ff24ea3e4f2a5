# -*- test-case-name: tests.test_soak -*-
"""
Tests for the soak test (C{bench/soak.py}): its short mode run end to end
against the real server, so that it cannot rot, and its pure parts (the
garbage really is garbage, the response parser, the verdict).

Nothing here asserts on timing or on memory figures: the end-to-end test
checks that the run passed and that its summary is well-formed, with cycles
completed and datums delivered.
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
from bench import soak

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


def quickRun() -> dict[str, Any]:
    """
    Run C{bench/soak.py --quick} once, bounded in time, and keep its exit
    status, output and JSON document.
    """
    if not _quick:
        outDir = tempfile.mkdtemp(prefix="artcast-soak-")
        jsonPath = os.path.join(outDir, "soak.json")
        try:
            result = subprocess.run(
                [
                    sys.executable, str(ROOT / "bench" / "soak.py"), "--quick",
                    "--json", jsonPath, "--out-dir", outDir,
                ],
                cwd=str(ROOT),
                capture_output=True,
                text=True,
                timeout=QUICK_LIMIT,
            )
            _quick["returncode"] = result.returncode
            _quick["stdout"] = result.stdout
            _quick["stderr"] = result.stderr
            if os.path.exists(jsonPath):
                with open(jsonPath) as f:
                    _quick["document"] = json.load(f)
        finally:
            shutil.rmtree(outDir, ignore_errors=True)
    return _quick


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
        reassembler = wire.Reassembler(Clock(), maxValueSize=soak.DEFAULT_MAX_VALUE_SIZE)
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
        for path, value in changes.items():
            target = document
            *parents, name = path.split("__")
            for parent in parents:
                target = target[parent]
            target[name] = value
        return document

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
