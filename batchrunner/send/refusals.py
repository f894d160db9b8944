"""
What a row's request does when the service refuses it: a 401 under token auth
gets one new token and another try; a 429 pauses the route's pacer for as long
as the service asked, stops the run when that is longer than allowed, or fails
the row when it is over the whole quota; a 401/403 that stands stops the run.
And the record of a row that ends in a failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from batchrunner.config.groups import RetrySettings
from batchrunner.errors import ApiFailure, AuthError, QuotaExceeded, Resumable
from batchrunner.records import ErrorInfo, Request, RowResult
from batchrunner.send.route import Route
from batchrunner.send.stops import StopPolicy


class Abandoned(Exception):
    """A row left unsent because the run is stopping (it gets no record)."""


class Refusals:
    """The run's answers to the service's refusals (401, 403, 429)."""

    def __init__(
        self,
        retries: RetrySettings,
        control: StopPolicy,
        *,
        several: bool,
        on_unauthorized: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.retries = retries
        self.control = control
        #: Several deployments: one refusing our credentials is the router's to drop.
        self.several = several
        #: With token auth: called on a 401; True when a new token is in place.
        self.on_unauthorized = on_unauthorized
        #: Rows that already got a new token after a 401: a second one stops the run.
        self._refreshed_rows: set[str] = set()

    def done(self, request: Request) -> None:
        """*request*'s row has its result: its token renewal is forgotten."""
        self._refreshed_rows.discard(request.row_id)

    async def token_replaced(
        self, request: Request, failure: ApiFailure, route: Route
    ) -> ApiFailure | None:
        """
        After a row's first 401 under token auth: a new token, and the failure
        as one worth another try (None: no new token, the 401 stands).
        """
        hook = route.on_unauthorized or self.on_unauthorized
        if failure.status_code != 401 or hook is None:
            return None
        if request.row_id in self._refreshed_rows:
            return None
        self._refreshed_rows.add(request.row_id)
        if not await hook():
            return None
        return failure.but_retryable()

    def over_quota_here(
        self, failure: ApiFailure, request: Request, route: Route
    ) -> QuotaExceeded | None:
        """
        With several deployments: a 429 showing *request* is over *route*'s
        whole minute's quota, its booking given back (another deployment may
        be larger); None for any other failure, or with one deployment.
        """
        if not self.several or failure.status_code != 429:
            return None
        return _over_quota(route, request.charged_tokens)

    def on_failure(
        self, failure: ApiFailure, sent_at: float, tokens: int, route: Route
    ) -> None:
        """
        A request of *tokens* sent at *sent_at* on *route* failed: pause, stop
        or give up as the failure says (``QuotaExceeded``: the row is over the
        whole quota; ``Abandoned``: the run stops and the row is left).
        """
        if failure.status_code == 429:
            self._throttled(failure, sent_at, tokens, route)
        elif failure.status_code in (401, 403) and not self.several:
            self.control.stop(
                AuthError(
                    f"the service refused our credentials ({failure.status_code}:"
                    f" {failure.message}); check the key or the identity's role"
                )
            )

    def _throttled(
        self, failure: ApiFailure, sent_at: float, tokens: int, route: Route
    ) -> None:
        exceeded = _over_quota(route, tokens, sent_at)
        if exceeded is not None:
            raise exceeded from failure
        wait = failure.retry_after or 1.0
        most = self.retries.max_retry_wait
        if wait > most:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + wait))
            self.control.stop(
                Resumable(
                    f"the service asked to wait {wait:,.0f} s, longer than"
                    f" max_retry_wait ({most:.0f} s): the deployment's quota is"
                    f" exhausted. Re-run after {when} to go on"
                )
            )
            raise Abandoned from failure
        # Everybody waits, so one throttled answer does not become a hundred.
        route.pacer.throttled(wait, sent_at, tokens)


def _over_quota(
    route: Route, tokens: int, sent_at: float | None = None
) -> QuotaExceeded | None:
    """
    Whether a request of *tokens*, refused with a 429, is over *route*'s whole
    minute's quota (sent before the quota was known, and the answer told it):
    the service would refuse it forever, so waiting is no use; nor need the
    rows after it wait out what was booked for it, which is given back.
    """
    limit = route.pacer.token_limit()
    if limit is None or tokens <= limit:
        return None
    route.pacer.refused(tokens, sent_at)
    return QuotaExceeded(tokens, limit)


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


def error_result(
    request: Request,
    failure: ApiFailure,
    attempts: int,
    deployment: str | None = None,
) -> RowResult:
    """The record of a row that ended in *failure* after *attempts* requests
    (the last one to *deployment*)."""
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
        deployment=deployment,
    )
