# -*- test-case-name: tests.test_soak -*-
"""
The soak test: a real C{twistd artcast} under churn, for a bounded time.

While a steady version 2 source sends datums to a few hundred keys, a
garbage sender throws bad datagrams at both groups (random bytes, truncated
JSON, wrong shapes, huge keys, control characters, datagrams of the largest
size, fragments that never complete, replays) and sprays valid datums on
thousands of distinct keys (so that C{--max-keys} evicts), thousands of
client connections churn: each connects, asks for something, and either
waits for the answer or goes away.  The kinds of cycle (see L{KINDS}):

  - C{poll}, C{timeout}, C{since}, C{latest}, C{wildcard}, C{http10},
    C{keepalive}, C{list}: ordinary requests whose answers are read and
    checked (long polls, C{?timeout=}, C{?since=<id>}, C{since=latest},
    C{*} and C{...} patterns, HTTP/1.0, several polls on one keep-alive
    connection, the artcast list);
  - C{rst}, C{fin}: a long poll abandoned mid-wait, with a TCP reset
    (C{SO_LINGER} 0) or a plain close;
  - C{slowloris}: half a request head, then either vanishing or trickling
    bytes until the server's C{--header-timeout} closes the connection;
  - C{stream}: a Server-Sent Events or NDJSON stream read for a while and
    cut (only if the server offers streams);
  - C{hostile}: requests the server must refuse with a 4xx (control
    characters, a huge key, nothing acceptable, a bad method).

Before measuring, a warm-up fills every steady key's history and the key
store up to C{--max-keys}, and runs the churn for a few seconds, so that
the resident memory measured at the start is the steady state: what grows
after that is a leak, not a cache filling.

At the end it prints the duration, the cycles by kind, the answers by
status, the datums sent and delivered, the client errors by kind, the
datagrams the server dropped by reason (from C{/stats.json}), the server's
resident memory at the start and the end, and a verdict.  It exits 1 if the
server died, answered with a 5xx, or grew by more than C{--rss-bound} MiB.

All traffic stays on this machine: HTTP to 127.0.0.1, multicast to a random
group in 239.255.0.0/16 sent with C{IP_MULTICAST_IF} 127.0.0.1 and TTL 0,
the server joining on 127.0.0.1.  The server is stopped by its PID.

Run from the repository root::

    python bench/soak.py                   # 60 s, 1000 concurrent clients
    python bench/soak.py --quick           # 10 s, 200 clients (CI)
    python bench/soak.py --duration 300 --cycles 100000 --json soak.json

With C{--abuse} it runs the abuse soak instead (L{bench.abuse}): the attacks
of issue 9 mixed with legitimate since-clients, for 10 minutes (C{--quick}:
20 s), checking that those clients lose nothing, that their latency stays
low and that the server's memory stays under a ceiling::

    python bench/soak.py --abuse --quick --json abuse.json
    python bench/soak.py --abuse --help

See docs/performance.md, section Soak, and docs/operations.md, section
"The abuse soak".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import json
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Sequence, cast

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from artcast.source import Source, multicastSocket  # noqa: E402
from artcast.server.defaults import DEFAULT_MAX_VALUE_SIZE  # noqa: E402
from bench import fanout  # noqa: E402
from bench.fanout import BenchError, Pinning, Process  # noqa: E402

#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507

#: Kinds of client cycle and their default weights.
KINDS: dict[str, float] = {
    "poll": 18,
    "timeout": 8,
    "since": 14,
    "latest": 5,
    "wildcard": 8,
    "http10": 5,
    "keepalive": 5,
    "list": 1,
    "rst": 10,
    "fin": 6,
    "slowloris": 6,
    "stream": 6,
    "hostile": 8,
}

#: Kinds whose answers count as datums delivered (a 200 carries a value).
VALUE_KINDS = frozenset(
    ["poll", "timeout", "since", "latest", "wildcard", "http10", "keepalive"]
)

#: Bounds, in seconds, on one connect and on one whole cycle.
CONNECT_LIMIT = 10.0
CYCLE_LIMIT = 30.0

#: The server closes a slow head at C{--header-timeout}, and aborts it
#: C{artcast.server.connections.ABORT_DELAY} (2 s) later; the slow client waits
#: this much longer before calling it an error.
SLOWLORIS_SLACK = 5.0

#: Largest response head and largest body read from the server.
HEAD_LIMIT = 64 * 1024
BODY_LIMIT = 16 * 1024 * 1024

#: Datums per second while the warm-up fills histories and the key store.
PREFILL_RATE = 4000.0

STEADY_PREFIX = "soak/k/"
SPRAY_PREFIX = "soak/spray/"


def log(message: str) -> None:
    """
    Progress goes to stderr; the summary to stdout.
    """
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Counting


class Tally:
    """
    What the clients saw during one phase (warm-up or measured run).

    @ivar cycles: completed connect/ask/disconnect cycles, by kind.
    @ivar statuses: complete HTTP answers, by status code.
    @ivar errors: failures, by kind (C{refused}, C{reset}, C{timeout},
        C{5xx}, ...).
    @ivar delivered: 200 answers carrying a datum, plus stream messages.
    """

    def __init__(self) -> None:
        self.cycles: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.delivered = 0
        self.streamMessages = 0
        self.gaps = 0
        self.errorExamples: dict[str, str] = {}

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if kind not in self.errorExamples and detail:
            self.errorExamples[kind] = detail[:300]

    def answer(self, kind: str, response: Response) -> None:
        """
        Count one complete answer; a 5xx is also an error.
        """
        self.statuses[response.status] += 1
        if response.status >= 500:
            self.error("5xx", f"{kind}: {response.status} {response.body[:200]!r}")
        elif kind in VALUE_KINDS and response.status == 200:
            self.delivered += 1
            if response.headers.get("artcast-gap") == "1":
                self.gaps += 1

    def stream(self, messages: int) -> None:
        """
        Count the datums one stream delivered.
        """
        self.streamMessages += messages
        self.delivered += messages

    def summary(self) -> dict[str, Any]:
        return {
            "cycles": sum(self.cycles.values()),
            "cycles_by_kind": dict(sorted(self.cycles.items())),
            "answers": sum(self.statuses.values()),
            "answers_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "outcomes": dict(sorted(self.outcomes.items())),
            "delivered": self.delivered,
            "stream_messages": self.streamMessages,
            "gap_answers": self.gaps,
            "errors": dict(sorted(self.errors.items())),
            "error_examples": dict(sorted(self.errorExamples.items())),
        }


class IdBook:
    """
    The ids the steady source gave its recent datums, for C{?since=}.
    """

    def __init__(self, size: int = 2000) -> None:
        self.recent: deque[tuple[str, str]] = deque(maxlen=size)
        self.first: str | None = None

    def add(self, key: str, datumId: str) -> None:
        if self.first is None:
            self.first = datumId
        self.recent.append((key, datumId))

    def pick(self, rng: random.Random) -> tuple[str, str] | None:
        if not self.recent:
            return None
        return self.recent[rng.randrange(len(self.recent))]


# --------------------------------------------------------------------------
# HTTP over asyncio streams


class ProtocolError(Exception):
    """
    The server's answer is not HTTP as expected.
    """


class Response:
    """
    One HTTP answer: status, headers (lower-case names) and body.
    """

    def __init__(self, version: str, status: int, headers: dict[str, str], body: bytes) -> None:
        self.version = version
        self.status = status
        self.headers = headers
        self.body = body


def parseHead(head: bytes) -> tuple[str, int, dict[str, str]]:
    """
    Parse a response head (status line and header lines, ending with an
    empty line).

    @raise ProtocolError: if it is not an HTTP/1.x response head.
    """
    try:
        text = head.decode("iso-8859-1")
    except UnicodeDecodeError as e:  # pragma: no cover (latin-1 decodes all)
        raise ProtocolError(str(e))
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], int(parts[1]), headers


async def readHead(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError("response head too long")
    return parseHead(head)


async def readResponse(reader: asyncio.StreamReader, method: str = "GET") -> Response:
    """
    Read one whole answer: by C{Content-Length}, chunked, or to the end of
    the connection.
    """
    version, status, headers = await readHead(reader)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(version, status, headers, b"")
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > BODY_LIMIT:
            raise ProtocolError(f"body of {length} bytes")
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        body = await reader.read(BODY_LIMIT)
    return Response(version, status, headers, body)


def request(
    path: str,
    accept: str | None = None,
    version: str = "HTTP/1.1",
    close: bool = False,
    method: str = "GET",
    extra: Sequence[str] = (),
) -> bytes:
    lines = [f"{method} {path} {version}"]
    if version == "HTTP/1.1" or random.random() < 0.5:
        lines.append("Host: 127.0.0.1")
    if accept is not None:
        lines.append(f"Accept: {accept}")
    if close:
        lines.append("Connection: close")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reset(writer: asyncio.StreamWriter) -> None:
    """
    Close with a TCP reset: C{SO_LINGER} on with a zero timeout, then abort.
    """
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


# --------------------------------------------------------------------------
# The churning clients


class Churn:
    """
    The client side: C{concurrency} workers, each running one cycle after
    another until told to stop.
    """

    def __init__(
        self,
        port: int,
        keys: Sequence[str],
        book: IdBook,
        weights: dict[str, float],
        concurrency: int,
        headerTimeout: float,
        streams: bool,
        seed: int,
    ) -> None:
        self.port = port
        self.keys = list(keys)
        self.book = book
        self.kinds = [k for k, w in weights.items() if w > 0 and (streams or k != "stream")]
        self.weights = [weights[k] for k in self.kinds]
        self.concurrency = concurrency
        self.headerTimeout = headerTimeout
        self.seed = seed
        self.tally = Tally()
        self.running = False
        self.cycleBudget: int | None = None
        self.budgetReached = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    # Running

    def start(self) -> None:
        self.running = True
        for index in range(self.concurrency):
            self.tasks.append(asyncio.ensure_future(self.worker(index)))

    async def stop(self) -> None:
        """
        Stop every worker; cycles still in flight are cut (their sockets
        aborted) and not counted.
        """
        self.running = False
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    def measure(self, budget: int | None) -> Tally:
        """
        Start a new tally; set C{budgetReached} after C{budget} cycles.

        @return: the tally of the phase that ended.
        """
        old, self.tally = self.tally, Tally()
        self.cycleBudget = budget
        return old

    async def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        # Ramp up over about a second per thousand clients.
        await asyncio.sleep(index / 1000.0)
        # Everything is counted in the tally of the moment it happens, as
        # the server counts: a cycle begun in the warm-up and ended in the
        # measured run counts in the run.
        tally = cast(Tally, _Current(self))
        while self.running:
            kind = rng.choices(self.kinds, self.weights)[0]
            try:
                async with asyncio.timeout(CYCLE_LIMIT):
                    await self.cycle(kind, rng, tally)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                tally.error("timeout", f"{kind}: no answer within {CYCLE_LIMIT:g} s")
            except ConnectionRefusedError as e:
                tally.error("refused", f"{kind}: {e}")
                await asyncio.sleep(0.1)
            except (ConnectionResetError, BrokenPipeError) as e:
                tally.error("reset", f"{kind}: {e!r}")
            except asyncio.IncompleteReadError as e:
                tally.error("eof", f"{kind}: closed after {len(e.partial)} bytes")
            except CycleError as e:
                tally.error(e.kind, f"{kind}: {e.detail}")
            except ProtocolError as e:
                tally.error("bad-answer", f"{kind}: {e}")
            except UnexpectedStatus as e:
                tally.error("unexpected-status", f"{kind}: {e}")
            except OSError as e:
                name = errno.errorcode.get(e.errno or 0, "oserror")
                tally.error(f"os-{name}", f"{kind}: {e}")
                await asyncio.sleep(0.1)
            except Exception as e:  # a bug in the soak itself: say so
                tally.error("soak-bug", f"{kind}: {e!r}")
            else:
                tally.cycles[kind] += 1
                if self.cycleBudget is not None and not self.budgetReached.is_set():
                    if sum(self.tally.cycles.values()) >= self.cycleBudget:
                        self.budgetReached.set()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(CONNECT_LIMIT):
                return await asyncio.open_connection(
                    "127.0.0.1", self.port, limit=HEAD_LIMIT
                )
        except TimeoutError:
            raise CycleError("connect-timeout", f"no connection in {CONNECT_LIMIT:g} s")

    async def cycle(self, kind: str, rng: random.Random, tally: Tally) -> None:
        """
        One cycle: connect, run the kind's exchange, make sure the socket is
        closed.

        @raise CycleError: and others, for the failures the worker counts.
        """
        reader, writer = await self.connect()
        try:
            await getattr(self, "cycle_" + kind)(reader, writer, rng, tally)
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    def key(self, rng: random.Random) -> str:
        return self.keys[rng.randrange(len(self.keys))]

    def accept(self, rng: random.Random) -> str | None:
        return rng.choice(
            [None, None, "application/json", "*/*", "text/plain",
             "text/plain;q=0.5, application/json"]
        )

    async def ask(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        kind: str,
        tally: Tally,
        data: bytes,
        expect: Sequence[int] = (200,),
        method: str = "GET",
    ) -> Response:
        writer.write(data)
        response = await readResponse(reader, method)
        tally.answer(kind, response)
        if response.status < 500 and response.status not in expect:
            raise UnexpectedStatus(f"{response.status} for {data[:120]!r}")
        return response

    async def once(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
        tally: Tally,
        kind: str,
        path: str,
        expect: Sequence[int] = (200,),
        close: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        """
        One request for C{path} (with a random C{Accept}), its answer read
        and checked, and the connection closed.
        """
        data = request(path, self.accept(rng), close=close, extra=extra)
        await self.ask(reader, writer, kind, tally, data, expect)
        self.close(writer, rng)

    @staticmethod
    def close(writer: asyncio.StreamWriter, rng: random.Random, resets: float = 0.2) -> None:
        """
        Close the connection: with a reset in a share C{resets} of cases,
        else plainly (FIN).
        """
        if rng.random() < resets:
            reset(writer)
        else:
            writer.close()

    # The kinds of cycle

    async def cycle_poll(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        await self.once(
            reader, writer, rng, tally, "poll", f"/artcasts/{self.key(rng)}",
            close=rng.random() < 0.5,
        )

    async def cycle_timeout(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        wait = rng.choice(["0.2", "0.5", "1", "2"])
        await self.once(
            reader, writer, rng, tally, "timeout",
            f"/artcasts/{self.key(rng)}?timeout={wait}", (200, 204),
        )

    async def cycle_since(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        picked = self.book.pick(rng)
        roll = rng.random()
        if picked is None or roll < 0.05:
            # An id from nobody the server knows: treated as too old.
            key, since = self.key(rng), "nobody.1.1"
        elif roll < 0.15 and self.book.first is not None:
            # The source's very first datum: long gone from the history.
            key, since = picked[0], self.book.first
        else:
            key, since = picked
        if rng.random() < 0.3:
            await self.once(
                reader, writer, rng, tally, "since", f"/artcasts/{key}",
                extra=[f'If-None-Match: W/"{since}"'],
            )
        else:
            await self.once(reader, writer, rng, tally, "since", f"/artcasts/{key}?since={since}")

    async def cycle_latest(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        await self.once(
            reader, writer, rng, tally, "latest", f"/artcasts/{self.key(rng)}?since=latest"
        )

    async def cycle_wildcard(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        pattern = rng.choice(["soak/k/*", "soak/...", "soak/*/*", "*/k/*"])
        await self.once(
            reader, writer, rng, tally, "wildcard", f"/artcasts/{pattern}?timeout=5",
            (200, 204),
        )

    async def cycle_http10(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        data = request(f"/artcasts/{self.key(rng)}", self.accept(rng), version="HTTP/1.0")
        await self.ask(reader, writer, "http10", tally, data)
        # HTTP/1.0 without keep-alive: the server closes.
        rest = await reader.read(1)
        if rest:
            raise ProtocolError("bytes after an HTTP/1.0 answer")
        writer.close()

    async def cycle_keepalive(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        key = self.key(rng)
        response = await self.ask(
            reader, writer, "keepalive", tally,
            request(f"/artcasts/{key}?since=latest", self.accept(rng)),
        )
        for _ in range(rng.randint(1, 3)):
            since = response.headers.get("artcast-id")
            if not since:
                raise ProtocolError("a 200 answer without Artcast-Id")
            response = await self.ask(
                reader, writer, "keepalive", tally,
                request(f"/artcasts/{key}?since={since}", self.accept(rng)),
            )
        self.close(writer, rng)

    async def cycle_list(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        accept = rng.choice(["application/json", "text/html", None])
        await self.ask(reader, writer, "list", tally, request("/artcasts", accept))
        self.close(writer, rng)

    async def abandon(
        self, writer: Any, rng: random.Random, tally: Tally, kind: str, rst: bool
    ) -> None:
        """
        Ask for a long poll on a key, wait a moment, and go away without
        reading the answer.
        """
        path = f"/artcasts/{self.key(rng)}"
        if rng.random() < 0.3:
            path = rng.choice(["/artcasts/soak/k/*", "/artcasts/soak/k/..."])
        writer.write(request(path, self.accept(rng)))
        await writer.drain()
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        self.close(writer, rng, resets=1.0 if rst else 0.0)
        tally.outcomes[f"{kind}-abandoned"] += 1

    async def cycle_rst(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        await self.abandon(writer, rng, tally, "rst", rst=True)

    async def cycle_fin(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        await self.abandon(writer, rng, tally, "fin", rst=False)

    async def cycle_slowloris(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        head = request(f"/artcasts/{self.key(rng)}", "application/json")
        cut = rng.randint(1, len(head) - 3)
        writer.write(head[:cut])
        await writer.drain()
        if rng.random() < 0.6:
            # Vanish.
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            self.close(writer, rng, resets=0.5)
            tally.outcomes["slowloris-vanished"] += 1
            return
        # Trickle the rest of the head a byte at a time, slower than the
        # server's head deadline allows, and wait to be cut off.
        deadline = time.monotonic() + self.headerTimeout + SLOWLORIS_SLACK
        pause = self.headerTimeout / max(1, len(head) - cut - 4)
        pause = max(0.2, min(1.0, pause * 4))
        received = b""
        position = cut
        while time.monotonic() < deadline:
            if position < len(head) - 4 and not writer.transport.is_closing():
                try:
                    writer.write(head[position : position + 1])
                except (ConnectionError, RuntimeError):
                    pass
                position += 1
            try:
                async with asyncio.timeout(pause):
                    chunk = await reader.read(4096)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                tally.outcomes["slowloris-cut-reset"] += 1
                return
            if not chunk:
                if received.startswith(b"HTTP/1.1 408") or received.startswith(b"HTTP/1.0 408"):
                    tally.statuses[408] += 1
                    tally.outcomes["slowloris-cut-408"] += 1
                elif received:
                    raise ProtocolError(f"slow head answered {received[:60]!r}")
                else:
                    tally.outcomes["slowloris-cut-silent"] += 1
                writer.close()
                return
            received += chunk
        raise CycleError(
            "slowloris-not-cut",
            f"connection open {self.headerTimeout + SLOWLORIS_SLACK:g} s",
        )

    async def cycle_stream(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        accept = rng.choice(["text/event-stream", "application/x-ndjson"])
        path = f"/artcasts/{self.key(rng) if rng.random() < 0.7 else 'soak/k/*'}"
        picked = self.book.pick(rng)
        if picked is not None and rng.random() < 0.3:
            path = f"/artcasts/{picked[0]}?since={picked[1]}"
        writer.write(request(path, accept))
        version, status, headers = await readHead(reader)
        tally.statuses[status] += 1
        if status >= 500:
            tally.error("5xx", f"stream: {status} for {accept}")
            return
        if status != 200:
            raise UnexpectedStatus(f"{status} for a {accept} stream")
        marker = b"id:" if accept == "text/event-stream" else b'"id":'
        buffered = b""
        messages = 0
        end = time.monotonic() + rng.uniform(0.5, 3.0)
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    chunk = await reader.read(65536)
            except TimeoutError:
                break
            if not chunk:
                raise asyncio.IncompleteReadError(buffered, None)
            buffered += chunk
            lines = buffered.split(b"\n")
            buffered = lines.pop()
            if accept == "text/event-stream":
                messages += sum(1 for line in lines if line.startswith(marker))
            else:
                messages += sum(1 for line in lines if marker in line)
        tally.stream(messages)
        tally.outcomes["stream-cut"] += 1
        self.close(writer, rng, resets=0.5)

    async def cycle_hostile(
        self, reader: Any, writer: Any, rng: random.Random, tally: Tally
    ) -> None:
        choice = rng.randrange(7)
        method = "GET"
        if choice == 0:
            data = request("/artcasts/soak/%00k", None)
        elif choice == 1:
            data = request("/artcasts/" + "x" * rng.randint(300, 4000), None)
        elif choice == 2:
            data = request(f"/artcasts/{self.key(rng)}", "image/png")
        elif choice == 3:
            data = request(f"/artcasts/{self.key(rng)}/../x", None)
        elif choice == 4:
            data = request("/artcasts/soak//k", None)
        elif choice == 5:
            data = request(f"/artcasts/{self.key(rng)}?since=%01bad%0A", None)
        else:
            method = "HEAD"
            data = request(f"/artcasts/{self.key(rng)}?timeout=0.2", None, method="HEAD")
        writer.write(data)
        response = await readResponse(reader, method)
        tally.answer("hostile", response)
        if response.status >= 500:
            return
        tally.outcomes[f"hostile-{response.status}"] += 1
        self.close(writer, rng)


class _Current:
    """
    Stands for whichever L{Tally} a L{Churn} holds at the moment.
    """

    def __init__(self, churn: Churn) -> None:
        self._churn = churn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._churn.tally, name)


class CycleError(Exception):
    """
    A cycle failed in a way counted under C{kind}.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


