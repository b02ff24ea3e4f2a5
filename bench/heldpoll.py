"""
What one held long poll (or open stream) holds in Artcast's server: the real
service on the real reactor in this process, traced with L{tracemalloc}, and
a client process holding C{--clients} polls on one key (127.0.0.1 only; the
server joins its multicast groups on 127.0.0.1 and sends nothing).

Prints the bytes of Python objects per held poll, grouped by the line that
allocated them (largest first).  With C{--kind sse} or C{--kind ws} the
client opens Server-Sent Events or WebSocket streams instead.

    python -m bench.heldpoll --clients 2000
    python -m bench.heldpoll --clients 2000 --kind sse
"""

from __future__ import annotations

import argparse
import gc
import linecache
import os
import socket
import subprocess
import sys
import tracemalloc
from typing import Any

from twisted.internet import reactor as _reactor

_CLIENT = r"""
import socket, sys, time
port, n, extra = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /artcasts/heldpoll HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n")
    held.append(s)
print("held", flush=True)
sys.stdin.read()
"""


#: The headers each kind of client adds to its request.
_KINDS = {
    "longpoll": "",
    "sse": "Accept: text/event-stream\r\n",
    "ws": (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    ),
}


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--kind", choices=sorted(_KINDS), default="longpoll")
    args = parser.parse_args(argv)
    n = args.clients

    from artcast.server.service import makeService
    from artcast.server.store import KeyStore
    from artcast.server.tap import Options

    reactor: Any = _reactor
    httpPort = freePort()
    options = Options()
    options.parseOptions([
        "--client-port", f"tcp:{httpPort}:interface=127.0.0.1",
        "--data-group", "239.255.77.41", "--data-port", str(freePort(socket.SOCK_DGRAM)),
        "--register-group", "239.255.77.42",
        "--register-port", str(freePort(socket.SOCK_DGRAM)),
        "--interface", "127.0.0.1",
        "--access-log", os.devnull,
        "--error-log", os.devnull,
    ])
    service = makeService(options, reactor)
    store: KeyStore = service.store
    result: dict[str, Any] = {}

    def measure() -> None:
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, str(httpPort), str(n), _KINDS[args.kind]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        result["client"] = client

        def held() -> None:
            listening = store.listening
            if listening < n:
                reactor.callLater(0.2, held)
                return
            # What the last of them wrote has gone out.
            reactor.callLater(0.5, measured, listening)

        def measured(listening: int) -> None:
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            result["stats"] = after.compare_to(before, "lineno")
            result["polls"] = listening
            reactor.stop()

        reactor.callLater(0.5, held)

    service.privilegedStartService()
    service.startService()
    reactor.callLater(1.0, measure)
    reactor.callLater(120.0, reactor.stop)
    reactor.run()
    client = result.get("client")
    if client is not None:
        client.stdin.close()
        client.wait(10)
    stats = result.get("stats")
    if stats is None:
        sys.exit("the polls were not all held in time")
    total = sum(s.size_diff for s in stats)
    print(f"{result['polls']} {args.kind} held; {total / n:,.0f} bytes of Python objects per client")
    print(f"{'bytes/poll':>10} {'objects/poll':>12}  where")
    for s in stats[: args.top]:
        frame = s.traceback[0]
        line = linecache.getline(frame.filename, frame.lineno).strip()
        where = frame.filename.split("site-packages/")[-1].split("i15-lean/")[-1]
        print(f"{s.size_diff / n:10,.0f} {s.count_diff / n:12.2f}  {where}:{frame.lineno}  {line[:70]}")


if __name__ == "__main__":
    main()
