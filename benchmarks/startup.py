"""
Start-up: how long the command takes before it does its work, each figure beside
a baseline measured in the same run.

- ``--version`` and ``--help``, beside ``python -c pass`` (the interpreter alone)
  and ``python -c "import openai"`` (the SDK a run cannot do without);
- process start to the first request of a 1,000-row CSV job, against a simulator
  this script starts, beside ``import openai``;
- ``--deadline 3s`` on a job that cannot finish in time: process start to exit,
  beside the target of 3 s + one request's latency (the grace of a request in
  flight).

Each is the median of ``--repeat`` runs (the machine is shared; medians and
ratios are the figures to quote).

    python -m benchmarks.startup [--repeat 7]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from batchrunner.simulator import SimConfig, SimulatorServer
from benchmarks.common import DEPLOYMENT, KEY, ROOT

PYTHON = sys.executable
#: The simulator's answer time in the ``--deadline`` run: long enough that the
#: job cannot end before the deadline, short enough to bound the grace.
DEADLINE_LATENCY = 0.5


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from starting *args* to its exit."""
    started = time.monotonic()
    subprocess.run(args, env=env, cwd=ROOT, capture_output=True, check=False)
    return time.monotonic() - started


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    """The median of *repeat* measurements."""
    return statistics.median(measure() for _ in range(repeat))


def job_env(url: str) -> dict[str, str]:
    """The environment of a run against the simulator at *url*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUNNER_")}
    env.update(
        AZURE_OPENAI_ENDPOINT=url,
        AZURE_OPENAI_API_KEY=KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
        OPENAI_API_VERSION="2024-10-21",
        BATCHRUNNER_LOG_FORMAT="json",
    )
    return env


def write_csv(path: Path, rows: int) -> Path:
    """A CSV job of *rows* short, distinct prompts."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "prompt"])
        for i in range(rows):
            writer.writerow([f"r{i}", f"Classify the sentiment of review {i}: fine."])
    return path


def first_request(server: SimulatorServer, source: Path, tmp: Path) -> float:
    """Seconds from starting a fresh job on *source* to its first request."""
    server.ledger.reset()
    output = tmp / "startup.results.jsonl"
    state = tmp / f"state-{time.monotonic_ns()}"  # no remembered validation
    env = job_env(server.url) | {"BATCHRUNNER_STATE_DIR": str(state)}
    args = [PYTHON, "-m", "batchrunner", str(source), "-o", str(output), "--fresh"]
    started = time.monotonic()
    done = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the job failed ({done.returncode}): {done.stderr[-2000:]}")
    # The ledger's times are time.monotonic() readings, one clock across processes.
    return min(entry.time for entry in server.ledger.entries) - started


def deadline_exit(server: SimulatorServer, source: Path, tmp: Path) -> float:
    """Seconds from starting a ``--deadline 3s`` job that cannot finish to its exit."""
    output = tmp / "deadline.results.jsonl"
    args = [PYTHON, "-m", "batchrunner", str(source), "-o", str(output), "--fresh"]
    args += ["--deadline", "3s", "--concurrency", "4"]
    env = job_env(server.url) | {"BATCHRUNNER_STATE_DIR": str(tmp / "state")}
    started = time.monotonic()
    done = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 75:
        raise SystemExit(f"expected exit 75, got {done.returncode}: {done.stderr}")
    return time.monotonic() - started


def main() -> None:
    """Measure, then print each figure beside its baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    command = [PYTHON, "-m", "batchrunner"]
    bare = median_of(repeat, lambda: timed([PYTHON, "-c", "pass"]))
    sdk = median_of(repeat, lambda: timed([PYTHON, "-c", "import openai"]))
    version = median_of(repeat, lambda: timed([*command, "--version"]))
    shown = median_of(repeat, lambda: timed([*command, "--help"]))
    config = SimConfig(api_key=KEY, deployments={DEPLOYMENT: "gpt-4o-mini-2024-07-18"})
    with tempfile.TemporaryDirectory() as folder, SimulatorServer(config) as server:
        tmp = Path(folder)
        source = write_csv(tmp / "startup.csv", 1000)
        first = median_of(repeat, lambda: first_request(server, source, tmp))
        server.config.latency = DEADLINE_LATENCY
        stopped = median_of(
            max(1, repeat // 2), lambda: deadline_exit(server, source, tmp)
        )
    target = 3 + DEADLINE_LATENCY
    print(f"medians of {repeat} runs (deadline: {max(1, repeat // 2)})")
    print(f"  python -c pass                 {bare:6.3f} s")
    print(f"  python -c 'import openai'      {sdk:6.3f} s")
    print(f"  --version                      {version:6.3f} s  target 0.5 s")
    print(f"  --help                         {shown:6.3f} s")
    print(
        f"  first request, 1,000-row CSV   {first:6.3f} s  target 1 s;"
        f" {first / sdk:.2f}x import openai"
    )
    print(
        f"  --deadline 3s, start to exit   {stopped:6.3f} s  target {target:.1f} s"
        f" (3 s + {DEADLINE_LATENCY} s latency)"
    )


if __name__ == "__main__":
    main()
