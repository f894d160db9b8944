"""
Batch mode at scale: 100k rows through ``--mode batch --wait`` against the
simulator answering batches as fast as it can (``--batch-lines-per-second 0``).

Prints, for a 1k-row run and a big run in the same session: the client's peak
RSS (it must stay flat in the number of rows: input and output files are
streamed, never held), its CPU seconds per 1k rows (building the input files,
uploading, polling, collecting), and its wall time beside the time the
simulator spent processing the batches (created → completed, whole seconds).

The simulator runs in its own process, so the client's figures are its own.
What grows with the rows is ids, not content: the set of ok row ids that
resume keeps (as online runs do) and, while a batch is collected, an index
of row id → offset into the downloaded output file (~300 bytes a row in all).

    python -m benchmarks.batch [--rows 100000] [--max-requests 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import openai

from batchrunner.send.batch.names import output_key
from benchmarks.common import KEY, ChildRun, run_child, simulator, write_input


def processing_seconds(url: str) -> dict[str, float]:
    """Seconds each batch took on the simulator, created → ended, by metadata key."""
    client = openai.AzureOpenAI(
        azure_endpoint=url, api_key=KEY, api_version="2024-10-21"
    )
    seconds: dict[str, float] = {}
    with client:
        for batch in client.batches.list(limit=100):
            key = (batch.metadata or {}).get("batchrunner_output", "?")
            ended = batch.completed_at or batch.expired_at or batch.failed_at or 0
            seconds[key] = seconds.get(key, 0.0) + (ended - batch.created_at)
    return seconds


def run_batches(source: Path, url: str, max_requests: int) -> ChildRun:
    """One client run in batch mode, waiting for its batches."""
    return run_child(
        [sys.executable, "-m", "batchrunner", str(source), "-q", "--log-format",
         "json", "--mode", "batch", "--wait", "--poll-interval", "0.5"],
        url,
        extra_env={"BATCHRUNNER_BATCH_MAX_REQUESTS": str(max_requests)},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--batch-lines-per-second", "0", "--batch-state-seconds", "0") as url,
    ):
        small = write_input(Path(tmp) / "small.jsonl", 1000)
        big = write_input(Path(tmp) / "big.jsonl", args.rows)
        runs = {
            1000: run_batches(small, url, args.max_requests),
            args.rows: run_batches(big, url, args.max_requests),
        }
        busy = processing_seconds(url)
        processing = [
            busy[output_key(str(source.with_name(f"{source.stem}.results.jsonl")))]
            for source in (small, big)
        ]
        summary = json.loads((Path(tmp) / "big.results.summary.json").read_text())
    print(f"big run: {summary['rows_ok']:,} ok, batches {summary['batches']}")
    for (rows, run), seconds in zip(runs.items(), processing, strict=True):
        per_1k = run.cpu / rows * 1000
        print(
            f"{rows:>9,} rows: peak RSS {run.peak_rss_mb:6.0f} MB, client CPU"
            f" {run.cpu:6.1f} s ({per_1k:.2f} s per 1k rows), wall {run.wall:6.1f} s,"
            f" simulator processing {seconds:.0f} s"
        )
    (small_rows, small_run), (big_rows, big_run) = runs.items()
    marginal = (big_run.cpu - small_run.cpu) / (big_rows - small_rows) * 1000
    print(f"client CPU per 1k rows beyond the first 1k: {marginal:.3f} s")
    print(f"RSS ratio big/small: {big_run.peak_rss_mb / small_run.peak_rss_mb:.2f}")


if __name__ == "__main__":
    main()
