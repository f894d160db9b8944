"""
Client-side pacing to the deployment's quota: requests and tokens per minute.

A known budget (``--tpm``/``--rpm``, or Azure's ``x-ratelimit-limit-*`` headers)
is paced with GCRA (``batchrunner.send.gcra``): evenly, a little under it. A 429
pauses everybody, so one throttled answer does not become a hundred.

With nothing known the pacer feels for the limit the way TCP does: a few
requests go at once and each answer lets more into flight, so a deployment
without a quota runs at the full concurrency within a few round trips; every
signal an answer carries is learned from (``batchrunner.send.learning``).

Each wait has an end (``batchrunner.send.waits``): an answer or a release frees
a place, timers end, and ``stop()`` wakes every waiter at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

from batchrunner.errors import QuotaExceeded
from batchrunner.records import RateLimits
from batchrunner.send.gcra import DECREASE, HEADROOM, RECOVERY_SECONDS, Rate
from batchrunner.send.learning import CORRECTION, INITIAL_WINDOW, Learner
from batchrunner.send.waits import PacerStopped, Turn, Waits

__all__ = [
    "CORRECTION",
    "DECREASE",
    "HEADROOM",
    "INITIAL_WINDOW",
    "RECOVERY_SECONDS",
    "Pacer",
    "PacerStopped",
    "QuotaExceeded",
    "Turn",
]

#: Slots are booked at most this far ahead, so that a rate that changes (a 429,
#: a learned budget) applies to requests not yet sent.
HORIZON_SECONDS = 1.0
#: A slot this close is taken at once: a sleep that short returns a loop round
#: later anyway, and Azure's windows (1–10 s) cannot tell the difference.
SLACK_SECONDS = 0.001


class Pacer:
    """
    Spaces requests to stay within *rpm* requests and *tpm* tokens per minute.

    Budgets left as None are learned from the service (``adaptive``); given
    ones are ceilings that only 429s lower. *clock* and *sleep* are injectable.
    Before sending: ``acquire``; after: ``observe`` each answer (``throttled``
    for a 429) and release the turn; ``stop`` ends every wait.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        budget = (
            rpm * HEADROOM / 60 if rpm else None,
            tpm * HEADROOM / 60 if tpm else None,
        )
        self._requests = Rate(budget[0])
        self._tokens = Rate(budget[1])
        self.adaptive = adaptive and not (rpm and tpm)
        self._learner = Learner(
            (self._requests, self._tokens), budget, adaptive=self.adaptive
        )
        self._clock = clock
        self._waits = Waits(sleep)
        self._paused_until = 0.0
        self._pauses = 0  # counts pauses, so a waiter can tell one began
        self._last = clock()

    # --- what is known --------------------------------------------------------

    @property
    def limited(self) -> bool:
        """Whether any budget is known."""
        return bool(self._requests.current or self._tokens.current)

    @property
    def budgets(self) -> tuple[float | None, float | None]:
        """The (requests, tokens) per minute being paced to now."""
        requests, tokens = self._requests.current, self._tokens.current
        return (
            None if requests is None else requests * 60,
            None if tokens is None else tokens * 60,
        )

    @property
    def window(self) -> float | None:
        """Most requests in flight while nothing says what the limit is."""
        return self._learner.window

    def ready_in(self, tokens: int = 1) -> float:
        """
        Seconds until a request of *tokens* may go (0: budget to spare now);
        infinite while it must wait for an answer (its window is full, or the
        remaining credit it has is spent and answers in flight bring news).
        """
        now = self._clock()
        wait = self._learner.admission(now, tokens, self._paused_until)
        if wait is not None and math.isinf(wait):
            return math.inf
        start = self._next_start()[1]
        return max(wait or 0.0, start - now)

    def token_limit(self) -> float | None:
        """The deployment's tokens a minute, given or learned; None while unknown."""
        ceiling = self._tokens.ceiling
        if ceiling is None:
            return None
        return ceiling / self._tokens.scale * 60 / HEADROOM

    # --- before sending -------------------------------------------------------

    async def acquire(self, tokens: int) -> Turn:
        """
        Wait until a request of *tokens* may be sent; its ``Turn`` must be
        released when it is done. ``QuotaExceeded`` when it is charged more than
        the quota of a whole minute (Azure's limiter would refuse it forever, and
        pacing it would hold the run for hours); ``PacerStopped`` after ``stop()``.
        Neither takes a place in flight.
        """
        self._waits.check()
        self._check_quota(tokens)
        learner = self._learner
        while (
            wait := learner.admission(self._clock(), tokens, self._paused_until)
        ) is not None:
            await self._waits.wait(wait, on_change=True)
        learner.took()
        turn = Turn(self._release)
        try:
            await self._pace(tokens)
            # The quota may have been learned while it waited: booked at it,
            # a row it can never take would hold every other one back.
            self._check_quota(tokens)
        except QuotaExceeded:
            self._learner.unbook(tokens)
            self._waits.unbooked()
            turn.release()
            raise
        except BaseException:
            turn.release()
            raise
        learner.sent(self._clock(), tokens)
        return turn

    def _check_quota(self, tokens: int) -> None:
        limit = self.token_limit()
        if limit is not None and tokens > limit:
            raise QuotaExceeded(tokens, limit)

    def reserve(self, tokens: int) -> float:
        """Book a request of *tokens*; return how long to wait before sending it."""
        now, start = self._next_start()
        self._requests.book(start, 1)
        self._tokens.book(start, max(tokens, 1))
        return start - now

    def _next_start(self) -> tuple[float, float]:
        """(now, the earliest time the next request may go), rates brought up to now."""
        now = self._clock()
        for rate in (self._requests, self._tokens):
            rate.grow(now - self._last)
        self._last = now
        start = max(
            now, self._requests.next_free, self._tokens.next_free, self._paused_until
        )
        return now, start

    async def _pace(self, tokens: int) -> None:
        while True:
            while (ahead := self._next_start()[1] - self._clock()) > HORIZON_SECONDS:
                await self._waits.wait(ahead - HORIZON_SECONDS, on_unbook=True)
            pauses = self._pauses
            delay = self.reserve(tokens)
            if delay > SLACK_SECONDS:
                await self._waits.wait(delay)
            # A 429 while we waited: our slot was booked at the old rate, and
            # every waiter going at the end of the pause is the next burst.
            if pauses == self._pauses:
                return

    def _release(self) -> None:
        self._learner.in_flight -= 1
        self._waits.changed()

    def stop(self) -> None:
        """The run stops: every wait ends now with ``PacerStopped``, and later ones."""
        self._waits.stop()

    # --- what the answers say -------------------------------------------------

    def refused(self, tokens: int, sent_at: float | None = None) -> None:
        """
        A request of *tokens* (sent at *sent_at*; None: the latest) over the
        whole quota, which the service will never take: what was booked for it
        is given back (the service counted none of it), so the requests after it
        need not wait out its share of the budget.
        """
        self._learner.refused(tokens, sent_at)
        self._waits.unbooked()

    def pause(self, seconds: float) -> None:
        """Hold every new request for *seconds* (the service asked us to wait)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._pauses += 1

    def observe(
        self,
        limits: RateLimits | None,
        accepted_tokens: int | None = None,
        sent_at: float | None = None,
    ) -> None:
        """
        Learn from an answer's rate-limit headers (any answer the service gave,
        not a timeout) to a request sent at *sent_at*; one that was not
        throttled counts its *accepted_tokens*.
        """
        self._learner.answered(self._clock(), limits, accepted_tokens, sent_at)
        self._waits.changed()

    def throttled(
        self, seconds: float, sent_at: float | None = None, tokens: int | None = None
    ) -> None:
        """
        A 429 for a request of *tokens* sent at *sent_at*: pause everybody, and
        learn from it once per burst (see ``batchrunner.send.learning``).
        """
        self.pause(seconds)
        self._learner.throttled(self._clock(), seconds, sent_at, tokens)
        self._waits.unbooked()
