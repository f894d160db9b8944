"""
Collecting ended batches: their output and error files downloaded (streamed to
disk), mapped back to rows by ``custom_id``, and appended as results records in
input order, each row at most once.

Collecting happens exactly once per batch: the batch is marked *collecting* in
the state file before anything is appended and *collected* after. A batch found
still marked *collecting* (the last run was killed while writing) is collected
again, skipping the rows the results already hold from it: an ``ok`` row is
never appended twice, and neither is an error line (known by its request id, or
for a line without one, by its row's earlier error record). So a batch collected
again for any reason, even with the state file lost, appends nothing twice.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

from openai.types import Batch

from batchrunner.errors import ApiFailure
from batchrunner.records import Api, RowResult
from batchrunner.send.batch.answers import result_from_line, validation_error
from batchrunner.send.batch.lifecycle import validation_faults
from batchrunner.send.batch.lines import custom_id, custom_ids
from batchrunner.send.batch.service import BatchService
from batchrunner.send.batch.state import load_state, save_state

log = logging.getLogger("batchrunner")

#: Results handed to the writer at once (one write, one flush).
WRITE_BATCH = 512
#: Index entries pack (file number, byte offset) into one int: offsets < 1 TiB.
_OFFSET_BITS = 40

#: Each input row's id and the columns its record carries, in input order.
RowColumns = Callable[[], Iterable[tuple[str, dict[str, Any]]]]


@dataclass
class Ledger:
    """Which rows the results hold: ok ones, and those failed during this run."""

    done: set[str]
    #: Rows an earlier run recorded as failed (and not ok since).
    failed_before: AbstractSet[str] = frozenset()
    #: The request ids of the error records the results hold.
    failed_requests: set[str] = field(default_factory=set)
    failed_now: set[str] = field(default_factory=set)


class Collector:
    """Appends the answers of ended batches through *write*, once each."""

    def __init__(
        self,
        service: BatchService,
        *,
        api: Api,
        state_file: Path,
        rows: RowColumns,
        ledger: Ledger,
        write: Callable[[Sequence[RowResult]], None],
        check: Callable[[RowResult], RowResult] | None = None,
    ) -> None:
        self.service = service
        self.api = api
        self.state_file = state_file
        self.rows = rows
        self.ledger = ledger
        self.write = write
        self.check = check

    def collected(self) -> set[str]:
        """The ids of the batches already in the results."""
        return load_state(self.state_file).collected

    async def collect(self, batches: Sequence[Batch]) -> int:
        """Append the rows of the ended *batches*; return how many were written."""
        if not batches:
            return 0
        state = load_state(self.state_file)
        ids = {batch.id for batch in batches}
        again = ids & state.collecting
        state.collecting |= ids
        save_state(self.state_file, state)
        with tempfile.TemporaryDirectory(prefix="batchrunner-collect-") as folder:
            answers = _Answers(Path(folder))
            for batch in batches:
                await self._fetch(batch, answers, again=batch.id in again)
            written = self._append(answers)
        state.collecting -= ids
        state.collected |= ids
        save_state(self.state_file, state)
        return written

    async def _fetch(self, batch: Batch, answers: _Answers, *, again: bool) -> None:
        # The error file first: should a row be in both, its answer wins.
        for file_id in (batch.error_file_id, batch.output_file_id):
            if file_id:
                target = answers.new_file(again=again)
                await self.service.download(file_id, target)
                answers.index(target)
        faults = validation_faults(batch) if batch.status == "failed" else []
        if faults:
            target = answers.folder / f"input-{batch.id}.jsonl"
            if not await self._input_of(batch, target):
                return
            with target.open("rb") as lines:
                by_line = dict(enumerate(custom_ids(lines), start=1))
            for fault in faults:
                row_id = by_line.get(fault.line)
                if row_id is not None:
                    error = validation_error(fault.code, fault.message, fault.line)
                    answers.faults[row_id] = (error, again)

    async def _input_of(self, batch: Batch, target: Path) -> bool:
        """
        Download the input file of *batch* into *target*; False when it is gone
        (deleted once the batch was collected, which this collects again): its
        rows then count as unanswered and are sent again.
        """
        try:
            await self.service.download(batch.input_file_id, target)
        except ApiFailure as failure:
            if failure.status_code != HTTPStatus.NOT_FOUND:
                raise
            log.warning(
                "the input file of batch %s is gone: its rows that failed validation"
                " are sent again", batch.id,
                extra={"event": "batch_input_gone", "batch_id": batch.id},
            )  # fmt: skip
            return False
        return True

    def _append(self, answers: _Answers) -> int:
        written = 0
        buffer: list[RowResult] = []
        for row_id, columns in self.rows():
            found = answers.take(row_id, self.api)
            if found is None:
                continue
            kept = self._keep(*found)
            if kept is None:
                continue
            buffer.append(replace(kept, passthrough=columns))
            if len(buffer) >= WRITE_BATCH:
                self.write(buffer)
                written += len(buffer)
                buffer = []
        if buffer:
            self.write(buffer)
            written += len(buffer)
        answers.close()
        if answers.left:
            log.warning(
                "%d answered rows are not in the input (was it changed?): not recorded",
                answers.left,
                extra={"event": "batch_unknown_rows", "rows": answers.left},
            )
        return written

    def _keep(self, result: RowResult, again: bool) -> RowResult | None:
        """*result* as it is to be recorded, or None when the results hold it."""
        ledger = self.ledger
        if result.id in ledger.done:
            return None
        if self.check is not None:
            result = self.check(result)
        if result.status == "ok":
            ledger.done.add(result.id)
            return result
        request_id = result.request_id
        if request_id is not None and request_id in ledger.failed_requests:
            return None  # this very line is recorded already
        if request_id is None and again and result.id in ledger.failed_before:
            return None  # written by the run that was killed collecting it
        if request_id is not None:
            ledger.failed_requests.add(request_id)
        ledger.failed_now.add(result.id)
        return result


class _Answers:
    """The downloaded output and error files of some batches, indexed by row id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.faults: dict[str, tuple[Any, bool]] = {}
        self._paths: list[Path] = []
        self._again: list[bool] = []
        self._handles: dict[int, BinaryIO] = {}
        self._where: dict[str, int] = {}

    def new_file(self, *, again: bool) -> Path:
        path = self.folder / f"answers-{len(self._paths):04d}.jsonl"
        self._paths.append(path)
        self._again.append(again)
        return path

    def index(self, path: Path) -> None:
        number = self._paths.index(path)
        offset = 0
        with path.open("rb") as lines:
            for line in lines:
                row_id = custom_id(line)
                if row_id is not None:
                    self._where[row_id] = number << _OFFSET_BITS | offset
                offset += len(line)

    def take(self, row_id: str, api: Api) -> tuple[RowResult, bool] | None:
        """The result for *row_id* and whether its batch is collected again."""
        packed = self._where.pop(row_id, None)
        if packed is None:
            fault = self.faults.pop(row_id, None)
            if fault is None:
                return None
            error, again = fault
            return _fault_result(row_id, error), again
        number, offset = packed >> _OFFSET_BITS, packed & ((1 << _OFFSET_BITS) - 1)
        handle = self._handle(number)
        handle.seek(offset)
        result = result_from_line(handle.readline(), api)
        if result is None:  # the batch ended before answering it
            return None
        return result, self._again[number]

    def _handle(self, number: int) -> BinaryIO:
        handle = self._handles.get(number)
        if handle is None:
            handle = self._handles[number] = self._paths[number].open("rb")
        return handle

    @property
    def left(self) -> int:
        """Answers no input row claimed."""
        return len(self._where) + len(self.faults)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def _fault_result(row_id: str, error: Any) -> RowResult:
    return RowResult(
        id=row_id, status="error", reply=None, error=error, attempts=1,
        latency_ms=None, request_id=None,
    )  # fmt: skip


def ids_in(lines: Iterator[bytes]) -> set[str]:
    """The row ids of an input file's *lines*."""
    return set(custom_ids(lines))
