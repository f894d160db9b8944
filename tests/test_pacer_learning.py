"""What the pacer learns from each signal an answer carries (injected clock)."""

from __future__ import annotations

import math

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from batchrunner.azure.headers import (
    parse_duration,
    parse_rate_limits,
    parse_retry_after,
)
from batchrunner.records import RateLimits
from batchrunner.send.gcra import HEADROOM
from batchrunner.send.learning import SLOW_START_GROWTH
from batchrunner.send.pacer import CORRECTION, INITIAL_WINDOW, Pacer, Turn
from batchrunner.send.window import WindowEstimate
from tests.fakes import FakeClock


async def _no_sleep(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


async def _turns(pacer: Pacer, n: int, tokens: int = 10) -> list[Turn]:
    return [await pacer.acquire(tokens) for _ in range(n)]


async def test_nothing_known_lets_the_initial_window_go_at_once() -> None:
    """Before any answer, INITIAL_WINDOW requests go together; the next one waits."""
    pacer = Pacer()
    await _turns(pacer, INITIAL_WINDOW)
    waited: list[int] = []

    async def one_more() -> None:
        (await pacer.acquire(10)).release()
        waited.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_more)
        await wait_all_tasks_blocked()
        assert waited == []
        answers = math.ceil(1 / SLOW_START_GROWTH)
        for _ in range(answers):
            pacer.observe(None)  # answers: the window grows by one place
    assert waited == [1]
    assert pacer.window == pytest.approx(INITIAL_WINDOW + answers * SLOW_START_GROWTH)


async def test_slow_start_grows_the_window_every_round_trip() -> None:
    """With no headers, each answer adds to the window: × (1 + growth) a round trip."""
    pacer = Pacer()
    window: float = INITIAL_WINDOW
    for _ in range(3):
        turns = await _turns(pacer, int(window))
        for turn in turns:
            pacer.observe(None, accepted_tokens=10)
            turn.release()
        window += int(window) * SLOW_START_GROWTH
        assert pacer.window == pytest.approx(window)


async def test_the_window_stops_growing_when_it_is_not_what_holds_us_back() -> None:
    """Answers while most of the window is unused do not grow it past the need."""
    pacer = Pacer()
    for _ in range(50):  # one request at a time, as with a concurrency of 1
        turn = await pacer.acquire(10)
        pacer.observe(None, accepted_tokens=10)
        turn.release()
    assert pacer.window == INITIAL_WINDOW


async def test_limit_headers_open_the_window_to_the_budget() -> None:
    """Limit headers replace the window with the reported budget."""
    pacer = Pacer()
    turn = await pacer.acquire(10)
    pacer.observe(RateLimits(limit_requests=100, limit_tokens=60_000))
    turn.release()
    assert pacer.window is None
    assert pacer.budgets == pytest.approx((600 * HEADROOM, 60_000 * HEADROOM))


async def test_a_remaining_far_above_the_need_means_no_pacing() -> None:
    """Remaining-only headers with room for far more than we send pace nothing."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=_no_sleep)
    for i in range(200):
        turn = await pacer.acquire(100)
        pacer.observe(
            RateLimits(remaining_requests=1_000_000 - i, remaining_tokens=10**9)
        )
        turn.release()
        clock.now += 0.001
    assert pacer.window is None
    assert pacer.budgets == (None, None)
    assert pacer.reserve(100) == 0


def test_remaining_plus_what_we_sent_is_the_window_size() -> None:
    """While nothing left the window, remaining + sent stays put: the window's size."""
    window = WindowEstimate()
    for i in range(10):
        window.sent(i * 0.1, 100)
        window.report(i * 0.1 + 0.05, 5000 - 100 * (i + 1))
    assert window.size == 5000
    assert window.seconds is None
    assert window.credit(1.0) == pytest.approx(4000)


