"""Helpers for batch-mode tests: jobs, child runs, and what the simulator holds."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from batchrunner.simulator import SimConfig, SimulatorServer
from tests.conftest import DEPLOYMENT, PYTHON, SECRET_KEY, child_env

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


def fast_config(**changes: Any) -> SimConfig:
    """The simulator answering batches at once, with the tests' key."""
    config = SimConfig(
        api_key=SECRET_KEY,
        batch_state_seconds=0.0,
        batch_lines_per_second=None,
    )
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def make_job(folder: Path, rows: int, text: str = "row {i} please") -> Path:
    """A JSONL job of *rows* rows with ids r0, r1 … and a carried-through column."""
    source = folder / "job.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "prompt": text.format(i=i), "label": i}) + "\n"
            for i in range(rows)
        )
    )
    return source


def batch_args(*extra: str) -> list[str]:
    """Command-line options of a batch-mode test run."""
    return [
        "--mode",
        "batch",
        "--log-format",
        "json",
        "--poll-interval",
        "0.05",
        *extra,
    ]


def start(
    source: Path, sim: SimulatorServer, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """batchrunner in batch mode in a child process, against *sim*."""
    return subprocess.Popen(
        [PYTHON, "-m", "batchrunner", str(source), *batch_args(*args)],
        env=child_env(sim, **env),
        cwd=source.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run(
    source: Path, sim: SimulatorServer, *args: str, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """batchrunner in batch mode to its end, against *sim*."""
    proc = start(source, sim, *args, **env)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def events(done: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    """The JSON log events of a finished run."""
    return [json.loads(line) for line in done.stderr.decode().splitlines() if line]


def records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL results file."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def ok_counts(path: Path) -> Counter[str]:
    """How many ok records each row has."""
    return Counter(r["id"] for r in records(path) if r["status"] == "ok")


def sdk(sim: SimulatorServer) -> openai.AzureOpenAI:
    """A client of the simulator, for the test to look at files and batches."""
    return openai.AzureOpenAI(
        azure_endpoint=sim.url, api_key=SECRET_KEY, api_version="2024-10-21"
    )


def all_batches(sim: SimulatorServer) -> list[Any]:
    """Every batch the simulator holds, oldest first."""
    with sdk(sim) as client:
        found = list(client.batches.list(limit=100))
    return sorted(found, key=lambda b: (b.created_at, b.id))


def input_files(sim: SimulatorServer) -> list[Any]:
    """Every uploaded batch input file the simulator holds."""
    with sdk(sim) as client:
        return list(client.files.list(purpose="batch"))


def wait_until_ended(sim: SimulatorServer, count: int) -> None:
    """Block until *count* batches exist and all have ended."""
    sim.ledger.wait_for_batches(
        lambda s: len(s) >= count and all(v in ENDED for v in s.values()), 60
    )


__all__ = ["DEPLOYMENT"]
