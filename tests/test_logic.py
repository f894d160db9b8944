"""The small pure pieces: retry waits, pacing, planning, summary."""

from __future__ import annotations

import anyio
import pytest

from batchrunner.azure.headers import (
    is_retryable_status,
    parse_rate_limits,
    parse_retry_after,
)
from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure, QuotaExceeded
from batchrunner.prepare.plan import select, shard_of
from batchrunner.records import RateLimits, Reply, Row, RowResult, Usage
from batchrunner.report.summary import RunStats, percentile
from batchrunner.send.pacer import (
    DECREASE,
    HEADROOM,
    RECOVERY_SECONDS,
    SLOW_START_DOUBLINGS_PER_SECOND,
    SLOW_START_RATE,
    Pacer,
)
from batchrunner.send.retry import (
    RetryPolicy,
    backoff_seconds,
    wait_after,
)
from tests.fakes import FakeClock


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


def test_pacer_spaces_requests_to_the_rpm() -> None:
    """At 60 rpm (less headroom) requests go about one a second, not in a burst."""
    clock = FakeClock()
    pacer = Pacer(rpm=60, clock=clock)
    delays = [pacer.reserve(1) for _ in range(4)]
    step = 1 / HEADROOM
    assert delays == pytest.approx([0, step, 2 * step, 3 * step])


def test_pacer_charges_tokens() -> None:
    """A request's token cost decides how long the next one waits."""
    clock = FakeClock()
    pacer = Pacer(tpm=6000, clock=clock)
    assert pacer.reserve(1000) == 0
    assert pacer.reserve(10) == pytest.approx(10 / HEADROOM)


def test_pacer_pause_holds_everyone() -> None:
    """A pause delays every following request, limited or not."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    assert not pacer.limited
    pacer.pause(2.5)
    assert pacer.reserve(1) == 2.5
    clock.now = 3.0
    assert pacer.reserve(1) == 0


def test_shards_split_every_row_exactly_once() -> None:
    """Each id lands in exactly one of N shards, stably."""
    rows = [Row(id=f"r{i}", line=i, fields={}) for i in range(300)]
    shards = [list(select(rows, shard=(i, 3))) for i in range(3)]
    ids = sorted(r.id for shard in shards for r in shard)
    assert ids == sorted(r.id for r in rows)
    assert all(shards)
    assert shard_of("r7", 3) == shard_of("r7", 3)


def test_limit_counts_rows_before_skipping_done() -> None:
    """--limit names the same first rows on every re-run."""
    rows = [Row(id=str(i), line=i, fields={}) for i in range(1, 11)]
    chosen = [r.id for r in select(rows, limit=3, done={"1", "2"})]
    assert chosen == ["3"]


def test_summary_counts_tokens_cost_and_latency() -> None:
    """Rows fold into totals, cost by the reported model and percentiles."""
    settings = Settings()
    stats = RunStats(rows_planned=2)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    reply = Reply(
        output="x", embedding=None, finish_reason="stop", usage=usage,
        model="gpt-4o-mini-2024-07-18", request_id="r", latency_ms=10,
    )  # fmt: skip
    for i in range(2):
        stats.add(
            RowResult(id=str(i), status="ok", reply=reply, error=None, attempts=1,
                      latency_ms=10 * (i + 1), request_id="r"),
            settings,
        )  # fmt: skip
    summary = stats.as_dict(elapsed=2.0)
    assert summary["rows_ok"] == 2
    assert summary["tokens"]["total"] == 3000
    assert summary["estimated_cost_usd"] == pytest.approx(
        2 * (1000 * 0.15 + 500 * 0.6) / 1e6
    )
    assert summary["latency_ms"] == {"p50": 10, "p95": 20}
    assert summary["rows_per_second"] == 1.0
    assert percentile([], 0.5) is None


async def test_adaptive_pacer_sends_one_probe_until_the_first_answer() -> None:
    """With no budget, a second request waits for the first answer's headers."""
    from anyio import wait_all_tasks_blocked
    from anyio.lowlevel import checkpoint

    pacer = Pacer()
    await pacer.acquire(10)  # the probe goes at once
    done: list[int] = []

    async def second() -> None:
        await pacer.acquire(10)
        done.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await wait_all_tasks_blocked()
        assert done == []
        pacer.observe(RateLimits(limit_tokens=60_000, limit_requests=100))
        await checkpoint()
    assert done == [1]
    requests, tokens = pacer.budgets
    assert tokens == pytest.approx(60_000 * HEADROOM)
    assert requests == pytest.approx(600 * HEADROOM)


