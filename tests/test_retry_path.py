"""
The pool's retries, with a scripted completer: the first attempt goes without a
retrier, and the retrier that takes over after a failure behaves as if it had
sent that attempt itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio.lowlevel
import pytest

from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure, GaveUp
from batchrunner.records import Api, Request, RowResult
from batchrunner.report.summary import RunStats
from batchrunner.send.pool import online_pool
from tests.fakes import OK, ScriptedCompleter


def _server_error(status: int = 500) -> ApiFailure:
    return ApiFailure(
        kind="InternalServerError",
        message=f"HTTP {status}",
        status_code=status,
        retryable=True,
        retry_after=0.25,
    )


BAD_REQUEST = ApiFailure(kind="BadRequestError", message="no", status_code=400)


async def _no_wait(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


async def _run(
    script: list[ApiFailure | str], max_attempts: int = 6
) -> tuple[RowResult, RunStats, ScriptedCompleter]:
    completer = ScriptedCompleter(script)
    settings = Settings(
        deployment="d", concurrency=1, max_attempts=max_attempts, rpm=1_000_000
    )
    results: list[RowResult] = []

    def write(batch: Sequence[RowResult]) -> None:
        results.extend(batch)

    stats = RunStats()
    pool = online_pool(completer, settings, write=write, stats=stats, sleep=_no_wait)
    request = Request(
        row_id="r1", api=Api.CHAT, body={}, prompt_tokens=0, charged_tokens=0
    )
    await pool.run([request])
    (result,) = results
    return result, stats, completer


def _retry_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[int, float]]:
    return [
        (r.__dict__["attempt"], r.__dict__["wait_s"])
        for r in caplog.records
        if r.__dict__.get("event") == "retry"
    ]


async def test_first_try_success_is_one_attempt() -> None:
    """A row answered at once is one request, one attempt, no retry."""
    result, stats, completer = await _run([OK])
    assert (result.status, result.attempts, result.request_id) == ("ok", 1, "req-1")
    assert (stats.requests, stats.retries, completer.sent) == (1, 0, 1)


async def test_retries_keep_attempt_numbers_and_service_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two failures then an answer: attempts 1 and 2 retried after the asked wait."""
    caplog.set_level(logging.INFO, logger="batchrunner")
    result, stats, _ = await _run([_server_error(), _server_error(503), OK])
    assert (result.status, result.attempts, result.request_id) == ("ok", 3, "req-3")
    assert (stats.requests, stats.retries) == (3, 2)
    assert _retry_logs(caplog) == [(1, 0.25), (2, 0.25)]


async def test_exhausted_attempts_record_the_last_failure() -> None:
    """Every attempt fails: the record has all attempts and the last failure."""
    script: list[ApiFailure | str] = [
        _server_error(500),
        _server_error(503),
        _server_error(502),
    ]
    result, stats, completer = await _run(script, max_attempts=3)
    assert (result.status, result.attempts) == ("error", 3)
    assert result.error is not None and result.error.status_code == 502
    assert (stats.requests, stats.retries, completer.sent) == (3, 2, 3)


@pytest.mark.parametrize(
    ("first", "max_attempts"), [(BAD_REQUEST, 6), (_server_error(), 1)]
)
async def test_failure_without_a_retry_is_final_at_once(
    first: ApiFailure, max_attempts: int
) -> None:
    """A non-retryable failure, or a retryable one with one attempt allowed, ends it."""
    result, stats, completer = await _run([first, OK], max_attempts=max_attempts)
    assert (result.status, result.attempts) == ("error", 1)
    assert result.error is not None and result.error.status_code == first.status_code
    assert (stats.requests, stats.retries, completer.sent) == (1, 0, 1)


async def test_a_stop_cuts_a_retry_wait_short_and_abandons_the_row() -> None:
    """A row waiting to retry does not hold up a stop; it gets no record."""
    completer = ScriptedCompleter([_server_error()])
    settings = Settings(deployment="d", concurrency=1, rpm=1_000_000)
    results: list[RowResult] = []

    async def wait_for_ever(seconds: float) -> None:
        await anyio.sleep_forever()

    pool = online_pool(
        completer, settings, write=results.extend, stats=RunStats(), sleep=wait_for_ever
    )
    request = Request(
        row_id="r1", api=Api.CHAT, body={}, prompt_tokens=0, charged_tokens=0
    )
    with anyio.fail_after(30):  # without the cut, the run would wait for ever
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run, [request])
            await anyio.wait_all_tasks_blocked()
            assert completer.sent == 1  # sent, failed, now waiting to retry
            pool.control.stop(GaveUp("stopping for the test"))
    assert results == []
    assert completer.sent == 1
