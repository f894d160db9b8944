"""
A deployment whose quota never binds, for each set of rate-limit headers it may
send: how fast batchrunner gets going (its first second next to its steady
rate) and its rows/s next to the naive gather + Semaphore script, same run.

    python -m benchmarks.first_second [--rows 1000] [--concurrency 32] [--latency 0.1]
                                      [--modes full,remaining,none] [--repeat 3]

Each mode runs the naive script and batchrunner one after the other, --repeat
times; the medians are printed (the spread says how noisy the machine was).

The simulator runs in this process (its own thread; the clients are children),
so that the arrival time of every request is at hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from batchrunner.simulator import SimConfig, SimulatorServer
from benchmarks.common import DEPLOYMENT, KEY, ROOT, run_child, write_input

#: Far above what a run here can use, as throughput.py: "no quota" to the client.
TPM, RPM = 1_000_000_000, 10_000_000


def _arrivals(server: SimulatorServer) -> list[float]:
    times = sorted(e.time for e in server.ledger.entries if e.operation == "chat")
    server.ledger.reset()
    return times


def _shape(times: list[float]) -> dict[str, float]:
    """Requests in the first second, and the steady rate after it."""
    start, end = times[0], times[-1]
    first = sum(1 for t in times if t < start + 1.0)
    # The steady rate: after the first second, before the last half second
    # (the tail, where fewer rows than workers are left).
    middle = [t for t in times if start + 1.0 <= t < end - 0.5]
    span = end - 0.5 - (start + 1.0)
    steady = len(middle) / span if span > 0 else float("nan")
    return {"first_second": first, "steady": steady}


def _one(
    mode: str, who: str, args: argparse.Namespace, server: SimulatorServer, tmp: Path
) -> dict[str, Any]:
    server.config.rate_headers = mode
    source = tmp / "job.jsonl"
    # A new output each time: an old one would make batchrunner resume (no rows).
    out = tmp / f"{who}-{mode}-{len(list(tmp.glob('*.jsonl')))}.jsonl"
    if who == "naive":
        cmd = [sys.executable, str(ROOT / "benchmarks" / "naive.py"), str(source),
               str(out), str(args.concurrency)]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "batchrunner", str(source), "-q",
               "--log-format", "json", "--concurrency", str(args.concurrency),
               "-o", str(out)]  # fmt: skip
    run = run_child(cmd, server.url)
    if who == "naive":
        seconds = json.loads(run.stdout)["send_seconds"]
    else:
        seconds = json.loads(out.with_suffix(".summary.json").read_text())[
            "elapsed_seconds"
        ]
    return {"mode": mode, "who": who, "rows_per_s": args.rows / seconds,
            **_shape(_arrivals(server))}  # fmt: skip


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def _spread(values: list[float], spec: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{spec}} [{low:{spec}}–{high:{spec}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--modes", default="full,remaining,none")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = SimConfig(
        api_key=KEY, latency=args.latency, tpm=TPM, rpm=RPM,
        deployments={DEPLOYMENT: "gpt-4o-mini-2024-07-18"},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name, SimulatorServer(config) as server:
        tmp = Path(tmp_name)
        write_input(tmp / "job.jsonl", args.rows)
        results = [
            _one(mode, who, args, server, tmp)
            for _ in range(args.repeat)
            for mode in args.modes.split(",")
            for who in ("naive", "batchrunner")
        ]
    ideal = args.concurrency / args.latency
    print(f"no quota, {args.rows} rows, concurrency {args.concurrency}, latency"
          f" {args.latency * 1000:.0f} ms (ideal {ideal:.0f} rows/s)")  # fmt: skip
    print(f"medians of {args.repeat}; ratio and 1st-s share: median [min–max]")
    print(f"{'headers':11}{'naive/s':>9}{'ours/s':>8}{'ratio':>19}"
          f"{'1st s':>7}{'steady/s':>10}{'1st s/steady':>20}")  # fmt: skip
    for mode in args.modes.split(","):
        naive = [r for r in results if r["mode"] == mode and r["who"] == "naive"]
        ours = [r for r in results if r["mode"] == mode and r["who"] != "naive"]
        # Ratios pair each run with the naive run just before it.
        pairs = zip(naive, ours, strict=True)
        ratios = [o["rows_per_s"] / n["rows_per_s"] for n, o in pairs]
        shares = [o["first_second"] / o["steady"] for o in ours]
        print(f"{mode:11}{_median(naive, 'rows_per_s'):9.0f}"
              f"{_median(ours, 'rows_per_s'):8.0f}{_spread(ratios, '.2f'):>19}"
              f"{_median(ours, 'first_second'):7.0f}{_median(ours, 'steady'):10.0f}"
              f"{_spread(shares, '.0%'):>20}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
