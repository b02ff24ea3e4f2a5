# -*- test-case-name: tests.test_bench -*-
"""
A real C{redis-server} for the benchmarks of the Redis bus (C{bench/hops.py
--bus}, C{bench/busload.py}): on a free port of 127.0.0.1, without
persistence (C{--save '' --appendonly no}), started as a
L{fanout.Process} and stopped by its own PID; its CPU time is read from
C{/proc/<pid>/stat} like the servers'.

(Not named C{redis.py}: run as C{python bench/x.py}, C{bench/} is first on
C{sys.path} and would hide any C{redis} package.)
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Sequence

from bench import fanout

REDIS_SERVER = shutil.which("redis-server")
"""The C{redis-server} on C{PATH}, or L{None}."""


def available() -> bool:
    """
    Whether C{redis-server} is installed (Debian: C{apt-get install redis-server}).
    """
    return REDIS_SERVER is not None


class RedisServer:
    """
    A running C{redis-server} of the benchmark.

    @ivar port: its TCP port on 127.0.0.1.
    @ivar url: the C{--bus} URL, C{redis://127.0.0.1:PORT}.
    @ivar process: the L{fanout.Process}.
    """

    def __init__(self, directory: Path, prefix: Sequence[str] = (), timeout: float = 30.0) -> None:
        """
        Start it (its working directory and log in C{directory}; C{prefix}
        before its command, e.g. C{taskset -c 1}) and wait, at most
        C{timeout} seconds, until it answers C{PING}.

        @raise fanout.BenchError: if it is not installed, exits or does not
            answer in time.
        """
        if REDIS_SERVER is None:
            raise fanout.BenchError("redis-server is not installed")
        directory = directory.resolve()  # redis-server reads --dir from its own working directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = fanout.freeTcpPort()
        self.url = f"redis://127.0.0.1:{self.port}"
        argv = [*prefix, REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.process = fanout.Process(f"redis-server :{self.port}", argv,
                                      directory / f"redis-{self.port}.log", cwd=directory)
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.alive():
                raise fanout.BenchError(f"redis-server exited with {self.process.popen.returncode}")
            if self.command(b"PING") == b"+PONG\r\n":
                return
            if time.monotonic() > deadline:
                self.stop()
                raise fanout.BenchError(f"redis-server did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self, *args: bytes) -> bytes | None:
        """
        Send one command and give the first piece of its raw answer (enough
        for C{PING}, C{XLEN}), over a blocking socket with a 2 s timeout;
        L{None} if Redis cannot be reached.
        """
        request = b"*%d\r\n" % (len(args),) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(request)
                return connection.recv(65536)
        except OSError:
            return None

    def streamLength(self) -> int | None:
        """
        C{XLEN artcast:datums}: the entries of the bus's stream (L{None} if
        Redis does not answer an integer).
        """
        answer = self.command(b"XLEN", b"artcast:datums")
        if answer is None or not answer.startswith(b":"):
            return None
        return int(answer[1:].strip())

    def cpuSeconds(self) -> float:
        """
        Its user plus system CPU seconds (all its threads).
        """
        return fanout.cpuSeconds(self.pid)

    def stop(self) -> None:
        """
        SIGTERM it by its PID (SIGKILL after 5 s).
        """
        self.process.stop()
