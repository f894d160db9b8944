"""
``python -m batchrunner merge PART... -o MERGED``: shard results into one.

For each id the last ``ok`` record wins, else its last record (a row that failed
in one part and succeeded in another is ok). Parts and the merged file may be of
any format and local or in blob storage; the merged summary counts the merged
records and keeps each part's own summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from batchrunner.azure.blob import (
    blob_client,
    is_blob_url,
    parse_blob_url,
    storage_errors,
    upload_file,
)
from batchrunner.config.prices import answer_price, cost_of
from batchrunner.config.settings import Settings
from batchrunner.errors import UsageError
from batchrunner.report.summary import error_kind
from batchrunner.results.destination import peek
from batchrunner.results.layout import results_format, summary_path, write_summary
from batchrunner.results.parts import part_exists, part_heads, part_records
from batchrunner.results.sinks import open_sink

log = logging.getLogger("batchrunner")

_BATCH = 1000


def build_merge_parser(
    kind: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The parser of ``merge`` (of class *kind*)."""
    parser = kind(
        prog="python -m batchrunner merge",
        description="Combine the results of shards (or of any runs over one input)"
        " into one results file and one summary. For each id the last ok record"
        " wins, else its last record.",
    )
    parser.add_argument("parts", nargs="+", metavar="PART", help="results files")
    parser.add_argument(
        "-o", "--output", required=True, metavar="MERGED", help="the merged results"
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="settings (prices)")
    parser.add_argument("--log-format", choices=["text", "json"])
    return parser


Winners = dict[str, tuple[int, int, bool]]


def choose(heads: Sequence[Iterator[tuple[str, str]]]) -> Winners:
    """Id → (part, record number, ok) of the record that represents the id."""
    winners: Winners = {}
    for part, records in enumerate(heads):
        for number, (row_id, status) in enumerate(records):
            ok = status == "ok"
            earlier = winners.get(row_id)
            if earlier is None or ok or not earlier[2]:
                winners[row_id] = (part, number, ok)
    return winners


def merge(
    parts: Sequence[str], output: str, settings: Settings, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Write the merged results of *parts* to *output*; return the merged summary."""
    shown = [str(parse_blob_url(p)) if is_blob_url(p) else p for p in parts]
    if output in parts or output in shown:
        msg = f"the merged output {output} is also one of the parts; choose another"
        raise UsageError(msg)
    results_format(Path(output.rsplit("/", 1)[-1]))  # a clear error before reading
    with ExitStack() as stack:
        local = [
            stack.enter_context(
                peek(part, account=settings.storage_account, environ=environ)
            )
            for part in parts
        ]
        for part, path in zip(shown, local, strict=True):
            if not part_exists(path):
                msg = f"{part}: no such results file"
                raise UsageError(msg)
        winners = choose([part_heads(path) for path in local])
        folder = Path(tempfile.mkdtemp(prefix="batchrunner-merge-"))
        stack.callback(shutil.rmtree, folder, True)
        merged = folder / output.rsplit("/", 1)[-1]
        totals = _write(local, winners, merged, settings)
        summary = _summary(totals, shown, local)
        write_summary(summary_path(merged), summary)
        _store(merged, output, settings, environ)
    return summary


def _write(
    local: list[Path], winners: Winners, merged: Path, settings: Settings
) -> dict[str, Any]:
    totals: dict[str, Any] = {"ok": 0, "failed": 0, "cost": 0.0, "errors": {}}
    totals["tokens"] = dict.fromkeys(
        ("prompt", "completion", "total", "cached", "reasoning"), 0
    )
    sink = open_sink(merged)
    try:
        for part, path in enumerate(local):
            batch = []
            for number, record in enumerate(part_records(path)):
                winner = winners.get(str(record["id"]))
                if winner is not None and winner[:2] == (part, number):
                    batch.append(record)
                    _count(record, totals, settings)
                if len(batch) >= _BATCH:
                    sink.write(batch)
                    batch = []
            sink.write(batch)
    finally:
        sink.close()
    return totals


def _count(record: dict[str, Any], totals: dict[str, Any], settings: Settings) -> None:
    if record.get("status") != "ok":
        totals["failed"] += 1
        error = record.get("error") or {}
        kind = error_kind(
            error.get("status_code"), error.get("code"), str(error.get("type"))
        )
        totals["errors"][kind] = totals["errors"].get(kind, 0) + 1
        return
    totals["ok"] += 1
    usage = record.get("usage") or {}
    tokens = totals["tokens"]
    for key in tokens:
        tokens[key] += int(usage.get(f"{key}_tokens") or 0)
    model = record.get("model")
    totals["cost"] += cost_of(
        answer_price(settings, model if isinstance(model, str) else None),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


def _summary(
    totals: dict[str, Any], shown: list[str], local: list[Path]
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for name, path in zip(shown, local, strict=True):
        file = summary_path(path)
        own = json.loads(file.read_text("utf-8")) if file.exists() else None
        parts.append({"results": name, "summary": own})
    summaries = [p["summary"] for p in parts if p["summary"]]
    return {
        "rows_total": totals["ok"] + totals["failed"],
        "rows_ok": totals["ok"],
        "rows_failed": totals["failed"],
        "tokens": totals["tokens"],
        "estimated_cost_usd": round(totals["cost"], 6),
        # Each part's summary is of its last run; these add those up.
        "requests": sum(s.get("requests", 0) for s in summaries),
        "retries": sum(s.get("retries", 0) for s in summaries),
        "throttled": sum(s.get("throttled", 0) for s in summaries),
        "elapsed_seconds": max(
            (s.get("elapsed_seconds", 0) for s in summaries), default=0
        ),
        "errors": [
            {"kind": kind, "rows": rows}
            for kind, rows in sorted(totals["errors"].items(), key=lambda kv: -kv[1])
        ],
        "parts": parts,
    }


def _store(
    merged: Path, output: str, settings: Settings, environ: Mapping[str, str]
) -> None:
    """Put the merged file and its summary at *output*, replacing what was there."""
    files = [merged, summary_path(merged)]
    if not is_blob_url(output):
        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.move(file, target.with_name(file.name))
        return
    location = parse_blob_url(output)
    # Results stay an Append Blob, so a later run can resume the merged file.
    appendable = results_format(merged) != ".parquet"
    with storage_errors(f"writing {location}"):
        for file in files:
            name = location.with_name(file.name)
            client = blob_client(name, settings.storage_account, environ)
            upload_file(client, file, append=appendable and file == merged)
