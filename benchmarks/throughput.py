"""
Rows per second and CPU per row at zero latency: batchrunner next to the naive
gather + Semaphore script, against the same simulator, in the same run.

    python benchmarks/throughput.py [--rows 5000] [--concurrency 64] [--latency 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, run_child, simulator, write_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--latency", str(args.latency)) as url,
    ):
        source = write_input(Path(tmp) / "job.jsonl", args.rows)
        naive = run_child(
            [sys.executable, str(ROOT / "benchmarks" / "naive.py"), str(source),
             str(Path(tmp) / "naive.jsonl"), str(args.concurrency)],
            url,
        )  # fmt: skip
        naive_send = json.loads(naive.stdout)
        ours = run_child(
            [sys.executable, "-m", "batchrunner", str(source), "-q",
             "--log-format", "json", "--concurrency", str(args.concurrency),
             "-o", str(Path(tmp) / "ours.jsonl")],
            url,
        )  # fmt: skip
        summary = json.loads((Path(tmp) / "ours.summary.json").read_text())
    rows = args.rows
    naive_rate = rows / naive_send["send_seconds"]
    ours_rate = summary["rows_per_second"]
    print(f"rows={rows} concurrency={args.concurrency} latency={args.latency}s")
    print(f"{'':24}{'naive':>12}{'batchrunner':>14}{'ratio':>8}")
    print(f"{'send-phase rows/s':24}{naive_rate:12.0f}{ours_rate:14.0f}"
          f"{ours_rate / naive_rate:8.2f}")  # fmt: skip
    print(f"{'wall incl. start-up (s)':24}{naive.wall:12.2f}{ours.wall:14.2f}"
          f"{ours.wall / naive.wall:8.2f}")  # fmt: skip
    naive_cpu, ours_cpu = naive.cpu / rows * 1000, ours.cpu / rows * 1000
    print(f"{'CPU-s per 1k rows':24}{naive_cpu:12.2f}{ours_cpu:14.2f}"
          f"{ours_cpu / naive_cpu:8.2f}")  # fmt: skip
    print(f"{'peak RSS (MB)':24}{naive.peak_rss_mb:12.0f}{ours.peak_rss_mb:14.0f}")
    if args.latency:
        ideal = args.concurrency / args.latency
        print(f"batchrunner at {ours_rate / ideal:.1%} of the ideal {ideal:.0f} rows/s")


if __name__ == "__main__":
    main()
