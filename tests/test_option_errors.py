"""
Tests for the answers of C{twistd artcast} to option mistakes (one line on
standard error), C{--version}, and the noise of its logs: warnings printed
once, early warnings in C{--error-log}, the open-files warning's threshold.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher, capturedLogs
from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import artcast
from artcast.server import tap, workers
from artcast.server.logs import (
    MAX_EARLY_EVENTS,
    ErrorLogService,
    errorLogObserver,
    repeatsTwistdLog,
)
from artcast.server.shutdown import ServingService
from tests.harness import ArtcastProcess
from tests.test_connections import makeLimiter

#: The folder holding the C{artcast} package and the plugin.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(artcast.__file__)))

#: Seconds a C{twistd artcast} that only parses its options may take.
PARSE_LIMIT = 60


class TwistdParsingTests(SynchronousTestCase):
    """
    Under twistd's own option parser, a mistake is one line on standard
    error, and a non-zero exit; each option family says what would work.
    """

    def twistdError(self, *args: str) -> str:
        """
        Parse C{twistd artcast ARGS} as twistd does, expecting a mistake.

        @return: The one line written to standard error, without its end.
        """
        stderr = io.StringIO()
        stdout = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.patch(sys, "stdout", stdout)
        exit = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["artcast", *args]
        )
        self.assertEqual(exit.code, 1)
        self.assertEqual(stdout.getvalue(), "")
        text = stderr.getvalue()
        self.assertTrue(text.startswith("twistd artcast: "), text)
        self.assertEqual(text.count("\n"), 1, text)
        self.assertTrue(text.endswith("\n"))
        return text.rstrip("\n")

    def assertNames(self, line: str, *words: str) -> None:
        """
        Each of C{words} is in C{line}.
        """
        for word in words:
            self.assertIn(word, line)

    def test_endpoints(self) -> None:
        """
        A C{--client-port} that is no endpoint, a TCP port that is no
        number, an unknown kind and an C{ssl:} key that does not exist are
        each one line with an example that works.
        """
        for value in ("abc", "tcp:abc", "tcp:99999", "onion:80", "ssl:443:privateKey=/no/such.pem"):
            line = self.twistdError("--client-port", value)
            self.assertNames(line, f"--client-port {value}", "tcp:8888")

    def test_numbers(self) -> None:
        """
        Ports, counts, sizes, TTLs and seconds that are not numbers, or out
        of range, name the option, the value and the range.
        """
        for option, value, hint in [
            ("--data-port", "x", "1 to 65535"),
            ("--data-port", "0", "1 to 65535"),
            ("--register-port", "70000", "1 to 65535"),
            ("--history", "0", "at least 1"),
            ("--max-store-bytes", "lots", "at least 1"),
            ("--poll-timeout", "-3", "e.g. 30"),
            ("--idle-timeout", "soon", "e.g. 30"),
            ("--source-max-skew", "-1", "0 for no check"),
            ("--publish-ttl", "300", "0 (this host) to 255"),
            ("--workers", "x", "number of processes"),
        ]:
            line = self.twistdError(option, value)
            self.assertNames(line, f"{option} {value}:", hint)

    def test_workersRange(self) -> None:
        """
        A C{--workers} count out of range names the range.
        """
        self.assertNames(self.twistdError("--workers", "-1"), "--workers", "-1", "from 0 to")

    def test_files(self) -> None:
        """
        Key, token and template files that are missing or malformed name the
        option and the path.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        bad = os.path.join(folder, "bad")
        with open(bad, "w") as f:
            f.write("\n")
        for option in ("--source-key-file", "--publish-token-file", "--upstream-token-file"):
            extra = ["--upstream", "http://127.0.0.1:1/"] if option.startswith("--upstream") else []
            for path in ("/no/such/file", bad):
                line = self.twistdError(*extra, option, path)
                self.assertNames(line, f"{option} {path}")
        line = self.twistdError("--templates", "/no/such/folder")
        self.assertNames(line, "--templates /no/such/folder", "not a folder")
        line = self.twistdError("--error-log", "/no/such/folder/error.log")
        self.assertNames(line, "--error-log", "/no/such/folder", "does not exist")

    def test_urls(self) -> None:
        """
        C{--upstream}, C{--bus} and C{--mqtt} URLs of the wrong scheme are
        one line naming the option and the value.
        """
        for option, value, hint in [
            ("--upstream", "ftp://example.org/", "http://"),
            ("--bus", "http://127.0.0.1:6379", "redis://"),
            ("--mqtt", "http://127.0.0.1:1883", "mqtt://"),
        ]:
            extra = ["--mqtt-topic", "a/b"] if option == "--mqtt" else []
            line = self.twistdError(option, value, *extra)
            self.assertNames(line, option, hint)

    def test_groupsAndInterfaces(self) -> None:
        """
        A group that is not multicast, or not an address, and an interface
        that is not an address, say what would work.
        """
        for option, value, hint in [
            ("--data-group", "10.0.0.1", "224.0.0.0/4"),
            ("--register-group", "lobby", "224.1.1.1"),
            ("--interface", "eth0", "127.0.0.1"),
        ]:
            self.assertNames(self.twistdError(option, value), f"{option} {value}:", hint)

    def test_unknownOption(self) -> None:
        """
        An option that does not exist, or one without its value, points to
        C{--help} instead of printing the help.
        """
        self.assertNames(self.twistdError("--bogus"), "--bogus", "twistd artcast --help")
        self.assertNames(self.twistdError("--client-port"), "--client-port", "--help")

    def test_workersUid(self) -> None:
        """
        C{--workers} with a C{--uid} that cannot run the interpreter is one
        line before anything starts, with the reason.
        """
        asked: list[tuple[int, Any]] = []

        def problem(uid: int, gid: Any) -> str:
            asked.append((uid, gid))
            return "the folder /home/me is closed to that user"

        self.patch(workers, "interpreterProblem", problem)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(
            SystemExit,
            ServerOptions().parseOptions,
            ["--uid", "4321", "artcast", "--workers", "2"],
        )
        self.assertEqual(exit.code, 1)
        self.assertEqual(asked, [(4321, None)])
        self.assertEqual(
            stderr.getvalue(),
            "twistd artcast: --workers 2 --uid 4321: the folder /home/me is "
            "closed to that user\n",
        )

    def test_libraryRaises(self) -> None:
        """
        Outside twistd (no parent), a mistake is still a L{UsageError}
        naming the option and the value.
        """
        error = self.assertRaises(
            UsageError, tap.Options().parseOptions, ["--data-port", "x"]
        )
        self.assertEqual(str(error), "--data-port x: not a whole number; use 1 to 65535")


