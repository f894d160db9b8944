"""
The pool: a feeder, N workers and one writer, joined by bounded streams.

    requests ─▶ feeder ─[rendezvous]─▶ N × worker ─[bounded]─▶ writer ─▶ sink
                                          │ RowSender: pace → send → retry
                                          └ StopPolicy: may this row start?

A worker asks the stop policy whether a row may start as it takes it, and hands
it to the row sender; the writer is the only task that touches the output, and
shows each result to the stats and the stop policy. The online ``Sender``
(``send/online.py``) runs its rows through one pool: one request a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial

import anyio
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
)

from batchrunner.azure.client import Completer
from batchrunner.config.prices import answer_price
from batchrunner.config.settings import Settings
from batchrunner.errors import RunStopped
from batchrunner.records import Request, RowResult
from batchrunner.report.summary import RunStats
from batchrunner.send.pacer import Pacer
from batchrunner.send.route import Route
from batchrunner.send.row import RowHooks, RowSender
from batchrunner.send.stops import StopPolicy

log = logging.getLogger("batchrunner")

#: Most results the writer takes in one write (and one flush).
WRITE_BATCH = 512


async def take(stream: MemoryObjectReceiveStream[Request]) -> Request | None:
    """
    The next item of *stream*, or None once it has ended. An item that is
    already waiting is taken without a trip round the event loop: anyio's
    receive() yields first, and on a busy loop every worker that finishes a
    row would wait behind all the other callbacks before taking the next.
    """
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


async def hand_over(stream: MemoryObjectSendStream[Request], item: Request) -> None:
    """Give *item* to a waiting receiver at once, else wait for one."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


def worker_count(concurrency: int, rows_planned: int) -> int:
    """
    As many workers as requests may be in flight, but no more than there are
    rows (when known): a --concurrency of a million over ten rows starts ten.
    """
    return min(concurrency, rows_planned) if rows_planned > 0 else concurrency


class Pool:
    """Runs requests through a *sender* and hands results to *write*."""

    def __init__(
        self,
        sender: RowSender,
        control: StopPolicy,
        *,
        concurrency: int,
        write: Callable[[Sequence[RowResult]], None],
        stats: RunStats,
        on_progress: Callable[[RunStats], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.control = control
        self.concurrency = concurrency
        self.write = write
        self.stats = stats
        self.on_progress = on_progress
        self._sleep = sleep
        self._clock = clock
        self._work_scope = anyio.CancelScope()

    async def run(self, requests: Iterable[Request]) -> StopPolicy:
        """Send every request (until told to stop); return how the run ended."""
        started = self._clock()
        results_tx, results_rx = anyio.create_memory_object_stream[RowResult](
            self.concurrency
        )
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(self.control.watch_signals, self._work_scope)
            watchers.start_soon(self._watch_deadline, started)
            async with anyio.create_task_group() as io:
                io.start_soon(self._write_results, results_rx)
                io.start_soon(self._work, requests, results_tx)
            watchers.cancel_scope.cancel()
        return self.control

    async def _watch_deadline(self, started: float) -> None:
        await self.control.watch_deadline(
            self._work_scope, started, clock=self._clock, sleep=self._sleep
        )

    async def _work(
        self, requests: Iterable[Request], results: MemoryObjectSendStream[RowResult]
    ) -> None:
        # A zero buffer keeps rows in the input until a worker is free, so a stop
        # leaves them to the next run instead of a queue.
        requests_tx, requests_rx = anyio.create_memory_object_stream[Request](0)
        async with results:
            with self._work_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._feed, requests, requests_tx)
                    async with requests_rx:
                        for _ in range(
                            worker_count(self.concurrency, self.stats.rows_planned)
                        ):
                            tg.start_soon(
                                self._worker, requests_rx.clone(), results.clone()
                            )

    async def _feed(
        self, requests: Iterable[Request], out: MemoryObjectSendStream[Request]
    ) -> None:
        async with out:
            for request in requests:
                if self.control.stopping:
                    break
                await hand_over(out, request)

    async def _worker(
        self,
        requests: MemoryObjectReceiveStream[Request],
        results: MemoryObjectSendStream[RowResult],
    ) -> None:
        control = self.control
        async with requests, results:
            while (request := await take(requests)) is not None:
                if not control.admit(request, self.stats):
                    continue
                cost = control.reserve(request)
                try:
                    result = await self.sender.send(request)
                finally:
                    control.release(cost)
                if result is None:
                    continue
                try:
                    results.send_nowait(result)
                except anyio.WouldBlock:
                    # A paid-for answer must reach the writer even while stopping.
                    with anyio.CancelScope(shield=True):
                        await results.send(result)

    async def _write_results(
        self, results: MemoryObjectReceiveStream[RowResult]
    ) -> None:
        async with results:
            async for first in results:
                batch = [first]
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(results.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                try:
                    self.write(batch)
                except RunStopped as exc:  # the results storage failed: resumable
                    self.control.stop(exc)
                for result in batch:
                    self.stats.add(result)
                    self.control.note(result, self.stats)
                if self.on_progress is not None:
                    self.on_progress(self.stats)


def online_pool(
    client: Completer,
    settings: Settings,
    *,
    write: Callable[[Sequence[RowResult]], None],
    stats: RunStats,
    pacer: Pacer | None = None,
    label: str | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_unauthorized: Callable[[], Awaitable[bool]] | None = None,
    hooks: RowHooks | None = None,
    deadline_from: float | None = None,
) -> Pool:
    """
    The online pool of one deployment, put together from *settings*' groups:
    a pacer to its quota, the stop policy, and a row sender over its route.
    """
    pacing = settings.pacing
    if stats.price_for is None:
        stats.price_for = partial(answer_price, settings)
    pacer = pacer or Pacer(pacing.rpm, pacing.tpm, sleep=sleep, clock=clock)
    route = Route(client=client, pacer=pacer, label=label or settings.deployment or "")
    control = StopPolicy(settings.stops, deadline_from=deadline_from)
    sender = RowSender(
        route,
        settings.retries,
        control,
        stats,
        hooks=hooks,
        on_unauthorized=on_unauthorized,
        sleep=sleep,
        clock=clock,
    )
    return Pool(
        sender,
        control,
        concurrency=pacing.concurrency,
        write=write,
        stats=stats,
        on_progress=on_progress,
        sleep=sleep,
        clock=clock,
    )