def test_the_window_length_is_when_our_first_sends_come_back() -> None:
    """Remaining growing back by what we sent first gives the window's length."""
    window = WindowEstimate()
    for i in range(20):  # 20 × 100 sent in the first second of a 6 s window
        window.sent(i * 0.05, 100)
    window.report(1.0, 3000)  # 5,000 in the window, 2,000 of it ours
    assert window.size == 5000
    # At 6.5 s the sends of the first 0.5 s (1,000) have left the window: the
    # length is read a send earlier (counts differ), so never too short.
    assert window.report(6.5, 4000)
    assert window.seconds == pytest.approx(6.5 - 0.40)
    assert window.rate == pytest.approx(5000 / 6.10)


def test_a_429s_wait_bounds_the_window_length() -> None:
    """A 429 asking for a wait says our first send fits again then."""
    window = WindowEstimate()
    window.sent(2.0, 100)
    assert window.throttled(3.0, 5.0)
    assert window.seconds == pytest.approx(6.0)
    assert not window.throttled(4.0, 1.0)  # learned once


async def test_remaining_only_learns_a_budget_from_the_window() -> None:
    """Remaining-only headers become a per-minute budget once the window is seen."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=_no_sleep)
    remaining = 6000
    for _ in range(20):
        turn = await pacer.acquire(300)
        remaining -= 300
        pacer.observe(RateLimits(remaining_tokens=remaining))
        turn.release()
        clock.now += 0.01
    assert pacer.budgets == (None, None)  # a credit, no rate yet
    clock.now = 6.1  # the window (6 s) has shed the first sends
    turn = await pacer.acquire(300)
    pacer.observe(RateLimits(remaining_tokens=6000 - 300))
    turn.release()
    tokens = pacer.budgets[1]
    assert tokens is not None
    assert tokens == pytest.approx(6000 / 6.1 * 60 * HEADROOM, rel=0.05)


async def test_a_spent_credit_holds_requests_until_an_answer() -> None:
    """With remaining-only headers, a request that does not fit the credit waits."""
    pacer = Pacer()
    turn = await pacer.acquire(300)
    pacer.observe(RateLimits(remaining_tokens=100))  # 100 left: 300 does not fit
    waited: list[int] = []

    async def second() -> None:
        (await pacer.acquire(300)).release()
        waited.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await wait_all_tasks_blocked()
        assert waited == []
        pacer.observe(RateLimits(remaining_tokens=5000))
        turn.release()
    assert waited == [1]


async def test_the_first_429_without_headers_gives_the_rate() -> None:
    """What got through before the first 429, over its wait, is the rate to pace to."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=_no_sleep)
    for _ in range(4):  # 4 × 250 tokens accepted in the first 0.4 s
        turn = await pacer.acquire(250)
        clock.now += 0.1
        pacer.observe(None, accepted_tokens=250)
        turn.release()
    pacer.throttled(5.6, sent_at=clock.now)  # fits again at 6 s from the first send
    assert pacer.window is None
    assert pacer.budgets[1] == pytest.approx(1000 / 6.0 * 60 * HEADROOM)


async def test_429s_lower_a_given_budget_and_headers_do_not_raise_it() -> None:
    """A service that counts more than we do lowers a given budget, once per burst."""
    clock = FakeClock()
    pacer = Pacer(tpm=60_000, rpm=600, clock=clock)
    clock.now = 1.0
    pacer.throttled(1.0, sent_at=0.5)
    pacer.throttled(1.0, sent_at=0.5)  # same burst: learned once
    assert pacer.budgets[1] == pytest.approx(60_000 * HEADROOM * CORRECTION)
    pacer.observe(RateLimits(limit_tokens=100_000))
    assert pacer.budgets[1] == pytest.approx(60_000 * HEADROOM * CORRECTION)
    clock.now = 5.0
    pacer.throttled(1.0, sent_at=4.0)  # a later burst: learned again
    assert pacer.budgets[1] == pytest.approx(60_000 * HEADROOM * CORRECTION**2)
    assert pacer.token_limit() == pytest.approx(60_000)  # still the quota named


