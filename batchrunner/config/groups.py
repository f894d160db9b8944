"""
The settings each stage takes: small frozen groups cut from the run's settings
(``Settings.pacing``, ``.retries``, ``.stops``, ``.client``, ``.results``), so a
stage sees only what it uses and a test builds only that; and ``Endpoint``,
where requests go, a value found at run time when ``--simulate`` starts one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchrunner.config.values import FailureLimit


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """How fast to send: the quota given (None: learned) and requests in flight."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int = 16


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How often a row is tried, and how long it may wait between tries."""

    max_attempts: int = 6
    #: Upper bound of one exponential back-off wait, in seconds.
    max_backoff: float = 30.0
    #: The longest wait the service may ask for before the run stops (exit 75).
    max_retry_wait: float = 120.0


@dataclass(frozen=True, slots=True)
class StopSettings:
    """Where a run stops: ``--max-cost``, ``--max-failures``, ``--deadline``."""

    max_cost: float | None = None
    max_failures: FailureLimit | None = None
    #: Seconds of wall time from the start of the run.
    deadline: float | None = None
    #: Seconds in-flight rows get to finish after a signal.
    grace_seconds: float = 30.0
    #: The per-request timeout: the deadline stops intake this much early.
    timeout: float = 60.0
    #: Named in the message of a 404.
    deployment: str | None = None
    #: (prompt, completion) US dollars per million tokens; None: no price known.
    price: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class OutputSettings:
    """Where results go, and how an output held by another run is waited for."""

    #: The results path or blob URL; None: beside the input.
    path: str | None = None
    #: Start over, keeping the old results as a backup.
    fresh: bool = False
    #: The storage account of ``az://`` URLs.
    storage_account: str | None = None
    #: Seconds to wait for a shard held by a run that may have died.
    claim_wait: float = 30.0


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How the SDK client talks to a deployment: API version, timeout, transport."""

    api_version: str
    #: Seconds a request may take before it is abandoned (and retried).
    timeout: float = 60.0
    #: ``aiohttp`` (ours, the default) or ``httpx`` (the SDK's own).
    http_transport: str = "aiohttp"
    #: The connection pool's size: the most requests in flight.
    connections: int = 16


@dataclass(frozen=True, slots=True)
class Endpoint:
    """
    Where requests go, and the key that opens it when auth is by key: the
    settings' own, or a simulator's found when ``--simulate`` starts one.
    """

    url: str
    api_key: str | None = field(default=None, repr=False)
