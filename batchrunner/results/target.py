"""
An output path that cannot work, refused before the input is read or anything
sent: a directory, a name whose suffix picks no format, a folder that does not
exist or cannot be written, a read-only file, or the input file itself (whose
rows the results would overwrite).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from batchrunner.config.locations import is_blob_url, parse_blob_url
from batchrunner.errors import ConfigError
from batchrunner.prepare.shards import ShardPlan, shard_output
from batchrunner.results.layout import (
    FORMATS,
    journal_path,
    results_format,
    summary_path,
)


def check_outputs(
    output: str | None,
    input_arg: str,
    plan: ShardPlan | None,
    sources: Mapping[str, str],
) -> None:
    """Refuse every output this run may write that cannot work (``ConfigError``)."""
    count = 1 if plan is None else plan.count
    given = sources.get("output", "default")
    for index in range(count):
        check_output(shard_output(output, input_arg, plan, index), input_arg, given)


def check_output(target: str, input_arg: str, source: str) -> None:
    """Refuse results file *target* (set by *source*) if it cannot work."""
    shown = f"the output {target!r} ({source})"
    name = parse_blob_url(target).name if is_blob_url(target) else Path(target).name
    if is_blob_url(target):
        _check_suffix(name, shown)
        return
    path = Path(target)
    if path.is_dir():
        msg = f"{shown} is a directory; name a file in it, like {target}/results.jsonl"
        raise ConfigError(msg)
    _check_suffix(name, shown)
    folder = path.parent
    if not folder.exists():
        msg = f"{shown}: the directory {str(folder)!r} does not exist; create it first"
        raise ConfigError(msg)
    if not folder.is_dir():
        msg = f"{shown}: {str(folder)!r} is a file, not a directory"
        raise ConfigError(msg)
    _check_writable(path, folder, shown)
    if input_arg != "-" and not is_blob_url(input_arg) and _same(path, input_arg):
        msg = (
            f"{shown} is the input file itself, and results would overwrite its"
            " rows; write them elsewhere, like the default <input>.results.jsonl"
        )
        raise ConfigError(msg)


def _check_writable(path: Path, folder: Path, shown: str) -> None:
    """Refuse an output the run could not write, before anything is sent."""
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = (
            f"{shown}: cannot write in the directory {str(folder)!r} (permission"
            " denied); choose another --output, or make the directory writable"
        )
        raise ConfigError(msg)
    if path.exists() and not os.access(path, os.W_OK):
        msg = (
            f"{shown} is read-only; make it writable, or choose another --output"
            " (a re-run appends to the results it finds there)"
        )
        raise ConfigError(msg)
    beside = {"summary": summary_path(path)}
    if results_format(path) == ".parquet":
        beside["journal"] = journal_path(path)
    for what, file in beside.items():
        if file.is_dir():
            msg = (
                f"{shown}: its {what} goes to {str(file)!r}, which is a directory;"
                " move that away, or choose another --output"
            )
            raise ConfigError(msg)


def _check_suffix(name: str, shown: str) -> None:
    if not name.lower().endswith(tuple(FORMATS)):
        msg = (
            f"{shown}: the name must end in {', '.join(FORMATS)}"
            " (the suffix picks the format)"
        )
        raise ConfigError(msg)


def _same(path: Path, input_arg: str) -> bool:
    try:
        return path.exists() and os.path.samefile(path, input_arg)
    except OSError:
        return False
