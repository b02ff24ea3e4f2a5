# -*- test-case-name: tests.test_bench -*-
"""
Deliveries/s of one server on the Redis bus against the same server on
multicast alone (issue 12), in the same run, with the parts of
C{bench/fanout.py}: its C load generator holding N long polls, its
emitter, its phase (L{fanout.runPhase}) and its figures.

For each N and rate, two cells, each on fresh processes:

  - C{multicast}: the measured C{twistd artcast} on its own data group,
    fed there by the emitter (as C{fanout.py}'s C{artcast} column);
  - C{bus}: a real C{redis-server} (L{bench.redisserver}), a I{feeding}
    server with C{--bus} on a data group of its own, fed there by the
    emitter, and the measured server with the same C{--bus} on another
    group: every datum it serves came through Redis.

The measured server runs alone on the server CPU (C{taskset}, as in
C{fanout.py}); the load generator, the emitter, the feeding server and
Redis share the load CPU.  The table gives each figure for both cells and
their ratio C{bus/multicast}, plus, in the bus cell, the CPU Redis and the
feeding server spent per datum (from C{/proc/<pid>/stat}, from the
emitter's start to the end of the drain) and the bus's own counters.

    python bench/busload.py                 # N=1,000 at 100/s and N=10,000 at 10/s, 10 s each
    python bench/busload.py --quick         # N=50 at 10/s for 3 s (tests/test_bench.py)
    python bench/busload.py --json FILE     # every figure as JSON

Everything stays on 127.0.0.1 (multicast TTL 0, groups in
239.255.0.0/16); every process is stopped by its own PID, every wait is
bounded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fanout, redisserver

MODES = ("multicast", "bus")
"""The two cells of each N and rate: datums by multicast, and through Redis."""

FIGURES = [
    ("deliveries_per_s", "deliveries/s"),
    ("latency_p50_ms", "latency p50 (ms)"),
    ("latency_p99_ms", "latency p99 (ms)"),
    ("fraction_delivered", "fraction delivered"),
    ("fraction_complete", "datums reaching all N"),
    ("server_cpu_pct", "server CPU (% of a core)"),
    ("server_cpu_us_per_delivery", "server CPU per delivery (us)"),
    ("redis_cpu_us_per_datum", "Redis CPU per datum (us)"),
    ("feeder_cpu_us_per_datum", "feeding server CPU per datum (us)"),
]

BUS_COUNTERS = ("busState", "busAdded", "busSeen", "busTaken", "busDuplicates", "busOwn",
                "busDropped", "busErrors", "busDisconnects", "busOutboxDropped")


def log(message: str) -> None:
    fanout.log(f"busload: {message}")


def busFigures(port: int, timeout: float = 10.0) -> dict[str, Any]:
    """
    The C{bus} section of a server's C{/stats.json} (the counters above),
    asked again until it answers (a server just freed of 10,000 polls may
    still refuse a connection) for at most C{timeout} seconds; if it never
    does, C{{"error": ...}}.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=10) as r:
                bus = json.loads(r.read()).get("bus") or {}
            return {k: v for k, v in bus.items() if k in BUS_COUNTERS}
        except (OSError, ValueError) as e:
            if time.monotonic() > deadline:
                return {"error": str(e)}
            time.sleep(0.2)


