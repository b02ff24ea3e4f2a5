# -*- test-case-name: tests.test_bench -*-
"""
Panels measured: how long a change takes to reach every open panel, by the
three ways in of issue 13 (Chadburn's watched file, the MQTT bridge) and
the plain multicast source they are compared with.

In one run, on this machine: one C{twistd -n artcast} with C{--mqtt} on a
C{mosquitto} of the run's own (a loopback port), and C{--panels} panels,
each an NDJSON stream (C{Accept: application/x-ndjson}) of each of three
keys, open from before the first datum to the last:

  - C{direct} (the baseline): an L{artcast.source.Source} sends the datum;
  - C{file}: the run writes the value to a status file (a temporary file
    renamed over it, as an editor or a script does), and a real
    C{artcast-watch} sends it (inotify, its default 50 ms debounce);
  - C{mqtt}: a paho-mqtt client publishes it to the broker, QoS 0, and the
    server's bridge (C{--mqtt-topic}) takes it in.

Each value is C{{"t": time.time(), "n": n}}, C{t} taken just before the
send, the write or the publish; a panel's latency for a datum is its
arrival time (the end of its line) less C{t}, on the same clock.  The three
ways send in turn, one datum every C{1 / --rate} seconds each.  The runner
reports, per way, p50/p99/max over every panel and datum, the share of
deliveries within 100 ms (the issue's promise for the watched file), what
went missing (0), and p50 and p99 as ratios to C{direct}, measured in the
same run.

Everything stays on this machine: HTTP and MQTT on 127.0.0.1, multicast
with C{IP_MULTICAST_IF} 127.0.0.1 and TTL 0 to a group in 239.255.0.0/16,
the server joins with C{--interface 127.0.0.1}.  Every process is stopped
by its own PID; every wait is bounded.

    python -m bench.panels               # 20 panels, 300 datums a way at 5/s, about 70 s
    python -m bench.panels --quick       # 5 panels, 20 datums a way
    python -m bench.panels --json FILE   # every figure as JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fanout, hops

WAYS = ("direct", "file", "mqtt")
"""The ways a change comes in; C{direct} is the baseline."""

KEYS = {way: f"bench/panels/{way}" for way in WAYS}

WITHIN_MS = 100.0
"""The promise measured: a change on every open panel within this long."""


def mosquittoPath() -> str | None:
    """
    The mosquitto broker, if installed (Debian puts it in /usr/sbin).
    """
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def startBroker(directory: Path) -> tuple[fanout.Process, int]:
    """
    A mosquitto of the run's own on a free port of 127.0.0.1; waits (at
    most 10 s) until it takes connections.
    """
    port = fanout.freeTcpPort()
    config = directory / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.getuid() == 0:
        # Started as root, mosquitto would become the "mosquitto" user.
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n")
    process = fanout.Process("mosquitto", [mosquittoPath() or "mosquitto", "-c", str(config)],
                             directory / "mosquitto.log")
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if not process.alive():
                break
            time.sleep(0.05)
    process.stop()
    raise fanout.BenchError("mosquitto did not take connections within 10 s")


class Panel(threading.Thread):
    """
    One panel's NDJSON stream of one key: its receipts, until every datum
    came or the deadline.
    """

    def __init__(self, port: int, key: str, count: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.key = key
        self.deadline = deadline
        self.receipts = hops.Receipts(count)
        self.ready = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        hops.followStream(self.port, self.receipts, self.deadline, self.key, self.tell)

    def tell(self, event: dict[str, Any]) -> None:
        if event["event"] == "ready":
            self.ready.set()
        elif event["event"] == "error":
            self.errors.append(event["error"])


def value(n: int) -> dict[str, Any]:
    return {"t": time.time(), "n": n}


class Senders:
    """
    The three ways in, each able to send C{{"t", "n"}} for its key.
    """

    def __init__(self, server: hops.Server, brokerPort: int, directory: Path) -> None:
        from artcast.source import Source
        import paho.mqtt.client as mqtt

        self.source = Source(src="bench-direct", groups=[(server.group, server.dataPort)],
                             registerGroups=(), ttl=0, interface="127.0.0.1")
        self.statusFile = directory / "status.json"
        self.statusFile.write_text(json.dumps({"t": 0, "n": hops.WARM}))
        self.watch = fanout.Process(
            "artcast-watch",
            [sys.executable, "-m", "artcast.watch", str(self.statusFile), KEYS["file"],
             "--group", server.group, "--port", str(server.dataPort),
             "--interface", "127.0.0.1", "--ttl", "0", "--src", "bench-file"],
            directory / "watch.log", cwd=fanout.ROOT, env=fanout.serverEnv())
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-panels")
        self.mqtt.connect("127.0.0.1", brokerPort)
        self.mqtt.loop_start()

    def send(self, way: str, n: int) -> None:
        if way == "direct":
            self.source.send(KEYS["direct"], value(n))
        elif way == "file":
            temporary = self.statusFile.with_suffix(".tmp")
            stamped = value(n)
            temporary.write_text(json.dumps(stamped))
            os.replace(temporary, self.statusFile)
        else:
            self.mqtt.publish(KEYS["mqtt"], json.dumps(value(n)), qos=0)

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.source.close()
        self.watch.stop()


def summary(latencies: Sequence[float]) -> dict[str, Any]:
    within = sum(1 for latency in latencies if latency <= WITHIN_MS)
    return {
        **hops.summary(latencies),
        "within_100ms_pct": round(100.0 * within / len(latencies), 2) if latencies else None,
    }


def run(panels: int, count: int, rate: float, directory: Path) -> dict[str, Any]:
    """
    One run (see the module's docstring): the document of its figures.
    """
    rng = random.Random()
    broker, brokerPort = startBroker(directory)
    server = senders = None
    threads: list[Panel] = []
    try:
        server = hops.startServer(
            "panels", ["--mqtt", f"mqtt://127.0.0.1:{brokerPort}",
                       "--mqtt-topic", KEYS["mqtt"]], directory, rng)
        senders = Senders(server, brokerPort, directory)
        deadline = time.time() + 60 + 3 * count / rate
        for way in WAYS:
            for _ in range(panels):
                panel = Panel(server.httpPort, KEYS[way], count, deadline)
                panel.start()
                threads.append(panel)
        for panel in threads:
            if not panel.ready.wait(30):
                raise fanout.BenchError(f"a panel of {panel.key} did not open within 30 s")
        # Warm each way until every panel of it has a value: the watcher has
        # started, the bridge has subscribed.
        warmUntil = time.time() + 30
        while any(panel.receipts.warm == 0 for panel in threads):
            if time.time() > warmUntil:
                raise fanout.BenchError("the panels had no warm-up value within 30 s")
            for way in WAYS:
                senders.send(way, hops.WARM)
                time.sleep(0.1)
        hops.log(f"{len(threads)} panels warm; sending {count} datums a way at {rate}/s")
        interval = 1.0 / rate
        start = time.monotonic()
        for n in range(count):
            for index, way in enumerate(WAYS):
                due = start + n * interval + index * interval / len(WAYS)
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                senders.send(way, n)
        for panel in threads:
            panel.join(max(0.0, deadline - time.time()))
        serverStats = hops.stats(server.httpPort)
    finally:
        if senders is not None:
            senders.close()
        if server is not None:
            server.process.stop()
        broker.stop()
    rows = []
    for way in WAYS:
        mine = [panel for panel in threads if panel.key == KEYS[way]]
        latencies = [latency for panel in mine for latency in panel.receipts.latencies.values()]
        rows.append({
            "way": way,
            "panels": len(mine),
            "deliveries": len(latencies),
            "missing": sum(count - len(panel.receipts.latencies) for panel in mine),
            "duplicates": sum(panel.receipts.duplicates for panel in mine),
            "outOfOrder": sum(panel.receipts.outOfOrder for panel in mine),
            "gaps": sum(panel.receipts.gaps for panel in mine),
            "latency_ms": summary(latencies),
        })
    base = rows[0]["latency_ms"]
    for row in rows:
        for figure in ("p50", "p99"):
            mine, theirs = row["latency_ms"][figure], base[figure]
            row[f"{figure}_vs_direct"] = (
                round(mine / theirs, 2) if mine is not None and theirs else None)
    return {
        "bench": "panels",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "panels": panels,
        "count": count,
        "rate": rate,
        "rows": rows,
        "mqtt": serverStats.get("mqtt", {}),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """
    The rows as a plain-text table.
    """
    lines = [f"{'way':<8}{'deliveries':>11}{'missing':>9}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'max ms':>9}{'<=100 ms':>10}{'p50/direct':>12}{'p99/direct':>12}"]
    for row in rows:
        latency = row["latency_ms"]
        lines.append(
            f"{row['way']:<8}{row['deliveries']:>11}{row['missing']:>9}"
            f"{hops.cell(latency['p50']):>9}{hops.cell(latency['p99']):>9}"
            f"{hops.cell(latency['max']):>9}{str(latency['within_100ms_pct']) + ' %':>10}"
            f"{row['p50_vs_direct'] or '-'!s:>12}{row['p99_vs_direct'] or '-'!s:>12}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--panels", type=int, default=20, help="panels per way (default 20)")
    parser.add_argument("--count", type=int, default=300, help="datums per way (default 300)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="datums per second, each way (default 5)")
    parser.add_argument("--quick", action="store_true", help="5 panels, 20 datums a way")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    options = parser.parse_args(argv)
    if options.quick:
        options.panels, options.count = 5, 20
    if not 1 <= options.panels <= 200 or not 1 <= options.count <= 100_000 \
            or not 0.1 <= options.rate <= 50:
        parser.error("--panels is 1-200, --count 1-100000, --rate 0.1-50")
    if mosquittoPath() is None:
        sys.stderr.write("bench.panels: mosquitto is not installed (Debian: apt-get install "
                         "mosquitto)\n")
        return 2
    directory = Path(tempfile.mkdtemp(prefix="panels-"))
    try:
        document = run(options.panels, options.count, options.rate, directory)
    finally:
        fanout.Process.stopAll()
    print(f"Artcast panels, {document['date']}: {document['panels']} panels a way, "
          f"{document['count']} datums a way at {document['rate']}/s")
    print(table(document["rows"]))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(document, f, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
