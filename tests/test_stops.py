"""
The stop policy, end to end: a run stopping on repeated failures or a failure
budget, at its deadline, or at its spend cap; and bounded runs as a scheduler
uses them (a deadline longer than the work, a spend cap that holds across
re-runs and shards).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.test_cli import prompts, read_jsonl, write_jsonl

PRICED = (
    "request:\n  max_tokens: 1000\nprices:\n  gpt-4o-mini: {input: 100, output: 100}\n"
)


def summary_of(path: Path) -> dict[str, object]:
    """The summary.json beside results file *path*."""
    return dict(json.loads(path.with_name(path.stem + ".summary.json").read_text()))


def test_max_failures_stops_a_run_against_a_missing_deployment(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A deployment that is not there stops the run at once (exit 1), resumably."""
    source = write_jsonl(tmp_path / "d.jsonl", prompts(300))
    args = [str(source), "--concurrency", "4", "--max-failures", "3"]
    assert run([*args, "--deployment", "nope"]) == 1
    assert azure_env.ledger.count() <= 8
    results = tmp_path / "d.results.jsonl"
    assert summary_of(results)["stopped"]
    assert run(args) == 0
    assert {r["id"] for r in read_jsonl(results) if r["status"] == "ok"} == {
        f"r{i}" for i in range(300)
    }


@pytest.mark.parametrize(("limit", "allowed"), [("3", 3), ("10%", 4)])
def test_max_failures_counts_rows_failing_in_any_way(
    azure_env: SimulatorServer, tmp_path: Path, limit: str, allowed: int
) -> None:
    """Past N failed rows (or P% of the rows to send) the run stops with exit 1."""
    rows = [
        {"id": f"r{i}", "prompt": f"q{i} BLOCKME" if i % 2 else f"q{i}"}
        for i in range(40)
    ]
    source = write_jsonl(tmp_path / "f.jsonl", rows)
    assert run([str(source), "--concurrency", "1", "--max-failures", limit]) == 1
    results = tmp_path / "f.results.jsonl"
    summary = summary_of(results)
    assert isinstance(summary["rows_failed"], int)
    assert allowed < summary["rows_failed"] <= allowed + 2
    assert f"--max-failures {limit}" in str(summary["stopped"])
    assert len(read_jsonl(results)) < 40


def test_bad_max_failures_is_a_usage_error(azure_env: SimulatorServer) -> None:
    """A limit that is neither a count nor a percentage is refused (exit 2)."""
    assert run(["x.csv", "--max-failures", "many"]) == 2
    assert run(["x.csv", "--max-failures", "120%"]) == 2


def test_a_deadline_longer_than_the_work_is_never_hit(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A replica timeout with room to spare changes nothing: exit 0, no stop."""
    source = write_jsonl(tmp_path / "t.jsonl", prompts(20))
    assert run([str(source), "--deadline", "10m"]) == 0
    assert summary_of(tmp_path / "t.results.jsonl")["stopped"] is None


def test_spend_cap_counts_earlier_runs_on_the_same_output(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A re-run under the same cap spends nothing more; a larger cap completes."""
    (tmp_path / "config.yaml").write_text(PRICED)
    source = write_jsonl(tmp_path / "c.jsonl", prompts(50))
    capped = [str(source), "--max-cost", "0.15", "--concurrency", "1"]
    assert run(capped) == 75
    results = tmp_path / "c.results.jsonl"
    spent = summary_of(results)["estimated_cost_usd"]
    sent = azure_env.ledger.count()
    assert 0 < sent < 50
    assert run(capped) == 75
    assert azure_env.ledger.count() == sent
    assert summary_of(results)["estimated_cost_before_usd"] == pytest.approx(spent)
    assert run([str(source), "--max-cost", "100"]) == 0
    assert azure_env.ledger.count() == 50


def test_spend_cap_is_shared_between_shards(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N replicas of one command with --max-cost X spend no more than X together."""
    (tmp_path / "config.yaml").write_text(PRICED)
    source = write_jsonl(tmp_path / "s.jsonl", prompts(60))
    monkeypatch.setenv("BATCHRUNNER_SHARDS", "2")
    spent = 0.0
    for index in range(2):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert run([str(source), "--max-cost", "0.3", "--concurrency", "1"]) == 75
        summary = summary_of(tmp_path / f"s.shard-{index}-of-2.results.jsonl")
        cost = summary["estimated_cost_usd"]
        assert isinstance(cost, float)
        assert 0 < cost <= 0.15
        spent += cost
    assert spent <= 0.3
    for index in range(2):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert run([str(source), "--max-cost", "100"]) == 0
    assert azure_env.ledger.count() == 60


def test_missing_deployment_stops_early(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """Every row would 404: the run stops at once instead of sending them all."""
    source = write_jsonl(tmp_path / "d.jsonl", prompts(300))
    assert run([str(source), "--deployment", "nope", "--concurrency", "4"]) == 1
    assert azure_env.ledger.count() <= 8
    summary = json.loads((tmp_path / "d.results.summary.json").read_text())
    assert "not found" in summary["stopped"]


def test_repeated_identical_failures_stop_the_run(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A request setting the service refuses on every row stops the run early."""
    config = tmp_path / "config.yaml"
    config.write_text("request:\n  n: 1000\n")  # the service refuses it (1-128)
    source = write_jsonl(tmp_path / "d.jsonl", prompts(200))
    assert run([str(source), "--concurrency", "2"]) == 1
    assert azure_env.ledger.count() < 20


def test_deadline_stops_with_75_and_rerun_completes(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """--deadline stops intake in time (exit 75); the next run finishes the rest."""
    azure_env.config.latency = 0.1
    source = write_jsonl(tmp_path / "d.jsonl", prompts(200))
    assert run([str(source), "--deadline", "1s", "--concurrency", "2"]) == 75
    first = read_jsonl(tmp_path / "d.results.jsonl")
    assert 0 < len(first) < 200
    azure_env.config.latency = 0.0
    assert run([str(source), "--concurrency", "16"]) == 0
    records = read_jsonl(tmp_path / "d.results.jsonl")
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(200))


def test_max_cost_stops_with_75(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--max-cost stops taking rows before the cap; a larger cap completes the job."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "request:\n  max_tokens: 1000\n"
        "prices:\n  gpt-4o-mini: {input: 100, output: 100}\n"
    )
    source = write_jsonl(tmp_path / "c.jsonl", prompts(50))
    # A row may cost up to ~(12 + 1000) tokens × $100/1M ≈ $0.10, and costs
    # ~$0.005: rows go until what is spent plus one row's bound passes the cap.
    assert run([str(source), "--max-cost", "0.15", "--concurrency", "1"]) == 75
    summary = json.loads((tmp_path / "c.results.summary.json").read_text())
    assert 0 < summary["rows_ok"] < 50
    assert summary["estimated_cost_usd"] + 0.1 > 0.15 - 0.006
    assert summary["estimated_cost_usd"] <= 0.15
    assert run([str(source), "--max-cost", "100"]) == 0
