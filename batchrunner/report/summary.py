"""
Run statistics: folded from every attempt and every row result, as they happen.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchrunner.config.prices import cost_of
from batchrunner.errors import ApiFailure
from batchrunner.records import RowResult


def percentile(sorted_values: list[int] | array[int], fraction: float) -> int | None:
    """The *fraction* percentile of *sorted_values* (nearest rank), None if empty."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return int(sorted_values[rank])


def error_kind(status_code: int | None, code: str | None, type_: str) -> str:
    """A short name for a kind of failure, e.g. ``429``, ``400 content_filter``."""
    parts = [str(status_code) if status_code is not None else type_]
    if code and code != str(status_code):
        parts.append(code)
    return " ".join(parts)


@dataclass
class DeploymentStats:
    """One deployment's share of a run: its rows, requests, tokens and failures."""

    rows_ok: int = 0
    rows_failed: int = 0
    requests: int = 0
    throttled: int = 0
    #: Requests that failed other than by a 429 (5xx, resets, timeouts, 4xx).
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The deployment's entry in the summary and in progress events."""
        return {
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "requests": self.requests,
            "throttled": self.throttled,
            "errors": self.errors,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.total_tokens,
            },
        }


@dataclass
class RunStats:
    """Counters of one run; the pool feeds them, the summary reads them."""

    rows_planned: int = 0
    rows_skipped: int = 0
    rows_ok: int = 0
    rows_failed: int = 0
    #: Ok rows answered without a request: from ``--cache``, or an identical
    #: request of this run. Their tokens and cost are not this run's.
    rows_cached: int = 0
    rows_shared: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    latencies_ms: array[int] = field(default_factory=lambda: array("l"))
    error_kinds: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    #: Estimated spend of the rows earlier runs recorded in the same output
    #: (read only under ``--max-cost``: None when not read).
    cost_before: float | None = None
    #: The (input, output) price per million tokens of an answer that reported a
    #: model (``batchrunner.config.prices.answer_price``), for the cost.
    price_for: Callable[[str | None], tuple[float, float] | None] | None = field(
        default=None, repr=False, compare=False
    )
    #: Batch mode: batches ``submitted`` by this run, those collected by how they
    #: ended (``completed``, ``expired``, ``failed``, ``cancelled``), and
    #: ``running`` now. None online.
    batches: Counter[str] | None = None
    #: Label → that deployment's figures, for the rows and requests it took.
    by_deployment: dict[str, DeploymentStats] = field(default_factory=dict)

    @property
    def spent(self) -> float:
        """What the output has cost so far: earlier runs plus this one."""
        return (self.cost_before or 0.0) + self.cost

    def counters(self) -> dict[str, int]:
        """The counters every JSON log line carries."""
        return {
            "rows_planned": self.rows_planned,
            "rows_done": self.rows_ok + self.rows_failed,
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
        }

    def deployment(self, label: str) -> DeploymentStats:
        """The figures of the deployment *label* (new ones start at zero)."""
        found = self.by_deployment.get(label)
        if found is None:
            found = self.by_deployment[label] = DeploymentStats()
        return found

    def note_attempt(
        self, failure: ApiFailure | None, deployment: str | None = None
    ) -> None:
        """Count one request sent (to *deployment*), and whether it was throttled."""
        self.requests += 1
        throttled = failure is not None and failure.status_code == 429
        if throttled:
            self.throttled += 1
        if deployment is not None:
            share = self.deployment(deployment)
            share.requests += 1
            share.throttled += throttled
            share.errors += failure is not None and not throttled

    def note_retry(self) -> None:
        """Count one retry scheduled."""
        self.retries += 1

    def add(self, result: RowResult) -> None:
        """Fold one finished row into the counters."""
        if result.status == "ok" and result.reply is not None:
            self.rows_ok += 1
            if result.reused is not None:
                self._note_reused(result.reused)
                return
            usage = result.reply.usage
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.total_tokens += usage.total_tokens
            self.cached_tokens += usage.cached_tokens or 0
            self.reasoning_tokens += usage.reasoning_tokens or 0
            self._add_cost(result)
            if result.deployment is not None:
                share = self.deployment(result.deployment)
                share.rows_ok += 1
                share.prompt_tokens += usage.prompt_tokens
                share.completion_tokens += usage.completion_tokens
                share.total_tokens += usage.total_tokens
        else:
            if result.deployment is not None:
                self.deployment(result.deployment).rows_failed += 1
            self.rows_failed += 1
            if result.error is not None:
                err = result.error
                kind = error_kind(err.status_code, err.code, err.type)
                self.error_kinds[kind] += 1
                self.error_examples.setdefault(kind, f"row {result.id}: {err.message}")
        if result.latency_ms is not None:
            self.latencies_ms.append(result.latency_ms)

    def _note_reused(self, how: str) -> None:
        if how == "cache":
            self.rows_cached += 1
        else:
            self.rows_shared += 1

    def _add_cost(self, result: RowResult) -> None:
        assert result.reply is not None
        # Priced as the settings name the model (price_for knows it), not as the
        # answer reports it.
        price = None if self.price_for is None else self.price_for(result.reply.model)
        if price is None:
            self.cost_known = False
            return
        usage = result.reply.usage
        self.cost += cost_of(price, usage.prompt_tokens, usage.completion_tokens)

    def as_dict(self, elapsed: float) -> dict[str, Any]:
        """The ``summary.json`` object after *elapsed* seconds."""
        done = self.rows_ok + self.rows_failed
        latencies = sorted(self.latencies_ms)
        minutes = elapsed / 60 if elapsed > 0 else 0
        return {
            "rows_total": self.rows_planned + self.rows_skipped,
            "rows_planned": self.rows_planned,
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "rows_skipped": self.rows_skipped,
            "rows_cached": self.rows_cached,
            "rows_shared": self.rows_shared,
            "rows_not_done": max(0, self.rows_planned - done),
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.total_tokens,
                "cached": self.cached_tokens,
                "reasoning": self.reasoning_tokens,
            },
            "elapsed_seconds": round(elapsed, 3),
            "rows_per_second": round(done / elapsed, 2) if elapsed > 0 else None,
            "tokens_per_minute": round(self.total_tokens / minutes)
            if minutes
            else None,
            "latency_ms": {
                "p50": percentile(latencies, 0.50),
                "p95": percentile(latencies, 0.95),
            },
            "estimated_cost_usd": round(self.cost, 6) if self.cost_known else None,
            "estimated_cost_before_usd": None
            if self.cost_before is None
            else round(self.cost_before, 6),
            "errors": [
                {"kind": kind, "rows": count, "example": self.error_examples[kind]}
                for kind, count in self.error_kinds.most_common(5)
            ],
            "deployments": self.deployments_dict(),
            **self._batch_counts(),
        }

    def deployments_dict(self) -> dict[str, dict[str, Any]]:
        """Label → that deployment's figures, for the summary and progress events."""
        return {name: share.as_dict() for name, share in self.by_deployment.items()}

    def _batch_counts(self) -> dict[str, Any]:
        if self.batches is None:
            return {}
        return {"batches": {name: self.batches[name] for name in BATCH_COUNTS}}


#: The batch counts of a summary, in order.
BATCH_COUNTS = ("submitted", "completed", "expired", "failed", "cancelled", "running")
