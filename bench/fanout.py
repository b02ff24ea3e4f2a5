# -*- test-case-name: tests.test_bench -*-
"""
The fan-out benchmark: Artcast against the original design on Tornado.

For each number of held clients N and each datum rate, in the same run, on
the same core and with the same load, it measures both servers:

  - deliveries per second;
  - latency p50/p99: datum send time (carried in the value) to the arrival
    of each answer;
  - fan-out completion p50/p99: send time to the arrival at the last of the
    N clients, over the datums that reached all N;
  - the fraction of datums delivered: answers received over datums sent
    times N (for Artcast with and without C{?since=});
  - server CPU (share of one core while the emitter sends);
  - resident memory per held client: (RSS with N idle polls - RSS with
    none) / N.

The server runs on one core, the load generator (C{bench/loadgen.c},
compiled here with gcc) and the emitter (C{bench/emitter.py}) on the other,
pinned with taskset.  It prints a table with the ratio Artcast/baseline and
can write every figure as JSON.

Run from the repository root::

    python bench/fanout.py                 # full run, several minutes
    python bench/fanout.py --quick         # N=50, one rate, seconds

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import math
import os
import platform
import queue
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN_SOURCE = BENCH / "loadgen.c"
LOADGEN = BENCH / "bin" / "loadgen"
EMITTER = BENCH / "emitter.py"
BASELINE = BENCH / "baselines" / "artcast_tornado.py"
KEY = "bench/fanout"

SERVERS = ("baseline", "artcast")


class BenchError(Exception):
    """
    The benchmark could not run (a tool is missing, a process did not start
    or did not answer in time).
    """


# --------------------------------------------------------------------------
# Small helpers


def log(message: str) -> None:
    """
    Progress goes to stderr, the table to stdout.
    """
    sys.stderr.write(f"[fanout {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def freeTcpPort() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def freeUdpPort() -> int:
    """
    A UDP port that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def randomGroup(rng: random.Random) -> str:
    """
    A multicast group in 239.255.0.0/16 (avoiding .0 and .255 octets).
    """
    group = f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
    assert ipaddress.ip_address(group) in ipaddress.ip_network("239.255.0.0/16")
    return group


