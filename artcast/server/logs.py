# -*- test-case-name: tests.test_logs -*-
"""
Artcast's two logs: the access log and the error log.

The access log is the NCSA combined log exactly as Apache writes it
(C{LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-agent}i\\""}),
so that any log analyser reads it.  L{twisted.web.http.combinedLogFormatter}
is close but quotes the client address and escapes like Python's C{repr};
L{apacheCombinedLogFormatter} does what Apache's C{ap_escape_logitem} does.

The error log holds the events of level warn and above (and every failure),
as the text lines twistd writes.

Both go to standard error (C{None} or C{"-"}) or to a file that is rotated
when it reaches a size, keeping a number of rotated files (C{name.1} is the
newest).  The access log's lines are collected in memory and written once
per reactor turn (see L{ArtcastSite}): a datum answered to 10,000 waiting
clients in one turn is one write, not 10,000.

A log file is created at its first write, not when the server is built:
under C{twistd --uid} that is after privileges are dropped, so the file
belongs to the server's user and it can be rotated (a file created by root
could not be, and Twisted's L{LogFile} would then grow it for ever; see
Twisted issues 4640 and 5296).
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any, Callable, Mapping, Sequence, TextIO

from zope.interface import implementer, provider

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorCore,
    IReactorTime,
)
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile
from twisted.web.iweb import IAccessLogFormatter, IRequest
from twisted.web.server import Site

from artcast.server.defaults import DEFAULT_LOG_COUNT, DEFAULT_LOG_SIZE

__all__ = [
    "ACCESS_LOG_BUFFER",
    "ArtcastSite",
    "ErrorLogObserver",
    "ErrorLogService",
    "MAX_EARLY_EVENTS",
    "NamedLogger",
    "RateLimitedLog",
    "addressHost",
    "apacheCombinedLogFormatter",
    "errorLogObserver",
    "escapeLogItem",
    "repeatsTwistdLog",
]

ACCESS_LOG_BUFFER = 64 * 1024
"""
The most characters of access log lines held in memory: past it they are
written at once, not at the end of the reactor turn.
"""


# Apache's ap_escape_logitem: backslash, double quote and every byte that is
# not printable ASCII (control characters, DEL and bytes >= 0x80) are escaped;
# the usual C escapes have their short form, the rest are \xhh (lower case).
_SHORT_ESCAPES = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_ESCAPES = {
    byte: _SHORT_ESCAPES.get(byte, "\\x%02x" % (byte,))
    for byte in range(256)
    if byte in _SHORT_ESCAPES or byte < 0x20 or byte >= 0x7F
}
_PLAIN = bytes(byte for byte in range(256) if byte not in _ESCAPES)

#: Header values of log lines already escaped (a server's clients send
#: the same few again and again), up to
#: L{_ESCAPED_MAX} of them, each at most L{_ESCAPED_LONGEST} bytes long;
#: emptied when full.
_escaped: dict[bytes, str] = {}
_ESCAPED_MAX = 1024
_ESCAPED_LONGEST = 256


def _escapedField(item: bytes) -> str:
    """
    L{escapeLogItem}, remembered (see L{_escaped}).
    """
    found = _escaped.get(item)
    if found is None:
        found = escapeLogItem(item)
        if len(item) <= _ESCAPED_LONGEST:
            if len(_escaped) >= _ESCAPED_MAX:
                _escaped.clear()
            _escaped[item] = found
    return found


def escapeLogItem(item: bytes) -> str:
    """
    Escape one field of a log line the way Apache's C{ap_escape_logitem} does,
    so that no field can contain a raw double quote, line break or
    non-ASCII byte.

    @param item: The raw bytes, as the client sent them.

    @return: Printable ASCII: C{"} and C{\\} are preceded by C{\\}; backspace,
        tab, line feed, vertical tab and carriage return become C{\\b},
        C{\\t}, C{\\n}, C{\\v} and C{\\r}; any other byte outside 0x20-0x7e
        becomes C{\\xhh}.
    """
    if not item.translate(None, _PLAIN):
        # The common case: nothing to escape (bytes.translate runs in C).
        return item.decode("ascii")
    return item.decode("latin-1").translate(_ESCAPES)


def addressHost(address: IAddress | None) -> str | None:
    """
    A peer's IP address as text: an IPv6 address without brackets, an
    IPv4-mapped IPv6 address (C{::ffff:192.0.2.1}, from a dual-stack socket)
    as the plain IPv4 address, as APR prints it.

    @return: L{None} for a peer with no IP address (a UNIX socket).
    """
    if isinstance(address, IPv4Address):
        return address.host
    if isinstance(address, IPv6Address):
        host = address.host
        if host.startswith("::ffff:") and "." in host:
            return host[7:]
        return host
    return None


def _clientHost(request: IRequest) -> str:
    """
    The client address as Apache's C{%h} shows it (without host name
    look-ups): see L{addressHost}, unquoted.  A peer with no IP address (a
    UNIX socket) is C{-}, the NCSA mark of an unknown field.
    """
    return addressHost(request.getClientAddress()) or "-"


def _remoteUser(request: IRequest) -> str:
    """
    Apache's C{%u}: C{-} unless some code has looked at the request's
    credentials (L{twisted.web.http.Request.getUser}), in which case the user
    name, escaped.  Unlike Apache, a space is escaped too (C{\\x20}): this
    field is not quoted, and a space in it would shift every later field.
    """
    # Read where getUser() keeps it (getattr with a default makes no
    # AttributeError when it is missing; vars() would give the request a
    # dict of its own).
    user = getattr(request, "user", None)
    if not user:
        # Twisted records "no credentials" as b"".
        return "-"
    if isinstance(user, str):
        user = user.encode("utf-8")
    return escapeLogItem(user).replace(" ", "\\x20")


def _header(request: IRequest, name: bytes) -> str:
    """
    Apache's C{%{Name}i}: the request header, escaped, or C{-} when absent.
    Apache merges repeated header lines into one value joined by C{", "}; so
    does this.
    """
    # An ArtcastRequest that was held reads them without making its
    # headers' object again.
    values = getattr(request, "requestHeaderValues", None)
    values = values(name) if values is not None else request.requestHeaders.getRawHeaders(name)
    if values is None:
        return "-"
    if len(values) == 1:
        return _escapedField(values[0])
    return escapeLogItem(b", ".join(values))


@provider(IAccessLogFormatter)
def apacheCombinedLogFormatter(timestamp: str, request: IRequest) -> str:
    """
    Format a finished request as one line of Apache's combined log, e.g.::

        127.0.0.1 - - [22/Nov/2026:03:16:18 +0000] "GET /artcasts/test/tick HTTP/1.1" 200 2 "-" "curl/8.0"

    @param timestamp: The time, already formatted as C{[dd/Mon/yyyy:hh:mm:ss
        +0000]} (L{twisted.web.http.HTTPFactory} keeps it cached, updated once
        a second).
    @param request: The finished request.

    @return: The line, without its line feed; printable ASCII only.
    """
    headAsRead = getattr(request, "headAsRead", None)
    head = headAsRead() if headAsRead is not None else None
    fields = head.logged if head is not None else None
    if fields is None:
        # (Not remembered by its bytes: a request line that repeats is a
        # plain head's, remembered with it; others, with since= ids, differ.)
        requestLine = escapeLogItem(
            b"%s %s %s" % (request.method, request.uri, request.clientproto)
        )
        fields = (requestLine, _header(request, b"referer"), _header(request, b"user-agent"))
        if head is not None:
            # The same for every request read from this head (an
            # ArtcastRequest's, as its client sent it: see headAsRead).
            head.logged = fields
    sentLength = request.sentLength  # type: ignore[attr-defined]
    return '%s - %s %s "%s" %d %s "%s" "%s"' % (
        _clientHost(request),
        _remoteUser(request),
        timestamp,
        fields[0],
        request.code,  # type: ignore[attr-defined]
        sentLength if sentLength else "-",
        fields[1],
        fields[2],
    )


class _StandardError:
    """
    A log destination that writes to a text stream at once, each call in one
    C{write} and a C{flush}, and never closes the stream.

    It is meant for the process's standard error, L{sys.__stderr__}.  Not
    L{sys.stderr}: twistd replaces that with a file that turns every write
    into a log event of level error, which would put each access line into
    the error log, and each error log line back into the error log, for ever.
    """

    def __init__(self, stream: TextIO | None) -> None:
        """
        @param stream: The text stream, or L{None} (a process with no standard
            error) to write nothing.
        """
        self._stream = stream

    def write(self, data: str) -> None:
        """
        Write C{data} and flush it.
        """
        stream = self._stream
        if stream is not None:
            stream.write(data)
            stream.flush()

    def writeLines(self, lines: Sequence[str]) -> None:
        """
        Write whole lines in one C{write} and flush them.
        """
        self.write("".join(lines))

    def flush(self) -> None:
        """
        Flush the stream.
        """
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        """
        Flush the stream, leaving it open: it is not ours.
        """
        self.flush()


class _RotatingFile:
    """
    A L{twisted.python.logfile.LogFile} created at the first write.

    @ivar path: The absolute path of the log file.
    @ivar size: The size in bytes at which the file is rotated.
    @ivar count: How many rotated files are kept.
    """

    def __init__(self, path: str, size: int, count: int) -> None:
        self.path = os.path.abspath(path)
        self.size = size
        self.count = count
        self._logFile: LogFile | None = None

    def open(self) -> LogFile:
        """
        Open (or create) the file now if it is not open yet.

        @return: The open L{LogFile}.
        """
        logFile = self._logFile
        if logFile is None:
            logFile = self._logFile = LogFile.fromFullPath(
                self.path, rotateLength=self.size, maxRotatedFiles=self.count
            )
        return logFile

    def write(self, data: str) -> None:
        """
        Write C{data} (one or more whole lines), rotating first if the file
        has reached its size.  A write is never split between two files.
        """
        logFile = self._logFile
        if logFile is None:
            logFile = self.open()
        logFile.write(data)

    def writeLines(self, lines: Sequence[str]) -> None:
        """
        Write whole lines, each file's share in one C{write}, rotating where
        writing them one by one would have: the line that brings the file to
        its size is the last one in it.  So the files are the same as if
        each line had been written alone.
        """
        logFile = self._logFile
        if logFile is None:
            logFile = self.open()
        limit = self.size
        start, count = 0, len(lines)
        while start < count:
            # LogFile.write rotates first when the file has reached its size.
            filled = logFile.size if logFile.size < limit else 0
            end = start
            while end < count and filled < limit:
                filled += len(lines[end])
                end += 1
            logFile.write("".join(lines[start:end]))
            start = end

    def flush(self) -> None:
        """
        Flush the file if it is open (a L{LogFile} is unbuffered anyway).
        """
        if self._logFile is not None:
            self._logFile.flush()

    def close(self) -> None:
        """
        Close the file if it is open; a later write opens it again.
        """
        logFile, self._logFile = self._logFile, None
        if logFile is not None:
            logFile.close()


class _SpecialFile:
    """
    A path that is not a regular file (C{/dev/null}, a FIFO, a terminal):
    written to as it is and never rotated, since rotating renames the path
    itself.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = None

    def open(self) -> TextIO:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        return self._file

    def write(self, data: str) -> None:
        logFile = self.open()
        logFile.write(data)
        logFile.flush()

    def writeLines(self, lines: Sequence[str]) -> None:
        """
        Write whole lines in one C{write} and flush them.
        """
        self.write("".join(lines))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        logFile, self._file = self._file, None
        if logFile is not None:
            logFile.close()


