"""The pool's hand-offs: an item that is ready moves without a loop round trip."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from batchrunner.records import Api, Request
from batchrunner.send.pacer import SLACK_SECONDS, Pacer
from batchrunner.send.pool import hand_over, take


def _request(row_id: str) -> Request:
    return Request(
        row_id=row_id, api=Api.CHAT, body={}, prompt_tokens=1, charged_tokens=1
    )


async def test_take_gets_a_waiting_item_without_yielding() -> None:
    """Inside a cancelled scope any checkpoint raises: take() must not reach one."""
    send, receive = anyio.create_memory_object_stream[Request](1)
    send.send_nowait(_request("a"))
    with anyio.CancelScope() as scope:
        scope.cancel()
        got = await take(receive)
    assert got is not None and got.row_id == "a"
    send.close()
    assert await take(receive) is None  # the stream has ended


async def test_take_waits_for_an_item_and_sees_the_end() -> None:
    """With nothing waiting, take() waits for the next item and sees the end."""
    send, receive = anyio.create_memory_object_stream[Request](0)
    taken: list[str | None] = []

    async def taker() -> None:
        while (request := await take(receive)) is not None:
            taken.append(request.row_id)
        taken.append(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(taker)
        await wait_all_tasks_blocked()
        await hand_over(send, _request("a"))
        await hand_over(send, _request("b"))
        send.close()
    assert taken == ["a", "b", None]


async def test_hand_over_to_a_waiting_receiver_without_yielding() -> None:
    """hand_over() gives an item to a waiting receiver without a checkpoint."""
    send, receive = anyio.create_memory_object_stream[Request](0)
    got: list[Request] = []

    async def receiver() -> None:
        got.append(await receive.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await hand_over(send, _request("a"))
    assert [r.row_id for r in got] == ["a"]


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
