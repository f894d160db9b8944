"""
--join: results beside every input column, in input order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.test_cli import read_jsonl, write_csv, write_jsonl

#: Ids out of sort order, a row that fails on the first run, and an input column
#: named like a result column.
ROWS: list[dict[str, Any]] = [
    {"id": "z9", "prompt": "First?", "status": "draft", "weight": "1.5"},
    {"id": "a1", "prompt": "Second [[sim:500]]", "status": "final", "weight": "2"},
    {"id": "m5", "prompt": "Third?", "status": "draft", "weight": ""},
]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.DataFrame(read_jsonl(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_join_keeps_input_order_and_every_input_column(
    azure_env: SimulatorServer, tmp_path: Path, suffix: str
) -> None:
    """Each input row once, in input order, all its columns first, results after."""
    source = write_csv(tmp_path / "in.csv", ROWS)
    output = tmp_path / f"out{suffix}"
    args = [str(source), "-o", str(output), "--join", "--max-attempts", "1"]
    assert run(args) == 1  # a1 fails: its result is an error for now
    assert run(args) == 0  # the re-run answers it; its record comes last
    joined = _read(tmp_path / f"out.joined{suffix}")
    assert list(joined.columns[:4]) == ["id", "prompt", "status", "weight"]
    assert list(joined["id"]) == ["z9", "a1", "m5"]
    assert list(joined["prompt"]) == [row["prompt"] for row in ROWS]
    assert list(joined["status"]) == ["draft", "final", "draft"]
    assert list(joined["weight"]) == ["1.5", "2", ""]  # CSV cells stay text
    assert list(joined["result_status"]) == ["ok", "ok", "ok"]
    assert list(joined["attempts"].astype(int)) == [1, 1, 1]
    assert "usage_total_tokens" in joined.columns
    assert not any(str(c).startswith("input_") for c in joined.columns)


def test_join_of_jsonl_keeps_value_types_and_numbers_rows(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """JSONL values keep their types; without an id column the row number is one."""
    rows = [
        {"prompt": "One?", "gold": 3, "tags": ["x", "y"], "ok": True},
        {"prompt": "Two?", "gold": 5, "tags": [], "ok": False},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert run([str(source), "-o", str(tmp_path / "r.parquet"), "--join"]) == 0
    table = pq.read_table(tmp_path / "r.joined.parquet")
    assert table.column_names[:5] == ["id", "prompt", "gold", "tags", "ok"]
    assert str(table.schema.field("gold").type) == "int64"
    assert str(table.schema.field("ok").type) == "bool"
    assert str(table.schema.field("usage_prompt_tokens").type) == "int64"
    frame = table.to_pandas()
    assert list(frame["id"]) == ["1", "2"]
    assert list(frame["tags"].map(list)) == [["x", "y"], []]
    jsonl = tmp_path / "r.jsonl"
    assert run([str(source), "-o", str(jsonl), "--join"]) == 0
    lines = (tmp_path / "r.joined.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["gold"] == 3 and first["tags"] == ["x", "y"] and first["ok"] is True


def test_join_includes_rows_not_done(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A row without a result yet is in the joined file, its result columns empty."""
    rows = [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "x [[sim:429long]]"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert run([str(source), "--join", "--concurrency", "1"]) == 75
    joined = read_jsonl(tmp_path / "in.results.joined.jsonl")
    assert [r["id"] for r in joined] == ["a", "b"]
    assert joined[0]["status"] == "ok"
    assert joined[1]["status"] is None
