# -*- test-case-name: tests.test_bench -*-
"""
The adaptive holdback of issue 11, measured: one L{artcast.source.Source}
sends datums at 10,000 a second to one real C{twistd -n artcast}, with
batching (the default holdback, 5 ms) and without (C{holdback=0}), and, as
the baseline, a source without repair (C{repair=False}: today's datagrams,
one per datum).

For each it reports, from one run: the datagrams per second on the wire
(the server's own count), the datums the server took in, and the CPU time
per datum of the server and of the source (C{/proc/<pid>/stat} and
C{getrusage}), with the ratios to the run without batching.

Everything stays on this machine: the source sends with C{IP_MULTICAST_IF}
127.0.0.1 and TTL 0 to a group in 239.255.0.0/16, the server listens on
127.0.0.1.

    python -m bench.batching            # 50,000 datums at 10,000/s, each way
    python -m bench.batching --quick    # 5,000 datums at 5,000/s
    python -m bench.batching --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fanout
from bench.emitter import checkGroup

KEY = "bench/batching"
MODES: dict[str, dict[str, Any]] = {
    "batching": {"repair": True},
    "no batching": {"repair": True, "holdback": 0.0},
    "no repair": {"repair": False},
}
"""The sources compared, as keyword arguments of L{artcast.source.Source}."""


def sender(group: str, port: int, count: int, rate: float, options: dict[str, Any]) -> dict:
    """
    Send C{count} datums C{{"n": n}} at C{rate} per second and close the
    source (with its linger); the figures as a dict.
    """
    from artcast.source import Source

    checkGroup(group)
    before = resource.getrusage(resource.RUSAGE_SELF)
    source = Source(src="batching-%d" % (os.getpid(),), groups=[(group, port)],
                    registerGroups=[], ttl=0, interface="127.0.0.1", **options)
    started = time.monotonic()
    for n in _paced(count, rate):
        source.send(KEY, {"n": n})
    seconds = time.monotonic() - started
    statistics = getattr(source, "repairStatistics", lambda: {})()
    source.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"sent": count, "seconds": round(seconds, 3), "cpu": round(cpu, 3),
            "source": statistics}


def _paced(count: int, rate: float):
    """
    C{range(count)}, each number yielded no earlier than its due time at
    C{rate} per second (never ahead; a late sender catches up).
    """
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)
        yield n


def stats(port: int) -> dict:
    with urllib.request.urlopen("http://127.0.0.1:%d/stats.json" % (port,), timeout=10) as r:
        return json.loads(r.read())


def measure(mode: str, count: int, rate: float, directory: Path) -> dict:
    """
    One source kind against a fresh server.
    """
    rng = random.Random()
    group, dataPort, registerPort, httpPort = (
        fanout.randomGroup(rng), fanout.freeUdpPort(), fanout.freeUdpPort(), fanout.freeTcpPort())
    server = fanout.Process(
        "artcast", [fanout.twistdPath(), "-n", "--pidfile=", "artcast",
                    "--client-port", "tcp:%d:interface=127.0.0.1" % (httpPort,),
                    "--interface", "127.0.0.1", "--data-group", group, "--data-port",
                    str(dataPort), "--register-group", group, "--register-port",
                    str(registerPort), "--history", "10", "--access-log", os.devnull],
        directory / ("server-%s.log" % (mode.replace(" ", "-"),)),
        cwd=fanout.ROOT, env=fanout.serverEnv())
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                before = stats(httpPort)
                break
            except OSError:
                if time.monotonic() > deadline or not server.alive():
                    raise
                time.sleep(0.1)
        cpuBefore = fanout.cpuSeconds(server.pid)
        done = subprocess.run(
            [sys.executable, "-m", "bench.batching", "send", group, str(dataPort), str(count),
             str(rate), json.dumps(MODES[mode])],
            cwd=str(fanout.ROOT), env=fanout.serverEnv(), capture_output=True, text=True,
            timeout=count / rate + 120, check=True)
        sent = json.loads(done.stdout)
        # The server has everything once its count stops moving (bounded).
        after, settle = stats(httpPort), time.monotonic() + 10
        while time.monotonic() < settle:
            time.sleep(0.3)
            later = stats(httpPort)
            if later["datums"] == after["datums"]:
                break
            after = later
        cpu = fanout.cpuSeconds(server.pid) - cpuBefore
    finally:
        server.stop()
    datums = after["datums"] - before["datums"]
    datagrams = after["datagrams"] - before["datagrams"]
    return {
        "mode": mode,
        "sent": sent["sent"],
        "seconds": sent["seconds"],
        "datums": datums,
        "datagrams": datagrams,
        "datagramsPerSecond": round(datagrams / sent["seconds"]),
        "serverMicrosPerDatum": round(1e6 * cpu / max(1, datums), 2),
        "sourceMicrosPerDatum": round(1e6 * sent["cpu"] / max(1, sent["sent"]), 2),
        "source": sent["source"],
    }


def table(rows: Sequence[dict]) -> str:
    """
    The rows as a Markdown table, with ratios to the run without batching.
    """
    base = next((r for r in rows if r["mode"] == "no batching"), rows[0])
    lines = ["| source | datums taken in | datagrams/s | server CPU/datum | source CPU/datum |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %d / %d | %d (%.2f×) | %.1f µs (%.2f×) | %.1f µs (%.2f×) |" % (
            r["mode"], r["datums"], r["sent"], r["datagramsPerSecond"],
            r["datagramsPerSecond"] / max(1, base["datagramsPerSecond"]),
            r["serverMicrosPerDatum"], r["serverMicrosPerDatum"] / max(0.01, base["serverMicrosPerDatum"]),
            r["sourceMicrosPerDatum"], r["sourceMicrosPerDatum"] / max(0.01, base["sourceMicrosPerDatum"])))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "send":
        group, port, count, rate, options = argv[1:6]
        print(json.dumps(sender(group, int(port), int(count), float(rate), json.loads(options))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 datums at 5,000/s")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    options = parser.parse_args(argv)
    count, rate = (5000, 5000.0) if options.quick else (50000, 10000.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="artcast-batching-") as directory:
        for mode in MODES:
            rows.append(measure(mode, count, rate, Path(directory)))
    print(table(rows))
    print("%d datums at %g/s from one source to one server on loopback" % (count, rate))
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"command": "python -m bench.batching" + (" --quick" if options.quick else ""),
                       "count": count, "rate": rate, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
