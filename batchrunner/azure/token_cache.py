"""
The token cache: one Entra ID token shared by every request of a run.

    SDK ─ get() ─▶ current token ──(missing / expired)──▶ one shared fetch
                        ▲
    refresher ──────────┘  fetches ahead of expiry, off the hot path

What it adds to azure-identity's own caching (``get_bearer_token_provider``):

* **single flight, failures included**: however many callers wait, one fetch runs,
  and its token or its error answers all of them at once;
* **refresh ahead of expiry in the background**, so no request waits on a fetch;
* **the last good token is served until it really expires** when a refresh fails,
  and the refresh is retried with back-off meanwhile;
* **a refused token** (a 401 from the service) is dropped and fetched anew once,
  however many requests carried it.

The cache knows nothing of Azure: it calls an async ``fetch`` that returns a
``Token`` or raises ``AuthError``. Its fetches run in a task group the cache owns,
so a caller that gives up (a cancelled row) never cancels a fetch others wait on,
and leaving ``open_token_cache`` ends every task it started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from batchrunner.azure.token_expiry import Token, margin, next_delay
from batchrunner.errors import AuthError

log = logging.getLogger("batchrunner")

#: The longest one fetch may take before it counts as failed.
FETCH_TIMEOUT = 60.0


Fetch = Callable[[], Awaitable[Token]]

#: The generation of the token the current task last handed to a request. The SDK
#: calls ``get()`` in the task that sends the request, so after a 401 the same task
#: can tell whether the refused token is still the current one.
_carried: ContextVar[int] = ContextVar("batchrunner_token_generation", default=0)


class _Flight:
    """One fetch in progress, and its outcome for everyone who waited on it."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.token: Token | None = None
        self.error = "the token fetch was cancelled"


@dataclass
class CacheStats:
    """How often the cache went to the identity endpoint."""

    fetches: int = 0
    failed: int = 0


