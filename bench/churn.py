# -*- test-case-name: tests.test_connections -*-
"""
The churn benchmark: does the server's memory stay flat while clients
connect, wait and go away?

It starts the real C{twistd -n artcast} on loopback and runs cycles of one
client each: connect, send a long poll (on a key from a large space, some
on wildcard patterns), wait until the server holds it, disconnect.  Cycles
run in batches (all the batch's polls held at once, checked through
C{/stats.json}, then all dropped, and checked gone).  Clients leave in
turn in three ways: a normal close (FIN), an abort (RST, as a vanished
phone's NAT sends), and a close in the middle of the request head.

It prints the server's resident memory (RSS) at start, after a warm-up,
every so often, and at the end, with the number of cycles run::

    python bench/churn.py                       # 100,000 cycles, at most 10 min
    python bench/churn.py --cycles 20000 --batch 200 --duration 120

Bounded: it stops at C{--cycles} or after C{--duration} seconds, whichever
comes first, and every wait has a time limit.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fanout import (  # noqa: E402
    BenchError,
    Process,
    ServerConfig,
    artcastArgv,
    raiseFileLimit,
    rssKiB,
    serverEnv,
    waitForHttp,
)

ROOT = Path(__file__).resolve().parent.parent

BACKLOG = 1024

#: How a client leaves, in turn.
FIN, RST, HALF = "fin", "rst", "half"
LEAVING = (FIN, RST, HALF)


def log(message: str) -> None:
    sys.stderr.write(f"[churn {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=5) as answer:
        return json.loads(answer.read())


def waitStats(port: int, condition: Any, limit: float, what: str) -> dict[str, Any]:
    """
    Poll C{/stats.json} until C{condition(stats)}, at most C{limit} seconds.
    """
    deadline = time.monotonic() + limit
    while True:
        figures = stats(port)
        if condition(figures):
            return figures
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not reached in {limit} s: {figures}")
        time.sleep(0.005)


def pattern(rng: random.Random) -> str:
    """
    A key (most cycles) or a wildcard pattern, from a space large enough that
    keys seldom repeat: every pattern's entry must be freed.
    """
    n = rng.randrange(1_000_000)
    kind = n % 10
    if kind == 0:
        return f"churn/*/k{n}"
    if kind == 1:
        return f"churn/p{n}/..."
    return f"churn/k{n}/v"


def runBatch(port: int, size: int, first: int, rng: random.Random, limit: float) -> None:
    """
    One batch: C{size} clients connect and send a poll (or half of one),
    are all held, then all leave.
    """
    clients: list[tuple[socket.socket, str]] = []
    try:
        for index in range(first, first + size):
            leaving = LEAVING[index % len(LEAVING)]
            sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
            request = (
                f"GET /artcasts/{pattern(rng)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ).encode()
            if leaving == HALF:
                request = request[: len(request) // 2]
            sock.sendall(request)
            clients.append((sock, leaving))
        held = sum(1 for _, leaving in clients if leaving != HALF)
        waitStats(port, lambda s: s["waiting"] >= held, limit, f"{held} polls held")
    finally:
        for sock, leaving in clients:
            if leaving == RST:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            sock.close()
    # Only /stats.json's own connection is left.
    waitStats(
        port,
        lambda s: s["waiting"] == 0 and s.get("connections", 1) <= 1,
        limit,
        "every client gone",
    )


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000,
                        help="connect/wait/disconnect cycles to run (default 100,000)")
    parser.add_argument("--batch", type=int, default=200,
                        help="clients held at once (default 200)")
    parser.add_argument("--warmup", type=int, default=5_000,
                        help="cycles run before the 'before' figure (default 5,000)")
    parser.add_argument("--duration", type=float, default=600.0,
                        help="stop after this many seconds (default 600)")
    parser.add_argument("--samples", type=int, default=10,
                        help="RSS figures printed along the way (default 10)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def run(options: argparse.Namespace) -> dict[str, Any]:
    raiseFileLimit(options.batch * 2 + 256)
    rng = random.Random(options.seed)
    config = ServerConfig(rng)
    logPath = Path("/tmp") / f"artcast-churn-{config.httpPort}.log"
    argv = artcastArgv(config)
    # A listen backlog for bursts of connections (Twisted's default is 50:
    # past it the kernel drops SYNs and clients wait a second to retry).
    index = argv.index("--client-port") + 1
    argv[index] += f":backlog={BACKLOG}"
    server = Process("artcast", argv, logPath, cwd=ROOT, env=serverEnv())
    try:
        waitForHttp(server, config.httpPort, 30)
        started = time.monotonic()
        deadline = started + options.duration
        figures: dict[str, Any] = {
            "rss_start_kib": rssKiB(server.pid),
            "batch": options.batch,
            "samples": [],
        }
        cycles = 0
        warm = False
        every = max(options.batch, options.cycles // max(1, options.samples))
        nextSample = options.warmup + every
        limit = 30.0
        while cycles < options.cycles and time.monotonic() < deadline:
            if not warm and cycles >= options.warmup:
                warm = True
                figures["rss_before_kib"] = rssKiB(server.pid)
                figures["cycles_before"] = cycles
                log(f"after {cycles} warm-up cycles: RSS {figures['rss_before_kib']} KiB")
            size = min(options.batch, options.cycles - cycles)
            runBatch(config.httpPort, size, cycles, rng, limit)
            cycles += size
            if warm and cycles >= nextSample:
                nextSample += every
                rss = rssKiB(server.pid)
                figures["samples"].append((cycles, rss))
                log(f"{cycles} cycles, {time.monotonic() - started:.0f} s: RSS {rss} KiB")
        final = stats(config.httpPort)
        figures.update(
            cycles=cycles,
            seconds=round(time.monotonic() - started, 1),
            rss_after_kib=rssKiB(server.pid),
            server_connections=final.get("connections"),
            server_waiting=final["waiting"],
            server_rejected=final.get("rejected", {}),
            stopped_by="cycles" if cycles >= options.cycles else "duration",
        )
        if "rss_before_kib" not in figures:
            figures["rss_before_kib"] = figures["rss_start_kib"]
            figures["cycles_before"] = 0
        measured = cycles - figures["cycles_before"]
        figures["growth_kib"] = figures["rss_after_kib"] - figures["rss_before_kib"]
        figures["growth_bytes_per_cycle"] = (
            round(figures["growth_kib"] * 1024 / measured, 2) if measured else None
        )
        return figures
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    options = parseArgs(argv)
    try:
        figures = run(options)
    except BenchError as error:
        log(f"error: {error}")
        return 1
    finally:
        Process.stopAll()
    print(f"cycles:           {figures['cycles']:,} in {figures['seconds']} s "
          f"({figures['stopped_by']} reached; batches of {figures['batch']})")
    print(f"RSS at start:     {figures['rss_start_kib']:,} KiB")
    print(f"RSS before:       {figures['rss_before_kib']:,} KiB "
          f"(after {figures['cycles_before']:,} warm-up cycles)")
    for cycles, rss in figures["samples"]:
        print(f"  after {cycles:>9,}: {rss:,} KiB")
    print(f"RSS after:        {figures['rss_after_kib']:,} KiB")
    print(f"growth:           {figures['growth_kib']:+,} KiB "
          f"({figures['growth_bytes_per_cycle']} bytes per cycle)")
    print(f"server at end:    {figures['server_waiting']} waiting, "
          f"{figures['server_connections']} connections, "
          f"rejected {figures['server_rejected']}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
