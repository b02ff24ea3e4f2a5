# -*- test-case-name: tests.test_repair_server -*-
"""
The receiving half of repair (C{docs/protocol.md}, "Repair"): the
L{RepairEngine} stands between the L{SourceTracker}, which finds a source's
holes, and the store.  It holds back the datums of a source that arrive
after a hole and hands them on in sequence order; it asks a repairing
source (C{"r":1}) for its holes with NACKs, after a random back-off that
another server's NACK (heard as the source's NCF) makes unnecessary; and it
declares a hole unrecoverable when its retries are spent, when the source
says it is gone, or when holding on would go past a bound.

A datum that arrives in order from a source without holes never reaches
the engine: the L{artcast.server.feeds.multicast.DatagramHandler} hands it
to the store itself.
"""

from __future__ import annotations

import heapq
import math
import random as _random
from bisect import bisect_right
from collections import deque
from typing import Any, Callable

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from artcast.server.defaults import (
    DEFAULT_HOLD_MEMORY,
    DEFAULT_MAX_HELD,
    DEFAULT_NACK_BACKOFF,
    DEFAULT_NACK_RETRIES,
    DEFAULT_REORDER_WAIT,
    DEFAULT_REPAIR_WAIT,
)
from artcast.server.feeds.reception import Hole, SourceTracker, walkLost
from artcast.wire import (
    MAX_RANGES,
    Confirm,
    DataMessage,
    Gone,
    Heartbeat,
    encodeJSON,
    encodeNack,
)

__all__ = [
    "HELD_OVERHEAD",
    "LATENCY_SAMPLES",
    "MAX_REPAIR_WAIT",
    "REPAIR_WAIT_GROWTH",
    "RepairEngine",
]

#: What holding a datum back costs beyond its key and its value's JSON
#: text, in bytes (the message, its stamp, the parsed value, a slot).
HELD_OVERHEAD = 400

#: How many of the latest repair latencies the percentiles are taken from.
LATENCY_SAMPLES = 1024

#: Each NACK round waits this many times longer for the repair...
REPAIR_WAIT_GROWTH = 1.25

#: ...but never longer than this many seconds.
MAX_REPAIR_WAIT = 1.0

_COUNTERS = ("repairGaps", "nacksSent", "nacksSuppressed", "repairsReceived", "unrecoverable")


