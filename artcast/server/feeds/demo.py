# -*- test-case-name: tests.test_feeds -*-
"""
C{--demo}: the two test artcasts, run inside the server so that a new user
sees live data at once, with no multicast set-up.

The demo source builds real version 2 datagrams and hands them to the same
handler that the data and register groups feed, so what a user sees with
C{--demo} is what a source on the network would give.
"""

from __future__ import annotations

import datetime
import secrets

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from artcast.server.feeds.multicast import DatagramHandler
from artcast.server.interfaces import IFeed
from artcast.wire import Stamp, encodeData, encodeRegister

__all__ = [
    "ARTCASTS",
    "DEMO_ADDRESS",
    "LICENSE",
    "REGISTER_INTERVAL",
    "DemoFeed",
]

#: Where in-process datagrams say they came from.
DEMO_ADDRESS = ("127.0.0.1", 0)

LICENSE = {
    "uri": "https://creativecommons.org/publicdomain/zero/1.0/",
    "title": "CC0 1.0 Universal",
}

ARTCASTS = {
    "test/tick": {
        "description": "An integer counting up once a second.",
        "provenance": "The Artcast server's built-in demo source (--demo).",
        "license": LICENSE,
    },
    "test/now": {
        "description": "The time in UTC, ISO 8601, once a second.",
        "provenance": "The Artcast server's built-in demo source (--demo).",
        "license": LICENSE,
    },
}

#: Sources register every 30 seconds.
REGISTER_INTERVAL = 30.0


@implementer(IFeed)
class DemoFeed(Service):
    """
    The demo feed: send C{test/tick} and C{test/now} once a second, and
    register both every 30 seconds, into a L{DatagramHandler}.
    """

    name = "demo"

    def __init__(self, handler: DatagramHandler, clock: IReactorTime) -> None:
        self.handler = handler
        self.clock = clock
        self.source = "demo-" + secrets.token_hex(3)
        self.tick = 0
        self._seq = 0
        self._boot = 0
        self._loops: list[LoopingCall] = []

    def _stamp(self) -> Stamp:
        self._seq += 1
        return Stamp(self.source, self._boot, self._seq, self.clock.seconds())

    def startService(self) -> None:
        super().startService()
        self._boot = int(self.clock.seconds() * 1000)
        for interval, function in (
            (REGISTER_INTERVAL, self.register),
            (1.0, self.send),
        ):
            loop = LoopingCall(function)
            loop.clock = self.clock
            loop.start(interval, now=True)
            self._loops.append(loop)

    def stopService(self) -> None:
        for loop in self._loops:
            loop.stop()
        self._loops = []
        super().stopService()

    def statistics(self) -> dict[str, object]:
        """
        No figures of its own: the handler counts the demo's datagrams with
        those of the multicast groups.
        """
        return {}

    def register(self) -> None:
        """
        Register both test artcasts.
        """
        stamp = Stamp(self.source, self._boot, 0, self.clock.seconds())
        for key, meta in ARTCASTS.items():
            datagram = encodeRegister(key, meta, stamp)
            self.handler.registerReceived(datagram, DEMO_ADDRESS)

    def send(self) -> None:
        """
        Send the next tick and the time.
        """
        self.tick += 1
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
        for key, value in (
            ("test/tick", self.tick),
            ("test/now", now.isoformat(timespec="seconds").replace("+00:00", "Z")),
        ):
            for datagram in encodeData(key, value, self._stamp()):
                self.handler.dataReceived(datagram, DEMO_ADDRESS)
