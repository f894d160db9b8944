"""The token cache on its own: a fake clock, a fake issuer, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from batchrunner.azure.token_cache import TokenCache, open_token_cache
from batchrunner.azure.token_expiry import EXPIRY_MARGIN, REFRESH_AHEAD, Token
from batchrunner.errors import AuthError
from tests.fakes import FakeClock

START = 1_700_000_000.0
HOUR = 3600.0


class FakeIssuer:
    """Hands out t1, t2, … living *lifetime* fake seconds; can fail or hold fetches."""

    def __init__(self, clock: FakeClock, lifetime: float = HOUR) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.failing = False
        self.echo = False
        self.gate: anyio.Event | None = None
        self.last: Token | None = None

    async def fetch(self) -> Token:
        """One token, or AuthError while failing."""
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            msg = f"no Entra ID token (fake). Tried:\n  - fetch {self.calls} failed"
            raise AuthError(msg)
        if self.echo and self.last is not None:
            return self.last
        self.last = Token(f"t{self.calls}", self.clock.now + self.lifetime)
        return self.last


async def settle(condition: Callable[[], bool], rounds: int = 200) -> None:
    """Let other tasks run until *condition* holds (a bounded poll)."""
    for _ in range(rounds):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("the condition never held")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock."""
    return FakeClock(START)


@pytest.fixture
def issuer(clock: FakeClock) -> FakeIssuer:
    """A fake issuer on the fake clock."""
    return FakeIssuer(clock)


def cache_for(issuer: FakeIssuer, clock: FakeClock, tasks: anyio.abc.TaskGroup):
    """A cache over *issuer* whose fetches run in *tasks*."""
    return TokenCache(issuer.fetch, tasks, clock=clock, sleep=clock.sleep)


