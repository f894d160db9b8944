"""
Several deployments over fake time: the real router, pacers, row sender and
pool, with deployments that answer after a fixed latency of a clock moved by
hand. What comes out is exact, so rates can be asserted without timing: the
sum of the quotas reached, a 429 slowing only its own deployment, and a
secondary used only while the primary is out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure, Resumable
from batchrunner.records import Api, Reply, Request, RowResult, Usage
from batchrunner.report.summary import RunStats
from batchrunner.send.deployments import multi_pool
from batchrunner.send.pacer import Pacer
from batchrunner.send.route import Route
from batchrunner.send.router import Lane
from tests.fakes import FakeClock, all_tasks_blocked

#: Charged tokens of every request (prompt + max_tokens).
TOKENS = 1000
#: Fake seconds each answer takes.
LATENCY = 0.2
#: Fake seconds the clock moves when every task waits and none sleeps.
STEP = 0.02


@dataclass
class Deployment:
    """A deployment on fake time: answers after LATENCY, or as *answer* says."""

    name: str
    clock: FakeClock
    #: Given the fake time a request arrived: the failure it gets, or None.
    answer: Callable[[float], ApiFailure | None] = lambda now: None
    #: (fake time, tokens) of each request it received.
    received: list[tuple[float, int]] = field(default_factory=list)

    async def complete(self, request: Request) -> Reply:
        """Answer after LATENCY of fake time."""
        arrived = self.clock.now
        self.received.append((arrived, request.charged_tokens))
        await self.clock.sleep(LATENCY)
        failure = self.answer(arrived)
        if failure is not None:
            raise failure
        usage = Usage(50, 100, 150)
        return Reply("ok", None, "stop", usage, "m", "req", int(LATENCY * 1000))

    async def aclose(self) -> None:
        """Nothing to close."""

    def tokens_between(self, start: float, end: float) -> int:
        """Tokens of the requests it received in [start, end)."""
        return sum(t for at, t in self.received if start <= at < end)


def throttled(seconds: float) -> ApiFailure:
    """A 429 asking to wait *seconds*."""
    return ApiFailure(
        kind="RateLimitError",
        message="HTTP 429",
        status_code=429,
        retryable=True,
        retry_after=seconds,
    )


async def send(
    clock: FakeClock,
    deployments: Sequence[tuple[Deployment, int, int]],
    rows: int,
    concurrency: int = 32,
    stopped: list[BaseException | None] | None = None,
    max_retry_wait: float = 120.0,
    tokens: Callable[[int], int] = lambda i: TOKENS,
) -> list[RowResult]:
    """
    Run *rows* requests over (deployment, tpm, priority) entries on fake time;
    the run's stop, if any, is put in *stopped*.
    """
    routes, lanes = [], []
    for deployment, tpm, priority in deployments:
        pacer = Pacer(tpm=tpm, rpm=100_000, clock=clock, sleep=clock.sleep)
        routes.append(Route(deployment, pacer, deployment.name))
        lanes.append(Lane(deployment.name, pacer, priority))
    written: list[RowResult] = []
    pool = multi_pool(
        routes,
        lanes,
        Settings(concurrency=concurrency, max_retry_wait=max_retry_wait),
        write=written.extend,
        stats=RunStats(rows_planned=rows),
        clock=clock,
        sleep=clock.sleep,
    )
    requests = [
        Request(f"r{i}", Api.CHAT, {"messages": []}, 50, tokens(i)) for i in range(rows)
    ]
    done = anyio.Event()

    async def run() -> None:
        await pool.run(requests)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        while not done.is_set():
            await all_tasks_blocked()
            wake = clock.next_wake
            clock.advance(STEP if wake is None else max(wake - clock.now, 0.0))
            assert clock.now < 3600, "the run did not end within an hour"
    if stopped is not None:
        stopped.append(pool.control.cause)
    return written


def assert_each_row_ok_once(written: list[RowResult], rows: int) -> None:
    """One ok record for every row, and no other."""
    assert sorted(r.id for r in written) == sorted(f"r{i}" for i in range(rows))
    assert {r.status for r in written} == {"ok"}


async def test_two_deployments_together_reach_the_sum_of_their_quotas() -> None:
    """60k and 20k TPM given: the run sends 80k tokens a minute, each deployment
    at its own quota and never over it."""
    clock = FakeClock()
    big, small = Deployment("big", clock), Deployment("small", clock)
    rows = 300  # 300k tokens: nearly four minutes at 80k
    written = await send(clock, [(big, 60_000, 0), (small, 20_000, 0)], rows)
    assert_each_row_ok_once(written, rows)
    last = max(at for d in (big, small) for at, _ in d.received)
    # Past the first minute (the pacers start with a burst), to the last send.
    span = last - 60.0
    for deployment, quota in ((big, 60_000), (small, 20_000)):
        per_minute = deployment.tokens_between(60.0, last) / span * 60
        assert 0.9 * quota <= per_minute <= quota, deployment.name
        for minute in range(int(last // 60)):  # never over, any whole minute
            start = minute * 60.0
            assert deployment.tokens_between(start, start + 60) <= quota * 1.05
    total = big.tokens_between(60.0, last) + small.tokens_between(60.0, last)
    assert total / span * 60 >= 0.9 * 80_000


async def test_a_429_slows_only_the_deployment_that_sent_it() -> None:
    """While one deployment answers 429, the other goes on at its full quota and
    takes the throttled rows: no row fails."""
    clock = FakeClock()
    hit = Deployment(
        "hit", clock, lambda now: throttled(2.0) if 60 <= now < 90 else None
    )
    spared = Deployment("spared", clock)
    rows = 600
    written = await send(clock, [(hit, 30_000, 0), (spared, 30_000, 0)], rows)
    assert_each_row_ok_once(written, rows)
    before = spared.tokens_between(30.0, 60.0)
    during = spared.tokens_between(60.0, 90.0)
    assert before >= 0.9 * 15_000  # half a minute at its quota
    # The same while the other is out (a request less at most: where the
    # half minute's edges fall among its sends).
    assert during >= before - TOKENS
    assert any(60 <= at < 90 for at, _ in hit.received)  # it was tried, and 429'd
    assert {r.deployment for r in written if r.attempts > 1} <= {"spared"}


async def test_the_secondary_takes_rows_only_while_the_primary_is_out() -> None:
    """Priority 1 gets requests only from the primary's first 429 until it has
    answered again; before and after, nothing."""
    clock = FakeClock()
    primary = Deployment(
        "primary", clock, lambda now: throttled(1.0) if 10 <= now < 15 else None
    )
    secondary = Deployment("secondary", clock)
    rows = 1_000  # 25 s at 8 in flight
    # Quotas far above what 8 requests in flight send: the primary always has
    # budget to spare, so only its being out sends rows to the secondary.
    entries = [(primary, 10_000_000, 0), (secondary, 10_000_000, 1)]
    written = await send(clock, entries, rows, concurrency=8)
    assert_each_row_ok_once(written, rows)
    first_429 = min(at for at, _ in primary.received if at >= 10)
    back = min(at for at, _ in primary.received if at >= 15)  # answered from here
    used = [at for at, _ in secondary.received]
    assert used, "the secondary took nothing while the primary was out"
    assert first_429 < min(used) and max(used) <= back + LATENCY
    assert any(at > back + 1 for at, _ in primary.received)  # the rest went back


async def test_when_every_deployment_is_out_the_run_waits_for_them() -> None:
    """Both answer 429 for ten seconds: rows wait for the time asked instead of
    failing or hammering, and every row ends ok once they are back."""
    clock = FakeClock()

    def answer(now: float) -> ApiFailure | None:
        return throttled(2.0) if 10 <= now < 20 else None

    a, b = Deployment("a", clock, answer), Deployment("b", clock, answer)
    rows = 1_500  # about 40 s at 8 in flight, out of which 10 s out
    entries = [(a, 10_000_000, 0), (b, 10_000_000, 0)]
    written = await send(clock, entries, rows, concurrency=8)
    assert_each_row_ok_once(written, rows)
    during = sum(1 for d in (a, b) for at, _ in d.received if 10 <= at < 20)
    # Sent freely, 8 in flight at 0.2 s would be 400 in those ten seconds; each
    # wave of 429s holds both for 2 s, so a few waves of at most 8 each.
    assert 0 < during <= 8 * 2 * (10 / 2 + 1)


async def test_a_minute_of_429s_everywhere_fails_no_row() -> None:
    """Both answer 429 (2 s waits) for a whole minute: the rows are rerouted
    and wait as often as it takes, and none runs out of attempts."""
    clock = FakeClock()

    def answer(now: float) -> ApiFailure | None:
        return throttled(2.0) if 5 <= now < 65 else None

    a, b = Deployment("a", clock, answer), Deployment("b", clock, answer)
    rows = 1_500
    entries = [(a, 10_000_000, 0), (b, 10_000_000, 0)]
    written = await send(clock, entries, rows, concurrency=8)
    assert_each_row_ok_once(written, rows)


async def test_a_row_over_one_quota_goes_to_a_deployment_it_fits() -> None:
    """A row over the small deployment's whole minute's quota is sent to the big
    one; only a row over every quota fails, unsent, as OverQuota."""
    clock = FakeClock()
    big, small = Deployment("big", clock), Deployment("small", clock)
    sizes = {3: 8_000, 7: 50_000}  # over small's 5k; over both
    written = await send(
        clock,
        [(big, 20_000, 0), (small, 5_000, 0)],
        40,
        tokens=lambda i: sizes.get(i, TOKENS),
    )
    by_id = {r.id: r for r in written}
    assert len(written) == 40
    assert by_id["r3"].status == "ok"
    assert by_id["r3"].deployment == "big"
    assert by_id["r7"].status == "error"
    assert by_id["r7"].error is not None and by_id["r7"].error.type == "OverQuota"
    assert by_id["r7"].attempts == 0
    assert {r.status for i, r in by_id.items() if i not in ("r3", "r7")} == {"ok"}
    assert 8_000 not in [t for _, t in small.received]


async def test_a_run_whose_deployments_all_stay_down_stops_to_be_resumed() -> None:
    """Every deployment failing for longer than max_retry_wait: the run stops
    (exit 75, re-run later) instead of probing them forever."""
    clock = FakeClock()

    def down(now: float) -> ApiFailure:
        return ApiFailure(
            kind="InternalServerError", message="HTTP 503", status_code=503,
            retryable=True,
        )  # fmt: skip

    a, b = Deployment("a", clock, down), Deployment("b", clock, down)
    stopped: list[BaseException | None] = []
    entries = [(a, 10_000_000, 0), (b, 10_000_000, 0)]
    written = await send(clock, entries, 50, 4, stopped, max_retry_wait=30.0)
    (cause,) = stopped
    assert isinstance(cause, Resumable)
    assert "no deployment has answered for" in str(cause)
    assert 30.0 < clock.now < 30.0 + 60.0  # after max_retry_wait, not an hour
    assert not [r for r in written if r.status == "ok"]


async def test_every_quota_exhausted_for_hours_stops_the_run_at_once() -> None:
    """Both deployments ask to wait an hour: the run stops to be resumed
    (exit 75) without waiting, and no row is failed for it."""
    clock = FakeClock()
    a = Deployment("a", clock, lambda now: throttled(3600.0))
    b = Deployment("b", clock, lambda now: throttled(3600.0))
    stopped: list[BaseException | None] = []
    entries = [(a, 10_000_000, 0), (b, 10_000_000, 0)]
    written = await send(clock, entries, 50, 4, stopped)
    (cause,) = stopped
    assert isinstance(cause, Resumable) and "quotas are exhausted" in str(cause)
    assert clock.now < 60.0
    assert written == []
