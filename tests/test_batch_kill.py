"""
Batch mode survives ``kill -9`` at every step: a re-run leaves every row in
exactly one batch that ran, collected exactly once. The simulator's gates stop
the child at the exact call; its ledger counts the lines answered per row.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrunner.simulator import Gate, SimulatorServer
from tests.batchkit import (
    all_batches,
    events,
    fast_config,
    input_files,
    make_job,
    ok_counts,
    records,
    run,
    start,
    wait_until_ended,
)

ROWS = 6


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """The simulator, answering batches as fast as it can."""
    with SimulatorServer(fast_config()) as server:
        yield server


def kill_when_held(proc: subprocess.Popen[bytes], gate: Gate) -> None:
    """kill -9 the child once the simulator holds its call at *gate*."""
    while not gate.held.wait(0.1):
        assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def every_row_once(sim: SimulatorServer, results: Path) -> None:
    """Each row was answered by the service once and recorded ok once."""
    expected = {f"r{i}": 1 for i in range(ROWS)}
    assert sim.ledger.batch_line_counts() == expected
    assert ok_counts(results) == expected


def test_kill_between_upload_and_create(sim: SimulatorServer, tmp_path: Path) -> None:
    """The uploaded file no batch was made of is deleted; its rows go once."""
    gate = Gate("batches.create")
    sim.config.gates.append(gate)
    source = make_job(tmp_path, ROWS)
    kill_when_held(start(source, sim), gate)
    assert len(input_files(sim)) == 1 and all_batches(sim) == []

    rerun = run(source, sim, "--wait")
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert any(e.get("event") == "batch_file_unused" for e in events(rerun))
    assert [b.status for b in all_batches(sim)] == ["completed"]
    assert input_files(sim) == []  # the unused one, and the collected batch's
    every_row_once(sim, tmp_path / "job.results.jsonl")


def test_kill_between_collect_and_deleting_the_input_file(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A collected batch's input file left by a kill is deleted by the re-run."""
    gate = Gate("files.delete")
    sim.config.gates.append(gate)
    source = make_job(tmp_path, ROWS)
    kill_when_held(start(source, sim, "--wait"), gate)
    results = tmp_path / "job.results.jsonl"
    assert ok_counts(results) == {f"r{i}": 1 for i in range(ROWS)}
    assert len(input_files(sim)) == 1
    gate.release()

    rerun = run(source, sim)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert input_files(sim) == []
    assert len(all_batches(sim)) == 1
    every_row_once(sim, results)


