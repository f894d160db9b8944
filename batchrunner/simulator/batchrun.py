"""
A batch's life on the simulator's loop: validating, in progress at the
configured pace, finalizing, and its end (completed, failed, expired, cancelled).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from batchrunner.simulator.batchlines import (
    CheckedInput,
    LineAnswer,
    answer_line,
    check_input,
    operation_of,
)
from batchrunner.simulator.config import Json, SimConfig
from batchrunner.simulator.content import _Call
from batchrunner.simulator.files import FileStore
from batchrunner.simulator.ledger import Ledger
from batchrunner.simulator.wire import _Answer

#: Statuses a batch does not leave.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

#: The statuses whose start a batch answers as ``{status}_at``.
_TIMED = (
    "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
    "cancelled",
)  # fmt: skip

#: Lines answered between two looks at the loop, so that calls are served.
_LINES_PER_TURN = 64


def _usage() -> Json:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


@dataclass
class Batch:
    """One batch, as the service keeps it (the fields of its answer)."""

    id: str
    ordinal: int
    endpoint: str
    input_file_id: str
    metadata: Json | None
    api_version: str
    created_at: int
    #: Tokens it holds of the enqueued-token quota until it ends.
    enqueued: int = 0
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    errors: list[Json] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None
    usage: Json = field(default_factory=_usage)

    def to_json(self) -> Json:
        """The batch object as the service answers it."""
        times = {f"{name}_at": self.times.get(name) for name in _TIMED}
        errors = (
            None if self.errors is None else {"object": "list", "data": self.errors}
        )
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            **times,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
            "model": self.model,
            "usage": self.usage,
        }

    def enter(self, status: str) -> None:
        self.status = status
        self.times[status] = int(time.time())

    def add_usage(self, usage: Json) -> None:
        total = self.usage
        prompt = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", 0))
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        reasoning = (usage.get("completion_tokens_details") or {}).get(
            "reasoning_tokens", 0
        )
        total["input_tokens"] += prompt
        total["input_tokens_details"]["cached_tokens"] += int(cached or 0)
        total["output_tokens"] += completion
        total["output_tokens_details"]["reasoning_tokens"] += int(reasoning or 0)
        total["total_tokens"] += int(usage.get("total_tokens", prompt + completion))


@dataclass
class Runner:
    """What a batch needs to run: the store, the settings and the answerer."""

    store: FileStore
    config: SimConfig
    ledger: Ledger
    infer: Callable[[_Call, str], _Answer]


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
        await asyncio.sleep(config.batch_state_seconds)
        checked = await asyncio.to_thread(check_input, source, batch.endpoint, config)
        if batch.ordinal in config.batch_fail and not checked.errors:
            message = "The batch failed (simulated by SimConfig.batch_fail)."
            checked.errors.append(
                {
                    "code": "invalid_request",
                    "message": message,
                    "param": None,
                    "line": None,
                }
            )
        if batch.status == "cancelling":
            await _end_cancelled(batch, runner, results)
        elif checked.errors:
            batch.errors = checked.errors
            batch.enter("failed")
        else:
            await _process(batch, source, checked, runner, results)
    finally:
        source.close()
        results.close()
        for path in (results.output_path, results.error_path):
            if batch.status == "failed":
                path.unlink(missing_ok=True)


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
    batch.enter("in_progress")
    order = list(range(len(checked.offsets)))
    # Azure answers lines in no particular order; a seeded shuffle says so.
    random.Random(f"{config.seed}:{batch.ordinal}").shuffle(order)
    expire_after = config.batch_expire_after.get(batch.ordinal)
    operation = operation_of(batch.endpoint) or "chat"
    started = time.monotonic()
    for done, index in enumerate(order):
        if batch.status == "cancelling":
            await _end_cancelled(batch, runner, results)
            return
        if done == expire_after:
            _end(batch, runner, "expired", results)
            return
        await _pace(config, started, done)
        source.seek(checked.offsets[index])
        line = source.readline()
        answered = answer_line(line, operation, batch.api_version, config, runner.infer)
        _note(batch, runner, answered, results)
    batch.enter("finalizing")
    await asyncio.sleep(config.batch_state_seconds)
    _end(batch, runner, "completed", results)


async def _pace(config: SimConfig, started: float, done: int) -> None:
    """Wait until line *done* is due at the configured pace."""
    rate = config.batch_lines_per_second
    wait = -1.0 if rate is None else started + done / rate - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
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


async def _end_cancelled(batch: Batch, runner: Runner, results: _Results) -> None:
    await asyncio.sleep(runner.config.batch_state_seconds)
    _end(batch, runner, "cancelled", results)


def _end(batch: Batch, runner: Runner, status: str, results: _Results) -> None:
    """Store the output and error files (an empty one too) and end the batch."""
    results.close()
    store = runner.store
    batch.output_file_id = store.add_written(
        results.output_id,
        results.output_path,
        f"{batch.id}_output.jsonl",
        "batch_output",
    ).id
    batch.error_file_id = store.add_written(
        results.error_id, results.error_path, f"{batch.id}_error.jsonl", "batch_output"
    ).id
    batch.enter(status)
