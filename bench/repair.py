# -*- test-case-name: tests.test_lossy -*-
"""
Issue 11's loss measurement, on real kernel loss (L{bench.lossy}).

For each loss rate, a fresh private network: one source host, without loss,
sends C{count} version 2 datums (L{artcast.source.Source}) at C{rate} per
second over multicast (TTL 1) to 3 hosts, each running the real
C{twistd -n artcast} with its own nftables rule dropping that share of
every UDP datagram it receives and sends.  Each server has one C{since=}
client in its namespace (C{python -m bench.lossy follow}), following the
key with long polls.

Per server it reports: the datums delivered to its client (the fraction of
those sent), whether they came in order, duplicates, the answers marked
C{Artcast-Gap: 1}, and the server's own C{missed} (C{/stats.json}).  The
columns "NACKs per lost datagram" and "repair p50/p99" are for the run with
repair (issue 11) and print C{-} today: this is the baseline I{without}
repair.

Servers keep a history of 20,000 datums, so that a client that falls behind
never sees a gap the network did not make.

Run as root (it makes network namespaces)::

    python -m bench.repair            # 10,000 datums at 1,000/s; 0, 1, 5, 10, 20 % loss
    python -m bench.repair --quick    # 1,000 datums at 500/s; 0 and 10 %
    python -m bench.repair --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import lossy

KEY = "bench/loss"
SERVERS = 3
IDLE = 3.0
"""Seconds without a datum after which a client stops following."""
LOSS_RATES = (0, 1, 5, 10, 20)
QUICK_LOSS_RATES = (0, 10)
COLUMNS = (
    "loss %", "server", "delivered", "fraction", "in order", "duplicates",
    "gaps", "missed", "NACKs/lost", "repair p50", "repair p99",
)


def measure(loss: int, count: int, rate: float, directory: str, servers: int = SERVERS) -> list[dict]:
    """
    One loss rate: a new network, C{servers} servers with C{loss} % loss in
    both directions, one source sending C{count} datums at C{rate}/s.

    @return: one row per server.
    """
    with lossy.Network() as network:
        source = network.addHost()
        hosts = [network.addHost() for _ in range(servers)]
        for i, host in enumerate(hosts):
            host.artcast(os.path.join(directory, "loss%d-server%d" % (loss, i + 1)),
                         ["--history", "20000"])
        for host in hosts:
            host.waitForHTTP("http://%s:8080/stats.json" % (host.address,))
            host.setLoss(loss, direction="both")
        followers = []
        for host in hosts:
            follower = host.python(
                ["-m", "bench.lossy", "follow", "http://%s:8080" % (host.address,), KEY, str(IDLE)],
                stdout=subprocess.PIPE)
            follower.stdout.readline()
            followers.append(follower)
        time.sleep(1.0)
        sender = source.python(
            ["-m", "bench.lossy", "send", lossy.GROUP, str(lossy.DATA_PORT),
             str(lossy.REGISTER_PORT), source.address, KEY, str(count), str(rate)],
            stdout=subprocess.PIPE)
        sent = json.loads(sender.communicate(timeout=count / rate + 60)[0])
        rows = []
        for i, (host, follower) in enumerate(zip(hosts, followers)):
            out = follower.communicate(timeout=count / rate + 120)[0]
            answers = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
            numbers = [a["n"] for a in answers]
            stats = json.loads(host.get("http://%s:8080/stats.json" % (host.address,))["body"])
            rows.append({
                "loss": loss,
                "server": i + 1,
                "sent": sent["sent"],
                "delivered": len(set(numbers)),
                "fraction": len(set(numbers)) / sent["sent"],
                "inOrder": all(a < b for a, b in zip(numbers, numbers[1:])),
                "duplicates": len(numbers) - len(set(numbers)),
                "gaps": sum(1 for a in answers if a["gap"]),
                "missed": stats["missed"],
                "nacksPerLost": None,
                "repairP50": None,
                "repairP99": None,
            })
        return rows


def table(rows: Sequence[dict]) -> str:
    """
    The rows as a Markdown table, C{-} for the figures of repair.
    """
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join([
            str(row["loss"]), str(row["server"]), "%d / %d" % (row["delivered"], row["sent"]),
            "%.1f %%" % (100 * row["fraction"],), "yes" if row["inOrder"] else "no",
            str(row["duplicates"]), str(row["gaps"]), str(row["missed"]),
            cell(row["nacksPerLost"]), cell(row["repairP50"]), cell(row["repairP99"]),
        ]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 datums at 500/s, loss 0 and 10 %%")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    options = parser.parse_args(argv)
    ok, reason = lossy.available()
    if not ok:
        print("cannot run: " + reason, file=sys.stderr)
        return 2
    count, rate, rates = (1000, 500.0, QUICK_LOSS_RATES) if options.quick else (10000, 1000.0, LOSS_RATES)
    started = time.monotonic()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="artcast-repair-") as directory:
        for loss in rates:
            rows += measure(loss, count, rate, directory)
    seconds = time.monotonic() - started
    print(table(rows))
    print("%d datums at %g/s to %d servers, %.0f s" % (count, rate, SERVERS, seconds))
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"command": "python -m bench.repair" + (" --quick" if options.quick else ""),
                       "repair": False, "count": count, "rate": rate, "servers": SERVERS,
                       "seconds": round(seconds, 1), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
