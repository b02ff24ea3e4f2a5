# -*- test-case-name: tests.test_wildcard -*-
"""
Tests for L{artcast._wildcard}.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from artcast._wildcard import PatternIndex, _Node, isPattern, matches

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
        nodes.extend(node.children.values())
    return nodes


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
        self.assertEqual(len(trieNodes(index)), 3)

    def test_pruned(self) -> None:
        """
        Removing the last entry under a pattern drops the nodes left empty,
        and only those.
        """
        index: PatternIndex[str] = PatternIndex()
        index.add("a/b/*/d", "deep")
        index.add("a/b/...", "rest")
        index.add("a/*", "star")
        index.add("a/b/c", "exact")
        self.assertEqual(
            sorted(node.path for node in trieNodes(index)),
            ["", "a", "a/*", "a/b", "a/b/*", "a/b/*/d"],
        )
        index.remove("a/b/*/d", "deep")
        # root, a, a/*, a/b remain: a/b still holds "a/b/...".
        self.assertEqual(
            sorted(node.path for node in trieNodes(index)), ["", "a", "a/*", "a/b"]
        )
        index.remove("a/b/...", "rest")
        self.assertEqual(sorted(node.path for node in trieNodes(index)), ["", "a", "a/*"])
        index.remove("a/*", "star")
        index.remove("a/b/c", "exact")
        assertEmpty(self, index)

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
    C{/}-joined keys of one to five levels.
    """
    return st.lists(levels, min_size=1, max_size=5).map("/".join)


class PatternIndexFuzzTests(SynchronousTestCase):
    """
    Property tests: L{PatternIndex} agrees with L{matches}.
    """

    @FUZZ
    @given(st.lists(keys(LEVELS), max_size=20), st.lists(keys(KEY_LEVELS), max_size=10))
    def test_agreesWithMatches(self, patterns: list[str], probes: list[str]) -> None:
        """
        For any patterns and keys, the index finds, in insertion order, the
        items of exactly the patterns that L{matches} says match.
        """
        index: PatternIndex[int] = PatternIndex()
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
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
        plain set of entries, and removing every entry leaves no entry and
        no node behind.
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
        for key in probes:
            self.assertEqual(
                index.match(key),
                [item for pattern, item in model if matches(pattern, key)],
            )
        for pattern, item in list(model):
            index.remove(pattern, item)
        assertEmpty(self, index)


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