def _destination(
    path: str | None, size: int, count: int, stderr: TextIO | None
) -> _StandardError | _RotatingFile | _SpecialFile:
    """
    Where a log goes: standard error for L{None} or C{"-"}, else a rotating
    file.

    @raise ValueError: If C{size} or C{count} is not positive, or the file's
        folder does not exist (so that a mistyped path stops the server at
        start-up, not at the first line).
    """
    if size < 1:
        raise ValueError(f"a log size must be at least 1 byte, not {size!r}")
    if count < 1:
        raise ValueError(f"a log must keep at least 1 rotated file, not {count!r}")
    if path is None or path == "-":
        return _StandardError(sys.__stderr__ if stderr is None else stderr)
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        return _SpecialFile(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"the folder of the log file {path!r} does not exist")
    return _RotatingFile(path, size, count)


class NamedLogger(Logger):
    """
    A L{Logger} for a class attribute that keeps the namespace it is given.

    A plain L{Logger} class attribute names its events after the module and
    class it is read through.  The server's modules moved into
    C{artcast/server/}, but the error log's namespaces are read by
    operators' filters and shown in the docs (C{artcast.multicast},
    C{artcast.connections}, ...), so those keep their old names.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        return self.__class__(
            self.namespace, owner if instance is None else instance, observer=self.observer
        )


class ArtcastSite(Site):
    """
    A L{Site} whose access log is Apache's combined log, written to standard
    error or to a file rotated by size.

    Twisted logs a request when it finishes
    (L{twisted.web.http.Request.finish}), so a long poll is logged when it is
    answered, with its final status and size; one that the client gave up on
    is not logged.

    The lines are not written one by one: the first line of a reactor turn
    schedules a write for the end of the turn (C{reactor.callLater(0)}),
    which writes every line collected meanwhile at once, in order.  Past
    L{ACCESS_LOG_BUFFER} characters they are written at once, so memory
    stays bounded however many requests finish in one turn.  Stopping the
    site (L{stopFactory}) writes what is left, and so does the reactor's
    shutdown (its C{after} phase), in case the site is not stopped before
    the reactor ends; from then on each line is written at once, since the
    reactor may not run another turn.
    """

    _log = NamedLogger(namespace="artcast.logs.ArtcastSite")

    def __init__(
        self,
        resource: Any,
        accessLog: str | None,
        accessLogSize: int = DEFAULT_LOG_SIZE,
        accessLogCount: int = DEFAULT_LOG_COUNT,
        reactor: IReactorTime | None = None,
        *,
        stderr: TextIO | None = None,
        **kw: Any,
    ) -> None:
        """
        @param resource: The root resource.
        @param accessLog: A file path, or L{None} or C{"-"} for standard error.
        @param accessLogSize: The size in bytes at which the file is rotated.
        @param accessLogCount: How many rotated files are kept.
        @param reactor: The reactor, for the cached log time (see
            L{twisted.web.http.HTTPFactory}) and the end-of-turn writes of
            the access log; with L{IReactorCore}, the lines left are also
            written at its shutdown.
        @param stderr: The stream used as standard error; default
            L{sys.__stderr__}.  For tests.
        @param kw: Passed on to L{Site} (C{logFormatter} may replace
            L{apacheCombinedLogFormatter}, e.g. with one that reads
            C{X-Forwarded-For}).

        @raise ValueError: See L{_destination}.
        """
        kw.setdefault("logFormatter", apacheCombinedLogFormatter)
        super().__init__(resource, reactor=reactor, **kw)
        self._pendingLines: list[str] = []
        self._pendingSize = 0
        self._flushCall: IDelayedCall | None = None
        self._shutdownTrigger: Any = None
        self._writeAtOnce = False
        self._accessLog = _destination(
            accessLog, accessLogSize, accessLogCount, stderr
        )
        # HTTPFactory.startFactory opens self.logPath with _openLogFile when it
        # is true, and falls back to twisted.python.log otherwise.
        if isinstance(self._accessLog, (_RotatingFile, _SpecialFile)):
            self.logPath = self._accessLog.path
        else:
            self.logPath = "-"
        self._accessLogFailing = False

    def _openLogFile(
        self, path: str | bytes
    ) -> _StandardError | _RotatingFile | _SpecialFile:
        """
        The access log, as built in L{__init__}: HTTPFactory calls this from
        C{startFactory} and closes the result in C{stopFactory}.
        """
        return self._accessLog

    def startFactory(self) -> None:
        """
        Open the access log and, on a reactor that has a shutdown, have the
        lines left written then.
        """
        super().startFactory()
        self._writeAtOnce = False
        reactor = self.reactor
        if self._shutdownTrigger is None and IReactorCore.providedBy(reactor):
            self._shutdownTrigger = reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
                "after", "shutdown", self._reactorShutDown
            )

    def _reactorShutDown(self) -> None:
        """
        The reactor has shut down (this site may still be open: its last
        connection's close can come after): write the lines left, and each
        later line at once.
        """
        # The reactor has dropped the trigger by now: nothing to remove.
        self._shutdownTrigger = None
        self._writeAtOnce = True
        self.flushAccessLog()

    def stopFactory(self) -> None:
        """
        Write the lines left, then close the access log.
        """
        self.flushAccessLog()
        trigger, self._shutdownTrigger = self._shutdownTrigger, None
        if trigger is not None:
            # (MemoryReactor returns no trigger identifier: nothing to remove.)
            self.reactor.removeSystemEventTrigger(trigger)  # type: ignore[attr-defined]
        super().stopFactory()

    def log(self, request: IRequest) -> None:  # type: ignore[override]
        """
        Collect the access log line of a finished request, to be written at
        the end of the reactor turn (or at once past L{ACCESS_LOG_BUFFER}).

        This is called from inside C{request.finish()}: a line that cannot be
        made must not break the answer (see L{_accessLogFailed}).
        """
        if self._logFile is None:
            return
        try:
            line = self._logFormatter(self._logDateTime, request) + "\n"
        except Exception:
            self._accessLogFailed()
            return
        self._pendingLines.append(line)
        self._pendingSize += len(line)
        if self._pendingSize > ACCESS_LOG_BUFFER or self._writeAtOnce:
            self.flushAccessLog()
        elif self._flushCall is None:
            self._flushCall = self.reactor.callLater(0, self.flushAccessLog)

    def flushAccessLog(self) -> None:
        """
        Write the collected access log lines now, in one write (one per
        file when the log rotates in between).

        A log that cannot be written (a full disk, a folder the server's user
        may not write) loses the lines and must not stop the server: see
        L{_accessLogFailed}.
        """
        call, self._flushCall = self._flushCall, None
        if call is not None and call.active():
            call.cancel()
        lines = self._pendingLines
        if not lines:
            return
        self._pendingLines = []
        self._pendingSize = 0
        logFile = self._logFile
        if logFile is None:
            return
        try:
            logFile.writeLines(lines)  # type: ignore[attr-defined]
        except Exception:
            self._accessLogFailed()
        else:
            self._accessLogFailing = False

    def _accessLogFailed(self) -> None:
        """
        Report a failure to make or write access log lines, the current
        exception.  The first failure is reported to the error log, then none
        until lines are written again.
        """
        if not self._accessLogFailing:
            self._accessLogFailing = True
            self._log.failure(
                "Cannot write the access log {logPath}", logPath=self.logPath
            )


_ERROR_LEVELS = frozenset([LogLevel.warn, LogLevel.error, LogLevel.critical])


@implementer(ILogObserver)
class RateLimitedLog:
    """
    Log at most C{burst} warnings per C{period} seconds, then one line
    saying how many were not logged: what an anonymous client or source can
    cause at will (bad datagrams, bad WebSocket frames, connections cut)
    cannot flood the log.

    @ivar what: what is logged, in the plural, for the summary line
        (C{"{count} more <what> were not logged"}).
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        burst: int = 10,
        period: float = 60.0,
        what: str = "bad datagrams",
    ) -> None:
        self.log = log
        self.clock = clock
        self.burst = burst
        self.period = period
        self.what = what
        self._windowStart = -period
        self._count = 0
        self._suppressed = 0

    def warn(self, format: str, **kw: object) -> None:
        """
        Log a warning, unless C{burst} were logged in this period.
        """
        self._emit(self.log.warn, format, kw)

    def error(self, format: str, **kw: object) -> None:
        """
        Log an error, unless C{burst} events were logged in this period.
        """
        self._emit(self.log.error, format, kw)

    def _emit(self, emit: Callable[..., None], format: str, kw: dict[str, object]) -> None:
        now = self.clock.seconds()
        if now - self._windowStart >= self.period:
            if self._suppressed:
                self.log.warn(
                    "{count} more {what} were not logged",
                    count=self._suppressed,
                    what=self.what,
                )
            self._windowStart = now
            self._count = 0
            self._suppressed = 0
        if self._count < self.burst:
            self._count += 1
            emit(format, **kw)
        else:
            self._suppressed += 1


