"""
One ``row`` event per finished row under ``-v``: its id, status, attempts,
latency and tokens, and the prompt and answer text only with ``log_prompts``.

Prompt text stays out of logs by default: a log store is seldom cleared for the
data that prompts carry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from batchrunner.records import Request, RowResult
from batchrunner.report.summary import error_kind

log = logging.getLogger("batchrunner")

_PROMPT_KEYS = ("messages", "prompt", "input")


class RowLog:
    """Logs each finished row; remembers prompts of rows in flight when asked to."""

    def __init__(self, *, prompts: bool) -> None:
        self.enabled = log.isEnabledFor(logging.DEBUG)
        self.prompts = prompts and self.enabled
        self._in_flight: dict[str, Any] = {}

    def watch(self, requests: Iterable[Request]) -> Iterator[Request]:
        """*requests*, noting each one's prompt on the way when prompts are logged."""
        for request in requests:
            if self.prompts:
                body = request.body
                prompt = next((body[k] for k in _PROMPT_KEYS if k in body), None)
                self._in_flight[request.row_id] = prompt
            yield request

    def written(self, results: Sequence[RowResult]) -> None:
        """Log a ``row`` event for each of *results*."""
        if not self.enabled:
            return
        for result in results:
            fields: dict[str, Any] = {
                "event": "row",
                "id": result.id,
                "status": result.status,
                "attempts": result.attempts,
                "latency_ms": result.latency_ms,
            }
            if result.reply is not None:
                fields["tokens"] = result.reply.usage.total_tokens
            if result.error is not None:
                error = result.error
                fields["error"] = error_kind(error.status_code, error.code, error.type)
            if self.prompts:
                fields["prompt"] = self._in_flight.pop(result.id, None)
                fields["output"] = result.reply.output if result.reply else None
            log.debug("row %s: %s", result.id, result.status, extra=fields)
