"""
The typed records that flow between the stages.

reader → ``Row`` → prepare → ``Request`` → client → ``Reply`` | ``ApiFailure``
→ pool → ``RowResult`` → writer (as a plain ``dict`` record, see ``to_record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Api(StrEnum):
    """Which Azure OpenAI operation a row becomes."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


@dataclass(frozen=True, slots=True)
class Row:
    """One input row, as read, with where it came from."""

    id: str
    #: 1-based line of the source file where the row starts, for error messages.
    line: int
    #: Every column of the row; CSV values are strings, JSONL values are JSON values.
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """What will be sent for one row: the SDK keyword arguments, less the model."""

    row_id: str
    api: Api
    #: ``messages``/``prompt``/``input`` plus the model parameters from the settings.
    body: dict[str, Any]
    #: Prompt tokens, counted exactly when the model's encoding is known
    #: (0 when counting was not asked for).
    prompt_tokens: int
    #: What Azure's limiter charges: prompt tokens + max_tokens × n.
    charged_tokens: int
    #: Input columns carried through to the result untouched.
    passthrough: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one answer, as the API reported it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def as_dict(self) -> dict[str, int]:
        """The ``usage`` object of a results record (optional keys when reported)."""
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens is not None:
            usage["cached_tokens"] = self.cached_tokens
        if self.reasoning_tokens is not None:
            usage["reasoning_tokens"] = self.reasoning_tokens
        return usage


#: Azure's ``x-ratelimit-limit-requests`` counts requests per 10-second window.
REQUEST_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The deployment's limits and what is left, as the service reported them."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    #: Seconds until the requests / tokens are back in full (``x-ratelimit-reset-*``).
    reset_requests: float | None = None
    reset_tokens: float | None = None

    @property
    def reset(self) -> float | None:
        """The longest reset reported: when everything fits again."""
        resets = [r for r in (self.reset_requests, self.reset_tokens) if r is not None]
        return max(resets) if resets else None

    @property
    def rpm(self) -> int | None:
        """The requests-per-minute quota these limits imply."""
        if not self.limit_requests:
            return None
        return round(self.limit_requests * 60 / REQUEST_WINDOW_SECONDS)


@dataclass(frozen=True, slots=True)
class Reply:
    """One successful answer from the service."""

    #: The text of the first choice, or a list of texts when ``n`` > 1.
    output: str | list[str | None] | None
    embedding: list[float] | None
    finish_reason: str | None
    usage: Usage
    model: str | None
    request_id: str | None
    latency_ms: int
    #: The rate-limit headers of the answer, for the pacer.
    limits: RateLimits | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a row failed, as recorded in its results record."""

    type: str
    status_code: int | None
    code: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The ``error`` object of a results record."""
        return {
            "type": self.type,
            "status_code": self.status_code,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome of one row: the last reply or the last error, and how many tries."""

    id: str
    status: Literal["ok", "error"]
    reply: Reply | None
    error: ErrorInfo | None
    attempts: int
    latency_ms: int | None
    request_id: str | None
    passthrough: dict[str, Any] = field(default_factory=dict)
    #: The parsed structured answer (``response_format`` with a JSON schema).
    answer: Any = None
    #: ``"cache"`` or ``"duplicate"`` when the reply was reused, not paid for now.
    reused: str | None = None
    #: The label of the deployment that answered (or last failed) the row.
    deployment: str | None = None


def answered(
    request: Request,
    reply: Reply,
    attempts: int,
    reused: str | None = None,
    deployment: str | None = None,
) -> RowResult:
    """
    The ok result of *request*: answered (by *deployment*) after *attempts*
    requests, or *reused* (``"cache"`` / ``"duplicate"``): no request, so no
    attempts and no latency.
    """
    return RowResult(
        id=request.row_id,
        status="ok",
        reply=reply,
        error=None,
        attempts=0 if reused else attempts,
        latency_ms=None if reused else reply.latency_ms,
        request_id=reply.request_id,
        passthrough=request.passthrough,
        reused=reused,
        deployment=deployment,
    )


def to_record(result: RowResult) -> dict[str, Any]:
    """
    The JSONL results record of *result*, with the contract's keys.

    Input columns that are carried through sit under ``input`` (last: the Parquet
    renderer relies on it), a structured answer under ``answer``.
    """
    record: dict[str, Any] = {"id": result.id, "status": result.status}
    reply = result.reply
    if reply is not None:
        if reply.embedding is not None:
            record["embedding"] = reply.embedding
        else:
            record["output"] = reply.output
        if result.answer is not None:
            record["answer"] = result.answer
        record["finish_reason"] = reply.finish_reason
        record["usage"] = reply.usage.as_dict()
        record["model"] = reply.model
    record["attempts"] = result.attempts
    if result.reused is not None:
        record["reused"] = result.reused
    record["latency_ms"] = result.latency_ms
    record["request_id"] = result.request_id
    if result.deployment is not None:
        record["deployment"] = result.deployment
    if result.error is not None:
        record["error"] = result.error.as_dict()
    if result.passthrough:
        record["input"] = result.passthrough
    return record
