# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: N server processes on one HTTP port, the Twisted way.

The twistd process is the I{supervisor}.  It binds the HTTP sockets in
C{privilegedStartService} (before twistd drops privileges, so port 80 with
C{--uid} works), never accepts on them, and in C{startService} (after the
drop, so the workers run as the server's user) spawns the workers::

    python -m artcast.server.workers <index>

with these file descriptors (L{IReactorProcess.spawnProcess}'s C{childFDs}):

    - C{0}: a pipe from the supervisor.  It carries the worker's options
      (L{encodeOptions}: the options twistd parsed, including what was read
      from key and token files as root) and then stays open: end of file
      means the supervisor is gone, and the worker stops.
    - C{1}, C{2}: the supervisor's own standard output and error (so an
      access or error log on standard error still goes there).
    - C{3}: a pipe to the supervisor carrying the worker's log events as
      JSON text sequences (L{twisted.logger.jsonFileLogObserver}); the
      supervisor publishes them in its own log, so twistd's C{--logfile} and
      the error log (written by the supervisor alone) have every worker's
      events, tagged C{worker-<index>}.
    - C{4}: the listening socket: worker I{i}'s own (see below), or the
      one socket all share.

For a C{tcp:} or C{tcp6:} port, the supervisor binds one listening socket
I{per worker}, all on the same address and port with C{SO_REUSEPORT}
(L{listenPerWorker}), and keeps them all open until it stops.  The kernel
then hashes each new connection (its addresses and ports) to one of the
sockets, so the workers get even shares of the connections; with one socket
shared, every idle worker's epoll woke for it and the first to accept took
a batch (one worker held 60 % or more of them under load).  Worker I{i} adopts
socket I{i}, and so does a worker I{i} started again: the connections that
the kernel gave its socket meanwhile wait in that socket's queue, and are
answered once it is back.  Where that cannot be done (a C{systemd:} socket
passed in, a kernel without C{SO_REUSEPORT}), the workers share one socket as
before, and the supervisor says why in an info line at start.

A worker builds the same service as a single server (L{artcast.server.service.makeService}
with C{options["worker"]} set to its L{Worker}), except that its HTTP port
adopts the socket (L{IReactorSocket.adoptStreamPort}) and that it has no
error log service of its own.  It joins the multicast groups itself (they are
bound with C{listenMultiple}, and the kernel gives every member socket every
datagram), so every worker gets every datum and keeps its own L{KeyStore}.

A worker that ends is started again, at once if it ran for a while, after a
delay that doubles with each quick death otherwise (as
L{twisted.runner.procmon.ProcessMonitor} does; that class is not used because
it cannot pass a file descriptor to its children, and its C{stopService} does
not wait for them).  But if no process of a worker has served yet (a worker
logs an event carrying C{artcast_ready} once it does), its end means the
set-up is wrong, and the supervisor stops the server rather than run one that
accepts connections it never answers.  On SIGTERM the supervisor sends SIGTERM to every worker,
each shuts down gracefully (L{artcast.server.shutdown}), and the supervisor waits
for them, at most C{--shutdown-timeout} plus L{STOP_GRACE} seconds, before
killing the ones left.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import socket
import stat
import struct
import sys
from typing import IO, Any, Callable, Mapping, Sequence, cast

import attr
from zope.interface import implementer, provider
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.abstract import isIPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.fdesc import readFromFD, setNonBlocking
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IReadDescriptor,
    IReactorSocket,
)
from twisted.internet.protocol import Factory, ProcessProtocol, ServerFactory
from twisted.logger import (
    ILogObserver,
    LogLevel,
    Logger,
    eventFromJSON,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.reflect import safe_str
from twisted.python.usage import UsageError

from artcast.server import internals
from artcast.server.logs import NamedLogger

__all__ = [
    "KILL_GRACE",
    "LISTEN_FD",
    "LOG_FD",
    "MAX_LOG_RECORD",
    "MAX_RESTART_DELAY",
    "MAX_WORKERS",
    "MIN_RESTART_DELAY",
    "OPTIONS_FD",
    "QUICK_DEATH",
    "REUSE_PORT",
    "SHARED_ENDPOINTS",
    "STOP_GRACE",
    "AdoptedPortService",
    "LogForwarder",
    "ReusePortUnavailable",
    "SupervisorService",
    "Worker",
    "WorkerProcess",
    "WorkerSupervisor",
    "checkOptions",
    "decodeOptions",
    "encodeOptions",
    "interpreterProblem",
    "listenPerWorker",
    "main",
    "makeSupervisor",
    "workerAccessLog",
    "workerArguments",
    "workerEnvironment",
    "workerLogObserver",
    "workerOptions",
]

#: C{--workers} at most.
MAX_WORKERS = 64

#: The endpoint types whose socket workers can share.
SHARED_ENDPOINTS = frozenset(["tcp", "tcp6", "systemd"])

#: C{SO_REUSEPORT}, where this system has it.
REUSE_PORT: int | None = getattr(socket, "SO_REUSEPORT", None)

#: The worker's file descriptors (see the module's description).
OPTIONS_FD = 0
LOG_FD = 3
LISTEN_FD = 4

#: Seconds a worker must have run for its death not to count as quick.
QUICK_DEATH = 1.0
#: The delay before starting a worker again after a quick death, doubled
#: with each quick death in a row up to L{MAX_RESTART_DELAY}.
MIN_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0

#: At shutdown, the seconds the supervisor waits beyond C{--shutdown-timeout}
#: before killing a worker, and after killing it for it to be reported gone.
STOP_GRACE = 2.0
KILL_GRACE = 1.0

#: Bytes of one log record from a worker at most; a longer one is dropped.
MAX_LOG_RECORD = 1 << 20

_LENGTH = struct.Struct(">Q")


def checkOptions(options: Mapping[str, Any]) -> None:
    """
    Check C{--workers} against the other options; called from
    L{artcast.server.tap.Options.postOptions}.

    @raise UsageError: If the count is out of range, or the C{--client-port}
        is not one whose socket workers can share.
    """
    count = options["workers"]
    if not 0 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers must be from 0 to {MAX_WORKERS}, not {count}")
    if not count:
        return
    description = options["client-port"]
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "ssl":
        raise UsageError(
            "--workers cannot share an ssl: port; terminate TLS in front of "
            "the server (a proxy or load balancer) and use a tcp: port"
        )
    if kind == "unix":
        raise UsageError(
            "--workers cannot share a unix: port (each worker would reset the "
            "socket file's mode, and remove it when it stops); use "
            "tcp:PORT:interface=127.0.0.1 for a local proxy"
        )
    if kind not in SHARED_ENDPOINTS:
        raise UsageError(
            f"--workers can share tcp:, tcp6: and systemd: ports, not {kind}:"
        )


class ReusePortUnavailable(Exception):
    """
    The workers cannot have a listening socket each (L{listenPerWorker});
    the argument says why, in words.
    """


def listenPerWorker(
    endpoint: object, count: int, reusePort: int | None = REUSE_PORT
) -> list[socket.socket]:
    """
    Bind C{count} listening sockets on the address, port and backlog of a
    C{tcp:} or C{tcp6:} endpoint, each with C{SO_REUSEADDR} (as Twisted's
    ports have) and C{SO_REUSEPORT}, so that the kernel splits the
    connections between them.  A port 0 is the port the first socket got.

    The endpoint is the one L{serverFromString} parsed from C{--client-port}
    (its address, port and backlog are read from it, not parsed again); the
    address family is the one Twisted would give it (IPv6 for an IPv6
    address), and an IPv6 address is resolved as Twisted does (a scope such
    as C{fe80::1%eth0} included).

    @param reusePort: The C{SO_REUSEPORT} option (for tests).

    @return: The sockets, listening, blocking, closed on exec.

    @raise ReusePortUnavailable: If the endpoint is not C{tcp:} or C{tcp6:},
        or the system or the kernel has no C{SO_REUSEPORT}; nothing is left
        bound.
    @raise CannotListenError: If a socket cannot be bound (the address in
        use, an address that is not this host's, a port below 1024 without
        the right).
    """
    address = internals.endpointAddress(endpoint)
    if address is None:
        raise ReusePortUnavailable(
            f"--client-port is not a tcp: or tcp6: port ({type(endpoint).__name__})"
        )
    interface, port, backlog = address
    if reusePort is None:
        raise ReusePortUnavailable("this system has no SO_REUSEPORT")
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            skt = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(skt)
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                skt.setsockopt(socket.SOL_SOCKET, reusePort, 1)
            except OSError as e:
                raise ReusePortUnavailable(
                    f"the kernel refuses SO_REUSEPORT ({e.strerror})"
                ) from None
            try:
                if family == socket.AF_INET6:
                    address: Any = socket.getaddrinfo(
                        interface, port, family, socket.SOCK_STREAM, 0,
                        socket.AI_NUMERICHOST,
                    )[0][4]
                else:
                    address = (interface, port)
                skt.bind(address)
            except OSError as e:
                raise CannotListenError(interface, port, e) from None
            skt.listen(backlog)
            port = skt.getsockname()[1]
    except BaseException:
        for skt in sockets:
            skt.close()
        raise
    return sockets


def _permitted(
    info: os.stat_result, uid: int, groups: set[int], owner: int, group: int, other: int
) -> bool:
    """
    Whether the user C{uid} in C{groups} has the permission bits wanted on
    the file C{info} describes (the owner's, the group's or the others'
    bits, as the kernel picks them).
    """
    if info.st_uid == uid:
        return bool(info.st_mode & owner)
    if info.st_gid in groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def interpreterProblem(
    uid: int,
    gid: int | None = None,
    executable: str = sys.executable,
    statPath: Callable[[str], os.stat_result] = os.stat,
    groupsOf: Callable[[int, int | None], set[int]] | None = None,
) -> str | None:
    """
    Why the worker processes, started after twistd switched to C{--uid},
    could not run the interpreter (L{workerArguments}), if they could not.
    Checked before anything starts, because a worker that cannot be
    executed only shows as workers dying at start.

    @param uid: The user the workers run as.
    @param gid: Its group (default: the user's own).
    @param executable: The interpreter the workers run.
    @param statPath: L{os.stat} (for tests).
    @param groupsOf: The groups of a user and group (for tests): by default
        the group and the user's supplementary groups.

    @return: L{None}, or the reason in one sentence, with what would work.
    """
    if uid == 0:
        return None
    if groupsOf is None:
        groupsOf = _groupsOf
    groups = groupsOf(uid, gid)
    fix = (
        "install Artcast in a virtualenv that user can run (e.g. under /opt), "
        "or choose another --uid"
    )
    paths = [os.path.abspath(executable), os.path.realpath(executable)]
    for path in dict.fromkeys(paths):
        folder = os.path.dirname(path)
        while True:
            if not _permitted(
                statPath(folder), uid, groups, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH
            ):
                return (
                    f"the workers run as uid {uid} cannot reach {executable}: "
                    f"the folder {folder} is closed to that user; {fix}"
                )
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
    if not _permitted(
        statPath(os.path.realpath(executable)),
        uid, groups, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH,
    ):
        return f"the workers run as uid {uid} cannot execute {executable}; {fix}"
    return None


def _groupsOf(uid: int, gid: int | None) -> set[int]:
    """
    The groups a process switched to C{uid} (and C{gid}) by twistd has: the
    group and, for a user with a name, its supplementary groups.
    """
    import pwd

    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return set() if gid is None else {gid}
    if gid is None:
        gid = entry.pw_gid
    try:
        return {gid, *os.getgrouplist(entry.pw_name, gid)}
    except OSError:
        return {gid}


def workerAccessLog(path: str | None, index: int) -> str | None:
    """
    Where worker C{index} writes its access log, given C{--access-log}.

    Several processes must not rotate one file, so each worker has its own,
    C{PATH.worker-<index>} (rotated as C{PATH.worker-<index>.1} and so on).
    Standard error (L{None} or C{"-"}) and a path that names something other
    than a regular file (C{/dev/null}, a FIFO) are shared as they are: each
    line is written whole, in one write.
    """
    if path is None or path == "-":
        return path
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return f"{path}.worker-{index}"
    if stat.S_ISREG(mode):
        return f"{path}.worker-{index}"
    return path


@attr.s(auto_attribs=True, frozen=True)
class Worker:
    """
    What a worker process knows of itself: set as C{options["worker"]}, it
    makes L{artcast.server.service.makeService} build a worker.

    @ivar index: The worker's number, from 1.
    @ivar fileno: The listening socket's file descriptor.
    @ivar addressFamily: The socket's address family.
    """

    index: int
    fileno: int = LISTEN_FD
    addressFamily: int = socket.AF_INET

    def portService(self, factory: ServerFactory, reactor: IReactorSocket) -> Service:
        """
        The service of the HTTP port: it adopts the supervisor's socket.
        """
        return AdoptedPortService(reactor, self.fileno, self.addressFamily, factory)

    def identity(self) -> dict[str, Any]:
        """
        What C{/stats} shows about this process.
        """
        return {"worker": self.index, "pid": os.getpid()}


class AdoptedPortService(Service):
    """
    Listens, from C{privilegedStartService} until C{stopService}, on a
    socket another process bound.  The file descriptor is closed once
    adopted (the port holds its own duplicate), so that stopping the port
    releases the socket in this process.
    """

    def __init__(
        self,
        reactor: IReactorSocket,
        fileno: int,
        addressFamily: int,
        factory: ServerFactory,
    ) -> None:
        self.reactor = reactor
        self.fileno = fileno
        self.addressFamily = socket.AddressFamily(addressFamily)
        self.factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """
        Adopt the socket.

        @raise Exception: Whatever adopting it raised, so the worker stops.
        """
        if self.port is None:
            setNonBlocking(self.fileno)
            self.port = self.reactor.adoptStreamPort(
                self.fileno, self.addressFamily, self.factory
            )
            os.close(self.fileno)
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def workerOptions(options: Mapping[str, Any], worker: Worker) -> dict[str, Any]:
    """
    The options of one worker: the supervisor's, as a worker.
    """
    child = dict(options)
    child["workers"] = 0
    child["worker"] = worker
    child["access-log"] = workerAccessLog(options.get("access-log"), worker.index)
    return child


def encodeOptions(options: Mapping[str, Any]) -> bytes:
    """
    The options as the supervisor writes them to a worker: their length, 8
    bytes big-endian, then their pickle.  The pipe is between a process and
    the child it started, so no one else writes to it.
    """
    data = pickle.dumps(dict(options), protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def decodeOptions(stream: IO[bytes]) -> dict[str, Any]:
    """
    Read what L{encodeOptions} wrote, and nothing more.

    @raise EOFError: If the stream ends first.
    """
    (length,) = _LENGTH.unpack(_readExactly(stream, _LENGTH.size))
    options = pickle.loads(_readExactly(stream, length))
    if not isinstance(options, dict):
        raise ValueError("the worker's options are not a dictionary")
    return options


def _readExactly(stream: IO[bytes], count: int) -> bytes:
    chunks = []
    while count:
        chunk = stream.read(count)
        if not chunk:
            raise EOFError("the supervisor closed the options pipe early")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def workerArguments(index: int, executable: str = sys.executable) -> list[str]:
    """
    The command line of worker C{index}.  Everything else comes through the
    options pipe; the index is there so that C{ps} tells the workers apart.
    """
    return [executable, "-m", "artcast.server.workers", str(index)]


def workerEnvironment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """
    The environment of a worker: the supervisor's, with the folder that holds
    this C{artcast} package first on C{PYTHONPATH}, so that the worker runs
    the same code however the supervisor found it.
    """
    env = dict(environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    env["PYTHONPATH"] = os.pathsep.join([here, *paths])
    return env


def workerLogObserver(outFile: IO[str]) -> ILogObserver:
    """
    How a worker writes its log to its supervisor: JSON text sequences
    (L{jsonFileLogObserver}), a failure's exception given as its text, which
    JSON can hold (the exception object itself would arrive as
    C{unpersistable}, its message lost).
    """
    observer = jsonFileLogObserver(outFile)

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if isinstance(failure, Failure) and not isinstance(failure.value, str):
            state = failure.__getstate__()
            state["value"] = safe_str(failure.value)
            portable = Failure.__new__(Failure)
            portable.__setstate__(state)
            event = {**event, "log_failure": portable}
        observer(event)

    return cast(ILogObserver, observe)


class LogForwarder:
    """
    Reads a worker's log (JSON text sequences: C{RS JSON LF} per event) and
    publishes each event in the supervisor's log, its system naming the
    worker.  A record that is not JSON, or longer than L{MAX_LOG_RECORD}, is
    dropped.

    The event a worker logs once it serves carries C{artcast_ready}; it
    calls C{ready}.
    """

    _log = NamedLogger(namespace="artcast.workers.LogForwarder")

    def __init__(
        self,
        index: int,
        publisher: ILogObserver,
        ready: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.publisher = publisher
        self.ready = ready
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *records, self._buffer = self._buffer.split(b"\x1e")
        if self._buffer.endswith(b"\n"):
            records.append(self._buffer)
            self._buffer = b""
        elif len(self._buffer) > MAX_LOG_RECORD:
            self._buffer = b""
            self._log.warn(
                "worker-{index}: dropped a log record longer than {limit} bytes",
                index=self.index,
                limit=MAX_LOG_RECORD,
            )
        for record in records:
            if record.strip():
                self._publish(record)

    def _publish(self, record: bytes) -> None:
        try:
            event = eventFromJSON(record.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._log.warn(
                "worker-{index}: dropped a log record that is not JSON: {record!r}",
                index=self.index,
                record=record[:200],
            )
            return
        if not isinstance(event, dict):
            return
        level = event.get("log_level")
        if not isinstance(level, type(LogLevel.info)):
            event["log_level"] = level = LogLevel.info
        # As twistd shows the system, after the worker's name.
        system = event.get("log_system")
        if system is None:
            system = f" {event.get('log_namespace', '-')}#{level.name}"
        elif system == "-":
            system = ""
        else:
            system = f" {system}"
        event["log_system"] = f"worker-{self.index}{system}"
        event["artcast_worker"] = self.index
        self.publisher(event)
        if event.get("artcast_ready") and self.ready is not None:
            self.ready()

    def flush(self) -> None:
        """
        Publish a last record that ended without its newline.
        """
        record, self._buffer = self._buffer, b""
        if record.strip():
            self._publish(record)


class WorkerProcess(ProcessProtocol):
    """
    One worker process, seen from the supervisor: sends its options, reads
    its log, and reports its end.

    @ivar ended: Fires (with L{None}) when the process has ended.
    @ivar reason: Why it ended, once it has.
    """

    def __init__(
        self,
        index: int,
        options: bytes,
        publisher: ILogObserver,
        ended: Callable[[WorkerProcess, Failure], None],
        onReady: Callable[[WorkerProcess], None] = lambda process: None,
    ) -> None:
        self.index = index
        self.options = options
        self.log = LogForwarder(index, publisher, self._ready)
        self.ready = False
        self.onReady = onReady
        self.onEnded = ended
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.pid: int | None = None

    def _ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.onReady(self)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.writeToChild(OPTIONS_FD, self.options)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == LOG_FD:
            self.log.dataReceived(data)

    def processEnded(self, reason: Failure) -> None:
        self.log.flush()
        self.reason = reason
        self.onEnded(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        """
        Send the process a signal, if it is still there.
        """
        transport: IProcessTransport | None = self.transport  # type: ignore[assignment]
        if transport is None:
            return
        try:
            transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass


class _NeverAccepts(Factory):
    """
    The supervisor's factory for the socket the workers share (where they
    cannot have one each): it never accepts, the workers do.
    """

    def logPrefix(self) -> str:
        return "Artcast workers"


class WorkerSupervisor(Service):
    """
    Binds the HTTP sockets, runs the workers on them and starts again those
    that end (see the module's description).

    @ivar workers: The running workers by index.
    @ivar listeners: The listening sockets, one per worker (worker I{i}'s
        is C{listeners[i - 1]}), once bound; empty where they share C{port}.
    @ivar port: The listening port the workers share, once bound, where
        they cannot have a socket each; else L{None}.
    """

    _log = NamedLogger(namespace="artcast.workers.WorkerSupervisor")

    def __init__(
        self,
        reactor: Any,
        endpoint: Any,
        count: int,
        options: Mapping[str, Any],
        stopTimeout: float,
        arguments: Callable[[int], Sequence[str]] = workerArguments,
        environment: Mapping[str, str] | None = None,
        publisher: ILogObserver = globalLogPublisher,
        stop: Callable[[], object] | None = None,
    ) -> None:
        """
        @param reactor: An L{IReactorProcess} and L{IReactorTime} provider.
        @param endpoint: The L{IStreamServerEndpoint} of C{--client-port}.
        @param count: How many workers.
        @param options: The options the workers get (L{workerOptions}).
        @param stopTimeout: Seconds a worker is given to stop gracefully
            before it is killed.
        @param arguments: The command line of a worker, given its index.
        @param environment: The workers' environment (L{workerEnvironment}
            by default).
        @param publisher: Where the workers' log events go.
        @param stop: Stops the server when a worker fails at its first
            start; C{reactor.stop} by default.
        """
        self.reactor = reactor
        self.endpoint = endpoint
        self.count = count
        self.options = dict(options)
        self.stopTimeout = stopTimeout
        self.arguments = arguments
        self.environment = (
            dict(environment) if environment is not None else workerEnvironment()
        )
        self.publisher = publisher
        self.port: Any = None
        self.listeners: list[socket.socket] = []
        self.workers: dict[int, WorkerProcess] = {}
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping: Deferred[None] | None = None
        #: Indexes that have had a process serving.
        self._proven: set[int] = set()
        self._gaveUp = False
        self.stop = stop if stop is not None else reactor.stop

    def listeningFD(self, index: int) -> int:
        """
        The file descriptor of the listening socket of worker C{index}: its
        own, or the shared one.
        """
        if self.listeners:
            return self.listeners[index - 1].fileno()
        return self.port.fileno()  # type: ignore[no-any-return]

    @property
    def addressFamily(self) -> int:
        if self.listeners:
            return self.listeners[0].family
        return getattr(self.port, "addressFamily", socket.AF_INET)  # type: ignore[no-any-return]

    def privilegedStartService(self) -> None:
        """
        Bind a socket per worker, or else the one socket they share (and
        stop this process accepting on it).

        @raise Exception: If it cannot be bound, so that twistd stops.
        """
        if self.port is None and not self.listeners:
            try:
                self.listeners = listenPerWorker(self.endpoint, self.count)
            except ReusePortUnavailable as e:
                self._log.info(
                    "The workers share one listening socket, so connections are "
                    "not split evenly between them: {reason}",
                    reason=str(e),
                )
                self._listenShared()
            else:
                host, port = self.listeners[0].getsockname()[:2]
                self._log.info(
                    "Listening on {host}:{port} with a socket per worker "
                    "(SO_REUSEPORT): connections are split evenly",
                    host=host, port=port,
                )
        super().privilegedStartService()

    def _listenShared(self) -> None:
        """
        Bind the one socket the workers share.
        """
        results: list[Any] = []
        self.endpoint.listen(_NeverAccepts()).addBoth(results.append)
        if not results:
            raise RuntimeError(
                "--workers needs a port that listens at once (tcp:, tcp6:, systemd:)"
            )
        if isinstance(results[0], Failure):
            results[0].raiseException()
        port = results[0]
        # Twisted's port reads (accepts) at once; here only workers do.
        port.stopReading()
        self.port = port
        if self.addressFamily not in (socket.AF_INET, socket.AF_INET6):
            self.port = None
            port.stopListening()
            raise RuntimeError(
                "--workers can share an IPv4 or IPv6 socket only"
            )

    def startService(self) -> None:
        """
        Start every worker.
        """
        super().startService()
        for index in range(1, self.count + 1):
            self._delay[index] = MIN_RESTART_DELAY
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running:
            return
        worker = Worker(index, LISTEN_FD, self.addressFamily)
        process = WorkerProcess(
            index,
            encodeOptions(workerOptions(self.options, worker)),
            self.publisher,
            self._ended,
            lambda ready: self._proven.add(ready.index),
        )
        arguments = list(self.arguments(index))
        self._started[index] = self.reactor.seconds()
        self.workers[index] = process
        try:
            self.reactor.spawnProcess(
                process,
                arguments[0],
                arguments,
                env=self.environment,
                childFDs={
                    OPTIONS_FD: "w",
                    1: 1,
                    2: 2,
                    LOG_FD: "r",
                    LISTEN_FD: self.listeningFD(index),
                },
            )
        except OSError:
            del self.workers[index]
            self._log.failure("Cannot start worker-{index}", index=index)
            if index in self._proven:
                self._scheduleRestart(index, quick=True)
            else:
                self._giveUp(index, "it cannot be spawned")
            return
        self._log.info(
            "worker-{index} started (pid {pid})", index=index, pid=process.pid
        )

    def _ended(self, process: WorkerProcess, reason: Failure) -> None:
        index = process.index
        if self.workers.get(index) is process:
            del self.workers[index]
        if not self.running:
            self._log.info(
                "worker-{index} (pid {pid}) stopped: {how}",
                index=index, pid=process.pid, how=_how(reason),
            )
            return
        if index not in self._proven:
            self._giveUp(index, _how(reason))
            return
        quick = self.reactor.seconds() - self._started.get(index, 0) < QUICK_DEATH
        delay = self._scheduleRestart(index, quick)
        self._log.warn(
            "worker-{index} (pid {pid}) ended: {how}; starting it again {when}",
            index=index, pid=process.pid, how=_how(reason),
            when=f"in {delay:g} s" if delay else "at once",
        )

    def _giveUp(self, index: int, how: str) -> None:
        """
        No process of a worker has served yet, and one ended or could not be
        spawned: most likely a mistake in the set-up (a
        multicast port the server's user may not bind, an interpreter it
        may not run), not bad luck.  Stop the server rather than run one that
        accepts connections and never answers them.
        """
        self._log.critical(
            "worker-{index} could not start ({how}); stopping the server "
            "(the worker's own messages, if any, are above)",
            index=index, how=how,
        )
        if not self._gaveUp:
            self._gaveUp = True
            self.stop()

    def _scheduleRestart(self, index: int, quick: bool) -> float:
        if quick:
            delay = self._delay.get(index, MIN_RESTART_DELAY)
            self._delay[index] = min(delay * 2, MAX_RESTART_DELAY)
        else:
            delay = 0.0
            self._delay[index] = MIN_RESTART_DELAY
        if self.running:
            self._restarts[index] = self.reactor.callLater(delay, self._spawn, index)
        return delay

    def stopService(self) -> Deferred[None]:
        """
        Stop the workers gracefully (SIGTERM), kill those left after
        C{stopTimeout} plus L{STOP_GRACE} seconds, then close the sockets.

        @return: A L{Deferred} that fires when all is done, in a bounded time.
        """
        if self._stopping is not None:
            return self._stopping
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        done: Deferred[None] = Deferred()
        self._stopping = done
        processes = list(self.workers.values())
        for process in processes:
            process.signal("TERM")
        timers: list[IDelayedCall] = []

        def closePort(_: object = None) -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            if done.called:
                return
            listeners, self.listeners = self.listeners, []
            for listener in listeners:
                listener.close()
            port, self.port = self.port, None
            if port is None:
                done.callback(None)
                return
            stopped = port.stopListening()
            if stopped is None:
                done.callback(None)
            else:
                stopped.addBoth(finish)

        def finish(_: object) -> None:
            if not done.called:
                done.callback(None)

        def kill() -> None:
            left = [p for p in processes if not p.ended.called]
            for process in left:
                self._log.warn(
                    "worker-{index} (pid {pid}) did not stop in {timeout} s; killing it",
                    index=process.index, pid=process.pid,
                    timeout=self.stopTimeout + STOP_GRACE,
                )
                process.signal("KILL")
            timers.append(self.reactor.callLater(KILL_GRACE, closePort))

        if processes:
            timers.append(self.reactor.callLater(self.stopTimeout + STOP_GRACE, kill))
            DeferredList([p.ended for p in processes]).addCallback(closePort)
        else:
            closePort()
        return done


def _how(reason: Failure) -> str:
    """
    How a process ended, in words.
    """
    value = reason.value
    signalNumber = getattr(value, "signal", None)
    if signalNumber:
        try:
            name = signal.Signals(signalNumber).name
        except ValueError:
            name = str(signalNumber)
        return f"killed by {name}"
    return f"exit status {getattr(value, 'exitCode', None)}"


class SupervisorService(MultiService):
    """
    What the twistd process of C{--workers N} runs: its error log and the
    L{WorkerSupervisor}, as children.

    @ivar supervisor: the L{WorkerSupervisor}.
    """

    def __init__(self, supervisor: WorkerSupervisor) -> None:
        super().__init__()
        self.supervisor = supervisor


def makeSupervisor(options: Mapping[str, Any], reactor: Any) -> SupervisorService:
    """
    Build the supervisor of C{--workers N}: its error log (the only writer of
    that file; the workers' events arrive through their log pipes) and the
    L{WorkerSupervisor}.
    """
    from artcast.server.logs import ErrorLogService, errorLogObserver, repeatsTwistdLog

    errorLog = ErrorLogService(
        errorLogObserver(
            options["error-log"], options["error-log-size"], options["error-log-count"]
        )
    )
    supervisor = WorkerSupervisor(
        reactor,
        serverFromString(reactor, options["client-port"]),
        options["workers"],
        options,
        stopTimeout=options["shutdown-timeout"],
    )
    top = SupervisorService(supervisor)
    # Under twistd -n, an error log on standard error would repeat twistd's.
    if not repeatsTwistdLog(options["error-log"], getattr(options, "parent", None)):
        errorLog.setServiceParent(top)
    supervisor.setServiceParent(top)
    return top


@implementer(IReadDescriptor)
class _ParentWatch:
    """
    Stops the worker when its supervisor goes: the options pipe (the
    worker's standard input, which only the supervisor writes) ends.
    """

    def __init__(self, fileno: int, stop: Callable[[], None]) -> None:
        self._fileno = fileno
        self.stop = stop
        setNonBlocking(fileno)

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "supervisor"

    def doRead(self) -> Any:
        return readFromFD(self._fileno, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        self.stop()


def main(
    argv: Sequence[str] | None = None,
    stdin: IO[bytes] | None = None,
    reactor: Any = None,
) -> int:
    """
    Run one worker: read the options from the supervisor, log to it, build
    the service and run until SIGTERM, SIGINT or the supervisor's end.

    @return: The exit status.
    """
    if stdin is None:
        stdin = io.FileIO(OPTIONS_FD, "r", closefd=False)
    options = decodeOptions(stdin)
    worker = options["worker"]

    from twisted.logger import globalLogBeginner

    logFile = open(LOG_FD, "w", encoding="utf-8", errors="replace", closefd=False)
    globalLogBeginner.beginLoggingTo([workerLogObserver(logFile)])
    log = Logger(namespace="artcast.workers")

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor

    from artcast.server.service import makeService

    try:
        service = makeService(options, reactor)
        service.privilegedStartService()
    except BaseException:
        log.failure("worker-{index} could not start", index=worker.index)
        logFile.flush()
        return 1

    stopping: list[bool] = []

    def stop() -> None:
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def onSignal(number: int, frame: Any) -> None:
        reactor.callFromThread(stop)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, onSignal)

    def start() -> None:
        service.startService()
        log.info(
            "worker-{index} serving (pid {pid})",
            index=worker.index, pid=os.getpid(), artcast_ready=True,
        )

    reactor.callWhenRunning(start)
    reactor.callWhenRunning(reactor.addReader, _ParentWatch(OPTIONS_FD, stop))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    # Run the module's own copy (not this __main__ one), so that the Worker
    # in the options pickle and the code that uses it are one class.
    from artcast.server import workers as _workers

    sys.exit(_workers.main(sys.argv[1:]))
