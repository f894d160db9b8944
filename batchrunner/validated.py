"""
Remembering that an input was validated, so a re-run need not read it twice.

A resumed million-row job would otherwise spend most of its start-up re-checking
a file that has not changed. The stamp beside the output names the input by its
path, size and modification time, and the settings that shape its requests; any
change there and the input is validated again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from batchrunner.settings import Settings


def stamp_path(output: Path) -> Path:
    """Where the stamp of *output*'s input lives: ``<output>.validated.json``."""
    return output.with_name(output.name + ".validated.json")


def input_stamp(path: str, settings: Settings) -> dict[str, Any] | None:
    """
    What identifies the input at *path* and how it is read, without its rows;
    None when it cannot be looked at (validation will say why).
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    shaping = {
        "input": settings.redacted()["input"],
        "api": settings.api.value,
        "request": dict(settings.request),
        "model": settings.model,
    }
    digest = hashlib.sha256(
        json.dumps(shaping, sort_keys=True, default=str).encode()
    ).hexdigest()
    return {
        "input": os.path.abspath(path),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "settings": digest,
    }


def validated_rows(output: Path, stamp: dict[str, Any]) -> int | None:
    """The row count recorded when this very input was validated, else None."""
    try:
        saved = json.loads(stamp_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("stamp") != stamp:
        return None
    rows = saved.get("rows")
    return rows if isinstance(rows, int) else None


def remember(output: Path, stamp: dict[str, Any], rows: int) -> None:
    """Record that the input of *stamp* validated, with *rows* rows."""
    path = stamp_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "rows": rows}), encoding="utf-8")
    tmp.replace(path)