class InterpreterProblemTests(SynchronousTestCase):
    """
    L{workers.interpreterProblem} tells whether another user can run the
    interpreter.
    """

    def statWith(self, modes: dict[str, tuple[int, int, int]]) -> Any:
        """
        A fake L{os.stat}: C{modes} maps a path to (mode, uid, gid); any
        other path is C{0o755} owned by root.
        """

        def fakeStat(path: str) -> os.stat_result:
            mode, uid, gid = modes.get(path, (0o755, 0, 0))
            return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

        return fakeStat

    def problem(self, modes: dict[str, tuple[int, int, int]], groups: set[int] = frozenset()) -> Any:
        return workers.interpreterProblem(
            1000, None, "/opt/venv/bin/python",
            statPath=self.statWith(modes), groupsOf=lambda uid, gid: set(groups),
        )

    def test_runnable(self) -> None:
        """
        Folders and file open to others: no problem; root has none either.
        """
        self.assertIsNone(self.problem({}))
        self.assertIsNone(workers.interpreterProblem(0, None, "/root/venv/bin/python"))

    def test_closedFolder(self) -> None:
        """
        A folder on the way closed to the user is named.
        """
        reason = self.problem({"/opt/venv": (0o700, 0, 0)})
        self.assertIn("/opt/venv is closed", reason)
        self.assertIn("uid 1000", reason)

    def test_groupAndOwner(self) -> None:
        """
        The owner's bits count for the owner, the group's for its members.
        """
        self.assertIsNone(self.problem({"/opt/venv": (0o700, 1000, 0)}))
        self.assertIsNone(self.problem({"/opt/venv": (0o750, 0, 50)}, {50}))
        self.assertIsNotNone(self.problem({"/opt/venv": (0o075, 1000, 0)}))

    def test_notExecutable(self) -> None:
        """
        An interpreter the user may not execute is named.
        """
        reason = self.problem({"/opt/venv/bin/python": (0o750, 0, 0)})
        self.assertIn("cannot execute /opt/venv/bin/python", reason)


