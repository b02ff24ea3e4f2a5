# -*- test-case-name: tests.test_tap -*-
"""
The defaults of C{twistd artcast}'s options, in one place.

L{artcast.server.tap.Options} shows and uses them, and the modules that
enforce them (the store, the connections, the logs, shutdown, publishing, the
wire's reassembler and source tracker) take them from here as their own
defaults, so an option's default and what a module does when given nothing
cannot drift apart.  This module imports nothing, so that C{twistd artcast
--help} stays cheap; see C{docs/operations.md} for what each one bounds.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CLIENT_PORT",
    "DEFAULT_BACKLOG",
    "DEFAULT_GROUP",
    "DEFAULT_DATA_PORT",
    "DEFAULT_REGISTER_PORT",
    "DEFAULT_INTERFACE",
    "SILENCE_WARNING",
    "DEFAULT_LOG_SIZE",
    "DEFAULT_LOG_COUNT",
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_AGE",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_SOURCE_MAX_SKEW",
    "MAX_SOURCES",
    "FRAGMENT_MEMORY",
    "DEFAULT_PUBLISH_TTL",
    "DEFAULT_REPAIR",
    "DEFAULT_NACK_BACKOFF",
    "DEFAULT_REPAIR_WAIT",
    "DEFAULT_NACK_RETRIES",
    "DEFAULT_REORDER_WAIT",
    "DEFAULT_MAX_HELD",
    "DEFAULT_HOLD_MEMORY",
    "DEFAULT_AUTH_FAILURES",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_TCP_KEEPALIVE",
    "DEFAULT_RETRY_AFTER",
    "DEFAULT_MAX_OUTPUT_BUFFER",
    "DEFAULT_MAX_OUTPUT_TOTAL",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_STREAM_HEARTBEAT",
    "DEFAULT_UPSTREAM_SILENCE",
    "DEFAULT_UPSTREAM_BACKOFF",
    "DEFAULT_UPSTREAM_MAX_BACKOFF",
    "DEFAULT_UPSTREAM_PROBE",
    "DEFAULT_UPSTREAM_REGISTRATIONS",
    "DEFAULT_UPSTREAM_ECHO_MEMORY",
    "DEFAULT_BUS_HISTORY",
    "DEFAULT_BUS_TIMEOUT",
    "DEFAULT_BUS_BACKOFF",
    "DEFAULT_BUS_MAX_BACKOFF",
    "DEFAULT_BUS_SEEN_TTL",
    "DEFAULT_BUS_TRIM_INTERVAL",
    "DEFAULT_BUS_OUTBOX",
    "DEFAULT_BUS_OUTBOX_BYTES",
    "DEFAULT_MQTT_BACKOFF",
    "DEFAULT_MQTT_MAX_BACKOFF",
    "DEFAULT_MQTT_KEEPALIVE",
    "DEFAULT_MQTT_OUTBOX",
    "DEFAULT_MQTT_OUTBOX_BYTES",
]

# --- where datums come from and clients connect -----------------------------

#: The original Artcast's HTTP port (C{--client-port}).
DEFAULT_CLIENT_PORT = "tcp:8888"

#: The listen backlog given to TCP ports that do not name one: Twisted's
#: default of 50 overflows when hundreds of clients reconnect at once (a
#: server restart, a load balancer moving clients).
DEFAULT_BACKLOG = 1024

#: The original Artcast's multicast group and ports, for datums and for
#: registrations (C{--data-group}, C{--data-port}, C{--register-group},
#: C{--register-port}); the sources of L{artcast.source} send there.
DEFAULT_GROUP = "224.1.1.1"
DEFAULT_DATA_PORT = 5007
DEFAULT_REGISTER_PORT = 5008

#: The local address whose interface joins the groups (C{--interface}):
#: the one the routing table picks.
DEFAULT_INTERFACE = "0.0.0.0"

#: Seconds after start with no datagram heard on the data group before the
#: error log says so, once, with how a source on this host reaches the
#: server (docs/running.md, "Nothing arrives?").
SILENCE_WARNING = 60.0

# --- logs (L{artcast.server.logs}) ------------------------------------------

#: The size in bytes at which a log file is rotated.
DEFAULT_LOG_SIZE = 10_000_000

#: The number of rotated files kept for each log.
DEFAULT_LOG_COUNT = 100

# --- the store (L{artcast.server.store.KeyStore}) ---------------------------

DEFAULT_HISTORY = 100
DEFAULT_HISTORY_AGE = 3600.0
DEFAULT_MAX_KEYS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# --- what sources send (L{artcast.wire}, L{artcast.server.feeds}) -----------

#: The largest value accepted, in bytes of JSON (C{--max-value-size}); the
#: body of a C{POST} is bounded by it too.
DEFAULT_MAX_VALUE_SIZE = 1_000_000

#: With signing keys: the freshness window, in seconds, of a datum's send
#: time (C{--source-max-skew}).
DEFAULT_SOURCE_MAX_SKEW = 30.0

#: The default number of sources a L{artcast.server.feeds.reception.SourceTracker} remembers
#: (C{--max-sources}).
MAX_SOURCES = 10_000

#: The default bound on the bytes held by values being put together by a
#: L{artcast.server.feeds.reception.Reassembler} (C{--fragment-memory}).
FRAGMENT_MEMORY = 16_000_000

#: The multicast TTL of datums published over HTTP (C{--publish-ttl}).
DEFAULT_PUBLISH_TTL = 1

#: Failed token checks a client address may make per minute before it is
#: answered C{429} without a check (C{--publish-auth-failures}).
DEFAULT_AUTH_FAILURES = 10

# --- repair (L{artcast.server.feeds.repair}) -------------------------------

#: Whether a server asks repairing sources for what it missed (C{--no-repair}
#: turns it off).
DEFAULT_REPAIR = True

#: The longest random back-off, in seconds, before a server NACKs a hole of a
#: repairing source: the time another server's NACK (heard as the source's
#: NCF) has to make this one unnecessary.
DEFAULT_NACK_BACKOFF = 0.02

#: The first wait, in seconds, for a repair after a NACK or an NCF; each
#: further round waits 1.25 times longer, at most 1 s.
DEFAULT_REPAIR_WAIT = 0.04

#: NACK rounds for a hole before it is declared unrecoverable.
DEFAULT_NACK_RETRIES = 16

#: Seconds a hole of a source that does not repair (or of every source with
#: C{--no-repair}) is waited for, reordered datagrams being this late at
#: most, before it is declared lost.
DEFAULT_REORDER_WAIT = 0.05

#: Datums held back per source while an earlier one is missing (and the
#: most missing sequence numbers a source may have); a larger gap is
#: declared unrecoverable at once.
DEFAULT_MAX_HELD = 10_000

#: Bytes all held-back datums may cost together.
DEFAULT_HOLD_MEMORY = 16 * 1024 * 1024

# --- connections (L{artcast.server.connections}) ----------------------------

DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_HEADER_TIMEOUT = 10.0
#: Longer than the 60 s idle timeout of most load balancers, so that the
#: balancer, not the server, closes an idle keep-alive connection (a server
#: closing first races with the balancer's next request on it).
DEFAULT_IDLE_TIMEOUT = 75.0
#: A request body (a C{POST}'s value) must be in within this many seconds
#: of its head: at least 33 KB/s for a value of the default
#: C{--max-value-size}.
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_TCP_KEEPALIVE = 60.0
DEFAULT_RETRY_AFTER = 5
#: Bytes a connection may have written and not yet sent; past it, it is
#: aborted.  Above the most a client that reads can have waiting: one
#: stream message of C{--max-value-size} plus Twisted's own 64 KiB buffer.
DEFAULT_MAX_OUTPUT_BUFFER = 2 * 1024 * 1024
#: Bytes all connections together may have written and not yet sent; past
#: it, the connections holding the most are aborted.  256 MiB: a quarter of
#: the smallest Raspberry Pi that runs a server for years (1 GiB), and far
#: above what clients that read hold (a reading client's queue empties in
#: milliseconds), so it is reached only when many clients do not read: 128
#: at the full C{--max-output-buffer}, or about 2,000 that asked for a large
#: answer (each holds at most Twisted's buffer and one piece, 128 KiB).
DEFAULT_MAX_OUTPUT_TOTAL = 256 * 1024 * 1024

# --- shutdown (L{artcast.server.shutdown}) ----------------------------------

#: Seconds to answer and close connections on SIGTERM before cutting the rest.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

# --- relays (L{artcast.server.feeds.upstream}) ------------------------------

#: Seconds between the heartbeats of a stream (an SSE comment, an empty
#: NDJSON line, a WebSocket ping): L{artcast.server.outlets.streams}'
#: C{DEFAULT_HEARTBEAT} is this.
DEFAULT_STREAM_HEARTBEAT = 15.0

#: Seconds an upstream's stream may say nothing, not even a heartbeat,
#: before the relay gives it up and fails over (C{--upstream-silence}):
#: three heartbeats.
DEFAULT_UPSTREAM_SILENCE = 3 * DEFAULT_STREAM_HEARTBEAT

#: The first wait, in seconds, before a relay tries the next upstream after
#: a failure; it doubles after each failure, up to the maximum, and is back
#: to the first once a stream is open.
DEFAULT_UPSTREAM_BACKOFF = 0.5
DEFAULT_UPSTREAM_MAX_BACKOFF = 10.0

#: Seconds between a relay's probes of the upstreams it prefers to the one
#: it follows; it goes back to the first that answers.
DEFAULT_UPSTREAM_PROBE = 5.0

#: Seconds between reads of the upstream's registrations (C{/artcasts}),
#: as often as sources register.
DEFAULT_UPSTREAM_REGISTRATIONS = 30.0

#: How many of the last datums a relay sent on to its data group
#: (C{--upstream-multicast}) it remembers, to tell its own datagrams heard
#: back through the multicast loop from replays.
DEFAULT_UPSTREAM_ECHO_MEMORY = 512

# --- the Redis bus (L{artcast.server.feeds.bus}) ------------------------------

#: The entries the bus's stream keeps (C{--bus-history}; C{XADD ... MAXLEN ~}):
#: the default C{--history} (100 a key) for 1,000 busy keys.
DEFAULT_BUS_HISTORY = 100_000

#: Seconds Redis may take to answer at start before the server serves
#: without the bus's history, and to answer any command (C{--bus-timeout}).
DEFAULT_BUS_TIMEOUT = 5.0

#: The first wait, in seconds, before trying Redis again after a failure;
#: doubled after each failure up to the maximum.
DEFAULT_BUS_BACKOFF = 0.5
DEFAULT_BUS_MAX_BACKOFF = 10.0

#: Seconds Redis remembers that a datum's id was added to the stream (the
#: C{artcast:seen:<id>} keys), so that servers that heard the same datagram
#: add it once.
DEFAULT_BUS_SEEN_TTL = 60.0

#: Seconds between trims of the stream by age (C{XTRIM ... MINID ~}).
DEFAULT_BUS_TRIM_INTERVAL = 60.0

#: Local datums held while Redis is away, at most, in entries and bytes.
DEFAULT_BUS_OUTBOX = 10_000
DEFAULT_BUS_OUTBOX_BYTES = 16 * 1024 * 1024

# --- the MQTT bridge (--mqtt) ------------------------------------------------

#: The first wait, in seconds, before connecting to the broker again after
#: it went away or refused; doubled after each failure up to the maximum.
DEFAULT_MQTT_BACKOFF = 0.5
DEFAULT_MQTT_MAX_BACKOFF = 10.0

#: Seconds between MQTT keep-alive pings when nothing else is sent.
DEFAULT_MQTT_KEEPALIVE = 30

#: Messages waiting to be published while the broker is away, at most, in
#: messages and bytes; past either the oldest is dropped.
DEFAULT_MQTT_OUTBOX = 10_000
DEFAULT_MQTT_OUTBOX_BYTES = 16 * 1024 * 1024
