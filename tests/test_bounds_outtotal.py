"""
Tests for the bound on the output of all connections together
(C{--max-output-total}): each connection is charged what it holds written
and not yet sent after its last write, the charges are measured again when
their sum passes the budget, and only then, if the real total is still over
it, are the connections holding the most aborted (C{output-full}).

The unit tests drive L{ConnectionLimiter} over fake transports whose queued
output the test sets; the integration test runs the real C{twistd artcast}
against clients that ask for a large listing and never read it.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from artcast.server import tap
from artcast.server.connections import (
    DEFAULT_MAX_OUTPUT_TOTAL,
    OUTPUT_SLACK_DIVISOR,
    ConnectionLimiter,
    TrackedConnection,
)
from artcast.server.internals import dropQueuedOutput, queuedOutput
from tests.harness import ArtcastProcess
from tests.test_bounds_output import Writer, makeLimiter, nonReader, residentKiB
from tests.test_integration import rawConnect, requestBytes


class HoldingTransport(StringTransport):
    """
    A transport that holds everything written until the test says the
    client read it (L{read}), without telling anyone, as a socket's
    transport drains; it keeps the figures L{artcast.server.connections.queuedOutput}
    reads from Twisted's transports, and marks itself as aborting as
    Twisted's TCP transport does.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self._tempDataLen += len(data)

    def writeSequence(self, data: Any) -> None:
        data = list(data)
        super().writeSequence(data)
        self._tempDataLen += sum(map(len, data))

    def read(self, size: int | None = None) -> None:
        """
        The client reads C{size} bytes (all by default).
        """
        self._tempDataLen -= self._tempDataLen if size is None else size

    def abortConnection(self) -> None:
        self.aborted = self._aborting = True
        super().abortConnection()


def budgetLimiter(total: int | None, perConnection: int | None = None) -> ConnectionLimiter:
    """
    A started limiter with an output budget of C{total} bytes for all
    connections and, by default, no bound per connection.
    """
    return makeLimiter(
        Clock(), Writer(0), maxOutputTotal=total, maxOutputBuffer=perConnection
    )


def open_(limiter: ConnectionLimiter, transport: Any = None) -> tuple[TrackedConnection, Any]:
    """
    Accept a connection as a port would, over a L{HoldingTransport}.
    """
    address = IPv4Address("TCP", "10.0.0.2", 40000)
    connection = limiter.buildProtocol(address)
    assert connection is not None
    if transport is None:
        transport = HoldingTransport(peerAddress=address)
    connection.makeConnection(transport)
    return connection, transport


def lose(connection: TrackedConnection) -> None:
    """
    The connection is gone, as its transport would tell.
    """
    connection.connectionLost(Failure(ConnectionDone()))


