# -*- test-case-name: tests.test_publish -*-
"""
The multicast outlets: datums published over HTTP
(L{artcast.server.feeds.publish}) sent on to the data group
(L{MulticastOutlet}), and datums a relay takes from its upstream sent on to
it with their original stamps (L{RelayOutlet}), so that every server fed by
the group gets them with the same id.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from artcast.server.defaults import DEFAULT_UPSTREAM_ECHO_MEMORY
from artcast.server.interfaces import IOutlet
from artcast.server.logs import NamedLogger, RateLimitedLog
from artcast.source import SourceService
from artcast.wire import DataMessage, Stamp, encodeData, encodeRegister

__all__ = ["MulticastOutlet", "RelayOutlet"]


@implementer(IOutlet)
class MulticastOutlet(SourceService):
    """
    The source that sends a server's HTTP-published datums to its data
    group: C{IP_MULTICAST_IF} C{interface} (the one the server joins on;
    C{0.0.0.0} leaves the choice to the routing table), C{IP_MULTICAST_TTL}
    C{ttl}, loop on.  A service: it sends only while running.
    """

    def __init__(
        self,
        reactor: Any,
        name: str,
        group: tuple[str, int],
        interface: str,
        ttl: int,
        signingKey: bytes | None,
        **repair: Any,
    ) -> None:
        """
        @param reactor: provides L{IReactorMulticast} and L{IReactorTime}.
        @param name: the source name datums are stamped with (C{src}).
        @param group: the data group's address and UDP port.
        @param signingKey: signs every datagram when given.
        @param repair: L{SourceService}'s repair parameters (C{repair},
            C{window}, C{windowBytes}, C{repairRate}, C{holdback},
            C{batchThreshold}, C{batchSize}, C{linger}); repair is on by
            default.
        """
        super().__init__(
            reactor,
            src=name,
            groups=[group],
            registerGroups=[],
            ttl=ttl,
            interface=None if interface == "0.0.0.0" else interface,
            signingKey=signingKey,
            **repair,
        )

    def send(self, key: str, value: object) -> str:
        """
        Send a datum to the data group now (in fragments if it is large).

        @return: the datum's id.
        @raise ValueError: for a value too large even for 64 fragments.
        @raise RuntimeError: when the outlet is not running.
        """
        return self.publish(key, value)


class RelayOutlet(Service):
    """
    Sends datums a relay takes from its upstream (C{--upstream-multicast})
    on to its data group, each as version 2 datagrams with the datum's
    original stamp, not repairable, signed when a key is given: every server
    on the group keeps it under the same id.  The socket is set as
    L{MulticastOutlet}'s: C{IP_MULTICAST_IF} C{interface} (C{0.0.0.0}
    leaves the choice to the routing table), C{IP_MULTICAST_TTL} C{ttl},
    loop on.  A service: it sends only while running.

    The relay hears its own datagrams back through the loop; the ids of the
    last C{memory} datums sent are kept, so that L{isEcho} tells those
    echoes from replays.

    @ivar sentOn: datums sent on.
    @ivar echoes: datagrams of this outlet's heard back (L{isEcho}).
    @ivar failed: datums that could not be sent (too large, a network
        error, the outlet not running).
    """

    name = "relay-outlet"

    log = NamedLogger(namespace="artcast.upstream.RelayOutlet")

    def __init__(
        self,
        reactor: Any,
        group: tuple[str, int],
        interface: str,
        ttl: int,
        signingKey: bytes | None,
        memory: int = DEFAULT_UPSTREAM_ECHO_MEMORY,
        registerGroup: tuple[str, int] | None = None,
        source: str = "relay",
    ) -> None:
        """
        @param reactor: provides L{IReactorMulticast} and L{IReactorTime}.
        @param group: the data group's address and UDP port.
        @param signingKey: signs every datagram when given.
        @param memory: how many of the last ids sent are remembered.
        @param registerGroup: the register group's address and UDP port,
            where registrations are sent on (L{registerOn}).
        @param source: the C{src} of the registrations sent on when they are
            signed (a signed registration is version 2, and carries a stamp
            of its own: a registration has no id to keep).
        """
        self.reactor = reactor
        self.group = group
        self.interface = None if interface == "0.0.0.0" else interface
        self.ttl = ttl
        self.signingKey = signingKey
        self.memory = memory
        self.registerGroup = registerGroup
        self.source = source
        self.boot = int(reactor.seconds() * 1000)
        self.sentOn = 0
        self.registrationsSentOn = 0
        self.echoes = 0
        self.failed = 0
        self._port: Any = None
        self._order: deque[tuple[str, int, int]] = deque()
        self._sent: set[tuple[str, int, int]] = set()
        self._errorLog = RateLimitedLog(self.log, reactor, what="relay outlet errors")

    def startService(self) -> None:
        super().startService()
        port = self.reactor.listenMulticast(0, DatagramProtocol())
        port.setTTL(self.ttl)
        port.setLoopbackMode(True)
        if self.interface is None:
            self._ready(port)
            return
        d = port.setOutgoingInterface(self.interface)
        d.addCallback(lambda _: self._ready(port))
        d.addErrback(lambda f: self.log.failure(
            "Cannot send relayed datums from {interface}", f, interface=self.interface))

    def _ready(self, port: Any) -> None:
        if not self.running:
            port.stopListening()
            return
        self._port = port

    def stopService(self) -> Any:
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None

    def sendOn(self, message: DataMessage) -> None:
        """
        Send a datum on to the data group under its stamp (in fragments if
        it is large); a datum that cannot be sent is counted and logged.
        """
        stamp = message.stamp
        assert stamp is not None
        if self._port is None:
            self._failed(stamp, "the outlet is not sending yet")
            return
        try:
            datagrams = encodeData(
                message.key, message.value, stamp, self.signingKey, repairable=False
            )
        except ValueError as error:
            self._failed(stamp, str(error))
            return
        ident = (stamp.source, stamp.boot, stamp.seq)
        if ident not in self._sent:
            self._sent.add(ident)
            self._order.append(ident)
            if len(self._order) > self.memory:
                self._sent.discard(self._order.popleft())
        try:
            for datagram in datagrams:
                self._port.write(datagram, self.group)
        except OSError as error:
            self._failed(stamp, str(error))
            return
        self.sentOn += 1

    def registerOn(self, key: str, meta: dict[str, Any]) -> None:
        """
        Send a registration taken from the upstream on to the register
        group, signed when a key is given; one that cannot be sent is
        counted and logged.
        """
        if self.registerGroup is None:
            return
        if self._port is None:
            self._registrationFailed(key, "the outlet is not sending yet")
            return
        stamp = None
        if self.signingKey is not None:
            stamp = Stamp(self.source, self.boot, 0, self.reactor.seconds())
        try:
            datagram = encodeRegister(key, meta, stamp, self.signingKey)
            self._port.write(datagram, self.registerGroup)
        except (ValueError, OSError) as error:
            self._registrationFailed(key, str(error))
            return
        self.registrationsSentOn += 1

    def _registrationFailed(self, key: str, why: str) -> None:
        self.failed += 1
        self._errorLog.warn(
            "Could not send the registration of {key!r} on to {group}: {why}",
            key=key, group="%s:%d" % self.registerGroup, why=why,
        )

    def _failed(self, stamp: Stamp, why: str) -> None:
        self.failed += 1
        self._errorLog.warn(
            "Could not send relayed datum {source}.{boot}.{seq} on to {group}: {why}",
            source=stamp.source, boot=stamp.boot, seq=stamp.seq,
            group="%s:%d" % self.group, why=why,
        )

    def isEcho(self, stamp: Stamp) -> bool:
        """
        Whether a datagram the data group brought, refused as replayed or
        stale, is one of this outlet's own heard back (counted).
        """
        if (stamp.source, stamp.boot, stamp.seq) in self._sent:
            self.echoes += 1
            return True
        return False
