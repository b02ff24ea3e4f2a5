# -*- test-case-name: tests.test_stats -*-
"""
What an operator sees: C{/stats} (HTML and JSON) and C{/metrics}
(Prometheus text format), gathered by L{ServerStatistics} from the
L{Stats} counters, the store and the parts that have figures of their own.

Nothing here is on the path of a datum: the figures are counters kept where
things happen, read only when somebody asks.
"""

from __future__ import annotations

import html
import ipaddress
import os
import resource
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.exposition import generate_latest
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from artcast.server.store import KeyStore


class Stats:
    """
    Counters of what arrived and what was dropped, for C{/stats}.

    @ivar dropped: datagrams dropped, by reason.
    @ivar sources: what the source tracker said of stamped datums, by verdict
        (C{"reset"} among them), and C{"forgotten"}: sources it forgot to
        stay within its bound.
    """

    def __init__(self) -> None:
        self.datagrams = 0
        self.datums = 0
        self.registrations = 0
        self.dropped: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.missed = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


class Meter:
    """
    A rate over the last minute, from a counter sampled when asked.

    @param read: returns the counter's current value.
    """

    def __init__(
        self, clock: IReactorTime, read: Callable[[], int], window: float = 60.0
    ) -> None:
        self.clock = clock
        self.read = read
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()
        # The first look then gives the rate since the meter was made, not 0.
        self.sample()

    def sample(self) -> None:
        now = self.clock.seconds()
        self._samples.append((now, self.read()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self) -> float:
        """
        Events per second since the oldest sample in the window.
        """
        self.sample()
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        if end <= start:
            return 0.0
        return (last - first) / (end - start)


def residentMemory() -> int:
    """
    This process's resident memory in bytes (the peak where the current
    figure cannot be read).
    """
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Networks:
    """
    The networks allowed to see C{/stats} and C{/metrics}.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    @classmethod
    def parse(cls, text: str) -> Networks:
        """
        Parse a comma-separated list of networks, e.g.
        C{127.0.0.0/8,10.0.0.0/8,::1}.

        @raise ValueError: if one is not a network.
        """
        return cls(part.strip() for part in text.split(",") if part.strip())

    def allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            # Not an IP peer: a UNIX socket, reached only from this machine.
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


#: Everyone, the default.
EVERYONE = "0.0.0.0/0,::/0"


class Part(Protocol):
    """
    A part of the server that has figures of its own for C{/stats}: the
    connections, the streams, a feed.
    """

    def statistics(self) -> dict[str, Any]:
        """
        The part's figures, by name, in the order C{/stats} shows them.
        """


class ServerStatistics:
    """
    What C{/stats}, C{/stats.json} and C{/metrics} show, gathered when
    somebody asks: the counters of what arrived, the store's figures, then
    the figures of each part in the order they were added, then the figures
    naming this process.

    The parts are added (L{add}) rather than all given at once because some
    are made from what is made from the figures: the connections come from
    the site, the site serves the application, and the application shows
    these figures.  A feed joins the same way.

    @ivar counters: what arrived and what was dropped (L{Stats}).
    @ivar store: the L{KeyStore}, for the keys held and the requests waiting.
    @ivar parts: the parts whose figures follow the store's, in order.
    @ivar identity: figures naming this process: a worker's C{worker} and
        C{pid} (L{artcast.server.workers.Worker.identity}); none for a
        single server.
    """

    def __init__(
        self,
        clock: IReactorTime,
        counters: Stats,
        store: KeyStore,
        parts: Iterable[Part] = (),
        identity: Mapping[str, Any] | None = None,
        listening: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """
        @param listening: gives where the multicast groups listen and what
            they heard (L{artcast.server.feeds.multicast.Listening.figures}),
            shown under C{listening} after the parts' figures.
        """
        self.listening = listening
        self.clock = clock
        self.counters = counters
        self.store = store
        self.parts: list[Part] = list(parts)
        self.identity: dict[str, Any] = dict(identity or {})
        self.started = clock.seconds()
        self._datumRate = Meter(clock, lambda: counters.datums)

    def add(self, part: Part) -> None:
        """
        Show C{part}'s figures after those of the parts added before it.
        """
        self.parts.append(part)

    def figures(self) -> dict[str, Any]:
        """
        What C{/stats} shows.
        """
        counters = self.counters
        store = self.store
        figures = {
            "uptime": self.clock.seconds() - self.started,
            "waiting": store.listening,
            "keys": len(store),
            "datagrams": counters.datagrams,
            "datums": counters.datums,
            "datums_per_second": round(self._datumRate.rate(), 3),
            "registrations": counters.registrations,
            "missed": counters.missed,
            "memory": residentMemory(),
            "keys_evicted": store.evicted,
            "dropped": dict(counters.dropped),
            "sources": dict(counters.sources),
            "waiting_per_key": store.waitingByPattern(),
        }
        figures.update(store.statistics())
        for part in self.parts:
            figures.update(part.statistics())
        if self.listening is not None:
            figures["listening"] = dict(self.listening())
        figures.update(self.identity)
        return figures


def isoTime(when: float) -> str:
    """
    C{when}, seconds since the epoch, as an ISO 8601 time in UTC to the
    second, e.g. C{2026-12-05T15:27:30Z}.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def listeningText(group: Mapping[str, Any]) -> str:
    """
    One line on a group of C{/stats}' C{listening} figures
    (L{artcast.server.feeds.multicast.MulticastServerProtocol.figures}):
    where it listens and when it last heard a datagram, e.g.
    C{datums on 224.1.1.1:5007 via 127.0.0.1: 12 datagrams, the last
    3 s ago (2026-12-05T15:27:30Z)}.
    """
    where = (
        f"{group['carries']} on {group['group']}:{group['port']} via {group['interface']}"
    )
    if not group["datagrams"]:
        return f"{where}: nothing heard yet"
    ago = group.get("last_datagram_ago")
    when = group.get("last_datagram")
    age = "" if ago is None else f"{ago:.0f} s ago "
    return (
        f"{where}: {group['datagrams']} datagram{'s' if group['datagrams'] != 1 else ''}, "
        f"the last {age}({when})"
    )


def countRejected(request: Any, reason: str) -> None:
    """
    Count a refused request (or a connection closed for what its client
    sent) under C{reason} in its site's C{rejected} counter
    (L{artcast.server.connections.LimitedSite}; C{/stats.json} C{rejected},
    C{/metrics} C{artcast_rejected}); nothing for a site without one.
    """
    site = getattr(request, "site", None)
    if site is None:
        site = getattr(getattr(request, "channel", None), "site", None)
    rejected = getattr(site, "rejected", None)
    if rejected is not None:
        rejected[reason] += 1


class ArtcastCollector:
    """
    A Prometheus collector reading the figures of C{/stats} at scrape time.

    @param read: returns the dictionary C{/stats.json} shows.
    """

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Any]:
        stats = self.read()
        yield GaugeMetricFamily(
            "artcast_uptime_seconds", "Seconds since the server started.",
            value=stats["uptime"],
        )
        yield GaugeMetricFamily(
            "artcast_waiting_requests", "Long polls and streams waiting for datums.",
            value=stats["waiting"],
        )
        yield GaugeMetricFamily(
            "artcast_keys", "Keys held.", value=stats["keys"]
        )
        yield GaugeMetricFamily(
            "artcast_resident_memory_bytes", "Resident memory of the server process.",
            value=stats["memory"],
        )
        for name, help in (
            ("datagrams", "Datagrams received on the data group."),
            ("datums", "Datums published."),
            ("registrations", "Registrations received."),
            ("missed", "Datums sources sent that never arrived (sequence gaps)."),
        ):
            yield CounterMetricFamily(
                f"artcast_{name}", help, value=stats[name]
            )
        for name, help, label, values in (
            ("dropped", "Datagrams dropped, by reason.", "reason", stats["dropped"]),
            ("rejected", "Requests refused, by reason.", "reason", stats.get("rejected", {})),
            ("sources", "Stamped datagrams by what the source tracker said.", "verdict",
             stats["sources"]),
        ):
            family = CounterMetricFamily(f"artcast_{name}", help, labels=[label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            yield family
        for name, help, kind in (
            ("store_bytes", "Bytes the datums, keys and metadata held cost.",
             GaugeMetricFamily),
            ("store_bytes_max", "The store's budget in bytes (--max-store-bytes).",
             GaugeMetricFamily),
            ("history_forgotten", "Datums forgotten from history to stay in the "
             "store's budget.", CounterMetricFamily),
            ("keys_evicted", "Keys forgotten for --max-keys or the store's budget.",
             CounterMetricFamily),
            ("store_refused", "Datums and registrations larger than the store's "
             "whole budget.", CounterMetricFamily),
        ):
            if name in stats:
                yield kind(f"artcast_{name}", help, value=stats[name])
        for name, help in (
            ("connections", "Client connections open."),
            ("connections_refusing", "Connections being answered 503."),
        ):
            if name in stats:
                yield GaugeMetricFamily(f"artcast_{name}", help, value=stats[name])
        if "published" in stats:
            yield CounterMetricFamily(
                "artcast_published", "Datums published over HTTP.",
                value=stats["published"],
            )
        repair = stats.get("repair")
        if repair is not None:
            yield from _repairMetrics(repair)
        upstream = stats.get("upstream")
        if upstream is not None:
            yield from _upstreamMetrics(upstream)
        bus = stats.get("bus")
        if bus is not None:
            yield from _busMetrics(bus)
        mqtt = stats.get("mqtt")
        if mqtt is not None:
            yield from _mqttMetrics(mqtt)
        listening = stats.get("listening")
        if listening:
            heard = CounterMetricFamily(
                "artcast_group_datagrams", "Datagrams heard on each multicast group.",
                labels=["group", "port", "carries"],
            )
            age = GaugeMetricFamily(
                "artcast_group_last_datagram_age_seconds",
                "Seconds since the last datagram heard on each multicast group "
                "(absent before the first).",
                labels=["group", "port", "carries"],
            )
            for figures in listening.values():
                labels = [figures["group"], str(figures["port"]), figures["carries"]]
                heard.add_metric(labels, figures["datagrams"])
                if figures.get("last_datagram_ago") is not None:
                    age.add_metric(labels, figures["last_datagram_ago"])
            yield heard
            yield age
        for name, help, kind in (
            ("streams_open", "Streams open, by kind.", GaugeMetricFamily),
            ("streams_opened", "Streams opened, by kind.", CounterMetricFamily),
            ("streams_dropped", "Streams dropped for reading too slowly, by kind.",
             CounterMetricFamily),
        ):
            family = kind(f"artcast_{name}", help, labels=["kind"])
            for value, count in sorted(stats.get(name, {}).items()):
                family.add_metric([value], count)
            yield family


#: The per-source counters of repair: C{/stats} name, metric name, help.
_REPAIR_COUNTERS = (
    ("repairGaps", "repair_gaps", "Datums of repairing sources found missing, "
     "by source (without the label: all sources, forgotten ones included)."),
    ("nacksSent", "nacks_sent", "NACK datagrams sent, by source."),
    ("nacksSuppressed", "nacks_suppressed", "NACKs not sent because another "
     "server's was confirmed first (an NCF), by source."),
    ("repairsReceived", "repairs_received", "Datums that arrived after a NACK or "
     "an NCF for them, by source."),
    ("unrecoverable", "unrecoverable", "Datums declared unrecoverable, by source."),
)


def _repairMetrics(repair: dict[str, Any]) -> Iterable[Any]:
    """
    The metrics of C{/stats}' C{"repair"} figures.
    """
    sources = repair.get("sources", {})
    for figure, name, help in _REPAIR_COUNTERS:
        family = CounterMetricFamily(f"artcast_{name}", help, labels=["source"])
        family.add_metric([], repair[figure])
        for source, counts in sorted(sources.items()):
            family.add_metric([source], counts[figure])
        yield family
    yield CounterMetricFamily(
        "artcast_reordered", "Datums that filled a hole without a NACK (reordered).",
        value=repair["reordered"],
    )
    yield GaugeMetricFamily(
        "artcast_repair_held", "Datums held back until an earlier one arrives.",
        value=repair["repairHeld"],
    )
    yield GaugeMetricFamily(
        "artcast_repair_enabled", "1 when repair is on, 0 with --no-repair.",
        value=1 if repair["enabled"] else 0,
    )
    latency = repair["repairLatency"]
    family = GaugeMetricFamily(
        "artcast_repair_latency_seconds",
        "Time from a hole found to its repair, over the last 1,024 repairs.",
        labels=["quantile"],
    )
    for figure, quantile in (("p50", "0.5"), ("p99", "0.99")):
        if latency.get(figure) is not None:
            family.add_metric([quantile], latency[figure])
    yield family


def _upstreamMetrics(upstream: dict[str, Any]) -> Iterable[Any]:
    """
    The metrics of C{/stats}' C{"upstream"} figures (a relay's).
    """
    for figure, name, help in (
        ("upstreamDatums", "upstream_datums", "Datums taken from upstreams."),
        ("upstreamDuplicates", "upstream_duplicates",
         "Datums from upstreams this server had already."),
        ("upstreamGaps", "upstream_gaps", "Gap markers upstreams sent."),
        ("upstreamFutureIds", "upstream_future_ids",
         "Datums from upstreams with ids from the future, not resumed from."),
        ("upstreamReconnects", "upstream_reconnects",
         "Attempts to open a stream again after a failure."),
        ("upstreamFailovers", "upstream_failovers",
         "Streams opened to another upstream than the one followed before."),
        ("upstreamSentOn", "upstream_sent_on",
         "Datums from upstreams sent on to the data group (--upstream-multicast)."),
        ("upstreamEchoes", "upstream_echoes",
         "This relay's own sent-on datagrams heard back on the data group."),
        ("upstreamSendFailures", "upstream_send_failures",
         "Datums from upstreams that could not be sent on to the data group."),
    ):
        yield CounterMetricFamily(f"artcast_{name}", help, value=upstream[figure])
    family = CounterMetricFamily(
        "artcast_upstream_dropped", "Lines from upstreams dropped, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(upstream["upstreamDropped"].items()):
        family.add_metric([reason], count)
    yield family
    connects = CounterMetricFamily(
        "artcast_upstream_connects", "Streams opened, by upstream.", labels=["url"]
    )
    failures = CounterMetricFamily(
        "artcast_upstream_failures",
        "Refusals, ends, breaks and silences, by upstream.", labels=["url"],
    )
    authFailures = CounterMetricFamily(
        "artcast_upstream_auth_failures",
        "Answers 401 or 403 (a token wanted or refused), by upstream.", labels=["url"],
    )
    shutdowns = CounterMetricFamily(
        "artcast_upstream_shutdowns",
        "Streams the upstream ended saying it was shutting down, by upstream.",
        labels=["url"],
    )
    following = GaugeMetricFamily(
        "artcast_upstream_following",
        "1 for the upstream followed (or tried), 0 for the others.", labels=["url"],
    )
    for url, counts in sorted(upstream["upstreams"].items()):
        connects.add_metric([url], counts["upstreamConnects"])
        failures.add_metric([url], counts["upstreamFailures"])
        authFailures.add_metric([url], counts["upstreamAuthFailures"])
        shutdowns.add_metric([url], counts["upstreamShutdowns"])
        following.add_metric([url], 1 if url == upstream["url"] else 0)
    yield connects
    yield failures
    yield authFailures
    yield shutdowns
    yield following
    yield GaugeMetricFamily(
        "artcast_upstream_streaming", "1 while a stream from an upstream is open.",
        value=1 if upstream["state"] == "streaming" else 0,
    )


def _busMetrics(bus: dict[str, Any]) -> Iterable[Any]:
    """
    The metrics of C{/stats}' C{"bus"} figures (C{--bus}).
    """
    for figure, name, help in (
        ("busAdded", "bus_added", "Datums this server added to the bus."),
        ("busSeen", "bus_seen",
         "Datums not added because another server (or this one) added them first."),
        ("busTaken", "bus_taken", "Datums taken from the bus."),
        ("busDuplicates", "bus_duplicates",
         "Datums from the bus this server had already."),
        ("busOwn", "bus_own", "This server's own entries read back from the bus."),
        ("busRegistrations", "bus_registrations", "Registrations taken from the bus."),
        ("busErrors", "bus_errors", "Redis commands that failed."),
        ("busDisconnects", "bus_disconnects", "Times the bus went down."),
        ("busOutboxDropped", "bus_outbox_dropped",
         "Local datums not added to the bus: the outbox was full."),
        ("busLoaded", "bus_loaded", "Entries read from the bus's history at start."),
        ("busV1Claimed", "bus_v1_claimed",
         "Version 1 datums this server claimed on the bus, and stamped."),
        ("busV1Copies", "bus_v1_copies",
         "Version 1 datums another server claimed first (taken from the bus)."),
        ("busStopUnsent", "bus_stop_unsent",
         "Outbox entries not added to the bus when the server stopped."),
    ):
        yield CounterMetricFamily(f"artcast_{name}", help, value=bus[figure])
    family = CounterMetricFamily(
        "artcast_bus_dropped", "Entries from the bus dropped, by reason.", labels=["reason"]
    )
    for reason, count in sorted(bus["busDropped"].items()):
        family.add_metric([reason], count)
    yield family
    family = CounterMetricFamily(
        "artcast_bus_v1_local",
        "Version 1 datums published without a claim on the bus, by why.",
        labels=["reason"],
    )
    for reason, count in sorted(bus["busV1Local"].items()):
        family.add_metric([reason], count)
    yield family
    yield GaugeMetricFamily(
        "artcast_bus_v1_waiting", "Version 1 datums waiting for their claim on the bus.",
        value=bus["busV1Waiting"],
    )
    yield GaugeMetricFamily(
        "artcast_bus_outbox", "Local datums waiting to be added to the bus.",
        value=bus["busOutbox"],
    )
    yield GaugeMetricFamily(
        "artcast_bus_up", "1 while the bus is up.", value=1 if bus["busState"] == "up" else 0
    )
    # The connection's (a RedisBus): the master's changes, with Sentinel.
    for figure, name, help in (
        ("busMasterChanges", "bus_master_changes",
         "Times the bus connected to another master (Redis Sentinel)."),
        ("busNotMaster", "bus_not_master",
         "Servers named by the sentinels that were not the master."),
    ):
        if figure in bus:
            yield CounterMetricFamily(f"artcast_{name}", help, value=bus[figure])


def _mqttMetrics(mqtt: dict[str, Any]) -> Iterable[Any]:
    """
    The metrics of C{/stats}' C{"mqtt"} figures (C{--mqtt}).
    """
    for figure, name, help in (
        ("mqttReceived", "mqtt_received", "MQTT messages received."),
        ("mqttTaken", "mqtt_taken", "MQTT messages taken in as datums."),
        ("mqttRetainedKnown", "mqtt_retained_known",
         "Retained MQTT messages whose value the key held already."),
        ("mqttPublished", "mqtt_published", "Datums published to the MQTT broker."),
        ("mqttBadTopic", "mqtt_bad_topic", "MQTT messages whose topic is not a key."),
        ("mqttNotUTF8", "mqtt_not_utf8", "MQTT messages whose payload is not UTF-8."),
        ("mqttTooLarge", "mqtt_too_large",
         "MQTT messages larger than --max-value-size."),
        ("mqttEmpty", "mqtt_empty", "MQTT messages with an empty payload (ignored)."),
        ("mqttEchoes", "mqtt_echoes",
         "MQTT messages an Artcast server published (ignored)."),
        ("mqttOutboxDropped", "mqtt_outbox_dropped",
         "Datums not published to the broker: the outbox was full."),
        ("mqttReconnects", "mqtt_reconnects", "Times the bridge connected again."),
        ("mqttDisconnects", "mqtt_disconnects", "Times the broker went away."),
        ("mqttConnectFailures", "mqtt_connect_failures", "Connects that failed."),
    ):
        yield CounterMetricFamily(f"artcast_{name}", help, value=mqtt[figure])
    yield GaugeMetricFamily(
        "artcast_mqtt_outbox", "Datums waiting to be published to the broker.",
        value=mqtt["mqttOutbox"],
    )
    yield GaugeMetricFamily(
        "artcast_mqtt_up", "1 while the bridge is connected to the broker.",
        value=1 if mqtt["mqttState"] == "up" else 0,
    )


def metricsText(read: Callable[[], dict[str, Any]]) -> bytes:
    """
    The Prometheus text exposition of the server's figures.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArtcastCollector(read))
    return generate_latest(registry)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 50rem;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
td, th { text-align: left; padding: .25rem .8rem; border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
"""


#: Figures in seconds, by name (and any name ending in C{_seconds}).
_SECONDS = frozenset({"uptime", "last_datagram_ago", "p50", "p99"})

#: Figures in bytes, by name (and any name with C{bytes} or C{Bytes} in it).
_BYTES = frozenset({"memory"})


def _bytes(count: float) -> str:
    """
    A count of bytes in B, KiB or MiB, e.g. C{512 B}, C{1.5 KiB}, C{64.0 MiB}.
    """
    if abs(count) < 1024:
        return f"{count:,.0f} B"
    if abs(count) < 1024 * 1024:
        return f"{count / 1024:,.1f} KiB"
    return f"{count / (1024 * 1024):,.1f} MiB"


def withUnit(name: str, value: Any) -> str:
    """
    A figure of C{/stats} as the HTML page shows it: seconds with C{s},
    bytes as B, KiB or MiB, rates with C{/s}; a table of figures as
    C{name: figure} pairs, each with its unit; anything else as it is.
    """
    if isinstance(value, dict):
        return ", ".join(f"{key}: {withUnit(str(key), item)}" for key, item in value.items())
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "none" if value is None else str(value)
    if name in _BYTES or "bytes" in name.lower():
        return _bytes(value)
    shown = f"{round(value, 3):,}" if isinstance(value, float) else f"{value:,}"
    if name in _SECONDS or name.endswith("_seconds"):
        return f"{shown} s"
    if name.endswith("_per_second") or name.endswith("PerSecond"):
        return f"{shown}/s"
    return shown


def _rows(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(
        f'<tr><th>{html.escape(str(name))}</th><td class="n">{html.escape(str(value))}</td></tr>'
        for name, value in items
    )
    return rows or '<tr><td colspan="2">none</td></tr>'


#: How often the C{/stats} page loads itself again, in seconds.
STATS_REFRESH = 2


def statsPage(stats: dict[str, Any]) -> bytes:
    """
    C{/stats} as an HTML page: each figure with its unit (L{withUnit}),
    loaded again every L{STATS_REFRESH} seconds.
    """
    scalars = [
        (name, withUnit(name, value))
        for name, value in stats.items()
        if not isinstance(value, (dict, list))
    ]
    sections = []
    for name, table in stats.items():
        if not isinstance(table, dict):
            continue
        if name == "listening":
            # Where the server listens, a line per group.
            rows = [
                (group, listeningText(figures)) for group, figures in table.items()
            ]
        elif all(
            isinstance(count, (int, float)) and not isinstance(count, bool)
            for count in table.values()
        ):
            # Counts: the largest first.
            rows = [
                (key, withUnit(key, count))
                for key, count in sorted(table.items(), key=lambda item: (-item[1], item[0]))
            ]
        else:
            rows = [(key, withUnit(key, value)) for key, value in sorted(table.items())]
        title = html.escape(name.replace("_", " ").capitalize())
        sections.append(f"<h2>{title}</h2><table>{_rows(rows)}</table>")
    # A meta refresh rather than a script fetching /stats.json: the units are
    # written in one place (here, not again in JavaScript), the page refreshes
    # without scripts, and an operator's page loaded every 2 s costs the
    # server next to nothing.  The price: when the server is down, the
    # browser shows its own error page and stops; reload once it is back.
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{STATS_REFRESH}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Artcast statistics</title><style>{_STYLE}</style></head>
<body><h1>Artcast statistics</h1>
<p>Loaded again every {STATS_REFRESH} s.</p>
<table>{_rows(scalars)}</table>
{"".join(sections)}
<p><a href="/stats.json">JSON</a> · <a href="/metrics">Prometheus</a> · <a href="/artcasts">Artcasts</a></p>
</body></html>
""".encode("utf-8")


__all__ = [
    "EVERYONE",
    "STATS_REFRESH",
    "ArtcastCollector",
    "Meter",
    "Networks",
    "Part",
    "ServerStatistics",
    "Stats",
    "countRejected",
    "isoTime",
    "listeningText",
    "metricsText",
    "residentMemory",
    "statsPage",
    "withUnit",
]
