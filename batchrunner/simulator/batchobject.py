"""A batch as the service keeps it and answers it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from batchrunner.simulator.config import Json

#: Statuses a batch does not leave.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

#: The statuses whose start a batch answers as ``{status}_at``.
_TIMED = (
    "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
    "cancelled",
)  # fmt: skip


def _usage() -> Json:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


@dataclass
class Batch:
    """One batch, as the service keeps it (the fields of its answer)."""

    id: str
    ordinal: int
    endpoint: str
    input_file_id: str
    metadata: Json | None
    api_version: str
    created_at: int
    #: Tokens it holds of its deployment's enqueued-token quota until it ends.
    enqueued: int = 0
    enqueued_on: str | None = None
    #: Seconds its output and error files are kept, if it asked for a limit.
    output_expires_after: int | None = None
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    errors: list[Json] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None
    usage: Json = field(default_factory=_usage)
    #: Set by a cancel, to cut short whatever wait the batch is in.
    woken: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_json(self) -> Json:
        """The batch object as the service answers it."""
        times = {f"{name}_at": self.times.get(name) for name in _TIMED}
        errors = (
            None if self.errors is None else {"object": "list", "data": self.errors}
        )
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            **times,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
            "model": self.model,
            "usage": self.usage,
        }

    def enter(self, status: str) -> None:
        self.status = status
        self.times[status] = int(time.time())

    def add_usage(self, usage: Json) -> None:
        total = self.usage
        prompt = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", 0))
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        reasoning = (usage.get("completion_tokens_details") or {}).get(
            "reasoning_tokens", 0
        )
        total["input_tokens"] += prompt
        total["input_tokens_details"]["cached_tokens"] += int(cached or 0)
        total["output_tokens"] += completion
        total["output_tokens_details"]["reasoning_tokens"] += int(reasoning or 0)
        total["total_tokens"] += int(usage.get("total_tokens", prompt + completion))