class ErrorLogObserver:
    """
    A log observer that writes the events of level warn and above, and any
    event carrying a failure, as twistd's text lines (a timestamp, the
    system, the message and the traceback, continuation lines indented by a
    tab), each event in one write.
    """

    def __init__(
        self,
        destination: _StandardError | _RotatingFile | _SpecialFile,
        formatTimestamp: Callable[[float | None], str],
    ) -> None:
        """
        @param destination: Where the text goes.
        @param formatTimestamp: Formats an event's C{log_time}.
        """
        self._destination = destination
        self._formatTimestamp = formatTimestamp

    def __call__(self, event: dict[str, Any]) -> None:
        """
        Write C{event} if it is a warning, an error or a failure.
        """
        if event.get("log_level") not in _ERROR_LEVELS and "log_failure" not in event:
            return
        text = formatEventAsClassicLogText(event, formatTime=self._formatTimestamp)
        if text:
            self._destination.write(text)

    def open(self) -> None:
        """
        Create the log file now, if the log goes to a file.
        """
        if isinstance(self._destination, (_RotatingFile, _SpecialFile)):
            self._destination.open()

    def close(self) -> None:
        """
        Close the log file, if any (a later event opens it again).
        """
        self._destination.close()


#: Warnings and errors L{ErrorLogService} holds, at most, between its
#: C{privilegedStartService} and its C{startService}.
MAX_EARLY_EVENTS = 100


