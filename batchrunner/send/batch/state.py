"""
What this output has collected, kept beside the results: ``<stem>.batches.json``.

The service's lists say which batches of this output exist and how they ended;
only this file says which of them are already in the results. A batch is marked
*collecting* before its records are appended and *collected* after, so a run
killed in between collects it again, skipping what it had already written.
Written atomically (a new file, flushed, then renamed over the old one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from batchrunner.errors import ConfigError

VERSION = 1


def state_path(output: Path) -> Path:
    """Where the batch state of results file *output* is kept."""
    return output.with_name(f"{output.stem}.batches.json")


@dataclass
class BatchState:
    """The batches of one output that are (being) collected into its results."""

    collected: set[str] = field(default_factory=set)
    collecting: set[str] = field(default_factory=set)

    def as_json(self) -> str:
        """The file's text."""
        data = {
            "version": VERSION,
            "collected": sorted(self.collected),
            "collecting": sorted(self.collecting),
        }
        return json.dumps(data, indent=1) + "\n"


def load_state(path: Path) -> BatchState:
    """The state in *path*; empty when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return BatchState()
    try:
        data = json.loads(text)
        return BatchState(set(data["collected"]), set(data.get("collecting", ())))
    except (ValueError, KeyError, TypeError) as exc:
        msg = (
            f"{path}: the record of collected batches is damaged ({exc}); move it"
            " away to collect this output's batches again from the service"
        )
        raise ConfigError(msg) from exc


def save_state(path: Path, state: BatchState) -> None:
    """Replace *path* with *state*, atomically and durably."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.write(state.as_json())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
