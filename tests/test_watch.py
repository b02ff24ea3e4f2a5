"""
Tests for Chadburn in Artcast: L{artcast.watch} (C{artcast-watch PATH KEY})
and C{artcast-follow URL KEY --write PATH} (L{artcast.client}), alone with a
L{Clock}, and end to end against a real C{twistd artcast}.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.client import Datum, run, valueText, writeAtomically
from artcast.watch import FileWatcher, NotSent, fileValue, main, readValue
from tests.harness import ROOT, STOP_LIMIT, ArtcastProcess, _Watcher

TOKEN = "panel-t0ken-0123456789abcdef"


class FileValueTests(SynchronousTestCase):
    """
    L{fileValue} and L{readValue}: what a file's content is sent as.
    """

    def test_json(self) -> None:
        """
        Content that is strict JSON is sent as its value, trailing newline
        or not.
        """
        self.assertEqual(fileValue(b'{"state": "ahead"}\n'), {"state": "ahead"})
        self.assertEqual(fileValue(b"42"), 42)
        self.assertEqual(fileValue(b'"quoted"\n'), "quoted")

    def test_text(self) -> None:
        """
        Other text is sent as a string without its final newline (one, LF or
        CRLF), other newlines kept.
        """
        self.assertEqual(fileValue(b"full ahead\n"), "full ahead")
        self.assertEqual(fileValue(b"stop\r\n"), "stop")
        self.assertEqual(fileValue(b"a\nb\n\n"), "a\nb\n")
        self.assertEqual(fileValue("h\u00e5vard".encode()), "h\u00e5vard")
        self.assertEqual(fileValue(b"NaN"), "NaN")
        self.assertEqual(fileValue(b""), "")

    def test_binary(self) -> None:
        """
        Bytes that are not UTF-8, or hold a NUL, are refused as binary.
        """
        for data in [b"\xff\xfe", b"abc\x00def", b"caf\xe9"]:
            with self.assertRaises(NotSent) as caught:
                fileValue(data)
            self.assertEqual(caught.exception.reason, "binary")

    def test_readProblems(self) -> None:
        """
        A missing file, one that cannot be read (a directory) and one larger
        than the bound are refused with their reason.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        big = os.path.join(folder, "big")
        with open(big, "wb") as f:
            f.write(b"x" * 101)
        for path, reason in [(os.path.join(folder, "none"), "missing"),
                             (folder, "unreadable"), (big, "tooLarge")]:
            with self.assertRaises(NotSent) as caught:
                readValue(path, maxValueSize=100)
            self.assertEqual(caught.exception.reason, reason)
        self.assertEqual(readValue(big, maxValueSize=101), (b"x" * 101, "x" * 101))


class _FakeNotifier:
    """
    Stands for L{twisted.internet.inotify.INotify}: remembers the watch.
    """

    def __init__(self) -> None:
        self.watches: list[tuple[FilePath[Any], int, list[Any]]] = []
        self.lost = False

    def watch(self, path: FilePath[Any], mask: int, callbacks: list[Any]) -> None:
        self.watches.append((path, mask, callbacks))

    def loseConnection(self) -> None:
        self.lost = True

    def event(self, path: str, mask: int = 0x80) -> None:
        for _, _, callbacks in self.watches:
            for callback in callbacks:
                callback(None, FilePath(os.fsencode(path)), mask)


