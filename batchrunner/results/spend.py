"""
The spend an output has already recorded, so that ``--max-cost`` holds across
re-runs of the same output (a killed or stopped run's rows were paid for too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batchrunner.config.prices import cost_of
from batchrunner.results.csv import csv_records
from batchrunner.results.jsonl import jsonl_lines, parse_record, record_head
from batchrunner.results.layout import journal_path, results_format

# Every record we write has its usage right after finish_reason and before any
# input column, and no unescaped quote can occur inside a JSON string, so this
# finds the usage of a line without parsing its (possibly huge) output.
_USAGE = re.compile(
    rb'"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+)[^}]*\},"model":"'
    rb'([^"\\]*)"'
)


def recorded_cost(
    output: Path, price_for: Callable[[str | None], tuple[float, float] | None]
) -> float:
    """
    The estimated spend of the ok records already in *output* (earlier runs).

    Each ``ok`` record was paid for once; errors are not charged. *price_for*
    gives the price of a record by its ``model``, as the summary prices answers
    (``batchrunner.config.prices.answer_price``).
    """
    total = 0.0
    for prompt, completion, model in _usages(output):
        total += cost_of(price_for(model), prompt, completion)
    return total


def _usages(output: Path) -> Iterator[tuple[int, int, str | None]]:
    kind = results_format(output)
    source = journal_path(output) if kind == ".parquet" else output
    if not source.exists():
        return
    if kind == ".csv":
        yield from _csv_usages(source)
        return
    for _, line in jsonl_lines(source):
        head = record_head(line)
        if head is not None and head[1] != "ok":
            continue
        match = _USAGE.search(line) if head is not None else None
        if match is not None:
            yield int(match[1]), int(match[2]), match[3].decode()
            continue
        record = parse_record(line)
        if record is not None and record.get("status") == "ok":
            yield _from_record(record)


def _from_record(record: dict[str, Any]) -> tuple[int, int, str | None]:
    usage = record.get("usage") or {}
    model = record.get("model")
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        model if isinstance(model, str) else None,
    )


def _csv_usages(path: Path) -> Iterator[tuple[int, int, str | None]]:
    with path.open("rb") as reader:
        records = csv_records(path, reader, path.stat().st_size)
        header, _ = next(records, ([], 0))
        if not header:
            return
        at = {name: header.index(name) for name in header}
        for row, _ in records:
            if row[at["status"]] != "ok":
                continue
            yield (
                int(row[at["usage_prompt_tokens"]] or 0),
                int(row[at["usage_completion_tokens"]] or 0),
                row[at["model"]] or None,
            )