def repeatsTwistdLog(
    path: str | None,
    twistdConfig: Mapping[str, Any] | None,
    fstat: Callable[[int], os.stat_result] | None = None,
) -> bool:
    """
    Whether an error log at C{path} would only repeat, on the same screen or
    file, what twistd's own log already shows: the error log goes to
    standard error (C{path} is L{None}: no C{--error-log}), twistd logs to
    standard output (C{twistd -n} without C{--logfile}, or C{--logfile -})
    and both are one file (a terminal, or C{> file 2>&1}).  Every warning
    would then be printed twice.

    @param twistdConfig: twistd's options (the C{parent} of
        L{artcast.server.tap.Options}), or L{None} outside twistd.
    @param fstat: L{os.fstat} (for tests; by default the one of the
        moment).
    """
    if path is not None or twistdConfig is None:
        return False
    if twistdConfig.get("syslog") or twistdConfig.get("logger") is not None:
        return False
    logfile = twistdConfig.get("logfile")
    if not (logfile == "-" or (twistdConfig.get("nodaemon") and not logfile)):
        return False
    if fstat is None:
        fstat = os.fstat
    try:
        out, err = fstat(1), fstat(2)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def errorLogObserver(
    path: str | None,
    size: int = DEFAULT_LOG_SIZE,
    count: int = DEFAULT_LOG_COUNT,
    *,
    timeFormat: str | None = timeFormatRFC3339,
    stderr: TextIO | None = None,
) -> ErrorLogObserver:
    """
    Make the error log's observer.

    @param path: A file path, or L{None} or C{"-"} for standard error.
    @param size: The size in bytes at which the file is rotated.
    @param count: How many rotated files are kept.
    @param timeFormat: The C{strftime} format of the timestamps (local time,
        as twistd's own log), or L{None} for C{-}.
    @param stderr: The stream used as standard error; default
        L{sys.__stderr__}.  For tests.

    @raise ValueError: See L{_destination}.
    """
    return ErrorLogObserver(
        _destination(path, size, count, stderr),
        lambda when: formatTime(when, timeFormat),
    )


