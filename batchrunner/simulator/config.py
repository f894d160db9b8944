"""
How the simulator behaves: its settings, and the names of its faults and operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchrunner.simulator.gates import Gate

Json = dict[str, Any]

FAULTS = ("429", "429long", "500", "502", "503", "408", "reset", "slow", "401", "404")

OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
}

REGION = "Sweden Central"
RATE_HEADER_MODES = ("full", "remaining", "none")

#: The Batch API's limits on one input file.
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_FILE_BYTES = 200 * 1024 * 1024
#: Batch input files a resource keeps: without an expiry, and with one.
BATCH_MAX_FILES = (500, 10_000)
#: Every Azure deployment has a quota and reports it on each answer; this one is
#: large enough that no test or demo meets it. Azure allots 6 RPM per 1,000 TPM.
DEFAULT_TPM = 30_000_000
DEFAULT_RPM = DEFAULT_TPM * 6 // 1000


def _default_context_windows() -> dict[str, int]:
    return {"gpt-4o-mini-2024-07-18": 128_000, "gpt-4o-2024-08-06": 128_000}


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
    #: Model → its context window in tokens: a chat request that would overflow
    #: it (prompt plus answer budget) gets Azure's ``context_length_exceeded``.
    context_windows: dict[str, int] = field(default_factory=_default_context_windows)
    #: Which ``x-ratelimit-*`` headers answers carry: "full" (limit and
    #: remaining, as Azure's do), "remaining" (as gateways such as APIM and
    #: Microsoft's own simulator send) or "none" (a proxy that strips them).
    #: True and False mean "full" and "none".
    rate_headers: bool | str = "full"
    #: The service counts each request this many times what a client estimates
    #: (Azure's estimate is "based in part on the character count").
    charge_factor: float = 1.0

    #: The body of a 404 for a deployment that does not exist, and of a 401 for a
    #: wrong or missing key; None for Azure's. Other services word them their own
    #: way (``{"detail": …}``, no ``code``), and messages must still show them.
    not_found_body: Json | None = None
    key_denied_body: Json | None = None

    # --- Batch API ---
    #: Deployments that are Global-Batch (may run batches); None for all of them.
    batch_deployments: set[str] | None = None
    #: Lines a batch answers per second; None for as fast as it can.
    batch_lines_per_second: float | None = 1000.0
    #: Seconds a batch stays validating, finalizing and cancelling.
    batch_state_seconds: float = 0.2
    #: Each deployment's enqueued-token quota, held by its batches not yet ended;
    #: None for unlimited.
    batch_enqueued_tokens: int | None = None
    #: The n-th batch created (1 = the first) expires after answering that many lines.
    batch_expire_after: dict[int, int] = field(default_factory=dict)
    #: The n-th batches created that fail (as a validation failure would).
    batch_fail: set[int] = field(default_factory=set)
    #: Whether an expired or cancelled batch lists its unanswered lines in its
    #: error file (``batch_expired`` / ``batch_cancelled``), as OpenAI documents;
    #: Azure's documents do not say, so by default they are left out.
    batch_unfinished_in_error_file: bool = False
    batch_max_requests: int = BATCH_MAX_REQUESTS
    batch_max_file_bytes: int = BATCH_MAX_FILE_BYTES
    #: How many ``purpose=batch`` files may be kept without and with an expiry.
    batch_max_files: tuple[int, int] = BATCH_MAX_FILES
    #: Calls of the Files and Batches API to hold until a test releases them.
    gates: list[Gate] = field(default_factory=list)

    @property
    def header_mode(self) -> str:
        """``rate_headers`` as one of RATE_HEADER_MODES."""
        mode = self.rate_headers
        if isinstance(mode, bool):
            return "full" if mode else "none"
        if mode not in RATE_HEADER_MODES:
            msg = f"rate_headers {mode!r} is not one of {', '.join(RATE_HEADER_MODES)}"
            raise ValueError(msg)
        return mode
