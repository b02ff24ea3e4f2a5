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
pinned with taskset (C{--server-cpus}, C{--load-cpus} choose the CPUs).  It
prints a table with the ratio Artcast/baseline and can write every figure as
JSON.

Nchan (nginx with libnginx-mod-nchan, one worker process) is the second
peer (column C{nchan}, with C{+since/nchan}, Artcast with C{?since=} over
it): its subscribers long-poll C{/artcasts/<key>} with Nchan's own protocol
(C{If-Modified-Since}/C{If-None-Match}, L{nchanConf}), and the emitter
C{POST}s the same datums to its C{/pub/<key>}.  It is skipped, with the
reason, when nginx or the module is not installed.

With C{--stream longpoll,sse,ws} each cell is run once per client kind
(default C{longpoll} alone): C{sse} and C{ws} hold one Server-Sent Events or
WebSocket stream per client on C{/artcasts/<key>} (C{loadgen --mode}), on
Artcast and Nchan only (the baseline has no streams), and the memory figure
is per open stream.

With C{--then TREE}, Artcast as another work tree has it (an earlier commit,
checked out with C{git worktree add --detach TREE COMMIT}) is run too, by
the same command with the same load (column C{then}, and C{artcast/then}):
how far a change moved the figures, measured in one run.

With C{--workers N}, Artcast is also run as C{twistd artcast --workers N}
(column C{artcast-wN}, with its ratio to the single-process Artcast): its
CPU and RSS are summed over the supervisor and its worker processes.

Run from the repository root::

    python bench/fanout.py                 # full run, several minutes
    python bench/fanout.py --quick         # N=50, one rate, seconds
    python bench/fanout.py --servers artcast --workers 2 --server-cpus 0,1

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

SERVERS = ("baseline", "artcast", "nchan")
#: The kinds of client (C{--stream}): long polls, Server-Sent Events streams,
#: WebSocket streams (C{loadgen --mode}).
STREAMS = ("longpoll", "sse", "ws")
#: The servers that have streams: the baseline (the original design) has none.
STREAM_SERVERS = ("artcast", "nchan")
#: The server of C{--then TREE}: Artcast as another work tree has it (an
#: earlier commit), run by the same command with the same load.
THEN = "then"
NGINX = Path("/usr/sbin/nginx")
NGINX_MODULES = (Path("/usr/lib/nginx/modules"), Path("/etc/nginx/modules-enabled"))
NGINX_PREFIX = Path("/usr/share/nginx")


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


def cpuTimes() -> dict[str, tuple[int, int]]:
    """
    Busy and total clock ticks of each CPU since boot, from /proc/stat
    (idle and iowait count as not busy); empty without /proc/stat.
    """
    times: dict[str, tuple[int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks = [int(x) for x in fields[:8]]
                    idle = ticks[3] + ticks[4]
                    times[name[3:]] = (sum(ticks) - idle, sum(ticks))
    except (OSError, ValueError, IndexError):
        return {}
    return times


def busyPercent(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float | None]:
    """
    Each CPU's busy share, in percent, between two L{cpuTimes} readings: all
    that ran on it, this benchmark's processes and anyone else's.
    """
    shares: dict[str, float | None] = {}
    for cpu, (busy1, total1) in after.items():
        busy0, total0 = before.get(cpu, (busy1, total1))
        shares[cpu] = 100 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
    return shares


def parentPid(pid: int) -> int:
    """
    The parent of C{pid}, from /proc/<pid>/stat.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # After the command name: state, then ppid.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def childPids(pid: int) -> list[int]:
    """
    The children of C{pid}: from /proc/<pid>/task/*/children when the kernel
    has it, else by scanning /proc/*/stat for their parent.
    """
    children: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    readable = False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.update(int(c) for c in f.read().split())
            readable = True
        except (OSError, ValueError):
            pass
    if not readable:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if parentPid(int(entry)) == pid:
                        children.add(int(entry))
                except (OSError, ValueError):
                    pass
    return sorted(children)


def descendantPids(pid: int) -> list[int]:
    """
    The children of C{pid}, theirs, and so on (bounded: a process tree is
    finite, and each PID is visited once).
    """
    found: list[int] = []
    pending = [pid]
    seen = {pid}
    while pending and len(found) < 4096:
        for child in childPids(pending.pop()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                pending.append(child)
    return sorted(found)


class ServerTree:
    """
    The processes of one server: its own and its descendants (the workers of
    C{--workers N}), fixed when the server is ready.  Its CPU time and RSS
    are the sums over them.

    @ivar pids: the server's PID first, then the others.
    """

    def __init__(self, pid: int, others: Iterable[int] = ()) -> None:
        self.pid = pid
        self.pids = [pid] + sorted(set(others) - {pid})

    @classmethod
    def of(cls, pid: int) -> ServerTree:
        """
        C{pid} and every process below it now.
        """
        return cls(pid, descendantPids(pid))

    def _each(self, read: Any) -> dict[int, Any]:
        values = {}
        for pid in self.pids:
            try:
                values[pid] = read(pid)
            except (OSError, ValueError) as e:
                raise BenchError(f"server process {pid} is gone ({e})") from e
        return values

    def cpuByPid(self) -> dict[int, float]:
        """
        User plus system CPU seconds of each process.
        """
        return self._each(cpuSeconds)

    def cpuSeconds(self) -> float:
        """
        User plus system CPU seconds, summed over the processes.
        """
        return sum(self.cpuByPid().values())

    def rssKiB(self) -> int:
        """
        Resident set size in KiB, summed over the processes.
        """
        return sum(self._each(rssKiB).values())


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


def parseCpuList(text: str) -> list[int]:
    """
    A CPU list as C{taskset -c} takes it: numbers and ranges separated by
    commas (C{"0"}, C{"0,1"}, C{"0-3,6"}).

    @return: the CPUs, sorted, each once.
    @raise ValueError: if C{text} is not such a list.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty item in CPU list {text!r}")
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"bad CPU list item {part!r} in {text!r}")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"bad CPU range {part!r} in {text!r}")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def cpuListText(cpus: Sequence[int]) -> str:
    """
    CPUs as C{taskset -c} takes them: C{"0,1"}.
    """
    return ",".join(str(cpu) for cpu in cpus)


