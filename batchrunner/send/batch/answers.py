"""
Batch API output and error lines as the results records online runs write.

An output line is ``{"custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``: a 200 carries the same body as an online answer; any other
status carries the service's ``{"error": {...}}`` under ``body``; a top-level
``error`` (``{"code", "message"}``) is a failure that had no HTTP answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchrunner.azure.client import reply_from
from batchrunner.errors import ApiFailure
from batchrunner.records import Api, ErrorInfo, RowResult

#: The ``error.type`` of a line that failed without an HTTP answer.
LINE_ERROR = "BatchLineError"
#: Error codes of lines the batch ended before answering (OpenAI lists them in
#: the error file): the row is unanswered, not failed, and is submitted again.
UNANSWERED_CODES = frozenset({"batch_expired", "batch_cancelled"})


def result_from_line(line: bytes, api: Api) -> RowResult | None:
    """
    The result of one output or error *line*; None for a blank line and for a
    request the batch ended before answering.
    """
    if not line.strip():
        return None
    data = json.loads(line)
    row_id = str(data["custom_id"])
    error = data.get("error")
    if isinstance(error, Mapping) and error.get("code") in UNANSWERED_CODES:
        return None
    response = data.get("response") or {}
    request_id = response.get("request_id")
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, Mapping):
        try:
            reply = reply_from(api, body, request_id, 0)
        except ApiFailure as exc:
            return _failed(
                row_id, ErrorInfo(exc.kind, 200, None, exc.message), request_id
            )
        return RowResult(
            id=row_id, status="ok", reply=reply, error=None, attempts=1,
            latency_ms=None, request_id=request_id,
        )  # fmt: skip
    return _failed(row_id, line_error(status, body, data.get("error")), request_id)


def _failed(row_id: str, error: ErrorInfo, request_id: str | None) -> RowResult:
    return RowResult(
        id=row_id, status="error", reply=None, error=error, attempts=1,
        latency_ms=None, request_id=request_id,
    )  # fmt: skip


def line_error(status: Any, body: Any, error: Any) -> ErrorInfo:
    """The ``error`` of a line answered with *status* and *body*, or with *error*."""
    code = status if isinstance(status, int) else None
    detail = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(detail, Mapping):
        return ErrorInfo(
            type=str(detail.get("type") or LINE_ERROR),
            status_code=code,
            code=_text(detail.get("code")),
            message=str(detail.get("message") or f"HTTP {status}"),
        )
    if isinstance(error, Mapping):
        return ErrorInfo(
            type=LINE_ERROR,
            status_code=code,
            code=_text(error.get("code")),
            message=str(error.get("message") or "the line failed"),
        )
    return ErrorInfo(LINE_ERROR, code, None, f"the line was answered with {status}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def validation_error(code: str | None, message: str, line: int | None) -> ErrorInfo:
    """The ``error`` of a row whose input *line* failed the batch's validation."""
    where = f" (input line {line})" if line is not None else ""
    return ErrorInfo("BatchValidationError", None, code, f"{message}{where}")
