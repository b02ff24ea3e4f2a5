# -*- test-case-name: tests.test_shutdown -*-
"""
Tests for L{artcast.server.shutdown}: graceful shutdown, and
L{artcast.server.store.KeyStore.cancelWaiters} which it uses.

The unit tests drive L{ServingService} over L{StringTransport}s with a
L{Clock}; the integration tests send SIGTERM to the real C{twistd artcast}.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server.connections import ConnectionLimiter
from artcast.server.store import KeyStore
from artcast.server.shutdown import ABORT_GRACE, Closing, ServingService
from artcast.server.routes import ArtcastApp
from tests.harness import STOP_LIMIT, ArtcastProcess
from tests.test_connections import (
    Held,
    connect,
    disconnect,
    get,
    makeLimiter,
    pollRequest,
    rawConnect,
)

TIMEOUT = 5.0


class FakePort(Service):
    """
    Stands for the port's service: records when it was stopped.
    """

    def __init__(self, onStop: Any) -> None:
        self.onStop = onStop

    def stopService(self) -> Deferred[None]:
        self.onStop()
        super().stopService()
        return succeed(None)


def serving(
    clock: Clock, limiter: ConnectionLimiter, **kw: Any
) -> tuple[ServingService, list[str]]:
    """
    A started L{ServingService} over C{limiter} with a fake port child; the
    list records events in order.
    """
    events: list[str] = []
    service = ServingService(limiter, clock, TIMEOUT, fileLimit=lambda wanted: wanted, **kw)
    FakePort(lambda: events.append("port stopped")).setServiceParent(service)
    service.privilegedStartService()
    service.startService()
    return service, events


class ClosingTests(SynchronousTestCase):
    """
    L{Closing}: where streams register to hear of shutdown.
    """

    def test_called(self) -> None:
        """
        Each registered callback is called once, with its own retry delay.
        """
        closing = Closing(iter([4, 5]).__next__)
        calls: list[int] = []
        closing.onClose(calls.append)
        closing.onClose(calls.append)
        self.successResultOf(closing.close())
        self.assertEqual(sorted(calls), [4, 5])
        self.assertTrue(closing.closing)
        self.assertEqual(len(closing), 0)

    def test_forget(self) -> None:
        """
        A callback unregistered (its stream ended) is not called, and is
        not kept.
        """
        closing = Closing(lambda: 1)
        calls: list[int] = []
        forget = closing.onClose(calls.append)
        forget()
        forget()
        self.assertEqual(len(closing), 0)
        closing.close()
        self.assertEqual(calls, [])

    def test_late(self) -> None:
        """
        A callback registered once shutdown has begun is called at once.
        """
        closing = Closing(lambda: 2)
        closing.close()
        calls: list[int] = []
        closing.onClose(calls.append)
        self.assertEqual(calls, [2])

    def test_waitsForDeferreds(self) -> None:
        """
        L{Closing.close} fires when the Deferreds the callbacks returned
        have.
        """
        closing = Closing(lambda: 1)
        pending: Deferred[None] = Deferred()
        closing.onClose(lambda retry: pending)
        done = closing.close()
        self.assertNoResult(done)
        pending.callback(None)
        self.successResultOf(done)

    def test_failureLogged(self) -> None:
        """
        A callback that raises is logged and does not stop the others.
        """
        closing = Closing(lambda: 1)
        calls: list[int] = []

        def broken(retry: int) -> None:
            raise RuntimeError("broken stream")

        closing.onClose(broken)
        closing.onClose(calls.append)
        self.successResultOf(closing.close())
        self.assertEqual(calls, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CancelWaitersTests(SynchronousTestCase):
    """
    L{KeyStore.cancelWaiters}.
    """

    def test_cancelled(self) -> None:
        """
        Every long-poll waiter, on a key or a pattern, fails with
        CancelledError and is unregistered; subscriptions stay.
        """
        store = KeyStore(Clock())
        waiters = [store.next("a/b"), store.next("a/*"), store.next("c/...")]
        subscription = store.subscribe("a/b", lambda datum: None)
        self.assertEqual(store.cancelWaiters(), 3)
        for waiter in waiters:
            self.failureResultOf(waiter, CancelledError)
        self.assertEqual(store.listening, 1)
        self.assertTrue(subscription.active)


class ServingServiceTests(SynchronousTestCase):
    """
    L{ServingService.stopService}: stop accepting, answer, close, in bounded
    time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Held()
        self.limiter = makeLimiter(self.clock, self.resource)

    def test_heldAnswered503(self) -> None:
        """
        A held long poll is answered 503 with Retry-After and
        Connection: close, after the port stopped accepting, and the
        connection is closed.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/poll"))
        service, events = serving(self.clock, self.limiter)
        self.resource.held[0].notifyFinish().addCallback(
            lambda _: events.append("answered")
        )
        service.stopService()
        self.assertEqual(events, ["port stopped", "answered"])
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer)
        self.assertIn(b"\r\nRetry-After: 1\r\n", answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertIn(b"The server is shutting down.", answer)
        self.assertTrue(transport.disconnecting)

    def test_retryAfterSpread(self) -> None:
        """
        The waiting clients are told different Retry-After values, spread
        over 1..N seconds.
        """
        transports = []
        for port in range(7):
            connection, transport = connect(self.limiter, port=port)
            connection.dataReceived(get(b"/poll"))
            transports.append(transport)
        service, _ = serving(self.clock, self.limiter)
        service.stopService()
        values = [
            int(re.search(rb"\r\nRetry-After: (\d+)\r\n", t.value()).group(1))
            for t in transports
        ]
        self.assertEqual(values, [1, 2, 3, 4, 5, 1, 2])

    def test_idleClosed(self) -> None:
        """
        Idle connections, one between keep-alive requests and one that
        sent nothing yet, are closed at once with nothing written.
        """
        keptAlive, keptTransport = connect(self.limiter, port=1)
        keptAlive.dataReceived(get(b"/now"))
        written = keptTransport.value()
        _, silentTransport = connect(self.limiter, port=2)
        service, _ = serving(self.clock, self.limiter)
        service.stopService()
        self.assertTrue(keptTransport.disconnecting)
        self.assertTrue(silentTransport.disconnecting)
        self.assertEqual((keptTransport.value(), silentTransport.value()), (written, b""))

    def test_headOnItsWay(self) -> None:
        """
        A request whose head is still arriving is answered 503 once it is
        in, without reaching the application.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(b"GET /now HTTP/1.1\r\n")
        service, _ = serving(self.clock, self.limiter)
        service.stopService()
        self.assertFalse(transport.disconnecting)
        connection.dataReceived(b"Host: example\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.limiter.rejected, {"shutting-down": 1})

    def test_streamLeftToItsOwner(self) -> None:
        """
        An answer already being written (a stream) is not cut or replaced:
        its owner is called through L{Closing} with a retry delay, and the
        connection closes after the answer ends.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/stream"))
        stream = self.resource.held[0]
        stream.write(b"data: 1\n\n")
        ended: list[int] = []

        def end(retryAfter: int) -> None:
            ended.append(retryAfter)
            stream.write(b"retry: %d\n\n" % (retryAfter * 1000,))
            stream.finish()

        service, _ = serving(self.clock, self.limiter)
        service.closing.onClose(end)
        service.stopService()
        self.assertEqual(ended, [1])
        self.assertNotIn(b" 503 ", transport.value())
        self.assertIn(b"retry: 1000\n\n", transport.value())
        self.assertTrue(transport.value().endswith(b"0\r\n\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_afterAnswer(self) -> None:
        """
        C{afterAnswer} is called once the held requests are answered.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/poll"))
        seen: list[bytes] = []
        service, _ = serving(
            self.clock, self.limiter, afterAnswer=lambda: seen.append(transport.value())
        )
        service.stopService()
        self.assertEqual(len(seen), 1)
        self.assertIn(b" 503 ", seen[0])

    def test_firesWhenClosed(self) -> None:
        """
        The stop fires as soon as every connection has closed, before the
        timeout, and leaves no timer behind.
        """
        connection, _ = connect(self.limiter)
        connection.dataReceived(get(b"/poll"))
        service, _ = serving(self.clock, self.limiter)
        before = set(self.clock.getDelayedCalls())
        stopped = service.stopService()
        self.assertNoResult(stopped)
        disconnect(connection)
        self.successResultOf(stopped)
        self.clock.advance(0)  # the end of the turn writes the access log
        self.assertEqual(set(self.clock.getDelayedCalls()) - before, set())

    def test_boundedTime(self) -> None:
        """
        A connection that does not close (a stream nobody ends) is aborted
        at the timeout, and the stop fires.
        """
        connection, transport = connect(self.limiter)
        connection.dataReceived(get(b"/stream"))
        self.resource.held[0].write(b"data: 1\n\n")
        service, _ = serving(self.clock, self.limiter)
        stopped = service.stopService()
        self.clock.advance(TIMEOUT - 0.1)
        self.assertNoResult(stopped)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        disconnect(connection)
        self.successResultOf(stopped)

    def test_boundedEvenIfAbortHangs(self) -> None:
        """
        If an aborted connection is never reported closed, the stop still
        fires a moment after the timeout.
        """
        connection, _ = connect(self.limiter)
        connection.dataReceived(get(b"/stream"))
        self.resource.held[0].write(b"data: 1\n\n")
        service, _ = serving(self.clock, self.limiter)
        stopped = service.stopService()
        self.clock.advance(TIMEOUT)
        self.assertNoResult(stopped)
        self.clock.advance(ABORT_GRACE)
        self.successResultOf(stopped)

    def test_accessLogKeptOpen(self) -> None:
        """
        The site (and its access log) stops only when the last connection
        has gone, so the 503s written while shutting down are logged.
        """
        connection, _ = connect(self.limiter)
        connection.dataReceived(b"GET /now HTTP/1.1\r\n")
        service, _ = serving(self.clock, self.limiter)
        service.stopService()
        self.limiter.doStop()
        connection.dataReceived(b"\r\n")
        self.clock.advance(0)  # the access log is written at the end of the turn
        self.assertIn('"GET /now HTTP/1.1" 503 ', self.limiter.site.accessLog.getvalue())
        self.assertIsNotNone(self.limiter.site._logFile)
        disconnect(connection)
        self.assertIsNone(self.limiter.site._logFile)

    def test_fileLimitWarning(self) -> None:
        """
        At start the open-files limit is raised for --max-clients, and a
        warning names the limit when it cannot be raised far enough.
        """
        asked: list[int] = []

        def fileLimit(wanted: int) -> int:
            asked.append(wanted)
            return 1024

        service = ServingService(self.limiter, self.clock, fileLimit=fileLimit)
        with capturedLogs() as events:
            service.privilegedStartService()
        self.assertEqual(asked, [self.limiter.fileLimitWanted()])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["limit"], 1024)


