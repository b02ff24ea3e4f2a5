# -*- test-case-name: tests.test_wire -*-
"""
What a receiving server keeps of the sources it hears: values sent in
fragments, put back together (L{Reassembler}), and each source's place in
its sequence (L{SourceTracker}), which says whether a stamped datum is new,
a replay, a gap or a restart.

Sources and clients never need this: the datagram formats themselves are in
L{artcast.wire}.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from typing import Any, Callable, Iterable, Protocol

import attr

from artcast.server.defaults import DEFAULT_MAX_HELD, FRAGMENT_MEMORY, MAX_SOURCES
from artcast.wire import (
    MAX_PARTS,
    MAX_VALUE_SIZE,
    BadDatagram,
    DataMessage,
    DatumId,
    Fragment,
    Stamp,
    loadJSON,
)

__all__ = [
    "FRAGMENT_TIMEOUT",
    "Hole",
    "MAX_AHEAD",
    "MAX_PENDING",
    "MAX_PENDING_PER_ADDRESS",
    "MAX_PENDING_PER_SOURCE",
    "RECENT",
    "Reassembler",
    "SourceTracker",
    "walkLost",
]


# --- fragments -----------------------------------------------------------------------

FRAGMENT_TIMEOUT = 5.0
"""Seconds a value's fragments may take to arrive, from its first one."""

MAX_PENDING = 64
"""The most values being put together at once."""

MAX_PENDING_PER_SOURCE = 4
"""The most values one source (C{src}) may have being put together at once."""

MAX_PENDING_PER_ADDRESS = 16
"""The most values one sender address may have being put together at once."""

_CHUNK_OVERHEAD = 100
"""What holding a chunk costs beyond its text, in bytes (a str and a slot)."""


class _Clock(Protocol):
    def seconds(self) -> float: ...


@attr.s(slots=True, auto_attribs=True)
class _Partial:
    key: str
    stamp: Stamp
    parts: int
    started: float
    sender: str = ""
    chunks: dict[int, str] = attr.Factory(dict)
    size: int = 0
    cost: int = 0


def _noDrop(reason: str) -> None:
    pass


