"""
The settings file: which one a run reads, its YAML, and its keys as a layer of
values with their source (scalars, and the ``input``/``request``/``prices``
sections).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from batchrunner.config.keys import SCALARS, SECTIONS, parse_scalar, unknown_key_error
from batchrunner.config.parsing import as_text
from batchrunner.config.price_table import (
    DEFAULT_BATCH_PRICES,
    DEFAULT_PRICES,
    batch_price,
)
from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import DEFAULT_CONFIG_FILE
from batchrunner.errors import ConfigError

#: One layer of settings: key → (value, where it came from).
Layer = dict[str, tuple[Any, str]]


def find_config(explicit: str | None, cwd: Path) -> Path | None:
    """The settings file to read: *explicit*, else ``./config.yaml`` when present."""
    if explicit:
        path = Path(explicit)
        if path.is_dir():
            msg = f"settings file {explicit!r} is a directory; name a .yaml file"
            raise ConfigError(msg)
        # Not is_file(): a pipe (``-c <(envsubst < base.yaml)``) is a file to read.
        if not path.exists():
            msg = f"settings file {explicit!r} does not exist"
            raise ConfigError(msg)
        return path
    default = cwd / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


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


def file_layer(data: dict[str, Any], path: str) -> Layer:
    """The keys of settings file *data* (read from *path*) as a layer."""
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
            layer[key] = (parse_scalar(key, raw, path), source)
        else:
            if key in InputSettings.__dataclass_fields__:
                msg = f"{path}: {key!r} is an input setting; put it under 'input:'"
                raise ConfigError(f"{msg}, as input.{key}")
            raise unknown_key_error(key, path, [*SCALARS, *SECTIONS, "deployments"])
    return layer


def section_sources(data: dict[str, Any], path: str, sources: dict[str, str]) -> None:
    """Name the settings file as the source of each key in its sections."""
    for section in SECTIONS:
        raw = data.get(section)
        if isinstance(raw, dict):
            for name in raw:
                sources.setdefault(f"{section}.{name}", f"file {path}")


def _input_settings(raw: Any, where: str) -> InputSettings:
    if not isinstance(raw, dict):
        msg = f"{where}: 'input' must be a mapping (id_column, prompt_column, …)"
        raise ConfigError(msg)
    known = list(InputSettings.__dataclass_fields__)
    for key in raw:
        if key not in known:
            dotted = [f"input.{k}" for k in known]
            raise unknown_key_error(f"input.{key}", where, dotted)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            values[key] = None if value is None else as_text(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: setting 'input.{key}': {exc}") from exc
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
            online = prices[str(model)] = (_price(inp), _price(out))
            half = batch_price(online)
            given = price if isinstance(price, dict) else {}
            batch[str(model)] = (
                _price(given.get("batch_input", half[0])),
                _price(given.get("batch_output", half[1])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = (
                f"{where}: prices for {model!r} must be {{input: USD per 1M tokens,"
                " output: USD per 1M tokens}, 0 or more, optionally with batch_input"
                " and batch_output (the Batch API's; half the others by default)"
            )
            raise ConfigError(msg) from exc
    return prices, batch


def _price(value: Any) -> float:
    """A price in USD per million tokens: a finite number, 0 or more."""
    if isinstance(value, bool):
        raise TypeError(value)
    number = float(value)
    if not 0 <= number < math.inf:
        raise ValueError(value)
    return number
