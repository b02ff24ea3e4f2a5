# -*- test-case-name: tests.test_wildcard -*-
"""
Wildcard keys: pycast's matching rules and an index of subscriptions.

A key is a sequence of levels separated by C{/}.  In a pattern:

  - a level that is exactly C{*} matches exactly one level, any level
    (C{test/*} matches C{test/tick}, not C{test/a/b}, not C{test});
    C{*} may stand at any level, several times (C{*/*/temp});
  - a last level that is exactly C{...} matches one or more levels
    (C{sensors/...} matches C{sensors/a} and C{sensors/a/b}, not
    C{sensors});
  - every other level, including C{...} anywhere but last and levels that
    merely contain C{*} (C{te*}), is literal and compares exactly, case
    included.

A pattern without wildcards matches only the identical key.

A wildcard pattern from a request has at most L{MAX_PATTERN_LEVELS} levels
(its C{...} counted): L{validatePattern} refuses deeper ones.  The index
itself takes patterns of any depth.

L{PatternIndex} holds items (waiters) under patterns so that, for a datum's
key, it finds every matching item without looking at unrelated ones: exact
patterns sit in a L{dict}, wildcard patterns in a trie of levels whose
chains of single children are merged into one node (a radix trie).  So the
trie has at most two nodes per pattern held, whatever the patterns' depth;
a node holds only its own levels, never the whole pattern, so what a pattern
costs grows linearly with its length; and matching a key visits each node at
most once, checking all of the node's levels in one step.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Callable, Generic, Hashable, Iterator, TypeVar

from artcast.wire import BadKey

__all__ = [
    "STAR", "REST", "MAX_PATTERN_LEVELS", "isPattern", "matches",
    "validatePattern", "PatternIndex",
]

STAR = "*"
"""
The level that matches exactly one level.
"""

REST = "..."
"""
The last level that matches one or more levels.
"""

MAX_PATTERN_LEVELS = 32
"""
The most levels a wildcard pattern from a request may have, its C{...}
counted.  Keys themselves are at most 256 characters, so up to 128 levels; a
pattern ending in C{...} still matches keys of any depth.
"""

_T = TypeVar("_T", bound=Hashable)


def isPattern(key: str) -> bool:
    """
    Does a key hold a wildcard?

    @param key: A key from a request.
    @return: L{True} if some level is C{*} or the last level is C{...}.
    """
    levels = key.split("/")
    return levels[-1] == REST or STAR in levels


def matches(pattern: str, key: str) -> bool:
    """
    Does a pattern match a key?  This is the plain reference matcher;
    L{PatternIndex} must agree with it.

    @param pattern: A key that may hold wildcards.
    @param key: A datum's key.
    @return: L{True} if C{pattern} matches C{key}.
    """
    patternLevels = pattern.split("/")
    keyLevels = key.split("/")
    if patternLevels[-1] == REST:
        patternLevels.pop()
        if len(keyLevels) <= len(patternLevels):
            return False
        keyLevels = keyLevels[: len(patternLevels)]
    elif len(keyLevels) != len(patternLevels):
        return False
    return all(
        wanted == STAR or wanted == level
        for wanted, level in zip(patternLevels, keyLevels)
    )



def validatePattern(key: str) -> str:
    """
    Check a key from a request against the limits of L{PatternIndex}: a
    wildcard pattern has at most L{MAX_PATTERN_LEVELS} levels.  A key without
    wildcards is not limited here (only by the key rules of
    L{artcast.wire.validateKey}, which it must pass first).

    @param key: A key or pattern from a request.
    @return: C{key}, unchanged.
    @raise BadKey: if C{key} is a pattern with too many levels.
    """
    levels = key.count("/") + 1
    if levels > MAX_PATTERN_LEVELS and isPattern(key):
        raise BadKey(
            f"a pattern with wildcards may have at most {MAX_PATTERN_LEVELS} "
            f"levels, this one has {levels}"
        )
    return key


def _edgeCheck(
    start: int, edge: tuple[str, ...]
) -> tuple[Callable[[list[str]], object] | None, object]:
    """
    How to tell whether a key's levels match a node's levels (but the
    first, which the node is looked up by): the key's levels at the places
    where the node has a literal level, fetched all at once.

    @param start: How many levels come before the node's first one.
    @param edge: The node's levels.
    @return: A getter to call with the key's levels and what it must answer,
        or C{(None, None)} if every level but the first is C{*}.
    """
    offsets = [offset for offset in range(1, len(edge)) if edge[offset] != STAR]
    if not offsets:
        return None, None
    wanted = itemgetter(*offsets)(edge)
    return itemgetter(*[start + offset for offset in offsets]), wanted


class _Node(Generic[_T]):
    """
    One node of the trie of wildcard patterns: one or more levels.

    A node stands for the pattern prefix made of the levels on the way to
    it from the root, its own included.  Every node but the root holds items
    or has at least two children, so the trie has at most two nodes per
    pattern held.

    @ivar depth: How many levels lead to this node, its own included (C{0}
        for the root).
    @ivar edge: This node's own levels (C{()} for the root).  The first is
        its key in its parent's L{children}: a literal level or L{STAR}.
    @ivar getter: Fetches, from a key's levels, the levels at the places
        where L{edge} has a literal level after its first, or L{None} if it
        has none.
    @ivar wanted: What L{getter} must fetch for the key to match.
    @ivar children: The nodes below, by their first level; L{None} if none.
    @ivar items: The items of the pattern this node stands for, each mapped
        to its insertion number; L{None} if none.
    @ivar rest: The items of the pattern C{<prefix>/...}, likewise.
    """

    __slots__ = ("depth", "edge", "getter", "wanted", "children", "items", "rest")

    def __init__(self, start: int, edge: tuple[str, ...]) -> None:
        self.children: dict[str, _Node[_T]] | None = None
        self.items: dict[_T, int] | None = None
        self.rest: dict[_T, int] | None = None
        self.reshape(start, edge)

    def reshape(self, start: int, edge: tuple[str, ...]) -> None:
        """
        Give this node new levels, as when the trie splits or merges nodes.

        @param start: How many levels come before C{edge}.
        @param edge: The node's levels.
        """
        self.depth = start + len(edge)
        self.edge = edge
        self.getter, self.wanted = _edgeCheck(start, edge)

    def isEmpty(self) -> bool:
        """
        @return: L{True} if nothing hangs from this node any more.
        """
        return not (self.children or self.items or self.rest)


def _restName(name: str, node: _Node[_T], root: _Node[_T]) -> str:
    """
    The name of the C{...} pattern held at a node.
    """
    return f"{name}/{REST}" if node is not root else REST


def _childName(name: str, child: _Node[_T], parent: _Node[_T], root: _Node[_T]) -> str:
    """
    The name of the pattern prefix a child stands for.
    """
    levels = "/".join(child.edge)
    return f"{name}/{levels}" if parent is not root else levels


class PatternIndex(Generic[_T]):
    """
    Items held under keys that may hold wildcards, found by key.

    An entry is a C{(pattern, item)} pair; adding the same pair again changes
    nothing.  One item may be held under several patterns, and is then
    matched once for each matching one.  Matches come first-come
    first-served: in the order their entries were added.

    Finding the items for a key costs one L{dict} lookup for the exact
    patterns and a walk of the trie that from each node follows only the
    child named by the key's next level and the child of C{*}, each checked
    against the key's levels at once: it never looks at patterns that cannot
    match, and it visits each node at most once, so one key costs at most a
    small constant per wildcard pattern held (two nodes each), however deep
    the patterns are, plus one step per matching entry.
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[_T, int]] = {}
        self._root: _Node[_T] = _Node(0, ())
        self._length = 0
        self._counter = 0

    def __len__(self) -> int:
        """
        @return: The number of C{(pattern, item)} entries.
        """
        return self._length

    def _insert(self, levels: list[str]) -> _Node[_T]:
        """
        Find the node that stands for a pattern prefix, making it (and
        splitting a node in two) if it is not there yet.

        @param levels: The prefix's levels, at least one.
        @return: The node.
        """
        node = self._root
        depth = 0
        count = len(levels)
        while depth < count:
            children = node.children
            if children is None:
                children = node.children = {}
            first = levels[depth]
            child = children.get(first)
            if child is None:
                child = children[first] = _Node(depth, tuple(levels[depth:]))
                return child
            edge = child.edge
            limit = min(len(edge), count - depth)
            same = 1
            while same < limit and edge[same] == levels[depth + same]:
                same += 1
            if same < len(edge):
                # The prefix leaves this node's levels after "same" of them:
                # a new node takes those, and the old one keeps the rest.
                middle: _Node[_T] = _Node(depth, edge[:same])
                child.reshape(depth + same, edge[same:])
                middle.children = {edge[same]: child}
                children[first] = middle
                child = middle
            node = child
            depth += same
        return node

    def _trail(self, levels: list[str]) -> list[_Node[_T]] | None:
        """
        Find the node that stands for a pattern prefix, and the nodes on the
        way to it.

        @param levels: The prefix's levels.
        @return: The nodes from the root to the prefix's node, or L{None} if
            no node stands for that prefix.
        """
        trail = [self._root]
        depth = 0
        count = len(levels)
        while depth < count:
            children = trail[-1].children
            child = children.get(levels[depth]) if children is not None else None
            if child is None:
                return None
            edge = child.edge
            if child.depth > count or tuple(levels[depth : child.depth]) != edge:
                return None
            trail.append(child)
            depth = child.depth
        return trail

    def add(self, pattern: str, item: _T) -> None:
        """
        Hold an item under a pattern.

        @param pattern: A key, which may hold wildcards.
        @param item: The item, such as a waiting L{Deferred}.
        """
        if not isPattern(pattern):
            entries = self._exact.get(pattern)
            if entries is None:
                entries = self._exact[pattern] = {}
        else:
            levels = pattern.split("/")
            if levels[-1] == REST:
                levels.pop()
                node = self._insert(levels) if levels else self._root
                entries = node.rest
                if entries is None:
                    entries = node.rest = {}
            else:
                node = self._insert(levels)
                entries = node.items
                if entries is None:
                    entries = node.items = {}
        if item not in entries:
            self._counter += 1
            entries[item] = self._counter
            self._length += 1

    def remove(self, pattern: str, item: _T) -> None:
        """
        Stop holding an item under a pattern, and drop or merge whatever part
        of the index that leaves empty or with a single child.  Removing an
        entry that is not there does nothing.

        @param pattern: The pattern the item was added under.
        @param item: The item.
        """
        if not isPattern(pattern):
            entries = self._exact.get(pattern)
            if entries is None or item not in entries:
                return
            del entries[item]
            self._length -= 1
            if not entries:
                del self._exact[pattern]
            return
        levels = pattern.split("/")
        isRest = levels[-1] == REST
        if isRest:
            levels.pop()
        trail = self._trail(levels)
        if trail is None:
            return
        node = trail[-1]
        entries = node.rest if isRest else node.items
        if entries is None or item not in entries:
            return
        del entries[item]
        self._length -= 1
        if entries:
            return
        if isRest:
            node.rest = None
        else:
            node.items = None
        self._prune(trail)

    def _prune(self, trail: list[_Node[_T]]) -> None:
        """
        Drop the nodes at the end of a trail that hold nothing any more, and
        merge a node that holds no items and has one child with that child.

        @param trail: The nodes from the root to the one that lost its last
            item.
        """
        for depth in range(len(trail) - 1, 0, -1):
            node, parent = trail[depth], trail[depth - 1]
            if node.items or node.rest:
                return
            children = node.children
            assert parent.children is not None
            if children:
                if len(children) == 1:
                    _, child = children.popitem()
                    child.reshape(parent.depth, node.edge + child.edge)
                    parent.children[node.edge[0]] = child
                return
            del parent.children[node.edge[0]]
            if not parent.children:
                parent.children = None

    def _walk(self, key: str, named: bool) -> Iterator[tuple[str, dict[_T, int]]]:
        """
        Find the patterns that match a key.

        @param key: A datum's key.
        @param named: Whether the caller wants each pattern's name (made on
            the way); if not, the names are C{""}.
        @return: For each matching pattern that holds items, the pattern and
            its items.
        """
        exact = self._exact.get(key)
        if exact:
            yield key, exact
        root = self._root
        if root.children is None and root.rest is None:
            return
        levels = key.split("/")
        count = len(levels)
        stack = [root]
        # The names of the nodes on the stack, only if they are wanted.
        names: list[str] | None = [""] if named else None
        name = ""
        while stack:
            node = stack.pop()
            if names is not None:
                name = names.pop()
            depth = node.depth
            if depth == count:
                if node.items:
                    yield name, node.items
                continue
            if node.rest:
                # At least one level remains for the "...".
                yield (_restName(name, node, root) if named else ""), node.rest
            children = node.children
            if children is None:
                continue
            level = levels[depth]
            for child in (
                children.get(level), children.get(STAR) if level != STAR else None
            ):
                if child is None or child.depth > count:
                    continue
                getter = child.getter
                if getter is not None and getter(levels) != child.wanted:
                    continue
                stack.append(child)
                if names is not None:
                    names.append(_childName(name, child, node, root))

    def match(self, key: str) -> list[_T]:
        """
        Find the items whose pattern matches a key.

        @param key: A datum's key.
        @return: A new list (so the caller may remove entries while it goes
            through it): each matching entry's item, in the order the entries
            were added.
        """
        found = list(self._walk(key, False))
        if not found:
            return []
        if len(found) == 1:
            return list(found[0][1])
        numbered = [
            (number, item) for _, entries in found for item, number in entries.items()
        ]
        numbered.sort(key=lambda pair: pair[0])
        return [item for _, item in numbered]

    def patterns(self, key: str) -> list[str]:
        """
        Find the patterns that match a key.

        @param key: A datum's key.
        @return: Each pattern that holds at least one item and matches C{key}.
        """
        return [pattern for pattern, _ in self._walk(key, True)]

    def _allEntries(self) -> Iterator[tuple[str, dict[_T, int]]]:
        """
        Every pattern that holds items, with its entries: the exact patterns,
        then a walk of the whole trie.
        """
        yield from self._exact.items()
        root = self._root
        stack = [(root, "")]
        while stack:
            node, name = stack.pop()
            if node.items:
                yield name, node.items
            if node.rest:
                yield _restName(name, node, root), node.rest
            if node.children:
                stack.extend(
                    (child, _childName(name, child, node, root))
                    for child in node.children.values()
                )

    def counts(self) -> dict[str, int]:
        """
        How many items each pattern holds (for statistics: it visits every
        pattern, so it is not for the path of a datum).

        @return: Each pattern holding items, mapped to how many.
        """
        return {pattern: len(entries) for pattern, entries in self._allEntries()}

    def items(self) -> list[tuple[str, _T]]:
        """
        Every C{(pattern, item)} entry (it visits every pattern: for shutting
        down, not for the path of a datum).

        @return: A new list, so the caller may remove entries as it goes.
        """
        return [
            (pattern, item)
            for pattern, entries in self._allEntries()
            for item in entries
        ]
