"""
One job, top to bottom: validate the input, plan the rows, then either estimate
(``--dry-run``) or send them through the pool and write the summary.

    reader ─▶ plan ─▶ prepare ─▶ pool (pacer, retries, client) ─▶ writer
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from batchrunner.auth import Auth, open_auth
from batchrunner.cache import RepeatCounter, open_cache
from batchrunner.client import AzureCompleter
from batchrunner.errors import EXIT_OK, EXIT_ROWS_FAILED, ConfigError
from batchrunner.estimate import estimate, report
from batchrunner.hooks import RunHooks, run_hooks
from batchrunner.logs import Redactor
from batchrunner.plan import select
from batchrunner.pool import Control, Pool
from batchrunner.prepare import RequestBuilder
from batchrunner.progress import ProgressDisplay, print_summary
from batchrunner.reader import open_rows, spool_stdin, validate
from batchrunner.records import Request, RowResult, to_record
from batchrunner.resume import read_state
from batchrunner.settings import Settings, check_ready_to_send, with_overrides
from batchrunner.structured import checker_for
from batchrunner.summary import RunStats
from batchrunner.tokens import TokenCounter
from batchrunner.validated import Validated, input_stamp, recall, remember
from batchrunner.writer import (
    ResultSink,
    backup_existing,
    open_sink,
    summary_path,
    write_summary,
)

log = logging.getLogger("batchrunner")

#: The deployment ``--simulate`` uses when none is given.
SIMULATED_DEPLOYMENT = "gpt-4o-mini"


@dataclass(frozen=True)
class Source:
    """The input file to read, and the name to show for it in messages."""

    path: str
    name: str


def default_output(input_arg: str) -> Path:
    """``<input dir>/<input stem>.results.jsonl`` (``./stdin.results.jsonl`` for -)."""
    if input_arg == "-":
        return Path("stdin.results.jsonl")
    path = Path(input_arg)
    name = path.name
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson"):
        name = name.removesuffix(suffix)
    return path.with_name(f"{name}.results.jsonl")


@contextlib.contextmanager
def open_source(input_arg: str) -> Iterator[Source]:
    """The input as a file that can be read twice (stdin is spooled)."""
    if input_arg != "-":
        yield Source(path=input_arg, name=input_arg)
        return
    spooled = spool_stdin(sys.stdin.buffer)
    try:
        yield Source(path=str(spooled), name="<stdin>")
    finally:
        spooled.unlink(missing_ok=True)


def run_job(
    input_arg: str, settings: Settings, *, redactor: Redactor, json_lines: bool
) -> int:
    """Run the job on *input_arg* with *settings*; return the exit code."""
    with open_source(input_arg) as source:
        checker = checker_for(settings)  # a bad schema fails before the input is read
        if settings.simulate and not settings.deployment:
            settings = with_overrides(settings, deployment=SIMULATED_DEPLOYMENT)
        output = Path(settings.output) if settings.output else default_output(input_arg)
        found = _validate(source, settings, output, input_arg)
        if settings.dry_run:
            return _dry_run(source, settings, output)
        check_ready_to_send(settings)
        _check_spend_cap(settings)
        if settings.fresh:
            for backup in backup_existing(output):
                log.info("kept the earlier results as %s", backup)
        hooks = run_hooks(settings, checker, found.repeats)
        code = _send(source, settings, output, found.rows, redactor, json_lines, hooks)
        if settings.join:
            _join(source, settings, output)
        return code


def _join(source: Source, settings: Settings, output: Path) -> None:
    from batchrunner.join import write_joined  # pandas only when asked for

    joined = write_joined(source.path, source.name, settings, output)
    log.info("results joined to the input in %s", joined, extra={"event": "joined"})


def _validate(
    source: Source, settings: Settings, output: Path, input_arg: str
) -> Validated:
    """
    Check every row before anything is sent, counting repeated requests (for
    pay-once); an input that already passed, unchanged, is not read again.
    """
    stamp = None if input_arg == "-" else input_stamp(source.path, settings)
    counting = settings.dedupe and not settings.dry_run
    if stamp is not None and not settings.fresh:
        known = recall(output, stamp)
        if known is not None and (known.repeats is not None or not counting):
            log.debug("input unchanged since it was validated: %d rows", known.rows)
            return known
    counter = RepeatCounter() if counting else None
    observe = counter.add if counter is not None else None
    report = validate(source.path, settings, name=source.name, observe=observe)
    log.debug("input ok: %d rows", report.rows)
    found = Validated(report.rows, counter.repeats() if counter is not None else None)
    if stamp is not None and not settings.dry_run:
        remember(output, stamp, found)
    return found


def _counter_for(settings: Settings) -> TokenCounter:
    """
    Exact counts where a figure depends on them (--tpm, --max-cost, --dry-run);
    otherwise the four-characters-a-token estimate, which keeps the tokenizer's
    second of start-up and ~100 MB out of runs that only pace to learned limits
    (Azure's own limiter estimates from characters too).
    """
    exact = settings.dry_run or settings.tpm or settings.max_cost
    return TokenCounter(settings.model or settings.deployment if exact else None)


def _check_spend_cap(settings: Settings) -> None:
    if settings.max_cost is not None and settings.price_for(None) is None:
        model = settings.model or settings.deployment
        msg = (
            f"--max-cost needs a price for the model {model!r}:"
            " set 'model:' to a known model or add it under 'prices:' in the settings"
        )
        raise ConfigError(msg)


def _planned_requests(
    source: Source, settings: Settings, done: AbstractSet[str]
) -> Iterator[Request]:
    builder = RequestBuilder(settings, path=source.name, counter=_counter_for(settings))
    rows = open_rows(source.path, settings.input, name=source.name)
    for row in select(rows, shard=settings.shard, limit=settings.limit, done=done):
        yield builder.build(row)


def _count_plan(
    source: Source, settings: Settings, done: AbstractSet[str], rows: int
) -> tuple[int, int]:
    """(rows to send, rows skipped as already done) under the shard and limit."""
    if settings.shard is None and settings.limit is None and len(done) <= rows:
        # Every done id came from this input: no need to read it again to count.
        return rows - len(done), len(done)
    planned = skipped = 0
    every = open_rows(source.path, settings.input, name=source.name)
    for row in select(every, shard=settings.shard, limit=settings.limit):
        if row.id in done:
            skipped += 1
        else:
            planned += 1
    return planned, skipped


# --- --dry-run ------------------------------------------------------------------


def _dry_run(source: Source, settings: Settings, output: Path) -> int:
    done = read_state(output).done_ids if not settings.fresh else set()
    cache = open_cache(settings, create=False)
    figures = estimate(_planned_requests(source, settings, done), settings, cache)
    lines = report(
        figures, settings, source=source.name, done=len(done), output=str(output)
    )
    print(lines)
    return EXIT_OK


# --- sending ---------------------------------------------------------------------


@contextlib.contextmanager
def _endpoint(settings: Settings) -> Iterator[Settings]:
    """The settings to send with: the real endpoint, or a simulator's."""
    if not settings.simulate:
        yield settings
        return
    from batchrunner.simulator import SimConfig, SimulatorServer

    assert settings.deployment
    model = settings.model or "gpt-4o-mini-2024-07-18"
    key = secrets.token_urlsafe(24)
    config = SimConfig(
        api_key=key, deployments={settings.deployment: model}, latency=0.05
    )
    with SimulatorServer(config) as server:
        log.info(
            "simulating Azure OpenAI at %s", server.url, extra={"event": "simulator"}
        )
        yield with_overrides(settings, endpoint=server.url, api_key=key)


def _send(
    source: Source,
    settings: Settings,
    output: Path,
    rows: int,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None = None,
) -> int:
    state = read_state(output)
    planned, skipped = _count_plan(source, settings, state.done_ids, rows)
    _counter_for(settings)  # load the tokenizer now, not on the first row's clock
    stats = RunStats(rows_planned=planned, rows_skipped=skipped)
    log.info(
        "%d rows to send, %d already done, results in %s", planned, skipped, output,
        extra={"event": "start", "rows_planned": planned, "rows_skipped": skipped},
    )  # fmt: skip
    started = time.monotonic()
    with _endpoint(settings) as live:
        redactor.add(live.api_key)
        requests = _planned_requests(source, live, state.done_ids)
        control = anyio.run(
            _run_pool, live, requests, output, stats, redactor, json_lines, hooks
        )
    summary = _finish(stats, control, time.monotonic() - started, output)
    print_summary(summary, json_lines=json_lines)
    if control.exit_code is not None:
        return control.exit_code
    return EXIT_ROWS_FAILED if stats.rows_failed else EXIT_OK


async def _run_pool(
    settings: Settings,
    requests: Iterator[Request],
    output: Path,
    stats: RunStats,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None = None,
) -> Control:
    # Fetched tokens join the redactor as they come (the first one before any row).
    async with open_auth(settings, on_secret=redactor.add) as auth:
        return await _run_pool_with(
            auth, settings, requests, output, stats, redactor, json_lines, hooks
        )


async def _run_pool_with(
    auth: Auth,
    settings: Settings,
    requests: Iterator[Request],
    output: Path,
    stats: RunStats,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None,
) -> Control:
    for secret in auth.secrets:
        redactor.add(secret)
    assert settings.endpoint
    completer = AzureCompleter(
        settings,
        endpoint=settings.endpoint,
        api_key=auth.api_key,
        token_provider=auth.token_provider,
    )
    checker = hooks.checker if hooks is not None else None
    sink = open_sink(output, checker.columns if checker is not None else ())
    bar = not json_lines and settings.verbosity >= 0 and sys.stderr.isatty()
    progress = ProgressDisplay(
        stats.rows_planned,
        bar=bar,
        tpm=settings.tpm,
        interval=settings.progress_interval,
    )
    pool = Pool(
        completer,
        settings,
        write=_writer_for(sink),
        stats=stats,
        on_progress=progress.update,
        on_unauthorized=auth.on_unauthorized,
        hooks=hooks,
    )
    try:
        return await pool.run(requests)
    finally:
        progress.close()
        sink.close()
        await completer.aclose()


def _writer_for(sink: ResultSink) -> Any:
    def write(results: list[RowResult]) -> None:
        sink.write([to_record(result) for result in results])

    return write


def _finish(
    stats: RunStats, control: Control, elapsed: float, output: Path
) -> dict[str, Any]:
    summary = stats.as_dict(elapsed)
    summary["results"] = str(output)
    summary["stopped"] = control.reason
    write_summary(summary_path(output), summary)
    return summary
