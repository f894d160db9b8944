"""Helpers shared by the benchmarks: a simulator process, timed child runs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
DEPLOYMENT = "gpt-4o-mini"


@contextmanager
def simulator(*args: str) -> Iterator[str]:
    """A simulator in its own process (its own core), yielding its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrunner.simulator", "--port", "0",
         "--api-key", KEY, *args],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_input(path: Path, rows: int, words: int = 0) -> Path:
    """A JSONL job of *rows* distinct short prompts (plus *words* of filler)."""
    filler = " ".join(["the service was fine and the food arrived warm"] * (words // 9))
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            prompt = (
                f"Classify the sentiment of review number {i}: {filler} it was fine."
            )
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt}) + "\n")
    return path


def simulator_stats(url: str) -> dict[str, Any]:
    """What the simulator at *url* has received so far."""
    with urllib.request.urlopen(url + "/_simulator/stats") as answer:
        stats: dict[str, Any] = json.load(answer)
    return stats


@dataclass
class ChildRun:
    """What one child process took."""

    wall: float
    cpu: float
    peak_rss_mb: float
    stdout: str


def run_child(
    args: list[str],
    url: str,
    *,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
) -> ChildRun:
    """Run *args* as a child against the simulator at *url*; time it."""
    env = dict(os.environ)
    env.update(
        AZURE_OPENAI_ENDPOINT=url,
        AZURE_OPENAI_API_KEY=KEY,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
        OPENAI_API_VERSION="2024-10-21",
        **(extra_env or {}),
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and done.returncode != 0:
        raise SystemExit(
            f"{args[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far, in KiB on Linux.
    return ChildRun(wall, cpu, after.ru_maxrss / 1024, done.stdout)
