"""
The records of a results file of any format, one at a time, as JSONL records.

``merge`` reads shard results through this: JSONL (and a Parquet output's
journal) line by line, CSV row by row with its flat columns folded back, and a
Parquet file without a journal batch by batch. Torn tails are left out, as the
sinks would cut them off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchrunner.results.csv import csv_records
from batchrunner.results.jsonl import jsonl_lines, line_head, parse_record, record_id
from batchrunner.results.layout import (
    INT_COLUMNS,
    journal_path,
    results_format,
    unflatten_record,
)

log = logging.getLogger("batchrunner.results.merge")


def part_exists(path: Path) -> bool:
    """True when there are results at *path* (or a Parquet output's journal)."""
    return path.exists() or journal_path(path).exists()


def part_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of results file *path*, in file order."""
    kind = results_format(path)
    journal = journal_path(path)
    if kind == ".parquet" and not journal.exists():
        yield from _parquet_records(path)
    elif kind == ".csv":
        yield from _csv_records(path)
    else:
        yield from _jsonl_records(journal if kind == ".parquet" else path)


def part_heads(path: Path) -> Iterator[tuple[str, str]]:
    """The (id, status) of every complete record of *path*, reading no more."""
    kind = results_format(path)
    if kind == ".csv" or (kind == ".parquet" and not journal_path(path).exists()):
        for record in part_records(path):
            yield str(record_id(record)), str(record.get("status"))
        return
    source = journal_path(path) if kind == ".parquet" else path
    if not source.exists():
        return
    for number, line in jsonl_lines(source):
        head = line_head(line)
        if head is None:
            log.warning("%s:%d: skipped a damaged line", source, number)
        else:
            yield head


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for _, line in jsonl_lines(path):
        record = parse_record(line)
        if record is not None and record_id(record) is not None:
            yield record


def _csv_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as reader:
        rows = csv_records(path, reader, os.fstat(reader.fileno()).st_size)
        header, _ = next(rows, ([], 0))
        for row, _ in rows:
            yield unflatten_record(
                {
                    name: _csv_value(name, cell)
                    for name, cell in zip(header, row, strict=True)
                }
            )


def _csv_value(name: str, cell: str) -> Any:
    # CSV has one spelling for null and "": the empty field; read it as null.
    if cell == "" and name not in ("id", "status"):
        return None
    if name in INT_COLUMNS:
        return int(cell)
    if name == "embedding":
        return json.loads(cell)
    return cell


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    import pyarrow.parquet as pq  # only when a Parquet part is merged

    with pq.ParquetFile(path) as source:
        for batch in source.iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                yield unflatten_record(row)
