"""
Settings: one frozen value built from command line > environment > file > defaults.

Every option has a settings-file key of the same name (``max_attempts`` for
``--max-attempts``) and a ``BATCHRUNNER_<KEY>`` environment variable; the
Azure and openai SDK variables (``AZURE_OPENAI_ENDPOINT`` …) are read as the SDK
reads them. ``sources`` says where each value came from, for ``--show-config``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchrunner.config.deployments import (
    ENVIRONMENT_VARIABLE as DEPLOYMENTS_VARIABLE,
)
from batchrunner.config.deployments import (
    Deployment,
    parse_deployments,
)
from batchrunner.config.groups import PacingSettings, RetrySettings, StopSettings
from batchrunner.config.values import (
    FailureLimit,
    check_deployment,
    check_endpoint,
    parse_failure_limit,
)
from batchrunner.errors import ConfigError
from batchrunner.records import Api

DEFAULT_API_VERSION = "2024-10-21"
DEFAULT_CONFIG_FILE = "config.yaml"

#: Prices in US dollars per million tokens (input, output), for cost estimates and
#: ``--max-cost``. Azure's list prices for global deployments when this was written;
#: override them under ``prices:`` in the settings for your agreement and region.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "gpt-35-turbo-instruct": (1.50, 2.00),
    "gpt-35-turbo": (0.50, 1.50),
    "gpt-4": (30.00, 60.00),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}

#: Batch API prices are about half the online ones (Global / Data Zone Batch).
BATCH_DISCOUNT = 0.5


def batch_price(online: tuple[float, float]) -> tuple[float, float]:
    """The Batch API price implied by the *online* (input, output) price."""
    return online[0] * BATCH_DISCOUNT, online[1] * BATCH_DISCOUNT


#: The Batch API's prices, where the model has a batch deployment type.
DEFAULT_BATCH_PRICES: dict[str, tuple[float, float]] = {
    model: batch_price(price)
    for model, price in DEFAULT_PRICES.items()
    if not model.startswith("text-embedding")  # no batch for embeddings on Azure
}

#: The Batch API's limits on one input file (requests, bytes).
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 200_000_000

SECRET_KEYS = frozenset({"api_key", "ad_token"})

#: The ways ``auth:`` may name a credential; ``auto`` picks one from the environment.
AUTH_KINDS = (
    "auto", "api_key", "entra", "managed_identity", "workload_identity", "azure_cli",
    "chain",
)  # fmt: skip
#: The kinds a ``chain:`` may list, tried in its order.
CHAIN_KINDS = ("managed_identity", "workload_identity", "azure_cli")
#: ``OPENAI_API_TYPE`` values of openai<1.0 that mean "the key is an Entra ID token".
LEGACY_AD_API_TYPES = frozenset({"azure_ad", "azuread"})


@dataclass(frozen=True, slots=True)
class InputSettings:
    """How input rows become requests: column names, template, system message."""

    id_column: str = "id"
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    system_column: str = "system"
    #: ``str.format`` template over the row's columns, used when a row has neither
    #: messages nor a prompt, e.g. ``"Summarise: {text}"``.
    template: str | None = None
    #: A system message for every row that has no ``system`` column of its own.
    system: str | None = None
    #: A Jinja2 template file that builds the prompt of every row without messages
    #: (few-shot examples, loops); see ``batchrunner.prepare.templates``.
    template_file: str | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How to authenticate: the ``kind``, its ``chain``, a user-assigned identity."""

    kind: str = "auto"
    #: For ``kind: chain``: the kinds tried in turn, e.g. managed identity, then az.
    chain: tuple[str, ...] = ()
    #: The client id of a user-assigned managed identity (or of the workload
    #: identity's app); azure-identity's ``AZURE_CLIENT_ID`` when not set.
    client_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The plain values, for printing."""
        chain = list(self.chain)
        return {"kind": self.kind, "chain": chain, "client_id": self.client_id}


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


# --- parsing of single values -------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^\s*(?:{_NUMBER}h)?\s*(?:{_NUMBER}m)?\s*(?:{_NUMBER}s?)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in *text*: ``90``, ``90s``, ``55m``, ``1h30m``, ``2.5h``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()) or not str(text).strip():
            msg = f"{text!r} is not a duration; write it like 90s, 55m or 1h30m"
            raise ValueError(msg)
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        msg = f"{text!r} is not a positive duration"
        raise ValueError(msg)
    return seconds


def parse_shard(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N."""
    if isinstance(text, tuple | list):
        index, count = int(text[0]), int(text[1])
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            msg = f"{text!r} is not a shard; write it as I/N, e.g. 0/4"
            raise ValueError(msg)
        index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        msg = f"shard {index}/{count} is out of range; I counts from 0 to N-1"
        raise ValueError(msg)
    return index, count


