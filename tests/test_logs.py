# -*- test-case-name: tests.test_logs -*-
"""
Tests for L{artcast.server.logs}: the Apache combined access log and the error log.
"""

from __future__ import annotations

import io
import os
import re
import sys
from calendar import timegm
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, LogPublisher, formatTime
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from artcast.server import logs
from artcast.server.logs import (
    ACCESS_LOG_BUFFER,
    ArtcastSite,
    _destination,
    ErrorLogService,
    apacheCombinedLogFormatter,
    errorLogObserver,
    escapeLogItem,
)

# 22 Nov 2026 03:16:18 UTC, the time of the example line in the brief.
PINNED = timegm((2026, 11, 22, 3, 16, 18, 0, 0, 0))
STAMP = "[22/Nov/2026:03:16:18 +0000]"
LOCALHOST = IPv4Address("TCP", "127.0.0.1", 50123)


class _Answers(Resource):
    """
    Answers C{/empty} with no body, C{/missing} with a 404, C{/whoami} with the
    Basic-auth user name, anything else with C{42}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        path = request.path
        if path == b"/empty":
            return b""
        if path == b"/missing":
            request.setResponseCode(404)
            return b"no such artcast"
        if path == b"/whoami":
            return request.getUser()
        return b"42"

    render_HEAD = render_GET


class _BrokenFile:
    """
    An access log destination whose writes fail, as on a full disk, until
    C{broken} is set to L{False}; then it keeps what it is given in
    C{written}.
    """

    path = "/full/disk"

    def __init__(self) -> None:
        self.broken = True
        self.written: list[str] = []

    def write(self, data: str) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.written.append(data)

    def writeLines(self, lines: list[str]) -> None:
        self.write("".join(lines))

    def close(self) -> None:
        pass


class _Writes(io.StringIO):
    """
    A text stream that also keeps each C{write} as it came, in C{writes}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, data: str) -> int:
        self.writes.append(data)
        return super().write(data)


class _ShutdownReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose system event triggers can be removed, and
    whose shutdown runs its C{after shutdown} triggers, dropping them, as
    Twisted's reactor does: removing one after that is a L{ValueError}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shutdownTriggers: dict[int, Any] = {}

    def addSystemEventTrigger(  # type: ignore[override]
        self, phase: str, eventType: str, f: Any, *args: Any, **kw: Any
    ) -> int:
        assert (phase, eventType) == ("after", "shutdown")
        triggerID = len(self.shutdownTriggers) + 1
        self.shutdownTriggers[triggerID] = lambda: f(*args, **kw)
        return triggerID

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        if triggerID not in self.shutdownTriggers:
            raise ValueError("list.remove(x): x not in list")
        del self.shutdownTriggers[triggerID]

    def shutDown(self) -> None:
        triggers, self.shutdownTriggers = self.shutdownTriggers, {}
        for trigger in triggers.values():
            trigger()


def _unescape(field: str) -> bytes:
    """
    Undo Apache's C{ap_escape_logitem}, as a log analyser would.
    """
    short = {"b": b"\b", "t": b"\t", "n": b"\n", "v": b"\v", "r": b"\r"}
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] != "\\":
            out += field[i].encode("ascii")
            i += 1
        elif field[i + 1] == "x":
            out.append(int(field[i + 2 : i + 4], 16))
            i += 4
        else:
            out += short.get(field[i + 1], field[i + 1].encode("ascii"))
            i += 2
    return bytes(out)


# A combined log line as an analyser splits it.
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_COMBINED = re.compile(
    r"^(\S+) (\S+) (\S+) \[([^\]]+)\] " + _QUOTED + r" (\d{3}) (\d+|-) " + _QUOTED
    + " " + _QUOTED + "$"
)


