# -*- test-case-name: tests.test_bench -*-
"""
The emitter of the fan-out benchmark: sends version 1 datums
C{["bench/fanout", {"t": <send time>, "n": <sequence>}]} over multicast on
loopback at a steady rate, for a bounded count and time.

C{t} is C{time.time()} just before the datagram is sent; the load generator
subtracts it from the arrival time of each answer.  C{n} numbers the datums
so that the load generator can count, per datum, how many clients got it.

It prints one JSON line when done: what it sent (first and last C{n}, count,
achieved rate) and its own CPU time.

Network rules: the group must be in 239.255.0.0/16; the socket sends with
C{IP_MULTICAST_IF} 127.0.0.1 and TTL 0, so nothing leaves the machine.

With C{--publish-port P} it feeds Nchan instead: the same datums, on the
same schedule, each C{POST}ed to C{http://127.0.0.1:P/pub/<key>} over one
keep-alive connection (L{HttpPublisher}), the answer read before the next
send.  The cost of publishing over HTTP is then on this process's CPU (its
C{cpu_s}), and the server's share of it on the server's.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import resource
import socket
import sys
import time
from typing import Callable

KEY = "bench/fanout"
LOCAL_GROUPS = ipaddress.ip_network("239.255.0.0/16")


def senderSocket(interface: str = "127.0.0.1") -> socket.socket:
    """
    A UDP socket that sends multicast through C{interface}, TTL 0, loop on.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface)
    )
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return sock


class HttpPublisher:
    """
    Publishes datums to Nchan: each one C{POST}ed to C{/pub/<key>} on
    127.0.0.1 over one keep-alive connection (reopened once if the server
    closed it), its answer read before the next.
    """

    def __init__(self, port: int, key: str, timeout: float = 10.0) -> None:
        self.path = "/pub/" + key
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def send(self, body: bytes) -> None:
        """
        Publish C{body}.

        @raise OSError: if the server does not take it (an answer other than
            201 or 202, or no answer twice in a row).
        """
        for attempt in (1, 2):
            try:
                self.connection.request(
                    "POST", self.path, body, {"Content-Type": "application/json"}
                )
                response = self.connection.getresponse()
                response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt == 2:
                    raise
                continue
            if response.status not in (201, 202):
                raise OSError(f"publishing to {self.path}: HTTP {response.status}")
            return

    def close(self) -> None:
        self.connection.close()


def checkGroup(group: str) -> None:
    """
    Refuse any group outside 239.255.0.0/16.

    @raise ValueError: if C{group} is not in that range.
    """
    if ipaddress.ip_address(group) not in LOCAL_GROUPS:
        raise ValueError(f"group {group} is not in {LOCAL_GROUPS}")


def datum(key: str, n: int, now: float) -> bytes:
    """
    One version 1 datagram carrying the send time and the sequence number.
    """
    return json.dumps([key, {"t": now, "n": n}]).encode("utf-8")


def emit(
    group: str,
    port: int,
    rate: float,
    duration: float,
    firstN: int = 1,
    key: str = KEY,
    registerPort: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    wallClock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    publisher: HttpPublisher | None = None,
) -> dict[str, object]:
    """
    Send C{round(rate * duration)} datums to C{group:port}, or to
    C{publisher} if given (then C{group}, C{port} and C{registerPort} are
    not used), paced on an absolute schedule (a late send does not shift the
    ones after it).

    @return: a summary: C{first}, C{last}, C{sent}, C{duration_s},
        C{rate}, C{cpu_s}.
    """
    if publisher is None:
        checkGroup(group)
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    count = max(1, int(round(rate * duration)))
    sock = senderSocket() if publisher is None else None
    usageBefore = resource.getrusage(resource.RUSAGE_SELF)
    try:
        if registerPort is not None and sock is not None:
            meta = {
                "description": "fan-out benchmark datums",
                "provenance": "bench/emitter.py",
                "license": None,
            }
            sock.sendto(json.dumps([key, meta]).encode("utf-8"), (group, registerPort))
        start = clock()
        deadline = start + duration + 5.0
        sent = 0
        for i in range(count):
            due = start + i / rate
            now = clock()
            if now > deadline:
                break
            if due > now:
                sleep(due - now)
            if sock is None:
                assert publisher is not None
                publisher.send(datum(key, firstN + i, wallClock()))
            else:
                sock.sendto(datum(key, firstN + i, wallClock()), (group, port))
            sent += 1
        elapsed = clock() - start
    finally:
        if sock is not None:
            sock.close()
        if publisher is not None:
            publisher.close()
    usageAfter = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usageAfter.ru_utime - usageBefore.ru_utime) + (
        usageAfter.ru_stime - usageBefore.ru_stime
    )
    return {
        "event": "emitted",
        "first": firstN,
        "last": firstN + sent - 1,
        "sent": sent,
        "duration_s": elapsed,
        "rate": sent / (elapsed + 1.0 / rate),
        "cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send benchmark datums.")
    parser.add_argument("--group", default=None, help="in 239.255.0.0/16")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--publish-port", type=int, default=None,
                        help="POST to Nchan's /pub/<key> on 127.0.0.1:PORT instead")
    parser.add_argument("--register-port", type=int, default=None)
    parser.add_argument("--rate", type=float, required=True, help="datums/s")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--first-n", type=int, default=1)
    parser.add_argument("--key", default=KEY)
    options = parser.parse_args(argv)
    if options.publish_port is None and (options.group is None or options.port is None):
        parser.error("give --group and --port, or --publish-port")
    summary = emit(
        options.group or "",
        options.port or 0,
        options.rate,
        options.duration,
        firstN=options.first_n,
        key=options.key,
        registerPort=options.register_port,
        publisher=(
            HttpPublisher(options.publish_port, options.key)
            if options.publish_port is not None
            else None
        ),
    )
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
