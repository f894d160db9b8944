"""
A batch-mode run, top to bottom: collect what has ended, submit what is left,
then exit (75 while batches run), or, with ``--wait``, poll until all have ended.

    lists ─▶ collect ended ─▶ submit rows left ─▶ [poll ─▶ collect ─▶ resubmit …]

The service's own lists are the truth: a batch is this output's when its
metadata names the output, an input file when its name does. A run killed at
any step leaves nothing a re-run cannot sort out: an uploaded file that no batch
uses is deleted before anything is submitted (as is the input file of a batch
once collected: a resource keeps at most 500), a batch created but never heard of
is found in the list, and rows of running batches are not submitted again.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import anyio
from openai.types import Batch

from batchrunner.config.settings import Settings
from batchrunner.errors import ConfigError, Interrupted, RunStopped
from batchrunner.records import Request
from batchrunner.report.summary import RunStats
from batchrunner.send.batch.collect import Collector, Ledger
from batchrunner.send.batch.lifecycle import (
    deployment_refusal,
    failure_text,
    is_running,
    spent_files,
    unused_files,
    why_stopped,
)
from batchrunner.send.batch.lines import batch_url
from batchrunner.send.batch.names import output_key
from batchrunner.send.batch.service import BatchService
from batchrunner.send.batch.submit import Submitter

log = logging.getLogger("batchrunner")


@dataclass
class BatchJob:
    """What a batch-mode run needs from the job around it."""

    settings: Settings
    #: The results, as named in messages: names this output on the service.
    results: str
    #: The requests of the rows to send, less the rows in the given set.
    requests: Callable[[AbstractSet[str]], Iterator[Request]]
    #: Rows of the plan without an ok record, given the ok ids.
    rows_left: Callable[[AbstractSet[str]], int]
    stats: RunStats
    on_progress: Callable[[RunStats], None] = lambda stats: None
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class BatchEnding:
    """How a batch-mode run ended: rows still without an ok record, and why not."""

    rows_left: int
    #: Batches still running or rows held back (resumable), or a signal.
    stopped: RunStopped | None


class BatchSender:
    """Runs *job* through the Batch API of *service*; ``run()`` gives the exit code."""

    def __init__(
        self,
        job: BatchJob,
        service: BatchService,
        collector: Collector,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.job = job
        self.settings = job.settings
        self.service = service
        self.collector = collector
        self.ledger: Ledger = collector.ledger
        self._sleep = sleep
        self._started = job.clock()
        self.key = output_key(job.results, self.settings.shard)
        self.running: dict[str, Batch] = {}
        self._failed_batches = 0
        self.submitter = Submitter(
            service, self.settings, key=self.key, results=job.results,
            time_left=self._time_left, sleep=sleep,
        )  # fmt: skip
        self.interrupted: Interrupted | None = None
        job.stats.batches = Counter()

    async def run(self) -> BatchEnding:
        """Collect, submit, maybe wait; how the run ended."""
        batch_url(self.settings.api)  # embeddings are refused before any call
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_signals, group.cancel_scope)
            try:
                await self._lifecycle()
            except Exception as exc:  # raised as itself, not in an ExceptionGroup
                failure = exc
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        self._report()
        stopped = self.interrupted or why_stopped(
            len(self.running), self.submitter.held_back
        )
        return BatchEnding(self.job.rows_left(self.ledger.done), stopped)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                name = signal.Signals(signum).name
                message = f"stopped by {name}: the batches go on; re-run to collect"
                self.interrupted = Interrupted(message, signal_name=name)
                log.warning(message, extra={"event": "stopping"})
                scope.cancel()

    async def _lifecycle(self) -> None:
        batches = await self.service.batches_of(self.key)
        await self._drop_unused_files(batches)
        collected = self.collector.collected()
        self.running = {b.id: b for b in batches if is_running(b)}
        ended = [b for b in batches if not is_running(b) and b.id not in collected]
        await self._collect(ended)
        if self.settings.cancel:
            await self._cancel()
        else:
            await self._submit()
        self._report()
        # Without --wait a cancel exits at once: cancelling can last minutes (75).
        if self.settings.wait:
            self.ledger.failed_now.clear()  # failed from here on: for the next run
            await self._poll()

    async def _drop_unused_files(self, batches: list[Batch]) -> None:
        """
        Delete input files a killed run uploaded but made no batch of, and those
        of collected batches that a killed run had not deleted yet.
        """
        files = await self.service.files_of(self.key)
        for file_id in unused_files(files, batches):
            log.info(
                "deleting input file %s: uploaded by a run that stopped before it"
                " made a batch of it", file_id,
                extra={"event": "batch_file_unused", "file_id": file_id},
            )  # fmt: skip
            await self.service.delete_file(file_id)
        collected = self.collector.collected()
        for file_id in spent_files(files, batches, collected):
            await self.service.delete_file(file_id)

    # --- collecting ---------------------------------------------------------

    async def _collect(self, ended: list[Batch]) -> None:
        if not ended:
            return
        written = await self.collector.collect(ended)
        batches = self.job.stats.batches
        assert batches is not None
        for batch in ended:
            batches[batch.status] += 1
            counts = batch.request_counts
            log.info(
                "batch %s %s: %s of %s lines answered", batch.id, batch.status,
                counts.completed if counts else "?", counts.total if counts else "?",
                extra={"event": "batch_collected", "batch_id": batch.id,
                       "status": batch.status},
            )  # fmt: skip
            if batch.status == "failed":
                self._failed_batches += 1
                log.warning("batch %s failed: %s", batch.id, failure_text(batch))
        log.debug("collected %d records from %d batches", written, len(ended))
        self._report()
        for batch in ended:  # a resource keeps at most 500 batch input files
            await self.service.delete_file(batch.input_file_id)
        assert self.settings.deployment
        for batch in ended:
            refusal = deployment_refusal(batch, self.settings.deployment)
            if refusal is not None:
                raise ConfigError(refusal)

    # --- submitting ---------------------------------------------------------

    async def _submit(self) -> None:
        """Submit every row with no ok record that no running batch holds."""
        skip = self.ledger.done | self.ledger.failed_now
        skip |= await self.submitter.rows_in(self.running.values())
        await self.submitter.submit(self.job.requests(skip), self._submitted)

    def _submitted(self, batch: Batch, lines: int) -> None:
        self.running[batch.id] = batch
        stats = self.job.stats
        assert stats.batches is not None
        stats.batches["submitted"] += 1
        stats.requests += lines
        log.info(
            "submitted batch %s: %d rows", batch.id, lines,
            extra={"event": "batch_submitted", "batch_id": batch.id, "rows": lines},
        )  # fmt: skip

    def _time_left(self) -> float | None:
        deadline = self.settings.deadline
        if deadline is None:
            return None
        return max(0.0, self._started + deadline - self.job.clock())

    # --- cancelling and waiting ----------------------------------------------

    async def _cancel(self) -> None:
        for batch_id, batch in list(self.running.items()):
            if batch.status != "cancelling":
                self.running[batch_id] = await self.service.cancel(batch_id)
                log.info(
                    "cancelling batch %s", batch_id, extra={"event": "batch_cancel"}
                )
        await self._refresh()

    async def _refresh(self) -> list[Batch]:
        """Look at every running batch; collect those that have ended."""
        ended = []
        for batch_id in list(self.running):
            batch = await self.service.retrieve(batch_id)
            if is_running(batch):
                self.running[batch_id] = batch
            else:
                ended.append(batch)
                del self.running[batch_id]
        await self._collect(ended)
        return ended

    async def _poll(self) -> None:
        interval = self.settings.poll_interval
        while self.running:
            left = self._time_left()
            if left is not None and left < interval:
                log.warning(
                    "the deadline is near: %d batches still running; re-run to"
                    " collect them", len(self.running),
                    extra={"event": "stopping"},
                )  # fmt: skip
                return
            await self._sleep(interval)
            ended = await self._refresh()
            if ended and not self.settings.cancel and self._may_resubmit():
                await self._submit()
            self._report()

    def _may_resubmit(self) -> bool:
        # Batches that keep failing validation would be resubmitted for ever.
        return self._failed_batches < self.settings.max_attempts

    def _report(self) -> None:
        batches = self.job.stats.batches
        assert batches is not None
        batches["running"] = len(self.running)
        self.job.on_progress(self.job.stats)
