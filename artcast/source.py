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
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

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


class Source(_SourceBase):
    """
    A blocking source for scripts, over a UDP socket.

    Every L{send} and L{sleep} re-sends the registrations when 30 seconds
    have passed since they were last sent, so a script that sends now and
    then, or sleeps with L{sleep}, keeps them fresh without a thread.

    Use it as a context manager, or call L{close}, to close the socket.

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
        @param signingKey: sign every datagram with this HMAC key.
        @param maxDatagram: split values whose datagram would be larger.
        @param now: the clock, for tests.
        @param sleep: how to wait, for tests.
        @param sock: a socket-like object to send with, for tests; by
            default a new UDP socket.
        @raise ValueError: for a bad C{src}.
        """
        self._stamper = _Stamper(src, signingKey, maxDatagram)
        self._groups = list(groups)
        self._registerGroups = list(registerGroups)
        self._now = now
        self._sleep = sleep
        self._stamper.restart(now())
        self._lastRegistered: float | None = None
        self._socket = multicastSocket(ttl, interface, sock)

    def _sendAll(self, datagrams: Sequence[bytes], groups: Sequence[Address]) -> None:
        sendDatagrams(self._socket, datagrams, groups)

    def send(self, key: str, value: object) -> str:
        """
        Send a datum (in fragments if it is large), re-sending the
        registrations first if they are due.

        @param value: any JSON value (C{dict}, C{list}, C{str}, C{int},
            C{float}, C{bool}, L{None}).
        @return: the datum's id, C{<src>.<boot>.<seq>}.
        @raise ValueError: for a bad key, a value that is not JSON (NaN
            included) or one too large even for 64 fragments.
        @raise OSError: when a datagram could not be sent to some group.
        """
        datumId, datagrams = self._stamper.datum(key, value, self._now())
        self.refresh()
        self._sendAll(datagrams, self._groups)
        return datumId

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
        Wait, re-sending the registrations whenever they are due.
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
            self._sleep(wait)

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
        Close the socket.
        """
        self._socket.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceService(_SourceBase, Service):
    """
    A source for Twisted programs: a service that, while running, sends
    datums with L{publish} and its registrations every 30 seconds.

    Each start is a new boot.  Network errors are logged, not raised, so a
    network that goes away does not break the program's callbacks.
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
    ) -> None:
        """
        @param reactor: provides L{IReactorMulticast} and L{IReactorTime}.
        @param src: as for L{Source}; the other parameters too.
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

    def _now(self) -> float:
        return self._clock.seconds()

    def startService(self) -> None:
        super().startService()
        self._stamper.restart(self._now())
        port = self._reactor.listenMulticast(0, DatagramProtocol())
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

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
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
        Send a datum now (in fragments if it is large).

        @return: the datum's id.
        @raise ValueError: for a bad key or a value that is not JSON.
        @raise RuntimeError: when the service is not running.
        """
        if self._port is None:
            raise RuntimeError("the source is not running; start the service first")
        datumId, datagrams = self._stamper.datum(key, value, self._now())
        self._sendAll(datagrams, self._groups)
        return datumId

    def _registered(self, datagram: bytes, now: float) -> None:
        if self._port is not None:
            self._sendAll([datagram], self._registerGroups)
