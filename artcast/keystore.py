# -*- test-case-name: tests.test_keystore -*-
"""
The KeyStore: what the server knows about each key, and who is waiting for it.

For each key it holds the latest datum, a bounded history of recent datums, the
metadata a source registered, and through a L{PatternIndex} the waiters: one-shot
L{Waiter}s (a long poll) and lasting L{Subscription}s (a stream).  Publishing a
datum hands it to every listener whose pattern matches its key, without looking
at listeners of other keys.
"""

from __future__ import annotations

import heapq
import json
import secrets
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable, Iterator

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from artcast._wildcard import PatternIndex, isPattern, matches
from artcast.wire import Stamp, parseDatumId

#: The defaults of the server's options; see L{KeyStore}.
DEFAULT_HISTORY = 100
DEFAULT_HISTORY_AGE = 3600.0
DEFAULT_MAX_KEYS = 10_000

_log = Logger()


def encodeJSON(value: object) -> bytes:
    """
    Encode a value as the compact UTF-8 JSON text Artcast sends.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@attr.s(slots=True, eq=False, auto_attribs=True)
class Datum:
    """
    A value received for a key, with its id and the encodings made of it.

    @ivar serial: the store-wide arrival order, for merging keys' histories.
    """

    key: str
    value: object
    id: str
    source: str
    boot: int
    seq: int
    sent: float | None
    received: float
    serial: int
    _json: bytes | None = None
    _text: bytes | None = None
    #: What the HTTP front end made of the datum for each representation (the
    #: headers of an answer), made once however many clients it is sent to;
    #: L{None} until it is first sent.
    answers: dict[str, Any] | None = None

    @property
    def json(self) -> bytes:
        """
        The value as JSON, encoded once however many clients it is sent to.
        """
        if self._json is None:
            self._json = encodeJSON(self.value)
        return self._json

    @property
    def text(self) -> bytes:
        """
        The value as plain text: a string as itself, anything else as JSON.
        """
        if self._text is None:
            if isinstance(self.value, str):
                self._text = self.value.encode("utf-8")
            else:
                self._text = self.json
        return self._text

    @property
    def size(self) -> int:
        """
        The size of the value's JSON text in bytes.
        """
        return len(self.json)

    def after(self, stamp: tuple[str, int, int]) -> bool:
        """
        Is this datum later than the id C{(source, boot, seq)}?  Only ids of the
        same source compare; a datum of another source is never "after".
        """
        source, boot, seq = stamp
        return self.source == source and (self.boot, self.seq) > (boot, seq)


@attr.s(slots=True, auto_attribs=True)
class Found:
    """
    What a history lookup gives: a datum to answer with at once (or L{None}:
    wait for the next), and whether datums were missed (C{Artcast-Gap}).

    @ivar skipThrough: when waiting, ignore datums of this C{(source, boot,
        seq)} or earlier: the client already has them from another server.
    """

    datum: Datum | None
    gap: bool = False
    skipThrough: tuple[str, int, int] | None = None


class Waiter:
    """
    A one-shot listener: the next datum whose key matches C{pattern} (but a
    datum of C{skipThrough} or earlier) is handed to L{arrived}, once.

    A subclass says what arrival means; L{KeyStore.next} gives a waiter
    whose L{Deferred} fires, and the HTTP front end's long poll is a waiter
    that answers its request itself (one object per held request).

    @ivar skipThrough: ignore datums of this C{(source, boot, seq)} or
        earlier: the client already has them from another server.
    """

    __slots__ = ("store", "pattern", "skipThrough")

    def __init__(
        self,
        store: KeyStore,
        pattern: str,
        skipThrough: tuple[str, int, int] | None = None,
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
        if self.skipThrough is not None:
            source, boot, seq = self.skipThrough
            if datum.source == source and (datum.boot, datum.seq) <= (boot, seq):
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


@attr.s(slots=True, auto_attribs=True)
class _Key:
    name: str
    history: deque[Datum]
    meta: dict[str, Any] | None = None

    @property
    def latest(self) -> Datum | None:
        return self.history[-1] if self.history else None


class KeyStore:
    """
    The server's datums and waiters.

    @param clock: the time source (a reactor, or a L{task.Clock} in tests).
    @param history: how many datums each key keeps for C{since} (at least 1:
        the latest value is always kept).
    @param historyAge: how many seconds a datum stays in history; the latest
        value of a key stays however old it is.
    @param maxKeys: how many keys are held; past it, the least recently updated
        key that nobody waits for is forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        history: int = DEFAULT_HISTORY,
        historyAge: float = DEFAULT_HISTORY_AGE,
        maxKeys: int = DEFAULT_MAX_KEYS,
        instance: str | None = None,
    ) -> None:
        self.clock = clock
        self.history = max(1, history)
        self.historyAge = historyAge
        self.maxKeys = maxKeys
        self.instance = instance or "s" + secrets.token_hex(4)
        self.boot = int(clock.seconds() * 1000)
        self._seq = 0
        self._serial = 0
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._listeners: PatternIndex[Waiter | Subscription] = PatternIndex()
        self.evicted = 0
        self.refused = 0

    # Publishing

    def publish(self, key: str, value: object, stamp: Stamp | None = None) -> Datum | None:
        """
        Store a datum and hand it to everyone waiting for its key.

        @param stamp: the source's id for the datum (wire version 2); without
            one (version 1) the server stamps it itself.
        @return: the datum, or L{None} if there was no room for a new key.
        """
        entry = self._entry(key)
        if entry is None:
            return None
        now = self.clock.seconds()
        self._serial += 1
        if stamp is None:
            self._seq += 1
            datum = Datum(
                key, value, f"{self.instance}.{self.boot}.{self._seq}",
                self.instance, self.boot, self._seq, None, now, self._serial,
            )
        else:
            datum = Datum(
                key, value, stamp.datumId(), stamp.source, stamp.boot,
                stamp.seq, stamp.sent, now, self._serial,
            )
        history = entry.history
        history.append(datum)
        while len(history) > self.history:
            history.popleft()
        self._expire(history, now)
        self._keys.move_to_end(key)
        for listener in self._listeners.match(key):
            try:
                listener.notify(datum)
            except Exception:
                # One listener's failure must not cost the others the datum.
                _log.failure("A listener of {key!r} failed.", key=key)
        return datum

    def register(self, key: str, meta: dict[str, Any]) -> None:
        """
        Record the metadata a source registered for a key.
        """
        entry = self._entry(key)
        if entry is not None:
            entry.meta = meta

    def _entry(self, key: str) -> _Key | None:
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self.maxKeys and not self._evictOne():
                self.refused += 1
                return None
            entry = self._keys[key] = _Key(key, deque())
        return entry

    def _evictOne(self) -> bool:
        """
        Forget the least recently updated key that no exact waiter holds.
        """
        for name in self._keys:
            if name not in self._listeners.patterns(name):
                del self._keys[name]
                self.evicted += 1
                return True
        return False

    def _expire(self, history: deque[Datum], now: float) -> None:
        limit = now - self.historyAge
        while len(history) > 1 and history[0].received < limit:
            history.popleft()

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

    def metadata(self, key: str) -> dict[str, Any] | None:
        """
        The metadata registered for a key, if any.
        """
        entry = self._keys.get(key)
        return entry.meta if entry is not None else None

    def keys(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """
        Every key held, sorted, with its metadata.
        """
        for name in sorted(self._keys):
            yield name, self._keys[name].meta

    def __len__(self) -> int:
        return len(self._keys)

    def _matching(self, pattern: str) -> Iterable[_Key]:
        return [entry for name, entry in self._keys.items() if matches(pattern, name)]

    def held(self, pattern: str) -> list[Datum]:
        """
        The datums held for a key or pattern, oldest first.
        """
        now = self.clock.seconds()
        if not isPattern(pattern):
            entry = self._keys.get(pattern)
            if entry is None:
                return []
            self._expire(entry.history, now)
            return list(entry.history)
        histories = []
        for entry in self._matching(pattern):
            self._expire(entry.history, now)
            histories.append(entry.history)
        return list(heapq.merge(*histories, key=lambda datum: datum.serial))

    def since(self, pattern: str, datumId: str) -> Found:
        """
        Find what follows the datum C{datumId} for a key or pattern.

        @raise ValueError: if C{datumId} is not an id.
        """
        wanted = parseDatumId(datumId)
        held = self.held(pattern)
        for index in range(len(held) - 1, -1, -1):
            if held[index].id == datumId:
                if index + 1 < len(held):
                    return Found(held[index + 1])
                return Found(None, skipThrough=wanted)
        sameSource = [datum for datum in held if datum.source == wanted[0]]
        later = [datum for datum in sameSource if datum.after(wanted)]
        if sameSource and not later:
            # The client is as far along as this server, or further (it saw a
            # datum from another server that has not reached this one yet).
            return Found(None, skipThrough=wanted)
        if later and later[0] is not sameSource[0]:
            # Older and newer datums of that source are here, only this one is
            # not: the client is in step and misses nothing.
            return Found(later[0])
        if later and (later[0].boot, later[0].seq) == (wanted[1], wanted[2] + 1):
            return Found(later[0])
        if held:
            return Found(held[0], gap=True)
        return Found(None, gap=True)

    # Waiting

    def next(
        self, pattern: str, skipThrough: tuple[str, int, int] | None = None
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
