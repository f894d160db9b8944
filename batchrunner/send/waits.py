"""
The pacer's waits, each with an end: a timer, a change (an answer or a release
frees a place), or a stop, which ends them all at once. And the ``Turn`` a
request holds while it is in flight, given back however the request ends.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio


class PacerStopped(Exception):
    """The run stopped while a request waited for its turn; it was not sent."""


class Turn:
    """A place in flight; released once, when the request is done however it ended."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        """Give the place back (again is harmless)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Turn:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Waits:
    """Cancel scopes of the waits under way: woken by a change, or by a stop."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._sleep = sleep
        self.stopped = False
        # Waits for a place end on a change, waits for a slot not yet booked
        # when a booking is given back; every wait ends on a stop.
        self._changes: set[anyio.CancelScope] = set()
        self._unbooked: set[anyio.CancelScope] = set()
        self._sleeps: set[anyio.CancelScope] = set()

    async def wait(
        self, seconds: float, *, on_change: bool = False, on_unbook: bool = False
    ) -> None:
        """
        Sleep *seconds* (inf: until woken), cut short by a stop or, *on_change*,
        by a change, or, *on_unbook*, by a booking given back; ``PacerStopped``
        once stopped.
        """
        self.check()
        if on_change:
            scopes = self._changes
        else:
            scopes = self._unbooked if on_unbook else self._sleeps
        with anyio.CancelScope() as scope:
            scopes.add(scope)
            try:
                if seconds == math.inf:
                    await anyio.sleep_forever()
                else:
                    await self._sleep(seconds)
            finally:
                scopes.discard(scope)
        self.check()

    def changed(self) -> None:
        """Something changed (an answer, a release): waiters for a place look again."""
        if self._changes:
            for scope in self._changes:
                scope.cancel()
            self._changes.clear()

    def unbooked(self) -> None:
        """A booking was given back: waits for a slot behind it look again."""
        for scope in self._unbooked:
            scope.cancel()
        self._unbooked.clear()

    def stop(self) -> None:
        """Every wait ends now, and every later one at once."""
        self.stopped = True
        for scope in (*self._changes, *self._unbooked, *self._sleeps):
            scope.cancel()
        self._changes.clear()
        self._unbooked.clear()
        self._sleeps.clear()

    def check(self) -> None:
        """``PacerStopped`` once stopped."""
        if self.stopped:
            raise PacerStopped
