"""
The documentation's code blocks, run as tests (issue 14), parsed with Sybil.

Each page of L{COVERED_PAGES} becomes one TestCase class (C{SourcesPageTests}, ...) with one test
method per code block, named after its line (C{test_line_0019_python}). Blocks are run as pasted:

  - C{python} blocks run in one Python process per page, in one namespace, in order, as a reader
    typing them into one interpreter would;
  - C{sh} blocks run with C{bash} (C{set -euo pipefail}), this interpreter's C{bin} first on
    C{PATH} (C{twistd}, C{artcast-send}, C{artcast-follow}), this checkout first on
    C{PYTHONPATH}, in a temporary folder shared by the page's blocks (with links to the checkout's
    C{sources/}, C{examples/} and C{docs/}, as in a clone), each bounded in time;
  - C{c} blocks are compiled with C{gcc -Wall -Werror}, and run when they have a C{main};
  - C{console} blocks are commands and what they print: a line starting with C{$ } is a command
    (a line ending with a backslash goes on to the next), run as a C{sh} block is run (bash, the same
    environment and folder, bounded in time), all the commands of a block in one bash, in order; the
    lines after a command, up to the next C{$ }, are what it must print, its standard output and
    standard error together, compared exactly, except that a line C{...} matches any number of lines
    and C{...} inside a line matches any text on that line (as doctest's C{ELLIPSIS}); a mismatch fails
    with a diff. A command's exit status is not checked (a mistake and its error are what such a block
    usually shows), nor whether its output ends with a newline. Commands run without a terminal, so
    a program that prints differently to one differs here (curl's progress meter: show C{curl -sS});
  - C{text} and C{json} blocks are output or data, shown and not run; a block in any other language
    (C{html}, a configuration, no language at all) must be marked as not runnable.

Markers, an HTML comment on the line before a block:

  - C{<!-- skip: next "reason" -->} (Sybil's): the block cannot run here (root, systemd, another
    machine, a real network, a microcontroller); the reason is required and shown as the skip reason;
  - C{<!-- docs-test: server [PORT] -->}: a C{sh} block that starts a server in the foreground;
    it is started in the background and the page goes on once 127.0.0.1:PORT (8888 by default)
    accepts connections;
  - C{<!-- docs-test: background -->}: a C{sh} block that runs until stopped (a watcher, a
    follower, a stream), started in the background;
  - C{<!-- docs-test: until-stopped SECONDS -->}: a block that runs until stopped is run for
    SECONDS and then interrupted as with Ctrl-C; it passes if it did not fail before.

A page whose programs are missing (C{mosquitto}, C{gcc}, C{curl}: L{PAGE_NEEDS}) skips, saying which.

Background processes are stopped (their process group, by PID) when the page is done; one that ended
with an error before fails its block. A page runs once, at its first test (under C{trial -j}, the
workers share its outcomes through a file named after the run); each test reports its own block's
outcome.

Where network namespaces can be made (root, or C{unshare --map-root-user --net} as a user), each page
runs in its own (L{Network}): only C{lo}, up, with 127.0.0.1 and no route off the machine, made with
C{unshare} for the page, every block's process (bash, the page's interpreter, the servers, the wait
for a server's port) entered into it with C{nsenter}, and gone when the page is done (its holder
stopped by PID). A block that sends to a real address, or multicast without C{--interface 127.0.0.1}
(TTL 1 or 0), gets "Network is unreachable" instead of reaching the network; and pages use port 8888
and the default multicast groups as pasted without colliding, so they run side by side under
C{trial -j}. Where namespaces cannot be made, pages run on this machine's network, and a file lock
runs them one page at a time, across the processes of C{trial -j}. The first page run says on stderr
which way it is.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from sybil import Document, Region
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer
from sybil.parsers.markdown.skip import SkipParser
from twisted.trial import unittest

__all__ = ["COVERED_PAGES"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The pages whose every code block is run or marked with a reason.
COVERED_PAGES = (
    "docs/sources.md",
    "docs/mqtt.md",
    "docs/chadburn.md",
    "docs/protocol.md",
    "docs/relays.md",
    "docs/bus.md",
    "docs/scaling.md",
    "docs/delivery.md",
    "README.md",
    "docs/pages.md",
    "docs/running.md",
    "docs/clients.md",
    "docs/operations.md",
    "docs/performance.md",
    "docs/design.md",
)

#: Programs a page needs beyond Python and bash; without them its blocks skip, saying which.
PAGE_NEEDS = {
    "docs/mqtt.md": ("mosquitto", "mosquitto_sub", "mosquitto_pub", "curl"),
    "docs/chadburn.md": ("curl",),
    "docs/sources.md": ("curl", "gcc"),
    "docs/protocol.md": ("gcc", "openssl"),
    "docs/bus.md": ("redis-server", "redis-cli", "curl"),
    "docs/scaling.md": ("redis-server", "haproxy", "curl"),
    "docs/delivery.md": ("curl",),
    "README.md": ("curl",),
    "docs/pages.md": ("curl",),
    "docs/running.md": ("curl",),
    "docs/clients.md": ("curl", "cc"),
    "docs/operations.md": ("curl",),
}

RUN_LANGUAGES = ("python", "sh", "c", "console")
SHOWN_LANGUAGES = ("text", "json")

BLOCK_LIMIT = 30.0
BUILD_LIMIT = 60.0
START_LIMIT = 20.0
STOP_LIMIT = 10.0
#: Folders of the checkout a page's temporary folder links to, as a reader in a clone has them.
CHECKOUT_FOLDERS = ("sources", "examples", "docs")
LOCK_PATH = os.path.join(tempfile.gettempdir(), "artcast-docs-pages.lock")
SHARED_PATH = os.path.join(tempfile.gettempdir(), "artcast-docs-runs")
#: Programs that make and enter a page's private network namespace.
NAMESPACE_TOOLS = ("unshare", "nsenter", "ip")
#: What a page's namespace holder runs: loopback up, then wait until its input closes.
_HOLDER = "%s link set lo up && echo ready && exec cat >/dev/null"
#: Waits, inside a namespace, until a port on 127.0.0.1 accepts connections: exit status 0 if so.
_PORT_WAITER = r"""
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
"""

_MARKER = re.compile(r"^(server(?: (\d+))?|background|until-stopped (\d+(?:\.\d+)?))$")

_KERNEL = r"""
import contextlib, io, json, os, signal, sys, traceback
# Ctrl-C stops a block as in a terminal, even when the tests were started
# where SIGINT is ignored (a background job of a shell without job control).
signal.signal(signal.SIGINT, signal.default_int_handler)
results = os.fdopen(int(sys.argv[1]), "w")
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    request = json.loads(line)
    output = io.StringIO()
    status = "ok"
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(compile(request["source"], request["name"], "exec"), namespace)
    except KeyboardInterrupt:
        status = "stopped"
    except SystemExit as e:
        if e.code not in (None, 0):
            status = "failed"
            output.write("SystemExit(%r)\n" % (e.code,))
    except BaseException:
        status = "failed"
        output.write(traceback.format_exc())
    results.write(json.dumps({"status": status, "output": output.getvalue()}) + "\n")
    results.flush()