class TokenCache:
    """
    Hands out the current token (``get``), refreshes it ahead of expiry
    (``refresh_forever``) and replaces a refused one (``refused``).

    *clock* is wall-clock seconds (token expiries are epoch times) and *sleep* is
    injectable, so tests can drive the refresher without waiting.
    """

    def __init__(
        self,
        fetch: Fetch,
        tasks: TaskGroup,
        *,
        on_token: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self._fetch = fetch
        self._tasks = tasks
        self._on_token = on_token
        self._clock = clock
        self._sleep = sleep
        self._fetch_timeout = fetch_timeout
        self._token: Token | None = None
        self._fetched_at = 0.0
        self._generation = 0
        self._flight: _Flight | None = None
        self._announced = 0
        self.stats = CacheStats()

    # --- the hot path -------------------------------------------------------------

    async def get(self) -> str:
        """The current token; waits on the shared fetch only when there is none."""
        token = self._token
        if token is None or not self._usable(token):
            token = await self._shared_fetch()
        _carried.set(self._generation)
        return token.value

    @property
    def token(self) -> Token | None:
        """The token requests get now (None while a replacement is fetched)."""
        return self._token

    def _usable(self, token: Token) -> bool:
        return self._clock() < token.expires_on - margin(token, self._fetched_at)

    # --- fetching -----------------------------------------------------------------

    async def _shared_fetch(self) -> Token:
        """Join the fetch in progress, or start one; its outcome is everyone's."""
        flight = self._flight
        if flight is None:
            flight = self._flight = _Flight()
            self._tasks.start_soon(self._run_flight, flight)
        await flight.done.wait()
        if flight.token is None:
            # A fresh exception per waiter: one raised in many tasks would collect
            # all of their tracebacks.
            raise AuthError(flight.error)
        return flight.token

    async def _run_flight(self, flight: _Flight) -> None:
        self.stats.fetches += 1
        try:
            with anyio.fail_after(self._fetch_timeout):
                token = await self._fetch()
        except AuthError as exc:
            flight.error = str(exc)
        except TimeoutError:
            flight.error = f"no token after {self._fetch_timeout:.0f} s"
        except Exception as exc:  # fetch is outside code; it must not end the run
            flight.error = f"the token fetch failed: {type(exc).__name__}: {exc}"
        else:
            flight.token = token
            self._accept(token)
        finally:
            if flight.token is None:
                self.stats.failed += 1
            self._flight = None
            flight.done.set()

    def _accept(self, token: Token) -> None:
        current = self._token
        if current is not None and current.value == token.value:
            return  # the issuer handed back the token we have
        self._token = token
        self._fetched_at = self._clock()
        self._generation += 1
        if self._on_token is not None:
            self._on_token(token.value)

    # --- a refused token ----------------------------------------------------------

    async def refused(self) -> bool:
        """
        The service answered 401 to a request this task sent: True once a newer
        token is in place (fetched now, or already by another task), so the
        request may be sent again; False when no newer token can be had.
        """
        if _carried.get() != self._generation:
            return True  # another task already replaced the refused token
        refused = self._token
        self._token = None  # nobody else sends it meanwhile
        try:
            token = await self._shared_fetch()
        except AuthError as exc:
            log.warning("the service refused the token, and no new one came: %s", exc)
            return False
        if refused is not None and token.value == refused.value:
            return False
        if self._announced < self._generation:  # once, however many rows saw it
            self._announced = self._generation
            log.info(
                "the service refused the token; using a new one",
                extra={"event": "token_refused"},
            )
        return True

    # --- refreshing ahead of expiry -----------------------------------------------

    def _next_delay(self, failures: int) -> float:
        return next_delay(self._token, self._fetched_at, self._clock(), failures)

    async def refresh_forever(self) -> None:
        """Replace the token ahead of its expiry, retrying with back-off on failure."""
        failures = 0
        while True:
            generation = self._generation
            await self._sleep(self._next_delay(failures))
            if self._generation != generation:
                failures = 0  # a 401 or an expiry brought a new token meanwhile
                continue
            before = self._token
            try:
                token = await self._shared_fetch()
            except AuthError as exc:
                failures += 1
                self._log_failed_refresh(exc, failures)
                continue
            if before is not None and token.value == before.value:
                failures += 1  # the issuer's own cache answered; ask again later
                log.debug("the identity endpoint returned the same token")
            else:
                failures = 0
                log.debug(
                    "refreshed the token; it expires in %.0f s",
                    token.expires_on - self._clock(),
                    extra={"event": "token_refreshed"},
                )

    def _log_failed_refresh(self, exc: AuthError, failures: int) -> None:
        token = self._token
        left = token.expires_on - self._clock() if token is not None else 0.0
        wait = self._next_delay(failures)
        if left > 0:
            state = f"the current token is good for {left:.0f} s more"
        else:
            state = "the current token has expired"
        log.warning(
            "could not refresh the token (try %d): %s; %s; trying again in %.1f s",
            failures,
            exc,
            state,
            wait,
            extra={"event": "token_refresh_failed", "failures": failures},
        )


@asynccontextmanager
async def open_token_cache(
    fetch: Fetch,
    *,
    on_token: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    fetch_timeout: float = FETCH_TIMEOUT,
) -> AsyncIterator[TokenCache]:
    """
    A cache holding its first token (so a run with no working identity fails
    here, before any row is sent) and refreshing it until the block ends.
    """
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        cache = TokenCache(
            fetch,
            tasks,
            on_token=on_token,
            clock=clock,
            sleep=sleep,
            fetch_timeout=fetch_timeout,
        )
        try:
            await cache._shared_fetch()
        except AuthError as exc:
            failure = exc
        else:
            tasks.start_soon(cache.refresh_forever)
            try:
                yield cache
            except Exception as exc:
                failure = exc
        tasks.cancel_scope.cancel()
    # Raised out here, so callers get the error itself and not an exception group.
    if failure is not None:
        raise failure
