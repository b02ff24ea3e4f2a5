# -*- test-case-name: tests.test_bounds_patterns -*-
"""
The wildcard-pattern benchmark (issue 9, findings 6 and 8): what a
stranger's patterns cost the pattern index, before and after, in one run.

"Before" is C{artcast/_wildcard.py} as it was at a git revision (by default
the last one before the index was rebuilt), loaded from git; "after" is the
working tree's.  Both are driven in this process with the same patterns:

  - memory (finding 6): 2,000 held polls, each on its own deep pattern
    (C{p<n>/*/*/...}, 126 levels, and 32 levels, the most a request may now
    send): bytes the index holds per poll, as tracemalloc counts them;
  - work (finding 8): binary-prefix patterns (the first levels spell a
    number in C{a} and C{*}, then C{*} to the last level, C{z}) and a deep
    key C{a/a/.../a} that matches every prefix of every one of them but none
    whole: milliseconds per datum, and for 50 such datagrams in a row, the
    delay of a legitimate datum queued behind them.

Run from the repository::

    python bench/patterns.py                  # about 10 s
    python bench/patterns.py --before REV     # compare with another revision
    python bench/patterns.py --json out.json  # every figure, also as JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from artcast.server import patterns as _wildcard  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: The last revision with the index that kept one node per level.
BEFORE = "d3252e9"

#: How many datagrams the legitimate datum waits behind (finding 8).
QUEUED = 50


def loadBefore(revision: str) -> types.ModuleType:
    """
    C{artcast/_wildcard.py} as it was at a git revision, as a module.

    @param revision: Anything C{git show} takes.
    """
    source = subprocess.run(
        ["git", "show", f"{revision}:artcast/_wildcard.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    module = types.ModuleType(f"_wildcard_{revision}")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{revision}:artcast/_wildcard.py", "exec"), module.__dict__)
    return module


def deepPatterns(count: int, levels: int) -> list[str]:
    """
    C{count} patterns of C{levels} levels sharing no first level.
    """
    return ["/".join([f"p{number}"] + ["*"] * (levels - 1)) for number in range(count)]


def binaryPatterns(count: int, levels: int) -> list[str]:
    """
    C{count} binary-prefix patterns of C{levels} levels (see the module's
    docstring).
    """
    bits = max(1, (count - 1).bit_length())
    return [
        "/".join(
            ["a" if number >> bit & 1 else "*" for bit in range(bits)]
            + ["*"] * (levels - bits - 1)
            + ["z"]
        )
        for number in range(count)
    ]


def bytesPerPattern(indexType: Callable[[], Any], patterns: list[str]) -> float:
    """
    The bytes an index holds per pattern added, by tracemalloc.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = indexType()
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / len(patterns)


def msPerDatum(indexType: Callable[[], Any], patterns: list[str], key: str) -> float:
    """
    The milliseconds one key's match takes, the best of a few rounds.
    """
    index = indexType()
    for number, pattern in enumerate(patterns):
        index.add(pattern, number)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            index.match(key)
        best = min(best, (time.perf_counter() - started) / 10)
    return best * 1000


def measure(indexType: Callable[[], Any]) -> dict[str, float]:
    """
    Every figure for one index type.
    """
    figures: dict[str, float] = {}
    for levels in (126, 32):
        figures[f"bytes per poll, 2,000 polls on {levels}-level patterns"] = round(
            bytesPerPattern(indexType, deepPatterns(2000, levels))
        )
    for count in (50, 2000):
        for levels in (126, 32):
            key = "/".join(["a"] * levels)
            ms = msPerDatum(indexType, binaryPatterns(count, levels), key)
            figures[
                f"ms per deep-key datum, {count:,} binary-prefix patterns of {levels} levels"
            ] = round(ms, 3)
            figures[
                f"ms a datum waits behind {QUEUED} of them, {count:,} patterns of {levels} levels"
            ] = round(ms * QUEUED, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of 'before'")
    parser.add_argument("--json", help="also write every figure to this file")
    options = parser.parse_args(argv)
    before = measure(loadBefore(options.before).PatternIndex)
    after = measure(_wildcard.PatternIndex)
    width = max(len(name) for name in before)
    print(f"{'figure':<{width}}  {'before':>10}  {'after':>10}")
    for name in before:
        print(f"{name:<{width}}  {before[name]:>10,}  {after[name]:>10,}")
    if options.json:
        with open(options.json, "w") as output:
            json.dump(
                {"before": options.before, "figures": {
                    name: {"before": before[name], "after": after[name]}
                    for name in before
                }},
                output, indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
