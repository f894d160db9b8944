"""
Batch mode end to end: ``python -m batchrunner --mode batch`` in child
processes, the real SDK, and the simulator's Files and Batches API over HTTP.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from batchrunner.send.batch.names import PartName, output_key
from batchrunner.simulator import SimulatorServer
from tests.batchkit import (
    all_batches,
    events,
    fast_config,
    input_files,
    make_job,
    ok_counts,
    records,
    run,
    sdk,
    wait_until_ended,
)
from tests.conftest import DEPLOYMENT, PYTHON


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """The simulator, answering batches as fast as it can."""
    with SimulatorServer(fast_config()) as server:
        yield server


def test_submit_then_collect_in_a_later_process(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """One run submits and exits 75; the next collects every row once, exit 0."""
    source = make_job(tmp_path, 12)
    results = tmp_path / "job.results.jsonl"
    first = run(source, sim)
    assert first.returncode == 75, first.stderr.decode()
    assert not results.exists() or records(results) == []
    wait_until_ended(sim, 1)

    second = run(source, sim)
    assert second.returncode == 0, second.stderr.decode()
    counts = ok_counts(results)
    assert counts == {f"r{i}": 1 for i in range(12)}
    record = next(r for r in records(results) if r["id"] == "r3")
    assert record["output"] and record["finish_reason"] == "stop"
    assert record["usage"]["total_tokens"] > 0
    assert record["model"] == "gpt-4o-mini-2024-07-18"
    assert record["request_id"] and record["attempts"] == 1
    assert record["input"] == {"label": 3}
    assert [r["id"] for r in records(results)] == [f"r{i}" for i in range(12)]

    third = run(source, sim)
    assert third.returncode == 0, third.stderr.decode()
    assert len(all_batches(sim)) == 1
    assert ok_counts(results) == counts
    assert sim.ledger.batch_line_counts() == {f"r{i}": 1 for i in range(12)}


def test_wait_polls_to_the_end_and_summary_counts_batches(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """--wait stays until every batch ended; the summary counts the batches."""
    source = make_job(tmp_path, 5)
    done = run(source, sim, "--wait")
    assert done.returncode == 0, done.stderr.decode()
    summary = next(e["summary"] for e in events(done) if e.get("event") == "summary")
    assert summary["batches"] == {
        "submitted": 1, "completed": 1, "expired": 0, "failed": 0,
        "cancelled": 0, "running": 0,
    }  # fmt: skip
    assert summary["rows_ok"] == 5
    written = tmp_path / "job.results.summary.json"
    assert '"batches"' in written.read_text()


def test_files_split_at_the_limits(sim: SimulatorServer, tmp_path: Path) -> None:
    """
    Ten rows at four a file make three batches of 4, 4 and 2 lines, named for
    the output; their input files are deleted once collected.
    """
    source = make_job(tmp_path, 10)
    first = run(source, sim, BATCHRUNNER_BATCH_MAX_REQUESTS="4")
    assert first.returncode == 75, first.stderr.decode()
    names = sorted(f.filename for f in input_files(sim))
    assert [n.rsplit("-", 1)[1] for n in names] == [
        "0001.jsonl", "0002.jsonl", "0003.jsonl",
    ]  # fmt: skip
    done = run(source, sim, "--wait", BATCHRUNNER_BATCH_MAX_REQUESTS="4")
    assert done.returncode == 0, done.stderr.decode()
    assert input_files(sim) == []
    batches = sorted(all_batches(sim), key=lambda b: b.metadata["batchrunner_part"])
    assert [b.request_counts.total for b in batches] == [4, 4, 2]
    assert all(b.metadata == batches[0].metadata | {
        "batchrunner_submission": b.metadata["batchrunner_submission"],
        "batchrunner_part": b.metadata["batchrunner_part"],
    } for b in batches)  # fmt: skip
    assert ok_counts(tmp_path / "job.results.jsonl") == {f"r{i}": 1 for i in range(10)}


def test_failed_lines_are_recorded_and_only_they_resubmitted(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Lines answered with errors become error records; the next run sends only them."""
    source = make_job(tmp_path, 8)
    long = source.read_text().replace('"row 2 please"', '"' + "word " * 80 + '"')
    source.write_text(long.replace('"row 5 please"', '"' + "word " * 80 + '"'))
    sim.config.context_windows = {"gpt-4o-mini-2024-07-18": 60}
    first = run(source, sim, "--wait")
    assert first.returncode == 1, first.stderr.decode()
    results = tmp_path / "job.results.jsonl"
    failed = {r["id"]: r for r in records(results) if r["status"] == "error"}
    assert set(failed) == {"r2", "r5"}
    assert failed["r2"]["error"]["code"] == "context_length_exceeded"
    assert failed["r2"]["error"]["status_code"] == 400
    assert failed["r2"]["input"] == {"label": 2}

    sim.config.context_windows = {}
    second = run(source, sim, "--wait")
    assert second.returncode == 0, second.stderr.decode()
    assert sorted(b.request_counts.total for b in all_batches(sim)) == [2, 8]
    lines = sim.ledger.batch_line_counts()
    assert lines == {f"r{i}": 2 if i in (2, 5) else 1 for i in range(8)}
    assert ok_counts(results) == {f"r{i}": 1 for i in range(8)}


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "batch_expired"])
def test_expired_batch_keeps_its_done_rows_and_resubmits_the_rest(
    tmp_path: Path, listed: bool
) -> None:
    """
    An expired batch's answered rows are kept; --wait resubmits only the rest,
    whether the error file lists them (``batch_expired``) or not.
    """
    config = fast_config(
        batch_expire_after={1: 4}, batch_unfinished_in_error_file=listed
    )
    with SimulatorServer(config) as sim:
        source = make_job(tmp_path, 10)
        done = run(source, sim, "--wait")
        assert done.returncode == 0, done.stderr.decode()
        ended = {b.status: b.request_counts.total for b in all_batches(sim)}
        assert ended == {"expired": 10, "completed": 6}
        assert sim.ledger.batch_line_counts() == {f"r{i}": 1 for i in range(10)}
    results = tmp_path / "job.results.jsonl"
    assert ok_counts(results) == {f"r{i}": 1 for i in range(10)}
    assert all(r["status"] == "ok" for r in records(results))
    summary = next(e["summary"] for e in events(done) if e.get("event") == "summary")
    assert (summary["batches"]["expired"], summary["batches"]["submitted"]) == (1, 2)


