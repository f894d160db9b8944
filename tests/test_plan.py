"""Choosing the rows of a run: shards and --limit."""

from __future__ import annotations

from batchrunner.prepare.plan import select, shard_of
from batchrunner.records import Row


def test_shards_split_every_row_exactly_once() -> None:
    """Each id lands in exactly one of N shards, stably."""
    rows = [Row(id=f"r{i}", line=i, fields={}) for i in range(300)]
    shards = [list(select(rows, shard=(i, 3))) for i in range(3)]
    ids = sorted(r.id for shard in shards for r in shard)
    assert ids == sorted(r.id for r in rows)
    assert all(shards)
    assert shard_of("r7", 3) == shard_of("r7", 3)


def test_limit_counts_rows_before_skipping_done() -> None:
    """--limit names the same first rows on every re-run."""
    rows = [Row(id=str(i), line=i, fields={}) for i in range(1, 11)]
    chosen = [r.id for r in select(rows, limit=3, done={"1", "2"})]
    assert chosen == ["3"]
