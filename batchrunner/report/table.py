"""
The summary table a person sees at the end of a run on a terminal, or the one
``summary`` event that stands for it in JSON mode.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from batchrunner.prepare.estimate import money
from batchrunner.report.summary import BATCH_COUNTS

if TYPE_CHECKING:
    # rich loads when the table is drawn: a JSON-logged run never draws it.
    from rich.table import Table

log = logging.getLogger("batchrunner")

#: Longest error example shown in the summary table.
_EXAMPLE_CHARS = 160


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table."""
    from rich.table import Table

    table = Table(title="batchrunner summary", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, value in _summary_rows(summary):
        table.add_row(label, value)
    for error in summary["errors"]:
        example = error["example"]
        if len(example) > _EXAMPLE_CHARS:
            example = example[: _EXAMPLE_CHARS - 1] + "…"
        table.add_row(f"error {error['kind']}", f"{error['rows']:,} × e.g. {example}")
    batches = summary.get("batches")
    if batches is not None:
        shown = ", ".join(f"{batches[k]:,} {k}" for k in BATCH_COUNTS)
        table.add_row("batches", shown)
    deployments = summary.get("deployments") or {}
    for name, share in deployments.items() if len(deployments) > 1 else ():
        table.add_row(f"deployment {name}", _share_text(share))
    if summary.get("stopped"):
        table.add_row("stopped", summary["stopped"])
    return table


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    tokens = summary["tokens"]
    cost = summary["estimated_cost_usd"]
    latency = summary["latency_ms"]
    rows = [
        ("rows ok", f"{summary['rows_ok']:,}"),
        ("rows failed", f"{summary['rows_failed']:,}"),
        ("rows skipped (done before)", f"{summary['rows_skipped']:,}"),
    ]
    reused = summary.get("rows_cached", 0), summary.get("rows_shared", 0)
    if any(reused):
        rows.append(
            ("rows reused (cache / same request)", f"{reused[0]:,} / {reused[1]:,}")
        )
    if summary["rows_not_done"]:
        rows.append(("rows not done", f"{summary['rows_not_done']:,}"))
    requests = f"{summary['requests']:,} / {summary['retries']:,}"
    return [
        *rows,
        ("requests / retries / 429s", f"{requests} / {summary['throttled']:,}"),
        ("tokens in / out", f"{tokens['prompt']:,} / {tokens['completion']:,}"),
        (
            "tokens cached / reasoning",
            f"{tokens['cached']:,} / {tokens['reasoning']:,}",
        ),
        ("estimated cost", "unknown (no price)" if cost is None else money(cost)),
        ("wall time", f"{summary['elapsed_seconds']:,.1f} s"),
        (
            "throughput",
            f"{summary['rows_per_second'] or 0:,.1f} rows/s,"
            f" {summary['tokens_per_minute'] or 0:,} tokens/min",
        ),
        ("latency p50 / p95", f"{_ms(latency['p50'])} / {_ms(latency['p95'])}"),
    ]


def _share_text(share: dict[str, Any]) -> str:
    return (
        f"{share['rows_ok']:,} ok / {share['rows_failed']:,} failed · requests"
        f" {share['requests']:,} · 429s {share['throttled']:,} · errors"
        f" {share['errors']:,} · tokens {share['tokens']['total']:,}"
    )


def _ms(value: int | None) -> str:
    return "–" if value is None else f"{value:,} ms"


def print_summary(
    summary: dict[str, Any], *, json_lines: bool, stream: TextIO | None = None
) -> None:
    """The table on a terminal; one ``summary`` event in JSON mode."""
    if json_lines:
        log.info("run finished", extra={"event": "summary", "summary": summary})
        return
    from rich.console import Console

    console = Console(file=stream or sys.stderr, width=120)
    console.print(summary_table(summary))
