# -*- test-case-name: tests.test_deploy -*-
"""
The deployment files docs/operations.md shows: the systemd unit
(C{docs/examples/artcast.service}) parses, passes C{systemd-analyze verify}
where it exists, and its command line, pointed at this checkout and at test
ports and folders, starts a real server; the container recipe
(C{docs/examples/Dockerfile}) has a command the server accepts, and is built
and run where a container runtime answers (skipped with the reason
elsewhere).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import uuid

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from artcast.server.tap import Options
from tests.harness import (
    ROOT,
    START_LIMIT,
    STOP_LIMIT,
    ArtcastProcess,
    freePort,
    randomGroup,
)
from tests.test_integration import unprivilegedIds
from tests.test_workers import processGone, runnableByOthers

#: The documented files.
UNIT = os.path.join(ROOT, "docs", "examples", "artcast.service")
DOCKERFILE = os.path.join(ROOT, "docs", "examples", "Dockerfile")

#: Where the unit expects the virtualenv's twistd.
UNIT_TWISTD = "/opt/artcast/bin/twistd"


def readUnit(path: str) -> dict[str, dict[str, list[str]]]:
    """
    A systemd unit file's settings, as systemd reads them: sections of
    C{Key=value} lines, C{#} and C{;} comment lines, a line ending in a
    backslash continued on the next (joined with a space).

    @return: section name -> key -> the values given, in order.
    @raise ValueError: on a line that is none of these.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    with open(path) as unit:
        for number, raw in enumerate(unit, 1):
            line = raw.rstrip("\n")
            if not pending and line.lstrip()[:1] in ("#", ";"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = (pending + line).strip(), ""
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
            elif "=" in line and current is not None:
                key, value = line.split("=", 1)
                current.setdefault(key.strip(), []).append(value.strip())
            else:
                raise ValueError(f"{path}:{number}: not a unit line: {raw!r}")
    return sections


def execStart() -> list[str]:
    """
    The unit's C{ExecStart} command line, split as systemd splits it.
    """
    [command] = readUnit(UNIT)["Service"]["ExecStart"]
    return shlex.split(command)


def replaceOption(args: list[str], option: str, value: str | None) -> list[str]:
    """
    C{args} with the value of C{option} (C{--option value}) replaced, or
    the option removed when C{value} is L{None}.

    @raise AssertionError: if C{option} is not there.
    """
    if option not in args:
        raise AssertionError(f"{option} is not in {args!r}")
    index = args.index(option)
    if value is None:
        return args[:index] + args[index + 2:]
    return args[:index + 1] + [value] + args[index + 2:]


def subcommand(args: list[str]) -> int:
    """
    The index of the C{artcast} subcommand in a twistd command line (not an
    C{artcast} that is the value of C{--uid} or C{--gid}).
    """
    for index, arg in enumerate(args):
        if arg == "artcast" and args[index - 1] not in ("--uid", "--gid", "-u", "-g"):
            return index
    raise AssertionError(f"no artcast subcommand in {args!r}")


def dockerCommand() -> list[str]:
    """
    The Dockerfile's C{CMD}, in its JSON (exec) form.
    """
    with open(DOCKERFILE) as dockerfile:
        commands = [line[len("CMD"):].strip() for line in dockerfile if line.startswith("CMD ")]
    if len(commands) != 1:
        raise AssertionError(f"the Dockerfile has {len(commands)} CMD lines")
    return json.loads(commands[0])


class UnitFileTests(SynchronousTestCase):
    """
    The documented systemd unit is well formed.
    """

    def test_readUnit(self) -> None:
        """
        The reader joins continued lines, skips comments and keeps repeated
        keys in order.
        """
        path = self.mktemp()
        with open(path, "w") as unit:
            unit.write("# c\n[Service]\nExecStart=/bin/a \\\n    b c\n; c\nEnv=1\nEnv=2\n")
        self.assertEqual(
            readUnit(path), {"Service": {"ExecStart": ["/bin/a      b c"], "Env": ["1", "2"]}}
        )
        with open(path, "w") as unit:
            unit.write("[Service]\nnonsense\n")
        self.assertRaises(ValueError, readUnit, path)

    def test_sections(self) -> None:
        """
        The unit runs the virtualenv's twistd in the foreground without a
        pidfile, as the artcast user, and is wanted by the multi-user target.
        """
        unit = readUnit(UNIT)
        self.assertEqual(sorted(unit), ["Install", "Service", "Unit"])
        self.assertEqual(unit["Install"]["WantedBy"], ["multi-user.target"])
        args = execStart()
        self.assertEqual(args[0], UNIT_TWISTD)
        twistdArgs = args[1:subcommand(args)]
        self.assertIn("-n", twistdArgs)
        self.assertIn("--pidfile=", twistdArgs)
        self.assertEqual(twistdArgs[twistdArgs.index("--uid") + 1], "artcast")
        self.assertEqual(twistdArgs[twistdArgs.index("--gid") + 1], "artcast")

    def test_serverOptions(self) -> None:
        """
        Artcast's options parser accepts the unit's server options (its log
        folder, which the quick start creates, replaced by one that exists).
        """
        args = execStart()
        serverArgs = args[subcommand(args) + 1:]
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        for option in ("--access-log", "--error-log"):
            path = serverArgs[serverArgs.index(option) + 1]
            self.assertEqual(os.path.dirname(path), "/var/log/artcast")
            serverArgs = replaceOption(serverArgs, option, os.path.join(logs, os.path.basename(path)))
        options = Options()
        options.parseOptions(serverArgs)
        self.assertEqual(options["interface"], "0.0.0.0")

    def test_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing to say about the unit (with
        this virtualenv's twistd in place of /opt/artcast's).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed (it comes with systemd)")
        folder = self.mktemp()
        os.makedirs(folder)
        copy = os.path.join(folder, "artcast.service")
        with open(UNIT) as unit, open(copy, "w") as out:
            out.write(unit.read().replace(UNIT_TWISTD, twistdExecutable()))
        result = subprocess.run(
            [analyze, "verify", copy], capture_output=True, text=True, timeout=30,
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


def twistdExecutable() -> str:
    """
    This virtualenv's twistd (next to the interpreter running the tests).
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.access(twistd, os.X_OK):
        raise SkipTest(f"{twistd} is not installed next to {sys.executable}")
    return twistd


class UnitStartTests(TestCase):
    """
    The unit's command line starts a real server.
    """

    timeout = 60

    @inlineCallbacks
    def test_starts(self) -> None:
        """
        The unit's ExecStart, with this virtualenv's twistd, a free loopback
        port, loopback multicast, temporary log files and (when not root) no
        uid change, starts a server that answers GET /artcasts and writes
        its access log there.
        """
        args = execStart()
        split = subcommand(args)
        twistdArgs, serverArgs = args[1:split], args[split + 1:]
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        if os.getuid() == 0:
            try:
                uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
            except KeyError:
                uid = gid = 0
            if not runnableByOthers(os.path.realpath(sys.executable)):
                uid = gid = 0
            os.chown(logs, uid, gid)
            twistdArgs = replaceOption(twistdArgs, "--uid", str(uid))
            twistdArgs = replaceOption(twistdArgs, "--gid", str(gid))
        else:
            twistdArgs = replaceOption(replaceOption(twistdArgs, "--uid", None), "--gid", None)
        port = freePort()
        serverArgs = replaceOption(serverArgs, "--client-port", f"tcp:{port}:interface=127.0.0.1")
        serverArgs = replaceOption(serverArgs, "--interface", "127.0.0.1")
        serverArgs = replaceOption(serverArgs, "--access-log", os.path.join(logs, "access.log"))
        serverArgs = replaceOption(serverArgs, "--error-log", os.path.join(logs, "error.log"))
        proc = ArtcastProcess(self, httpPort=port)
        group = randomGroup()
        proc.args = [
            sys.executable, twistdExecutable(), *twistdArgs, "artcast", *serverArgs,
            "--data-group", group, "--data-port", str(proc.dataPort),
            "--register-group", group, "--register-port", str(proc.registerPort),
        ]
        yield proc.start()
        response = yield treq.get(proc.url + "/artcasts", persistent=False, timeout=10)
        self.assertEqual(response.code, 200)
        yield response.content()
        access = os.path.join(logs, "access.log")
        deadline = reactor.seconds() + START_LIMIT
        while "GET /artcasts " not in readOrEmpty(access) and reactor.seconds() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertIn("GET /artcasts ", readOrEmpty(access))


class UidPidfileTests(TestCase):
    """
    A daemon started as root with C{--uid} removes its pidfile when it
    stops, when the pidfile is in a folder that user owns (as
    C{/run/artcast} in docs/running.md).
    """

    timeout = 60

    @inlineCallbacks
    def test_pidfileRemoved(self) -> None:
        """
        The real twistd, daemonized with C{--uid nobody --gid nogroup} and
        its pidfile in a folder nobody owns, stopped by SIGTERM to the PID in
        the pidfile, ends and leaves no pidfile.
        """
        uid, gid = unprivilegedIds()
        if not runnableByOthers(os.path.realpath(sys.executable)):
            raise SkipTest(f"{sys.executable} cannot be run by other users here")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        os.chown(folder, uid, gid)
        pidfile = os.path.join(folder, "artcast.pid")
        proc = ArtcastProcess(
            self, daemon=True,
            twistdArgs=("--pidfile", pidfile, "--uid", str(uid), "--gid", str(gid)),
        )
        proc.pidfile = pidfile
        yield proc.start()
        pid = proc.pid
        assert pid is not None
        self.assertEqual(os.stat(f"/proc/{pid}").st_uid, uid)
        os.kill(pid, signal.SIGTERM)
        deadline = reactor.seconds() + STOP_LIMIT
        while (os.path.exists(pidfile) or not processGone(pid)) and reactor.seconds() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(processGone(pid))
        self.assertFalse(os.path.exists(pidfile))


def readOrEmpty(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class DockerfileTests(SynchronousTestCase):
    """
    The container recipe's command is one twistd and Artcast accept.
    """

    def test_command(self) -> None:
        """
        The CMD runs twistd in the foreground without a pidfile, and its
        server options are accepted by Artcast's options parser.
        """
        command = dockerCommand()
        self.assertEqual(command[0], "twistd")
        split = subcommand(command)
        self.assertIn("-n", command[1:split])
        self.assertIn("--pidfile=", command[1:split])
        options = Options()
        options.parseOptions(command[split + 1:])
        self.assertEqual(options["interface"], "0.0.0.0")

    def test_twistdAcceptsIt(self) -> None:
        """
        twistd's own parser accepts the whole command, the artcast plugin
        and its options included.
        """
        options = ServerOptions()
        options.parseOptions(dockerCommand()[1:])
        self.assertEqual(options.subCommand, "artcast")
        self.assertTrue(options["nodaemon"])

    def test_recipe(self) -> None:
        """
        The image is python:3.11-slim, runs as a user of its own, exposes
        the default port and installs the repository with pip.
        """
        with open(DOCKERFILE) as dockerfile:
            lines = [line.strip() for line in dockerfile if line.strip()[:1] not in ("", "#")]
        self.assertIn("FROM python:3.11-slim", lines)
        self.assertIn("USER artcast", lines)
        self.assertIn("EXPOSE 8888", lines)
        self.assertTrue(any("pip install" in line for line in lines))


def dockerMissing() -> str | None:
    """
    Why no image can be built here (a reason for C{SkipTest}), or L{None}.
    """
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    try:
        result = subprocess.run(
            [docker, "info"], capture_output=True, text=True, timeout=20,
        )
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"docker info failed, no container runtime to build with: {reason}"
    return None


class ContainerTests(TestCase):
    """
    The image builds and serves, where a container runtime answers.
    """

    timeout = 600

    @inlineCallbacks
    def test_buildAndRun(self) -> None:
        """
        docker build with the documented command makes an image whose
        container answers GET /artcasts on its exposed port.
        """
        reason = yield deferToThread(dockerMissing)
        if reason is not None:
            raise SkipTest(reason)
        tag = "artcast-test-" + uuid.uuid4().hex[:12]
        build = ["docker", "build", "-f", DOCKERFILE, "-t", tag, ROOT]
        result = yield deferToThread(
            subprocess.run, build, capture_output=True, text=True, timeout=500,
        )
        self.addCleanup(subprocess.run, ["docker", "rmi", "-f", tag],
                        capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        port = freePort()
        name = tag
        run = ["docker", "run", "-d", "--rm", "--name", name,
               "-p", f"127.0.0.1:{port}:8888", tag]
        result = yield deferToThread(
            subprocess.run, run, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.addCleanup(subprocess.run, ["docker", "stop", "-t", "5", name],
                        capture_output=True, timeout=60)
        deadline = reactor.seconds() + 60
        while True:
            try:
                response = yield treq.get(
                    f"http://127.0.0.1:{port}/artcasts", persistent=False, timeout=5
                )
                yield response.content()
                break
            except Exception:
                if reactor.seconds() > deadline:
                    raise
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(response.code, 200)


__all__ = ["readUnit", "execStart", "subcommand", "dockerCommand"]
