# -*- test-case-name: tests.test_repair -*-
"""
The source side of repair (C{docs/sources.md}, "Repair: what a source keeps
and answers"; the bytes are in C{docs/protocol.md}): what a source keeps of
what it sent, how it answers a server's NACK, when it heartbeats and how it
packs datums sent close together into batches.

Everything here is sans-IO: no socket, no thread, no reactor.  Each method
is given the time (C{now}, in seconds) and returns the datagrams to send;
L{artcast.source.Source} (a thread over a socket) and
L{artcast.source.SourceService} (the reactor) drive the same
L{RepairEngine}.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, NamedTuple, Sequence

from artcast.wire import (
    MAX_BATCH,
    MAX_DATAGRAM,
    MAX_RANGES,
    BadDatagram,
    Stamp,
    batchItem,
    batchOverhead,
    encodeBatch,
    encodeConfirm,
    encodeData,
    encodeGone,
    encodeHeartbeat,
    parseNack,
)

__all__ = [
    "BATCH_SIZE",
    "BATCH_THRESHOLD",
    "HEARTBEAT_FIRST",
    "HEARTBEAT_MAX",
    "LINGER_HEARTBEAT",
    "HOLDBACK",
    "LINGER",
    "REPAIR_HOLDOFF",
    "REPAIR_QUEUE",
    "REPAIR_RATE",
    "WINDOW",
    "WINDOW_BYTES",
    "Batcher",
    "Flushed",
    "HeartbeatSchedule",
    "RepairAnswer",
    "RepairEngine",
    "SendWindow",
    "TokenBucket",
]

WINDOW = 10_000
"""How many of its last datums a source keeps to re-send (C{window})."""

WINDOW_BYTES = 16 * 1024 * 1024
"""How many bytes of datagrams a source keeps at most (C{windowBytes}); the
newest datum is kept whatever its size."""

REPAIR_RATE = 2_000
"""Repair datagrams per second at most (C{repairRate}); more wait in a queue."""

REPAIR_QUEUE = 10_000
"""Repair datagrams waiting for the rate at most; more are not sent (the
server asks again)."""

REPAIR_HOLDOFF = 0.01
"""A datum is re-sent at most once in this many seconds: one repair serves
every server that asks in one round."""

HOLDBACK = 0.005
"""Seconds an open batch waits for more datums before it is sent
(C{holdback}); 0 turns batching off."""

BATCH_THRESHOLD = 200.0
"""Datums per second above which datums are batched: a datum sent less than
C{1 / batchThreshold} seconds after the previous one opens a batch."""

BATCH_SIZE = 1_400
"""The largest batch datagram, in bytes: below a 1,500-byte Ethernet MTU, so
that a batch is never split into IP fragments."""

HEARTBEAT_FIRST = 0.2
"""Seconds from the last datum to the first heartbeat."""

LINGER_HEARTBEAT = 0.1
"""Seconds between two heartbeats of a source that closes and lingers."""

HEARTBEAT_MAX = 10.0
"""The longest time between two heartbeats of an idle source; the interval
doubles from L{HEARTBEAT_FIRST} up to this."""

LINGER = 1.0
"""Seconds after its last datum that a closing source keeps answering NACKs."""


#: More than any batch's overhead (a 64-character name, 19-digit counters,
#: a signature): an item shorter than the batch size by this always fits.
_OVERHEAD_MARGIN = 512


#: A thousandth of a token is forgiven: times near 1.8e9 s are exact only to
#: 2.4e-7 s, so "one token's time later" may refill 0.9995 of a token.
_TOKEN_SLACK = 1e-3


class Flushed(NamedTuple):
    """
    Datagrams ready to send, holding the datums C{first} to C{last}.

    @ivar batched: whether C{datagrams} is one batch of several datums.
    """

    first: int
    last: int
    datagrams: list[bytes]
    batched: bool


class RepairAnswer(NamedTuple):
    """
    What L{SendWindow.answer} makes of a NACK's ranges.

    @ivar datagrams: the original datagrams to re-send, in sequence order.
    @ivar confirmed: the ranges to name in the NCF (asked, held, and
        re-sent now); empty for no NCF.
    @ivar gone: the asked ranges no longer held (below the window); empty
        for no gone.
    @ivar heartbeat: whether some asked seq is above the last one sent.
    """

    datagrams: list[bytes]
    confirmed: list[tuple[int, int]]
    gone: list[tuple[int, int]]
    heartbeat: bool


class _Unit:
    """
    The datagrams of one or more datums sent together: one datagram, the
    fragments of one datum, or one batch.
    """

    __slots__ = ("first", "last", "datagrams", "size", "repairedAt")

    def __init__(self, first: int, last: int, datagrams: Sequence[bytes]) -> None:
        self.first = first
        self.last = last
        self.datagrams = datagrams
        self.size = sum(map(len, datagrams))
        self.repairedAt = -math.inf


def _capped(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """
    At most L{MAX_RANGES} ranges: past that, the last one covers the rest
    (naming a seq in an NCF that is not being re-sent only makes a server
    wait for it a little longer).
    """
    if len(ranges) <= MAX_RANGES:
        return ranges
    return ranges[:MAX_RANGES - 1] + [(ranges[MAX_RANGES - 1][0], ranges[-1][1])]


class SendWindow:
    """
    The datagrams of the last C{window} datums sent, within C{windowBytes}
    bytes, by sequence number.

    A seq maps to the datagrams that carried it: its datagram, all its
    fragments, or the batch that held it (a batch counted once in bytes).

    @ivar last: the last seq added (0 before the first).
    @ivar size: the bytes held.
    """

    def __init__(self, window: int = WINDOW, windowBytes: int = WINDOW_BYTES,
                 holdoff: float = REPAIR_HOLDOFF) -> None:
        """
        @param window: how many datums to keep at most (at least 1).
        @param windowBytes: how many bytes of datagrams to keep at most.
        @param holdoff: re-send a datum at most once in this many seconds.
        """
        if window < 1 or windowBytes < 1:
            raise ValueError("a window holds at least one datum and one byte")
        self.window = window
        self.windowBytes = windowBytes
        self.holdoff = holdoff
        self.last = 0
        self.size = 0
        self._units: deque[_Unit] = deque()
        self._bySeq: dict[int, _Unit] = {}

    def __len__(self) -> int:
        """
        @return: how many datums are held.
        """
        return len(self._bySeq)

    @property
    def lowest(self) -> int:
        """
        The lowest seq held (C{last + 1} when none is).
        """
        return self._units[0].first if self._units else self.last + 1

    def add(self, first: int, last: int, datagrams: Sequence[bytes]) -> None:
        """
        Keep the datagrams of the datums C{first} to C{last} (the next ones),
        forgetting the oldest datums past the bounds; the newest datagrams
        are kept whatever their size.
        """
        unit = _Unit(first, last, datagrams)
        self._units.append(unit)
        bySeq = self._bySeq
        if first == last:
            bySeq[first] = unit
        else:
            for seq in range(first, last + 1):
                bySeq[seq] = unit
        self.size += unit.size
        self.last = last
        units = self._units
        while (len(bySeq) > self.window or self.size > self.windowBytes) and len(units) > 1:
            old = units.popleft()
            for seq in range(old.first, old.last + 1):
                del bySeq[seq]
            self.size -= old.size

    def answer(self, ranges: Iterable[tuple[int, int]], now: float) -> RepairAnswer:
        """
        What to send for a NACK of C{ranges}: the datagrams of every asked
        datum held and not re-sent in the last L{REPAIR_HOLDOFF} seconds
        (marked as re-sent now), the ranges to confirm, the ranges gone, and
        whether to heartbeat.  The work is bounded by the window, whatever
        the ranges.
        """
        datagrams: list[bytes] = []
        confirmed: list[tuple[int, int]] = []
        gone: list[tuple[int, int]] = []
        heartbeat = False
        low, high = self.lowest, self.last
        bySeq = self._bySeq
        for first, last in ranges:
            if first < low:
                gone.append((first, min(last, low - 1)))
            if last > high:
                heartbeat = True
            seq, end = max(first, low), min(last, high)
            while seq <= end:
                unit = bySeq[seq]
                if now - unit.repairedAt >= self.holdoff:
                    unit.repairedAt = now
                    datagrams.extend(unit.datagrams)
                    top = min(end, unit.last)
                    if confirmed and confirmed[-1][1] + 1 >= seq:
                        confirmed[-1] = (confirmed[-1][0], top)
                    else:
                        confirmed.append((seq, top))
                seq = unit.last + 1
        return RepairAnswer(datagrams, _capped(confirmed), _capped(gone), heartbeat)


class TokenBucket:
    """
    Repairs sent at C{rate} datagrams per second at most (bursts of
    C{burst}); those over the rate wait in a queue of C{limit} datagrams,
    and those past the queue are dropped.

    @ivar dropped: how many datagrams were dropped.
    """

    def __init__(self, rate: float = REPAIR_RATE, burst: float | None = None,
                 limit: int = REPAIR_QUEUE) -> None:
        """
        @param rate: datagrams per second, more than 0.
        @param burst: the most sent at once; by default a twentieth of a
            second's worth, and at least 64 (a fragmented datum's parts).
        """
        if rate <= 0:
            raise ValueError("the repair rate must be more than 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(64.0, rate / 20)
        self.limit = limit
        self.dropped = 0
        self._tokens = self.burst
        self._updated: float | None = None
        self._queue: deque[bytes] = deque()

    def __len__(self) -> int:
        """
        @return: how many datagrams wait.
        """
        return len(self._queue)

    def offer(self, datagrams: Iterable[bytes]) -> None:
        """
        Queue datagrams to send as the rate allows.
        """
        queue = self._queue
        for datagram in datagrams:
            if len(queue) >= self.limit:
                self.dropped += 1
            else:
                queue.append(datagram)

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now

    def take(self, now: float) -> list[bytes]:
        """
        @return: the queued datagrams that may be sent now, in order.
        """
        if not self._queue:
            return []
        self._refill(now)
        count = min(int(self._tokens + _TOKEN_SLACK), len(self._queue))
        self._tokens -= count
        return [self._queue.popleft() for _ in range(count)]

    def nextTime(self, now: float) -> float | None:
        """
        @return: when the next queued datagram may be sent, or L{None} when
            none waits.
        """
        if not self._queue:
            return None
        self._refill(now)
        if self._tokens + _TOKEN_SLACK >= 1:
            return now
        return now + (1 - self._tokens) / self.rate


class HeartbeatSchedule:
    """
    When an idle source heartbeats: at once when it starts (so that a
    server learns where its sequence starts before datum 1, and can ask for
    datum 1 if it is lost), then L{HEARTBEAT_FIRST} seconds after that or
    after its last datum, then at intervals doubling up to
    L{HEARTBEAT_MAX}; each datum starts over.

    @ivar next: when the next heartbeat is due (minus infinity: at once).
    """

    def __init__(self, first: float = HEARTBEAT_FIRST, maximum: float = HEARTBEAT_MAX) -> None:
        self.first = first
        self.maximum = maximum
        self.next: float | None = -math.inf
        # Halved, so that the heartbeat after the one at the start comes
        # HEARTBEAT_FIRST later.
        self._interval = first / 2

    def datum(self, now: float) -> None:
        """
        A datum was sent at C{now}.
        """
        self._interval = self.first
        self.next = now + self.first

    def due(self, now: float) -> bool:
        """
        @return: whether a heartbeat is due at C{now}.
        """
        return self.next is not None and now >= self.next

    def closing(self, now: float, interval: float = 0.1) -> None:
        """
        The source is closing (lingering): a heartbeat now and then every
        C{interval} seconds, so that a server that missed the very last
        datum learns of it while the source can still answer.
        """
        self.next = now
        self._interval = self.maximum = interval

    def sent(self, now: float) -> None:
        """
        A heartbeat was sent at C{now}: the next one is twice as far (at
        most L{HEARTBEAT_MAX} apart; while closing, always C{interval}).
        """
        self._interval = min(self._interval * 2, self.maximum)
        self.next = now + self._interval


class Batcher:
    """
    The adaptive holdback: a datum sent less than C{1 / threshold} seconds
    after the previous one opens a batch; datums join it until it is
    C{holdback} seconds old (a datum given later closes it, if its timer
    has not), holds L{MAX_BATCH} datums, or the next would make it larger
    than C{size} bytes.

    A datum too large for a batch of its own goes alone (after the open
    batch); fragments are never batched; a batch closed with one datum is
    sent as that datum's own data datagram.

    @ivar deadline: when the open batch is due, or L{None}.
    @ivar previous: when the last datum was sent (or batched), or L{None}.
    """

    def __init__(self, threshold: float = BATCH_THRESHOLD, holdback: float = HOLDBACK,
                 size: int = BATCH_SIZE, signingKey: bytes | None = None,
                 maxDatagram: int = MAX_DATAGRAM) -> None:
        self.enabled = holdback > 0 and threshold > 0
        self.holdback = holdback
        self.gap = 1.0 / threshold if threshold > 0 else 0.0
        self.size = min(size, maxDatagram)
        self.signingKey = signingKey
        self.maxDatagram = maxDatagram
        self.deadline: float | None = None
        self.previous: float | None = None
        self._stamp: Stamp | None = None
        self._items: list[bytes] = []
        self._used = 0
        self._first: tuple[str, object] = ("", None)

    def add(self, key: str, value: object, stamp: Stamp) -> tuple[list[Flushed], bool]:
        """
        Offer the next datum (stamped C{stamp}, sent at C{stamp.sent}).

        @return: the batches closed by it (to send now, first) and whether
            it was batched.  When it was not, nothing changed: send it alone
            after L{close}.
        @raise ValueError: for a bad key or value (nothing changed).
        """
        now = stamp.sent
        if not self.enabled:
            return [], False
        fresh = bool(self._items) and now < self.deadline  # type: ignore[operator]
        if not (fresh or (self.previous is not None and now - self.previous < self.gap)):
            return [], False
        item = batchItem(key, value)
        if len(item) > self.size - _OVERHEAD_MARGIN and (
                batchOverhead(stamp, self.signingKey is not None) + len(item) > self.size):
            return [], False
        flushed = []
        if self._items and (not fresh or len(self._items) >= MAX_BATCH
                            or self._used + 1 + len(item) > self.size):
            flushed.append(self._close())
        if not self._items:
            self._stamp = stamp
            self._used = batchOverhead(stamp, self.signingKey is not None) + len(item)
            self._first = (key, value)
            self.deadline = now + self.holdback
        else:
            self._used += 1 + len(item)
        self._items.append(item)
        self.previous = now
        if len(self._items) >= MAX_BATCH:
            flushed.append(self._close())
        return flushed, True

    def close(self) -> Flushed | None:
        """
        Close the open batch.

        @return: its datagrams, or L{None} when no batch is open.
        """
        return self._close() if self._items else None

    def _close(self) -> Flushed:
        stamp, items = self._stamp, self._items
        assert stamp is not None
        self._items = []
        self._stamp = None
        self.deadline = None
        if len(items) == 1:
            key, value = self._first
            datagrams = encodeData(key, value, stamp, self.signingKey, self.maxDatagram,
                                   repairable=True)
            return Flushed(stamp.seq, stamp.seq, datagrams, False)
        return Flushed(stamp.seq, stamp.seq + len(items) - 1,
                       [encodeBatch(items, stamp, self.signingKey, repairable=True)], True)


class RepairEngine:
    """
    Everything a repairing source does besides the socket, for one boot:
    encode each datum (batched or alone) and keep it in a L{SendWindow},
    answer NACKs (NCF, repairs through a L{TokenBucket}, gone, heartbeat),
    heartbeat when idle (L{HeartbeatSchedule}).

    Every method returns the datagrams to send now, in order, to every data
    group; L{nextDeadline} says when to call L{tick} next.

    @ivar lastDatum: when the last datum was given, or L{None}.
    """

    def __init__(
        self,
        src: str,
        boot: int,
        signingKey: bytes | None = None,
        maxDatagram: int = MAX_DATAGRAM,
        *,
        window: int = WINDOW,
        windowBytes: int = WINDOW_BYTES,
        repairRate: float = REPAIR_RATE,
        holdback: float = HOLDBACK,
        batchThreshold: float = BATCH_THRESHOLD,
        batchSize: int = BATCH_SIZE,
    ) -> None:
        self.src = src
        self.boot = boot
        self.signingKey = signingKey
        self.maxDatagram = maxDatagram
        self.window = SendWindow(window, windowBytes)
        self.bucket = TokenBucket(repairRate)
        self.batcher = Batcher(batchThreshold, holdback, batchSize, signingKey, maxDatagram)
        self.heartbeats = HeartbeatSchedule()
        self.lastDatum: float | None = None
        self.nacksReceived = 0
        self.nacksIgnored = 0
        self.confirmsSent = 0
        self.repairsSent = 0
        self.goneSent = 0
        self.heartbeatsSent = 0
        self.batchesSent = 0
        self.datagramsSent = 0

    def statistics(self) -> dict[str, int]:
        """
        The counters: NACKs received (and answered) and ignored (not
        parsed, another source or boot, not signed with the source's key),
        NCFs, repair datagrams, gones and heartbeats sent, batch datagrams
        sent, data datagrams sent (each datum's, fragment's and batch's
        first sending, not repairs), and repairs dropped (queue full).
        """
        return {
            "nacksReceived": self.nacksReceived,
            "nacksIgnored": self.nacksIgnored,
            "confirmsSent": self.confirmsSent,
            "repairsSent": self.repairsSent,
            "repairsDropped": self.bucket.dropped,
            "goneSent": self.goneSent,
            "heartbeatsSent": self.heartbeatsSent,
            "batchesSent": self.batchesSent,
            "datagramsSent": self.datagramsSent,
        }

    def _control(self, now: float) -> Stamp:
        return Stamp(self.src, self.boot, 0, now)

    def _sent(self, flushed: Flushed, now: float) -> list[bytes]:
        self.window.add(flushed.first, flushed.last, flushed.datagrams)
        self.heartbeats.datum(now)
        self.datagramsSent += len(flushed.datagrams)
        if flushed.batched:
            self.batchesSent += 1
        return flushed.datagrams

    def datum(self, key: str, value: object, stamp: Stamp) -> list[bytes]:
        """
        The next datum, stamped C{stamp} (its C{seq} the next one, its
        C{sent} the time now).

        @return: the datagrams to send now: an open batch that it closes,
            then its own unless it waits in a batch.
        @raise ValueError: for a bad key or value, or a value too large;
            nothing is changed.
        """
        now = stamp.sent
        batcher = self.batcher
        flushed, batched = batcher.add(key, value, stamp)
        if batched:
            out: list[bytes] = []
            for closed in flushed:
                out += self._sent(closed, now)
        else:
            datagrams = encodeData(key, value, stamp, self.signingKey, self.maxDatagram,
                                   repairable=True)
            out = self.flush(now) if batcher.deadline is not None else []
            batcher.previous = now
            out += self._sent(Flushed(stamp.seq, stamp.seq, datagrams, False), now)
        self.lastDatum = now
        return out

    def flush(self, now: float) -> list[bytes]:
        """
        @return: the open batch's datagrams (none when none is open).
        """
        closed = self.batcher.close()
        return [] if closed is None else self._sent(closed, now)

    def tick(self, now: float) -> list[bytes]:
        """
        @return: what is due at C{now}: an open batch past its holdback,
            repairs the rate now allows, a heartbeat.
        """
        out: list[bytes] = []
        if self.batcher.deadline is not None and now >= self.batcher.deadline:
            out += self.flush(now)
        if len(self.bucket):
            repairs = self.bucket.take(now)
            self.repairsSent += len(repairs)
            out += repairs
        if self.heartbeats.due(now):
            out.append(encodeHeartbeat(self._control(now), self.window.last, self.signingKey))
            self.heartbeatsSent += 1
            self.heartbeats.sent(now)
        return out

    def nextDeadline(self, now: float) -> float | None:
        """
        @return: when L{tick} has something to do next, or L{None}.
        """
        times = [t for t in (self.batcher.deadline, self.bucket.nextTime(now),
                             self.heartbeats.next) if t is not None]
        return min(times) if times else None

    def nack(self, data: bytes, now: float) -> list[bytes]:
        """
        Answer a datagram read from the source's socket.

        A NACK that does not parse, names another source or boot, or (when
        the source signs) is not signed with its key, is ignored and
        counted.  Otherwise: one NCF for the asked datums re-sent now, the
        repairs the rate allows (the rest follow from L{tick}), one gone
        for asked datums no longer held, and a heartbeat when some asked
        seq was never sent.
        """
        try:
            nack = parseNack(data, self.signingKey)
        except BadDatagram:
            self.nacksIgnored += 1
            return []
        if nack.source != self.src or nack.boot != self.boot:
            self.nacksIgnored += 1
            return []
        self.nacksReceived += 1
        answer = self.window.answer(nack.ranges, now)
        out: list[bytes] = []
        if answer.confirmed:
            out.append(encodeConfirm(self._control(now), answer.confirmed, self.signingKey))
            self.confirmsSent += 1
        if answer.datagrams:
            self.bucket.offer(answer.datagrams)
            repairs = self.bucket.take(now)
            self.repairsSent += len(repairs)
            out += repairs
        if answer.gone:
            out.append(encodeGone(self._control(now), answer.gone, self.signingKey))
            self.goneSent += 1
        if answer.heartbeat:
            out.append(encodeHeartbeat(self._control(now), self.window.last, self.signingKey))
            self.heartbeatsSent += 1
        return out

    def closing(self, now: float) -> None:
        """
        The source closes and lingers: heartbeat every L{LINGER_HEARTBEAT}
        seconds from now on.
        """
        self.heartbeats.closing(now, LINGER_HEARTBEAT)

    def lingerUntil(self, linger: float) -> float | None:
        """
        @return: when a closing source may stop answering (C{linger} seconds
            after its last datum), or L{None} when it sent none.
        """
        return None if self.lastDatum is None else self.lastDatum + linger
