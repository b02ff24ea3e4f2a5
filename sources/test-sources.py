#!/usr/bin/env python3
# -*- test-case-name: tests.test_source -*-
"""
The two test artcasts, sent over multicast:

  - C{test/tick}: an integer counting up once a second (1, 2, 3, ...);
  - C{test/now}: the time in UTC, ISO 8601 to the second
    (C{2026-11-22T03:16:18Z}), once a second.

Both are registered with a description, a provenance and a license, and the
registrations are repeated every 30 seconds.

    python sources/test-sources.py                      # the default groups, TTL 1
    python sources/test-sources.py --ttl 0 --interface 127.0.0.1 \\
        --group 239.255.12.34 --port 15007 --register-port 15008

Stop it with Ctrl-C.  (C{twistd artcast --demo} runs the same artcasts
inside the server, with no network.)
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

try:
    import artcast  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from artcast.server.feeds import demo  # noqa: E402
from artcast.send import ipv4Argument, portArgument, ttlArgument  # noqa: E402
from artcast.source import Source  # noqa: E402
from artcast.wire import parseKeyFile  # noqa: E402

#: The same artcasts as C{--demo}'s, but from this script.
ARTCASTS = {
    key: dict(meta, provenance="Artcast's test source, sources/test-sources.py.")
    for key, meta in demo.ARTCASTS.items()
}


def isoNow(seconds: float) -> str:
    """
    C{seconds} since 1970 as ISO 8601 UTC to the second, e.g.
    C{2026-11-22T03:16:18Z}.
    """
    moment = datetime.datetime.fromtimestamp(math.floor(seconds), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="test-sources.py",
        description="Send the test artcasts test/tick and test/now over multicast.",
    )
    parser.add_argument("--group", type=ipv4Argument, default="224.1.1.1",
                        help="data group (default 224.1.1.1)")
    parser.add_argument("--port", type=portArgument, default=5007,
                        help="data port (default 5007)")
    parser.add_argument("--register-group", type=ipv4Argument, default=None,
                        help="register group (default: the data group)")
    parser.add_argument("--register-port", type=portArgument, default=5008,
                        help="register port (default 5008)")
    parser.add_argument("--ttl", type=ttlArgument, default=1,
                        help="multicast TTL (default 1: the local network; 0: this host)")
    parser.add_argument("--interface", type=ipv4Argument, default=None,
                        help="local address of the interface to send from")
    parser.add_argument("--src", default=None,
                        help="source name (default: host name and random digits)")
    parser.add_argument("--key-file", default=None,
                        help="sign datagrams with the key in this file")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two datums of each artcast (default 1)")
    parser.add_argument("--count", type=int, default=None,
                        help="stop after this many rounds (default: run until interrupted)")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """
    Send the test artcasts until interrupted or C{--count} rounds are done.

    @return: the exit status.
    """
    options = parseArguments(argv)
    signingKey = None
    if options.key_file is not None:
        with open(options.key_file, "rb") as keyFile:
            signingKey = parseKeyFile(keyFile.read())
    registerGroup = options.register_group or options.group
    source = Source(
        options.src,
        groups=[(options.group, options.port)],
        registerGroups=[(registerGroup, options.register_port)],
        ttl=options.ttl,
        interface=options.interface,
        signingKey=signingKey,
        now=now,
        sleep=sleep,
    )
    tick = 0

    def produce() -> dict[str, object]:
        nonlocal tick
        tick += 1
        return {"test/tick": tick, "test/now": isoNow(now())}

    try:
        with source:
            for key, meta in ARTCASTS.items():
                source.register(key, **meta)
            if options.interval > 0:
                # Start on a whole multiple of the interval, so test/now ticks
                # with the clock.
                source.sleep(-now() % options.interval)
            source.run(options.interval, produce, count=options.count)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
