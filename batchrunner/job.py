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
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from batchrunner.auth import open_auth
from batchrunner.claim import hold_output, recorded_done
from batchrunner.client import AzureCompleter
from batchrunner.errors import EXIT_OK, EXIT_ROWS_FAILED, ConfigError, RunStopped
from batchrunner.logs import RUN_CONTEXT, Redactor
from batchrunner.outputs import Output
from batchrunner.plan import select
from batchrunner.pool import Control, Pool, expected_duration, row_cost
from batchrunner.prepare import RequestBuilder
from batchrunner.progress import ProgressDisplay, print_summary
from batchrunner.reader import open_rows, spool_stdin, validate
from batchrunner.records import Request, RowResult, to_record
from batchrunner.resume import read_state
from batchrunner.rowlog import RowLog
from batchrunner.settings import (
    Settings,
    check_ready_to_send,
    environment,
    with_overrides,
)
from batchrunner.sharding import resolve_shards, shard_label
from batchrunner.spend import recorded_cost
from batchrunner.storage import (
    fetched_input,
    is_blob_url,
    parse_blob_url,
    storage_secrets,
)
from batchrunner.summary import RunStats
from batchrunner.tokens import TokenCounter
from batchrunner.writer import ResultSink, open_sink

log = logging.getLogger("batchrunner")

#: The deployment ``--simulate`` uses when none is given.
SIMULATED_DEPLOYMENT = "gpt-4o-mini"


@dataclass(frozen=True)
class Source:
    """The input file to read, and the name to show for it in messages."""

    path: str
    name: str


@contextlib.contextmanager
def open_source(
    input_arg: str,
    *,
    account: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Source]:
    """The input as a file that can be read twice (stdin and blobs are copied)."""
    if is_blob_url(input_arg):
        with fetched_input(input_arg, account, environ or environment()) as path:
            yield Source(path=str(path), name=str(parse_blob_url(input_arg)))
        return
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
    environ = environment()
    for secret in storage_secrets(environ):
        redactor.add(secret)
    plan = resolve_shards(settings.shard, settings.shards, environ)
    RUN_CONTEXT.bind(run_id=secrets.token_hex(6), shard=shard_label(plan))
    account = settings.storage_account
    with open_source(input_arg, account=account, environ=environ) as source:
        report = validate(source.path, settings, name=source.name)
        log.debug("input ok: %d rows", report.rows)
        if settings.simulate and not settings.deployment:
            settings = with_overrides(settings, deployment=SIMULATED_DEPLOYMENT)
        if settings.dry_run:
            dry, done, shown = recorded_done(input_arg, settings, plan, environ)
            return _dry_run(source, dry, done, shown, json_lines=json_lines)
        check_ready_to_send(settings)
        _check_spend_cap(settings)

        def rows_left(shard_settings: Settings, results: Path) -> int:
            done = read_state(results).done_ids
            return _count_plan(source, shard_settings, done)[0]

        held = hold_output(input_arg, settings, plan, environ, rows_left)
        if held is None:
            return EXIT_OK  # every shard finished or held by another run
        out, settings = held
        RUN_CONTEXT.bind(shard=shard_label(plan, settings.shard))
        try:
            for backup in out.backups:
                log.info("kept the earlier results as %s", backup)
            return _send(source, settings, out, redactor, json_lines)
        finally:
            out.close()


def _counter_for(settings: Settings) -> TokenCounter | None:
    needed = settings.dry_run or settings.tpm or settings.max_cost
    return TokenCounter(settings.model or settings.deployment) if needed else None


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
    source: Source, settings: Settings, done: AbstractSet[str]
) -> tuple[int, int]:
    """(rows to send, rows skipped as already done) under the shard and limit."""
    rows = open_rows(source.path, settings.input, name=source.name)
    planned = skipped = 0
    for row in select(rows, shard=settings.shard, limit=settings.limit):
        if row.id in done:
            skipped += 1
        else:
            planned += 1
    return planned, skipped


# --- --dry-run ------------------------------------------------------------------


