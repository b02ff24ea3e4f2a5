"""
Helpers for integration tests: start the real C{twistd artcast} process on
free loopback ports, send it multicast datums, and stop it by its own PID.

All traffic stays on this machine: HTTP on 127.0.0.1, multicast to a random
group in 239.255.0.0/16 on a free port, sent with C{IP_MULTICAST_IF}
127.0.0.1 and TTL 0, and servers joined with C{--interface 127.0.0.1}.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sys
from typing import Any, Sequence

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: How long a server may take to start, and to stop, in seconds.
START_LIMIT = 20.0
STOP_LIMIT = 10.0


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A port number free on 127.0.0.1 right now.
    """
    return freePorts(1, kind)[0]


def freePorts(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """
    C{count} different port numbers free on 127.0.0.1 right now: the probes
    are held open together, so the kernel cannot hand out one port twice.
    """
    probes = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def readAvailable(sock: socket.socket) -> bytes:
    """
    What a non-blocking socket has received and not yet been read (at most
    100 reads), without waiting.
    """
    chunks = []
    for _ in range(100):
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def randomGroup() -> str:
    """
    A random administratively scoped multicast group (239.255.0.0/16).
    """
    return "239.255.%d.%d" % (random.randint(0, 255), random.randint(1, 254))


class Sender:
    """
    Send datagrams to a group over loopback only: C{IP_MULTICAST_IF}
    127.0.0.1, TTL 0.
    """

    def __init__(self, group: str, port: int) -> None:
        self.address = (group, port)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
        )
        self.socket.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        self.socket.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)

    def send(self, datagram: bytes) -> None:
        self.socket.sendto(datagram, self.address)

    def sendDatum(self, key: str, value: Any) -> None:
        """
        Send a version 1 datum, as the original sources did.
        """
        self.send(json.dumps([key, value]).encode("utf-8"))

    def close(self) -> None:
        self.socket.close()


