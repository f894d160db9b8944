"""Tests for batchrunner.results.merge: shard results put back together as one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from batchrunner.cli import run
from batchrunner.results.frame import read_results
from batchrunner.simulator import SimulatorServer
from tests.test_blob import blob_bytes, records, upload_jsonl
from tests.test_cli import prompts, read_jsonl, write_jsonl


def view(path: Path) -> dict[str, tuple[str, Any]]:
    """Each id's status and output, the way a single run's results hold them."""
    return {r["id"]: (r["status"], r.get("output")) for r in read_jsonl(path)}


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
