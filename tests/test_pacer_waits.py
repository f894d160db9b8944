"""
Every wait in the pacer has an end: an answer, a release, a timer, or a stop.
The pure cases drive the pacer directly; the rest run the real CLI against the
simulator, each bounded by pytest-timeout: a hang fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from batchrunner.cli import run
from batchrunner.errors import QuotaExceeded
from batchrunner.records import RateLimits
from batchrunner.send.pacer import INITIAL_WINDOW, Pacer, PacerStopped
from batchrunner.simulator import SimulatorServer
from tests.fakes import FakeClock
from tests.foreign import foreign_simulator


async def _stopped_while_waiting(pacer: Pacer) -> list[str]:
    """What a request waiting in *pacer* saw when the pacer was stopped."""
    seen: list[str] = []

    async def waiter() -> None:
        try:
            await pacer.acquire(10)
            seen.append("sent")
        except PacerStopped:
            seen.append("stopped")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        assert seen == []
        pacer.stop()
    return seen


@pytest.mark.timeout(10)
async def test_stop_wakes_a_request_waiting_for_a_place_in_flight() -> None:
    """A request held by the initial window ends at the stop, unsent."""
    pacer = Pacer()
    for _ in range(INITIAL_WINDOW):
        await pacer.acquire(10)
    assert await _stopped_while_waiting(pacer) == ["stopped"]


@pytest.mark.timeout(10)
async def test_stop_wakes_a_request_paced_a_minute_ahead() -> None:
    """A request whose slot is a minute away (1 rpm) ends at the stop, not then."""
    pacer = Pacer(rpm=1, adaptive=False)
    await pacer.acquire(10)
    assert await _stopped_while_waiting(pacer) == ["stopped"]


@pytest.mark.timeout(10)
async def test_stop_wakes_a_request_held_by_a_429s_pause() -> None:
    """A request waiting out a pause the service asked for ends at the stop."""
    pacer = Pacer(adaptive=False)
    pacer.pause(3600)
    assert await _stopped_while_waiting(pacer) == ["stopped"]


@pytest.mark.timeout(10)
async def test_a_request_over_the_quota_takes_no_place_in_flight() -> None:
    """QuotaExceeded is raised before a place is taken: the others still go."""
    pacer = Pacer(tpm=1000)  # requests per minute unknown: the window applies
    for _ in range(INITIAL_WINDOW * 3):
        with pytest.raises(QuotaExceeded):
            await pacer.acquire(5000)
    turns = [await pacer.acquire(10) for _ in range(INITIAL_WINDOW)]
    assert len(turns) == INITIAL_WINDOW


@pytest.mark.timeout(10)
async def test_a_cancelled_request_gives_its_place_back() -> None:
    """A request cancelled while in flight releases its turn on the way out."""
    pacer = Pacer()
    with anyio.CancelScope() as scope:
        for _ in range(INITIAL_WINDOW):
            turn = await pacer.acquire(10)
            with turn:
                scope.cancel()
                await anyio.sleep_forever()
    turns = [await pacer.acquire(10) for _ in range(INITIAL_WINDOW)]
    assert len(turns) == INITIAL_WINDOW


@pytest.mark.timeout(10)
async def test_a_quota_learned_while_a_request_waits_fails_it_unbooked() -> None:
    """A request over a quota learned while it waited fails, booking nothing."""
    clock = FakeClock()
    pacer = Pacer(rpm=60, clock=clock, sleep=clock.sleep)  # tokens a minute unknown
    (await pacer.acquire(10)).release()
    outcome: list[str] = []

    async def too_big() -> None:
        try:
            await pacer.acquire(5000)
        except QuotaExceeded:
            outcome.append("over quota")

    async with anyio.create_task_group() as tg:
        tg.start_soon(too_big)
        await wait_all_tasks_blocked()
        assert clock.sleeping == 1  # its slot is a second after the first one's
        pacer.observe(RateLimits(limit_tokens=1000))
        clock.advance(2)
    assert outcome == ["over quota"]
    # Booked at 1,000 tokens a minute, it would have held the next one 5 minutes.
    assert pacer.ready_in(10) == 0


@pytest.mark.timeout(10)
async def test_a_request_refused_as_over_the_quota_gives_its_booking_back() -> None:
    """Sent before the quota was known, then refused for it: the next need not wait."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    with await pacer.acquire(5000):
        # Its answer tells the quota: what went before it is booked against it.
        pacer.observe(RateLimits(limit_tokens=1000))
        assert pacer.ready_in(10) > 60
        pacer.refused(5000)
    assert pacer.ready_in(10) == 0


