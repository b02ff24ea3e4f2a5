# -*- test-case-name: tests.test_feeds -*-
"""
The roles around the store: feeds put datums in, listeners are woken by
them, outlets send them elsewhere::

    multicast, HTTP publish, demo (IFeed) -> KeyStore -> long polls, streams (IListener)
    HTTP publish -> the data group (IOutlet)

A new way in (a relay, a Redis bus, MQTT, a file) is an L{IFeed}; a new way
out is an L{IOutlet} or an L{IListener}.  Neither needs a change to the
store or to the HTTP face.
"""

from __future__ import annotations

from twisted.application.service import IService
from zope.interface import Attribute, Interface

__all__ = ["IFeed", "IListener", "IOutlet"]


class IFeed(IService):
    """
    Something that puts datums into the store (L{artcast.server.store.KeyStore}).

    A feed is a service: it sits in the server's service tree, starts with
    C{startService} (binding its sockets in C{privilegedStartService} when
    it has any) and stops with C{stopService}.  Its C{name} says which way
    datums come in (C{"multicast"}, C{"publish"}, C{"demo"}).
    """

    def statistics() -> dict[str, object]:
        """
        The figures this feed contributes to C{/stats}, under their names
        there.
        """


class IListener(Interface):
    """
    Something the store wakes with each datum whose key matches its pattern:
    a one-shot L{artcast.server.store.Waiter} (a long poll) or a lasting
    L{artcast.server.store.Subscription} (a stream).
    """

    pattern = Attribute("The key or pattern (with C{*} and C{...}) listened to.")

    def notify(datum: object) -> None:
        """
        A datum of a matching key was published: called by the store, once
        per datum, in the order datums are published.
        """

    def cancel() -> None:
        """
        Stop listening without a word to anyone; harmless when no longer
        listening.
        """


class IOutlet(Interface):
    """
    Something that forwards datums elsewhere: today the re-send of datums
    published over HTTP to the multicast data group
    (L{artcast.server.outlets.multicast.MulticastOutlet}).
    """

    def send(key: str, value: object) -> str:
        """
        Send a new datum of C{key} with C{value}.

        @return: the datum's id, C{<source>.<boot>.<seq>}: the stamp it goes
            out with, under which the server keeps it too.
        @raise RuntimeError: when the outlet is not ready to send (not
            started yet).
        @raise ValueError: when the datum cannot be sent (a value too large
            for the outlet).
        """
