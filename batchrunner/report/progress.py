"""
What a person watching the run sees while it runs: a live display on a
terminal, periodic ``progress`` events otherwise (the table at the end is
``report.table``'s).

The live display shows rows done of the total (counted before the run starts), rows
a second, tokens a minute against the ``--tpm`` budget, the time left, retries, 429s
and failures, and with several deployments each one's rows, requests, tokens, 429s
and errors. Log lines printed meanwhile go above it. Off a terminal, a ``progress``
event with the same counters is logged every ``progress_interval`` seconds while
rows finish, and once at the end: one JSON object a line with ``--log-format json``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from batchrunner.report.summary import RunStats

if TYPE_CHECKING:
    # rich loads when a bar or a table is drawn: a JSON-logged run (a job in a
    # container) never draws one, and its start-up should not pay for it.
    from rich.progress import Progress

log = logging.getLogger("batchrunner")

#: Seconds between progress events when there is no live display (the default).
EVENT_INTERVAL = 10.0
#: Least seconds between two redraws forced by finishing rows.
_REDRAW = 0.1


class ProgressDisplay:
    """A live display on a terminal (*bar*), progress events otherwise."""

    def __init__(
        self,
        total: int,
        *,
        bar: bool,
        tpm: int | None = None,
        interval: float = EVENT_INTERVAL,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        batches: bool = False,
    ) -> None:
        self.total = total
        #: Batch mode: rows arrive a batch at a time, so batches, not rates, show.
        self.batches = batches
        self.tpm = tpm
        self.interval = interval
        self._clock = clock
        self._started = clock()
        self._last_event = self._started
        self._last_redraw = float("-inf")
        self._stats: RunStats | None = None
        self._bar: Progress | None = None
        self._moved: list[tuple[logging.StreamHandler[Any], Any]] = []
        #: The live display's lines under the bar: each deployment's figures.
        self._shares: list[str] = []
        if bar:
            self._start_bar(stream or sys.stderr)

    def _start_bar(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=stream)
        rates = (
            []
            if self.batches
            else [
                TextColumn("· {task.fields[rate]} · {task.fields[tokens]} · eta"),
                TimeRemainingColumn(),
            ]
        )
        from rich.text import Text

        shown = self._shares

        class WithShares(Progress):
            """The bar, and under it a line for each deployment of the run."""

            def get_renderables(self) -> Iterator[Any]:
                yield from super().get_renderables()
                yield from (Text(f"  {line}") for line in shown)

        self._bar = WithShares(
            TextColumn("[bold]rows"),
            BarColumn(),
            MofNCompleteColumn(),
            *rates,
            TextColumn("· elapsed"),
            TimeElapsedColumn(),
            TextColumn("· {task.fields[counts]}"),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task(
            "rows", total=self.total, rate="", tokens="", counts=""
        )
        self._bar.start()
        # The live display owns the terminal: log lines must print above it, through
        # the stand-in for stderr that rich installs while it runs.
        proxy = sys.stderr
        if proxy is stream:
            return
        for handler in logging.getLogger("batchrunner").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                handler.setStream(proxy)
                self._moved.append((handler, stream))

    def update(self, stats: RunStats) -> None:
        """Show *stats*: redraw the display, or log an event every interval."""
        self._stats = stats
        now = self._clock()
        if self._bar is not None:
            self._draw(stats, now)
        elif now - self._last_event >= self.interval:
            self._last_event = now
            self._event(stats, now)

    def close(self) -> None:
        """Leave the display at its last state, or log a last event."""
        if self._bar is not None:
            if self._stats is not None:
                self._draw(self._stats, self._clock(), force=True)
            self._bar.stop()
            for handler, stream in self._moved:
                handler.setStream(stream)
        elif self._stats is not None:
            self._event(self._stats, self._clock())

    def _draw(self, stats: RunStats, now: float, *, force: bool = False) -> None:
        assert self._bar is not None
        figures = progress_figures(stats, self.total, now - self._started, self.tpm)
        counts = f"retries {stats.retries} · 429s {stats.throttled}"
        if stats.batches is not None:
            counts = batches_text(stats.batches)
        if stats.rows_failed:
            counts += f" · [red]failed {stats.rows_failed}[/]"
        if stats.rows_cached or stats.rows_shared:
            counts += f" · reused {stats.rows_cached + stats.rows_shared}"
        self._shares[:] = deployment_lines(stats)
        self._bar.update(
            self._task,
            completed=figures["rows_done"],
            rate=f"{figures['rows_per_second']:,.1f} rows/s",
            tokens=_tokens_text(figures["tokens_per_minute"], self.tpm),
            counts=counts,
        )
        # Rich redraws on its own clock too; this shows each finished batch soon.
        if force or now - self._last_redraw >= _REDRAW:
            self._last_redraw = now
            self._bar.refresh()

    def _event(self, stats: RunStats, now: float) -> None:
        figures = progress_figures(stats, self.total, now - self._started, self.tpm)
        if stats.batches is not None:
            # A batch's rows arrive all at once: rates and an eta would mislead.
            log.info(
                "%s; %d/%d rows done, %d failed",
                batches_text(stats.batches),
                figures["rows_done"],
                self.total,
                stats.rows_failed,
                extra={"event": "progress", **figures},
            )
            return
        eta = figures["eta_seconds"]
        shares = " · ".join(deployment_lines(stats))
        log.info(
            "%d/%d rows done, %.1f rows/s, %s tokens/min, eta %s; %d retries,"
            " %d 429s, %d failed%s",
            figures["rows_done"],
            self.total,
            figures["rows_per_second"],
            f"{figures['tokens_per_minute']:,}",
            "unknown" if eta is None else f"{eta:,.0f} s",
            stats.retries,
            stats.throttled,
            stats.rows_failed,
            f"; {shares}" if shares else "",
            extra={"event": "progress", **figures},
        )


def batches_text(batches: Mapping[str, int]) -> str:
    """Batch counts for a person: ``batches 2 running, 3 ended of 5``."""
    ended = sum(batches[k] for k in ("completed", "expired", "failed", "cancelled"))
    return (
        f"batches {batches['running']} running, {ended} ended,"
        f" {batches['submitted']} submitted"
    )


def progress_figures(
    stats: RunStats, total: int, elapsed: float, tpm: int | None
) -> dict[str, Any]:
    """The counters of a progress event after *elapsed* seconds."""
    done = stats.rows_ok + stats.rows_failed
    elapsed = max(elapsed, 1e-9)
    rate = done / elapsed
    left = max(0, total - done)
    return {
        "rows_done": done,
        "rows_total": total,
        "rows_ok": stats.rows_ok,
        "rows_failed": stats.rows_failed,
        "rows_cached": stats.rows_cached,
        "rows_shared": stats.rows_shared,
        "retries": stats.retries,
        "throttled": stats.throttled,
        "requests": stats.requests,
        "tokens": stats.total_tokens,
        "tokens_per_minute": round(stats.total_tokens / elapsed * 60),
        "tpm_budget": tpm,
        "rows_per_second": round(rate, 2),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": round(left / rate, 1) if rate > 0 else None,
        **({} if stats.batches is None else {"batches": dict(stats.batches)}),
        "deployments": stats.deployments_dict(),
    }


def deployment_lines(stats: RunStats) -> list[str]:
    """
    Each deployment's rows, requests, tokens, 429s and errors, when a run has
    several: ``east 38 ok, 40 req, 1.8k tok, 2 429s, 0 err``.
    """
    if len(stats.by_deployment) < 2:
        return []
    return [
        f"{name} {share.rows_ok:,} ok, {share.requests:,} req,"
        f" {_short(share.total_tokens)} tok, {share.throttled} 429s,"
        f" {share.errors} err"
        + (f", {share.rows_failed} failed" if share.rows_failed else "")
        for name, share in stats.by_deployment.items()
    ]


def _tokens_text(per_minute: int, budget: int | None) -> str:
    text = f"{_short(per_minute)} tok/min"
    return f"{text} of {_short(budget)}" if budget else text


def _short(number: float) -> str:
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{unit}"
    return f"{number:.0f}"
