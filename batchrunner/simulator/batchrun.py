"""
A batch's life on the simulator's loop: validating, in progress at the
configured pace, finalizing, and its end (completed, failed, expired, cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from batchrunner.simulator.batchlines import (
    CheckedInput,
    LineAnswer,
    answer_line,
    check_input,
    operation_of,
    unfinished_line,
)
from batchrunner.simulator.batchobject import Batch
from batchrunner.simulator.config import SimConfig
from batchrunner.simulator.content import _Call
from batchrunner.simulator.files import FileStore
from batchrunner.simulator.ledger import Ledger
from batchrunner.simulator.wire import _Answer

#: Lines answered between two looks at the loop, so that calls are served.
_LINES_PER_TURN = 64


@dataclass
class Runner:
    """What a batch needs to run: the store, the settings and the answerer."""

    store: FileStore
    config: SimConfig
    ledger: Ledger
    infer: Callable[[_Call, str], _Answer]

    def enter(self, batch: Batch, status: str) -> None:
        """Move *batch* to *status*, and tell the ledger's watchers."""
        batch.enter(status)
        self.ledger.note_batch(batch.id, status)


#: Waits shorter than this are not cut short by a cancel (it is seen right after).
_SHORT_NAP = 0.05


async def _nap(batch: Batch, seconds: float) -> None:
    """Wait *seconds*, or less when the batch is cancelled meanwhile."""
    if batch.woken.is_set():
        await asyncio.sleep(0)
    elif seconds < _SHORT_NAP:
        await asyncio.sleep(max(0.0, seconds))
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.woken.wait(), seconds)


class _Results:
    """The output and error files of a batch, written line by line as it runs."""

    def __init__(self, store: FileStore) -> None:
        self.output_id, self.output_path = store.reserve()
        self.error_id, self.error_path = store.reserve()
        self.output = self.output_path.open("wb")
        self.errors = self.error_path.open("wb")

    def close(self) -> None:
        self.output.close()
        self.errors.close()


async def run(batch: Batch, source: IO[bytes], runner: Runner) -> None:
    """Take *batch* from validating to its end, reading its input from *source*."""
    config = runner.config
    results = _Results(runner.store)
    try:
        await _nap(batch, config.batch_state_seconds)
        await _validate_and_run(batch, source, runner, results)
    except Exception as exc:
        # A simulator bug: fail the batch visibly rather than leave it running.
        message = f"The simulator failed: {exc!r}"
        batch.errors = [
            {"code": "simulator_error", "message": message, "param": None, "line": None}
        ]
        runner.enter(batch, "failed")
        raise
    finally:
        source.close()
        results.close()
        for path in (results.output_path, results.error_path):
            if batch.status == "failed":
                path.unlink(missing_ok=True)


async def _validate_and_run(
    batch: Batch, source: IO[bytes], runner: Runner, results: _Results
) -> None:
    """Fail the batch on what validation finds, else answer its lines."""
    config = runner.config
    checked = await asyncio.to_thread(check_input, source, batch.endpoint, config)
    if batch.ordinal in config.batch_fail and not checked.errors:
        message = "The batch failed (simulated by SimConfig.batch_fail)."
        failure = {"code": "invalid_request", "message": message, "param": None}
        checked.errors.append({**failure, "line": None})
    if batch.status == "cancelling":
        await _end_cancelled(batch, runner, results)
    elif checked.errors:
        batch.errors = checked.errors
        runner.enter(batch, "failed")
    else:
        await _process(batch, source, checked, runner, results)


async def _process(
    batch: Batch,
    source: IO[bytes],
    checked: CheckedInput,
    runner: Runner,
    results: _Results,
) -> None:
    config = runner.config
    batch.model = checked.deployment
    batch.counts["total"] = len(checked.offsets)
    runner.enter(batch, "in_progress")
    order = list(range(len(checked.offsets)))
    # Azure answers lines in no particular order; a seeded shuffle says so.
    random.Random(f"{config.seed}:{batch.ordinal}").shuffle(order)
    expire_after = config.batch_expire_after.get(batch.ordinal)
    operation = operation_of(batch.endpoint) or "chat"
    started = time.monotonic()
    for done, index in enumerate(order):
        await _pace(batch, config, started, done)
        stop = "cancelled" if batch.status == "cancelling" else None
        stop = "expired" if done == expire_after else stop
        if stop is not None:
            if config.batch_unfinished_in_error_file:
                unanswered = [checked.offsets[i] for i in order[done:]]
                _write_unfinished(source, unanswered, stop, results)
            if stop == "cancelled":
                await _cancelling(batch, config)
            _end(batch, runner, stop, results)
            return
        source.seek(checked.offsets[index])
        line = source.readline()
        answered = answer_line(line, operation, batch.api_version, config, runner.infer)
        _note(batch, runner, answered, results)
    runner.enter(batch, "finalizing")
    await _nap(batch, config.batch_state_seconds)
    _end(batch, runner, "completed", results)


async def _pace(batch: Batch, config: SimConfig, started: float, done: int) -> None:
    """Wait until line *done* is due at the configured pace."""
    rate = config.batch_lines_per_second
    wait = -1.0 if rate is None else started + done / rate - time.monotonic()
    if wait > 0:
        await _nap(batch, wait)
    elif done % _LINES_PER_TURN == 0:
        await asyncio.sleep(0)


def _note(
    batch: Batch, runner: Runner, answered: LineAnswer, results: _Results
) -> None:
    runner.ledger.add_batch_line(answered.custom_id)
    if answered.ok:
        results.output.write(answered.text)
        batch.counts["completed"] += 1
        if answered.usage is not None:
            batch.add_usage(answered.usage)
    else:
        results.errors.write(answered.text)
        batch.counts["failed"] += 1


def _write_unfinished(
    source: IO[bytes], offsets: list[int], status: str, results: _Results
) -> None:
    """Write an error line for each line a batch ended without answering."""
    for offset in offsets:
        source.seek(offset)
        results.errors.write(unfinished_line(source.readline(), status))


async def _cancelling(batch: Batch, config: SimConfig) -> None:
    """Stay ``cancelling`` the whole state time (on Azure up to 10 minutes)."""
    batch.woken.clear()  # the cancel that woke the batch does not cut this short
    await _nap(batch, config.batch_state_seconds)


async def _end_cancelled(batch: Batch, runner: Runner, results: _Results) -> None:
    await _cancelling(batch, runner.config)
    _end(batch, runner, "cancelled", results)


def _end(batch: Batch, runner: Runner, status: str, results: _Results) -> None:
    """Store the output and error files (an empty one too) and end the batch."""
    results.close()
    store = runner.store
    keep = batch.output_expires_after
    batch.output_file_id = store.add_written(
        results.output_id, results.output_path, f"{batch.id}_output.jsonl", keep
    ).id
    batch.error_file_id = store.add_written(
        results.error_id, results.error_path, f"{batch.id}_error.jsonl", keep
    ).id
    runner.enter(batch, status)
