# -*- test-case-name: tests.test_bench -*-
"""
Tests for the fan-out benchmark (bench/): the short mode run end to end, so
that the benchmark cannot rot, and its pure parts.

Nothing here asserts on timing: the end-to-end test checks that the summary
is well-formed and that deliveries happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import random
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

SKIP_WORKERS = (
    None
    if HAVE_GCC and HAVE_PROC
    else "the benchmark with workers needs gcc (for bench/loadgen.c) and /proc"
)

_quick: dict[str, Any] = {}
_workers: dict[str, Any] = {}


def runFanout(into: dict[str, Any], *arguments: str) -> dict[str, Any]:
    """
    Run C{bench/fanout.py --quick} with C{arguments} and a JSON output, and
    keep its exit status, output and JSON document in C{into}.
    """
    outDir = tempfile.mkdtemp(prefix="artcast-bench-")
    jsonPath = os.path.join(outDir, "results.json")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fanout.py"),
            "--quick",
            *arguments,
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
    into["returncode"] = result.returncode
    into["stdout"] = result.stdout
    into["stderr"] = result.stderr
    if result.returncode == 0:
        with open(jsonPath) as f:
            into["document"] = json.load(f)
    shutil.rmtree(outDir, ignore_errors=True)
    return into


def quickRun() -> dict[str, Any]:
    """
    Run C{bench/fanout.py --quick} once (baseline, and Artcast when it
    starts, also as C{--then} with this tree) and return its JSON document
    and printed table.
    """
    if not _quick:
        ok, why = fanout.artcastAvailable()
        _quick["artcast"] = ok
        _quick["artcastWhy"] = why
        if ok:
            runFanout(_quick, "--servers", "baseline,artcast", "--then", str(ROOT))
        else:
            runFanout(_quick, "--servers", "baseline")
    return _quick


def workersRun() -> dict[str, Any]:
    """
    Run C{bench/fanout.py --quick --servers "" --workers 2} once: Artcast
    with two worker processes alone (with and without C{since}), and return
    its JSON document and printed table.
    """
    if not _workers:
        ok, why = fanout.artcastAvailable()
        _workers["artcast"] = ok
        _workers["artcastWhy"] = why
        if ok:
            runFanout(_workers, "--servers", "", "--workers", "2")
    return _workers


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
        self.assertIn("loadgen CPU per answer (us)", stdout)

    def test_thenDelivers(self) -> None:
        """
        C{--then TREE} runs Artcast from that tree too, named by its commit,
        with the same load; the table compares Artcast with it.
        """
        if not quickRun()["artcast"]:
            raise self.skipTest(
                f"twistd artcast does not start yet: {quickRun()['artcastWhy']}"
            )
        document = self.document()
        [result] = self.results("then")
        self.assertWellFormed(result)
        self.assertEqual(document["settings"]["then"], str(ROOT))
        [note] = [n for n in document["notes"] if n.startswith("then: ")]
        self.assertIn(str(ROOT), note)
        self.assertIn("commit ", note)
        [header] = [
            line.split() for line in quickRun()["stdout"].splitlines() if line.startswith("N ")
        ]
        self.assertEqual(header[-2:], ["then", "artcast/then"])


class WorkersQuickModeTests(SynchronousTestCase):
    """
    The short mode with C{--workers 2}: Artcast run as a supervisor and two
    worker processes sharing the port.
    """

    skip = SKIP_WORKERS

    def document(self) -> dict[str, Any]:
        run = workersRun()
        if not run["artcast"]:
            raise self.skipTest(f"twistd artcast does not start: {run['artcastWhy']}")
        self.assertEqual(
            run["returncode"], 0,
            f"fanout.py --quick --workers 2 failed:\n{run['stderr']}",
        )
        return run["document"]

    def result(self, server: str) -> dict[str, Any]:
        [result] = [r for r in self.document()["results"] if r["server"] == server]
        return result

    def test_workersDeliver(self) -> None:
        """
        Artcast with two workers delivers datums to the load generator's
        clients, every figure of the table is there, and its CPU and RSS were
        read from the supervisor and both workers.
        """
        result = self.result("artcast-w2")
        self.assertEqual(result["workers"], 2)
        for field, _ in fanout.FIGURES:
            self.assertIn(field, result)
        self.assertGreater(result["emitter"]["sent"], 0)
        self.assertGreater(result["loadgen"]["deliveries"], 0)
        self.assertGreater(result["deliveries_per_s"], 0)
        self.assertGreater(result["fraction_delivered"], 0)
        self.assertEqual(len(result["server_pids"]), 3)
        self.assertEqual(
            set(result["server_cpu_pct_by_pid"]),
            {str(pid) for pid in result["server_pids"]},
        )

    def test_heldByEachWorker(self) -> None:
        """
        Both workers answered before the measuring, and between them they
        held every client's poll.
        """
        held = self.result("artcast-w2")["held_by_worker"]
        self.assertEqual(set(held), {"1", "2"})
        self.assertEqual(sum(w["waiting"] for w in held.values()), 50)
        self.assertEqual(sum(w["connections"] for w in held.values()), 50)
        pids = {w["pid"] for w in held.values()}
        self.assertEqual(pids, set(self.result("artcast-w2")["server_pids"][1:]))

    def test_workersSinceDelivers(self) -> None:
        """
        A keep-alive connection stays with its worker, so clients following
        C{Artcast-Id} with C{?since=} get datums from the workers too.
        """
        result = self.result("artcast-w2+since")
        self.assertGreater(result["loadgen"]["deliveries"], 0)
        self.assertGreater(result["ids_seen"], 0)

    def test_tablePrinted(self) -> None:
        """
        The table has the worker column; its ratio to the single-process
        Artcast is left out when that did not run.
        """
        self.document()
        [header] = [
            line.split()
            for line in workersRun()["stdout"].splitlines()
            if line.startswith("N ")
        ]
        self.assertEqual(
            header, ["N", "rate/s", "figure", "artcast-w2", "artcast-w2+since"]
        )


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
        base: dict[str, Any] = {f: 2.0 for f, _ in fanout.FIGURES}
        art: dict[str, Any] = {f: 1.0 for f, _ in fanout.FIGURES}
        base.update(server="baseline", clients=100, rate=10.0)
        art.update(server="artcast", clients=100, rate=10.0)
        text = fanout.table([base, art])
        rows = [line for line in text.splitlines() if line.startswith("100 ")]
        self.assertEqual(len(rows), len(fanout.FIGURES))
        for row in rows:
            self.assertIn("x0.50", row)


    def test_workerColumns(self) -> None:
        """
        A worker server gets its own column, its ratio to the baseline and
        its ratio to the single-process Artcast of the same mode, so that
        scaling is read directly.
        """
        rows = []
        for server, value in (
            ("baseline", 1.0), ("artcast", 2.0), ("artcast+since", 4.0),
            ("artcast-w2", 3.0), ("artcast-w2+since", 5.0),
        ):
            row: dict[str, Any] = {f: value for f, _ in fanout.FIGURES}
            row.update(server=server, clients=100, rate=10.0)
            rows.append(row)
        header, _, first = fanout.table(rows).splitlines()[:3]
        self.assertEqual(
            header.split(),
            ["N", "rate/s", "figure", "baseline", "artcast", "artcast/baseline",
             "artcast+since", "+since/baseline", "artcast-w2", "w2/baseline",
             "w2/artcast", "artcast-w2+since", "w2+since/baseline",
             "w2+since/+since"],
        )
        self.assertEqual(
            first.split()[-11:],
            ["1.00", "2.00", "x2.00", "4.00", "x4.00", "3.00", "x3.00", "x1.50",
             "5.00", "x5.00", "x1.25"],
        )

    def test_columnsOfServersThatRan(self) -> None:
        """
        Only the servers that ran have columns, and a ratio only when both
        of its servers ran.
        """
        self.assertEqual(
            [c[0] for c in fanout.tableColumns({"artcast", "artcast-w4", "artcast-w2"})],
            ["artcast", "artcast-w2", "w2/artcast", "artcast-w4", "w4/artcast"],
        )
        self.assertEqual(
            fanout.tableColumns({"baseline", "artcast"}),
            [("baseline", "baseline", None), ("artcast", "artcast", None),
             ("artcast/baseline", "artcast", "baseline")],
        )


class ThenOptionTests(SynchronousTestCase):
    """
    C{--then TREE}: Artcast from another work tree, in the same run.
    """

    def test_parsed(self) -> None:
        """
        The tree is taken as an absolute path; a directory without Artcast
        is refused with the reason.
        """
        self.assertIsNone(fanout.parseArgs([]).then)
        self.assertEqual(fanout.parseArgs(["--then", str(ROOT)]).then, ROOT)
        empty = tempfile.mkdtemp(prefix="artcast-then-")
        self.addCleanup(shutil.rmtree, empty, True)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.assertRaises(SystemExit, fanout.parseArgs, ["--then", empty])
        self.assertIn("--then: no Artcast tree at", stderr.getvalue())

    def test_serverOfTheTree(self) -> None:
        """
        Server C{then} runs from its tree, first on the path; the others
        from this repository.
        """
        other = Path("/some/tree")
        self.assertEqual(fanout.serverRoot(fanout.THEN, other), other)
        self.assertEqual(fanout.serverRoot("artcast", other), fanout.ROOT)
        self.assertEqual(fanout.serverRoot(fanout.THEN, None), fanout.ROOT)
        path = fanout.serverEnv(other)["PYTHONPATH"].split(os.pathsep)
        self.assertEqual(path[0], str(other))

    def test_columns(self) -> None:
        """
        C{then} comes after Artcast's columns, with C{artcast/then}, and
        before Nchan's.
        """
        self.assertEqual(
            [c[0] for c in fanout.tableColumns({"baseline", "artcast", "then", "nchan"})],
            ["baseline", "artcast", "artcast/baseline", "then", "artcast/then", "nchan"],
        )
        self.assertEqual(
            fanout.tableColumns({"then"}), [("then", "then", None)]
        )

    def test_treeCommit(self) -> None:
        """
        A work tree is named by its commit; a directory outside git says so.
        """
        self.assertRegex(fanout.treeCommit(ROOT), r"^commit [0-9a-f]{7}")
        empty = tempfile.mkdtemp(prefix="artcast-then-")
        self.addCleanup(shutil.rmtree, empty, True)
        self.assertEqual(fanout.treeCommit(Path(empty)), "commit unknown (not a git tree)")


class WorkersOptionTests(SynchronousTestCase):
    """
    C{--workers}, C{--server-cpus} and C{--load-cpus}, and the process tree
    whose CPU and memory are summed.
    """

    def test_workersOption(self) -> None:
        """
        C{--workers} takes counts; by default none is run.
        """
        self.assertEqual(fanout.parseArgs([]).workers, [])
        self.assertEqual(fanout.parseArgs(["--workers", "4,2"]).workers, [2, 4])
        self.assertEqual(fanout.workersOf("artcast-w4"), 4)
        self.assertEqual(fanout.workersOf("artcast"), 0)
        self.assertEqual(fanout.workersOf("baseline"), 0)
        self.assertEqual(fanout.workersName(3), "artcast-w3")
        self.assertEqual(fanout.parseArgs(["--servers", "", "--workers", "2"]).servers, [])
        for bad in (["--servers", ""], ["--workers", "0"], ["--workers", "two"]):
            with contextlib.redirect_stderr(io.StringIO()):
                self.assertRaises(SystemExit, fanout.parseArgs, bad)

    def test_artcastArgv(self) -> None:
        """
        A worker server is started with C{--workers N}, a single one without.
        """
        config = fanout.ServerConfig(fanout.random.Random(1))
        argv = fanout.artcastArgv(config, 2)
        self.assertEqual(argv[-2:], ["--workers", "2"])
        self.assertNotIn("--workers", fanout.artcastArgv(config))

    def test_cpuList(self) -> None:
        """
        CPU lists are read as taskset reads them.
        """
        self.assertEqual(fanout.parseCpuList("0"), [0])
        self.assertEqual(fanout.parseCpuList("1,0"), [0, 1])
        self.assertEqual(fanout.parseCpuList("0-2,5"), [0, 1, 2, 5])
        for bad in ("", "a", "1,", "3-1", "-1"):
            self.assertRaises(ValueError, fanout.parseCpuList, bad)

    def test_pinning(self) -> None:
        """
        By default the server is on the first CPU and the load on the
        second; given lists replace them, and the note says where each runs
        and which CPU they share.
        """
        default = fanout.Pinning(available=[0, 1], taskset="taskset")
        self.assertEqual(default.server(["x"]), ["taskset", "-c", "0", "x"])
        self.assertEqual(default.load(["x"]), ["taskset", "-c", "1", "x"])
        self.assertEqual(default.note, "server on CPU 0, load on CPU 1 (taskset)")
        both = fanout.Pinning(
            serverCpus=[0, 1], loadCpus=[1], available=[0, 1], taskset="taskset"
        )
        self.assertEqual(both.server(["x"]), ["taskset", "-c", "0,1", "x"])
        self.assertEqual(both.load(["x"]), ["taskset", "-c", "1", "x"])
        self.assertEqual(
            both.note, "server on CPUs 0,1, load on CPU 1 (taskset); CPU 1 shared"
        )
        self.assertEqual(both.describe(), {"server_cpus": [0, 1], "load_cpus": [1]})
        off = fanout.Pinning(enabled=False, serverCpus=[0], available=[0, 1])
        self.assertEqual(off.server(["x"]), ["x"])
        self.assertIn("not pinned", off.note)
        self.assertRaises(
            fanout.BenchError, fanout.Pinning, serverCpus=[7], available=[0, 1],
            taskset="taskset",
        )

    def test_pinningOptions(self) -> None:
        """
        C{--server-cpus} and C{--load-cpus} are parsed as CPU lists; a bad
        one is refused.
        """
        options = fanout.parseArgs(["--server-cpus", "0,1", "--load-cpus", "1"])
        self.assertEqual((options.server_cpus, options.load_cpus), ([0, 1], [1]))
        self.assertEqual(fanout.parseArgs([]).server_cpus, None)
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            self.assertRaises(SystemExit, fanout.parseArgs, ["--server-cpus", "x"])
        self.assertIn("--server-cpus", errors.getvalue())

    def test_heldByWorker(self) -> None:
        """
        A worker's connections are counted without the one that asked for
        its figures.
        """
        held = fanout.heldByWorker(
            {2: {"pid": 12, "connections": 31, "waiting": 30, "memory": 2048},
             1: {"pid": 11, "connections": 21, "waiting": 20, "memory": 1024}}
        )
        self.assertEqual(list(held), ["1", "2"])
        self.assertEqual(
            held["2"], {"pid": 12, "connections": 30, "waiting": 30, "memory_kib": 2}
        )

    def test_busyPercent(self) -> None:
        """
        A CPU's busy share is its busy ticks over all its ticks between two
        readings; the readings of this machine name its CPUs.
        """
        self.assertEqual(
            fanout.busyPercent({"0": (10, 100), "1": (5, 100)},
                               {"0": (60, 200), "1": (5, 100)}),
            {"0": 50.0, "1": None},
        )
        if HAVE_PROC:
            times = fanout.cpuTimes()
            self.assertIn("0", times)
            self.assertLessEqual(times["0"][0], times["0"][1])

    def test_processTree(self) -> None:
        """
        The tree of a process holds its children, and its CPU and RSS are
        the sums over them.
        """
        if not HAVE_PROC:
            raise self.skipTest("needs /proc")
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
        )
        try:
            self.assertIn(child.pid, fanout.childPids(os.getpid()))
            self.assertIn(child.pid, fanout.descendantPids(os.getpid()))
            self.assertEqual(fanout.parentPid(child.pid), os.getpid())
            tree = fanout.ServerTree(os.getpid(), [child.pid])
            self.assertEqual(tree.pids, [os.getpid(), child.pid])
            # The child's RSS is part of the sum (the readings are not taken
            # at one instant, so compared with a margin, not for equality).
            self.assertGreater(
                tree.rssKiB(), fanout.rssKiB(os.getpid()) + fanout.rssKiB(child.pid) // 2
            )
            self.assertEqual(set(tree.cpuByPid()), {os.getpid(), child.pid})
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=30)
        self.assertRaises(fanout.BenchError, tree.cpuSeconds)


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
        ArtcastHandler.waiters = {"a": [a1, a2], "b": [b]}  # type: ignore[dict-item, list-item]
        try:
            ArtcastHandler.message("a", {"n": 1})
            ArtcastHandler.message("a", {"n": 2})
            self.assertEqual(a1.values, [{"n": 1}])
            self.assertEqual(a2.values, [{"n": 1}])
            self.assertEqual(b.values, [])
            self.assertEqual(list(ArtcastHandler.waiters), ["b"])
        finally:
            ArtcastHandler.waiters = saved


class BatchingQuickTests(SynchronousTestCase):
    """
    C{bench/batching.py --quick} end to end: one source to one real server
    on loopback, with the holdback, without it, and without repair.
    """

    def test_quick(self) -> None:
        """
        Every datum reaches the server in each mode; with the holdback the
        datums travel in fewer than half as many datagrams, without it (or
        without repair) in one data datagram each; the table has one row per
        mode.
        """
        from bench import batching

        path = self.mktemp() + ".json"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(batching.main(["--quick", "--json", path]), 0)
        with open(path) as f:
            rows = {row["mode"]: row for row in json.load(f)["rows"]}
        self.assertEqual(sorted(rows), sorted(batching.MODES))
        for row in rows.values():
            self.assertEqual(row["datums"], row["sent"])
        self.assertLess(rows["batching"]["datagrams"], rows["batching"]["datums"] / 2)
        self.assertGreater(rows["batching"]["source"]["batchesSent"], 0)
        # Without the holdback one data datagram each (the server counts
        # the source's few heartbeats too); without repair, nothing else.
        self.assertEqual(rows["no batching"]["source"]["datagramsSent"], rows["no batching"]["sent"])
        self.assertEqual(rows["no repair"]["datagrams"], rows["no repair"]["datums"])
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2 + len(batching.MODES) + 1)


class HopsQuickTests(SynchronousTestCase):
    """
    C{bench/hops.py --quick --no-bus} end to end: an origin, a relay
    following it and a relay following that one, each with a stream client
    and a long-poll client.
    """

    skip = None if HAVE_PROC else "the relay benchmark needs /proc"

    def test_quick(self) -> None:
        """
        The command writes a JSON document with one row per position and
        client, each with its latency figures and, but for the origin, the
        latency added by its hop; every client got every datum, once, in
        order, with no gap, and the table has one line per row.
        """
        from bench import hops

        outDir = os.path.abspath(self.mktemp())
        path = outDir + ".json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "hops.py"), "--quick", "--no-bus",
             "--json", path, "--out-dir", outDir],
            cwd=str(ROOT), capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(result.returncode, 0, f"hops.py --quick failed:\n{result.stderr}")
        with open(path) as f:
            document = json.load(f)
        self.assertEqual(document["count"], 100)
        self.assertEqual([p["name"] for p in document["positions"]],
                         [p.name for p in hops.POSITIONS])
        rows = {(row["position"], row["client"]): row for row in document["rows"]}
        self.assertEqual(sorted(rows), sorted(
            (p.name, kind) for p in hops.POSITIONS for kind in hops.KINDS))
        for (position, kind), row in rows.items():
            self.assertEqual((row["received"], row["missing"]), (100, 0), (position, kind))
            self.assertEqual((row["duplicates"], row["outOfOrder"], row["gaps"], row["other"]),
                             (0, 0, 0, 0), (position, kind))
            for figure in ("p50", "p99", "max"):
                self.assertIsInstance(row["latency_ms"][figure], (int, float))
            self.assertIsInstance(row["server_cpu_us_per_datum"], (int, float))
            self.assertIsInstance(row["server_cpu_pct"], (int, float))
            self.assertGreater(row["per_s"], 0)
            if position == "direct":
                self.assertIsNone(row["added_ms"])
            else:
                self.assertEqual(row["added_ms"]["datums"], 100)
                self.assertIsInstance(row["added_ms"]["p50"], (int, float))
                self.assertIsInstance(row["added_ms"]["p99"], (int, float))
        self.assertEqual(document["source"]["sent"], 100)
        for relay in ("relay 1", "relay 2"):
            self.assertGreaterEqual(document["upstream"][relay]["upstreamDatums"], 100)
        lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
        self.assertEqual(len(lines), 1 + len(rows))


class HopsPartsTests(SynchronousTestCase):
    """
    The pure parts of C{bench/hops.py}: what a client counts, the latency a
    hop adds, and the table of any number of positions.
    """

    def test_receipts(self) -> None:
        """
        A client keeps one latency per measured datum, counts warm-up
        datums, duplicates, datums older than one it had, and values that
        are not the benchmark's, and is complete once it has every datum.
        """
        from bench.hops import WARM, Receipts

        receipts = Receipts(3)
        receipts.take({"t": 10.0, "n": WARM}, 10.5)
        receipts.take({"t": 10.0, "n": 1}, 10.002)
        receipts.take({"t": 10.0, "n": 1}, 10.003)
        receipts.take({"t": 10.0, "n": 0}, 10.004)
        receipts.take("garbage", 10.005)
        self.assertFalse(receipts.complete())
        receipts.take({"t": 11.0, "n": 2}, 11.001)
        self.assertTrue(receipts.complete())
        report = receipts.report()
        self.assertEqual(report["latencies"], [(0, 4.0), (1, 2.0), (2, 1.0)])
        self.assertEqual(
            (report["received"], report["missing"], report["warm"], report["duplicates"],
             report["outOfOrder"], report["other"]),
            (3, 0, 1, 1, 1, 1))

    def test_added(self) -> None:
        """
        The latency a hop adds is taken per datum, over the datums both
        clients got.
        """
        from bench.hops import added

        mine = {n: 10.0 + n for n in range(100)}
        theirs = {n: 9.0 for n in range(1, 101)}
        hop = added(mine, theirs)
        self.assertEqual(hop["datums"], 99)
        self.assertEqual(hop["p50"], 51.0)
        self.assertEqual(hop["p99"], 100.0)

    def test_tableOfAnyPositions(self) -> None:
        """
        The table has a line per row, whatever the positions, and names the
        position each hop is measured against.
        """
        from bench.hops import table

        def row(position: str, against: str | None) -> dict[str, Any]:
            return {"position": position, "client": "stream", "received": 5, "sent": 5,
                    "missing": 0, "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0},
                    "against": against,
                    "added_ms": None if against is None else {"datums": 5, "p50": 0.5, "p99": 1.5},
                    "per_s": 50.0, "server_cpu_us_per_datum": 120.0, "server_cpu_pct": 0.6}

        text = table([row("direct", None), row("relay 1", "direct"),
                      row("relay 2", "relay 1"), row("bus peer", "direct")])
        lines = text.splitlines()
        self.assertEqual(len(lines), 2 + 4)
        self.assertIn("| bus peer | stream | 5 / 5 | 0 | 1.00 | 2.00 | 3.00 | +0.50 (vs direct) "
                      "| +1.50 | 50 | 120 µs | 0.6 % |", lines)
        self.assertIn("| n/a | n/a |", lines[2])


HAVE_REDIS = shutil.which("redis-server") is not None


class HopsBusQuickTests(SynchronousTestCase):
    """
    C{bench/hops.py --quick --bus} end to end: the relay chain with the
    origin also on a real Redis bus, and a bus peer fed only through Redis.
    """

    skip = (None if HAVE_PROC and HAVE_REDIS
            else "the bus benchmark needs /proc and redis-server")

    def test_quick(self) -> None:
        """
        Every client of every position, the bus peer's included, got every
        datum once, in order, with no gap; the bus peer's hop is measured
        against the origin; the peer took every datum from Redis and the
        origin added every one; Redis's CPU per datum is reported with the
        servers'.
        """
        from bench import hops

        outDir = os.path.abspath(self.mktemp())
        path = outDir + ".json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "hops.py"), "--quick", "--bus",
             "--json", path, "--out-dir", outDir],
            cwd=str(ROOT), capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(result.returncode, 0, f"hops.py --quick --bus failed:\n{result.stderr}")
        with open(path) as f:
            document = json.load(f)
        self.assertTrue(document["with_bus"])
        names = [p.name for p in hops.busPositions("redis://127.0.0.1:1")]
        self.assertEqual([p["name"] for p in document["positions"]], names)
        rows = {(row["position"], row["client"]): row for row in document["rows"]}
        self.assertEqual(sorted(rows), sorted((name, kind) for name in names for kind in hops.KINDS))
        for key, row in rows.items():
            self.assertEqual((row["received"], row["missing"]), (100, 0), key)
            self.assertEqual((row["duplicates"], row["outOfOrder"], row["gaps"], row["other"]),
                             (0, 0, 0, 0), key)
        for kind in hops.KINDS:
            peer = rows[hops.BUS_PEER, kind]
            self.assertEqual(peer["against"], "direct")
            self.assertEqual(peer["added_ms"]["datums"], 100)
            self.assertIsInstance(peer["added_ms"]["p50"], (int, float))
        self.assertGreaterEqual(document["bus"]["direct"]["busAdded"], 100)
        self.assertGreaterEqual(document["bus"][hops.BUS_PEER]["busTaken"], 100)
        self.assertEqual(document["bus"][hops.BUS_PEER]["busAdded"], 0)
        for figures in document["bus"].values():
            self.assertEqual((figures["busDropped"], figures["busErrors"],
                              figures["busDisconnects"]), ({}, 0, 0))
        self.assertGreaterEqual(document["redis"]["stream_length"], 100)
        processes = {p["process"]: p for p in document["processes"]}
        self.assertEqual(sorted(processes), sorted(names + ["redis-server"]))
        self.assertEqual(processes["redis-server"]["kind"], "redis")
        self.assertIsInstance(processes["redis-server"]["cpu_us_per_datum"], (int, float))
        lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
        self.assertEqual(len(lines), 1 + len(rows) + 1 + len(processes))
        self.assertIn("| redis-server |", result.stdout)


class BusloadQuickTests(SynchronousTestCase):
    """
    C{bench/busload.py --quick --since} end to end: one server on multicast
    alone, then the same server fed through a real Redis by another server,
    each with plain polls and with C{since=} polls.
    """

    skip = (None if HAVE_GCC and HAVE_PROC and HAVE_REDIS
            else "the bus load benchmark needs gcc, /proc and redis-server")

    def test_quick(self) -> None:
        """
        The JSON document has a result per mode and poll kind, each with
        every figure; the clients following ids got every datum on both
        modes; on the bus the measured server took every datum from Redis
        and added none, the feeding server added every one, Redis's CPU per
        datum is a number; the table has a row per figure with the ratio.
        """
        from bench import busload

        outDir = os.path.abspath(self.mktemp())
        path = outDir + ".json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "busload.py"), "--quick", "--since",
             "--json", path, "--out-dir", outDir],
            cwd=str(ROOT), capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(result.returncode, 0, f"busload.py --quick failed:\n{result.stderr}")
        with open(path) as f:
            document = json.load(f)
        self.assertTrue(document["settings"]["quick"])
        results = {(r["mode"], r["since"]): r for r in document["results"]}
        self.assertEqual(sorted(results), sorted(
            (mode, since) for mode in busload.MODES for since in (False, True)))
        for key, r in results.items():
            for field, _ in busload.FIGURES:
                self.assertIn(field, r)
            self.assertEqual((r["clients"], r["rate"]), (50, 10.0), key)
            self.assertGreater(r["emitter"]["sent"], 0, key)
            self.assertGreater(r["deliveries_per_s"], 0, key)
            self.assertGreater(r["fraction_delivered"], 0, key)
            self.assertLessEqual(r["fraction_delivered"], 1, key)
            if r["since"]:
                self.assertEqual(r["fraction_delivered"], 1, key)
                self.assertEqual(r["fraction_complete"], 1, key)
        for since in (False, True):
            plain, bus = results["multicast", since], results["bus", since]
            self.assertIsNone(plain["bus"])
            self.assertIsNone(plain["redis_cpu_us_per_datum"])
            sent = bus["emitter"]["sent"]
            self.assertGreaterEqual(bus["bus"]["measured"]["busTaken"], sent)
            self.assertEqual(bus["bus"]["measured"]["busAdded"], 0)
            self.assertGreaterEqual(bus["bus"]["feeder"]["busAdded"], sent)
            for figures in (bus["bus"]["measured"], bus["bus"]["feeder"]):
                self.assertEqual((figures["busState"], figures["busDropped"],
                                  figures["busErrors"]), ("up", {}, 0))
            self.assertIsInstance(bus["redis_cpu_us_per_datum"], (int, float))
            self.assertIsInstance(bus["feeder_cpu_us_per_datum"], (int, float))
        lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
        self.assertEqual(len(lines), 1 + 2 * len(busload.FIGURES))
        self.assertIn("bus/multicast", lines[0])


class BusPartsTests(SynchronousTestCase):
    """
    The pure parts of the bus benchmarks: the positions with a bus, the CPU
    table, the cells of C{busload.py} and its table.
    """

    def test_busPositions(self) -> None:
        """
        With a bus, the origin gets C{--bus}, the relays are unchanged, and
        a bus peer on the bus alone is compared with the origin.
        """
        from bench.hops import BUS_PEER, POSITIONS, busPositions

        positions = {p.name: p for p in busPositions("redis://127.0.0.1:7")}
        self.assertEqual(list(positions), [p.name for p in POSITIONS] + [BUS_PEER])
        self.assertEqual(positions["direct"].extra, ("--bus", "redis://127.0.0.1:7"))
        self.assertTrue(positions["direct"].fed)
        self.assertEqual(positions["relay 1"], POSITIONS[1])
        peer = positions[BUS_PEER]
        self.assertEqual((peer.fed, peer.upstream, peer.against, peer.extra),
                         (False, None, "direct", ("--bus", "redis://127.0.0.1:7")))

    def test_cpuTable(self) -> None:
        """
        The CPU table has a line per process, Redis's included.
        """
        from bench.hops import cpuTable, processRow

        text = cpuTable([processRow("direct", "server", 1.5, 1000, 10.0),
                         processRow("redis-server", "redis", 0.25, 1000, 10.0)])
        lines = text.splitlines()
        self.assertEqual(len(lines), 2 + 2)
        self.assertEqual(lines[3], "| redis-server | 0.25 s | 250 µs | 2.5 % |")

    def test_cells(self) -> None:
        """
        C{--cells} takes N@rate pairs; C{--quick} is N=50 at 10/s for 3 s;
        anything else is refused.
        """
        from bench import busload

        self.assertEqual(busload.parseArgs([]).cells, [(1000, 100.0), (10000, 10.0)])
        quick = busload.parseArgs(["--quick"])
        self.assertEqual((quick.cells, quick.duration), ([(50, 10.0)], 3.0))
        self.assertEqual(busload.parseArgs(["--cells", "200@5"]).cells, [(200, 5.0)])
        with contextlib.redirect_stderr(io.StringIO()):
            for bad in ("200", "0@5", "x@y"):
                self.assertRaises(SystemExit, busload.parseArgs, ["--cells", bad])

    def test_table(self) -> None:
        """
        The table has a row per figure with both modes and their ratio, and
        no ratio for the figures only the bus has.
        """
        from bench import busload

        def result(mode: str, deliveries: float) -> dict[str, Any]:
            figures: dict[str, Any] = {field: None for field, _ in busload.FIGURES}
            figures.update(deliveries_per_s=deliveries, redis_cpu_us_per_datum=(
                40.0 if mode == "bus" else None))
            return {"mode": mode, "since": False, "clients": 1000, "rate": 100.0, **figures}

        lines = busload.table([result("multicast", 10000.0), result("bus", 9000.0)]).splitlines()
        self.assertEqual(len(lines), 2 + len(busload.FIGURES))
        self.assertIn("| 1,000 | 100 | plain | deliveries/s | 10,000 | 9,000 | x0.90 |", lines)
        self.assertIn("| 1,000 | 100 | plain | Redis CPU per datum (us) | n/a | 40.0 |  |", lines)


class PanelsQuickTests(SynchronousTestCase):
    """
    C{bench/panels.py --quick} end to end: a server with an MQTT bridge on a
    real mosquitto, panels following a key fed by a source, one fed by a
    watched file through C{artcast-watch} and one fed through the broker.
    """

    skip = None if shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK) \
        else "the panels benchmark needs mosquitto (Debian: apt-get install mosquitto)"

    def test_quick(self) -> None:
        """
        The command writes a JSON document with one row per way in, each
        panel got every datum once, in order, with no gap, the baseline's
        ratios are 1, and the table has one line per way.
        """
        from bench import panels

        path = os.path.abspath(self.mktemp()) + ".json"
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "panels.py"), "--quick", "--json", path],
            cwd=str(ROOT), capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(result.returncode, 0, f"panels.py --quick failed:\n{result.stderr}")
        with open(path) as f:
            document = json.load(f)
        self.assertEqual((document["panels"], document["count"]), (5, 20))
        rows = {row["way"]: row for row in document["rows"]}
        self.assertEqual(sorted(rows), sorted(panels.WAYS))
        for way, row in rows.items():
            self.assertEqual((row["deliveries"], row["missing"]), (100, 0), way)
            self.assertEqual((row["duplicates"], row["outOfOrder"], row["gaps"]), (0, 0, 0), way)
            for figure in ("p50", "p99", "max", "within_100ms_pct"):
                self.assertIsInstance(row["latency_ms"][figure], (int, float), way)
        self.assertEqual((rows["direct"]["p50_vs_direct"], rows["direct"]["p99_vs_direct"]),
                         (1.0, 1.0))
        self.assertGreaterEqual(document["mqtt"]["mqttTaken"], 20)
        tableLines = [line for line in result.stdout.splitlines()
                      if line.split()[:1] and line.split()[0] in panels.WAYS]
        self.assertEqual(len(tableLines), len(panels.WAYS))


SKIP_NCHAN = SKIP_WORKERS or (
    None if fanout.nchanAvailable()[0] else fanout.nchanAvailable()[1]
)
_nchan: dict[str, Any] = {}


class NchanTests(SynchronousTestCase):
    """
    Nchan as the second peer: its nginx.conf, its column, and a short run
    where the load generator follows Nchan's C{Etag}/C{Last-Modified}.
    """

    def test_nchanConf(self) -> None:
        """
        The generated nginx.conf listens on 127.0.0.1 only, runs one worker,
        keeps its pid and logs in the cell's folder, loads the module and
        routes subscribers and the publisher by key.
        """
        if fanout.nchanModule() is None:
            raise self.skipTest("the Nchan module is not installed")
        config = fanout.ServerConfig(random.Random(1))
        folder = Path(tempfile.mkdtemp(prefix="artcast-nchan-"))
        self.addCleanup(shutil.rmtree, folder, True)
        conf = fanout.nchanConf(config, folder, 50)
        self.assertIn(f"listen 127.0.0.1:{config.httpPort};", conf)
        self.assertIn("worker_processes 1;", conf)
        self.assertIn("daemon off;", conf)
        self.assertIn(f"load_module {fanout.nchanModule()};", conf)
        self.assertIn("worker_connections 306;", conf)
        for name in ("nginx.pid", "error.log", "access.log"):
            self.assertIn(str(folder.resolve() / name), conf)
        self.assertIn("nchan_subscriber longpoll eventsource websocket;", conf)
        self.assertIn("location ~ ^/pub/(.+)$", conf)
        self.assertIn("allow 127.0.0.1;", conf)

    def test_columns(self) -> None:
        """
        Nchan has its column, and Artcast with C{since} a ratio to it.
        """
        self.assertEqual(
            [c[0] for c in fanout.tableColumns({"baseline", "artcast+since", "nchan"})],
            ["baseline", "artcast+since", "+since/baseline", "nchan", "+since/nchan"],
        )

    def test_defaultServers(self) -> None:
        """
        Nchan is in the default list of servers (the run skips it, with the
        reason, where it is not installed).
        """
        self.assertEqual(fanout.parseArgs([]).servers, ["baseline", "artcast", "nchan"])

    def test_nchanDelivers(self) -> None:
        """
        A short run on Nchan delivers datums published over HTTP to long
        polls that follow its C{Etag}.
        """
        if SKIP_NCHAN:
            raise self.skipTest(SKIP_NCHAN)
        if not _nchan:
            runFanout(_nchan, "--servers", "nchan")
        self.assertEqual(_nchan["returncode"], 0, _nchan["stderr"])
        [result] = _nchan["document"]["results"]
        self.assertEqual(result["server"], "nchan")
        self.assertGreater(result["loadgen"]["deliveries"], 0)
        self.assertGreater(result["loadgen"]["ids_seen"], 0)
        self.assertEqual(result["loadgen"]["bad_bodies"], 0)
        self.assertIn("nchan", _nchan["stdout"])

    def test_emitterPublishesOverHttp(self) -> None:
        """
        With a publisher, the emitter POSTs each datum, with its send time
        and number, to C{/pub/<key>} over one connection, and sends nothing
        over multicast.
        """
        import http.server
        import threading

        received: list[tuple[str, bytes, int]] = []

        class Publish(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, body, self.client_address[1]))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Publish)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        summary = emitter.emit(
            "", 0, 100.0, 0.03, firstN=5,
            publisher=emitter.HttpPublisher(server.server_address[1], "bench/fanout"),
        )
        self.assertEqual(summary["sent"], 3)
        self.assertEqual([path for path, _, _ in received], ["/pub/bench/fanout"] * 3)
        self.assertEqual(
            [json.loads(body)[1]["n"] for _, body, _ in received], [5, 6, 7]
        )
        self.assertEqual(len({port for _, _, port in received}), 1)


class ScriptedStreamServer:
    """
    A one-thread TCP server on 127.0.0.1 that plays a script to each
    connection the load generator opens, for its stream modes: C{script} is
    called with the accepted socket and the request head, in the server's
    thread, one connection after another, at most C{connections} of them.
    """

    def __init__(self, script: Any, connections: int = 1) -> None:
        import threading

        self.script = script
        self.connections = connections
        self.failure: BaseException | None = None
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            for index in range(self.connections):
                connection, _ = self.listener.accept()
                with connection:
                    connection.settimeout(10)
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 4096:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    self.script(index, connection, head)
        except BaseException as e:
            self.failure = e
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(15)


def sendPieces(connection: socket.socket, data: bytes, cuts: list[int]) -> None:
    """
    Send C{data} in pieces cut at C{cuts}, a pause between them so that the
    reader gets each in its own read.
    """
    import time

    last = 0
    for cut in cuts + [len(data)]:
        connection.sendall(data[last:cut])
        last = cut
        time.sleep(0.05)


def waitForClose(connection: socket.socket, seconds: float = 10) -> bytes:
    """
    Read until the peer closes or resets (a reader that leaves bytes unread
    resets), bounded by C{seconds}; what it sent.
    """
    import time

    received = b""
    connection.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def datumJSON(n: int, padding: int = 0) -> bytes:
    import time

    value = {"t": time.time(), "n": n}
    if padding:
        value["pad"] = "x" * padding
    return json.dumps({"key": "k", "id": str(n), "value": value}).encode()


class LoadgenRun:
    """
    The load generator with one stream on a scripted server, driven over
    its stdin and stdout with bounded waits.
    """

    def __init__(self, testCase: SynchronousTestCase, mode: str, port: int) -> None:
        self.process = subprocess.Popen(
            [str(fanout.buildLoadgen()), "--mode", mode, "--clients", "1",
             "--port", str(port), "--path", "/artcasts/k", "--max-seconds", "30"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        testCase.addCleanup(self.stop)

    def line(self, timeout: float = 10) -> dict[str, Any]:
        import select

        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("loadgen said nothing")
        return json.loads(self.process.stdout.readline())

    def status(self) -> dict[str, Any]:
        self.process.stdin.write(b"STATUS\n")
        self.process.stdin.flush()
        return self.line()

    def until(self, check: Any, seconds: float = 10) -> dict[str, Any]:
        """
        STATUS until C{check(status)} holds (bounded); the last status.
        """
        import time

        deadline = time.monotonic() + seconds
        status = self.status()
        while not check(status) and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status()
        return status

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b"QUIT\n")
                self.process.stdin.flush()
            except OSError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            pipe.close()


class LoadgenStreamTests(SynchronousTestCase):
    """
    C{loadgen --mode sse} and C{--mode ws} against a scripted server:
    events and frames split across reads, heartbeats, pings, oversized
    events.
    """

    skip = None if HAVE_GCC else "loadgen.c needs gcc"

    def test_sse(self) -> None:
        """
        A chunked SSE stream, cut in the middle of chunk size lines, fields
        and CRLFs, gives one delivery per unnamed event with data (LF or
        CRLF line ends), a heartbeat per comment, nothing for the retry
        field and a named gap event; an event longer than the buffer is
        counted bad and its connection dropped.
        """
        import threading

        more = threading.Event()
        closed: list[bytes] = []

        def script(index: int, connection: socket.socket, head: bytes) -> None:
            assert b"Accept: text/event-stream" in head, head
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            body = (
                b"retry: 2000\n\n: keepalive\n\nid: 1\ndata: " + datumJSON(1) + b"\n\n"
                + b'event: gap\ndata: {"gap":true,"since":"1"}\n\n'
                + b"id: 2\r\ndata: " + datumJSON(2) + b"\r\n\r\n"
            )
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(part), part)
                for part in (body[:30], body[30:100], body[100:])
            )
            sendPieces(connection, chunks, [1, 7, 20, 36, 37, 60, 110, len(chunks) - 3])
            more.wait(10)
            huge = b"data: " + b"x" * 9000 + b"\n\n"
            connection.sendall(b"%x\r\n%s\r\n" % (len(huge), huge))
            closed.append(waitForClose(connection))

        server = ScriptedStreamServer(script)
        run = LoadgenRun(self, "sse", server.port)
        self.assertEqual(run.line()["event"], "ready")
        status = run.until(lambda s: s["deliveries"] >= 2)
        self.assertEqual(status["deliveries"], 2)
        self.assertEqual(status["heartbeats"], 1)
        self.assertEqual(status["bad_bodies"], 0)
        self.assertEqual(status["streams"], 1)
        more.set()
        status = run.until(lambda s: s["oversized"] >= 1)
        self.assertEqual((status["oversized"], status["bad_bodies"]), (1, 1))
        server.join()
        self.assertIsNone(server.failure)
        self.assertEqual(closed, [b""])
        run.process.stdin.write(b"REPORT 1 2\n")
        run.process.stdin.flush()
        report = run.line()
        self.assertEqual(report["mode"], "sse")
        self.assertEqual(report["gaps"], 1)
        self.assertEqual(report["datums"]["complete"], 2)

    def test_websocket(self) -> None:
        """
        After a checked 101, text frames with 7-bit and 16-bit lengths, cut
        inside their headers, are deliveries; a ping is answered with a
        masked pong of the same payload; a frame longer than the buffer
        drops the connection; a close frame is answered with a close.
        """
        import base64
        import hashlib
        import threading

        more = threading.Event()
        got: dict[int, bytes] = {}

        def frame(opcode: int, payload: bytes) -> bytes:
            if len(payload) < 126:
                return bytes([0x80 | opcode, len(payload)]) + payload
            return bytes([0x80 | opcode, 126]) + len(payload).to_bytes(2, "big") + payload

        def unmask(data: bytes) -> tuple[int, bytes]:
            assert data[1] & 0x80, "a client's frames are masked"
            length = data[1] & 0x7F
            key = data[2:6]
            return data[0] & 0x0F, bytes(
                b ^ key[i % 4] for i, b in enumerate(data[6:6 + length])
            )

        def script(index: int, connection: socket.socket, head: bytes) -> None:
            key = [
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            ][0]
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            connection.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            if index == 0:
                frames = (
                    frame(1, datumJSON(1)) + frame(9, b"hb")
                    + frame(1, datumJSON(2, padding=300))
                )
                sendPieces(connection, frames, [1, 5, len(frames) - 310, len(frames) - 309])
                connection.settimeout(10)
                got[0] = connection.recv(64)
                more.wait(10)
                connection.sendall(bytes([0x81, 126]) + (9000).to_bytes(2, "big"))
                got[1] = waitForClose(connection)
            else:
                connection.sendall(frame(8, b"\x03\xe8"))
                got[2] = waitForClose(connection)

        server = ScriptedStreamServer(script, connections=2)
        run = LoadgenRun(self, "ws", server.port)
        self.assertEqual(run.line()["event"], "ready")
        status = run.until(lambda s: s["deliveries"] >= 2 and s["pongs"] >= 1)
        self.assertEqual(
            (status["deliveries"], status["heartbeats"], status["pongs"],
             status["bad_bodies"]),
            (2, 1, 1, 0),
        )
        more.set()
        status = run.until(lambda s: s["reconnects"] >= 2)
        server.join()
        self.assertIsNone(server.failure)
        self.assertEqual(unmask(got[0]), (0xA, b"hb"))
        self.assertEqual(got[1], b"")
        self.assertEqual(unmask(got[2]), (0x8, b"\x03\xe8"))
        self.assertEqual((status["oversized"], status["bad_bodies"]), (1, 1))
        self.assertEqual(status["deliveries"], 2)


_streams: dict[str, Any] = {}


class StreamsQuickTests(SynchronousTestCase):
    """
    C{fanout.py --quick --stream sse,ws}: Artcast's streams, and Nchan's
    where it is installed.
    """

    skip = SKIP_WORKERS

    def test_streamsDeliver(self) -> None:
        """
        Every server and stream kind delivers datums, with no bad body, and
        the table has a row per kind with memory per open stream.
        """
        ok, why = fanout.artcastAvailable()
        if not ok:
            raise self.skipTest(f"twistd artcast does not start: {why}")
        servers = "artcast" if SKIP_NCHAN else "artcast,nchan"
        if not _streams:
            runFanout(_streams, "--servers", servers, "--stream", "sse,ws")
        self.assertEqual(_streams["returncode"], 0, _streams["stderr"])
        results = _streams["document"]["results"]
        self.assertEqual(
            sorted((r["server"], r["stream"]) for r in results),
            sorted(
                (server, stream)
                for server in servers.split(",")
                for stream in ("sse", "ws")
            ),
        )
        for result in results:
            self.assertEqual(result["loadgen"]["mode"], result["stream"])
            self.assertGreater(result["loadgen"]["deliveries"], 0, result["server"])
            self.assertEqual(result["loadgen"]["bad_bodies"], 0, result["server"])
            self.assertGreater(result["fraction_delivered"], 0.9, result["server"])
        self.assertIn("memory per open stream (KiB)", _streams["stdout"])
        self.assertIn("the baseline, the original design, has no streams",
                      _streams["stdout"])

    def test_streamOption(self) -> None:
        """
        C{--stream} defaults to long polls alone and takes known kinds only.
        """
        self.assertEqual(fanout.parseArgs([]).stream, ["longpoll"])
        self.assertEqual(
            fanout.parseArgs(["--stream", "longpoll,sse,ws"]).stream,
            ["longpoll", "sse", "ws"],
        )
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, fanout.parseArgs, ["--stream", "poll"])

    def test_tablePerStream(self) -> None:
        """
        With stream results the table has a first column C{stream}, the
        memory row per open stream for SSE, and an C{artcast/nchan} ratio;
        a long-poll-only table is as before.
        """
        def result(server: str, stream: str) -> dict[str, Any]:
            return dict({f: 1.0 for f, _ in fanout.FIGURES},
                        server=server, stream=stream, clients=10, rate=1.0)

        lines = fanout.table(
            [result(s, k) for s in ("artcast", "nchan") for k in ("longpoll", "sse")]
        ).splitlines()
        self.assertEqual(lines[0].split()[:4], ["stream", "N", "rate/s", "figure"])
        self.assertTrue(lines[0].endswith("artcast/nchan"))
        self.assertTrue(any(line.startswith("sse") and "memory per open stream" in line
                            for line in lines))
        self.assertTrue(any(line.startswith("longpoll") and "memory per held client"
                            in line for line in lines))
        plain = fanout.table([result("artcast", "longpoll")]).splitlines()
        self.assertEqual(plain[0].split()[:3], ["N", "rate/s", "figure"])
