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
from typing import Protocol

#: A deployment whose pacer can send within this many seconds has budget to
#: spare: a lower priority is used only while no higher one has.
SPARE_SECONDS = 0.25
#: Faults in a row (5xx, resets, timeouts, with no answer between) that open
#: the breaker: one is bad luck, five are a deployment in trouble.
BREAKER_FAULTS = 5
#: The first cool-off of an open breaker; it doubles with each failed probe.
FIRST_COOL_OFF = 5.0
MAX_COOL_OFF = 120.0
#: Statuses that drop a deployment for the whole run.
DROP_STATUSES = frozenset({401, 403, 404})
AUTH_STATUSES = frozenset({401, 403})


class Budget(Protocol):
    """What the router reads of a deployment's pacer."""

    def ready_in(self) -> float:
        """Seconds until the next request may go (0: now)."""

    @property
    def budgets(self) -> tuple[float | None, float | None]:
        """The (requests, tokens) per minute it paces to; None while unknown."""


@dataclass(frozen=True, slots=True)
class Lane:
    """A deployment as the router knows it: its label, priority and weight."""

    name: str
    budget: Budget
    priority: int = 0
    #: Share within its priority; None: in proportion to its token quota.
    weight: float | None = None


@dataclass
class _State:
    lane: Lane
    out_until: float = 0.0  # a 429's wait
    faults: int = 0  # in a row
    open_until: float | None = None  # the breaker
    cool_off: float = FIRST_COOL_OFF
    probing: bool = False
    probe_chosen_at: float = 0.0  # what was sent before it is no probe
    dropped: str | None = None
    refused_auth: bool = False
    waiting: int = 0  # routed here, not yet through the pacer
    waiting_tokens: int = 0
    credit: float = 0.0  # smooth weighted round robin

    def usable(self, now: float) -> bool:
        if self.dropped is not None or self.probing or now < self.out_until:
            return False
        return self.open_until is None or now >= self.open_until

    def comes_back_at(self) -> float | None:
        if self.dropped is not None or self.probing:
            return None
        return max(self.out_until, self.open_until or 0.0)


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
    _states: dict[str, _State] = field(init=False)
    _awaiting_answer: bool = field(init=False)
    _spare_in: float | None = field(init=False)

    def __post_init__(self) -> None:
        self._states = {lane.name: _State(lane) for lane in self.lanes}
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

    def _pick(self, states: list[_State], tokens: int, queue: bool) -> _State | None:
        starts = {id(s): _expected_start(s, tokens) for s in states}
        for priority in sorted({s.lane.priority for s in states}):
            tier = [s for s in states if s.lane.priority == priority]
            spare = [s for s in tier if starts[id(s)] <= SPARE_SECONDS]
            if spare:
                return _round_robin(spare)
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


def _expected_start(state: _State, tokens: int) -> float:
    """When a request routed to *state* now would go: its pacer's turn, plus
    the requests already routed there and waiting, at its pace."""
    ahead = state.lane.budget.ready_in()
    if not state.waiting:
        return ahead
    rpm, tpm = state.lane.budget.budgets
    if rpm is None and tpm is None:
        return math.inf  # unknown pace: its queue could be long
    queued = 0.0
    if rpm:
        queued = max(queued, state.waiting * 60 / rpm)
    if tpm:
        queued = max(queued, (state.waiting_tokens + tokens) * 60 / tpm)
    return ahead + queued


def _weight(state: _State, states: list[_State]) -> float:
    if state.lane.weight is not None:
        return state.lane.weight
    quota = state.lane.budget.budgets[1]
    if quota:
        return quota
    # Unknown quota: as much as the largest known one, until it is learned.
    known = [q for s in states if (q := s.lane.budget.budgets[1])]
    return max(known, default=1.0)


def _round_robin(states: list[_State]) -> _State:
    """Smooth weighted round robin (nginx's): shares follow the weights, evenly."""
    weights = [_weight(s, states) for s in states]
    total = sum(weights)
    for state, weight in zip(states, weights, strict=True):
        state.credit += weight
    chosen = max(states, key=lambda s: s.credit)
    chosen.credit -= total
    return chosen
