# -*- test-case-name: tests.test_tap -*-
"""
The server C{twistd artcast} runs, built from its options: the store, where
datums enter (the multicast groups, HTTP publishing, C{--demo}), and the HTTP
port where they leave.

Each part is made before what uses it and handed to it; nothing is set on a
part after it is made.  L{artcast.server.tap} parses the options and calls
L{makeService} (or, with C{--workers}, L{artcast.server.workers.makeSupervisor});
a worker process of C{--workers} calls it too.
"""

from __future__ import annotations

import gc
from typing import Any, Iterable, Mapping

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

from artcast.server.connections import (
    OUTPUT_HEADROOM,
    ConnectionLimiter,
    LimitedSite,
    RetrySpread,
    boundedRequestFactory,
)
from artcast.server.defaults import (
    DEFAULT_BUS_HISTORY,
    DEFAULT_BUS_TIMEOUT,
    DEFAULT_UPSTREAM_SILENCE,
)
from artcast.server.feeds.bus import BusFeed, RedisBus, parseBusURL
from artcast.server.feeds.demo import DemoFeed
from artcast.server.feeds.mqtt import MQTTFeed
from artcast.server.feeds.multicast import DatagramHandler, MulticastFeed
from artcast.server.feeds.publish import (
    AuthThrottle,
    HTTPPublisher,
)
from artcast.server.feeds.upstream import UpstreamFeed
from artcast.server.internals import InternalsService
from artcast.server.logs import ErrorLogService, errorLogObserver, repeatsTwistdLog
from artcast.server.outlets.multicast import MulticastOutlet, RelayOutlet
from artcast.server.routes import ArtcastApp
from artcast.server.shutdown import Closing, ServingService
from artcast.server.stats import ServerStatistics, Stats
from artcast.server.store import KeyStore

__all__ = ["ArtcastService", "GarbageCollectorTuning", "StartWhenReady", "makeService"]


class ArtcastService(service.MultiService):
    """
    The server: its services (the error log, the HTTP port under graceful
    shutdown, the multicast groups, ...) as children, and the parts a caller
    may want to look at.

    @ivar store: the L{KeyStore} the datums are kept in.
    @ivar stats: the counters of what arrived and what was dropped (L{Stats}).
    @ivar connections: the HTTP port's factory, the L{ConnectionLimiter}.
    @ivar statistics: what C{/stats} shows (L{ServerStatistics}); a part with
        figures of its own joins it with L{ServerStatistics.add}.
    """

    def __init__(
        self,
        store: KeyStore,
        stats: Stats,
        connections: ConnectionLimiter,
        statistics: ServerStatistics,
    ) -> None:
        super().__init__()
        self.store = store
        self.stats = stats
        self.connections = connections
        self.statistics = statistics


class GarbageCollectorTuning(service.Service):
    """
    Once the reactor runs, the objects made while starting (modules, the
    application) are collected once and frozen out of the cyclic garbage
    collector's reach (L{gc.freeze}), and its first generation made larger:
    a busy server makes and drops a request's objects by the thousand a
    second, and each collection walked every long-lived object again.

    @param threshold: the first generation's threshold (Python's is 700).
    """

    def __init__(self, reactor: Any, threshold: int = 50_000) -> None:
        self.reactor = reactor
        self.threshold = threshold

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self.tune)

    def tune(self) -> None:
        """
        Collect, freeze what is left and raise the first threshold.
        """
        gc.collect()
        gc.freeze()
        _, second, third = gc.get_threshold()
        gc.set_threshold(self.threshold, second, third)


class StartWhenReady(service.MultiService):
    """
    Services started only once a L{Deferred} fires (with C{--bus}: the
    feeds other than multicast, once the history is read from Redis), and
    stopped with this one, started or not.
    """

    def __init__(self, ready: Deferred[object], services: Iterable[service.IService]) -> None:
        super().__init__()
        for child in services:
            child.setServiceParent(self)
        self._ready = self._started = False
        ready.addCallback(self._readyNow)

    def startService(self) -> None:
        service.Service.startService(self)
        self._startChildren()

    def _readyNow(self, result: object) -> object:
        self._ready = True
        self._startChildren()
        return result

    def _startChildren(self) -> None:
        if self.running and self._ready and not self._started:
            self._started = True
            for child in self:
                child.startService()

    def stopService(self) -> Any:
        if not self._started:
            service.Service.stopService(self)
            return None
        self._started = False
        return super().stopService()


