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

L{PatternIndex} holds items (waiters) under patterns so that, for a datum's
key, it finds every matching item without looking at unrelated ones: exact
patterns sit in a L{dict}, wildcard patterns in a trie with one node per
level.
"""

from __future__ import annotations

from typing import Generic, Hashable, Iterator, TypeVar

__all__ = ["STAR", "REST", "isPattern", "matches", "PatternIndex"]

STAR = "*"
"""
The level that matches exactly one level.
"""

REST = "..."
"""
The last level that matches one or more levels.
"""

T = TypeVar("T", bound=Hashable)


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


class _Node(Generic[T]):
    """
    One level of the trie of wildcard patterns.

    The node reached from the root by following the levels C{l1 ... lk}
    stands for the pattern prefix C{l1/.../lk}.

    @ivar path: This node's pattern prefix (C{""} for the root, and also for
        the root's child for an empty first level).
    @ivar restPath: The pattern C{<path>/...} (C{...} for the root).
    @ivar children: The next level: literal levels and L{STAR} as keys.
    @ivar items: The items of the pattern L{path}, each mapped to its
        insertion number.
    @ivar rest: The items of the pattern L{restPath}, likewise.
    """

    __slots__ = ("path", "restPath", "children", "items", "rest")

    def __init__(self, path: str, isRoot: bool = False) -> None:
        self.path = path
        self.restPath = REST if isRoot else f"{path}/{REST}"
        self.children: dict[str, _Node[T]] = {}
        self.items: dict[T, int] = {}
        self.rest: dict[T, int] = {}

    def isEmpty(self) -> bool:
        """
        @return: L{True} if nothing hangs from this node any more.
        """
        return not (self.children or self.items or self.rest)


class PatternIndex(Generic[T]):
    """
    Items held under keys that may hold wildcards, found by key.

    An entry is a C{(pattern, item)} pair; adding the same pair again changes
    nothing.  One item may be held under several patterns, and is then
    matched once for each matching one.  Matches come first-come
    first-served: in the order their entries were added.

    Finding the items for a key costs one L{dict} lookup for the exact
    patterns and a walk of the trie that at each level follows only the
    literal child of that name and the C{*} child: it never looks at
    patterns that cannot match.
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[T, int]] = {}
        self._root: _Node[T] = _Node("", isRoot=True)
        self._length = 0
        self._counter = 0

    def __len__(self) -> int:
        """
        @return: The number of C{(pattern, item)} entries.
        """
        return self._length

    def _entries(self, pattern: str, create: bool) -> dict[T, int] | None:
        """
        Find the entries held under a pattern.

        @param pattern: The pattern.
        @param create: Create what is missing (for L{add}) rather than
            answer L{None}.
        @return: The pattern's items mapped to their insertion numbers.
        """
        if not isPattern(pattern):
            entries = self._exact.get(pattern)
            if entries is None and create:
                entries = self._exact[pattern] = {}
            return entries
        levels = pattern.split("/")
        isRest = levels[-1] == REST
        if isRest:
            levels.pop()
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                if not create:
                    return None
                path = f"{node.path}/{level}" if node is not self._root else level
                child = node.children[level] = _Node(path)
            node = child
        return node.rest if isRest else node.items

    def add(self, pattern: str, item: T) -> None:
        """
        Hold an item under a pattern.

        @param pattern: A key, which may hold wildcards.
        @param item: The item, such as a waiting L{Deferred}.
        """
        entries = self._entries(pattern, create=True)
        assert entries is not None
        if item not in entries:
            self._counter += 1
            entries[item] = self._counter
            self._length += 1

    def remove(self, pattern: str, item: T) -> None:
        """
        Stop holding an item under a pattern, and drop whatever part of the
        index is left empty.  Removing an entry that is not there does
        nothing.

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
        trail = [self._root]
        for level in levels:
            child = trail[-1].children.get(level)
            if child is None:
                return
            trail.append(child)
        entries = trail[-1].rest if isRest else trail[-1].items
        if item not in entries:
            return
        del entries[item]
        self._length -= 1
        for depth in range(len(levels), 0, -1):
            if not trail[depth].isEmpty():
                break
            del trail[depth - 1].children[levels[depth - 1]]

    def _walk(self, key: str) -> Iterator[tuple[str, dict[T, int]]]:
        """
        Find the patterns that match a key.

        @param key: A datum's key.
        @return: For each matching pattern that holds items, the pattern and
            its items.
        """
        exact = self._exact.get(key)
        if exact:
            yield key, exact
        if not self._root.children and not self._root.rest:
            return
        levels = key.split("/")
        frontier = [self._root]
        for level in levels:
            following = []
            for node in frontier:
                if node.rest:
                    # At least this level remains for the "...".
                    yield node.restPath, node.rest
                literal = node.children.get(level)
                if literal is not None:
                    following.append(literal)
                if level != STAR:
                    star = node.children.get(STAR)
                    if star is not None:
                        following.append(star)
            if not following:
                return
            frontier = following
        for node in frontier:
            if node.items:
                yield node.path, node.items

    def match(self, key: str) -> list[T]:
        """
        Find the items whose pattern matches a key.

        @param key: A datum's key.
        @return: A new list (so the caller may remove entries while it goes
            through it): each matching entry's item, in the order the entries
            were added.
        """
        found = list(self._walk(key))
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
        return [pattern for pattern, _ in self._walk(key)]

    def _allEntries(self) -> Iterator[tuple[str, dict[T, int]]]:
        """
        Every pattern that holds items, with its entries: the exact patterns,
        then a walk of the whole trie.
        """
        yield from self._exact.items()
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.items:
                yield node.path, node.items
            if node.rest:
                yield node.restPath, node.rest
            stack.extend(node.children.values())

    def counts(self) -> dict[str, int]:
        """
        How many items each pattern holds (for statistics: it visits every
        pattern, so it is not for the path of a datum).

        @return: Each pattern holding items, mapped to how many.
        """
        return {pattern: len(entries) for pattern, entries in self._allEntries()}

    def items(self) -> list[tuple[str, T]]:
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