class AccessLogTestsMixin:
    """
    Helpers to run requests through an L{ArtcastSite} over a
    L{StringTransport}.
    """

    def makeSite(
        self,
        accessLog: str | None = None,
        size: int = 10_000_000,
        count: int = 100,
        clock: Clock | None = None,
    ) -> tuple[ArtcastSite, _Writes, Clock]:
        """
        Start a site on a clock (a new L{Clock} by default) pinned to
        L{PINNED}, its standard error a L{_Writes}.
        """
        if clock is None:
            clock = Clock()
        clock.advance(PINNED)
        stderr = _Writes()
        site = ArtcastSite(_Answers(), accessLog, size, count, reactor=clock, stderr=stderr)
        site.startFactory()
        self.addCleanup(site.stopFactory)  # type: ignore[attr-defined]
        return site, stderr, clock

    def request(
        self,
        site: ArtcastSite,
        raw: bytes,
        peer: Any = LOCALHOST,
        endTurn: bool = True,
    ) -> bytes:
        """
        Send the raw bytes of a request from C{peer} and return what the
        server answered.

        @param endTurn: Whether to end the reactor turn afterwards (advance
            the site's clock by 0), which writes the access log lines.
        """
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        channel.connectionLost(Failure(ConnectionDone()))
        if endTurn:
            site.reactor.advance(0)  # type: ignore[attr-defined]
        return transport.value()

    def logFolder(self) -> tuple[str, str]:
        """
        A new folder, and the path of an C{access.log} in it.
        """
        folder = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.mkdir(folder)
        return folder, os.path.join(folder, "access.log")

    def requestLines(
        self, site: ArtcastSite, count: int, endTurn: bool = True
    ) -> list[str]:
        """
        Request C{/line/0} to C{/line/<count - 1>}, each on its connection.

        @param endTurn: Whether each request ends its reactor turn.
        @return: The log lines expected, in order.
        """
        sent = []
        for i in range(count):
            self.request(
                site, b"GET /line/%d HTTP/1.1\r\nHost: a\r\n\r\n" % (i,), endTurn=endTurn
            )
            sent.append(f'127.0.0.1 - - {STAMP} "GET /line/{i} HTTP/1.1" 200 2 "-" "-"\n')
        return sent

    def keptLines(self, folder: str, names: list[str]) -> list[str]:
        """
        The lines of the files C{names} in C{folder}, read in that order.
        """
        kept = []
        for name in names:
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            self.assertTrue(text.endswith("\n"))  # type: ignore[attr-defined]
            kept.extend(text.splitlines(keepends=True))
        return kept


def _request(**attributes: Any) -> Request:
    """
    A real, finished L{Request} whose attributes are set directly, bypassing
    the HTTP parser (so that bytes it would refuse can be tried).
    """
    peer = attributes.pop("peer", LOCALHOST)
    headers = attributes.pop("headers", {})
    request = Request(DummyChannel(peer))
    request.method = b"GET"
    request.uri = b"/"
    request.clientproto = b"HTTP/1.1"
    request.code = 200
    request.sentLength = 2
    for name, values in headers.items():
        request.requestHeaders.setRawHeaders(name, values)
    for name, value in attributes.items():
        setattr(request, name, value)
    return request


def _formatted(**attributes: Any) -> str:
    """
    The access log line of L{_request}C{(**attributes)}.
    """
    return apacheCombinedLogFormatter(STAMP, _request(**attributes))


