# -*- test-case-name: tests.test_shutdown -*-
"""
Graceful shutdown.

On SIGTERM or SIGINT twistd stops the reactor, which first runs the
application's C{stopService} and waits for the L{Deferred} it returns.
L{ServingService} holds the HTTP port service, and in its C{stopService}:

  1. stops the port: no new connection is accepted, and a load balancer
     sees this server go;
  2. answers every held long poll with C{503} and a C{Retry-After} spread
     over C{1..N} seconds (clients move to another server without all
     reconnecting in the same second), closes idle keep-alive connections,
     and refuses with a C{503} any request whose head is still arriving;
  3. tells the streams, through L{Closing}, to end cleanly, each with its
     own C{Retry-After};
  4. waits for every connection to close, at most C{--shutdown-timeout}
     seconds, then aborts the ones left.

twistd then stops the reactor and removes its pidfile.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from artcast.server.connections import (
    FILE_HEADROOM,
    ConnectionLimiter,
    RetrySpread,
    ensureFileLimit,
)
from artcast.server.defaults import DEFAULT_SHUTDOWN_TIMEOUT
from artcast.server.logs import NamedLogger

__all__ = [
    "ABORT_GRACE",
    "Closing",
    "ServingService",
]


#: After aborting the connections left at the deadline, how long to wait for
#: the reactor to report them closed.
ABORT_GRACE = 0.5


class Closing:
    """
    Tells long-lived answers (streams: Server-Sent Events, WebSockets) that
    the server is shutting down, so that each can end cleanly, e.g. an event
    stream with a C{retry:} field, a WebSocket with close code 1001 ("going
    away").

    A stream registers when it opens and unregisters when it ends::

        forget = closing.onClose(lambda retryAfter: stream.end(retryAfter))
        ...
        forget()  # in the stream's end, however it ends

    @ivar closing: L{True} once shutdown has begun.
    """

    _log = NamedLogger(namespace="artcast.shutdown.Closing")

    def __init__(self, retryAfter: Callable[[], int] | None = None) -> None:
        """
        @param retryAfter: Gives each stream its retry delay in seconds;
            spread over 1 to 5 seconds by default.
        """
        self.retryAfter = retryAfter if retryAfter is not None else RetrySpread()
        self.closing = False
        self._callbacks: dict[int, Callable[[int], Any]] = {}
        self._serial = 0

    def __len__(self) -> int:
        """
        @return: How many callbacks are registered.
        """
        return len(self._callbacks)

    def onClose(self, callback: Callable[[int], Any]) -> Callable[[], None]:
        """
        Have C{callback(retryAfter)} called when shutdown begins (at once if
        it has begun).  It may return a L{Deferred}; shutdown waits for it,
        within the shutdown timeout.

        @return: A function that unregisters the callback (harmless to call
            twice, or after the callback ran).
        """
        if self.closing:
            self._call(callback)
            return lambda: None
        self._serial += 1
        token = self._serial
        self._callbacks[token] = callback

        def forget() -> None:
            self._callbacks.pop(token, None)

        return forget

    def _call(self, callback: Callable[[int], Any]) -> Deferred[Any]:
        d = maybeDeferred(callback, self.retryAfter())
        d.addErrback(lambda f: self._log.failure("Shutdown callback failed", f))
        return d

    def close(self) -> Deferred[Any]:
        """
        Begin shutdown: call every registered callback once.

        @return: A L{Deferred} that fires when all of them are done.
        """
        self.closing = True
        callbacks = list(self._callbacks.values())
        self._callbacks.clear()
        return DeferredList([self._call(callback) for callback in callbacks])


class ServingService(MultiService):
    """
    The parent of the HTTP port's service: it raises the open-files limit
    at start, and at stop closes the connections gracefully, in a bounded
    time (see the module's description).

    @ivar limiter: The connections.
    @ivar closing: Where streams register for shutdown.
    @ivar timeout: Seconds shutdown may take.
    """

    _log = NamedLogger(namespace="artcast.shutdown.ServingService")

    def __init__(
        self,
        limiter: ConnectionLimiter,
        clock: IReactorTime,
        timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        closing: Closing | None = None,
        afterAnswer: Callable[[], object] | None = None,
        fileLimit: Callable[[int], int] = ensureFileLimit,
        ready: Deferred[object] | None = None,
    ) -> None:
        """
        @param limiter: The L{ConnectionLimiter} the port serves.
        @param clock: The reactor (a L{task.Clock} in tests).
        @param timeout: Seconds to wait for connections to close before
            aborting them.
        @param closing: Where streams register; a new one by default.
        @param afterAnswer: Called once the held requests have been
            answered, e.g. L{artcast.server.store.KeyStore.cancelWaiters}, so
            that nothing is left waiting behind the answers.
        @param fileLimit: Raises the open-files limit (for tests).
        @param ready: When given, the port (the children) is bound and
            started only once it fires, e.g. when C{--bus} has read the
            history (L{artcast.server.feeds.bus.BusFeed.whenReady}): no
            request is answered before.  The port is then bound after
            twistd drops privileges (C{--uid}).
        """
        super().__init__()
        self.limiter = limiter
        self.clock = clock
        self.timeout = timeout
        self.closing = closing if closing is not None else Closing(
            limiter.site.retryAfter
        )
        self.afterAnswer = afterAnswer
        self._fileLimit = fileLimit
        self._stopping: Deferred[None] | None = None
        self.ready = ready
        #: Whether the children (the port) were started.
        self._childrenStarted = ready is None

    def privilegedStartService(self) -> None:
        # Ask for room for every client, every refusal being answered and
        # the server's own files; but warn only when the clients themselves
        # (and the server's own files) cannot be held: refusals are brief,
        # and a refusal that finds no file is only a connection not accepted
        # yet.
        wanted = self.limiter.fileLimitWanted()
        limit = self._fileLimit(wanted)
        maxClients = self.limiter.maxClients
        needed = maxClients + FILE_HEADROOM
        if limit < needed:
            self._log.warn(
                "Only {limit} open files are allowed (ulimit -n), fewer than the"
                " {needed} that --max-clients {maxClients} needs ({maxClients}"
                " clients and {headroom} for the server's own files): raise the"
                " limit (ulimit -n {needed}, or LimitNOFILE= in a systemd unit)"
                " or use --max-clients {fits}.",
                limit=limit,
                needed=needed,
                wanted=wanted,
                headroom=FILE_HEADROOM,
                maxClients=maxClients,
                fits=max(1, limit - FILE_HEADROOM),
            )
        if self.ready is None:
            super().privilegedStartService()

    def startService(self) -> None:
        if self.ready is None:
            super().startService()
            return
        Service.startService(self)
        self.ready.addCallback(self._startChildren)

    def _startChildren(self, _: object) -> None:
        """
        The wait is over: bind and start the port.
        """
        if not self.running or self._childrenStarted:
            return
        self._childrenStarted = True
        for child in self:
            child.privilegedStartService()
            child.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, answer, close, within C{timeout} seconds.

        @return: A L{Deferred} that fires when every connection is closed,
            or at the latest C{timeout} seconds (and a little) from now.
        """
        if self._stopping is not None:
            return self._stopping
        # Stop listening first (the port service is our child).
        if self._childrenStarted:
            portsStopped = super().stopService()
        else:
            Service.stopService(self)
            portsStopped = succeed(None)
        self.limiter.shutDown(self.closing.retryAfter)
        streamsClosed = self.closing.close()
        if self.afterAnswer is not None:
            try:
                self.afterAnswer()
            except Exception:
                self._log.failure("Shutdown: afterAnswer failed")
        done: Deferred[None] = Deferred()
        self._stopping = done
        timers: list[IDelayedCall] = []

        def finish(_: object = None) -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            if not done.called:
                done.callback(None)

        def expire() -> None:
            left = self.limiter.abortAll()
            if left:
                self._log.info(
                    "Shutdown: aborted {count} connections still open after"
                    " {timeout} s",
                    count=left,
                    timeout=self.timeout,
                )
            # Aborted connections are reported closed on the next reactor
            # turn; do not wait for ever if one is not.
            timers.append(self.clock.callLater(ABORT_GRACE, finish))

        timers.append(self.clock.callLater(self.timeout, expire))
        settled = DeferredList(
            [portsStopped, streamsClosed, self.limiter.whenIdle()], consumeErrors=True
        )
        settled.addCallback(finish)
        return done
