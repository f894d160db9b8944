"""The fakes the unit tests share: a scripted completer and a clock moved by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import anyio
import anyio.lowlevel

from batchrunner.records import Reply, Request, Usage

#: A script entry that answers with a reply (so does ``None``).
OK = "ok"


class ScriptedCompleter:
    """
    Answers each send from a script: an exception is raised, anything else
    (``OK`` or ``None``) is a reply; once the script is used up, every send
    gets a reply. Replies carry ``req-<n>`` as the request id of the n-th send.
    """

    def __init__(self, script: Iterable[BaseException | str | None] = ()) -> None:
        self.script = list(script)
        self.sent = 0

    async def complete(self, request: Request) -> Reply:
        """The next scripted outcome (a reply once the script is used up)."""
        self.sent += 1
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, BaseException):
            raise outcome
        return Reply(
            output="ok",
            embedding=None,
            finish_reason="stop",
            usage=Usage(1, 1, 2),
            model="m",
            request_id=f"req-{self.sent}",
            latency_ms=1,
        )

    async def aclose(self) -> None:
        """Nothing to close."""


class FakeClock:
    """A clock that moves only when told; sleepers wake as it passes them."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Sleep *seconds* of fake time."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        self._sleepers.append((self.now + seconds, wake))
        await wake.wait()

    @property
    def next_wake(self) -> float | None:
        """When the first sleeper wakes; None when none sleeps."""
        return min((d for d, e in self._sleepers if not e.is_set()), default=None)

    @property
    def sleeping(self) -> int:
        """How many tasks sleep now."""
        return sum(1 for _, event in self._sleepers if not event.is_set())

    def advance(self, seconds: float) -> None:
        """Move time on, waking every sleeper it passes."""
        self.now += seconds
        for due, event in self._sleepers:
            if due <= self.now:
                event.set()
        self._sleepers = [(d, e) for d, e in self._sleepers if not e.is_set()]


async def all_tasks_blocked() -> None:
    """
    Return once every other task waits on something: anyio's
    ``wait_all_tasks_blocked``, checking again at once instead of after a
    tenth of a second (a run on a fake clock checks thousands of times).
    """
    this = asyncio.current_task()
    while True:
        await asyncio.sleep(0)
        if all(task is this or _waiting(task) for task in asyncio.all_tasks()):
            return


def _waiting(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()