class ChargeTests(SynchronousTestCase):
    """
    The limiter's sum of charges follows what connections write and is given
    back when they go.
    """

    def test_sumFollowsWritesAndDisconnects(self) -> None:
        """
        Each write charges its connection's queued output after it (the
        difference from its last charge goes to the sum, down as well as up
        when the client has read meanwhile), and a connection that goes
        gives its charge back; under the budget nothing is measured again.
        """
        limiter = budgetLimiter(1_000_000)
        (a, ta), (b, tb), (c, tc) = (open_(limiter) for _ in range(3))
        a.write(b"a" * 1000)
        b.writeSequence([b"b" * 1500, b"b" * 500])
        c.write(b"c" * 3000)
        self.assertEqual(limiter.outputCharged, 6000)
        self.assertEqual((a.outputCharge, b.outputCharge, c.outputCharge), (1000, 2000, 3000))
        a.write(b"a" * 500)
        self.assertEqual(limiter.outputCharged, 6500)
        tc.read()
        c.write(b"c" * 10)
        self.assertEqual(limiter.outputCharged, 3510)
        lose(b)
        self.assertEqual(limiter.outputCharged, 1510)
        lose(a)
        lose(c)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertEqual(limiter._charged, set())
        self.assertEqual(limiter.outputWalks, 0)
        self.assertEqual(limiter.rejected, {})

    def test_writeAfterLostNotCharged(self) -> None:
        """
        A write to a connection already gone (its channel writing while it
        is closed) charges nothing that would never be given back.
        """
        limiter = budgetLimiter(1_000_000)
        connection, transport = open_(limiter)
        connection.write(b"x" * 100)
        lose(connection)
        connection.write(b"x" * 100)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertEqual(limiter._charged, set())

    def test_unmeasurableChargedNothing(self) -> None:
        """
        A connection whose transport's buffer cannot be read is charged
        nothing, as no per-connection bound applies to it either.
        """
        limiter = budgetLimiter(1000)
        connection, transport = open_(limiter, StringTransport())
        connection.write(b"x" * 5000)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertEqual(limiter.rejected, {})

    def test_slowReaderGivesBack(self) -> None:
        """
        A connection aborted for its own bound (C{slow-reader}) gives its
        charge back at once.
        """
        limiter = budgetLimiter(1_000_000, perConnection=10_000)
        connection, transport = open_(limiter)
        connection.write(b"x" * 9000)
        self.assertEqual(limiter.outputCharged, 9000)
        connection.write(b"x" * 2000)
        self.assertTrue(transport.aborted)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertEqual(limiter.rejected, {"slow-reader": 1})

    def test_noBudget(self) -> None:
        """
        With no budget (L{None}) nothing is charged or cut.
        """
        limiter = budgetLimiter(None)
        connection, transport = open_(limiter)
        connection.write(b"x" * 100_000)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertFalse(transport.aborted)


