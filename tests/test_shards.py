"""
Sharding as schedulers run it: indexed replicas, claimed shards, output names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.prepare.shards import ShardPlan, shard_output
from batchrunner.results.lock import FileLock
from batchrunner.simulator import SimulatorServer
from tests.test_cli import prompts, read_jsonl, write_jsonl


def test_indexed_job_replicas_cover_every_row_once(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas with JOB_COMPLETION_INDEX and BATCHRUNNER_SHARDS split the rows."""
    source = write_jsonl(tmp_path / "job.jsonl", prompts(60))
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "4")
    seen: list[str] = []
    for index in range(4):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert run([str(source)]) == 0
        output = tmp_path / f"job.shard-{index}-of-4.results.jsonl"
        seen += [record["id"] for record in read_jsonl(output)]
    assert sorted(seen) == sorted(f"r{i}" for i in range(60))
    assert azure_env.ledger.count() == 60


def test_scheduler_mistakes_exit_2(
    azure_env: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An index without a shard count, or --fresh with claimed shards, is refused."""
    source = write_jsonl(tmp_path / "job.jsonl", prompts(4))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert run([str(source), "--log-format", "text"]) == 2
    assert "BATCHRUNNER_SHARDS" in capsys.readouterr().err
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "2")
    assert run([str(source), "--fresh", "--log-format", "text"]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert azure_env.ledger.count() == 0


def test_replicas_without_an_index_claim_free_shards(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With BATCHRUNNER_SHARDS alone, a run takes a free shard that has rows left."""
    source = write_jsonl(tmp_path / "job.jsonl", prompts(30))
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "3")
    outputs = [tmp_path / f"job.shard-{i}-of-3.results.jsonl" for i in range(3)]
    other_replica = FileLock(outputs[0])
    assert run([str(source)]) == 0
    assert run([str(source)]) == 0
    assert outputs[1].read_bytes() and outputs[2].read_bytes()
    assert not outputs[0].read_bytes()
    sent = azure_env.ledger.count()
    monkeypatch.setenv("BATCHRUNNER_CLAIM_WAIT", "0")
    assert run([str(source)]) == 0  # shard 0 held, 1 and 2 finished: nothing to do
    assert azure_env.ledger.count() == sent
    other_replica.release()
    assert run([str(source)]) == 0
    ids = [record["id"] for output in outputs for record in read_jsonl(output)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(30))
    assert azure_env.ledger.count() == 30


def test_a_claiming_replica_waits_for_a_held_shard_to_come_free(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard held when a replica looks (a crashed run's lease) is taken once free."""
    source = write_jsonl(tmp_path / "job.jsonl", prompts(10))
    assert run([str(source), "--shard", "1/2"]) == 0
    held = tmp_path / "job.shard-0-of-2.results.jsonl"
    holder = FileLock(held)

    class LetGoWhenSeen(logging.Filter):
        """Releases the holder's lock once the claiming run has found it busy."""

        def filter(self, record: logging.LogRecord) -> bool:
            if getattr(record, "event", None) == "shard_busy":
                holder.release()
            return True

    watcher = LetGoWhenSeen()
    logging.getLogger("batchrunner").addFilter(watcher)
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "2")
    try:
        assert run([str(source)]) == 0
    finally:
        logging.getLogger("batchrunner").removeFilter(watcher)
    shard_ids = {record["id"] for record in read_jsonl(held)}
    assert shard_ids and len(shard_ids) < 10
    assert azure_env.ledger.count() == 10


@pytest.mark.parametrize(
    ("output", "plan", "expected"),
    [
        (None, None, "jobs/p.results.jsonl"),
        (None, ShardPlan(4, 1, "settings"), "jobs/p.shard-1-of-4.results.jsonl"),
        ("out/r.csv", ShardPlan(4, 1, "settings"), "out/r.csv"),
        (
            "out/r.csv",
            ShardPlan(4, 1, "JOB_COMPLETION_INDEX"),
            "out/r.shard-1-of-4.csv",
        ),
        (
            "az://c/r-{shard}-{shards}.jsonl",
            ShardPlan(4, 1, "claim"),
            "az://c/r-1-4.jsonl",
        ),
        (None, ShardPlan(1, 0, "settings"), "jobs/p.results.jsonl"),
    ],
)
def test_shard_output_names(
    output: str | None, plan: ShardPlan | None, expected: str
) -> None:
    """Shards get results of their own unless --shard was given with an --output."""
    assert shard_output(output, "jobs/p.csv.gz", plan, 1 if plan else 0) == expected
