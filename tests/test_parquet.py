"""Tests for batchrunner.results.parquet: typed columns, rendered from a journal."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import UsageError
from batchrunner.results.frame import read_results
from batchrunner.results.layout import journal_path
from batchrunner.results.resume import read_state
from batchrunner.results.sinks import open_sink
from tests.test_sinks import embedded, failed, ok, write_all


def test_parquet_types(tmp_path: Path) -> None:
    """The Parquet file has typed columns: int64 counts, float32 vectors, flat input."""
    path = tmp_path / "out.parquet"
    write_all(
        path,
        [embedded("1", [0.25, 0.5]), failed("2", n=3, tags=["x"]), ok("3", n=4)],
    )
    schema = pq.read_schema(path)
    assert schema.field("attempts").type == pa.int64()
    assert schema.field("usage_cached_tokens").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float32())
    assert schema.field("id").type == pa.string()
    assert schema.field("input_n").type == pa.int64()
    assert schema.field("input_tags").type == pa.string()
    table = pq.read_table(path).to_pydict()
    assert table["embedding"] == [[0.25, 0.5], None, None]
    assert table["error_status_code"] == [None, 429, None]
    assert table["input_tags"] == [None, '["x"]', None]


def test_parquet_odd_values(tmp_path: Path) -> None:
    """Lists of outputs, mixed input types and lone surrogates still render."""
    path = tmp_path / "out.parquet"
    write_all(path, [ok("1", ["a", "b"], v=1), ok("2", "x\ud800", v="two")])
    table = pq.read_table(path).to_pydict()
    assert table["output"] == ['["a","b"]', "x\\ud800"]
    assert table["input_v"] == ["1", "two"]


def test_parquet_renders_records_in_any_key_order(tmp_path: Path) -> None:
    """A journal line that does not start with id and status renders all the same."""
    path = tmp_path / "out.parquet"
    line = {"status": "ok", "attempts": 2, "id": "z", "input": {"k": 1}}
    journal_path(path).write_text(json.dumps(line) + "\n")
    write_all(path, [ok("y", k=2)])
    table = pq.read_table(path).to_pydict()
    assert (table["id"], table["attempts"], table["input_k"]) == (
        ["z", "y"],
        [2, 1],
        [1, 2],
    )


def test_unreadable_parquet_is_refused(tmp_path: Path) -> None:
    """A .parquet output that is not Parquet is an error, not overwritten."""
    path = tmp_path / "out.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UsageError, match="not a readable Parquet results file"):
        open_sink(path)
    assert path.read_bytes() == b"not parquet at all"


def test_parquet_keeps_its_journal_and_renders_on_close(tmp_path: Path) -> None:
    """Records go to the journal as written; close() renders one row per id."""
    path = tmp_path / "out.parquet"
    sink = open_sink(path)
    sink.write([failed("1"), ok("2")])
    sink.write([ok("1")])
    assert not path.exists()
    assert journal_path(path).read_bytes().count(b"\n") == 3
    sink.close()
    assert pq.read_table(path)["id"].to_pylist() == ["2", "1"]


def test_parquet_survives_a_lost_journal(tmp_path: Path) -> None:
    """When the journal was deleted, the rows of the Parquet file are kept."""
    path = tmp_path / "out.parquet"
    write_all(path, [ok("1"), failed("2")])
    journal_path(path).unlink()
    assert read_state(path).done_ids == {"1"}
    write_all(path, [ok("2")])
    frame = read_results(path)
    assert sorted(frame["id"]) == ["1", "2"]
    assert set(frame["status"]) == {"ok"}


def test_parquet_of_nothing(tmp_path: Path) -> None:
    """A run with no records still leaves a readable Parquet file."""
    path = tmp_path / "out.parquet"
    write_all(path)
    assert pq.read_table(path).num_rows == 0
    assert read_results(path).empty
