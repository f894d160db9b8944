"""
Which rows this run sends: its shard, the first N rows, less those already done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Iterator
from itertools import islice

from batchrunner.records import Row


def shard_of(row_id: str, count: int) -> int:
    """
    The shard (0 … *count*-1) that *row_id* belongs to.

    A hash, not ``hash()``, so every replica and every re-run agrees.
    """
    digest = hashlib.blake2b(row_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def select(
    rows: Iterable[Row],
    *,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    done: Container[str] = frozenset(),
) -> Iterator[Row]:
    """
    The rows of *shard*, the first *limit* of them, without those in *done*.

    The limit counts rows before the done ones are skipped, so ``--limit 20``
    names the same 20 rows on every re-run.
    """
    if shard is not None:
        index, count = shard
        rows = (row for row in rows if shard_of(row.id, count) == index)
    if limit is not None:
        rows = islice(rows, limit)
    return (row for row in rows if row.id not in done)
