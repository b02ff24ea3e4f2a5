# -*- test-case-name: tests.test_multicast -*-
"""
Receiving datums: the L{MulticastFeed}, one L{MulticastServerProtocol} per
UDP group, and the handler that turns datagrams into KeyStore updates, in
each source's order, asking repairing sources for what was lost
(L{artcast.server.feeds.repair}).

A datagram that is not valid is dropped, counted under its reason in
L{artcast.server.stats.Stats}, and logged at a bounded rate; it never stops the server.
"""

from __future__ import annotations

import socket
from random import Random
from typing import Any, Callable, Sequence

from twisted.application.internet import MulticastServer
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from artcast.server.interfaces import IFeed
from artcast.server.store import KeyStore
from artcast.server.logs import NamedLogger, RateLimitedLog
from artcast.server.stats import Stats, isoTime
from artcast.server.defaults import DEFAULT_REPAIR, SILENCE_WARNING
from artcast.server.feeds.repair import RepairEngine
from artcast.server.feeds.reception import (
    FRAGMENT_MEMORY,
    MAX_SOURCES,
    Reassembler,
    SourceTracker,
)
from artcast.wire import (
    MAX_VALUE_SIZE,
    BadDatagram,
    Batch,
    Confirm,
    DataMessage,
    Fragment,
    Gone,
    Heartbeat,
    Stamp,
    parseData,
    parseRegister,
)

__all__ = [
    "HELD_BYTES",
    "HELD_DATAGRAMS",
    "MAX_UDP_PAYLOAD",
    "RECEIVE_BUFFER",
    "DatagramHandler",
    "HeldDatagrams",
    "Listening",
    "MulticastFeed",
    "MulticastServerProtocol",
    "NackSender",
]

#: The largest UDP payload over IPv4; Twisted's UDP port reads 8,192 bytes
#: unless told otherwise.
MAX_UDP_PAYLOAD = 65535

#: The most datagrams, and bytes of them, held while the feed waits to
#: start (L{HeldDatagrams}): with C{--bus}, the few moments the history is
#: read from Redis.
HELD_DATAGRAMS = 10_000
HELD_BYTES = 16 * 1024 * 1024

#: The receive buffer asked of the kernel for each group's socket, in bytes.
RECEIVE_BUFFER = 8 * 1024 * 1024