"""


class BlockFailed(AssertionError):
    """
    A documentation block did not run as pasted.
    """


class CodeBlock:
    """
    A fenced code block of a page: its language and its text.

    @ivar language: the fence's info string (C{""} for none).
    @ivar source: the block's text.
    """

    def __init__(self, language: str, source: str) -> None:
        self.language = language
        self.source = source


class Marker:
    """
    A C{<!-- docs-test: ... -->} marker: how the next block runs.

    @ivar kind: C{"server"}, C{"background"} or C{"until-stopped"}.
    @ivar port: the port a server block waits for.
    @ivar seconds: how long an until-stopped block runs.
    """

    def __init__(self, text: str) -> None:
        match = _MARKER.match(text.strip())
        if match is None:
            raise ValueError(
                "docs-test marker %r: use server [PORT], background or until-stopped SECONDS"
                % (text,)
            )
        self.kind = match.group(1).split()[0]
        self.port = int(match.group(2) or 8888)
        self.seconds = float(match.group(3) or 0)


def _codeBlocks(document: Document) -> list[Region]:
    lexer = RawFencedCodeBlockLexer(
        info_pattern=re.compile(r"(?P<language>[^\n]*)$\n", re.MULTILINE),
        mapping={"language": "language", "source": "source"},
    )
    regions = []
    for region in lexer(document):
        language = region.lexemes["language"].strip()
        region.parsed = CodeBlock(language, str(region.lexemes["source"]))
        region.evaluator = _evaluate
        regions.append(region)
    return regions


def _markers(document: Document) -> list[Region]:
    lexer = DirectiveInHTMLCommentLexer(directive="docs-test", arguments=".*?")
    regions = []
    for region in lexer(document):
        region.parsed = Marker(region.lexemes["arguments"] or "")
        region.evaluator = _evaluate
        regions.append(region)
    return regions


def parsePage(page: str) -> Document:
    """
    Parse a page with Sybil: its code blocks, its skips and its docs-test markers.

    @param page: the page's path, relative to the checkout.
    @return: the L{Document}.
    """
    return Document.parse(os.path.join(ROOT, page), _codeBlocks, _markers, SkipParser())


def _evaluate(example: Any) -> None:
    runner = example.document.namespace["runner"]
    runner.evaluate(example)


def _stopGroup(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """
    Stop a process started in its own session, and what it started, by its PID.
    """
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(STOP_LIMIT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(STOP_LIMIT)
    else:
        # The shell is gone; stop what it left behind in its group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_namespaceSupport: list[str | None] = []


def namespaceUnavailable() -> str | None:
    """
    Why a page cannot run in a private network namespace here, or C{None} if it can: checked once
    (a namespace is made with C{unshare --net} and its loopback brought up), and said once on
    stderr, which way the pages run.
    """
    if not _namespaceSupport:
        missing = [p for p in NAMESPACE_TOOLS if _which(p) is None]
        reason: str | None = None
        if missing:
            reason = "%s not installed" % (", ".join(missing),)
        else:
            try:
                check = subprocess.run(
                    _userFlags() + [_which("ip") or "ip", "link", "set", "lo", "up"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=STOP_LIMIT,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                reason = "unshare: %s" % (e,)
            else:
                if check.returncode != 0:
                    reason = "unshare: %s" % (
                        check.stderr.decode("utf-8", "replace").strip() or check.returncode
                    )
        _namespaceSupport.append(reason)
        if reason is None:
            note = "each page runs in its own network namespace (only lo): nothing leaves the machine"
        else:
            note = (
                "no network namespace (%s): pages run on this machine's network, one at a time"
                % (reason,)
            )
        sys.stderr.write("tests.test_docs: %s\n" % (note,))
    return _namespaceSupport[0]


def _userFlags() -> list[str]:
    """
    The C{unshare} command that makes a network namespace: as root, only that; as a user, with a
    user namespace mapping this user to root in it.
    """
    if os.geteuid() == 0:
        return [_which("unshare") or "unshare", "--net"]
    return [_which("unshare") or "unshare", "--map-root-user", "--net"]


class Network:
    """
    A private network namespace for one page: only C{lo}, up, with 127.0.0.1; no route off the
    machine, so a block that sends to a real address or with a multicast TTL above 0 gets "Network
    is unreachable". It lives as long as its holder (a process started in it, by C{unshare}), which
    L{stop} ends by its PID; the page's processes enter it with C{nsenter}.

    @ivar holder: the holder process, or C{None} before L{start} and after L{stop}.
    """

    def __init__(self) -> None:
        self.holder: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """
        Make the namespace and bring its loopback up, waiting a bounded time.

        @raise BlockFailed: it could not be made.
        """
        holder = self.holder = subprocess.Popen(
            _userFlags() + ["--", "sh", "-c", _HOLDER % (_quote(_which("ip") or "ip"),)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], START_LIMIT)
        line = holder.stdout.readline() if ready else b""
        if line != b"ready\n":
            self.stop()
            raise BlockFailed("the page's network namespace was not made: %r" % (line,))

    def command(self, argv: list[str]) -> list[str]:
        """
        The command that runs C{argv} in the namespace (C{argv} itself without one).
        """
        if self.holder is None:
            return argv
        where = "/proc/%d/ns/" % (self.holder.pid,)
        enter = [_which("nsenter") or "nsenter", "--net=" + where + "net"]
        if os.geteuid() != 0:
            enter[1:1] = ["--preserve-credentials", "--user=" + where + "user"]
        return enter + ["--"] + argv

    def stop(self) -> None:
        """
        End the holder, by its PID: the namespace goes with the last process in it.
        """
        holder, self.holder = self.holder, None
        if holder is None:
            return
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        _stopGroup(holder)
        holder.stdout.close()


class PageRun:
    """
    One run of a page's blocks, in order, in this process.

    @ivar outcomes: for each code block's line, C{None} (it passed) or the exception its test raises.
    """

    def __init__(self, page: str) -> None:
        self.page = page
        self.outcomes: dict[int, BaseException | None] = {}
        self.marker: Marker | None = None
        self.background: list[tuple[int, subprocess.Popen[bytes], str]] = []
        self.outputs: dict[int, str] = {}
        self.kernel: subprocess.Popen[bytes] | None = None
        self.kernelResults: Any = None
        self.directory = ""
        self.env: dict[str, str] = {}
        self.network = Network()

    def run(self) -> None:
        """
        Run every block of the page and stop what the page started; or, under C{trial -j}, take
        the outcomes another worker of the same run recorded. In a network namespace, pages run
        side by side: a lock per page and run lets the workers of C{trial -j} run each page once,
        and a worker waiting for a page another is running runs a page no one has started
        meanwhile (L{_runAhead}). Without one, pages share 127.0.0.1:8888 and the default groups:
        one lock runs them one at a time.
        """
        shared = _sharedOutcomesPath(self.page)
        if namespaceUnavailable() is None:
            if shared is None:
                self.runBlocks()
                return
            os.makedirs(os.path.dirname(shared), exist_ok=True)
            with open(shared + ".lock", "a") as lock:
                while not _tryLock(lock):
                    if not _runAhead(self.page):
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        break
                try:
                    self.runOnce(shared)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return
        with open(LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.runOnce(shared)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def runOnce(self, shared: str | None) -> None:
        """
        Holding the page's lock, take the outcomes a worker of this run recorded in C{shared}, or
        run the page's blocks and record them there.
        """
        if shared is not None and os.path.exists(shared):
            with open(shared) as f:
                self.outcomes = {int(k): _thawOutcome(v) for k, v in json.load(f).items()}
            return
        self.runBlocks()
        if shared is not None:
            os.makedirs(os.path.dirname(shared), exist_ok=True)
            for name in os.listdir(SHARED_PATH):  # earlier runs' outcomes, a day old
                old = os.path.join(SHARED_PATH, name)
                if os.path.getmtime(old) < time.time() - 86400:
                    shutil.rmtree(old, ignore_errors=True)
            with open(shared + ".new", "w") as f:
                json.dump({str(k): _freezeOutcome(v) for k, v in self.outcomes.items()}, f)
            os.replace(shared + ".new", shared)

    def runBlocks(self) -> None:
        """
        Run every block of the page in order, in a temporary folder, and stop what the page started.
        """
        document = parsePage(self.page)
        document.namespace["runner"] = self
        if namespaceUnavailable() is None:
            self.network.start()
        self.directory = tempfile.mkdtemp(prefix="artcast-docs-")
        for folder in CHECKOUT_FOLDERS:
            os.symlink(os.path.join(ROOT, folder), os.path.join(self.directory, folder))
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", "")
        self.env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        pending: BaseException | None = None
        try:
            for example in document.examples():
                isBlock = isinstance(example.parsed, CodeBlock)
                try:
                    example.evaluate()
                except BaseException as e:
                    if not isBlock:
                        # A marker or a skip that is wrong fails the block it was for.
                        self.marker = None
                        pending = e
                        continue
                    self.outcomes[example.line] = e
                else:
                    if isBlock:
                        self.outcomes.setdefault(example.line, None)
                if isBlock and pending is not None:
                    self.outcomes[example.line], pending = pending, None
        finally:
            self.stopAll()
            self.network.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    def evaluate(self, example: Any) -> None:
        """
        Evaluate one example: remember a marker, or run a code block.
        """
        parsed = example.parsed
        if isinstance(parsed, Marker):
            self.marker = parsed
            return
        marker, self.marker = self.marker, None
        language = parsed.language
        name = "%s, line %d" % (self.page, example.line)
        if language in SHOWN_LANGUAGES:
            if marker is not None:
                raise BlockFailed("%s: a docs-test marker before a %s block" % (name, language))
            return
        if language not in RUN_LANGUAGES:
            raise BlockFailed(
                '%s: a block in %r is not run: give it a language (%s, or %s for output) or mark '
                'it <!-- skip: next "why it cannot run here" -->'
                % (name, language, ", ".join(RUN_LANGUAGES), " or ".join(SHOWN_LANGUAGES))
            )
        if marker is not None and language == "console":
            raise BlockFailed("%s: a docs-test marker before a console block" % (name,))
        if marker is not None and marker.kind in ("server", "background") and language != "sh":
            raise BlockFailed("%s: only a sh block can run in the background" % (name,))
        getattr(self, "run_" + language)(example.line, name, parsed.source, marker)

    def run_sh(self, line: int, name: str, source: str, marker: Marker | None) -> None:
        """
        Run a shell block with bash, bounded in time.
        """
        daemon = daemonizes(source)
        if daemon is not None:
            raise BlockFailed(
                "%s: %r would leave a daemon the test cannot stop: run it in the foreground "
                "(twistd -n) marked <!-- docs-test: server -->, or mark the block skipped with a reason"
                % (name, daemon)
            )
        # Output goes to a file: a server in the background logs without anyone reading a pipe.
        outputPath = os.path.join(self.directory, ".block%d.out" % (line,))
        with open(outputPath, "wb") as outputFile:
            process = subprocess.Popen(
                self.network.command(["bash", "-c", "set -euo pipefail\n" + source]),
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=outputFile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.outputs[line] = outputPath
        if marker is not None and marker.kind in ("server", "background"):
            self.background.append((line, process, name))
            if marker.kind == "server":
                self.waitForPort(process, line, marker.port, name)
            return
        limit = marker.seconds if marker is not None else BLOCK_LIMIT
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stopGroup(process, signal.SIGINT if marker is not None else signal.SIGKILL)
            if marker is None:
                raise BlockFailed("%s: still running after %ss:\n%s" % (name, limit, self.output(line)))
            return
        _stopGroup(process, signal.SIGKILL)
        if process.returncode != 0:
            raise BlockFailed("%s: exit status %s:\n%s" % (name, process.returncode, self.output(line)))

    def run_console(self, line: int, name: str, source: str, marker: Marker | None) -> None:
        """
        Run a console block's commands in one bash, bounded in time, and compare what each printed
        with the lines shown after it.
        """
        steps = consoleSteps(source)
        if not steps:
            raise BlockFailed("%s: a console block with no command (a line starting with $ )" % (name,))
        script = []
        for index, (command, _) in enumerate(steps):
            daemon = daemonizes(command)
            if daemon is not None:
                raise BlockFailed(
                    "%s: %r would leave a daemon the test cannot stop" % (name, daemon)
                )
            script.append(
                "{ %s\n} >%s 2>&1 </dev/null"
                % (command, _quote(os.path.join(self.directory, ".console%d-%d.out" % (line, index))))
            )
        # Each command's status is not checked: the script ends with true.
        self.run_sh(line, name, "set +e\n" + "\n".join(script) + "\ntrue", None)
        problems = []
        for index, (command, expected) in enumerate(steps):
            path = os.path.join(self.directory, ".console%d-%d.out" % (line, index))
            try:
                with open(path, "rb") as f:
                    printed = f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                printed = ""
            if not consoleMatches(expected, printed):
                problems.append(
                    "$ %s\n%s"
                    % (
                        command,
                        "\n".join(
                            difflib.unified_diff(
                                expected, _lines(printed), "shown", "printed", lineterm=""
                            )
                        ),
                    )
                )
        if problems:
            raise BlockFailed(
                "%s: printed other than the page shows:\n%s" % (name, "\n".join(problems))
            )

    def output(self, line: int) -> str:
        """
        What the shell block at C{line} printed (its last 8 KiB).
        """
        with open(self.outputs[line], "rb") as f:
            return f.read()[-8192:].decode("utf-8", "replace")

    def waitForPort(
        self, process: subprocess.Popen[bytes], line: int, port: int, name: str
    ) -> None:
        """
        Wait, a bounded time, until 127.0.0.1:port accepts connections: in the page's network
        namespace, by a small Python program run in it.
        """
        deadline = time.monotonic() + START_LIMIT
        waiter = subprocess.Popen(
            self.network.command(
                [sys.executable, "-c", _PORT_WAITER, str(port), str(START_LIMIT)]
            ),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise BlockFailed(
                        "%s: the server exited (%s) at start:\n%s"
                        % (name, process.returncode, self.output(line))
                    )
                try:
                    if waiter.wait(0.1) == 0:
                        return
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:
            _stopGroup(waiter, signal.SIGKILL)
        raise BlockFailed("%s: nothing answered on 127.0.0.1:%d within %ss" % (name, port, START_LIMIT))

    def run_python(self, line: int, name: str, source: str, marker: Marker | None) -> None:
        """
        Run a Python block in the page's interpreter, bounded in time.
        """
        if self.kernel is None:
            reading, writing = os.pipe()
            self.kernel = subprocess.Popen(
                self.network.command([sys.executable, "-c", _KERNEL, str(writing)]),
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.PIPE,
                pass_fds=(writing,),
                start_new_session=True,
            )
            os.close(writing)
            self.kernelResults = os.fdopen(reading)
        assert self.kernel.stdin is not None
        self.kernel.stdin.write((json.dumps({"source": source, "name": name}) + "\n").encode())
        self.kernel.stdin.flush()
        limit = marker.seconds if marker is not None else BLOCK_LIMIT
        ready, _, _ = select.select([self.kernelResults], [], [], limit)
        if not ready:
            if marker is None:
                self.stopKernel()
                raise BlockFailed("%s: still running after %ss" % (name, limit))
            os.kill(self.kernel.pid, signal.SIGINT)
            ready, _, _ = select.select([self.kernelResults], [], [], STOP_LIMIT)
            if not ready:
                self.stopKernel()
                raise BlockFailed("%s: did not stop on Ctrl-C" % (name,))
        answer = self.kernelResults.readline()
        if not answer:
            self.stopKernel()
            raise BlockFailed("%s: the interpreter exited" % (name,))
        result = json.loads(answer)
        if result["status"] == "failed":
            raise BlockFailed("%s:\n%s" % (name, result["output"]))

    def stopKernel(self) -> None:
        """
        End the page's interpreter: close its input, then stop it by PID if it lingers.
        """
        if self.kernel is None:
            return
        kernel, self.kernel = self.kernel, None
        if kernel.stdin is not None:
            kernel.stdin.close()
        try:
            kernel.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            _stopGroup(kernel, signal.SIGKILL)
        self.kernelResults.close()

    def run_c(self, line: int, name: str, source: str, marker: Marker | None) -> None:
        """
        Compile a C block with gcc -Wall -Werror, and run it if it has a main.
        """
        path = os.path.join(self.directory, "block%d.c" % (line,))
        with open(path, "w") as f:
            f.write(source)
        hasMain = re.search(r"\bmain\s*\(", source) is not None
        program = os.path.join(self.directory, "block%d" % (line,))
        command = ["gcc", "-Wall", "-Werror", "-o", program if hasMain else program + ".o", path]
        if not hasMain:
            command.insert(1, "-c")
        build = subprocess.run(
            command, cwd=self.directory, capture_output=True, timeout=BUILD_LIMIT
        )
        if build.returncode != 0:
            raise BlockFailed("%s: gcc:\n%s" % (name, build.stderr.decode("utf-8", "replace")))
        if hasMain:
            self.run_sh(line, name, program, marker)

    def stopAll(self) -> None:
        """
        Stop the page's background processes and interpreter; record a background block that
        failed before it was stopped.
        """
        self.stopKernel()
        for line, process, name in reversed(self.background):
            ended = process.poll()
            _stopGroup(process)
            if ended not in (None, 0) and self.outcomes.get(line) is None:
                self.outcomes[line] = BlockFailed(
                    "%s: ended with exit status %s before the page was done:\n%s"
                    % (name, ended, self.output(line))
                )
        self.background = []


def daemonizes(source: str) -> str | None:
    """
    The command of a shell block that would detach a daemon (C{twistd} without C{-n}, C{--help} or
    C{--version}; C{--daemonize yes}), or C{None}.
    """
    for command in source.replace("\\\n", " ").splitlines():
        command = command.split("#", 1)[0]
        words = command.split()
        if "twistd" in [os.path.basename(w) for w in words] and not (
            {"-n", "--nodaemon", "--help", "--version"} & set(words)
        ):
            return command.strip()
        if "--daemonize" in words and "yes" in words:
            return command.strip()
    return None


def consoleSteps(source: str) -> list[tuple[str, list[str]]]:
    """
    The commands of a console block, each with the lines shown after it.

    @param source: the block's text.
    @return: C{(command, lines)} pairs; a command's continuation lines (after a line ending with a
        backslash) are part of it.
    @raise BlockFailed: a line comes before the first C{$ }.
    """
    steps: list[tuple[str, list[str]]] = []
    lines = source.splitlines()
    index = 0
    while index < len(lines):
        text = lines[index]
        index += 1
        if text.startswith("$ "):
            command = text[2:]
            while command.endswith("\\") and index < len(lines):
                command += "\n" + lines[index]
                index += 1
            steps.append((command, []))
        elif not steps:
            raise BlockFailed("console block: %r comes before any command (a line starting with $ )" % (text,))
        else:
            steps[-1][1].append(text)
    return steps


def _lines(text: str) -> list[str]:
    return text.splitlines()


def consoleMatches(expected: list[str], printed: str) -> bool:
    """
    Whether a command printed what a console block shows: line by line, a line C{...} matching any
    number of lines and C{...} inside a line any text on that line.

    @param expected: the lines shown.
    @param printed: what the command printed.
    """
    pattern = []
    for text in expected:
        if text == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append("[^\n]*".join(re.escape(part) for part in text.split("...")) + "\n")
    lines = _lines(printed)
    return re.fullmatch("".join(pattern), "".join(text + "\n" for text in lines)) is not None


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


_runs: dict[str, PageRun] = {}


def _tryLock(lock: Any) -> bool:
    """
    Take an exclusive lock on an open file if no one holds it; whether it was taken.
    """
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _runAhead(page: str) -> bool:
    """
    Under C{trial -j} in network namespaces, while another worker runs C{page}: run, and record
    for the run, the first covered page that no worker has started (each page at most once, so
    the waiting is bounded); whether there was one.
    """
    for other in COVERED_PAGES:
        if other == page or other in _runs or any(_which(p) is None for p in PAGE_NEEDS.get(other, ())):
            continue
        shared = _sharedOutcomesPath(other)
        if shared is None or os.path.exists(shared):
            continue
        with open(shared + ".lock", "a") as lock:
            if not _tryLock(lock):
                continue
            try:
                run = _runs[other] = PageRun(other)
                run.runOnce(shared)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return True
    return False


def _sharedOutcomesPath(page: str) -> str | None:
    """
    Where the workers of one C{trial -j} run share a page's outcomes, so that it runs once: they
    have one parent, whose PID and start time name the run. C{None} outside C{trial -j}.
    """
    if not sys.argv or not sys.argv[0].endswith(os.path.join("_dist", "workertrial.py")):
        return None
    parent = os.getppid()
    try:
        with open("/proc/%d/stat" % (parent,)) as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
        with open(os.path.join(ROOT, page), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
    except (OSError, IndexError):
        return None
    return os.path.join(
        SHARED_PATH, "%d-%s" % (parent, started), re.sub(r"\W", "_", page) + "-" + digest + ".json"
    )


def _freezeOutcome(outcome: BaseException | None) -> Any:
    if outcome is None:
        return None
    if isinstance(outcome, unittest.SkipTest):
        return {"skip": str(outcome)}
    return {"fail": str(outcome)}


def _thawOutcome(frozen: Any) -> BaseException | None:
    if frozen is None:
        return None
    if "skip" in frozen:
        return unittest.SkipTest(frozen["skip"])
    return BlockFailed(frozen["fail"])


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _outcome(page: str, line: int) -> BaseException | None:
    missing = [p for p in PAGE_NEEDS.get(page, ()) if _which(p) is None]
    if missing:
        return unittest.SkipTest("%s needs %s, not installed here" % (page, ", ".join(missing)))
    run = _runs.get(page)
    if run is None:
        run = _runs[page] = PageRun(page)
        run.run()
    return run.outcomes.get(line, BlockFailed("%s, line %d: not evaluated" % (page, line)))


def _makeTest(page: str, line: int, language: str) -> Any:
    def test(self: unittest.SynchronousTestCase) -> None:
        outcome = _outcome(page, line)
        if outcome is not None:
            raise outcome

    test.__doc__ = "The %s block at %s line %d runs as pasted, or is marked with a reason." % (
        language or "unlabelled",
        page,
        line,
    )
    return test


def _pageClass(page: str) -> type:
    attributes: dict[str, Any] = {
        "__doc__": "The code blocks of %s." % (page,),
        "__module__": __name__,
    }
    for example in parsePage(page).examples():
        if isinstance(example.parsed, CodeBlock) and example.parsed.language not in SHOWN_LANGUAGES:
            language = example.parsed.language
            method = "test_line_%04d_%s" % (example.line, re.sub(r"\W", "_", language) or "none")
            attributes[method] = _makeTest(page, example.line, language)
    name = os.path.basename(page)[: -len(".md")].capitalize() + "PageTests"
    return type(name, (unittest.SynchronousTestCase,), attributes)


for _page in COVERED_PAGES:
    _class = _pageClass(_page)
    globals()[_class.__name__] = _class
del _page, _class


def runPageText(text: str) -> list[BaseException | None]:
    """
    Run a page's text through L{PageRun} from a temporary folder.

    @return: Each block's outcome, in the page's order: L{None} when it
        passed, else what it failed with.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "page.md")
        with open(path, "w") as f:
            f.write(text)
        run = PageRun(path)
        run.runBlocks()
    return [run.outcomes[line] for line in sorted(run.outcomes)]


