"""
Peak RSS of a run over a large input: memory must stay flat in the input size.

    python benchmarks/memory.py [--rows 200000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import run_child, simulator, write_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, simulator() as url:
        small = write_input(Path(tmp) / "small.jsonl", 1000)
        big = write_input(Path(tmp) / "big.jsonl", args.rows)
        runs = {}
        for name, source in (("1k rows", small), (f"{args.rows:,} rows", big)):
            runs[name] = run_child(
                [sys.executable, "-m", "batchrunner", str(source), "-q",
                 "--log-format", "json", "--concurrency", str(args.concurrency)],
                url,
            )  # fmt: skip
        summary = json.loads((Path(tmp) / "big.results.summary.json").read_text())
    for name, run in runs.items():
        print(f"{name:>14}: peak RSS {run.peak_rss_mb:6.0f} MB, wall {run.wall:7.1f} s")
    print(f"big run: {summary['rows_ok']:,} ok, {summary['rows_per_second']} rows/s")
    first, last = runs.values()
    print(f"RSS ratio big/small: {last.peak_rss_mb / first.peak_rss_mb:.2f}")


if __name__ == "__main__":
    main()