@attr.s(slots=True, auto_attribs=True)
class _Source:
    """
    What the engine keeps of a source with holes.
    """

    boot: int
    held: dict[int, tuple[DataMessage, int]] = attr.Factory(dict)
    order: list[int] = attr.Factory(list)
    bytes: int = 0
    call: IDelayedCall | None = None
    at: float = math.inf
    address: tuple[str, int] | None = None
    signer: bytes | None = None


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class RepairEngine:
    """
    Hold, ask, release: the repair of each source's holes.

    Each hole of a repairing source (and with repair on) is NACKed after a
    random back-off of up to C{backoff} seconds, in one NACK per source per
    round listing every hole due (at most L{MAX_RANGES}; the rest in the
    next round), sent to the address the source's datagrams came from and
    signed with the key that verified them.  An NCF covering a hole still
    in back-off stands for this server's NACK: it is not sent (counted in
    C{nacksSuppressed}).  After a NACK or an NCF the engine waits C{wait}
    seconds for the repair, 1.25 times longer each round (at most 1 s),
    then backs off and asks again, for C{retries} rounds; then the hole is
    unrecoverable.  A gone declares its holes at once.  A hole of a source
    that does not repair, or of any source when repair is off, is waited
    for C{reorderWait} seconds and then declared.

    Datums above a source's lowest hole are held, at most C{maxHeld} per
    source and C{holdMemory} bytes in all; past a bound the lowest hole (of
    the source holding the most bytes, for the second) is declared and the
    datums below the next are handed on.  One timer per source with holes,
    at its earliest deadline.

    @ivar held: how many datums are held now.
    @ivar reordered: holes filled without a NACK or an NCF (reordering).
    @ivar totals: the counters of every source, forgotten ones included.
    """

    def __init__(
        self,
        tracker: SourceTracker,
        deliver: Callable[[DataMessage, int], None],
        clock: IReactorTime,
        sendNack: Callable[[bytes, tuple[str, int]], None] | None = None,
        random: _random.Random | None = None,
        enabled: bool = True,
        backoff: float = DEFAULT_NACK_BACKOFF,
        wait: float = DEFAULT_REPAIR_WAIT,
        retries: int = DEFAULT_NACK_RETRIES,
        reorderWait: float = DEFAULT_REORDER_WAIT,
        maxHeld: int = DEFAULT_MAX_HELD,
        holdMemory: int = DEFAULT_HOLD_MEMORY,
    ) -> None:
        """
        @param tracker: the source tracker that judged each datum.
        @param deliver: hands a datum on (to the store) with the datums of
            its boot declared unrecoverable before it.
        @param sendNack: sends a NACK datagram to an address; without one,
            nothing is asked for.
        @param random: draws the back-offs (seeded in tests).
        @param enabled: C{False} (C{--no-repair}): no NACKs, every hole
            waited for C{reorderWait} only.
        """
        self.tracker = tracker
        self._deliver = deliver
        self.clock = clock
        self._sendNack = sendNack
        self.random = random if random is not None else _random.Random()
        self.enabled = enabled and sendNack is not None
        self.backoff = backoff
        self.wait = wait
        self.retries = retries
        self.reorderWait = reorderWait
        self.maxHeld = maxHeld
        self.holdMemory = holdMemory
        self._sources: dict[str, _Source] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self.totals: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.reordered = 0
        self.held = 0
        self.heldBytes = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._repairs = 0

    # --- counting -------------------------------------------------------------------

    def _count(self, source: str, name: str, amount: int = 1) -> None:
        counts = self._counts.get(source)
        if counts is None:
            counts = self._counts[source] = dict.fromkeys(_COUNTERS, 0)
        counts[name] += amount
        self.totals[name] += amount

    def statistics(self) -> dict[str, Any]:
        """
        The C{"repair"} figures of C{/stats}.
        """
        ordered = sorted(self._latencies)
        latency: dict[str, Any] = {"count": self._repairs}
        latency["p50"] = _percentile(ordered, 0.5) if ordered else None
        latency["p99"] = _percentile(ordered, 0.99) if ordered else None
        figures: dict[str, Any] = {"enabled": self.enabled}
        figures.update(self.totals)
        figures["reordered"] = self.reordered
        figures["repairHeld"] = self.held
        figures["repairLatency"] = latency
        figures["sources"] = {source: dict(counts) for source, counts in self._counts.items()}
        return {"repair": figures}

    # --- datums ---------------------------------------------------------------------

    def datum(self, message: DataMessage, verdict: str, address: tuple[str, int]) -> None:
        """
        Take a datum the tracker accepted (any verdict but C{"ok"} from a
        source without holes, which the handler delivers itself): hand it
        on now, or hold it until the holes below it are filled or declared.
        """
        tracker = self.tracker
        stamp = message.stamp
        assert stamp is not None
        source = stamp.source
        state = self._sources.get(source)
        if tracker.ended is not None and state is not None:
            self._releaseEnded(state, tracker.ended)
            state.boot = stamp.boot
        if tracker.declared:
            self._count(source, "unrecoverable", tracker.declared)
        filled = tracker.filled
        if filled is not None:
            self._filled(source, filled)
        created = tracker.created
        if created is not None:
            state = self._found(source, created, message.repairable)
        seq = stamp.seq
        if verdict == "late" or seq < tracker.lowest(source):
            if state is not None:
                self._release(source, state, seq)
            self._deliver(message, tracker.lostBefore(source, seq))
            if state is not None:
                self._release(source, state)
                self._settle(source, state)
            else:
                tracker.settle(source)
            return
        if state is None:
            state = self._state(source, stamp.boot)
        state.address = address
        state.signer = message.signer
        self._hold(source, state, message)

    def _state(self, source: str, boot: int) -> _Source:
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source(boot)
        return state

    def _found(self, source: str, hole: Hole, repairable: bool) -> _Source:
        """
        A new hole: NACK it after a back-off, or wait for reordering.
        """
        now = self.clock.seconds()
        hole.repair = repairable and self.enabled
        if hole.repair:
            hole.due = now + self.random.uniform(0, self.backoff)
            self._count(source, "repairGaps", hole.size)
        else:
            hole.due = now + self.reorderWait
        boot = self.tracker.bootOf(source)
        state = self._state(source, boot if boot is not None else 0)
        self._schedule(source, state, hole.due)
        return state

    def _filled(self, source: str, hole: Hole) -> None:
        if hole.rounds or hole.waiting:
            self._count(source, "repairsReceived")
            self._repairs += 1
            self._latencies.append(self.clock.seconds() - hole.found)
        else:
            self.reordered += 1

    def _hold(self, source: str, state: _Source, message: DataMessage) -> None:
        assert message.stamp is not None
        seq = message.stamp.seq
        cost = len(encodeJSON(message.value)) + len(message.key) + HELD_OVERHEAD
        state.held[seq] = (message, cost)
        heapq.heappush(state.order, seq)
        state.bytes += cost
        self.held += 1
        self.heldBytes += cost
        while len(state.held) > self.maxHeld and self._declareLowest(source, state):
            pass
        while self.heldBytes > self.holdMemory:
            heaviest = max(self._sources, key=lambda name: self._sources[name].bytes)
            if not self._declareLowest(heaviest, self._sources[heaviest]):
                break

    def _declareLowest(self, source: str, state: _Source) -> bool:
        """
        Declare the source's lowest hole unrecoverable (to stay within a
        bound) and hand on what it held back.

        @return: whether there was a hole.
        """
        holes = self.tracker.holes(source)
        if not holes:
            return False
        self._count(source, "unrecoverable", self.tracker.declare(source, holes[0]))
        self._release(source, state)
        self._settle(source, state)
        return True

    def _unhold(self, state: _Source, seq: int) -> DataMessage:
        message, cost = state.held.pop(seq)
        state.bytes -= cost
        self.held -= 1
        self.heldBytes -= cost
        return message

    def _release(self, source: str, state: _Source, below: float = math.inf) -> None:
        """
        Hand on, in order, the held datums below the source's lowest hole
        (and below C{below}).
        """
        limit = min(self.tracker.lowest(source), below)
        order = state.order
        while order and order[0] < limit:
            seq = heapq.heappop(order)
            message = self._unhold(state, seq)
            self._deliver(message, self.tracker.lostBefore(source, seq))

    def _releaseEnded(self, state: _Source, ended: list[Any]) -> None:
        """
        The source's boot ended (a restart or a reset): hand on everything
        held of it, in order.
        """
        order = state.order
        while order:
            seq = heapq.heappop(order)
            self._deliver(self._unhold(state, seq), walkLost(ended, seq))

    def _settle(self, source: str, state: _Source) -> None:
        """
        After a change of the source's holes: count what was declared below
        the lowest, and schedule the timer or forget the source.
        """
        self.tracker.settle(source)
        holes = self.tracker.holes(source)
        if not holes:
            if state.call is not None and state.call.active():
                state.call.cancel()
            if not state.held:
                del self._sources[source]
            return
        self._schedule(source, state, min(hole.due for hole in holes))

    def _schedule(self, source: str, state: _Source, when: float) -> None:
        if state.call is not None and state.call.active():
            if state.at <= when:
                return
            state.call.cancel()
        state.at = when
        state.call = self.clock.callLater(
            max(0.0, when - self.clock.seconds()), self._fire, source
        )

    # --- rounds ---------------------------------------------------------------------

    def _waitFor(self, rounds: int) -> float:
        return min(MAX_REPAIR_WAIT, self.wait * REPAIR_WAIT_GROWTH ** max(0, rounds - 1))

    def _fire(self, source: str) -> None:
        """
        A source's earliest deadline: NACK the holes whose back-off ended,
        back off again where a wait ended, declare what waited its last.
        """
        state = self._sources.get(source)
        if state is None:
            return
        state.call = None
        state.at = math.inf
        now = self.clock.seconds()
        tracker = self.tracker
        ranges: list[tuple[int, int]] = []
        spent: list[Hole] = []
        for hole in tracker.holes(source):
            if hole.due > now:
                continue
            if not hole.repair:
                spent.append(hole)
            elif hole.waiting:
                if hole.rounds >= self.retries:
                    spent.append(hole)
                else:
                    hole.waiting = False
                    hole.due = now + self.random.uniform(0, self.backoff)
            elif len(ranges) < MAX_RANGES:
                ranges.append((hole.first, hole.last))
                hole.rounds += 1
                hole.waiting = True
                hole.due = now + self._waitFor(hole.rounds)
            else:
                hole.due = now + self.wait
        if ranges:
            self._nack(source, state, ranges, now)
        for hole in spent:
            self._count(source, "unrecoverable", tracker.declare(source, hole))
        if spent:
            self._release(source, state)
        self._settle(source, state)

    def _nack(self, source: str, state: _Source, ranges: list[tuple[int, int]],
              now: float) -> None:
        if state.address is None or self._sendNack is None:
            return
        datagram = encodeNack(source, state.boot, ranges, now, signingKey=state.signer)
        self._count(source, "nacksSent")
        self._sendNack(datagram, state.address)

    # --- what sources say -----------------------------------------------------------

    def heartbeat(self, message: Heartbeat, address: tuple[str, int]) -> None:
        """
        A source's heartbeat: its tail is missing, or holes above what it
        sent were never sent.
        """
        tracker = self.tracker
        source = message.stamp.source
        created = tracker.heartbeat(message.stamp, message.last)
        if tracker.declared:
            self._count(source, "unrecoverable", tracker.declared)
        state = self._sources.get(source)
        if tracker.ended is not None and state is not None:
            self._releaseEnded(state, tracker.ended)
            state.boot = message.stamp.boot
        if created is not None:
            state = self._found(source, created, True)
        if state is None:
            tracker.settle(source)
            return
        state.address = address
        state.signer = message.signer
        self._release(source, state)
        self._settle(source, state)

    def confirm(self, message: Confirm) -> None:
        """
        A source's NCF: it is re-sending these; holes in back-off need no
        NACK of this server's (suppressed), and the repair is awaited.
        """
        source = message.stamp.source
        if source not in self._sources or self.tracker.bootOf(source) != message.stamp.boot:
            return
        ranges = message.ranges
        firsts = [first for first, _ in ranges]
        now = self.clock.seconds()
        suppressed = False
        for hole in self.tracker.holes(source):
            index = bisect_right(firsts, hole.last) - 1
            if index < 0 or ranges[index][1] < hole.first or not hole.repair:
                continue
            if not hole.waiting:
                hole.waiting = True
                hole.rounds += 1
                hole.due = now + self._waitFor(hole.rounds)
                suppressed = True
            elif hole.extensions < self.retries:
                hole.extensions += 1
                hole.due = max(hole.due, now + self._waitFor(hole.rounds))
        if suppressed:
            self._count(source, "nacksSuppressed")

    def gone(self, message: Gone) -> None:
        """
        A source's gone: what it names is declared unrecoverable at once.
        """
        stamp = message.stamp
        state = self._sources.get(stamp.source)
        if state is None:
            return
        declared = self.tracker.declareRanges(stamp.source, stamp.boot, message.ranges)
        if declared:
            self._count(stamp.source, "unrecoverable", declared)
            self._release(stamp.source, state)
            self._settle(stamp.source, state)

    def forgetting(self, source: str, lost: int) -> None:
        """
        The tracker forgets C{source}: hand on what it held, and forget its
        counters (the totals keep them).
        """
        self._counts.pop(source, None)
        state = self._sources.pop(source, None)
        if state is None:
            return
        if state.call is not None and state.call.active():
            state.call.cancel()
        order = state.order
        while order:
            self._deliver(self._unhold(state, heapq.heappop(order)), lost)

    def stop(self) -> None:
        """
        Cancel every timer (the server stops); what is held stays unsent.
        """
        for state in self._sources.values():
            if state.call is not None and state.call.active():
                state.call.cancel()
