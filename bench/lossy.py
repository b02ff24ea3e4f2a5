# -*- test-case-name: tests.test_lossy -*-
"""
A private network of Linux network namespaces with real, kernel-made
datagram loss, for loss experiments (issue 11): used by C{tests/test_lossy.py}
and C{bench/repair.py}.

The layout::

    namespace <prefix>br          namespace <prefix>h1 ...    namespace <prefix>hN
    bridge "lan" -- veth "p1" ==== veth "eth0" 10.77.0.1/24
                \\-- veth "pN" ==== ...                        veth "eth0" 10.77.0.N/24

The bridge lives in a namespace of its own, so nothing at all is made in the
host's own network namespace: the host's links, addresses, routes and
firewall are never touched.  Every host has its loopback up, one address in
10.77.0.0/24 and a route for 224.0.0.0/4 on its veth, so a multicast
datagram sent with TTL 1 from one host reaches every other host (the bridge
floods multicast: its IGMP snooping is off).  Names carry the process id
(C{ac<pid>x<n>}), so parallel runs never collide.

Loss is an nftables table I{inside} a host's namespace (L{Host.setLoss}):
C{meta l4proto udp numgen random mod 100 < P drop} on the input and/or
output hook, so each host can lose a different share of what it receives
and sends.  TCP (the HTTP clients) is never dropped.

Processes run in a host's namespace with C{ip netns exec} (L{Host.spawn}).
A server's HTTP port is reached from I{inside} the same namespace: the HTTP
clients of the tests and of the benchmark are small Python processes started
there too (this module's command line: C{get}, C{follow}), which print JSON.
This keeps the test process itself in the host's namespace and needs no
route into the private network.

Teardown (L{Network.close}, also run by C{atexit}) stops every process it
started, by its own PID (SIGTERM, then SIGKILL past a bound), then deletes
every namespace it made (which deletes their links), each step bounded in
time.

The command line (run inside a namespace by the helpers below)::

    python -m bench.lossy blast GROUP PORT INTERFACE COUNT RATE
    python -m bench.lossy receive GROUP PORT INTERFACE IDLE
    python -m bench.lossy send GROUP PORT REGISTERPORT INTERFACE KEY COUNT RATE [PAUSE [1|0|unbatched]]
    python -m bench.lossy get URL
    python -m bench.lossy follow URL KEY IDLE
"""

from __future__ import annotations

import atexit
import re
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBNET = "10.77.0"
PREFIX_LENGTH = 24
#: The multicast group of every loss experiment (the servers are told it).
GROUP = "239.255.77.1"
DATA_PORT = 5007
REGISTER_PORT = 5008
COMMAND_LIMIT = 10.0
"""Seconds any one C{ip}/C{nft} command may take."""
STOP_LIMIT = 5.0
"""Seconds a process has to end after SIGTERM before it is killed."""

_available: tuple[bool, str] | None = None


def _run(args: Sequence[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """
    Run one command, bounded by L{COMMAND_LIMIT}.

    @raise RuntimeError: when it fails and C{check} is set.
    """
    result = subprocess.run(
        list(args), input=input, capture_output=True, text=True, timeout=COMMAND_LIMIT
    )
    if check and result.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(args), result.stderr.strip()))
    return result


def available() -> tuple[bool, str]:
    """
    Whether this machine can make a lossy network, and if not, why.

    It needs root (namespaces and veths need C{CAP_NET_ADMIN} and
    C{CAP_SYS_ADMIN}), C{ip} with C{netns}, and C{nft}; then it really makes
    one namespace with an nftables table in it, and removes it.  The answer
    is computed once per process.

    @return: C{(True, "")} or C{(False, reason)}.
    """
    global _available
    if _available is None:
        _available = _probe()
    return _available


