"""
Client-side pacing to the deployment's quota: requests and tokens per minute.

Azure enforces its limits over short windows (1–10 s), so bursts that a per-minute
bucket would allow still get 429s. The pacer spaces requests evenly instead, with
the generic cell rate algorithm (GCRA): each request moves a "theoretical arrival
time" forward by its cost divided by the rate, and may go once the clock reaches
it. A 429 pauses everybody, so one throttled answer does not become a hundred.

With no budget given the pacer learns one. Azure reports the deployment's limits
on every answer (``x-ratelimit-limit-tokens`` per minute, ``-requests`` per 10 s),
so the first answer tells the budget outright: until it arrives only one request
is out. Where the headers are missing, 429s drive an AIMD rate: cut to 85% of
what got through, then grow back linearly (see benchmarks/quota.py for why).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from batchrunner.errors import QuotaExceeded
from batchrunner.records import RateLimits

#: Pace a little under the budget: the service's window and ours never line up
#: exactly, and a 429 costs far more than 3% of throughput.
HEADROOM = 0.97
#: Multiplicative decrease on a 429, and the seconds to grow back to the old rate.
#: What got through over the last window is a close measure of a windowed
#: limit, so the cut can be mild: 0.85 used 92% of the limit in
#: benchmarks.quota's header-less run, TCP's 0.7 used 85%, for the same 429s.
DECREASE = 0.85
RECOVERY_SECONDS = 60.0
#: With neither a budget nor headers, start at this many requests a second and
#: double every second until the first 429 (TCP's slow start). A windowed limit
#: refuses everything in flight once the window is spent, and what is in flight
#: grows with the doubling rate: 4 doublings a second drew 26 429s in
#: benchmarks.quota's header-less run, 1 a second 7, in the same wall time.
SLOW_START_RATE = 4.0
SLOW_START_DOUBLINGS_PER_SECOND = 1.0
#: Slots are booked at most this far ahead, so that a rate that changes (a 429,
#: a learned budget, slow start) applies to requests not yet sent.
HORIZON_SECONDS = 1.0
#: A slot this close is taken at once: a sleep that short returns a loop round
#: later anyway, and Azure's windows (1–10 s) cannot tell the difference.
SLACK_SECONDS = 0.001
#: How far back the sending rate is measured when a 429 asks us to slow down.
MEASURE_SECONDS = 10.0


class _Rate:
    """One GCRA budget (requests or tokens per second) that AIMD can move."""

    def __init__(self, per_second: float | None) -> None:
        self.ceiling = per_second  # the budget; None while unknown
        self.current = per_second
        self.next_free = 0.0
        self._growth = 0.0  # per second, after a decrease
        self._doubling = False  # slow start, until the first decrease
        # (start, cost) of what was sent while the rate was unknown (the probe):
        # the service counted it, so the first budget must too.
        self._unbooked: list[tuple[float, float]] = []

    def set_ceiling(self, per_second: float) -> None:
        if self.ceiling != per_second:
            self.ceiling = per_second
            self.current = (
                per_second if self.current is None else min(self.current, per_second)
            )
            self._book_unbooked()

    def _book_unbooked(self) -> None:
        for start, cost in self._unbooked:
            self.book(max(start, self.next_free), cost)
        self._unbooked.clear()

    def decrease(self, measured: float) -> None:
        candidates = [x for x in (self.current, measured) if x]
        if not candidates:
            return
        # Nothing got through lately: halve what we were sending.
        base = min(candidates) if measured else candidates[0] / 2 / DECREASE
        self._doubling = False
        self.current = max(base * DECREASE, 1e-3)
        # Back to the old rate in RECOVERY_SECONDS, then on probing upward
        # until the next 429 (or the known ceiling).
        self._growth = (base - self.current) / RECOVERY_SECONDS

    def slow_start(self, per_second: float) -> None:
        self.current, self._doubling = per_second, True
        self._book_unbooked()

    def grow(self, seconds: float) -> None:
        if self.current is None:
            return
        if self._doubling:
            self.current *= 2.0 ** min(seconds * SLOW_START_DOUBLINGS_PER_SECOND, 30)
            return
        if not self._growth:
            return
        self.current += self._growth * seconds
        if self.ceiling is not None and self.current >= self.ceiling:
            self.current, self._growth = self.ceiling, 0.0

    def book(self, start: float, cost: float) -> None:
        if self.current:
            self.next_free = start + cost / self.current
        else:
            self._unbooked.append((start, cost))


class Pacer:
    """
    Spaces requests to stay within *rpm* requests and *tpm* tokens per minute.

    Budgets left as None are learned from the service (``adaptive``). *clock*
    and *sleep* are injectable.
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
        self._requests = _Rate(rpm * HEADROOM / 60 if rpm else None)
        self._tokens = _Rate(tpm * HEADROOM / 60 if tpm else None)
        self._given = (rpm is not None, tpm is not None)
        self.adaptive = adaptive and not (rpm and tpm)
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self._pauses = 0  # counts pauses, so a waiter can tell one began
        self._last = clock()
        # (time, tokens) of the requests the service accepted lately: what it
        # really lets through is the best guess at its limit.
        self._accepted: deque[tuple[float, int]] = deque()
        self._probe_out = False
        self._learned = anyio.Event() if self.adaptive else None
        self._decreased_at = -1e18  # 429s of requests sent before it: same burst

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

    def token_limit(self) -> float | None:
        """The deployment's tokens a minute, given or learned; None while unknown."""
        ceiling = self._tokens.ceiling
        return None if ceiling is None else ceiling * 60 / HEADROOM

    def reserve(self, tokens: int) -> float:
        """Book a request of *tokens*; return how long to wait before sending it."""
        now, start = self._next_start()
        self._requests.book(start, 1)
        self._tokens.book(start, max(tokens, 1))
        return start - now

    def pause(self, seconds: float) -> None:
        """Hold every new request for *seconds* (the service asked us to wait)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._pauses += 1

    def observe(
        self, limits: RateLimits | None, accepted_tokens: int | None = None
    ) -> None:
        """
        Learn the budget from an answer's rate-limit headers (any answer); an
        answer that was not throttled counts its *accepted_tokens*.
        """
        if self.adaptive and accepted_tokens is not None:
            self._accepted.append((self._clock(), accepted_tokens))
        if self.adaptive and limits is not None:
            if limits.limit_tokens and not self._given[1]:
                self._tokens.set_ceiling(limits.limit_tokens * HEADROOM / 60)
            if limits.rpm and not self._given[0]:
                self._requests.set_ceiling(limits.rpm * HEADROOM / 60)
        if self._learned is not None and not self._learned.is_set():
            if self.adaptive and not self.limited:
                # No budget and no headers: feel for the limit from below.
                self._requests.slow_start(SLOW_START_RATE)
            self._learned.set()

    def throttled(self, seconds: float, sent_at: float | None = None) -> None:
        """
        A 429 for a request sent at *sent_at*: pause everybody, and send slower
        from now on (AIMD), once per burst: requests sent before the last
        decrease were sent at the old rate, and their 429s say nothing new.
        """
        self.pause(seconds)
        now = self._clock()
        if not self.adaptive:
            return
        if sent_at is not None and sent_at < self._decreased_at:
            return
        self._decreased_at = now
        while self._accepted and self._accepted[0][0] < now - MEASURE_SECONDS:
            self._accepted.popleft()
        # Over the whole window, not since the first answer: a limiter with a
        # 10 s window lets a first burst of 10 s worth through at once.
        if not self._given[0]:
            self._requests.decrease(len(self._accepted) / MEASURE_SECONDS)
        if not self._given[1]:
            tokens = sum(t for _, t in self._accepted)
            self._tokens.decrease(tokens / MEASURE_SECONDS)

    async def acquire(self, tokens: int) -> None:
        """
        Wait until a request of *tokens* may be sent. ``QuotaExceeded`` when it
        is charged more than the quota of a whole minute: Azure's limiter would
        refuse it forever, and pacing it would hold the run for hours.
        """
        await self._probe()
        limit = self.token_limit()
        if limit is not None and tokens > limit:
            raise QuotaExceeded(tokens, limit)
        while True:
            while (ahead := self._next_start()[1] - self._clock()) > HORIZON_SECONDS:
                await self._sleep(ahead - HORIZON_SECONDS)
            pauses = self._pauses
            delay = self.reserve(tokens)
            if delay > SLACK_SECONDS:
                await self._sleep(delay)
            # A 429 while we waited: our slot was booked at the old rate, and
            # every waiter going at the end of the pause is the next burst.
            if pauses == self._pauses:
                return

    async def _probe(self) -> None:
        # Until the first answer tells the limits, one request goes alone: a
        # burst of N blind requests is how a run starts with N 429s.
        if self._learned is None or self._learned.is_set():
            return
        if not self._probe_out:
            self._probe_out = True
            return
        await self._learned.wait()
