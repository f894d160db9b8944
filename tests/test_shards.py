"""
Sharding as schedulers run it, and ``merge`` putting the shards back together.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from batchrunner.cli import run
from batchrunner.prepare.shards import ShardPlan, shard_output
from batchrunner.results.frame import read_results
from batchrunner.results.lock import FileLock
from batchrunner.simulator import SimulatorServer
from tests.test_blob import blob_bytes, records, upload_jsonl
from tests.test_cli import prompts, read_jsonl, write_jsonl


def view(path: Path) -> dict[str, tuple[str, Any]]:
    """Each id's status and output, the way a single run's results hold them."""
    return {r["id"]: (r["status"], r.get("output")) for r in read_jsonl(path)}


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


def test_merge_of_shards_reproduces_a_single_run(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """Merging N shard results gives the ids, statuses and outputs of one run."""
    rows = [*prompts(40), {"id": "bad", "prompt": "x BLOCKME"}]
    source = write_jsonl(tmp_path / "job.jsonl", rows)
    single = tmp_path / "single.jsonl"
    assert run([str(source), "-o", str(single)]) == 1
    parts = [tmp_path / f"job.shard-{i}-of-3.results.jsonl" for i in range(3)]
    for index in range(3):
        run([str(source), "--shard", f"{index}/3"])
    merged = tmp_path / "merged.jsonl"
    assert run(["merge", *map(str, parts), "-o", str(merged)]) == 1
    assert view(merged) == view(single)
    summary = json.loads((tmp_path / "merged.summary.json").read_text())
    one = json.loads((tmp_path / "single.summary.json").read_text())
    assert (summary["rows_total"], summary["rows_ok"], summary["rows_failed"]) == (
        41,
        40,
        1,
    )
    assert summary["tokens"]["total"] == one["tokens"]["total"]
    assert summary["estimated_cost_usd"] == pytest.approx(one["estimated_cost_usd"])
    assert [p["summary"]["rows_total"] for p in summary["parts"]] == [
        json.loads((p.with_name(p.stem + ".summary.json")).read_text())["rows_total"]
        for p in parts
    ]


def test_merge_mixes_formats_and_an_ok_record_wins(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A row failed in one part and ok in another is ok, whichever part comes first."""
    rows = [*prompts(3), {"id": "flaky", "prompt": "f [[sim:500]]"}]
    source = write_jsonl(tmp_path / "job.jsonl", rows)
    failed, ok = tmp_path / "a.jsonl", tmp_path / "b.csv"
    assert run([str(source), "-o", str(failed), "--max-attempts", "1"]) == 1
    assert run([str(source), "-o", str(ok)]) == 0
    for order in ([failed, ok], [ok, failed]):
        merged = tmp_path / "merged.parquet"
        assert run(["merge", *map(str, order), "-o", str(merged)]) == 0
        frame = read_results(merged)
        assert sorted(frame["id"]) == ["flaky", "r0", "r1", "r2"]
        assert (frame["status"] == "ok").all()
        assert (frame["usage_total_tokens"] > 0).all()


def test_merge_refuses_missing_parts_and_overwriting_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A part that does not exist, or a merged output that is a part, is exit 2."""
    part = tmp_path / "p.jsonl"
    part.write_text('{"id":"1","status":"ok"}\n')
    missing = str(tmp_path / "nope.jsonl")
    merged = str(tmp_path / "m.jsonl")
    assert run(["merge", str(part), missing, "-o", merged, "--log-format", "text"]) == 2
    assert "nope.jsonl: no such results file" in capsys.readouterr().err
    assert run(["merge", str(part), "-o", str(part), "--log-format", "text"]) == 2
    assert "is also one of the parts" in capsys.readouterr().err


def test_blob_shards_merge_into_a_blob(
    azure_env: SimulatorServer,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shards of a blob input write blob results, and merge joins them in storage."""
    url = upload_jsonl(container, "in/job.jsonl", prompts(20))
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "2")
    for index in range(2):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert run([url]) == 0
    base = f"az://{container.container_name}/in/job"
    parts = [f"{base}.shard-{i}-of-2.results.jsonl" for i in range(2)]
    assert run(["merge", *parts, "-o", f"{base}.results.jsonl"]) == 0
    merged = records(blob_bytes(container, "in/job.results.jsonl"))
    assert sorted(r["id"] for r in merged) == sorted(f"r{i}" for i in range(20))
    properties = container.get_blob_client("in/job.results.jsonl").get_blob_properties()
    assert properties.blob_type == "AppendBlob"  # so a later run can resume it
    assert json.loads(blob_bytes(container, "in/job.results.summary.json"))["parts"]


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
