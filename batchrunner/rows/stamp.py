"""
Remembering that an input was validated, so a re-run need not read it twice.

A resumed million-row job would otherwise spend most of its start-up re-checking
a file that has not changed. A stamp names the input by its path, size and
modification time, and the settings that shape its requests; any change there
and the input is validated again. Stamps live in batchrunner's state directory
(``BATCHRUNNER_STATE_DIR``, else ``$XDG_CACHE_HOME/batchrunner``, else
``~/.cache/batchrunner``), one small file per input; deleting them is harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrunner.config.settings import Settings


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where batchrunner keeps what it remembers between runs."""
    env = os.environ if environ is None else environ
    if env.get("BATCHRUNNER_STATE_DIR"):
        return Path(env["BATCHRUNNER_STATE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchrunner"


def stamp_path(stamp: dict[str, Any]) -> Path:
    """The file that remembers the input of *stamp*."""
    name = hashlib.sha256(stamp["input"].encode("utf-8", "surrogatepass")).hexdigest()
    return state_dir() / "validated" / f"{name[:32]}.json"


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


def recall(stamp: dict[str, Any]) -> Validated | None:
    """What was found when this very input was validated, else None."""
    try:
        saved = json.loads(stamp_path(stamp).read_text(encoding="utf-8"))
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


def remember(stamp: dict[str, Any], found: Validated) -> None:
    """Record that the input of *stamp* validated (best effort: it is a cache)."""
    path = stamp_path(stamp)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    tmp = path.with_name(path.name + ".tmp")
    saved: dict[str, Any] = {"stamp": stamp, "rows": found.rows}
    if found.repeats is not None:
        saved["repeats"] = sorted(found.repeats.items())
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(saved), encoding="utf-8")
        tmp.replace(path)
