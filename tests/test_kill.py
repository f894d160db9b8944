"""
Real process deaths: ``kill -9`` and SIGTERM in the middle of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env

ROWS = 300


def make_input(tmp_path: Path) -> Path:
    """A JSONL job whose prompts name their row."""
    source = tmp_path / "job.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "prompt": f"row r{i} please"}) + "\n"
            for i in range(ROWS)
        )
    )
    return source


def start(
    source: Path, simulator: SimulatorServer, *args: str
) -> subprocess.Popen[bytes]:
    """batchrunner in a child process, against the simulator."""
    return subprocess.Popen(
        [PYTHON, "-m", "batchrunner", str(source), "--log-format", "json", *args],
        env=child_env(simulator),
        cwd=source.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_records(path: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Block until *path* holds *count* complete lines (the run is mid-way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    pytest.fail(f"{path} never reached {count} records")


def ok_ids(path: Path) -> Counter[str]:
    """How many ok records each id has (complete lines only)."""
    counts: Counter[str] = Counter()
    for line in path.read_bytes().split(b"\n")[:-1]:
        record = json.loads(line)
        if record["status"] == "ok":
            counts[record["id"]] += 1
    return counts


def prompt_id(prompt: str) -> str:
    """The row id a simulated request was for."""
    return prompt.split()[1]


def test_kill_9_mid_run_then_resume(simulator: SimulatorServer, tmp_path: Path) -> None:
    """After kill -9 a re-run completes every row once and re-sends no ok row."""
    simulator.config.latency = 0.03
    source = make_input(tmp_path)
    results = tmp_path / "job.results.jsonl"
    proc = start(source, simulator, "--concurrency", "8")
    wait_for_records(results, 60, proc)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = set(ok_ids(results))
    sent_before = len(simulator.ledger.entries)
    assert 60 <= len(done_before) < ROWS

    rerun = start(source, simulator, "--concurrency", "8")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    final = ok_ids(results)
    assert set(final) == {f"r{i}" for i in range(ROWS)}
    assert max(final.values()) == 1
    resent = {prompt_id(e.prompt) for e in simulator.ledger.entries[sent_before:]}
    assert not resent & done_before


def test_kill_9_tears_a_line_and_resume_repairs_it(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """A torn last line (as kill -9 can leave) is dropped and its row sent again."""
    source = make_input(tmp_path)
    results = tmp_path / "job.results.jsonl"
    first = start(source, simulator, "--limit", "10")
    assert first.wait(timeout=60) == 0
    with results.open("ab") as f:
        f.write(b'{"id":"r10","status":"ok","output":"half')
    rerun = start(source, simulator, "--limit", "12")
    assert rerun.wait(timeout=60) == 0
    final = ok_ids(results)
    assert set(final) == {f"r{i}" for i in range(12)}
    assert max(final.values()) == 1


def test_sigterm_exits_143_and_resumes(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """SIGTERM lets in-flight rows finish, exits 143, and a re-run completes."""
    simulator.config.latency = 0.05
    source = make_input(tmp_path)
    results = tmp_path / "job.results.jsonl"
    proc = start(source, simulator, "--concurrency", "4")
    wait_for_records(results, 20, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    events = [json.loads(line) for line in err.decode().splitlines()]
    assert any("SIGTERM" in e["message"] for e in events)
    # Everything the service answered before the exit was recorded.
    done = ok_ids(results)
    answered = {
        prompt_id(e.prompt) for e in simulator.ledger.entries if e.status == 200
    }
    assert answered == set(done)
    assert len(done) < ROWS

    rerun = start(source, simulator)
    assert rerun.wait(timeout=120) == 0
    assert set(ok_ids(results)) == {f"r{i}" for i in range(ROWS)}


def test_sigint_exits_130(simulator: SimulatorServer, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) stops the run with 130, resumable."""
    simulator.config.latency = 0.05
    source = make_input(tmp_path)
    proc = start(source, simulator, "--concurrency", "4")
    wait_for_records(tmp_path / "job.results.jsonl", 10, proc)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130


def test_sigterm_while_rows_wait_for_the_pacer_does_not_wait_out_the_grace(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """At 1 rpm rows wait a minute for their turn: SIGTERM ends them at once (143)."""
    (tmp_path / "config.yaml").write_text("grace_seconds: 600\n")
    source = make_input(tmp_path)
    results = tmp_path / "job.results.jsonl"
    proc = start(source, simulator, "--rpm", "1", "--concurrency", "4")
    wait_for_records(results, 1, proc)
    proc.send_signal(signal.SIGTERM)
    # Far under both the grace period and the next turn a minute away.
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err.decode()
    assert set(ok_ids(results)) == {"r0"}
    assert len(simulator.ledger.entries) == 1