class RealTwistdTests(SynchronousTestCase):
    """
    The real C{twistd artcast}, run from this tree.
    """

    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run C{twistd -n artcast ARGS} to its end (bounded).
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        return subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile", "", "artcast", *args],
            cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True,
            timeout=PARSE_LIMIT,
        )

    def test_badEndpoint(self) -> None:
        """
        C{--client-port abc} is one line on standard error, nothing on
        standard output, and exit status 1.
        """
        result = self.twistd("--client-port", "abc")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            "twistd artcast: --client-port abc: not an endpoint description; "
            "try 8888, tcp:8888 or tcp:8888:interface=127.0.0.1\n",
        )

    def test_badNumber(self) -> None:
        """
        C{--data-port x} is one line naming the option, the value and the
        range.
        """
        result = self.twistd("--data-port", "x")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            "twistd artcast: --data-port x: not a whole number; use 1 to 65535\n",
        )

    def test_help(self) -> None:
        """
        C{--help} still prints the whole help, and exits 0.
        """
        result = self.twistd("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("--client-port=", result.stdout)
        self.assertGreater(result.stdout.count("\n"), 20)

    def test_version(self) -> None:
        """
        C{--version} prints Artcast's version and Twisted's, one line each.
        """
        from importlib.metadata import version

        from twisted import copyright

        result = self.twistd("--version")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(
            result.stdout,
            f"Artcast version: {version('artcast')}\n"
            f"Twisted version: {copyright.version}\n",
        )


class FakeStat:
    """
    What L{repeatsTwistdLog} reads of a file descriptor.
    """

    def __init__(self, device: int, inode: int) -> None:
        self.st_dev = device
        self.st_ino = inode


class RepeatsTwistdLogTests(SynchronousTestCase):
    """
    L{repeatsTwistdLog}: an error log on standard error is left out when it
    would print every warning a second time.
    """

    def test_sameFile(self) -> None:
        """
        Under C{twistd -n} (or C{--logfile -}) with standard output and error
        one file, the error log on standard error would repeat twistd's.
        """
        same = lambda fd: FakeStat(1, 7)  # noqa: E731
        self.assertTrue(repeatsTwistdLog(None, {"nodaemon": True, "logfile": None}, same))
        self.assertTrue(repeatsTwistdLog(None, {"nodaemon": True, "logfile": "-"}, same))

    def test_otherwise(self) -> None:
        """
        A file given, no twistd, a twistd log file, syslog, or standard
        output and error apart: the error log is kept.
        """
        same = lambda fd: FakeStat(1, 7)  # noqa: E731
        apart = lambda fd: FakeStat(1, fd)  # noqa: E731
        nodaemon = {"nodaemon": True, "logfile": None}
        self.assertFalse(repeatsTwistdLog("/var/log/a.log", nodaemon, same))
        self.assertFalse(repeatsTwistdLog("-", nodaemon, same))
        self.assertFalse(repeatsTwistdLog(None, None, same))
        self.assertFalse(repeatsTwistdLog(None, {"nodaemon": True, "logfile": "t.log"}, same))
        self.assertFalse(repeatsTwistdLog(None, {"nodaemon": False, "logfile": None}, same))
        self.assertFalse(repeatsTwistdLog(None, dict(nodaemon, syslog=True), same))
        self.assertFalse(repeatsTwistdLog(None, nodaemon, apart))

    def test_inService(self) -> None:
        """
        The server built under such a twistd has no error log service; with
        C{--error-log} it has one.
        """
        from tests.test_tap import MulticastMemoryReactor

        self.patch(os, "fstat", lambda fd: os.stat_result((0,) * 10))
        for extra, expected in [((), 0), (("--error-log", "-"), 1)]:
            options = tap.Options()
            options.parent = {"nodaemon": True, "logfile": None}  # type: ignore[assignment]
            options.parseOptions(list(extra))
            service = tap.makeService(options, MulticastMemoryReactor())
            found = [s for s in service if isinstance(s, ErrorLogService)]
            self.assertEqual(len(found), expected)


class EarlyWarningTests(SynchronousTestCase):
    """
    L{ErrorLogService} writes the warnings logged while the services start
    with privileges, before its log was opened.
    """

    def test_heldThenWritten(self) -> None:
        """
        A warning logged between C{privilegedStartService} and
        C{startService} is written once, when the log opens; an info event is
        not held.
        """
        stream = io.StringIO()
        publisher = LogPublisher()
        service = ErrorLogService(errorLogObserver(None, stderr=stream), publisher)
        log = Logger(namespace="early", observer=publisher)
        service.privilegedStartService()
        log.warn("Only {n} open files", n=5)
        log.info("starting")
        self.assertEqual(stream.getvalue(), "")
        service.startService()
        self.addCleanup(service.stopService)
        log.warn("later")
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("Only 5 open files", lines[0])
        self.assertIn("later", lines[1])

    def test_bounded(self) -> None:
        """
        At most L{MAX_EARLY_EVENTS} events are held.
        """
        stream = io.StringIO()
        publisher = LogPublisher()
        service = ErrorLogService(errorLogObserver(None, stderr=stream), publisher)
        log = Logger(namespace="early", observer=publisher)
        service.privilegedStartService()
        for i in range(MAX_EARLY_EVENTS * 3):
            log.warn("warning {i}", i=i)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(len(stream.getvalue().splitlines()), MAX_EARLY_EVENTS)


class EarlyWarningIntegrationTests(TestCase):
    """
    The real C{twistd -n artcast} writes its early warnings to
    C{--error-log}.
    """

    @inlineCallbacks
    def test_openFilesWarning(self) -> Any:
        """
        The open-files warning of a C{--max-clients} past the hard limit,
        logged while starting with privileges, reaches C{--error-log}.
        """
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 10_000_000:
            raise SkipTest("no finite open-files limit to exceed")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        errors = os.path.join(folder, "error.log")
        proc = ArtcastProcess(
            self, extra=["--max-clients", str(hard + 1000), "--error-log", errors]
        )
        yield proc.start()
        with open(errors) as log:
            text = log.read()
        self.assertIn(f"--max-clients {hard + 1000} needs", text)


class FileLimitWarningTests(SynchronousTestCase):
    """
    The open-files warning compares the limit with what C{--max-clients}
    needs: the clients and the server's own files.
    """

    def warnings(self, limit: int) -> list[dict[str, Any]]:
        """
        The warnings of starting a server for 100 clients under C{limit}.
        """
        clock = Clock()
        limiter = makeLimiter(clock, maxClients=100)
        service = ServingService(limiter, clock, fileLimit=lambda wanted: limit)
        with capturedLogs() as events:
            service.privilegedStartService()
        return [e for e in events if e["log_level"] == LogLevel.warn]

    def test_enough(self) -> None:
        """
        A limit of 100 clients plus 64 files of headroom gives no warning.
        """
        self.assertEqual(self.warnings(164), [])

    def test_tooFew(self) -> None:
        """
        One file fewer gives a warning with the numbers that would work.
        """
        [warning] = self.warnings(163)
        self.assertEqual((warning["limit"], warning["needed"], warning["fits"]), (163, 164, 99))
