"""
JSON Lines results: the sink, and the byte-level readers that resume, merge
and the spend count share with it, so all agree on what a complete record is.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from batchrunner.errors import UsageError
from batchrunner.results.append import AppendOnlyFile

log = logging.getLogger("batchrunner.results.sinks")

SCAN_CHUNK = 1 << 16


# '{"id":"…","status":"…"': how every record we write begins (see records.to_record).
_HEAD = re.compile(rb'\{"id":"([^"\\]*(?:\\.[^"\\]*)*)","status":"([a-z_]*)"[,}]')


INPUT_KEY = b',"input":{'


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
        value, ensure_ascii=False, separators=(",", ":"), default=json_default
    )


def json_default(value: Any) -> Any:
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
            json.dumps(record, separators=(",", ":"), default=json_default).encode()
            + b"\n"
            for record in records
        )


def _rfind_newline(reader: BinaryIO, end: int) -> int:
    """The offset of the last newline before *end* in *reader*, or -1."""
    while end > 0:
        start = max(0, end - SCAN_CHUNK)
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


class JsonlSink(AppendOnlyFile):
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
