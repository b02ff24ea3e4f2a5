# -*- test-case-name: tests.test_tap -*-
"""
C{twistd artcast}: the options and the service they build.

Daemonizing, C{--pidfile}, C{--uid}/C{--gid} and C{--logfile} are twistd's.
Every socket is bound in C{privilegedStartService}, before twistd drops
privileges, so C{--client-port 80 --uid nobody} works.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application import internet, service, strports
from twisted.python import usage
from twisted.python.filepath import FilePath

from artcast.server import store as keystore

#: The original Artcast's groups and ports.
DEFAULT_GROUP = "224.1.1.1"
DEFAULT_DATA_PORT = 5007
DEFAULT_REGISTER_PORT = 5008

#: As in L{artcast.server.logs}, which is not imported until the service is made.
DEFAULT_LOG_SIZE = 10_000_000
DEFAULT_LOG_COUNT = 100
DEFAULT_MAX_VALUE_SIZE = 1_000_000

#: As in L{artcast.server.connections} and L{artcast.server.shutdown}, likewise.
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 75.0
DEFAULT_TCP_KEEPALIVE = 60.0
DEFAULT_RETRY_AFTER = 5
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


#: The listen backlog given to TCP ports that do not name one: Twisted's
#: default of 50 overflows when hundreds of clients reconnect at once (a
#: server restart, a load balancer moving clients).
DEFAULT_BACKLOG = 1024


def clientPort(description: str) -> str:
    """
    Turn C{--client-port} into an endpoint description: a bare port number,
    as the original Artcast took, means TCP on every interface; a TCP port
    that names no C{backlog} gets L{DEFAULT_BACKLOG}.
    """
    description = description.strip()
    if description.isdigit():
        number = int(description)
        if not 0 <= number <= 65535:
            raise ValueError(f"{number} is not a port number")
        description = f"tcp:{number}"
    if not description:
        raise ValueError("empty endpoint description")
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        description += f":backlog={DEFAULT_BACKLOG}"
    return description


def portNumber(text: str) -> int:
    """
    A UDP port number, 1-65535.
    """
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValueError(f"{number} is not a port number from 1 to 65535")
    return number


def positiveInt(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(f"{number} is not a whole number of at least 1")
    return number


def seconds(text: str) -> float:
    number = float(text)
    if not 0 < number < float("inf"):
        raise ValueError(f"{text} is not a positive number of seconds")
    return number


def skew(text: str) -> float:
    """
    A freshness window in seconds; C{0} turns the time check off.
    """
    number = float(text)
    if not 0 <= number < float("inf"):
        raise ValueError(f"{text} is not a number of seconds (0 for no check)")
    return number


def ttl(text: str) -> int:
    """
    A multicast TTL, 0-255.
    """
    number = int(text)
    if not 0 <= number <= 255:
        raise ValueError(f"{number} is not a TTL from 0 to 255")
    return number


def multicastGroup(text: str) -> str:
    """
    An IPv4 multicast group address (224.0.0.0/4).
    """
    from ipaddress import IPv4Address

    address = IPv4Address(text)
    if not address.is_multicast:
        raise ValueError(f"{text} is not a multicast group (224.0.0.0/4)")
    return str(address)


def ipv4(text: str) -> str:
    from ipaddress import IPv4Address

    return str(IPv4Address(text))


class Options(usage.Options):
    """
    The options of C{twistd artcast}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve artcasts: receive datums from multicast sources and answer HTTP "
        "long polls with them.  See docs/running.md."
    )

    optFlags = [
        ["demo", None, "Also run the test sources test/tick and test/now in the server."],
    ]

    optParameters = [
        ["client-port", None, "tcp:8888",
         "HTTP port: a port number or a Twisted endpoint description.", clientPort],
        ["data-group", None, DEFAULT_GROUP, "Multicast group for datums.", multicastGroup],
        ["data-port", None, DEFAULT_DATA_PORT, "UDP port for datums.", portNumber],
        ["register-group", None, DEFAULT_GROUP,
         "Multicast group for registrations.", multicastGroup],
        ["register-port", None, DEFAULT_REGISTER_PORT,
         "UDP port for registrations.", portNumber],
        ["interface", None, "0.0.0.0",
         "Local address whose interface joins the groups.", ipv4],
        ["access-log", None, None, "Access log file (default: standard error)."],
        ["access-log-size", None, DEFAULT_LOG_SIZE,
         "Rotate the access log at this many bytes.", positiveInt],
        ["access-log-count", None, DEFAULT_LOG_COUNT,
         "Keep this many rotated access logs.", positiveInt],
        ["error-log", None, None, "Error log file (default: standard error)."],
        ["error-log-size", None, DEFAULT_LOG_SIZE,
         "Rotate the error log at this many bytes.", positiveInt],
        ["error-log-count", None, DEFAULT_LOG_COUNT,
         "Keep this many rotated error logs.", positiveInt],
        ["access-control-allow-origin", None, "*",
         "Access-Control-Allow-Origin header value."],
        ["templates", None, None, "Folder of per-artcast HTML pages (<key>.html)."],
        ["poll-timeout", None, None,
         "Answer a long poll with 204 after this many seconds (default: hold).",
         seconds],
        ["history", None, keystore.DEFAULT_HISTORY,
         "Datums kept per key for since=.", positiveInt],
        ["history-age", None, keystore.DEFAULT_HISTORY_AGE,
         "Seconds a datum is kept in history.", seconds],
        ["max-keys", None, keystore.DEFAULT_MAX_KEYS,
         "Keys held at most.", positiveInt],
        ["max-store-bytes", None, keystore.DEFAULT_MAX_BYTES,
         "Bytes the datums, keys and metadata held may cost in all; past it "
         "the oldest history, then the least recently updated keys, are "
         "forgotten.", positiveInt],
        ["max-value-size", None, DEFAULT_MAX_VALUE_SIZE,
         "Largest value accepted, in bytes of JSON.", positiveInt],
        ["stats-allow", None, None,
         "Comma-separated networks allowed to see /stats and /metrics "
         "(default: everyone)."],
        ["source-max-skew", None, 30.0,
         "With --source-key-file: drop datums whose send time is further "
         "than this many seconds from the server's clock (0: no check).", skew],
        ["max-sources", None, 10_000,
         "Version 2 sources remembered for replay and gap checks; past it the "
         "one heard from least recently is forgotten.", positiveInt],
        ["fragment-memory", None, 16_000_000,
         "Bytes held at most by fragmented values being put together.", positiveInt],
        ["publish-token-file", None, None,
         "Take POST/PUT /artcasts/<key> with the bearer tokens in this file."],
        ["publish-ttl", None, 1,
         "Multicast TTL of datums published over HTTP.", ttl],
        ["max-clients", None, DEFAULT_MAX_CLIENTS,
         "Open client connections at most; past it a request gets 503 with "
         "Retry-After.", positiveInt],
        ["max-clients-per-address", None, None,
         "Open connections per client address at most (default: no cap).",
         positiveInt],
        ["header-timeout", None, DEFAULT_HEADER_TIMEOUT,
         "Close a connection that has not sent a whole request head in this "
         "many seconds.", seconds],
        ["idle-timeout", None, DEFAULT_IDLE_TIMEOUT,
         "Close a keep-alive connection idle between requests this many "
         "seconds (a held request is never idle).", seconds],
        ["body-timeout", None, 30.0,
         "Close a connection that has not sent a whole request body this many "
         "seconds after its head (408).", seconds],
        ["max-output-buffer", None, 2 * 1024 * 1024,
         "Abort a connection that has this many bytes written and not yet read "
         "by its client (at least --max-value-size + 128 KiB).", positiveInt],
        ["max-output-total", None, 256 * 1024 * 1024,
         "Bytes all connections together may have written and not yet sent; "
         "past it the connections holding the most are aborted (at least "
         "--max-output-buffer).", positiveInt],
        ["tcp-keepalive", None, DEFAULT_TCP_KEEPALIVE,
         "Seconds of silence before TCP keepalive probes a connection.", seconds],
        ["retry-after", None, DEFAULT_RETRY_AFTER,
         "503 answers carry a Retry-After spread over 1 to this many seconds.",
         positiveInt],
        ["shutdown-timeout", None, DEFAULT_SHUTDOWN_TIMEOUT,
         "On SIGTERM/SIGINT, seconds to answer and close connections before "
         "cutting the rest.", seconds],
        ["workers", None, 0,
         "Serve HTTP from this many worker processes sharing the port "
         "(0: serve in this process).", int],
        # Issue 9, streams and publishing: bearer-token guessing.
        ["publish-auth-failures", None, 10,
         "Unknown bearer tokens a client address may present per minute; "
         "past it, 429 with Retry-After without a check.", positiveInt],
    ]

    def opt_source_key_file(self, path: str) -> None:
        """
        Accept only datagrams signed with the HMAC key in this file (repeat for more keys).
        """
        from artcast.wire import parseKeyFile

        try:
            with open(path, "rb") as keyFile:
                key = parseKeyFile(keyFile.read())
        except (OSError, ValueError) as error:
            raise usage.UsageError(f"--source-key-file {path}: {error}")
        self.setdefault("source-keys", []).append(key)

    def postOptions(self) -> None:
        # The default is written as the original's; give it the backlog too.
        self["client-port"] = clientPort(self["client-port"])
        from artcast.server.feeds.publish import parseTokenFile
        from artcast.server.stats import EVERYONE, Networks

        self.setdefault("source-keys", [])
        tokenFile = self["publish-token-file"]
        self["publish-tokens"] = None
        if tokenFile is not None:
            try:
                with open(tokenFile, "rb") as tokens:
                    self["publish-tokens"] = parseTokenFile(tokens.read())
            except (OSError, ValueError) as error:
                raise usage.UsageError(f"--publish-token-file {tokenFile}: {error}")

        try:
            self["stats-allow"] = Networks.parse(self["stats-allow"] or EVERYONE)
        except ValueError as error:
            raise usage.UsageError(f"--stats-allow: {error}")
        templates = self["templates"]
        if templates is not None:
            path = FilePath(templates)
            if not path.isdir():
                raise usage.UsageError(f"--templates {templates}: not a folder")
            self["templates"] = path
        for name in ("access-log", "error-log"):
            path = self[name]
            if path not in (None, "-"):
                folder = FilePath(path).parent()
                if not folder.isdir():
                    raise usage.UsageError(
                        f"--{name} {path}: the folder {folder.path} does not exist"
                    )
        origin = self["access-control-allow-origin"]
        if any(c < " " or c == "\x7f" for c in origin):
            raise usage.UsageError(
                "--access-control-allow-origin must not hold control characters"
            )
        if (self["data-group"], self["data-port"]) == (
            self["register-group"],
            self["register-port"],
        ):
            raise usage.UsageError(
                "the data and register groups must differ in group or port"
            )
        from artcast.server.workers import checkOptions

        checkOptions(self)


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


