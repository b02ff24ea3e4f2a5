# -*- test-case-name: tests.test_keystore -*-
"""
The KeyStore: what the server knows about each key, and who is waiting for it.

For each key it holds the latest datum, a bounded history of recent datums, the
metadata a source registered, and through a L{PatternIndex} the waiters: one-shot
L{Waiter}s (a long poll) and lasting L{Subscription}s (a stream).  Publishing a
datum hands it to every listener whose pattern matches its key, without looking
at listeners of other keys.

What it holds is bounded in bytes: every datum, key and registration is
charged what it costs against one budget (see L{KeyStore}), values being held
as their JSON text.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import json
import secrets
from collections import OrderedDict
from typing import Any, Callable, Iterator

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

# The defaults of the server's options; see L{KeyStore}.
from artcast.server.defaults import (
    DEFAULT_HISTORY,
    DEFAULT_HISTORY_AGE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_KEYS,
)
from artcast.server.interfaces import IListener
from artcast.server.patterns import REST, STAR, PatternIndex, isPattern, matches
from artcast.wire import DatumId, Stamp, encodeJSON

__all__ = [
    "DATUM_OVERHEAD",
    "KEY_OVERHEAD",
    "META_OVERHEAD",
    "Datum",
    "DeferredWaiter",
    "Found",
    "KeyStore",
    "Subscription",
    "Waiter",
]


#: A fan-out to more listeners than this runs with the cyclic garbage
#: collector paused (L{KeyStore.publish}).
_FAN_OUT_UNCOLLECTED = 256

_log = Logger(namespace="artcast.keystore")


#: What a held datum costs beyond the bytes of its value and of its id: the
#: L{Datum} itself, its numbers, the C{bytes} and C{str} headers, its place
#: in its key's history (measured with C{tracemalloc}; see
#: C{tests/test_bounds_store.py}).
DATUM_OVERHEAD = 368

#: What a held key costs beyond the bytes of its name: its entry, its place
#: in the store's dictionary, its empty history, its place in the index of
#: the oldest history (measured likewise).
KEY_OVERHEAD = 250

#: What registered metadata costs beyond the bytes of its JSON text.
META_OVERHEAD = 40


def _datumCost(text: bytes, datumId: str) -> int:
    """
    What holding a datum costs, in bytes, as the store charges it: its JSON
    text, for a string its text too (made when first asked for; never longer
    than the JSON), its id and L{DATUM_OVERHEAD}.
    """
    size = len(text)
    if text[:1] == b'"':
        size += size
    return size + len(datumId) + DATUM_OVERHEAD


@attr.s(slots=True, eq=False, auto_attribs=True)
class Datum:
    """
    A value received for a key, with its id and the encodings made of it.

    The value is held as its compact JSON text, the form every answer sends:
    a parsed JSON value costs Python objects many times its text (an empty
    object in an array, 3 bytes of text, is a 64-byte C{dict}), so holding
    the text keeps what the store charges for a datum close to what it
    really holds.  L{value} decodes it again where a Python value is wanted.

    @ivar json: the value as compact UTF-8 JSON text.
    @ivar serial: the store-wide arrival order, for merging keys' histories.
    @ivar lost: how many datums of the datum's (source, boot) the server
        declared unrecoverable before it (cumulative, never decreasing
        within a boot; 0 for version 1 and HTTP-published datums).  Two
        datums of one (source, boot) whose C{lost} differ have an
        unrecoverable loss between them (L{KeyStore.lossBefore}).
    """

    key: str
    json: bytes
    id: str
    source: str
    boot: int
    seq: int
    sent: float | None
    received: float
    serial: int
    lost: int = 0
    _text: bytes | None = None
    #: What the HTTP front end made of the datum for each representation (the
    #: headers of an answer), made once however many clients it is sent to;
    #: L{None} until it is first sent.
    answers: dict[str, Any] | None = None

    @property
    def value(self) -> Any:
        """
        The value, decoded from its JSON text each time it is asked for.
        """
        return json.loads(self.json)

    @property
    def text(self) -> bytes:
        """
        The value as plain text: a string as itself, anything else as JSON.
        """
        if self._text is None:
            if self.json[:1] == b'"':
                self._text = json.loads(self.json).encode("utf-8")
            else:
                self._text = self.json
        return self._text

    @property
    def size(self) -> int:
        """
        The size of the value's JSON text in bytes.
        """
        return len(self.json)

    @property
    def cost(self) -> int:
        """
        What holding the datum costs, in bytes, as the store charges it
        (L{_datumCost}).
        """
        return _datumCost(self.json, self.id)

    def after(self, stamp: DatumId) -> bool:
        """
        Is this datum later than the id C{stamp}?  Only ids of the same source
        compare (L{DatumId.covers}); a datum of another source is never "after".
        """
        return self.source == stamp.source and not stamp.covers(
            self.source, self.boot, self.seq
        )


@attr.s(slots=True, auto_attribs=True)
class Found:
    """
    What a history lookup gives: a datum to answer with at once (or L{None}:
    wait for the next), and whether datums were missed (C{Artcast-Gap}):
    those after the client's id are no longer held, or the server declared
    datums of the answer's source unrecoverable between the datum the
    client has and the answer (L{KeyStore.lossBefore}).

    @ivar skipThrough: when waiting, ignore datums of this id or earlier
        (L{DatumId.covers}): the client already has them from another server.
    @ivar origin: when waiting, the datum the client has (or, for an id not
        held, the latest held of its source and boot before it), if known:
        what the C{lost} of the datum that comes is compared with.
    @ivar unlessNext: when waiting with C{gap} because nothing is held (a
        server that restarted), the gap stands unless the datum that comes
        is the very next of C{skipThrough}'s source (L{DatumId.isNext}).
    """

    datum: Datum | None
    gap: bool = False
    skipThrough: DatumId | None = None
    origin: Datum | None = None
    unlessNext: bool = False


@implementer(IListener)
class Waiter:
    """
    A one-shot listener: the next datum whose key matches C{pattern} (but a
    datum of C{skipThrough} or earlier) is handed to L{arrived}, once.

    A subclass says what arrival means; L{KeyStore.next} gives a waiter
    whose L{Deferred} fires, and the HTTP front end's long poll is a waiter
    that answers its request itself (one object per held request).

    @ivar skipThrough: ignore datums of this id or earlier
        (L{DatumId.covers}): the client already has them from another server.
    """

    __slots__ = ("store", "pattern", "skipThrough")

    def __init__(
        self,
        store: KeyStore,
        pattern: str,
        skipThrough: DatumId | None = None,
    ) -> None:
        self.store = store
        self.pattern = pattern
        self.skipThrough = skipThrough

    def start(self) -> None:
        """
        Start waiting.
        """
        self.store._listeners.add(self.pattern, self)

    def cancel(self) -> None:
        """
        Stop waiting, without a word to anyone; harmless when the waiter is
        not (or no longer) waiting.
        """
        self.store._listeners.remove(self.pattern, self)

    def stop(self) -> None:
        """
        The store stops this wait (L{KeyStore.cancelWaiters}): cancel it and
        tell L{stopped}.
        """
        self.cancel()
        self.stopped()

    def notify(self, datum: Datum) -> None:
        if self.skipThrough is not None and self.skipThrough.covers(
            datum.source, datum.boot, datum.seq
        ):
            return
        self.store._listeners.remove(self.pattern, self)
        self.arrived(datum)

    def arrived(self, datum: Datum) -> None:
        """
        The datum waited for; the waiter no longer waits.
        """
        raise NotImplementedError()

    def stopped(self) -> None:
        """
        The wait was stopped by the store before a datum came.
        """


class DeferredWaiter(Waiter):
    """
    A L{Waiter} whose L{Deferred} fires with the datum; cancelling the
    Deferred (a client that went away) stops the wait at once, and a wait
    the store stops fails it with L{CancelledError}.
    """

    __slots__ = ("deferred",)

    deferred: Deferred[Datum]

    def start(self) -> None:
        self.deferred = Deferred(self._cancelled)
        super().start()

    def _cancelled(self, deferred: Deferred[Datum]) -> None:
        self.cancel()

    def arrived(self, datum: Datum) -> None:
        self.deferred.callback(datum)

    def stopped(self) -> None:
        self.deferred.cancel()


@implementer(IListener)
class Subscription:
    """
    A lasting listener: C{callback} is called with every matching datum until
    L{cancel}.
    """

    __slots__ = ("store", "pattern", "callback", "active")

    def __init__(
        self, store: KeyStore, pattern: str, callback: Callable[[Datum], object]
    ) -> None:
        self.store = store
        self.pattern = pattern
        self.callback = callback
        self.active = True

    def notify(self, datum: Datum) -> None:
        self.callback(datum)

    def cancel(self) -> None:
        """
        Stop delivering; calling it twice is harmless.
        """
        if self.active:
            self.active = False
            self.store._listeners.remove(self.pattern, self)


@attr.s(slots=True, eq=False, auto_attribs=True)
class _Key:
    """
    What the store holds for one key.

    @ivar history: the datums held, in arrival order, the latest last.
    @ivar meta: the registered metadata as compact JSON text.
    @ivar sources: while the history holds datums of more than one source,
        each source's datums in arrival order (L{None} while it holds one
        source's: the history itself), so each can be bisected by id.
    @ivar disordered: whether some source's ids in the history may not grow
        in arrival order (rare: the source tracker drops a source's older
        ids, unless it had forgotten the source; L{KeyStore.since} then reads
        the history through).
    @ivar indexed: whether the key is in the index of the oldest history.
    @ivar gone: whether the key was forgotten.
    """

    name: str
    history: list[Datum]
    meta: bytes | None = None
    sources: dict[str, list[Datum]] | None = None
    disordered: bool = False
    indexed: bool = False
    gone: bool = False

    @property
    def latest(self) -> Datum | None:
        return self.history[-1] if self.history else None


def _serialOf(datum: Datum) -> int:
    return datum.serial


def _stampOf(datum: Datum) -> tuple[int, int]:
    """
    A datum's place in its source's order (L{DatumId.covers}): the key its
    source's part of a history is bisected by.
    """
    return (datum.boot, datum.seq)


class KeyStore:
    """
    The server's datums and waiters.

    Everything held is charged, in bytes, against one budget (C{maxBytes}):
    each datum (L{Datum.cost}), each key and its registered metadata.  When
    it is spent, the oldest datums in history are forgotten first, store-wide
    (so the latest value of a key stays as long as possible), then the least
    recently updated keys.

    @param clock: the time source (a reactor, or a L{task.Clock} in tests).
    @param history: how many datums each key keeps for C{since} (at least 1:
        the latest value is always kept).
    @param historyAge: how many seconds a datum stays in history; the latest
        value of a key stays however old it is.
    @param maxKeys: how many keys are held; past it, the least recently updated
        key is forgotten (whoever waits for it still gets its next datum).
    @param maxBytes: how many bytes the datums, keys and metadata held may
        cost in all.

    @ivar bytes: what everything held costs now, in bytes.
    @ivar forgotten: datums forgotten from history to stay within
        C{maxBytes} (history left by count or age is not counted).
    @ivar evicted: keys forgotten, for C{maxKeys} or C{maxBytes}.
    @ivar refused: datums and registrations not held because they alone
        cost more than C{maxBytes}.
    @ivar keysVersion: grows each time a key is added or forgotten or its
        metadata changes, so that what is made of L{keys} (the listing) is
        made again only then.
    """

    def __init__(
        self,
        clock: IReactorTime,
        history: int = DEFAULT_HISTORY,
        historyAge: float = DEFAULT_HISTORY_AGE,
        maxKeys: int = DEFAULT_MAX_KEYS,
        instance: str | None = None,
        maxBytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.clock = clock
        self.history = max(1, history)
        self.historyAge = historyAge
        self.maxKeys = maxKeys
        self.maxBytes = maxBytes
        self.instance = instance or "s" + secrets.token_hex(4)
        self.boot = int(clock.seconds() * 1000)
        self._seq = 0
        self._serial = 0
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        #: A heap of C{(serial, key)}: for each key holding history beside
        #: its latest datum, the serial of its oldest datum or an earlier
        #: one (corrected when it comes to the top).
        self._oldest: list[tuple[int, _Key]] = []
        self._listeners: PatternIndex[Waiter | Subscription] = PatternIndex()
        self.bytes = 0
        self.forgotten = 0
        self.evicted = 0
        self.refused = 0
        self.keysVersion = 0
        #: The last answer of L{_lossBefore}: C{(pattern, datum, before)}.
        self._lossCache: tuple[str, Datum, Datum | None] | None = None
        #: Called with C{(key, metadata JSON text)} for each registration
        #: held (L{watchRegistrations}).
        self._registrationWatchers: list[Callable[[str, bytes], object]] = []
        #: While a datum is handed to its listeners: what they asked to be
        #: done once all have it (L{afterFanOut}); else L{None}.
        self._after: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = None

    # Publishing

    def publish(
        self, key: str, value: object, stamp: Stamp | None = None, lost: int = 0
    ) -> Datum | None:
        """
        Store a datum and hand it to everyone waiting for its key.

        @param stamp: the source's id for the datum (wire version 2); without
            one (version 1) the server stamps it itself.
        @param lost: how many datums of the stamp's (source, boot) were
            declared unrecoverable before this one (L{Datum.lost}); 0 without
            a stamp.
        @return: the datum, or L{None} if it alone costs more than the whole
            budget (C{maxBytes}) and is not held.
        """
        text = encodeJSON(value)
        now = self.clock.seconds()
        entry = self._keys.get(key)
        if stamp is None:
            datumId = str(DatumId(self.instance, self.boot, self._seq + 1))
        else:
            datumId = stamp.datumId()
        cost = _datumCost(text, datumId)
        if cost + self._keyCost(key if entry is None else entry) > self.maxBytes:
            self.refused += 1
            return None
        if entry is None:
            entry = self._newEntry(key)
        self._serial += 1
        if stamp is None:
            self._seq += 1
            datum = Datum(
                entry.name, text, datumId, self.instance, self.boot, self._seq,
                None, now, self._serial,
            )
        else:
            datum = Datum(
                entry.name, text, datumId, stamp.source, stamp.boot,
                stamp.seq, stamp.sent, now, self._serial, lost,
            )
        self._append(entry, datum)
        self._expire(entry, now)
        self._keys.move_to_end(key)
        self._makeRoom(entry)
        listeners = self._listeners.match(key)
        if not listeners:
            return datum
        outer = self._after
        after = self._after = [] if outer is None else outer
        collecting = len(listeners) > _FAN_OUT_UNCOLLECTED and gc.isenabled()
        if collecting:
            # No pause of the cyclic collector while the datum goes out:
            # its objects are counted, and collected after.
            gc.disable()
        try:
            for listener in listeners:
                try:
                    listener.notify(datum)
                except Exception:
                    # One listener's failure must not cost the others the datum.
                    _log.failure("A listener of {key!r} failed.", key=key)
        finally:
            if collecting:
                gc.enable()
            if outer is None:
                self._after = None
                for function, args in after:
                    try:
                        function(*args)
                    except Exception:
                        _log.failure("Finishing an answer of {key!r} failed.", key=key)
        return datum

    def afterFanOut(self, function: Callable[..., object], *args: Any) -> None:
        """
        Call C{function(*args)} once every listener of the datum being
        published has been handed it (in the same reactor turn, in the order
        asked), or now when no datum is being published.

        A long poll sends its answer at once and finishes its request (the
        access log, its connection's next request) here, after all the
        others have theirs: the last of 10,000 waiting clients gets the datum
        without waiting for the bookkeeping of the 9,999 before it.  A
        failure is logged; the others are still called.
        """
        after = self._after
        if after is None:
            function(*args)
        else:
            after.append((function, args))

    def register(self, key: str, meta: dict[str, Any]) -> bool:
        """
        Record the metadata a source registered for a key (unless it, with
        the key's latest value, costs more than the whole budget: then it is
        refused and counted).

        @return: whether the metadata is held.
        """
        text = encodeJSON(meta)
        entry = self._keys.get(key)
        base = KEY_OVERHEAD + len(key)
        if entry is not None and entry.history:
            # The key's latest value is not forgotten for its own metadata.
            base += entry.history[-1].cost
        if base + len(text) + META_OVERHEAD > self.maxBytes:
            self.refused += 1
            return False
        if entry is None:
            entry = self._newEntry(key)
        if entry.meta is not None:
            self.bytes -= len(entry.meta) + META_OVERHEAD
        if entry.meta != text:
            self.keysVersion += 1
        entry.meta = text
        self.bytes += len(text) + META_OVERHEAD
        self._makeRoom(entry)
        for watcher in self._registrationWatchers:
            try:
                watcher(key, text)
            except Exception:
                _log.failure("A watcher of registrations failed.")
        return True

    def watchRegistrations(
        self, callback: Callable[[str, bytes], object]
    ) -> Callable[[], None]:
        """
        Call C{callback(key, metadata JSON text)} for every registration
        held from now on (repeated registrations included: sources repeat
        theirs every 30 s).

        @return: a function that stops the calls (harmless to call twice).
        """
        self._registrationWatchers.append(callback)

        def unwatch() -> None:
            if callback in self._registrationWatchers:
                self._registrationWatchers.remove(callback)

        return unwatch

    def _keyCost(self, entry: _Key | str) -> int:
        """
        What a key costs without its datums.
        """
        if isinstance(entry, str):
            return KEY_OVERHEAD + len(entry)
        cost = KEY_OVERHEAD + len(entry.name)
        if entry.meta is not None:
            cost += len(entry.meta) + META_OVERHEAD
        return cost

    def _newEntry(self, key: str) -> _Key:
        """
        Hold a new key, forgetting the least recently updated one if there
        are C{maxKeys} already, whoever waits for it: waiters are held by
        pattern, not by key, so they still get its next datum.
        """
        if len(self._keys) >= self.maxKeys:
            self._forgetKey(next(iter(self._keys.values())))
        entry = self._keys[key] = _Key(key, [])
        self.bytes += KEY_OVERHEAD + len(key)
        self.keysVersion += 1
        return entry

    def _forgetKey(self, entry: _Key) -> None:
        del self._keys[entry.name]
        self.keysVersion += 1
        self.bytes -= self._keyCost(entry)
        for datum in entry.history:
            self.bytes -= datum.cost
        entry.history = []
        entry.sources = None
        entry.meta = None
        entry.gone = True
        self.evicted += 1

    def _append(self, entry: _Key, datum: Datum) -> None:
        history = entry.history
        if history:
            sources = entry.sources
            if sources is None and history[-1].source != datum.source:
                sources = entry.sources = {}
                for held in history:
                    sources.setdefault(held.source, []).append(held)
            if sources is None:
                previous: Datum | None = history[-1]
            else:
                own = sources.setdefault(datum.source, [])
                previous = own[-1] if own else None
                own.append(datum)
            if previous is not None and _stampOf(datum) <= _stampOf(previous):
                entry.disordered = True
            # Answers are kept for a key's latest datum only (artcast.server.answers).
            history[-1].answers = None
        history.append(datum)
        self.bytes += datum.cost
        excess = len(history) - self.history
        if excess > 0:
            self._dropFirst(entry, excess)
        self._indexOldest(entry)

    def _dropFirst(self, entry: _Key, count: int) -> None:
        """
        Let the C{count} oldest datums of a key's history go.
        """
        history = entry.history
        sources = entry.sources
        for old in history[:count]:
            self.bytes -= old.cost
            if sources is not None:
                own = sources[old.source]
                del own[0]
                if not own:
                    del sources[old.source]
        del history[:count]
        if sources is not None and len(sources) < 2:
            entry.sources = None
        if len(history) < 2:
            entry.disordered = False

    def _indexOldest(self, entry: _Key) -> None:
        """
        Put a key holding history beside its latest datum in the index of the
        oldest history, if it is not there already.
        """
        if entry.indexed or len(entry.history) < 2:
            return
        entry.indexed = True
        oldest = self._oldest
        heapq.heappush(oldest, (entry.history[0].serial, entry))
        if len(oldest) > 2 * len(self._keys) + 64:
            # Forgotten keys' places: rebuild from the keys held.
            for _, stale in oldest:
                stale.indexed = False
            oldest[:] = [
                (held.history[0].serial, held)
                for held in self._keys.values()
                if len(held.history) > 1
            ]
            for _, held in oldest:
                held.indexed = True
            heapq.heapify(oldest)

    def _forgetOldestHistory(self) -> bool:
        """
        Forget the oldest datum held in history (not a key's latest), of
        any key.

        @return: whether there was one.
        """
        oldest = self._oldest
        while oldest:
            serial, entry = oldest[0]
            history = entry.history
            if entry.gone or len(history) < 2:
                heapq.heappop(oldest)
                entry.indexed = False
                continue
            first = history[0]
            if first.serial != serial:
                heapq.heapreplace(oldest, (first.serial, entry))
                continue
            self._dropFirst(entry, 1)
            self.forgotten += 1
            if len(history) > 1:
                heapq.heapreplace(oldest, (history[0].serial, entry))
            else:
                heapq.heappop(oldest)
                entry.indexed = False
            return True
        return False

    def _makeRoom(self, keep: _Key) -> None:
        """
        Forget the oldest history, then the least recently updated keys but
        C{keep}, until what is held fits in C{maxBytes}.
        """
        while self.bytes > self.maxBytes:
            if self._forgetOldestHistory():
                continue
            for entry in self._keys.values():
                if entry is not keep:
                    break
            else:
                return
            self._forgetKey(entry)

    def _expire(self, entry: _Key, now: float) -> None:
        history = entry.history
        limit = now - self.historyAge
        count = 0
        while count < len(history) - 1 and history[count].received < limit:
            count += 1
        if count:
            self._dropFirst(entry, count)

    # Reading

    def latest(self, pattern: str) -> Datum | None:
        """
        The most recent datum of the key, or of any key the pattern matches.
        """
        if not isPattern(pattern):
            entry = self._keys.get(pattern)
            return entry.latest if entry is not None else None
        best = None
        for entry in self._matching(pattern):
            datum = entry.latest
            if datum is not None and (best is None or datum.serial > best.serial):
                best = datum
        return best

    def isLatest(self, datum: Datum) -> bool:
        """
        Is the datum its key's latest, as held now?
        """
        entry = self._keys.get(datum.key)
        return entry is not None and entry.latest is datum

    def current(self, pattern: str) -> list[Datum]:
        """
        The latest datum of the key, or of each key the pattern matches, in
        the order they arrived: one datum per key, no history looked at.
        """
        if not isPattern(pattern):
            latest = self.latest(pattern)
            return [] if latest is None else [latest]
        return sorted(
            (entry.history[-1] for entry in self._matching(pattern) if entry.history),
            key=_serialOf,
        )

    def metadata(self, key: str) -> dict[str, Any] | None:
        """
        The metadata registered for a key, if any (decoded anew each time).
        """
        entry = self._keys.get(key)
        if entry is None or entry.meta is None:
            return None
        meta: dict[str, Any] = json.loads(entry.meta)
        return meta

    def registration(self, key: str) -> bytes | None:
        """
        The metadata registered for a key as its JSON text, if any: the same
        object until the key is registered again, so a cache of what is
        made of it can tell when it changed.
        """
        entry = self._keys.get(key)
        return entry.meta if entry is not None else None

    def keys(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """
        Every key held, sorted, with its metadata.
        """
        for name in sorted(self._keys):
            meta = self._keys[name].meta
            yield name, None if meta is None else json.loads(meta)

    def __len__(self) -> int:
        return len(self._keys)

    def statistics(self) -> dict[str, int]:
        """
        The store's figures for C{/stats}.
        """
        return {
            "store_bytes": self.bytes,
            "store_bytes_max": self.maxBytes,
            "history_forgotten": self.forgotten,
            "store_refused": self.refused,
        }

    def _matching(self, pattern: str) -> list[_Key]:
        """
        The keys a pattern matches; C{...} after plain levels (C{a/b/...},
        or C{...}: every key) by their names' beginning.
        """
        if pattern == REST or pattern.endswith("/" + REST):
            prefix = pattern[: -len(REST)]
            if STAR not in prefix.split("/"):
                return [
                    entry for name, entry in self._keys.items() if name.startswith(prefix)
                ]
        return [entry for name, entry in self._keys.items() if matches(pattern, name)]

    def _held(self, pattern: str) -> list[_Key]:
        """
        The keys a key or pattern names that hold datums, their history
        expired by age.
        """
        now = self.clock.seconds()
        if isPattern(pattern):
            entries = self._matching(pattern)
        else:
            entry = self._keys.get(pattern)
            entries = [] if entry is None else [entry]
        limit = now - self.historyAge
        held = []
        for entry in entries:
            history = entry.history
            if history:
                if len(history) > 1 and history[0].received < limit:
                    self._expire(entry, now)
                held.append(entry)
        return held

    def held(self, pattern: str) -> list[Datum]:
        """
        The datums held for a key or pattern, oldest first.

        This looks at every datum held for every matching key: requests use
        L{current}, L{since} and L{following}, whose cost follows what they
        give.
        """
        histories = [entry.history for entry in self._held(pattern)]
        if len(histories) == 1:
            return list(histories[0])
        return list(heapq.merge(*histories, key=_serialOf))

    def recent(self, key: str, count: int) -> list[Datum]:
        """
        The last C{count} datums held for a key (not a pattern), oldest
        first: what a key's live page draws.  Its cost follows C{count}.
        """
        held = self._held(key) if count > 0 and not isPattern(key) else []
        if not held:
            return []
        return held[0].history[-count:]

    @property
    def lastSerial(self) -> int:
        """
        The serial of the last datum taken in: it changes whenever a datum
        is stored, so what is made of the latest values can tell.
        """
        return self._serial

    def following(self, pattern: str, datum: Datum) -> list[Datum]:
        """
        The datums held for a key or pattern from C{datum} (included) on, in
        arrival order: each key's history is bisected, and only what follows
        is merged.
        """
        tails = []
        for entry in self._held(pattern):
            history = entry.history
            start = bisect.bisect_left(history, datum.serial, key=_serialOf)
            if start < len(history):
                tails.append(history[start:])
        if len(tails) == 1:
            return tails[0]
        return list(heapq.merge(*tails, key=_serialOf))

    def since(self, pattern: str, datumId: str) -> Found:
        """
        Find what follows the datum C{datumId} for a key or pattern.

        Each matching key's history (of a key fed by several sources, that
        source's part of it) is bisected by id, and by serial for the datum
        that follows, so the cost grows with the number of matching keys and
        the logarithm of their history, not with the datums they hold.  Only
        a history where a source's ids went backwards is read through.

        The answer comes with C{gap} set when the datums after C{datumId} are
        no longer held, or when the answer's C{lost} differs from that of the
        latest datum of its (source, boot) held before it
        (L{KeyStore.lossBefore}): the client's own datum, or for an id not
        held, the source's datum before the answer.

        @raise ValueError: if C{datumId} is not an id.
        """
        wanted = DatumId.parse(datumId)
        source = wanted.source
        mark = (wanted.boot, wanted.seq)
        entries = self._held(pattern)
        hit: Datum | None = None  # the latest datum with that id
        oldest: Datum | None = None  # the first held
        firstSame: Datum | None = None  # the first of that source
        firstLater: Datum | None = None  # the first of that source after the id
        lastSame: Datum | None = None  # the latest of that source (not scanned)
        scanned = False
        for entry in entries:
            history = entry.history
            first = history[0]
            if oldest is None or first.serial < oldest.serial:
                oldest = first
            if entry.disordered:
                same, later, exact = self._scan(entry, source, mark, datumId)
                scanned = True
            else:
                if entry.sources is not None:
                    own = entry.sources.get(source)
                    if own is None:
                        continue
                elif first.source == source:
                    own = history
                else:
                    continue
                same = own[0]
                index = bisect.bisect_right(own, mark, key=_stampOf)
                exact = own[index - 1] if index else None
                if exact is not None and exact.id != datumId:
                    exact = None
                later = own[index] if index < len(own) else None
                tail = own[-1]
                if lastSame is None or tail.serial > lastSame.serial:
                    lastSame = tail
            if exact is not None and (hit is None or exact.serial > hit.serial):
                hit = exact
            if same is not None and (firstSame is None or same.serial < firstSame.serial):
                firstSame = same
            if later is not None and (
                firstLater is None or later.serial < firstLater.serial
            ):
                firstLater = later
        if hit is not None:
            following = None
            for entry in entries:
                history = entry.history
                index = bisect.bisect_right(history, hit.serial, key=_serialOf)
                if index < len(history) and (
                    following is None or history[index].serial < following.serial
                ):
                    following = history[index]
            if following is not None:
                return Found(following, following.lost != 0
                             and self._lossBefore(pattern, following) is not None)
            return Found(None, skipThrough=wanted, origin=hit)
        if firstSame is not None and firstLater is None:
            # The client is as far along as this server, or further (it saw a
            # datum from another server that has not reached this one yet).
            if scanned or (lastSame is not None and lastSame.boot != wanted.boot):
                lastSame = None
            return Found(None, skipThrough=wanted, origin=lastSame)
        if firstLater is not None and _stampOf(firstLater) == (wanted.boot, wanted.seq + 1):
            # The very next datum of that source: nothing is missed.
            return Found(firstLater)
        if firstLater is not None and firstLater is not firstSame:
            # Older and newer datums of that source are here, only this one is
            # not: the client is in step and misses nothing, but what this
            # server declared unrecoverable after the datum before the answer.
            return Found(firstLater, firstLater.lost != 0
                         and self._lossBefore(pattern, firstLater) is not None)
        if oldest is not None:
            return Found(oldest, gap=True)
        # Nothing held (the server restarted): what comes next says whether
        # the client missed anything.
        return Found(None, gap=True, skipThrough=wanted, unlessNext=True)

    def previous(self, pattern: str, datum: Datum) -> Datum | None:
        """
        The latest datum of C{datum}'s (source, boot) held for a key or
        pattern that arrived before it: each matching key's part of that
        source is bisected by serial.

        @return: that datum, or L{None} if none is held.
        """
        source = datum.source
        serial = datum.serial
        best: Datum | None = None
        for entry in self._held(pattern):
            sources = entry.sources
            if sources is not None:
                own = sources.get(source)
                if own is None:
                    continue
            elif entry.history[0].source == source:
                own = entry.history
            else:
                continue
            index = bisect.bisect_left(own, serial, key=_serialOf)
            if index:
                candidate = own[index - 1]
                if candidate.boot == datum.boot and (
                    best is None or candidate.serial > best.serial
                ):
                    best = candidate
        return best

    def lossBefore(self, pattern: str, datum: Datum) -> Datum | None:
        """
        Did this server declare datums of C{datum}'s (source, boot)
        unrecoverable between it and the one before it that a client of a
        key or pattern got (L{previous})?  Only datums whose C{lost} is not 0
        can follow such a loss, so for any other this costs one comparison.

        A client resuming after the datum before it may have missed those
        datums (they may have been of another key: C{lost} counts a source's
        datums, whatever their key).

        @return: the datum before it, whose C{lost} differs, or L{None} (no
            loss, or none of that source and boot held before it).
        """
        if not datum.lost:
            return None
        return self._lossBefore(pattern, datum)

    def _lossBefore(self, pattern: str, datum: Datum) -> Datum | None:
        """
        L{lossBefore} for a datum whose C{lost} is not 0; the last answer is
        kept, so that the many long polls a datum answers ask once.
        """
        cached = self._lossCache
        if cached is not None and cached[1] is datum and cached[0] == pattern:
            return cached[2]
        before = self.previous(pattern, datum)
        if before is not None and before.lost == datum.lost:
            before = None
        self._lossCache = (pattern, datum, before)
        return before

    def _scan(
        self, entry: _Key, source: str, mark: tuple[int, int], datumId: str
    ) -> tuple[Datum | None, Datum | None, Datum | None]:
        """
        Read a disordered history through for L{since}: the first datum of
        C{source}, the first of it after C{mark}, the latest with the id
        C{datumId}; and find whether the history is still disordered.
        """
        same = later = exact = None
        lastOf: dict[str, tuple[int, int]] = {}
        disordered = False
        for datum in entry.history:
            stamp = _stampOf(datum)
            previous = lastOf.get(datum.source)
            if previous is not None and stamp <= previous:
                disordered = True
            lastOf[datum.source] = stamp
            if datum.source != source:
                continue
            if same is None:
                same = datum
            if later is None and stamp > mark:
                later = datum
            if datum.id == datumId:
                exact = datum
        entry.disordered = disordered
        return same, later, exact

    # Waiting

    def next(
        self, pattern: str, skipThrough: DatumId | None = None
    ) -> Deferred[Datum]:
        """
        Wait for the next datum of a key, or of any key a pattern matches.

        @return: a L{Deferred} that fires with the L{Datum}; cancelling it
            removes the waiter.
        """
        waiter = DeferredWaiter(self, pattern, skipThrough)
        waiter.start()
        return waiter.deferred

    def subscribe(
        self, pattern: str, callback: Callable[[Datum], object]
    ) -> Subscription:
        """
        Call C{callback} with every datum for a key or pattern from now on.
        """
        subscription = Subscription(self, pattern, callback)
        self._listeners.add(pattern, subscription)
        return subscription

    def waitingByPattern(self) -> dict[str, int]:
        """
        How many waiters and subscriptions each key or pattern has.
        """
        return self._listeners.counts()

    def cancelWaiters(self) -> int:
        """
        Stop every one-shot waiter (a held long poll), as at shutdown once
        their requests are answered: each is unregistered and told
        (L{Waiter.stopped}: the L{Deferred} of L{next} fails with
        L{CancelledError}).  Subscriptions (streams) are left to their owners.

        @return: How many waiters were cancelled.
        """
        waiters = [
            item for _, item in self._listeners.items() if isinstance(item, Waiter)
        ]
        for waiter in waiters:
            waiter.stop()
        return len(waiters)

    @property
    def listening(self) -> int:
        """
        How many waiters and subscriptions are registered.
        """
        return len(self._listeners)
