"""
What an answer's headers say: the deployment's rate limits, the wait the service
asked for, and whether its status is worth another try. Pure functions of the
wire format, shared by the client (which reads them) and the pacer and retry
policy (which act on them).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping

from batchrunner.records import RateLimits

#: HTTP statuses worth another try: timeouts, throttling and server faults.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable_status(status_code: int | None) -> bool:
    """Whether a failure with *status_code* may succeed when sent again."""
    return status_code in RETRYABLE_STATUSES


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """
    The wait the service asked for, in seconds: ``retry-after-ms`` first, then
    ``retry-after`` in seconds or as an HTTP date. None when it asked for none.
    """
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


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """The ``x-ratelimit-*`` headers of an answer, or None when there are none."""
    limits = RateLimits(
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
    )
    return None if limits == RateLimits() else limits
