"""The deployment's rate limits: one sliding window of requests and tokens."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from batchrunner.simulator.config import SimConfig


class _Limiter:
    """A sliding window of (time, tokens) charges, read against the live config."""

    def __init__(self) -> None:
        # The test thread resets it while the server thread charges it.
        self._lock = threading.Lock()
        self._charges: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def reset(self) -> None:
        with self._lock:
            self._charges.clear()
            self._tokens = 0

    def _evict(self, now: float, window: float) -> None:
        while self._charges and self._charges[0][0] <= now - window:
            self._tokens -= self._charges.popleft()[1]

    def charge(self, config: SimConfig, tokens: int) -> tuple[str, float] | None:
        """Charge a request, or refuse it: ("call"|"token", seconds until it fits)."""
        if config.rpm is None and config.tpm is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._evict(now, config.window)
            refusal = self._over_requests(config, now) or self._over_tokens(
                config, tokens, now
            )
            if refusal is None:
                self._charges.append((now, tokens))
                self._tokens += tokens
            return refusal

    def _over_requests(self, config: SimConfig, now: float) -> tuple[str, float] | None:
        excess = len(self._charges) + 1 - _request_limit(config)
        if config.rpm is None or excess <= 0:
            return None
        return "call", self._charges[excess - 1][0] + config.window - now

    def _over_tokens(
        self, config: SimConfig, tokens: int, now: float
    ) -> tuple[str, float] | None:
        limit = _token_limit(config)
        if config.tpm is None or self._tokens + tokens <= limit:
            return None
        # What is left after the oldest charges expire, one by one.
        left = self._tokens
        for at, charged in self._charges:
            left -= charged
            if left + tokens <= limit:
                return "token", at + config.window - now
        # Larger than a whole window: it never fits, so ask for a full window.
        return "token", config.window

    def headers(self, config: SimConfig) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers of the limits that are set."""
        headers: dict[str, str] = {}
        mode = config.header_mode
        if (config.rpm is None and config.tpm is None) or mode == "none":
            return headers
        full = mode == "full"
        with self._lock:
            self._evict(time.monotonic(), config.window)
            requests, tokens = len(self._charges), self._tokens
        if config.rpm is not None:
            limit = _request_limit(config)
            if full:
                headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit - requests))
        if config.tpm is not None:
            left = max(0, math.floor(_token_limit(config) - tokens))
            if full:
                headers["x-ratelimit-limit-tokens"] = str(config.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(left)
        return headers


def _request_limit(config: SimConfig) -> int:
    return max(1, math.floor((config.rpm or 0) * config.window / 60 + 0.5))


def _token_limit(config: SimConfig) -> float:
    return (config.tpm or 0) * config.window / 60
