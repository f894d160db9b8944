"""
The pool: a feeder, N workers and one writer, joined by bounded streams.

    requests ─▶ feeder ─[rendezvous]─▶ N × worker ─[bounded]─▶ writer ─▶ sink

A worker checks whether a row may start (stop requested, deadline, spend cap)
as it takes it, and the writer is the only task that touches the output.
Rows a stop leaves unsent or abandons get no record, so a re-run sends them.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
)
from tenacity import RetryCallState

from batchrunner.azure.client import Completer
from batchrunner.config.settings import Settings
from batchrunner.errors import (
    EXIT_AUTH,
    EXIT_ROWS_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_TEMPFAIL,
    ApiFailure,
    AuthError,
)
from batchrunner.records import ErrorInfo, Reply, Request, RowResult, answered
from batchrunner.report.summary import RunStats, error_kind
from batchrunner.send.pacer import Pacer, QuotaExceeded
from batchrunner.send.retry import RetryPolicy, retrying

log = logging.getLogger("batchrunner")

#: Consecutive rows failing the same way before the run gives up on the file.
FAILURE_STREAK_LIMIT = 10
#: Most results the writer takes in one write (and one flush).
WRITE_BATCH = 512


async def take(stream: MemoryObjectReceiveStream[Request]) -> Request | None:
    """
    The next item of *stream*, or None once it has ended. An item that is
    already waiting is taken without a trip round the event loop: anyio's
    receive() yields first, and on a busy loop every worker that finishes a
    row would wait behind all the other callbacks before taking the next.
    """
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


async def hand_over(stream: MemoryObjectSendStream[Request], item: Request) -> None:
    """Give *item* to a waiting receiver at once, else wait for one."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


@dataclass
class Control:
    """Whether the run is stopping, why, and with which exit code."""

    reason: str | None = None
    exit_code: int | None = None
    #: Called once, when the run is first asked to stop.
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def stopping(self) -> bool:
        """True once anything asked the run to stop taking rows."""
        return self.reason is not None

    def stop(self, reason: str, exit_code: int) -> None:
        """Ask the run to stop; the first reason given is kept."""
        if self.reason is None:
            self.reason = reason
            self.exit_code = exit_code
            log.warning("stopping: %s", reason, extra={"event": "stopping"})
            for listener in self.on_stop:
                listener()


class _Abandoned(Exception):
    """A row left unsent because the run is stopping (it gets no record)."""


class RowHooks(Protocol):
    """What a run does around each row (see ``batchrunner.send.hooks``)."""

    async def before(self, request: Request) -> RowResult | None:
        """A result that needs no request (e.g. a cached answer), or None to send."""

    def after(self, request: Request, result: RowResult | None) -> RowResult | None:
        """*result* (None: abandoned) as it is to be recorded; called in any case."""


def row_cost(
    request: Request, price: tuple[float, float] | None, settings: Settings
) -> float:
    """The most *request* can cost: its prompt plus its completion bound."""
    if price is None:
        return 0.0
    body = request.body
    bound = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    completion = int(bound) * int(body.get("n") or 1)
    return (request.prompt_tokens * price[0] + completion * price[1]) / 1e6