def test_kill_between_create_and_hearing_of_it(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A batch created but never heard of is found; only the other part is sent."""
    gate = Gate("batches.create", after=True)
    sim.config.gates.append(gate)
    source = make_job(tmp_path, ROWS)
    proc = start(source, sim, BATCHRUNNER_BATCH_MAX_REQUESTS="3")
    kill_when_held(proc, gate)
    assert len(all_batches(sim)) == 1

    rerun = run(source, sim, "--wait", BATCHRUNNER_BATCH_MAX_REQUESTS="3")
    assert rerun.returncode == 0, rerun.stderr.decode()
    submitted = [e for e in events(rerun) if e.get("event") == "batch_submitted"]
    assert [e["rows"] for e in submitted] == [3]
    assert len(all_batches(sim)) == 2
    every_row_once(sim, tmp_path / "job.results.jsonl")


def test_kill_between_download_and_write(sim: SimulatorServer, tmp_path: Path) -> None:
    """A batch whose download was cut off is collected by the re-run, once."""
    # The error file is fetched first, then the output file: hold the second.
    gate = Gate("files.content", 2, after=True)
    sim.config.gates.append(gate)
    source = make_job(tmp_path, ROWS)
    kill_when_held(start(source, sim, "--wait"), gate)
    results = tmp_path / "job.results.jsonl"
    assert not results.exists() or records(results) == []

    rerun = run(source, sim)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert len(all_batches(sim)) == 1
    every_row_once(sim, results)


@pytest.mark.parametrize("left", ["collecting", "no state"])
def test_collected_again_appends_nothing_twice(tmp_path: Path, left: str) -> None:
    """
    A batch collected again, after a kill mid-write (still *collecting*) or with
    its state file lost, appends only what the results lack: no ok row or error
    line twice.
    """
    with SimulatorServer(fast_config()) as sim:
        source = make_job(tmp_path, ROWS)
        source.write_text(
            source.read_text().replace('"row 1 please"', '"' + "word " * 80 + '"')
        )
        sim.config.context_windows = {"gpt-4o-mini-2024-07-18": 60}
        first = run(source, sim, "--wait")
        assert first.returncode == 1, first.stderr.decode()
        results = tmp_path / "job.results.jsonl"
        state = tmp_path / "job.results.batches.json"
        if left == "collecting":  # what a kill after three records leaves
            lines = results.read_bytes().split(b"\n")
            results.write_bytes(b"\n".join(lines[:3]) + b"\n")
            data = json.loads(state.read_text())
            data["collecting"], data["collected"] = data["collected"], []
            state.write_text(json.dumps(data))
        else:
            state.unlink()

        again = run(source, sim)
        assert again.returncode == 75, again.stderr.decode()  # r1 sent again
        wait_until_ended(sim, 2)
    kinds = Counter((r["id"], r["status"]) for r in records(results))
    assert kinds == {("r1", "error"): 1} | {
        (f"r{i}", "ok"): 1 for i in range(ROWS) if i != 1
    }
    assert json.loads(state.read_text())["collecting"] == []


def test_cancel_collects_what_finished_and_a_rerun_sends_the_rest(
    tmp_path: Path,
) -> None:
    """--cancel ends the running batch, keeps its answers; a re-run sends the rest."""
    with SimulatorServer(fast_config(batch_lines_per_second=4.0)) as sim:
        source = make_job(tmp_path, 40)
        first = run(source, sim)
        assert first.returncode == 75, first.stderr.decode()
        sim.ledger.wait_for_batches(lambda s: "in_progress" in s.values())
        cancelled = run(source, sim, "--cancel", "--wait")
        assert cancelled.returncode == 1, cancelled.stderr.decode()
        assert [b.status for b in all_batches(sim)] == ["cancelled"]
        results = tmp_path / "job.results.jsonl"
        kept = ok_counts(results)
        assert len(kept) < 40
        assert all(r["status"] == "ok" for r in records(results))

        sim.config.batch_lines_per_second = None
        rest = run(source, sim, "--wait")
        assert rest.returncode == 0, rest.stderr.decode()
        assert sim.ledger.batch_line_counts() == {f"r{i}": 1 for i in range(40)}
    assert ok_counts(results) == {f"r{i}": 1 for i in range(40)}


def test_cancel_without_wait_exits_75_while_the_batch_is_cancelling(
    tmp_path: Path,
) -> None:
    """--cancel alone asks for the cancel and exits 75 while it is still cancelling."""
    with SimulatorServer(fast_config(batch_lines_per_second=4.0)) as sim:
        source = make_job(tmp_path, 40)
        first = run(source, sim)
        assert first.returncode == 75, first.stderr.decode()
        sim.ledger.wait_for_batches(lambda s: "in_progress" in s.values())
        sim.config.batch_state_seconds = 600.0  # cancelling lasts (Azure: 10 min)
        cancelled = run(source, sim, "--cancel")
        assert cancelled.returncode == 75, cancelled.stderr.decode()
        assert [b.status for b in all_batches(sim)] == ["cancelling"]
    summary = next(
        e["summary"] for e in events(cancelled) if e.get("event") == "summary"
    )
    assert "1 batch is still running" in summary["stopped"]


def test_sigterm_while_waiting_exits_143_and_batches_go_on(tmp_path: Path) -> None:
    """SIGTERM during --wait exits 143; the batch runs on and a re-run collects it."""
    with SimulatorServer(fast_config(batch_lines_per_second=20.0)) as sim:
        source = make_job(tmp_path, 30)
        proc = start(source, sim, "--wait")
        sim.ledger.wait_for_batches(lambda s: "in_progress" in s.values())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err.decode()
        wait_until_ended(sim, 1)
        rerun = run(source, sim)
        assert rerun.returncode == 0, rerun.stderr.decode()
        assert [b.status for b in all_batches(sim)] == ["completed"]
    assert ok_counts(tmp_path / "job.results.jsonl") == {f"r{i}": 1 for i in range(30)}
