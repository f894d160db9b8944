"""
Parquet results: records stream to a JSONL journal, and the Parquet file is
rendered from it with typed columns when the sink closes.

Parquet cannot be appended to, so the journal is what a re-run resumes from.
This module is imported only for ``.parquet`` outputs: pyarrow is heavy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrunner.errors import UsageError
from batchrunner.results.arrow import fixed_type, input_type, nested_schema, slice_batch
from batchrunner.results.jsonl import (
    INPUT_KEY,
    JsonlSink,
    jsonl_lines,
    line_head,
    parse_record,
    record_head,
    record_id,
)
from batchrunner.results.layout import (
    FIXED_COLUMNS,
    journal_path,
    replace_atomically,
    unflatten_record,
)

log = logging.getLogger("batchrunner.results.sinks")

ANSWER_KEY = b'"answer":{'
# Parquet is rendered in slices this big, so that memory stays bounded however long
# the journal grows.
_RENDER_BYTES = 32 << 20
_RENDER_ROWS = 50_000


class ParquetSink:
    """
    Results as Parquet: records stream to a JSONL journal, rendered on ``close()``.

    The journal stays beside the Parquet file: it is what a re-run resumes from.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = JsonlSink(journal_path(path))
        self._closed = False
        try:
            _restore_journal(self.journal, path)
        except BaseException:
            self.journal.close()
            raise

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records* to the journal and flush them to the OS."""
        self.journal.write(records)

    def close(self) -> None:
        """Render the Parquet file from the journal; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self.journal.close()
        render_parquet(self.journal.path, self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _restore_journal(journal: JsonlSink, parquet: Path) -> None:
    """
    Copy into *journal* the rows of *parquet* it lacks.

    Rendering replaces the Parquet file with the journal's rows, so a journal that was
    deleted (or lost) must get the earlier rows back first. Copying only missing ids is
    idempotent, so a crash half way through is mended by the next open.
    """
    if not parquet.exists():
        return
    missing = set(read_parquet_columns(parquet, ["id"])["id"])
    missing.difference_update(
        head[0] for _, line in jsonl_lines(journal.path) if (head := line_head(line))
    )
    if not missing:
        return
    wanted = pa.array(sorted(missing), pa.string())
    with pq.ParquetFile(parquet) as source:
        for batch in source.iter_batches(batch_size=10_000):
            rows = batch.filter(pc.is_in(batch.column("id"), value_set=wanted))
            journal.write([unflatten_record(row) for row in rows.to_pylist()])
    log.warning(
        "%s lacked %d rows of %s; copied them back so they stay in the results",
        journal.path,
        len(missing),
        parquet,
    )


def read_parquet_columns(path: Path, names: list[str]) -> dict[str, list[Any]]:
    """The columns *names* of Parquet results *path*, as lists."""
    try:
        columns: dict[str, list[Any]] = pq.read_table(path, columns=names).to_pydict()
    except (pa.ArrowInvalid, KeyError) as exc:
        msg = (
            f"{path} is not a readable Parquet results file ({exc})."
            " Choose another --output, or move that file away."
        )
        raise UsageError(msg) from exc
    return columns


# Parquet rendering


def render_parquet(journal: Path, output: Path) -> None:
    """
    Write *output* from *journal*: the last record of each id, typed columns.

    Two passes keep memory bounded: the first finds each id's last line (and the input
    columns), the second converts those lines slice by slice. The file is replaced
    atomically, so a crash leaves the previous rendering.
    """
    last, answers, inputs = _render_plan(journal)
    schema = pa.schema(
        [pa.field(name, fixed_type(name)) for name in FIXED_COLUMNS]
        + [pa.field(name, input_type(kinds)) for name, kinds in answers.items()]
        + [pa.field(name, input_type(kinds)) for name, kinds in inputs.items()]
    )
    nested = nested_schema(schema)

    def fill(tmp: Path) -> None:
        with pq.ParquetWriter(str(tmp), schema) as parquet:
            for lines in _render_slices(journal, last):
                parquet.write_batch(slice_batch(lines, nested, schema))

    replace_atomically(output, fill)


Kinds = dict[str, set[type]]


def _render_plan(journal: Path) -> tuple[dict[str, int], Kinds, Kinds]:
    """Each id's last line, and the value types seen in each answer and input column."""
    last: dict[str, int] = {}
    answers: Kinds = {}
    inputs: Kinds = {}
    for number, line in jsonl_lines(journal):
        found = _id_and_input(line)
        if found is None:
            continue
        row_id, given = found
        last[row_id] = number
        _note_kinds(inputs, "input_", given)
        if ANSWER_KEY in line:  # only structured runs pay for a full parse
            answer = (parse_record(line) or {}).get("answer")
            if isinstance(answer, dict):
                _note_kinds(answers, "answer_", answer)
    return last, answers, inputs


def _note_kinds(kinds: Kinds, prefix: str, values: dict[str, Any]) -> None:
    for column, value in values.items():
        seen = kinds.setdefault(prefix + column, set())
        if value is not None:
            seen.add(type(value))


def _id_and_input(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """The id and ``input`` object of a results line, parsing as little as it can."""
    head = record_head(line)
    if head is not None:
        # '{"id":…,"status":…' was matched, and a bare '"' cannot occur inside a JSON
        # string, so the first ',"input":{' is a key; when to_record put it last, the
        # text up to the final brace is exactly its object.
        marker = line.find(INPUT_KEY)
        if marker < 0:
            return head[0], {}
        inner = parse_record(line.rstrip()[marker + len(INPUT_KEY) - 1 : -1])
        if inner is not None:
            return head[0], inner
    record = parse_record(line)
    row_id = None if record is None else record_id(record)
    if record is None or row_id is None:
        return None
    given = record.get("input")
    return row_id, given if isinstance(given, dict) else {}


def _render_slices(journal: Path, last: dict[str, int]) -> Iterator[list[bytes]]:
    """Each id's last line, in file order, in slices of bounded size."""
    lines: list[bytes] = []
    size = 0
    for number, line in jsonl_lines(journal):
        head = line_head(line)
        if head is None or last.get(head[0]) != number:
            continue
        lines.append(line)
        size += len(line)
        if size >= _RENDER_BYTES or len(lines) >= _RENDER_ROWS:
            yield lines
            lines, size = [], 0
    if lines:
        yield lines
