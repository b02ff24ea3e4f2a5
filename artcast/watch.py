# -*- test-case-name: tests.test_watch -*-
"""
C{artcast-watch PATH KEY}: send a file's content as a datum now and each
time the file changes (Chadburn's status file).

    artcast-watch /run/lobby/status.json panel/lobby/status
    artcast-watch status.txt panel/status --ttl 0 --interface 127.0.0.1

The content is sent as its JSON value when it is (strict) JSON, otherwise as
text without its final newline.  The network options are those of
C{artcast-send} (C{--group}, C{--port}, C{--ttl}, C{--interface},
C{--key-file}, C{--src}); the datums are version 2 and repairable, sent by an
L{artcast.source.SourceService}.

The file is watched with inotify (L{twisted.internet.inotify}) where the
system has it, by polling elsewhere (or with C{--poll SECONDS}).  inotify
watches the file's directory, so a file replaced by a rename (what editors
and careful scripts do) is followed.  A writer that is done (inotify's
C{IN_CLOSE_WRITE}, or C{IN_MOVED_TO} for a rename) has the file read at
once; other changes are debounced: the file is read C{--debounce} seconds
(50 ms by default) after the last change seen.  Either way it is sent only
when its content differs from what was last sent.

A file that is missing (deleted, or not there yet), unreadable, larger than
C{--max-value-size}, or not UTF-8 text is not sent: it is counted, logged
(at a bounded rate) and watched on.  Each datum's id is printed on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from artcast.send import (
    DEFAULT_GROUP,
    addNetworkOptions,
    checkInterface,
    checkNames,
    readSigningKey,
    secondsArgument,
)
from artcast.server.logs import RateLimitedLog
from artcast.wire import MAX_VALUE_SIZE, loadJSON

__all__ = [
    "DEBOUNCE",
    "FileWatcher",
    "NotSent",
    "fileValue",
    "main",
    "readValue",
]

DEBOUNCE = 0.05
"""Seconds after the last change seen before the file is read."""

#: When inotify is used: the changes of the directory that may change the file.
_MASK = 0x00000002 | 0x00000004 | 0x00000008 | 0x00000040 | 0x00000080 | 0x00000100 | 0x00000200
# IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

#: inotify's IN_CLOSE_WRITE | IN_MOVED_TO: the writer is done with the file.
_DONE = 0x00000008 | 0x00000080

#: Seconds between two tries to send while the source is not ready yet.
_RETRY = 0.1


class NotSent(Exception):
    """
    The file cannot be sent as it is.

    @ivar reason: a stable label: C{missing}, C{unreadable}, C{tooLarge} or
        C{binary}.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def fileValue(data: bytes) -> object:
    """
    The value a file's content stands for: its JSON value when it is strict
    JSON (L{artcast.wire.loadJSON}), otherwise its text without its final
    newline (C{\\n} or C{\\r\\n}).

    @raise NotSent: (C{binary}) when it is not UTF-8 text or holds a NUL.
    """
    if b"\0" in data:
        raise NotSent("binary", "holds a NUL byte: not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotSent("binary", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return loadJSON(text)
    except ValueError:
        pass
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def readValue(path: str, maxValueSize: int = MAX_VALUE_SIZE) -> tuple[bytes, object]:
    """
    Read the file at C{path}: its bytes and its value (L{fileValue}).

    @param maxValueSize: the most bytes the file may hold.
    @raise NotSent: C{missing}, C{unreadable}, C{tooLarge} or C{binary}.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(maxValueSize + 1)
    except FileNotFoundError:
        raise NotSent("missing", "no such file") from None
    except OSError as e:
        raise NotSent("unreadable", e.strerror or str(e)) from None
    if len(data) > maxValueSize:
        raise NotSent("tooLarge", f"larger than {maxValueSize} bytes")
    return data, fileValue(data)


def _signature(path: str) -> tuple[int, ...] | None:
    """
    What polling compares: the file's inode, size, times and mode (L{None}
    when there is no file).
    """
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_mode)


class FileWatcher(Service):
    """
    A service that publishes a file's value for a key when it starts and
    each time the file's content changes.

    @ivar counts: what happened: C{sent}, C{unchanged} (read, but the same
        as last sent), C{missing}, C{unreadable}, C{tooLarge}, C{binary},
        C{rejected} (the source refused the value: too large once encoded).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        path: str,
        key: str,
        publish: Callable[[str, object], str],
        *,
        poll: float | None = None,
        debounce: float = DEBOUNCE,
        maxValueSize: int = MAX_VALUE_SIZE,
        notifier: Any = None,
        sent: Callable[[str], object] = lambda datumId: None,
        log: Logger | None = None,
    ) -> None:
        """
        @param clock: the reactor's clock.
        @param path: the file.
        @param key: the key to publish under.
        @param publish: sends a datum, returning its id (as
            L{artcast.source.SourceService.publish}); it may raise
            L{RuntimeError} while the source is not ready (tried again) or
            L{ValueError} for a value it refuses.
        @param poll: poll every this many seconds; L{None}: use C{notifier}.
        @param notifier: an started L{twisted.internet.inotify.INotify} (or
            a fake one with C{watch} and C{loseConnection}); needed when
            C{poll} is L{None}.
        @param sent: called with each datum id sent.
        @param log: where to log (by default the class's L{Logger}).
        """
        if poll is None and notifier is None:
            raise ValueError("give a notifier or a poll interval")
        self.clock = clock
        self.path = os.path.abspath(path)
        self._name = os.fsencode(os.path.basename(self.path))
        self.key = key
        self.publish = publish
        self.poll = poll
        self.debounce = debounce
        self.maxValueSize = maxValueSize
        self.notifier = notifier
        self.sent = sent
        if log is not None:
            self.log = log
        self.counts = dict.fromkeys(
            ["sent", "unchanged", "missing", "unreadable", "tooLarge", "binary", "rejected"], 0)
        self._bad = RateLimitedLog(self.log, clock, what="problems with the watched file")
        self._last: bytes | None = None
        self._missing = False
        self._pending: IDelayedCall | None = None
        self._loop: LoopingCall | None = None
        self._signature: tuple[int, ...] | None = None

    def startService(self) -> None:
        super().startService()
        if self.poll is not None:
            self._signature = _signature(self.path)
            self._loop = LoopingCall(self._polled)
            self._loop.clock = self.clock
            self._loop.start(self.poll, now=False)
        else:
            self.notifier.watch(FilePath(os.path.dirname(self.path)), mask=_MASK,
                                callbacks=[self._notified])
        self.check()

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self.notifier is not None:
            self.notifier.loseConnection()

    def _notified(self, ignored: object, filepath: FilePath[Any], mask: int) -> None:
        """
        inotify saw a change in the directory: if it may be the file's,
        read the file soon.
        """
        if filepath.asBytesMode().basename() == self._name:
            self.changed(done=bool(mask & _DONE))

    def _polled(self) -> None:
        signature = _signature(self.path)
        if signature != self._signature:
            self._signature = signature
            self.changed()

    def changed(self, done: bool = False) -> None:
        """
        The file may have changed: read it C{debounce} seconds after the
        last such call, or at once (in the reactor's next turn) when its
        writer is done with it.

        @param done: the writer closed the file it wrote, or renamed a file
            into its place: what is there is whole.
        """
        if not self.running:
            return
        delay = 0.0 if done else self.debounce
        if self._pending is not None and self._pending.active():
            self._pending.reset(delay)
        else:
            self._pending = self.clock.callLater(delay, self.check)

    def check(self) -> None:
        """
        Read the file now and send its value if it differs from the last
        one sent.
        """
        self._pending = None
        if not self.running:
            return
        try:
            data, value = readValue(self.path, self.maxValueSize)
        except NotSent as e:
            self.counts[e.reason] += 1
            if e.reason == "missing":
                if not self._missing:
                    self._missing = True
                    self._bad.warn("{path} is missing; waiting for it to come back",
                                   path=self.path)
            else:
                self._missing = False
                self._bad.warn("{path} not sent ({reason}): {detail}",
                               path=self.path, reason=e.reason, detail=str(e))
            return
        self._missing = False
        if data == self._last:
            self.counts["unchanged"] += 1
            return
        try:
            datumId = self.publish(self.key, value)
        except RuntimeError:
            # The source is not ready yet (its port is being set up).
            self._pending = self.clock.callLater(_RETRY, self.check)
            return
        except ValueError as e:
            self.counts["rejected"] += 1
            self._bad.warn("{path} not sent (rejected): {error}", path=self.path, error=e)
            return
        self._last = data
        self.counts["sent"] += 1
        self.sent(datumId)