class Reassembler:
    """
    Puts fragmented values back together, within bounds that no sender can
    use to push out another's value.

    A value not complete C{timeout} seconds after its first fragment is
    dropped (C{"fragments-expired"}); expiry is checked on each L{feed}, so
    no timer is needed.  The values in progress are bounded in number
    (C{maxPending}) and in bytes held (C{maxBytes}, every chunk's UTF-8
    text plus a fixed overhead), per source (C{maxPerSource}) and per sender
    address (C{maxPerAddress}).  When a new fragment would go past a bound,
    the server makes room from whoever holds the most: the oldest value of
    the source (within the address) holding the most, counted as
    C{"fragments-evicted"}; on a tie the newcomer is the one refused.  So a
    flood of one-fragment sets from one source, or from one address, evicts
    only its own sets, never a value of another source in progress.

    Check a fragment's stamp (freshness, replay: L{SourceTracker.peek})
    before feeding it, so that stale or replayed fragments take no memory.

    @ivar expired: values dropped because their fragments did not all come
        in time.
    @ivar evicted: values (and newcomers) dropped to stay within the bounds.
    """

    def __init__(
        self,
        clock: _Clock,
        timeout: float = FRAGMENT_TIMEOUT,
        maxPending: int = MAX_PENDING,
        maxValueSize: int = MAX_VALUE_SIZE,
        maxBytes: int = FRAGMENT_MEMORY,
        maxPerSource: int = MAX_PENDING_PER_SOURCE,
        maxPerAddress: int = MAX_PENDING_PER_ADDRESS,
        onDrop: Callable[[str], None] = _noDrop,
    ) -> None:
        """
        @param onDrop: called with C{"fragments-evicted"} or
            C{"fragments-expired"} for each value dropped so (for statistics).
        """
        self._clock = clock
        self._timeout = timeout
        self._maxPending = maxPending
        self._maxValueSize = maxValueSize
        self._maxBytes = maxBytes
        self._maxPerSource = maxPerSource
        self._maxPerAddress = maxPerAddress
        self._onDrop = onDrop
        self._pending: OrderedDict[DatumId, _Partial] = OrderedDict()
        self._bytes = 0
        self.expired = 0
        self.evicted = 0

    @property
    def pending(self) -> int:
        """
        How many values are in progress.
        """
        return len(self._pending)

    @property
    def held(self) -> int:
        """
        The bytes charged to the values in progress.
        """
        return self._bytes

    def _remove(self, ident: DatumId) -> _Partial:
        partial = self._pending.pop(ident)
        self._bytes -= partial.cost
        return partial

    def _expire(self, now: float) -> None:
        while self._pending:
            ident, oldest = next(iter(self._pending.items()))
            if now - oldest.started < self._timeout:
                break
            self._remove(ident)
            self.expired += 1
            self._onDrop("fragments-expired")

    def _evict(self, victim: _Partial) -> None:
        self._remove(victim.stamp.id)
        self.evicted += 1
        self._onDrop("fragments-evicted")

    def _heaviest(
        self, partials: list[_Partial], field: str, byBytes: bool, mine: object
    ) -> list[_Partial]:
        """
        The partials of the group (by C{field}: C{"sender"} or C{"source"})
        that holds the most, by bytes or by count; on a tie, the group of
        C{mine}, the newcomer's.
        """
        weights: dict[object, int] = {}
        for partial in partials:
            name = partial.sender if field == "sender" else partial.stamp.source
            weights[name] = weights.get(name, 0) + (partial.cost if byBytes else 1)
        top = max(weights.values())
        chosen = mine if weights.get(mine) == top else next(
            name for name, weight in weights.items() if weight == top
        )
        return [
            partial for partial in partials
            if (partial.sender if field == "sender" else partial.stamp.source) == chosen
        ]

    def _victim(self, newcomer: _Partial, partials: list[_Partial], byBytes: bool) -> _Partial:
        """
        The oldest value of the source, within the sender address, holding
        the most of C{partials}.
        """
        group = self._heaviest(partials, "sender", byBytes, newcomer.sender)
        group = self._heaviest(group, "source", byBytes, newcomer.stamp.source)
        return group[0]

    def _makeRoom(self, newcomer: _Partial) -> bool:
        """
        Evict values until every bound holds, C{newcomer} (already in
        progress) included.

        @return: whether C{newcomer} is still in progress.
        """
        stamp = newcomer.stamp
        ident = stamp.id
        if len(self._pending) > self._maxPerSource:
            ofSource = [p for p in self._pending.values() if p.stamp.source == stamp.source]
            if len(ofSource) > self._maxPerSource:
                self._evict(ofSource[0])
        if len(self._pending) > self._maxPerAddress:
            ofSender = [p for p in self._pending.values() if p.sender == newcomer.sender]
            if len(ofSender) > self._maxPerAddress:
                self._evict(self._victim(newcomer, ofSender, byBytes=False))
        while ident in self._pending and (
            len(self._pending) > self._maxPending or self._bytes > self._maxBytes
        ):
            byBytes = len(self._pending) <= self._maxPending
            self._evict(self._victim(newcomer, list(self._pending.values()), byBytes))
        return ident in self._pending

    def feed(self, fragment: Fragment, sender: str = "") -> DataMessage | None:
        """
        Add a fragment.

        A repeated fragment (same part, same chunk) is ignored.

        @param sender: the sender's address (its host), for fairness.
        @return: the whole datum when C{fragment} completes it, else L{None}
            (also when the value was evicted to stay within the bounds).
        @raise BadDatagram: C{"bad-fragment"} when C{fragment} contradicts
            the fragments already received for its datum (a different key,
            count of parts or chunk) or the joined text is not JSON;
            C{"too-large"} when the value grows past C{maxValueSize};
            C{"too-deep"} when it nests too deeply.  The value in progress
            is dropped in each case.
        """
        now = self._clock.seconds()
        self._expire(now)
        stamp = fragment.stamp
        ident = stamp.id
        partial = self._pending.get(ident)
        if partial is None:
            if fragment.parts > MAX_PARTS:
                raise BadDatagram("bad-fragment", f"more than {MAX_PARTS} parts")
            partial = _Partial(key=fragment.key, stamp=stamp, parts=fragment.parts,
                               started=now, sender=sender)
            self._pending[ident] = partial
        elif fragment.key != partial.key or fragment.parts != partial.parts:
            self._remove(ident)
            raise BadDatagram(
                "bad-fragment",
                f"fragment of {stamp.datumId()} disagrees with earlier ones on key or parts",
            )
        known = partial.chunks.get(fragment.part)
        if known is not None:
            if known != fragment.chunk:
                self._remove(ident)
                raise BadDatagram(
                    "bad-fragment", f"two different chunks for part {fragment.part} "
                    f"of {stamp.datumId()}"
                )
            return None
        length = len(fragment.chunk.encode("utf-8", "surrogatepass"))
        partial.size += length
        if partial.size > self._maxValueSize:
            self._remove(ident)
            raise BadDatagram("too-large", f"value of {stamp.datumId()} exceeds "
                              f"{self._maxValueSize} bytes")
        partial.chunks[fragment.part] = fragment.chunk
        partial.cost += length + _CHUNK_OVERHEAD
        self._bytes += length + _CHUNK_OVERHEAD
        if not self._makeRoom(partial):
            return None
        if len(partial.chunks) < partial.parts:
            return None
        self._remove(ident)
        text = "".join(partial.chunks[index] for index in range(partial.parts))
        value = loadJSON(text, reason="bad-fragment")
        return DataMessage(key=partial.key, value=value, stamp=partial.stamp,
                           repairable=fragment.repairable, signer=fragment.signer)


