# -*- test-case-name: tests.test_bench -*-
"""
Tests for the fan-out benchmark (bench/): the short mode run end to end, so
that the benchmark cannot rot, and its pure parts.

Nothing here asserts on timing: the end-to-end test checks that the summary
is well-formed and that deliveries happened.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench import emitter, fanout

ROOT = Path(__file__).resolve().parent.parent

HAVE_GCC = shutil.which("gcc") is not None or shutil.which("cc") is not None
HAVE_TORNADO = importlib.util.find_spec("tornado") is not None
HAVE_PROC = os.path.exists("/proc/self/stat")
SKIP_QUICK = (
    None
    if HAVE_GCC and HAVE_TORNADO and HAVE_PROC
    else "the benchmark needs gcc (for bench/loadgen.c), tornado (for the "
    "baseline) and /proc: "
    + ", ".join(
        name
        for name, ok in (("gcc", HAVE_GCC), ("tornado", HAVE_TORNADO), ("/proc", HAVE_PROC))
        if not ok
    )
    + " missing"
)

_quick: dict[str, Any] = {}


def quickRun() -> dict[str, Any]:
    """
    Run C{bench/fanout.py --quick} once (baseline, and Artcast when it
    starts) and return its JSON document and printed table.
    """
    if not _quick:
        outDir = tempfile.mkdtemp(prefix="artcast-bench-")
        jsonPath = os.path.join(outDir, "results.json")
        ok, why = fanout.artcastAvailable()
        servers = "baseline,artcast" if ok else "baseline"
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "fanout.py"),
                "--quick",
                "--servers",
                servers,
                "--json",
                jsonPath,
                "--out-dir",
                outDir,
            ],
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=300,
        )
        _quick["returncode"] = result.returncode
        _quick["stdout"] = result.stdout
        _quick["stderr"] = result.stderr
        _quick["artcast"] = ok
        _quick["artcastWhy"] = why
        if result.returncode == 0:
            with open(jsonPath) as f:
                _quick["document"] = json.load(f)
        shutil.rmtree(outDir, ignore_errors=True)
    return _quick


class QuickModeTests(SynchronousTestCase):
    """
    The short mode of the benchmark, as CI runs it.
    """

    skip = SKIP_QUICK

    def document(self) -> dict[str, Any]:
        run = quickRun()
        self.assertEqual(
            run["returncode"], 0, f"fanout.py --quick failed:\n{run['stderr']}"
        )
        return run["document"]

    def results(self, server: str) -> list[dict[str, Any]]:
        return [r for r in self.document()["results"] if r["server"] == server]

    def assertWellFormed(self, result: dict[str, Any]) -> None:
        for field, _ in fanout.FIGURES:
            self.assertIn(field, result)
        self.assertEqual(result["clients"], 50)
        self.assertEqual(result["rate"], 10.0)
        self.assertGreater(result["emitter"]["sent"], 0)
        self.assertEqual(result["loadgen"]["event"], "report")
        self.assertGreater(result["loadgen"]["deliveries"], 0)
        self.assertGreater(result["deliveries_per_s"], 0)
        self.assertGreater(result["fraction_delivered"], 0)
        self.assertLessEqual(result["fraction_delivered"], 1)
        self.assertIsInstance(result["latency_p50_ms"], (int, float))
        self.assertIsInstance(result["memory_per_client_kib"], (int, float))
        self.assertIsInstance(result["server_cpu_pct"], (int, float))
        self.assertIsInstance(result["loadgen_cpu_pct"], (int, float))

    def test_documentDescribesTheRun(self) -> None:
        """
        The JSON document names the date, the machine and the settings of
        the short mode.
        """
        document = self.document()
        self.assertIn("date", document)
        self.assertIn("cpu", document["machine"])
        self.assertEqual(document["settings"]["clients"], [50])
        self.assertTrue(document["settings"]["quick"])

    def test_baselineDelivers(self) -> None:
        """
        The Tornado baseline, driven by the C load generator, delivers datums
        and every figure of the table is there.
        """
        [result] = self.results("baseline")
        self.assertWellFormed(result)

    def test_artcastDelivers(self) -> None:
        """
        Artcast, run by the same command with the same load, delivers datums.
        """
        if not quickRun()["artcast"]:
            raise self.skipTest(
                f"twistd artcast does not start yet: {quickRun()['artcastWhy']}"
            )
        [result] = self.results("artcast")
        self.assertWellFormed(result)

    def test_artcastSinceDelivers(self) -> None:
        """
        Artcast sends Artcast-Id, so the benchmark also runs it with
        C{?since=}, and the clients following ids get datums.
        """
        if not quickRun()["artcast"]:
            raise self.skipTest(
                f"twistd artcast does not start yet: {quickRun()['artcastWhy']}"
            )
        [result] = self.results("artcast+since")
        self.assertWellFormed(result)
        self.assertGreater(result["ids_seen"], 0)

    def test_tablePrinted(self) -> None:
        """
        The command prints the table with the ratio column.
        """
        self.document()
        stdout = quickRun()["stdout"]
        self.assertIn("artcast/baseline", stdout)
        self.assertIn("deliveries/s", stdout)
        self.assertIn("memory per held client (KiB)", stdout)


class FormattingTests(SynchronousTestCase):
    """
    The runner's figures and table.
    """

    def test_percentileNearestRank(self) -> None:
        """
        Percentiles are nearest-rank, as loadgen.c computes them.
        """
        values = list(range(1, 101))
        self.assertEqual(fanout.percentile(values, 0.50), 50)
        self.assertEqual(fanout.percentile(values, 0.99), 99)
        self.assertEqual(fanout.percentile([7], 0.99), 7)
        self.assertIsNone(fanout.percentile([], 0.5))

    def test_ratio(self) -> None:
        """
        The ratio column is artcast over baseline, and n/a when either is
        missing or the baseline is zero.
        """
        self.assertEqual(fanout.ratio(3.0, 2.0), "x1.50")
        self.assertEqual(fanout.ratio(None, 2.0), "n/a")
        self.assertEqual(fanout.ratio(1.0, 0), "n/a")

    def test_fmt(self) -> None:
        """
        Figures keep about three significant digits; none is n/a.
        """
        self.assertEqual(fanout.fmt(2543.7), "2,544")
        self.assertEqual(fanout.fmt(12.34), "12.3")
        self.assertEqual(fanout.fmt(0.25), "0.250")
        self.assertEqual(fanout.fmt(None), "n/a")

    def test_tableHasOneRowPerFigure(self) -> None:
        """
        The table puts baseline and artcast of the same N and rate on one
        row per figure, with their ratio.
        """
        base = {f: 2.0 for f, _ in fanout.FIGURES}
        art = {f: 1.0 for f, _ in fanout.FIGURES}
        base.update(server="baseline", clients=100, rate=10.0)
        art.update(server="artcast", clients=100, rate=10.0)
        text = fanout.table([base, art])
        rows = [line for line in text.splitlines() if line.startswith("100 ")]
        self.assertEqual(len(rows), len(fanout.FIGURES))
        for row in rows:
            self.assertIn("x0.50", row)


class EmitterTests(SynchronousTestCase):
    """
    The emitter's datagrams, group check and pacing.
    """

    def test_datum(self) -> None:
        """
        A datum is a version 1 C{[key, value]} with the send time and
        sequence number the load generator reads.
        """
        key, value = json.loads(emitter.datum("bench/fanout", 17, 1795312399.5))
        self.assertEqual(key, "bench/fanout")
        self.assertEqual(value, {"t": 1795312399.5, "n": 17})

    def test_groupOutsideLocalRangeRefused(self) -> None:
        """
        The emitter refuses groups outside 239.255.0.0/16.
        """
        self.assertRaises(ValueError, emitter.checkGroup, "224.1.1.1")
        emitter.checkGroup("239.255.3.4")

    def test_pacedOnAnAbsoluteSchedule(self) -> None:
        """
        Datums are sent at C{firstN + i} on the schedule C{i / rate}, the
        emitter sleeping until each one is due.
        """
        now = [100.0]
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            now[0] += seconds

        # A port nothing listens on; TTL 0 keeps it on this machine.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        summary = emitter.emit(
            "239.255.3.4",
            port,
            rate=4,
            duration=1,
            firstN=10,
            clock=lambda: now[0],
            sleep=sleep,
        )
        self.assertEqual(summary["sent"], 4)
        self.assertEqual((summary["first"], summary["last"]), (10, 13))
        self.assertEqual(sleeps, [0.25, 0.25, 0.25])


class BaselineTests(SynchronousTestCase):
    """
    The baseline keeps the original design: a list of waiters per key.
    """

    skip = None if HAVE_TORNADO else "tornado is not installed"

    def test_datumFinishesOnlyThatKeysWaiters(self) -> None:
        """
        A datum for a key answers every handler waiting on that key, once,
        and leaves the waiters of other keys alone.
        """
        from bench.baselines.artcast_tornado import ArtcastHandler

        class Waiter:
            def __init__(self) -> None:
                self.values: list[object] = []

            def answer(self, value: object) -> None:
                self.values.append(value)

        a1, a2, b = Waiter(), Waiter(), Waiter()
        saved = ArtcastHandler.waiters
        ArtcastHandler.waiters = {"a": [a1, a2], "b": [b]}  # type: ignore[dict-item]
        try:
            ArtcastHandler.message("a", {"n": 1})
            ArtcastHandler.message("a", {"n": 2})
            self.assertEqual(a1.values, [{"n": 1}])
            self.assertEqual(a2.values, [{"n": 1}])
            self.assertEqual(b.values, [])
            self.assertEqual(list(ArtcastHandler.waiters), ["b"])
        finally:
            ArtcastHandler.waiters = saved
