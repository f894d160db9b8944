"""
CSV results: the sink (flattened ``usage_*``, ``error_*``, ``answer_*`` and
``input_*`` columns) and the scanner that finds where complete records end.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from batchrunner.errors import UsageError
from batchrunner.results.append import AppendOnlyFile
from batchrunner.results.jsonl import dumps
from batchrunner.results.layout import FIXED_COLUMNS, flatten_record

log = logging.getLogger("batchrunner.results.sinks")

# csv's default 128 KiB field limit is smaller than a long answer or a large embedding.
_CSV_FIELD_LIMIT = 2**31 - 1


class _Lines:
    """Decoded lines of a binary file for csv.reader, counting the bytes handed out."""

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader
        self.offset = 0
        self.ended = True

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._reader.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.ended = raw.endswith(b"\n")
        return raw.decode("utf-8")


def csv_records(
    path: Path, reader: BinaryIO, size: int
) -> Iterator[tuple[list[str], int]]:
    """
    The complete records of CSV results *path*, header first, each with its end offset.

    A record is complete when it parses, has the header's width and ends in a newline.
    Stops quietly before a torn tail (a record cut off at the end of the file) and
    raises UsageError on damage anywhere else, which no append could repair.
    """
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader.seek(0)
    lines = _Lines(reader)
    rows = csv.reader(lines, strict=True)
    width = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            _torn_or_raise(path, lines, size, rows.line_num, str(exc))
            return
        if not row and lines.ended:
            continue
        if not width and lines.ended:
            row = _check_header(path, row)
            width = len(row)
        if len(row) != width or not lines.ended:
            problem = f"{len(row)} fields where the header has {width}"
            _torn_or_raise(path, lines, size, rows.line_num, problem)
            return
        yield row, lines.offset


def _torn_or_raise(
    path: Path, lines: _Lines, size: int, line: int, problem: str
) -> None:
    if lines.offset >= size:
        return  # the last record was cut short by a crash: the sink drops it
    msg = (
        f"{path}:{line}: damaged results record ({problem}); resuming could lose rows."
        " Repair that line, or move the file away (--fresh does it)."
    )
    raise UsageError(msg)


def _check_header(path: Path, row: list[str]) -> list[str]:
    if row and row[0].startswith("\ufeff"):  # a spreadsheet saved it with a BOM
        row = [row[0][1:], *row[1:]]
    if "id" not in row or "status" not in row:
        msg = (
            f"{path} is not a CSV results file: its header has no 'id' and 'status'"
            " columns. Choose another --output, or move that file away."
        )
        raise UsageError(msg)
    return row


class CsvSink(AppendOnlyFile):
    """Results as CSV, flattened: ``usage_*``, ``error_*`` and ``input_*`` columns."""

    def __init__(self, path: Path, answer_columns: Sequence[str] = ()) -> None:
        self.path = path
        self._header: list[str] | None = None
        self._answers = list(answer_columns)
        self._warned = False
        self._open(self._measure)

    def _measure(self, reader: BinaryIO, size: int) -> int:
        keep = 0
        for row, end in csv_records(self.path, reader, size):
            self._header = self._header or row
            keep = end
        return keep

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records* and flush them to the OS."""
        if not records:
            return
        rows = [flatten_record(record) for record in records]
        text = io.StringIO()
        if self._header is None:
            answers = dict.fromkeys(self._answers)
            answers.update(
                dict.fromkeys(k for row in rows for k in row if k.startswith("answer_"))
            )
            inputs = dict.fromkeys(
                k for row in rows for k in row if k.startswith("input_")
            )
            self._header = [*FIXED_COLUMNS, *answers, *inputs]
            csv.writer(text, lineterminator="\n").writerow(self._header)
        self._warn_dropped(rows, self._header)
        _write_csv_rows(text, self._header, rows)
        self._append(text.getvalue().encode("utf-8", "backslashreplace"))

    def _warn_dropped(self, rows: list[dict[str, Any]], header: list[str]) -> None:
        if self._warned:
            return
        dropped = {key for row in rows for key in row}.difference(header)
        if dropped:
            self._warned = True
            log.warning(
                "%s has no columns for %s (its header was fixed when the file was"
                " started); those values are left out",
                self.path,
                ", ".join(sorted(dropped)),
            )


def _write_csv_rows(
    text: io.StringIO, header: list[str], rows: list[dict[str, Any]]
) -> None:
    minimal = csv.writer(text, lineterminator="\n")
    # csv quotes "\n" but not a bare "\r" when lines end in "\n", and readers take an
    # unquoted "\r" for a line end; such rows get every field quoted.
    quote_all = csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [_csv_cell(row.get(column)) for column in header]
        writer = quote_all if any("\r" in cell for cell in cells) else minimal
        writer.writerow(cells)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return dumps(value)  # embeddings, lists of outputs, nested input values