class ErrorLogService(Service):
    """
    Publishes the error log while running: adds its observer to the log
    publisher in L{startService} and removes it (and closes the file) in
    L{stopService}.

    twistd calls C{startService} after dropping privileges, so the file is
    created by the server's user.
    """

    def __init__(
        self,
        observer: ErrorLogObserver,
        publisher: LogPublisher = globalLogPublisher,
    ) -> None:
        """
        @param observer: From L{errorLogObserver}.
        @param publisher: The publisher to observe; twistd's global one by
            default.
        """
        self.observer = observer
        self._publisher = publisher
        #: What is logged between L{privilegedStartService} and
        #: L{startService} (at most L{MAX_EARLY_EVENTS}), or L{None}.
        self._early: list[dict[str, Any]] | None = None

    def privilegedStartService(self) -> None:
        """
        Hold the warnings logged while the other services start with
        privileges (e.g. the open-files warning), before the log is opened
        as the server's user: L{startService} writes them.
        """
        self._early = []
        self._publisher.addObserver(self._hold)
        super().privilegedStartService()

    def _hold(self, event: dict[str, Any]) -> None:
        early = self._early
        if (
            early is not None
            and len(early) < MAX_EARLY_EVENTS
            and (event.get("log_level") in _ERROR_LEVELS or "log_failure" in event)
        ):
            early.append(event)

    def startService(self) -> None:
        """
        Open the log, write what was held, and start observing.
        """
        early, self._early = self._early, None
        if early is not None:
            self._publisher.removeObserver(self._hold)
        self.observer.open()
        for event in early or ():
            self.observer(event)
        self._publisher.addObserver(self.observer)
        super().startService()

    def stopService(self) -> None:
        """
        Stop observing and close the log.
        """
        super().stopService()
        self._publisher.removeObserver(self.observer)
        self.observer.close()
