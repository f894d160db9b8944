"""
What a person watching the run sees: a progress bar on a terminal, periodic
progress events otherwise, and the summary table at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from batchrunner.summary import RunStats

log = logging.getLogger("batchrunner")

#: Seconds between progress events when there is no bar.
EVENT_INTERVAL = 10.0


class ProgressDisplay:
    """A bar on a terminal (unless *quiet*), progress events otherwise."""

    def __init__(self, total: int, *, bar: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self._last_event = time.monotonic()
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None
        if bar:
            self._bar = Progress(
                TextColumn("[bold]rows"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                console=Console(file=stream or sys.stderr),
                transient=False,
            )
            self._task = self._bar.add_task("rows", total=total, rate="", extra="")
            self._bar.start()

    def update(self, stats: RunStats) -> None:
        """Show *stats* now (the bar) or every few seconds (events)."""
        done = stats.rows_ok + stats.rows_failed
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-9)
        if self._bar is not None:
            extra = f"retries {stats.retries} · 429s {stats.throttled}"
            if stats.rows_failed:
                extra += f" · [red]failed {stats.rows_failed}"
            self._bar.update(
                self._task,
                completed=done,
                rate=f"{done / elapsed:,.1f} rows/s",
                extra=extra,
            )
        elif now - self._last_event >= EVENT_INTERVAL:
            self._last_event = now
            log.info(
                "%d/%d rows done",
                done,
                self.total,
                extra={
                    "event": "progress",
                    "rows_done": done,
                    "rows_total": self.total,
                    "rows_ok": stats.rows_ok,
                    "rows_failed": stats.rows_failed,
                    "retries": stats.retries,
                    "throttled": stats.throttled,
                    "rows_per_second": round(done / elapsed, 2),
                    "tokens": stats.total_tokens,
                },
            )

    def close(self) -> None:
        """Leave the bar at its last state."""
        if self._bar is not None:
            self._bar.stop()


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table."""
    table = Table(title="batchrunner summary", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    tokens = summary["tokens"]
    cost = summary["estimated_cost_usd"]
    rows = [
        ("rows ok", f"{summary['rows_ok']:,}"),
        ("rows failed", f"{summary['rows_failed']:,}"),
        ("rows skipped (done before)", f"{summary['rows_skipped']:,}"),
        ("rows not done", f"{summary['rows_not_done']:,}"),
        (
            "requests / retries / 429s",
            f"{summary['requests']:,} / {summary['retries']:,}"
            f" / {summary['throttled']:,}",
        ),
        ("tokens in / out", f"{tokens['prompt']:,} / {tokens['completion']:,}"),
        (
            "tokens cached / reasoning",
            f"{tokens['cached']:,} / {tokens['reasoning']:,}",
        ),
        ("estimated cost", "unknown (no price)" if cost is None else f"${cost:,.4f}"),
        ("wall time", f"{summary['elapsed_seconds']:,.1f} s"),
        ("throughput", f"{summary['rows_per_second'] or 0:,.1f} rows/s"),
        (
            "latency p50 / p95",
            f"{summary['latency_ms']['p50']} / {summary['latency_ms']['p95']} ms",
        ),
    ]
    for label, value in rows:
        table.add_row(label, value)
    for error in summary["errors"]:
        table.add_row(
            f"error {error['kind']}", f"{error['rows']:,} × e.g. {error['example']}"
        )
    if summary.get("stopped"):
        table.add_row("stopped", summary["stopped"])
    return table


def print_summary(
    summary: dict[str, Any], *, json_lines: bool, stream: TextIO | None = None
) -> None:
    """The table on a terminal; one ``summary`` event in JSON mode."""
    if json_lines:
        log.info("run finished", extra={"event": "summary", "summary": summary})
        return
    console = Console(file=stream or sys.stderr, width=120)
    console.print(summary_table(summary))
