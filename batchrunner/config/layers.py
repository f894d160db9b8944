"""
The settings' layers: the file, the environment and the flags, each read into
values with their sources, and merged flag > environment > file > default.
"""

from __future__ import annotations

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
from batchrunner.config.file import (
    Layer,
    file_layer,
    load_file,
    section_sources,
)
from batchrunner.config.keys import (
    INPUT_SCALARS,
    SCALARS,
    SDK_ENVIRONMENT,
    parse_scalar,
)
from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import (
    LEGACY_AD_API_TYPES,
    SECRET_KEYS,
    Settings,
)


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
        file_layer(file_data, str(config_path)),
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
    section_sources(file_data, str(config_path), sources)
    _apply_input_scalars(values)
    if "deployments" in values:
        where = sources["deployments"].split(" ", 1)[-1]
        values["deployments"] = parse_deployments(values["deployments"], where, environ)
    return Settings(**values, sources=sources)


def _apply_input_scalars(values: dict[str, Any]) -> None:
    """Fold ``input.<key>`` values from flags and the environment into ``input``."""
    changes = {
        key: values.pop(f"input.{key}")
        for key in INPUT_SCALARS
        if f"input.{key}" in values
    }
    if changes:
        values["input"] = replace(values.get("input", InputSettings()), **changes)


def _environment_layer(environ: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for key in SCALARS:
        var = f"BATCHRUNNER_{key.upper()}"
        if environ.get(var):
            layer[key] = (parse_scalar(key, environ[var], var), f"env {var}")
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
            value = raw if key in SECRET_KEYS else parse_scalar(key, raw, var)
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
        key: (parse_scalar(key, raw, "--" + key.replace("_", "-")), "flag")
        for key, raw in flags.items()
        if raw is not None and key not in INPUT_SCALARS
    }
    for key, parse in INPUT_SCALARS.items():
        if flags.get(key) is not None:
            layer[f"input.{key}"] = (parse(flags[key]), "flag")
    return layer