def parse_bool(value: Any) -> bool:
    """A yes/no value from YAML or the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    msg = f"{value!r} is not yes or no"
    raise ValueError(msg)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg)
    try:
        number = int(value)
    except ValueError:
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg) from None
    if number < 1 or number != float(value):
        msg = f"{value!r} is not a whole number of at least 1"
        raise ValueError(msg)
    return number


def _number(value: Any) -> float:
    """*value* as a number; a message a user can act on when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"{value!r} is not a number"
        raise ValueError(msg)
    try:
        return float(value)
    except ValueError:
        msg = f"{value!r} is not a number"
        raise ValueError(msg) from None


def _positive_float(value: Any) -> float:
    number = _number(value)
    if not number > 0:
        msg = f"{value!r} is not a positive number"
        raise ValueError(msg)
    return number


def _non_negative_float(value: Any) -> float:
    number = _number(value)
    if not number >= 0:
        msg = f"{value!r} is not a number of seconds (0 or more)"
        raise ValueError(msg)
    return number


def _verbosity(value: Any) -> int:
    number = _number(value)
    if number != int(number):
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg)
    return int(number)


def _choice(*choices: str) -> Any:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            msg = f"{value!r} is not one of {', '.join(choices)}"
            raise ValueError(msg)
        return text

    return parse


def _text(value: Any) -> str:
    return str(value)


