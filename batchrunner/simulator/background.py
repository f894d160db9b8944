"""
An aiohttp application served on its own event loop in a daemon thread.

The simulator (``--simulate``, the tests) and the fake identity endpoints run
beside a client that owns the main thread's loop, so each gets a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from typing import Self

from aiohttp import web


class BackgroundServer(ABC):
    """Start with ``start()`` or ``with``; ``_serve`` opens the sockets."""

    thread_name = "batchrunner-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @abstractmethod
    async def _serve(self) -> web.AppRunner:
        """Set up the application and its sites; return the runner to clean up."""

    def start(self) -> None:
        """Serve in the background; returns once the sockets are open."""
        if self._thread is not None:
            return
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(ready,), name=self.thread_name, daemon=True
        )
        thread.start()
        ready.wait()
        if self._error is not None:
            thread.join()
            raise self._error
        self._thread = thread

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            runner = loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to start(), which raises it
            self._error = exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end; safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
