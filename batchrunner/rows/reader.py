"""
Read input rows lazily, each with the line it starts on.

CSV (with a header) or JSONL, plain or gzip. Bytes are decoded one line at a time,
so an undecodable byte can be reported by line and column, and a million-row file
never sits in memory.
"""

from __future__ import annotations

import csv
import gzip
import json
import json.scanner
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from batchrunner.config.settings import InputSettings
from batchrunner.errors import CellError, InputError
from batchrunner.records import Row

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

#: Input suffix → (format, gzip-compressed).
FORMATS = {
    ".csv": ("csv", False),
    ".csv.gz": ("csv", True),
    ".jsonl": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False),
    ".ndjson.gz": ("jsonl", True),
}
#: How many JSONL rows ``validate`` looks at to list the columns.
COLUMN_SAMPLE_ROWS = 1000

_BOM = "\ufeff"
_READ_BUFFER = 1 << 20
_COPY_BUFFER = 1 << 20
#: The csv module's default cap (128 KiB a field) is below a long document prompt.
_CSV_FIELD_LIMIT = 1 << 30
_ABSENT = object()


def open_rows(
    path: str, settings: InputSettings, *, name: str | None = None
) -> Iterator[Row]:
    """
    The rows of the file at *path*, read lazily.

    The format follows the suffix (``.csv``, ``.jsonl``, ``.ndjson``, each
    optionally ``.gz``). *name* stands for *path* in error messages (``<stdin>``
    for a spooled stdin). A missing file or unknown suffix fails here, at once;
    a bad row fails when it is reached.
    """
    shown = name or path
    kind, compressed = input_format(path, shown)
    check_readable(path, shown)
    return _rows(path, shown, kind, compressed, settings)


def spool_stdin(stream: BinaryIO) -> Path:
    """
    Copy *stream* (stdin) to a temporary ``.jsonl`` file and return its path.

    Rows are read twice, to validate and then to send, and stdin reads once.
    The caller deletes the file.
    """
    with tempfile.NamedTemporaryFile(
        prefix="batchrunner-stdin-", suffix=".jsonl", delete=False
    ) as spool:
        try:
            shutil.copyfileobj(stream, spool, _COPY_BUFFER)
        except BaseException:
            os.unlink(spool.name)
            raise
    return Path(spool.name)


def input_format(path: str, shown: str | None = None) -> tuple[str, bool]:
    """``("csv" | "jsonl", compressed)`` for *path*, from its suffix."""
    if path == "-":
        # Reading stdin here would leave nothing for the second pass.
        msg = "stdin must be spooled first: open_rows(str(spool_stdin(stdin)))"
        raise ValueError(msg)
    lowered = path.lower()
    for suffix, found in FORMATS.items():
        if lowered.endswith(suffix):
            return found
    problem = (
        "cannot tell the input format from the file name; batchrunner reads"
        f" {', '.join(FORMATS)} files, or - for JSONL on stdin"
    )
    raise InputError(shown or path, None, None, problem)


def check_readable(path: str, shown: str) -> None:
    if os.path.isdir(path):
        raise InputError(shown, None, None, "is a directory, not an input file")
    if not os.path.exists(path):
        raise InputError(shown, None, None, "no such file")
    if not os.access(path, os.R_OK):
        raise InputError(shown, None, None, "permission denied: cannot read it")


def open_binary(path: str, compressed: bool) -> BinaryIO:
    """*path* opened for reading bytes; the caller closes it."""
    if compressed:
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb", buffering=_READ_BUFFER)


def _rows(
    path: str, shown: str, kind: str, compressed: bool, settings: InputSettings
) -> Iterator[Row]:
    with open_binary(path, compressed) as stream:
        lines = decoded_lines(stream, shown)
        if kind == "csv":
            yield from _csv_rows(lines, shown, settings)
        else:
            yield from _jsonl_rows(lines, shown, settings)


def decoded_lines(stream: Iterable[bytes], path: str) -> Iterator[str]:
    """Each physical line of *stream* as text, line ending kept, BOM dropped."""
    number = 0
    try:
        for number, raw in enumerate(stream, 1):
            try:
                text = raw.decode()
            except UnicodeDecodeError as exc:
                raise _undecodable(path, number, exc) from None
            if number == 1 and text.startswith(_BOM):
                text = text[1:]
            yield text
    except (OSError, EOFError, zlib.error) as exc:
        problem = f"cannot read the file: {exc}"
        raise InputError(path, number + 1, None, problem) from exc


def _undecodable(path: str, line: int, exc: UnicodeDecodeError) -> InputError:
    byte = exc.object[exc.start]
    problem = (
        f"byte 0x{byte:02x} is not UTF-8 text; save the file as UTF-8"
        " (in Excel: Save As → CSV UTF-8)"
    )
    return InputError(path, line, exc.start + 1, problem)


# --- JSONL ------------------------------------------------------------------


