# -*- test-case-name: tests.test_soak -*-
"""
The abuse soak (C{bench/soak.py --abuse}): the attacks of issue 9 mixed with
legitimate clients, against the real C{twistd artcast} on loopback.

A legitimate version 2 source sends small datums to a few keys and, once a
second, a value large enough to travel in fragments; legitimate clients
follow each key with C{?since=<id>} long polls on keep-alive connections.
Meanwhile the attacks of L{ATTACKS} run, each switched on alone with
C{--attacks}, every loop bounded in count and in time.

The verdict checks that:

  - the legitimate since-clients lost nothing: each received every datum
    sent to its key, in order, without duplicates and without
    C{Artcast-Gap};
  - their delivery latency (from the source's send time carried in the
    value to the answer's arrival) has a 99th percentile under one second;
  - the server's resident memory (C{VmRSS}) stayed under a ceiling that
    follows from the server's options (L{rssCeiling});
  - the server lived and answered no 5xx;
  - the server's log grew by at most 64 KiB and 1 KiB a second (what it
    logs about bad input is rate-limited);
  - the attacks that are judged by what the server did to them held: a slow
    request body was cut (C{slow-body}) and bearer tokens could not be
    guessed quickly (C{bearer-guess}).

All traffic stays on this machine: HTTP to 127.0.0.1, multicast to a random
group in 239.255.0.0/16 sent with C{IP_MULTICAST_IF} 127.0.0.1 and TTL 0.
The server is stopped by its PID.  If its memory passes C{--rss-abort-mib}
the run stops early, to spare the machine, and fails.

Run from the repository root::

    python bench/soak.py --abuse                     # 10 minutes, every attack
    python bench/soak.py --abuse --quick             # about 20 s (CI)
    python bench/soak.py --abuse --attacks history-bloat,future-boot --duration 60
    python bench/soak.py --abuse --attacks none      # the legitimate load alone

See docs/operations.md, "The abuse soak".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from artcast import wire  # noqa: E402
from artcast.source import multicastSocket  # noqa: E402
from artcast.server.defaults import DEFAULT_HISTORY, DEFAULT_MAX_VALUE_SIZE  # noqa: E402
from bench import fanout  # noqa: E402
from bench.fanout import BenchError, Pinning, Process, percentile  # noqa: E402
from bench.soak import (  # noqa: E402
    HEAD_LIMIT,
    MAX_DATAGRAM,
    Paced,
    ProtocolError,
    fetchStats,
    readHead,
    readResponse,
    request,
    serverLogProblems,
)

#: The attacks, in the order they are listed, each with what it does.
ATTACKS: dict[str, str] = {
    "pipelined-listing": "pipelined GET /artcasts (a 5 MB listing made by 100 registrations) "
    "from connections that never read",
    "slow-listing": "slow readers of the 5 MB listing",
    "history-bloat": "65 KB version 1 datagrams of [{},{},...] on a few keys",
    "large-registration": 'registrations {"x": [{}] * 20000} on ever new keys',
    "ws-ping": "WebSocket pings from a client that never reads",
    "deep-wildcard": "held long polls on 126-level wildcard patterns, each different",
    "binary-prefix": "held polls on 126-level patterns of a and * levels, and datagrams "
    "on a 126-level key that walks them all",
    "dots-since": "since= on ... and SSE/WebSocket opens on ..., over a filled store",
    "future-boot": "version 2 datagrams with boot = seq = 2^63-1 in the legitimate "
    "source's name",
    "fragment-flood": "one-fragment sets from many sources between the fragments of the "
    "legitimate source's large value",
    "answer-cache": "ordinary GETs of 900 KB values in every representation, HTTP "
    "version and Connection",
    "slow-body": "request bodies sent a byte every 2 s",
    "bearer-guess": "POST with guessed bearer tokens, 20 pipelined at a time, up to "
    "1,000 a second",
    "bad-handshake": "malformed WebSocket handshakes",
}

#: The largest 126-level key (and pattern) fits in 256 characters.
DEEP = 126

#: The legitimate source's keys and the key of its fragmented values.
LEGIT_PREFIX = "legit/k/"
LEGIT_BIG = "legit/big"

#: The legitimate source's largest datagram: its big values go in fragments.
LEGIT_MAX_DATAGRAM = 1200

#: The checks' thresholds.
LATENCY_P99_LIMIT = 1.0
#: Guesses of a bearer token the server may evaluate per second, all
#: connections together, before C{bearer-guess} fails.
GUESS_RATE_LIMIT = 100.0
#: Slack, in seconds, on top of C{--header-timeout} plus C{--body-timeout}
#: within which the server must cut a slow request body.
SLOW_BODY_SLACK = 5.0
#: Server log bytes allowed: a base plus this many per second of the run.
LOG_BASE = 64 * 1024
LOG_PER_SECOND = 1024

#: The RSS ceiling's parts (see L{rssCeiling} and docs/operations.md).
CEILING_BASE_MIB = 96.0
CEILING_CONNECTION_KIB = 16.0
#: What the store really holds for what it charges, allocator included.
CEILING_STORE_FACTOR = 1.25
#: How far past --max-output-total output may go before connections are cut.
CEILING_OUTPUT_FACTOR = 17 / 16
CEILING_VALUES_IN_FLIGHT = 8

#: The server's budgets in the soak: smaller than its defaults, so that the
#: ceiling is a test of the server, not of the machine.
SOAK_MAX_STORE_BYTES = 32 * 2**20
SOAK_MAX_OUTPUT_TOTAL = 64 * 2**20
SOAK_FRAGMENT_MEMORY = 16_000_000

#: The token the server is started with (C{--publish-token-file}); the
#: guesser never sends it.
TOKEN = base64.b64encode(b"artcast abuse soak token, 32 by").decode()


def log(message: str) -> None:
    """
    Progress goes to stderr; the summary to stdout.
    """
    sys.stderr.write(f"[abuse {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# The server's options and the ceiling


def serverOptions(options: argparse.Namespace) -> dict[str, Any]:
    """
    The options the server is started with (besides ports, groups and
    logs), by name: the RSS ceiling is computed from these.
    """
    return {
        "max-clients": options.max_clients,
        "max-keys": options.max_keys,
        "history": DEFAULT_HISTORY,
        "max-value-size": DEFAULT_MAX_VALUE_SIZE,
        "max-store-bytes": options.max_store_bytes,
        "max-output-total": options.max_output_total,
        "fragment-memory": SOAK_FRAGMENT_MEMORY,
        "header-timeout": options.header_timeout,
        "idle-timeout": options.idle_timeout,
        "body-timeout": options.body_timeout,
    }


def rssCeiling(server: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """
    The resident memory the server may reach under any abuse, in MiB, from
    its options::

        base 96 MiB
        + max-clients x 16 KiB         (a connection's objects, a held poll
                                        and its pattern, request bytes read)
        + max-store-bytes x 1.25       (keys, history, metadata: what the
                                        store charges, allocator included)
        + max-output-total x 17/16     (output written and not yet read, all
                                        connections together)
        + fragment-memory              (values being put together)
        + max-value-size x 8           (values being parsed and answered)

    Every bound a stranger can fill must appear here as a term: when a new
    byte bound is added to the server, add its option to L{serverOptions}
    and its term here, and say so in docs/operations.md.

    @return: the ceiling and its terms, both in MiB.
    """
    terms = {
        "base": CEILING_BASE_MIB,
        "max-clients": server["max-clients"] * CEILING_CONNECTION_KIB / 1024,
        "max-store-bytes": server["max-store-bytes"] * CEILING_STORE_FACTOR / 2**20,
        "max-output-total": server["max-output-total"] * CEILING_OUTPUT_FACTOR / 2**20,
        "fragment-memory": server["fragment-memory"] / 2**20,
        "max-value-size": server["max-value-size"] * CEILING_VALUES_IN_FLIGHT / 2**20,
    }
    return round(sum(terms.values()), 1), {k: round(v, 1) for k, v in terms.items()}


# --------------------------------------------------------------------------
# Small helpers


class Figures(Counter):  # type: ignore[type-arg]
    """
    What one attack did and saw, by name; C{failures} are its own checks
    that failed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []
        self.notes: dict[str, Any] = {}


