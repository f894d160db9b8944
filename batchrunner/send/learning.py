"""
What the answers teach the pacer, signal by signal.

- Nothing heard yet, or answers without headers: a window of requests in flight
  that each answer grows (TCP's slow start).
- ``x-ratelimit-limit-*``: the budget outright.
- ``x-ratelimit-remaining-*`` alone: a credit, and the window's size and length
  (``batchrunner.send.window``), hence a budget.
- A 429: where the budget is known, the service counts more than we do, so it is
  scaled down; where it is not, the first 429's wait gives the rate, then AIMD.
"""

from __future__ import annotations

import math
from collections import deque

from batchrunner.records import RateLimits
from batchrunner.send.gcra import HEADROOM, Rate
from batchrunner.send.window import WindowEstimate

#: Requests in flight before anything is heard (TCP's initial window): the
#: burst a deployment with a tiny quota sees blind. 4 is RFC 3390's.
INITIAL_WINDOW = 4
#: Places added to the window by each answer in slow start (1 doubles it every
#: round trip). Against a windowed limit, the requests sent while the first
#: 429s are on their way back are refused too, and there are about as many as
#: the window when the limit is crossed: slower growth crosses it with a
#: smaller one. Measured, no quota and no headers (benchmarks.first_second
#: --modes none, medians of 3) and a 60k TPM 6 s window (benchmarks.quota
#: --runs aimd, 429s of ~252 requests):
#:   growth 1.0: 0.94x naive, 25 429s;  0.5: 1.14x, first second 64% of
#:   steady, 15;  0.4: 1.17x, 59%, 13;  0.35: 1.05x, 55%, 12;  0.3: 1.01x,
#:   50%, 11;  an initial window of 8 with 0.3: 1.05x, 69%, 15.
#: 0.35 is the fastest start that keeps that run within 5% of 429s.
SLOW_START_GROWTH = 0.35
#: A 429 against a budget we were pacing to: the service counts a few % more
#: than our estimate (its own is "based in part on the character count").
CORRECTION = 0.96
#: With only remaining-* headers, a run that has spent the credit and has
#: nothing in flight sends one request this long after the last answer (and a
#: window more, where its length is known), to hear again: at worst one 429,
#: whose wait then tells when the window opens.
STALL_PROBE_SECONDS = 1.0
#: How often a request that does not fit the credit looks again, once the
#: window's length says when our own sends leave it.
CREDIT_RECHECK_SECONDS = 0.05
#: How far back the sending rate is measured when a 429 asks us to slow down.
MEASURE_SECONDS = 10.0


