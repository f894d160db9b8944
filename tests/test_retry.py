"""The retry policy's waits: full-jitter back-off, and the service's own wait."""

from __future__ import annotations

from batchrunner.errors import ApiFailure
from batchrunner.send.retry import (
    RetryPolicy,
    backoff_seconds,
    wait_after,
)


def test_backoff_is_full_jitter_and_capped() -> None:
    """The wait is uniform below a cap that doubles, up to max_backoff."""
    policy = RetryPolicy(base_backoff=0.5, max_backoff=4.0)
    assert backoff_seconds(1, policy, lambda: 1.0) == 0.5
    assert backoff_seconds(3, policy, lambda: 1.0) == 2.0
    assert backoff_seconds(10, policy, lambda: 1.0) == 4.0
    assert backoff_seconds(10, policy, lambda: 0.0) == 0.0


def test_server_wait_wins_over_backoff() -> None:
    """A failure carrying retry_after is waited for exactly."""
    failure = ApiFailure(
        kind="RateLimitError", message="x", status_code=429, retry_after=1.5
    )
    assert wait_after(failure, 5, RetryPolicy(), lambda: 1.0) == 1.5
    plain = ApiFailure(kind="InternalServerError", message="x", status_code=500)
    assert wait_after(plain, 1, RetryPolicy(base_backoff=0.5), lambda: 1.0) == 0.5
