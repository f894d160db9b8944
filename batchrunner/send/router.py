"""
The router: which deployment each request goes to, when a run has several.

Each deployment has a pacer of its own (its ``Budget`` here). A request goes to
a deployment that can send it within ``SPARE_SECONDS``, counting the requests
already routed there and still waiting for their turn; within the best priority
that has budget to spare, shares follow the weights (by default the quotas).
When none has, the request waits here until one has, rather than in the queue
of the one due soonest: a pace still being learned may be a guess, and a queue
at a deployment that turns out slower is stuck there while others are idle.
The router takes deployments out and brings them back:

==========================  ==================================================
429                         out for as long as the service asked
a run of 5xx/resets/        the breaker opens: out for a cool-off, then one
timeouts                    probe request; its answer closes the breaker, a
                            fault opens it again for twice as long
401/403/404                 dropped for the run
==========================  ==================================================

Pure logic: no I/O and no sleeping; the clock is injected. The row sender asks
``choose``, reports every outcome, and waits ``wait_seconds`` (or for the next
outcome) when every deployment is out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from batchrunner.send.lanes import (
    FIRST_COOL_OFF,
    Budget,
    Lane,
    LaneState,
    expected_start,
    round_robin,
)

__all__ = [
    "BREAKER_FAULTS",
    "DROP_STATUSES",
    "FIRST_COOL_OFF",
    "SPARE_SECONDS",
    "Budget",
    "Dropped",
    "Lane",
    "Router",
]

#: A deployment whose pacer can send within this many seconds has budget to
#: spare: a lower priority is used only while no higher one has.
SPARE_SECONDS = 0.25
#: Faults in a row (5xx, resets, timeouts, with no answer between) that open
#: the breaker: one is bad luck, five are a deployment in trouble.
BREAKER_FAULTS = 5
MAX_COOL_OFF = 120.0
#: Statuses that drop a deployment for the whole run.
DROP_STATUSES = frozenset({401, 403, 404})
AUTH_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class Dropped:
    """A deployment taken out for the run, and why."""

    name: str
    status: int
    reason: str


@dataclass
class Router:
    """Routes requests over *lanes*; see the module docstring."""

    lanes: Sequence[Lane]
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, LaneState] = field(init=False)
    _awaiting_answer: bool = field(init=False)
    _spare_in: float | None = field(init=False)

    def __post_init__(self) -> None:
        self._states = {lane.name: LaneState(lane) for lane in self.lanes}
        #: The last choice was put off until a deployment learning its pace answers.
        self._awaiting_answer = False
        #: Every one was busy at the last choice: seconds until one has room.
        self._spare_in = None
        #: When a deployment last answered (or the run began).
        self._last_answer = self.clock()

    # --- choosing --------------------------------------------------------------

    def choose(
        self,
        tokens: int,
        avoid: Collection[str] = (),
        exclude: Collection[str] = (),
        *,
        queue: bool = False,
    ) -> str | None:
        """
        The deployment for a request of *tokens*, booked as waiting there; None
        when every one is out, or when the one to use is still learning its
        pace (its first answer, due soon, tells how much it takes). Deployments
        in *avoid* (they just failed this row) are used only when no other one
        is usable; those in *exclude* (too small for it) never. With *queue*
        (a request moved off a deployment that is out), it joins the queue of
        the one due soonest rather than wait here when every one is busy.
        """
        now = self.clock()
        usable = [
            s
            for s in self._states.values()
            if s.usable(now) and s.lane.name not in exclude
        ]
        preferred = [s for s in usable if s.lane.name not in avoid] or usable
        self._spare_in = None
        chosen = self._pick(preferred, tokens, queue) if preferred else None
        self._awaiting_answer = (
            chosen is None and bool(preferred) and self._spare_in is None
        )
        if chosen is None:
            return None
        chosen.waiting += 1
        chosen.waiting_tokens += tokens
        if chosen.open_until is not None:
            chosen.probing = True  # half open: this request is the probe
            chosen.probe_chosen_at = now
        return chosen.lane.name

    def _pick(
        self, states: list[LaneState], tokens: int, queue: bool
    ) -> LaneState | None:
        starts = {id(s): expected_start(s, tokens) for s in states}
        for priority in sorted({s.lane.priority for s in states}):
            tier = [s for s in states if s.lane.priority == priority]
            spare = [s for s in tier if starts[id(s)] <= SPARE_SECONDS]
            if spare:
                return round_robin(spare)
            if any(math.isinf(starts[id(s)]) for s in tier):
                # A pace still unknown is not a budget spent: a request queued
                # there now could wait behind any number, and a lower priority
                # is not due. Its first answer comes soon and tells.
                return None
        if queue:  # the soonest, the higher priority on a tie
            return min(states, key=lambda s: (starts[id(s)], s.lane.priority))
        # Every one is busy: the request waits here until one has room, not
        # in a pacer's queue, where it could not move when another deployment
        # frees up first (the pace a deployment holds to may be a guess).
        self._spare_in = max(0.0, min(starts.values()) - SPARE_SECONDS)
        return None

    def sent(self, name: str, tokens: int) -> None:
        """The request routed to *name* got its turn from the pacer (or gave up)."""
        state = self._states[name]
        state.waiting = max(0, state.waiting - 1)
        state.waiting_tokens = max(0, state.waiting_tokens - tokens)

    # --- outcomes ----------------------------------------------------------------

    def answered(self, name: str) -> None:
        """*name* answered (any answer that is not a fault): its breaker closes."""
        self._last_answer = self.clock()
        state = self._states[name]
        state.faults = 0
        state.open_until = None
        state.probing = False
        state.cool_off = FIRST_COOL_OFF

    def throttled(self, name: str, seconds: float) -> None:
        """A 429 from *name*: out for *seconds*; the answer shows it is up."""
        self.answered(name)
        state = self._states[name]
        state.out_until = max(state.out_until, self.clock() + seconds)

    def faulted(self, name: str, sent_at: float | None = None) -> float | None:
        """
        A 5xx, reset or timeout from *name* for a request sent at *sent_at*;
        the seconds it is out for when this fault opened its breaker, else None.
        """
        state = self._states[name]
        if state.probing and sent_at is not None and sent_at < state.probe_chosen_at:
            # A straggler from before the cool-off: the probe's answer, still
            # to come, is what says whether the deployment is back.
            return None
        state.faults += 1
        now = self.clock()
        if not state.probing and state.open_until is not None:
            # Requests sent before it opened still end one by one: that it
            # is down is known, and its cool-off is not to start over.
            return None
        if not state.probing and state.faults < BREAKER_FAULTS:
            return None
        if state.probing:  # the probe failed: wait longer this time
            state.cool_off = min(state.cool_off * 2, MAX_COOL_OFF)
        state.probing = False
        state.open_until = now + state.cool_off
        return state.cool_off

    def refused(self, name: str, status: int, reason: str) -> Dropped | None:
        """A 401/403/404 from *name*: dropped for the run (None if it already was)."""
        state = self._states[name]
        state.probing = False
        if state.dropped is not None:
            return None
        state.dropped = reason
        state.refused_auth = status in AUTH_STATUSES
        return Dropped(name, status, reason)

    def released(self, name: str) -> None:
        """The request routed to *name* was not sent after all (a stop)."""
        self._states[name].probing = False

    # --- the whole ------------------------------------------------------------------

    def can_take(self, avoid: Collection[str] = ()) -> bool:
        """Whether a deployment not in *avoid* is still in the run (now or later)."""
        return any(
            s.dropped is None and name not in avoid for name, s in self._states.items()
        )

    def wait_seconds(self) -> float | None:
        """
        Seconds until a deployment that is out comes back; 0 when one is usable
        now, None when none will by the clock alone (an answer must come first).
        """
        now = self.clock()
        if self._awaiting_answer:
            return None
        if self._spare_in is not None:
            return self._spare_in
        if any(s.usable(now) for s in self._states.values()):
            return 0.0
        times = [t for s in self._states.values() if (t := s.comes_back_at())]
        return max(0.0, min(times) - now) if times else None

    def throttled_for(self) -> float | None:
        """
        Seconds until the first deployment comes back, while every one still
        in the run is out for a 429; None otherwise.
        """
        now = self.clock()
        states = [s for s in self._states.values() if s.dropped is None]
        if not states or any(s.out_until <= now for s in states):
            return None
        return min(s.out_until for s in states) - now

    def down_for(self) -> float | None:
        """
        Seconds since any deployment answered, while every one still in the
        run has its breaker open with no probe out; None otherwise.
        """
        states = [s for s in self._states.values() if s.dropped is None]
        if not states or any(s.open_until is None or s.probing for s in states):
            return None
        return self.clock() - self._last_answer

    @property
    def all_dropped(self) -> bool:
        """Every deployment was dropped for the run."""
        return all(s.dropped is not None for s in self._states.values())

    @property
    def all_refused_auth(self) -> bool:
        """Every deployment refused our credentials (401/403)."""
        return all(s.refused_auth for s in self._states.values())
