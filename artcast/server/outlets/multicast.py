# -*- test-case-name: tests.test_publish -*-
"""
The multicast outlet: datums published over HTTP
(L{artcast.server.feeds.publish}) sent on to the data group, so that every
server fed by the group gets them with the same id.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from artcast.server.interfaces import IOutlet
from artcast.source import SourceService

__all__ = ["MulticastOutlet"]


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
