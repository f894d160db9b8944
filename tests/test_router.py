"""The router's decisions, driven directly with fake budgets and a hand-set clock."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest

from batchrunner.send.router import (
    BREAKER_FAULTS,
    FIRST_COOL_OFF,
    SPARE_SECONDS,
    Lane,
    Router,
)
from tests.fakes import FakeClock


@dataclass
class FakeBudget:
    """A pacer as the router sees it: how soon it can send, and its pace."""

    soon: float = 0.0
    rpm: float | None = None
    #: Fast enough that a few requests waiting make no difference.
    tpm: float | None = 6e6

    def ready_in(self) -> float:
        """As set by the test."""
        return self.soon

    @property
    def budgets(self) -> tuple[float | None, float | None]:
        """As set by the test."""
        return self.rpm, self.tpm


def router(*lanes: Lane) -> tuple[Router, FakeClock]:
    """A router over *lanes* on a hand-set clock."""
    clock = FakeClock(1000.0)
    return Router(list(lanes), clock=clock), clock


def route(r: Router, times: int, tokens: int = 100) -> Counter[str]:
    """Route *times* requests, each let through its pacer at once."""
    counts: Counter[str] = Counter()
    for _ in range(times):
        name = r.choose(tokens)
        assert name is not None
        r.sent(name, tokens)
        r.answered(name)
        counts[name] += 1
    return counts


def test_shares_follow_the_quotas_by_default() -> None:
    """With budget to spare everywhere, a 3:1 quota gets a 3:1 share of requests."""
    r, _ = router(Lane("a", FakeBudget(tpm=90_000)), Lane("b", FakeBudget(tpm=30_000)))
    assert route(r, 400) == {"a": 300, "b": 100}


def test_explicit_weights_win_over_quotas() -> None:
    """A weight of 1 against 4 gives a 1:4 share whatever the quotas."""
    r, _ = router(
        Lane("a", FakeBudget(tpm=90_000), weight=1),
        Lane("b", FakeBudget(tpm=30_000), weight=4),
    )
    assert route(r, 500) == {"a": 100, "b": 400}


def test_a_lower_priority_is_used_only_when_the_higher_has_no_budget() -> None:
    """The secondary gets nothing while the primary has budget, all once it has not."""
    primary = FakeBudget(tpm=60_000)
    r, _ = router(Lane("p", primary), Lane("s", FakeBudget(tpm=600_000), priority=1))
    assert route(r, 50) == {"p": 50}
    primary.soon = SPARE_SECONDS * 4
    assert route(r, 10) == {"s": 10}


def test_requests_waiting_at_a_pacer_count_against_it() -> None:
    """Routed-but-waiting requests steer new ones elsewhere."""
    a = FakeBudget(soon=0.1, tpm=60_000)  # 1000 tokens a second
    b = FakeBudget(soon=0.2, tpm=60_000)
    r, _ = router(Lane("a", a), Lane("b", b))
    first = r.choose(1000)
    second = r.choose(1000)
    assert (first, second) == ("a", "b")  # a's queue now ends after b's turn


def test_when_every_one_is_busy_requests_wait_at_the_router() -> None:
    """No deployment with room soon: the request is queued at none of them, and
    the router says when the first one will have room."""
    a = FakeBudget(soon=1.0, tpm=60_000)
    b = FakeBudget(soon=1.5, tpm=60_000)
    r, _ = router(Lane("a", a), Lane("b", b))
    assert r.choose(1000) is None
    assert r.wait_seconds() == pytest.approx(1.0 - SPARE_SECONDS)
    a.soon = 0.1
    assert r.choose(1000) == "a"
    assert r.choose(1000) is None  # a's queue now holds one, b is still busy


def test_unknown_pace_with_a_queue_is_not_joined() -> None:
    """A deployment still probing its limits gets no queue while another can send."""
    learning = FakeBudget(soon=0.0)
    r, _ = router(Lane("learning", learning), Lane("known", FakeBudget()))
    assert r.choose(10) == "learning"  # the probe
    learning.soon = math.inf
    assert {r.choose(10) for _ in range(5)} == {"known"}


def test_while_every_one_learns_its_pace_requests_wait_for_an_answer() -> None:
    """No request is queued behind a probe: the choice waits for its answer."""
    a, b = FakeBudget(soon=math.inf), FakeBudget(soon=math.inf)
    r, _ = router(Lane("a", a), Lane("b", b))
    assert r.choose(10) is None
    assert r.wait_seconds() is None  # an answer, not the clock, ends this wait
    b.soon = 0.0
    assert r.choose(10) == "b"


def test_a_429_takes_a_deployment_out_for_the_time_asked() -> None:
    """After a 429 asking for 3 s the deployment is skipped, and back after 3 s."""
    r, clock = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r.throttled("a", 3.0)
    assert {r.choose(1) for _ in range(6)} == {"b"}
    clock.now += 3.0
    assert "a" in {r.choose(1) for _ in range(6)}


def test_the_row_avoids_the_deployment_that_just_failed_it() -> None:
    """A row's retry goes elsewhere, unless nothing else is usable."""
    r, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    assert {r.choose(1, avoid={"a"}) for _ in range(4)} == {"b"}
    r.throttled("b", 10.0)
    assert r.choose(1, avoid={"a"}) == "a"


