# -*- test-case-name: tests.test_wildcard -*-
"""
Tests for L{artcast.server.patterns}.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from artcast.server.patterns import (
    MAX_PATTERN_LEVELS,
    PatternIndex,
    _Node,
    isPattern,
    matches,
    validatePattern,
)
from artcast.wire import BadKey, validateKey

FUZZ = settings(max_examples=200, deadline=None)

MATCHES = [
    # pattern, key, matches
    ("test/*", "test/tick", True),
    ("test/*", "test/a/b", False),
    ("test/*", "test", False),
    ("test/*", "other/tick", False),
    ("sensors/...", "sensors/a", True),
    ("sensors/...", "sensors/a/b", True),
    ("sensors/...", "sensors/a/b/c/d", True),
    ("sensors/...", "sensors", False),
    ("sensors/...", "sensorsx/a", False),
    ("*/*/temp", "house/kitchen/temp", True),
    ("*/*/temp", "house/temp", False),
    ("*/*/temp", "a/b/c/temp", False),
    ("*/*/temp", "house/kitchen/humidity", False),
    ("*", "tick", True),
    ("*", "test/tick", False),
    ("...", "tick", True),
    ("...", "a/b/c", True),
    ("*/...", "a", False),
    ("*/...", "a/b", True),
    ("*/...", "a/b/c", True),
    ("a/*/c/...", "a/b/c/d", True),
    ("a/*/c/...", "a/b/c", False),
    ("test/tick", "test/tick", True),
    ("test/tick", "test/Tick", False),
    ("Test/*", "test/tick", False),
    ("test/tick", "test/tick/x", False),
    ("test/tick", "test", False),
    # "..." is a wildcard only as the last level; "*" only as a whole level.
    ("a/.../b", "a/x/b", False),
    ("a/.../b", "a/.../b", True),
    ("te*/tick", "test/tick", False),
    ("te*/tick", "te*/tick", True),
    ("test/**", "test/tick", False),
    ("test/....", "test/tick", False),
    # Empty levels are levels like any other.
    ("/...", "/a", True),
    ("/...", "a", False),
    ("*/a", "/a", True),
    ("a/*", "a/", True),
]

PATTERNS = [
    ("test/*", True),
    ("*", True),
    ("*/*/temp", True),
    ("sensors/...", True),
    ("...", True),
    ("a/.../*", True),
    ("test/tick", False),
    ("test", False),
    ("a/.../b", False),
    ("te*", False),
    ("test/**", False),
    ("test/....", False),
    ("", False),
]


class MatchesTests(SynchronousTestCase):
    """
    Tests for L{matches} and L{isPattern}.
    """

    def test_table(self) -> None:
        """
        Each pattern matches exactly the keys pycast's rules say it matches.
        """
        for pattern, key, expected in MATCHES:
            self.assertEqual(matches(pattern, key), expected, (pattern, key))

    def test_isPattern(self) -> None:
        """
        A key is a pattern when a level is C{*} or its last level is C{...}.
        """
        for key, expected in PATTERNS:
            self.assertEqual(isPattern(key), expected, key)

    def test_exactMatchesOnlyItself(self) -> None:
        """
        A key without wildcards matches only the identical key.
        """
        for pattern, _ in PATTERNS:
            if not isPattern(pattern):
                self.assertTrue(matches(pattern, pattern))
                self.assertFalse(matches(pattern, pattern + "/x"))
                self.assertFalse(matches(pattern, "x/" + pattern))


def trieNodes(index: PatternIndex[Any]) -> list[_Node[Any]]:
    """
    Every node of an index's trie, the root first.
    """
    nodes = [index._root]
    for node in nodes:
        if node.children is not None:
            nodes.extend(node.children.values())
    return nodes


def nodeNames(index: PatternIndex[Any]) -> list[str]:
    """
    The pattern prefix each node of an index's trie stands for (C{""} for
    the root), sorted.
    """
    names = []
    stack: list[tuple[_Node[Any], tuple[str, ...]]] = [(index._root, ())]
    while stack:
        node, levels = stack.pop()
        names.append("/".join(levels))
        if node.children is not None:
            for first, child in node.children.items():
                assert child.edge[0] == first
                assert child.depth == len(levels) + len(child.edge)
                stack.append((child, levels + child.edge))
    return sorted(names)


def assertEmpty(testCase: SynchronousTestCase, index: PatternIndex[Any]) -> None:
    """
    Assert that an index holds nothing, not even an empty node.
    """
    testCase.assertEqual(len(index), 0)
    testCase.assertEqual(index._exact, {})
    testCase.assertEqual(trieNodes(index), [index._root])
    testCase.assertTrue(index._root.isEmpty())


class NoScan(dict):  # type: ignore[type-arg]
    """
    A L{dict} that fails the test if anything goes through its keys instead
    of looking one up.
    """

    def _scan(self, *args: object) -> Any:
        raise AssertionError("scanned the children of a trie node")

    __iter__ = keys = values = items = _scan


class CountingGets(dict):  # type: ignore[type-arg]
    """
    A L{dict} that counts how often a child is looked up in it, in a list
    shared by every node of a trie.
    """

    def __init__(self, contents: dict[str, Any], counter: list[int]) -> None:
        super().__init__(contents)
        self.counter = counter

    def get(self, *args: Any) -> Any:
        self.counter[0] += 1
        return super().get(*args)


def lookups(index: PatternIndex[Any], key: str) -> int:
    """
    How many child lookups matching a key costs: a walk that visits a node
    looks up at most two of its children (the key's level and C{*}).
    """
    counter = [0]
    for node in trieNodes(index):
        if node.children is not None:
            node.children = CountingGets(node.children, counter)
    index.match(key)
    return counter[0]


def wildcardPatterns(patterns: list[str]) -> set[str]:
    """
    The distinct patterns among C{patterns} that hold a wildcard.
    """
    return {pattern for pattern in patterns if isPattern(pattern)}


def assertShape(testCase: SynchronousTestCase, index: PatternIndex[Any]) -> None:
    """
    Assert that an index's trie has the shape that bounds its size and its
    work: no empty container kept, every node but the root holding entries
    or two children at least, so at most two nodes per wildcard pattern.
    """
    nodes = trieNodes(index)
    held = 0
    for node in nodes:
        for container in (node.children, node.items, node.rest):
            testCase.assertTrue(container is None or len(container) > 0)
        held += (node.items is not None) + (node.rest is not None)
        if node is not index._root:
            testCase.assertTrue(
                node.items or node.rest or len(node.children or ()) >= 2
            )
    testCase.assertLessEqual(len(nodes), 2 * held + 1)


class PatternIndexTests(SynchronousTestCase):
    """
    Tests for L{PatternIndex}.
    """

    def test_empty(self) -> None:
        """
        A new index holds nothing and matches nothing.
        """
        index: PatternIndex[str] = PatternIndex()
        self.assertEqual(len(index), 0)
        self.assertEqual(index.match("test/tick"), [])
        self.assertEqual(index.patterns("test/tick"), [])

    def test_table(self) -> None:
        """
        For each example, the index finds an item exactly when the pattern
        matches the key.
        """
        for pattern, key, expected in MATCHES:
            index: PatternIndex[str] = PatternIndex()
            index.add(pattern, "item")
            self.assertEqual(
                index.match(key), ["item"] if expected else [], (pattern, key)
            )

    def test_exactUsesDict(self) -> None:
        """
        A pattern without wildcards is held in the exact table, not the trie.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("test/tick", "a")
        index.add("a/.../b", "b")
        self.assertEqual(set(index._exact), {"test/tick", "a/.../b"})
        self.assertEqual(trieNodes(index), [index._root])

    def test_everyMatchingItem(self) -> None:
        """
        All items of all matching patterns are found, and no others.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("test/tick", "exact")
        index.add("test/*", "star")
        index.add("*/tick", "starFirst")
        index.add("test/...", "rest")
        index.add("...", "all")
        index.add("test/now", "otherExact")
        index.add("other/*", "otherStar")
        index.add("test/tick/...", "deeper")
        self.assertEqual(
            sorted(index.match("test/tick")),
            ["all", "exact", "rest", "star", "starFirst"],
        )
        self.assertEqual(
            sorted(index.patterns("test/tick")),
            ["*/tick", "...", "test/*", "test/...", "test/tick"],
        )

    def test_firstComeFirstServed(self) -> None:
        """
        Matching items come in the order they were added, across patterns.
        """
        index: PatternIndex[str] = PatternIndex()
        for pattern, item in [
            ("test/*", "1"), ("...", "2"), ("test/tick", "3"), ("test/*", "4"),
            ("*/tick", "5"), ("test/tick", "6"), ("test/...", "7"),
        ]:
            index.add(pattern, item)
        self.assertEqual(index.match("test/tick"), ["1", "2", "3", "4", "5", "6", "7"])

    def test_oncePerPattern(self) -> None:
        """
        An item added under two matching patterns is found once for each.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("test/*", "x")
        index.add("test/tick", "x")
        self.assertEqual(index.match("test/tick"), ["x", "x"])
        self.assertEqual(len(index), 2)

    def test_addTwice(self) -> None:
        """
        Adding the same item under the same pattern again changes nothing,
        and keeps its first place.
        """
        index: PatternIndex[str] = PatternIndex()
        for pattern in ["test/tick", "test/*"]:
            index.add(pattern, "x")
            index.add(pattern, "y")
            index.add(pattern, "x")
        self.assertEqual(len(index), 4)
        self.assertEqual(index.match("test/tick"), ["x", "y", "x", "y"])
        index.remove("test/*", "x")
        self.assertEqual(index.match("test/tick"), ["x", "y", "y"])

    def test_len(self) -> None:
        """
        The length counts (pattern, item) entries, going up with add and
        down with remove.
        """
        index: PatternIndex[int] = PatternIndex()
        index.add("a", 1)
        index.add("a", 2)
        index.add("a/*", 1)
        index.add("a/...", 1)
        self.assertEqual(len(index), 4)
        index.remove("a", 1)
        index.remove("a/...", 1)
        self.assertEqual(len(index), 2)

    def test_remove(self) -> None:
        """
        A removed item is no longer found; the others still are.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("test/*", "a")
        index.add("test/*", "b")
        index.add("test/tick", "c")
        index.remove("test/*", "a")
        index.remove("test/tick", "c")
        self.assertEqual(index.match("test/tick"), ["b"])

    def test_removeAbsent(self) -> None:
        """
        Removing an entry that is not there does nothing, and creates no
        nodes.
        """
        index: PatternIndex[str] = PatternIndex()
        index.remove("test/tick", "x")
        index.remove("test/*", "x")
        index.remove("a/b/c/...", "x")
        assertEmpty(self, index)
        index.add("test/*", "x")
        index.add("test/tick", "x")
        index.remove("test/*", "y")
        index.remove("test/...", "x")
        index.remove("test/*/*", "x")
        index.remove("test/tock", "x")
        index.remove("test/tick", "y")
        self.assertEqual(len(index), 2)
        self.assertEqual(index.match("test/tick"), ["x", "x"])
        self.assertEqual(nodeNames(index), ["", "test/*"])

    def test_pruned(self) -> None:
        """
        Removing the last entry under a pattern drops the nodes left empty,
        and merges a node left with no entries and one child into that
        child.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("a/b/*/d", "deep")
        index.add("a/b/...", "rest")
        index.add("a/*", "star")
        index.add("a/b/c", "exact")
        self.assertEqual(nodeNames(index), ["", "a", "a/*", "a/b", "a/b/*/d"])
        index.remove("a/b/*/d", "deep")
        # a/b still holds "a/b/...".
        self.assertEqual(nodeNames(index), ["", "a", "a/*", "a/b"])
        index.remove("a/b/...", "rest")
        # "a" is left with one child: the two become one node.
        self.assertEqual(nodeNames(index), ["", "a/*"])
        index.remove("a/*", "star")
        index.remove("a/b/c", "exact")
        assertEmpty(self, index)

    def test_split(self) -> None:
        """
        A pattern that leaves a node's levels part way splits the node in
        two, and both patterns are still found.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("a/*/c/d/*", "long")
        self.assertEqual(nodeNames(index), ["", "a/*/c/d/*"])
        index.add("a/*/c", "prefix")
        self.assertEqual(nodeNames(index), ["", "a/*/c", "a/*/c/d/*"])
        index.add("a/*/x/...", "branch")
        self.assertEqual(
            nodeNames(index), ["", "a/*", "a/*/c", "a/*/c/d/*", "a/*/x"]
        )
        self.assertEqual(index.match("a/b/c/d/e"), ["long"])
        self.assertEqual(index.match("a/b/c"), ["prefix"])
        self.assertEqual(index.match("a/b/x/y"), ["branch"])
        self.assertEqual(index.match("a/b/c/x/e"), [])
        self.assertEqual(index.match("a/b/c/d"), [])
        index.remove("a/*/c", "prefix")
        self.assertEqual(nodeNames(index), ["", "a/*", "a/*/c/d/*", "a/*/x"])
        index.remove("a/*/x/...", "branch")
        self.assertEqual(nodeNames(index), ["", "a/*/c/d/*"])
        self.assertEqual(index.match("a/b/c/d/e"), ["long"])

    def test_matchReturnsCopy(self) -> None:
        """
        The caller may remove entries while it goes through a match, and
        still sees every item that matched.
        """
        index: PatternIndex[Deferred[str]] = PatternIndex()
        waiters: list[Deferred[str]] = [Deferred() for _ in range(4)]
        for waiter in waiters[:3]:
            index.add("test/tick", waiter)
        index.add("test/*", waiters[3])
        patternOf = {id(waiter): "test/tick" for waiter in waiters[:3]}
        patternOf[id(waiters[3])] = "test/*"
        seen = []
        for waiter in index.match("test/tick"):
            index.remove(patternOf[id(waiter)], waiter)
            waiter.callback("value")
            seen.append(waiter)
        self.assertEqual(seen, waiters)
        assertEmpty(self, index)

    def test_patternsWithEmptyLevels(self) -> None:
        """
        L{PatternIndex.patterns} names a pattern with an empty first level
        as it was added, distinct from the pattern C{...}.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("/...", "empty")
        index.add("...", "all")
        self.assertEqual(sorted(index.patterns("/a")), ["...", "/..."])
        self.assertEqual(index.patterns("a"), ["..."])

    def test_neverScans(self) -> None:
        """
        Matching looks children up by level; it never goes through all the
        patterns held at a level.
        """
        index: PatternIndex[int] = PatternIndex()
        for number in range(100):
            index.add(f"other{number}/*", number)
            index.add(f"test/other{number}/...", number)
        index.add("test/*", 1000)
        index.add("*/tick", 1001)
        for node in trieNodes(index):
            if node.children is not None:
                node.children = NoScan(node.children)
        self.assertEqual(index.match("test/tick"), [1000, 1001])
        self.assertEqual(index.match("test/other5/x/y"), [5])
        index.remove("test/*", 1000)
        index.remove("test/other5/...", 5)
        self.assertEqual(index.match("test/tick"), [1001])

    def test_keyWithWildcardLevels(self) -> None:
        """
        A key whose levels read C{*} or C{...} is matched by the same rules
        as any other key, each entry once.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("a/*", "star")
        index.add("a/...", "rest")
        index.add("*/...", "both")
        self.assertEqual(index.match("a/*"), ["star", "rest", "both"])
        self.assertEqual(index.match("a/..."), ["star", "rest", "both"])


LEVELS = st.sampled_from(["a", "b", "c", "*", "...", ""])
KEY_LEVELS = st.sampled_from(["a", "b", "c", "*", "...", ""])


def keys(levels: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """
    C{/}-joined keys of one to eight levels.
    """
    return st.lists(levels, min_size=1, max_size=8).map("/".join)


class PatternIndexFuzzTests(SynchronousTestCase):
    """
    Property tests: L{PatternIndex} agrees with L{matches}, and its trie
    keeps the shape that bounds its size and its work.
    """

    @FUZZ
    @given(st.lists(keys(LEVELS), max_size=20), st.lists(keys(KEY_LEVELS), max_size=10))
    def test_agreesWithMatches(self, patterns: list[str], probes: list[str]) -> None:
        """
        For any patterns and keys, the index finds, in insertion order, the
        items of exactly the patterns that L{matches} says match, and names
        each pattern as it was added.
        """
        index: PatternIndex[int] = PatternIndex()
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
        assertShape(self, index)
        self.assertEqual(index.counts(), dict(Counter(patterns)))
        for key in probes + patterns:
            self.assertEqual(
                index.match(key),
                [n for n, pattern in enumerate(patterns) if matches(pattern, key)],
                key,
            )
            self.assertEqual(
                sorted(index.patterns(key)),
                sorted({pattern for pattern in patterns if matches(pattern, key)}),
                key,
            )

    @FUZZ
    @given(st.lists(keys(LEVELS), max_size=20), st.lists(keys(KEY_LEVELS), max_size=10))
    def test_workBounded(self, patterns: list[str], probes: list[str]) -> None:
        """
        For any patterns and key, matching looks up at most four children
        per wildcard pattern held (two nodes each, two lookups per node),
        however the patterns share or do not share their levels.
        """
        index: PatternIndex[int] = PatternIndex()
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
        bound = 2 * (2 * len(wildcardPatterns(patterns)) + 1)
        for key in probes + patterns:
            self.assertLessEqual(lookups(index, key), bound, key)

    @FUZZ
    @given(
        st.lists(
            st.tuples(st.booleans(), keys(LEVELS), st.integers(0, 3)), max_size=40
        ),
        st.lists(keys(KEY_LEVELS), max_size=5),
    )
    def test_addRemoveLeavesNothing(
        self, operations: list[tuple[bool, str, int]], probes: list[str]
    ) -> None:
        """
        Any sequence of adds and removes keeps the index in step with a
        plain set of entries and its trie in shape, and removing every entry
        leaves no entry and no node behind.
        """
        index: PatternIndex[int] = PatternIndex()
        model: dict[tuple[str, int], None] = {}
        for isAdd, pattern, item in operations:
            if isAdd:
                index.add(pattern, item)
                model.setdefault((pattern, item))
            else:
                index.remove(pattern, item)
                model.pop((pattern, item), None)
            self.assertEqual(len(index), len(model))
            assertShape(self, index)
        self.assertEqual(
            index.counts(), dict(Counter(pattern for pattern, _ in model))
        )
        for key in probes:
            self.assertEqual(
                index.match(key),
                [item for pattern, item in model if matches(pattern, key)],
            )
        for pattern, item in list(model):
            index.remove(pattern, item)
        assertEmpty(self, index)


def binaryPatterns(count: int, levels: int, last: str = "z") -> list[str]:
    """
    The patterns of finding 8 of issue 9: C{count} patterns of C{levels}
    levels whose first levels spell each number below C{count} in binary
    (C{a} for 1, C{*} for 0), then C{*} up to the last level, C{last}.  A
    key C{a/a/.../a} one level longer matches every prefix of every one of
    them, but none of them whole.
    """
    bits = max(1, (count - 1).bit_length())
    return [
        "/".join(
            ["a" if number >> bit & 1 else "*" for bit in range(bits)]
            + ["*"] * (levels - bits - 1)
            + [last]
        )
        for number in range(count)
    ]


def heldBytes(patterns: list[str]) -> float:
    """
    The bytes an index holds, as tracemalloc counts them, per pattern added
    (the pattern strings themselves made beforehand, as a request makes
    them).
    """
    wasTracing = tracemalloc.is_tracing()
    if not wasTracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index: PatternIndex[int] = PatternIndex()
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not wasTracing:
            tracemalloc.stop()
    del index
    return held / len(patterns)


class PatternIndexBoundsTests(SynchronousTestCase):
    """
    What a stranger's patterns can make the index hold and do (findings 6
    and 8 of issue 9), counted rather than timed.
    """

    def test_binaryPrefixWork(self) -> None:
        """
        A deep key behind patterns that share every prefix with it costs at
        most four child lookups per pattern held, whatever the depth: not
        one per pattern and level.
        """
        for levels in (32, 126):
            patterns = binaryPatterns(256, levels)
            index: PatternIndex[int] = PatternIndex()
            for number, pattern in enumerate(patterns):
                index.add(pattern, number)
            assertShape(self, index)
            missing = "/".join(["a"] * levels)
            matching = "/".join(["a"] * (levels - 1) + ["z"])
            for key in (missing, matching):
                self.assertLessEqual(
                    lookups(index, key), 2 * (2 * len(patterns) + 1), key
                )
            self.assertEqual(index.match(missing), [])
            self.assertEqual(index.match(matching), list(range(len(patterns))))

    def test_visitsOnlyWhatCanMatch(self) -> None:
        """
        Patterns of other first levels cost a key nothing: the walk does not
        go below a level that differs.
        """
        index: PatternIndex[int] = PatternIndex()
        for number, pattern in enumerate(binaryPatterns(256, 126)):
            index.add("other/" + pattern, number)
        index.add("a/*", 1000)
        self.assertLessEqual(lookups(index, "a/b"), 4)
        self.assertEqual(index.match("a/b"), [1000])

    def test_deepPatternBytes(self) -> None:
        """
        What a held pattern costs grows linearly with its length: 2,000
        distinct 126-level patterns hold well under 32 bytes per character
        each (they held about 94 KB each when every node kept its whole
        prefix).
        """
        patterns = ["/".join([f"p{number}"] + ["*"] * 125) for number in range(2000)]
        perPattern = heldBytes(patterns)
        self.assertLess(perPattern, 32 * len(patterns[-1]) + 1024)

    def test_bytesLinear(self) -> None:
        """
        Doubling the depth of held patterns at most about doubles what each
        one costs, whatever mix of literal and C{*} levels they hold.
        """
        def shape(number: int, levels: int) -> str:
            return "/".join(
                [f"p{number}"] + ["*" if level % 3 else "lit" for level in range(levels - 1)]
            )

        shallow = heldBytes([shape(number, 32) for number in range(500)])
        deep = heldBytes([shape(number, 64) for number in range(500)])
        self.assertLess(deep, 2.2 * shallow)


class ValidatePatternTests(SynchronousTestCase):
    """
    Tests for L{validatePattern}: the depth bound on wildcard patterns from
    requests.
    """

    def test_deepPatternRefused(self) -> None:
        """
        A pattern of more than L{MAX_PATTERN_LEVELS} levels is refused with a
        one-line message that says the bound.
        """
        for pattern in [
            "/".join(["a"] * MAX_PATTERN_LEVELS + ["*"]),
            "/".join(["*"] * (MAX_PATTERN_LEVELS + 1)),
            "/".join(["a"] * MAX_PATTERN_LEVELS + ["..."]),
            "/".join(["a"] * 126 + ["..."]),
        ]:
            validateKey(pattern, allowWildcards=True)
            with self.assertRaises(BadKey) as caught:
                validatePattern(pattern)
            message = str(caught.exception)
            self.assertNotIn("\n", message)
            self.assertIn(f"at most {MAX_PATTERN_LEVELS} levels", message)
            self.assertIn(str(pattern.count("/") + 1), message)

    def test_boundAllowed(self) -> None:
        """
        A pattern of exactly L{MAX_PATTERN_LEVELS} levels, and a key without
        wildcards of any depth the key rules allow, pass unchanged.
        """
        for key in [
            "/".join(["*"] * MAX_PATTERN_LEVELS),
            "/".join(["a"] * (MAX_PATTERN_LEVELS - 1) + ["..."]),
            "/".join(["a"] * 128),
            "a/.../b/" + "/".join(["c"] * 100),
            "test/*",
        ]:
            self.assertIs(validatePattern(key), key)


class CountsTests(SynchronousTestCase):
    """
    L{PatternIndex.counts} tells how many items each pattern holds.
    """

    def test_counts(self) -> None:
        """
        Exact and wildcard patterns are counted, and emptied ones vanish.
        """
        index: PatternIndex[str] = PatternIndex()
        for pattern, item in [("a", "1"), ("a", "2"), ("t/*", "3"), ("s/...", "4"), ("...", "5")]:
            index.add(pattern, item)
        self.assertEqual(index.counts(), {"a": 2, "t/*": 1, "s/...": 1, "...": 1})
        index.remove("t/*", "3")
        index.remove("a", "1")
        self.assertEqual(index.counts(), {"a": 1, "s/...": 1, "...": 1})
        self.assertEqual(sorted(index.items()), [("...", "5"), ("a", "2"), ("s/...", "4")])
