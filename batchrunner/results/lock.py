"""
One writer per local output: an OS lock on the file a run appends to.

``flock`` locks belong to the open file and go when the process goes, so a run
killed with ``kill -9`` leaves nothing stuck. A run takes the lock before it
reads the earlier results, and the sinks in ``writer`` see that this process
already holds it (a second ``flock`` from the same process would be refused).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import BinaryIO

from batchrunner.errors import OutputBusy

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("batchrunner.results.sinks")

_HELD: dict[str, BinaryIO] = {}


def held(path: Path) -> bool:
    """True when this process holds the lock on *path*."""
    return str(path.resolve()) in _HELD


class FileLock:
    """An exclusive lock on *path* (created when missing) until ``release()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: BinaryIO | None = path.open("ab")
        try:
            flock_or_refuse(self._handle, path)
        except BaseException:
            self._handle.close()
            raise
        self._key = str(path.resolve())
        _HELD[self._key] = self._handle

    def release(self) -> None:
        """Let go of the lock; calling it again does nothing."""
        if self._handle is not None:
            _HELD.pop(self._key, None)
            self._handle.close()
            self._handle = None


def flock_or_refuse(handle: BinaryIO, path: Path) -> None:
    """Lock *path*'s open *handle*, or refuse: another live run writes it."""
    if sys.platform == "win32":
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        msg = (
            f"{path} is being written by another batchrunner run; wait for it to"
            " finish, or choose another --output."
        )
        raise OutputBusy(msg) from None
    except OSError as exc:
        # Some network filesystems have no locks; one run per file is then on the user.
        log.debug("%s: cannot lock (%s); carrying on without a lock", path, exc)
