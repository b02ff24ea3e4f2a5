"""
Tests for L{artcast.server.tap} and the C{twistd artcast} plugin.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

import artcast
from artcast.server import tap
from artcast.server.connections import ConnectionLimiter
from artcast.server.service import ArtcastService, GarbageCollectorTuning
from artcast.server.stats import ServerStatistics, Stats
from artcast.server.feeds.repair import RepairEngine
from artcast.server.store import KeyStore

#: The folder holding the C{artcast} package and the plugin.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(artcast.__file__)))


class FakePort:
    def stopListening(self) -> None:
        pass


class MulticastMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records multicast listens.
    """

    def __init__(self) -> None:
        super().__init__()
        self.multicast: list[tuple] = []

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192, listenMultiple=False):
        self.multicast.append((port, protocol, interface, maxPacketSize, listenMultiple))
        return FakePort()


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    """
    The options of C{twistd artcast}.
    """

    def test_defaultsAreTheModules(self) -> None:
        """
        Every default the options show (from L{artcast.server.defaults}) is
        the value the modules that enforce them use when given nothing.
        """
        from artcast.server.feeds import reception
        from artcast.server import connections, logs, shutdown
        from artcast.server import store as keystore
        from artcast.server.feeds import publish

        options = parse()
        expected = {
            "access-log-size": logs.DEFAULT_LOG_SIZE,
            "access-log-count": logs.DEFAULT_LOG_COUNT,
            "error-log-size": logs.DEFAULT_LOG_SIZE,
            "error-log-count": logs.DEFAULT_LOG_COUNT,
            "max-clients": connections.DEFAULT_MAX_CLIENTS,
            "header-timeout": connections.DEFAULT_HEADER_TIMEOUT,
            "idle-timeout": connections.DEFAULT_IDLE_TIMEOUT,
            "tcp-keepalive": connections.DEFAULT_TCP_KEEPALIVE,
            "retry-after": connections.DEFAULT_RETRY_AFTER,
            "body-timeout": connections.DEFAULT_BODY_TIMEOUT,
            "max-output-buffer": connections.DEFAULT_MAX_OUTPUT_BUFFER,
            "max-output-total": connections.DEFAULT_MAX_OUTPUT_TOTAL,
            "shutdown-timeout": shutdown.DEFAULT_SHUTDOWN_TIMEOUT,
            "max-store-bytes": keystore.DEFAULT_MAX_BYTES,
            "max-keys": keystore.DEFAULT_MAX_KEYS,
            "history": keystore.DEFAULT_HISTORY,
            "history-age": keystore.DEFAULT_HISTORY_AGE,
            "max-sources": reception.MAX_SOURCES,
            "fragment-memory": reception.FRAGMENT_MEMORY,
            "publish-auth-failures": publish.DEFAULT_AUTH_FAILURES,
        }
        self.assertEqual({name: options[name] for name in expected}, expected)

    def test_defaults(self) -> None:
        """
        The defaults are the original Artcast's.
        """
        options = parse()
        self.assertEqual(options["client-port"], "tcp:8888:backlog=1024")
        self.assertEqual(
            (options["data-group"], options["data-port"]), ("224.1.1.1", 5007)
        )
        self.assertEqual(
            (options["register-group"], options["register-port"]), ("224.1.1.1", 5008)
        )
        self.assertEqual(options["interface"], "0.0.0.0")
        self.assertEqual(options["access-control-allow-origin"], "*")
        self.assertEqual(
            (options["access-log-size"], options["access-log-count"]), (10_000_000, 100)
        )
        self.assertIsNone(options["poll-timeout"])
        self.assertFalse(options["demo"])

    def test_barePort(self) -> None:
        """
        A bare port number, as the original took, is TCP on that port; TCP
        ports get a listen backlog of 1024 unless they name one.
        """
        self.assertEqual(parse("--client-port", "80")["client-port"], "tcp:80:backlog=1024")
        self.assertEqual(
            parse("--client-port", "tcp:80:backlog=7")["client-port"], "tcp:80:backlog=7"
        )
        self.assertEqual(
            parse("--client-port", "unix:/run/a.sock")["client-port"], "unix:/run/a.sock"
        )

    def test_badValues(self) -> None:
        """
        Bad option values are refused with a usage error.
        """
        for args in [
            ("--client-port", "99999"),
            ("--data-port", "0"),
            ("--data-port", "x"),
            ("--data-group", "10.0.0.1"),
            ("--interface", "nowhere"),
            ("--history", "0"),
            ("--poll-timeout", "-3"),
            ("--templates", "/no/such/folder"),
            ("--access-log", "/no/such/folder/access.log"),
            ("--access-control-allow-origin", "a\r\nb"),
            ("--data-port", "5008"),
        ]:
            self.assertRaises(UsageError, parse, *args)


class ServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} builds the server.
    """

    def test_bindsBeforePrivilegesDrop(self) -> None:
        """
        The HTTP port and both multicast groups are bound in
        C{privilegedStartService}, before twistd drops privileges; datagrams
        are read up to the UDP maximum.
        """
        reactor = MulticastMemoryReactor()
        options = parse(
            "--client-port", "tcp:80:interface=127.0.0.1",
            "--data-group", "239.255.1.1", "--interface", "127.0.0.1",
            "--access-log", "-", "--error-log", "-",
        )
        service = tap.makeService(options, reactor=reactor)
        self.assertIsInstance(service, MultiService)
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (80, "127.0.0.1"))
        self.assertEqual(
            sorted((p, group, size, multiple) for p, _, group, size, multiple in reactor.multicast),
            [(5007, "239.255.1.1", 65535, True), (5008, "224.1.1.1", 65535, True)],
        )
        joined = {proto.group: proto.interface for _, proto, _, _, _ in reactor.multicast}
        self.assertEqual(joined, {"239.255.1.1": "127.0.0.1", "224.1.1.1": "127.0.0.1"})

    def test_demo(self) -> None:
        """
        With C{--demo}, the test artcasts arrive in the server's store.
        """
        reactor = MulticastMemoryReactor()
        service = tap.makeService(parse("--demo", "--error-log", "-"), reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        reactor.advance(1)
        store = service.store
        self.assertEqual(store.latest("test/tick").value, 2)
        self.assertRegex(store.latest("test/now").value, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(
            store.metadata("test/tick")["license"]["title"], "CC0 1.0 Universal"
        )


    def test_noRepair(self) -> None:
        """
        Repair is on by default; C{--no-repair} turns it off, and C{/stats}
        says so.
        """
        for args, enabled in (((), True), (("--no-repair",), False)):
            service = tap.makeService(
                parse(*args, "--error-log", "-"), reactor=MulticastMemoryReactor()
            )
            self.assertEqual(service.statistics.figures()["repair"]["enabled"], enabled)

    def test_artcastService(self) -> None:
        """
        L{tap.makeService} returns an L{ArtcastService} whose attributes are
        the parts the server runs with: the store and counters the figures
        read, and the connections the port serves, which join the figures
        first, the streams after them, then the repair engine.
        """
        reactor = MulticastMemoryReactor()
        top = tap.makeService(parse("--error-log", "-"), reactor=reactor)
        self.assertIsInstance(top, ArtcastService)
        self.assertIsInstance(top.store, KeyStore)
        self.assertIsInstance(top.stats, Stats)
        self.assertIsInstance(top.connections, ConnectionLimiter)
        self.assertIsInstance(top.statistics, ServerStatistics)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIs(factory, top.connections)
        self.assertIs(top.statistics.store, top.store)
        self.assertIs(top.statistics.counters, top.stats)
        self.assertIs(top.statistics.parts[0], top.connections)
        self.assertEqual(len(top.statistics.parts), 3)
        self.assertIsInstance(top.statistics.parts[2], RepairEngine)
        self.assertEqual(top.statistics.identity, {})


class ImportTests(SynchronousTestCase):
    """
    How the modules of C{artcast} import each other.
    """

    def imports(self) -> dict[str, set[str]]:
        """
        Every module of the C{artcast} package, by name, with the C{artcast}
        modules it imports anywhere in it (in functions too).
        """
        modules: dict[str, str] = {}
        for folder, _, files in os.walk(os.path.join(ROOT, "artcast")):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
        graph: dict[str, set[str]] = {}
        for name, path in modules.items():
            with open(path, encoding="utf-8") as source:
                tree = ast.parse(source.read(), path)
            found = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    self.assertEqual(node.level, 0, f"relative import in {name}")
                    base = node.module or ""
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            graph[name] = {module for module in found if module in modules} - {name}
        return graph

    def test_noCycle(self) -> None:
        """
        No module of C{artcast} imports, however indirectly, a module that
        imports it back, counting imports made inside functions.
        """
        graph = self.imports()
        self.assertIn("artcast.server.service", graph)

        def reaches(start: str, goal: str) -> list[str] | None:
            seen: set[str] = set()
            paths = [[start]]
            while paths:
                path = paths.pop()
                for nextModule in sorted(graph[path[-1]]):
                    if nextModule == goal:
                        return path + [nextModule]
                    if nextModule not in seen:
                        seen.add(nextModule)
                        paths.append(path + [nextModule])
            return None

        cycles = [cycle for cycle in map(lambda m: reaches(m, m), sorted(graph)) if cycle]
        self.assertEqual(cycles, [])

    def test_tapImportedByNone(self) -> None:
        """
        No module imports L{artcast.server.tap} (the options): the plugin
        names it, and the modules that build the server take what they need
        from L{artcast.server.service} and L{artcast.server.defaults}.
        """
        graph = self.imports()
        self.assertEqual(
            sorted(name for name, imported in graph.items() if "artcast.server.tap" in imported),
            [],
        )

    def test_defaultsImportNothing(self) -> None:
        """
        L{artcast.server.defaults} imports no other module, so the options
        read their defaults without loading the server.
        """
        self.assertEqual(self.imports()["artcast.server.defaults"], set())

    def test_pluginImportsNoArtcast(self) -> None:
        """
        Importing the plugin, as twistd does to list its commands, loads no
        module of C{artcast}.
        """
        script = (
            "import json, sys\n"
            "import twisted.plugins.artcast_plugin as plugin\n"
            "loaded = [m for m in sys.modules if m == 'artcast' or m.startswith('artcast.')]\n"
            "print(json.dumps([plugin.__file__, loaded]))\n"
        )
        env = {**os.environ, "PYTHONPATH": ROOT}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        pluginFile, loaded = json.loads(result.stdout)
        # This checkout's plugin, or the same file installed beside Twisted.
        with open(pluginFile, "rb") as found, open(
            os.path.join(ROOT, "twisted", "plugins", "artcast_plugin.py"), "rb"
        ) as ours:
            self.assertEqual(found.read(), ours.read())
        self.assertEqual(loaded, [])


class PluginTests(SynchronousTestCase):
    """
    The plugin is found by twistd.
    """

    def test_discovered(self) -> None:
        """
        C{getPlugins(IServiceMaker)} finds the C{artcast} plugin, which names
        L{artcast.server.tap}.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("artcast", makers)
        self.assertIs(makers["artcast"].options, tap.Options)


class GarbageCollectorTuningTests(SynchronousTestCase):
    """
    L{artcast.server.service.GarbageCollectorTuning} freezes what starting
    made and raises the collector's first threshold once the reactor runs.
    """

    def test_inService(self) -> None:
        """
        The server made by L{tap.makeService} holds the tuning, which waits
        for the reactor to run.
        """
        reactor = MulticastMemoryReactor()
        service = tap.makeService(parse("--error-log", "-"), reactor=reactor)
        tunings = [s for s in service if isinstance(s, GarbageCollectorTuning)]
        self.assertEqual(len(tunings), 1)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(
            tunings[0].tune, [hook[0] for hook in reactor.whenRunningHooks]
        )

    def test_tune(self) -> None:
        """
        Tuning freezes the objects alive and sets the first generation's
        threshold, keeping the others.
        """
        import gc

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        GarbageCollectorTuning(MulticastMemoryReactor(), threshold=12345).tune()
        self.assertEqual(gc.get_threshold(), (12345,) + before[1:])
        self.assertGreater(gc.get_freeze_count(), 0)