def _sizeArgument(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_VALUE_SIZE:
        raise argparse.ArgumentTypeError(
            f"--max-value-size is 1 to {MAX_VALUE_SIZE} bytes, not {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artcast-watch",
        description="Send a file's content as a datum now and each time it changes.",
        epilog="The content is sent as JSON when it is valid JSON, else as text "
        "without its final newline.",
    )
    parser.add_argument("path", metavar="PATH", help="the file to watch")
    parser.add_argument("key", metavar="KEY", help="the artcast's key, e.g. panel/status")
    addNetworkOptions(parser)
    parser.add_argument("--no-repair", action="store_true",
                        help="send datagrams that servers never ask for again")
    parser.add_argument("--poll", type=secondsArgument("--poll", 0.001, 3600), metavar="SECONDS",
                        help="poll the file every SECONDS instead of using inotify "
                        "(the default where the system has it; else 1 second)")
    parser.add_argument("--debounce", type=secondsArgument("--debounce", 0, 60), default=DEBOUNCE,
                        metavar="SECONDS", help="read the file this long after the last "
                        f"change seen (default {DEBOUNCE:g}); with inotify, at once when "
                        "its writer closed it or renamed it into place")
    parser.add_argument("--max-value-size", type=_sizeArgument, default=MAX_VALUE_SIZE,
                        metavar="BYTES", help="skip the file while it is larger than this "
                        f"(default {MAX_VALUE_SIZE}, also the servers' default)")
    return parser


def _inotify(reactor: Any) -> Any:
    """
    A started inotify notifier, or L{None} where the system has none.
    """
    try:
        from twisted.internet import inotify
        notifier = inotify.INotify(reactor)
        notifier.startReading()
    except Exception:
        return None
    return notifier


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    """
    Run C{artcast-watch} until it is stopped (SIGTERM, SIGINT).

    @param argv: the arguments, without the program name; by default
        C{sys.argv[1:]}.
    @return: the exit status (2 for bad arguments, 1 for an --interface
        that cannot send).
    """
    from twisted.application.service import MultiService
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from artcast.source import SourceService

    options = _parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"artcast-watch: {message}", file=sys.stderr)
        return status

    try:
        checkNames(options)
    except ValueError as e:
        return fail(str(e))
    directory = os.path.dirname(os.path.abspath(options.path))
    if not os.path.isdir(directory):
        return fail(f"no such directory: {directory}")
    try:
        signingKey = readSigningKey(options)
    except ValueError as e:
        return fail(str(e))
    try:
        checkInterface(options.interface)
    except ValueError as e:
        return fail(str(e), 1)
    if reactor is None:
        from twisted.internet import reactor as globalReactor
        reactor = globalReactor

    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])],
        redirectStandardIO=False,
    )
    groups = [(group, options.port) for group in (options.group or [DEFAULT_GROUP])]
    source = SourceService(reactor, options.src, groups, (), options.ttl, options.interface,
                           signingKey, repair=not options.no_repair)
    notifier = None
    poll = options.poll
    if poll is None:
        notifier = _inotify(reactor)
        if notifier is None:
            poll = 1.0

    def sent(datumId: str) -> None:
        print(datumId, flush=True)

    watcher = FileWatcher(reactor, options.path, options.key, source.publish, poll=poll,
                          debounce=options.debounce, maxValueSize=options.max_value_size,
                          notifier=notifier, sent=sent)
    services = MultiService()
    source.setServiceParent(services)
    watcher.setServiceParent(services)
    FileWatcher.log.info("Watching {path} ({how}) for {key}", path=watcher.path,
                         how="polling" if notifier is None else "inotify", key=options.key)
    reactor.callWhenRunning(services.startService)
    reactor.addSystemEventTrigger("before", "shutdown", services.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