# --- sources ----------------------------------------------------------------------------

MAX_AHEAD = 60.0
"""Without a freshness window: how far ahead of the server's clock, in
seconds, a source's C{t} may be and still count as a plausible time."""

RECENT = 8
"""Without a freshness window: how many of a source's latest accepted
C{(boot, seq)} a L{SourceTracker} remembers to drop copies of."""


@attr.s(slots=True, eq=False, auto_attribs=True)
class Hole:
    """
    Sequence numbers C{first} to C{last} of a source's current boot that
    have not arrived, found missing at C{found} (the server's clock).

    The L{SourceTracker} keeps a source's holes and splits or shrinks one as
    its datums arrive; the other attributes are the repair engine's
    (L{artcast.server.feeds.repair}), carried over when a hole is split.

    @ivar repair: whether the hole is NACKed (the source repairs and repair
        is on), rather than waited for a reorder window.
    @ivar due: when the engine next looks at the hole.
    @ivar rounds: NACK and NCF rounds so far.
    @ivar waiting: whether a NACK or an NCF was sent or heard for it and the
        repair is awaited (else: in back-off, or waiting for reordering).
    @ivar extensions: NCFs heard while already waiting.
    """

    first: int
    last: int
    found: float
    repair: bool = False
    due: float = math.inf
    rounds: int = 0
    waiting: bool = False
    extensions: int = 0

    @property
    def size(self) -> int:
        """
        How many sequence numbers the hole spans.
        """
        return self.last - self.first + 1


@attr.s(slots=True, auto_attribs=True)
class _SourceState:
    boot: int
    seq: int
    newest: float
    floor: float = -math.inf
    #: Without a window: the latest accepted C{(boot, seq)}, newest last.
    recent: list[tuple[int, int]] | None = None
    #: The lowest C{seq} of the mark's boot whose reception is known.
    low: int = 1
    #: The highest C{seq} of the mark's boot that arrived as a datum (the
    #: mark may be higher: a heartbeat's C{last}).
    seen: int = 0
    #: The missing sequence numbers below the mark, lowest first.
    holes: list[Hole] | None = None
    #: How many sequence numbers the holes span.
    missing: int = 0
    #: Datums of the boot declared unrecoverable below every hole.
    lost: int = 0
    #: Ranges declared unrecoverable above the lowest hole, lowest first:
    #: counted into C{lost} as the datums above them are handed on.
    lostAbove: list[tuple[int, int]] | None = None