def _dry_run(
    source: Source,
    settings: Settings,
    done: AbstractSet[str],
    shown: str,
    *,
    json_lines: bool = False,
) -> int:
    price = settings.price_for(None)
    counter = _counter_for(settings)
    requests = prompt = charged = 0
    completion_bound = 0
    cost = 0.0
    for request in _planned_requests(source, settings, done):
        requests += 1
        prompt += request.prompt_tokens
        charged += request.charged_tokens
        completion_bound += request.charged_tokens - request.prompt_tokens
        cost += row_cost(request, price, settings)
    duration = expected_duration(charged, requests, settings)
    lines = [
        f"input            {source.name}: valid",
        f"rows to send     {requests:,} ({len(done):,} already done in {shown})",
        f"prompt tokens    {prompt:,}"
        + ("" if counter is None or counter.exact else " (estimated: 4 chars a token)"),
        f"completion bound {completion_bound:,} (max_tokens × n)",
        f"quota charge     {charged:,} tokens",
        "expected cost    "
        + (f"≤ ${cost:,.4f}" if price else "unknown: no price for this model"),
        "expected time    "
        + (f"≥ {duration:,.0f} s under the given --tpm/--rpm" if duration else
           "no --tpm/--rpm given"),
    ]  # fmt: skip
    if json_lines:  # one event, like everything else in this mode
        log.info(
            "dry run: %d rows to send", requests,
            extra={
                "event": "dry_run", "input": source.name, "rows_to_send": requests,
                "rows_done": len(done), "results": shown, "prompt_tokens": prompt,
                "completion_bound": completion_bound, "quota_charge": charged,
                "expected_cost_usd": round(cost, 6) if price else None,
                "expected_seconds": round(duration) if duration else None,
            },
        )  # fmt: skip
        return EXIT_OK
    print("\n".join(lines))
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
    output: Output,
    redactor: Redactor,
    json_lines: bool,
) -> int:
    state = read_state(output.path)
    planned, skipped = _count_plan(source, settings, state.done_ids)
    stats = RunStats(rows_planned=planned, rows_skipped=skipped)
    if settings.max_cost is not None:
        stats.cost_before = recorded_cost(output.path, settings.price_for)
    RUN_CONTEXT.counters = stats.counters
    log.info(
        "%d rows to send, %d already done, results in %s", planned, skipped,
        output.shown,
        extra={"event": "start", "rows_planned": planned, "rows_skipped": skipped,
               "results": output.shown, "spent_before_usd": stats.cost_before},
    )  # fmt: skip
    started = time.monotonic()
    with _endpoint(settings) as live:
        redactor.add(live.api_key)
        requests = _planned_requests(source, live, state.done_ids)
        control = anyio.run(
            _run_pool, live, requests, output, stats, redactor, json_lines
        )
    summary = _finish(stats, control, time.monotonic() - started, output)
    print_summary(summary, json_lines=json_lines)
    if control.exit_code is not None:
        return control.exit_code
    return EXIT_ROWS_FAILED if stats.rows_failed else EXIT_OK


async def _run_pool(
    settings: Settings,
    requests: Iterator[Request],
    output: Output,
    stats: RunStats,
    redactor: Redactor,
    json_lines: bool,
) -> Control:
    auth = await open_auth(settings)
    for secret in auth.secrets:
        redactor.add(secret)
    assert settings.endpoint
    completer = AzureCompleter(
        settings,
        endpoint=settings.endpoint,
        api_key=auth.api_key,
        token_provider=auth.token_provider,
    )
    sink = open_sink(output.path)
    output.sync()  # opening may have cut off a torn tail
    rows = RowLog(prompts=settings.log_prompts)
    bar = not json_lines and settings.verbosity >= 0 and sys.stderr.isatty()
    progress = ProgressDisplay(stats.rows_planned, bar=bar)
    pool = Pool(
        completer,
        settings,
        write=_writer_for(sink, output, rows, lambda: pool.control),
        stats=stats,
        on_progress=progress.update,
    )
    try:
        return await pool.run(rows.watch(requests))
    finally:
        progress.close()
        sink.close()
        await completer.aclose()
        await auth.close()


def _writer_for(
    sink: ResultSink, output: Output, rows: RowLog, control: Callable[[], Control]
) -> Any:
    def write(results: list[RowResult]) -> None:
        sink.write([to_record(result) for result in results])
        rows.written(results)
        try:
            output.sync()
        except RunStopped as exc:  # results storage failed: stop, resumable
            control().stop(str(exc), exc.exit_code)

    return write


def _finish(
    stats: RunStats, control: Control, elapsed: float, output: Output
) -> dict[str, Any]:
    summary = stats.as_dict(elapsed)
    summary["results"] = output.shown
    summary["stopped"] = control.reason
    output.finish(summary)
    return summary
