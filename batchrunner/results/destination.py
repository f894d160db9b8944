"""
Where a run's results go, held for the run: a local file under an OS lock, or a
blob under a lease with a local copy that streams to it (``blob_output``, loaded
only for az:// outputs, so the storage SDK costs local runs nothing).

Either way the run sees a local ``path`` to resume from and to append to, calls
``sync()`` after each write and ``finish(summary)`` at the end; ``shown`` is the
name to put in messages and in the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from batchrunner.config.locations import is_blob_url
from batchrunner.errors import ConfigError
from batchrunner.results.layout import (
    backup_existing,
    journal_path,
    results_format,
    summary_path,
    write_summary,
)
from batchrunner.results.lock import FileLock

log = logging.getLogger("batchrunner")


class Output(Protocol):
    """A run's results, held for the run."""

    path: Path
    shown: str
    #: Where ``--fresh`` moved the earlier results.
    backups: list[str]

    def sync(self) -> None:
        """Pass on what the sink has written so far."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Store the last rows and the summary."""

    def close(self) -> None:
        """Let go of the output (and its lock); calling it again does nothing."""


def append_target(path: Path) -> Path:
    """The file a sink appends to: the journal of a Parquet output, else *path*."""
    return journal_path(path) if results_format(path) == ".parquet" else path


class LocalOutput:
    """A results file on a local (or mounted) filesystem, locked while held."""

    def __init__(self, target: str, *, fresh: bool) -> None:
        self.path = Path(target)
        self.shown = target
        self.backups: list[str] = []
        appended = append_target(self.path)
        existed = appended.exists()
        self._lock = _locked(appended, target)
        if fresh:
            if not existed:
                appended.unlink()  # the lock made it, empty: no earlier results
            # Moved aside under the lock, then the new file is locked in its place.
            self.backups = [str(p) for p in backup_existing(self.path)]
            self._lock.release()
            self._lock = _locked(append_target(self.path), target)

    def sync(self) -> None:
        """Local sinks write straight to the file: nothing to pass on."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary beside the results (the results stand without it)."""
        try:
            write_summary(summary_path(self.path), summary)
        except OSError as exc:
            log.error(
                "cannot write the summary beside %s (%s); the results are complete"
                " without it, and the next run writes it again",
                self.shown,
                exc.strerror or exc,
            )

    def close(self) -> None:
        """Release the lock."""
        self._lock.release()


def _locked(path: Path, shown: str) -> FileLock:
    """*path*, created if need be, locked; one we cannot create is a ``ConfigError``."""
    try:
        return FileLock(path)
    except OSError as exc:
        # check_output foresees the usual causes; this catches what access()
        # cannot tell (a read-only mount, a special filesystem).
        msg = (
            f"the output {shown!r}: cannot create or open {str(path)!r}"
            f" ({exc.strerror}); choose another --output"
        )
        raise ConfigError(msg) from exc


def open_output(
    target: str, *, fresh: bool, account: str | None, environ: Mapping[str, str]
) -> Output:
    """Hold *target* (a path or a blob URL) for a run; OutputBusy when taken."""
    if is_blob_url(target):
        from batchrunner.results.blob_output import BlobOutput  # storage SDK

        return BlobOutput(target, fresh=fresh, account=account, environ=environ)
    return LocalOutput(target, fresh=fresh)


@contextlib.contextmanager
def peek(
    target: str, *, account: str | None, environ: Mapping[str, str]
) -> Iterator[Path]:
    """A local copy of *target*'s results and summary to read, without a lock."""
    if not is_blob_url(target):
        yield Path(target)
        return
    from batchrunner.results.blob_output import peek_blob

    with peek_blob(target, account=account, environ=environ) as path:
        yield path