class MulticastServerProtocol(DatagramProtocol):
    """
    Join one multicast group and hand every datagram to a handler.

    @param group: the group's address, e.g. C{"224.1.1.1"}.
    @param interface: the local address whose interface joins the group.
    @param handler: called with each datagram's bytes and sender address.
    @param sender: sends NACKs through this protocol's socket while it
        listens (the data group's).
    """

    def __init__(
        self,
        group: str,
        interface: str,
        handler: Callable[[bytes, tuple[str, int]], None],
        sender: NackSender | None = None,
        *,
        port: int = 0,
        clock: IReactorTime | None = None,
        carries: str = "datums",
        silence: float | None = None,
    ) -> None:
        """
        @param port: the group's UDP port, for what is logged and shown.
        @param clock: gives the time of each datagram heard (L{lastHeard});
            without one, only L{heard} is counted.
        @param carries: what the group carries (C{"datums"},
            C{"registrations"}), for what is logged and shown.
        @param silence: when given (with a clock), a warning is logged
            once if no datagram was heard this many seconds after the
            protocol started (L{SILENCE_WARNING} for the data group).
        """
        self.group = group
        self.interface = interface
        self.handler = handler
        self.sender = sender
        self.port = port
        self.clock = clock
        self.carries = carries
        self.silence = silence
        #: Datagrams heard on this group.
        self.heard = 0
        #: The clock's time of the last datagram heard, or L{None}.
        self.lastHeard: float | None = None
        #: The clock's time the protocol started, or L{None}.
        self.started: float | None = None
        self._silenceCall: Any = None

    log = NamedLogger(namespace="artcast.multicast.MulticastServerProtocol")

    def startProtocol(self) -> None:
        self.transport.setLoopbackMode(True)
        self._enlargeReceiveBuffer()
        joined = self.transport.joinGroup(self.group, self.interface)
        joined.addCallbacks(self._joined, self._notJoined)
        if self.sender is not None:
            self.sender.transport = self.transport
        clock = self.clock
        if clock is not None:
            self.started = clock.seconds()
            if self.silence is not None:
                self._silenceCall = clock.callLater(self.silence, self._silent)

    def stopProtocol(self) -> None:
        if self.sender is not None:
            self.sender.transport = None
        call, self._silenceCall = self._silenceCall, None
        if call is not None and call.active():
            call.cancel()

    def _joined(self, result: object) -> None:
        """
        Say where the server listens, once the group is joined.
        """
        self.log.info(
            "Listening for {carries} on {group}:{port} on interface {interface}",
            carries=self.carries,
            group=self.group,
            port=self.port,
            interface=self.interface,
        )

    def _silent(self) -> None:
        """
        L{silence} seconds after start: if nothing was heard, say so once,
        with how a source on this host reaches the server.
        """
        self._silenceCall = None
        if self.heard:
            return
        self.log.warn(
            "No datagram heard on {group}:{port} via {interface} in {seconds:g} s; "
            "a source on this host must send with --interface 127.0.0.1 --ttl 0 "
            "when the server listens on 127.0.0.1 (artcast-send --help, "
            "docs/running.md#nothing-arrives)",
            group=self.group,
            port=self.port,
            interface=self.interface,
            seconds=self.silence,
        )

    def figures(self) -> dict[str, Any]:
        """
        What C{/stats} shows of this group: C{group}, C{port},
        C{interface}, what it C{carries}, the C{datagrams} heard, and the
        last one's time (C{last_datagram}, ISO 8601 in UTC) and age
        (C{last_datagram_ago}, seconds), both L{None} before the first.
        """
        last = self.lastHeard
        clock = self.clock
        return {
            "group": self.group,
            "port": self.port,
            "interface": self.interface,
            "carries": self.carries,
            "datagrams": self.heard,
            "last_datagram": None if last is None else isoTime(last),
            "last_datagram_ago": (
                None if last is None or clock is None
                else round(max(0.0, clock.seconds() - last), 3)
            ),
        }

    def _enlargeReceiveBuffer(self) -> None:
        """
        Ask for a receive buffer of L{RECEIVE_BUFFER} bytes, so that a burst
        of datums is queued by the kernel rather than dropped while the
        server answers clients.  C{SO_RCVBUFFORCE} passes the system's cap
        when the server starts as root (ports are bound before twistd drops
        privileges); otherwise the kernel gives what the cap allows.
        """
        handle = getattr(self.transport, "getHandle", None)
        if handle is None:
            return
        sock = handle()
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            except OSError:
                continue
            return

    def _notJoined(self, failure: Failure) -> None:
        """
        The group could not be joined (no route for multicast on that
        interface, say): keep serving, and say so loudly.
        """
        self.log.error(
            "Could not join multicast group {group} on interface {interface}: "
            "{error}; no datums will arrive on it",
            group=self.group,
            interface=self.interface,
            error=failure.getErrorMessage(),
        )

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        # A count and the time: what /stats and the dashboard say was heard.
        self.heard += 1
        clock = self.clock
        if clock is not None:
            self.lastHeard = clock.seconds()
        self.handler(data, addr)


