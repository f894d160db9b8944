"""
What a deployment that reports only ``x-ratelimit-remaining-*`` is telling us.

Gateways (APIM, Microsoft's own Azure OpenAI simulator) strip the limit headers
and keep the remaining ones. A windowed limiter's remaining is its size less what
it counted over the last window: while nothing has left the window, remaining
plus everything this run has sent is the same number, the window's size (in our
own count, so a service that counts higher shows a smaller window). Once it
grows, what we sent first has left the window, and the time since that was sent
is the window's length. Size over length is the rate to pace to.

Until the length is known, remaining is a credit: what we send since an answer
comes off it, and a request that does not fit waits for the next answer.
"""

from __future__ import annotations

import bisect

#: Remaining plus what we sent must grow by this share of the window's size (and
#: by two requests) before we read it as our first sends leaving the window:
#: less would read the sends between the service's count and our receipt of it.
EXPIRY_SHARE = 0.05
#: The longest window looked for. Azure's are 1–60 s; a log of what we sent is
#: kept this long, so a window this long or longer is never learned (the credit
#: alone then paces, which is safe but not smooth).
LONGEST_WINDOW = 120.0


class _SendLog:
    """When this run sent what: (time, total sent before it) of each send."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self._times: list[float] = []
        self._before: list[float] = []
        self._start = 0  # entries before it have been dropped

    @property
    def first(self) -> float | None:
        """The time of the oldest send kept."""
        return self._times[self._start] if self._start < len(self._times) else None

    def add(self, now: float, cost: float) -> None:
        self._times.append(now)
        self._before.append(self.total)
        self.total += cost
        self.count += 1
        while self._times[self._start] < now - 2 * LONGEST_WINDOW:
            self._start += 1
        if self._start > 4096 and self._start * 2 > len(self._times):
            del self._times[: self._start], self._before[: self._start]
            self._start = 0

    def by(self, when: float) -> float:
        """What had been sent by *when* (as far back as the log goes)."""
        i = bisect.bisect_right(self._times, when, lo=self._start)
        return self._before[i] if i < len(self._times) else self.total

    def when(self, amount: float) -> float | None:
        """The time of the send that took the total past *amount*; None if dropped."""
        i = bisect.bisect_left(self._before, amount, lo=self._start) - 1
        return self._times[i] if i >= self._start else None


class WindowEstimate:
    """One dimension (requests or tokens) of a limiter seen through remaining-*."""

    def __init__(self) -> None:
        self.size: float | None = None  # what fits in a window, in our count
        self.seconds: float | None = None  # the window's length
        self._measured = False  # the length was seen in reports, not guessed
        self._refused = 0.0  # sent, but refused (429): the service counted none of it
        self._log = _SendLog()
        # (time, remaining, what of ours it surely counted) of the latest report
        self._report: tuple[float, float, float] | None = None

    @property
    def rate(self) -> float | None:
        """What the window lets through per second, once size and length are known."""
        if self.size is None or not self.seconds:
            return None
        return self.size / self.seconds

    def sent(self, now: float, cost: float) -> None:
        """We sent *cost* at *now*."""
        self._log.add(now, cost)

    def report(
        self, now: float, remaining: float, sent_at: float | None = None
    ) -> bool:
        """
        An answer to a request sent at *sent_at* says *remaining* fits; True when
        this taught the window length.
        """
        log = self._log
        total = log.total - self._refused
        # The service counted at least what we sent up to the answered request,
        # and at most all we sent before its answer came: the most is the
        # bound on the size, the least on what has left; and the credit counts
        # off everything sent after it.
        least = total if sent_at is None else log.by(sent_at) - self._refused
        self._report = (now, remaining, least)
        seen = remaining + total
        if self.size is None or seen < self.size:
            self.size = seen
        if not log.count:
            return False
        gone = remaining + least - self.size  # what left the window: our first sends
        if gone <= max(EXPIRY_SHARE * self.size, 2 * log.total / log.count):
            return False
        left = log.when(gone)
        if left is None or now - left > LONGEST_WINDOW:
            return False
        # Each report bounds the length from above (what left may have left
        # any time before it): the tightest is the best. Measured, it replaces
        # what a 429's wait suggested.
        seconds = now - left
        if self._measured and self.seconds is not None and seconds >= self.seconds:
            return False
        self.seconds, self._measured = seconds, True
        return True

    def refused(self, cost: float) -> None:
        """A request of *cost* we sent was refused: the service did not count it."""
        self._refused += cost

    def throttled(self, now: float, wait: float) -> bool:
        """
        A 429 asking for *wait*: what we sent first fits again then, so the window
        is at most that long from our first send. True when this taught it.
        """
        first = self._log.first
        if self.seconds is not None or first is None:
            return False
        if now + wait - first > LONGEST_WINDOW:
            return False
        self.seconds = max(now + wait - first, 1e-3)
        return True

    def credit(self, now: float) -> float | None:
        """What still fits in the window now, by the last report; None if unknown."""
        if self._report is None:
            return None
        at, remaining, counted = self._report
        log = self._log
        credit = remaining - (log.total - self._refused - counted)
        if self.seconds is not None:
            # What left the window since the report, by our own log.
            credit += log.by(now - self.seconds) - log.by(at - self.seconds)
        return credit
