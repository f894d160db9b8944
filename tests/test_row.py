"""
One row's way through the pool, with a scripted completer: its retries (the
first attempt goes without a retrier, and the retrier that takes over after a
failure behaves as if it had sent that attempt itself), a stop cutting a retry's
wait short, and the row's side of token auth (a 401 hook, and a token provider
that gives up); and, end to end, a 429 asking for hours stopping the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from batchrunner.cli import run
from batchrunner.config.settings import Settings
from batchrunner.errors import EXIT_AUTH, ApiFailure, AuthError, GaveUp
from batchrunner.records import Api, Request, RowResult
from batchrunner.report.summary import RunStats
from batchrunner.send.pool import Pool, online_pool
from batchrunner.simulator import SimulatorServer
from tests.fakes import OK, ScriptedCompleter
from tests.test_cli import prompts, read_jsonl, write_jsonl


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


def unauthorized() -> ApiFailure:
    """The failure the client makes of an Entra ID 401."""
    return ApiFailure(
        kind="AuthenticationError", message="token refused", status_code=401
    )


class Hook:
    """An on_unauthorized hook that answers *answer* and counts its calls."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.answer


async def run_rows(
    completer: ScriptedCompleter, rows: int, hook: Hook | None
) -> tuple[Pool, list[RowResult]]:
    """Run *rows* requests through a one-worker pool with no back-off waits."""
    written: list[RowResult] = []

    def write(results: Sequence[RowResult]) -> None:
        written.extend(results)

    async def no_wait(seconds: float) -> None:
        return None

    settings = Settings(deployment="d", concurrency=1)
    pool = online_pool(
        completer,
        settings,
        write=write,
        stats=RunStats(rows_planned=rows),
        sleep=no_wait,
        on_unauthorized=hook,
    )
    requests = [Request(f"r{i}", Api.CHAT, {"messages": []}, 1, 1) for i in range(rows)]
    await pool.run(requests)
    return pool, written


async def test_a_401_with_a_new_token_retries_the_row() -> None:
    """The hook says a new token is in place: the row is sent again and succeeds."""
    hook = Hook(answer=True)
    pool, written = await run_rows(ScriptedCompleter([unauthorized()]), 3, hook)
    assert hook.calls == 1
    assert pool.control.exit_code is None
    assert [(r.status, r.attempts) for r in written] == [
        ("ok", 2),
        ("ok", 1),
        ("ok", 1),
    ]


FORBIDDEN = ApiFailure(kind="PermissionDeniedError", message="no", status_code=403)


@pytest.mark.parametrize(
    ("answer", "script", "rows", "hook_calls", "sent"),
    [
        # The fresh token is refused too: exit 3, without asking the hook again.
        pytest.param(
            True, [unauthorized(), unauthorized()], 3, 1, None,
            id="a-second-401-for-the-same-row",
        ),
        # The hook cannot get a new token: exit 3 at the first 401.
        pytest.param(
            False, [unauthorized()], 5, None, 1, id="no-new-token-after-a-401"
        ),
        # API keys cannot be refreshed: the first 401 ends the run as before.
        pytest.param(
            None, [unauthorized()], 5, None, None, id="a-401-without-a-hook"
        ),
        # A missing role is a 403: the run stops without a refresh.
        pytest.param(
            True, [FORBIDDEN], 3, 0, None, id="a-403-is-not-helped-by-a-new-token"
        ),
    ],
)  # fmt: skip
async def test_a_refusal_a_new_token_does_not_cure_stops_the_run(
    answer: bool | None,
    script: list[BaseException | None],
    rows: int,
    hook_calls: int | None,
    sent: int | None,
) -> None:
    """A 401 or 403 that no new token cures ends the run with exit 3."""
    hook = None if answer is None else Hook(answer=answer)
    completer = ScriptedCompleter(script)
    pool, _ = await run_rows(completer, rows, hook)
    if hook_calls is not None:
        assert hook is not None and hook.calls == hook_calls
    assert pool.control.exit_code == EXIT_AUTH
    if sent is not None:
        assert completer.sent == sent


async def test_no_token_at_all_stops_the_run_leaving_the_row_unsent() -> None:
    """The provider raising AuthError stops the run; the row gets no record."""
    completer = ScriptedCompleter([AuthError("no Entra ID token (x)")])
    pool, written = await run_rows(completer, 3, Hook(answer=True))
    assert pool.control.exit_code == EXIT_AUTH
    assert pool.control.reason == "no Entra ID token (x)"
    assert written == []


def test_exhausted_quota_stops_with_75_without_failing_rows(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 429 asking for hours stops the run (75); the row is not burnt as failed."""
    rows = [{"id": "daily", "prompt": "x [[sim:429long]]"}, *prompts(30)]
    source = write_jsonl(tmp_path / "q.jsonl", rows)
    assert run([str(source), "--concurrency", "1"]) == 75
    _, err = capsys.readouterr()
    assert "Re-run after" in err
    records = read_jsonl(tmp_path / "q.results.jsonl")
    assert all(r["status"] == "ok" for r in records)
    assert "daily" not in {r["id"] for r in records}
    assert azure_env.ledger.count(429) == 1
    assert run([str(source)]) == 0
    assert "daily" in {r["id"] for r in read_jsonl(tmp_path / "q.results.jsonl")}
