"""
Client-side pacing to the deployment's quota: requests and tokens per minute.

Azure enforces its limits over short windows (1–10 s), so bursts that a per-minute
bucket would allow still get 429s. The pacer spaces requests evenly instead, with
the generic cell rate algorithm (GCRA): each request moves a "theoretical arrival
time" forward by its cost divided by the rate, and may go once the clock reaches
it. A 429 pauses everybody, so one throttled answer does not become a hundred.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

#: Pace a little under the budget: the service's window and ours never line up
#: exactly, and a 429 costs far more than 2% of throughput.
HEADROOM = 0.98


class Pacer:
    """
    Spaces requests to stay within *rpm* requests and *tpm* tokens per minute.

    Either budget may be None (unlimited). *clock* and *sleep* are injectable.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._request_interval = 60.0 / (rpm * HEADROOM) if rpm else 0.0
        self._token_interval = 60.0 / (tpm * HEADROOM) if tpm else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next_request = 0.0
        self._next_token = 0.0
        self._paused_until = 0.0

    @property
    def limited(self) -> bool:
        """Whether any budget is set."""
        return bool(self._request_interval or self._token_interval)

    def reserve(self, tokens: int) -> float:
        """Book a request of *tokens*; return how long to wait before sending it."""
        now = self._clock()
        start = max(now, self._next_request, self._next_token, self._paused_until)
        if self._request_interval:
            self._next_request = start + self._request_interval
        if self._token_interval:
            self._next_token = start + max(tokens, 1) * self._token_interval
        return start - now

    def pause(self, seconds: float) -> None:
        """Hold every new request for *seconds* (the service asked us to wait)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, tokens: int) -> None:
        """Wait until a request of *tokens* may be sent."""
        delay = self.reserve(tokens)
        if delay > 0:
            await self._sleep(delay)
        # A pause may have begun while we slept; honour it too.
        while (left := self._paused_until - self._clock()) > 0:
            await self._sleep(left)
