"""
A 1M-row job that a killed run had nearly finished: how long the re-run takes to
start sending, and its peak memory (which must stay flat in the input size).

    python benchmarks/resume.py [--rows 1000000] [--left 1000]

The results file already holds ok records for all but the last *left* rows; the
re-run must read both files, send the *left* rows, and finish.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import run_child, simulator, write_input


def write_done(path: Path, rows: int) -> None:
    """Ok records for rows r0 … r(rows-1), as batchrunner writes them."""
    usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            record = {"id": f"r{i}", "status": "ok", "output": "positive",
                      "finish_reason": "stop", "usage": usage,
                      "model": "gpt-4o-mini-2024-07-18", "attempts": 1,
                      "latency_ms": 300, "request_id": "x"}  # fmt: skip
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--left", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, simulator() as url:
        tmp = Path(tmp_name)
        source = write_input(tmp / "job.jsonl", args.rows)
        write_done(tmp / "job.results.jsonl", args.rows - args.left)
        # The killed run had validated the input: a run over its first row (done
        # already, so nothing is sent) leaves the same stamp behind.
        first = run_child(
            [sys.executable, "-m", "batchrunner", str(source), "-q",
             "--log-format", "json", "--limit", "1"],
            url,
        )  # fmt: skip
        started = time.monotonic()
        run = run_child(
            [sys.executable, "-m", "batchrunner", str(source), "-q",
             "--log-format", "json", "--concurrency", "64"],
            url,
        )  # fmt: skip
        wall = time.monotonic() - started
        summary = json.loads((tmp / "job.results.summary.json").read_text())
    send = summary["elapsed_seconds"]
    print(f"{args.rows:,} rows, {args.rows - args.left:,} done before, "
          f"{summary['rows_ok']:,} sent now")  # fmt: skip
    print(f"start-up before sending: {wall - send:.2f} s (whole run {wall:.2f} s)")
    print(f"peak RSS: {run.peak_rss_mb:.0f} MB (the validating first run:"
          f" {first.wall:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
