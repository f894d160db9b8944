"""The run's summary: rows folded into totals, cost and latency."""

from __future__ import annotations

from functools import partial

import pytest

from batchrunner.config.prices import answer_price
from batchrunner.config.settings import Settings
from batchrunner.records import Reply, RowResult, Usage
from batchrunner.report.summary import RunStats, percentile


def test_summary_counts_tokens_cost_and_latency() -> None:
    """Rows fold into totals, cost by the reported model and percentiles."""
    stats = RunStats(rows_planned=2, price_for=partial(answer_price, Settings()))
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    reply = Reply(
        output="x", embedding=None, finish_reason="stop", usage=usage,
        model="gpt-4o-mini-2024-07-18", request_id="r", latency_ms=10,
    )  # fmt: skip
    for i in range(2):
        stats.add(
            RowResult(id=str(i), status="ok", reply=reply, error=None, attempts=1,
                      latency_ms=10 * (i + 1), request_id="r"),
        )  # fmt: skip
    summary = stats.as_dict(elapsed=2.0)
    assert summary["rows_ok"] == 2
    assert summary["tokens"]["total"] == 3000
    assert summary["estimated_cost_usd"] == pytest.approx(
        2 * (1000 * 0.15 + 500 * 0.6) / 1e6
    )
    assert summary["latency_ms"] == {"p50": 10, "p95": 20}
    assert summary["rows_per_second"] == 1.0
    assert percentile([], 0.5) is None