def _probe() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "lossy networks need root (network namespaces, veth pairs)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            return False, "%s is not installed (apt-get install -y %s)" % (
                tool, "nftables" if tool == "nft" else "iproute2")
    name = "ac%dprobe" % (os.getpid(),)
    try:
        _run(["ip", "netns", "add", name])
    except Exception as e:
        return False, "cannot make a network namespace: %s" % (e,)
    try:
        _run(["ip", "netns", "exec", name, _tool("nft"), "add table inet probe"])
        _run(["ip", "-n", name, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"])
    except Exception as e:
        return False, "cannot use nftables or veths in a namespace: %s" % (e,)
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return True, ""


def _tool(name: str) -> str:
    return shutil.which(name) or "/usr/sbin/" + name


def netnsList() -> list[str]:
    """
    The names of the named network namespaces (C{ip netns list}).
    """
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Host:
    """
    One host of a L{Network}: a namespace joined to the bridge.

    @ivar name: the namespace's name.
    @ivar address: its IPv4 address in 10.77.0.0/24.
    """

    def __init__(self, network: "Network", name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.address = address

    def command(self, args: Sequence[str]) -> list[str]:
        """
        C{args} prefixed to run in this host's namespace.
        """
        return ["ip", "netns", "exec", self.name, *args]

    def setLoss(self, percent: int, direction: str = "in", protocol: str = "udp") -> None:
        """
        Drop C{percent} % of this host's datagrams at random, from now on
        (replacing any earlier rule): an nftables table C{lossy} in its
        namespace, C{numgen random mod 100 < percent drop}.

        @param percent: 0 to 100; 0 removes the rule.
        @param direction: C{"in"} (what the host receives), C{"out"} (what it
            sends) or C{"both"}.
        @param protocol: the transport protocol dropped (C{"udp"}).
        """
        if not 0 <= percent <= 100 or direction not in ("in", "out", "both"):
            raise ValueError("bad loss: %r %r" % (percent, direction))
        if protocol not in ("udp", "tcp"):
            raise ValueError("bad protocol: %r" % (protocol,))
        nft = _tool("nft")
        _run(self.command([nft, "delete table inet lossy"]), check=False)
        if percent == 0:
            return
        hooks = {"in": ["input"], "out": ["output"], "both": ["input", "output"]}[direction]
        # numgen's values are 0..99, so "< 100" is refused: 100 % is a plain drop.
        chance = "" if percent == 100 else " numgen random mod 100 < %d" % (percent,)
        rules = ["table inet lossy {"]
        for hook in hooks:
            rules += [
                "  chain %s {" % (hook,),
                "    type filter hook %s priority 0; policy accept;" % (hook,),
                "    meta l4proto %s%s drop" % (protocol, chance),
                "  }",
            ]
        rules.append("}")
        _run(self.command([nft, "-f", "-"]), input="\n".join(rules) + "\n")

    def spawn(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """
        Start a process in this host's namespace; L{Network.close} stops it.
        C{kwargs} go to L{subprocess.Popen}.
        """
        return self.network._spawn(self.command(args), **kwargs)

    def python(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """
        Start C{python args...} in this host's namespace, with this checkout
        first on C{PYTHONPATH}.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return self.spawn([sys.executable, *args], env=env, **kwargs)

    def artcast(self, directory: str, extra: Sequence[str] = (), port: int = 8080) -> subprocess.Popen:
        """
        Start the real C{twistd -n artcast} in this namespace, listening for
        multicast on this host's address and for HTTP on C{address:port};
        its output goes to C{directory/twistd.out}.
        """
        os.makedirs(directory, exist_ok=True)
        out = open(os.path.join(directory, "twistd.out"), "wb")
        try:
            return self.python([
                "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile", os.path.join(directory, "twistd.pid"),
                "artcast",
                "--interface", self.address,
                "--data-group", GROUP, "--data-port", str(DATA_PORT),
                "--register-group", GROUP, "--register-port", str(REGISTER_PORT),
                "--client-port", "tcp:%d:interface=%s" % (port, self.address),
                *extra,
            ], cwd=directory, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    def get(self, url: str, timeout: float = 10.0) -> dict:
        """
        C{GET url} from inside this namespace: C{{"status", "headers", "body"}}
        (C{body} as text), or C{{"error": ...}} when nothing answered.
        """
        process = self.python(["-m", "bench.lossy", "get", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = process.communicate(timeout=timeout)
        self.network._forget(process)
        if process.returncode != 0:
            return {"error": err.decode("utf-8", "replace")}
        return json.loads(out)

    def waitForHTTP(self, url: str, limit: float = 20.0) -> None:
        """
        Wait, at most C{limit} seconds, until C{url} answers.

        @raise RuntimeError: past the limit.
        """
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if "status" in self.get(url):
                return
            time.sleep(0.2)
        raise RuntimeError("%s did not answer in %s s" % (url, limit))


_OURS = re.compile(r"ac(\d+)x\d+(?:br|h\d+)$")


def _sweep() -> None:
    """
    Remove the namespaces a run that was killed (so its C{atexit} never
    ran) left behind: those named by this module for a process that no
    longer exists.
    """
    for name in netnsList():
        found = _OURS.match(name)
        if found is None or int(found.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        except PermissionError:
            pass


class Network:
    """
    A bridge and its hosts, each in a network namespace of its own.  Use
    as a context manager, or call L{close}; C{atexit} calls it too.

    @ivar hosts: the L{Host}s, in the order they were added.
    """

    def __init__(self) -> None:
        _sweep()
        self.prefix = "ac%dx%d" % (os.getpid(), _nextNetwork())
        self.bridge = self.prefix + "br"
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._addNamespace(self.bridge)
            _run(["ip", "-n", self.bridge, "link", "add", "name", "lan", "type", "bridge",
                  "mcast_snooping", "0"])
            _run(["ip", "-n", self.bridge, "link", "set", "dev", "lan", "up"])
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _addNamespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "dev", "lo", "up"])

    def addHost(self) -> Host:
        """
        Add a host: a namespace, a veth pair from it to the bridge, the
        next address, and a multicast route on the veth.
        """
        n = len(self.hosts) + 1
        host = Host(self, "%sh%d" % (self.prefix, n), "%s.%d" % (SUBNET, n))
        self._addNamespace(host.name)
        port = "p%d" % (n,)
        _run(["ip", "-n", self.bridge, "link", "add", "name", port, "type", "veth",
              "peer", "name", "eth0", "netns", host.name])
        _run(["ip", "-n", self.bridge, "link", "set", "dev", port, "master", "lan", "up"])
        _run(["ip", "-n", host.name, "addr", "add", "%s/%d" % (host.address, PREFIX_LENGTH),
              "dev", "eth0"])
        _run(["ip", "-n", host.name, "link", "set", "dev", "eth0", "up"])
        _run(["ip", "-n", host.name, "route", "add", "224.0.0.0/4", "dev", "eth0"])
        self.hosts.append(host)
        return host

    def _spawn(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(list(args), **kwargs)
        self._processes.append(process)
        return process

    def _forget(self, process: subprocess.Popen) -> None:
        if process in self._processes:
            self._processes.remove(process)

    def stop(self, process: subprocess.Popen) -> None:
        """
        Stop one process this network started, by its own PID: SIGTERM,
        then SIGKILL after L{STOP_LIMIT} seconds.
        """
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_LIMIT)
            except ProcessLookupError:
                pass
        self._forget(process)

    def close(self) -> None:
        """
        Stop every process started here, then delete every namespace made
        here (their links go with them).  Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        for process in list(self._processes):
            try:
                self.stop(process)
            except Exception:
                pass
        for name in reversed(self._namespaces):
            try:
                _run(["ip", "netns", "del", name], check=False)
            except Exception:
                pass
        self._namespaces = []
        try:
            atexit.unregister(self.close)
        except Exception:
            pass


_networks = [0]


def _nextNetwork() -> int:
    _networks[0] += 1
    return _networks[0]


# The command line: small programs run inside a namespace.

def _multicastReceiver(group: str, port: int, interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((group, port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface)))
    return sock


def _paced(count: int, rate: float):
    start = time.monotonic()
    for n in range(count):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n


def _onlyInsideTheNetwork(interface: str) -> None:
    """
    The senders use TTL 1, to cross the test network's bridge: refuse to
    send but from a host of that network, from inside its namespace, where
    its address (in L{SUBNET}, which this module puts only inside the
    namespaces it makes) can be bound.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if not interface.startswith(SUBNET + "."):
            raise OSError(interface)
        probe.bind((interface, 0))
    except OSError:
        raise SystemExit(
            "bench.lossy sends only from a host of its own network, inside its "
            "namespace (an address in %s.0/%d), not from %s" % (SUBNET, PREFIX_LENGTH, interface)
        )
    finally:
        probe.close()


def blast(group: str, port: int, interface: str, count: int, rate: float) -> dict:
    """
    Send C{count} small datagrams C{b"<n>"} to C{group:port} at C{rate}
    per second, TTL 1, out of C{interface}.
    """
    from artcast.source import multicastSocket

    _onlyInsideTheNetwork(interface)
    sock = multicastSocket(ttl=1, interface=interface)
    for n in _paced(count, rate):
        sock.sendto(b"%d" % (n,), (group, port))
    return {"sent": count}


def receive(group: str, port: int, interface: str, idle: float) -> dict:
    """
    Join C{group} on C{interface}, print C{ready}, then count distinct
    datagrams until none came for C{idle} seconds (after the first).
    """
    sock = _multicastReceiver(group, port, interface)
    print("ready", flush=True)
    seen = set()
    sock.settimeout(30.0)
    while True:
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            break
        seen.add(data)
        sock.settimeout(idle)
    return {"received": len(seen)}


def send(group: str, port: int, registerPort: int, interface: str, key: str,
         count: int, rate: float, pause: int = 0, repair: bool = True,
         batching: bool = True) -> dict:
    """
    Send C{count} datums C{{"n": n}} on C{key} at C{rate} per second with
    L{artcast.source.Source} (version 2, TTL 1, out of C{interface}).

    @param pause: when not 0, after that many datums print a JSON line
        C{{"paused": <last id>}} and wait for a line on standard input
        before the rest (so that a test can change the loss in between).
    @param repair: whether the source repairs (its default); the figures
        of its repair (L{artcast.source.Source.repairStatistics}) are in
        the result's C{source}.
    @param batching: whether a repairing source batches (its default), or
        sends one datagram per datum (C{holdback=0}).
    """
    from artcast.source import Source

    _onlyInsideTheNetwork(interface)
    options: dict[str, Any] = {} if repair else {"repair": False}
    if repair and not batching:
        options["holdback"] = 0.0
    source = Source(src="lossy-%d" % (os.getpid(),), groups=[(group, port)],
                    registerGroups=[(group, registerPort)], ttl=1, interface=interface,
                    **options)
    refused = 0
    try:
        source.register(key, description="loss experiment")
    except PermissionError:
        refused += 1
    # A repairing source heartbeats at once and then after 0.2, 0.6 and
    # 1.4 s: a server that hears any of them knows where the source starts,
    # so it can ask for datum 1 too if that is lost.
    time.sleep(1.5)
    ids = []
    for n in _paced(count, rate):
        try:
            ids.append(source.send(key, {"n": n}))
        except PermissionError:
            # An nftables drop on this host's output makes sendto fail with
            # EPERM: the datagram is lost as on a lossy link, and the datum
            # is in the source's window like any other.  Its id: the source
            # sends nothing but these datums, so datum n is seq n + 1.
            refused += 1
            ids.append("%s.%d.%d" % (source.src, source.boot, n + 1))
        if pause and n + 1 == pause:
            source.flush()
            print(json.dumps({"paused": ids[-1]}), flush=True)
            sys.stdin.readline()
    source.close()
    statistics = getattr(source, "repairStatistics", lambda: {})()
    return {"sent": count, "refused": refused,
            "first": ids[0] if ids else None, "last": ids[-1] if ids else None,
            "source": statistics}


def get(url: str) -> dict:
    """
    One C{GET}; the status, headers and body.
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return {"status": response.status, "headers": dict(response.headers),
                    "body": response.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "headers": dict(e.headers),
                "body": e.read().decode("utf-8", "replace")}


def follow(url: str, key: str, idle: float) -> None:
    """
    Follow C{key} with long polls: the first request (no C{since}) is
    answered with the first datum to arrive, then each next with C{since=}
    the last C{Artcast-Id}, on one keep-alive connection.  Print C{ready},
    then one JSON line per answer C{{"n", "gap"}}, until no datum came for
    C{idle} seconds.
    """
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    path = "/artcasts/%s" % (key,)
    since = None
    print("ready", flush=True)
    while True:
        if since is None:
            query = "timeout=30"
        else:
            query = "timeout=%g&since=%s" % (idle, urllib.parse.quote(since))
        connection.request("GET", path + "?" + query)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            if since is None:
                continue
            break
        since = response.getheader("Artcast-Id")
        value = json.loads(body)
        print(json.dumps({"n": value.get("n") if isinstance(value, dict) else None,
                          "gap": response.getheader("Artcast-Gap") == "1"}), flush=True)


def main(argv: Sequence[str]) -> None:
    command, args = argv[0], list(argv[1:])
    if command == "blast":
        result = blast(args[0], int(args[1]), args[2], int(args[3]), float(args[4]))
    elif command == "receive":
        result = receive(args[0], int(args[1]), args[2], float(args[3]))
    elif command == "send":
        result = send(args[0], int(args[1]), int(args[2]), args[3], args[4],
                      int(args[5]), float(args[6]), int(args[7]) if len(args) > 7 else 0,
                      args[8] != "0" if len(args) > 8 else True,
                      args[8] != "unbatched" if len(args) > 8 else True)
    elif command == "get":
        result = get(args[0])
    elif command == "follow":
        follow(args[0], args[1], float(args[2]))
        return
    else:
        raise SystemExit("unknown command %r" % (command,))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
