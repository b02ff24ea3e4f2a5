# -*- test-case-name: tests.test_lossy -*-
"""
Issue 11's loss measurement, on real kernel loss (L{bench.lossy}): datums
delivered with NACK repair, and without, for the same losses in one run.

For each loss rate and each mode, a fresh private network: one source host,
without loss, sends C{count} version 2 datums (L{artcast.source.Source}) at
C{rate} per second over multicast (TTL 1) to 3 hosts, each running the real
C{twistd -n artcast} with its own nftables rule dropping that share of every
UDP datagram it receives and sends (datums, NACKs, NCFs and repairs alike).
Each server has one C{since=} client in its namespace (C{python -m
bench.lossy follow}), following the key with long polls.  Mode "repair":
the source and the servers as they come (repair on; at 1,000/s the source
batches about 6 datums a datagram); "unbatched" (full run only): the same
with a source that sends one datagram per datum (C{holdback=0}), so that a
lost datagram is a lost datum; "none": the servers with C{--no-repair} and
the source with C{repair=False}.

Per server it reports: the datums delivered to its client (the fraction of
those sent), whether they came in order, duplicates, the answers marked
C{Artcast-Gap: 1}, the server's own counts (C{/stats.json}): C{missed}
(datums found missing on arrival), NACKs per lost datagram (its
C{nacksSent} / its C{repairGaps}), C{unrecoverable}, and the repair latency
p50/p99 (a hole found -> filled).  The summary line of each loss gives the
NACKs of all servers per datagram lost at any of them, and what the source
received and re-sent.

Servers keep a history of 20,000 datums, so that a client that falls behind
never sees a gap the network did not make.

Run as root (it makes network namespaces)::

    python -m bench.repair            # 10,000 datums at 1,000/s; 0, 1, 5, 10, 20 % loss;
                                      # repair, repair unbatched, none
    python -m bench.repair --quick    # 1,000 datums at 500/s; 0 and 10 %; repair, none
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
MODES = ("repair", "none")
"""The modes of every run: repair as it comes, and no repair."""
FULL_MODES = ("repair", "unbatched", "none")
"""The modes of the full run: also repair with a source that sends one
datagram per datum (C{holdback=0}), where a lost datagram is a lost datum."""
COLUMNS = (
    "loss %", "repair", "server", "delivered", "fraction", "in order", "duplicates",
    "gaps", "missed", "NACKs/lost", "unrecoverable", "repair p50", "repair p99",
)


def measure(loss: int, count: int, rate: float, directory: str, servers: int = SERVERS,
            repair: bool = True, batching: bool = True) -> tuple[list[dict], dict]:
    """
    One loss rate: a new network, C{servers} servers with C{loss} % loss in
    both directions, one source sending C{count} datums at C{rate}/s.

    @param repair: repair on (the default of servers and sources), or off.
    @param batching: whether the repairing source batches (its default).
    @return: one row per server, and what the source said of itself.
    """
    with lossy.Network() as network:
        source = network.addHost()
        hosts = [network.addHost() for _ in range(servers)]
        for i, host in enumerate(hosts):
            host.artcast(os.path.join(directory, "loss%d-%s-server%d" % (
                loss, _mode(repair, batching), i + 1)),
                ["--history", "20000"] + ([] if repair else ["--no-repair"]))
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
             str(lossy.REGISTER_PORT), source.address, KEY, str(count), str(rate),
             "0", "1" if repair and batching else "unbatched" if repair else "0"],
            stdout=subprocess.PIPE)
        sent = json.loads(sender.communicate(timeout=count / rate + 60)[0])
        rows = []
        for i, (host, follower) in enumerate(zip(hosts, followers)):
            out = follower.communicate(timeout=count / rate + 120)[0]
            answers = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
            numbers = [a["n"] for a in answers]
            stats = json.loads(host.get("http://%s:8080/stats.json" % (host.address,))["body"])
            counts = stats.get("repair") or {}
            latency = counts.get("repairLatency") or {}
            gapsSeen = counts.get("repairGaps", 0)
            rows.append({
                "loss": loss,
                "repair": repair,
                "mode": _mode(repair, batching),
                "server": i + 1,
                "sent": sent["sent"],
                "delivered": len(set(numbers)),
                "fraction": len(set(numbers)) / sent["sent"],
                "inOrder": all(a < b for a, b in zip(numbers, numbers[1:])),
                "duplicates": len(numbers) - len(set(numbers)),
                "gaps": sum(1 for a in answers if a["gap"]),
                "missed": stats["missed"],
                "nacksSent": counts.get("nacksSent"),
                "nacksSuppressed": counts.get("nacksSuppressed"),
                "repairGaps": counts.get("repairGaps"),
                "repairsReceived": counts.get("repairsReceived"),
                "nacksPerLost": (round(counts["nacksSent"] / gapsSeen, 2)
                                 if repair and gapsSeen else None),
                "unrecoverable": counts.get("unrecoverable") if repair else None,
                "repairP50": _ms(latency.get("p50")) if repair else None,
                "repairP99": _ms(latency.get("p99")) if repair else None,
            })
        return rows, sent.get("source", {})


def _mode(repair: bool, batching: bool) -> str:
    return "none" if not repair else "repair" if batching else "unbatched"


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else "%.0f ms" % (seconds * 1000,)


def table(rows: Sequence[dict]) -> str:
    """
    The rows as a Markdown table, C{-} for the figures of repair.
    """
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join([
            str(row["loss"]), {"repair": "on", "unbatched": "on, unbatched", "none": "off"}[
                row.get("mode", "repair" if row["repair"] else "none")], str(row["server"]),
            "%d / %d" % (row["delivered"], row["sent"]),
            "%.1f %%" % (100 * row["fraction"],), "yes" if row["inOrder"] else "no",
            str(row["duplicates"]), str(row["gaps"]), str(row["missed"]),
            cell(row["nacksPerLost"]), cell(row["unrecoverable"]),
            cell(row["repairP50"]), cell(row["repairP99"]),
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
    summaries: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="artcast-repair-") as directory:
        for loss in rates:
            for mode in MODES if options.quick else FULL_MODES:
                measured, sourceSaid = measure(loss, count, rate, directory,
                                               repair=mode != "none",
                                               batching=mode == "repair")
                rows += measured
                if mode != "none":
                    summaries.append(summary(loss, mode, measured, sourceSaid))
    seconds = time.monotonic() - started
    print(table(rows))
    print()
    for line in summaries:
        print(line["text"])
    print("%d datums at %g/s to %d servers, %.0f s" % (count, rate, SERVERS, seconds))
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"command": "python -m bench.repair" + (" --quick" if options.quick else ""),
                       "count": count, "rate": rate, "servers": SERVERS,
                       "seconds": round(seconds, 1), "rows": rows,
                       "summaries": summaries}, f, indent=1)
    return 0


def summary(loss: int, mode: str, rows: Sequence[dict], sourceSaid: dict) -> dict:
    """
    A loss rate's figures over all servers with repair: NACKs per datagram
    lost at any server, suppressed NACKs, what the source answered.
    """
    nacks = sum(r["nacksSent"] or 0 for r in rows)
    lost = sum(r["repairGaps"] or 0 for r in rows)
    delivered = sum(r["delivered"] for r in rows)
    sent = sum(r["sent"] for r in rows)
    text = ("%d %% loss, %s: %d of %d datums delivered (%.2f %%); %d NACKs for %d datums "
            "lost on arrival (%s per lost), %d suppressed; the source: %s" % (
                loss, {"repair": "repair on", "unbatched": "repair on, unbatched"}[mode],
                delivered, sent, 100.0 * delivered / max(1, sent), nacks, lost,
                "%.2f" % (nacks / lost,) if lost else "-",
                sum(r["nacksSuppressed"] or 0 for r in rows), json.dumps(sourceSaid)))
    return {"loss": loss, "mode": mode, "nacks": nacks, "lost": lost, "delivered": delivered, "sent": sent,
            "nacksPerLost": round(nacks / lost, 3) if lost else None,
            "source": sourceSaid, "text": text}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
