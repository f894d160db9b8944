"""
When this process started, on the ``time.monotonic`` clock.

``--deadline`` is a job's replica timeout, which counts from the process's start,
not from the moment the SDKs have loaded: the OS's own record of the start is
used where there is one (Linux ``/proc``), else the moment this module loaded.
"""

from __future__ import annotations

import os
import time

#: The fallback: this module is among the first the command imports.
_LOADED = time.monotonic()


def process_started() -> float:
    """The ``time.monotonic()`` reading at which this process started."""
    since = _seconds_since_start()
    if since is None:
        return _LOADED
    return min(_LOADED, time.monotonic() - since)


def _seconds_since_start() -> float | None:
    """Seconds since the OS started this process, or None where it will not say."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, counted after the name
        hertz = os.sysconf("SC_CLK_TCK")
        # starttime counts from boot on CLOCK_BOOTTIME, like /proc/uptime.
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    since = now - ticks / hertz
    return since if since >= 0 else None
