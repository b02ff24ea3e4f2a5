# -*- test-case-name: tests.test_bench -*-
"""
Relays measured: the latency each hop adds (issue 12).

In one run, on this machine: an origin C{twistd -n artcast} fed over
multicast by one L{artcast.source.Source}, relay 1 (C{--upstream} the
origin, on a data group of its own, so it hears nothing by multicast) and
relay 2 (C{--upstream} relay 1).  On each of these I{positions} two
clients follow the key from before the first datum to the last:

  - C{stream}: one NDJSON stream (C{Accept: application/x-ndjson});
  - C{poll}: a long-poll loop, each request C{?since=} the id of the
    previous answer (keep-alive, C{timeout=10}).

The source stamps each datum's value with its send time
(C{{"t": time.time(), "n": n}}); a client's latency for a datum is its
arrival time (the end of its line or body) less that, on the same clock.
The runner reports p50/p99/max per position and client, the latency a hop
adds (per datum, the position's latency less the one of the position it
follows, for the same kind of client; p50/p99 of those differences), the
datums missed (every datum must arrive everywhere: 0), the rate at which
each client got them, and the CPU each server spent (per datum, and as a
share of one core while the datums were sent).

Positions are a list (L{POSITIONS}): each names the position it follows
(its C{--upstream}), the position it is compared with, and any other
C{twistd artcast} arguments; L{startServer} starts any of them and
L{table} prints any number.

With C{--bus} (the default when C{redis-server} is installed) the runner
also starts a real C{redis-server} (L{bench.redisserver}) and runs
L{busPositions}: the origin is also on the bus, and a I{bus peer}
(C{--bus}, on a data group of its own: every datum it serves came through
Redis) is compared with C{direct}.  Redis's own CPU per datum (its
C{/proc} utime+stime over the run, divided by the datums) is reported next
to the servers' (L{cpuTable}).

Everything stays on this machine: HTTP on 127.0.0.1, the source sends with
C{IP_MULTICAST_IF} 127.0.0.1 and TTL 0 to a group in 239.255.0.0/16 on a
free port, the servers join with C{--interface 127.0.0.1}.  Every process
is stopped by its own PID; every wait is bounded; process logs go to
C{bench/out/hops-<time>/} (C{--out-dir}).

    python -m bench.hops                 # 6,000 datums at 50/s, about 2.5 min
    python -m bench.hops --quick         # 100 datums at 50/s, seconds
    python -m bench.hops --no-bus        # the relay chain alone, no Redis
    python -m bench.hops --json FILE     # every figure as JSON
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fanout, redisserver
from bench.emitter import checkGroup

KEY = "bench/hops"
KINDS = ("stream", "poll")
"""The clients on each position: an NDJSON stream and a C{since=} long-poll loop."""

WARM = -1
"""The C{n} of the datums sent before the measured ones, until every client has one."""


@dataclass(frozen=True)
class Position:
    """
    One server of the run and where its datums come from.

    @ivar name: how the table names it.
    @ivar fed: whether the source sends to its data group.
    @ivar upstream: the name of the position it follows (C{--upstream}), if any.
    @ivar against: the name of the position whose latency it adds to (the
        hop measured), if any.
    @ivar extra: more C{twistd artcast} arguments (e.g. C{--bus redis://...}).
    """

    name: str
    fed: bool = False
    upstream: str | None = None
    against: str | None = None
    extra: tuple[str, ...] = ()


POSITIONS: tuple[Position, ...] = (
    Position("direct", fed=True),
    Position("relay 1", upstream="direct", against="direct"),
    Position("relay 2", upstream="relay 1", against="relay 1"),
)
"""The relay chain: origin, a relay following it, a relay following that one."""

BUS_PEER = "bus peer"


def busPositions(url: str) -> tuple[Position, ...]:
    """
    The relay chain with the origin also on the bus at C{url}, and a bus
    peer: a server on the same bus and a data group of its own (it hears
    nothing by multicast), compared with C{direct}.
    """
    bus = ("--bus", url)
    return tuple(Position(p.name, p.fed, p.upstream, p.against,
                          p.extra + (bus if p.name == "direct" else ()))
                 for p in POSITIONS) + (Position(BUS_PEER, against="direct", extra=bus),)


# --------------------------------------------------------------------------
# The clients (run as C{python -m bench.hops client ...})


class Stop(Exception):
    """
    SIGTERM: write the report now.
    """


@dataclass
class Receipts:
    """
    What one client received: per measured C{n}, the latency in ms.
    """

    count: int
    latencies: dict[int, float] = field(default_factory=dict)
    warm: int = 0
    duplicates: int = 0
    outOfOrder: int = 0
    gaps: int = 0
    other: int = 0
    last: int = WARM
    first: float | None = None
    lastArrival: float | None = None

    def take(self, value: Any, arrived: float) -> None:
        """
        Count one value received at C{arrived} (wall clock).
        """
        if not (isinstance(value, dict) and isinstance(value.get("n"), int)
                and isinstance(value.get("t"), (int, float))):
            self.other += 1
            return
        n = value["n"]
        if n == WARM:
            self.warm += 1
            return
        if n in self.latencies:
            self.duplicates += 1
            return
        if n < self.last:
            self.outOfOrder += 1
        self.last = max(self.last, n)
        self.latencies[n] = round(1000.0 * (arrived - value["t"]), 3)
        if self.first is None:
            self.first = arrived
        self.lastArrival = arrived

    def complete(self) -> bool:
        return len(self.latencies) >= self.count

    def report(self) -> dict[str, Any]:
        return {
            "event": "report",
            "received": len(self.latencies),
            "missing": self.count - len(self.latencies),
            "duplicates": self.duplicates,
            "outOfOrder": self.outOfOrder,
            "gaps": self.gaps,
            "other": self.other,
            "warm": self.warm,
            "per_s": (round((len(self.latencies) - 1) / (self.lastArrival - self.first), 1)
                      if self.first is not None and self.lastArrival != self.first
                      else None),
            "latencies": sorted(self.latencies.items()),
        }


def say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def followStream(port: int, receipts: Receipts, deadline: float, key: str = KEY,
                 tell: Any = say) -> None:
    """
    Follow C{key} on one NDJSON stream (resuming with C{since=} should it
    break), until every measured datum arrived or C{deadline}.

    @param tell: what is told of the events C{ready} (the stream is open),
        C{warm} and C{error}: by default, the runner on stdout.
    """
    since: str | None = None
    said = False
    while not receipts.complete() and time.time() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            path = f"/artcasts/{key}" + (f"?since={since}" if since else "")
            connection.request("GET", path, headers={"Accept": "application/x-ndjson"})
            response = connection.getresponse()
            if response.status != 200:
                raise OSError(f"stream answered {response.status}")
            if not said:
                tell({"event": "ready"})
                said = True
            while not receipts.complete():
                line = response.readline()
                arrived = time.time()
                if not line:
                    break
                if not line.strip():
                    continue
                envelope = json.loads(line)
                if envelope.get("gap"):
                    receipts.gaps += 1
                    continue
                since = envelope.get("id", since)
                before = receipts.warm
                receipts.take(envelope.get("value"), arrived)
                if before == 0 and receipts.warm:
                    tell({"event": "warm"})
        except (OSError, ValueError, http.client.HTTPException) as e:
            tell({"event": "error", "error": str(e)})
            time.sleep(0.2)
        finally:
            connection.close()


def followPolls(port: int, receipts: Receipts, deadline: float) -> None:
    """
    Follow C{KEY} with long polls, each C{?since=} the id of the answer
    before, on one keep-alive connection, until every measured datum
    arrived or C{deadline}.
    """
    since: str | None = None
    said = False
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while not receipts.complete() and time.time() < deadline:
            path = f"/artcasts/{KEY}?timeout=10" + (f"&since={since}" if since else "")
            try:
                connection.request("GET", path, headers={"Accept": "application/json"})
                if not said:
                    say({"event": "ready"})
                    said = True
                response = connection.getresponse()
                body = response.read()
                arrived = time.time()
            except (OSError, http.client.HTTPException) as e:
                say({"event": "error", "error": str(e)})
                connection.close()
                time.sleep(0.2)
                continue
            if response.status == 204:
                continue
            if response.status != 200:
                say({"event": "error", "error": f"poll answered {response.status}"})
                time.sleep(0.2)
                continue
            if response.getheader("Artcast-Gap"):
                receipts.gaps += 1
            since = response.getheader("Artcast-Id", since)
            before = receipts.warm
            try:
                receipts.take(json.loads(body), arrived)
            except ValueError:
                receipts.other += 1
            if before == 0 and receipts.warm:
                say({"event": "warm"})
    finally:
        connection.close()


def client(kind: str, port: int, count: int, seconds: float) -> int:
    """
    One client: follow, then print the report (also on SIGTERM).
    """
    def stop(signum: int, frame: object) -> None:
        raise Stop()

    receipts = Receipts(count)
    signal.signal(signal.SIGTERM, stop)
    try:
        (followStream if kind == "stream" else followPolls)(
            port, receipts, time.time() + seconds)
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say(receipts.report())
    return 0


# --------------------------------------------------------------------------
# The source (run as C{python -m bench.hops send ...})


def sender(group: str, port: int, count: int, rate: float) -> None:
    """
    Send warm-up datums every 0.2 s until C{go} arrives on stdin (at most
    120 s), then C{count} datums C{{"t": <send time>, "n": n}} at C{rate}
    per second, print what was sent (with the sender's CPU time) and close
    the source (with its linger, so that it answers NACKs to the end).
    """
    from artcast.source import Source

    checkGroup(group)
    source = Source(src="hops-%d" % (os.getpid(),), groups=[(group, port)],
                    registerGroups=[], ttl=0, interface="127.0.0.1")
    warm, until = 0, time.monotonic() + 120
    while time.monotonic() < until:
        source.send(KEY, {"t": time.time(), "n": WARM})
        warm += 1
        ready, _, _ = select.select([sys.stdin], [], [], 0.2)
        if ready:
            if sys.stdin.readline().strip() == "go":
                break
            raise SystemExit("no go")
    else:
        raise SystemExit("no go within 120 s")
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    for n in _paced(count, rate):
        source.send(KEY, {"t": time.time(), "n": n})
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    say({"event": "sent", "sent": count, "warm": warm, "seconds": round(seconds, 3),
         "cpu": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3)})
    source.close()


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


# --------------------------------------------------------------------------
# The runner


class Child(fanout.JSONLinesChild):
    """
    A child of this runner speaking JSON lines on its stdout.
    """

    def __init__(self, name: str, argv: list[str], logPath: Path) -> None:
        super().__init__(name, fanout.Process(
            name, argv, logPath, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=fanout.ROOT, env=fanout.serverEnv()))

    def other(self, item: dict[str, Any]) -> None:
        if item.get("event") in ("error", "garbage"):
            log(f"{self.name}: {item}")


@dataclass
class Server:
    """
    A started position.
    """

    position: Position
    process: fanout.Process
    httpPort: int
    group: str
    dataPort: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpPort}/"


def log(message: str) -> None:
    sys.stderr.write(f"[hops {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def startServer(name: str, extra: Sequence[str], directory: Path,
                rng: random.Random, position: Position | None = None) -> Server:
    """
    Start C{twistd -n artcast} on free ports of 127.0.0.1 and a data group of
    its own, with C{extra} arguments, and wait (at most 30 s) until it
    answers HTTP.
    """
    group, dataPort, registerPort, httpPort = (
        fanout.randomGroup(rng), fanout.freeUdpPort(), fanout.freeUdpPort(), fanout.freeTcpPort())
    argv = [fanout.twistdPath(), "-n", "--pidfile=", "artcast",
            "--client-port", f"tcp:{httpPort}:interface=127.0.0.1",
            "--interface", "127.0.0.1", "--data-group", group, "--data-port", str(dataPort),
            "--register-group", group, "--register-port", str(registerPort),
            "--history", "1000", "--access-log", os.devnull, *extra]
    process = fanout.Process(name, argv, directory / f"server-{slug(name)}.log",
                             cwd=fanout.ROOT, env=fanout.serverEnv())
    fanout.waitForHttp(process, httpPort, 30)
    return Server(position or Position(name), process, httpPort, group, dataPort)


def slug(name: str) -> str:
    return name.replace(" ", "-")


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=10) as r:
        return json.loads(r.read())


def summary(latencies: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": fanout.percentile(latencies, 0.50),
        "p99": fanout.percentile(latencies, 0.99),
        "max": max(latencies) if latencies else None,
    }


def added(mine: dict[int, float], theirs: dict[int, float]) -> dict[str, Any]:
    """
    The latency a hop adds: over the datums both clients got, this one's
    latency less the other's, p50 and p99 (ms).
    """
    both = sorted(set(mine) & set(theirs))
    differences = [round(mine[n] - theirs[n], 3) for n in both]
    return {"datums": len(both),
            "p50": fanout.percentile(differences, 0.50),
            "p99": fanout.percentile(differences, 0.99)}


def run(count: int, rate: float, directory: Path, positions: Sequence[Position] = POSITIONS,
        seed: int | None = None,
        redis: redisserver.RedisServer | None = None) -> dict[str, Any]:
    """
    Start every position and its clients, send C{count} datums at C{rate},
    and return every figure; with C{redis} (the bus the positions use), its
    CPU over the same time too.
    """
    rng = random.Random(seed)
    servers: dict[str, Server] = {}
    clients: dict[tuple[str, str], Child] = {}
    source: Child | None = None
    try:
        for position in positions:
            extra = list(position.extra)
            if position.upstream is not None:
                extra += ["--upstream", servers[position.upstream].url]
            servers[position.name] = startServer(position.name, extra, directory, rng, position)
            log(f"{position.name}: {servers[position.name].url} (pid {servers[position.name].process.pid})")
        seconds = count / rate + 60
        for position in positions:
            for kind in KINDS:
                clients[position.name, kind] = Child(
                    f"{kind} client on {position.name}",
                    [sys.executable, "-m", "bench.hops", "client", kind,
                     str(servers[position.name].httpPort), str(count), str(seconds)],
                    directory / f"client-{slug(position.name)}-{kind}.log")
        for c in clients.values():
            c.wait("ready", 30)
        fed = [s for s in servers.values() if s.position.fed]
        if len(fed) != 1:
            raise fanout.BenchError("exactly one position is fed by the source")
        source = Child("source", [sys.executable, "-m", "bench.hops", "send", fed[0].group,
                                  str(fed[0].dataPort), str(count), str(rate)],
                       directory / "source.log")
        for c in clients.values():
            c.wait("warm", 60)
        log(f"every client has a warm-up datum: sending {count} datums at {rate:g}/s")
        cpuBefore = {name: fanout.cpuSeconds(s.process.pid) for name, s in servers.items()}
        redisBefore = redis.cpuSeconds() if redis is not None else 0.0
        started = time.monotonic()
        source.send("go")
        sent = source.wait("sent", count / rate + 60)
        reports: dict[tuple[str, str], dict[str, Any]] = {}
        settle = time.monotonic() + 15
        for key, c in clients.items():
            try:
                reports[key] = c.wait("report", max(0.1, settle - time.monotonic()))
            except fanout.BenchError:
                c.process.stop()
                reports[key] = c.wait("report", 5)
        cpu = {name: fanout.cpuSeconds(s.process.pid) - cpuBefore[name]
               for name, s in servers.items()}
        redisCpu = redis.cpuSeconds() - redisBefore if redis is not None else None
        wall = time.monotonic() - started
        serverStats = {name: stats(s.httpPort) for name, s in servers.items()}
        streamLength = redis.streamLength() if redis is not None else None
    finally:
        for c in list(clients.values()) + ([source] if source else []):
            c.process.stop()
        for s in reversed(list(servers.values())):
            s.process.stop()

    rows = []
    for position in positions:
        for kind in KINDS:
            report = reports[position.name, kind]
            mine = dict(report["latencies"])
            row: dict[str, Any] = {"position": position.name, "client": kind, "sent": count,
                                   **{k: v for k, v in report.items()
                                      if k not in ("event", "latencies")},
                                   "latency_ms": summary(list(mine.values())),
                                   "against": position.against, "added_ms": None,
                                   "server_cpu_us_per_datum": round(
                                       1e6 * cpu[position.name] / max(1, count), 1),
                                   "server_cpu_pct": round(100 * cpu[position.name] / wall, 2)}
            if position.against is not None:
                theirs = dict(reports[position.against, kind]["latencies"])
                row["added_ms"] = added(mine, theirs)
            rows.append(row)
    upstream = {name: {k: v for k, v in s.get("upstream", {}).items()
                       if k in ("upstreamDatums", "upstreamDuplicates", "upstreamGaps",
                                "upstreamReconnects", "upstreamFailovers", "upstreamDropped")}
                for name, s in serverStats.items() if s.get("upstream")}
    bus = {name: {k: v for k, v in s.get("bus", {}).items()
                  if k in ("busState", "busAdded", "busSeen", "busTaken", "busDuplicates",
                           "busOwn", "busDropped", "busErrors", "busDisconnects",
                           "busOutboxDropped")}
           for name, s in serverStats.items() if s.get("bus")}
    processes = [processRow(name, "server", cpu[name], count, wall) for name in servers]
    if redisCpu is not None:
        processes.append(processRow("redis-server", "redis", redisCpu, count, wall))
    return {"positions": [{"name": p.name, "fed": p.fed, "upstream": p.upstream,
                           "against": p.against, "extra": list(p.extra)} for p in positions],
            "rows": rows, "source": sent, "upstream": upstream, "bus": bus,
            "processes": processes, "seconds": round(wall, 3),
            "redis": None if redis is None else {"stream_length": streamLength}}


def processRow(name: str, kind: str, cpu: float, count: int, wall: float) -> dict[str, Any]:
    """
    One process's CPU over the run: seconds, per datum, share of a core.
    """
    return {"process": name, "kind": kind, "cpu_s": round(cpu, 3),
            "cpu_us_per_datum": round(1e6 * cpu / max(1, count), 1),
            "cpu_pct": round(100 * cpu / wall, 2) if wall > 0 else None}


def cell(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return ("%+.2f" if sign else "%.2f") % (value,)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """
    The rows (any number of positions) as a Markdown table.
    """
    lines = ["| position | client | received | missing | p50 ms | p99 ms | max ms "
             "| added p50 ms | added p99 ms | datums/s | server CPU/datum | server CPU |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        hop = r["added_ms"]
        lines.append("| %s | %s | %d / %d | %d | %s | %s | %s | %s | %s | %s | %.0f µs | %.1f %% |" % (
            r["position"], r["client"], r["received"], r["sent"], r["missing"],
            cell(r["latency_ms"]["p50"]), cell(r["latency_ms"]["p99"]), cell(r["latency_ms"]["max"]),
            "n/a" if hop is None else "%s (vs %s)" % (cell(hop["p50"], True), r["against"]),
            "n/a" if hop is None else cell(hop["p99"], True),
            "n/a" if r["per_s"] is None else "%.0f" % (r["per_s"],),
            r["server_cpu_us_per_datum"], r["server_cpu_pct"]))
    return "\n".join(lines)


def cpuTable(processes: Sequence[dict[str, Any]]) -> str:
    """
    Each server's and Redis's CPU over the run as a Markdown table.
    """
    lines = ["| process | CPU | CPU/datum | share of a core |", "|---|---:|---:|---:|"]
    for p in processes:
        lines.append("| %s | %.2f s | %.0f µs | %s |" % (
            p["process"], p["cpu_s"], p["cpu_us_per_datum"],
            "n/a" if p["cpu_pct"] is None else "%.1f %%" % (p["cpu_pct"],)))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "send":
        group, port, count, rate = argv[1:5]
        sender(group, int(port), int(count), float(rate))
        return 0
    if argv and argv[0] == "client":
        kind, port, count, seconds = argv[1:5]
        return client(kind, int(port), int(count), float(seconds))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 datums at 50/s")
    parser.add_argument("--count", type=int, help="datums to send (default 6,000)")
    parser.add_argument("--rate", type=float, default=50.0, help="datums/s (default 50)")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="process logs (default bench/out/hops-<time>/)")
    parser.add_argument("--bus", action=argparse.BooleanOptionalAction, default=None,
                        help="also a Redis bus: the origin on it and a bus peer (default: "
                        "on when redis-server is installed; --no-bus: the relay chain alone)")
    options = parser.parse_args(argv)
    if options.bus and not redisserver.available():
        parser.error("--bus needs redis-server (Debian: apt-get install redis-server)")
    bus = redisserver.available() if options.bus is None else options.bus
    count = options.count or (100 if options.quick else 6000)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = Path(options.out_dir or fanout.BENCH / "out" / f"hops-{stamp}")
    directory.mkdir(parents=True, exist_ok=True)
    redis: redisserver.RedisServer | None = None
    try:
        if bus:
            redis = redisserver.RedisServer(directory / "redis")
            log(f"redis-server: {redis.url} (pid {redis.pid})")
        positions = busPositions(redis.url) if redis is not None else POSITIONS
        result = run(count, options.rate, directory, positions, redis=redis)
    finally:
        if redis is not None:
            redis.stop()
    print(table(result["rows"]))
    if bus:  # Redis's CPU next to the servers' (without a bus, the table above has it all)
        print()
        print(cpuTable(result["processes"]))
    print("%d datums at %g/s; latency = arrival - send time; added = per datum, "
          "minus the position followed (same client kind)%s" % (
              count, options.rate, "; bus: " + ", ".join(
                  "%s added %s, took %s" % (name, b.get("busAdded"), b.get("busTaken"))
                  for name, b in result["bus"].items()) if result["bus"] else ""))
    if options.json:
        command = " ".join(["python -m bench.hops", *argv])
        with open(options.json, "w") as f:
            json.dump({"command": command, "date": datetime.date.today().isoformat(),
                       "machine": fanout.machine(), "count": count, "rate": options.rate,
                       "logs": str(directory), "with_bus": bus, **result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
