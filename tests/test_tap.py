"""
Tests for L{artcast.server.tap} and the C{twistd artcast} plugin.
"""

from __future__ import annotations

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from artcast.server import tap
from artcast.server.service import GarbageCollectorTuning


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
        Every default C{tap.py} writes out itself (the modules that enforce
        them are imported only when the service is made) is the value those
        modules use when given nothing.
        """
        from artcast import wire
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
            "max-sources": wire.MAX_SOURCES,
            "fragment-memory": wire.FRAGMENT_MEMORY,
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