class UnexpectedStatus(Exception):
    """
    A status that this kind of request should not get (not a 5xx, which is
    counted on its own).
    """


async def fetch(port: int, path: str, accept: str | None = None, limit: float = 10.0) -> Response:
    """
    One request on a new connection, bounded in time.
    """
    async with asyncio.timeout(limit):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=HEAD_LIMIT)
        try:
            writer.write(request(path, accept, close=True))
            return await readResponse(reader)
        finally:
            writer.transport.abort()


async def fetchStats(port: int) -> dict[str, Any]:
    response = await fetch(port, "/stats.json")
    if response.status != 200:
        raise BenchError(f"/stats.json answered {response.status}")
    return json.loads(response.body)


async def streamsOffered(port: int) -> bool:
    """
    Whether the server answers C{Accept: text/event-stream} with a stream
    (a 406 means it has no streams).
    """
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request(f"/artcasts/{STEADY_PREFIX}0", "text/event-stream"))
                _, status, headers = await readHead(reader)
            finally:
                writer.transport.abort()
    except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError):
        return False
    return status == 200 and headers.get("content-type", "").startswith("text/event-stream")


# --------------------------------------------------------------------------
# The senders


def steadyKeys(count: int) -> list[str]:
    return [f"{STEADY_PREFIX}{i:04d}" for i in range(count)]


