# -*- test-case-name: tests.test_bounds_store -*-
"""
The store benchmark: event-loop time of reading a pattern over a large store,
reading through every history (as the store did before issue 9) and as it
reads now, in the same run.

It fills a L{KeyStore} in this process with C{--keys} keys of C{--history}
datums each (by default the server's default limits, 10,000 x 100, one
source, the keys updated in turn) and times, each the best of C{--repeat}:

- C{current}: the current values a stream opened on C{...} without C{since}
  sends first;
- C{since}: a long poll on C{...} with C{since} a recent id;
- C{stream}: a stream opened on C{...} with C{since} ten datums back (what
  it sends first).

Before, each merged every key's whole history; now C{current} takes each
key's latest datum and C{since} bisects each key's history.  It prints one
line per figure with both times and their ratio::

    python bench/store.py                      # 10,000 x 100: about 1 GB, a minute
    python bench/store.py --keys 1000 --history 50

The store is given a budget large enough to hold it all
(C{--max-store-bytes} would otherwise forget most of this history).
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from artcast.server.store import Datum, Found, KeyStore  # noqa: E402
from artcast.server.outlets.streams import Start, startOf  # noqa: E402
from artcast.wire import DatumId, Stamp  # noqa: E402

PATTERN = "..."


def mergedHistory(store: KeyStore, pattern: str) -> list[Datum]:
    """
    Every datum held for the keys a pattern matches, merged in arrival order:
    what every pattern read did before.
    """
    histories = [entry.history for entry in store._held(pattern)]
    return list(heapq.merge(*histories, key=lambda datum: datum.serial))


def sinceBefore(store: KeyStore, pattern: str, datumId: str) -> Found:
    """
    C{KeyStore.since} as it was: read through the merged history.
    """
    return sinceIn(mergedHistory(store, pattern), datumId)


def sinceIn(held: list[Datum], datumId: str) -> Found:
    """
    C{KeyStore.since} as it was, reading through every datum held (oldest
    first): the reference the bisecting one is measured and tested against.
    """
    wanted = DatumId.parse(datumId)
    for index in range(len(held) - 1, -1, -1):
        if held[index].id == datumId:
            if index + 1 < len(held):
                return Found(held[index + 1])
            return Found(None, skipThrough=wanted)
    sameSource = [datum for datum in held if datum.source == wanted[0]]
    later = [datum for datum in sameSource if datum.after(wanted)]
    if sameSource and not later:
        return Found(None, skipThrough=wanted)
    if later and later[0] is not sameSource[0]:
        return Found(later[0])
    if later and (later[0].boot, later[0].seq) == (wanted[1], wanted[2] + 1):
        return Found(later[0])
    if held:
        return Found(held[0], gap=True)
    return Found(None, gap=True, skipThrough=wanted, unlessNext=True)


def currentBefore(store: KeyStore, pattern: str) -> list[Datum]:
    """
    The current values of a pattern as streams took them before.
    """
    byKey: dict[str, Datum] = {}
    for datum in mergedHistory(store, pattern):
        byKey[datum.key] = datum
    return sorted(byKey.values(), key=lambda datum: datum.serial)


def streamBefore(store: KeyStore, pattern: str, since: str) -> Start:
    """
    What a stream resuming on a pattern sent first, before.
    """
    found = sinceBefore(store, pattern, since)
    if found.datum is None:
        return Start((), found.gap, since, found.skipThrough)
    held = mergedHistory(store, pattern)
    for index, datum in enumerate(held):
        if datum is found.datum:
            return Start(held[index:], found.gap, since)
    return Start([found.datum], found.gap, since)


def fill(keys: int, history: int) -> KeyStore:
    """
    A store of C{keys} keys of C{history} datums each, from one source.
    """
    store = KeyStore(
        Clock(), history=history, maxKeys=keys, maxBytes=1 << 62, instance="bench"
    )
    seq = 0
    for _ in range(history):
        for key in range(keys):
            seq += 1
            store.publish("sensors/%d/value" % (key,), seq, Stamp("src", 1000, seq, 0.0))
    return store


def best(read: Callable[[], object], repeat: int) -> tuple[float, object]:
    """
    The shortest of C{repeat} runs of C{read}, in seconds, and what it gave.
    """
    times = []
    result: object = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = read()
        times.append(time.perf_counter() - began)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    began = time.perf_counter()
    store = fill(options.keys, options.history)
    total = options.keys * options.history
    print(
        f"store: {options.keys} keys x {options.history} datums = {total} "
        f"({store.bytes / 1e6:.1f} MB charged), filled in "
        f"{time.perf_counter() - began:.1f} s"
    )
    recent = f"src.1000.{total - 1}"
    back = f"src.1000.{total - 10}"
    cases = [
        ("current", lambda: currentBefore(store, PATTERN),
         lambda: startOf(store, PATTERN, None).datums),
        ("since", lambda: sinceBefore(store, PATTERN, recent).datum,
         lambda: store.since(PATTERN, recent).datum),
        ("stream", lambda: streamBefore(store, PATTERN, back).datums,
         lambda: startOf(store, PATTERN, back).datums),
    ]
    print(f"{'read of ' + PATTERN:<12} {'before':>12} {'now':>12} {'ratio':>8}")
    for name, before, now in cases:
        slow, expected = best(before, options.repeat)
        fast, got = best(now, options.repeat)
        same = (
            list(expected) == list(got)  # type: ignore[call-overload]
            if isinstance(got, (list, tuple))
            else expected is got
        )
        if not same:
            print(f"{name}: the two reads differ", file=sys.stderr)
            return 1
        print(
            f"{name:<12} {slow * 1000:>9.2f} ms {fast * 1000:>9.2f} ms "
            f"{slow / fast:>7.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
