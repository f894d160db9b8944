"""
The stop policy: whether the run goes on taking rows, and if not, why and with
which exit code.

A run stops taking rows on a signal, near its deadline, before the spend cap
would be passed, after a streak of rows failing the same way, or past the
failure budget. Rows already in flight finish (within the grace period); rows
a stop leaves unsent get no record, so a re-run sends them.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from batchrunner.azure.client import CONNECTION_FAILURES
from batchrunner.azure.headers import is_retryable_status
from batchrunner.config.groups import StopSettings
from batchrunner.errors import AuthError, GaveUp, Interrupted, Resumable, RunStopped
from batchrunner.prepare.builder import COMPLETIONS_DEFAULT_MAX_TOKENS
from batchrunner.records import Api, ErrorInfo, Request, RowResult
from batchrunner.report.summary import RunStats, error_kind

log = logging.getLogger("batchrunner")

#: Consecutive rows failing the same way before the run gives up on the file.
FAILURE_STREAK_LIMIT = 10


def is_transient(error: ErrorInfo) -> bool:
    """
    Whether *error* is one that waiting clears: no answer at all (refused or
    dropped connections, DNS, timeouts) or a retryable status (408, 429, 5xx).
    """
    if error.status_code is None:
        return error.type in CONNECTION_FAILURES
    return is_retryable_status(error.status_code)


def completion_bound(request: Request) -> int | None:
    """The most completion tokens *request* may be charged; None when unbounded."""
    if request.api is Api.EMBEDDINGS:
        return 0
    body = request.body
    bound = body.get("max_completion_tokens")
    if bound is None:
        bound = body.get("max_tokens")
    if bound is None:
        if request.api is not Api.COMPLETIONS:
            return None
        bound = COMPLETIONS_DEFAULT_MAX_TOKENS  # the service's own default
    return int(bound) * int(body.get("n") or 1)


def row_cost(request: Request, price: tuple[float, float] | None) -> float:
    """The most *request* can cost: its prompt plus its completion bound."""
    if price is None:
        return 0.0
    completion = completion_bound(request) or 0
    return (request.prompt_tokens * price[0] + completion * price[1]) / 1e6


@dataclass
class StopPolicy:
    """Whether the run is stopping, why, and with which exit code."""

    settings: StopSettings = field(default_factory=StopSettings)
    #: The first reason the run was asked to stop for.
    cause: RunStopped | AuthError | None = None
    #: A signal that came after (or as) the first reason: it decides the exit code.
    interrupted: Interrupted | None = None
    #: When ``--deadline`` started counting (``time.monotonic()``): the process's
    #: start, since a replica's timeout counts from there; None: the pool's start.
    deadline_from: float | None = None
    #: Called once, when the run is first asked to stop.
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    _reserved_cost: float = 0.0
    _unbounded_said: bool = False
    _streak: tuple[tuple[int | None, str | None], int] = ((None, None), 0)

    @property
    def stopping(self) -> bool:
        """True once anything asked the run to stop taking rows."""
        return self.cause is not None

    @property
    def reason(self) -> str | None:
        """Why the run stopped, in words for its user; None while it goes on."""
        return None if self.cause is None else str(self.cause)

    @property
    def exit_code(self) -> int | None:
        """The exit status the stop's kind stands for; None while the run goes on."""
        cause = self.interrupted or self.cause
        return None if cause is None else cause.exit_code

    def stop(self, cause: RunStopped | AuthError) -> None:
        """Ask the run to stop; the first reason given is kept."""
        if self.cause is None:
            self.cause = cause
            log.warning("stopping: %s", cause, extra={"event": "stopping"})
            for listener in self.on_stop:
                listener()

    # --- the spend cap ---------------------------------------------------------

    def admit(self, request: Request, stats: RunStats) -> bool:
        """
        Whether *request* may start: the run is not stopping, and what has been
        spent, what rows in flight may still cost and this row's most together
        stay within the cap. Asked when a worker is free, so in-flight rows have
        settled as far as they can.
        """
        if self.stopping:
            return False
        cap = self.settings.max_cost
        if cap is None:
            return True
        if not self._unbounded_said and completion_bound(request) is None:
            self._unbounded_said = True
            log.warning(
                "--max-cost %s with no max_tokens: an answer's length is unknown"
                " until it comes, so the rows in flight when the cap is reached"
                " may pass it by what their answers cost; set request.max_tokens"
                " for a cap that holds",
                cap,
                extra={"event": "max_cost_unbounded"},
            )
        cost = row_cost(request, self.settings.price)
        if stats.spent + self._reserved_cost + cost > cap:
            self.stop(
                Resumable(
                    f"the spend cap of {cap} would be passed (spent about"
                    f" {stats.spent:.4f}); raise --max-cost or re-run later to go on"
                )
            )
            return False
        return True

    def reserve(self, request: Request) -> float:
        """Count *request*'s most against the cap while it is in flight."""
        cost = row_cost(request, self.settings.price)
        self._reserved_cost += cost
        return cost

    def release(self, cost: float) -> None:
        """A row that *reserve* counted has settled (its spend is in the stats)."""
        self._reserved_cost -= cost

    # --- failures ----------------------------------------------------------------

    def note(self, result: RowResult, stats: RunStats) -> None:
        """Look at a recorded *result*: a failure streak or budget stops the run."""
        self._watch_streak(result)
        self._watch_budget(result, stats)

    def _watch_streak(self, result: RowResult) -> None:
        error = result.error
        if result.status == "ok" or error is None:
            self._streak = ((None, None), 0)
            return
        if error.status_code == 404:
            kind = error_kind(error.status_code, error.code, error.type)
            self.stop(
                GaveUp(
                    f"the deployment {self.settings.deployment!r} was not found"
                    f" ({kind}: {error.message}): check --deployment and the"
                    " endpoint"
                )
            )
            return
        if error.code == "content_filter":
            return  # a property of the row, not of the run
        signature = (error.status_code, error.code)
        count = self._streak[1] + 1 if self._streak[0] == signature else 1
        self._streak = (signature, count)
        if count >= FAILURE_STREAK_LIMIT:
            kind = error_kind(error.status_code, error.code, error.type)
            said = (
                f"the last {count} rows all failed the same way ({kind}:"
                f" {error.message}); stopping rather than burning through the file."
            )
            # An outage (nothing answers, every answer a 5xx or 429) is cleared by
            # waiting, so a scheduler's re-run goes on (75); a request the service
            # refuses (a 400) fails again unchanged until someone fixes it (1).
            if is_transient(error):
                self.stop(
                    Resumable(
                        f"{said} The service seems down or overloaded: re-run"
                        " later to go on; finished rows are kept"
                    )
                )
            else:
                self.stop(
                    GaveUp(f"{said} Fix the cause and re-run: finished rows are kept")
                )

    def _watch_budget(self, result: RowResult, stats: RunStats) -> None:
        limit = self.settings.max_failures
        if result.status == "ok" or limit is None:
            return
        allowed = limit.allowed(stats.rows_planned)
        if stats.rows_failed > allowed:
            self.stop(
                GaveUp(
                    f"{stats.rows_failed} rows failed, more than --max-failures"
                    f" {limit} allows ({allowed}); fix the cause and re-run:"
                    " finished rows are kept and failed ones are tried again"
                )
            )

    # --- signals and the deadline -------------------------------------------------

    async def watch_signals(self, work: anyio.CancelScope) -> None:
        """
        SIGINT/SIGTERM: stop taking rows and give in-flight ones the grace
        period; a second signal abandons them at once (cancels *work*).
        """
        grace = self.settings.grace_seconds
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.interrupted is not None:
                    log.warning("second %s: abandoning in-flight rows", name)
                    work.cancel()
                    continue
                interrupted = Interrupted(
                    f"{name} received; finishing in-flight rows (up to {grace:.0f} s)",
                    signal_name=name,
                )
                self.stop(interrupted)
                # A signal outranks an earlier stop reason for the exit code.
                self.interrupted = interrupted
                cancel_after(work, grace)

    async def watch_deadline(
        self,
        work: anyio.CancelScope,
        started: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """Stop intake early enough for in-flight rows to finish by the deadline."""
        deadline = self.settings.deadline
        if deadline is None:
            return
        margin = min(self.settings.timeout, deadline / 10)
        origin = started if self.deadline_from is None else self.deadline_from
        left = deadline - (clock() - origin)
        await sleep(max(0.0, left - margin))
        near = f"the deadline of {deadline:.0f} s is near; re-run to go on"
        self.stop(Resumable(near))
        cancel_after(work, max(0.0, margin))


def cancel_after(scope: anyio.CancelScope, seconds: float) -> None:
    """Cancel *scope* in *seconds* at the latest (an earlier deadline stays)."""
    scope.deadline = min(scope.deadline, anyio.current_time() + seconds)