class Paced:
    """
    Call C{step} C{rate} times a second, in ticks, for as long as running;
    after a stall it skips ahead instead of bursting.
    """

    tick = 0.02

    def __init__(self, rate: float, step: Callable[[], None]) -> None:
        self.rate = rate
        self.step = step
        self.count = 0
        self.running = False

    async def run(self, limit: int | None = None) -> None:
        self.running = True
        start = time.monotonic()
        done = 0
        while self.running and (limit is None or done < limit):
            due = int((time.monotonic() - start) * self.rate)
            if due - done > self.rate:  # more than a second behind
                done = due - int(self.rate * self.tick)
            while done < due and (limit is None or done < limit):
                self.step()
                done += 1
                self.count += 1
            await asyncio.sleep(self.tick)
        self.running = False


class SteadySource:
    """
    A version 2 source (L{artcast.source.Source}, TTL 0, interface
    127.0.0.1) sending to the steady keys in turn, so every key gets a datum
    every C{len(keys) / rate} seconds.
    """

    def __init__(self, group: str, dataPort: int, registerPort: int, keys: Sequence[str],
                 book: IdBook) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self.source = Source(
            src=f"soak-{os.getpid()}",
            groups=[(group, dataPort)],
            registerGroups=[(group, registerPort)],
            ttl=0,
            interface="127.0.0.1",
            sock=sock,
        )
        self.keys = list(keys)
        self.book = book
        self.sent = 0
        self.failed = 0
        self.index = 0
        for key in self.keys[:20]:
            self.source.register(key, description=f"soak key {key}", provenance="bench/soak.py")

    def step(self) -> None:
        key = self.keys[self.index % len(self.keys)]
        self.index += 1
        value = {"n": self.index, "t": round(time.time(), 3), "pad": "x" * (self.index % 97)}
        try:
            datumId = self.source.send(key, value)
        except OSError:
            self.failed += 1
            return
        self.sent += 1
        self.book.add(key, datumId)

    def close(self) -> None:
        self.source.close()


