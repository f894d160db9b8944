"""
What an earlier run left at an output path: which rows are done and which failed.

``read_state`` is what a re-run needs, and reads a million-row file in seconds
(``batchrunner.results.frame.read_results`` is the notebook's view). It sees a file
exactly as the sinks in ``writer`` will: a torn last record does not count,
because the next sink opened on the file cuts it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path

from batchrunner.results.csv import csv_records
from batchrunner.results.jsonl import (
    jsonl_keep_size,
    jsonl_lines,
    line_head,
    parse_record,
)
from batchrunner.results.layout import journal_path, results_format

log = logging.getLogger("batchrunner.results.resume")


@dataclass(frozen=True)
class ResumeState:
    """The rows an earlier run finished, as its results file records them."""

    #: Ids with an ``ok`` record: a re-run skips them.
    done_ids: Set[str] = frozenset()
    #: Ids with ``error`` records and no ``ok`` one: a re-run tries them again.
    failed_ids: Set[str] = frozenset()
    #: Complete records read (a retried row counts once per record).
    records: int = 0
    #: Bytes after the last complete record, which the next sink opened cuts off.
    torn_bytes: int = 0
    #: Damaged lines in the middle of a JSONL file, skipped.
    corrupt_lines: int = 0


@dataclass
class _Tally:
    """Folds the (id, status) of each record into done and failed ids."""

    done: set[str] = field(default_factory=set)
    errored: set[str] = field(default_factory=set)
    records: int = 0
    torn_bytes: int = 0
    corrupt: list[int] = field(default_factory=list)

    def add(self, row_id: str, status: str) -> None:
        self.records += 1
        if status == "ok":
            self.done.add(row_id)
        elif status == "error":
            self.errored.add(row_id)

    def state(self, path: Path) -> ResumeState:
        if self.corrupt:
            shown = ", ".join(map(str, self.corrupt[:5]))
            log.warning(
                "%s: skipped %d damaged lines (at line %s%s); their rows are not done",
                path,
                len(self.corrupt),
                shown,
                " …" if len(self.corrupt) > 5 else "",
            )
        return ResumeState(
            done_ids=self.done,
            failed_ids=self.errored - self.done,
            records=self.records,
            torn_bytes=self.torn_bytes,
            corrupt_lines=len(self.corrupt),
        )


def read_state(output: Path) -> ResumeState:
    """
    Which rows of *output* are done and which failed; empty when it does not exist.

    A Parquet output is read from its journal, plus any rows of the Parquet file that
    the journal lacks (the sink copies those back into the journal when it opens).
    """
    kind = results_format(output)
    tally = _Tally()
    if kind == ".parquet":
        journal = journal_path(output)
        if journal.exists():
            _tally_jsonl(journal, tally)
        if output.exists():
            _tally_parquet(output, tally)
        return tally.state(journal)
    if output.exists():
        if kind == ".csv":
            _tally_csv(output, tally)
        else:
            _tally_jsonl(output, tally)
    return tally.state(output)


def _tally_jsonl(path: Path, tally: _Tally) -> None:
    # Parses the first bytes of each line only (id and status lead every record),
    # falling back to json.loads for lines written otherwise.
    for number, line in jsonl_lines(path):
        head = line_head(line)
        if head is None:
            tally.corrupt.append(number)
        else:
            tally.add(*head)
    with path.open("rb") as reader:
        size = os.fstat(reader.fileno()).st_size
        tally.torn_bytes += size - jsonl_keep_size(path, reader, size)


def _tally_csv(path: Path, tally: _Tally) -> None:
    with path.open("rb") as reader:
        size = os.fstat(reader.fileno()).st_size
        records = csv_records(path, reader, size)
        header, keep = next(records, ([], 0))
        if header:
            id_at, status_at = header.index("id"), header.index("status")
        for row, end in records:
            tally.add(row[id_at], row[status_at])
            keep = end
        tally.torn_bytes += size - keep


def _tally_parquet(path: Path, tally: _Tally) -> None:
    known = tally.done | tally.errored
    from batchrunner.results.parquet import (
        read_parquet_columns,  # pyarrow only when needed
    )

    table = read_parquet_columns(path, ["id", "status"])
    for row_id, status in zip(table["id"], table["status"], strict=True):
        if row_id not in known:
            tally.add(row_id, status)


def error_request_ids(output: Path) -> set[str]:
    """
    The request ids of the ``error`` records in *output*: a batch collected again
    (its last collection was cut short, or its record of collection was lost with
    a temporary directory) must not append the same failed line twice.
    """
    found: set[str] = set()
    kind = results_format(output)
    jsonl = journal_path(output) if kind == ".parquet" else output
    if kind != ".csv" and jsonl.exists():
        for _, line in jsonl_lines(jsonl):
            head = line_head(line)
            if head is not None and head[1] == "error":
                record = parse_record(line) or {}
                if record.get("request_id"):
                    found.add(str(record["request_id"]))
    if kind == ".csv" and output.exists():
        with output.open("rb") as reader:
            records = csv_records(output, reader, os.fstat(reader.fileno()).st_size)
            header, _ = next(records, ([], 0))
            if header:
                status_at, request_at = (
                    header.index("status"),
                    header.index("request_id"),
                )
                found |= {
                    row[request_at] for row, _ in records
                    if row[status_at] == "error" and row[request_at]
                }  # fmt: skip
    if kind == ".parquet" and output.exists():
        from batchrunner.results.parquet import read_parquet_columns

        table = read_parquet_columns(output, ["status", "request_id"])
        pairs = zip(table["status"], table["request_id"], strict=True)
        found |= {str(rid) for status, rid in pairs if status == "error" and rid}
    return found
