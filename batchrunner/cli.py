"""
The command line: parse flags, build settings, set up logging, run the job (or
merge shard results), and map the outcome to an exit code. Nothing else happens
here, and no other module picks an exit code.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from batchrunner.config.clock import process_started
from batchrunner.config.file import find_config
from batchrunner.config.layers import build_settings
from batchrunner.config.locations import storage_secrets
from batchrunner.config.settings import environment
from batchrunner.errors import EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE, BatchrunnerError
from batchrunner.flags import build_parser, flags_from
from batchrunner.report.console import Parser, json_requested, report
from batchrunner.report.logs import Redactor, configure_logging, wants_json

if TYPE_CHECKING:
    from batchrunner.job import Outcome

log = logging.getLogger("batchrunner")


def exit_status(outcome: Outcome) -> int:
    """
    The process's exit status for *outcome* (the contract's table): a stop's
    kind decides (75 resumable, 130/143 signals, 3 auth, 1 gave up); else 1 when
    rows failed, 0 when every row is ok.
    """
    if outcome.stopped is not None:
        return outcome.stopped.exit_code
    return EXIT_ROWS_FAILED if outcome.rows_failed else EXIT_OK


def run(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """
    Run the command with *argv*; return its exit code.

    *started* is the ``time.monotonic()`` reading that ``--deadline`` counts from:
    the process's start for the command itself, else now.
    """
    started = time.monotonic() if started is None else started
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return run_merge(argv[1:])
    parser = build_parser()
    if not argv:
        # What a first try looks like: say how to start, not argparse's complaint.
        print(f"usage: {parser.prog} INPUT [options]", file=sys.stderr)
        print(
            f"{parser.prog}: error: give an INPUT file (.csv or .jsonl);"
            f" '{parser.prog} --help' lists the options",
            file=sys.stderr,
        )
        return EXIT_USAGE
    parser.json_errors = json_requested(argv)
    args = parser.parse_args(argv)
    # Imported after the flags are read: --help and --version need none of the
    # SDKs the job loads.
    from batchrunner.job import run_job
    from batchrunner.prepare.structured import with_schema

    redactor = Redactor()
    try:
        env = environment()
        config = find_config(args.config, Path.cwd())
        settings = build_settings(flags_from(args), env, config)
        redactor.add(settings.api_key)
        for entry in settings.deployments:
            redactor.add(entry.api_key)
        json_lines = wants_json(settings.log_format, sys.stderr)
        configure_logging(
            json_lines=json_lines, verbosity=settings.verbosity, redactor=redactor
        )
        settings = with_schema(settings)
        if settings.show_config:
            from batchrunner.report.show import show_config

            print(show_config(settings, args.input))
            return 0
        outcome = run_job(
            args.input,
            settings,
            redactor=redactor,
            json_lines=json_lines,
            started=started,
        )
        return exit_status(outcome)
    except BatchrunnerError as exc:
        report(exc, redactor, json_lines=parser.json_errors)
        return exc.exit_code


def run_merge(argv: Sequence[str]) -> int:
    """``merge PART... -o MERGED``: combine shard results; return the exit code."""
    # The storage SDK loads only for the merge command.
    from batchrunner.results.merge import build_merge_parser, merge

    parser = build_merge_parser(Parser)
    assert isinstance(parser, Parser)
    json_errors = parser.json_errors = json_requested(argv)
    args = parser.parse_args(argv)
    redactor = Redactor()
    try:
        env = environment()
        for secret in storage_secrets(env):
            redactor.add(secret)
        config = find_config(args.config, Path.cwd())
        settings = build_settings({"log_format": args.log_format}, env, config)
        configure_logging(
            json_lines=wants_json(settings.log_format, sys.stderr),
            verbosity=settings.verbosity,
            redactor=redactor,
        )
        summary = merge(args.parts, args.output, settings, env)
    except BatchrunnerError as exc:
        report(exc, redactor, json_lines=json_errors)
        return exc.exit_code
    log.info(
        "merged %d parts into %s: %d rows, %d ok, %d failed", len(args.parts),
        args.output, summary["rows_total"], summary["rows_ok"], summary["rows_failed"],
        extra={"event": "merged", "results": args.output, "summary": summary},
    )  # fmt: skip
    return EXIT_ROWS_FAILED if summary["rows_failed"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``python -m batchrunner`` and the ``batchrunner`` script."""
    try:
        code = run(argv, started=process_started())
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # Whoever read our output left (``--show-config | head``); say no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