class Pinning:
    """
    Which CPUs the server (with its worker processes, which inherit the
    affinity) and the load (load generator, emitter and this runner) run on,
    and the taskset prefixes.

    By default the server gets the first CPU this runner may use and the
    load the second; with fewer than two, nothing is pinned unless CPUs are
    given.
    """

    def __init__(
        self,
        enabled: bool = True,
        serverCpus: Sequence[int] | None = None,
        loadCpus: Sequence[int] | None = None,
        available: Iterable[int] | None = None,
        taskset: str | None = None,
    ) -> None:
        cpus = sorted(os.sched_getaffinity(0) if available is None else available)
        self.taskset = taskset if taskset is not None else shutil.which("taskset")
        self.serverCpus: list[int] | None = None
        self.loadCpus: list[int] | None = None
        for given in (serverCpus, loadCpus):
            unknown = sorted(set(given or ()) - set(cpus))
            if unknown:
                raise BenchError(
                    f"CPU {cpuListText(unknown)} is not one this process may use "
                    f"({cpuListText(cpus)})"
                )
        if enabled and self.taskset:
            if serverCpus:
                self.serverCpus = sorted(set(serverCpus))
            elif len(cpus) >= 2:
                self.serverCpus = [cpus[0]]
            if loadCpus:
                self.loadCpus = sorted(set(loadCpus))
            elif len(cpus) >= 2:
                self.loadCpus = [cpus[1]]
        if self.serverCpus is None and self.loadCpus is None:
            why = (
                "disabled"
                if not enabled
                else "no taskset" if not self.taskset else f"{len(cpus)} CPU"
            )
            self.note = f"not pinned ({why}): server and load share the CPUs"
        else:
            shared = sorted(set(self.serverCpus or ()) & set(self.loadCpus or ()))
            self.note = (
                f"server on {self._where(self.serverCpus)}, "
                f"load on {self._where(self.loadCpus)} (taskset)"
                + (f"; CPU {cpuListText(shared)} shared" if shared else "")
            )

    @staticmethod
    def _where(cpus: Sequence[int] | None) -> str:
        if cpus is None:
            return "any CPU (not pinned)"
        return ("CPU " if len(cpus) == 1 else "CPUs ") + cpuListText(cpus)

    def describe(self) -> dict[str, Any]:
        """
        The pinning, for the JSON document.
        """
        return {"server_cpus": self.serverCpus, "load_cpus": self.loadCpus}

    def server(self, argv: list[str]) -> list[str]:
        if self.serverCpus is None:
            return argv
        return [str(self.taskset), "-c", cpuListText(self.serverCpus)] + argv

    def load(self, argv: list[str]) -> list[str]:
        if self.loadCpus is None:
            return argv
        return [str(self.taskset), "-c", cpuListText(self.loadCpus)] + argv

    def pinSelf(self) -> None:
        """
        Keep this runner with the load (off the server's core, unless they
        share one).
        """
        if self.loadCpus is not None:
            os.sched_setaffinity(0, set(self.loadCpus))


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


