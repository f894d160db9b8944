"""
Results sinks: one per output format, each appending records as rows finish.

A sink appends to an existing results file (a re-run resumes it), first cutting off a
record torn by ``kill -9``, and hands each batch to the OS before returning, so a crash
loses at most the rows in flight. Parquet cannot be appended to: its records stream to
a JSONL journal beside it, and ``close()`` renders the Parquet file from the journal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from batchrunner.results.csv import CsvSink
from batchrunner.results.jsonl import JsonlSink
from batchrunner.results.layout import results_format

log = logging.getLogger("batchrunner.results.sinks")


class ResultSink(Protocol):
    """Where results records go: appended, and handed to the OS batch by batch."""

    path: Path

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records* and flush them to the OS before returning."""

    def close(self) -> None:
        """Finish the file; calling it again does nothing."""


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
