"""
An append-only results file: locked against a second writer, cut back to
its last complete record on open (a ``kill -9`` can tear one), and flushed to
the OS with every batch.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from batchrunner.results.lock import flock_or_refuse, held

log = logging.getLogger("batchrunner.results.sinks")


class AppendOnlyFile:
    """What every sink shares: an append handle, locked, on a repaired file."""

    path: Path
    _file: io.BufferedWriter

    def _open(self, measure: Callable[[BinaryIO, int], int]) -> None:
        """Open ``path`` for appending after cutting it to ``measure(reader, size)``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            lock_for_append(handle, self.path)
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


def lock_for_append(handle: io.BufferedWriter, path: Path) -> None:
    """Refuse a second writer: two runs on one file would cut each other's records."""
    if held(path):
        return  # held: the run locked it before reading the earlier results
    flock_or_refuse(handle, path)
