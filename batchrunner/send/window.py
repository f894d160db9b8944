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
import math
from collections import deque

#: Remaining plus what we sent must grow by this share of the window's size (and
#: by two requests) before we read it as our first sends leaving the window:
#: less would read the sends between the service's count and our receipt of it,
#: or a service that counts a few % less than we do (the gap grows as we send).
#: At 5%, a service counting ~5% less than our estimate was read as a window of
#: 2 s in a 10 s one, and drew 8% 429s (benchmarks.quota --runs remaining
#: --window 10 --tpm 40000 --rows 160); at 15%, 1 429.
EXPIRY_SHARE = 0.15
#: The longest window looked for. Azure's are 1–60 s; a log of what we sent is
#: kept this long, so a window this long or longer is never learned (the credit
#: alone then paces, which is safe but not smooth).
LONGEST_WINDOW = 120.0


class _SendLog:
    """
    When this run sent what: (time, total sent before it) of each send, net of
    the sends the service refused (it counted none of them), each taken off
    from its own send time on.
    """

    def __init__(self) -> None:
        self.count = 0
        self._gross = 0.0
        self._times: list[float] = []
        self._before: list[float] = []
        self._start = 0  # entries before it have been dropped
        # Refusals, by the time of the send refused: times and running totals.
        self._refused_at: list[float] = []
        self._refused_upto: list[float] = []

    @property
    def total(self) -> float:
        """All we sent that the service may have counted."""
        return self._gross - (self._refused_upto[-1] if self._refused_upto else 0.0)

    @property
    def first(self) -> float | None:
        """The time of the oldest send kept."""
        return self._times[self._start] if self._start < len(self._times) else None

    def add(self, now: float, cost: float) -> None:
        self._times.append(now)
        self._before.append(self._gross)
        self._gross += cost
        self.count += 1
        while self._times[self._start] < now - 2 * LONGEST_WINDOW:
            self._start += 1
        if self._start > 4096 and self._start * 2 > len(self._times):
            del self._times[: self._start], self._before[: self._start]
            self._start = 0

    def refuse(self, cost: float, sent_at: float | None) -> None:
        """A send of *cost* at *sent_at* (None: the latest) was refused."""
        times = self._times
        # The refused send is the last one logged by *sent_at*: its own time
        # keeps the net totals rising with the log.
        i = len(times) if sent_at is None else bisect.bisect_right(times, sent_at)
        at = times[i - 1] if i > self._start else -math.inf
        k = bisect.bisect_right(self._refused_at, at)
        self._refused_at.insert(k, at)
        upto = self._refused_upto
        upto.insert(k, (upto[k - 1] if k else 0.0) + cost)
        for j in range(k + 1, len(upto)):
            upto[j] += cost

    def _refused_by(self, when: float) -> float:
        k = bisect.bisect_right(self._refused_at, when)
        return self._refused_upto[k - 1] if k else 0.0

    def _net_before(self, i: int) -> float:
        """What had been sent before send *i*, net of the refusals logged before it."""
        at = self._times[i]
        k = bisect.bisect_left(self._refused_at, at)
        return self._before[i] - (self._refused_upto[k - 1] if k else 0.0)

    def by(self, when: float) -> float:
        """What had been sent by *when* (as far back as the log goes)."""
        i = bisect.bisect_right(self._times, when, lo=self._start)
        gross = self._before[i] if i < len(self._times) else self._gross
        return gross - self._refused_by(when)

    def before_last(self, when: float) -> float:
        """What had been sent before the last send logged by *when*."""
        i = bisect.bisect_right(self._times, when, lo=self._start) - 1
        return self._net_before(i) if i >= self._start else 0.0

    def when(self, amount: float) -> float | None:
        """The time of the send that took the total past *amount*; None if dropped."""
        # The first send whose net total before it reaches *amount* (it only
        # rises with the log), and the one before it.
        sends = range(self._start, len(self._times))
        i = self._start + bisect.bisect_left(sends, amount, key=self._net_before) - 1
        return self._times[i] if i >= self._start else None


class WindowEstimate:
    """One dimension (requests or tokens) of a limiter seen through remaining-*."""

    def __init__(self) -> None:
        self.size: float | None = None  # what fits in a window, in our count
        self.seconds: float | None = None  # the window's length
        self._measured = False  # the length was seen in reports, not guessed
        self._log = _SendLog()
        # Sent, larger than the window, so not logged (the latest few: a service
        # that takes them after all never says so).
        self._oversized: deque[float] = deque(maxlen=64)
        # (time, remaining, when the last send it surely counted went) of the
        # latest report: what it counted is read from the log when needed, as
        # a refusal heard later takes a send back out of it.
        self._report: tuple[float, float, float] | None = None

    @property
    def rate(self) -> float | None:
        """What the window lets through per second, once size and length are known."""
        if self.size is None or not self.seconds:
            return None
        return self.size / self.seconds

    def sent(self, now: float, cost: float) -> None:
        """We sent *cost* at *now*."""
        if self.size is not None and cost > self.size:
            # Larger than the whole window: the service refuses it uncounted.
            # Logged, it would pass for our sends leaving the window until its
            # 429 came back, and teach a window as short as a round trip.
            self._oversized.append(cost)
            return
        self._log.add(now, cost)

    def report(
        self, now: float, remaining: float, sent_at: float | None = None
    ) -> bool:
        """
        An answer to a request sent at *sent_at* says *remaining* fits; True when
        this taught the window length.
        """
        log = self._log
        total = log.total
        # The service counted at least what we sent up to the answered request,
        # and at most all we sent before its answer came: the most is the
        # bound on the size, the least on what has left; and the credit counts
        # off everything sent after it.
        upto = now if sent_at is None else sent_at
        least = log.by(upto)
        self._report = (now, remaining, upto)
        seen = remaining + total
        if self.size is None or seen < self.size:
            self.size = seen
        if not log.count:
            return False
        # What left the window: our first sends. The answered request itself
        # is surely in it (our count and the service's differ a little).
        gone = min(remaining + least - self.size, log.before_last(upto))
        if gone <= max(EXPIRY_SHARE * self.size, 2 * log.total / log.count):
            return False
        # Our count and the service's differ by a few tokens a request: a send
        # less is surely gone, so the length found is never a send too short.
        left = log.when(gone - log.total / log.count)
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

    def refused(self, cost: float, sent_at: float | None = None) -> None:
        """
        A request of *cost* we sent at *sent_at* (None: the latest) was refused:
        the service did not count it, neither in the latest report if it was
        sent before (a large row refused must not pass for a large window).
        """
        if cost in self._oversized:
            self._oversized.remove(cost)  # never logged
            return
        log = self._log
        log.refuse(cost, sent_at)
        if self._report is not None and self.size is not None:
            at, remaining, _ = self._report
            self.size = min(self.size, remaining + log.by(at))

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
        at, remaining, upto = self._report
        log = self._log
        credit = remaining - (log.total - log.by(upto))
        if self.seconds is not None:
            # What left the window since the report, by our own log.
            credit += log.by(now - self.seconds) - log.by(at - self.seconds)
        return credit