class Learner:
    """The pacer's knowledge of the limit, and the places in flight it allows."""

    def __init__(
        self,
        rates: tuple[Rate, Rate],
        budget: tuple[float | None, float | None],
        *,
        adaptive: bool,
    ) -> None:
        self.rates = rates  # requests, tokens
        self.budget = budget  # the given ones, per second less headroom
        self.adaptive = adaptive
        #: Most requests in flight while nothing says what the limit is.
        self.window: float | None = INITIAL_WINDOW if adaptive else None
        self.in_flight = 0
        self._peak = 0  # the most ever in flight
        self._told = False  # limit headers seen: nothing left to learn from them
        # What this run sent, for remaining-* to be read against; and whether
        # remaining-* alone is what we send by (the credit).
        self.estimates: tuple[WindowEstimate, WindowEstimate] | None = None
        self._gated = False
        self._started: float | None = None  # the first send
        self.last_answer = -math.inf
        # (time, tokens) of the requests the service accepted lately: what it
        # really lets through is the best guess at its limit.
        self._accepted: deque[tuple[float, int]] = deque()
        self._decreased_at = -math.inf  # 429s of requests sent before: same burst
        self._throttled = False

    # --- places in flight -----------------------------------------------------

    def admission(self, now: float, tokens: int, paused_until: float) -> float | None:
        """None when a request of *tokens* may take a place now, else the wait."""
        if self.window is not None and self.in_flight >= self.window:
            return math.inf  # until an answer or a release
        estimates = self.estimates
        if not self._gated or estimates is None:
            return None
        short = _short(estimates, now, tokens)
        if not short:
            return None
        # Where the window's length is known, our own sends leave it at known
        # times: look again soon. Otherwise answers in flight bring news.
        timed = all(e.seconds for e in short)
        if self.in_flight:
            return CREDIT_RECHECK_SECONDS if timed else math.inf
        # Nothing in flight, so nothing will tell us more: one request goes
        # after a while to hear again.
        quiet = STALL_PROBE_SECONDS + max(e.seconds or 0.0 for e in short)
        probe_at = max(self.last_answer + quiet, paused_until)
        if now >= probe_at:
            return None
        return min(probe_at - now, CREDIT_RECHECK_SECONDS) if timed else probe_at - now

    def took(self) -> None:
        """A request took a place in flight."""
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)

    def sent(self, now: float, tokens: int) -> None:
        """A request of *tokens* goes at *now*."""
        if self._started is None:
            self._started = now
        if self.estimates is not None or (self.adaptive and not self._told):
            requests, charged = self._learning()
            requests.sent(now, 1)
            charged.sent(now, tokens)

    def unbook(self, tokens: int) -> None:
        """A request of *tokens* was paced but is not sent: give its slot back."""
        for rate, cost in zip(self.rates, (1, max(tokens, 1)), strict=True):
            rate.unbook(cost)

    def refused(self, tokens: int, sent_at: float | None = None) -> None:
        """
        A request of *tokens* that was sent at *sent_at* (None: the latest)
        will never be taken: unbook it.
        """
        self.unbook(tokens)
        if self.estimates is not None:
            for estimate, cost in zip(self.estimates, (1, tokens), strict=True):
                estimate.refused(cost, sent_at)

    # --- answers --------------------------------------------------------------

    def answered(
        self,
        now: float,
        limits: RateLimits | None,
        accepted_tokens: int | None,
        sent_at: float | None,
    ) -> None:
        """
        An answer's headers (any answer, not a timeout) to a request sent at
        *sent_at*; *accepted_tokens* if it was not throttled.
        """
        self.last_answer = now
        if not self.adaptive:
            return
        if accepted_tokens is not None:
            self._accepted.append((now, accepted_tokens))
        if limits is not None and (limits.limit_tokens or limits.limit_requests):
            self._told, self._gated = True, False
            self.estimates, self.window = None, None
            if limits.limit_tokens and self.budget[1] is None:
                self.rates[1].set_ceiling(limits.limit_tokens * HEADROOM / 60)
            if limits.rpm and self.budget[0] is None:
                self.rates[0].set_ceiling(limits.rpm * HEADROOM / 60)
        elif limits is not None and not self._told and _has_remaining(limits):
            self._remaining(now, limits, sent_at)
        elif self.window is not None and self._peak * 2 >= self.window:
            # Slow start, up to twice the most we ever had in flight (RFC
            # 7661's "half of it in use"), not beyond what the run can use.
            self.window += SLOW_START_GROWTH

    def _learning(self) -> tuple[WindowEstimate, WindowEstimate]:
        if self.estimates is None:
            self.estimates = (WindowEstimate(), WindowEstimate())
        return self.estimates

    def _remaining(self, now: float, limits: RateLimits, sent_at: float | None) -> None:
        """Remaining-* alone: a credit to send against, and the window to learn."""
        requests, tokens = self._learning()
        self.window = None  # the credit holds us back instead
        self._gated = True
        learned = False
        if limits.remaining_requests is not None:
            learned |= requests.report(now, limits.remaining_requests, sent_at)
        if limits.remaining_tokens is not None:
            learned |= tokens.report(now, limits.remaining_tokens, sent_at)
        if learned:
            self._pace_to_estimates()

    def _pace_to_estimates(self) -> None:
        """Pace to what the learned windows let through (never above a budget)."""
        assert self.estimates is not None
        for estimate, rate, budget in zip(
            self.estimates, self.rates, self.budget, strict=True
        ):
            per_second = estimate.rate
            if per_second is None:
                continue
            per_second *= HEADROOM
            rate.set_ceiling(per_second if budget is None else min(per_second, budget))

    def throttled(
        self, now: float, seconds: float, sent_at: float | None, tokens: int | None
    ) -> None:
        """A 429 asking for *seconds* for a request of *tokens* sent at *sent_at*."""
        self.window = None  # from now on the rate holds us back
        if tokens is not None:
            # The service counted none of it: neither do we (the pause holds
            # everybody meanwhile), so a large row refused again and again
            # does not also hold back the rows after it by its size.
            self.refused(tokens, sent_at)
        first, self._throttled = not self._throttled, True
        # Requests sent before the last lesson were sent at the old rate, and
        # their 429s say nothing new.
        if sent_at is not None and sent_at < self._decreased_at:
            return
        self._decreased_at = now
        while self._accepted and self._accepted[0][0] < now - MEASURE_SECONDS:
            self._accepted.popleft()
        # The service decided on the request when it arrived, not when its
        # answer reached us (a 429 may take as long as any answer): its wait
        # counts from about when it was sent.
        decided = now if sent_at is None else sent_at
        if self._gated and self.estimates is not None:
            learned = [e.throttled(decided, seconds) for e in self.estimates]
            if any(learned):
                self._pace_to_estimates()
                return
        for i, rate in enumerate(self.rates):
            if rate.ceiling is not None:
                rate.correct(CORRECTION)
            elif not self.adaptive or self.budget[i] is not None:
                continue
            elif first and self._started is not None:
                # What got through before the first 429 filled the service's
                # window, and what we sent first fits again once its wait is
                # over: that much per that long is the rate it allows. It is a
                # measure, not a guess, so it is probed upward only slowly (by
                # a correction a minute): 15% a minute met the limit again
                # mid-run in benchmarks.quota's aimd run, and its cut cost 6%.
                since = max(self._started, now - MEASURE_SECONDS)
                window = decided + seconds - since
                accepted = self._accepted_of(i)
                if accepted and window > 0:
                    rate.start_at(accepted / window * HEADROOM, 1 - CORRECTION)
                else:
                    rate.decrease(accepted / MEASURE_SECONDS)
            else:
                # Over the whole window, not since the first answer: a limiter
                # with a 10 s window lets a first burst of 10 s worth through.
                rate.decrease(self._accepted_of(i) / MEASURE_SECONDS)

    def _accepted_of(self, i: int) -> float:
        return len(self._accepted) if i == 0 else sum(t for _, t in self._accepted)


def _short(
    estimates: tuple[WindowEstimate, WindowEstimate], now: float, tokens: int
) -> list[WindowEstimate]:
    """The windows whose credit a request of *tokens* does not fit."""
    short = []
    for estimate, cost in zip(estimates, (1, tokens), strict=True):
        credit = estimate.credit(now)
        size = estimate.size
        # A request larger than the whole window goes anyway: waiting would
        # not make it fit, and the service's answer says so.
        if credit is not None and credit < cost and not (size and cost > size):
            short.append(estimate)
    return short


def _has_remaining(limits: RateLimits) -> bool:
    return limits.remaining_requests is not None or limits.remaining_tokens is not None