class CoverageTests(unittest.SynchronousTestCase):
    """
    Every block of every covered page is run, shown as output, or marked with a reason.
    """

    def test_everyBlockRunOrMarked(self) -> None:
        """
        Each code block is in a run language, in text or json, or right after a skip with a reason.
        """
        problems = []
        for page in COVERED_PAGES:
            document = parsePage(page)
            skip: Any = None
            for example in document.examples():
                parsed = example.parsed
                where = "%s, line %d" % (page, example.line)
                if isinstance(parsed, CodeBlock):
                    if skip is not None:
                        action, reason = skip
                        if action != "next" or not (reason or "").strip():
                            problems.append(where + ': use <!-- skip: next "reason" -->')
                        elif parsed.language in SHOWN_LANGUAGES:
                            problems.append(where + ": a skip before a block that is not run")
                        skip = None
                    elif parsed.language not in RUN_LANGUAGES + SHOWN_LANGUAGES:
                        problems.append(
                            "%s: a %r block, neither run nor marked with a reason"
                            % (where, parsed.language)
                        )
                elif isinstance(parsed, Marker):
                    if skip is not None:
                        problems.append(where + ": a docs-test marker after a skip")
                else:
                    skip = parsed
            if skip is not None:
                problems.append(page + ": a skip at the end, before no block")
        self.assertEqual(problems, [])

    def test_markerNeedsItsForm(self) -> None:
        """
        A docs-test marker other than server, background or until-stopped is refused.
        """
        self.assertRaises(ValueError, Marker, "run forever")
        self.assertEqual(Marker("server").port, 8888)
        self.assertEqual(Marker("server 1884").port, 1884)
        self.assertEqual(Marker("until-stopped 2").seconds, 2.0)

    def test_unmarkedBlockFails(self) -> None:
        """
        A page with an unlabelled block and an html block without a skip fails both, with the fix.
        """
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "page.md")
            with open(path, "w") as f:
                f.write("```\nout\n```\n\n```html\n<b>\n```\n\n<!-- skip: next \"an MCU\" -->\n```c\nx\n```\n")
            document = Document.parse(path, _codeBlocks, _markers, SkipParser())
            run = PageRun("page.md")
            document.namespace["runner"] = run
            outcomes = []
            for example in document.examples():
                try:
                    example.evaluate()
                except BaseException as e:
                    outcomes.append(type(e).__name__)
                else:
                    outcomes.append(None)
        self.assertEqual(outcomes[:2], ["BlockFailed", "BlockFailed"])
        self.assertEqual(outcomes[-1], "SkipTest")

    def test_pageRunOutcomes(self) -> None:
        """
        Python blocks share a namespace, a loop is stopped after its seconds, and failing blocks
        fail with their output, a background one when the page is done.
        """
        text = (
            "```python\nx = 41\n```\n\n"
            "```python\nassert x + 1 == 42\n```\n\n"
            "<!-- docs-test: until-stopped 0.5 -->\n```python\nwhile True:\n    pass\n```\n\n"
            "<!-- docs-test: background -->\n```sh\necho $$ > gone.pid; echo gone; exit 3\n```\n\n"
            # The background block has ended (a zombie, not yet reaped) before the page goes on.
            "```sh\nuntil [ -s gone.pid ] && grep -q '^[0-9]* ([^)]*) Z' /proc/$(cat gone.pid)/stat;"
            " do sleep 0.05; done\necho visible; false\n```\n\n"
            "```python\nraise ValueError('broken')\n```\n"
        )
        outcomes = runPageText(text)
        self.assertEqual(outcomes[:3], [None, None, None])
        self.assertIn("gone", str(outcomes[3]))
        self.assertIn("visible", str(outcomes[4]))
        self.assertIn("broken", str(outcomes[5]))

    def test_daemonRefused(self) -> None:
        """
        A shell block that would detach a daemon is named, and one in the foreground or asking for
        the version is not.
        """
        self.assertEqual(daemonizes("twistd artcast --demo"), "twistd artcast --demo")
        self.assertIsNotNone(daemonizes("redis-server --port 6390 \\\n  --daemonize yes"))
        self.assertIsNone(daemonizes("twistd -n --pidfile=a.pid artcast \\\n  --demo  # twistd"))
        self.assertIsNone(daemonizes("echo twistd-like"))
        self.assertIsNone(daemonizes("twistd artcast --version"))