@pytest.mark.timeout(10)
async def test_a_booking_given_back_wakes_the_requests_waiting_behind_it() -> None:
    """Requests waiting for a slot behind a refused request look again at once."""
    clock = FakeClock()
    pacer = Pacer(tpm=60_000, clock=clock, sleep=clock.sleep)
    seen: list[str] = []

    async def behind() -> None:
        (await pacer.acquire(10)).release()
        seen.append("sent")

    with await pacer.acquire(50_000):  # 50 s of the budget booked
        async with anyio.create_task_group() as tg:
            tg.start_soon(behind)
            await wait_all_tasks_blocked()
            assert clock.sleeping == 1
            assert seen == []
            pacer.refused(50_000)
    assert seen == ["sent"]
    assert clock.now == 0


@pytest.mark.timeout(10)
async def test_a_throttled_request_holds_the_others_only_for_the_pause() -> None:
    """A 429 gives back what was booked for the refused request: the pause remains."""
    clock = FakeClock()
    pacer = Pacer(tpm=60_000, clock=clock, sleep=clock.sleep)
    with await pacer.acquire(50_000):  # 50 s of the budget booked
        assert pacer.ready_in(10) > 45
        pacer.throttled(2.0, sent_at=0.0, tokens=50_000)
    assert pacer.ready_in(10) == 2.0


def _jsonl(path: Path, prompts: list[str]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "prompt": p}) + "\n"
            for i, p in enumerate(prompts)
        )
    )
    return path


def _records(path: Path) -> dict[str, dict[str, object]]:
    lines = path.read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


@pytest.mark.timeout(60)
def test_a_first_row_over_the_quota_does_not_hang_the_run(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """--tpm without --rpm, first row over a minute's quota: it fails, the rest run."""
    azure_env.config.tpm = 60_000
    long_prompt = "lorem ipsum dolor sit amet " * 20_000  # ~100k tokens
    source = _jsonl(tmp_path / "q.jsonl", [long_prompt] + [f"q{i}" for i in range(20)])
    assert run([str(source), "--tpm", "60000", "--concurrency", "4"]) == 1
    records = _records(tmp_path / "q.results.jsonl")
    assert records["r0"]["error"]["type"] == "OverQuota"  # type: ignore[index]
    assert sum(r["status"] == "ok" for r in records.values()) == 20


@pytest.mark.timeout(60)
def test_a_first_request_that_fails_does_not_hang_the_run(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """With no rate headers, first answers that are 500s still open the way."""
    azure_env.config.rate_headers = "none"
    failing = [f"fails {i} [[sim:500,500]]" for i in range(INITIAL_WINDOW)]
    prompts = failing + [f"q{i}" for i in range(20)]
    source = _jsonl(tmp_path / "f.jsonl", prompts)
    args = [str(source), "--concurrency", "8", "--max-attempts", "2"]
    assert run(args) == 1
    records = _records(tmp_path / "f.results.jsonl")
    assert sum(r["status"] == "ok" for r in records.values()) == 20
    assert len(records) == len(prompts)


@pytest.mark.timeout(60)
def test_first_requests_that_time_out_do_not_hang_the_run(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """First requests that never answer (client timeout) give their places back."""
    azure_env.config.rate_headers = "none"
    prompts = [f"slow {i} [[sim:slow]]" for i in range(INITIAL_WINDOW)]
    source = _jsonl(tmp_path / "t.jsonl", prompts + [f"q{i}" for i in range(20)])
    args = [str(source), "--concurrency", "8", "--timeout", "0.5"]
    assert run(args) == 0
    records = _records(tmp_path / "t.results.jsonl")
    assert all(r["status"] == "ok" for r in records.values())
    assert len(records) == INITIAL_WINDOW + 20


@pytest.mark.timeout(30)
def test_a_stop_wakes_rows_waiting_on_the_pacer_at_once(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """At 1 rpm the second row waits a minute: the first row's stop ends it now."""
    source = _jsonl(tmp_path / "s.jsonl", [f"q{i}" for i in range(10)])
    args = [str(source), "--deployment", "nope", "--rpm", "1", "--concurrency", "4"]
    assert run(args) == 1
    assert azure_env.ledger.count() == 1
    summary = json.loads((tmp_path / "s.results.summary.json").read_text())
    assert "not found" in summary["stopped"]


@pytest.mark.timeout(60)
def test_a_row_found_over_a_learned_quota_does_not_hold_up_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Remaining-only headers, no budgets: a row over quota fails, the rest go on."""
    with foreign_simulator(monkeypatch) as server:
        server.config.tpm, server.config.rpm = 6000, None
        server.config.window = 2.0
        long_prompt = "lorem ipsum dolor sit amet " * 3000  # ~20k tokens estimated
        prompts = [long_prompt] + [f"q{i}" for i in range(40)]
        source = _jsonl(tmp_path / "l.jsonl", prompts)
        assert run([str(source), "--concurrency", "4"]) == 1
    records = _records(tmp_path / "l.results.jsonl")
    assert records["r0"]["error"]["type"] == "OverQuota"  # type: ignore[index]
    assert sum(r["status"] == "ok" for r in records.values()) == 40
