"""
The pool's own behaviour: hand-offs (an item that is ready moves without a loop
round trip), and, end to end, its bound on requests in flight.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from batchrunner.cli import run
from batchrunner.records import Api, Request
from batchrunner.send.pool import hand_over, take, worker_count
from batchrunner.simulator import SimulatorServer
from tests.test_cli import prompts, write_jsonl


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


def test_concurrency_limit_holds(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """The service never sees more requests in flight than --concurrency."""
    azure_env.config.latency = 0.02
    source = write_jsonl(tmp_path / "c.jsonl", prompts(60))
    assert run([str(source), "--concurrency", "4"]) == 0
    assert 2 <= azure_env.ledger.max_in_flight <= 4


@pytest.mark.parametrize(
    ("concurrency", "rows", "workers"),
    [(1_000_000, 10, 10), (16, 1000, 16), (16, 0, 16), (4, 4, 4)],
)
def test_workers_are_no_more_than_the_rows(
    concurrency: int, rows: int, workers: int
) -> None:
    """A huge --concurrency over a few rows starts a task a row, not a million."""
    assert worker_count(concurrency, rows) == workers