def _noForget() -> None:
    pass


def _noForgetSource(source: str, lost: int) -> None:
    pass


def _holeAt(holes: list[Hole], seq: int) -> int:
    """
    The index of the hole holding C{seq}, or -1.
    """
    index = bisect_right(holes, seq, key=lambda hole: hole.first) - 1
    if index >= 0 and holes[index].last >= seq:
        return index
    return -1


class SourceTracker:
    """
    Remembers, per source, the latest boot and sequence number seen, to
    tell new datums from repeated ones and to see gaps, and which sequence
    numbers below the latest are still missing (its holes), so that a
    datum arriving late or repaired fills its hole.

    Feed it the stamp of every version 2 datum (a whole one, after
    re-assembly), never a registration's; ask L{peek} about a fragment's
    stamp before holding the fragment.  At most C{maxSources} sources are
    remembered; the one least recently heard from is forgotten first (and
    counted in C{forgotten}).

    B{Holes.}  A gap in a source's current boot (and the sequence numbers
    before the first datum of a new boot) becomes a hole; a datum of a hole
    is C{"filled"}; a datum below the mark that is in no hole, within the
    C{maxHoles} sequence numbers below the mark, arrived already (or was
    declared unrecoverable) and is C{"replayed"}, signatures or not.  A
    source's holes span at most C{maxHoles} sequence numbers: a larger gap
    makes no hole, and it and every hole of the source are declared
    unrecoverable at once (so a forged C{seq} of 2**63-1 holds nothing
    back); a gap that would go past the bound declares the oldest holes.
    A hole ends when its datum arrives or when the repair engine declares
    it unrecoverable (L{declare}, L{declareRanges}); the datums declared
    unrecoverable are counted, per boot, in what L{lostBefore} says.

    B{Reset.}  A source's mark, the latest C{(boot, seq)} accepted, can be
    wrong: a datagram from a device whose clock was years ahead when it
    booted, or (without signatures) a forged C{boot} or C{seq} of 2**63-1.
    Every later datum of the source would then be a replay.  So a datum
    whose C{(boot, seq)} is not above the mark is still accepted, as
    C{"reset"}, when its C{t} is later than the C{t} of every datum
    accepted from the source and not further ahead of the server's clock
    than the window (or L{MAX_AHEAD} seconds without one): the mark becomes
    its C{(boot, seq)}, and from then on a datum whose C{t} is not later
    than the newest C{t} before the reset (the floor) is C{"replayed"}.
    No datum is accepted twice: a datum once accepted has a C{t} no later
    than the newest, so it cannot reset, and after a reset it is under the
    floor.  A datum whose C{t} is too far ahead does not move the newest
    C{t}, so one forged far-future C{t} cannot block resets.

    B{Without a window} (no signatures: nothing proves who sent a datagram,
    so anyone can send any C{boot}, C{seq} and C{t} in a source's name) the
    times prove nothing either, and a forged C{t} ahead of the clock would
    hold off every reset for as long.  There a datum not above the mark and
    not within the C{maxHoles} below it is dropped as C{"replayed"} only
    when it is a copy of the mark or of one of the source's last L{RECENT}
    accepted C{(boot, seq)} (multicast duplicates arrive close together);
    any other is delivered: C{"late"} (the mark's boot, far below the mark:
    under a forged C{seq}; the mark stays) or C{"reset"} (another boot: the
    mark becomes its C{(boot, seq)}).  So no forged mark silences a source
    for even one datum; gaps counted around a forged or very late datagram
    are approximate.  Datums relayed from an upstream over HTTP are always
    judged so (L{checkRelayed}): their C{t} is when the relay took them.

    After each L{check}:

    @ivar missed: how many datums were lost: the size of the gap for
        C{"gap"}, the datums of the new boot before this one for
        C{"restart"}, otherwise 0.
    @ivar declared: datums declared unrecoverable by the check: a gap too
        large to hold, the oldest holes pushed past the bound, the holes of
        a boot that ended.
    @ivar ended: when the check ended the mark's boot (C{"restart"},
        C{"reset"}): the datums that boot had lost below every hole, and the
        ranges declared above (its holes among them), for L{walkLost};
        otherwise L{None}.
    @ivar lost: the source's datums declared unrecoverable below the
        accepted datum, if it is handed on now.
    @ivar holding: whether the source has holes (or declared ranges not yet
        passed): a datum accepted must wait for them.
    @ivar filled: for C{"filled"}, the hole the datum was in (its
        C{first} and C{last} are what is left of it).
    @ivar created: the hole the check made, or L{None}.
    @ivar forgotten: sources dropped to stay within C{maxSources}.
    """

    def __init__(
        self,
        clock: _Clock,
        maxSources: int = MAX_SOURCES,
        window: float | None = None,
        reset: bool = True,
        onForget: Callable[[], None] = _noForget,
        maxHoles: int = DEFAULT_MAX_HELD,
        forgetting: Callable[[str, int], None] = _noForgetSource,
    ) -> None:
        """
        @param clock: gives the time to compare C{t} with.
        @param maxSources: how many sources to remember.
        @param window: when set, a datum whose C{t} is more than this many
            seconds away from now is C{"stale"}.
        @param reset: whether a datum may reset a source's mark (see
            above).  Without a window, a signed datagram copied while its
            C{t} was ahead of the server's clock could reset later, so a
            server that checks signatures without a window should not.
        @param onForget: called each time a source is forgotten.
        @param maxHoles: the most missing sequence numbers kept per source.
        @param forgetting: called with a source's name and the datums it
            lost in its boot (its holes included) just before it is
            forgotten.
        """
        self._clock = clock
        self._maxSources = maxSources
        self._window = window
        self._ahead = window if window is not None else MAX_AHEAD
        self._reset = reset
        #: Without a window, only copies of recent stamps are replays.
        self._copiesOnly = reset and window is None
        self._onForget = onForget
        self._maxHoles = maxHoles
        self._forgetting = forgetting
        self._sources: OrderedDict[str, _SourceState] = OrderedDict()
        self.missed = 0
        self.declared = 0
        self.ended: list[Any] | None = None
        self.lost = 0
        self.holding = False
        self.filled: Hole | None = None
        self.created: Hole | None = None
        self.forgotten = 0

    def _judge(self, stamp: Stamp, now: float) -> tuple[str, _SourceState | None]:
        if self._window is not None and stamp.isStale(now, self._window):
            return "stale", None
        state = self._sources.get(stamp.source)
        if state is None:
            return "new", None
        if stamp.sent <= state.floor:
            return "replayed", state
        if stamp.boot < state.boot or (stamp.boot == state.boot and stamp.seq <= state.seq):
            if stamp.boot == state.boot:
                if state.holes and _holeAt(state.holes, stamp.seq) >= 0:
                    return "filled", state
                if self._copiesOnly and stamp.seq >= max(state.low, state.seq - self._maxHoles):
                    # Known: it arrived, or it was declared unrecoverable.
                    return "replayed", state
            if self._copiesOnly:
                pair = (stamp.boot, stamp.seq)
                if pair == (state.boot, state.seq) or (
                    state.recent is not None and pair in state.recent
                ):
                    return "replayed", state
                return ("late" if stamp.boot == state.boot else "reset"), state
            if self._reset and state.newest < stamp.sent <= now + self._ahead:
                return "reset", state
            return "replayed", state
        if stamp.boot > state.boot:
            return "restart", state
        return ("ok" if stamp.seq == state.seq + 1 else "gap"), state

    def peek(self, stamp: Stamp) -> str | None:
        """
        Would L{check} refuse this stamp?  Nothing is remembered.

        @return: C{"stale"} or C{"replayed"} as L{check} would say it, or
            L{None} when L{check} would accept the stamp (a fragment of a
            hole among them).
        """
        verdict, _ = self._judge(stamp, self._clock.seconds())
        return verdict if verdict in ("stale", "replayed") else None

    def check(self, stamp: Stamp) -> str:
        """
        Judge a datum's stamp and remember it when it is news.

        @return: one of
            - C{"new"}: the first datum seen from this source;
            - C{"ok"}: the next one after the last seen;
            - C{"gap"}: later than the next one (C{missed} says by how many);
            - C{"filled"}: one of the source's holes (late or repaired);
            - C{"restart"}: the first seen from a newer boot;
            - C{"reset"}: not newer than the last seen, but sent later
              than any datum accepted from the source (see above; without a
              window: of another boot, and not a recent copy): the mark was
              wrong, and is now this stamp's;
            - C{"late"}: without a window, of the mark's boot, far below the
              last seen (see above) and not a recent copy: delivered, the
              mark unchanged;
            - C{"replayed"}: not newer than the last seen (same boot and a
              C{seq} not greater, in no hole, or an older boot): a
              duplicate, a replay, a repair this server did not need, or a
              datum whose hole was declared unrecoverable; the state is
              unchanged;
            - C{"stale"}: C{t} is outside the window; the state is unchanged.
        """
        self.missed = 0
        self.declared = 0
        self.ended = None
        self.filled = None
        self.created = None
        now = self._clock.seconds()
        verdict, state = self._judge(stamp, now)
        if verdict in ("stale", "replayed"):
            return verdict
        plausible = stamp.sent <= now + self._ahead
        if state is None:
            while len(self._sources) >= self._maxSources:
                self._forget()
            self._sources[stamp.source] = _SourceState(
                stamp.boot, stamp.seq, stamp.sent if plausible else -math.inf,
                low=stamp.seq, seen=stamp.seq,
            )
            self.lost = 0
            self.holding = False
            return verdict
        self._sources.move_to_end(stamp.source)
        if verdict == "filled":
            self._fill(state, stamp.seq)
            if stamp.seq > state.seen:
                state.seen = stamp.seq
            if plausible and stamp.sent > state.newest and not self._copiesOnly:
                state.newest = stamp.sent
            self.lost = state.lost
            self.holding = True
            return verdict
        if self._copiesOnly:
            recent = state.recent
            if recent is None:
                recent = state.recent = [(state.boot, state.seq)]
            recent.append((stamp.boot, stamp.seq))
            if len(recent) > RECENT:
                del recent[0]
            if verdict == "late":
                # Far below the mark (under a forged one, say): delivered,
                # and the mark stays.
                self.lost = state.lost
                self.holding = bool(state.holes or state.lostAbove)
                return verdict
        elif verdict == "reset":
            state.floor = state.newest
            state.newest = stamp.sent
        elif plausible and stamp.sent > state.newest:
            state.newest = stamp.sent
        if verdict in ("restart", "reset"):
            self._endBoot(state)
            state.low = stamp.seq
            if verdict == "restart":
                self.missed = stamp.seq - 1
                if self.missed:
                    state.low = 1
                    self._gap(state, 1, stamp.seq - 1, now)
        elif verdict == "gap":
            self.missed = stamp.seq - state.seq - 1
            self._gap(state, state.seq + 1, stamp.seq - 1, now)
        state.boot, state.seq = stamp.boot, stamp.seq
        state.seen = stamp.seq
        self.lost = state.lost
        self.holding = bool(state.holes or state.lostAbove)
        return verdict

    def checkRelayed(self, stamp: Stamp) -> str:
        """
        L{check} a datum taken from an upstream over HTTP
        (L{artcast.server.feeds.upstream}): its C{t} is when the relay took
        it, so times prove nothing, and it is judged as without a window,
        whatever the window: a copy of a recent datum is a replay, and a
        forged mark is reset by the source's next datum (see above).  The
        multicast path, L{check}, pays nothing for it.
        """
        copiesOnly = self._copiesOnly
        self._copiesOnly = True
        try:
            return self.check(stamp)
        finally:
            self._copiesOnly = copiesOnly

    def _forget(self) -> None:
        source, state = next(iter(self._sources.items()))
        lost = state.lost + state.missing + sum(
            last - first + 1 for first, last in state.lostAbove or ()
        )
        self._forgetting(source, lost)
        del self._sources[source]
        self.forgotten += 1
        self._onForget()

    def _endBoot(self, state: _SourceState) -> None:
        """
        Declare every hole of the mark's boot unrecoverable, for a restart
        or a reset; say what the boot lost in C{ended}.
        """
        ranges = list(state.lostAbove or ())
        if state.holes:
            ranges.extend((hole.first, hole.last) for hole in state.holes)
            ranges.sort()
            self.declared += state.missing
        self.ended = [state.lost, ranges]
        state.holes = state.lostAbove = None
        state.missing = state.lost = 0

    def _gap(self, state: _SourceState, first: int, last: int, now: float) -> None:
        """
        Sequence numbers C{first} to C{last}, above the mark, are missing:
        a hole, or (too many) declared unrecoverable.
        """
        size = last - first + 1
        if size > self._maxHoles:
            for hole in list(state.holes or ()):
                self.declared += self._declare(state, hole)
            self._addLost(state, first, last)
            self.declared += size
            return
        while state.holes and state.missing + size > self._maxHoles:
            oldest = state.holes[0]
            over = state.missing + size - self._maxHoles
            if oldest.size <= over:
                self.declared += self._declare(state, oldest)
            else:
                self._addLost(state, oldest.first, oldest.first + over - 1)
                oldest.first += over
                state.missing -= over
                self.declared += over
        hole = Hole(first, last, now)
        if state.holes is None:
            state.holes = []
        state.holes.append(hole)
        state.missing += size
        self.created = hole

    def _fill(self, state: _SourceState, seq: int) -> None:
        holes = state.holes
        assert holes is not None
        index = _holeAt(holes, seq)
        hole = holes[index]
        self.filled = hole
        state.missing -= 1
        if hole.first == hole.last:
            del holes[index]
        elif seq == hole.first:
            hole.first += 1
        elif seq == hole.last:
            hole.last -= 1
        else:
            holes.insert(index + 1, attr.evolve(hole, first=seq + 1))
            hole.last = seq - 1

    def _addLost(self, state: _SourceState, first: int, last: int) -> None:
        if state.lostAbove is None:
            state.lostAbove = []
        state.lostAbove.insert(
            bisect_right(state.lostAbove, (first, last)), (first, last)
        )

    def _declare(self, state: _SourceState, hole: Hole) -> int:
        assert state.holes is not None
        state.holes.remove(hole)
        state.missing -= hole.size
        self._addLost(state, hole.first, hole.last)
        return hole.size

    def _state(self, source: str, boot: int | None = None) -> _SourceState | None:
        state = self._sources.get(source)
        if state is None or (boot is not None and boot != state.boot):
            return None
        return state

    def holes(self, source: str) -> list[Hole]:
        """
        The holes of C{source}'s current boot, lowest first (the tracker's
        own list: do not change it, but the engine's attributes of a hole).
        """
        state = self._sources.get(source)
        return state.holes or [] if state is not None else []

    def bootOf(self, source: str) -> int | None:
        """
        The boot of C{source}'s mark, or L{None} for a source not remembered.
        """
        state = self._sources.get(source)
        return None if state is None else state.boot

    def lowest(self, source: str) -> float:
        """
        The first sequence number of C{source}'s lowest hole (infinity
        without one): the datums below it may be handed on.
        """
        state = self._sources.get(source)
        if state is None or not state.holes:
            return math.inf
        return state.holes[0].first

    def declare(self, source: str, hole: Hole) -> int:
        """
        Declare a hole of C{source} unrecoverable.

        @return: how many datums that declares.
        """
        state = self._sources.get(source)
        if state is None or not state.holes or hole not in state.holes:
            return 0
        return self._declare(state, hole)

    def declareRanges(self, source: str, boot: int, ranges: Iterable[tuple[int, int]]) -> int:
        """
        Declare what of the ranges of C{(source, boot)} is still missing
        unrecoverable (the source said it is gone).

        @return: how many datums that declares.
        """
        state = self._state(source, boot)
        if state is None or not state.holes:
            return 0
        declared = 0
        for first, last in ranges:
            holes = state.holes
            index = bisect_right(holes, first, key=lambda hole: hole.first) - 1
            if index < 0 or holes[index].last < first:
                index += 1
            while index < len(holes) and holes[index].first <= last:
                hole = holes[index]
                low, high = max(first, hole.first), min(last, hole.last)
                if low > high:
                    index += 1
                    continue
                self._addLost(state, low, high)
                declared += high - low + 1
                state.missing -= high - low + 1
                if low == hole.first and high == hole.last:
                    del holes[index]
                elif low == hole.first:
                    hole.first = high + 1
                elif high == hole.last:
                    hole.last = low - 1
                    index += 1
                else:
                    holes.insert(index + 1, attr.evolve(hole, first=high + 1))
                    hole.last = low - 1
                    index += 1
        return declared

    def heartbeat(self, stamp: Stamp, last: int) -> Hole | None:
        """
        The source says C{last} is the last sequence number it sent in
        C{stamp.boot}: the ones after the mark up to it are holes (loss at
        the end of a burst); holes above it (and above every datum
        received) were never sent and are forgotten.  A source not
        remembered is taken to be at C{last} (a source that heartbeats when
        it starts, with C{last} 0, has its first datum repaired); a newer
        boot is a restart, its C{1..last} holes (and C{ended} says what the
        old boot lost); a heartbeat of an older boot, or under a reset's
        floor, is ignored.

        @return: the hole made, if any (C{missed} says how large; larger
            than the bound: declared at once, counted in C{declared}).
        """
        self.missed = 0
        self.declared = 0
        self.ended = None
        self.created = None
        now = self._clock.seconds()
        plausible = stamp.sent <= now + self._ahead
        state = self._sources.get(stamp.source)
        if state is None:
            while len(self._sources) >= self._maxSources:
                self._forget()
            self._sources[stamp.source] = _SourceState(
                stamp.boot, last, stamp.sent if plausible else -math.inf,
                low=last + 1, seen=last,
            )
            return None
        if stamp.sent <= state.floor or stamp.boot < state.boot:
            return None
        self._sources.move_to_end(stamp.source)
        if stamp.boot > state.boot:
            self._endBoot(state)
            state.boot, state.seq, state.seen, state.low = stamp.boot, 0, 0, 1
        if last > state.seq:
            self.missed = last - state.seq
            self._gap(state, state.seq + 1, last, now)
            state.seq = last
            return self.created
        bound = max(last, state.seen)
        if state.seq > bound:
            state.seq = bound
            if state.lostAbove:
                state.lostAbove = [
                    (first, min(end, bound)) for first, end in state.lostAbove if first <= bound
                ]
            while state.holes and state.holes[-1].last > bound:
                hole = state.holes[-1]
                if hole.first > bound:
                    state.holes.pop()
                    state.missing -= hole.size
                else:
                    state.missing -= hole.last - bound
                    hole.last = bound
        return None

    def lostBefore(self, source: str, seq: int) -> int:
        """
        The datums of C{source}'s current boot declared unrecoverable below
        C{seq}, a datum below the lowest hole being handed on; ask in
        ascending order of C{seq}.
        """
        state = self._sources.get(source)
        if state is None:
            return 0
        above = state.lostAbove
        while above and above[0][1] < seq:
            first, last = above.pop(0)
            state.lost += last - first + 1
        return state.lost

    def settle(self, source: str) -> int:
        """
        Count the ranges declared below the lowest hole into what the source
        lost, once the datums below it are handed on.

        @return: the datums of the boot lost below the lowest hole.
        """
        state = self._sources.get(source)
        if state is None:
            return 0
        limit = state.holes[0].first if state.holes else math.inf
        above = state.lostAbove
        while above and above[0][0] < limit:
            first, last = above.pop(0)
            state.lost += last - first + 1
        if not above:
            state.lostAbove = None
        return state.lost


def walkLost(ended: list[Any], seq: int) -> int:
    """
    For the datums of a boot that ended (L{SourceTracker.ended}: the datums
    lost below every hole and the ranges declared above), handed on in
    ascending order: the datums declared unrecoverable below C{seq}.
    """
    ranges = ended[1]
    while ranges and ranges[0][1] < seq:
        first, last = ranges.pop(0)
        ended[0] += last - first + 1
    return ended[0]