class FileWatcherTests(SynchronousTestCase):
    """
    L{FileWatcher} with a L{Clock}, polling or with a fake notifier.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "status")
        self.published: list[tuple[str, object]] = []
        self.events: list[dict[str, Any]] = []

    def publish(self, key: str, value: object) -> str:
        self.published.append((key, value))
        return f"src.1.{len(self.published)}"

    def write(self, data: bytes, path: str | None = None) -> None:
        with open(path or self.path, "wb") as f:
            f.write(data)

    def watcher(self, **kw: Any) -> FileWatcher:
        kw.setdefault("poll", 0.5)
        watcher = FileWatcher(self.clock, self.path, "panel/status", self.publish,
                              log=Logger(observer=self.events.append), **kw)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        return watcher

    def turn(self) -> None:
        """
        Let a poll (0.5 s) and the debounce after it (0.05 s) pass.
        """
        self.clock.advance(0.5)
        self.clock.advance(0.05)

    def values(self) -> list[object]:
        return [value for _, value in self.published]

    def test_sendsAtStartAndOnChange(self) -> None:
        """
        The file's value is sent at start, and again a poll and a debounce
        after it changes; ids go to C{sent}.
        """
        self.write(b'{"telegraph": "ahead"}\n')
        ids: list[str] = []
        watcher = self.watcher(sent=ids.append)
        self.assertEqual(self.published, [("panel/status", {"telegraph": "ahead"})])
        self.write(b"stop\n")
        self.clock.advance(0.5)
        self.assertEqual(len(self.published), 1)
        self.clock.advance(0.05)
        self.assertEqual(self.values(), [{"telegraph": "ahead"}, "stop"])
        self.assertEqual(ids, ["src.1.1", "src.1.2"])
        self.assertEqual(watcher.counts["sent"], 2)

    def test_debounced(self) -> None:
        """
        Changes closer together than the debounce are read once, after the
        last of them.
        """
        self.write(b"1")
        notifier = _FakeNotifier()
        self.watcher(poll=None, notifier=notifier, debounce=0.05)
        [(path, mask, _)] = notifier.watches
        self.assertEqual(path.path, self.folder)
        for n in range(2, 6):
            self.write(str(n).encode())
            notifier.event(self.path, 0x02)
            self.clock.advance(0.04)
        self.assertEqual(self.values(), [1])
        self.clock.advance(0.01)
        self.assertEqual(self.values(), [1, 5])

    def test_doneReadAtOnce(self) -> None:
        """
        A writer that is done (a close after writing, a rename into place)
        has the file read in the reactor's next turn, not after the debounce,
        even while a debounce of earlier changes is pending.
        """
        self.write(b"1")
        notifier = _FakeNotifier()
        self.watcher(poll=None, notifier=notifier, debounce=0.05)
        self.write(b"2")
        notifier.event(self.path, 0x02)
        notifier.event(self.path, 0x08)
        self.clock.advance(0)
        self.assertEqual(self.values(), [1, 2])
        temporary = self.path + ".new"
        self.write(b"3", temporary)
        os.replace(temporary, self.path)
        notifier.event(self.path, 0x80)
        self.clock.advance(0)
        self.assertEqual(self.values(), [1, 2, 3])

    def test_otherFilesIgnored(self) -> None:
        """
        Events about other files of the directory do not read the file.
        """
        self.write(b"1")
        notifier = _FakeNotifier()
        watcher = self.watcher(poll=None, notifier=notifier)
        notifier.event(os.path.join(self.folder, "status.tmp"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(watcher.counts["unchanged"], 0)
        watcher.stopService()
        self.assertTrue(notifier.lost)

    def test_unchangedNotSent(self) -> None:
        """
        A change that leaves the content as it was (a touch) sends nothing.
        """
        self.write(b"same")
        notifier = _FakeNotifier()
        watcher = self.watcher(poll=None, notifier=notifier)
        notifier.event(self.path, 0x04)
        self.clock.advance(1)
        self.assertEqual(self.values(), ["same"])
        self.assertEqual(watcher.counts["unchanged"], 1)

    def test_rename(self) -> None:
        """
        A file replaced by a rename is followed, as often as it is replaced.
        """
        self.write(b"first")
        self.watcher()
        for text in [b"second", b"third"]:
            temporary = self.path + ".new"
            self.write(text, temporary)
            os.replace(temporary, self.path)
            self.turn()
        self.assertEqual(self.values(), ["first", "second", "third"])

    def test_deleted(self) -> None:
        """
        A deleted file is logged once while it stays away, counted, and
        sent again when it comes back; a missing file at start is waited for.
        """
        watcher = self.watcher()
        self.assertEqual(self.values(), [])
        self.write(b"here")
        self.turn()
        os.unlink(self.path)
        for _ in range(3):
            self.turn()
        self.write(b"back")
        self.turn()
        self.assertEqual(self.values(), ["here", "back"])
        self.assertEqual(watcher.counts["missing"], 2)
        missing = [e for e in self.events if "missing" in e["log_format"]]
        self.assertEqual(len(missing), 2)

    def test_tooLargeAndBinarySkipped(self) -> None:
        """
        A file past the size bound, or binary, is skipped, counted and
        logged, and the next good content is sent.
        """
        self.write(b"ok")
        watcher = self.watcher(maxValueSize=10)
        for data in [b"y" * 11, b"\x89PNG\r\n\x1a\n\x00", b"fine"]:
            self.write(data)
            self.turn()
        self.assertEqual(self.values(), ["ok", "fine"])
        self.assertEqual((watcher.counts["tooLarge"], watcher.counts["binary"]), (1, 1))
        warned = [e for e in self.events if "not sent" in e["log_format"]]
        self.assertEqual([e["reason"] for e in warned], ["tooLarge", "binary"])

    def test_badContentLogBounded(self) -> None:
        """
        Bad content seen again and again is logged at a bounded rate, each
        time counted.
        """
        self.write(b"\xff")
        notifier = _FakeNotifier()
        watcher = self.watcher(poll=None, notifier=notifier)
        for _ in range(100):
            notifier.event(self.path)
            self.clock.advance(0.06)
        self.assertEqual(watcher.counts["binary"], 101)
        self.assertLessEqual(len(self.events), 10)

    def test_notReadyRetried(self) -> None:
        """
        While the source is not ready (L{RuntimeError}), the send is tried
        again; a value it refuses (L{ValueError}) is counted as rejected.
        """
        self.write(b"1")
        answers: list[Any] = [RuntimeError("not yet"), "src.1.1", ValueError("too big")]

        def publish(key: str, value: object) -> str:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            self.published.append((key, value))
            return answer

        watcher = FileWatcher(self.clock, self.path, "k", publish, poll=0.5,
                              log=Logger(observer=self.events.append))
        watcher.startService()
        self.clock.advance(0.1)
        self.assertEqual(self.values(), [1])
        self.write(b"2")
        self.turn()
        self.assertEqual(watcher.counts["rejected"], 1)
        watcher.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badArguments(self) -> None:
        """
        C{artcast-watch} refuses a bad key and a missing directory with
        status 2 before starting anything.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(main([self.path, "a//b"]), 2)
        self.assertEqual(main([os.path.join(self.folder, "no", "f"), "k"]), 2)
        self.assertIn("no such directory", err.getvalue())


