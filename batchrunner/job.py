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
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.config.locations import is_blob_url, parse_blob_url, storage_secrets
from batchrunner.config.prices import answer_price
from batchrunner.config.settings import (
    Settings,
    check_endpoint_of,
    check_ready_to_send,
    environment,
    with_overrides,
)
from batchrunner.errors import AuthError, ConfigError, InputError, RunStopped
from batchrunner.prepare.builder import RequestBuilder
from batchrunner.prepare.estimate import estimate, report
from batchrunner.prepare.plan import select
from batchrunner.prepare.shards import resolve_shards, shard_label
from batchrunner.prepare.structured import AnswerChecker, checker_for
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.prepare.validate import validate
from batchrunner.records import Request, RowResult, to_record
from batchrunner.report.logs import Redactor, bind_counters, bind_run
from batchrunner.report.progress import ProgressDisplay, print_summary
from batchrunner.report.rowlog import RowLog
from batchrunner.report.summary import RunStats
from batchrunner.results.claim import hold_output, recorded_done
from batchrunner.results.destination import Output
from batchrunner.results.resume import error_request_ids, read_state
from batchrunner.results.sinks import ResultSink, open_sink
from batchrunner.results.spend import recorded_cost
from batchrunner.results.target import check_outputs
from batchrunner.rows.reader import open_rows, spool_stdin
from batchrunner.rows.stamp import Validated, input_stamp, recall, remember
from batchrunner.send.hooks import RunHooks, run_hooks
from batchrunner.send.reuse import RepeatCounter, open_cache

