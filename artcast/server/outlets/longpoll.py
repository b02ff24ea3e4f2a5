# -*- test-case-name: tests.test_web -*-
"""
The long poll: one held C{GET /artcasts/<key>}, answered by the next datum
of its key (or of the keys its pattern matches), or by a C{204} when its
timeout passes first.

A L{LongPoll} is a L{Waiter} of the L{KeyStore}.  It holds what it needs to
answer, the store, the clock and the server's L{Answers}, and nothing of the
HTTP routes: L{artcast.server.routes.ArtcastResource} makes one for each
long poll it holds.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from artcast.server import internals
from artcast.server.answers import Answers, answerFailed, writeAnswer
from artcast.server.connections import ArtcastRequest
from artcast.server.store import Datum, KeyStore, Waiter
from artcast.wire import DatumId

__all__ = ["LongPoll"]


class LongPoll(Waiter):
    """
    A long poll waiting for the next datum of a key (or of the keys a
    pattern matches): one object per held request, registered with the
    L{KeyStore} as its L{Waiter}.

    It answers its request itself (L{hold}, what
    L{artcast.server.routes.ArtcastResource} does): no L{Deferred}, no
    callbacks, no C{notifyFinish}; the request (L{ArtcastRequest}) cancels it
    when the client goes away.  Through Klein, L{wait} gives a L{Deferred} of
    the body instead.  Either way an answer is made by C{answer} when the
    datum comes, a C{204} by L{Answers.noContent} after C{timeout} seconds,
    and an unexpected error is a logged C{500}.

    A poll that resumes (its client has an id, C{skipThrough}) and waits is
    answered with C{Artcast-Gap: 1} when the datum that comes follows datums
    of its source this server declared unrecoverable (its C{lost} differs
    from that of the client's datum, or of the datum of its source held
    before it: L{KeyStore.lossBefore}), as an answer from history would be.
    Only such a poll compares, and only a datum whose C{lost} is not 0.

    @param store: the store it waits on.
    @param clock: what times C{timeout}.
    @param answers: what makes the C{204} when C{timeout} passes.
    @param answer: what answers the request with the datum:
        L{Answers.prebuiltAnswer} or L{Answers.valueAnswer}.
    @param timeout: seconds to wait before the C{204}, or L{None} to wait
        until a datum comes.
    @param origin: for a poll that resumes, the datum its client has (or
        the latest held before its id), when known
        (L{artcast.server.store.Found.origin}).
    @param unlessNext: the C{gap} stands unless the datum that comes is the
        very next of C{skipThrough}'s source
        (L{artcast.server.store.Found.unlessNext}).
    """

    __slots__ = (
        "clock", "answers", "request", "contentType", "gap", "answer", "timeout",
        "timer", "deferred", "origin", "unlessNext",
    )

    def __init__(
        self,
        store: KeyStore,
        clock: IReactorTime,
        answers: Answers,
        request: IRequest,
        key: str,
        contentType: str,
        gap: bool,
        answer: Callable[[IRequest, Datum, str, bool], bytes],
        skipThrough: DatumId | None = None,
        timeout: float | None = None,
        origin: Datum | None = None,
        unlessNext: bool = False,
    ) -> None:
        super().__init__(store, key, skipThrough)
        self.origin = origin
        self.unlessNext = unlessNext
        self.clock = clock
        self.answers = answers
        self.request = request
        self.contentType = contentType
        self.gap = gap
        self.answer = answer
        self.timeout = timeout
        self.timer: IDelayedCall | None = None
        self.deferred: Deferred[bytes] | None = None

    def hold(self) -> None:
        """
        Wait, and answer the request when the datum comes.
        """
        request = self.request
        if isinstance(request, ArtcastRequest):
            request.hold(self)
        else:
            request.notifyFinish().addErrback(lambda _: self.cancel())
        self._begin()

    def wait(self) -> Deferred[bytes]:
        """
        Wait, and fire the returned L{Deferred} with the body of the answer
        (its headers set on the request); cancelling it stops the wait.
        """
        self.deferred = Deferred(lambda _: self.cancel())
        self._begin()
        return self.deferred

    def _begin(self) -> None:
        self.start()
        if self.timeout is not None:
            self.timer = self.clock.callLater(self.timeout, self._timedOut)

    def cancel(self) -> None:
        super().cancel()
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        request = self.request
        if isinstance(request, ArtcastRequest) and request.poll is self:
            # No cycle left for the garbage collector: the poll and its
            # request are freed as soon as the channel lets go.
            request.poll = None

    def notify(self, datum: Datum) -> None:
        """
        L{Waiter.notify} and L{arrived} in one step for the poll of a fan-out
        (it waits for no older datum, with no gap to tell, no timer and no
        L{Deferred}): a call less per step, for every waiter of a datum.
        Any other goes the long way.
        """
        request: Any = self.request
        if (
            self.skipThrough is not None
            or self.timer is not None
            or self.deferred is not None
            or self.gap
            or internals.requestOver(request)
        ):
            super().notify(datum)
            return
        # Out of the store's index of waiters, as Waiter.notify takes it (not
        # through cancel: a call more per waiter, and no timer to cancel).
        self.store._listeners.remove(self.pattern, self)
        if isinstance(request, ArtcastRequest) and request.poll is self:
            request.poll = None
        try:
            body = self.answer(request, datum, self.contentType, False)
        except Exception:
            self._fail(Failure())
            return
        if not body and request.startedWriting:
            self.store.afterFanOut(_finish, request)
        else:
            writeAnswer(body, request)

    def arrived(self, datum: Datum) -> None:
        # Waiter.notify has taken it out of the store's index: the rest of
        # cancel(), for every waiter of a fan-out.
        timer = self.timer
        if timer is not None:
            self.timer = None
            if timer.active():
                timer.cancel()
        request = self.request
        if isinstance(request, ArtcastRequest) and request.poll is self:
            request.poll = None
        gap = self.gap
        skipThrough = self.skipThrough
        if (
            gap
            and self.unlessNext
            and skipThrough is not None
            and skipThrough.isNext(datum.source, datum.boot, datum.seq)
        ):
            # The server held nothing, and this is the datum right after the
            # client's: nothing was missed.
            gap = False
        elif datum.lost and self.skipThrough is not None and not gap:
            # A resuming poll: was a datum of this source declared
            # unrecoverable since the one the client has?
            origin = self.origin
            if (
                origin is not None
                and origin.boot == datum.boot
                and origin.source == datum.source
            ):
                gap = origin.lost != datum.lost
            else:
                gap = self.store.lossBefore(self.pattern, datum) is not None
        self._respond(self.answer, self.request, datum, self.contentType, gap)

    def _timedOut(self) -> None:
        self.timer = None
        self.cancel()
        self._respond(self.answers.noContent, self.request, self.pattern)

    def stopped(self) -> None:
        self.cancel()
        self._fail(Failure(CancelledError()))

    def _respond(self, make: Callable[..., bytes], *args: Any) -> None:
        """
        Answer with what C{make(*args)} gives, unless the request is over.
        """
        # (Not typing.cast: a call per answer.)
        request: Any = self.request
        if self.deferred is None and internals.requestOver(request):
            return
        try:
            body = make(*args)
        except Exception:
            self._fail(Failure())
            return
        if self.deferred is not None:
            self.deferred.callback(body)
        elif not body and request.startedWriting:
            # The prebuilt answer, sent whole: the request is finished once
            # every waiter of the datum has its answer.
            self.store.afterFanOut(_finish, request)
        else:
            writeAnswer(body, request)

    def _fail(self, failure: Failure) -> None:
        """
        The wait failed: a C{500}, and logged (when stopped by the store, a
        request already answered is left alone).
        """
        if self.deferred is not None:
            if not self.deferred.called:
                self.deferred.errback(failure)
            return
        answerFailed(failure, cast(Request, self.request))


def _finish(request: Request) -> None:
    """
    Finish a request whose answer is written whole, unless it is over
    already (L{internals.finishWritten}: as Twisted's C{finish}, in one step).
    """
    if not internals.requestOver(request):
        internals.finishWritten(request)
