"""
What an answer's headers say: the deployment's rate limits, the wait the service
asked for, and whether its status is worth another try. Pure functions of the
wire format, shared by the client (which reads them) and the pacer and retry
policy (which act on them).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Mapping

from batchrunner.records import RateLimits

#: HTTP statuses worth another try: timeouts, throttling and server faults.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable_status(status_code: int | None) -> bool:
    """Whether a failure with *status_code* may succeed when sent again."""
    return status_code in RETRYABLE_STATUSES


def parse_retry_after(
    headers: Mapping[str, str],
    now: Callable[[], float] = time.time,
    *,
    throttled: bool = False,
) -> float | None:
    """
    The wait the service asked for, in seconds: ``retry-after-ms`` first, then
    ``retry-after`` in seconds or as an HTTP date. None when it asked for none.
    A 429 (*throttled*) without either waits for the limit's reset, where the
    service reports one: some have answered 429s with nothing else.
    """
    wait = _retry_after(headers, now)
    if wait is None and throttled:
        limits = parse_rate_limits(headers)
        wait = None if limits is None else limits.reset
    return wait


def _retry_after(headers: Mapping[str, str], now: Callable[[], float]) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - now())


def _int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


#: A duration as OpenAI writes its resets: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|ms|m|s))")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str | None) -> float | None:
    """Seconds from a reset header: a plain number of seconds, or "6m0s"-style."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """The ``x-ratelimit-*`` headers of an answer, or None when there are none."""
    reset_tokens = headers.get("x-ratelimit-reset-tokens")
    if reset_tokens is None:
        # Seen on Azure 429s with that extra dash (openai-python issue #937).
        reset_tokens = headers.get("x-rate-limit-reset-tokens")
    limits = RateLimits(
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        reset_tokens=parse_duration(reset_tokens),
    )
    return None if limits == RateLimits() else limits