class GarbageSender:
    """
    Bad datagrams of every kind to the data and register groups, and valid
    datums sprayed on ever new keys (C{step} sends one bad datagram,
    C{spray} one spray datum).
    """

    def __init__(
        self, group: str, dataPort: int, registerPort: int, seed: int,
        maxValueSize: int = DEFAULT_MAX_VALUE_SIZE,
    ) -> None:
        self.maxValueSize = maxValueSize
        self.sock = multicastSocket(0, "127.0.0.1")
        self.sock.setblocking(False)
        self.data = (group, dataPort)
        self.register = (group, registerPort)
        self.rng = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self.failed = 0
        self.sprayed = 0
        self.src = f"soak-junk-{os.getpid()}"
        self.badSrc = f"soak-bad-{os.getpid()}"
        self.boot = int(time.time() * 1000)
        self.seq = 0
        self.valid = 0
        self.replays: deque[bytes] = deque(maxlen=50)

    def sendto(self, datagram: bytes, address: tuple[str, int]) -> bool:
        try:
            self.sock.sendto(datagram, address)
        except OSError:
            self.failed += 1
            return False
        return True

    def stamp(self, **members: Any) -> dict[str, Any]:
        """
        A version 2 stamp for a datagram the server drops before its source
        tracker sees it: another source name and a random C{seq}, so that
        the server's count of missed datums stays that of real losses.
        """
        document: dict[str, Any] = {
            "v": 2, "src": self.badSrc, "boot": self.boot,
            "seq": self.rng.randint(1, 2**40), "t": round(time.time(), 3),
        }
        document.update(members)
        return document

    def bigDatum(self) -> bytes:
        """
        A valid version 1 datum on C{soak/big} that fills a whole datagram.
        """
        head = b'["soak/big", "'
        return head + b"z" * (MAX_DATAGRAM - len(head) - 2) + b'"]'

    def validDatum(self) -> bytes:
        """
        A valid version 2 datum, next in its source's sequence.
        """
        self.seq += 1
        return json.dumps({
            "v": 2, "src": self.src, "boot": self.boot, "seq": self.seq,
            "t": round(time.time(), 3), "key": "soak/junk", "value": {"a": [1, 2, 3]},
        }).encode()

    def datagram(self) -> tuple[str, bytes, bool]:
        """
        One bad datagram: its kind, its bytes, and whether it goes to the
        register group.
        """
        rng = self.rng
        kind = rng.choices(GARBAGE_KINDS, GARBAGE_WEIGHTS)[0]
        toRegister = rng.random() < 0.2
        valid = json.dumps(self.stamp(key="soak/junk", value={"a": [1, 2, 3]})).encode()
        if kind == "random-bytes":
            body = rng.randbytes(rng.randint(0, 600))
        elif kind == "truncated-json":
            body = valid[: rng.randint(1, len(valid) - 1)]
        elif kind == "not-utf8":
            body = b'["soak/bad", "\xff\xfe\xc0\x80"]'
        elif kind == "wrong-shape":
            body = json.dumps(rng.choice([
                ["soak/a"], ["soak/a", 1, 2], [1, 2], {"v": 2}, 42, "text", None,
                {"v": 3, "key": "soak/a", "value": 1},
                {"v": "2", "key": "soak/a", "value": 1},
                self.stamp(key="soak/a"),
                {**self.stamp(key="soak/a", value=1), "seq": -5},
                {**self.stamp(key="soak/a", value=1), "boot": "yesterday"},
                {**self.stamp(key="soak/a", value=1), "src": "bad src!"},
                {**self.stamp(key="soak/a", meta="not an object")},
            ])).encode()
        elif kind == "huge-key":
            body = json.dumps(["soak/" + "k" * rng.randint(257, 5000), 1]).encode()
        elif kind == "control-key":
            body = json.dumps(
                ["soak/\x00\x1b[31m\n" + chr(rng.randint(0, 31)), "x"]
            ).encode()
        elif kind == "bad-key":
            body = json.dumps([rng.choice(["", "/", "a//b", "a/../b", "a/*", "a/...", "/lead"]), 1]
                              ).encode()
        elif kind == "too-deep":
            body = b'["soak/deep", ' + b"[" * 150 + b"]" * 150 + b"]"
        elif kind == "not-json-number":
            body = rng.choice([b'["soak/n", NaN]', b'["soak/n", 1e400]', b'["soak/n", 01]'])
        elif kind == "oversized-junk":
            # The largest datagram there is, JSON cut short.
            head = b'["soak/big", "'
            body = head + b"z" * (MAX_DATAGRAM - len(head))
        elif kind == "oversized-valid":
            # The largest datagram there is, carrying one huge (valid) value.
            toRegister = False
            body = self.bigDatum()
        elif kind == "fragments-too-large":
            # A whole set of fragments whose value is over the server's
            # --max-value-size: each fragment is fine, the joined value not.
            toRegister = False
            document = self.stamp(key="soak/frag-big")
            size = MAX_DATAGRAM - 1000
            parts = self.maxValueSize // size + 1
            for part in range(parts):
                chunk = ("[" if part == 0 else "") + "7," * (size // 2)
                if part == parts - 1:
                    chunk += "7]"
                fragment = dict(document, part=part, parts=parts, chunk=chunk)
                self.sendto(json.dumps(fragment).encode(), self.data)
            return kind, b"", toRegister
        elif kind == "fragment-incomplete":
            # Two parts of seven: never completes, must expire.
            document = self.stamp(key="soak/frag", part=rng.randint(0, 6), parts=7, chunk="[1,2")
            body = json.dumps(document).encode()
        elif kind == "fragment-bad":
            document = self.stamp(key="soak/frag", part=9, parts=3, chunk="x")
            body = json.dumps(document).encode()
        elif kind == "bad-meta":
            toRegister = True
            body = json.dumps(rng.choice([
                ["soak/reg", {"license": 7}],
                ["soak/reg", {"description": ["not", "text"]}],
                ["soak/reg", "not an object"],
                self.stamp(key="soak/reg", meta={"license": {"uri": 5}}),
            ])).encode()
        else:  # "replay": a valid datum once, then copies of it
            toRegister = False
            if self.replays and rng.random() < 0.8:
                body = rng.choice(self.replays)
            else:
                body = self.validDatum()
                self.replays.append(body)
                kind = "valid-then-replayed"
        assert len(body) <= MAX_DATAGRAM
        return kind, body, toRegister

    def step(self) -> None:
        kind, body, toRegister = self.datagram()
        if not body:  # sent already
            self.sent[kind] += 1
        elif self.sendto(body, self.register if toRegister else self.data):
            self.sent[kind] += 1
            if kind in VALID_GARBAGE:
                self.valid += 1

    def big(self) -> None:
        """
        A valid datum filling a whole datagram.
        """
        if self.sendto(self.bigDatum(), self.data):
            self.valid += 1

    def spray(self) -> None:
        """
        A valid version 1 datum on a key never used before.
        """
        key = f"{SPRAY_PREFIX}{self.rng.getrandbits(48):012x}"
        if self.sendto(json.dumps([key, self.sprayed]).encode(), self.data):
            self.sprayed += 1

    def close(self) -> None:
        self.sock.close()


#: The kinds of bad datagram and how often each is sent, relative to the
#: others.  C{oversized-valid} (a valid datum filling a whole datagram) is
#: rare, C{fragments-too-large} (a megabyte of fragments) rarer.
GARBAGE = {
    "random-bytes": 1.0,
    "truncated-json": 1.0,
    "not-utf8": 1.0,
    "wrong-shape": 1.0,
    "huge-key": 1.0,
    "control-key": 1.0,
    "bad-key": 1.0,
    "too-deep": 1.0,
    "not-json-number": 1.0,
    "oversized-junk": 0.5,
    "oversized-valid": 0.1,
    "fragments-too-large": 0.01,
    "fragment-incomplete": 1.0,
    "fragment-bad": 1.0,
    "bad-meta": 1.0,
    "replay": 1.0,
}
GARBAGE_KINDS = list(GARBAGE)
#: What the garbage sender sends that is a valid datum after all.
VALID_GARBAGE = frozenset(["oversized-valid", "valid-then-replayed"])
GARBAGE_WEIGHTS = list(GARBAGE.values())


# --------------------------------------------------------------------------
# Watching the server


def kernelDrops(port: int) -> int | None:
    """
    Datagrams the kernel dropped on the UDP sockets bound to C{port} (the
    server's receive queue was full), from /proc/net/udp.
    """
    try:
        with open("/proc/net/udp") as f:
            lines = f.readlines()[1:]
    except OSError:
        return None
    total = 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].split(":")[1], 16) == port:
            total += int(fields[-1])
    return total


