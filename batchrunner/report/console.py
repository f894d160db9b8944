"""
What reaches stderr outside the log handlers: an error that comes before logging
is set up, and argparse's own errors. In JSON mode they are JSON lines too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from batchrunner.config.settings import environment
from batchrunner.errors import EXIT_USAGE, BatchrunnerError
from batchrunner.report.logs import Redactor, error_line, wants_json

log = logging.getLogger("batchrunner")


def report(exc: BatchrunnerError, redactor: Redactor, *, json_lines: bool) -> None:
    """Tell the user about *exc*: a log event, or a line of its own on stderr."""
    message = redactor.scrub(str(exc))
    if log.handlers:
        log.error("%s", message, extra={"event": "error", "exit_code": exc.exit_code})
    elif json_lines:
        print(error_line(message, exc.exit_code), file=sys.stderr)
    else:
        print(f"batchrunner: error: {message}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are one JSON line when JSON logs are in force."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        """Exit 2 with *message*, as argparse does, in the run's log format."""
        if not self.json_errors:
            super().error(message)
        print(error_line(f"{self.prog}: {message}", EXIT_USAGE), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def json_requested(argv: Sequence[str]) -> bool:
    """Whether logs will be JSON, judged before the settings can be read."""
    chosen = None
    for flag, value in zip(argv, [*argv[1:], None], strict=False):
        if flag == "--log-format":
            chosen = value
        elif flag.startswith("--log-format="):
            chosen = flag.partition("=")[2]
    return wants_json(chosen or environment().get("BATCHRUNNER_LOG_FORMAT"), sys.stderr)