class NetworkTests(unittest.SynchronousTestCase):
    """
    Where network namespaces can be made, each page runs in its own, with only C{lo}.
    """

    def test_pageIsolated(self) -> None:
        """
        A page's blocks cannot reach a real address or send multicast with TTL 1, its server takes a
        port this machine is using, and its namespace is gone when the page is done.
        """
        reason = namespaceUnavailable()
        if reason is not None:
            raise unittest.SkipTest("no network namespace here: %s" % (reason,))
        host = socket.socket()
        self.addCleanup(host.close)
        host.bind(("127.0.0.1", 0))
        host.listen()
        port = host.getsockname()[1]
        # Each block that tries to leave the machine first checks that it runs in another network
        # namespace than this process, and fails without sending if it does not.
        text = (
            "```sh\n[ \"$(readlink /proc/self/ns/net)\" != '%(host)s' ] || { echo not isolated; exit 1; }\n"
            "exec 3<>/dev/tcp/192.0.2.1/9\n```\n\n"
            "```python\nimport os, socket, struct\n"
            "assert os.readlink('/proc/self/ns/net') != %(host)r, 'not isolated'\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack('B', 1))\n"
            "s.sendto(b'x', ('239.255.42.42', 4242))\n```\n\n"
            "```sh\nreadlink /proc/self/ns/net > namespace\ncp namespace %(record)s\n```\n\n"
            "<!-- docs-test: server %(port)d -->\n"
            "```sh\nexec python -m http.server %(port)d --bind 127.0.0.1\n```\n\n"
            "```sh\npython -c 'import urllib.request; "
            'urllib.request.urlopen(\"http://127.0.0.1:%(port)d/\", timeout=5)\'\n```\n\n'
            "```console\n$ ip -o link show | cut -d: -f2\n lo\n```\n"
        )
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "page.md")
            record = os.path.join(directory, "namespace")
            with open(path, "w") as f:
                f.write(text % {
                    "port": port, "record": record, "host": os.readlink("/proc/self/ns/net"),
                })
            run = PageRun(path)
            run.runBlocks()
            with open(record) as f:
                namespace = f.read().strip()
        outcomes = [run.outcomes[line] for line in sorted(run.outcomes)]
        self.assertIn("Network is unreachable", str(outcomes[0]))
        self.assertIn("Network is unreachable", str(outcomes[1]))
        self.assertEqual(outcomes[2:], [None, None, None, None])
        self.assertNotEqual(namespace, os.readlink("/proc/self/ns/net"))
        # The request went to the page's server, not to this machine's listener on the same port.
        self.assertEqual(select.select([host], [], [], 0)[0], [])
        self.assertIsNone(run.network.holder)
        inNamespace = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and os.readlink("/proc/%s/ns/net" % (pid,)) == namespace:
                    inNamespace.append(pid)
            except OSError:
                pass
        self.assertEqual(inNamespace, [])

    def test_withoutNamespace(self) -> None:
        """
        A page's network that was not started runs commands as they are, on this machine's network.
        """
        self.assertEqual(Network().command(["bash", "-c", "true"]), ["bash", "-c", "true"])


