"""
Settings: one frozen value built from command line > environment > file > defaults.

Every option has a settings-file key of the same name (``max_attempts`` for
``--max-attempts``) and a ``BATCHRUNNER_<KEY>`` environment variable; the
Azure and openai SDK variables (``AZURE_OPENAI_ENDPOINT`` …) are read as the SDK
reads them (``layers``). ``sources`` says where each value came from, for
``--show-config``. Each stage takes the small group it needs (``groups``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchrunner.config.deployments import (
    Deployment,
)
from batchrunner.config.groups import (
    ClientSettings,
    Endpoint,
    OutputSettings,
    PacingSettings,
    RetrySettings,
    StopSettings,
)
from batchrunner.config.price_table import DEFAULT_BATCH_PRICES, DEFAULT_PRICES
from batchrunner.config.sections import AuthSettings, InputSettings
from batchrunner.config.values import (
    FailureLimit,
    check_deployment,
    check_endpoint,
)
from batchrunner.errors import ConfigError
from batchrunner.records import Api

DEFAULT_API_VERSION = "2024-10-21"


DEFAULT_CONFIG_FILE = "config.yaml"


#: The Batch API's limits on one input file (requests, bytes).
BATCH_MAX_REQUESTS = 100_000


BATCH_MAX_BYTES = 200_000_000


SECRET_KEYS = frozenset({"api_key", "ad_token"})


#: ``OPENAI_API_TYPE`` values of openai<1.0 that mean "the key is an Entra ID token".
LEGACY_AD_API_TYPES = frozenset({"azure_ad", "azuread"})


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings of one run. ``repr`` never shows a secret."""

    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    #: A ready Entra ID token (``AZURE_OPENAI_AD_TOKEN``); it cannot be refreshed.
    ad_token: str | None = field(default=None, repr=False)
    #: Which credential authenticates; see ``AuthSettings``.
    auth: AuthSettings = field(default_factory=AuthSettings)
    api_version: str = DEFAULT_API_VERSION
    deployment: str | None = None
    #: The model behind the deployment, for token counting and prices; guessed from
    #: the deployment name when not set.
    model: str | None = None
    api: Api = Api.CHAT
    output: str | None = None
    concurrency: int = 16
    rpm: int | None = None
    tpm: int | None = None
    max_attempts: int = 6
    timeout: float = 60.0
    limit: int | None = None
    dry_run: bool = False
    fresh: bool = False
    simulate: bool = False
    shard: tuple[int, int] | None = None
    deadline: float | None = None
    max_cost: float | None = None
    log_format: str | None = None
    verbosity: int = 0
    #: Seconds in-flight rows get to finish after SIGINT/SIGTERM.
    grace_seconds: float = 20.0
    #: The longest wait the service may ask for before the run stops with exit 75.
    max_retry_wait: float = 120.0
    #: Upper bound of one exponential back-off wait, in seconds.
    max_backoff: float = 30.0
    #: Failed rows (or percentage of the rows to send) past which the run stops.
    max_failures: FailureLimit | None = None
    #: Number of shards for replicas that carry no ``--shard I/N`` of their own.
    shards: int | None = None
    #: Seconds a replica claiming a shard waits for a crashed run's lease to lapse.
    claim_wait: float = 30.0
    #: Storage account (name or https URL) for az:// paths, signed in with Entra ID.
    storage_account: str | None = None
    #: Put prompt and answer text in the per-row log events (``-v``).
    log_prompts: bool = False
    #: What carries the SDK's HTTP requests: ``aiohttp`` (less CPU per request) or
    #: ``httpx``, the SDK's own default transport.
    http_transport: str = "aiohttp"
    input: InputSettings = field(default_factory=InputSettings)
    #: Model parameters passed through with every request (temperature, max_tokens …).
    request: Mapping[str, Any] = field(default_factory=dict)
    #: Model name prefix → (input, output) US dollars per million tokens.
    prices: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_PRICES)
    )
    #: Print the effective settings, each with its source, and exit.
    show_config: bool = False
    #: A JSON schema file: answers must match it (``request.response_format``).
    schema: str | None = None
    #: Also write the results joined to the input's columns, in input order.
    join: bool = False
    #: A directory of stored answers that later runs reuse for identical requests.
    cache: str | None = None
    #: Send identical requests of one run once and share the answer.
    dedupe: bool = True
    #: Seconds between progress events when there is no progress bar.
    progress_interval: float = 10.0
    #: ``online``: one request a row; ``batch``: Azure OpenAI Batch API jobs.
    mode: str = "online"
    #: Batch mode: stay and poll until every batch of this output has ended.
    wait: bool = False
    #: Batch mode: seconds between status checks (the service asks for 60 or more).
    poll_interval: float = 60.0
    #: Batch mode: cancel this output's running batches, collect them, and exit.
    cancel: bool = False
    #: Batch mode: most requests and bytes in one input file (the service's limits).
    batch_max_requests: int = BATCH_MAX_REQUESTS
    batch_max_bytes: int = BATCH_MAX_BYTES
    #: Model name prefix → Batch API (input, output) US dollars per million tokens.
    batch_prices: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_BATCH_PRICES)
    )
    #: Several deployments used as one (``deployments:``); when set, ``endpoint``
    #: and ``deployment`` are not used.
    deployments: tuple[Deployment, ...] = ()
    #: Where each value came from: ``flag``, ``env NAME``, ``file PATH``, ``default``.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain values, with secrets shown as ``***``."""
        shown: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "sources":
                continue
            value = getattr(self, name)
            if name in SECRET_KEYS:
                value = "***" if value else None
            elif isinstance(value, AuthSettings):
                value = value.as_dict()
            elif isinstance(value, InputSettings):
                value = {k: getattr(value, k) for k in value.__dataclass_fields__}
            elif isinstance(value, Api):
                value = value.value
            elif isinstance(value, FailureLimit):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif name == "deployments":
                value = [entry.shown() for entry in value] or None
            shown[name] = value
        return shown

    def price_for(
        self, model: str | None, *, batch: bool | None = None
    ) -> tuple[float, float] | None:
        """
        The (input, output) price per million tokens of *model*, longest prefix:
        the Batch API's in batch mode (or when *batch* says so), else the online one.
        """
        name = price_name(self, model, batch=batch)
        return None if name is None else self.price_table(batch)[name]

    def price_table(
        self, batch: bool | None = None
    ) -> Mapping[str, tuple[float, float]]:
        """The online or (in batch mode, or when *batch*) the Batch API price table."""
        in_batch = self.mode == "batch" if batch is None else batch
        return self.batch_prices if in_batch else self.prices

    @property
    def pacing(self) -> PacingSettings:
        """What the pacer and the pool take."""
        return PacingSettings(rpm=self.rpm, tpm=self.tpm, concurrency=self.concurrency)

    @property
    def client(self) -> ClientSettings:
        """What the SDK client takes."""
        return ClientSettings(
            api_version=self.api_version,
            timeout=self.timeout,
            http_transport=self.http_transport,
            connections=self.concurrency,
        )

    @property
    def results(self) -> OutputSettings:
        """What the results stage takes to hold the output."""
        return OutputSettings(
            path=self.output,
            fresh=self.fresh,
            storage_account=self.storage_account,
            claim_wait=self.claim_wait,
        )

    @property
    def target(self) -> Endpoint | None:
        """The endpoint of the settings (None without one: ``deployments:``)."""
        return Endpoint(self.endpoint, self.api_key) if self.endpoint else None

    @property
    def retries(self) -> RetrySettings:
        """What the row sender's retries take."""
        return RetrySettings(
            max_attempts=self.max_attempts,
            max_backoff=self.max_backoff,
            max_retry_wait=self.max_retry_wait,
        )

    @property
    def stops(self) -> StopSettings:
        """What the stop policy takes."""
        return StopSettings(
            max_cost=self.max_cost,
            max_failures=self.max_failures,
            deadline=self.deadline,
            grace_seconds=self.grace_seconds,
            timeout=self.timeout,
            deployment=self.deployment,
            price=self.price_for(None),
        )


