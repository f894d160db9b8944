"""Azure's answer headers: what is retryable, the wait asked for, the rate limits."""

from __future__ import annotations

import pytest

from batchrunner.azure.headers import (
    is_retryable_status,
    parse_rate_limits,
    parse_retry_after,
)
from batchrunner.records import RateLimits


@pytest.mark.parametrize(
    ("status", "retry"),
    [(408, True), (429, True), (500, True), (502, True), (503, True),
     (504, True), (400, False), (401, False), (403, False), (404, False),
     (422, False), (409, False)],
)  # fmt: skip
def test_retryable_statuses(status: int, retry: bool) -> None:
    """Only timeouts, throttling and server faults are retried."""
    assert is_retryable_status(status) is retry


def test_retry_after_prefers_milliseconds() -> None:
    """retry-after-ms wins over retry-after; dates and junk are handled."""
    assert parse_retry_after({"retry-after-ms": "300", "retry-after": "1"}) == 0.3
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "junk"}) is None
    assert parse_retry_after({}) is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after({"retry-after": date}, now=lambda: 1445412480.0) == 10.0


def test_rate_limit_headers_parse() -> None:
    """x-ratelimit-* headers become RateLimits; rpm is 6 × the 10-second limit."""
    limits = parse_rate_limits(
        {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "49",
         "x-ratelimit-limit-tokens": "50000", "x-ratelimit-remaining-tokens": "49000"}
    )  # fmt: skip
    assert limits == RateLimits(50, 49, 50000, 49000)
    assert limits.rpm == 300
    assert parse_rate_limits({}) is None