def _auth_kind(value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower().replace("-", "_")
    if text not in allowed:
        msg = f"{value!r} is not one of {', '.join(allowed)}"
        raise ValueError(msg)
    return text


def _auth_chain(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        msg = f"a chain is a list of {', '.join(CHAIN_KINDS)}, not {value!r}"
        raise ValueError(msg)
    return tuple(_auth_kind(item, CHAIN_KINDS) for item in items)


def parse_auth(value: Any) -> AuthSettings:
    """
    ``auth:`` as a kind (``managed_identity``), a chain (a list, or kinds joined by
    commas), or a mapping ``{kind, chain, client_id}``.
    """
    if isinstance(value, AuthSettings):
        return value
    if isinstance(value, list | tuple) or (isinstance(value, str) and "," in value):
        return AuthSettings(kind="chain", chain=_auth_chain(value))
    if not isinstance(value, dict):
        return AuthSettings(kind=_auth_kind(value, AUTH_KINDS))
    unknown = set(value) - {"kind", "chain", "client_id"}
    if unknown:
        msg = f"unknown key {sorted(unknown)[0]!r}; auth takes kind, chain, client_id"
        raise ValueError(msg)
    chain = _auth_chain(value["chain"]) if value.get("chain") is not None else ()
    kind = _auth_kind(value.get("kind") or ("chain" if chain else "auto"), AUTH_KINDS)
    if (kind == "chain") != bool(chain):
        msg = "'kind: chain' and a 'chain:' list go together"
        raise ValueError(msg)
    client_id = value.get("client_id")
    if client_id is not None and kind in ("api_key", "azure_cli"):
        msg = f"client_id does not apply to kind {kind}"
        raise ValueError(msg)
    return AuthSettings(
        kind=kind, chain=chain, client_id=None if client_id is None else str(client_id)
    )


#: Scalar settings: key → parser. The same names serve the file, the
#: ``BATCHRUNNER_<KEY>`` variables and (with dashes) the command line.
SCALARS: dict[str, Any] = {
    "endpoint": _text,
    "api_version": _text,
    "deployment": _text,
    "model": _text,
    "api": lambda v: Api(_choice(*[a.value for a in Api])(v)),
    "output": _text,
    "concurrency": _positive_int,
    "rpm": _positive_int,
    "tpm": _positive_int,
    "max_attempts": _positive_int,
    "timeout": _positive_float,
    "limit": _positive_int,
    "dry_run": parse_bool,
    "fresh": parse_bool,
    "simulate": parse_bool,
    "shard": parse_shard,
    "deadline": parse_duration,
    "max_cost": _positive_float,
    "log_format": _choice("text", "json"),
    "verbosity": _verbosity,
    "grace_seconds": _positive_float,
    "max_retry_wait": _positive_float,
    "max_backoff": _positive_float,
    "auth": parse_auth,
    "show_config": parse_bool,
    "schema": _text,
    "join": parse_bool,
    "cache": _text,
    "dedupe": parse_bool,
    "progress_interval": _positive_float,
    "max_failures": parse_failure_limit,
    "shards": _positive_int,
    "claim_wait": _non_negative_float,
    "storage_account": _text,
    "log_prompts": parse_bool,
    "http_transport": _choice("aiohttp", "httpx"),
    "mode": _choice("online", "batch"),
    "wait": parse_bool,
    "poll_interval": _positive_float,
    "cancel": parse_bool,
    "batch_max_requests": _positive_int,
    "batch_max_bytes": _positive_int,
}
SECTIONS = ("input", "request", "prices")
#: ``input.*`` settings that also have a flag and a ``BATCHRUNNER_<KEY>`` variable.
INPUT_SCALARS: dict[str, Any] = {"template_file": _text}

#: The SDK's own variables, read the way the SDK reads them.
SDK_ENVIRONMENT = {
    "endpoint": "AZURE_OPENAI_ENDPOINT",
    "api_key": "AZURE_OPENAI_API_KEY",
    "api_version": "OPENAI_API_VERSION",
    "deployment": "AZURE_OPENAI_DEPLOYMENT",
    "ad_token": "AZURE_OPENAI_AD_TOKEN",
}


def load_file(path: Path) -> dict[str, Any]:
    """The settings file at *path* as a mapping; a clear error when it is not one."""
    import yaml  # only a run with a settings file pays for the YAML parser

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the settings file {str(path)!r}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = (
            f"{path}: the settings file is not UTF-8 text (byte 0x"
            f"{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        )
        raise ConfigError(msg) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        msg = f"{where}: the settings file is not valid YAML: {problem}"
        raise ConfigError(msg) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path}: the settings file must be a mapping of keys to values"
        raise ConfigError(msg)
    return data


def _unknown_key_error(key: str, where: str, known: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, known, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"{where}: unknown setting {key!r}{suggestion}")


def _parse_scalar(key: str, value: Any, where: str) -> Any:
    try:
        return SCALARS[key](value)
    except (ValueError, TypeError) as exc:
        msg = f"{where}: setting {key!r}: {exc}"
        raise ConfigError(msg) from exc


def _input_settings(raw: Any, where: str) -> InputSettings:
    if not isinstance(raw, dict):
        msg = f"{where}: 'input' must be a mapping (id_column, prompt_column, …)"
        raise ConfigError(msg)
    known = list(InputSettings.__dataclass_fields__)
    for key in raw:
        if key not in known:
            dotted = [f"input.{k}" for k in known]
            raise _unknown_key_error(f"input.{key}", where, dotted)
    values: dict[str, Any] = {
        k: (None if v is None else str(v)) for k, v in raw.items()
    }
    return InputSettings(**values)


Prices = dict[str, tuple[float, float]]


def _prices(raw: Any, where: str) -> tuple[Prices, Prices]:
    """
    The online and Batch API price tables: the defaults, with *raw*'s entries over
    them; an entry without ``batch_input``/``batch_output`` is half price in batch.
    """
    prices, batch = dict(DEFAULT_PRICES), dict(DEFAULT_BATCH_PRICES)
    if not isinstance(raw, dict):
        msg = f"{where}: 'prices' must map model names to {{input: …, output: …}}"
        raise ConfigError(msg)
    for model, price in raw.items():
        try:
            if isinstance(price, dict):
                inp, out = price["input"], price.get("output", 0)
            else:
                inp, out = price
            online = prices[str(model)] = (float(inp), float(out))
            half = batch_price(online)
            given = price if isinstance(price, dict) else {}
            batch[str(model)] = (
                float(given.get("batch_input", half[0])),
                float(given.get("batch_output", half[1])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = (
                f"{where}: prices for {model!r} must be {{input: USD per 1M tokens,"
                " output: USD per 1M tokens}, optionally with batch_input and"
                " batch_output (the Batch API's; half the others by default)"
            )
            raise ConfigError(msg) from exc
    return prices, batch


def build_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_path: Path | None,
) -> Settings:
    """
    Merge *flags* (already parsed, None for unset) > *environ* > the file at
    *config_path* > defaults into one ``Settings``, remembering each source.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_data = load_file(config_path) if config_path else {}
    layers = (
        _file_layer(file_data, str(config_path)),
        _environment_layer(environ),
        _flag_layer(flags),
    )
    for layer in layers:  # lowest precedence first, so later layers win
        for key, (value, source) in layer.items():
            values[key] = value
            sources[key] = source
    for key in Settings.__dataclass_fields__:
        sources.setdefault(key, "default")
    sources.pop("sources", None)
    _section_sources(file_data, str(config_path), sources)
    _apply_input_scalars(values)
    if "deployments" in values:
        where = sources["deployments"].split(" ", 1)[-1]
        values["deployments"] = parse_deployments(values["deployments"], where, environ)
    return Settings(**values, sources=sources)


def _section_sources(data: dict[str, Any], path: str, sources: dict[str, str]) -> None:
    """Name the settings file as the source of each key in its sections."""
    for section in SECTIONS:
        raw = data.get(section)
        if isinstance(raw, dict):
            for name in raw:
                sources.setdefault(f"{section}.{name}", f"file {path}")


def _apply_input_scalars(values: dict[str, Any]) -> None:
    """Fold ``input.<key>`` values from flags and the environment into ``input``."""
    changes = {
        key: values.pop(f"input.{key}")
        for key in INPUT_SCALARS
        if f"input.{key}" in values
    }
    if changes:
        values["input"] = replace(values.get("input", InputSettings()), **changes)


Layer = dict[str, tuple[Any, str]]


def _file_layer(data: dict[str, Any], path: str) -> Layer:
    layer: Layer = {}
    source = f"file {path}"
    for key, raw in data.items():
        if raw is None:
            continue
        if key == "input":
            layer[key] = (_input_settings(raw, path), source)
        elif key == "request":
            if not isinstance(raw, dict):
                msg = f"{path}: 'request' must map model parameters to values"
                raise ConfigError(msg)
            layer[key] = (dict(raw), source)
        elif key == "prices":
            online, batch = _prices(raw, path)
            layer[key] = (online, source)
            layer["batch_prices"] = (batch, source)
        elif key == "deployments":  # parsed with the environment's keys, later
            layer[key] = (raw, source)
        elif key in SCALARS:
            layer[key] = (_parse_scalar(key, raw, path), source)
        else:
            raise _unknown_key_error(key, path, [*SCALARS, *SECTIONS, "deployments"])
    return layer


def _environment_layer(environ: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for key in SCALARS:
        var = f"BATCHRUNNER_{key.upper()}"
        if environ.get(var):
            layer[key] = (_parse_scalar(key, environ[var], var), f"env {var}")
    for key, parse in INPUT_SCALARS.items():
        var = f"BATCHRUNNER_{key.upper()}"
        if environ.get(var):
            layer[f"input.{key}"] = (parse(environ[var]), f"env {var}")
    if environ.get(DEPLOYMENTS_VARIABLE):
        var = DEPLOYMENTS_VARIABLE
        layer["deployments"] = (environ[var], f"env {var}")
    # The SDK's own variables win over ours when both are set, as the SDK reads them.
    for key, var in SDK_ENVIRONMENT.items():
        if environ.get(var):
            raw = environ[var]
            value = raw if key in SECRET_KEYS else _parse_scalar(key, raw, var)
            layer[key] = (value, f"env {var}")
    # openai<1.0's Entra ID form; auth.py warns and names the newer way.
    legacy_type = environ.get("OPENAI_API_TYPE", "").strip().lower()
    if (
        "ad_token" not in layer
        and legacy_type in LEGACY_AD_API_TYPES
        and environ.get("OPENAI_API_KEY")
    ):
        layer["ad_token"] = (environ["OPENAI_API_KEY"], "env OPENAI_API_KEY")
    return layer


def _flag_layer(flags: Mapping[str, Any]) -> Layer:
    layer = {
        key: (_parse_scalar(key, raw, "--" + key.replace("_", "-")), "flag")
        for key, raw in flags.items()
        if raw is not None and key not in INPUT_SCALARS
    }
    for key, parse in INPUT_SCALARS.items():
        if flags.get(key) is not None:
            layer[f"input.{key}"] = (parse(flags[key]), "flag")
    return layer


def find_config(explicit: str | None, cwd: Path) -> Path | None:
    """The settings file to read: *explicit*, else ``./config.yaml`` when present."""
    if explicit:
        path = Path(explicit)
        if path.is_dir():
            msg = f"settings file {explicit!r} is a directory; name a .yaml file"
            raise ConfigError(msg)
        if not path.is_file():
            msg = f"settings file {explicit!r} does not exist"
            raise ConfigError(msg)
        return path
    default = cwd / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


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