class JSONLinesChild:
    """
    A child process that speaks JSON lines on its stdout (one event each,
    named by its C{"event"}) and takes commands on its stdin, one a line.
    """

    def __init__(self, name: str, process: Process) -> None:
        self.name = name
        self.process = process
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

    def other(self, item: dict[str, Any]) -> None:
        """
        An event skipped while waiting for another (ignored here).
        """

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        """
        The next event named C{event}, skipping others (each given to
        L{other}).

        @raise BenchError: on timeout or if the child exits first.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {event!r} within {timeout:.0f} s")
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item.get("event") == event:
                return item
            self.other(item)
            if item.get("event") == "eof":
                raise BenchError(f"{self.name} exited while waiting for {event!r}")


class LoadGen(JSONLinesChild):
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
        nchan: bool = False,
        stream: str = "longpoll",
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
        if nchan and stream == "longpoll":
            argv.append("--nchan")
        if stream != "longpoll":
            argv += ["--mode", stream]
        super().__init__("loadgen", Process(
            "loadgen",
            pinning.load(argv),
            logPath,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ))

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


def artcastArgv(config: ServerConfig, workers: int = 0) -> list[str]:
    """
    The command line of Artcast, with C{--workers} when C{workers} is not 0.
    """
    return [
        twistdPath(),
        "-n",
        "--pidfile=",
        "artcast",
        "--client-port", f"tcp:{config.httpPort}:interface=127.0.0.1",
    ] + commonArgv(config) + (["--workers", str(workers)] if workers else [])


def workersOf(name: str) -> int:
    """
    How many worker processes server C{name} runs: N for C{artcast-wN}, else
    0 (one process).
    """
    prefix = "artcast-w"
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return 0


def workersName(workers: int) -> str:
    """
    The column of Artcast run with C{--workers N}: C{artcast-wN}.
    """
    return f"artcast-w{workers}"


def serverEnv(root: Path = ROOT) -> dict[str, str]:
    """
    The environment of a server run from the tree C{root}: its Artcast
    first on the path.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serverRoot(name: str, then: Path | None) -> Path:
    """
    The tree server C{name} runs from: C{then} for L{THEN}, else this
    repository.
    """
    return then if name == THEN and then is not None else ROOT


