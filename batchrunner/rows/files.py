"""
Opening an input file: its format by suffix, gzip, and its text decoded one line
at a time, so an undecodable byte is reported by line and column.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from batchrunner.errors import CellError, InputError

if TYPE_CHECKING:
    pass


#: Input suffix → (format, gzip-compressed).
FORMATS = {
    ".csv": ("csv", False),
    ".csv.gz": ("csv", True),
    ".jsonl": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False),
    ".ndjson.gz": ("jsonl", True),
}


_BOM = "\ufeff"


_READ_BUFFER = 1 << 20


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


def nonempty_id(value: str, id_column: str, path: str, line: int) -> str:
    row_id = value.strip()
    if not row_id:
        problem = (
            f"empty id: the {id_column!r} cell is blank; give every row an id,"
            " or drop the column to number rows from 1"
        )
        raise CellError(path, line, id_column, problem)
    return row_id


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
