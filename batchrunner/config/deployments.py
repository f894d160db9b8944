"""
``deployments:``: several Azure OpenAI deployments that one run uses as one.

Each entry names a resource's ``endpoint`` and its ``deployment``, and may give a
``name`` (the label of records and logs), ``api_key_env`` (the variable holding
that resource's key), its quota (``tpm``, ``rpm``), a ``priority`` and a
``weight``. Every entry is checked here, before anything is sent: a fault names
the entry and says how to fix it.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from batchrunner.config.values import check_deployment
from batchrunner.errors import ConfigError

#: The keys an entry may have, in the order ``--show-config`` shows them.
ENTRY_KEYS = (
    "name", "endpoint", "deployment", "api_key_env", "tpm", "rpm", "priority",
    "weight",
)  # fmt: skip
#: The variable that holds the list as JSON.
ENVIRONMENT_VARIABLE = "BATCHRUNNER_DEPLOYMENTS"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of a run: where it is, how to sign in, and its share."""

    #: The label of records, logs and the summary; unique within the run.
    name: str
    endpoint: str
    deployment: str
    #: The variable holding this resource's key; None: the run's own auth.
    api_key_env: str | None = None
    #: The key read from *api_key_env* (never shown).
    api_key: str | None = field(default=None, repr=False)
    tpm: int | None = None
    rpm: int | None = None
    #: Lower numbers are used first.
    priority: int = 0
    #: Share of traffic within its priority; None: in proportion to its quota.
    weight: float | None = None

    def shown(self) -> dict[str, Any]:
        """The entry as plain values for ``--show-config``, the key as ``***``."""
        values = {key: getattr(self, key) for key in ENTRY_KEYS}
        if self.api_key_env:
            values["api_key"] = "***"
        return {key: value for key, value in values.items() if value is not None}


def default_name(endpoint: str, deployment: str) -> str:
    """``<endpoint host[:port]>/<deployment>``, the label of an entry without one."""
    return f"{urlsplit(endpoint).netloc}/{deployment}"


def parse_deployments(
    raw: Any, where: str, environ: Mapping[str, str]
) -> tuple[Deployment, ...]:
    """
    The entries of *raw* (a list, or JSON text of one, from *where*), keys read
    from *environ*; ``ConfigError`` naming the entry and the fault otherwise.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = (
                f"{where}: 'deployments' is not valid JSON ({exc.msg} at character"
                f" {exc.pos}); write a list like"
                ' [{"endpoint": "https://….openai.azure.com", "deployment": "gpt-4o"}]'
            )
            raise ConfigError(msg) from None
    if not isinstance(raw, list | tuple) or not raw:
        msg = (
            f"{where}: 'deployments' must be a list of entries, each with an"
            " endpoint and a deployment"
        )
        raise ConfigError(msg)
    entries = [_entry(item, f"{where}: deployments[{i}]", environ)
               for i, item in enumerate(raw)]  # fmt: skip
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.name in seen:
            msg = (
                f"{where}: deployments[{i}] has the label {entry.name!r}, as"
                f" deployments[{seen[entry.name]}] has; labels must be unique: give"
                " one of them a different 'name'"
            )
            raise ConfigError(msg)
        seen[entry.name] = i
    return tuple(entries)


def _entry(item: Any, where: str, environ: Mapping[str, str]) -> Deployment:
    if not isinstance(item, dict):
        msg = f"{where} must be a mapping with an endpoint and a deployment"
        raise ConfigError(msg)
    for key in item:
        if key not in ENTRY_KEYS:
            hint = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            keys = ", ".join(ENTRY_KEYS)
            msg = f"{where}: unknown key {key!r}{also} (an entry takes {keys})"
            raise ConfigError(msg)
    name = item.get("name")
    if name is not None:
        name = _text(name, "name", where)
        if not name:
            msg = f"{where}: 'name' is empty; leave it out for the default label"
            raise ConfigError(msg)
        where = f"{where} ({name})"
    endpoint = _endpoint(item.get("endpoint"), where)
    deployment = _required_text(item.get("deployment"), "deployment", where)
    label = default_name(endpoint, deployment) if name is None else name
    if name is None:
        where = f"{where} ({label})"
    try:
        check_deployment(deployment, "")
    except ConfigError:
        msg = (
            f"{where}: deployment {deployment!r} cannot be a deployment name: names"
            " are letters, digits, '-', '_' and '.'; copy it from the portal's"
            " Deployments page"
        )
        raise ConfigError(msg) from None
    key_env, key = _key(item.get("api_key_env"), where, environ)
    return Deployment(
        name=label,
        endpoint=endpoint,
        deployment=deployment,
        api_key_env=key_env,
        api_key=key,
        tpm=_quota(item.get("tpm"), "tpm", where),
        rpm=_quota(item.get("rpm"), "rpm", where),
        priority=_priority(item.get("priority"), where),
        weight=_weight(item.get("weight"), where),
    )


def _text(value: Any, key: str, where: str) -> str:
    """*value* as text: a string, or a number YAML read from a bare 5."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"{where}: {key} {value!r} is not text; write it as a string"
        raise ConfigError(msg)
    return str(value).strip()


def _required_text(value: Any, key: str, where: str) -> str:
    text = None if value is None else _text(value, key, where)
    if not text:
        msg = (
            f"{where}: no {key!r} given; every entry needs an endpoint and a deployment"
        )
        raise ConfigError(msg)
    return text


def _endpoint(value: Any, where: str) -> str:
    text = _required_text(value, "endpoint", where)
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in text:
        msg = (
            f"{where}: endpoint {text!r} is not a URL; write it as"
            " https://<resource>.openai.azure.com"
        )
        raise ConfigError(msg)
    return text


def _key(
    value: Any, where: str, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    name = _text(value, "api_key_env", where)
    if not name:
        msg = f"{where}: 'api_key_env' is empty; name the variable that holds the key"
        raise ConfigError(msg)
    key = environ.get(name)
    if not key:
        msg = (
            f"{where}: api_key_env names {name!r}, which is not set; export {name}"
            " with this resource's key, or leave api_key_env out to use the run's"
            " own auth"
        )
        raise ConfigError(msg)
    return name, key


def _quota(value: Any, key: str, where: str) -> int | None:
    if value is None:
        return None
    number = _number(value, key, where)
    if number < 1 or number != int(number):
        msg = (
            f"{where}: {key} {value!r} is not a whole number of at least 1; give the"
            " deployment's quota a minute, or leave it out to learn it"
        )
        raise ConfigError(msg)
    return int(number)


def _priority(value: Any, where: str) -> int:
    if value is None:
        return 0
    number = _number(value, "priority", where)
    if number != int(number):
        msg = f"{where}: priority {value!r} is not a whole number (0 is used first)"
        raise ConfigError(msg)
    return int(number)


def _weight(value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = _number(value, "weight", where)
    if not number > 0:
        msg = f"{where}: weight {value!r} is not a positive number"
        raise ConfigError(msg)
    return number


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool):
        msg = f"{where}: {key} {value!r} is not a number"
        raise ConfigError(msg)
    try:
        number = float(value)
    except (TypeError, ValueError):
        msg = f"{where}: {key} {value!r} is not a number"
        raise ConfigError(msg) from None
    if not math.isfinite(number):
        msg = f"{where}: {key} {value!r} is not a finite number"
        raise ConfigError(msg)
    return number