async def connect(
    port: int, receiveBuffer: int | None = None, limit: int = HEAD_LIMIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """
    A connection to the server on 127.0.0.1, with a small receive buffer if
    asked (so that a client that does not read soon stops the server's
    writes), bounded in time.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receiveBuffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(10):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            return await asyncio.open_connection(sock=sock, limit=limit)
    except BaseException:
        sock.close()
        raise


def abort(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.transport.is_closing():
        writer.transport.abort()


async def writeSome(writer: asyncio.StreamWriter, data: bytes, high: int = 256 * 1024) -> bool:
    """
    Write C{data} unless the transport already holds C{high} bytes the
    server has not taken (it stopped reading): then write nothing.

    @return: whether it was written.
    """
    if writer.transport.is_closing():
        raise ConnectionResetError("closed")
    if writer.transport.get_write_buffer_size() >= high:
        return False
    writer.write(data)
    return True


def webSocketHead(path: str, key: str | None = "dGhlIHNhbXBsZSBub25jZQ==",
                  version: str = "13", extra: Sequence[str] = ()) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Version: {version}",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def pingFrames(count: int, payload: bytes = b"p" * 125) -> bytes:
    """
    C{count} masked WebSocket ping frames (a client's frames are masked).
    """
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    frame = bytes([0x89, 0x80 | len(payload)]) + mask + masked
    return frame * count


def deepKey(levels: Sequence[str]) -> str:
    key = "/".join(levels)
    assert len(key) <= wire.MAX_KEY_LENGTH, len(key)
    return key


async def until(deadline: float, pause: float) -> bool:
    """
    Sleep C{pause} (less if the deadline is nearer); whether time is left.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    await asyncio.sleep(min(pause, remaining))
    return time.monotonic() < deadline


# --------------------------------------------------------------------------
# The legitimate source and clients


class LegitSource:
    """
    A version 2 source (TTL 0, interface 127.0.0.1): small datums to
    C{keys} in turn, and now and then a value on L{LEGIT_BIG} that goes in
    fragments.  Each value carries C{n}, its number on its key (from 0),
    and C{t}, the send time.

    @ivar between: called between the first fragment of a big value and the
        others (the C{fragment-flood} attack hooks in here).
    """

    def __init__(self, group: str, dataPort: int, keys: Sequence[str]) -> None:
        self.sock = multicastSocket(0, "127.0.0.1")
        self.sock.setblocking(False)
        self.address = (group, dataPort)
        self.src = f"legit-{os.getpid()}"
        self.boot = int(time.time() * 1000)
        self.seq = 0
        self.keys = list(keys)
        self.sent: dict[str, int] = {key: -1 for key in self.keys + [LEGIT_BIG]}
        self.firstIds: dict[str, str] = {}
        self.index = 0
        self.failed = 0
        self.between: Callable[[], None] | None = None

    def datagrams(self, key: str) -> tuple[str, list[bytes]]:
        n = self.sent[key] + 1
        value: dict[str, Any] = {"n": n, "t": time.time()}
        if key == LEGIT_BIG:
            value["pad"] = "y" * 3000
        self.seq += 1
        stamp = wire.Stamp(self.src, self.boot, self.seq, time.time())
        datagrams = wire.encodeData(key, value, stamp, maxDatagram=LEGIT_MAX_DATAGRAM)
        self.sent[key] = n
        if n == 0:
            self.firstIds[key] = stamp.datumId()
        return stamp.datumId(), datagrams

    def send(self, key: str) -> None:
        _, datagrams = self.datagrams(key)
        try:
            self.sock.sendto(datagrams[0], self.address)
            if len(datagrams) > 1 and self.between is not None:
                self.between()
            for datagram in datagrams[1:]:
                self.sock.sendto(datagram, self.address)
        except OSError:
            self.failed += 1

    def step(self) -> None:
        self.send(self.keys[self.index % len(self.keys)])
        self.index += 1

    def big(self) -> None:
        self.send(LEGIT_BIG)

    def close(self) -> None:
        self.sock.close()


class SinceClient:
    """
    A legitimate client following one key with C{?since=<id>} long polls on
    a keep-alive connection, reconnecting (bounded) when it is cut.

    @ivar received: the C{n} of every value, in the order received.
    @ivar latencies: seconds from each value's send time to its arrival.
    """

    def __init__(self, port: int, key: str, since: str) -> None:
        self.port = port
        self.key = key
        self.since = since
        self.received: list[int] = []
        self.latencies: list[float] = []
        self.gaps = 0
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.running = True

    async def run(self, deadline: float) -> None:
        reconnects = 0
        while self.running and time.monotonic() < deadline and reconnects < 1000:
            writer = None
            try:
                reader, writer = await connect(self.port)
                while self.running and time.monotonic() < deadline:
                    writer.write(request(
                        f"/artcasts/{self.key}?since={self.since}&timeout=2",
                        "application/json",
                    ))
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        response = await readResponse(reader)
                    self.answer(response)
                    if response.status not in (200, 204):
                        break
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.IncompleteReadError) as e:
                self.errors[type(e).__name__] += 1
            except (ProtocolError, ValueError, KeyError):
                self.errors["bad-answer"] += 1
            finally:
                abort(writer)
            reconnects += 1
            if self.running:
                await asyncio.sleep(0.1)

    def answer(self, response: Any) -> None:
        arrived = time.time()
        self.statuses[response.status] += 1
        if response.status >= 500:
            self.errors[f"status-{response.status}"] += 1
        if response.status != 200:
            return
        if response.headers.get("artcast-gap") == "1":
            self.gaps += 1
        value = json.loads(response.body)
        self.received.append(value["n"])
        self.latencies.append(arrived - value["t"])
        self.since = response.headers["artcast-id"]

    def check(self, last: int) -> dict[str, Any]:
        """
        Compare what arrived with the datums C{1..last} sent after the one
        the client started from.
        """
        expected = list(range(1, last + 1))
        got = self.received
        seen: set[int] = set()
        duplicates = 0
        for n in got:
            duplicates += n in seen
            seen.add(n)
        disorder = sum(1 for a, b in zip(got, got[1:]) if b <= a)
        return {
            "key": self.key,
            "expected": len(expected),
            "received": len(got),
            "missing": len(set(expected) - seen),
            "duplicates": duplicates,
            "out_of_order": disorder,
            "gaps": self.gaps,
            "lossless": got == expected and not self.gaps,
            "errors": dict(self.errors),
        }


def runClients(connection: Any, port: int, targets: list[tuple[str, str]],
               deadline: float) -> None:
    """
    The legitimate clients' process: follow each C{(key, since)} of
    C{targets} with a L{SinceClient} until C{deadline} (a
    L{time.monotonic} time, which processes share), or until the parent
    sends the last C{n} sent on each key; then give them (bounded) time to
    catch up and send back what each received.

    The clients run apart from the attacks so that their latency is the
    server's, not that of an event loop busy attacking.
    """
    asyncio.run(_runClients(connection, port, targets, deadline))


async def _runClients(connection: Any, port: int, targets: list[tuple[str, str]],
                      deadline: float) -> None:
    loop = asyncio.get_running_loop()
    clients = [SinceClient(port, key, since) for key, since in targets]
    tasks = [asyncio.ensure_future(c.run(deadline)) for c in clients]
    lags: list[float] = []

    async def watchLag() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            lags.append(time.monotonic() - before - 0.1)

    lagTask = asyncio.ensure_future(watchLag())
    await asyncio.sleep(0.3)  # their first requests are held by now
    connection.send({"ready": True})
    message = await loop.run_in_executor(None, connection.recv)
    sent, catchUp = message["sent"], message["catch_up"]
    end = time.monotonic() + catchUp
    while time.monotonic() < end:
        if all(c.received and c.received[-1] >= sent[c.key] for c in clients):
            break
        await asyncio.sleep(0.1)
    for c in clients:
        c.running = False
    for task in tasks + [lagTask]:
        task.cancel()
    await asyncio.gather(*tasks, lagTask, return_exceptions=True)
    connection.send({
        "clients": [
            {"key": c.key, "received": c.received, "latencies": c.latencies,
             "gaps": c.gaps, "errors": dict(c.errors),
             "statuses": {str(k): v for k, v in c.statuses.items()}}
            for c in clients
        ],
        "loop_lag_p99_ms": rounded(1000 * (percentile(lags, 0.99) or 0.0)),
    })
    connection.close()


class ClientsProcess:
    """
    The parent's handle on the process of L{runClients}.
    """

    def __init__(self, port: int, targets: list[tuple[str, str]], deadline: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=runClients, args=(child, port, targets, deadline),
            name="abuse-clients", daemon=True,
        )
        self.process.start()
        child.close()
        self.loopLag: float | None = None

    async def ready(self, limit: float = 60.0) -> None:
        """
        Wait (bounded) until the clients have asked for their first datum.

        @raise BenchError: if they did not within C{limit} seconds.
        """
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.connection.poll, limit):
            raise BenchError("the legitimate clients' process did not start")
        self.connection.recv()

    async def finish(self, sent: dict[str, int], catchUp: float) -> list[SinceClient]:
        """
        Tell the clients what was sent, wait (bounded) for what they
        received, and stop the process.

        @raise BenchError: if the process sent nothing back in time.
        """
        self.connection.send({"sent": sent, "catch_up": catchUp})
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.connection.poll, catchUp + 30)
        try:
            if not ready:
                raise BenchError("the legitimate clients' process did not answer")
            result = self.connection.recv()
        finally:
            self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
        clients = []
        for figures in result["clients"]:
            client = SinceClient(0, figures["key"], "")
            client.received = figures["received"]
            client.latencies = figures["latencies"]
            client.gaps = figures["gaps"]
            client.errors = Counter(figures["errors"])
            client.statuses = Counter({int(k): v for k, v in figures["statuses"].items()})
            clients.append(client)
        self.loopLag = result["loop_lag_p99_ms"]
        return clients


