"""Tests for batchrunner.results.spend: the spend read back from a results file."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.config.layers import build_settings
from batchrunner.results.spend import recorded_cost
from batchrunner.simulator import SimulatorServer
from tests.test_cli import prompts, write_jsonl
from tests.test_stops import PRICED, summary_of


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
