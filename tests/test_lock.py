"""
One writer per output: a live run's lock refuses a second run, and a run killed
with kill -9 leaves no lock behind.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.errors import OutputBusy
from batchrunner.results.lock import FileLock
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env
from tests.test_kill import ROWS, make_input, ok_ids, prompt_id, wait_for_records


def test_second_writer_refused_then_lock_reclaimed_after_kill_9(
    azure_env: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A live run's output refuses a second run (exit 2); kill -9 frees it at once."""
    azure_env.config.latency = 0.05  # slow enough to still be running below
    source = make_input(tmp_path)
    results = tmp_path / "job.results.jsonl"
    first = subprocess.Popen(
        [PYTHON, "-m", "batchrunner", str(source), "--concurrency", "2"],
        env=child_env(azure_env), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_records(results, 10, first)

    assert run([str(source), "--log-format", "text"]) == 2
    assert "being written by another batchrunner run" in capsys.readouterr().err

    first.kill()
    first.wait()
    assert first.returncode == -signal.SIGKILL
    done_before = set(ok_ids(results))
    sent_before = len(azure_env.ledger.entries)
    assert len(done_before) < ROWS
    assert run([str(source), "--concurrency", "16"]) == 0
    final = ok_ids(results)
    assert set(final) == {f"r{i}" for i in range(ROWS)}
    assert max(final.values()) == 1
    resent = {prompt_id(e.prompt) for e in azure_env.ledger.entries[sent_before:]}
    assert not resent & done_before


def test_lock_is_per_output_file(tmp_path: Path) -> None:
    """Holding one output's lock refuses it twice but leaves other outputs free."""
    first = FileLock(tmp_path / "a.jsonl")
    with pytest.raises(OutputBusy, match="another batchrunner run"):
        FileLock(tmp_path / "a.jsonl")
    other = FileLock(tmp_path / "b.jsonl")
    first.release()
    FileLock(tmp_path / "a.jsonl").release()
    other.release()
