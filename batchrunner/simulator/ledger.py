"""What the simulator received, for tests and benchmarks to read."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from batchrunner.simulator.config import Json


@dataclass(frozen=True)
class LedgerEntry:
    """One request as the simulator received and answered it."""

    #: ``time.monotonic()`` when the answer was decided.
    time: float
    deployment: str | None
    operation: str
    api_version: str | None
    auth: str
    body: Json | None
    #: HTTP status, or ``"reset"`` for a dropped connection.
    status: int | str
    #: Chat contents joined by newlines, the completions prompt or embeddings input.
    prompt: str


class Ledger:
    """
    What the simulator received; safe to read from any thread.

    With ``keep_entries=False`` only counts are kept, so a long benchmark does not
    hold every request body in memory.
    """

    def __init__(self, *, keep_entries: bool = True) -> None:
        self._lock = threading.Lock()
        self._batch_changed = threading.Condition(self._lock)
        # Tells waiters in other threads that a request was recorded.
        self._recorded = threading.Condition(self._lock)
        self._keep = keep_entries
        self._counts: Counter[int | str] = Counter()
        self._script_hits: dict[str, int] = {}
        self._reset_hooks: list[Callable[[], None]] = []
        self.entries: list[LedgerEntry] = []
        self.in_flight = 0
        self.max_in_flight = 0
        #: Tokens charged to the rate limit by accepted requests.
        self.charged_tokens = 0
        #: Batch lines answered, by ``custom_id`` (a resubmitted row counts again).
        self.batch_lines: Counter[str] = Counter()
        #: Each batch's status, by id, in the order they were created.
        self.batch_statuses: dict[str, str] = {}

    def snapshot(self) -> Json:
        """Counts a benchmark in another process can read over HTTP."""
        with self._lock:
            return {
                "requests": self._counts.total(),
                "statuses": {str(k): v for k, v in self._counts.items()},
                "max_in_flight": self.max_in_flight,
                "charged_tokens": self.charged_tokens,
                "batch_lines": self.batch_lines.total(),
                "batch_lines_repeated": sum(
                    1 for n in self.batch_lines.values() if n > 1
                ),
                "batches": dict(Counter(self.batch_statuses.values())),
            }

    def count(self, status: int | str | None = None) -> int:
        """Requests received, or those answered with *status*."""
        with self._lock:
            return self._counts.total() if status is None else self._counts[status]

    def wait_for(self, requests: int, timeout: float) -> bool:
        """
        Block until *requests* requests were received (True), or *timeout*
        seconds passed (False): a test acts at a point of the run, not a time.
        """
        with self._recorded:
            return self._recorded.wait_for(
                lambda: self._counts.total() >= requests, timeout
            )

    def bodies(self) -> list[Json]:
        """Request JSON bodies in arrival order (unparsable ones left out)."""
        with self._lock:
            return [entry.body for entry in self.entries if entry.body is not None]

    def reset(self) -> None:
        """Forget every request, scripted-fault counter and rate-limit charge."""
        with self._lock:
            self.entries.clear()
            self._counts.clear()
            self._script_hits.clear()
            self.charged_tokens = 0
            self.batch_lines.clear()
            self.batch_statuses.clear()
            self.max_in_flight = self.in_flight
            hooks = list(self._reset_hooks)
        for hook in hooks:
            hook()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _exit(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._counts[entry.status] += 1
            if self._keep:
                self.entries.append(entry)
            self._recorded.notify_all()

    def add_charge(self, tokens: int) -> None:
        """Count *tokens* charged by an accepted request."""
        with self._lock:
            self.charged_tokens += tokens

    def _next_hit(self, prompt: str) -> int:
        """1 for the first request with this prompt, 2 for the second …"""
        with self._lock:
            hits = self._script_hits[prompt] = self._script_hits.get(prompt, 0) + 1
            return hits

    def add_batch_line(self, custom_id: str) -> None:
        """Count a batch line answered (in an output or error file)."""
        with self._batch_changed:
            self.batch_lines[custom_id] += 1
            self._batch_changed.notify_all()

    def wait_for_lines(self, count: int, timeout: float = 30.0) -> None:
        """Block until batches have answered *count* lines in all (test thread)."""
        with self._batch_changed:
            if not self._batch_changed.wait_for(
                lambda: self.batch_lines.total() >= count, timeout
            ):
                msg = f"only {self.batch_lines.total()} of {count} batch lines answered"
                raise TimeoutError(msg)

    def batch_line_counts(self) -> Counter[str]:
        """How many times each ``custom_id`` was answered in a batch."""
        with self._lock:
            return Counter(self.batch_lines)

    def note_batch(self, batch_id: str, status: str) -> None:
        """Note that a batch was created or changed status."""
        with self._batch_changed:
            self.batch_statuses[batch_id] = status
            self._batch_changed.notify_all()

    def wait_for_batches(
        self, ready: Callable[[dict[str, str]], bool], timeout: float = 30.0
    ) -> dict[str, str]:
        """
        Block until ``ready(statuses)`` holds for the batches' statuses by id
        (from a test's thread, not the simulator's); the statuses then.
        """
        with self._batch_changed:
            if not self._batch_changed.wait_for(
                lambda: ready(dict(self.batch_statuses)), timeout
            ):
                msg = f"batches never got there: {self.batch_statuses}"
                raise TimeoutError(msg)
            return dict(self.batch_statuses)