def makeService(options: dict[str, Any], reactor: Any = None) -> service.MultiService:
    """
    Build the server: the HTTP port, the two multicast groups and, with
    C{--demo}, the test sources.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    if options.get("workers"):
        from artcast.server.workers import makeSupervisor

        return makeSupervisor(options, reactor)
    # Set in a worker process of --workers (artcast.server.workers).
    worker = options.get("worker")

    from artcast.server.internals import InternalsService
    from artcast.server.logs import ErrorLogService, errorLogObserver
    from artcast.server.feeds.multicast import DatagramHandler, MulticastServerProtocol, Stats
    from artcast.server.routes import ArtcastApp

    top = service.MultiService()

    if worker is None:  # a worker's events go to its supervisor's error log
        ErrorLogService(
            errorLogObserver(
                options["error-log"], options["error-log-size"], options["error-log-count"]
            )
        ).setServiceParent(top)
    # Before anything that uses Twisted's internals is made.
    InternalsService().setServiceParent(top)

    store = keystore.KeyStore(
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
    )
    publisher = None
    if options.get("publish-tokens") is not None:
        from artcast.server.feeds.publish import HTTPPublisher, publishingSource

        sender = publishingSource(
            reactor,
            store.instance + "-http",
            (options["data-group"], options["data-port"]),
            options["interface"],
            options["publish-ttl"],
            signingKeys[0] if signingKeys else None,
        )
        sender.setServiceParent(top)
        handler.ownSources.add(sender.src)
        from artcast.server.feeds.publish import AuthThrottle

        publisher = HTTPPublisher(
            store, reactor, options["publish-tokens"], sender,
            options["max-value-size"], stats,
            throttle=AuthThrottle(reactor, options["publish-auth-failures"]),
        )
    web = ArtcastApp(
        store,
        reactor,
        allowOrigin=options["access-control-allow-origin"],
        pollTimeout=options["poll-timeout"],
        templates=options["templates"],
        stats=stats,
        statsNetworks=options["stats-allow"],
        publisher=publisher,
    )
    from artcast.server.connections import ConnectionLimiter, LimitedSite, RetrySpread
    from artcast.server.connections import OUTPUT_HEADROOM
    from artcast.server.feeds.publish import boundedRequestFactory
    from artcast.server.shutdown import ServingService

    retryAfter = RetrySpread(options["retry-after"])
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
    web.connections = limiter
    web.closing.retryAfter = retryAfter
    # The port's service is the child of the one that shuts down gracefully:
    # it stops accepting first, then held requests are answered with 503.
    serving = ServingService(
        limiter,
        reactor,
        options["shutdown-timeout"],
        closing=web.closing,
        afterAnswer=store.cancelWaiters,
    )
    if worker is None:
        portService = strports.service(options["client-port"], limiter, reactor=reactor)
    else:
        portService = worker.portService(limiter, reactor)
        web.identity = worker.identity()
    portService.setServiceParent(serving)
    serving.setServiceParent(top)

    for group, port, receive in (
        (options["data-group"], options["data-port"], handler.dataReceived),
        (options["register-group"], options["register-port"], handler.registerReceived),
    ):
        udp = internet.MulticastServer(
            port,
            MulticastServerProtocol(group, options["interface"], receive),
            interface=group,
            maxPacketSize=65535,
            listenMultiple=True,
            reactor=reactor,
        )
        udp.setServiceParent(top)

    if options["demo"]:
        from artcast.server.feeds.demo import DemoService

        DemoService(handler, reactor).setServiceParent(top)

    GarbageCollectorTuning(reactor).setServiceParent(top)

    top.store = store  # type: ignore[attr-defined]
    top.stats = stats  # type: ignore[attr-defined]
    top.connections = limiter  # type: ignore[attr-defined]
    return top
