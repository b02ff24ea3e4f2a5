# -*- test-case-name: tests.test_logs -*-
"""
Tests for L{artcast.logs}: the Apache combined access log and the error log.
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
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, LogPublisher, formatTime
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from artcast.logs import (
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
    An access log destination whose writes fail, as on a full disk.
    """

    path = "/full/disk"

    def write(self, data: str) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


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
    ) -> tuple[ArtcastSite, io.StringIO, Clock]:
        """
        Start a site on a clock pinned to L{PINNED}, its standard error a
        L{io.StringIO}.
        """
        clock = Clock()
        clock.advance(PINNED)
        stderr = io.StringIO()
        site = ArtcastSite(_Answers(), accessLog, size, count, reactor=clock, stderr=stderr)
        site.startFactory()
        self.addCleanup(site.stopFactory)  # type: ignore[attr-defined]
        return site, stderr, clock

    def request(
        self, site: ArtcastSite, raw: bytes, peer: Any = LOCALHOST
    ) -> bytes:
        """
        Send the raw bytes of a request from C{peer} and return what the
        server answered.
        """
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        channel.connectionLost(Failure(ConnectionDone()))
        return transport.value()


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
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        path = os.path.join(folder, "access.log")
        site, stderr, clock = self.makeSite(path, size=200, count=2)
        sent = []
        for i in range(30):
            self.request(site, b"GET /line/%d HTTP/1.1\r\nHost: a\r\n\r\n" % (i,))
            sent.append(f'127.0.0.1 - - {STAMP} "GET /line/{i} HTTP/1.1" 200 2 "-" "-"\n')
            self.assertLessEqual(
                set(os.listdir(folder)), {"access.log", "access.log.1", "access.log.2"}
            )
        self.assertEqual(
            sorted(os.listdir(folder)), ["access.log", "access.log.1", "access.log.2"]
        )
        kept = []
        for name in ("access.log.2", "access.log.1", "access.log"):
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            self.assertTrue(text.endswith("\n"))
            kept.extend(text.splitlines(keepends=True))
        self.assertEqual(kept, sent[-len(kept) :])
        self.assertGreater(len(kept), 3)

    def test_writeFailureDoesNotBreakTheAnswer(self) -> None:
        """
        A log that cannot be written does not stop the answer nor the next
        request on the connection; the failure is reported once, not per
        request.
        """
        site, stderr, clock = self.makeSite()
        site._logFile = _BrokenFile()  # type: ignore[assignment]
        response = self.request(
            site,
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        self.assertEqual(response.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_badArguments(self) -> None:
        """
        A size or count below 1, or a file in a folder that does not exist, is
        refused when the site is made.
        """
        missing = os.path.join(self.mktemp(), "access.log")
        for args in [("-", 0, 1), ("-", 1, 0), (missing, 100, 1)]:
            self.assertRaises(ValueError, ArtcastSite, _Answers(), *args, reactor=Clock())


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
