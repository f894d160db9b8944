"""
How the simulator behaves: its settings, and the names of its faults and operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

FAULTS = ("429", "429long", "500", "502", "503", "408", "reset", "slow", "401", "404")

OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
}

REGION = "Sweden Central"
#: Every Azure deployment has a quota and reports it on each answer; this one is
#: large enough that no test or demo meets it. Azure allots 6 RPM per 1,000 TPM.
DEFAULT_TPM = 30_000_000
DEFAULT_RPM = DEFAULT_TPM * 6 // 1000


def _default_deployments() -> dict[str, str]:
    return {
        "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
        "gpt-35-turbo-instruct": "gpt-35-turbo-instruct-0914",
        "text-embedding-3-small": "text-embedding-3-small",
    }


@dataclass
class SimConfig:
    """How the simulator behaves; fields may be changed while it runs."""

    api_key: str = "sim-key"
    #: Deployment name → the model name reported in answers.
    deployments: dict[str, str] = field(default_factory=_default_deployments)
    #: Seconds each answer takes, counted from the request's arrival.
    latency: float = 0.0
    #: The deployment's quota per minute; None for none (not a real deployment).
    rpm: int | None = DEFAULT_RPM
    tpm: int | None = DEFAULT_TPM
    window: float = 10.0
    seed: int = 0
    #: Fault kind → probability per request, drawn from ``random.Random(seed)``.
    fault_rates: dict[str, float] = field(default_factory=dict)
    slow_seconds: float = 30.0
    retry_after_ms: int = 200
    block_word: str = "BLOCKME"
    redact_word: str = "REDACTME"
    #: When set, ``Authorization: Bearer <t>`` is accepted iff ``validator(t)``.
    bearer_validator: Callable[[str], bool] | None = None
    embedding_dimensions: int = 1536
    #: Whether answers carry ``x-ratelimit-*`` headers (Azure's do; a proxy may not).
    rate_headers: bool = True
    #: The body of a 404 for a deployment that does not exist, and of a 401 for a
    #: wrong or missing key; None for Azure's. Other services word them their own
    #: way (``{"detail": …}``, no ``code``), and messages must still show them.
    not_found_body: Json | None = None
    key_denied_body: Json | None = None
