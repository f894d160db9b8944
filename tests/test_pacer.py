"""The pacer: given budgets, budgets learned from headers, slow start and AIMD."""

from __future__ import annotations

import anyio
import pytest

from batchrunner.errors import QuotaExceeded
from batchrunner.records import RateLimits
from batchrunner.send.pacer import (
    DECREASE,
    HEADROOM,
    INITIAL_WINDOW,
    RECOVERY_SECONDS,
    SLACK_SECONDS,
    Pacer,
)
from tests.fakes import FakeClock


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


async def test_adaptive_pacer_sends_one_probe_until_the_first_answer() -> None:
    """With no budget, a request past the initial window waits for an answer."""
    from anyio import wait_all_tasks_blocked
    from anyio.lowlevel import checkpoint

    pacer = Pacer()
    for _ in range(INITIAL_WINDOW):
        await pacer.acquire(10)  # the initial window goes at once
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


async def test_pacer_takes_a_slot_within_the_slack_without_sleeping() -> None:
    """A slot within SLACK_SECONDS is taken at once; a later one is slept for."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    now = [0.0]
    # 60k requests a minute: slots a millisecond apart (less headroom).
    pacer = Pacer(rpm=60_000, adaptive=False, clock=lambda: now[0], sleep=sleep)
    await pacer.acquire(1)
    await pacer.acquire(1)  # ~1.03 ms ahead: over the slack, so it sleeps
    assert slept == [pytest.approx(1 / 1000 / 0.97)]
    slept.clear()
    now[0] += 1.0
    fast = Pacer(rpm=600_000, adaptive=False, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):  # 0.1 ms apart: inside the slack
        await fast.acquire(1)
    assert slept == []
    assert SLACK_SECONDS < 1 / 1000 / 0.97