class WriteTests(SynchronousTestCase):
    """
    C{artcast-follow --write}: L{writeAtomically} and L{valueText}.
    """

    def test_valueText(self) -> None:
        """
        A JSON string is written as its bare text, anything else as its JSON
        text.
        """
        self.assertEqual(valueText("accepted"), "accepted")
        self.assertEqual(valueText('"q"'), '"q"')
        self.assertEqual(valueText({"pressed": True}), '{"pressed":true}')
        self.assertEqual(valueText(["\u00e5", 1.5, None]), '["\u00e5",1.5,null]')
        self.assertEqual(valueText("42"), "42")

    def test_atomic(self) -> None:
        """
        The file is replaced by a rename (a new inode, never truncated in
        place), keeps its permissions, and no temporary file is left.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "accepted")
        writeAtomically(path, b"one")
        os.chmod(path, 0o640)
        before = os.stat(path).st_ino
        with open(path, "rb") as reader:
            writeAtomically(path, b"two")
            self.assertEqual(reader.read(), b"one")
        self.assertNotEqual(os.stat(path).st_ino, before)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(os.listdir(folder), ["accepted"])

    def test_failureLeavesNothing(self) -> None:
        """
        A write that fails raises L{OSError} and leaves no temporary file.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(folder, "accepted"))
        with self.assertRaises(OSError):
            writeAtomically(os.path.join(folder, "accepted"), b"x")
        self.assertEqual(os.listdir(folder), ["accepted"])
        with self.assertRaises(OSError):
            writeAtomically(os.path.join(folder, "none", "f"), b"x")

    def test_runWrites(self) -> None:
        """
        C{--write} writes each followed value to the file and still prints
        each datum's line.
        """
        path = os.path.abspath(self.mktemp())
        datums = [Datum("panel/reply", "a.1.1", "accepted"),
                  Datum("panel/reply", "a.1.2", {"by": "bridge"})]
        seen: list[bytes] = []

        class FakeClient:
            def follow(self, key: str, since: Any, maxDelay: float) -> Any:
                async def values() -> Any:
                    for datum in datums:
                        yield datum
                        with open(path, "rb") as f:
                            seen.append(f.read())
                return values()

            def close(self) -> Deferred[None]:
                return Deferred.fromCoroutine(_nothing())

        out = io.StringIO()
        d = Deferred.fromCoroutine(run(Clock(), ["http://x", "panel/reply", "--write", path],
                                       out, FakeClient()))  # type: ignore[arg-type]
        self.successResultOf(d)
        self.assertEqual(seen, [b"accepted", b'{"by":"bridge"}'])
        self.assertEqual(len(out.getvalue().splitlines()), 2)