def test_token_limit_is_the_quota_given_or_learned() -> None:
    """The whole per-minute quota, which no single request may exceed."""
    assert Pacer(tpm=1000).token_limit() == pytest.approx(1000)
    learning = Pacer()
    assert learning.token_limit() is None
    learning.observe(RateLimits(limit_tokens=600))
    assert learning.token_limit() == pytest.approx(600)


async def test_pacer_refuses_a_request_over_a_whole_minute_of_quota() -> None:
    """A request costing more than a whole minute of quota raises QuotaExceeded."""
    pacer = Pacer(tpm=1000, adaptive=False)
    with pytest.raises(QuotaExceeded):
        await pacer.acquire(1001)
    await pacer.acquire(1000)


def test_the_probe_counts_against_the_budget_it_taught() -> None:
    """What went out before the budget was known is charged once it is."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    assert pacer.reserve(1000) == 0  # the probe, budget unknown
    pacer.observe(RateLimits(limit_tokens=60_000))  # 1,000 tokens a second
    # The probe's 1,000 tokens take the first second of the budget.
    assert pacer.reserve(10) == pytest.approx(1 / HEADROOM)


def test_given_budget_is_not_overridden_by_headers() -> None:
    """--tpm stays what the user said, whatever the service reports."""
    pacer = Pacer(tpm=1000)
    pacer.observe(RateLimits(limit_tokens=50_000))
    assert pacer.budgets[1] == pytest.approx(1000 * HEADROOM)


def test_aimd_cuts_to_a_share_of_what_got_through_then_grows_back() -> None:
    """A 429 with no known budget cuts the rate to DECREASE × what got through."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    pacer.observe(None)  # an answer without rate-limit headers
    for second in range(10):
        clock.now = float(second)
        pacer.reserve(100)
        pacer.observe(None, accepted_tokens=100)  # 100 tokens a second got through
    clock.now = 10.0
    pacer.throttled(1.0)
    assert pacer.budgets[1] == pytest.approx(DECREASE * 100 * 60, rel=0.02)
    clock.now = 11.0
    assert pacer.reserve(100) == pytest.approx(0.0)  # the pause is over
    clock.now = 40.0
    pacer.reserve(1)
    # Growth is linear: back to 100 tokens/s after RECOVERY_SECONDS.
    assert pacer.budgets[1] == pytest.approx(
        6000 * (DECREASE + (1 - DECREASE) * 30 / RECOVERY_SECONDS), rel=0.02
    )


def test_rate_limit_headers_parse() -> None:
    """x-ratelimit-* headers become RateLimits; rpm is 6 × the 10-second limit."""
    limits = parse_rate_limits(
        {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "49",
         "x-ratelimit-limit-tokens": "50000", "x-ratelimit-remaining-tokens": "49000"}
    )  # fmt: skip
    assert limits == RateLimits(50, 49, 50000, 49000)
    assert limits.rpm == 300
    assert parse_rate_limits({}) is None


def test_slow_start_doubles_until_the_first_429() -> None:
    """With no budget and no headers, the request rate starts low and doubles."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    pacer.observe(None)
    assert pacer.budgets[0] == pytest.approx(SLOW_START_RATE * 60)
    clock.now = 2 / SLOW_START_DOUBLINGS_PER_SECOND  # two doublings
    pacer.reserve(1)
    assert pacer.budgets[0] == pytest.approx(SLOW_START_RATE * 4 * 60)
    pacer.throttled(0.5)
    assert pacer.budgets[0] is not None
    assert pacer.budgets[0] < SLOW_START_RATE * 4 * 60
