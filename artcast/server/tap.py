# -*- test-case-name: tests.test_tap -*-
"""
C{twistd artcast}: the options, and the service they build.

Daemonizing, C{--pidfile}, C{--uid}/C{--gid} and C{--logfile} are twistd's.
Every socket is bound in C{privilegedStartService}, before twistd drops
privileges, so C{--client-port 80 --uid nobody} works.

The options' defaults are L{artcast.server.defaults}'.  The server is built by
L{artcast.server.service}, imported (with the rest of the server) only when
the service is made, so that C{twistd artcast --help} stays quick.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

from twisted.application.service import MultiService
from twisted.python import usage
from twisted.python.filepath import FilePath

from artcast.server import defaults

__all__ = [
    "Options",
    "clientPort",
    "endpointProblem",
    "ipv4",
    "makeService",
    "multicastGroup",
    "portNumber",
    "positiveInt",
    "seconds",
    "skew",
    "ttl",
    "workerCount",
]


#: The endpoint kinds whose descriptions are checked by building the
#: endpoint (which binds nothing): their arguments are numbers and files.
_BUILT_ENDPOINTS = ("tcp", "tcp6", "unix", "ssl")

#: What a user may write for C{--client-port}.
_ENDPOINT_HINT = "try 8888, tcp:8888 or tcp:8888:interface=127.0.0.1"


def endpointProblem(description: str) -> str | None:
    """
    What is wrong with a server endpoint description, checked with Twisted's
    own parser (L{twisted.internet.endpoints.serverFromString}) without
    binding anything.

    @return: L{None} when C{description} is a usable description, else the
        reason, in words.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    kind = description.split(":", 1)[0].strip().lower()
    if kind not in _BUILT_ENDPOINTS:
        known = {p.prefix.lower() for p in getPlugins(IStreamServerEndpointStringParser)}
        if kind not in known:
            return f"{kind!r} is not an endpoint type"
        return None
    try:
        # Building a tcp:, tcp6:, unix: or ssl: endpoint touches no reactor.
        serverFromString(object(), description)
    except (ValueError, TypeError, KeyError, OSError) as error:
        return str(error) or error.__class__.__name__
    except Exception as error:  # e.g. an ssl: certificate that does not load
        return f"{error.__class__.__name__}: {error}"
    return None


def clientPort(description: str) -> str:
    """
    Turn C{--client-port} into an endpoint description: a bare port number,
    as the original Artcast took, means TCP on every interface; a TCP port
    that names no C{backlog} gets L{defaults.DEFAULT_BACKLOG}.

    A C{tcp:} or C{tcp6:} description is checked by building it; others
    (whose building may read files or the environment) are checked by
    L{Options.postOptions} under twistd, with L{endpointProblem}.

    @raise ValueError: If it is not a port number or an endpoint
        description.
    """
    description = description.strip()
    if description.isdigit():
        number = int(description)
        if not 0 <= number <= 65535:
            raise ValueError(f"not a port number; {_ENDPOINT_HINT}")
        description = f"tcp:{number}"
    if not description:
        raise ValueError(f"empty endpoint description; {_ENDPOINT_HINT}")
    kind = description.split(":", 1)[0].lower()
    if ":" not in description:
        raise ValueError(f"not an endpoint description; {_ENDPOINT_HINT}")
    if kind in ("tcp", "tcp6"):
        port = description.split(":", 2)[1] if description.count(":") else ""
        problem = endpointProblem(description)
        if problem is None and port.isdigit() and int(port) > 65535:
            problem = f"{port} is not a port number from 0 to 65535"
        if problem is not None:
            raise ValueError(
                f"not an endpoint description ({problem}); {_ENDPOINT_HINT}"
            )
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        description += f":backlog={defaults.DEFAULT_BACKLOG}"
    return description


def _number(text: str, hint: str, kind: Callable[[str], Any] = int) -> Any:
    """
    C{kind(text)}, with an error that says what was expected and C{hint},
    what would work.
    """
    try:
        return kind(text)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise ValueError(f"not {expected}; {hint}") from None


def portNumber(text: str) -> int:
    """
    A UDP port number, 1-65535.
    """
    number = _number(text, "use 1 to 65535")
    if not 1 <= number <= 65535:
        raise ValueError("not a port number; use 1 to 65535")
    return number


def positiveInt(text: str) -> int:
    """
    A whole number, at least 1.
    """
    number = _number(text, "use a whole number of at least 1")
    if number < 1:
        raise ValueError("too small; use a whole number of at least 1")
    return number


def workerCount(text: str) -> int:
    """
    A count of worker processes, C{0} (none) or more.
    """
    return _number(text, "use 0 (no workers) or the number of processes")