def artcastAvailable(root: Path = ROOT) -> tuple[bool, str]:
    """
    Whether C{twistd -n artcast --help} works from the tree C{root} (by
    default this repository's).
    """
    try:
        result = subprocess.run(
            [twistdPath(), "-n", "artcast", "--help"],
            cwd=str(root),
            env=serverEnv(root),
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


def treeCommit(root: Path) -> str:
    """
    The commit a work tree has checked out, as C{git describe} gives it
    (C{-dirty} when changed), or why that is not known.
    """
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"commit unknown ({e})"
    if result.returncode != 0:
        return "commit unknown (not a git tree)"
    return "commit " + result.stdout.strip()


def nginxPath() -> Path | None:
    """
    The nginx binary: /usr/sbin/nginx, else the one on C{PATH}.
    """
    if NGINX.exists():
        return NGINX
    found = shutil.which("nginx")
    return Path(found) if found else None


def nchanModule(places: Sequence[Path] | None = None) -> Path | None:
    """
    The Nchan dynamic module: C{ngx_nchan_module.so} in a modules folder, or
    the path a C{load_module} line of C{modules-enabled} names (relative to
    nginx's prefix).
    """
    for place in NGINX_MODULES if places is None else places:
        candidate = place / "ngx_nchan_module.so"
        if candidate.exists():
            return candidate
        try:
            enabled = sorted(place.glob("*nchan*.conf"))
        except OSError:
            enabled = []
        for conf in enabled:
            for line in conf.read_text(errors="replace").splitlines():
                words = line.strip().rstrip(";").split()
                if len(words) == 2 and words[0] == "load_module":
                    module = NGINX_PREFIX / words[1]
                    if module.exists():
                        return module
    return None


def nchanAvailable() -> tuple[bool, str]:
    """
    Whether nginx and the Nchan module are installed (bench/README.md says
    how to install them).
    """
    if nginxPath() is None:
        return False, "nginx is not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if nchanModule() is None:
        return False, "the Nchan module is not installed (apt-get install libnginx-mod-nchan)"
    return True, "ok"


def nchanConf(config: ServerConfig, directory: Path, clients: int) -> str:
    """
    The nginx.conf of one Nchan cell: listening on 127.0.0.1 only, every
    file (pid, error and access logs, temporary bodies) in C{directory}.

    One worker process under a master (C{master_process on}, as Nchan is
    deployed and tested; its shared-memory store is set up by the master):
    the runner reads CPU and RSS summed over both, as for C{--workers}, and
    the master, idle, stops the worker when it gets SIGTERM.  Subscribers
    long-poll C{/artcasts/<key>} (no timeout: held, as Artcast holds them);
    the same location serves Nchan's EventSource and WebSocket streams
    (C{--stream sse,ws}).  The emitter publishes to C{/pub/<key>}, allowed
    from 127.0.0.1 only.  A
    few messages are kept per channel (as Artcast keeps a short history) so
    that a client following C{Etag} gets the next one; a new subscriber
    starts at the newest.  Access lines go to a file: nginx has no
    C{/dev/null} short cut either.
    """
    module = nchanModule()
    d = directory.resolve()
    return f"""\
# generated by bench/fanout.py for one cell
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} notice;
events {{
    worker_connections {clients + 256};
}}
http {{
    access_log {d / "access.log"};
    client_body_temp_path {d / "body"};
    proxy_temp_path {d / "proxy"};
    fastcgi_temp_path {d / "fastcgi"};
    uwsgi_temp_path {d / "uwsgi"};
    scgi_temp_path {d / "scgi"};
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    nchan_message_buffer_length 4;
    nchan_message_timeout 60s;
    server {{
        listen 127.0.0.1:{config.httpPort};
        location ~ ^/artcasts/(.+)$ {{
            nchan_subscriber longpoll eventsource websocket;
            nchan_channel_id $1;
            nchan_subscriber_timeout 0;
            nchan_subscriber_first_message newest;
        }}
        location ~ ^/pub/(.+)$ {{
            allow 127.0.0.1;
            deny all;
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def nchanArgv(config: ServerConfig, directory: Path, clients: int) -> list[str]:
    """
    Write the cell's nginx.conf into C{directory} and return the command
    line that runs nginx on it in the foreground.
    """
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(nchanConf(config, directory, clients))
    return [
        str(nginxPath()),
        "-p", str(directory.resolve()),
        "-e", str((directory / "error.log").resolve()),
        "-c", str(conf.resolve()),
    ]


def stopOrphans(pids: Iterable[int], name: str, grace: float = 5.0) -> None:
    """
    SIGKILL those of C{pids} (the workers of a server we started, by their
    own PIDs) still running C{name} after C{grace} seconds: nginx's master
    stops its worker on SIGTERM, but a master that had to be killed leaves
    it behind.
    """

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if name.encode() not in f.read():
                    return False
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + grace
    for pid in pids:
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                log(f"killed {name} worker {pid}, left behind by its master")
            except ProcessLookupError:
                pass


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


def workerStats(
    server: Process, port: int, count: int, timeout: float
) -> dict[int, dict[str, Any]]:
    """
    Ask C{/stats.json} over fresh connections (the kernel gives each to one
    worker) until C{count} workers have answered, as tests/test_workers.py
    tells that workers are up.

    @return: the latest figures of each worker, by index.
    @raise BenchError: if fewer answered within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/stats.json"
    seen: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"{server.name} exited with {server.popen.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                stats = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.05)
            continue
        if isinstance(stats, dict) and isinstance(stats.get("worker"), int):
            seen[stats["worker"]] = stats
            if len(seen) >= count:
                return seen
        time.sleep(0.01)
    raise BenchError(
        f"{server.name}: only workers {sorted(seen)} of {count} answered "
        f"within {timeout:.0f} s"
    )


def waitForWorkers(server: Process, port: int, count: int, timeout: float) -> ServerTree:
    """
    Wait until each of the C{count} workers of C{server} answers, and check
    that they are its children.

    @return: the supervisor and its workers.
    """
    seen = workerStats(server, port, count, timeout)
    pids = {stats["pid"] for stats in seen.values()}
    children = set(descendantPids(server.pid))
    if not pids <= children:
        raise BenchError(
            f"{server.name}: workers {sorted(pids - children)} are not children "
            f"of pid {server.pid}"
        )
    return ServerTree(server.pid, children)


def heldByWorker(stats: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    What each worker held, from its C{/stats.json}: its client connections
    (less the one that asked), its waiting polls and its memory.
    """
    return {
        str(index): {
            "pid": figures.get("pid"),
            "connections": max(0, int(figures.get("connections", 1)) - 1),
            "waiting": figures.get("waiting"),
            "memory_kib": (
                figures["memory"] // 1024
                if isinstance(figures.get("memory"), int)
                else None
            ),
        }
        for index, figures in sorted(stats.items())
    }


def waitSettled(
    tree: ServerTree, quiet: float = 0.5, timeout: float = 30.0, step: float = 0.1
) -> float:
    """
    Wait until the server's processes have used no CPU for C{quiet} seconds
    (or C{timeout}).

    @return: the seconds waited.
    """
    start = time.monotonic()
    last = tree.cpuSeconds()
    quietSince = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(step)
        now = tree.cpuSeconds()
        if now > last:
            last = now
            quietSince = time.monotonic()
        elif time.monotonic() - quietSince >= quiet:
            break
    return time.monotonic() - start


# --------------------------------------------------------------------------
# One phase: a rate, with the loadgen's N polls held


def runPhase(
    tree: ServerTree,
    loadgen: LoadGen,
    pinning: Pinning,
    config: ServerConfig,
    rate: float,
    duration: float,
    firstN: int,
    drainMax: float,
    logPath: Path,
    publish: bool = False,
) -> dict[str, Any]:
    """
    Send C{rate} datums/s for C{duration} s and collect the figures; the
    server's CPU is summed over its processes (C{tree}).  With C{publish}
    (Nchan) the emitter C{POST}s the datums to the server's C{/pub/<key>}
    instead of sending them over multicast.
    """
    loadgen.send(f"MARK {firstN}")
    loadgen.wait("mark", 10)
    where = (
        ["--publish-port", str(config.httpPort)]
        if publish
        else [
            "--group", config.dataGroup,
            "--port", str(config.dataPort),
            "--register-port", str(config.registerPort),
        ]
    )
    argv = pinning.load(
        [
            sys.executable,
            str(EMITTER),
            *where,
            "--rate", str(rate),
            "--duration", str(duration),
            "--first-n", str(firstN),
            "--key", KEY,
        ]
    )
    machine0 = cpuTimes()
    byPid0 = tree.cpuByPid()
    cpu0, t0 = sum(byPid0.values()), time.monotonic()
    with open(logPath, "ab") as errors:
        result = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=errors, timeout=duration + 30
        )
    byPid1 = tree.cpuByPid()
    cpu1, t1 = sum(byPid1.values()), time.monotonic()
    machine1 = cpuTimes()
    if result.returncode != 0:
        raise BenchError(f"emitter failed with {result.returncode}")
    emitted = json.loads(result.stdout.decode().strip().splitlines()[-1])

    # Drain: wait until no answer arrived and the server used no CPU for a
    # while (it may be busy reading re-polls, answering nothing), bounded by
    # drainMax.
    drainStart = time.monotonic()
    last = (loadgen.status()["deliveries"], tree.cpuSeconds())
    quietSince = time.monotonic()
    while time.monotonic() - drainStart < drainMax:
        time.sleep(0.2)
        now = (loadgen.status()["deliveries"], tree.cpuSeconds())
        if now != last:
            last, quietSince = now, time.monotonic()
        elif time.monotonic() - quietSince >= 0.6:
            break
    byPid2 = tree.cpuByPid()
    cpu2, t2 = sum(byPid2.values()), time.monotonic()

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
        # Each process's share of a core while the emitter sent, and its CPU
        # seconds from the emitter's start to the end of the drain.
        "server_cpu_pct_by_pid": {
            str(pid): (
                100 * (byPid1[pid] - byPid0[pid]) / (t1 - t0) if t1 > t0 else None
            )
            for pid in tree.pids
        },
        # How busy each CPU was while the emitter sent, whoever ran on it: on
        # a shared machine, more than the server and the load adds up to
        # means someone else's work competed.
        "cpu_busy_pct_by_cpu": busyPercent(machine0, machine1),
        "server_cpu_s_by_pid": {
            str(pid): byPid2[pid] - byPid0[pid] for pid in tree.pids
        },
        "server_cpu_us_per_delivery": (
            (cpu2 - cpu0) * 1e6 / deliveries if deliveries else None
        ),
        "loadgen_cpu_pct": (
            100 * report["loadgen_cpu_frac"]
            if report["loadgen_cpu_frac"] is not None
            else None
        ),
        # What one answer costs the load generator (its CPU from the start
        # of measuring to the report): N times it is the least a fan-out to
        # N clients can take to be read, whatever the server.
        "loadgen_cpu_us_per_answer": (
            report["loadgen_cpu_s"] * 1e6 / deliveries
            if deliveries and report.get("loadgen_cpu_s") is not None
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
    stream: str = "longpoll",
    then: Path | None = None,
) -> dict[str, Any]:
    """
    One figure set on a fresh server: start server C{name}, measure its RSS
    with no client and with C{clients} idle polls (or open streams of kind
    C{stream}: C{sse}, C{ws}), send C{rate} datums/s for C{duration} s,
    collect, stop everything.

    A fresh server per cell keeps the cells independent: an overloaded
    server still works off its backlog (queued datagrams, datums kept for
    C{since}) long after its emitter stopped.

    For C{artcast-wN} (C{--workers N}) the measuring starts once each of the
    N workers has answered; CPU and RSS are summed over the supervisor and
    its workers, and each worker's connections and waiting polls are read
    from its C{/stats.json} once the polls are held.

    Server C{then} is Artcast run from the tree C{then} (see L{THEN}).
    """
    label = name + ("+since" if useSince else "")
    workers = workersOf(name)
    config = ServerConfig(rng)
    cell = f"{label}-{clients}-{rate:g}" + ("" if stream == "longpoll" else f"-{stream}")
    logPath = outDir / f"{cell}.log"
    nchan = name == "nchan"
    if nchan:
        argv = nchanArgv(config, outDir / cell, clients)
    elif name == "baseline":
        argv = baselineArgv(config)
    else:
        argv = artcastArgv(config, workers)
    root = serverRoot(name, then)
    server = Process(label, pinning.server(argv), logPath, cwd=root, env=serverEnv(root))
    loadgen: LoadGen | None = None
    held: dict[str, dict[str, Any]] | None = None
    tree = None
    try:
        waitForHttp(server, config.httpPort, timeout=60)
        if workers:
            tree = waitForWorkers(server, config.httpPort, workers, timeout=60)
        else:
            tree = ServerTree.of(server.pid)
        waitSettled(tree, timeout=10)
        rssIdle = tree.rssKiB()
        loadgen = LoadGen(
            pinning,
            config.httpPort,
            clients,
            useSince,
            outDir / f"loadgen-{cell}.log",
            maxSeconds=300 + duration + drainMax,
            nchan=nchan,
            stream=stream,
        )
        ready = loadgen.wait("ready", 180)
        settle = waitSettled(tree, timeout=30)
        rssHeld = tree.rssKiB()
        if workers:
            held = heldByWorker(
                workerStats(server, config.httpPort, workers, timeout=30)
            )
            log(
                f"{label} N={clients}: connections per worker "
                + ", ".join(
                    f"w{index} {figures['connections']} ({figures['waiting']} waiting)"
                    for index, figures in held.items()
                )
            )
            waitSettled(tree, timeout=10)
        phase = runPhase(
            tree, loadgen, pinning, config, rate, duration, 1, drainMax, logPath,
            publish=nchan,
        )
        if not server.alive():
            raise BenchError(f"{label} died during the run")
        if (workers or nchan) and set(descendantPids(server.pid)) != set(tree.pids[1:]):
            raise BenchError(f"{label}: a worker was replaced during the run")
    finally:
        if loadgen is not None:
            loadgen.stop()
        server.stop()
        if nchan and tree is not None:
            stopOrphans(tree.pids[1:], "nginx")
    phase.update(
        server=label,
        stream=stream,
        workers=workers,
        clients=clients,
        server_pids=tree.pids,
        ramp_s=ready["seconds"],
        settle_s=settle,
        rss_idle_kib=rssIdle,
        rss_held_kib=rssHeld,
        memory_per_client_kib=(rssHeld - rssIdle) / clients,
    )
    if held is not None:
        phase["held_by_worker"] = held
    log(
        f"{label} N={clients} rate={rate:g}: "
        + ("polls held" if stream == "longpoll" else f"{stream} streams open")
        + f" in {ready['seconds']:.1f}+{settle:.1f} s, "
        f"{fmt(phase['memory_per_client_kib'])} KiB/"
        + ("client; " if stream == "longpoll" else "stream; ")
        + f"{fmt(phase['deliveries_per_s'])} deliveries/s, "
        f"p50 {fmt(phase['latency_p50_ms'])} ms, "
        f"delivered {fmt(phase['fraction_delivered'])}, "
        f"server CPU {fmt(phase['server_cpu_pct'])}%"
        + (
            " ("
            + ", ".join(
                f"{fmt(pct)}%" for pct in phase["server_cpu_pct_by_pid"].values()
            )
            + " by process)"
            if len(tree.pids) > 1
            else ""
        )
        + "; CPUs busy "
        + ", ".join(
            f"{cpu}: {fmt(pct)}%" for cpu, pct in phase["cpu_busy_pct_by_cpu"].items()
        )
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
    stream: str = "longpoll",
    then: Path | None = None,
) -> list[dict[str, Any]]:
    """
    Every rate for server C{name} with C{clients} polls (or streams of kind
    C{stream}); for Artcast's long polls (with or without workers) also with
    C{?since=} (with C{since="auto"}: if its answers carry C{Artcast-Id}).

    @return: one result per (mode, rate).
    """
    results: list[dict[str, Any]] = []
    modes = [False]
    if stream == "longpoll" and name.startswith("artcast") and since in ("auto", "on"):
        modes.append(True)
    for useSince in modes:
        if useSince and since == "auto" and not any(r["ids_seen"] for r in results):
            log(f"{name} sent no Artcast-Id: no since mode")
            break
        for rate in rates:
            results.append(
                runCell(
                    name, useSince, clients, rate, duration, pinning, outDir,
                    rng, drainMax, stream, then,
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
    ("memory_per_client_kib", "memory per held client (KiB)"),  # per open stream
    ("loadgen_cpu_pct", "loadgen CPU (% of a core)"),
    ("loadgen_cpu_us_per_answer", "loadgen CPU per answer (us)"),
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


def figureLabel(field: str, label: str, stream: str) -> str:
    """
    A figure's row label: for a stream kind, memory is per open stream.
    """
    if field == "memory_per_client_kib" and stream != "longpoll":
        return "memory per open stream (KiB)"
    return label


def tableColumns(
    present: Iterable[str], streams: bool = False
) -> list[tuple[str, str, str | None]]:
    """
    The columns of the table for the servers that ran (result labels such
    as C{"artcast+since"} or C{"artcast-w2"}), in order.

    Each column is C{(header, server, denominator)}: the server's figure
    when C{denominator} is L{None}, else the ratio of the server's figure to
    the denominator's.  Every Artcast column is compared with the baseline;
    Artcast from another tree (C{then}, L{THEN}) follows, with
    C{artcast/then}; the Nchan column comes last, followed by Artcast with C{since} over it
    (C{+since/nchan}: both re-poll with an id, C{since=} or C{Etag});
    a worker column (C{artcast-wN}) also with the single-process Artcast of
    the same mode (C{wN/artcast}, C{wN+since/+since}), so that scaling is
    read directly.  With C{streams} (SSE or WebSocket rows in the table),
    also Artcast over Nchan (C{artcast/nchan}), the stream kinds' comparison.
    """
    labels = set(present)
    columns: list[tuple[str, str, str | None]] = []
    if "baseline" in labels:
        columns.append(("baseline", "baseline", None))
    names = ["artcast"] + sorted(
        {
            label.removesuffix("+since")
            for label in labels
            if workersOf(label.removesuffix("+since"))
        },
        key=lambda name: workersOf(name),
    )
    for name in names:
        short = "artcast" if name == "artcast" else name.removeprefix("artcast-")
        for since in ("", "+since"):
            label = name + since
            if label not in labels:
                continue
            columns.append((label, label, None))
            # artcast/baseline and +since/baseline, as before workers; wN...
            mine = since if name == "artcast" and since else short + since
            if "baseline" in labels:
                columns.append((f"{mine}/baseline", label, "baseline"))
            single = "artcast" + since
            if name != "artcast" and single in labels:
                columns.append(
                    (f"{mine}/{since or 'artcast'}", label, single)
                )
    if THEN in labels:
        # Artcast as an earlier commit has it, and now over then.
        columns.append((THEN, THEN, None))
        if "artcast" in labels:
            columns.append(("artcast/then", "artcast", THEN))
    if "nchan" in labels:
        columns.append(("nchan", "nchan", None))
        if "artcast+since" in labels:
            # Both follow ids (since= / Etag): the like-for-like comparison.
            columns.append(("+since/nchan", "artcast+since", "nchan"))
        if streams and "artcast" in labels:
            columns.append(("artcast/nchan", "artcast", "nchan"))
    return columns


def table(results: Iterable[dict[str, Any]]) -> str:
    """
    Rows per N, rate and figure; a column per server that ran (baseline,
    artcast, artcast+since, artcast-wN, artcast-wN+since), each Artcast
    column followed by its ratio to the baseline, and each worker column
    by its ratio to the single-process Artcast (L{tableColumns}).

    When a stream kind other than long polls ran (C{--stream}), the rows
    are also per kind, in a first column C{stream}.
    """
    byKey: dict[tuple[int, int, float], dict[str, dict[str, Any]]] = {}
    for result in results:
        stream = result.get("stream", "longpoll")
        key = (STREAMS.index(stream), result["clients"], result["rate"])
        byKey.setdefault(key, {})[result["server"]] = result
    streams = any(key[0] for key in byKey)
    columns = tableColumns(
        {label for servers in byKey.values() for label in servers}, streams
    )
    lead = ["stream"] if streams else []
    header = lead + ["N", "rate/s", "figure"] + [column[0] for column in columns]
    rows = [header]
    for (kind, clients, rate) in sorted(byKey):
        servers = byKey[(kind, clients, rate)]
        for field, label in FIGURES:
            row = ([STREAMS[kind]] if streams else []) + [
                str(clients), f"{rate:g}", figureLabel(field, label, STREAMS[kind])
            ]
            for _, server, denominator in columns:
                if server not in servers:
                    row.append("-")
                    continue
                value = servers[server].get(field)
                if denominator is None:
                    row.append(fmt(value))
                else:
                    row.append(ratio(value, servers.get(denominator, {}).get(field)))
            rows.append(row)
        rows.append([""] * len(header))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < len(lead) + 3 else cell.rjust(widths[i])
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
    parser.add_argument("--servers", default="baseline,artcast,nchan",
                        help="which servers (artcast is skipped if it cannot start, "
                        "nchan if nginx or its Nchan module is not installed)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated N: also run Artcast with --workers N, "
                        "as column artcast-wN (default: none)")
    parser.add_argument("--then", default=None, metavar="TREE",
                        help="also run Artcast from another work tree (an earlier "
                        "commit: git worktree add --detach TREE COMMIT), as column "
                        "then, with its ratio artcast/then (long polls only)")
    parser.add_argument("--since", choices=("auto", "on", "off"), default="auto",
                        help="also run Artcast with ?since= (auto: if it sends Artcast-Id)")
    parser.add_argument("--stream", default="longpoll",
                        help="comma-separated client kinds: longpoll, sse (Server-Sent "
                        "Events), ws (WebSocket); streams for artcast and nchan only "
                        "(default longpoll)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--server-cpus", default=None,
                        help="taskset list of CPUs for the server and its workers "
                        "(default: the first CPU, 0)")
    parser.add_argument("--load-cpus", default=None,
                        help="taskset list of CPUs for the load generator, the "
                        "emitter and this runner (default: the second CPU, 1)")
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
    options.stream = [s.strip() for s in options.stream.split(",") if s.strip()]
    for s in options.stream:
        if s not in STREAMS:
            parser.error(f"unknown stream {s!r} (known: {', '.join(STREAMS)})")
    if not options.stream:
        parser.error("--stream needs at least one kind")
    for s in options.servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r} (known: {', '.join(SERVERS)})")
    try:
        options.workers = sorted(
            {int(x) for x in (options.workers or "").split(",") if x.strip()}
        )
    except ValueError:
        parser.error(f"--workers takes comma-separated counts, not {options.workers!r}")
    if any(not 1 <= n <= 64 for n in options.workers):
        parser.error("--workers counts must be from 1 to 64")
    if options.then is not None:
        options.then = Path(options.then).resolve()
        if not (options.then / "artcast" / "server").is_dir():
            parser.error(f"--then: no Artcast tree at {str(options.then)!r}")
    if not options.servers and not options.workers and options.then is None:
        parser.error("nothing to run: give --servers, --workers or --then")
    for option in ("server_cpus", "load_cpus"):
        text = getattr(options, option)
        if text is not None:
            try:
                setattr(options, option, parseCpuList(text))
            except ValueError as e:
                parser.error(f"--{option.replace('_', '-')}: {e}")
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
    pinning = Pinning(
        enabled=not options.no_pin,
        serverCpus=options.server_cpus,
        loadCpus=options.load_cpus,
    )
    pinning.pinSelf()
    rng = random.Random(options.seed)
    notes = [pinning.note, f"file limit {limit}"]
    servers = list(options.servers) + [workersName(n) for n in options.workers]
    if any(name.startswith("artcast") for name in servers):
        ok, why = artcastAvailable()
        if not ok:
            servers = [name for name in servers if not name.startswith("artcast")]
            notes.append(f"artcast skipped: {why}")
            log(f"artcast skipped: {why}")
    if options.then is not None:
        ok, why = artcastAvailable(options.then)
        if ok:
            servers.insert(servers.index("artcast") + 1 if "artcast" in servers else 0, THEN)
            notes.append(f"then: Artcast from {options.then}, {treeCommit(options.then)}")
        else:
            notes.append(f"then skipped: {why}")
            log(f"then skipped: {why}")
    if "nchan" in servers:
        ok, why = nchanAvailable()
        if ok:
            notes.append(
                "nchan: one nginx worker under its master (CPU and RSS summed); the "
                "emitter POSTs each datum to /pub/<key> over one keep-alive connection, "
                "so publishing costs the emitter's CPU (load CPU), not multicast"
            )
        else:
            servers.remove("nchan")
            notes.append(f"nchan skipped: {why}")
            log(f"nchan skipped: {why}")
    drainMax = max(2.0, options.duration)
    results: list[dict[str, Any]] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    streamed = [kind for kind in options.stream if kind != "longpoll"]
    if streamed:
        notes.append(
            "streams (" + ", ".join(streamed) + "): artcast and nchan only (the "
            "baseline, the original design, has no streams); one stream per client "
            "held for the whole cell, memory per open stream; Artcast's SSE and "
            "WebSocket on /artcasts/<key>, Nchan's eventsource and websocket in the "
            "same location"
        )
    for stream in options.stream:
        for clients in options.clients:
            for name in servers:
                if stream != "longpoll" and not name.startswith(STREAM_SERVERS):
                    continue
                log(
                    f"{name} ({stream}): N={clients}, rates {options.rates}, "
                    f"{options.duration:g} s each"
                )
                results.extend(
                    runServer(
                        name, clients, options.rates, options.duration, pinning,
                        outDir, rng, options.since, drainMax, stream, options.then,
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
            "workers": options.workers,
            "pinning": pinning.describe(),
            "since": options.since,
            "then": str(options.then) if options.then is not None else None,
            "streams": options.stream,
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