def price_name(
    settings: Settings, model: str | None, *, batch: bool | None = None
) -> str | None:
    """The entry of the price table that prices *model* (longest prefix), or None."""
    name = (model or settings.model or settings.deployment or "").lower()
    table = settings.price_table(batch)
    matches = [p for p in table if name.startswith(p.lower())]
    return max(matches, key=len) if matches else None


def check_ready_to_send(settings: Settings) -> None:
    """Fail with a clear message when something needed to send a request is missing."""
    if settings.deployments:
        return  # every entry was checked as it was read
    if not settings.deployment:
        msg = (
            "no deployment given: pass --deployment NAME, set AZURE_OPENAI_DEPLOYMENT,"
            " or put 'deployment: NAME' in the settings file"
        )
        raise ConfigError(msg)
    check_deployment(settings.deployment, settings.sources.get("deployment", "run"))
    if not settings.simulate and not settings.endpoint:
        msg = (
            "no endpoint given: set AZURE_OPENAI_ENDPOINT to"
            " https://<resource>.openai.azure.com (or 'endpoint:' in the settings"
            " file), or try the built-in simulator with --simulate"
        )
        raise ConfigError(msg)
    check_endpoint_of(settings)


def check_endpoint_of(settings: Settings) -> None:
    """Refuse an endpoint that is not a URL (``--dry-run`` checks it too)."""
    if not settings.simulate and settings.endpoint:
        check_endpoint(settings.endpoint, settings.sources.get("endpoint", "default"))


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy of *settings* with *changes*, their source recorded as ``run``."""
    sources = dict(settings.sources)
    sources.update(dict.fromkeys(changes, "run"))
    return replace(settings, **changes, sources=sources)


def environment() -> Mapping[str, str]:
    """The process environment (a seam for tests)."""
    return os.environ
