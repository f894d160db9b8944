"""
Bounded runs, as a scheduler uses them: a failure budget, a deadline longer than
the work, and a spend cap that holds across re-runs and shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.config.settings import build_settings
from batchrunner.results.spend import recorded_cost
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


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_recorded_cost_matches_the_summary(
    azure_env: SimulatorServer, tmp_path: Path, suffix: str
) -> None:
    """The spend read back from a results file is the one its run estimated."""
    config = tmp_path / "config.yaml"
    config.write_text(PRICED)
    rows = [*prompts(6), {"id": "bad", "prompt": "x BLOCKME"}]
    source = write_jsonl(tmp_path / "r.jsonl", rows)
    output = tmp_path / f"out{suffix}"
    assert run([str(source), "-o", str(output)]) == 1
    settings = build_settings({}, {}, config)
    recorded = recorded_cost(output, settings.price_for)
    assert recorded > 0
    assert recorded == pytest.approx(summary_of(output)["estimated_cost_usd"])