async def _nothing() -> None:
    return None


class _Events(Protocol):
    """
    Collects the values of an SSE stream's datum events.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.values: list[Any] = []
        self.ended: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
            if b"id" in fields and b"event" not in fields:
                self.values.append(json.loads(fields[b"data"])["value"])

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)


class _Command:
    """
    A command of the package run as a process (C{python -m MODULE ...}),
    stopped at cleanup by its own PID.
    """

    def __init__(self, testCase: TestCase, module: str, *args: str) -> None:
        self.watcher = _Watcher()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        transport = reactor.spawnProcess(
            self.watcher, sys.executable, [sys.executable, "-m", module, *args], env=env)
        self.pid = transport.pid
        testCase.addCleanup(self.stop)

    @property
    def output(self) -> str:
        return self.watcher.output.decode("utf-8", "replace")

    @inlineCallbacks
    def stop(self) -> Any:
        if self.watcher.status is None:
            os.kill(self.pid, signal.SIGTERM)
            timer = reactor.callLater(
                STOP_LIMIT, lambda: self.watcher.status is None and os.kill(self.pid, signal.SIGKILL))
            yield self.watcher.ended
            if timer.active():
                timer.cancel()


@inlineCallbacks
def _until(condition: Any, what: str, limit: float = 10.0) -> Any:
    """
    Wait, a bounded time, until C{condition()} is true.
    """
    deadline = reactor.seconds() + limit
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"waited {limit} s for {what}")
        yield deferLater(reactor, 0.01, lambda: None)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class ChadburnTests(TestCase):
    """
    The Chadburn recipe end to end against a real C{twistd artcast}.
    """

    @inlineCallbacks
    def test_recipe(self) -> Any:
        """
        A status file watched by C{artcast-watch} reaches an open SSE panel
        each time it is replaced, and a reply posted with a token reaches
        the acceptance file kept by C{artcast-follow --write}.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        tokens = os.path.join(folder, "tokens")
        with open(tokens, "w") as f:
            f.write(f"{TOKEN} panel/...\n")
        server = yield ArtcastProcess(
            self, extra=["--publish-token-file", tokens, "--publish-ttl", "0"]).start()
        status = os.path.join(folder, "status.json")
        with open(status, "w") as f:
            f.write('{"telegraph": "standby"}\n')
        watch = _Command(self, "artcast.watch", status, "ship/telegraph",
                         "--group", server.group, "--port", str(server.dataPort),
                         "--ttl", "0", "--interface", "127.0.0.1")
        yield server.waitFor(lambda s: s["datums"] >= 1)

        response = yield treq.get(server.url + "/artcasts/ship/telegraph",
                                  headers={"Accept": ["text/event-stream"]},
                                  persistent=False, timeout=15)
        self.assertEqual(response.code, 200)
        panel = _Events()
        response.deliverBody(panel)
        self.addCleanup(lambda: panel.ended)
        yield _until(lambda: panel.values, "the current value on the panel")
        self.assertEqual(panel.values, [{"telegraph": "standby"}])

        for n, order in enumerate(["half ahead", "full ahead"], 2):
            temporary = status + ".new"
            with open(temporary, "w") as f:
                f.write(json.dumps({"telegraph": order}) + "\n")
            os.replace(temporary, status)
            yield _until(lambda: len(panel.values) >= n, f"{order!r} on the panel:\n"
                         + watch.output)
            self.assertEqual(panel.values[-1], {"telegraph": order})
        with open(status, "w") as f:
            f.write("finished with engines\n")
        yield _until(lambda: len(panel.values) >= 4, "the text on the panel")
        self.assertEqual(panel.values[-1], "finished with engines")
        panel.transport.stopProducing()

        accepted = os.path.join(folder, "accepted")
        _Command(self, "artcast.client", server.url, "panel/reply", "--write", accepted)
        yield server.waitForWaiters(1)
        answer = yield treq.post(
            server.url + "/artcasts/panel/reply", b"full ahead",
            headers={"Authorization": [f"Bearer {TOKEN}"], "Content-Type": ["text/plain"]},
            persistent=False)
        yield answer.content()
        self.assertEqual(answer.code, 201)
        yield _until(lambda: _read(accepted) == b"full ahead", "the acceptance file")
        self.assertEqual(sorted(os.listdir(folder)),
                         ["accepted", "status.json", "tokens"])
        self.assertEqual(watch.watcher.status, None)
