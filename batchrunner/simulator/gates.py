"""
Gates: hold one call of the Files or Batches API until a test lets it go.

A test that kills a client at an exact step (between upload and create, between
create and the client noting it) sets a gate on that call, waits until the call
is held, kills the client, then looks at what the service kept.
"""

from __future__ import annotations

import asyncio
import threading

#: The calls a gate can hold, as ``resource.method`` of the SDK.
GATED_CALLS = (
    "files.create", "files.list", "files.retrieve", "files.delete", "files.content",
    "batches.create", "batches.list", "batches.retrieve", "batches.cancel",
)  # fmt: skip


class Gate:
    """
    Holds the *nth* call of *call* (``"batches.create"``, 1 = the first) that
    passes the auth and api-version checks.

    With ``after=False`` the call waits before it takes effect; with ``after=True``
    it takes effect (the batch exists) and its answer waits. ``held`` is set
    once the call is waiting; ``release()`` lets it go. Safe from any thread.
    """

    def __init__(self, call: str, nth: int = 1, *, after: bool = False) -> None:
        if call not in GATED_CALLS:
            msg = f"no call {call!r} to gate; known calls: {', '.join(GATED_CALLS)}"
            raise ValueError(msg)
        if nth < 1:
            msg = f"nth counts calls from 1, not {nth}"
            raise ValueError(msg)
        self.call = call
        self.nth = nth
        self.after = after
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._released = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def release(self) -> None:
        """Let the held call go on (and any later one at once)."""
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def hold(self) -> None:
        """Wait here, on the simulator's loop, until ``release()``."""
        event = asyncio.Event()
        with self._lock:
            if self._released:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        self.held.set()
        await event.wait()