class NackSender:
    """
    Sends the repair engine's NACKs from the data group's socket, once the
    data group's L{MulticastServerProtocol} has started (it hands over its
    transport); a NACK that cannot be sent is logged at a bounded rate,
    never raised.

    @ivar transport: the data group's transport, L{None} while not listening.
    @ivar failed: NACKs that could not be sent.
    """

    log = NamedLogger(namespace="artcast.multicast.NackSender")

    def __init__(self, clock: IReactorTime) -> None:
        self.transport: Any = None
        self.failed = 0
        self._errorLog = RateLimitedLog(self.log, clock, what="NACKs not sent")

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """
        Send C{data} to C{address} by unicast.
        """
        transport = self.transport
        try:
            if transport is None:
                raise OSError("the data group's socket is not open")
            transport.write(data, address)
        except Exception as error:
            self.failed += 1
            self._errorLog.warn(
                "Could not send a NACK to {host}:{port}: {error}",
                host=address[0], port=address[1], error=str(error),
            )


class DatagramHandler:
    """
    Parse datagrams of the data and register groups and update the KeyStore.

    @param signingKeys: when not empty, only datagrams signed with one of
        these keys are accepted.
    @param maxValueSize: datums whose value is larger (as JSON, in bytes) are
        dropped.
    @param freshness: when set, stamped datums and registrations whose C{t}
        is further than this many seconds from the clock are dropped as
        C{"stale"}.
    @param maxSources: how many sources the L{SourceTracker} remembers
        (forgetting one is counted in C{stats.sources["forgotten"]}).
    @param fragmentMemory: the bytes the L{Reassembler} may hold for values
        being put together.
    @ivar repair: the L{RepairEngine}: a datum that is not the next of a
        source without holes goes to it, to be held back, NACKed for, and
        handed on in order; heartbeats, NCFs and gones go to it too.
    @ivar nacks: the L{NackSender} its NACKs leave by (the data group's
        socket, once L{MulticastFeed} listens).
    @ivar ownSources: source names of this server's own HTTP publisher
        (L{artcast.server.feeds.publish}); their datagrams, heard back through the
        multicast loop, are ignored (counted in C{stats.sources["own"]}):
        the publisher put them in the store already.
    @ivar version1: with C{--bus}, L{artcast.server.feeds.bus.BusFeed.version1}:
        asked about each version 1 datum heard (one without a stamp), it
        says whether it takes it (to publish once Redis says no other server
        took the same one, through L{publishVersion1}); without a bus
        (L{None}), or when it declines, the datum is published at once.
    @ivar echoes: with C{--upstream-multicast}, the relay outlet's
        L{artcast.server.outlets.multicast.RelayOutlet.isEcho}: a datagram
        refused as replayed or stale that it says it sent is its own heard
        back through the loop, counted there and not as a drop.
    """

    log = NamedLogger(namespace="artcast.multicast.DatagramHandler")

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        stats: Stats | None = None,
        signingKeys: Sequence[bytes] = (),
        maxValueSize: int | None = None,
        freshness: float | None = None,
        maxSources: int = MAX_SOURCES,
        fragmentMemory: int = FRAGMENT_MEMORY,
        repair: bool = DEFAULT_REPAIR,
        random: Random | None = None,
    ) -> None:
        """
        @param repair: whether holes of repairing sources are NACKed
            (C{--no-repair}: C{False}).
        @param random: draws the NACK back-offs (seeded in tests).
        """
        self.store = store
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self.signingKeys = tuple(signingKeys)
        self.maxValueSize = maxValueSize
        self.reassembler = Reassembler(
            clock,
            maxValueSize=MAX_VALUE_SIZE if maxValueSize is None else maxValueSize,
            maxBytes=fragmentMemory,
            onDrop=self.stats.drop,
        )
        # With signatures but no window, a copied datagram could reset a
        # source (SourceTracker's docstring): no resets then.
        self.tracker = SourceTracker(
            clock,
            maxSources=maxSources,
            window=freshness or None,
            reset=bool(freshness) or not self.signingKeys,
            onForget=self._forgot,
            forgetting=self._forgetting,
        )
        self.nacks = NackSender(clock)
        self.repair = RepairEngine(
            self.tracker, self._publish, clock, self.nacks.send, random, enabled=repair
        )
        self.freshness = freshness
        self.ownSources: set[str] = set()
        self.echoes: Callable[[Stamp], bool] | None = None
        self.version1: Callable[[DataMessage, tuple[str, int]], bool] | None = None
        self._badLog = RateLimitedLog(self.log, clock)

    def _dropped(self, error: BadDatagram, addr: tuple[str, int], group: str) -> None:
        self.stats.drop(error.reason)
        self._badLog.warn(
            "Dropped a {group} datagram from {host}:{port}: {reason}",
            group=group,
            host=addr[0],
            port=addr[1],
            reason=str(error),
        )

    def dataReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Handle one datagram of the data group.
        """
        self.stats.datagrams += 1
        try:
            message = parseData(
                data,
                signingKeys=self.signingKeys,
                requireSignature=bool(self.signingKeys),
                maxValueSize=self.maxValueSize,
            )
            if message.stamp is not None and message.stamp.source in self.ownSources:
                # This server's own HTTP publish, heard back through the
                # multicast loop: it is in the store already.
                self.stats.sources["own"] += 1
                return
            if isinstance(message, Fragment):
                # Judge the stamp before the fragment takes any memory: a
                # stale or replayed fragment (a captured one, say) must not
                # push out a value in progress.
                refused = self.tracker.peek(message.stamp)
                if refused is not None:
                    if self.echoes is not None and self.echoes(message.stamp):
                        return
                    self.stats.drop(refused)
                    return
                whole = self.reassembler.feed(message, addr[0])
                if whole is None:
                    return
                message = whole
            elif not isinstance(message, DataMessage):
                self._other(message, addr)
                return
        except BadDatagram as error:
            self._dropped(error, addr, "data")
            return
        self._datum(message, addr)

    def _other(self, message: Batch | Heartbeat | Confirm | Gone, addr: tuple[str, int]) -> None:
        """
        A batch's datums, one by one; a source's heartbeat, NCF or gone, to
        the repair engine.
        """
        if isinstance(message, Batch):
            for datum in message.messages():
                self._datum(datum, addr)
            return
        stamp = message.stamp
        if self.freshness and stamp.isStale(self.clock.seconds(), self.freshness):
            self.stats.drop("stale")
            return
        if isinstance(message, Heartbeat):
            self.repair.heartbeat(message, addr)
            self.stats.missed += self.tracker.missed
        elif isinstance(message, Confirm):
            self.repair.confirm(message)
        else:
            self.repair.gone(message)

    def _datum(self, message: DataMessage, addr: tuple[str, int]) -> None:
        """
        Ask the source tracker about a whole datum's stamp (count gaps and
        restarts, drop replayed and stale datums) and publish the datum, or
        hand it to the repair engine when it is not the next of a source
        without holes.
        """
        stamp = message.stamp
        if stamp is None:
            version1 = self.version1
            if version1 is None or not version1(message, addr):
                self._publish(message, 0)
            return
        tracker = self.tracker
        verdict = tracker.check(stamp)
        if verdict == "ok" and not tracker.holding:
            self.stats.sources[verdict] += 1
            self._publish(message, tracker.lost)
            return
        if verdict in ("replayed", "stale") and self.echoes is not None and self.echoes(stamp):
            # The relay's own datagram, heard back through the loop.
            return
        self.stats.sources[verdict] += 1
        if verdict == "gap":
            self.stats.missed += tracker.missed
        elif verdict in ("replayed", "stale"):
            self.stats.drop(verdict)
            return
        self.repair.datum(message, verdict, addr)

    def relayed(self, message: DataMessage, address: tuple[str, int]) -> str:
        """
        Take a datum another server took first (from a relay's upstream, or
        the Redis bus), with its id: through the source tracker, judged as a
        copy (L{SourceTracker.checkRelayed}: its time is when the other
        server took it), so that a datum this server has already (heard on
        multicast too) is a duplicate; one that follows a hole waits for it in the repair engine
        as a multicast datum would, but is never NACKed for (C{message} is
        not C{repairable}, and C{address} names no socket).

        @return: C{"duplicate"} (the tracker had it: replayed or stale),
            C{"too-large"} (the store's whole budget is smaller; counted as
            a drop) or C{"taken"} (published, or held in order).
        """
        stamp = message.stamp
        assert stamp is not None
        tracker = self.tracker
        # Its time is when the other server took it, which proves nothing:
        # judged as a copy (SourceTracker.checkRelayed).
        verdict = tracker.checkRelayed(stamp)
        if verdict in ("replayed", "stale"):
            return "duplicate"
        if verdict == "ok" and not tracker.holding:
            if self.store.publish(message.key, message.value, stamp, lost=tracker.lost) is None:
                self.stats.drop("too-large")
                return "too-large"
            self.stats.datums += 1
        else:
            self.repair.datum(message, verdict, address)
        return "taken"

    def publishVersion1(self, message: DataMessage) -> None:
        """
        Publish a version 1 datum that L{version1} took, stamped by the
        store as any version 1 datum is.
        """
        self._publish(message, 0)

    def _forgot(self) -> None:
        self.stats.sources["forgotten"] += 1

    def _forgetting(self, source: str, lost: int) -> None:
        self.repair.forgetting(source, lost)

    def _publish(self, message: DataMessage, lost: int) -> None:
        if self.store.publish(message.key, message.value, message.stamp, lost=lost) is None:
            # The value alone costs more than the store's whole budget.
            self.stats.drop("too-large")
        else:
            self.stats.datums += 1

    def registerReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Handle one datagram of the register group.
        """
        try:
            message = parseRegister(
                data,
                signingKeys=self.signingKeys,
                requireSignature=bool(self.signingKeys),
                maxValueSize=self.maxValueSize,
            )
        except BadDatagram as error:
            self._dropped(error, addr, "register")
            return
        stamp = message.stamp
        if (
            self.freshness
            and stamp is not None
            and stamp.isStale(self.clock.seconds(), self.freshness)
        ):
            # Registrations carry no seq, so only the window stops a copied
            # signed registration from being replayed later.
            self.stats.drop("stale")
            return
        self.stats.registrations += 1
        self.store.register(message.key, message.meta)