def test_a_run_of_faults_opens_the_breaker_then_one_probe_goes() -> None:
    """Five faults open the breaker; after the cool-off exactly one probe is let out."""
    r, clock = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    opened = [r.faulted("a") for _ in range(BREAKER_FAULTS)]
    assert opened == [None] * (BREAKER_FAULTS - 1) + [FIRST_COOL_OFF]
    assert {r.choose(1) for _ in range(6)} == {"b"}
    clock.now += FIRST_COOL_OFF
    picks = [r.choose(1) for _ in range(6)]
    assert picks.count("a") == 1  # the probe, and nothing else until it answers
    r.answered("a")
    assert "a" in {r.choose(1) for _ in range(6)}


def test_a_failed_probe_doubles_the_cool_off() -> None:
    """A probe that faults opens the breaker again, for twice as long."""
    r, clock = router(Lane("a", FakeBudget()))
    for _ in range(BREAKER_FAULTS):
        r.faulted("a")
    clock.now += FIRST_COOL_OFF
    assert r.choose(1) == "a"
    assert r.faulted("a") == 2 * FIRST_COOL_OFF
    assert r.wait_seconds() == pytest.approx(2 * FIRST_COOL_OFF)
    clock.now += FIRST_COOL_OFF
    assert r.choose(1) is None


def test_faults_of_requests_sent_before_it_opened_do_not_reopen_it() -> None:
    """Stragglers failing after the breaker opened neither restart nor lengthen
    its cool-off (nor say again that it is out)."""
    r, clock = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    for _ in range(BREAKER_FAULTS):
        r.faulted("a")
    clock.now += FIRST_COOL_OFF / 2
    assert [r.faulted("a") for _ in range(8)] == [None] * 8
    clock.now += FIRST_COOL_OFF / 2
    assert "a" in {r.choose(1) for _ in range(4)}  # the probe, on time


def test_a_stragglers_fault_while_the_probe_is_out_is_not_the_probes() -> None:
    """A request sent before the probe was chosen failing during the probe neither
    doubles the cool-off nor ends the probe; the probe's own fault does."""
    r, clock = router(Lane("a", FakeBudget()))
    for _ in range(BREAKER_FAULTS):
        r.faulted("a", sent_at=clock.now)
    straggler_sent = clock.now
    clock.now += FIRST_COOL_OFF
    assert r.choose(1) == "a"  # the probe
    probe_sent = clock.now
    clock.now += 0.5
    assert r.faulted("a", sent_at=straggler_sent) is None
    assert r.faulted("a", sent_at=probe_sent) == 2 * FIRST_COOL_OFF


def test_faults_with_answers_between_do_not_open_the_breaker() -> None:
    """Occasional 5xx among answers are bad luck, not a deployment down."""
    r, _ = router(Lane("a", FakeBudget()))
    for _ in range(3 * BREAKER_FAULTS):
        assert r.faulted("a") is None
        r.answered("a")
    assert r.choose(1) == "a"


