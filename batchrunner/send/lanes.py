"""
A deployment as the router sees it: its lane (label, pacer, priority, weight),
its state (out, breaker, requests routed there and waiting), and the pure
arithmetic of shares: when a request routed there would go, and whose turn it
is by weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: The first cool-off of an open breaker; it doubles with each failed probe.
FIRST_COOL_OFF = 5.0


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
class LaneState:
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


def expected_start(state: LaneState, tokens: int) -> float:
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


def weight_of(state: LaneState, states: list[LaneState]) -> float:
    if state.lane.weight is not None:
        return state.lane.weight
    quota = state.lane.budget.budgets[1]
    if quota:
        return quota
    # Unknown quota: as much as the largest known one, until it is learned.
    known = [q for s in states if (q := s.lane.budget.budgets[1])]
    return max(known, default=1.0)


def round_robin(states: list[LaneState]) -> LaneState:
    """Smooth weighted round robin (nginx's): shares follow the weights, evenly."""
    weights = [weight_of(s, states) for s in states]
    total = sum(weights)
    for state, weight in zip(states, weights, strict=True):
        state.credit += weight
    chosen = max(states, key=lambda s: s.credit)
    chosen.credit -= total
    return chosen
