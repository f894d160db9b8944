"""
Results files: append-only sinks for JSONL, CSV and Parquet, and the files beside them.

A sink appends to an existing results file (a re-run resumes it), first cutting off a
record torn by ``kill -9``, and hands each batch to the OS before returning, so a crash
loses at most the rows in flight. Parquet cannot be appended to: its records stream to
a JSONL journal beside it, and ``close()`` renders the Parquet file from the journal.

The format readers (where the complete records end, CSV scanning, flattening) live here
too, so that ``resume`` and the sinks agree byte for byte on what a complete record is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol, Self

from batchrunner.errors import UsageError
from batchrunner.results.lock import flock_or_refuse, held

if sys.platform != "win32":
    pass

log = logging.getLogger("batchrunner.results.sinks")

#: The flat columns of CSV and Parquet results, in order; ``answer_<field>`` ones (a
#: structured answer) follow, then ``input_<col>`` ones.
FIXED_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "output",
    "embedding",
    "finish_reason",
    "usage_prompt_tokens",
    "usage_completion_tokens",
    "usage_total_tokens",
    "usage_cached_tokens",
    "usage_reasoning_tokens",
    "model",
    "attempts",
    "latency_ms",
    "request_id",
    "error_type",
    "error_status_code",
    "error_code",
    "error_message",
    # Added later: last, so existing column positions hold.
    "reused",
)
INT_COLUMNS = frozenset(
    {name for name in FIXED_COLUMNS if name.startswith("usage_")}
    | {"attempts", "latency_ms", "error_status_code"}
)
FORMATS = (".jsonl", ".csv", ".parquet")
NESTED = ("usage", "error", "answer", "input")
_SCAN_CHUNK = 1 << 16
# csv's default 128 KiB field limit is smaller than a long answer or a large embedding.
_CSV_FIELD_LIMIT = 2**31 - 1
# '{"id":"…","status":"…"': how every record we write begins (see records.to_record).
_HEAD = re.compile(rb'\{"id":"([^"\\]*(?:\\.[^"\\]*)*)","status":"([a-z_]*)"[,}]')
INPUT_KEY = b',"input":{'


class ResultSink(Protocol):
    """Where results records go: appended, and handed to the OS batch by batch."""

    path: Path

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records* and flush them to the OS before returning."""

    def close(self) -> None:
        """Finish the file; calling it again does nothing."""


def results_format(path: Path) -> str:
    """The format of results file *path*: ".jsonl", ".csv" or ".parquet"."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        msg = (
            f"cannot write results to {str(path)!r}: its name must end in .jsonl,"
            " .csv or .parquet (the suffix picks the format)"
        )
        raise ValueError(msg)
    return suffix


def open_sink(path: Path, answer_columns: Sequence[str] = ()) -> ResultSink:
    """
    A sink appending to *path* in the format its suffix names.

    *answer_columns* (``answer_<field>``, from the response schema) are the CSV
    columns a structured answer needs even when the first rows have none.
    """
    kind = results_format(path)
    if kind == ".parquet":
        from batchrunner.results.parquet import (
            ParquetSink,  # pyarrow only when asked for
        )

        return ParquetSink(path)
    if kind == ".csv":
        return CsvSink(path, answer_columns)
    return JsonlSink(path)


def summary_path(output: Path) -> Path:
    """Where the run summary of *output* goes: ``<dir>/<output stem>.summary.json``."""
    return output.with_name(f"{output.stem}.summary.json")


def journal_path(output: Path) -> Path:
    """The JSONL journal that a Parquet *output* is rendered from."""
    return output.with_name(f"{output.name}.journal.jsonl")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write *summary* to *path* as pretty JSON, replacing any old one atomically."""
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def backup_existing(output: Path, now: datetime | None = None) -> list[Path]:
    """
    Move *output*, its journal and its summary aside for ``--fresh``.

    Each becomes ``<name>.bak-YYYYmmdd-HHMMSS`` (plus ``-N`` when taken), all with the
    same suffix so they stay paired; returns the new paths of those that existed.
    """
    companions = [output, journal_path(output), summary_path(output)]
    present = [path for path in companions if path.exists()]
    if not present:
        return []
    suffix = _free_backup_suffix(companions, now or datetime.now())
    moved = [path.with_name(path.name + suffix) for path in present]
    for path, target in zip(present, moved, strict=True):
        path.rename(target)
    return moved


def _free_backup_suffix(paths: list[Path], now: datetime) -> str:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    suffix, counter = f".bak-{stamp}", 0
    while any(path.with_name(path.name + suffix).exists() for path in paths):
        counter += 1
        suffix = f".bak-{stamp}-{counter}"
    return suffix


def replace_atomically(target: Path, fill: Callable[[Path], object]) -> None:
    """Have *fill* write a temporary file beside *target*, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the results a team shares.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fill(tmp)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Records


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """*record* with ``usage``/``error``/``input`` spread into prefixed columns."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in NESTED and isinstance(value, Mapping):
            for name, item in value.items():
                flat[f"{key}_{name}"] = item
        else:
            flat[key] = value
    return flat


