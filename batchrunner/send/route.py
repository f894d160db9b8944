"""
A route: where a request goes and how fast — one deployment's client, its
pacer and the label its records carry. A run has one route per deployment, so
each deployment keeps its own pacing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchrunner.azure.client import Completer
from batchrunner.send.pacer import Pacer


@dataclass(frozen=True, slots=True)
class Route:
    """One deployment as the row sender sees it."""

    client: Completer
    pacer: Pacer
    #: The deployment's name in records, logs and the summary.
    label: str
    #: With token auth: called on a 401; True when a new token is in place.
    #: None: the row sender's own (the run's auth).
    on_unauthorized: Callable[[], Awaitable[bool]] | None = None