def _relayAgent(reactor: Any) -> Agent:
    """
    The HTTP client of C{--upstream}: connections not kept for another
    request (a stream holds its own until it ends), a bounded connect.
    """
    return Agent(
        reactor,
        connectTimeout=DEFAULT_UPSTREAM_SILENCE,
        pool=HTTPConnectionPool(reactor, persistent=False),
    )


def makeService(options: Mapping[str, Any], reactor: Any) -> ArtcastService:
    """
    Build the server: the HTTP port, the two multicast groups and, with
    C{--demo}, the test sources.

    @param options: the parsed options (L{artcast.server.tap.Options}); in a
        worker process of C{--workers}, C{options["worker"]} is its
        L{artcast.server.workers.Worker}.
    @param reactor: the reactor.
    """
    # Set in a worker process of --workers (artcast.server.workers).
    worker = options.get("worker")

    children: list[service.IService] = []

    # A worker's events go to its supervisor's error log; under twistd -n,
    # an error log on standard error would repeat twistd's own log.
    if worker is None and not repeatsTwistdLog(
        options["error-log"], getattr(options, "parent", None)
    ):
        children.append(
            ErrorLogService(
                errorLogObserver(
                    options["error-log"], options["error-log-size"], options["error-log-count"]
                )
            )
        )

    # Before anything that uses Twisted's internals is made: it checks them
    # once, and falls back to the ordinary path if they are not as expected.
    children.append(InternalsService())

    store = KeyStore(
        reactor,
        history=options["history"],
        historyAge=options["history-age"],
        maxKeys=options["max-keys"],
        maxBytes=options["max-store-bytes"],
    )
    stats = Stats()
    signingKeys = options.get("source-keys", [])
    handler = DatagramHandler(
        store,
        reactor,
        stats,
        signingKeys=signingKeys,
        maxValueSize=options["max-value-size"],
        freshness=(options.get("source-max-skew") or None) if signingKeys else None,
        maxSources=options["max-sources"],
        fragmentMemory=options["fragment-memory"],
        repair=not options.get("no-repair"),
    )
    publisher = None
    if options.get("publish-tokens") is not None:
        outlet = MulticastOutlet(
            reactor,
            store.instance + "-http",
            (options["data-group"], options["data-port"]),
            options["interface"],
            options["publish-ttl"],
            signingKeys[0] if signingKeys else None,
        )
        handler.ownSources.add(outlet.src)
        publisher = HTTPPublisher(
            store, reactor, options["publish-tokens"], outlet,
            options["max-value-size"], stats,
            throttle=AuthThrottle(reactor, options["publish-auth-failures"]),
        )
        # The outlet starts with the publisher and stops with it.
        outlet.setServiceParent(publisher)
        children.append(publisher)

    upstream = None
    if options.get("upstream"):
        upstream = UpstreamFeed(
            options["upstream"],
            handler,
            reactor,
            _relayAgent(reactor),
            options["max-value-size"],
            silence=options.get("upstream-silence", DEFAULT_UPSTREAM_SILENCE),
            # Starts and stops with the feed.
            outlet=RelayOutlet(
                reactor,
                (options["data-group"], options["data-port"]),
                options["interface"],
                options["publish-ttl"],
                signingKeys[0] if signingKeys else None,
                registerGroup=(options["register-group"], options["register-port"]),
                source=store.instance + "-relay",
            ) if options.get("upstream-multicast") else None,
            tokens=options.get("upstream-tokens"),
        )

    bus = None
    if options.get("bus"):
        address = parseBusURL(options["bus"])
        busTimeout = options.get("bus-timeout", DEFAULT_BUS_TIMEOUT)
        busHistory = options.get("bus-history", DEFAULT_BUS_HISTORY)
        bus = BusFeed(
            RedisBus(reactor, address, maxLength=busHistory, timeout=busTimeout),
            handler,
            reactor,
            address.url(),
            options["max-value-size"],
            history=busHistory,
            historyAge=options["history-age"],
            timeout=busTimeout,
        )

    mqtt = None
    if options.get("mqtt-address") is not None:
        mqttOutlet = MulticastOutlet(
            reactor,
            store.instance + "-mqtt",
            (options["data-group"], options["data-port"]),
            options["interface"],
            options["publish-ttl"],
            signingKeys[0] if signingKeys else None,
        )
        handler.ownSources.add(mqttOutlet.src)
        mqtt = MQTTFeed(
            store,
            reactor,
            options["mqtt-address"],
            options.get("mqtt-topic", []),
            options.get("mqtt-publish", []),
            mqttOutlet,
            options["max-value-size"],
            stats,
            tlsFiles=(
                options.get("mqtt-ca-file"),
                options.get("mqtt-cert-file"),
                options.get("mqtt-key-file"),
            ),
        )
        # The outlet starts with the bridge and stops with it.
        mqttOutlet.setServiceParent(mqtt)

    # What /stats shows.  The connections' figures are among them, but the
    # connections are made from the site, which serves the application, which
    # shows these figures: so the figures are made first, empty of parts, and
    # each part is added once it exists (below), as a feed's would be.  The
    # alternative, a site made without its resource and given it afterwards,
    # would leave a half-made site between two statements.
    statistics = ServerStatistics(
        reactor, stats, store, identity=worker.identity() if worker is not None else None,
        # Where the groups listen and what they heard; the multicast feed is
        # made below, once the port's service is.
        listening=lambda: multicast.listening.figures(),
    )
    retryAfter = RetrySpread(options["retry-after"])
    closing = Closing(retryAfter)
    web = ArtcastApp(
        store,
        reactor,
        allowOrigin=options["access-control-allow-origin"],
        pollTimeout=options["poll-timeout"],
        templates=options["templates"],
        statsNetworks=options["stats-allow"],
        publisher=publisher,
        closing=closing,
        statistics=statistics,
        upstreamNames=upstream.upstreamNames if upstream is not None else None,
        # The multicast feed is made below, once the port's service is.
        listening=lambda: multicast.listening.figures(),
    )
    site = LimitedSite(
        web.resource(),
        options["access-log"],
        options["access-log-size"],
        options["access-log-count"],
        reactor=reactor,
        requestFactory=boundedRequestFactory(options["max-value-size"]),
        headerTimeout=options["header-timeout"],
        bodyTimeout=options["body-timeout"],
        idleTimeout=options["idle-timeout"],
        retryAfter=retryAfter,
        allowOrigin=options["access-control-allow-origin"],
    )
    limiter = ConnectionLimiter(
        site,
        maxClients=options["max-clients"],
        maxPerAddress=options["max-clients-per-address"],
        tcpKeepAlive=options["tcp-keepalive"],
        maxOutputBuffer=max(
            options["max-output-buffer"], options["max-value-size"] + OUTPUT_HEADROOM
        ),
        # Never below one connection's bound.
        maxOutputTotal=max(
            options["max-output-total"], options["max-output-buffer"],
            options["max-value-size"] + OUTPUT_HEADROOM,
        ),
    )
    # In the order /stats has always shown them.
    statistics.add(limiter)
    statistics.add(web.streams)
    statistics.add(handler.repair)
    if publisher is not None:
        statistics.add(publisher)
    if upstream is not None:
        statistics.add(upstream)
    if bus is not None:
        statistics.add(bus)
    if mqtt is not None:
        statistics.add(mqtt)

    # The port's service is the child of the one that shuts down gracefully:
    # it stops accepting first, then held requests are answered with 503.
    serving = ServingService(
        limiter,
        reactor,
        options["shutdown-timeout"],
        closing=closing,
        afterAnswer=store.cancelWaiters,
        # With --bus, the port is bound once the bus's history is read.
        ready=bus.whenReady() if bus is not None else None,
    )
    if worker is None:
        portService = strports.service(options["client-port"], limiter, reactor=reactor)
    else:
        portService = worker.portService(limiter, reactor)
    portService.setServiceParent(serving)
    children.append(serving)

    # With --bus, the live feeds wait for the history read from Redis, so
    # that the store takes the past before the present: the multicast
    # groups are bound at once but hold what they hear meanwhile.
    multicast = MulticastFeed(
        handler,
        reactor,
        (options["data-group"], options["data-port"]),
        (options["register-group"], options["register-port"]),
        options["interface"],
        ready=bus.whenReady() if bus is not None else None,
    )
    children.append(multicast)

    later: list[service.IService] = []
    if options["demo"]:
        later.append(DemoFeed(handler, reactor))
    if upstream is not None:
        later.append(upstream)
    if mqtt is not None:
        later.append(mqtt)
    if bus is not None:
        children.append(bus)
        if later:
            children.append(StartWhenReady(bus.whenReady(), later))
    else:
        children.extend(later)

    children.append(GarbageCollectorTuning(reactor))

    top = ArtcastService(store, stats, limiter, statistics)
    for child in children:
        child.setServiceParent(top)
    return top