def unflatten_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSONL record of a flat row (``flatten_record`` undone, nulls left out)."""
    record: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {name: {} for name in NESTED}
    for key, value in row.items():
        group, _, name = key.partition("_")
        if group in groups and name:
            groups[group][name] = value
        elif value is not None or key in ("id", "status"):
            record[key] = value
    usage = {
        name: value for name, value in groups["usage"].items() if value is not None
    }
    if usage:
        record["usage"] = usage
    if any(value is not None for value in groups["error"].values()):
        record["error"] = groups["error"]
    if any(value is not None for value in groups["answer"].values()):
        record["answer"] = groups["answer"]
    if groups["input"]:
        record["input"] = groups["input"]
    return record


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The JSON object on *line*, or None when it is not one."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def record_id(record: Mapping[str, Any]) -> str | None:
    """The id of *record* as a string, or None when it has no usable one."""
    value = record.get("id")
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def record_head(line: bytes) -> tuple[str, str] | None:
    """
    The id and status of a results line, read from its first bytes.

    None when the line does not begin the way this module writes records; the caller
    then parses it in full.
    """
    match = _HEAD.match(line)
    if match is None:
        return None
    raw, status = match.groups()
    try:
        row_id = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    except ValueError:
        return None
    return row_id, status.decode()


def line_head(line: bytes) -> tuple[str, str] | None:
    """The id and status of a results line, or None when the line is damaged."""
    head = record_head(line)
    if head is not None:
        return head
    record = parse_record(line)
    row_id = None if record is None else record_id(record)
    if record is None or row_id is None:
        return None
    status = record.get("status")
    return row_id, status if isinstance(status, str) else ""


def dumps(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), default=_json_default
    )


def _json_default(value: Any) -> Any:
    # numpy arrays and scalars, should an embedding arrive as one.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    msg = f"Object of type {type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


def encode_jsonl(records: Sequence[Mapping[str, Any]]) -> bytes:
    """*records* as UTF-8 JSONL, one line each."""
    text = "".join([dumps(record) + "\n" for record in records])
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a model's broken escape) has no UTF-8 form; \u-escaping
        # the records keeps them lossless and the file valid.
        return b"".join(
            json.dumps(record, separators=(",", ":"), default=_json_default).encode()
            + b"\n"
            for record in records
        )


# Where the complete records of a file end


def _rfind_newline(reader: BinaryIO, end: int) -> int:
    """The offset of the last newline before *end* in *reader*, or -1."""
    while end > 0:
        start = max(0, end - _SCAN_CHUNK)
        reader.seek(start)
        found = reader.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def jsonl_keep_size(path: Path, reader: BinaryIO, size: int) -> int:
    """
    The length of JSONL *path* up to the end of its last complete record.

    A complete record is a line that holds a JSON object; what follows the last one is
    a torn or damaged tail. Raises UsageError when whole lines exist but none is a
    record: that is some other file, not one to cut down to nothing.
    """
    last = _rfind_newline(reader, size) + 1
    reader.seek(last)
    # A crash between a record and its newline leaves the record whole (no prefix of
    # a JSON object parses as one): keep it, so its row is not sent again.
    if last < size and parse_record(reader.read(size - last)) is not None:
        return size
    end = size
    while (newline := _rfind_newline(reader, end)) >= 0:
        start = _rfind_newline(reader, newline) + 1
        reader.seek(start)
        if parse_record(reader.read(newline - start)) is not None:
            return newline + 1
        end = start
    if _rfind_newline(reader, size) >= 0:
        msg = (
            f"{path} is not a JSONL results file: none of its lines is a JSON object."
            " Choose another --output, or move that file away."
        )
        raise UsageError(msg)
    return 0


def jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The 1-based number and bytes of each line of *path* before its torn tail."""
    with path.open("rb") as reader:
        keep = jsonl_keep_size(path, reader, os.fstat(reader.fileno()).st_size)
        reader.seek(0)
        offset = 0
        for number, line in enumerate(reader, 1):
            offset += len(line)
            if offset > keep:
                return
            yield number, line


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


# Sinks


class _Sink:
    """What every sink shares: an append handle, locked, on a repaired file."""

    path: Path
    _file: io.BufferedWriter

    def _open(self, measure: Callable[[BinaryIO, int], int]) -> None:
        """Open ``path`` for appending after cutting it to ``measure(reader, size)``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            _lock(handle, self.path)
            with self.path.open("rb") as reader:
                size = os.fstat(reader.fileno()).st_size
                keep = measure(reader, size)
            if keep < size:
                log.warning(
                    "%s: cutting off %d bytes of a record left unfinished by an"
                    " interrupted run",
                    self.path,
                    size - keep,
                )
                os.ftruncate(handle.fileno(), keep)
        except BaseException:
            handle.close()
            raise
        self._file = handle

    def _append(self, data: bytes) -> None:
        # One write per batch: a crash tears at most its last record, and the next
        # open cuts that off.
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _lock(handle: io.BufferedWriter, path: Path) -> None:
    """Refuse a second writer: two runs on one file would cut each other's records."""
    if held(path):
        return  # held: the run locked it before reading the earlier results
    flock_or_refuse(handle, path)


class JsonlSink(_Sink):
    """Results as JSON Lines, one record a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open(lambda reader, size: jsonl_keep_size(path, reader, size))
        if os.fstat(self._file.fileno()).st_size and not _ends_with_newline(path):
            self._append(b"\n")  # the last record lost only its newline in a crash

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records* and flush them to the OS."""
        if records:
            self._append(encode_jsonl(records))


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as reader:
        reader.seek(-1, os.SEEK_END)
        return reader.read(1) == b"\n"


class CsvSink(_Sink):
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
