"""
The retry policy: which failures to retry, and how long to wait before the next try.

Retries have one owner: the SDK's own are off (``max_retries=0``) so that attempt
counts are honest. The service's ``retry-after-ms``/``retry-after`` wins over our
back-off; otherwise the wait is exponential with full jitter, capped.
"""

from __future__ import annotations

import logging
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
from batchrunner.report.summary import error_kind

log = logging.getLogger("batchrunner")


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


def log_retry(state: RetryCallState) -> None:
    """Say which failure a row's retry follows, and how long it waits first."""
    outcome = state.outcome
    failure = outcome.exception() if outcome is not None else None
    if isinstance(failure, ApiFailure) and log.isEnabledFor(logging.INFO):
        wait = state.upcoming_sleep
        log.info(
            "retrying in %.2fs after %s: %s",
            wait,
            error_kind(failure.status_code, failure.code, failure.kind),
            failure.message,
            extra={
                "event": "retry",
                "attempt": state.attempt_number,
                "wait_s": round(wait, 3),
                "status_code": failure.status_code,
            },
        )