class _Watcher(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[Any] = Deferred()
        self.status: Any = None

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.status = reason.value
        self.ended.callback(reason.value)


class _Peer:
    """
    A real peer the tests start (haproxy, nginx, redis-server, mosquitto),
    stopped and killed by its own PID.

    @ivar watcher: the process's protocol, once started.
    @ivar pid: its PID, once started.
    """

    watcher: _Watcher | None = None
    pid: int | None = None

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Stop it by its PID: SIGTERM, then SIGKILL past a bound.
        """
        watcher = self.watcher
        if watcher is None or watcher.status is not None or self.pid is None:
            return
        os.kill(self.pid, signal.SIGTERM)
        timer = reactor.callLater(STOP_LIMIT, self._kill, watcher)
        yield watcher.ended
        if timer.active():
            timer.cancel()

    def _kill(self, watcher: _Watcher) -> None:
        if watcher.status is None and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)

    @inlineCallbacks
    def kill(self) -> Any:
        """
        Kill it by its PID with SIGKILL, and wait (a bounded time) until it
        has ended.
        """
        watcher = self.watcher
        if watcher is None or watcher.status is not None or self.pid is None:
            return
        os.kill(self.pid, signal.SIGKILL)
        limit = reactor.callLater(STOP_LIMIT, watcher.ended.cancel)
        yield watcher.ended
        if limit.active():
            limit.cancel()


#: How many times a server is started on newly chosen ports when the port
#: it was given was taken meanwhile.
START_ATTEMPTS = 3


class ArtcastProcess:
    """
    A real C{twistd -n artcast} process on free loopback ports.

    @ivar url: the server's base URL, e.g. C{http://127.0.0.1:4321}.
    @ivar data: a L{Sender} to the server's data group.
    @ivar register: a L{Sender} to its register group.
    """

    def __init__(
        self,
        testCase: Any,
        extra: Sequence[str] = (),
        daemon: bool = False,
        group: str | None = None,
        dataPort: int | None = None,
        registerPort: int | None = None,
        httpPort: int | None = None,
        twistdArgs: Sequence[str] = (),
    ) -> None:
        self.testCase = testCase
        self.group = group or randomGroup()
        self._given = (dataPort, registerPort, httpPort)
        self._extra = tuple(extra)
        self._twistdArgs = tuple(twistdArgs)
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        self.daemon = daemon
        self._choosePorts()
        self.watcher = _Watcher()
        self.pid: int | None = None

    def _choosePorts(self) -> None:
        """
        Take the ports given, and free ones for the others, and make the
        command line, the URL and the senders of those ports.
        """
        dataPort, registerPort, httpPort = self._given
        data, register, spare = freePorts(3, socket.SOCK_DGRAM)
        self.dataPort = dataPort or data
        self.registerPort = registerPort or (register if register != self.dataPort else spare)
        self.httpPort = httpPort or freePort()
        self.url = "http://127.0.0.1:%d" % (self.httpPort,)
        self.args = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            *(() if self.daemon else ("-n",)),
            "--pidfile", self.pidfile, *self._twistdArgs,
            "artcast",
            "--client-port", "tcp:%d:interface=127.0.0.1" % (self.httpPort,),
            "--data-group", self.group, "--data-port", str(self.dataPort),
            "--register-group", self.group, "--register-port", str(self.registerPort),
            "--interface", "127.0.0.1",
            *self._extra,
        ]
        self.data = Sender(self.group, self.dataPort)
        self.register = Sender(self.group, self.registerPort)

    @property
    def output(self) -> str:
        return self.watcher.output.decode("utf-8", "replace")

    def spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        transport = reactor.spawnProcess(
            self.watcher, sys.executable, self.args, env=env, path=self.directory
        )
        self.pid = transport.pid

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start the server and wait, a bounded time, until it answers HTTP.
        The test stops it at cleanup.
        """
        self.testCase.addCleanup(self.stop)
        for attempt in range(START_ATTEMPTS):
            self.spawn()
            try:
                yield self.waitUntilServing()
            except RuntimeError:
                # A port found free was taken by another test's process
                # before this one bound it: again, on other free ports.
                if (
                    attempt + 1 == START_ATTEMPTS
                    or self.daemon
                    or self._given[2] is not None
                    or "Address already in use" not in self.output
                ):
                    raise
                self.watcher = _Watcher()
                self.data.close()
                self.register.close()
                self._choosePorts()
                continue
            break
        if self.daemon:
            yield self.watcher.ended
            with open(self.pidfile) as f:
                self.pid = int(f.read().strip())
        returnValue(self)

    @inlineCallbacks
    def waitUntilServing(self) -> Any:
        deadline = reactor.seconds() + START_LIMIT
        while True:
            if self.watcher.status is not None and not self.daemon:
                raise RuntimeError("artcast exited at start:\n" + self.output)
            try:
                # (Bounded: a port taken meanwhile may hold the request.)
                response = yield treq.get(
                    self.url + "/stats.json", persistent=False, timeout=2
                )
                yield response.content()
                return
            except Exception:
                if reactor.seconds() > deadline:
                    raise RuntimeError("artcast did not start:\n" + self.output)
            yield deferLater(reactor, 0.05, lambda: None)

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Stop the server by its PID: SIGTERM, then SIGKILL past a bound.
        """
        self.data.close()
        self.register.close()
        if self.daemon:
            yield self._stopDaemon()
            return
        if self.watcher.status is None and self.pid is not None:
            os.kill(self.pid, signal.SIGTERM)
            timer = reactor.callLater(
                STOP_LIMIT, lambda: self.alive() and os.kill(self.pid, signal.SIGKILL)
            )
            yield self.watcher.ended
            if timer.active():
                timer.cancel()

    @inlineCallbacks
    def _stopDaemon(self) -> Any:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = reactor.seconds() + STOP_LIMIT
        while self.alive() and reactor.seconds() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    @inlineCallbacks
    def stats(self) -> Any:
        response = yield treq.get(self.url + "/stats.json", persistent=False)
        if response.code != 200:
            text = yield response.text("utf-8")
            raise AssertionError(
                "/stats.json answered %d: %s\nserver output:\n%s"
                % (response.code, text[:500], self.output[-4000:])
            )
        body = yield response.json()
        returnValue(body)

    @inlineCallbacks
    def waitFor(self, condition: Any, limit: float = 10.0) -> Any:
        """
        Poll C{/stats.json} until C{condition(stats)} is true, a bounded time.
        """
        deadline = reactor.seconds() + limit
        while True:
            stats = yield self.stats()
            if condition(stats):
                returnValue(stats)
            if reactor.seconds() > deadline:
                raise self.testCase.failureException(
                    "condition not met; stats: %r" % (stats,)
                )
            yield deferLater(reactor, 0.02, lambda: None)

    @inlineCallbacks
    def registerKeys(self, count: int, description: str) -> Any:
        """
        Register C{count} keys C{bulk/0000}... with a description, and wait
        until the server holds them all: sent again (the same metadata) in
        rounds, five at most, in case loopback drops datagrams sent in a
        burst.
        """
        for _ in range(5):
            for n in range(count):
                self.register.send(json.dumps(
                    ["bulk/%04d" % (n,), {"description": description}]
                ).encode())
                if n % 50 == 49:
                    yield deferLater(reactor, 0.002, lambda: None)
            stats = yield self.stats()
            if stats["keys"] >= count:
                break
        yield self.waitFor(lambda s: s["keys"] >= count, limit=15)

    def waitForWaiters(self, count: int) -> Deferred[Any]:
        """
        Wait until the server holds at least C{count} waiting requests.
        """
        return self.waitFor(lambda stats: stats["waiting"] >= count)


#: Where the Debian package puts haproxy.
HAPROXY = "/usr/sbin/haproxy"


class HAProxy(_Peer):
    """
    A real C{haproxy -db} in front of servers on 127.0.0.1, on a free
    loopback port, stopped by its own PID.

    The configuration (in a temporary folder) is HTTP mode, with timeouts
    long enough for streams (C{timeout server}, C{client} and C{tunnel}: an
    hour) and one backend server per port given, health-checked by TCP
    every 500 ms (down after 2 failures, up after 1 success), taken in turn
    (C{balance roundrobin}).

    @ivar port: the frontend's port; C{url} its base URL.
    @ivar config: the configuration file's path.
    """

    def __init__(
        self,
        testCase: Any,
        backends: Sequence[int],
        frontend: Sequence[str] = (),
        backend: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        """
        @param backends: the servers' ports on 127.0.0.1.
        @param frontend: lines added to the frontend section (ACLs,
            C{http-request deny ...}).
        @param backend: lines added to the backend section (C{option
            httpchk ...}, another C{balance}).
        """
        self.testCase = testCase
        self.backends = list(backends)
        self.port = port or freePort()
        self.url = "http://127.0.0.1:%d" % (self.port,)
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.config = os.path.join(self.directory, "haproxy.cfg")
        lines = [
            "global",
            "    maxconn 4096",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout tunnel 1h",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            "frontend artcast",
            "    bind 127.0.0.1:%d" % (self.port,),
            *("    " + line for line in frontend),
            "    default_backend servers",
            "backend servers",
            "    balance roundrobin",
            *("    " + line for line in backend),
            *(
                "    server s%d 127.0.0.1:%d check inter 500 fall 2 rise 1" % (n, port)
                for n, port in enumerate(self.backends, 1)
            ),
        ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.watcher = _Watcher()
        self.pid: int | None = None

    @staticmethod
    def missing() -> str | None:
        """
        Why haproxy cannot be run here (a reason for C{SkipTest}), or
        L{None}.
        """
        if not os.access(HAPROXY, os.X_OK):
            return f"{HAPROXY} is not installed (apt-get install haproxy)"
        return None

    @property
    def output(self) -> str:
        return self.watcher.output.decode("utf-8", "replace")

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start haproxy and wait, a bounded time, until its port accepts
        connections.  The test stops it at cleanup.
        """
        self.testCase.addCleanup(self.stop)
        transport = reactor.spawnProcess(
            self.watcher, HAPROXY, [HAPROXY, "-f", self.config, "-db"],
            env={"PATH": "/usr/sbin:/usr/bin:/bin"}, path=self.directory,
        )
        self.pid = transport.pid
        deadline = reactor.seconds() + START_LIMIT
        while True:
            if self.watcher.status is not None:
                raise RuntimeError("haproxy exited at start:\n" + self.output)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if reactor.seconds() > deadline:
                raise RuntimeError("haproxy did not start:\n" + self.output)
            yield deferLater(reactor, 0.05, lambda: None)
        returnValue(self)


#: Where the Debian package puts nginx.
NGINX = "/usr/sbin/nginx"

#: The nginx configuration docs/operations.md gives.
NGINX_EXAMPLE = os.path.join(ROOT, "docs", "examples", "nginx-artcast.conf")


class Nginx(_Peer):
    """
    A real C{nginx} running the documented configuration
    (C{docs/examples/nginx-artcast.conf}) in front of servers on 127.0.0.1,
    on a free loopback port, in the foreground, stopped by its own PID
    (SIGTERM, nginx's fast stop: SIGQUIT, its graceful one, would wait for
    the open streams).

    The top-level C{nginx.conf} (in a temporary folder, with its pidfile,
    error log and temporary folders there) includes a copy of the example
    whose C{listen} is 127.0.0.1 and a free port, and whose upstream
    C{server} lines are the test's servers.

    @ivar port: the port nginx listens on; C{url} its base URL.
    @ivar config: the top-level configuration file's path.
    @ivar site: the copy of the example it includes.
    """

    def __init__(
        self, testCase: Any, backends: Sequence[int], port: int | None = None,
        example: str = NGINX_EXAMPLE,
    ) -> None:
        """
        @param backends: the servers' ports on 127.0.0.1.
        @param example: the configuration to include, as docs show it.
        """
        self.testCase = testCase
        self.backends = list(backends)
        self.port = port or freePort()
        self.url = "http://127.0.0.1:%d" % (self.port,)
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        with open(example) as f:
            text = f.read()
        self.site = os.path.join(self.directory, "artcast.conf")
        with open(self.site, "w") as f:
            f.write(self.adapt(text, self.backends, self.port))
        self.config = os.path.join(self.directory, "nginx.conf")
        d = self.directory
        lines = [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            *(["user root;"] if os.getuid() == 0 else []),
            f"pid {d}/nginx.pid;",
            f"error_log {d}/error.log warn;",
            "events { worker_connections 256; }",
            "http {",
            "    access_log off;",
            f"    client_body_temp_path {d}/client_body;",
            f"    proxy_temp_path {d}/proxy;",
            f"    fastcgi_temp_path {d}/fastcgi;",
            f"    uwsgi_temp_path {d}/uwsgi;",
            f"    scgi_temp_path {d}/scgi;",
            f"    include {self.site};",
            "}",
        ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.watcher = _Watcher()
        self.pid: int | None = None

    @staticmethod
    def adapt(text: str, backends: Sequence[int], port: int) -> str:
        """
        The example with its C{listen} port replaced by 127.0.0.1:C{port}
        and its upstream's C{server} lines by one per backend port.

        @raise ValueError: if the example has no C{listen} or C{server}
            line to replace (the test would then not test it).
        """
        out: list[str] = []
        listens = servers = 0
        for line in text.splitlines(keepends=True):
            words = line.split("#", 1)[0].split()
            indent = line[: len(line) - len(line.lstrip())]
            if words[:1] == ["listen"]:
                listens += 1
                out.append(f"{indent}listen 127.0.0.1:{port};\n")
            elif words[:1] == ["server"] and len(words) == 2 and words[1].endswith(";"):
                if servers == 0:
                    out.extend(f"{indent}server 127.0.0.1:{b};\n" for b in backends)
                servers += 1
            else:
                out.append(line)
        if not listens or not servers:
            raise ValueError("the nginx example has no listen or upstream server line")
        return "".join(out)

    @staticmethod
    def missing() -> str | None:
        """
        Why nginx cannot be run here (a reason for C{SkipTest}), or L{None}.
        """
        if not os.access(NGINX, os.X_OK):
            return f"{NGINX} is not installed (apt-get install nginx-light)"
        return None

    @property
    def output(self) -> str:
        text = self.watcher.output.decode("utf-8", "replace")
        try:
            with open(os.path.join(self.directory, "error.log")) as f:
                text += f.read()
        except OSError:
            pass
        return text

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start nginx and wait, a bounded time, until its port accepts
        connections.  The test stops it at cleanup.
        """
        self.testCase.addCleanup(self.stop)
        transport = reactor.spawnProcess(
            self.watcher, NGINX,
            [NGINX, "-p", self.directory + "/", "-c", self.config],
            env={"PATH": "/usr/sbin:/usr/bin:/bin"}, path=self.directory,
        )
        self.pid = transport.pid
        deadline = reactor.seconds() + START_LIMIT
        while True:
            if self.watcher.status is not None:
                raise RuntimeError("nginx exited at start:\n" + self.output)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if reactor.seconds() > deadline:
                raise RuntimeError("nginx did not start:\n" + self.output)
            yield deferLater(reactor, 0.05, lambda: None)
        returnValue(self)


#: Where the Redis server of the bus tests is; they are skipped without it.
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer(_Peer):
    """
    A real C{redis-server} on a free loopback port, without persistence,
    stopped by its own PID; or, given C{sentinel} lines, a Redis Sentinel
    (C{redis-server sentinel.conf --sentinel}, the configuration written to
    a temporary directory).

    @ivar url: the C{--bus} URL, e.g. C{redis://127.0.0.1:6380}.
    """

    def __init__(
        self,
        testCase: Any,
        port: int | None = None,
        extra: Sequence[str] = (),
        sentinel: Sequence[str] | None = None,
    ) -> None:
        """
        @param extra: more arguments for C{redis-server}, e.g.
            C{["--replicaof", "127.0.0.1", "6380"]}.
        @param sentinel: the lines of C{sentinel.conf} after C{port}, C{bind}
            and C{dir}, e.g. C{["sentinel monitor mymaster 127.0.0.1 6380
            1"]}: then a sentinel is started.
        """
        self.testCase = testCase
        self.port = port or freePort()
        self.url = "redis://127.0.0.1:%d" % (self.port,)
        self.extra = list(extra)
        self.sentinel = list(sentinel) if sentinel is not None else None
        self.watcher: _Watcher | None = None
        self.pid: int | None = None
        self._cleanup = False

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start it and wait, a bounded time, until it answers C{PING}; the
        test stops it at cleanup.
        """
        if not self._cleanup:
            self.testCase.addCleanup(self.stop)
            self._cleanup = True
        self.watcher = _Watcher()
        directory = os.path.abspath(self.testCase.mktemp())
        os.makedirs(directory)
        if self.sentinel is not None:
            config = os.path.join(directory, "sentinel.conf")
            with open(config, "w") as text:
                text.write("".join(
                    line + "\n" for line in
                    [f"port {self.port}", "bind 127.0.0.1", f"dir {directory}", *self.sentinel]
                ))
            arguments = [REDIS_SERVER, config, "--sentinel", *self.extra]
        else:
            arguments = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", directory, *self.extra,
            ]
        transport = reactor.spawnProcess(
            self.watcher, REDIS_SERVER, arguments, env={}, path=directory,
        )
        self.pid = transport.pid
        deadline = reactor.seconds() + START_LIMIT
        while True:
            if self.watcher.status is not None:
                raise RuntimeError("redis-server exited:\n" + self.watcher.output.decode())
            answer = yield self.command(b"PING")
            if answer == b"+PONG\r\n":
                break
            if reactor.seconds() > deadline:
                raise RuntimeError("redis-server did not start")
            yield deferLater(reactor, 0.05, lambda: None)
        returnValue(self)

    def command(self, *args: bytes) -> Deferred[bytes | None]:
        """
        Send one command and give the first piece of its raw answer (enough
        for C{PING} or C{XLEN}; L{None} if Redis cannot be reached), over a
        blocking socket with a 2 s timeout.
        """
        request = b"*%d\r\n" % (len(args),) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args
        )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(request)
                answer: bytes | None = connection.recv(65536)
        except OSError:
            answer = None
        return succeed(answer)


#: Where the MQTT broker of the MQTT tests is; they are skipped without it.
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto(_Peer):
    """
    A real C{mosquitto} broker on a free loopback port, its configuration
    written to a temporary directory, stopped (or killed) by its own PID.

    @ivar url: the C{--mqtt} URL, e.g. C{mqtt://127.0.0.1:1884}.
    """

    def __init__(
        self,
        testCase: Any,
        port: int | None = None,
        passwords: dict[str, str] | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """
        @param passwords: users and their passwords: anonymous clients are
            refused (a C{password_file} made with C{mosquitto_passwd -b}).
        @param tls: C{(certificate file, key file)}: the listener speaks TLS.
        """
        self.testCase = testCase
        self.port = port or freePort()
        self.url = "%s://127.0.0.1:%d" % ("mqtts" if tls else "mqtt", self.port)
        self.passwords = passwords
        self.tls = tls
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.watcher: _Watcher | None = None
        self.pid: int | None = None
        self._cleanup = False

    @staticmethod
    def missing() -> str | None:
        """
        Why the broker cannot be run here, or L{None}.
        """
        if not os.access(MOSQUITTO, os.X_OK):
            return "mosquitto is not installed (apt-get install mosquitto)"
        return None

    def _configure(self) -> str:
        import pwd

        # Run as whoever runs the tests: started by root, mosquitto would
        # become the user mosquitto, who cannot read the test's files.
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {user}"]
        if self.passwords is None:
            lines.append("allow_anonymous true")
        else:
            passwordFile = os.path.join(self.directory, "passwords")
            open(passwordFile, "w").close()
            os.chmod(passwordFile, 0o600)
            for user, password in self.passwords.items():
                subprocessRun(["mosquitto_passwd", "-b", passwordFile, user, password])
            lines += ["allow_anonymous false", f"password_file {passwordFile}"]
        if self.tls is not None:
            lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
        config = os.path.join(self.directory, "mosquitto.conf")
        with open(config, "w") as text:
            text.write("".join(line + "\n" for line in lines))
        return config

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start it and wait, a bounded time, until its port takes connections;
        the test stops it at cleanup.  Started again after L{kill}, on the
        same port.
        """
        if not self._cleanup:
            self.testCase.addCleanup(self.stop)
            self._cleanup = True
        config = self._configure()
        self.watcher = _Watcher()
        transport = reactor.spawnProcess(
            self.watcher, MOSQUITTO, [MOSQUITTO, "-c", config], env={}, path=self.directory,
        )
        self.pid = transport.pid
        deadline = reactor.seconds() + START_LIMIT
        while True:
            if self.watcher.status is not None:
                raise RuntimeError("mosquitto exited:\n" + self.watcher.output.decode())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                pass
            if reactor.seconds() > deadline:
                raise RuntimeError("mosquitto did not start:\n" + self.watcher.output.decode())
            yield deferLater(reactor, 0.05, lambda: None)
        returnValue(self)


def subprocessRun(arguments: Sequence[str]) -> None:
    """
    Run a short command to its end (bounded: 20 s), raising if it fails.
    """
    import subprocess

    subprocess.run(list(arguments), check=True, timeout=20, capture_output=True)


class PacedSender:
    """
    Sends datums C{1, 2, ...} on a key with a L{artcast.source.Source}, 10
    at a time, letting the reactor turn C{pause} seconds after each ten.
    """

    def __init__(self, source: Any, key: str, pause: float = 0.01) -> None:
        self.source = source
        self.key = key
        self.pause = pause
        self.sent = 0

    @inlineCallbacks
    def upTo(self, count: int) -> Any:
        """
        Send datums until C{count} have been sent.
        """
        while self.sent < count:
            self.sent += 1
            self.source.send(self.key, self.sent)
            if self.sent % 10 == 0:
                yield deferLater(reactor, self.pause, lambda: None)
