"""
One row, from request to result: pace → send → retry.

    request ─▶ hooks.before ─▶ pacer ─▶ client ─┬─▶ answer ─▶ hooks.after ─▶ result
                                                 └─▶ failure ─▶ retry policy ─┘

What a refusal (401, 403, 429) does besides is ``batchrunner.send.refusals``'s.
Rows a stop leaves unsent or abandons come back as None: they get no record, so
a re-run sends them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from tenacity import RetryCallState

from batchrunner.config.groups import RetrySettings
from batchrunner.errors import ApiFailure, AuthError, QuotaExceeded
from batchrunner.records import Reply, Request, RowResult, answered
from batchrunner.report.summary import RunStats
from batchrunner.send.pacer import PacerStopped, Turn
from batchrunner.send.refusals import Abandoned, Refusals, error_result, over_quota
from batchrunner.send.retry import RetryPolicy, log_retry, retrying
from batchrunner.send.route import Route
from batchrunner.send.routes import RouteTable
from batchrunner.send.stops import StopPolicy


class _Rerouted(Exception):
    """A deployment being out explains the failure: another one takes the row."""

    def __init__(self, *, counted: bool) -> None:
        super().__init__()
        #: Whether it counts against the row's reroutes: a 429 with a wait
        #: does not, as every deployment throttled means the run waits (its
        #: waits are bounded by max_retry_wait and the all-out stop), not
        #: that the row fails.
        self.counted = counted


@dataclass
class _Row:
    """One row's way through the routes: what it was sent to, and how often."""

    #: Requests sent for the row (its record's ``attempts``).
    sent: int = 0
    #: The label of the route of the last request.
    label: str | None = None
    #: Deployments that faulted on this row: its retries go elsewhere first.
    failed: set[str] = field(default_factory=set)
    #: Failures sent on to another deployment uncharged; bounded, so a row
    #: that every deployment fails without end still runs out of attempts.
    rerouted: int = 0
    #: Sent on from a deployment that was out: it goes on at once, to the
    #: queue of the deployment due soonest.
    moved: bool = False
    #: Deployments whose whole minute's quota is smaller than the row: their
    #: quota (tokens a minute). The row fails only when every one is.
    too_small: dict[str, float] = field(default_factory=dict)


class RowHooks(Protocol):
    """What a run does around each row (see ``batchrunner.send.hooks``)."""

    async def before(self, request: Request) -> RowResult | None:
        """A result that needs no request (e.g. a cached answer), or None to send."""

    def after(self, request: Request, result: RowResult | None) -> RowResult | None:
        """*result* (None: abandoned) as it is to be recorded; called in any case."""