def raiseFileLimit(needed: int) -> int:
    """
    Raise the soft file limit to the hard one (children inherit it).

    @return: the new soft limit.
    @raise BenchError: if the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        raise BenchError(f"file limit {target} is below the {needed} needed")
    return target


def clockTicks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of C{pid}, from /proc/<pid>/stat.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / clockTicks()


def rssKiB(pid: int) -> int:
    """
    Resident set size of C{pid} in KiB, from /proc/<pid>/status (VmRSS).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def percentile(values: Sequence[float], p: float) -> float | None:
    """
    The nearest-rank percentile (C{p} in 0..1) of C{values}, as loadgen.c
    computes it; L{None} for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))
    return ordered[k]


# --------------------------------------------------------------------------
# Processes


def orphanGuard() -> list[str]:
    """
    A prefix that makes a child get SIGTERM if this runner dies without
    stopping it (setpriv's parent-death signal; it execs, so the PID stays).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


class Process:
    """
    A child process we started, stopped by its own PID.
    """

    registry: list[Process] = []

    def __init__(
        self,
        name: str,
        argv: list[str],
        logPath: Path,
        stdin: int | None = None,
        stdout: int | IO[bytes] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.logFile = open(logPath, "ab")
        self.logFile.write(f"# {' '.join(argv)}\n".encode())
        self.logFile.flush()
        self.popen = subprocess.Popen(
            orphanGuard() + argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self.logFile,
            stderr=self.logFile,
            cwd=str(cwd) if cwd else None,
            env=env,
        )
        self.pid = self.popen.pid
        Process.registry.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """
        SIGTERM this process by its PID, then SIGKILL it if it is still
        there after C{grace} seconds.
        """
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=grace)
        if self in Process.registry:
            Process.registry.remove(self)
        self.logFile.close()
        return self.popen.returncode

    @classmethod
    def stopAll(cls) -> None:
        for process in list(reversed(cls.registry)):
            try:
                process.stop()
            except Exception as e:  # keep stopping the others
                log(f"could not stop {process.name} (pid {process.pid}): {e}")


class Pinning:
    """
    Which CPUs the server and the load run on, and the taskset prefixes.
    """

    def __init__(self, enabled: bool = True) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.taskset = shutil.which("taskset")
        if enabled and len(cpus) >= 2 and self.taskset:
            self.serverCpu: int | None = cpus[0]
            self.loadCpu: int | None = cpus[1]
            self.note = f"server on CPU {cpus[0]}, load on CPU {cpus[1]} (taskset)"
        else:
            self.serverCpu = self.loadCpu = None
            why = (
                "disabled"
                if not enabled
                else "no taskset" if not self.taskset else f"{len(cpus)} CPU"
            )
            self.note = f"not pinned ({why}): server and load share the CPUs"

    def server(self, argv: list[str]) -> list[str]:
        if self.serverCpu is None:
            return argv
        return [str(self.taskset), "-c", str(self.serverCpu)] + argv

    def load(self, argv: list[str]) -> list[str]:
        if self.loadCpu is None:
            return argv
        return [str(self.taskset), "-c", str(self.loadCpu)] + argv

    def pinSelf(self) -> None:
        """
        Keep this runner off the server's core.
        """
        if self.loadCpu is not None:
            os.sched_setaffinity(0, {self.loadCpu})


def buildLoadgen(source: Path = LOADGEN_SOURCE, target: Path = LOADGEN) -> Path:
    """
    Compile loadgen.c with the machine's gcc if the binary is missing or
    older than the source.
    """
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BenchError("gcc is needed to build bench/loadgen.c")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(tmp), str(source), "-lm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"gcc failed:\n{result.stderr}")
    os.replace(tmp, target)
    log(f"built {target.relative_to(ROOT)}")
    return target


class LoadGen:
    """
    The running load generator, driven over its stdin/stdout.
    """

    def __init__(
        self,
        pinning: Pinning,
        port: int,
        clients: int,
        since: bool,
        logPath: Path,
        maxSeconds: float,
    ) -> None:
        argv = [
            str(LOADGEN),
            "--port", str(port),
            "--clients", str(clients),
            "--path", f"/artcasts/{KEY}",
            "--max-seconds", str(int(maxSeconds)),
        ]
        if since:
            argv.append("--since")
        self.process = Process(
            "loadgen",
            pinning.load(argv),
            logPath,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stdout = self.process.popen.stdout
        assert stdout is not None
        for line in stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "garbage", "line": line.decode(errors="replace")})
        self.events.put({"event": "eof"})

    def send(self, command: str) -> None:
        stdin = self.process.popen.stdin
        assert stdin is not None
        stdin.write((command + "\n").encode())
        stdin.flush()

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        """
        The next event named C{event}, skipping others.

        @raise BenchError: on timeout or if the load generator exits.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"loadgen: no {event!r} within {timeout:.0f} s")
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item.get("event") == event:
                return item
            if item.get("event") == "eof":
                raise BenchError(f"loadgen exited while waiting for {event!r}")

    def status(self) -> dict[str, Any]:
        self.send("STATUS")
        return self.wait("status", 10)

    def stop(self) -> None:
        try:
            self.send("QUIT")
            self.process.popen.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.process.stop()


# --------------------------------------------------------------------------
# Servers


class ServerConfig:
    """
    Where one server instance listens and which groups it joins.
    """

    def __init__(self, rng: random.Random) -> None:
        self.httpPort = freeTcpPort()
        self.dataGroup = randomGroup(rng)
        self.dataPort = freeUdpPort()
        self.registerGroup = self.dataGroup
        self.registerPort = freeUdpPort()
        while self.registerPort == self.dataPort:
            self.registerPort = freeUdpPort()


def commonArgv(config: ServerConfig) -> list[str]:
    """
    The options both servers share, with the same values: groups joined on
    127.0.0.1 and access lines written to /dev/null.
    """
    return [
        "--data-group", config.dataGroup,
        "--data-port", str(config.dataPort),
        "--register-group", config.registerGroup,
        "--register-port", str(config.registerPort),
        "--interface", "127.0.0.1",
        "--access-log", os.devnull,
    ]


def baselineArgv(config: ServerConfig) -> list[str]:
    return [
        sys.executable,
        str(BASELINE),
        "--client-port", str(config.httpPort),
        "--client-address", "127.0.0.1",
    ] + commonArgv(config)


def twistdPath() -> str:
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise BenchError("twistd not found")
    return found


def artcastArgv(config: ServerConfig) -> list[str]:
    return [
        twistdPath(),
        "-n",
        "--pidfile=",
        "artcast",
        "--client-port", f"tcp:{config.httpPort}:interface=127.0.0.1",
    ] + commonArgv(config)


def serverEnv() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def artcastAvailable() -> tuple[bool, str]:
    """
    Whether C{twistd -n artcast --help} works from the repository root.
    """
    try:
        result = subprocess.run(
            [twistdPath(), "-n", "artcast", "--help"],
            cwd=str(ROOT),
            env=serverEnv(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        return False, str(e)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["exit status"])[-1]
        return False, f"twistd artcast --help failed: {last}"
    return True, "ok"


def waitForHttp(server: Process, port: int, timeout: float) -> None:
    """
    Wait until C{GET /artcasts} answers (any status) on 127.0.0.1:port.
    """
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/artcasts"
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"{server.name} exited with {server.popen.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer HTTP within {timeout:.0f} s")


def waitSettled(
    pid: int, quiet: float = 0.5, timeout: float = 30.0, step: float = 0.1
) -> float:
    """
    Wait until C{pid} has used no CPU for C{quiet} seconds (or C{timeout}).

    @return: the seconds waited.
    """
    start = time.monotonic()
    last = cpuSeconds(pid)
    quietSince = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(step)
        now = cpuSeconds(pid)
        if now > last:
            last = now
            quietSince = time.monotonic()
        elif time.monotonic() - quietSince >= quiet:
            break
    return time.monotonic() - start


# --------------------------------------------------------------------------
# One phase: a rate, with the loadgen's N polls held


def runPhase(
    server: Process,
    loadgen: LoadGen,
    pinning: Pinning,
    config: ServerConfig,
    rate: float,
    duration: float,
    firstN: int,
    drainMax: float,
    logPath: Path,
) -> dict[str, Any]:
    """
    Send C{rate} datums/s for C{duration} s and collect the figures.
    """
    loadgen.send(f"MARK {firstN}")
    loadgen.wait("mark", 10)
    argv = pinning.load(
        [
            sys.executable,
            str(EMITTER),
            "--group", config.dataGroup,
            "--port", str(config.dataPort),
            "--register-port", str(config.registerPort),
            "--rate", str(rate),
            "--duration", str(duration),
            "--first-n", str(firstN),
            "--key", KEY,
        ]
    )
    cpu0, t0 = cpuSeconds(server.pid), time.monotonic()
    with open(logPath, "ab") as errors:
        result = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=errors, timeout=duration + 30
        )
    cpu1, t1 = cpuSeconds(server.pid), time.monotonic()
    if result.returncode != 0:
        raise BenchError(f"emitter failed with {result.returncode}")
    emitted = json.loads(result.stdout.decode().strip().splitlines()[-1])

    # Drain: wait until no answer arrived and the server used no CPU for a
    # while (it may be busy reading re-polls, answering nothing), bounded by
    # drainMax.
    drainStart = time.monotonic()
    last = (loadgen.status()["deliveries"], cpuSeconds(server.pid))
    quietSince = time.monotonic()
    while time.monotonic() - drainStart < drainMax:
        time.sleep(0.2)
        now = (loadgen.status()["deliveries"], cpuSeconds(server.pid))
        if now != last:
            last, quietSince = now, time.monotonic()
        elif time.monotonic() - quietSince >= 0.6:
            break
    cpu2, t2 = cpuSeconds(server.pid), time.monotonic()

    loadgen.send(f"REPORT {emitted['first']} {emitted['last']}")
    report = loadgen.wait("report", 60)
    deliveries = report["deliveries"]
    # Over the sending period, or longer if answers kept coming after it.
    window = max(emitted["sent"] / rate, report["window_s"] or 0.0)
    return {
        "rate": rate,
        "duration_s": duration,
        "emitter": emitted,
        "loadgen": report,
        "deliveries_per_s": deliveries / window if window > 0 else None,
        "latency_p50_ms": report["latency_ms"]["p50"],
        "latency_p99_ms": report["latency_ms"]["p99"],
        "completion_p50_ms": report["completion_ms"]["p50"],
        "completion_p99_ms": report["completion_ms"]["p99"],
        "fraction_delivered": report["datums"]["fraction_delivered"],
        "fraction_complete": report["datums"]["fraction_complete"],
        "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None,
        "server_cpu_us_per_delivery": (
            (cpu2 - cpu0) * 1e6 / deliveries if deliveries else None
        ),
        "loadgen_cpu_pct": (
            100 * report["loadgen_cpu_frac"]
            if report["loadgen_cpu_frac"] is not None
            else None
        ),
        "emitter_cpu_s": emitted["cpu_s"],
        "drain_s": t2 - drainStart,
        "ids_seen": report["ids_seen"],
    }


# --------------------------------------------------------------------------
# One server at one N: idle memory, then every rate (and since mode)


def runCell(
    name: str,
    useSince: bool,
    clients: int,
    rate: float,
    duration: float,
    pinning: Pinning,
    outDir: Path,
    rng: random.Random,
    drainMax: float,
) -> dict[str, Any]:
    """
    One figure set on a fresh server: start server C{name}, measure its RSS
    with no client and with C{clients} idle polls, send C{rate} datums/s for
    C{duration} s, collect, stop everything.

    A fresh server per cell keeps the cells independent: an overloaded
    server still works off its backlog (queued datagrams, datums kept for
    C{since}) long after its emitter stopped.
    """
    label = name + ("+since" if useSince else "")
    config = ServerConfig(rng)
    argv = baselineArgv(config) if name == "baseline" else artcastArgv(config)
    logPath = outDir / f"{label}-{clients}-{rate:g}.log"
    server = Process(label, pinning.server(argv), logPath, cwd=ROOT, env=serverEnv())
    loadgen: LoadGen | None = None
    try:
        waitForHttp(server, config.httpPort, timeout=60)
        waitSettled(server.pid, timeout=10)
        rssIdle = rssKiB(server.pid)
        loadgen = LoadGen(
            pinning,
            config.httpPort,
            clients,
            useSince,
            outDir / f"loadgen-{label}-{clients}-{rate:g}.log",
            maxSeconds=300 + duration + drainMax,
        )
        ready = loadgen.wait("ready", 180)
        settle = waitSettled(server.pid, timeout=30)
        rssHeld = rssKiB(server.pid)
        phase = runPhase(
            server, loadgen, pinning, config, rate, duration, 1, drainMax, logPath
        )
        if not server.alive():
            raise BenchError(f"{label} died during the run")
    finally:
        if loadgen is not None:
            loadgen.stop()
        server.stop()
    phase.update(
        server=label,
        clients=clients,
        ramp_s=ready["seconds"],
        settle_s=settle,
        rss_idle_kib=rssIdle,
        rss_held_kib=rssHeld,
        memory_per_client_kib=(rssHeld - rssIdle) / clients,
    )
    log(
        f"{label} N={clients} rate={rate:g}: polls held in "
        f"{ready['seconds']:.1f}+{settle:.1f} s, "
        f"{fmt(phase['memory_per_client_kib'])} KiB/client; "
        f"{fmt(phase['deliveries_per_s'])} deliveries/s, "
        f"p50 {fmt(phase['latency_p50_ms'])} ms, "
        f"delivered {fmt(phase['fraction_delivered'])}, "
        f"server CPU {fmt(phase['server_cpu_pct'])}%"
    )
    return phase


def runServer(
    name: str,
    clients: int,
    rates: Sequence[float],
    duration: float,
    pinning: Pinning,
    outDir: Path,
    rng: random.Random,
    since: str,
    drainMax: float,
) -> list[dict[str, Any]]:
    """
    Every rate for server C{name} with C{clients} polls; for Artcast also
    with C{?since=} (with C{since="auto"}: if its answers carry
    C{Artcast-Id}).

    @return: one result per (mode, rate).
    """
    results: list[dict[str, Any]] = []
    modes = [False]
    if name == "artcast" and since in ("auto", "on"):
        modes.append(True)
    for useSince in modes:
        if useSince and since == "auto" and not any(r["ids_seen"] for r in results):
            log(f"{name} sent no Artcast-Id: no since mode")
            break
        for rate in rates:
            results.append(
                runCell(
                    name, useSince, clients, rate, duration, pinning, outDir,
                    rng, drainMax,
                )
            )
    return results


# --------------------------------------------------------------------------
# The table


FIGURES = [
    ("deliveries_per_s", "deliveries/s"),
    ("latency_p50_ms", "latency p50 (ms)"),
    ("latency_p99_ms", "latency p99 (ms)"),
    ("completion_p50_ms", "fan-out completion p50 (ms)"),
    ("completion_p99_ms", "fan-out completion p99 (ms)"),
    ("fraction_delivered", "fraction delivered"),
    ("fraction_complete", "datums reaching all N"),
    ("server_cpu_pct", "server CPU (% of a core)"),
    ("server_cpu_us_per_delivery", "server CPU per delivery (us)"),
    ("memory_per_client_kib", "memory per held client (KiB)"),
    ("loadgen_cpu_pct", "loadgen CPU (% of a core)"),
]


def fmt(value: float | None) -> str:
    """
    A figure for the table: 3 significant digits, "n/a" for none.
    """
    if value is None:
        return "n/a"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    """
    C{numerator / denominator} as "x1.23", or "n/a".
    """
    if numerator is None or denominator is None or denominator == 0:
        return "n/a"
    return f"x{numerator / denominator:.2f}"


def table(results: Iterable[dict[str, Any]]) -> str:
    """
    Rows per N, rate and figure; columns baseline, artcast, the ratio
    artcast/baseline, and artcast with since and its ratio.
    """
    byKey: dict[tuple[int, float], dict[str, dict[str, Any]]] = {}
    for result in results:
        key = (result["clients"], result["rate"])
        byKey.setdefault(key, {})[result["server"]] = result
    header = [
        "N", "rate/s", "figure", "baseline", "artcast", "artcast/baseline",
        "artcast+since", "+since/baseline",
    ]
    rows = [header]
    for (clients, rate) in sorted(byKey):
        servers = byKey[(clients, rate)]
        for field, label in FIGURES:
            base = servers.get("baseline", {}).get(field)
            art = servers.get("artcast", {}).get(field)
            sin = servers.get("artcast+since", {}).get(field)
            rows.append([
                str(clients), f"{rate:g}", label,
                fmt(base) if "baseline" in servers else "-",
                fmt(art) if "artcast" in servers else "-",
                ratio(art, base),
                fmt(sin) if "artcast+since" in servers else "-",
                ratio(sin, base),
            ])
        rows.append([""] * len(header))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines).rstrip() + "\n"


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for module in ("tornado", "twisted"):
        try:
            versions[module] = __import__(module).version if module == "tornado" \
                else __import__(module).__version__
        except Exception:
            versions[module] = "missing"
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "versions": versions,
    }


# --------------------------------------------------------------------------
# Command line


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark: Artcast against the original design on Tornado."
    )
    parser.add_argument("--quick", action="store_true",
                        help="short mode for CI: N=50, one rate, ~3 s per server")
    parser.add_argument("--clients", default=None,
                        help="comma-separated N (default 100,1000,10000)")
    parser.add_argument("--rates", default=None,
                        help="comma-separated datums/s (default 1,10,100)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of sending per rate (default 10)")
    parser.add_argument("--servers", default="baseline,artcast",
                        help="which servers (artcast is skipped if it cannot start)")
    parser.add_argument("--since", choices=("auto", "on", "off"), default="auto",
                        help="also run Artcast with ?since= (auto: if it sends Artcast-Id)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--json", dest="jsonPath", default=None,
                        help="write all results to this file")
    parser.add_argument("--out-dir", default=str(BENCH / "out"),
                        help="logs of the processes (default bench/out)")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    if options.quick:
        options.clients = options.clients or "50"
        options.rates = options.rates or "10"
        options.duration = options.duration or 3.0
    options.clients = [int(x) for x in (options.clients or "100,1000,10000").split(",")]
    options.rates = [float(x) for x in (options.rates or "1,10,100").split(",")]
    options.duration = options.duration or 10.0
    options.servers = [s.strip() for s in options.servers.split(",") if s.strip()]
    for s in options.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r} (known: {', '.join(SERVERS)})")
    if any(n < 1 for n in options.clients) or any(r <= 0 for r in options.rates):
        parser.error("clients and rates must be positive")
    return options


def run(options: argparse.Namespace) -> dict[str, Any]:
    """
    The whole benchmark; returns the results document.
    """
    outDir = Path(options.out_dir)
    outDir.mkdir(parents=True, exist_ok=True)
    limit = raiseFileLimit(max(options.clients) + 256)
    buildLoadgen()
    pinning = Pinning(enabled=not options.no_pin)
    pinning.pinSelf()
    rng = random.Random(options.seed)
    notes = [pinning.note, f"file limit {limit}"]
    servers = list(options.servers)
    if "artcast" in servers:
        ok, why = artcastAvailable()
        if not ok:
            servers.remove("artcast")
            notes.append(f"artcast skipped: {why}")
            log(f"artcast skipped: {why}")
    drainMax = max(2.0, options.duration)
    results: list[dict[str, Any]] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for clients in options.clients:
        for name in servers:
            log(f"{name}: N={clients}, rates {options.rates}, {options.duration:g} s each")
            results.extend(
                runServer(
                    name, clients, options.rates, options.duration, pinning,
                    outDir, rng, options.since, drainMax,
                )
            )
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "notes": notes,
        "settings": {
            "clients": options.clients,
            "rates": options.rates,
            "duration_s": options.duration,
            "servers": servers,
            "since": options.since,
            "quick": options.quick,
        },
        "results": results,
    }


def onSigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parseArgs(argv)
    signal.signal(signal.SIGTERM, onSigterm)
    try:
        document = run(options)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Process.stopAll()
    meta = document["machine"]
    sys.stdout.write(
        f"Fan-out benchmark, {document['date']}, {meta['cpu']}, {meta['cpus']} CPUs, "
        f"Python {meta['versions']['python']}, Tornado {meta['versions']['tornado']}, "
        f"Twisted {meta['versions']['twisted']}\n"
        f"{options.duration:g} s per rate; " + "; ".join(document["notes"]) + "\n\n"
    )
    sys.stdout.write(table(document["results"]))
    sys.stdout.flush()
    if options.jsonPath:
        with open(options.jsonPath, "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
