"""
``--show-config``: the effective settings, each with where it came from (a flag, the
environment, the settings file or the default), and no secret in sight.

Secrets are shown as ``***`` three ways: settings that hold one (``api_key``), any
setting whose name says it holds one (``…key``, ``…secret``, ``…token`` …), and any
value that is a known secret, carries one in a URL, or looks like a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchrunner.config.settings import SECRET_KEYS, Settings

#: Model parameters listed whether set or not, so the reader sees what is sent.
MODEL_PARAMETERS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "logit_bias",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "response_format",
)
_SECRET_WORDS = frozenset(
    {"key", "secret", "password", "passwd", "token", "credential", "authorization"}
    | {"sig", "signature", "sas", "bearer"}
)
_WORD = re.compile(r"[A-Za-z0-9]+")
#: An Azure key (32 hex digits, or 48+ letters and digits), an OpenAI-style key,
#: or a JWT.
_KEY_LIKE = re.compile(
    r"^(?:[0-9a-fA-F]{32}|[A-Za-z0-9]{48,}|sk-[A-Za-z0-9_-]{16,}"
    r"|eyJ[\w-]+\.[\w-]+\.[\w-]+)$"
)
_FLAGS = {"template_file": "--template", "dedupe": "--no-dedupe"}
_SECTIONS = ("input", "request", "prices", "batch_prices")


def show_config(settings: Settings, input_arg: str) -> str:
    """The settings as an aligned text table: setting, source, value."""
    secrets = [s for s in (settings.api_key,) if s]
    rows = [("setting", "source", "value")]
    for name, value, source in _entries(settings, input_arg):
        shown = "***" if _secret_name(name) and value is not None else value
        rows.append((name, source, _masked(_text(shown), secrets)))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(
        f"{n:<{width[0]}}  {s:<{width[1]}}  {v}".rstrip() for n, s, v in rows
    )


def _entries(settings: Settings, input_arg: str) -> Iterator[tuple[str, Any, str]]:
    shown = settings.redacted()
    for name, value in shown.items():
        if name in _SECTIONS or name == "show_config":
            continue
        if name == "output" and value is None:
            from batchrunner.prepare.shards import (
                default_output,  # the same rule as the run
            )

            yield name, str(default_output(input_arg)), "default: beside the input"
            continue
        yield name, value, _source(settings, name)
    for name, value in shown["input"].items():
        yield f"input.{name}", value, _source(settings, f"input.{name}")
    request = dict(settings.request)
    for name in [*MODEL_PARAMETERS, *(k for k in request if k not in MODEL_PARAMETERS)]:
        if name in request:
            yield f"request.{name}", request[name], _source(settings, f"request.{name}")
        else:
            yield f"request.{name}", "(not sent: the service's default)", "default"
    price = _price_key(settings)
    for name, (inp, out) in settings.prices.items():
        source = _source(settings, f"prices.{name}")
        if name == price or source != "default":
            value = f"${inp:g} in, ${out:g} out per 1M tokens"
            batch = settings.batch_prices.get(name)
            if batch is not None:
                value += f" (batch: ${batch[0]:g} in, ${batch[1]:g} out)"
            yield f"prices.{name}", value, source


def _price_key(settings: Settings) -> str | None:
    model = (settings.model or settings.deployment or "").lower()
    matches = [p for p in settings.prices if model.startswith(p.lower())]
    return max(matches, key=len) if matches else None


def _source(settings: Settings, name: str) -> str:
    raw = settings.sources.get(name)
    if raw is None and "." in name:
        section = settings.sources.get(name.split(".", 1)[0], "default")
        raw = "default" if section.startswith("file ") else section
    raw = raw or "default"
    if raw == "flag":
        key = name.removeprefix("input.")
        return "flag " + _FLAGS.get(key, "--" + key.replace("_", "-"))
    if raw.startswith("env "):
        return "environment " + raw[4:]
    return raw


def _secret_name(name: str) -> bool:
    words = {w.lower() for w in _WORD.findall(name.rsplit(".", 1)[-1])}
    return name in SECRET_KEYS or bool(words & _SECRET_WORDS)


def _text(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) == 2:  # a shard
        return f"{value[0]}/{value[1]}"
    return json.dumps(value, ensure_ascii=False, default=str)


def _masked(text: str, secrets: list[str]) -> str:
    """*text* with known secrets, URL credentials and key-like words as ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = re.sub(r"https?://\S+", lambda m: _masked_url(m.group(0)), text)
    return re.sub(
        r"[^\s\"',:{}\[\]]+",
        lambda m: "***" if _KEY_LIKE.match(m.group(0)) else m.group(0),
        text,
    )


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=***" if _secret_name(k) else f"{k}={v}" if v or "=" in pair else k
        for pair in parts.query.split("&")
        if pair
        for k, _, v in [pair.partition("=")]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