def listenOverflows() -> int | None:
    """
    The kernel's count of connections dropped because a listen queue was
    full (C{ListenOverflows} in /proc/net/netstat; for the whole machine).
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            if "ListenOverflows" in table:
                return int(table["ListenOverflows"])
    return None


def slope(samples: Sequence[tuple[float, int]]) -> float | None:
    """
    The least-squares slope of C{(seconds, KiB)} samples, in KiB per minute.
    """
    if len(samples) < 3:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return 60 * sum((t - mx) * (v - my) for t, v in samples) / var


def serverLogProblems(path: Path, offset: int) -> dict[str, Any]:
    """
    Tracebacks and unhandled errors the server logged after C{offset}.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return {"tracebacks": None, "unhandled": None, "first": None, "shut_down": False}
    lines = text.splitlines()
    tracebacks = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]
    unhandled = [i for i, line in enumerate(lines) if "Unhandled" in line]
    first = None
    for index in (tracebacks + unhandled)[:1]:
        first = "\n".join(lines[max(0, index - 1) : index + 25])
    return {
        "tracebacks": len(tracebacks),
        "unhandled": len(unhandled),
        "first": first,
        "shut_down": "Server Shut Down." in text,
    }


# --------------------------------------------------------------------------
# The run


class Soak:
    """
    One soak run: the server, the senders, the clients, the figures.
    """

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.config = fanout.ServerConfig(self.rng)
        self.pinning = Pinning(enabled=not options.no_pin)
        self.outDir = Path(options.out_dir)
        self.server: Process | None = None
        self.logPath = self.outDir / "soak-server.log"
        self.logOffset = 0

    def serverArgv(self) -> list[str]:
        options = self.options
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=",
            "artcast",
            "--client-port", f"tcp:{self.config.httpPort}:interface=127.0.0.1"
            + (f":backlog={options.backlog}" if options.backlog else ""),
            *fanout.commonArgv(self.config),
            "--max-keys", str(options.max_keys),
            "--history", str(options.history),
            "--header-timeout", f"{options.header_timeout:g}",
            *options.server_arg,
        ]

    def startServer(self) -> Process:
        self.outDir.mkdir(parents=True, exist_ok=True)
        self.logOffset = self.logPath.stat().st_size if self.logPath.exists() else 0
        argv = self.pinning.server(self.serverArgv())
        self.server = Process("artcast", argv, self.logPath, cwd=ROOT, env=fanout.serverEnv())
        fanout.waitForHttp(self.server, self.config.httpPort, timeout=60)
        return self.server

    def stopServer(self) -> int | None:
        if self.server is None:
            return None
        code = self.server.stop(grace=15.0)
        return code

    async def prefill(
        self, steady: SteadySource, garbage: GarbageSender, port: int
    ) -> dict[str, Any]:
        """
        Fill every steady key's history and the key store to C{--max-keys},
        and wait (bounded) until the server has taken it all in.
        """
        options = self.options
        steadyCount = len(steady.keys) * options.history
        sprayCount = options.max_keys
        started = time.monotonic()
        await asyncio.gather(
            Paced(PREFILL_RATE, steady.step).run(limit=steadyCount),
            Paced(PREFILL_RATE / 2, garbage.spray).run(limit=sprayCount),
            Paced(PREFILL_RATE / 20, garbage.big).run(limit=options.history),
        )
        target = steady.sent + garbage.sprayed + garbage.valid
        deadline = time.monotonic() + 30
        stats = await fetchStats(port)
        while stats["datums"] < target and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await fetchStats(port)
        return {
            "datums": steadyCount + sprayCount + options.history,
            "seconds": round(time.monotonic() - started, 2),
            "server_datums": stats["datums"],
        }

    async def waitDrained(self, port: int, limit: float = 10.0) -> dict[str, Any]:
        """
        After the clients are gone: wait (bounded) until the server holds no
        waiting request and only our own connection.
        """
        deadline = time.monotonic() + limit
        while True:
            stats = await fetchStats(port)
            if (stats["waiting"] == 0 and stats.get("connections", 1) <= 1) or \
                    time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.2)

    async def run(self) -> dict[str, Any]:
        options = self.options
        server = self.startServer()
        pid = server.pid
        port = self.config.httpPort
        log(f"server pid {pid} on 127.0.0.1:{port}, group {self.config.dataGroup}:"
            f"{self.config.dataPort}; {self.pinning.note}")
        self.pinning.pinSelf()

        book = IdBook()
        keys = steadyKeys(options.keys)
        steady = SteadySource(
            self.config.dataGroup, self.config.dataPort, self.config.registerPort, keys, book
        )
        garbage = GarbageSender(
            self.config.dataGroup, self.config.dataPort, self.config.registerPort,
            self.rng.randrange(2**32),
        )
        streams = await streamsOffered(port)
        log(f"streams offered: {streams}")

        log(f"warm-up: filling {len(keys)} keys x {options.history} history "
            f"and {options.max_keys} spray keys")
        prefill = await self.prefill(steady, garbage, port)
        log(f"prefill: {prefill}")

        weights = dict(options.kinds or KINDS)
        churn = Churn(port, keys, book, weights, options.clients, options.header_timeout,
                      streams, self.rng.randrange(2**32))
        pacers = [
            Paced(options.rate, steady.step),
            Paced(options.garbage_rate, garbage.step),
            Paced(options.spray_rate, garbage.spray),
        ]
        senderTasks = [asyncio.ensure_future(p.run()) for p in pacers]
        churn.start()
        rssSamples: list[tuple[float, int]] = []
        died = False
        try:
            await asyncio.sleep(options.warmup)
            if not server.alive():
                raise BenchError(f"the server died during the warm-up:\n{self.logTail()}")
            warmTally = churn.measure(options.cycles)
            sentAtStart = (steady.sent, garbage.sprayed, sum(garbage.sent.values()),
                           garbage.valid)
            statsStart = await fetchStats(port)
            rssStart = fanout.rssKiB(pid)
            cpuStart = fanout.cpuSeconds(pid)
            selfStart = resource.getrusage(resource.RUSAGE_SELF)
            dropsStart = kernelDrops(self.config.dataPort)
            overflowsStart = listenOverflows()
            t0 = time.monotonic()
            log(f"measuring: RSS {rssStart} KiB after {options.warmup:g} s warm-up "
                f"({sum(warmTally.cycles.values())} cycles)")
            rssSamples.append((0.0, rssStart))
            nextReport = t0 + 10
            while True:
                elapsed = time.monotonic() - t0
                if elapsed >= options.duration or churn.budgetReached.is_set():
                    break
                try:
                    async with asyncio.timeout(min(1.0, options.duration - elapsed)):
                        await churn.budgetReached.wait()
                except TimeoutError:
                    pass
                if not server.alive():
                    died = True
                    log("the server died")
                    break
                rssSamples.append((time.monotonic() - t0, fanout.rssKiB(pid)))
                if time.monotonic() >= nextReport:
                    nextReport += 10
                    summary = churn.tally.summary()
                    log(f"{time.monotonic() - t0:.0f} s: {summary['cycles']} cycles, "
                        f"{summary['delivered']} delivered, RSS {rssSamples[-1][1]} KiB, "
                        f"errors {summary['errors'] or 'none'}")
            duration = time.monotonic() - t0
            overflowsEnd = listenOverflows()
            rssEnd = fanout.rssKiB(pid) if not died else None
            cpuEnd = fanout.cpuSeconds(pid) if not died else None
            selfEnd = resource.getrusage(resource.RUSAGE_SELF)
            tally = churn.measure(None)
        finally:
            for pacer in pacers:
                pacer.running = False
            await asyncio.gather(*senderTasks, return_exceptions=True)
            sentAtEnd = (steady.sent, garbage.sprayed, sum(garbage.sent.values()),
                         garbage.valid)
            await churn.stop()
        statsEnd: dict[str, Any] | None = None
        statsDrained: dict[str, Any] | None = None
        rssDrained = None
        if not died and server.alive():
            await asyncio.sleep(1.0)
            statsEnd = await fetchStats(port)
            statsDrained = await self.waitDrained(port)
            rssDrained = fanout.rssKiB(pid)
        dropsEnd = kernelDrops(self.config.dataPort)
        steady.close()
        garbage.close()

        document = self.document(
            prefill=prefill, warmTally=warmTally, tally=tally, duration=duration,
            rssStart=rssStart, rssEnd=rssEnd, rssDrained=rssDrained, rssSamples=rssSamples,
            cpu=(cpuEnd - cpuStart) if cpuEnd is not None else None,
            selfCpu=(selfEnd.ru_utime + selfEnd.ru_stime)
            - (selfStart.ru_utime + selfStart.ru_stime),
            sent=[b - a for a, b in zip(sentAtStart, sentAtEnd)],
            validTotal=steady.sent + garbage.sprayed + garbage.valid,
            steady=steady, garbage=garbage, statsStart=statsStart, statsEnd=statsEnd,
            statsDrained=statsDrained, streams=streams, died=died,
            kernelDropped=(dropsEnd - dropsStart)
            if dropsEnd is not None and dropsStart is not None else None,
            listenOverflows=(overflowsEnd - overflowsStart)
            if overflowsEnd is not None and overflowsStart is not None else None,
        )
        return document

    def logTail(self, size: int = 3000) -> str:
        try:
            with open(self.logPath, "rb") as f:
                f.seek(max(self.logOffset, self.logPath.stat().st_size - size))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def document(self, **f: Any) -> dict[str, Any]:
        options = self.options
        tally: Tally = f["tally"]
        summary = tally.summary()
        statsStart, statsEnd = f["statsStart"], f["statsEnd"]
        serverDatums = (
            statsEnd["datums"] - statsStart["datums"] if statsEnd is not None else None
        )
        dropped: dict[str, int] = {}
        if statsEnd is not None:
            for reason, count in statsEnd["dropped"].items():
                diff = count - statsStart["dropped"].get(reason, 0)
                if diff:
                    dropped[reason] = diff
        rssStart, rssEnd = f["rssStart"], f["rssEnd"]
        rss = {
            "start_kib": rssStart,
            "end_kib": rssEnd,
            "diff_kib": rssEnd - rssStart if rssEnd is not None else None,
            "peak_kib": max(v for _, v in f["rssSamples"]),
            "drained_kib": f["rssDrained"],
            "slope_kib_per_min": slope(f["rssSamples"][len(f["rssSamples"]) // 2 :]),
            "bound_mib": options.rss_bound,
            "samples": [[round(t, 1), v] for t, v in f["rssSamples"]],
        }
        duration = f["duration"]
        steadySent, spraySent, garbageSent, garbageValid = f["sent"]
        rejected: dict[str, int] = {}
        if statsEnd is not None:
            for reason, count in (statsEnd.get("rejected") or {}).items():
                diff = count - (statsStart.get("rejected") or {}).get(reason, 0)
                if diff:
                    rejected[reason] = diff
        document: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": fanout.machine(),
            "settings": {
                "duration_s": options.duration,
                "warmup_s": options.warmup,
                "clients": options.clients,
                "cycles_limit": options.cycles,
                "keys": options.keys,
                "rate": options.rate,
                "garbage_rate": options.garbage_rate,
                "spray_rate": options.spray_rate,
                "max_keys": options.max_keys,
                "history": options.history,
                "header_timeout": options.header_timeout,
                "backlog": options.backlog,
                "rss_bound_mib": options.rss_bound,
                "quick": options.quick,
                "seed": options.seed,
                "pinning": self.pinning.note,
                "streams": f["streams"],
                "kinds": options.kinds or KINDS,
            },
            "prefill": f["prefill"],
            "warmup": f["warmTally"].summary(),
            "duration_s": round(duration, 2),
            **summary,
            "cycles_per_s": round(summary["cycles"] / duration, 1) if duration else None,
            "datums": {
                "steady_sent": steadySent,
                "spray_sent": spraySent,
                "garbage_valid_sent": garbageValid,
                "expected_published": steadySent + spraySent + garbageValid,
                "valid_sent_total": f["validTotal"],
                "server_published_total": statsEnd["datums"] if statsEnd is not None else None,
                "send_failed": f["steady"].failed + f["garbage"].failed,
                "server_published": serverDatums,
                "server_missed": (statsEnd["missed"] - statsStart["missed"])
                if statsEnd is not None else None,
                "delivered": summary["delivered"],
                "stream_messages": summary["stream_messages"],
            },
            "garbage_sent": garbageSent,
            "garbage_by_kind": dict(sorted(f["garbage"].sent.items())),
            "dropped": dict(sorted(dropped.items())),
            "kernel_dropped": f["kernelDropped"],
            "listen_overflows": f["listenOverflows"],
            "keys": {
                "held": statsEnd["keys"] if statsEnd is not None else None,
                "evicted": (statsEnd["keys_evicted"] - statsStart["keys_evicted"])
                if statsEnd is not None else None,
            },
            "rss": rss,
            "server": {
                "pid": self.server.pid if self.server else None,
                "died": f["died"],
                "cpu_pct": round(100 * f["cpu"] / duration, 1)
                if f["cpu"] is not None and duration else None,
                "rejected": rejected,
                "after_drain": {
                    "waiting": f["statsDrained"]["waiting"],
                    "connections": f["statsDrained"].get("connections"),
                } if f["statsDrained"] is not None else None,
            },
            "soak_cpu_pct": round(100 * f["selfCpu"] / duration, 1) if duration else None,
            "stats_end": statsEnd,
        }
        return document


def judge(document: dict[str, Any], strict: bool) -> tuple[bool, list[str], list[str]]:
    """
    The verdict: failures (the server died, answered 5xx, or grew past the
    bound) and warnings (everything else that looks wrong).

    @return: C{(passed, failures, warnings)}.
    """
    failures: list[str] = []
    warnings: list[str] = []
    server = document["server"]
    if server["died"] or document["stats_end"] is None:
        failures.append("the server died")
    fives = document["errors"].get("5xx", 0)
    if fives:
        failures.append(f"{fives} answers with 5xx")
    rss = document["rss"]
    if rss["diff_kib"] is not None and rss["diff_kib"] > rss["bound_mib"] * 1024:
        failures.append(
            f"RSS grew {rss['diff_kib'] / 1024:.1f} MiB, over the {rss['bound_mib']:g} MiB bound"
        )
    if server.get("exit_code") not in (0, -signal.SIGTERM, None):
        warnings.append(f"the server exited with {server['exit_code']} when stopped")
    if server.get("exit_code") is not None and not document.get("server_log", {}).get("shut_down"):
        warnings.append("the server did not log its shutdown")
    d = document["datums"]
    total = d["server_published_total"]
    if total is not None and total != d["valid_sent_total"]:
        warnings.append(
            f"since it started the server published {total} datums; "
            f"{d['valid_sent_total']} valid ones were sent"
        )
    others = {k: v for k, v in document["errors"].items() if k != "5xx"}
    if others:
        warnings.append("client errors: " + ", ".join(f"{k} {v}" for k, v in others.items()))
    drained = server.get("after_drain")
    if drained and (drained["waiting"] or (drained["connections"] or 0) > 1):
        warnings.append(
            f"after the clients left the server still held {drained['waiting']} waiting "
            f"requests and {drained['connections']} connections"
        )
    problems = document.get("server_log", {})
    if problems.get("tracebacks") or problems.get("unhandled"):
        warnings.append(
            f"server log: {problems['tracebacks']} tracebacks, {problems['unhandled']} unhandled"
        )
    if document["cycles"] == 0:
        failures.append("no cycle completed")
    kinds = document["settings"]["kinds"]
    asksForDatums = any(kinds.get(k) for k in VALUE_KINDS | {"stream"})
    if asksForDatums and not document["datums"]["delivered"]:
        failures.append("no datum delivered")
    if strict and warnings:
        failures.extend(warnings)
        warnings = []
    return not failures, failures, warnings


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def counts(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"


def render(document: dict[str, Any]) -> str:
    """
    The summary printed at the end, one figure per line.
    """
    s = document["settings"]
    d = document["datums"]
    rss = document["rss"]
    server = document["server"]
    drained = server.get("after_drain") or {}
    diff = "n/a" if rss["diff_kib"] is None else "%+.1f MiB" % (rss["diff_kib"] / 1024,)
    trend = (
        "n/a" if rss["slope_kib_per_min"] is None
        else "%+.0f KiB/min" % (rss["slope_kib_per_min"],)
    )
    if server["died"]:
        serverLine = f"server: DIED during the run (exit code {server.get('exit_code')})"
    else:
        serverLine = (
            f"server: cpu {server['cpu_pct']}%, after drain {drained.get('waiting')} "
            f"waiting / {drained.get('connections')} connections, stopped by SIGTERM: "
            f"exit code {server.get('exit_code')} (-15 is twistd's clean exit on SIGTERM)"
        )
    serverLine += f"; soak process cpu {document['soak_cpu_pct']}%"
    lines = [
        f"Artcast soak, {document['date']}, {document['machine']['cpu']}, "
        f"{document['machine']['cpus']} CPUs",
        f"settings: {s['clients']} clients, {s['keys']} keys at {s['rate']:g} datums/s, "
        f"garbage {s['garbage_rate']:g}/s, spray {s['spray_rate']:g} keys/s, "
        f"--max-keys {s['max_keys']}, --history {s['history']}, "
        f"--header-timeout {s['header_timeout']:g}, "
        f"backlog {s['backlog'] or 'default'}; {s['pinning']}; "
        f"streams {'on' if s['streams'] else 'off (406)'}",
        f"warm-up: {s['warmup_s']:g} s, {document['warmup']['cycles']} cycles "
        f"(after a prefill of {document['prefill']['datums']} datums)",
        f"duration: {document['duration_s']:.1f} s",
        f"cycles: {document['cycles']} ({document['cycles_per_s']}/s): "
        + counts(document["cycles_by_kind"]),
        f"answers: {document['answers']}: " + counts(document["answers_by_status"]),
        "outcomes: " + counts(document["outcomes"]),
        f"datums sent: {d['steady_sent']} steady + {d['spray_sent']} spray + "
        f"{d['garbage_valid_sent']} valid among the garbage ({d['send_failed']} sends "
        f"failed); server published {d['server_published']} "
        f"(since it started: {d['server_published_total']} of {d['valid_sent_total']} "
        f"valid datums sent), missed {d['server_missed']}",
        f"datums delivered: {d['delivered']} ({d['delivered'] - d['stream_messages']} "
        f"long-poll answers, {d['stream_messages']} stream messages; "
        f"{document['gap_answers']} with Artcast-Gap)",
        "errors: " + counts(document["errors"]),
        f"garbage sent: {document['garbage_sent']}",
        "dropped datagrams: " + counts(document["dropped"])
        + f"; kernel receive-queue drops {document['kernel_dropped']}",
        f"keys: {document['keys']['held']} held, {document['keys']['evicted']} evicted",
        "rejected requests: " + counts(server.get("rejected") or {})
        + f"; listen-queue overflows {document['listen_overflows']} (whole machine)",
        f"rss: start {mib(rss['start_kib'])}, end {mib(rss['end_kib'])}, "
        f"diff {diff}, peak {mib(rss['peak_kib'])}, after drain {mib(rss['drained_kib'])}, "
        f"trend over the second half {trend} (bound {rss['bound_mib']:g} MiB)",
        serverLine,
    ]
    examples = document.get("error_examples") or {}
    for kind, text in examples.items():
        lines.append(f"  e.g. {kind}: {text}")
    verdict = document["verdict"]
    if verdict["passed"]:
        line = "verdict: PASS"
        if verdict["warnings"]:
            line += " (warnings: " + "; ".join(verdict["warnings"]) + ")"
    else:
        line = "verdict: FAIL: " + "; ".join(verdict["failures"])
        if verdict["warnings"]:
            line += " (warnings: " + "; ".join(verdict["warnings"]) + ")"
    lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line


def parseArgs(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak test: a real twistd artcast under client churn, "
        "steady datums and garbage datagrams, for a bounded time."
    )
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds measured after the warm-up (default 60; --quick 10)")
    parser.add_argument("--clients", type=int, default=None,
                        help="concurrent client connections (default 1000; --quick 200)")
    parser.add_argument("--quick", action="store_true",
                        help="short mode for CI: 10 s, 200 clients, 50 keys, 3 s warm-up")
    parser.add_argument("--cycles", type=int, default=None,
                        help="also stop after this many measured cycles")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of churn before measuring (default 10; --quick 3)")
    parser.add_argument("--keys", type=int, default=None,
                        help="steady keys (default 300; --quick 50)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="steady datums per second, over all keys (default 100)")
    parser.add_argument("--garbage-rate", type=float, default=200.0,
                        help="bad datagrams per second (default 200)")
    parser.add_argument("--spray-rate", type=float, default=200.0,
                        help="datums per second on new random keys (default 200)")
    parser.add_argument("--max-keys", type=int, default=None,
                        help="the server's --max-keys (default 2000; --quick 500)")
    parser.add_argument("--history", type=int, default=100,
                        help="the server's --history (default 100, as the server's)")
    parser.add_argument("--header-timeout", type=float, default=3.0,
                        help="the server's --header-timeout, short so slow heads "
                        "are cut within the run (default 3)")
    parser.add_argument("--kinds", type=parseKinds, default=None,
                        help="only these kinds of cycle, with weights: "
                        "poll=2,rst=1 (default: all, see KINDS)")
    parser.add_argument("--backlog", type=int, default=None,
                        help="listen backlog of the server's port (default: "
                        "Twisted's, 50)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="another option for twistd artcast (repeatable)")
    parser.add_argument("--rss-bound", type=float, default=50.0,
                        help="fail if RSS grows by more than this many MiB (default 50)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail on client errors, leftovers and server tracebacks")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--json", dest="jsonPath", default=None,
                        help="write every figure to this file")
    parser.add_argument("--out-dir", default=str(BENCH / "out"),
                        help="where the server's log goes (default bench/out)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--abuse", action="store_true",
                        help="run the abuse soak instead (bench/abuse.py; "
                        "--abuse --help lists its options)")
    options = parser.parse_args(argv)
    quick = options.quick
    defaults = {
        "duration": (10.0, 60.0),
        "clients": (200, 1000),
        "warmup": (3.0, 10.0),
        "keys": (50, 300),
        "max_keys": (500, 2000),
    }
    for name, (short, full) in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, short if quick else full)
    if options.seed is None:
        options.seed = random.randrange(2**31)
    if options.duration <= 0 or options.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if options.clients < 1 or options.keys < 1 or options.max_keys < 1:
        parser.error("--clients, --keys and --max-keys must be at least 1")
    if options.rate <= 0 or options.garbage_rate < 0 or options.spray_rate < 0:
        parser.error("--rate must be positive, the other rates not negative")
    if options.keys > 9999:
        parser.error("--keys is at most 9999")
    return options


def parseKinds(text: str) -> dict[str, float]:
    """
    Parse C{--kinds}: C{kind=weight} pairs (a bare kind weighs 1).

    @raise argparse.ArgumentTypeError: for an unknown kind or a bad weight.
    """
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, _, weight = item.strip().partition("=")
        if name not in KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown kind {name!r} (known: {', '.join(KINDS)})"
            )
        try:
            weights[name] = float(weight or 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight {weight!r} for {name}")
        if weights[name] < 0:
            raise argparse.ArgumentTypeError(f"negative weight for {name}")
    if not any(weights.values()):
        raise argparse.ArgumentTypeError("no kind with a positive weight")
    return weights


def onSigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if "--abuse" in arguments:
        from bench import abuse

        return abuse.main([a for a in arguments if a != "--abuse"])
    options = parseArgs(argv)
    signal.signal(signal.SIGTERM, onSigterm)
    soak = Soak(options)
    try:
        fanout.raiseFileLimit(options.clients + 512)
        document = asyncio.run(soak.run())
        document["server"]["exit_code"] = soak.stopServer()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Process.stopAll()
    document["server_log"] = serverLogProblems(soak.logPath, soak.logOffset)
    passed, failures, warnings = judge(document, options.strict)
    document["verdict"] = {"passed": passed, "failures": failures, "warnings": warnings}
    sys.stdout.write(render(document))
    sys.stdout.flush()
    if document["server_log"].get("first"):
        log("first problem in the server log:\n" + document["server_log"]["first"])
    if options.jsonPath:
        with open(options.jsonPath, "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
