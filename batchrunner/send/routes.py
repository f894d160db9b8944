"""
The routes of a run: one per deployment, and with several, the router that
picks among them and what its decisions mean for a row.

With one route nothing changes: every request takes it, and a failure is the
row's to retry. With several, a failure that one deployment being out explains
(a 429, a fault, a refusal) sends the row to another at once, uncharged, while
another can take it; see ``batchrunner.send.router`` for the rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

import anyio

from batchrunner.errors import ApiFailure, AuthError, GaveUp, QuotaExceeded, Resumable
from batchrunner.send.pacer import Turn
from batchrunner.send.route import Route
from batchrunner.send.router import DROP_STATUSES, Lane, Router
from batchrunner.send.stops import StopPolicy

log = logging.getLogger("batchrunner")


def is_fault(failure: ApiFailure) -> bool:
    """A failure of the deployment rather than the row: 5xx, 408, reset, timeout."""
    status = failure.status_code
    if status is None:
        return failure.retryable  # connection errors and timeouts
    return status >= 500 or status == 408


class RouteTable:
    """
    The routes of a run. *lanes* give each route's priority and weight (by
    label; default: all alike); *max_retry_wait* bounds the wait for a
    deployment to come back before the run stops (exit 75).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        control: StopPolicy,
        *,
        lanes: Sequence[Lane] = (),
        max_retry_wait: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.routes = {route.label: route for route in routes}
        self._sleep = sleep
        self.control = control
        self.max_retry_wait = max_retry_wait
        given = {lane.name: lane for lane in lanes}
        chosen = [given.get(r.label) or Lane(r.label, r.pacer) for r in routes]
        self.router = Router(chosen, clock) if len(routes) > 1 else None
        #: The one route, when there is no choice to make.
        self.only = routes[0] if len(routes) == 1 else None
        self._changed: anyio.Event | None = None
        # The waits of requests at each deployment's pacer, to end when it goes out.
        self._queued: dict[str, set[anyio.CancelScope]] = {
            r.label: set() for r in routes
        }
        control.on_stop.append(self._notify)

    @property
    def several(self) -> bool:
        """Whether there is a choice to make."""
        return self.router is not None

    def _notify(self) -> None:
        """Wake whoever waits for a deployment to come back."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def pick(
        self,
        tokens: int,
        avoid: Collection[str] = (),
        exclude: Collection[str] = (),
        *,
        queue: bool = False,
    ) -> Route | None:
        """
        The route for a request of *tokens*, waiting while every deployment is
        out; None when the run stops first or none is left. Those in *avoid*
        are used only when no other one is usable, those in *exclude* never;
        *queue*: see ``Router.choose``.
        """
        router = self.router
        if router is None:
            return next(iter(self.routes.values()))
        while not self.control.stopping:
            name = router.choose(tokens, avoid, exclude, queue=queue)
            if name is not None:
                return self.routes[name]
            if router.all_dropped:
                return None
            down = router.down_for()
            if down is not None and down > self.max_retry_wait:
                self.control.stop(
                    Resumable(
                        f"no deployment has answered for {down:.0f} s, longer than"
                        f" max_retry_wait ({self.max_retry_wait:.0f} s): each"
                        " fails or cannot be reached (see the warnings above);"
                        " re-run later to go on"
                    )
                )
                return None
            throttled = router.throttled_for()
            if throttled is not None and throttled > self.max_retry_wait:
                self.control.stop(
                    Resumable(
                        f"every deployment is out for longer than max_retry_wait"
                        f" ({self.max_retry_wait:.0f} s): their quotas are"
                        " exhausted; re-run later to go on"
                    )
                )
                return None
            # Every wait ends: an answer, a deployment's cool-off, or a stop.
            if self._changed is None:
                self._changed = anyio.Event()
            await self._until_changed(self._changed, router.wait_seconds())
        return None

    async def _until_changed(self, changed: anyio.Event, seconds: float | None) -> None:
        """Wait for *changed*, or *seconds* (None: no limit), whichever comes first."""
        async with anyio.create_task_group() as race:

            async def timer(seconds: float) -> None:
                await self._sleep(seconds)
                race.cancel_scope.cancel()

            if seconds is not None:
                race.start_soon(timer, seconds)
            await changed.wait()
            race.cancel_scope.cancel()

    async def acquire(self, route: Route, tokens: int) -> Turn | None:
        """
        Wait for *route*'s pacer to let a request of *tokens* go: its turn, or
        None when the deployment went out meanwhile (the request picks again
        rather than wait at a pacer whose deployment cannot answer it).
        """
        if self.router is None:
            return await route.pacer.acquire(tokens)
        turn: Turn | None = None
        queued = self._queued[route.label]
        with anyio.CancelScope() as scope:
            queued.add(scope)
            try:
                turn = await route.pacer.acquire(tokens)
            finally:
                queued.discard(scope)
        return turn

    def fits_elsewhere(
        self, route: Route, exceeded: QuotaExceeded, too_small: dict[str, float]
    ) -> bool:
        """
        A row is over *route*'s whole minute's quota (*exceeded*): noted in the
        row's *too_small*; whether a deployment with room for it is left.
        """
        too_small[route.label] = exceeded.limit
        return self.router is not None and self.router.can_take(avoid=too_small)

    def _send_elsewhere(self, label: str) -> None:
        """The requests waiting at *label*'s pacer choose again."""
        for scope in self._queued[label]:
            scope.cancel()
        self._queued[label].clear()

    def sent(self, route: Route, tokens: int) -> None:
        """*route*'s pacer let a request of *tokens* go (or it gave up waiting)."""
        if self.router is not None:
            self.router.sent(route.label, tokens)

    def released(self, route: Route) -> None:
        """The request picked for *route* is not sent after all."""
        if self.router is not None:
            self.router.released(route.label)
            self._notify()

    def answered(self, route: Route) -> None:
        """*route* answered (any answer but a fault)."""
        if self.router is not None:
            self.router.answered(route.label)
            self._notify()

    def reroute(
        self,
        route: Route,
        failure: ApiFailure,
        failed: set[str],
        sent_at: float | None = None,
    ) -> bool:
        """
        Note *failure* from *route* to a request sent at *sent_at*; True when
        the row should go to another deployment at once, uncharged. *failed*
        holds the deployments that faulted on this row; *route* joins it after
        a fault.
        """
        router = self.router
        if router is None:
            return False
        label = route.label
        try:
            if failure.status_code == 429:
                wait = failure.retry_after or 1.0
                router.throttled(label, wait)
                self._send_elsewhere(label)
                if wait > self.max_retry_wait:
                    log.warning(
                        "deployment %s asked to wait %.0f s: its quota is"
                        " exhausted; its rows go to the others",
                        label,
                        wait,
                        extra={"event": "deployment_out", "deployment": label},
                    )
                return router.can_take(avoid={label})
            if failure.status_code in DROP_STATUSES:
                return self._drop(label, failure)
            if is_fault(failure):
                cool_off = router.faulted(label, sent_at)
                if cool_off is not None:
                    self._send_elsewhere(label)
                    log.warning(
                        "deployment %s is out after %s: trying it again in %.0f s",
                        label,
                        failure.message,
                        cool_off,
                        extra={
                            "event": "deployment_out",
                            "deployment": label,
                            "seconds": cool_off,
                        },
                    )
                failed.add(label)
                return router.can_take(avoid=failed)
            router.answered(label)
            return False
        finally:
            self._notify()

    def _drop(self, label: str, failure: ApiFailure) -> bool:
        router = self.router
        assert router is not None
        dropped = router.refused(label, failure.status_code or 0, failure.message)
        self._send_elsewhere(label)
        if dropped is not None:
            log.warning(
                "deployment %s dropped for this run: %s (%s)",
                label,
                failure.message,
                failure.status_code,
                extra={"event": "deployment_dropped", "deployment": label},
            )
        if router.can_take():
            return True
        if router.all_refused_auth:
            self.control.stop(
                AuthError(
                    "every deployment refused our credentials; check each key"
                    " (api_key_env) or the identity's role on each resource"
                )
            )
        else:
            self.control.stop(
                GaveUp(
                    "every deployment was dropped (refused or not found); check"
                    " the endpoints, deployment names and credentials"
                )
            )
        return False