# --------------------------------------------------------------------------
# The attacks


class Context:
    """
    What the attacks share: where the server is, the senders, the deadline.
    """

    def __init__(self, port: int, group: str, dataPort: int, registerPort: int,
                 legit: LegitSource, deadline: float, quick: bool, rng: random.Random,
                 headerTimeout: float, bodyTimeout: float) -> None:
        self.port = port
        self.data = (group, dataPort)
        self.register = (group, registerPort)
        self.legit = legit
        self.deadline = deadline
        self.quick = quick
        self.rng = rng
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.sock = multicastSocket(0, "127.0.0.1")
        self.sock.setblocking(False)
        self.oldId = "nobody.1.1"

    def scale(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def sendto(self, datagram: bytes, address: tuple[str, int], figures: Figures) -> None:
        try:
            self.sock.sendto(datagram, address)
            figures["datagrams"] += 1
        except OSError:
            figures["send-failed"] += 1

    def close(self) -> None:
        self.sock.close()


async def registerListing(ctx: Context, figures: Figures, count: int = 100) -> None:
    """
    Make the listing large (about 5 MB, more than the kernel's socket
    buffers take): C{count} registrations of 50 KB of description each.
    Done once, shared by the listing attacks.
    """
    if figures.notes.get("listing"):
        return
    figures.notes["listing"] = count
    for index in range(count):
        meta = {"description": f"listing filler {index} " + "d" * 50_000}
        ctx.sendto(json.dumps([f"abuse/list/{index:04d}", meta]).encode(), ctx.register,
                   figures)
        if index % 10 == 9:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)


async def attackPipelinedListing(ctx: Context, figures: Figures) -> None:
    await registerListing(ctx, figures)
    one = request("/artcasts", "application/json")
    perConnection = 1000

    async def connection() -> None:
        writer = None
        try:
            reader, writer = await connect(ctx.port, receiveBuffer=4096)
            writer.transport.pause_reading()
            figures["connections"] += 1
            sent = 0
            while sent < perConnection and await until(ctx.deadline, 0.5):
                if await writeSome(writer, one, high=64 * 1024):
                    sent += 1
                    figures["requests"] += 1
                else:
                    figures["write-blocked"] += 1
            await until(ctx.deadline, ctx.deadline - time.monotonic())
        except (OSError, TimeoutError) as e:
            figures[f"error-{type(e).__name__}"] += 1
        finally:
            abort(writer)

    await asyncio.gather(*(connection() for _ in range(2)))


async def attackSlowListing(ctx: Context, figures: Figures) -> None:
    await registerListing(ctx, figures)
    readers = ctx.scale(150, 300)

    async def slow(index: int) -> None:
        await asyncio.sleep(index * 0.06)  # over 9 s (18 s in the long run)
        for _ in range(100):
            writer = None
            try:
                reader, writer = await connect(ctx.port, receiveBuffer=4096, limit=1024)
                figures["connections"] += 1
                writer.write(request("/artcasts", "application/json"))
                while await until(ctx.deadline, 2.0):
                    async with asyncio.timeout(max(0.1, ctx.deadline - time.monotonic())):
                        chunk = await reader.read(1024)
                    if not chunk:
                        figures["closed-by-server"] += 1
                        break
                    figures["bytes-read"] += len(chunk)
            except TimeoutError:
                if time.monotonic() < ctx.deadline:
                    figures["error-TimeoutError"] += 1
            except OSError as e:
                figures[f"error-{type(e).__name__}"] += 1
            finally:
                abort(writer)
            # Cut by the server: come back, but not so often that building
            # the listing again is the attack.
            if not await until(ctx.deadline, 5.0):
                return

    await asyncio.gather(*(slow(i) for i in range(readers)))


