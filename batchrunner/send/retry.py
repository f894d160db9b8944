"""
The retry policy: which failures to retry, and how long to wait before the next try.

Retries have one owner: the SDK's own are off (``max_retries=0``) so that attempt
counts are honest. The service's ``retry-after-ms``/``retry-after`` wins over our
back-off; otherwise the wait is exponential with full jitter, capped.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from batchrunner.errors import ApiFailure


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many tries a row gets and how the waits between them grow."""

    max_attempts: int = 6
    #: First back-off cap in seconds; doubles with every attempt.
    base_backoff: float = 0.5
    max_backoff: float = 30.0


def backoff_seconds(
    attempt: int, policy: RetryPolicy, uniform: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential back-off after failed *attempt* (1-based)."""
    cap = min(policy.max_backoff, policy.base_backoff * 2.0 ** (attempt - 1))
    return uniform() * cap


def wait_after(
    failure: BaseException,
    attempt: int,
    policy: RetryPolicy,
    uniform: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after *failure*: the service's ask, else our back-off."""
    if isinstance(failure, ApiFailure) and failure.retry_after:
        return float(failure.retry_after)
    return backoff_seconds(attempt, policy, uniform)


def _should_retry(exc: BaseException) -> bool:
    return isinstance(exc, ApiFailure) and exc.retryable


def retrying(
    policy: RetryPolicy,
    *,
    before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> AsyncRetrying:
    """A tenacity retrier for one row; *sleep* is injectable so tests need not wait."""

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        if failure is None:
            return 0.0
        return wait_after(failure, state.attempt_number, policy)

    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        retry=retry_if_exception(_should_retry),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