def runCell(mode: str, clients: int, rate: float, duration: float, since: bool,
            pinning: fanout.Pinning, outDir: Path, rng: random.Random,
            drainMax: float) -> dict[str, Any]:
    """
    One cell on fresh processes: start (for C{bus}) Redis and the feeding
    server, then the measured server; hold C{clients} polls; send C{rate}
    datums/s for C{duration} s to the group of the server the emitter feeds;
    collect; stop everything by PID.
    """
    label = f"{mode}{'+since' if since else ''}-{clients}-{rate:g}"
    measured = fanout.ServerConfig(rng)
    fed = measured
    redis: redisserver.RedisServer | None = None
    feeder: fanout.Process | None = None
    loadgen: fanout.LoadGen | None = None
    server: fanout.Process | None = None
    extra: list[str] = []
    try:
        if mode == "bus":
            redis = redisserver.RedisServer(outDir / f"redis-{label}", prefix=pinning.load([]))
            extra = ["--bus", redis.url]
            fed = fanout.ServerConfig(rng)
            while (fed.dataGroup, fed.dataPort) == (measured.dataGroup, measured.dataPort):
                fed = fanout.ServerConfig(rng)
            feeder = fanout.Process(
                f"feeder {label}", pinning.load(fanout.artcastArgv(fed) + extra),
                outDir / f"feeder-{label}.log", cwd=fanout.ROOT, env=fanout.serverEnv())
            fanout.waitForHttp(feeder, fed.httpPort, timeout=60)
        server = fanout.Process(
            f"artcast {label}", pinning.server(fanout.artcastArgv(measured) + extra),
            outDir / f"artcast-{label}.log", cwd=fanout.ROOT, env=fanout.serverEnv())
        fanout.waitForHttp(server, measured.httpPort, timeout=60)
        tree = fanout.ServerTree.of(server.pid)
        fanout.waitSettled(tree, timeout=10)
        loadgen = fanout.LoadGen(pinning, measured.httpPort, clients, since,
                                 outDir / f"loadgen-{label}.log",
                                 maxSeconds=300 + duration + drainMax)
        ready = loadgen.wait("ready", 180)
        fanout.waitSettled(tree, timeout=30)
        redis0 = redis.cpuSeconds() if redis is not None else None
        feeder0 = fanout.cpuSeconds(feeder.pid) if feeder is not None else None
        phase = fanout.runPhase(tree, loadgen, pinning, fed, rate, duration, 1, drainMax,
                                outDir / f"artcast-{label}.log")
        sent = phase["emitter"]["sent"]
        phase["redis_cpu_s"] = (redis.cpuSeconds() - redis0
                                if redis is not None and redis0 is not None else None)
        phase["feeder_cpu_s"] = (fanout.cpuSeconds(feeder.pid) - feeder0
                                 if feeder is not None and feeder0 is not None else None)
        for name in ("redis", "feeder"):
            seconds = phase[f"{name}_cpu_s"]
            phase[f"{name}_cpu_us_per_datum"] = (
                1e6 * seconds / sent if seconds is not None and sent else None)
        if not server.alive():
            raise fanout.BenchError(f"{label}: the measured server died during the run")
        loadgen.stop()  # its N connections may leave no room for /stats
        loadgen = None
        phase["bus"] = None
        if redis is not None and feeder is not None:
            phase["bus"] = {"measured": busFigures(measured.httpPort),
                            "feeder": busFigures(fed.httpPort),
                            "stream_length": redis.streamLength()}
    finally:
        if loadgen is not None:
            loadgen.stop()
        for process in (server, feeder):
            if process is not None:
                process.stop()
        if redis is not None:
            redis.stop()
    phase.update(mode=mode, since=since, clients=clients, server=label,
                 ramp_s=ready["seconds"])
    log(f"{label}: {fanout.fmt(phase['deliveries_per_s'])} deliveries/s, "
        f"p50 {fanout.fmt(phase['latency_p50_ms'])} ms, "
        f"delivered {fanout.fmt(phase['fraction_delivered'])}, "
        f"server CPU {fanout.fmt(phase['server_cpu_pct'])}%"
        + (f", Redis {fanout.fmt(phase['redis_cpu_us_per_datum'])} us/datum"
           if phase["redis_cpu_us_per_datum"] is not None else ""))
    return phase


