"""
A token and its expiry: when a cached token is retired, when it is refreshed,
and when a failed refresh is tried again. Pure arithmetic over the expiry, when
the token was fetched and the time now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The most a token is refreshed ahead of its expiry (azure-core uses 5 minutes).
REFRESH_AHEAD = 300.0
#: The most a token is retired before its expiry, so none expires in flight.
EXPIRY_MARGIN = 30.0
#: The longest wait between two tries of a failing refresh.
MAX_RETRY_DELAY = 60.0
#: The first wait after a failed refresh; it doubles with each failure.
FIRST_RETRY_DELAY = 0.5
#: The shortest wait between two tries, however close the expiry.
MIN_RETRY_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and when it expires (and, optionally, should be refreshed)."""

    value: str = field(repr=False)
    #: Seconds since the epoch.
    expires_on: float
    #: When the issuer suggests a refresh (azure-identity's ``refresh_on``), if it does.
    refresh_on: float | None = None


def margin(token: Token, fetched_at: float) -> float:
    """Seconds before *token*'s expiry that it stops being handed out."""
    lifetime = max(0.0, token.expires_on - fetched_at)
    # Expiries come in whole seconds and requests take time to arrive: a
    # short-lived token keeps a quarter of its life in hand.
    return min(EXPIRY_MARGIN, lifetime / 4)


def refresh_at(token: Token, fetched_at: float) -> float:
    """When (epoch seconds) *token*, fetched at *fetched_at*, is due for a refresh."""
    lifetime = max(0.0, token.expires_on - fetched_at)
    due = token.expires_on - min(REFRESH_AHEAD, lifetime / 2)
    if token.refresh_on is not None:
        due = min(due, token.refresh_on)
    return min(due, token.expires_on - margin(token, fetched_at))


def next_delay(
    token: Token | None, fetched_at: float, now: float, failures: int
) -> float:
    """Seconds until the next refresh, after *failures* failed tries in a row."""
    if failures == 0:
        return 0.0 if token is None else max(0.0, refresh_at(token, fetched_at) - now)
    backoff = min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2.0 ** (failures - 1))
    left = 0.0 if token is None else token.expires_on - margin(token, fetched_at) - now
    # Several tries fit in what is left of the token, however little that is.
    return max(MIN_RETRY_DELAY, min(backoff, left / 2)) if left > 0 else backoff