def test_bad_input_uploads_nothing(sim: SimulatorServer, tmp_path: Path) -> None:
    """A bad row, or embeddings in batch mode, exits 2 with nothing uploaded."""
    source = make_job(tmp_path, 3)
    source.write_text(source.read_text() + '{"id": "r0", "prompt": "again"}\n')
    done = run(source, sim)
    assert done.returncode == 2
    assert "job.jsonl:4" in done.stderr.decode()
    source = make_job(tmp_path, 3)
    embeddings = run(source, sim, "--api", "embeddings")
    assert embeddings.returncode == 2
    assert "does not support embeddings" in embeddings.stderr.decode()
    assert input_files(sim) == [] and all_batches(sim) == []


def test_a_deployment_that_cannot_run_batches_is_named(tmp_path: Path) -> None:
    """A deployment that is not Global-Batch fails validation: exit 2, how to fix."""
    with SimulatorServer(fast_config(batch_deployments={"other"})) as sim:
        source = make_job(tmp_path, 3)
        done = run(source, sim, "--wait")
    assert done.returncode == 2
    message = events(done)[-1]["message"]
    assert "Global-Batch" in message and repr(DEPLOYMENT) in message
    assert "--deployment" in message


def test_a_refusal_of_the_old_deployment_does_not_block_the_fixed_one(
    tmp_path: Path,
) -> None:
    """
    A batch refused for the old (non-batch) deployment, collected after the user
    switched to a batch deployment, is not blamed on the new one: its rows go again.
    """
    config = fast_config(batch_deployments={"gpt-4o-mini-batch"})
    config.deployments["gpt-4o-mini-batch"] = "gpt-4o-mini-2024-07-18"
    with SimulatorServer(config) as sim:
        source = make_job(tmp_path, 3)
        first = run(source, sim)
        assert first.returncode == 75, first.stderr.decode()
        wait_until_ended(sim, 1)
        fixed = run(source, sim, "--wait", "--deployment", "gpt-4o-mini-batch")
        assert fixed.returncode == 0, fixed.stderr.decode()
        assert [b.status for b in all_batches(sim)] == ["failed", "completed"]
    assert ok_counts(tmp_path / "job.results.jsonl") == {f"r{i}": 1 for i in range(3)}


def test_full_enqueued_token_quota_within_the_deadline_exits_75(
    tmp_path: Path,
) -> None:
    """token_limit_exceeded at create, no time to back off: exit 75, file deleted."""
    with SimulatorServer(fast_config(batch_enqueued_tokens=10)) as sim:
        source = make_job(tmp_path, 3)
        done = run(source, sim, "--deadline", "3s")
        assert done.returncode == 75, done.stderr.decode()
        assert all_batches(sim) == [] and input_files(sim) == []
    assert any(e.get("event") == "batch_quota_full" for e in events(done))


