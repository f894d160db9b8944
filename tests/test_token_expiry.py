"""A token's expiry arithmetic: when it is retired, refreshed and retried."""

from __future__ import annotations

import pytest

from batchrunner.azure.token_expiry import (
    EXPIRY_MARGIN,
    FIRST_RETRY_DELAY,
    MAX_RETRY_DELAY,
    MIN_RETRY_DELAY,
    REFRESH_AHEAD,
    Token,
    margin,
    next_delay,
    refresh_at,
)

HOUR = 3600.0


def test_an_hour_token_is_retired_the_full_margin_early() -> None:
    """A long-lived token stops being handed out EXPIRY_MARGIN before it expires."""
    assert margin(Token("t", expires_on=HOUR), fetched_at=0.0) == EXPIRY_MARGIN


def test_a_short_token_keeps_a_quarter_of_its_life_in_hand() -> None:
    """A token living 20 s is retired 5 s early, not 30 s (before it was fetched)."""
    assert margin(Token("t", expires_on=20.0), fetched_at=0.0) == 5.0


def test_a_refresh_is_due_ahead_of_expiry_or_when_the_issuer_says() -> None:
    """REFRESH_AHEAD before expiry, or the issuer's earlier refresh_on."""
    assert refresh_at(Token("t", expires_on=HOUR), 0.0) == HOUR - REFRESH_AHEAD
    suggested = Token("t", expires_on=HOUR, refresh_on=1000.0)
    assert refresh_at(suggested, 0.0) == 1000.0


def test_without_failures_the_next_refresh_waits_until_it_is_due() -> None:
    """No token: fetch at once; a fresh one: wait until its refresh is due."""
    assert next_delay(None, 0.0, 0.0, failures=0) == 0.0
    token = Token("t", expires_on=HOUR)
    assert next_delay(token, 0.0, 100.0, failures=0) == HOUR - REFRESH_AHEAD - 100.0


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, FIRST_RETRY_DELAY), (2, 2 * FIRST_RETRY_DELAY), (30, MAX_RETRY_DELAY)],
)
def test_failed_refreshes_back_off_up_to_a_cap(failures: int, delay: float) -> None:
    """Without a token to lose, the wait doubles from the first and stops at the cap."""
    assert next_delay(None, 0.0, 0.0, failures) == delay


def test_retries_fit_in_what_is_left_of_the_token() -> None:
    """With 4 s of a token left the next try comes in 2 s, never under the floor."""
    token = Token("t", expires_on=HOUR)
    now = HOUR - EXPIRY_MARGIN - 4.0
    assert next_delay(token, 0.0, now, failures=10) == 2.0
    assert next_delay(token, 0.0, HOUR - EXPIRY_MARGIN - 0.01, 10) == MIN_RETRY_DELAY
