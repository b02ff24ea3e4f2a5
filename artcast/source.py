# -*- test-case-name: tests.test_source -*-
"""
Write an Artcast source in a few lines.

For scripts, L{Source} is a plain blocking API over a UDP socket::

    from artcast.source import Source

    source = Source(src="oslo-station")
    source.register("weather/oslo/temp", description="Air temperature, °C",
                    provenance="Blindern weather station")
    while True:
        source.send("weather/oslo/temp", readTemperature())
        source.sleep(10)

For Twisted programs, L{SourceService} does the same on the reactor.

Both send version 2 datagrams (C{docs/protocol.md}): each datum carries the
source's name, its boot (the start time in milliseconds) and a sequence
number, and registrations are repeated every 30 seconds so that a server
started later learns them.

Both repair by default (C{repair=True}, L{artcast.repair}): they mark their
datagrams C{"r":1}, keep the last datums they sent, answer servers' NACKs
on their socket, heartbeat when idle, pack datums sent close together into
batches, and linger a moment when closed.  L{Source} does this from a
daemon thread (C{artcast-source-<src>}) so that a script that sleeps still
repairs.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import select
import socket
import struct
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from artcast.repair import (
    BATCH_SIZE,
    BATCH_THRESHOLD,
    HOLDBACK,
    LINGER,
    REPAIR_RATE,
    WINDOW,
    WINDOW_BYTES,
    RepairEngine,
)
from artcast.wire import MAX_DATAGRAM, Stamp, encodeData, encodeRegister, validateSource

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_REGISTER_GROUPS",
    "REGISTER_INTERVAL",
    "Source",
    "SourceService",
    "defaultSourceName",
    "multicastSocket",
    "sendDatagrams",
]

Address = tuple[str, int]

DEFAULT_GROUPS: tuple[Address, ...] = (("224.1.1.1", 5007),)
"""Where datums go unless told otherwise."""

DEFAULT_REGISTER_GROUPS: tuple[Address, ...] = (("224.1.1.1", 5008),)
"""Where registrations go unless told otherwise."""

REGISTER_INTERVAL = 30.0
"""Seconds between two rounds of registrations."""

#: The longest a source's thread waits in one select(), in seconds: a
#: source dropped without close() has its thread end within this.
_LONGEST_WAIT = 1.0

#: The shortest wait, so that a clock that does not move cannot make the
#: thread spin.
_SHORTEST_WAIT = 0.0005

#: How many NACKs one turn reads from the socket at most.
_READS_PER_TURN = 64

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

#: Sources not closed yet, closed (with their linger) at interpreter exit.
_openSources: weakref.WeakSet[Source] = weakref.WeakSet()


def defaultSourceName() -> str:
    """
    A source name for a source that did not choose one: the host's name and
    six random hex digits, e.g. C{raspberrypi-3fa9c2}, so that two processes
    (or two hosts with the same name) never share one.
    """
    host = socket.gethostname().split(".")[0]
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-")[:50] or "source"
    return f"{host}-{secrets.token_hex(3)}"


def multicastSocket(ttl: int = 1, interface: str | None = None, sock: Any = None) -> Any:
    """
    Set up a UDP socket for sending multicast: C{IP_MULTICAST_TTL},
    C{IP_MULTICAST_LOOP} on (so servers on this host hear it) and, when
    C{interface} is given, C{IP_MULTICAST_IF}.

    @param sock: a socket (or a fake one) to set up; by default a new one.
    @return: the socket.
    @raise OSError: for a TTL out of 0-255 or an interface that is not an
        IPv4 address.
    """
    if not 0 <= ttl <= 255:
        raise OSError(f"the TTL must be from 0 to 255, not {ttl}")
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("B", ttl))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, struct.pack("B", 1))
    if interface is not None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    return sock


def sendDatagrams(sock: Any, datagrams: Sequence[bytes], groups: Sequence[Address]) -> None:
    """
    Send each datagram to each group, in order.

    @raise OSError: the first error, after trying every group, so that one
        unreachable group does not starve the others.
    """
    failure: OSError | None = None
    for group in groups:
        for datagram in datagrams:
            try:
                sock.sendto(datagram, group)
            except OSError as e:
                failure = failure or e
    if failure is not None:
        raise failure


def _metadata(
    description: str | None,
    provenance: str | None,
    license: Mapping[str, str] | str | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """
    Build a registration's metadata from L{Source.register}'s arguments.
    """
    meta: dict[str, Any] = {}
    if description is not None:
        meta["description"] = description
    if provenance is not None:
        meta["provenance"] = provenance
    if isinstance(license, str):
        meta["license"] = {"uri": license}
    elif license is not None:
        meta["license"] = dict(license)
    meta.update(extra)
    return meta


class _Stamper:
    """
    What both kinds of source share: the name, boot and sequence number, the
    registrations, and turning datums into signed datagrams.
    """

    def __init__(self, src: str | None, signingKey: bytes | None, maxDatagram: int) -> None:
        self.src = validateSource(src) if src is not None else defaultSourceName()
        self.signingKey = signingKey
        self.maxDatagram = maxDatagram
        self.boot = 0
        self.seq = 0
        self.registrations: dict[str, dict[str, Any]] = {}

    def stamp(self, now: float) -> Stamp:
        """
        The next datum's stamp (the counter moves when it is used: L{used}).
        """
        return Stamp(self.src, self.boot, self.seq + 1, now)

    def used(self, stamp: Stamp) -> str:
        """
        The datum stamped C{stamp} was accepted: move the counter.

        @return: its id.
        """
        self.seq = stamp.seq
        return stamp.datumId()

    def engine(self, settings: Mapping[str, Any]) -> RepairEngine:
        """
        A repair engine for this boot.
        """
        return RepairEngine(self.src, self.boot, self.signingKey, self.maxDatagram, **settings)

    def restart(self, now: float) -> None:
        """
        Begin a new boot: the time in ms, and always later than the last.
        """
        self.boot = max(int(now * 1000), self.boot + 1)
        self.seq = 0

    def datum(self, key: str, value: object, now: float) -> tuple[str, list[bytes]]:
        """
        Encode the next datum; the counter moves only when that succeeds.

        @return: the datum id and the datagrams to send.
        @raise ValueError: for a bad key or a value that is not JSON or too big.
        """
        stamp = Stamp(self.src, self.boot, self.seq + 1, now)
        datagrams = encodeData(key, value, stamp, self.signingKey, self.maxDatagram)
        self.seq += 1
        return stamp.datumId(), datagrams

    def register(self, key: str, meta: dict[str, Any], now: float) -> bytes:
        """
        Remember a registration (replacing an earlier one for C{key}).

        @return: its datagram.
        @raise ValueError: for a bad key or metadata.
        """
        datagram = encodeRegister(key, meta, self._stamp(now), self.signingKey)
        self.registrations[key] = meta
        return datagram

    def allRegistrations(self, now: float) -> list[bytes]:
        """
        The datagrams of every registration, stamped now.
        """
        stamp = self._stamp(now)
        return [encodeRegister(key, meta, stamp, self.signingKey)
                for key, meta in self.registrations.items()]

    def _stamp(self, now: float) -> Stamp:
        return Stamp(self.src, self.boot, 0, now)


class _SourceBase:
    """
    What L{Source} and L{SourceService} share: the name and boot, and
    L{register}.  Subclasses provide C{_now} and C{_registered}.
    """

    _stamper: _Stamper

    @property
    def src(self) -> str:
        """
        The source's name.
        """
        return self._stamper.src

    @property
    def boot(self) -> int:
        """
        This run's boot (its start time in ms).
        """
        return self._stamper.boot

    def _now(self) -> float:
        raise NotImplementedError()

    def _registered(self, datagram: bytes, now: float) -> None:
        raise NotImplementedError()

    def register(
        self,
        key: str,
        description: str | None = None,
        provenance: str | None = None,
        license: Mapping[str, str] | str | None = None,
        **extra: Any,
    ) -> None:
        """
        Register an artcast (or change its registration): it is sent now
        (when the source can send) and every 30 seconds.

        @param description: what the artcast is.
        @param provenance: where its data comes from.
        @param license: C{{"uri": ..., "title": ...}}, or just the URI.
        @param extra: any other JSON members to show with the artcast.
        @raise ValueError: for a bad key or metadata.
        """
        meta = _metadata(description, provenance, license, extra)
        now = self._now()
        self._registered(self._stamper.register(key, meta, now), now)


def _repairSettings(window: int, windowBytes: int, repairRate: float, holdback: float,
                    batchThreshold: float, batchSize: int) -> dict[str, Any]:
    """
    Check the repair parameters of L{Source} and L{SourceService}.

    @raise ValueError: for a window, rate or batch size below 1, or a
        negative holdback or threshold.
    """
    if window < 1 or windowBytes < 1:
        raise ValueError("window and windowBytes must be at least 1")
    if repairRate <= 0:
        raise ValueError("repairRate must be more than 0")
    if holdback < 0 or batchThreshold < 0 or batchSize < 1:
        raise ValueError("holdback and batchThreshold must be 0 or more, batchSize at least 1")
    return dict(window=window, windowBytes=windowBytes, repairRate=repairRate,
                holdback=holdback, batchThreshold=batchThreshold, batchSize=batchSize)


_NO_REPAIR_STATISTICS = dict.fromkeys(RepairEngine("x", 0).statistics(), 0)


def _serve(ref: weakref.ReferenceType[Source], sock: Any, wake: int) -> None:
    """
    The body of a L{Source}'s thread: run its timers, read NACKs, until it
    is closed or dropped.  Holds the source only while working, so that a
    source dropped without L{Source.close} is collected (and this ends
    within L{_LONGEST_WAIT} seconds).
    """
    while True:
        source = ref()
        if source is None or source._stopping:
            return
        wait = source._turn()
        del source
        try:
            readable, _, _ = select.select([sock, wake], [], [], wait)
        except (OSError, ValueError):
            return
        if wake in readable:
            try:
                os.read(wake, 4096)
            except OSError:
                pass
        if sock in readable:
            source = ref()
            if source is None:
                return
            source._receive()
            del source


class Source(_SourceBase):
    """
    A blocking source for scripts, over a UDP socket.

    Every L{send} and L{sleep} re-sends the registrations when 30 seconds
    have passed since they were last sent, so a script that sends now and
    then, or sleeps with L{sleep}, keeps them fresh.

    With C{repair} (the default), a daemon thread named
    C{artcast-source-<src>} answers NACKs, heartbeats and sends batches
    while the script sleeps, however it sleeps; L{close} lingers.

    Use it as a context manager, or call L{close}; sources still open when
    the interpreter exits are closed then (with their linger).

    @ivar src: the source's name.
    @ivar boot: this run's boot (the start time in ms).
    """

    registerInterval = REGISTER_INTERVAL

    def __init__(
        self,
        src: str | None = None,
        groups: Iterable[Address] = DEFAULT_GROUPS,
        registerGroups: Iterable[Address] = DEFAULT_REGISTER_GROUPS,
        ttl: int = 1,
        interface: str | None = None,
        signingKey: bytes | None = None,
        *,
        maxDatagram: int = MAX_DATAGRAM,
        repair: bool = True,
        window: int = WINDOW,
        windowBytes: int = WINDOW_BYTES,
        repairRate: float = REPAIR_RATE,
        holdback: float = HOLDBACK,
        batchThreshold: float = BATCH_THRESHOLD,
        batchSize: int = BATCH_SIZE,
        linger: float = LINGER,
        threaded: bool | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        sock: Any = None,
    ) -> None:
        """
        @param src: the source's name, 1 to 64 characters of C{[A-Za-z0-9_-]};
            keep it across restarts.  By default L{defaultSourceName}.
        @param groups: C{(address, port)} pairs to send datums to; one per
            server group to feed.
        @param registerGroups: C{(address, port)} pairs to send registrations to.
        @param ttl: the multicast TTL: 1 stays on the local network, 0 on this host.
        @param interface: the local IPv4 address whose interface sends the
            datagrams (C{IP_MULTICAST_IF}); by default the system's choice.
        @param signingKey: sign every datagram with this HMAC key (and
            answer only NACKs signed with it).
        @param maxDatagram: split values whose datagram would be larger.
        @param repair: mark datagrams C{"r":1}, keep a window, answer NACKs,
            heartbeat, batch and linger; C{False} sends exactly the
            datagrams of a source without repair, and starts no thread.
        @param window: how many of the last datums to keep for repair.
        @param windowBytes: how many bytes of their datagrams to keep at most.
        @param repairRate: repair datagrams per second at most.
        @param holdback: seconds a batch waits for more datums; 0: no batches.
        @param batchThreshold: datums per second above which datums are batched.
        @param batchSize: the largest batch datagram, in bytes.
        @param linger: L{close} keeps answering NACKs until this many
            seconds after the last datum.
        @param threaded: run the repair thread; by default when C{sock} is a
            real socket.  Without it, L{poll} (which L{sleep} and L{close}
            call) does the thread's work, for tests.
        @param now: the clock, for tests.
        @param sleep: how to wait, for tests.
        @param sock: a socket-like object to send with, for tests; by
            default a new UDP socket.
        @raise ValueError: for a bad C{src} or repair parameter.
        """
        self._stamper = _Stamper(src, signingKey, maxDatagram)
        self._groups = list(groups)
        self._registerGroups = list(registerGroups)
        self._now = now
        self._sleep = sleep
        self._stamper.restart(now())
        self._lastRegistered: float | None = None
        self._closed = False
        self._stopping = False
        self._linger = linger
        self._engine: RepairEngine | None = None
        if repair:
            self._engine = self._stamper.engine(_repairSettings(
                window, windowBytes, repairRate, holdback, batchThreshold, batchSize))
        self._socket = multicastSocket(ttl, interface, sock)
        self._lock = threading.Lock()
        self._sendErrors = 0
        self._thread: threading.Thread | None = None
        self._waitingUntil: float | None = None
        if self._engine is None:
            return
        if threaded is None:
            threaded = isinstance(self._socket, socket.socket)
        if threaded:
            self._wakeRead, self._wakeWrite = os.pipe()
            os.set_blocking(self._wakeRead, False)
            os.set_blocking(self._wakeWrite, False)
            self._thread = threading.Thread(
                target=_serve, args=(weakref.ref(self), self._socket, self._wakeRead),
                name=f"artcast-source-{self.src}", daemon=True)
            self._thread.start()
        _openSources.add(self)

    def _sendAll(self, datagrams: Sequence[bytes], groups: Sequence[Address]) -> None:
        sendDatagrams(self._socket, datagrams, groups)

    def _sendQuietly(self, datagrams: Sequence[bytes]) -> None:
        """
        Send what the repair engine asks for to the data groups, counting
        errors (nobody could be told of them).
        """
        if datagrams:
            try:
                sendDatagrams(self._socket, datagrams, self._groups)
            except OSError:
                self._sendErrors += 1

    def send(self, key: str, value: object) -> str:
        """
        Send a datum (in fragments if it is large; with repair, perhaps in
        a batch a few ms later), re-sending the registrations first if they
        are due.

        @param value: any JSON value (C{dict}, C{list}, C{str}, C{int},
            C{float}, C{bool}, L{None}).
        @return: the datum's id, C{<src>.<boot>.<seq>}.
        @raise ValueError: for a bad key, a value that is not JSON (NaN
            included) or one too large even for 64 fragments.
        @raise OSError: when a datagram could not be sent to some group.
        """
        engine = self._engine
        if engine is None:
            datumId, datagrams = self._stamper.datum(key, value, self._now())
            self.refresh()
            self._sendAll(datagrams, self._groups)
            return datumId
        with self._lock:
            now = self._now()
            stamp = self._stamper.stamp(now)
            datagrams = engine.datum(key, value, stamp)
            datumId = self._stamper.used(stamp)
            self.refresh()
            if self._thread is not None:
                deadline = engine.nextDeadline(now)
                waiting = self._waitingUntil
                if deadline is not None and (waiting is None or deadline < waiting):
                    self._waitingUntil = deadline
                    self._wake()
            self._sendAll(datagrams, self._groups)
        return datumId

    def flush(self) -> None:
        """
        Send the open batch now, if there is one: after this, every datum
        given to L{send} has left (without repair there is never one).

        @raise OSError: when a datagram could not be sent to some group.
        """
        if self._engine is not None:
            with self._lock:
                self._sendAll(self._engine.flush(self._now()), self._groups)

    def _wake(self) -> None:
        try:
            os.write(self._wakeWrite, b"w")
        except OSError:
            pass

    def _turn(self) -> float:
        """
        Do what is due (send an open batch, queued repairs, a heartbeat).

        @return: how long to wait for NACKs before the next turn, in seconds.
        """
        engine = self._engine
        assert engine is not None
        with self._lock:
            now = self._now()
            self._sendQuietly(engine.tick(now))
            deadline = engine.nextDeadline(now)
            if deadline is None:
                wait = _LONGEST_WAIT
            else:
                wait = min(_LONGEST_WAIT, max(_SHORTEST_WAIT, deadline - now))
            self._waitingUntil = now + wait
        return wait

    def _receive(self) -> None:
        """
        Answer the NACKs waiting on the socket (a bounded number).
        """
        engine = self._engine
        assert engine is not None
        for _ in range(_READS_PER_TURN):
            try:
                data, _ = self._socket.recvfrom(65536, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket, or a closed one
            with self._lock:
                self._sendQuietly(engine.nack(data, self._now()))

    def poll(self, timeout: float = 0.0) -> None:
        """
        Without the thread (C{threaded=False}): do the thread's work for
        C{timeout} seconds (answer NACKs, send batches, heartbeats and
        queued repairs), waiting with select() on a real socket or with
        C{sleep} on a fake one.  L{sleep} and L{close} call it.
        """
        if self._engine is None or self._thread is not None:
            self._sleep(timeout)
            return
        end = self._now() + timeout
        while True:
            wait = self._turn()
            self._receive()
            now = self._now()
            if now >= end:
                return
            wait = min(wait, end - now)
            if isinstance(self._socket, socket.socket):
                select.select([self._socket], [], [], wait)
            else:
                self._sleep(wait)

    def _wait(self, seconds: float) -> None:
        if self._engine is not None and self._thread is None:
            self.poll(seconds)
        else:
            self._sleep(seconds)

    def repairStatistics(self) -> dict[str, int]:
        """
        The repair counters (all 0 without repair): C{nacksReceived},
        C{nacksIgnored} (not parsed, for another source or boot, or not
        signed with the source's key), C{confirmsSent}, C{repairsSent},
        C{repairsDropped}, C{goneSent}, C{heartbeatsSent}, C{batchesSent},
        C{datagramsSent} (data datagrams sent the first time) and
        C{sendErrors} (of the thread's sending).
        """
        if self._engine is None:
            return dict(_NO_REPAIR_STATISTICS, sendErrors=0)
        with self._lock:
            return dict(self._engine.statistics(), sendErrors=self._sendErrors)

    def _registered(self, datagram: bytes, now: float) -> None:
        """
        Send a new registration now; the 30-second rounds count from the
        first one (re-sent while the source sends or sleeps).

        @raise OSError: when the datagram could not be sent to some group.
        """
        if self._lastRegistered is None:
            self._lastRegistered = now
        self._sendAll([datagram], self._registerGroups)

    def refresh(self) -> None:
        """
        Re-send every registration if 30 seconds have passed since the first
        one was sent or since the last round.
        """
        if not self._stamper.registrations:
            return
        now = self._now()
        if self._lastRegistered is not None and now - self._lastRegistered < self.registerInterval:
            return
        self._lastRegistered = now
        self._sendAll(self._stamper.allRegistrations(now), self._registerGroups)

    def sleep(self, seconds: float) -> None:
        """
        Wait, re-sending the registrations whenever they are due (and,
        without the thread, repairing meanwhile).
        """
        end = self._now() + seconds
        while True:
            self.refresh()
            now = self._now()
            if now >= end:
                return
            wait = end - now
            if self._stamper.registrations and self._lastRegistered is not None:
                wait = min(wait, max(0.0, self._lastRegistered + self.registerInterval - now))
            self._wait(wait)

    def run(
        self,
        interval: float,
        produce: Callable[[], Mapping[str, object] | None],
        count: int | None = None,
    ) -> None:
        """
        Every C{interval} seconds, call C{produce} and send what it returns,
        a mapping of keys to values (or L{None} to send nothing that time).
        The schedule does not drift; when C{produce} is late, it skips ahead
        rather than sending a burst.

        @param count: stop after this many rounds; by default run forever.
        """
        deadline = self._now()
        rounds = 0
        while count is None or rounds < count:
            values = produce()
            for key, value in (values or {}).items():
                self.send(key, value)
            rounds += 1
            if count is not None and rounds >= count:
                break
            deadline += interval
            deadline = max(deadline, self._now())
            self.sleep(deadline - self._now())

    def close(self) -> None:
        """
        Close the source.  With repair, send an open batch, then keep
        answering NACKs (and heartbeating) until C{linger} seconds after the
        last datum (at once if that is past), stop the thread and close the
        socket.  Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        engine = self._engine
        try:
            if engine is not None:
                with self._lock:
                    now = self._now()
                    self._sendQuietly(engine.flush(now))
                    until = engine.lingerUntil(self._linger)
                    if until is not None and until > now:
                        engine.closing(now)
                        if self._thread is not None:
                            self._waitingUntil = now
                            self._wake()
                if until is not None and until > now:
                    if self._thread is not None:
                        self._sleep(until - now)
                    else:
                        self.poll(until - now)
        finally:
            self._stopping = True
            if self._thread is not None:
                self._wake()
                if self._thread is not threading.current_thread():
                    self._thread.join(_LONGEST_WAIT * 5)
                os.close(self._wakeRead)
                os.close(self._wakeWrite)
            _openSources.discard(self)
            self._socket.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _closeOpenSources() -> None:
    """
    At interpreter exit, close the sources still open, with their linger.
    """
    for source in list(_openSources):
        try:
            source.close()
        except Exception:
            pass


class _NackReceiver(DatagramProtocol):
    """
    The protocol of a L{SourceService}'s port: what arrives there is a NACK
    (or noise), answered by the service.
    """

    def __init__(self, service: SourceService) -> None:
        self.service = service

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.service._nackReceived(data)


class SourceService(_SourceBase, Service):
    """
    A source for Twisted programs: a service that, while running, sends
    datums with L{publish} and its registrations every 30 seconds.

    Each start is a new boot.  Network errors are logged, not raised, so a
    network that goes away does not break the program's callbacks.

    With C{repair} (the default) the service's port reads NACKs, the
    reactor's clock runs batches, heartbeats and queued repairs, and
    L{stopService} lingers.
    """

    log = Logger()
    registerInterval = REGISTER_INTERVAL

    def __init__(
        self,
        reactor: Any,
        src: str | None = None,
        groups: Iterable[Address] = DEFAULT_GROUPS,
        registerGroups: Iterable[Address] = DEFAULT_REGISTER_GROUPS,
        ttl: int = 1,
        interface: str | None = None,
        signingKey: bytes | None = None,
        maxDatagram: int = MAX_DATAGRAM,
        *,
        repair: bool = True,
        window: int = WINDOW,
        windowBytes: int = WINDOW_BYTES,
        repairRate: float = REPAIR_RATE,
        holdback: float = HOLDBACK,
        batchThreshold: float = BATCH_THRESHOLD,
        batchSize: int = BATCH_SIZE,
        linger: float = LINGER,
    ) -> None:
        """
        @param reactor: provides L{IReactorMulticast} and L{IReactorTime}.
        @param src: as for L{Source}; the other parameters too.
        @param linger: L{stopService} keeps answering NACKs until this many
            seconds after the last datum.
        """
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self._stamper = _Stamper(src, signingKey, maxDatagram)
        self._groups = list(groups)
        self._registerGroups = list(registerGroups)
        self._ttl = ttl
        self._interface = interface
        self._port: Any = None
        self._loop: LoopingCall | None = None
        self._repair: dict[str, Any] | None = None
        if repair:
            self._repair = _repairSettings(window, windowBytes, repairRate, holdback,
                                           batchThreshold, batchSize)
        self._linger = linger
        self._engine: RepairEngine | None = None
        self._timer: IDelayedCall | None = None
        self._lingering: tuple[IDelayedCall, Deferred[None]] | None = None

    def _now(self) -> float:
        return self._clock.seconds()

    def startService(self) -> None:
        if self._lingering is not None:
            self._endLinger()
        super().startService()
        self._stamper.restart(self._now())
        protocol = DatagramProtocol()
        if self._repair is not None:
            self._engine = self._stamper.engine(self._repair)
            protocol = _NackReceiver(self)
        port = self._reactor.listenMulticast(0, protocol)
        port.setTTL(self._ttl)
        port.setLoopbackMode(True)
        self._loop = LoopingCall(self._registerAll)
        self._loop.clock = self._clock
        if self._interface is None:
            self._ready(port)
        else:
            d = port.setOutgoingInterface(self._interface)
            d.addCallback(lambda _: self._ready(port))
            d.addErrback(lambda f: self.log.failure("Cannot send from {interface}", f,
                                                    interface=self._interface))

    def _ready(self, port: Any) -> None:
        if not self.running:
            port.stopListening()
            return
        self._port = port
        assert self._loop is not None
        self._loop.start(self.registerInterval, now=True)
        self._schedule()

    def stopService(self) -> Any:
        """
        Stop: no more datums or registrations; with repair, send an open
        batch and keep answering NACKs until C{linger} seconds after the
        last datum, then close the port.

        @return: a L{Deferred} that fires when the port is closed, or
            L{None} when there was none.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        engine = self._engine
        if engine is not None and self._port is not None:
            now = self._now()
            self._sendAll(engine.flush(now), self._groups)
            until = engine.lingerUntil(self._linger)
            if until is not None and until > now:
                engine.closing(now)
                self._schedule()
                done: Deferred[None] = Deferred()
                self._lingering = (self._clock.callLater(until - now, self._endLinger), done)
                return done
        return self._closePort()

    def _endLinger(self) -> None:
        """
        The linger is over (or the service starts again): close the port.
        """
        assert self._lingering is not None
        call, done = self._lingering
        self._lingering = None
        if call.active():
            call.cancel()
        maybeDeferred(self._closePort).chainDeferred(done)

    def _closePort(self) -> Any:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._engine = None
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None

    def _sendAll(self, datagrams: Sequence[bytes], groups: Sequence[Address]) -> None:
        for group in groups:
            for datagram in datagrams:
                try:
                    self._port.write(datagram, group)
                except OSError as e:
                    self.log.warn("Cannot send a datagram to {group}: {error}",
                                  group=group, error=e)

    def _registerAll(self) -> None:
        if self._port is not None:
            self._sendAll(self._stamper.allRegistrations(self._now()),
                          self._registerGroups)

    def publish(self, key: str, value: object) -> str:
        """
        Send a datum now (in fragments if it is large; with repair, perhaps
        in a batch a few ms later).

        @return: the datum's id.
        @raise ValueError: for a bad key or a value that is not JSON.
        @raise RuntimeError: when the service is not running.
        """
        if self._port is None or not self.running:
            raise RuntimeError("the source is not running; start the service first")
        engine = self._engine
        if engine is None:
            datumId, datagrams = self._stamper.datum(key, value, self._now())
            self._sendAll(datagrams, self._groups)
            return datumId
        stamp = self._stamper.stamp(self._now())
        datagrams = engine.datum(key, value, stamp)
        datumId = self._stamper.used(stamp)
        if datagrams:
            self._sendAll(datagrams, self._groups)
        self._schedule()
        return datumId

    def flush(self) -> None:
        """
        Send the open batch now, if there is one (see L{Source.flush}).
        """
        if self._engine is not None and self._port is not None:
            self._sendAll(self._engine.flush(self._now()), self._groups)

    def _schedule(self) -> None:
        """
        Have L{_tick} called when the engine next has something to do (a
        timer already set earlier is kept: it reschedules when it fires).
        """
        engine = self._engine
        if engine is None or self._port is None:
            return
        now = self._now()
        deadline = engine.nextDeadline(now)
        if deadline is None:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= deadline:
                return
            timer.cancel()
        self._timer = self._clock.callLater(max(0.0, deadline - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._engine is not None and self._port is not None:
            self._sendAll(self._engine.tick(self._now()), self._groups)
            self._schedule()

    def _nackReceived(self, data: bytes) -> None:
        """
        Answer a datagram that arrived on the port.
        """
        if self._engine is not None and self._port is not None:
            self._sendAll(self._engine.nack(data, self._now()), self._groups)
            self._schedule()

    def repairStatistics(self) -> dict[str, int]:
        """
        The repair counters of the current boot, as L{Source.repairStatistics}
        (all 0 without repair or when stopped).
        """
        if self._engine is None:
            return dict(_NO_REPAIR_STATISTICS)
        return self._engine.statistics()

    def _registered(self, datagram: bytes, now: float) -> None:
        if self._port is not None and self.running:
            self._sendAll([datagram], self._registerGroups)