def seconds(text: str) -> float:
    """
    A positive, finite number of seconds.
    """
    number = _number(text, "use e.g. 30 or 0.5", float)
    if not 0 < number < float("inf"):
        raise ValueError("not a positive number of seconds; use e.g. 30 or 0.5")
    return number


def skew(text: str) -> float:
    """
    A freshness window in seconds; C{0} turns the time check off.
    """
    number = _number(text, "use e.g. 30 (0 for no check)", float)
    if not 0 <= number < float("inf"):
        raise ValueError("not a number of seconds; use e.g. 30 (0 for no check)")
    return number


def ttl(text: str) -> int:
    """
    A multicast TTL, 0-255.
    """
    number = _number(text, "use 0 (this host) to 255")
    if not 0 <= number <= 255:
        raise ValueError("not a TTL; use 0 (this host) to 255")
    return number


def multicastGroup(text: str) -> str:
    """
    An IPv4 multicast group address (224.0.0.0/4).
    """
    from ipaddress import IPv4Address

    try:
        address = IPv4Address(text)
    except ValueError:
        raise ValueError(
            f"not an IPv4 address; use a multicast group such as {defaults.DEFAULT_GROUP}"
        ) from None
    if not address.is_multicast:
        raise ValueError(
            "not a multicast group (224.0.0.0/4); use e.g. "
            f"{defaults.DEFAULT_GROUP}"
        )
    return str(address)


def ipv4(text: str) -> str:
    """
    An IPv4 address: the local address of an interface.
    """
    from ipaddress import IPv4Address

    try:
        return str(IPv4Address(text))
    except ValueError:
        raise ValueError(
            "not an IPv4 address; use one of this host's addresses, e.g. "
            "127.0.0.1 (or 0.0.0.0 for the default interface)"
        ) from None


