"""The pool's side of token auth: a 401 hook, and a token provider that gives up."""

from __future__ import annotations

from collections.abc import Sequence

from batchrunner.config.settings import Settings
from batchrunner.errors import EXIT_AUTH, ApiFailure, AuthError
from batchrunner.records import Api, Request, RowResult
from batchrunner.report.summary import RunStats
from batchrunner.send.pool import Pool, online_pool
from tests.fakes import ScriptedCompleter


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


async def test_a_second_401_for_the_same_row_stops_the_run() -> None:
    """The fresh token is refused too: exit 3, without asking the hook again."""
    hook = Hook(answer=True)
    script: list[BaseException | None] = [unauthorized(), unauthorized()]
    pool, _ = await run_rows(ScriptedCompleter(script), 3, hook)
    assert hook.calls == 1
    assert pool.control.exit_code == EXIT_AUTH


async def test_no_new_token_after_a_401_stops_the_run() -> None:
    """The hook cannot get a new token: exit 3 at the first 401."""
    hook = Hook(answer=False)
    completer = ScriptedCompleter([unauthorized()])
    pool, _ = await run_rows(completer, 5, hook)
    assert pool.control.exit_code == EXIT_AUTH
    assert completer.sent == 1


async def test_without_a_hook_a_401_stops_at_once() -> None:
    """API keys cannot be refreshed: the first 401 ends the run as before."""
    pool, _ = await run_rows(ScriptedCompleter([unauthorized()]), 5, None)
    assert pool.control.exit_code == EXIT_AUTH


async def test_a_403_is_not_helped_by_a_new_token() -> None:
    """A missing role is a 403: the run stops without a refresh."""
    hook = Hook(answer=True)
    forbidden = ApiFailure(kind="PermissionDeniedError", message="no", status_code=403)
    pool, _ = await run_rows(ScriptedCompleter([forbidden]), 3, hook)
    assert hook.calls == 0
    assert pool.control.exit_code == EXIT_AUTH


async def test_no_token_at_all_stops_the_run_leaving_the_row_unsent() -> None:
    """The provider raising AuthError stops the run; the row gets no record."""
    completer = ScriptedCompleter([AuthError("no Entra ID token (x)")])
    pool, written = await run_rows(completer, 3, Hook(answer=True))
    assert pool.control.exit_code == EXIT_AUTH
    assert pool.control.reason == "no Entra ID token (x)"
    assert written == []