class Pool:
    """Runs requests through a *completer* and hands results to *write*."""

    def __init__(
        self,
        completer: Completer,
        settings: Settings,
        *,
        write: Callable[[Sequence[RowResult]], None],
        stats: RunStats,
        pacer: Pacer | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_unauthorized: Callable[[], Awaitable[bool]] | None = None,
        hooks: RowHooks | None = None,
    ) -> None:
        self.completer = completer
        self.settings = settings
        self.write = write
        self.stats = stats
        self.pacer = pacer or Pacer(
            settings.rpm, settings.tpm, sleep=sleep, clock=clock
        )
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts, max_backoff=settings.max_backoff
        )
        self.on_progress = on_progress
        #: With token auth: called on a 401; True when a new token is in place.
        self.on_unauthorized = on_unauthorized
        #: Rows that already got a new token after a 401: a second one stops the run.
        self._refreshed_rows: set[str] = set()
        self.hooks = hooks
        self.control = Control()
        self._sleep = sleep
        self._clock = clock
        self._price = settings.price_for(None)
        self._reserved_cost = 0.0
        self._streak: tuple[tuple[int | None, str | None], int] = ((None, None), 0)
        self._work_scope = anyio.CancelScope()
        self._started = clock()
        self._stopped: anyio.Event | None = None

    # --- orchestration --------------------------------------------------------

    async def run(self, requests: Iterable[Request]) -> Control:
        """Send every request (until told to stop); return how the run ended."""
        self._started = self._clock()
        stopped = anyio.Event()
        self._stopped = stopped
        self.control.on_stop.append(stopped.set)
        results_tx, results_rx = anyio.create_memory_object_stream[RowResult](
            self.settings.concurrency
        )
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(self._watch_signals)
            if self.settings.deadline is not None:
                watchers.start_soon(self._watch_deadline, self.settings.deadline)
            async with anyio.create_task_group() as io:
                io.start_soon(self._write_results, results_rx)
                io.start_soon(self._work, requests, results_tx)
            watchers.cancel_scope.cancel()
        return self.control

    async def _work(
        self, requests: Iterable[Request], results: MemoryObjectSendStream[RowResult]
    ) -> None:
        # A zero buffer keeps rows in the input until a worker is free, so a stop
        # leaves them to the next run instead of a queue.
        requests_tx, requests_rx = anyio.create_memory_object_stream[Request](0)
        async with results:
            with self._work_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._feed, requests, requests_tx)
                    async with requests_rx:
                        for _ in range(self.settings.concurrency):
                            tg.start_soon(
                                self._worker, requests_rx.clone(), results.clone()
                            )

    async def _feed(
        self, requests: Iterable[Request], out: MemoryObjectSendStream[Request]
    ) -> None:
        async with out:
            for request in requests:
                if self.control.stopping:
                    break
                await hand_over(out, request)

    def _within_budget(self, request: Request) -> bool:
        cap = self.settings.max_cost
        if cap is None:
            return True
        cost = row_cost(request, self._price, self.settings)
        if self.stats.spent + self._reserved_cost + cost > cap:
            self.control.stop(
                f"the spend cap of {cap} would be passed (spent about"
                f" {self.stats.spent:.4f}); raise --max-cost or re-run later to go on",
                EXIT_TEMPFAIL,
            )
            return False
        return True

    async def _worker(
        self,
        requests: MemoryObjectReceiveStream[Request],
        results: MemoryObjectSendStream[RowResult],
    ) -> None:
        async with requests, results:
            while (request := await take(requests)) is not None:
                # Checked when a worker is free, so in-flight rows have settled.
                if self.control.stopping or not self._within_budget(request):
                    continue
                cost = row_cost(request, self._price, self.settings)
                self._reserved_cost += cost
                try:
                    result = await self._handle(request)
                finally:
                    self._reserved_cost -= cost
                    self._refreshed_rows.discard(request.row_id)
                if result is None:
                    continue
                try:
                    results.send_nowait(result)
                except anyio.WouldBlock:
                    # A paid-for answer must reach the writer even while stopping.
                    with anyio.CancelScope(shield=True):
                        await results.send(result)

    async def _write_results(
        self, results: MemoryObjectReceiveStream[RowResult]
    ) -> None:
        async with results:
            async for first in results:
                batch = [first]
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(results.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                self.write(batch)
                for result in batch:
                    self.stats.add(result, self.settings)
                    self._watch_failures(result)
                    self._watch_failure_budget(result)
                if self.on_progress is not None:
                    self.on_progress(self.stats)

    # --- one row ----------------------------------------------------------------

    async def _handle(self, request: Request) -> RowResult | None:
        hooks = self.hooks
        if hooks is None:
            return await self._process(request)
        result: RowResult | None = None
        try:
            # A reused answer skips the pacer as well: nothing is sent for it.
            result = await hooks.before(request)
            if result is None:
                result = await self._process(request)
        finally:
            result = hooks.after(request, result)
        return result

    async def _process(self, request: Request) -> RowResult | None:
        # Most rows succeed at once: the retrier is built only after a failure.
        try:
            await self._wait_turn(request)
            reply = await self._send(request)
        except _Abandoned:
            return None
        except QuotaExceeded as exceeded:  # nothing was sent
            return _error_result(request, over_quota(exceeded), attempts=0)
        except ApiFailure as failure:
            return await self._retry(request, failure)
        return answered(request, reply, attempts=1)

    async def _retry(self, request: Request, first: ApiFailure) -> RowResult | None:
        """
        Go on after the first attempt failed with *first*. The retrier is handed
        that failure as its own first attempt, so its decisions, waits and attempt
        numbers are those of a retrier that had sent it.
        """
        attempts = 1
        replay: ApiFailure | None = first
        retrier = retrying(
            self.policy, before_sleep=self._before_sleep, sleep=self._retry_sleep
        )
        try:
            async for attempt in retrier:
                with attempt:
                    if replay is not None:
                        failure, replay = replay, None
                        raise failure
                    await self._wait_turn(request)
                    attempts += 1
                    reply = await self._send(request)
        except _Abandoned:
            return None
        except QuotaExceeded as exceeded:
            return _error_result(request, over_quota(exceeded), attempts)
        except ApiFailure as failure:
            return _error_result(request, failure, attempts)
        return answered(request, reply, attempts)

    async def _wait_turn(self, request: Request) -> None:
        if self.control.stopping:
            raise _Abandoned
        await self.pacer.acquire(request.charged_tokens)
        if self.control.stopping:
            raise _Abandoned

    async def _send(self, request: Request) -> Reply:
        sent_at = self._clock()
        try:
            reply = await self.completer.complete(request)
        except ApiFailure as failure:
            self.stats.note_attempt(failure)
            self.pacer.observe(failure.limits)
            if not await self._token_replaced(request, failure):
                self._on_failure(failure, sent_at)
            raise
        except AuthError as exc:  # the token provider has no token to give
            self.control.stop(str(exc), EXIT_AUTH)
            raise _Abandoned from exc
        self.stats.note_attempt(None)
        self.pacer.observe(reply.limits, request.charged_tokens)
        return reply

    async def _token_replaced(self, request: Request, failure: ApiFailure) -> bool:
        """After a row's first 401 under token auth: a new token, and a retry."""
        if failure.status_code != 401 or self.on_unauthorized is None:
            return False
        if request.row_id in self._refreshed_rows:
            return False
        self._refreshed_rows.add(request.row_id)
        if not await self.on_unauthorized():
            return False
        failure.retryable = True
        return True

    def _on_failure(self, failure: ApiFailure, sent_at: float) -> None:
        if failure.status_code == 429:
            wait = failure.retry_after or 1.0
            if wait > self.settings.max_retry_wait:
                when = time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + wait)
                )
                self.control.stop(
                    f"the service asked to wait {wait:,.0f} s, longer than"
                    f" max_retry_wait ({self.settings.max_retry_wait:.0f} s): the"
                    f" deployment's quota is exhausted. Re-run after {when} to go on",
                    EXIT_TEMPFAIL,
                )
                raise _Abandoned from failure
            # Everybody waits, so one throttled answer does not become a hundred.
            self.pacer.throttled(wait, sent_at)
        elif failure.status_code in (401, 403):
            self.control.stop(
                f"the service refused our credentials ({failure.status_code}:"
                f" {failure.message}); check the key or the identity's role",
                EXIT_AUTH,
            )

    async def _retry_sleep(self, seconds: float) -> None:
        """
        The wait before a retry, cut short when the run stops: the row is then
        abandoned (no record; a re-run sends it) rather than holding up the
        stop for as long as the service asked to wait.
        """
        stopped = self._stopped
        if stopped is None:  # not running: nothing can stop it
            await self._sleep(seconds)
        elif not self.control.stopping:
            async with anyio.create_task_group() as race:

                async def until_stopped() -> None:
                    await stopped.wait()
                    race.cancel_scope.cancel()

                race.start_soon(until_stopped)
                await self._sleep(seconds)
                race.cancel_scope.cancel()
        if self.control.stopping:
            raise _Abandoned

    async def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.note_retry()
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, ApiFailure) and log.isEnabledFor(logging.INFO):
            wait = state.upcoming_sleep
            log.info(
                "retrying in %.2fs after %s: %s",
                wait,
                error_kind(failure.status_code, failure.code, failure.kind),
                failure.message,
                extra={
                    "event": "retry",
                    "attempt": state.attempt_number,
                    "wait_s": round(wait, 3),
                    "status_code": failure.status_code,
                },
            )

    # --- stopping ---------------------------------------------------------------

    def _watch_failures(self, result: RowResult) -> None:
        error = result.error
        if result.status == "ok" or error is None:
            self._streak = ((None, None), 0)
            return
        if error.status_code == 404:
            self.control.stop(
                f"the deployment {self.settings.deployment!r} was not found"
                f" ({error.code}): check --deployment and the endpoint",
                EXIT_ROWS_FAILED,
            )
            return
        if error.code == "content_filter":
            return  # a property of the row, not of the run
        signature = (error.status_code, error.code)
        count = self._streak[1] + 1 if self._streak[0] == signature else 1
        self._streak = (signature, count)
        if count >= FAILURE_STREAK_LIMIT:
            kind = error_kind(error.status_code, error.code, error.type)
            self.control.stop(
                f"the last {count} rows all failed the same way ({kind}:"
                f" {error.message}); stopping rather than burning through the"
                " file. Fix the cause and re-run: finished rows are kept",
                EXIT_ROWS_FAILED,
            )

    def _watch_failure_budget(self, result: RowResult) -> None:
        limit = self.settings.max_failures
        if result.status == "ok" or limit is None:
            return
        allowed = limit.allowed(self.stats.rows_planned)
        if self.stats.rows_failed > allowed:
            self.control.stop(
                f"{self.stats.rows_failed} rows failed, more than --max-failures"
                f" {limit} allows ({allowed}); fix the cause and re-run: finished"
                " rows are kept and failed ones are tried again",
                EXIT_ROWS_FAILED,
            )

    async def _watch_signals(self) -> None:
        names = {
            signal.SIGINT: ("SIGINT", EXIT_SIGINT),
            signal.SIGTERM: ("SIGTERM", EXIT_SIGTERM),
        }
        with anyio.open_signal_receiver(*names) as signals:
            async for signum in signals:
                name, code = names[signal.Signals(signum)]
                if self.control.stopping and self.control.exit_code in (
                    EXIT_SIGINT,
                    EXIT_SIGTERM,
                ):
                    log.warning("second %s: abandoning in-flight rows", name)
                    self._work_scope.cancel()
                    continue
                self.control.stop(
                    f"{name} received; finishing in-flight rows (up to"
                    f" {self.settings.grace_seconds:.0f} s)",
                    code,
                )
                # A signal outranks an earlier stop reason for the exit code.
                self.control.exit_code = code
                self._cancel_work_after(self.settings.grace_seconds)

    def _cancel_work_after(self, seconds: float) -> None:
        self._work_scope.deadline = min(
            self._work_scope.deadline, anyio.current_time() + seconds
        )

    async def _watch_deadline(self, deadline: float) -> None:
        # Stop intake early enough for in-flight rows to finish in time.
        margin = min(self.settings.timeout, deadline / 10)
        left = deadline - (self._clock() - self._started)
        await self._sleep(max(0.0, left - margin))
        self.control.stop(
            f"the deadline of {deadline:.0f} s is near; re-run to go on", EXIT_TEMPFAIL
        )
        self._cancel_work_after(max(0.0, margin))


def over_quota(exceeded: QuotaExceeded) -> ApiFailure:
    """The failure of a row charged more tokens than a whole minute's quota."""
    return ApiFailure(
        kind="OverQuota",
        message=(
            f"this row is charged {exceeded.tokens:,} tokens (prompt + max_tokens ×"
            f" n) but the deployment's quota is {exceeded.limit:,.0f} tokens a"
            " minute, so it can never be sent: lower max_tokens or n, shorten the"
            " prompt, or raise the quota (--tpm)"
        ),
    )


def _error_result(request: Request, failure: ApiFailure, attempts: int) -> RowResult:
    return RowResult(
        id=request.row_id,
        status="error",
        reply=None,
        error=ErrorInfo(
            type=failure.kind,
            status_code=failure.status_code,
            code=failure.code,
            message=failure.message,
        ),
        attempts=attempts,
        latency_ms=failure.latency_ms,
        request_id=failure.request_id,
        passthrough=request.passthrough,
    )