class ConsoleTests(unittest.SynchronousTestCase):
    """
    Console blocks: commands run, and what each printed compared with the lines shown after it.
    """

    def test_steps(self) -> None:
        """
        A console block is split into commands, a backslash going on to the next line, each with its lines.
        """
        self.assertEqual(
            consoleSteps("$ echo a \\\n  b\na b\n$ true\n"),
            [("echo a \\\n  b", ["a b"]), ("true", [])],
        )
        self.assertRaises(BlockFailed, consoleSteps, "output first\n$ true\n")

    def test_matches(self) -> None:
        """
        Lines compare exactly, a line ... matches any number of lines, ... in a line any text on it.
        """
        self.assertTrue(consoleMatches(["a", "b"], "a\nb\n"))
        self.assertTrue(consoleMatches(["a", "b"], "a\nb"))
        self.assertFalse(consoleMatches(["a", "b"], "a\nb \n"))
        self.assertFalse(consoleMatches(["a"], "a\nb\n"))
        self.assertTrue(consoleMatches(["a", "...", "z"], "a\nz\n"))
        self.assertTrue(consoleMatches(["a", "...", "z"], "a\nb\nc\nz\n"))
        self.assertFalse(consoleMatches(["a", "...", "z"], "a\nb\n"))
        self.assertTrue(consoleMatches(['{"id": "...", "v": 1}'], '{"id": "x.1.2", "v": 1}\n'))
        self.assertFalse(consoleMatches(["id ... end"], "id x\ny end\n"))
        self.assertTrue(consoleMatches([], ""))

    def test_pageRun(self) -> None:
        """
        Commands share one shell, stderr is compared with stdout, a failing status passes, and a
        mismatch fails with a diff naming the command.
        """
        text = (
            "```console\n$ X=4; echo out; echo err >&2; exit_code=3\nout\nerr\n"
            "$ echo $X; false\n4\n```\n\n"
            "```console\n$ printf 'id: a.1.2\\nwhen: now\\n'\nid: ...\n...\n```\n\n"
            "```console\n$ echo printed\nshown\n```\n\n"
            "<!-- docs-test: background -->\n```console\n$ true\n```\n"
        )
        outcomes = runPageText(text)
        self.assertEqual(outcomes[:2], [None, None])
        self.assertIsInstance(outcomes[2], BlockFailed)
        self.assertIn("$ echo printed\n--- shown\n+++ printed\n", str(outcomes[2]))
        self.assertIn("-shown\n+printed", str(outcomes[2]))
        self.assertIn("marker before a console block", str(outcomes[3]))