class AccessLogFormatTests(AccessLogTestsMixin, SynchronousTestCase):
    """
    The lines of L{ArtcastSite}'s access log are Apache's combined format.
    """

    def test_exampleLine(self) -> None:
        """
        A plain GET is logged as Apache writes it: the address unquoted, the
        request line, status, size, referer and user agent quoted.
        """
        site, stderr, clock = self.makeSite()
        response = self.request(
            site,
            b"GET /artcasts/test/tick HTTP/1.1\r\nHost: localhost\r\n"
            b"User-Agent: curl/8.0\r\n\r\n",
        )
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(
            stderr.getvalue(),
            '127.0.0.1 - - [22/Nov/2026:03:16:18 +0000] "GET /artcasts/test/tick'
            ' HTTP/1.1" 200 2 "-" "curl/8.0"\n',
        )

    def test_refererAndStatus(self) -> None:
        """
        The referer is logged in its quotes and the final status is the one
        the resource set.
        """
        site, stderr, clock = self.makeSite()
        self.request(
            site,
            b"GET /missing HTTP/1.0\r\nReferer: http://example.com/page?a=1\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n",
        )
        self.assertEqual(
            stderr.getvalue(),
            '127.0.0.1 - - [22/Nov/2026:03:16:18 +0000] "GET /missing HTTP/1.0"'
            ' 404 15 "http://example.com/page?a=1" "Mozilla/5.0 (X11; Linux x86_64)"\n',
        )

    def test_zeroBytesIsDash(self) -> None:
        """
        A response with no body shows its size as C{-}, as Apache's C{%b}
        does, for an empty 200 and for a HEAD.
        """
        site, stderr, clock = self.makeSite()
        self.request(site, b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
        self.request(site, b"HEAD /artcasts HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            stderr.getvalue().splitlines(),
            [
                f'127.0.0.1 - - {STAMP} "GET /empty HTTP/1.1" 200 - "-" "-"',
                f'127.0.0.1 - - {STAMP} "HEAD /artcasts HTTP/1.1" 200 - "-" "-"',
            ],
        )

    def test_dateFollowsTheReactor(self) -> None:
        """
        The date is the reactor's time, in UTC, cached and refreshed every
        second.
        """
        site, stderr, clock = self.makeSite()
        clock.advance(3600 * 24 * 40 + 1)
        self.request(site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(" [01/Jan/2027:03:16:19 +0000] ", stderr.getvalue())

    def test_hostileRequestFromTheWire(self) -> None:
        """
        Quotes, backslashes and DEL that Twisted lets through in a request line,
        and control and non-ASCII bytes in headers, are escaped as Apache
        escapes them, so the line keeps its shape.
        """
        site, stderr, clock = self.makeSite()
        self.request(
            site,
            b'GET /a"b\\c\x7f HTTP/1.1\r\nHost: a\r\nReferer: x" "y\r\n'
            b"User-Agent: caf\xc3\xa9\x01\t\\\r\n\r\n",
        )
        self.assertEqual(
            stderr.getvalue(),
            f'127.0.0.1 - - {STAMP} "GET /a\\"b\\\\c\\x7f HTTP/1.1" 200 2'
            ' "x\\" \\"y" "caf\\xc3\\xa9\\x01\\t\\\\"\n',
        )

    def test_hostilePathEscaped(self) -> None:
        """
        A request line holding every kind of dangerous byte (quotes, CR, LF,
        NUL, backslash, tab, vertical tab, backspace, non-ASCII) is escaped
        the way Apache's C{ap_escape_logitem} escapes it: never a raw line
        break.
        """
        line = _formatted(uri=b'/k"\r\n\x00\\\t\v\b\xff\xc3\xa9 x')
        self.assertEqual(
            line,
            f'127.0.0.1 - - {STAMP} "GET /k\\"\\r\\n\\x00\\\\\\t\\v\\b\\xff\\xc3\\xa9 x'
            ' HTTP/1.1" 200 2 "-" "-"',
        )

    def test_ipv6Peer(self) -> None:
        """
        An IPv6 client is logged by its address without brackets, as Apache
        does.
        """
        site, stderr, clock = self.makeSite()
        self.request(
            site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", IPv6Address("TCP", "::1", 4)
        )
        self.assertEqual(
            stderr.getvalue(), f'::1 - - {STAMP} "GET / HTTP/1.1" 200 2 "-" "-"\n'
        )

    def test_ipv4MappedPeer(self) -> None:
        """
        An IPv4 client of a dual-stack socket (C{::ffff:10.1.2.3}) is logged
        as its IPv4 address, as Apache (APR) prints it.
        """
        line = _formatted(peer=IPv6Address("TCP", "::ffff:10.1.2.3", 4))
        self.assertTrue(line.startswith("10.1.2.3 - - "), line)

    def test_unixSocketPeer(self) -> None:
        """
        A client on a UNIX socket has no address: it is logged as C{-}, the
        NCSA mark of an unknown field.
        """
        site, stderr, clock = self.makeSite()
        self.request(site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", UNIXAddress(None))
        self.assertEqual(
            stderr.getvalue(), f'- - - {STAMP} "GET / HTTP/1.1" 200 2 "-" "-"\n'
        )

    def test_userOnlyWhenLookedAt(self) -> None:
        """
        The remote user is C{-} unless the application read the credentials,
        and then it is the user name.
        """
        site, stderr, clock = self.makeSite()
        auth = b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n"  # alice:secret
        self.request(site, b"GET /x HTTP/1.1\r\nHost: a\r\n" + auth + b"\r\n")
        self.request(site, b"GET /whoami HTTP/1.1\r\nHost: a\r\n" + auth + b"\r\n")
        self.assertEqual(
            [line.split(" ")[:3] for line in stderr.getvalue().splitlines()],
            [["127.0.0.1", "-", "-"], ["127.0.0.1", "-", "alice"]],
        )

    def test_userEscaped(self) -> None:
        """
        A user name is escaped like the other fields and, since its field is
        not quoted, a space in it too.
        """
        line = _formatted(user=b'a b"\n')
        self.assertTrue(line.startswith('127.0.0.1 - a\\x20b\\"\\n ['), line)

    def test_repeatedHeadersMerged(self) -> None:
        """
        A header sent twice is logged as one value joined by C{", "}, as
        Apache merges it; an empty header is an empty quoted field.
        """
        line = _formatted(headers={b"User-Agent": [b"a", b"b"], b"Referer": [b""]})
        self.assertTrue(line.endswith(' 200 2 "" "a, b"'), line)

    @settings(max_examples=200, deadline=None)
    @given(
        method=st.binary(min_size=1, max_size=10),
        uri=st.binary(max_size=60),
        referer=st.binary(max_size=30),
        agent=st.binary(max_size=30),
        user=st.binary(max_size=10),
        sentLength=st.integers(min_value=0, max_value=2**40),
    )
    def test_anyBytesOneParseableLine(
        self,
        method: bytes,
        uri: bytes,
        referer: bytes,
        agent: bytes,
        user: bytes,
        sentLength: int,
    ) -> None:
        """
        Whatever bytes a client sends, the line is printable ASCII, splits
        into the nine combined-log fields, and unescaping a field gives back
        exactly what was sent.
        """
        request = _request(
            method=method,
            uri=uri,
            user=user,
            sentLength=sentLength,
            headers={b"Referer": [referer], b"User-Agent": [agent]},
        )
        line = apacheCombinedLogFormatter(STAMP, request)
        # Twisted's Headers turn line breaks into spaces on the way in: compare
        # with what the request holds.
        referer = request.requestHeaders.getRawHeaders(b"Referer")[0]
        agent = request.requestHeaders.getRawHeaders(b"User-Agent")[0]
        self.assertTrue(all(" " <= c <= "~" for c in line), line)
        match = _COMBINED.match(line)
        self.assertIsNotNone(match, line)
        assert match is not None
        self.assertEqual(match.group(1), "127.0.0.1")
        self.assertEqual(_unescape(match.group(3)), user or b"-")
        self.assertEqual(match.group(4), STAMP[1:-1])
        self.assertEqual(_unescape(match.group(5)), method + b" " + uri + b" HTTP/1.1")
        self.assertEqual(match.group(7), str(sentLength) if sentLength else "-")
        self.assertEqual(_unescape(match.group(8)), referer)
        self.assertEqual(_unescape(match.group(9)), agent)

    def test_escapedFieldsRemembered(self) -> None:
        """
        The escaped header values remembered from line to line give the
        lines a fresh escaping gives, and are bounded in number and length;
        a request line is not remembered by its bytes.
        """
        self.patch(logs, "_escaped", {})
        self.patch(logs, "_ESCAPED_MAX", 8)
        lines = []
        for i in range(20):
            request = _request(
                uri=b"/artcasts/k%d\x01\"" % (i % 10,),
                headers={b"User-Agent": [b"ua \x7f %d" % (i % 10,)]},
            )
            lines.append(apacheCombinedLogFormatter(STAMP, request))
            self.assertLessEqual(len(logs._escaped), 8)
        self.assertEqual(lines[:10], lines[10:])
        self.assertIn('"GET /artcasts/k3\\x01\\" HTTP/1.1"', lines[3])
        self.assertTrue(lines[3].endswith('"ua \\x7f 3"'), lines[3])
        apacheCombinedLogFormatter(STAMP, _request(uri=b"/" + b"a" * 300))
        self.assertNotIn((b"GET", b"/" + b"a" * 300, b"HTTP/1.1"), logs._escaped)

    def test_escapeLogItemLeavesPrintableAscii(self) -> None:
        """
        Printable ASCII other than C{"} and C{\\} is left alone, and a byte
        is escaped as C{\\xhh} in lower case.
        """
        self.assertEqual(escapeLogItem(b"/a b?c=d~"), "/a b?c=d~")
        self.assertEqual(escapeLogItem(b"\x1b\xab"), "\\x1b\\xab")


class AccessLogDestinationTests(AccessLogTestsMixin, SynchronousTestCase):
    """
    L{ArtcastSite} writes its access log to standard error or to a file
    rotated by size.
    """

    def test_standardErrorByDefault(self) -> None:
        """
        With no path, or C{-}, each line goes to standard error, flushed, and
        stopping the site leaves standard error open.
        """
        for accessLog in (None, "-"):
            site, stderr, clock = self.makeSite(accessLog)
            self.request(site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            site.stopFactory()
            self.assertEqual(
                stderr.getvalue(), f'127.0.0.1 - - {STAMP} "GET / HTTP/1.1" 200 2 "-" "-"\n'
            )
            self.assertFalse(stderr.closed)

    def test_realStandardErrorNotSysStderr(self) -> None:
        """
        Standard error is the process's own (C{sys.__stderr__}), not
        C{sys.stderr}, which twistd turns into a log of errors.
        """

        class Refuse:
            def write(self, data: str) -> None:
                raise AssertionError("wrote to sys.stderr")

        stream = io.StringIO()
        self.patch(sys, "__stderr__", stream)
        self.patch(sys, "stderr", Refuse())
        site = ArtcastSite(_Answers(), None, reactor=Clock())
        site.startFactory()
        self.addCleanup(site.stopFactory)
        self.request(site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn('"GET / HTTP/1.1" 200 2', stream.getvalue())

    def test_fileCreatedAtFirstLine(self) -> None:
        """
        With a path, the file is created by the first line, not when the site
        starts (under C{twistd --uid} that is after privileges are dropped),
        and the lines are appended to it.
        """
        path = self.mktemp()
        site, stderr, clock = self.makeSite(path)
        self.assertFalse(os.path.exists(path))
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        self.request(site, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        with open(path) as f:
            self.assertEqual(
                f.read(),
                f'127.0.0.1 - - {STAMP} "GET /a HTTP/1.1" 200 2 "-" "-"\n'
                f'127.0.0.1 - - {STAMP} "GET /b HTTP/1.1" 200 2 "-" "-"\n',
            )
        self.assertEqual(stderr.getvalue(), "")

    def test_rotation(self) -> None:
        """
        With a small size and a count of 2, the log rotates to C{.1} then
        C{.2}, never keeps a C{.3}, and every file holds whole lines, the
        newest in the current file.
        """
        folder, path = self.logFolder()
        site, stderr, clock = self.makeSite(path, size=200, count=2)
        sent = []
        for i in range(30):
            sent += self.requestLines(site, 1)
            self.assertLessEqual(
                set(os.listdir(folder)), {"access.log", "access.log.1", "access.log.2"}
            )
        self.assertEqual(
            sorted(os.listdir(folder)), ["access.log", "access.log.1", "access.log.2"]
        )
        kept = self.keptLines(folder, ["access.log.2", "access.log.1", "access.log"])
        self.assertEqual(kept, sent[-len(kept) :])
        self.assertGreater(len(kept), 3)

    def test_writeFailureDoesNotBreakTheAnswer(self) -> None:
        """
        A log that cannot be written does not stop the answer nor the next
        request on the connection; the failure is reported once, not per
        write, and again only after a write has succeeded in between.
        """
        site, stderr, clock = self.makeSite()
        broken = _BrokenFile()
        site._logFile = broken  # type: ignore[assignment]
        response = self.request(
            site,
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(response.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.request(site, b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        broken.broken = False
        self.request(site, b"GET /d HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            broken.written, [f'127.0.0.1 - - {STAMP} "GET /d HTTP/1.1" 200 2 "-" "-"\n']
        )
        broken.broken = True
        self.request(site, b"GET /e HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_formatterFailureDoesNotBreakTheAnswer(self) -> None:
        """
        A log formatter that raises does not stop the answer; the failure is
        reported, and the other lines of the turn are still written.
        """
        clock = Clock()
        clock.advance(PINNED)
        stderr = io.StringIO()

        def formatter(timestamp: str, request: Any) -> str:
            if request.path == b"/bad":
                raise ZeroDivisionError()
            return apacheCombinedLogFormatter(timestamp, request)

        site = ArtcastSite(
            _Answers(), None, reactor=clock, stderr=stderr, logFormatter=formatter
        )
        site.startFactory()
        self.addCleanup(site.stopFactory)
        response = self.request(
            site,
            b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(response.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            stderr.getvalue(), f'127.0.0.1 - - {STAMP} "GET /b HTTP/1.1" 200 2 "-" "-"\n'
        )

    def test_badArguments(self) -> None:
        """
        A size or count below 1, or a file in a folder that does not exist, is
        refused when the site is made.
        """
        missing = os.path.join(self.mktemp(), "access.log")
        for args in [("-", 0, 1), ("-", 1, 0), (missing, 100, 1)]:
            self.assertRaises(ValueError, ArtcastSite, _Answers(), *args, reactor=Clock())


def _line(path: str, agent: str = "-") -> str:
    """
    The access log line of C{GET path} from L{LOCALHOST} at L{STAMP}.
    """
    return f'127.0.0.1 - - {STAMP} "GET {path} HTTP/1.1" 200 2 "-" "{agent}"\n'


class AccessLogBatchingTests(AccessLogTestsMixin, SynchronousTestCase):
    """
    L{ArtcastSite} writes the access log lines of a reactor turn together,
    at the end of the turn, at once past L{ACCESS_LOG_BUFFER}, and when it
    stops.
    """

    def test_oneWritePerTurn(self) -> None:
        """
        Two requests answered in one turn are written in one write, holding
        both lines in order, when the turn ends (the clock advances by 0),
        and not before.
        """
        site, stderr, clock = self.makeSite()
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.request(site, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.assertEqual(stderr.writes, [])
        clock.advance(0)
        self.assertEqual(stderr.writes, [_line("/a") + _line("/b")])
        clock.advance(1)
        self.assertEqual(len(stderr.writes), 1)

    def test_eachTurnItsWrite(self) -> None:
        """
        The lines of a later turn are written at the end of that turn, in
        their own write.
        """
        site, stderr, clock = self.makeSite()
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        self.request(site, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.assertEqual(stderr.writes, [_line("/a")])
        clock.advance(0)
        self.assertEqual(stderr.writes, [_line("/a"), _line("/b")])

    def test_fileOneWritePerTurn(self) -> None:
        """
        With a file as the log, the lines of a turn reach the file when the
        turn ends, not before.
        """
        path = self.mktemp()
        site, stderr, clock = self.makeSite(path)
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.request(site, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.assertFalse(os.path.exists(path))
        clock.advance(0)
        with open(path) as f:
            self.assertEqual(f.read(), _line("/a") + _line("/b"))

    def test_bufferBounded(self) -> None:
        """
        Once the lines held pass L{ACCESS_LOG_BUFFER} characters they are
        written at once, in the same turn; the rest of the turn's lines are
        written when it ends, and every line is written once, in order.
        """
        site, stderr, clock = self.makeSite()
        agent = "a" * 1000
        sent = []
        for i in range(100):
            self.request(
                site,
                b"GET /%d HTTP/1.1\r\nHost: a\r\nUser-Agent: %s\r\n\r\n"
                % (i, agent.encode("ascii")),
                endTurn=False,
            )
            sent.append(_line(f"/{i}", agent))
            held = sum(map(len, sent)) - sum(map(len, stderr.writes))
            self.assertLessEqual(held, ACCESS_LOG_BUFFER)
        self.assertGreaterEqual(len(stderr.writes), 1)
        first = stderr.writes[0]
        self.assertGreater(len(first), ACCESS_LOG_BUFFER)
        self.assertLessEqual(len(first), ACCESS_LOG_BUFFER + len(sent[0]))
        clock.advance(0)
        self.assertEqual("".join(stderr.writes), "".join(sent))

    def test_stopWritesTheRest(self) -> None:
        """
        Stopping the site writes the lines not written yet before it closes
        the log, and leaves no write scheduled.
        """
        path = self.mktemp()
        site, stderr, clock = self.makeSite(path)
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        site.stopFactory()
        with open(path) as f:
            self.assertEqual(f.read(), _line("/a"))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNone(site._accessLog._logFile)  # type: ignore[union-attr]

    def test_stopWritesTheRestToStandardError(self) -> None:
        """
        Stopping the site writes the lines left to standard error too.
        """
        site, stderr, clock = self.makeSite()
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        site.stopFactory()
        self.assertEqual(stderr.writes, [_line("/a")])

    def test_reactorShutdownWritesTheRest(self) -> None:
        """
        On a reactor with a shutdown, the lines left when the reactor shuts
        down are written, in case the site is not stopped first; a site
        stopped before the shutdown no longer waits for it.
        """
        reactor = _ShutdownReactor()
        site, stderr, clock = self.makeSite(clock=reactor)
        self.assertEqual(len(reactor.shutdownTriggers), 1)
        site.stopFactory()
        self.assertEqual(reactor.shutdownTriggers, {})
        site.startFactory()
        self.assertEqual(len(reactor.shutdownTriggers), 1)
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        reactor.shutDown()
        self.assertEqual(stderr.writes, [_line("/a")])

    def test_afterReactorShutdownAtOnce(self) -> None:
        """
        Once the reactor has shut down (it may not run another turn), a line
        is written at once, and the site still stops cleanly afterwards.
        """
        reactor = _ShutdownReactor()
        site, stderr, clock = self.makeSite(clock=reactor)
        reactor.shutDown()
        self.request(site, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        self.assertEqual(stderr.writes, [_line("/b")])
        site.stopFactory()
        self.assertEqual(stderr.writes, [_line("/b")])

    def test_memoryReactorShutdown(self) -> None:
        """
        On a L{MemoryReactorClock} (which cannot remove a trigger), the
        shutdown trigger is added and the site still stops.
        """
        reactor = MemoryReactorClock()
        site, stderr, clock = self.makeSite(clock=reactor)
        self.request(site, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", endTurn=False)
        [(flush, args, kw)] = reactor.triggers["after"]["shutdown"]
        flush(*args, **kw)
        self.assertEqual(stderr.writes, [_line("/a")])
        site.stopFactory()

    def test_rotationWithBatchedLines(self) -> None:
        """
        Lines written together rotate the file exactly where lines written
        one turn at a time do: each file ends with the line that brought it
        to its size, so the files are the same.
        """
        files = []
        names = ["access.log", "access.log.1", "access.log.2", "access.log.3"]
        for batched in (False, True):
            folder, path = self.logFolder()
            site, stderr, clock = self.makeSite(path, size=200, count=3)
            self.requestLines(site, 11, endTurn=not batched)
            clock.advance(0)
            self.assertEqual(sorted(os.listdir(folder)), names)
            files.append([self.keptLines(folder, [name]) for name in names])
        self.assertEqual(files[0], files[1])
        # Each rotated file passed the size with its last line only.
        for lines in files[1][1:]:
            self.assertGreaterEqual(len("".join(lines)), 200)
            self.assertLess(len("".join(lines[:-1])), 200)

    def test_rotationOfOneBigTurn(self) -> None:
        """
        A turn whose lines fill several files rotates as many times as
        needed: whole lines in each file, the newest in the current one, no
        more rotated files than the count.
        """
        folder, path = self.logFolder()
        site, stderr, clock = self.makeSite(path, size=300, count=2)
        sent = self.requestLines(site, 30, endTurn=False)
        clock.advance(0)
        self.assertEqual(
            sorted(os.listdir(folder)), ["access.log", "access.log.1", "access.log.2"]
        )
        kept = self.keptLines(folder, ["access.log.2", "access.log.1", "access.log"])
        self.assertEqual(kept, sent[-len(kept) :])
        self.assertGreater(len(kept), 5)


class ErrorLogTests(SynchronousTestCase):
    """
    L{errorLogObserver} and L{ErrorLogService} write warnings, errors and
    failures, and nothing else.
    """

    def publishTo(
        self, path: str | None, size: int = 10_000_000, count: int = 100, **kw: Any
    ) -> tuple[Logger, ErrorLogService]:
        """
        A running L{ErrorLogService} on a private publisher, and a logger
        that publishes there.
        """
        publisher = LogPublisher()
        service = ErrorLogService(errorLogObserver(path, size, count, **kw), publisher)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return Logger(namespace="artcast.test", observer=publisher), service

    def test_warningWrittenInfoNot(self) -> None:
        """
        A warning goes to the file as a twistd-style line; info and debug do
        not.
        """
        path = self.mktemp()
        log, service = self.publishTo(path, timeFormat=None)
        log.info("listening on {port}", port=8888)
        log.debug("nothing to see")
        log.warn("dropped {count} datagrams", count=3)
        with open(path) as f:
            self.assertEqual(f.read(), "- [artcast.test#warn] dropped 3 datagrams\n")

    def test_errorAndCriticalWritten(self) -> None:
        """
        Errors and critical events are written.
        """
        path = self.mktemp()
        log, service = self.publishTo(path, timeFormat=None)
        log.error("bad")
        log.critical("worse")
        with open(path) as f:
            self.assertEqual(
                f.read(),
                "- [artcast.test#error] bad\n- [artcast.test#critical] worse\n",
            )

    def test_timestampAsTwistd(self) -> None:
        """
        By default each line starts with the event's time in twistd's format.
        """
        stream = io.StringIO()
        observer = errorLogObserver(None, stderr=stream)
        observer(
            {
                "log_level": LogLevel.warn,
                "log_format": "hot",
                "log_namespace": "n",
                "log_time": PINNED,
            }
        )
        self.assertEqual(stream.getvalue(), formatTime(PINNED) + " [n#warn] hot\n")

    def test_failureWithTraceback(self) -> None:
        """
        A failure is written with its traceback, continuation lines indented,
        even when logged below warn.
        """
        path = self.mktemp()
        log, service = self.publishTo(path, timeFormat=None)
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("handler broke for {key}", key="test/tick", level=LogLevel.info)
        with open(path) as f:
            text = f.read()
        lines = text.splitlines()
        self.assertEqual(lines[0], "- [artcast.test#info] handler broke for test/tick")
        self.assertIn("\tTraceback (most recent call last):", lines)
        self.assertIn("\tbuiltins.ZeroDivisionError: division by zero", lines)
        self.assertTrue(all(line.startswith("\t") for line in lines[1:]), lines)

    def test_standardError(self) -> None:
        """
        With no path, or C{-}, the error log goes to standard error.
        """
        for path in (None, "-"):
            stream = io.StringIO()
            log, service = self.publishTo(path, timeFormat=None, stderr=stream)
            log.warn("w")
            log.info("i")
            service.stopService()
            self.assertEqual(stream.getvalue(), "- [artcast.test#warn] w\n")
            self.assertFalse(stream.closed)

    def test_rotation(self) -> None:
        """
        With a small size and a count of 2, the error log rotates to C{.1}
        and C{.2} and never keeps more; an event with a traceback is never
        split between two files.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        path = os.path.join(folder, "error.log")
        log, service = self.publishTo(path, size=300, count=2, timeFormat=None)
        for i in range(20):
            try:
                raise ValueError(i)
            except ValueError:
                log.failure("event {i}", i=i)
            self.assertLessEqual(
                set(os.listdir(folder)), {"error.log", "error.log.1", "error.log.2"}
            )
        self.assertEqual(
            sorted(os.listdir(folder)), ["error.log", "error.log.1", "error.log.2"]
        )
        for name in ("error.log.2", "error.log.1", "error.log"):
            with open(os.path.join(folder, name)) as f:
                events = re.split(r"\n(?=- \[)", f.read().rstrip("\n"))
            for event in events:
                # twistd's format leaves a lone tab after a traceback.
                lines = event.rstrip("\t\n").split("\n")
                first = re.fullmatch(r"- \[artcast\.test#critical\] event (\d+)", lines[0])
                self.assertIsNotNone(first, event)
                assert first is not None
                self.assertEqual(lines[-1], f"\tbuiltins.ValueError: {first.group(1)}")


    def test_serviceAddsAndRemoves(self) -> None:
        """
        The service creates the file and observes the publisher only while it
        runs, and closes the file when it stops.
        """
        path = self.mktemp()
        publisher = LogPublisher()
        log = Logger(namespace="artcast.test", observer=publisher)
        service = ErrorLogService(errorLogObserver(path, timeFormat=None), publisher)
        log.warn("before")
        self.assertFalse(os.path.exists(path))
        service.startService()
        self.assertTrue(os.path.exists(path))
        log.warn("during")
        service.stopService()
        log.warn("after")
        with open(path) as f:
            self.assertEqual(f.read(), "- [artcast.test#warn] during\n")
        self.assertIsNone(service.observer._destination._logFile)  # type: ignore[union-attr]

    def test_badArguments(self) -> None:
        """
        A size or count below 1, or a file in a folder that does not exist, is
        refused when the observer is made.
        """
        missing = os.path.join(self.mktemp(), "error.log")
        for args in [("-", 0, 1), ("-", 1, 0), (missing, 100, 1)]:
            self.assertRaises(ValueError, errorLogObserver, *args)


class SpecialFileTests(SynchronousTestCase):
    """
    A log path that is not a regular file is written to, never rotated.
    """

    def test_fifoNotRotated(self) -> None:
        """
        A FIFO given as the access log receives the lines and is never renamed
        by rotation, however small the size.
        """
        import os

        folder = self.mktemp()
        os.makedirs(folder)
        fifo = os.path.join(folder, "log.fifo")
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        destination = _destination(fifo, 10, 1, None)
        for _ in range(5):
            destination.write("0123456789 line\n")
        destination.close()
        self.assertEqual(os.listdir(folder), ["log.fifo"])
        self.assertEqual(os.read(reader, 1000), b"0123456789 line\n" * 5)
