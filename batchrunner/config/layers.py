"""
The settings' layers: the file, the environment and the flags, each read into
values with their sources, and merged flag > environment > file > default.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from batchrunner.config.deployments import (
    ENVIRONMENT_VARIABLE as DEPLOYMENTS_VARIABLE,
)
from batchrunner.config.deployments import (
    parse_deployments,
)
from batchrunner.config.parsing import (
    as_text,
    non_negative_float,
    one_of,
    parse_auth,
    parse_bool,
    parse_duration,
    parse_shard,
    positive_float,
    positive_int,
    verbosity_level,
)
from batchrunner.config.price_table import (
    DEFAULT_BATCH_PRICES,
    DEFAULT_PRICES,
    batch_price,
)
from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import (
    DEFAULT_CONFIG_FILE,
    LEGACY_AD_API_TYPES,
    SECRET_KEYS,
    Settings,
)
from batchrunner.config.values import (
    parse_failure_limit,
)
from batchrunner.errors import ConfigError
from batchrunner.records import Api

#: Scalar settings: key → parser. The same names serve the file, the
#: ``BATCHRUNNER_<KEY>`` variables and (with dashes) the command line.
SCALARS: dict[str, Any] = {
    "endpoint": as_text,
    "api_version": as_text,
    "deployment": as_text,
    "model": as_text,
    "api": lambda v: Api(one_of(*[a.value for a in Api])(v)),
    "output": as_text,
    "concurrency": positive_int,
    "rpm": positive_int,
    "tpm": positive_int,
    "max_attempts": positive_int,
    "timeout": positive_float,
    "limit": positive_int,
    "dry_run": parse_bool,
    "fresh": parse_bool,
    "simulate": parse_bool,
    "shard": parse_shard,
    "deadline": parse_duration,
    "max_cost": positive_float,
    "log_format": one_of("text", "json"),
    "verbosity": verbosity_level,
    "grace_seconds": positive_float,
    "max_retry_wait": positive_float,
    "max_backoff": positive_float,
    "auth": parse_auth,
    "show_config": parse_bool,
    "schema": as_text,
    "join": parse_bool,
    "cache": as_text,
    "dedupe": parse_bool,
    "progress_interval": positive_float,
    "max_failures": parse_failure_limit,
    "shards": positive_int,
    "claim_wait": non_negative_float,
    "storage_account": as_text,
    "log_prompts": parse_bool,
    "http_transport": one_of("aiohttp", "httpx"),
    "mode": one_of("online", "batch"),
    "wait": parse_bool,
    "poll_interval": positive_float,
    "cancel": parse_bool,
    "batch_max_requests": positive_int,
    "batch_max_bytes": positive_int,
}


SECTIONS = ("input", "request", "prices")


#: ``input.*`` settings that also have a flag and a ``BATCHRUNNER_<KEY>`` variable.
INPUT_SCALARS: dict[str, Any] = {"template_file": as_text}


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
