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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Validated:
    """What validating an input found: its rows, and its repeated requests."""

    rows: int
    #: Stable hash of a repeated request → how many rows share it (None: not counted).
    repeats: dict[int, int] | None = None


def recall(output: Path, stamp: dict[str, Any]) -> Validated | None:
    """What was found when this very input was validated, else None."""
    try:
        saved = json.loads(stamp_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("stamp") != stamp:
        return None
    rows, repeats = saved.get("rows"), saved.get("repeats")
    if not isinstance(rows, int):
        return None
    if isinstance(repeats, list):
        return Validated(rows, {int(key): int(count) for key, count in repeats})
    return Validated(rows)


def remember(output: Path, stamp: dict[str, Any], found: Validated) -> None:
    """Record that the input of *stamp* validated, and what was found."""
    path = stamp_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    saved: dict[str, Any] = {"stamp": stamp, "rows": found.rows}
    if found.repeats is not None:
        saved["repeats"] = sorted(found.repeats.items())
    tmp.write_text(json.dumps(saved), encoding="utf-8")
    tmp.replace(path)