def _jsonl_rows(
    lines: Iterable[str], path: str, settings: InputSettings
) -> Iterator[Row]:
    # The scanner under json.loads, called directly: this loop is the hot path
    # of a million-row file, and loads' own checks cost as much as the parse.
    scan = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))
    id_column = settings.id_column
    number = 0
    for line, text in enumerate(lines, 1):
        try:
            fields, end = scan(text, 0)
            whole = end == len(text) or text[end:].isspace()
        except (StopIteration, json.JSONDecodeError):
            whole = False
        if not whole:
            if text.isspace():
                continue
            # Leading spaces or a fault: loads finds the value or says where.
            fields = _loads(text, path, line)
        if type(fields) is not dict:
            raise _not_an_object(path, line, fields)
        number += 1
        row_id = fields.get(id_column)
        if type(row_id) is not str or not (row_id := row_id.strip()):
            row_id = _json_id(fields, id_column, number, path, line)
        yield Row(row_id, line, fields)


def _loads(text: str, path: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = (
            f"not valid JSON: {exc.msg}; each line must be one JSON object,"
            ' like {"id": "1", "prompt": "Hello"}'
        )
        raise InputError(path, line, exc.colno, problem) from None


def _not_an_object(path: str, line: int, value: Any) -> InputError:
    problem = (
        f"the line holds {json_type(value)}, not a JSON object; each line must be"
        ' one object, like {"id": "1", "prompt": "Hello"}'
    )
    return InputError(path, line, 1, problem)


def _json_id(
    fields: dict[str, Any], id_column: str, number: int, path: str, line: int
) -> str:
    """The id of a JSONL row: its id value as text, else its row *number*."""
    value = fields.get(id_column, _ABSENT)
    if value is _ABSENT:
        return str(number)
    if type(value) is str:
        return _nonempty_id(value, id_column, path, line)
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return str(int(value)) if value.is_integer() else str(value)
    problem = (
        f"empty id: the {id_column!r} value is {json_type(value)}; an id is a"
        " non-empty string or a number"
    )
    raise CellError(path, line, id_column, problem)


def _nonempty_id(value: str, id_column: str, path: str, line: int) -> str:
    row_id = value.strip()
    if not row_id:
        problem = (
            f"empty id: the {id_column!r} cell is blank; give every row an id,"
            " or drop the column to number rows from 1"
        )
        raise CellError(path, line, id_column, problem)
    return row_id


# --- CSV --------------------------------------------------------------------


def _csv_rows(
    lines: Iterable[str], path: str, settings: InputSettings
) -> Iterator[Row]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = _csv_reader(lines)
    header, _ = _csv_header(reader, path)
    width = len(header)
    id_column = settings.id_column
    id_index = header.index(id_column) if id_column in header else None
    number = 0
    start = reader.line_num + 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if len(record) != width:
                if _is_blank_record(record):
                    continue
                raise _width_error(path, line, len(record), width)
            number += 1
            if id_index is None:
                row_id = str(number)
            else:
                row_id = _nonempty_id(record[id_index], id_column, path, line)
            yield Row(row_id, line, dict(zip(header, record, strict=True)))
    except csv.Error as exc:
        raise _csv_error(path, start, reader.line_num, exc) from None


def _csv_header(reader: CsvReader, path: str) -> tuple[list[str], int]:
    """The header record and its line; lines before it may only be blank."""
    try:
        header = next((r for r in reader if not _is_blank_record(r)), None)
    except csv.Error as exc:
        raise _csv_error(path, 1, reader.line_num, exc) from None
    if header is None:
        problem = (
            "the file is empty; a CSV file starts with a header row naming its"
            " columns, like id,prompt"
        )
        raise InputError(path, None, None, problem)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problem = (
                f"column {name!r} appears twice in the header; names must be unique"
            )
            raise InputError(path, reader.line_num, None, problem)
        seen.add(name)
    return header, reader.line_num


def _csv_reader(lines: Iterable[str]) -> CsvReader:
    # strict: an unclosed quote is an error, not a field that eats the file.
    return csv.reader(lines, strict=True)


def _is_blank_record(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def _width_error(path: str, line: int, found: int, width: int) -> InputError:
    if found > width:
        hint = 'quote a value that contains a comma, like "a, b"'
    else:
        hint = "give every row a value (maybe empty) for each column"
    problem = f"this row has {found} fields but the header has {width}; {hint}"
    return InputError(path, line, None, problem)


def _csv_error(path: str, start: int, line: int, exc: csv.Error) -> InputError:
    reason = str(exc)
    if "unexpected end of data" in reason:
        problem = (
            f"the quoted field that starts in the row on line {start} is never"
            ' closed; end it with ", and write a quote inside a field as ""'
        )
        return InputError(path, start, None, problem)
    if "new-line character" in reason:
        hint = "save the file with Windows (CRLF) or Unix (LF) line endings"
    else:
        hint = 'a value with quotes is written as "say ""hi"""'
    return InputError(path, line, None, f"not valid CSV: {reason}; {hint}")


def read_header(path: str, shown: str | None = None) -> tuple[list[str], int]:
    """The header of the CSV file at *path*, and the line it is on."""
    _, compressed = input_format(path, shown)
    with open_binary(path, compressed) as stream:
        shown = shown or path
        return _csv_header(_csv_reader(decoded_lines(stream, shown)), shown)


def json_type(value: Any) -> str:
    """*value*'s type in JSON's words, for messages to people who wrote JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