def table(results: Sequence[dict[str, Any]]) -> str:
    """
    Rows per N, rate and figure; columns C{multicast}, C{bus} and their
    ratio C{bus/multicast} (with C{+since} when the clients follow ids).
    """
    cells: dict[tuple[int, float, bool], dict[str, dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["clients"], r["rate"], r["since"]), {})[r["mode"]] = r
    lines = ["| N | rate/s | clients | figure | multicast | bus | bus/multicast |",
             "|---:|---:|---|---|---:|---:|---:|"]
    for (clients, rate, since) in sorted(cells):
        byMode = cells[clients, rate, since]
        for field, name in FIGURES:
            values = [byMode.get(mode, {}).get(field) for mode in MODES]
            lines.append("| %s | %g | %s | %s | %s | %s | %s |" % (
                f"{clients:,}", rate, "since" if since else "plain", name,
                fanout.fmt(values[0]), fanout.fmt(values[1]),
                "" if field.startswith(("redis_", "feeder_")) else fanout.ratio(values[1], values[0])))
    return "\n".join(lines) + "\n"


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true",
                        help="short mode for CI: N=50 at 10/s for 3 s")
    parser.add_argument("--cells", default=None,
                        help="comma-separated N@rate (default 1000@100,10000@10)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of sending per cell (default 10)")
    parser.add_argument("--since", action="store_true",
                        help="the polls follow ids (?since=) as well as plain")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--server-cpus", default=None,
                        help="CPUs of the measured server (default: the first)")
    parser.add_argument("--load-cpus", default=None,
                        help="CPUs of the load, the feeding server and Redis (default: the second)")
    parser.add_argument("--json", dest="jsonPath", default=None, help="write every figure to FILE")
    parser.add_argument("--out-dir", default=None,
                        help="process logs (default bench/out/busload-<time>/)")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    cells = options.cells or ("50@10" if options.quick else "1000@100,10000@10")
    try:
        options.cells = [(int(n), float(r)) for n, r in
                         (cell.split("@") for cell in cells.split(",") if cell.strip())]
    except ValueError:
        parser.error(f"--cells takes N@rate,..., not {cells!r}")
    if not options.cells or any(n < 1 or r <= 0 for n, r in options.cells):
        parser.error("--cells: N and rates must be positive")
    options.duration = options.duration or (3.0 if options.quick else 10.0)
    for option in ("server_cpus", "load_cpus"):
        text = getattr(options, option)
        if text is not None:
            try:
                setattr(options, option, fanout.parseCpuList(text))
            except ValueError as e:
                parser.error(f"--{option.replace('_', '-')}: {e}")
    return options


def run(options: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """
    Every cell in both modes; the JSON document.
    """
    if not redisserver.available():
        raise fanout.BenchError("redis-server is not installed (Debian: apt-get install redis-server)")
    ok, why = fanout.artcastAvailable()
    if not ok:
        raise fanout.BenchError(f"twistd artcast does not start: {why}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outDir = Path(options.out_dir or fanout.BENCH / "out" / f"busload-{stamp}")
    outDir.mkdir(parents=True, exist_ok=True)
    limit = fanout.raiseFileLimit(max(n for n, _ in options.cells) + 256)
    fanout.buildLoadgen()
    pinning = fanout.Pinning(enabled=not options.no_pin, serverCpus=options.server_cpus,
                             loadCpus=options.load_cpus)
    pinning.pinSelf()
    rng = random.Random(options.seed)
    drainMax = max(2.0, options.duration)
    results = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for clients, rate in options.cells:
        for since in ([False, True] if options.since else [False]):
            for mode in MODES:
                log(f"{mode}: N={clients}, {rate:g}/s for {options.duration:g} s"
                    + (", since" if since else ""))
                results.append(runCell(mode, clients, rate, options.duration, since,
                                       pinning, outDir, rng, drainMax))
    return {
        "command": " ".join(["python bench/busload.py", *argv]),
        "date": started.isoformat(timespec="seconds"),
        "machine": fanout.machine(),
        "notes": [pinning.note + "; the feeding server and Redis run with the load",
                  f"file limit {limit}"],
        "settings": {"cells": options.cells, "duration_s": options.duration,
                     "since": options.since, "quick": options.quick,
                     "pinning": pinning.describe()},
        "logs": str(outDir),
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parseArgs(argv)
    signal.signal(signal.SIGTERM, fanout.onSigterm)
    try:
        document = run(options, argv)
    except fanout.BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        fanout.Process.stopAll()
    meta = document["machine"]
    sys.stdout.write(
        f"Deliveries/s on the Redis bus against multicast alone, {document['date']}, "
        f"{meta['cpu']}, {meta['cpus']} CPUs, Python {meta['versions']['python']}, "
        f"Twisted {meta['versions']['twisted']}\n"
        f"{options.duration:g} s per cell; " + "; ".join(document["notes"]) + "\n\n")
    sys.stdout.write(table(document["results"]))
    sys.stdout.flush()
    if options.jsonPath:
        with open(options.jsonPath, "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
