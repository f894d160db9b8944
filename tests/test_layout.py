"""Tests for batchrunner.results.layout: the files beside the results."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from batchrunner.results.layout import (
    backup_existing,
    journal_path,
    summary_path,
    write_summary,
)


@pytest.mark.parametrize(
    ("output", "summary"),
    [
        ("x.results.jsonl", "x.results.summary.json"),
        ("run/y.csv", "run/y.summary.json"),
        ("y.parquet", "y.summary.json"),
    ],
)
def test_summary_path(output: str, summary: str) -> None:
    """The summary sits beside the output, named after its stem."""
    assert summary_path(Path(output)) == Path(summary)


def test_journal_path() -> None:
    """The Parquet journal is named after the whole output name."""
    assert journal_path(Path("d/x.parquet")) == Path("d/x.parquet.journal.jsonl")


def test_write_summary(tmp_path: Path) -> None:
    """The summary is pretty JSON, replaced whole, with no temporary file left."""
    path = tmp_path / "sub" / "x.summary.json"
    write_summary(path, {"rows": 1, "note": "é"})
    write_summary(path, {"rows": 2, "elapsed": 1.5})
    assert json.loads(path.read_text(encoding="utf-8")) == {"rows": 2, "elapsed": 1.5}
    assert path.read_text().startswith('{\n  "rows": 2')
    assert [p.name for p in path.parent.iterdir()] == ["x.summary.json"]


def test_backup_existing(tmp_path: Path) -> None:
    """--fresh moves the output and its companions aside under one stamp."""
    output = tmp_path / "x.parquet"
    noon = datetime(2024, 5, 6, 12, 0, 1)
    assert backup_existing(output, noon) == []
    for path in (output, journal_path(output), summary_path(output)):
        path.write_text("old")
    moved = backup_existing(output, noon)
    assert [p.name for p in moved] == [
        "x.parquet.bak-20240506-120001",
        "x.parquet.journal.jsonl.bak-20240506-120001",
        "x.summary.json.bak-20240506-120001",
    ]
    assert not output.exists()
    output.write_text("newer")
    assert [p.name for p in backup_existing(output, noon)] == [
        "x.parquet.bak-20240506-120001-1"
    ]
    assert (tmp_path / "x.parquet.bak-20240506-120001").read_text() == "old"
