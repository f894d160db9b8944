"""
The command line's flags and the ``--help`` that documents them, and the
flags a run was given, as the settings layer they make.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from batchrunner import __version__
from batchrunner.report.console import Parser

log = logging.getLogger("batchrunner")


DESCRIPTION = """\
Send every row of INPUT (CSV or JSONL) to an Azure OpenAI deployment and stream
one result record per row to the output file, with token usage. Re-running the
same command resumes: only rows without an "ok" record are sent again.

Try it offline first, against the built-in simulator:
  python -m batchrunner jobs/prompts.csv --simulate

With --mode batch the same rows go through the Azure OpenAI Batch API instead
(a Global-Batch or Data Zone Batch deployment, about half the price): a run
collects the batches that have ended, submits the rows still to do, and exits;
run it again (e.g. from cron) until it exits 0, or stay with --wait.

INPUT and --output may be blobs: az://container/path (or abfs://…). Shard
results are combined with: python -m batchrunner merge PART... -o MERGED
"""


EPILOG = """\
environment:
  AZURE_OPENAI_ENDPOINT    https://<resource>.openai.azure.com
  AZURE_OPENAI_API_KEY     API key; when absent, Entra ID (az login, managed
                           identity, workload identity) is used
  AZURE_OPENAI_AD_TOKEN    a ready Entra ID token (not refreshed)
  BATCHRUNNER_AUTH         which credential: auto, api_key, entra,
                           managed_identity, workload_identity, azure_cli,
                           or kinds joined by commas (tried in turn)
  OPENAI_API_VERSION       API version (default 2024-10-21)
  AZURE_OPENAI_DEPLOYMENT  deployment, when neither --deployment nor the file
  BATCHRUNNER_<SETTING>    any setting, e.g. BATCHRUNNER_CONCURRENCY=32
  BATCHRUNNER_STATE_DIR    where validated inputs are remembered (default
                           ~/.cache/batchrunner, or under $XDG_CACHE_HOME)
  AZURE_STORAGE_CONNECTION_STRING
                           the storage account of az:// paths (else
                           BATCHRUNNER_STORAGE_ACCOUNT, signed in with Entra ID)
  JOB_COMPLETION_INDEX     a Kubernetes Indexed Job's shard, with
                           BATCHRUNNER_SHARDS=<completions>; BATCHRUNNER_SHARDS
                           alone: each replica claims a free shard
  precedence: command line > environment > settings file > defaults

exit status:
  0    every row ok
  1    the run finished and some rows are recorded as failed, or the service
       refused the request itself on every row (fix it, then re-run)
  2    bad command line, settings or input, or the output is being written by
       another run (its lock or blob lease is held); nothing was sent
  3    authentication failed
  75   stopped early (deadline, spend cap, quota exhausted, or the service
       down: every row refused a connection, timed out or got a 5xx/429), or
       with --mode batch: batches still running; re-run later to go on
  130  stopped by SIGINT, 143 by SIGTERM; re-run to go on