class BudgetTests(SynchronousTestCase):
    """
    Past the budget, stale charges are corrected first, and only a real
    excess aborts connections, the largest holders first.
    """

    def test_nothingUnderBudget(self) -> None:
        """
        Connections that together hold less than the budget are neither
        measured again nor aborted, however much they write over time.
        """
        limiter = budgetLimiter(100_000)
        connections = [open_(limiter) for _ in range(10)]
        for _ in range(5):
            for connection, transport in connections:
                connection.write(b"x" * 1900)
        self.assertEqual(limiter.outputCharged, 95_000)
        self.assertEqual(limiter.outputWalks, 0)
        self.assertFalse(any(transport.aborted for _, transport in connections))
        self.assertEqual(limiter.rejected, {})

    def test_staleChargesCorrected(self) -> None:
        """
        When the charges pass the budget but the clients have read most of
        it, the walk measures the real total, sets the sum to it, and
        aborts nobody.
        """
        limiter = budgetLimiter(10_000)
        (a, ta), (b, tb), (c, tc) = (open_(limiter) for _ in range(3))
        a.write(b"a" * 4000)
        b.write(b"b" * 4000)
        ta.read()
        tb.read(3000)
        c.write(b"c" * 4000)
        self.assertEqual(limiter.outputWalks, 1)
        self.assertEqual(limiter.outputCharged, 5000)
        self.assertEqual((a.outputCharge, b.outputCharge, c.outputCharge), (0, 1000, 4000))
        self.assertEqual(limiter._charged, {b, c})
        self.assertFalse(ta.aborted or tb.aborted or tc.aborted)
        self.assertEqual(limiter.rejected, {})

    def test_largestAbortedFirst(self) -> None:
        """
        When the real total is over the budget, the connection that really
        holds the most is aborted: not one whose charge was larger but
        whose client has read it, and not a smaller one; it is counted as
        C{output-full}, what it held is let go of, and what is written to it
        after is dropped.
        """
        limiter = budgetLimiter(20_000)
        stale, staleT = open_(limiter)
        stale.write(b"s" * 6500)
        staleT.read()
        holders = [open_(limiter) for _ in range(5)]
        for (connection, transport), size in zip(holders, (2000, 6000, 100, 5000, 7000)):
            connection.write(b"h" * size)
        # Charged 26,600; really held 20,100.
        self.assertEqual(limiter.outputWalks, 1)
        self.assertEqual(
            [transport.aborted for _, transport in holders],
            [False, False, False, False, True],
        )
        self.assertFalse(staleT.aborted)
        self.assertEqual(stale.outputCharge, 0)
        self.assertEqual(limiter.rejected, {"output-full": 1})
        self.assertEqual(limiter.outputCharged, 13_100)
        cut, cutT = holders[4]
        self.assertEqual(cutT._tempDataLen, 0)
        written = len(cutT.value())
        cut.write(b"more")
        self.assertEqual(len(cutT.value()), written)
        self.assertEqual(cut.outputCharge, 0)
        self.assertEqual(limiter.outputCharged, 13_100)
        # Aborted or not, connections that go give back what they hold, once.
        for connection, transport in (*holders, (stale, staleT)):
            lose(connection)
        self.assertEqual(limiter.outputCharged, 0)
        self.assertEqual(limiter._charged, set())

    def test_severalAborted(self) -> None:
        """
        When the real total is over the budget by more than the largest
        holder (the charges may pass the real total by a sixteenth of the
        budget before a walk), the largest holders are aborted in turn until
        it is under, and no smaller one.
        """
        limiter = budgetLimiter(10_000)
        thousands = [open_(limiter) for _ in range(9)]
        for connection, transport in thousands:
            connection.write(b"k" * 1000)
        stale, staleT = open_(limiter)
        stale.write(b"s" * 1000)
        staleT.read()
        e, eT = open_(limiter)
        e.write(b"e" * 500)
        # Charged 10,500, really 9,500: corrected, nobody aborted.
        self.assertEqual(limiter.outputWalks, 1)
        self.assertEqual(limiter.outputCharged, 9500)
        f, fT = open_(limiter)
        f.write(b"f" * 600)
        # 10,100: within a sixteenth of the budget of the last real figure.
        self.assertEqual(limiter.outputWalks, 1)
        g, gT = open_(limiter)
        g.write(b"g" * 1000)
        # 11,100, really: two of the 1,000-byte holders go.
        self.assertEqual(limiter.outputWalks, 2)
        self.assertEqual(limiter.rejected, {"output-full": 2})
        self.assertEqual(limiter.outputCharged, 9100)
        self.assertEqual(
            sum(transport.aborted for _, transport in (*thousands, (g, gT))), 2
        )
        self.assertFalse(eT.aborted or fT.aborted or staleT.aborted)

    def test_walkAmortised(self) -> None:
        """
        While clients that do not read hold just under the budget, the
        others' writes (each read soon after) measure every connection again
        only once per sixteenth of the budget written, not at every write,
        and nobody is aborted.
        """
        budget = 16_000
        limiter = budgetLimiter(budget)
        parked = [open_(limiter) for _ in range(10)]
        for connection, transport in parked:
            connection.write(b"p" * 1585)
        readers = [open_(limiter) for _ in range(1000)]
        for connection, transport in readers:
            connection.write(b"r" * 100)
            transport.read()
        written = 100 * len(readers)
        self.assertLessEqual(limiter.outputWalks, written // (budget // OUTPUT_SLACK_DIVISOR) + 1)
        self.assertGreater(limiter.outputWalks, 0)
        self.assertEqual(limiter.rejected, {})
        self.assertLessEqual(len(limiter._charged), len(parked) + OUTPUT_SLACK_DIVISOR)

    def test_logBounded(self) -> None:
        """
        Walks that abort are logged a few times a minute, not once each.
        """
        limiter = budgetLimiter(1000)
        events: list[dict[str, Any]] = []
        limiter._outputLog.log = Logger(observer=events.append)
        for _ in range(100):
            connection, transport = open_(limiter)
            connection.write(b"x" * 2000)
            self.assertTrue(transport.aborted)
        self.assertEqual(limiter.rejected, {"output-full": 100})
        self.assertLessEqual(len(events), 10)
        self.assertIn("--max-output-total", events[0]["log_format"])


class DropQueuedOutputTests(TestCase):
    """
    L{dropQueuedOutput} lets go of what an aborted real TCP transport of
    this Twisted holds (the fence on Twisted's private C{FileDescriptor}
    state it writes).
    """

    timeout = 20

    @inlineCallbacks
    def test_realTransport(self) -> Any:
        """
        A TCP transport not aborting keeps its buffer; once aborted, its
        buffer is let go of at once, and the connection is then lost
        cleanly, as Twisted's abort does a turn later.
        """
        accepted: Deferred[Protocol] = Deferred()
        lost: Deferred[BaseException] = Deferred()

        class Server(Protocol):
            def connectionMade(self) -> None:
                accepted.callback(self)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                lost.callback(reason.value)

        port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        server = yield accepted
        server.transport.write(b"a" * 300_000)
        self.assertFalse(dropQueuedOutput(server.transport))
        self.assertEqual(queuedOutput(server.transport), 300_000)
        server.transport.abortConnection()
        self.assertTrue(dropQueuedOutput(server.transport))
        self.assertEqual(queuedOutput(server.transport), 0)
        self.assertEqual(server.transport._tempDataBuffer, [])
        reason = yield lost
        self.assertIsInstance(reason, ConnectionAborted)

    def test_notATwistedTransport(self) -> None:
        """
        A transport without Twisted's buffer is left alone.
        """
        transport = StringTransport()
        transport.write(b"x")
        self.assertFalse(dropQueuedOutput(transport))
        self.assertFalse(dropQueuedOutput(None))
        self.assertEqual(transport.value(), b"x")


class OptionTests(SynchronousTestCase):
    """
    C{--max-output-total}: its default and wiring.
    """

    def test_default(self) -> None:
        """
        The default is 256 MiB, the constant of L{artcast.server.connections}, and
        the limiter is given it.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(options["max-output-total"], DEFAULT_MAX_OUTPUT_TOTAL)
        self.assertEqual(DEFAULT_MAX_OUTPUT_TOTAL, 256 << 20)
        top = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertEqual(top.connections.maxOutputTotal, 256 << 20)

    def test_wired(self) -> None:
        """
        The limiter gets the budget, raised to one connection's bound when
        it is below (one connection may always hold what it may hold).
        """
        for args, total in (
            (["--max-output-total", "8000000"], 8_000_000),
            (["--max-output-total", "1000", "--max-output-buffer", "3000000"], 3_000_000),
            (["--max-output-total", "1000", "--max-value-size", "300000",
              "--max-output-buffer", "1"], 300_000 + 128 * 1024),
        ):
            options = tap.Options()
            options.parseOptions(args)
            top = tap.makeService(options, reactor=MemoryReactorClock())
            self.assertEqual(top.connections.maxOutputTotal, total)

    def test_badValues(self) -> None:
        """
        A budget that is not a positive number is a usage error.
        """
        from twisted.python.usage import UsageError

        for value in ("0", "-1", "lots"):
            self.assertRaises(
                UsageError, tap.Options().parseOptions, ["--max-output-total", value]
            )


def tcpState(sock: socket.socket) -> int:
    """
    The kernel's state of a TCP socket (C{TCP_INFO}'s first byte): 7 is
    closed (here, reset by the server).
    """
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def waitingBytes(sock: socket.socket) -> int:
    """
    Bytes received on a socket and not yet read (C{FIONREAD}), without
    reading them.
    """
    return struct.unpack(
        "i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    )[0]


def resetOrAnswered(
    sockets: list[socket.socket],
) -> tuple[list[socket.socket], list[socket.socket]]:
    """
    The sockets the server has reset, and those open with bytes waiting.
    """
    closed = [s for s in sockets if tcpState(s) == 7]
    answered = [s for s in sockets if tcpState(s) != 7 and waitingBytes(s) > 0]
    return closed, answered


#: The server's budget in the integration test, and the most its resident
#: memory may grow by there: the budget and a sixteenth of it, and about
#: 20 KiB per connection for its objects and the allocator's slack.
TOTAL = 8 * 1024 * 1024
CLIENTS = 400
GROWTH_KIB = (TOTAL + TOTAL // OUTPUT_SLACK_DIVISOR) // 1024 + CLIENTS * 20


class OutputTotalIntegrationTests(TestCase):
    """
    The real C{twistd artcast} with a small C{--max-output-total}: many
    clients that do not read a large listing cost at most the budget.
    """

    timeout = 60

    @inlineCallbacks
    def test_nonReaders(self) -> Any:
        """
        With a 3 MB listing and C{--max-output-total} 8 MiB, 400 connections
        that ask for it and never read make the server abort the ones
        holding the most, counted as C{output-full}, until the rest hold
        under the budget: its resident memory grows by less than the budget,
        a sixteenth, and 20 KiB a connection (each of the 400 would hold
        128 KiB, 50 MiB in all), and a long poll held meanwhile gets its
        datum within a second; C{/metrics} counts them too.
        """
        proc = yield ArtcastProcess(self, extra=[
            "--max-clients", "1000", "--max-output-total", str(TOTAL),
            "--max-value-size", "8192", "--max-output-buffer", "1",
        ]).start()
        yield proc.registerKeys(500, "d" * 6000)
        # The listing is made once, before the figure is taken.
        warm = yield rawConnect(self, proc)
        warm.send(requestBytes(b"/artcasts"))
        listing = yield warm.nextResponse()
        self.assertGreater(len(listing.body), 3_000_000)
        poll = yield rawConnect(self, proc)
        poll.send(requestBytes(b"/artcasts/legit/key"))
        yield proc.waitForWaiters(1)
        before = residentKiB(proc.pid)

        sockets: list[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in sockets])
        request = requestBytes(b"/artcasts")
        for _ in range(CLIENTS):
            sock = nonReader(proc.httpPort)
            sock.send(request)
            sockets.append(sock)
        grown = 0
        deadline = time.monotonic() + 20
        while True:
            grown = max(grown, residentKiB(proc.pid) - before)
            closed, answered = resetOrAnswered(sockets)
            if len(closed) + len(answered) == CLIENTS:
                break
            self.assertLess(time.monotonic(), deadline, "the server did not answer them all")
            yield deferLater(reactor, 0.05, lambda: None)
        # A connection aborted by the last walks may still hold the bytes it
        # was sent and not yet have its reset: the server closes an aborted
        # socket on its next turn.  Its counters are read until the sockets
        # closed so far are all it counts (a few turns; ten seconds at most).
        deadline = time.monotonic() + 10
        while True:
            stats = yield proc.stats()
            closed, answered = resetOrAnswered(sockets)
            if stats["rejected"].get("output-full") == len(closed):
                break
            self.assertLess(
                time.monotonic(), deadline,
                "the server counts %r output-full, %d sockets were reset"
                % (stats["rejected"].get("output-full"), len(closed)),
            )
            yield deferLater(reactor, 0.05, lambda: None)
        grown = max(grown, residentKiB(proc.pid) - before)
        self.assertLess(grown, GROWTH_KIB)
        self.assertEqual(stats["rejected"].get("output-full"), len(closed))
        self.assertGreater(len(closed), CLIENTS // 2)
        self.assertGreater(len(answered), 0)
        self.assertNotIn("slow-reader", stats["rejected"])
        sent = time.monotonic()
        proc.data.sendDatum("legit/key", 42)
        answer = yield poll.nextResponse()
        self.assertEqual((answer.code, answer.body), (200, b"42"))
        self.assertLess(time.monotonic() - sent, 1.0)
        response = yield treq.get(proc.url + "/metrics", persistent=False)
        metrics = yield response.text("utf-8")
        self.assertIn(
            'artcast_rejected_total{reason="output-full"} %d.0' % (len(closed),), metrics
        )
