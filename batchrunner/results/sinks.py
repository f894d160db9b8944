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

from batchrunner.errors import Resumable
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
    sink: ResultSink
    if kind == ".parquet":
        from batchrunner.results.parquet import (
            ParquetSink,  # pyarrow only when asked for
        )

        sink = ParquetSink(path)
    elif kind == ".csv":
        sink = CsvSink(path, answer_columns)
    else:
        sink = JsonlSink(path)
    return StorageGuard(sink)


class StorageGuard:
    """
    A sink whose storage failing under it (a full disk, a folder gone, a file
    size limit) stops the run resumably instead of ending it in a traceback:
    what was written stays, a torn last record is cut off by the next run, and
    rows whose results were not written are sent again then.
    """

    def __init__(self, sink: ResultSink) -> None:
        self.sink = sink
        self.path = sink.path

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append *records*; ``Resumable`` when the storage refuses them."""
        try:
            self.sink.write(records)
        except OSError as exc:
            raise storage_failed(self.path, exc) from exc

    def close(self) -> None:
        """Finish the file; a storage failure now is logged (the run has ended)."""
        try:
            self.sink.close()
        except OSError as exc:
            log.error("%s", storage_failed(self.path, exc))


def storage_failed(path: Path, exc: OSError) -> Resumable:
    """The stop for results that could not be written to *path*."""
    return Resumable(
        f"cannot write the results to {path} ({exc.strerror or exc}); free some"
        " space or fix the folder, then re-run the same command to go on"
    )
