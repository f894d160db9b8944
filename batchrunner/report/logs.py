"""
Logging: human lines on a terminal, one JSON object a line otherwise, and never
a secret in either.

Events carry structured fields through ``extra={"event": …, …}``; the JSON
formatter emits them as keys, the text formatter keeps to the message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Redactor(logging.Filter):
    """Replaces every known secret in a log line with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def add(self, secret: str | None) -> None:
        """Also hide *secret* (a token fetched during the run)."""
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets.append(secret)

    def scrub(self, text: str) -> str:
        """*text* without secrets."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
        return True


@dataclass(frozen=True)
class RunInfo:
    """What every record of a run carries: its id and shard, and live counters."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    counters: Callable[[], dict[str, Any]] | None = None


#: The run the current code works for. A context variable rather than a
#: global, so that two runs in one process (tests, a notebook) keep their own;
#: threads a run starts take it along with ``contextvars.copy_context()``.
_NO_RUN = RunInfo()
CURRENT_RUN: ContextVar[RunInfo] = ContextVar("batchrunner_run", default=_NO_RUN)


def bind_run(**fields: Any) -> None:
    """Put *fields* on every record of the current run from now on."""
    info = CURRENT_RUN.get()
    CURRENT_RUN.set(replace(info, fields={**info.fields, **fields}))


def bind_counters(counters: Callable[[], dict[str, Any]] | None) -> None:
    """Have every record of the current run carry what *counters* returns."""
    CURRENT_RUN.set(replace(CURRENT_RUN.get(), counters=counters))


class RunContext(logging.Filter):
    """Adds the current run's fields and counters (``CURRENT_RUN``) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = CURRENT_RUN.get()
        for key, value in info.fields.items():
            record.__dict__.setdefault(key, value)
        counters = info.counters() if info.counters is not None else {}
        record.__dict__.setdefault("counters", counters)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, event, message and the extra fields."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
            **self.static,
        }
        entry.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and key != "event"
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def error_line(message: str, exit_code: int) -> str:
    """An ``error`` event as a JSON line, for errors before logging is set up."""
    record = logging.makeLogRecord(
        {"msg": message, "levelname": "ERROR", "name": "batchrunner"}
    )
    record.__dict__.update(event="error", exit_code=exit_code)
    return JsonFormatter().format(record)


class TextFormatter(logging.Formatter):
    """``12:01:33 warning  stopping: …``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():<8} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_json(log_format: str | None, stream: TextIO) -> bool:
    """JSON when asked, or by default when *stream* is not a terminal."""
    if log_format is not None:
        return log_format == "json"
    return not stream.isatty()


def configure_logging(
    *,
    json_lines: bool,
    verbosity: int,
    redactor: Redactor,
    stream: TextIO | None = None,
) -> None:
    """Send the ``batchrunner`` logger to *stream* (stderr) in the chosen shape."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(redactor)
    CURRENT_RUN.set(RunInfo())
    handler.addFilter(RunContext())
    logger = logging.getLogger("batchrunner")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _route_other_loggers(handler)


def _route_other_loggers(handler: logging.StreamHandler[TextIO]) -> None:
    """
    Send warnings of the libraries (azure, openai …) through *handler* too.

    Without a handler of its own, logging prints them as bare text on stderr, which
    would break one JSON object a line.
    """
    global _OTHERS
    root = logging.getLogger()
    if _OTHERS is not None:
        root.removeHandler(_OTHERS)
    others = logging.StreamHandler(handler.stream)
    others.setFormatter(handler.formatter)
    for kept in handler.filters:
        others.addFilter(kept)
    others.setLevel(logging.WARNING)
    root.addHandler(others)
    _OTHERS = others
    logging.captureWarnings(True)


_OTHERS: logging.Handler | None = None