def test_simulate_batch_wait_end_to_end(tmp_path: Path) -> None:
    """--simulate --mode batch --wait runs the whole thing offline."""
    source = make_job(tmp_path, 4)
    with SimulatorServer(fast_config()) as unused:
        done = run(source, unused, "--simulate", "--wait")
    assert done.returncode == 0, done.stderr.decode()
    assert ok_counts(tmp_path / "job.results.jsonl") == {f"r{i}": 1 for i in range(4)}
    assert unused.ledger.batch_line_counts() == {}


def test_wait_stops_before_the_deadline_resumable(tmp_path: Path) -> None:
    """--wait with a --deadline stops polling in time: exit 75, batches go on."""
    with SimulatorServer(fast_config(batch_lines_per_second=2.0)) as sim:
        source = make_job(tmp_path, 30)
        done = run(source, sim, "--wait", "--deadline", "2s")
        assert done.returncode == 75, done.stderr.decode()
        assert [b.status for b in all_batches(sim)] == ["in_progress"]
    message = next(e for e in events(done) if e.get("event") == "summary")
    assert "still running" in message["summary"]["stopped"]


def test_show_config_lists_the_batch_settings(tmp_path: Path) -> None:
    """--show-config shows mode, limits and the batch price beside the online one."""
    source = make_job(tmp_path, 1)
    shown = subprocess.run(
        [PYTHON, "-m", "batchrunner", str(source), "--show-config", "--mode", "batch",
         "--deployment", "gpt-4o-mini"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "flag --mode" in shown and "batch_max_requests" in shown
    assert "(batch: $0.075 in, $0.3 out)" in shown


def test_full_enqueued_token_quota_is_waited_out(tmp_path: Path) -> None:
    """A create refused for the enqueued-token quota is tried again 5 s later."""
    (tmp_path / "config.yaml").write_text("request:\n  max_tokens: 100\n")
    config = fast_config(batch_enqueued_tokens=400, batch_lines_per_second=3.0)
    with SimulatorServer(config) as sim:
        source = make_job(tmp_path, 6)
        done = run(source, sim, "--wait", BATCHRUNNER_BATCH_MAX_REQUESTS="3")
        assert done.returncode == 0, done.stderr.decode()
        assert len(all_batches(sim)) == 2
        assert sim.ledger.batch_line_counts() == {f"r{i}": 1 for i in range(6)}
    waits = [e["wait"] for e in events(done) if e.get("event") == "batch_token_limit"]
    assert waits[:1] == [5.0]


def test_validation_errors_are_mapped_back_to_their_rows(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A failed batch's errors.data lines become error records of their rows."""
    source = make_job(tmp_path, 3)
    results = tmp_path / "job.results.jsonl"
    name = PartName(output_key(str(results)), "deadbeef", 1)
    lines = [
        {"custom_id": row, "method": "POST", "url": "/chat/completions",
         "body": {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "x"}]}}
        for row in ("r0", "r1", "r1")
    ]  # fmt: skip
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with sdk(sim) as client:
        uploaded = client.files.create(file=(name.file_name, data), purpose="batch")
        client.batches.create(
            input_file_id=uploaded.id, endpoint=cast(Any, "/chat/completions"),
            completion_window="24h", metadata=name.metadata(str(results), DEPLOYMENT),
        )  # fmt: skip
    wait_until_ended(sim, 1)
    done = run(source, sim)
    assert done.returncode == 75, done.stderr.decode()  # the rows went again
    failed = [r for r in records(results) if r["status"] == "error"]
    assert [r["id"] for r in failed] == ["r1"]
    assert failed[0]["error"]["code"] == "duplicate_custom_id"
    assert "input line 3" in failed[0]["error"]["message"]
    assert failed[0]["input"] == {"label": 1}

    # Its input file is deleted once collected: collected again (the state file
    # lost), the batch adds nothing, and the run does not trip over the file.
    wait_until_ended(sim, 2)
    (tmp_path / "job.results.batches.json").unlink()
    again = run(source, sim)
    assert again.returncode == 75, again.stderr.decode()  # failed r1 goes again
    assert any(e.get("event") == "batch_input_gone" for e in events(again))
    submitted = [
        e["rows"] for e in events(again) if e.get("event") == "batch_submitted"
    ]
    assert submitted == [1]
    assert [r["id"] for r in records(results) if r["status"] == "error"] == ["r1"]
    assert ok_counts(results) == {"r0": 1, "r2": 1}
