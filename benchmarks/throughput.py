"""
Rows per second and CPU per row: batchrunner next to the naive gather +
Semaphore script, against the same simulator, in the same run; and the ceiling
that a bare aiohttp loop (no SDK, nothing written) reaches on this machine.

    python benchmarks/throughput.py [--rows 5000] [--concurrency 64] [--latency 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, run_child, simulator, write_input

#: A deployment's quota far above what the run can use: Azure reports its
#: limits on every answer, and a client that reads them starts at full speed.
QUOTA = ("--tpm", "1000000000", "--rpm", "10000000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--latency", str(args.latency), *QUOTA) as url,
    ):
        source = write_input(Path(tmp) / "job.jsonl", args.rows)
        naive = run_child(
            [sys.executable, str(ROOT / "benchmarks" / "naive.py"), str(source),
             str(Path(tmp) / "naive.jsonl"), str(args.concurrency)],
            url,
        )  # fmt: skip
        naive_send = json.loads(naive.stdout)
        bare = run_child(
            [sys.executable, str(ROOT / "benchmarks" / "bare.py"), str(source),
             str(args.concurrency)],
            url,
        )  # fmt: skip
        bare_send = json.loads(bare.stdout)
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
    bare_rate = rows / bare_send["send_seconds"]
    print(
        f"ceiling (bare aiohttp, no SDK, nothing written): {bare_rate:.0f} rows/s,"
        f" {bare_send['send_cpu'] / rows * 1000:.2f} CPU-s per 1k rows;"
        f" batchrunner at {ours_rate / bare_rate:.1%} of it"
    )
    if args.latency:
        ideal = args.concurrency / args.latency
        print(
            f"of the ideal {ideal:.0f} rows/s: batchrunner {ours_rate / ideal:.1%},"
            f" naive {naive_rate / ideal:.1%}, ceiling {bare_rate / ideal:.1%}"
        )


if __name__ == "__main__":
    main()
