"""
One paced budget: a GCRA rate (requests or tokens per second) that AIMD can move.

The generic cell rate algorithm keeps a "theoretical arrival time": each request
moves it forward by its cost divided by the rate, and may go once the clock
reaches it. So requests are spaced evenly instead of bursting, which matters
because Azure enforces its limits over short windows (1–10 s).
"""

from __future__ import annotations

from collections import deque

#: Pace a little under the budget: the service's window and ours never line up
#: exactly, and a 429 costs far more than 3% of throughput.
HEADROOM = 0.97
#: Multiplicative decrease on a 429, and the seconds to grow back to the old rate.
#: What got through over the last window is a close measure of a windowed
#: limit, so the cut can be mild: 0.85 used 92% of the limit in
#: benchmarks.quota's header-less run, TCP's 0.7 used 85%, for the same 429s.
DECREASE = 0.85
RECOVERY_SECONDS = 60.0
#: What was sent before the rate was known is booked once it is, if it is this
#: recent: older sends have left any window the service keeps (Azure's are
#: 1–60 s), and a run that never learns a rate must not keep them all.
UNBOOKED_SECONDS = 60.0


class Rate:
    """One GCRA budget (requests or tokens per second) that AIMD can move."""

    def __init__(self, per_second: float | None) -> None:
        self.ceiling = per_second  # the budget; None while unknown
        self.current = per_second
        self.next_free = 0.0
        #: Our count of what a request costs, corrected from the service's 429s:
        #: every ceiling set is scaled by it (1 until a 429 says we count low).
        self.scale = 1.0
        self._growth = 0.0  # per second, after a decrease
        # (start, cost) of what was sent while the rate was unknown: the service
        # counted it, so the first budget must too.
        self._unbooked: deque[tuple[float, float]] = deque()

    def set_ceiling(self, per_second: float) -> None:
        """The budget is *per_second* (before our correction): pace to it."""
        per_second *= self.scale
        if self.ceiling != per_second:
            # A rate at the old ceiling follows the new one; one a 429 cut
            # below it stays there and grows back on its own.
            current, old = self.current, self.ceiling
            cut = current is not None and old is not None and current < old
            self.ceiling = per_second
            self.current = min(current, per_second) if cut and current else per_second
            self._book_unbooked()

    def correct(self, factor: float) -> None:
        """The service counts more than we do: scale the budget by *factor*."""
        self.scale *= factor
        if self.ceiling is not None:
            self.ceiling *= factor
        if self.current is not None:
            self.current *= factor

    def start_at(self, per_second: float, growth: float) -> None:
        """
        No budget known: send at *per_second* and probe upward from there, by
        *growth* (a share of it) every RECOVERY_SECONDS.
        """
        self.current = per_second
        self._growth = per_second * growth / RECOVERY_SECONDS
        self._book_unbooked()

    def _book_unbooked(self) -> None:
        for start, cost in self._unbooked:
            self.book(max(start, self.next_free), cost)
        self._unbooked.clear()

    def decrease(self, measured: float) -> None:
        """A 429: cut to DECREASE × what got through (*measured* per second)."""
        candidates = [x for x in (self.current, measured) if x]
        if not candidates:
            return
        # Nothing got through lately: halve what we were sending.
        base = min(candidates) if measured else candidates[0] / 2 / DECREASE
        self.current = max(base * DECREASE, 1e-3)
        # Back to the old rate in RECOVERY_SECONDS, then on probing upward
        # until the next 429 (or the known ceiling).
        self._growth = (base - self.current) / RECOVERY_SECONDS

    def grow(self, seconds: float) -> None:
        """Bring an AIMD rate *seconds* forward along its recovery."""
        if self.current is None or not self._growth:
            return
        self.current += self._growth * seconds
        if self.ceiling is not None and self.current >= self.ceiling:
            self.current, self._growth = self.ceiling, 0.0

    def unbook(self, cost: float) -> None:
        """
        Give back a booking of *cost* (at today's rate: close enough, and the
        service's own window corrects the rest).
        """
        unbooked = self._unbooked
        for i in range(len(unbooked) - 1, -1, -1):
            if unbooked[i][1] == cost:
                del unbooked[i]
                return
        if self.current:
            self.next_free -= cost / self.current

    def book(self, start: float, cost: float) -> None:
        """A request of *cost* goes at *start*: the next may go once it is paid."""
        if self.current:
            self.next_free = start + cost / self.current
            return
        unbooked = self._unbooked
        unbooked.append((start, cost))
        while unbooked[0][0] < start - UNBOOKED_SECONDS:
            unbooked.popleft()