async def test_one_fetch_serves_every_concurrent_caller(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Five hundred callers with no token yet cause exactly one fetch, and share it."""
    issuer.gate = anyio.Event()
    got: list[str] = []

    async def call(cache: TokenCache) -> None:
        got.append(await cache.get())

    async with anyio.create_task_group() as tasks:
        cache = cache_for(issuer, clock, tasks)
        for _ in range(500):
            tasks.start_soon(call, cache)
        await settle(lambda: issuer.calls == 1)
        issuer.gate.set()
    assert issuer.calls == 1
    assert got == ["t1"] * 500


async def test_a_failed_fetch_answers_every_waiter_at_once(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """One failing fetch fails all its waiters together; none retries it alone."""
    issuer.gate = anyio.Event()
    issuer.failing = True
    errors: list[str] = []

    async def call(cache: TokenCache) -> None:
        try:
            await cache.get()
        except AuthError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as tasks:
        cache = cache_for(issuer, clock, tasks)
        for _ in range(100):
            tasks.start_soon(call, cache)
        await settle(lambda: issuer.calls == 1)
        issuer.gate.set()
    assert issuer.calls == 1
    assert len(errors) == 100
    assert "fetch 1 failed" in errors[0]


async def test_a_cancelled_caller_does_not_cancel_the_fetch(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A row given up while waiting leaves the shared fetch running for the others."""
    issuer.gate = anyio.Event()
    async with anyio.create_task_group() as tasks:
        cache = cache_for(issuer, clock, tasks)
        with anyio.move_on_after(0.01):
            await cache.get()
        issuer.gate.set()
        assert await cache.get() == "t1"
    assert issuer.calls == 1


async def test_the_first_token_is_fetched_on_entry(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Entering the cache fetches once; a failure there is a plain AuthError."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        assert cache.token is not None
        assert issuer.calls == 1
    issuer.failing = True
    with pytest.raises(AuthError, match="fetch 2 failed"):
        async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep):
            pytest.fail("the block must not run without a token")


async def test_refresh_happens_ahead_of_expiry_off_the_hot_path(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """The refresher fetches before expiry; requests never wait for it."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        await settle(lambda: clock.sleeping == 1)
        clock.advance(HOUR - REFRESH_AHEAD - 1)
        assert await cache.get() == "t1"
        assert issuer.calls == 1
        issuer.gate = anyio.Event()  # the refresh will hang until released
        clock.advance(1)
        await settle(lambda: issuer.calls == 2)
        with anyio.fail_after(1):  # the hot path does not wait on the refresh
            assert await cache.get() == "t1"
        issuer.gate.set()
        await settle(lambda: cache.token is not None and cache.token.value == "t2")
        assert await cache.get() == "t2"


async def test_a_failing_refresh_keeps_the_old_token_until_it_really_expires(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Refresh failures are retried with back-off while the old token is served."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        issuer.failing = True
        await settle(lambda: clock.sleeping == 1)
        clock.advance(HOUR - REFRESH_AHEAD)
        served = []
        while clock.now < START + HOUR - EXPIRY_MARGIN - 1:
            await settle(lambda: clock.sleeping == 1)
            served.append(await cache.get())
            clock.advance(5)
        assert set(served) == {"t1"}
        # Back-off: far fewer tries than the 5 s steps taken, but several.
        assert 5 <= issuer.calls - 1 <= len(served) // 2
        clock.now = START + HOUR  # expired: a request must wait for a fetch
        with pytest.raises(AuthError, match="failed"):
            await cache.get()
        issuer.failing = False
        assert (await cache.get()).startswith("t")
        assert await cache.get() != "t1"


async def test_an_echoed_token_is_not_taken_for_a_refresh(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """When the issuer hands back the same token, the refresher asks again later."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        issuer.echo = True
        await settle(lambda: clock.sleeping == 1)
        clock.advance(HOUR - REFRESH_AHEAD)
        await settle(lambda: issuer.calls == 2 and clock.sleeping == 1)
        issuer.echo = False
        clock.advance(REFRESH_AHEAD / 2)
        await settle(lambda: cache.token is not None and cache.token.value != "t1")
        assert issuer.calls == 3


async def test_a_refused_token_is_replaced_once_for_every_request_carrying_it(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Forty requests refused with the same token cause one fetch and all retry."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        issuer.gate = anyio.Event()
        refuse = anyio.Event()
        holding: list[str] = []
        answers: list[bool] = []

        async def request_refused() -> None:
            holding.append(await cache.get())
            await refuse.wait()
            answers.append(await cache.refused())

        async with anyio.create_task_group() as rows:
            for _ in range(40):
                rows.start_soon(request_refused)
            await settle(lambda: len(holding) == 40)
            refuse.set()
            await settle(lambda: issuer.calls == 2)
            issuer.gate.set()
        assert holding == ["t1"] * 40
        assert answers == [True] * 40
        assert issuer.calls == 2
        assert await cache.get() == "t2"


async def test_a_late_refusal_of_an_old_token_does_not_fetch_again(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A 401 for a token already replaced just retries with the new one."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        holding = anyio.Event()
        refuse = anyio.Event()
        result: list[bool] = []

        async def slow_request() -> None:
            await cache.get()  # carries t1
            holding.set()
            await refuse.wait()
            result.append(await cache.refused())

        async with anyio.create_task_group() as rows:
            rows.start_soon(slow_request)
            await holding.wait()
            assert await cache.get() == "t1"
            assert await cache.refused() is True  # replaces t1 with t2
            refuse.set()
        assert result == [True]
        assert issuer.calls == 2


async def test_no_new_token_after_a_refusal_means_stop(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A refusal answered by the same token, or by a failed fetch, returns False."""
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        issuer.echo = True
        await cache.get()
        assert await cache.refused() is False
        issuer.echo = False
        issuer.failing = True
        await cache.get()
        assert await cache.refused() is False


async def test_leaving_the_cache_ends_every_task_it_started(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """No refresher or fetch outlives the block."""
    before = len(asyncio.all_tasks())
    async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep) as cache:
        issuer.gate = anyio.Event()
        clock.advance(HOUR)  # a refresh starts and hangs
        await settle(lambda: issuer.calls == 2)
        assert cache.token is not None
    assert len(asyncio.all_tasks()) == before


async def test_an_error_in_the_block_comes_out_as_itself(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    """The cache's task group does not wrap the caller's exceptions in a group."""
    with pytest.raises(KeyError):
        async with open_token_cache(issuer.fetch, clock=clock, sleep=clock.sleep):
            raise KeyError("x")