class AppShutdownTests(SynchronousTestCase):
    """
    Shutdown with the real application: Klein and the KeyStore.
    """

    def test_longPollAnsweredAndForgotten(self) -> None:
        """
        A held long poll (with a timeout of its own) is answered 503, its
        waiter is removed from the store, and its timeout firing later does
        nothing (no error, no second answer).
        """
        clock = Clock()
        store = KeyStore(clock)
        app = ArtcastApp(store, clock)
        limiter = makeLimiter(clock, app.resource())
        connection, transport = connect(limiter)
        connection.dataReceived(get(b"/artcasts/a/b?timeout=3"))
        self.assertEqual(store.listening, 1)
        service, _ = serving(clock, limiter, afterAnswer=store.cancelWaiters)
        service.stopService()
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertEqual(store.listening, 0)
        clock.advance(10)
        self.assertEqual(transport.value(), answer)


# Integration tests against the real server.


class ShutdownIntegrationTests(TestCase):
    """
    SIGTERM to the real daemonized C{twistd artcast}.
    """

    timeout = 60

    @inlineCallbacks
    def waitUntilGone(self, proc: ArtcastProcess, limit: float) -> Any:
        """
        Wait, at most C{limit} seconds, until the process has exited.
        """
        deadline = reactor.seconds() + limit
        while proc.alive():
            if reactor.seconds() > deadline:
                self.fail(f"artcast still running {limit} s after SIGTERM")
            yield deferLater(reactor, 0.02, lambda: None)

    @inlineCallbacks
    def test_sigterm(self) -> Any:
        """
        On SIGTERM every waiting long poll is answered 503 with a
        Retry-After in 1..N (not all the same), the process exits within
        the shutdown timeout, and its pidfile is gone.
        """
        proc = yield ArtcastProcess(
            self, extra=["--retry-after", "4", "--shutdown-timeout", "3"], daemon=True
        ).start()
        self.assertTrue(os.path.exists(proc.pidfile))
        clients = []
        for index in range(6):
            client = yield rawConnect(self, proc)
            client.send(pollRequest(f"shutdown/{index}"))
            clients.append(client)
        yield proc.waitForWaiters(6)
        os.kill(proc.pid, signal.SIGTERM)
        values = set()
        for client in clients:
            answer = yield client.nextResponse()
            self.assertEqual(answer.code, 503)
            value = int(answer.header(b"Retry-After"))
            self.assertTrue(1 <= value <= 4, value)
            values.add(value)
        self.assertGreater(len(values), 1)
        yield self.waitUntilGone(proc, 3 + STOP_LIMIT / 2)
        self.assertFalse(os.path.exists(proc.pidfile))

    @inlineCallbacks
    def test_boundedWithStuckClient(self) -> Any:
        """
        A client whose request head never completes does not hold the
        server up past --shutdown-timeout: it exits, removing its pidfile.
        """
        proc = yield ArtcastProcess(
            self,
            extra=["--shutdown-timeout", "1", "--header-timeout", "600"],
            daemon=True,
        ).start()
        stuck = yield rawConnect(self, proc)
        stuck.send(b"GET /artcasts/shutdown/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # The server holds it (the other connection is /stats.json's own).
        yield proc.waitFor(lambda stats: stats["connections"] >= 2)
        os.kill(proc.pid, signal.SIGTERM)
        yield stuck.lost
        yield self.waitUntilGone(proc, 1 + STOP_LIMIT / 2)
        self.assertFalse(os.path.exists(proc.pidfile))