def test_refused_deployments_are_dropped_for_the_run() -> None:
    """A 404 drops one deployment; the others go on; the drop is reported once."""
    r, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    dropped = r.refused("a", 404, "deployment not found")
    assert dropped is not None and dropped.name == "a"
    assert r.refused("a", 404, "again") is None
    assert {r.choose(1) for _ in range(4)} == {"b"}
    assert r.can_take() and not r.can_take(avoid={"b"})
    assert not r.all_dropped and not r.all_refused_auth


def test_every_deployment_refusing_auth_is_told_apart_from_a_missing_one() -> None:
    """All refused auth: all_refused_auth; a 404 among them: only all_dropped."""
    r, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r.refused("a", 401, "bad key")
    r.refused("b", 403, "no role")
    assert r.all_dropped and r.all_refused_auth
    assert r.choose(1) is None and r.wait_seconds() is None
    r2, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r2.refused("a", 401, "bad key")
    r2.refused("b", 404, "not found")
    assert r2.all_dropped and not r2.all_refused_auth


def test_when_all_are_out_the_wait_ends_at_the_first_to_come_back() -> None:
    """Two throttled deployments: the wait is the shorter of the two asks."""
    r, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r.throttled("a", 7.0)
    r.throttled("b", 2.0)
    assert r.choose(1) is None
    assert r.wait_seconds() == pytest.approx(2.0)


def test_a_probe_out_means_waiting_for_its_answer() -> None:
    """While the only deployment's probe is out, no clock time brings it back."""
    r, clock = router(Lane("a", FakeBudget()))
    for _ in range(BREAKER_FAULTS):
        r.faulted("a")
    clock.now += FIRST_COOL_OFF
    assert r.choose(1) == "a"
    assert r.wait_seconds() is None
    r.released("a")
    assert r.wait_seconds() == 0.0


def test_a_primary_still_learning_its_pace_is_waited_for_not_skipped() -> None:
    """While the primary's first answer is awaited, the secondary is not used."""
    primary = FakeBudget(soon=math.inf)
    r, _ = router(Lane("p", primary), Lane("s", FakeBudget(tpm=1e6), priority=1))
    assert r.choose(10) is None
    primary.soon = 0.0
    assert r.choose(10) == "p"


def test_every_breaker_open_counts_the_time_since_the_last_answer() -> None:
    """While all are down the router tells how long none has answered; a probe
    out, a deployment still up, or an answer ends the count."""
    r, clock = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    clock.now += 7.0
    r.answered("b")
    for _ in range(BREAKER_FAULTS):
        r.faulted("a")
    assert r.down_for() is None  # b is still up
    clock.now += 3.0
    for _ in range(BREAKER_FAULTS):
        r.faulted("b")
    assert r.down_for() == pytest.approx(3.0)
    clock.now += FIRST_COOL_OFF
    assert r.choose(1) is not None  # a probe goes
    assert r.down_for() is None
    r.faulted("a")
    r.faulted("b")
    assert r.down_for() == pytest.approx(3.0 + FIRST_COOL_OFF)
    r.answered("a")
    assert r.down_for() is None


def test_the_wait_for_quota_counts_only_while_every_one_is_throttled() -> None:
    """Every deployment out for a 429: the time until the first is back; one
    out for faults instead, or one usable, and it is no quota wait."""
    r, clock = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r.throttled("a", 300.0)
    assert r.throttled_for() is None  # b can answer
    r.throttled("b", 200.0)
    assert r.throttled_for() == pytest.approx(200.0)
    clock.now += 200.0
    assert r.throttled_for() is None
    r.throttled("b", 500.0)
    r.refused("a", 404, "DeploymentNotFound")
    assert r.throttled_for() == pytest.approx(500.0)
    r2, _ = router(Lane("a", FakeBudget()), Lane("b", FakeBudget()))
    r2.throttled("a", 300.0)
    for _ in range(BREAKER_FAULTS):
        r2.faulted("b")
    assert r2.throttled_for() is None