async def attackHistoryBloat(ctx: Context, figures: Figures) -> None:
    head = b'["abuse/bloat/%02d", ['
    body = b"{}," * ((MAX_DATAGRAM - 40) // 3)
    limit = ctx.scale(2000, 20000)
    sent = 0

    def step() -> None:
        nonlocal sent
        datagram = head % (sent % 20,) + body[:-1] + b"]]"
        ctx.sendto(datagram, ctx.data, figures)
        sent += 1

    pacer = Paced(25.0, step)
    await runPaced(pacer, ctx, limit)


async def attackLargeRegistration(ctx: Context, figures: Figures) -> None:
    meta = b'{"x": [' + b"{}," * 19999 + b"{}]}"
    limit = ctx.scale(1000, 6000)
    sent = 0

    def step() -> None:
        nonlocal sent
        key = f"abuse/reg/{sent % 500:04d}".encode()
        ctx.sendto(b'["' + key + b'", ' + meta + b"]", ctx.register, figures)
        sent += 1

    await runPaced(Paced(12.0, step), ctx, limit)


async def runPaced(pacer: Paced, ctx: Context, limit: int) -> None:
    """
    Run a pacer until the deadline or C{limit} steps.
    """
    task = asyncio.ensure_future(pacer.run(limit=limit))
    try:
        while not task.done() and await until(ctx.deadline, 0.2):
            pass
    finally:
        pacer.running = False
        await task


async def webSocketOpen(ctx: Context, path: str, receiveBuffer: int | None = None
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """
    Open a WebSocket on C{path}: the status of the server's answer (101
    when it took it).
    """
    reader, writer = await connect(ctx.port, receiveBuffer=receiveBuffer)
    writer.write(webSocketHead(path))
    async with asyncio.timeout(10):
        _, status, _ = await readHead(reader)
    return reader, writer, status


async def attackWsPing(ctx: Context, figures: Figures) -> None:
    batch = pingFrames(1000)  # 131 KB
    perSecond = 12 * 1024 * 1024 // len(batch) + 1
    for _ in range(200):
        writer = None
        try:
            reader, writer, status = await webSocketOpen(
                ctx, f"/artcasts/{LEGIT_PREFIX}00", receiveBuffer=4096)
            figures[f"open-{status}"] += 1
            if status != 101:
                return
            writer.transport.pause_reading()
            while await until(ctx.deadline, 1.0 / perSecond):
                if await writeSome(writer, batch):
                    figures["pings"] += 1000
                    figures["bytes"] += len(batch)
                else:
                    figures["write-blocked"] += 1
            return
        except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as e:
            figures[f"error-{type(e).__name__}"] += 1
        finally:
            abort(writer)
        if not await until(ctx.deadline, 0.5):
            return


async def holdPolls(ctx: Context, figures: Figures, patterns: Sequence[str]) -> None:
    """
    Hold one long poll on each pattern, each on its own connection, until
    the deadline; when the server answers or cuts it, ask again 2 s later,
    three times at most (a server that refuses such patterns is not to be
    flooded by the refusals).
    """
    async def hold(index: int, pattern: str) -> None:
        await asyncio.sleep(index * 0.003)
        for _ in range(4):
            writer = None
            try:
                reader, writer = await connect(ctx.port)
                writer.write(request(f"/artcasts/{pattern}", "application/json"))
                figures["polls"] += 1
                async with asyncio.timeout(max(0.1, ctx.deadline - time.monotonic())):
                    response = await readResponse(reader)
                figures[f"answer-{response.status}"] += 1
            except TimeoutError:
                return
            except (OSError, ProtocolError, asyncio.IncompleteReadError) as e:
                figures[f"error-{type(e).__name__}"] += 1
            finally:
                abort(writer)
            if not await until(ctx.deadline, 2.0):
                return

    await asyncio.gather(*(hold(i, p) for i, p in enumerate(patterns)))


async def attackDeepWildcard(ctx: Context, figures: Figures) -> None:
    rng = random.Random(ctx.rng.random())
    letters = "bcdefghijklmnopqrstuvwxyz"
    patterns = []
    for _ in range(3000):
        levels = [rng.choice(letters) for _ in range(DEEP - 1)]
        levels[rng.randrange(DEEP - 1)] = "*"
        patterns.append(deepKey(["z"] + levels[1:] + ["..."]))
    await holdPolls(ctx, figures, patterns)


async def attackBinaryPrefix(ctx: Context, figures: Figures) -> None:
    rng = random.Random(ctx.rng.random())
    patterns = [
        deepKey([rng.choice("a*") for _ in range(DEEP - 1)] + ["b"])
        for _ in range(1000)
    ]
    hold = asyncio.ensure_future(holdPolls(ctx, figures, patterns))
    key = deepKey(["a"] * DEEP)
    datagram = json.dumps([key, 1]).encode()
    await asyncio.sleep(2.0)  # let the polls be held
    await runPaced(
        Paced(40.0, lambda: ctx.sendto(datagram, ctx.data, figures)), ctx,
        ctx.scale(1000, 24000),
    )
    await hold


async def fillStore(ctx: Context, figures: Figures, keys: int, history: int) -> None:
    """
    Fill C{keys} keys with C{history} small datums each, so that a merge of
    every history is costly.
    """
    total = keys * history
    sent = 0

    def step() -> None:
        nonlocal sent
        ctx.sendto(json.dumps([f"abuse/store/{sent % keys:04d}", sent]).encode(), ctx.data,
                   figures)
        sent += 1

    await Paced(5000.0, step).run(limit=total)
    figures["store-datums"] = sent


async def attackDotsSince(ctx: Context, figures: Figures) -> None:
    """
    Ten requests a second on C{...} (at most 20 at once): what a server
    that reads only the newest datum of each key takes in its stride, and
    one that merges every key's history cannot keep up with.  The store is
    filled before the run starts (see L{Abuse.run}).
    """
    inFlight: set[asyncio.Task[None]] = set()

    async def one(kind: str) -> None:
        writer = None
        try:
            if kind == "ws":
                _, writer, status = await webSocketOpen(ctx, "/artcasts/...")
            elif kind == "sse":
                reader, writer = await connect(ctx.port)
                writer.write(request("/artcasts/...", "text/event-stream"))
                async with asyncio.timeout(10):
                    _, status, _ = await readHead(reader)
            else:
                reader, writer = await connect(ctx.port)
                writer.write(request(f"/artcasts/...?since={ctx.oldId}", "application/json"))
                async with asyncio.timeout(10):
                    status = (await readResponse(reader)).status
            figures[f"{kind}-{status}"] += 1
        except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as e:
            figures[f"error-{type(e).__name__}"] += 1
        finally:
            abort(writer)

    def step() -> None:
        if len(inFlight) >= 20:
            figures["skipped"] += 1
            return
        task = asyncio.ensure_future(one(("since", "sse", "ws")[figures["asked"] % 3]))
        figures["asked"] += 1
        inFlight.add(task)
        task.add_done_callback(inFlight.discard)

    try:
        await runPaced(Paced(10.0, step), ctx, ctx.scale(1000, 10_000))
    finally:
        for task in list(inFlight):
            task.cancel()
        await asyncio.gather(*inFlight, return_exceptions=True)


async def attackFutureBoot(ctx: Context, figures: Figures) -> None:
    # After a quarter of the run, then every 5 s.
    start = time.monotonic()
    await until(ctx.deadline, (ctx.deadline - start) / 4)
    top = wire.MAX_COUNTER
    for _ in range(1000):
        if time.monotonic() >= ctx.deadline:
            return
        document = {"v": 2, "src": ctx.legit.src, "boot": top, "seq": top,
                    "t": round(time.time(), 3), "key": "abuse/boot", "value": 1}
        ctx.sendto(json.dumps(document).encode(), ctx.data, figures)
        if not await until(ctx.deadline, 5.0):
            return


def fragmentFlood(ctx: Context, figures: Figures, sets: int = 70) -> Callable[[], None]:
    """
    What the legitimate source calls between its fragments: C{sets}
    one-fragment sets, each from a source of its own, that never complete.
    """
    boot = int(time.time() * 1000)
    counter = 0

    def flood() -> None:
        nonlocal counter
        for _ in range(sets):
            counter += 1
            document = {"v": 2, "src": f"flood-{counter}", "boot": boot, "seq": 1,
                        "t": round(time.time(), 3), "key": "abuse/frag",
                        "part": 0, "parts": 2, "chunk": "[1"}
            ctx.sendto(json.dumps(document).encode(), ctx.data, figures)
        figures["floods"] += 1

    return flood


async def attackFragmentFlood(ctx: Context, figures: Figures) -> None:
    ctx.legit.between = fragmentFlood(ctx, figures)
    await until(ctx.deadline, ctx.deadline - time.monotonic())
    ctx.legit.between = None


async def attackAnswerCache(ctx: Context, figures: Figures) -> None:
    src = f"cache-{os.getpid()}"
    boot = int(time.time() * 1000)
    value = "c" * 900_000
    variants = [
        (accept, version, close)
        for accept in ("application/json", "text/plain", "*/*", None)
        for version in ("HTTP/1.1", "HTTP/1.0")
        for close in (False, True)
    ]
    for index in range(ctx.scale(40, 400)):
        key = f"abuse/cache/{index % 40:02d}"
        stamp = wire.Stamp(src, boot, index + 1, time.time())
        for datagram in wire.encodeData(key, value, stamp):
            ctx.sendto(datagram, ctx.data, figures)
        await asyncio.sleep(0.1)

        async def fetch(accept: str | None, version: str, close: bool) -> None:
            writer = None
            try:
                reader, writer = await connect(ctx.port)
                writer.write(request(f"/artcasts/{key}?since=latest&timeout=2", accept,
                                     version=version, close=close))
                async with asyncio.timeout(10):
                    response = await readResponse(reader)
                figures[f"answer-{response.status}"] += 1
            except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as e:
                figures[f"error-{type(e).__name__}"] += 1
            finally:
                abort(writer)

        await asyncio.gather(*(fetch(*variant) for variant in variants))
        if not await until(ctx.deadline, 0.1):
            return


async def attackSlowBody(ctx: Context, figures: Figures) -> None:
    bound = ctx.headerTimeout + ctx.bodyTimeout + SLOW_BODY_SLACK
    head = (
        "POST /artcasts/abuse/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    lifetimes: list[float] = []

    async def slow(index: int) -> None:
        await asyncio.sleep(index * 0.1)
        for _ in range(100):
            if ctx.deadline - time.monotonic() < bound:
                return  # too late to see it cut within the run
            writer = None
            opened = time.monotonic()
            try:
                reader, writer = await connect(ctx.port)
                figures["connections"] += 1
                writer.write(head)
                cut = False
                while time.monotonic() - opened < bound:
                    writer.write(b"1")
                    try:
                        async with asyncio.timeout(2.0):
                            if not await reader.read(4096):
                                cut = True
                                break
                    except TimeoutError:
                        continue
                lived = time.monotonic() - opened
                if cut:
                    figures["cut"] += 1
                    lifetimes.append(lived)
                else:
                    figures["outlived"] += 1
            except (OSError, asyncio.IncompleteReadError):
                figures["cut"] += 1
                lifetimes.append(time.monotonic() - opened)
            finally:
                abort(writer)

    try:
        await asyncio.gather(*(slow(i) for i in range(10)))
    finally:
        figures.notes["longest_cut_s"] = round(max(lifetimes), 1) if lifetimes else None
        figures.notes["bound_s"] = bound
        if figures["outlived"]:
            figures.failures.append(
                f"{figures['outlived']} of {figures['outlived'] + figures['cut']} slow "
                f"bodies outlived {bound:g} s (--header-timeout + --body-timeout + "
                f"{SLOW_BODY_SLACK:g})"
            )


async def attackBearerGuess(ctx: Context, figures: Figures) -> None:
    rng = random.Random(ctx.rng.random())
    started = time.monotonic()

    def guess() -> bytes:
        token = base64.b64encode(rng.randbytes(24)).decode()
        return (
            "POST /artcasts/abuse/guess HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1\r\n\r\n1"
        ).encode()

    try:
        await guessing(ctx, figures, guess)
    finally:
        seconds = max(0.001, min(time.monotonic(), ctx.deadline) - started)
        rate = figures["answer-401"] / seconds
        figures.notes["evaluated_per_s"] = round(rate, 1)
        if rate > GUESS_RATE_LIMIT:
            figures.failures.append(
                f"{figures['answer-401']} guesses answered 401 in {seconds:.0f} s "
                f"({rate:.0f}/s, bound {GUESS_RATE_LIMIT:g}/s)"
            )


async def guessing(ctx: Context, figures: Figures, guess: Callable[[], bytes]) -> None:
    for _ in range(10_000):
        writer = None
        try:
            reader, writer = await connect(ctx.port)
            figures["connections"] += 1
            while time.monotonic() < ctx.deadline:
                writer.write(b"".join(guess() for _ in range(20)))
                figures["sent"] += 20
                async with asyncio.timeout(max(0.1, ctx.deadline - time.monotonic())):
                    for _ in range(20):
                        response = await readResponse(reader)
                        figures[f"answer-{response.status}"] += 1
                await asyncio.sleep(0.02)  # 1,000 a second at most
        except TimeoutError:
            break
        except (OSError, ProtocolError, asyncio.IncompleteReadError):
            figures["cut"] += 1
        finally:
            abort(writer)
        if not await until(ctx.deadline, 0.2):
            break


async def attackBadHandshake(ctx: Context, figures: Figures) -> None:
    heads = [
        webSocketHead(f"/artcasts/{LEGIT_PREFIX}00", key=None),
        webSocketHead(f"/artcasts/{LEGIT_PREFIX}00", version="99"),
        webSocketHead(f"/artcasts/{LEGIT_PREFIX}00", key="not base64!"),
        webSocketHead("/artcasts/...", extra=["Sec-WebSocket-Extensions: x; y=\x01"]),
    ]

    async def one(index: int) -> None:
        for count in range(100_000):
            writer = None
            try:
                reader, writer = await connect(ctx.port)
                writer.write(heads[(index + count) % len(heads)])
                async with asyncio.timeout(5):
                    _, status, _ = await readHead(reader)
                figures[f"answer-{status}"] += 1
            except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError) as e:
                figures[f"error-{type(e).__name__}"] += 1
            finally:
                abort(writer)
            if not await until(ctx.deadline, 0.02):
                return

    await asyncio.gather(*(one(i) for i in range(2)))


ATTACK_RUNNERS: dict[str, Callable[[Context, Figures], Awaitable[None]]] = {
    "pipelined-listing": attackPipelinedListing,
    "slow-listing": attackSlowListing,
    "history-bloat": attackHistoryBloat,
    "large-registration": attackLargeRegistration,
    "ws-ping": attackWsPing,
    "deep-wildcard": attackDeepWildcard,
    "binary-prefix": attackBinaryPrefix,
    "dots-since": attackDotsSince,
    "future-boot": attackFutureBoot,
    "fragment-flood": attackFragmentFlood,
    "answer-cache": attackAnswerCache,
    "slow-body": attackSlowBody,
    "bearer-guess": attackBearerGuess,
    "bad-handshake": attackBadHandshake,
}
assert list(ATTACK_RUNNERS) == list(ATTACKS)


# --------------------------------------------------------------------------
# The run


class Abuse:
    """
    One abuse run: the server, the legitimate load, the attacks, the
    figures.
    """

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.config = fanout.ServerConfig(self.rng)
        self.pinning = Pinning(enabled=not options.no_pin)
        self.outDir = Path(options.out_dir)
        self.server: Process | None = None
        self.logPath = self.outDir / "abuse-server.log"
        self.logOffset = 0
        self.server_options = serverOptions(options)

    def serverArgv(self) -> list[str]:
        tokenFile = self.outDir / "abuse-tokens"
        tokenFile.write_text(f"{TOKEN}\n")
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=",
            "artcast",
            "--client-port", f"tcp:{self.config.httpPort}:interface=127.0.0.1",
            *fanout.commonArgv(self.config),
            "--publish-token-file", str(tokenFile),
        ]
        for name, value in self.server_options.items():
            argv += [f"--{name}", f"{value:g}" if isinstance(value, float) else str(value)]
        return argv + list(self.options.server_arg)

    def startServer(self) -> Process:
        self.outDir.mkdir(parents=True, exist_ok=True)
        self.logOffset = self.logPath.stat().st_size if self.logPath.exists() else 0
        argv = self.pinning.server(self.serverArgv())
        self.server = Process("artcast", argv, self.logPath, cwd=ROOT, env=fanout.serverEnv())
        fanout.waitForHttp(self.server, self.config.httpPort, timeout=60)
        return self.server

    def stopServer(self) -> int | None:
        return self.server.stop(grace=15.0) if self.server is not None else None

    def logSize(self) -> int:
        try:
            return self.logPath.stat().st_size
        except OSError:
            return 0

    async def waitDatums(self, port: int, target: int, limit: float) -> dict[str, Any]:
        """
        Wait (bounded) until the server has published C{target} datums.
        """
        deadline = time.monotonic() + limit
        stats = await fetchStats(port)
        while stats["datums"] < target and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            stats = await fetchStats(port)
        return stats

    async def run(self) -> dict[str, Any]:
        options = self.options
        server = self.startServer()
        pid = server.pid
        port = self.config.httpPort
        log(f"server pid {pid} on 127.0.0.1:{port}, group {self.config.dataGroup}; "
            f"attacks: {', '.join(options.attacks) or 'none'}")
        self.pinning.pinSelf()
        ceiling, terms = options.rss_ceiling_mib, None
        if ceiling is None:
            ceiling, terms = rssCeiling(self.server_options)
        abortAt = options.rss_abort_mib or max(2 * ceiling, ceiling + 512)

        keys = [f"{LEGIT_PREFIX}{i:02d}" for i in range(options.keys)]
        legit = LegitSource(self.config.dataGroup, self.config.dataPort, keys)
        figures = {name: Figures() for name in options.attacks}

        # Set-up: every legitimate key's first datum (n = 0), and the store
        # that makes "..." costly.
        setUpStarted = time.monotonic()
        for key in keys + [LEGIT_BIG]:
            legit.send(key)
        ctx = Context(port, self.config.dataGroup, self.config.dataPort,
                      self.config.registerPort, legit, 0.0, options.quick, self.rng,
                      options.header_timeout, options.body_timeout)
        ctx.oldId = legit.firstIds[keys[0]]
        storeFigures = Figures()
        if "dots-since" in figures:
            await fillStore(ctx, storeFigures, *((300, 100) if options.quick else (1500, 100)))
        stats = await self.waitDatums(
            port, len(keys) + 1 + storeFigures["datagrams"], limit=30)
        targets = [
            (key, legit.firstIds[key])
            for key in keys + [LEGIT_BIG]
            for _ in range(options.clients_per_key)
        ]
        clientsProcess = ClientsProcess(
            port, targets, time.monotonic() + options.duration + options.catch_up + 60)
        await clientsProcess.ready()
        setUp = round(time.monotonic() - setUpStarted, 1)
        log(f"set-up: {stats['datums']} datums held, clients ready after {setUp} s")

        start = time.monotonic()
        deadline = start + options.duration
        ctx.deadline = deadline
        statsStart = await fetchStats(port)
        rssStart = fanout.rssKiB(pid)
        cpuStart = fanout.cpuSeconds(pid)
        selfStart = resource.getrusage(resource.RUSAGE_SELF)
        logStart = self.logSize()
        pacers = [Paced(options.rate, legit.step), Paced(1.0, legit.big)]
        pacerTasks = [asyncio.ensure_future(p.run()) for p in pacers]
        attackTasks = {
            name: asyncio.ensure_future(ATTACK_RUNNERS[name](ctx, figures[name]))
            for name in options.attacks
        }
        lags: list[float] = []
        rssSamples: list[tuple[float, int]] = [(0.0, rssStart)]
        died = False
        aborted = None
        nextReport = start + 10
        try:
            while time.monotonic() < deadline:
                before = time.monotonic()
                await asyncio.sleep(0.25)
                lags.append(time.monotonic() - before - 0.25)
                if not server.alive():
                    died = True
                    log("the server died")
                    break
                rss = fanout.rssKiB(pid)
                rssSamples.append((time.monotonic() - start, rss))
                if rss > abortAt * 1024:
                    aborted = rss
                    log(f"RSS {rss / 1024:.0f} MiB passed {abortAt:g} MiB: stopping early")
                    break
                if time.monotonic() >= nextReport:
                    nextReport += 10
                    log(f"{time.monotonic() - start:.0f} s: RSS {rss / 1024:.0f} MiB, "
                        f"{sum(legit.sent.values())} datums sent by the legitimate source")
            duration = time.monotonic() - start
        finally:
            ctx.deadline = time.monotonic()
            for pacer in pacers:
                pacer.running = False
            await asyncio.gather(*pacerTasks, return_exceptions=True)
            # The attacks end at the deadline by themselves; after an early
            # stop, those still waiting are cancelled.
            if attackTasks:
                await asyncio.wait(list(attackTasks.values()), timeout=5.0)
            for task in attackTasks.values():
                task.cancel()
            results = await asyncio.gather(*attackTasks.values(), return_exceptions=True)
        for name, result in zip(attackTasks, results):
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError):
                figures[name].failures.append(f"the attack itself failed: {result!r}")
        # Catch up: the legitimate clients get what is still on its way.
        clients = await clientsProcess.finish(legit.sent, options.catch_up)

        alive = not died and server.alive()
        statsEnd = None
        if alive:
            try:
                statsEnd = await fetchStats(port)
            except (OSError, TimeoutError, BenchError, ProtocolError,
                    asyncio.IncompleteReadError, ValueError) as e:
                log(f"the server did not answer /stats.json at the end: {e!r}")
        rssEnd = fanout.rssKiB(pid) if alive else None
        cpuEnd = fanout.cpuSeconds(pid) if alive else None
        selfEnd = resource.getrusage(resource.RUSAGE_SELF)
        legit.close()
        ctx.close()

        checks = [c.check(legit.sent[c.key]) for c in clients]
        latencies = [x for c in clients for x in c.latencies]
        peak = max(v for _, v in rssSamples + ([(0, rssEnd)] if rssEnd else []))
        dropped: dict[str, int] = {}
        rejected: dict[str, int] = {}
        if statsEnd is not None:
            for name, target in (("dropped", dropped), ("rejected", rejected)):
                for reason, count in (statsEnd.get(name) or {}).items():
                    diff = count - (statsStart.get(name) or {}).get(reason, 0)
                    if diff:
                        target[reason] = diff
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for c in clients:
            statuses.update({str(k): v for k, v in c.statuses.items()})
            errors.update(c.errors)
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": fanout.machine(),
            "settings": {
                "duration_s": options.duration,
                "quick": options.quick,
                "attacks": list(options.attacks),
                "keys": options.keys,
                "clients_per_key": options.clients_per_key,
                "rate": options.rate,
                "seed": options.seed,
                "pinning": self.pinning.note,
                "server_options": self.server_options,
                "server_args": list(options.server_arg),
            },
            "set_up_s": setUp,
            "duration_s": round(duration, 2),
            "legit": {
                "source": legit.src,
                "sent": {k: v for k, v in sorted(legit.sent.items())},
                "send_failed": legit.failed,
                "clients": len(clients),
                "lossless_clients": sum(1 for c in checks if c["lossless"]),
                "expected": sum(c["expected"] for c in checks),
                "delivered": sum(c["received"] for c in checks),
                "missing": sum(c["missing"] for c in checks),
                "duplicates": sum(c["duplicates"] for c in checks),
                "out_of_order": sum(c["out_of_order"] for c in checks),
                "gaps": sum(c["gaps"] for c in checks),
                "statuses": dict(sorted(statuses.items())),
                "errors": dict(sorted(errors.items())),
                "by_client": checks,
                "latency_s": {
                    "count": len(latencies),
                    "p50": rounded(percentile(latencies, 0.5)),
                    "p99": rounded(percentile(latencies, 0.99)),
                    "max": rounded(max(latencies) if latencies else None),
                    "limit_p99": LATENCY_P99_LIMIT,
                },
            },
            "rss": {
                "start_kib": rssStart,
                "end_kib": rssEnd,
                "peak_kib": peak,
                "ceiling_mib": ceiling,
                "ceiling_terms_mib": terms,
                "abort_mib": abortAt,
                "aborted_at_kib": aborted,
                "samples": [[round(t, 1), v] for t, v in rssSamples],
            },
            "attacks": {
                name: {"counts": dict(sorted(f.items())), "notes": f.notes,
                       "failures": f.failures}
                for name, f in figures.items()
            },
            "server": {
                "pid": pid,
                "died": not alive,
                "cpu_pct": round(100 * (cpuEnd - cpuStart) / duration, 1)
                if cpuEnd is not None and duration else None,
                "dropped": dict(sorted(dropped.items())),
                "rejected": dict(sorted(rejected.items())),
                "log_bytes": self.logSize() - logStart,
                "log_limit_bytes": LOG_BASE + int(LOG_PER_SECOND * duration),
                "stats_end": statsEnd,
                "answered_stats_at_end": statsEnd is not None,
            },
            "soak": {
                "cpu_pct": round(100 * ((selfEnd.ru_utime + selfEnd.ru_stime)
                                        - (selfStart.ru_utime + selfStart.ru_stime))
                                 / duration, 1) if duration else None,
                "loop_lag_p99_ms": rounded(1000 * (percentile(lags, 0.99) or 0.0)),
                "clients_loop_lag_p99_ms": clientsProcess.loopLag,
            },
        }


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def judge(document: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
    """
    The verdict: failures (a check did not hold) and warnings.

    @return: C{(passed, failures, warnings)}.
    """
    failures: list[str] = []
    warnings: list[str] = []
    if document["server"]["died"]:
        failures.append("the server died")
    elif not document["server"].get("answered_stats_at_end", True):
        failures.append("the server did not answer /stats.json within 10 s at the end")
    legit = document["legit"]
    fives = sum(v for k, v in legit["statuses"].items() if k.startswith("5"))
    if fives:
        failures.append(f"{fives} answers with 5xx to the legitimate clients")
    if legit["lossless_clients"] < legit["clients"]:
        failures.append(
            f"legitimate clients lost datums: {legit['clients'] - legit['lossless_clients']} "
            f"of {legit['clients']} clients; {legit['missing']} missing, "
            f"{legit['duplicates']} duplicates, {legit['out_of_order']} out of order, "
            f"{legit['gaps']} gaps"
        )
    latency = legit["latency_s"]
    if latency["p99"] is None:
        failures.append("no datum reached the legitimate clients")
    elif latency["p99"] >= LATENCY_P99_LIMIT:
        failures.append(f"latency p99 {latency['p99']:.2f} s (limit {LATENCY_P99_LIMIT:g} s)")
    rss = document["rss"]
    if rss["aborted_at_kib"] is not None:
        failures.append(
            f"RSS reached {rss['aborted_at_kib'] / 1024:.0f} MiB, past the abort limit "
            f"{rss['abort_mib']:g} MiB: stopped early"
        )
    elif rss["peak_kib"] > rss["ceiling_mib"] * 1024:
        failures.append(
            f"RSS peak {rss['peak_kib'] / 1024:.0f} MiB over the ceiling "
            f"{rss['ceiling_mib']:g} MiB"
        )
    for name, attack in document["attacks"].items():
        for failure in attack["failures"]:
            failures.append(f"{name}: {failure}")
    server = document["server"]
    if server["log_bytes"] > server["log_limit_bytes"]:
        failures.append(
            f"the server logged {server['log_bytes'] / 1024:.0f} KiB "
            f"(more than {server['log_limit_bytes'] / 1024:.0f} KiB)"
        )
    log_ = document.get("server_log") or {}
    if log_.get("tracebacks") or log_.get("unhandled"):
        warnings.append(
            f"server log: {log_['tracebacks']} tracebacks, {log_['unhandled']} unhandled"
        )
    return not failures, failures, warnings


def render(document: dict[str, Any]) -> str:
    """
    The summary printed at the end.
    """
    legit = document["legit"]
    latency = legit["latency_s"]
    rss = document["rss"]
    server = document["server"]
    settings = document["settings"]

    def mib(kib: int | None) -> str:
        return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"

    def ms(seconds: float | None) -> str:
        return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"

    terms = rss["ceiling_terms_mib"]
    formula = (" = " + " + ".join(f"{v:g} ({k})" for k, v in terms.items())) if terms else \
        " (--rss-ceiling-mib)"
    lines = [
        f"Artcast abuse soak, {document['date']}, {document['machine']['cpu']}, "
        f"{document['machine']['cpus']} CPUs",
        "attacks: " + (", ".join(settings["attacks"]) or "none"),
        f"duration: {document['duration_s']:.1f} s (after {document['set_up_s']} s of set-up)",
        f"legit: {legit['clients']} since-clients on {len(legit['sent'])} keys; "
        f"{legit['delivered']} of {legit['expected']} datums delivered, "
        f"{legit['missing']} missing, {legit['duplicates']} duplicates, "
        f"{legit['out_of_order']} out of order, {legit['gaps']} gaps; "
        f"{legit['lossless_clients']} clients lossless; errors "
        + (", ".join(f"{k} {v}" for k, v in legit["errors"].items()) or "none"),
        f"latency: p50 {ms(latency['p50'])}, p99 {ms(latency['p99'])}, max {ms(latency['max'])} "
        f"over {latency['count']} deliveries (p99 limit {ms(latency['limit_p99'])})",
        f"rss: start {mib(rss['start_kib'])}, peak {mib(rss['peak_kib'])}, end "
        f"{mib(rss['end_kib'])}; ceiling {rss['ceiling_mib']:g} MiB{formula}",
        f"server: cpu {server['cpu_pct']}%, logged {server['log_bytes'] / 1024:.0f} KiB; "
        "dropped " + (", ".join(f"{k} {v}" for k, v in server["dropped"].items()) or "none")
        + "; rejected "
        + (", ".join(f"{k} {v}" for k, v in server["rejected"].items()) or "none"),
        f"soak: cpu {document['soak']['cpu_pct']}% (the attacks' process), event-loop lag "
        f"p99 {document['soak']['loop_lag_p99_ms']} ms (attacks), "
        f"{document['soak']['clients_loop_lag_p99_ms']} ms (legitimate clients)",
    ]
    for name, attack in document["attacks"].items():
        counts = ", ".join(f"{k} {v}" for k, v in attack["counts"].items()) or "nothing"
        notes = "".join(f"; {k} {v}" for k, v in attack["notes"].items())
        lines.append(f"  {name}: {counts}{notes}")
    verdict = document["verdict"]
    line = "verdict: PASS" if verdict["passed"] else \
        "verdict: FAIL: " + "; ".join(verdict["failures"])
    if verdict["warnings"]:
        line += " (warnings: " + "; ".join(verdict["warnings"]) + ")"
    lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line


def parseAttacks(text: str) -> list[str]:
    """
    Parse C{--attacks}: names separated by commas, C{all} or C{none}.

    @raise argparse.ArgumentTypeError: for an unknown name.
    """
    text = text.strip()
    if text == "all":
        return list(ATTACKS)
    if text in ("none", ""):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in ATTACKS:
            raise argparse.ArgumentTypeError(
                f"unknown attack {name!r} (known: {', '.join(ATTACKS)})")
    return [name for name in ATTACKS if name in names]


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="soak.py --abuse",
        description="The abuse soak: the attacks of issue 9 mixed with legitimate "
        "since-clients against a real twistd artcast.",
    )
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of attack (default 600; --quick 20)")
    parser.add_argument("--quick", action="store_true",
                        help="short mode for CI: 20 s, smaller attacks")
    parser.add_argument("--attacks", type=parseAttacks, default=list(ATTACKS),
                        help="comma-separated attacks, 'all' (default) or 'none': "
                        + ", ".join(ATTACKS))
    parser.add_argument("--keys", type=int, default=8,
                        help="legitimate keys (default 8), besides legit/big")
    parser.add_argument("--clients-per-key", type=int, default=2,
                        help="legitimate since-clients per key (default 2)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="legitimate datums per second over the keys (default 20)")
    parser.add_argument("--max-clients", type=int, default=5000,
                        help="the server's --max-clients (default 5000)")
    parser.add_argument("--max-keys", type=int, default=2000,
                        help="the server's --max-keys (default 2000)")
    parser.add_argument("--max-store-bytes", type=int, default=SOAK_MAX_STORE_BYTES,
                        help="the server's --max-store-bytes (default 32 MiB)")
    parser.add_argument("--max-output-total", type=int, default=SOAK_MAX_OUTPUT_TOTAL,
                        help="the server's --max-output-total (default 64 MiB)")
    parser.add_argument("--header-timeout", type=float, default=3.0,
                        help="the server's --header-timeout (default 3)")
    parser.add_argument("--idle-timeout", type=float, default=6.0,
                        help="the server's --idle-timeout (default 6)")
    parser.add_argument("--body-timeout", type=float, default=5.0,
                        help="the server's --body-timeout (default 5)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="another option for twistd artcast (repeatable)")
    parser.add_argument("--rss-ceiling-mib", type=float, default=None,
                        help="the RSS ceiling in MiB (default: from the server's options, "
                        "see rssCeiling)")
    parser.add_argument("--rss-abort-mib", type=float, default=None,
                        help="stop early past this RSS (default: twice the ceiling, "
                        "at least ceiling + 512)")
    parser.add_argument("--catch-up", type=float, default=5.0,
                        help="seconds the legitimate clients get after the attacks stop")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--json", dest="jsonPath", default=None,
                        help="write every figure to this file")
    parser.add_argument("--out-dir", default=str(BENCH / "out"),
                        help="where the server's log goes (default bench/out)")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    if options.duration is None:
        options.duration = 20.0 if options.quick else 600.0
    if options.seed is None:
        options.seed = random.randrange(2**31)
    if options.duration <= 0:
        parser.error("--duration must be positive")
    if not 1 <= options.keys <= 99 or options.clients_per_key < 1 or options.rate <= 0:
        parser.error("--keys is 1 to 99, --clients-per-key at least 1, --rate positive")
    return options


def onSigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parseArgs(argv)
    signal.signal(signal.SIGTERM, onSigterm)
    abuse = Abuse(options)
    try:
        fanout.raiseFileLimit(8192)
        document = asyncio.run(abuse.run())
        document["server"]["exit_code"] = abuse.stopServer()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Process.stopAll()
    document["server_log"] = serverLogProblems(abuse.logPath, abuse.logOffset)
    passed, failures, warnings = judge(document)
    document["verdict"] = {"passed": passed, "failures": failures, "warnings": warnings}
    sys.stdout.write(render(document))
    sys.stdout.flush()
    if options.jsonPath:
        with open(options.jsonPath, "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