class HeldDatagrams:
    """
    Datagrams held until a L{Deferred} fires, then handed on in the order
    they came, whatever group each came on; at most C{maxDatagrams} of them
    and C{maxBytes} bytes: beyond, each is dropped and counted
    C{held-overflow}.

    @ivar held: what is held, or L{None} once handed on.
    """

    def __init__(
        self,
        ready: Deferred[object],
        stats: Stats,
        maxDatagrams: int = HELD_DATAGRAMS,
        maxBytes: int = HELD_BYTES,
    ) -> None:
        self.stats = stats
        self.maxDatagrams = maxDatagrams
        self.maxBytes = maxBytes
        self.held: list[tuple[Callable[[bytes, tuple[str, int]], None], bytes, tuple[str, int]]] | None = []
        self.size = 0
        ready.addCallback(self._release)

    def wrap(
        self, receive: Callable[[bytes, tuple[str, int]], None]
    ) -> Callable[[bytes, tuple[str, int]], None]:
        """
        @return: a receiver that holds datagrams while waiting, then hands
            each straight to C{receive}.
        """

        def received(data: bytes, addr: tuple[str, int]) -> None:
            held = self.held
            if held is None:
                receive(data, addr)
            elif len(held) >= self.maxDatagrams or self.size + len(data) > self.maxBytes:
                self.stats.drop("held-overflow")
            else:
                held.append((receive, data, addr))
                self.size += len(data)

        return received

    def _release(self, result: object) -> object:
        held, self.held = self.held, None
        self.size = 0
        for receive, data, addr in held or ():
            receive(data, addr)
        return result


