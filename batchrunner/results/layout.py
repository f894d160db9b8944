"""
The shape of results: the flat columns of CSV and Parquet, the formats by
suffix, the files beside an output (summary, journal, backups) and how a record
is flattened into columns and back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("batchrunner.results.sinks")

#: The flat columns of CSV and Parquet results, in order; ``answer_<field>`` ones (a
#: structured answer) follow, then ``input_<col>`` ones.
FIXED_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "output",
    "embedding",
    "finish_reason",
    "usage_prompt_tokens",
    "usage_completion_tokens",
    "usage_total_tokens",
    "usage_cached_tokens",
    "usage_reasoning_tokens",
    "model",
    "attempts",
    "latency_ms",
    "request_id",
    "error_type",
    "error_status_code",
    "error_code",
    "error_message",
    # Added later: last, so existing column positions hold.
    "reused",
    "deployment",
)


INT_COLUMNS = frozenset(
    {name for name in FIXED_COLUMNS if name.startswith("usage_")}
    | {"attempts", "latency_ms", "error_status_code"}
)


FORMATS = (".jsonl", ".csv", ".parquet")


NESTED = ("usage", "error", "answer", "input")


def results_format(path: Path) -> str:
    """The format of results file *path*: ".jsonl", ".csv" or ".parquet"."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        msg = (
            f"cannot write results to {str(path)!r}: its name must end in .jsonl,"
            " .csv or .parquet (the suffix picks the format)"
        )
        raise ValueError(msg)
    return suffix


def summary_path(output: Path) -> Path:
    """Where the run summary of *output* goes: ``<dir>/<output stem>.summary.json``."""
    return output.with_name(f"{output.stem}.summary.json")


def journal_path(output: Path) -> Path:
    """The JSONL journal that a Parquet *output* is rendered from."""
    return output.with_name(f"{output.name}.journal.jsonl")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write *summary* to *path* as pretty JSON, replacing any old one atomically."""
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def backup_existing(output: Path, now: datetime | None = None) -> list[Path]:
    """
    Move *output*, its journal and its summary aside for ``--fresh``.

    Each becomes ``<name>.bak-YYYYmmdd-HHMMSS`` (plus ``-N`` when taken), all with the
    same suffix so they stay paired; returns the new paths of those that existed.
    """
    companions = [output, journal_path(output), summary_path(output)]
    present = [path for path in companions if path.exists()]
    if not present:
        return []
    suffix = _free_backup_suffix(companions, now or datetime.now())
    moved = [path.with_name(path.name + suffix) for path in present]
    for path, target in zip(present, moved, strict=True):
        path.rename(target)
    return moved


def _free_backup_suffix(paths: list[Path], now: datetime) -> str:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    suffix, counter = f".bak-{stamp}", 0
    while any(path.with_name(path.name + suffix).exists() for path in paths):
        counter += 1
        suffix = f".bak-{stamp}-{counter}"
    return suffix


def replace_atomically(target: Path, fill: Callable[[Path], object]) -> None:
    """Have *fill* write a temporary file beside *target*, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the results a team shares.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fill(tmp)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """*record* with ``usage``/``error``/``input`` spread into prefixed columns."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in NESTED and isinstance(value, Mapping):
            for name, item in value.items():
                flat[f"{key}_{name}"] = item
        else:
            flat[key] = value
    return flat


def unflatten_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSONL record of a flat row (``flatten_record`` undone, nulls left out)."""
    record: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {name: {} for name in NESTED}
    for key, value in row.items():
        group, _, name = key.partition("_")
        if group in groups and name:
            groups[group][name] = value
        elif value is not None or key in ("id", "status"):
            record[key] = value
    usage = {
        name: value for name, value in groups["usage"].items() if value is not None
    }
    if usage:
        record["usage"] = usage
    if any(value is not None for value in groups["error"].values()):
        record["error"] = groups["error"]
    if any(value is not None for value in groups["answer"].values()):
        record["answer"] = groups["answer"]
    if groups["input"]:
        record["input"] = groups["input"]
    return record