async def test_429s_against_reported_limits_scale_them_for_good() -> None:
    """Limits read from headers are scaled by what 429s taught, answer after answer."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    pacer.observe(RateLimits(limit_tokens=60_000, limit_requests=100))
    pacer.throttled(1.0, sent_at=0.0)
    pacer.observe(RateLimits(limit_tokens=60_000, limit_requests=100))
    assert pacer.budgets[1] == pytest.approx(60_000 * HEADROOM * CORRECTION)


def test_reset_headers_parse_in_each_spelling() -> None:
    """Seconds, OpenAI's "6m0s" durations and the misspelt x-rate-limit- header."""
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None
    assert parse_duration("1sx") is None
    limits = parse_rate_limits(
        {"x-ratelimit-reset-requests": "1s", "x-rate-limit-reset-tokens": "59"}
    )
    assert limits == RateLimits(reset_requests=1.0, reset_tokens=59.0)
    assert limits.reset == 59.0


def test_a_429_without_retry_after_waits_for_the_reset() -> None:
    """A 429 that only names its reset waits for it; other answers do not."""
    headers = {"x-rate-limit-reset-tokens": "7"}
    assert parse_retry_after(headers, throttled=True) == 7.0
    assert parse_retry_after(headers) is None
    both = {"retry-after-ms": "300", "x-ratelimit-reset-tokens": "7s"}
    assert parse_retry_after(both, throttled=True) == 0.3


def test_a_refused_send_is_taken_out_of_the_window_from_its_send_on() -> None:
    """
    A large row sent with short ones, refused: the reports heard before its 429
    passed it for a huge window; its refusal takes it out of them.
    """
    window = WindowEstimate()
    window.sent(0.0, 20_000)  # over the whole window: refused, uncounted
    for _ in range(3):
        window.sent(0.0, 10)
    window.report(0.01, 170, sent_at=0.0)  # the service counted our 30
    assert window.size == pytest.approx(20_200)  # the long one still looks counted
    window.refused(20_000, sent_at=0.0)
    assert window.size == pytest.approx(200)
    assert window.credit(0.02) == pytest.approx(170)
    window.sent(0.03, 10)
    assert window.credit(0.04) == pytest.approx(160)


def test_a_send_larger_than_the_window_does_not_pass_for_sends_leaving_it() -> None:
    """
    The same row tried again once the window is known, and a short one answered
    before its 429 is heard: no window as short as a round trip is learned.
    """
    window = WindowEstimate()
    window.sent(0.0, 10)
    window.report(0.01, 190, sent_at=0.0)
    assert window.throttled(0.01, 2.0)  # a 429's wait: at most 2.01 s
    window.sent(2.02, 20_000)
    window.sent(2.02, 10)
    assert not window.report(2.03, 190, sent_at=2.02)  # before the 429 is heard
    assert window.seconds == pytest.approx(2.01)
    window.refused(20_000, sent_at=2.02)
    assert window.size == pytest.approx(200)
    assert window.credit(2.04) == pytest.approx(190)


def test_a_window_found_empty_is_as_long_as_since_our_last_counted_send() -> None:
    """
    Remaining back to the full window (and a little over, the counts differ):
    everything we sent before left, the last counted one too, and a refused
    probe sent since is no send of ours that left.
    """
    window = WindowEstimate()
    for i in range(27):
        window.sent(i * 0.01, 222)
    window.report(0.5, 6, sent_at=0.26)  # 6,000 in the window: 5,994 of it ours
    window.sent(1.57, 222)  # a probe, refused
    window.refused(222, sent_at=1.57)
    window.sent(6.21, 222)
    assert window.report(6.42, 5790, sent_at=6.21)  # 5,790 + 222 > 6,000
    assert window.seconds == pytest.approx(6.42 - 0.26)


def test_a_service_counting_less_than_we_do_is_no_window_emptying() -> None:
    """
    Our count 7% over the service's: remaining + what we sent grows as we send
    in a first window, and is no sign that our first sends left it.
    """
    window = WindowEstimate()
    size, ours, theirs = 7000, 100, 93
    for i in range(4):
        window.sent(i * 0.001, ours)
    window.report(0.2, size - 4 * theirs, sent_at=0.0)
    for i in range(4, 74):  # 6,882 of the 7,000 the service lets through
        window.sent(i * 0.01, ours)
        remaining = size - (i + 1) * theirs
        assert not window.report(i * 0.01 + 0.2, remaining, sent_at=i * 0.01)
    assert window.seconds is None
