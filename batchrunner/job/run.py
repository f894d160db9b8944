"""
One job, top to bottom: check what can be checked, validate the input, then
either estimate (``--dry-run``) or hold the output and send the planned rows
through a ``Sender`` (online or Batch API), and write the summary.

    rows ─▶ validate ─▶ plan ─▶ Sender (online pool | Batch API jobs) ─▶ results
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import anyio

from batchrunner.config.locations import storage_secrets
from batchrunner.config.prices import answer_price
from batchrunner.config.settings import (
    Settings,
    check_endpoint_of,
    check_ready_to_send,
    environment,
    with_overrides,
)
from batchrunner.errors import AuthError, ConfigError, RunStopped
from batchrunner.job.sending import (
    check_mode,
    for_mode,
    load_send_stage,
    open_endpoint,
    sender_for,
)
from batchrunner.job.source import Source, counter_for, open_source, validated
from batchrunner.prepare.estimate import estimate, report
from batchrunner.prepare.shards import for_shard, resolve_shards, shard_label
from batchrunner.prepare.structured import AnswerChecker, checker_for
from batchrunner.records import RowResult, to_record
from batchrunner.report.logs import Redactor, bind_counters, bind_run
from batchrunner.report.rowlog import RowLog
from batchrunner.report.summary import RunStats
from batchrunner.report.table import print_summary
from batchrunner.results.claim import hold_output, recorded_done
from batchrunner.results.destination import Output
from batchrunner.results.resume import read_state
from batchrunner.results.sinks import ResultSink, open_sink
from batchrunner.results.spend import recorded_cost
from batchrunner.results.target import check_outputs
from batchrunner.rows.stamp import Validated
from batchrunner.send.reuse import open_cache
from batchrunner.send.sender import Ending, SendPlan

log = logging.getLogger("batchrunner")

#: The deployment ``--simulate`` uses when none is given.
SIMULATED_DEPLOYMENT = "gpt-4o-mini"


@dataclass(frozen=True)
class Outcome:
    """How a job ended: rows left without an ok record, and why it stopped early."""

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
    check_mode(settings)
    with open_source(input_arg, account=settings.storage_account) as source:
        checker = checker_for(settings)  # a bad schema fails before the input is read
        found = validated(source, settings, input_arg)
        if settings.deployments:
            from batchrunner.send.deployments import for_deployments

            settings = for_deployments(settings)
        if settings.dry_run:
            own, done, shown = recorded_done(input_arg, settings.results, plan, environ)
            dry = settings if own is None else for_shard(settings, plan, own)
            return _dry_run(source, dry, done, shown)
        check_ready_to_send(settings)
        _check_spend_cap(settings)
        open_cache(settings, create=False)  # a --cache file fails before any output
        settings = for_mode(settings)

        def rows_left(shard: int, results: Path) -> int:
            done = read_state(results).done_ids
            shard_settings = for_shard(settings, plan, shard)
            return source.count(shard_settings, done, found.rows)[0]

        held = hold_output(input_arg, settings.results, plan, environ, rows_left)
        if held is None:
            return Outcome()  # every shard finished or held by another run
        out, shard = held
        settings = for_shard(settings, plan, shard)
        bind_run(shard=shard_label(plan, settings.shard))
        try:
            for backup in out.backups:
                log.info("kept the earlier results as %s", backup)
            outcome = _send(
                source, settings, out, found, checker, redactor, started, json_lines
            )
        finally:
            out.close()
        if settings.join:
            _join(source, settings, out.path)
        return outcome


def _send(
    source: Source,
    settings: Settings,
    output: Output,
    found: Validated,
    checker: AnswerChecker | None,
    redactor: Redactor,
    started: float,
    json_lines: bool,
) -> Outcome:
    """Send what is left of the plan through the mode's sender; the summary."""
    load_send_stage(settings)
    state = read_state(output.path)
    planned, skipped = source.count(settings, state.done_ids, found.rows)
    counter_for(settings)  # load the tokenizer now, not on the first row's clock
    # Answers name a handful of models: each is priced once, not once a row.
    price = lru_cache(maxsize=64)(partial(answer_price, settings))
    stats = RunStats(rows_planned=planned, rows_skipped=skipped, price_for=price)
    if settings.max_cost is not None:
        stats.cost_before = recorded_cost(output.path, price)
    bind_counters(stats.counters)
    log.info(
        "%d rows to send, %d already done, results in %s", planned, skipped,
        output.shown,
        extra={"event": "start", "rows_planned": planned, "rows_skipped": skipped,
               "results": output.shown, "spent_before_usd": stats.cost_before},
    )  # fmt: skip
    bar = not json_lines and settings.verbosity >= 0 and sys.stderr.isatty()
    sending_started = time.monotonic()
    with open_endpoint(settings) as endpoint:
        if endpoint is not None:
            redactor.add(endpoint.api_key)
        sink = open_sink(output.path, checker.columns if checker is not None else ())
        output.sync()  # opening may have cut off a torn tail
        rows = RowLog(prompts=settings.log_prompts)
        plan = SendPlan(
            requests=lambda skip: rows.watch(source.requests(settings, skip)),
            done=state.done_ids,
            failed=state.failed_ids,
            rows_left=lambda done: source.count(settings, done, found.rows)[0],
            row_columns=lambda: source.row_columns(settings),
            write=_writer_for(sink, output, rows),
            stats=stats,
            output=output.path,
            shown=output.shown,
            deadline_from=started,
        )
        sender = sender_for(settings, endpoint, output, checker, found, redactor, bar)
        try:
            ending = anyio.run(sender.send, plan)
        finally:
            sink.close()
    _finish(stats, ending, time.monotonic() - sending_started, output, json_lines)
    return Outcome(rows_failed=ending.rows_left, stopped=ending.stopped)


def _check_spend_cap(settings: Settings) -> None:
    if settings.max_cost is not None and settings.price_for(None) is None:
        model = settings.model or settings.deployment
        msg = (
            f"--max-cost needs a price for the model {model!r}:"
            " set 'model:' to a known model or add it under 'prices:' in the settings"
        )
        raise ConfigError(msg)


def _join(source: Source, settings: Settings, output: Path) -> None:
    from batchrunner.results.join import write_joined  # pandas only when asked for

    joined = write_joined(source.path, source.name, settings, output)
    log.info("results joined to the input in %s", joined, extra={"event": "joined"})


def _dry_run(
    source: Source,
    settings: Settings,
    done: AbstractSet[str],
    shown: str,
) -> Outcome:
    cache = open_cache(settings, create=False)
    cached = cache.has_answer if cache is not None else None
    figures = estimate(source.requests(settings, done), settings, cached)
    lines = report(figures, settings, source=source.name, done=len(done), output=shown)
    # The report is the command's output; only an explicit --log-format json
    # (nothing but JSON lines) leaves it to the estimate event.
    if settings.log_format != "json":
        print(lines)
    return Outcome()


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
    stats: RunStats, ending: Ending, elapsed: float, output: Output, json_lines: bool
) -> None:
    summary = stats.as_dict(elapsed)
    summary["results"] = output.shown
    summary["stopped"] = None if ending.stopped is None else str(ending.stopped)
    output.finish(summary)
    print_summary(summary, json_lines=json_lines)