def _naming(name: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """
    Wrap an option's coercer so that its error names the option and the
    value: C{--data-port 0: not a port number; use 1 to 65535}.
    """

    def named(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as error:
            raise usage.UsageError(f"--{name} {value}: {error}") from None

    return named


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
        ["no-repair", None,
         "Never NACK: wait for a lost datagram only 50 ms (as for sources that "
         "do not repair), then declare it lost (see docs/operations.md)."],
        # Issue 12, relays.
        ["upstream-multicast", None,
         "With --upstream: also send every datum taken from the upstream on to "
         "this server's data group, with its id (--publish-ttl, --interface), "
         "so that servers on this LAN are fed (see docs/relays.md)."],
    ]

    optParameters = [
        ["client-port", None, defaults.DEFAULT_CLIENT_PORT,
         "HTTP port: a port number or a Twisted endpoint description.", clientPort],
        ["data-group", None, defaults.DEFAULT_GROUP, "Multicast group for datums.", multicastGroup],
        ["data-port", None, defaults.DEFAULT_DATA_PORT, "UDP port for datums.", portNumber],
        ["register-group", None, defaults.DEFAULT_GROUP,
         "Multicast group for registrations.", multicastGroup],
        ["register-port", None, defaults.DEFAULT_REGISTER_PORT,
         "UDP port for registrations.", portNumber],
        ["interface", None, defaults.DEFAULT_INTERFACE,
         "Local address whose interface joins the groups.", ipv4],
        ["access-log", None, None, "Access log file (default: standard error)."],
        ["access-log-size", None, defaults.DEFAULT_LOG_SIZE,
         "Rotate the access log at this many bytes.", positiveInt],
        ["access-log-count", None, defaults.DEFAULT_LOG_COUNT,
         "Keep this many rotated access logs.", positiveInt],
        ["error-log", None, None, "Error log file (default: standard error)."],
        ["error-log-size", None, defaults.DEFAULT_LOG_SIZE,
         "Rotate the error log at this many bytes.", positiveInt],
        ["error-log-count", None, defaults.DEFAULT_LOG_COUNT,
         "Keep this many rotated error logs.", positiveInt],
        ["access-control-allow-origin", None, "*",
         "Access-Control-Allow-Origin header value."],
        ["templates", None, None, "Folder of per-artcast HTML pages (<key>.html)."],
        ["poll-timeout", None, None,
         "Answer a long poll with 204 after this many seconds (default: hold).",
         seconds],
        ["history", None, defaults.DEFAULT_HISTORY,
         "Datums kept per key for since=.", positiveInt],
        ["history-age", None, defaults.DEFAULT_HISTORY_AGE,
         "Seconds a datum is kept in history.", seconds],
        ["max-keys", None, defaults.DEFAULT_MAX_KEYS,
         "Keys held at most.", positiveInt],
        ["max-store-bytes", None, defaults.DEFAULT_MAX_BYTES,
         "Bytes the datums, keys and metadata held may cost in all; past it "
         "the oldest history, then the least recently updated keys, are "
         "forgotten.", positiveInt],
        ["max-value-size", None, defaults.DEFAULT_MAX_VALUE_SIZE,
         "Largest value accepted, in bytes of JSON.", positiveInt],
        ["stats-allow", None, None,
         "Comma-separated networks allowed to see /stats and /metrics "
         "(default: everyone)."],
        ["source-max-skew", None, defaults.DEFAULT_SOURCE_MAX_SKEW,
         "With --source-key-file: drop datums whose send time is further "
         "than this many seconds from the server's clock (0: no check).", skew],
        ["max-sources", None, defaults.MAX_SOURCES,
         "Version 2 sources remembered for replay and gap checks; past it the "
         "one heard from least recently is forgotten.", positiveInt],
        ["fragment-memory", None, defaults.FRAGMENT_MEMORY,
         "Bytes held at most by fragmented values being put together.", positiveInt],
        ["publish-token-file", None, None,
         "Take POST/PUT /artcasts/<key> with the bearer tokens in this file."],
        ["publish-ttl", None, defaults.DEFAULT_PUBLISH_TTL,
         "Multicast TTL of datums published over HTTP.", ttl],
        ["max-clients", None, defaults.DEFAULT_MAX_CLIENTS,
         "Open client connections at most; past it a request gets 503 with "
         "Retry-After.", positiveInt],
        ["max-clients-per-address", None, None,
         "Open connections per client address at most (default: no cap).",
         positiveInt],
        ["header-timeout", None, defaults.DEFAULT_HEADER_TIMEOUT,
         "Close a connection that has not sent a whole request head in this "
         "many seconds.", seconds],
        ["idle-timeout", None, defaults.DEFAULT_IDLE_TIMEOUT,
         "Close a keep-alive connection idle between requests this many "
         "seconds (a held request is never idle).", seconds],
        ["body-timeout", None, defaults.DEFAULT_BODY_TIMEOUT,
         "Close a connection that has not sent a whole request body this many "
         "seconds after its head (408).", seconds],
        ["max-output-buffer", None, defaults.DEFAULT_MAX_OUTPUT_BUFFER,
         "Abort a connection that has this many bytes written and not yet read "
         "by its client (at least --max-value-size + 128 KiB).", positiveInt],
        ["max-output-total", None, defaults.DEFAULT_MAX_OUTPUT_TOTAL,
         "Bytes all connections together may have written and not yet sent; "
         "past it the connections holding the most are aborted (at least "
         "--max-output-buffer).", positiveInt],
        ["tcp-keepalive", None, defaults.DEFAULT_TCP_KEEPALIVE,
         "Seconds of silence before TCP keepalive probes a connection.", seconds],
        ["retry-after", None, defaults.DEFAULT_RETRY_AFTER,
         "503 answers carry a Retry-After spread over 1 to this many seconds.",
         positiveInt],
        ["shutdown-timeout", None, defaults.DEFAULT_SHUTDOWN_TIMEOUT,
         "On SIGTERM/SIGINT, seconds to answer and close connections before "
         "cutting the rest.", seconds],
        ["workers", None, 0,
         "Serve HTTP from this many worker processes sharing the port "
         "(0: serve in this process).", workerCount],
        # Issue 9, streams and publishing: bearer-token guessing.
        ["publish-auth-failures", None, defaults.DEFAULT_AUTH_FAILURES,
         "Unknown bearer tokens a client address may present per minute; "
         "past it, 429 with Retry-After without a check.", positiveInt],
        # Issue 12, relays.
        ["upstream-silence", None, defaults.DEFAULT_UPSTREAM_SILENCE,
         "With --upstream: give up a stream that says nothing, not even a "
         "heartbeat, for this many seconds, and fail over.", seconds],
        ["upstream-token-file", None, None,
         "With --upstream: send the bearer tokens in this file to the upstreams "
         "(lines TOKEN, for every upstream, or URL TOKEN; see docs/relays.md)."],
        # Issue 12, the Redis bus.
        ["bus", None, None,
         "Share every datum with the other servers on this Redis, "
         "redis://HOST:PORT[/DB], through a Redis Stream that also keeps the "
         "history; with Redis Sentinel, redis+sentinel://HOST:PORT[,HOST:PORT"
         "...]/SERVICE[/DB] names the sentinels and the master's name "
         "(see docs/bus.md)."],
        ["bus-history", None, defaults.DEFAULT_BUS_HISTORY,
         "With --bus: entries the stream keeps (XADD MAXLEN ~), and reads at "
         "most at start.", positiveInt],
        ["bus-timeout", None, defaults.DEFAULT_BUS_TIMEOUT,
         "With --bus: seconds Redis may take to answer; at start, the HTTP "
         "port waits this long at most for the history.", seconds],
        # Issue 13, the MQTT bridge.
        ["mqtt", None, None,
         "Bridge with the MQTT broker at mqtt://[USER[:PASSWORD]@]HOST[:PORT] "
         "(port 1883) or mqtts://... (TLS, port 8883): see --mqtt-topic and "
         "--mqtt-publish, and docs/mqtt.md."],
        ["mqtt-password-file", None, None,
         "With --mqtt: the broker's USER:PASSWORD (or PASSWORD, the user "
         "being the URL's) in this file, kept out of the process list."],
        ["mqtt-ca-file", None, None,
         "With --mqtt mqtts://: the CA certificates (PEM) the broker's "
         "certificate is checked against (default: the system's)."],
        ["mqtt-cert-file", None, None,
         "With --mqtt mqtts://: this client certificate (PEM) for brokers "
         "that ask for one."],
        ["mqtt-key-file", None, None,
         "With --mqtt-cert-file: its private key (PEM), if not in the "
         "certificate file."],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name, dispatcher in self._dispatch.items():
            if isinstance(dispatcher, usage.CoerceParameter):
                dispatcher.coerce = _naming(name, dispatcher.coerce)

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse the options.  Under twistd (when this is its C{artcast}
        subcommand, with a C{parent}), a mistake is written to standard error
        as one line, and the process exits with status 1: twistd itself would
        print the whole help before it (L{twisted.application.app.run}).
        The help is printed by C{--help} only.

        @raise SystemExit: Under twistd, on a mistake.
        @raise usage.UsageError: Otherwise, on a mistake.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            if self.parent is None:
                raise
            text = str(error)
            if text.startswith(("No such option", "option ")):
                text += " (twistd artcast --help lists the options)"
            sys.stderr.write(f"twistd artcast: {text}\n")
            sys.stderr.flush()
            raise SystemExit(1)

    def opt_version(self) -> None:
        """
        Display Artcast's and Twisted's versions and exit.
        """
        from importlib.metadata import PackageNotFoundError, version

        from twisted import copyright

        try:
            ours = version("artcast")
        except PackageNotFoundError:
            ours = "unknown (not installed: pip install -e .)"
        print(f"Artcast version: {ours}")
        print(f"Twisted version: {copyright.version}")
        sys.exit(0)

    def opt_mqtt_topic(self, topicFilter: str) -> None:
        """
        With --mqtt: take the messages of this MQTT topic filter ('+' one
        level, '#' the rest) as datums, topic -> key, payload -> JSON value
        when it parses, else text. Repeat for more.
        """
        from artcast.server.feeds.mqtt import checkTopicFilter

        try:
            checkTopicFilter(topicFilter)
        except ValueError as error:
            raise usage.UsageError(f"--mqtt-topic: {error}")
        self.setdefault("mqtt-topic", []).append(topicFilter)

    def opt_mqtt_publish(self, pattern: str) -> None:
        """
        With --mqtt: publish every datum of a key this pattern ('*' one
        level, '...' the rest) matches to the broker, topic = key, payload =
        the value's JSON, retained. Repeat for more.
        """
        from artcast.wire import BadKey, validateKey

        try:
            validateKey(pattern, allowWildcards=True)
        except BadKey as error:
            raise usage.UsageError(f"--mqtt-publish {pattern!r}: {error}")
        self.setdefault("mqtt-publish", []).append(pattern)

    def opt_upstream(self, url: str) -> None:
        """
        Follow the Artcast server whose root is URL (e.g.
        http://10.0.0.5:8888/): serve every key it serves, with the same ids.
        Repeat for failover, in order of preference (see docs/relays.md).
        """
        from artcast.server.feeds.upstream import upstreamURL

        try:
            root = upstreamURL(url)
        except ValueError as error:
            raise usage.UsageError(f"--upstream: {error}")
        upstreams = self.setdefault("upstream", [])
        if root in upstreams:
            raise usage.UsageError(f"--upstream {root} is given twice")
        upstreams.append(root)

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
        if self.parent is not None:
            # Under twistd, the endpoint is built right after: build it now,
            # so that a mistake is an answer in one line, not a traceback.
            problem = endpointProblem(self["client-port"])
            if problem is not None:
                raise usage.UsageError(
                    f"--client-port {self['client-port']}: not a usable endpoint "
                    f"({problem}); {_ENDPOINT_HINT}"
                )
        from artcast.server.feeds.publish import parseTokenFile
        from artcast.server.stats import EVERYONE, Networks

        self.setdefault("source-keys", [])
        self.setdefault("upstream", [])
        if self["upstream-multicast"] and not self["upstream"]:
            raise usage.UsageError("--upstream-multicast needs --upstream")
        tokenFile = self["upstream-token-file"]
        self["upstream-tokens"] = {}
        if tokenFile is not None:
            from artcast.server.feeds.upstream import parseUpstreamTokens

            if not self["upstream"]:
                raise usage.UsageError("--upstream-token-file needs --upstream")
            try:
                with open(tokenFile, "rb") as tokens:
                    self["upstream-tokens"] = parseUpstreamTokens(
                        tokens.read(1 << 20), self["upstream"]
                    )
            except (OSError, ValueError) as error:
                raise usage.UsageError(f"--upstream-token-file {tokenFile}: {error}")
        if self["bus"] is not None:
            from artcast.server.feeds.bus import parseBusURL

            try:
                self["bus"] = parseBusURL(self["bus"]).url()
            except ValueError as error:
                raise usage.UsageError(f"--bus: {error}")
            if self["workers"]:
                raise usage.UsageError(
                    "--bus cannot be used with --workers yet: run one server per "
                    "core on the bus instead, each on its own --client-port"
                )
        self._checkMQTT()
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
        from artcast.server.workers import checkOptions, interpreterProblem

        checkOptions(self)
        parent = self.parent
        if self["workers"] and parent is not None and parent.get("uid") is not None:
            problem = interpreterProblem(parent["uid"], parent.get("gid"))
            if problem is not None:
                raise usage.UsageError(
                    f"--workers {self['workers']} --uid {parent['uid']}: {problem}"
                )

    def _checkMQTT(self) -> None:
        """
        Read C{--mqtt} and its options into C{self["mqtt-address"]} (an
        L{artcast.server.feeds.mqtt.MQTTAddress}, or L{None}).
        """
        self.setdefault("mqtt-topic", [])
        self.setdefault("mqtt-publish", [])
        self["mqtt-address"] = None
        url = self["mqtt"]
        if url is None:
            for name in ("mqtt-topic", "mqtt-publish", "mqtt-password-file",
                         "mqtt-ca-file", "mqtt-cert-file", "mqtt-key-file"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --mqtt")
            return
        from artcast.server.feeds.mqtt import parseMQTTURL, readPasswordFile

        try:
            address = parseMQTTURL(url)
        except ValueError as error:
            raise usage.UsageError(f"--mqtt: {error}")
        if not self["mqtt-topic"] and not self["mqtt-publish"]:
            raise usage.UsageError(
                "--mqtt needs --mqtt-topic FILTER or --mqtt-publish PATTERN (or both)"
            )
        if self["workers"]:
            raise usage.UsageError("--mqtt cannot be used with --workers yet")
        path = self["mqtt-password-file"]
        if path is not None:
            try:
                with open(path, "rb") as secret:
                    username, password = readPasswordFile(secret.read(4096))
            except (OSError, ValueError) as error:
                raise usage.UsageError(f"--mqtt-password-file {path}: {error}")
            address = address.withPassword(username, password)
            if not address.username:
                raise usage.UsageError(
                    f"--mqtt-password-file {path}: no user, in the file (USER:PASSWORD) "
                    "or in the URL (mqtt://USER@HOST)"
                )
        for name in ("mqtt-ca-file", "mqtt-cert-file", "mqtt-key-file"):
            path = self[name]
            if path is None:
                continue
            if not address.tls:
                raise usage.UsageError(f"--{name} needs --mqtt mqtts://...")
            if not FilePath(path).isfile():
                raise usage.UsageError(f"--{name} {path}: no such file")
        if self["mqtt-key-file"] and not self["mqtt-cert-file"]:
            raise usage.UsageError("--mqtt-key-file needs --mqtt-cert-file")
        self["mqtt-address"] = address


def makeService(options: Mapping[str, Any], reactor: Any = None) -> MultiService:
    """
    Build what C{twistd artcast} runs: the server
    (L{artcast.server.service.makeService}, an
    L{artcast.server.service.ArtcastService}) or, with C{--workers}, the
    supervisor of the worker processes
    (L{artcast.server.workers.makeSupervisor}).

    @param reactor: the reactor; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    if options.get("workers"):
        from artcast.server.workers import makeSupervisor

        return makeSupervisor(options, reactor)
    from artcast.server import service

    return service.makeService(options, reactor)