class Listening:
    """
    Where the server listens for datagrams and what it heard there: the
    C{listening} figures of C{/stats}, by group (C{"data"},
    C{"register"}), each a L{MulticastServerProtocol.figures}.

    @ivar groups: each group's protocol, by name.
    """

    def __init__(self, groups: dict[str, MulticastServerProtocol]) -> None:
        self.groups = groups

    def figures(self) -> dict[str, dict[str, Any]]:
        """
        Each group's figures, by name.
        """
        return {name: protocol.figures() for name, protocol in self.groups.items()}

    def statistics(self) -> dict[str, object]:
        """
        The figures under C{listening}, for L{artcast.server.stats.ServerStatistics}.
        """
        return {"listening": self.figures()}


@implementer(IFeed)
class MulticastFeed(MultiService):
    """
    The feed of the multicast groups: a L{DatagramHandler} and, as child
    services, the ports of the data group and the register group, each with
    a L{MulticastServerProtocol} that hands its datagrams to the handler.

    The ports are bound in C{privilegedStartService}, before twistd drops
    privileges.

    @ivar handler: the L{DatagramHandler} both groups feed (the demo feed,
        L{artcast.server.feeds.demo.DemoFeed}, feeds it too).
    @ivar listening: the groups' own figures (L{Listening}): where the
        server listens and when it last heard a datagram on each.
    """

    name = "multicast"

    def __init__(
        self,
        handler: DatagramHandler,
        reactor: Any,
        dataGroup: tuple[str, int],
        registerGroup: tuple[str, int],
        interface: str,
        ready: Deferred[object] | None = None,
    ) -> None:
        """
        @param reactor: provides L{IReactorMulticast}.
        @param dataGroup: the data group's address and UDP port.
        @param registerGroup: the register group's address and UDP port.
        @param interface: the local address whose interface joins the
            groups.
        @param ready: when given, the datagrams heard before it fires are
            held (L{HeldDatagrams}) and handed on, in order, once it has:
            with C{--bus}, the history read from Redis goes into the store
            before any live datum, so that the tracker takes it as the past
            it is, not as copies.
        """
        super().__init__()
        self.handler = handler
        data, register = handler.dataReceived, handler.registerReceived
        self.held = None
        if ready is not None:
            self.held = HeldDatagrams(ready, handler.stats)
            data, register = self.held.wrap(data), self.held.wrap(register)
        groups = {}
        for name, (group, port), receive, sender, carries, silence in (
            ("data", dataGroup, data, handler.nacks, "datums", SILENCE_WARNING),
            ("register", registerGroup, register, None, "registrations", None),
        ):
            protocol = groups[name] = MulticastServerProtocol(
                group, interface, receive, sender,
                port=port, clock=reactor, carries=carries, silence=silence,
            )
            MulticastServer(
                port,
                protocol,
                interface=group,
                maxPacketSize=MAX_UDP_PAYLOAD,
                listenMultiple=True,
                reactor=reactor,
            ).setServiceParent(self)
        #: What C{/stats} shows of each group, and the dashboard's status
        #: line: where the server listens, and when it last heard something.
        self.listening = Listening(groups)

    def stopService(self) -> Any:
        # The repair engine's timers end with the groups.
        self.handler.repair.stop()
        return super().stopService()

    def statistics(self) -> dict[str, object]:
        """
        The handler's counters: C{datagrams}, C{datums} (which counts the
        datums published over HTTP too, the L{Stats} being shared),
        C{registrations}, C{missed}, C{dropped} by reason and C{sources} by
        verdict.
        """
        counters = self.handler.stats
        return {
            "datagrams": counters.datagrams,
            "datums": counters.datums,
            "registrations": counters.registrations,
            "missed": counters.missed,
            "dropped": dict(counters.dropped),
            "sources": dict(counters.sources),
        }
