"""
Every setting's name and how its value is read: the scalar settings and their
parsers (the same names serve the file, ``BATCHRUNNER_<KEY>`` variables and the
flags), the file's sections, and the SDK's own variables.
"""

from __future__ import annotations

import difflib
from typing import Any

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


def unknown_key_error(key: str, where: str, known: list[str]) -> ConfigError:
    """An unknown *key* at *where*, with the nearest of *known* as a hint."""
    hint = difflib.get_close_matches(key, known, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"{where}: unknown setting {key!r}{suggestion}")


def _parse_scalar(key: str, value: Any, where: str) -> Any:
    try:
        return SCALARS[key](value)
    except (ValueError, TypeError) as exc:
        msg = f"{where}: setting {key!r}: {exc}"
        raise ConfigError(msg) from exc


def parse_scalar(key: str, value: Any, where: str) -> Any:
    """*value* of scalar setting *key* (read at *where*), or a ``ConfigError``."""
    try:
        return SCALARS[key](value)
    except (ValueError, TypeError) as exc:
        msg = f"{where}: setting {key!r}: {exc}"
        raise ConfigError(msg) from exc