"""


#: Flags whose value goes straight into the settings of the same name.
SETTING_FLAGS = (
    "output", "deployment", "api", "concurrency", "rpm", "tpm", "max_attempts",
    "timeout", "limit", "shard", "deadline", "max_cost", "log_format",
    "schema", "cache", "template_file", "mode", "poll_interval",
)  # fmt: skip


def build_parser() -> Parser:
    """The argument parser; its help is the command's documentation."""
    parser = Parser(
        prog="python -m batchrunner",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "input",
        metavar="INPUT",
        help="a .csv, .jsonl, .csv.gz or .jsonl.gz file of prompt rows;"
        " '-' reads JSONL from stdin",
    )
    add(
        "-c",
        "--config",
        metavar="FILE",
        help="settings file (default: ./config.yaml when it exists)",
    )
    add(
        "-o",
        "--output",
        metavar="PATH",
        help="results file; .jsonl, .csv or .parquet (default:"
        " <input dir>/<input stem>.results.jsonl)",
    )
    add("--deployment", metavar="NAME", help="Azure OpenAI deployment name")
    add(
        "--api",
        choices=["chat", "completions", "embeddings"],
        help="the operation each row becomes (default: chat)",
    )
    add(
        "--concurrency",
        type=int,
        metavar="N",
        help="most requests in flight at once (default: 16)",
    )
    add(
        "--rpm",
        type=int,
        metavar="N",
        help="client-side budget of requests per minute (the deployment's quota)",
    )
    add(
        "--tpm",
        type=int,
        metavar="N",
        help="client-side budget of tokens per minute, charged as Azure does:"
        " prompt tokens + max_tokens × n",
    )
    add(
        "--max-attempts",
        type=int,
        metavar="N",
        help="attempts per row before it is recorded as failed (default: 6)",
    )
    add(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per-request timeout; a slower request is abandoned and retried"
        " (default: 60)",
    )
    add("--limit", type=int, metavar="N", help="only the first N rows (a smoke run)")
    add(
        "--dry-run",
        action="store_true",
        default=None,
        help="validate everything, count tokens, estimate cost and duration;"
        " send nothing",
    )
    add(
        "--fresh",
        action="store_true",
        default=None,
        help="start over: the old results file is kept as a .bak-<time> backup",
    )
    add(
        "--simulate",
        action="store_true",
        default=None,
        help="run against the built-in Azure OpenAI simulator on loopback",
    )
    add(
        "--shard",
        metavar="I/N",
        help="only rows whose id hashes to shard I of N (0-based), for replicas",
    )
    add(
        "--deadline",
        metavar="DURATION",
        help="stop taking rows in time to finish before this much wall time"
        " (e.g. 55m, 1h30m); exit 75",
    )
    add(
        "--max-cost",
        type=float,
        metavar="AMOUNT",
        help="stop taking rows before the estimated spend (USD, at the price of"
        " the model the settings name) passes AMOUNT, counting earlier runs on"
        " the same output; a shard of N may spend AMOUNT/N; exit 75 (exit 2"
        " before sending when that model has no price)",
    )
    add(
        "--max-failures",
        metavar="N|P%",
        help="stop (exit 1, resumable) once more than N rows, or P%% of the rows"
        " to send, have failed",
    )
    add(
        "--log-format",
        choices=["text", "json"],
        help="human log lines (default on a terminal) or one JSON object a line",
    )
    _add_data_options(parser)
    _add_batch_options(parser)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only warnings and errors; no progress bar",
    )
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="a line for every row"
    )
    add("--version", action="version", version=f"batchrunner {__version__}")
    return parser  # fmt: skip


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options for evaluations: structured answers, templates, reuse, joining."""
    add = parser.add_argument
    add(
        "--show-config",
        action="store_true",
        default=None,
        help="print the effective settings and where each came from; send nothing",
    )
    add(
        "--schema",
        metavar="FILE",
        help="a JSON schema file: answers must match it and land as answer_<field>"
        " columns (response_format json_schema, strict)",
    )
    add(
        "--template",
        dest="template_file",
        metavar="FILE",
        help="a Jinja2 template file that builds each row's prompt from its columns",
    )
    add(
        "--join",
        action="store_true",
        default=None,
        help="also write <output stem>.joined.<suffix>: the input's columns with the"
        " results beside them, in input order",
    )
    add(
        "--cache",
        metavar="DIR",
        help="keep answers in DIR and reuse them for identical requests in later runs",
    )
    add(
        "--no-dedupe",
        dest="dedupe",
        action="store_false",
        default=None,
        help="send identical rows each on their own (e.g. to sample several answers)",
    )


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    """Options of the Batch API mode."""
    batch = parser.add_argument_group(
        "batch mode",
        "The Batch API answers within 24 hours at about half the price, against a"
        " quota of its own. Rows, settings, results and resume are as online. Exit"
        " 75 means batches are still running: run the same command again later to"
        " collect them; it exits 0 once every row is ok, 1 when none is running"
        " and some rows failed.",
    )
    add = batch.add_argument
    add(
        "--mode",
        choices=["online", "batch"],
        help="online: one request a row (default); batch: Batch API jobs, needing"
        " a Global-Batch or Data Zone Batch deployment",
    )
    add(
        "--wait",
        action="store_true",
        default=None,
        help="stay and poll until every batch of this output has ended, collecting"
        " each as it ends and resubmitting the rows of expired ones",
    )
    add(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between status checks with --wait (default: 60, as the"
        " service asks)",
    )
    add(
        "--cancel",
        action="store_true",
        default=None,
        help="cancel this output's running batches, collect what they finished, exit",
    )


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None where a flag is absent)."""
    flags: dict[str, Any] = {name: getattr(args, name) for name in SETTING_FLAGS}
    flags["dry_run"] = args.dry_run
    flags["fresh"] = args.fresh
    flags["simulate"] = args.simulate
    flags["show_config"] = args.show_config
    flags["join"] = args.join
    flags["dedupe"] = args.dedupe
    flags["max_failures"] = args.max_failures
    flags["wait"] = args.wait
    flags["cancel"] = args.cancel
    if args.quiet:
        flags["verbosity"] = -1
    elif args.verbose:
        flags["verbosity"] = 1
    return flags