class RowSender:
    """Takes one request at a time to a result over *route* (or a table of them)."""

    def __init__(
        self,
        route: Route | RouteTable,
        retries: RetrySettings,
        control: StopPolicy,
        stats: RunStats,
        *,
        hooks: RowHooks | None = None,
        on_unauthorized: Callable[[], Awaitable[bool]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = (
            route
            if isinstance(route, RouteTable)
            else RouteTable([route], control, max_retry_wait=retries.max_retry_wait)
        )
        self.retries = retries
        self.policy = RetryPolicy(
            max_attempts=retries.max_attempts, max_backoff=retries.max_backoff
        )
        self.control = control
        self.stats = stats
        self.hooks = hooks
        self.refusals = Refusals(
            retries,
            control,
            several=self.routes.several,
            on_unauthorized=on_unauthorized,
        )
        self._sleep = sleep
        self._clock = clock
        # Made on first use: an anyio Event needs a running event loop.
        self._stopped: anyio.Event | None = None
        control.on_stop.append(self._wake_sleepers)

    def _wake_sleepers(self) -> None:
        if self._stopped is not None:
            self._stopped.set()
        # Rows waiting for their turn are abandoned at once, not when it comes.
        for route in self.routes.routes.values():
            route.pacer.stop()

    async def send(self, request: Request) -> RowResult | None:
        """The result of *request*, or None when a stop abandoned it."""
        try:
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
        finally:
            self.refusals.done(request)

    async def _process(self, request: Request) -> RowResult | None:
        # Most rows succeed at once: the retrier is built only after a failure.
        row = _Row()
        try:
            reply = await self._attempt(request, row)
        except Abandoned:
            return None
        except QuotaExceeded as exceeded:  # unsent, or refused by its first answer
            return error_result(request, over_quota(exceeded), row.sent, row.label)
        except ApiFailure as failure:
            return await self._retry(request, failure, row)
        return answered(request, reply, row.sent, deployment=row.label)

    async def _retry(
        self, request: Request, first: ApiFailure, row: _Row
    ) -> RowResult | None:
        """
        Go on after the first attempt failed with *first*. The retrier is handed
        that failure as its own first attempt, so its decisions, waits and attempt
        numbers are those of a retrier that had sent it.
        """
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
                    reply = await self._attempt(request, row)
        except Abandoned:
            return None
        except QuotaExceeded as exceeded:
            return error_result(request, over_quota(exceeded), row.sent, row.label)
        except ApiFailure as failure:
            return error_result(request, failure, row.sent, row.label)
        return answered(request, reply, row.sent, deployment=row.label)

    async def _wait_turn(self, request: Request, row: _Row) -> tuple[Route, Turn]:
        """The route for the row's next request, once its pacer lets it go."""
        tokens = request.charged_tokens
        table = self.routes
        while True:
            if self.control.stopping:
                raise Abandoned
            route = table.only or await table.pick(
                tokens, row.failed, row.too_small, queue=row.moved
            )
            if route is None:
                raise Abandoned
            try:
                turn = await table.acquire(route, tokens)
            except BaseException as exc:
                table.sent(route, tokens)
                table.released(route)
                if isinstance(exc, PacerStopped):
                    raise Abandoned from exc
                if isinstance(exc, QuotaExceeded) and table.fits_elsewhere(
                    route, exc, row.too_small
                ):
                    continue
                raise
            table.sent(route, tokens)
            if turn is not None and not self.control.stopping:
                return route, turn
            # The run stops, or the deployment went out while the row waited
            # there (then it chooses again).
            table.released(route)
            if turn is not None:
                turn.release()
                raise Abandoned

    async def _attempt(self, request: Request, row: _Row) -> Reply:
        """
        Requests on the wire until an answer, or a failure that is the row's to
        retry: one that a deployment being out explains goes to another at once.
        """
        while True:
            route, turn = await self._wait_turn(request, row)
            try:
                return await self._send_once(request, route, turn, row)
            except _Rerouted as rerouted:
                row.moved = True
                if rerouted.counted:
                    row.rerouted += 1

    async def _send_once(
        self, request: Request, route: Route, turn: Turn, row: _Row
    ) -> Reply:
        """One request on *route*; a failure comes back as it is to be retried."""
        pacer = route.pacer
        sent_at = self._clock()
        row.sent += 1
        row.label = route.label
        # The turn is given back however the request ends (answer, timeout,
        # cancellation), so no wait in the pacer outlives it.
        with turn:
            try:
                reply = await route.client.complete(request)
            except ApiFailure as failure:
                self.stats.note_attempt(failure, route.label)
                if failure.status_code is not None:  # an answer, not a timeout
                    pacer.observe(failure.limits, sent_at=sent_at)
                renewed = await self.refusals.token_replaced(request, failure, route)
                if renewed is not None:
                    raise renewed from failure
                exceeded = self.refusals.over_quota_here(failure, request, route)
                if exceeded is not None:
                    if not self.routes.fits_elsewhere(route, exceeded, row.too_small):
                        raise exceeded from failure
                    raise _Rerouted(counted=False) from failure
                if self._may_reroute(row) and self.routes.reroute(
                    route, failure, row.failed, sent_at
                ):
                    wait = failure.retry_after or 1.0
                    # This deployment only slows down; one out for longer than
                    # a retry may wait is the router's alone to hold back.
                    most = self.retries.max_retry_wait
                    if failure.status_code == 429 and wait <= most:
                        pacer.throttled(wait, sent_at, request.charged_tokens)
                    waited = failure.status_code == 429 and failure.retry_after
                    raise _Rerouted(counted=not waited) from failure
                self.refusals.on_failure(
                    failure, sent_at, request.charged_tokens, route
                )
                raise
            except AuthError as exc:  # the token provider has no token to give
                self.routes.released(route)
                self.control.stop(exc)
                raise Abandoned from exc
            self.stats.note_attempt(None, route.label)
            self.routes.answered(route)
            pacer.observe(reply.limits, request.charged_tokens, sent_at)
            return reply

    def _may_reroute(self, row: _Row) -> bool:
        limit = self.retries.max_attempts * max(1, len(self.routes.routes))
        return row.rerouted < limit

    async def _retry_sleep(self, seconds: float) -> None:
        """
        The wait before a retry, cut short when the run stops: the row is then
        abandoned (no record; a re-run sends it) rather than holding up the
        stop for as long as the service asked to wait.
        """
        if self._stopped is None:
            self._stopped = anyio.Event()
        stopped = self._stopped
        if not self.control.stopping:
            async with anyio.create_task_group() as race:

                async def until_stopped() -> None:
                    await stopped.wait()
                    race.cancel_scope.cancel()

                race.start_soon(until_stopped)
                await self._sleep(seconds)
                race.cancel_scope.cancel()
        if self.control.stopping:
            raise Abandoned

    async def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.note_retry()
        log_retry(state)
