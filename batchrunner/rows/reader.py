"""
Read input rows lazily, each with the line it starts on: CSV (with a header)
or JSONL, plain or gzip, from a file or stdin. A million-row file never sits in
memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from batchrunner.config.sections import InputSettings
from batchrunner.records import Row

if TYPE_CHECKING:
    pass
from batchrunner.rows.csv import csv_rows
from batchrunner.rows.files import (
    check_readable,
    decoded_lines,
    input_format,
    open_binary,
)
from batchrunner.rows.jsonl import jsonl_rows

#: How many JSONL rows ``validate`` looks at to list the columns.
COLUMN_SAMPLE_ROWS = 1000


_COPY_BUFFER = 1 << 20


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


def _rows(
    path: str, shown: str, kind: str, compressed: bool, settings: InputSettings
) -> Iterator[Row]:
    with open_binary(path, compressed) as stream:
        lines = decoded_lines(stream, shown)
        if kind == "csv":
            yield from csv_rows(lines, shown, settings)
        else:
            yield from jsonl_rows(lines, shown, settings)