if TYPE_CHECKING:
    from batchrunner.azure.credentials import Auth
    from batchrunner.send.sender import Sender
    from batchrunner.send.stops import StopPolicy

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
        from batchrunner.azure.blob import fetched_input  # the storage SDK

        with fetched_input(input_arg, account, environ or environment()) as path:
            yield Source(path=str(path), name=str(parse_blob_url(input_arg)))
        return
    if input_arg != "-":
        yield Source(path=input_arg, name=input_arg)
        return
    if sys.stdin.isatty():
        # Nothing is piped in: reading would wait for typing that never comes.
        problem = (
            "'-' reads JSONL from stdin, and stdin is a terminal; pipe a file in,"
            " like: python -m batchrunner - < prompts.jsonl"
        )
        raise InputError("<stdin>", None, None, problem)
    spooled = spool_stdin(sys.stdin.buffer)
    try:
        yield Source(path=str(spooled), name="<stdin>")
    finally:
        spooled.unlink(missing_ok=True)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: rows recorded as failed, and why it stopped early, if it did."""

    rows_failed: int = 0
    stopped: RunStopped | AuthError | None = None


def run_job(
    input_arg: str,
    settings: Settings,
    *,
    redactor: Redactor,
    json_lines: bool,
    started: float | None = None,
) -> Outcome:
    """
    Run the job on *input_arg* with *settings*; return how it ended.

    ``--deadline`` counts from *started* (a ``time.monotonic()`` reading: the
    process's start for the command), else from now.
    """
    started = time.monotonic() if started is None else started
    environ = environment()
    for secret in storage_secrets(environ):
        redactor.add(secret)
    plan = resolve_shards(settings.shard, settings.shards, environ)
    bind_run(run_id=secrets.token_hex(6), shard=shard_label(plan))
    check_outputs(settings.output, input_arg, plan, settings.sources)
    check_endpoint_of(settings)
    if settings.simulate and not settings.deployment:
        # Before validation, which checks prompts against this model's window.
        settings = with_overrides(settings, deployment=SIMULATED_DEPLOYMENT)
    account = settings.storage_account
    if settings.mode == "batch" or settings.wait or settings.cancel:
        # Batch mode's module loads the SDKs: an online run does not need it.
        from batchrunner.send.batch.run import check_batch_options

        check_batch_options(settings)
    with open_source(input_arg, account=account, environ=environ) as source:
        checker = checker_for(settings)  # a bad schema fails before the input is read
        found = _validate(source, settings, input_arg)
        if settings.deployments:
            from batchrunner.send.deployments import for_deployments

            settings = for_deployments(settings)
        if settings.dry_run:
            dry, done, shown = recorded_done(input_arg, settings, plan, environ)
            return _dry_run(source, dry, done, shown)
        check_ready_to_send(settings)
        _check_spend_cap(settings)
        if settings.mode == "batch":
            from batchrunner.send.batch.run import batch_settings

            settings = batch_settings(settings)

        def rows_left(shard_settings: Settings, results: Path) -> int:
            done = read_state(results).done_ids
            return _count_plan(source, shard_settings, done, found.rows)[0]

        held = hold_output(input_arg, settings, plan, environ, rows_left)
        if held is None:
            return Outcome()  # every shard finished or held by another run
        out, settings = held
        bind_run(shard=shard_label(plan, settings.shard))
        try:
            for backup in out.backups:
                log.info("kept the earlier results as %s", backup)
            if settings.mode == "batch":
                outcome = _send_batches(
                    source, settings, out, found.rows, redactor, json_lines, checker
                )
            else:
                hooks = run_hooks(settings, checker, found.repeats)
                outcome = _send(
                    source,
                    settings,
                    out,
                    found.rows,
                    redactor,
                    json_lines,
                    hooks,
                    started,
                )
        finally:
            out.close()
        if settings.join:
            _join(source, settings, out.path)
        return outcome


def _join(source: Source, settings: Settings, output: Path) -> None:
    from batchrunner.results.join import write_joined  # pandas only when asked for

    joined = write_joined(source.path, source.name, settings, output)
    log.info("results joined to the input in %s", joined, extra={"event": "joined"})


def _validate(source: Source, settings: Settings, input_arg: str) -> Validated:
    """
    Check every row before anything is sent, counting repeated requests (for
    pay-once); an input that already passed, unchanged, is not read again.
    """
    stamp = None if input_arg == "-" else input_stamp(source.path, settings)
    counting = settings.dedupe and not settings.dry_run
    if stamp is not None and not settings.fresh:
        known = recall(stamp)
        # A file remembered with no rows is read again, to be refused (older
        # versions let an empty input by).
        usable = known is not None and known.rows > 0
        if known is not None and usable and (known.repeats is not None or not counting):
            log.debug("input unchanged since it was validated: %d rows", known.rows)
            return known
    counter = RepeatCounter() if counting else None
    observe = counter.add if counter is not None else None
    checked = validate(source.path, settings, name=source.name, observe=observe)
    log.debug("input ok: %d rows", checked.rows)
    found = Validated(checked.rows, counter.repeats() if counter is not None else None)
    if stamp is not None and not settings.dry_run:
        remember(stamp, found)
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


def _dry_run(
    source: Source,
    settings: Settings,
    done: AbstractSet[str],
    shown: str,
) -> Outcome:
    cache = open_cache(settings, create=False)
    cached = cache.has_answer if cache is not None else None
    figures = estimate(_planned_requests(source, settings, done), settings, cached)
    lines = report(figures, settings, source=source.name, done=len(done), output=shown)
    # The report is the command's output; only an explicit --log-format json
    # (nothing but JSON lines) leaves it to the estimate event.
    if settings.log_format != "json":
        print(lines)
    return Outcome()


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
    rows: int,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None = None,
    deadline_from: float | None = None,
) -> Outcome:
    _load_send_stage()
    state = read_state(output.path)
    planned, skipped = _count_plan(source, settings, state.done_ids, rows)
    _counter_for(settings)  # load the tokenizer now, not on the first row's clock
    stats = RunStats(
        rows_planned=planned,
        rows_skipped=skipped,
        price_for=partial(answer_price, settings),
    )
    if settings.max_cost is not None:
        stats.cost_before = recorded_cost(output.path, partial(answer_price, settings))
    bind_counters(stats.counters)
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
            _run_pool,
            live,
            requests,
            output,
            stats,
            redactor,
            json_lines,
            hooks,
            started if deadline_from is None else deadline_from,
        )
    summary = _finish(stats, control, time.monotonic() - started, output)
    print_summary(summary, json_lines=json_lines)
    stopped = control.interrupted or control.cause
    return Outcome(rows_failed=stats.rows_failed, stopped=stopped)


def _load_send_stage() -> None:
    """
    Import the SDKs once the run is going to send: a --dry-run, or a run refused
    for a mistake, never pays for them; and before the run's own clock starts,
    so its rates are the sending's.
    """
    import batchrunner.azure.client
    import batchrunner.azure.credentials
    import batchrunner.send.pool  # noqa: F401


async def _run_pool(
    settings: Settings,
    requests: Iterator[Request],
    output: Output,
    stats: RunStats,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None,
    started: float,
) -> StopPolicy:
    from batchrunner.azure.credentials import open_auth, open_deployment_auths

    # Fetched tokens join the redactor as they come (the first one before any row).
    if settings.deployments:
        async with open_deployment_auths(settings, on_secret=redactor.add) as auths:
            return await _run_pool_with(
                auths, settings, requests, output, stats, redactor, json_lines,
                hooks, started,
            )  # fmt: skip
    async with open_auth(settings, on_secret=redactor.add) as auth:
        return await _run_pool_with(
            auth,
            settings,
            requests,
            output,
            stats,
            redactor,
            json_lines,
            hooks,
            started,
        )


async def _run_pool_with(
    auth: Auth | dict[str, Auth],
    settings: Settings,
    requests: Iterator[Request],
    output: Output,
    stats: RunStats,
    redactor: Redactor,
    json_lines: bool,
    hooks: RunHooks | None,
    started: float,
) -> StopPolicy:
    from batchrunner.azure.client import AzureCompleter, Completer
    from batchrunner.send.deployments import deployment_routes, multi_pool
    from batchrunner.send.pool import online_pool

    auths = auth if isinstance(auth, dict) else {"": auth}
    for secret in (s for one in auths.values() for s in one.secrets):
        redactor.add(secret)
    checker = hooks.checker if hooks is not None else None
    sink = open_sink(output.path, checker.columns if checker is not None else ())
    output.sync()  # opening may have cut off a torn tail
    rows = RowLog(prompts=settings.log_prompts)
    bar = not json_lines and settings.verbosity >= 0 and sys.stderr.isatty()
    progress = ProgressDisplay(
        stats.rows_planned,
        bar=bar,
        tpm=settings.tpm,
        interval=settings.progress_interval,
    )
    write = _writer_for(sink, output, rows)
    sender: Sender
    clients: list[Completer]
    if isinstance(auth, dict):
        routes, lanes = deployment_routes(settings, auth)
        clients = [route.client for route in routes]
        sender = multi_pool(
            routes, lanes, settings, write=write, stats=stats,
            on_progress=progress.update, hooks=hooks, deadline_from=started,
        )  # fmt: skip
    else:
        assert settings.endpoint
        completer = AzureCompleter(
            settings,
            endpoint=settings.endpoint,
            api_key=auth.api_key,
            token_provider=auth.token_provider,
        )
        clients = [completer]
        sender = online_pool(
            completer,
            settings,
            write=write,
            stats=stats,
            on_progress=progress.update,
            on_unauthorized=auth.on_unauthorized,
            hooks=hooks,
            # Loading the SDKs, fetching a token and reading earlier results all
            # come out of the deadline: it counts from the process's start.
            deadline_from=started,
        )
    try:
        return await sender.run(rows.watch(requests))
    finally:
        progress.close()
        sink.close()
        for client in clients:
            await client.aclose()


def _writer_for(
    sink: ResultSink, output: Output, rows: RowLog
) -> Callable[[Sequence[RowResult]], None]:
    """Write results to the sink; a storage failure raises ``RunStopped``."""

    def write(results: Sequence[RowResult]) -> None:
        sink.write([to_record(result) for result in results])
        rows.written(results)
        output.sync()

    return write


def _finish(
    stats: RunStats, control: StopPolicy, elapsed: float, output: Output
) -> dict[str, Any]:
    summary = stats.as_dict(elapsed)
    summary["results"] = output.shown
    summary["stopped"] = control.reason
    output.finish(summary)
    return summary


# --- batch mode -------------------------------------------------------------------


def _send_batches(
    source: Source,
    settings: Settings,
    output: Output,
    rows: int,
    redactor: Redactor,
    json_lines: bool,
    checker: AnswerChecker | None,
) -> Outcome:
    from batchrunner.send.batch.run import BatchRun

    state = read_state(output.path)
    planned, skipped = _count_plan(source, settings, state.done_ids, rows)
    stats = RunStats(rows_planned=planned, rows_skipped=skipped)
    bind_counters(stats.counters)
    log.info(
        "%d rows to do in batches, %d already done, results in %s", planned, skipped,
        output.shown, extra={"event": "start", "rows_planned": planned,
                             "rows_skipped": skipped, "results": output.shown},
    )  # fmt: skip
    started = time.monotonic()
    with _endpoint(settings) as live:
        redactor.add(live.api_key)
        sink = open_sink(output.path, checker.columns if checker is not None else ())
        output.sync()  # opening may have cut off a torn tail
        builder = RequestBuilder(live, path=source.name)
        write_records = _writer_for(sink, output, RowLog(prompts=live.log_prompts))

        def write(results: Sequence[RowResult]) -> None:
            for result in results:
                stats.add(result, live)
            write_records(results)

        def every_row() -> Iterator[tuple[str, dict[str, Any]]]:
            for row in open_rows(source.path, live.input, name=source.name):
                yield row.id, builder.columns(row)

        run = BatchRun(
            live,
            results=output.shown,
            done=set(state.done_ids),
            failed=state.failed_ids,
            failed_requests=error_request_ids(output.path),
            stats=stats,
            requests=lambda skip: _planned_requests(source, live, skip),
            rows=every_row,
            rows_left=lambda done: _count_plan(source, live, done, rows)[0],
            write=write,
            check=checker.check if checker is not None else None,
            output_path=output.path,
            redactor=redactor,
            bar=not json_lines and live.verbosity >= 0 and sys.stderr.isatty(),
        )
        try:
            ended = anyio.run(run.run)
        finally:
            sink.close()
    summary = stats.as_dict(time.monotonic() - started)
    summary["results"] = output.shown
    summary["stopped"] = None if ended.stopped is None else str(ended.stopped)
    output.finish(summary)
    print_summary(summary, json_lines=json_lines)
    # Every row of the plan without an ok record counts, not only those that failed.
    return Outcome(rows_failed=ended.rows_left, stopped=ended.stopped)
