"""
Parsing single setting values, from YAML, the environment or a flag: each
parser returns the value or raises ``ValueError`` saying what is wrong with it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from batchrunner.config.sections import AUTH_KINDS, CHAIN_KINDS, AuthSettings

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
    if not 0 < seconds < math.inf:
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


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg)
    try:
        number = int(value)
    except (ValueError, OverflowError):  # OverflowError: YAML's .inf
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg) from None
    if number < 1 or number != float(value):
        msg = f"{value!r} is not a whole number of at least 1"
        raise ValueError(msg)
    return number


def as_number(value: Any) -> float:
    """*value* as a number; a message a user can act on when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = f"{value!r} is not a number"
        raise ValueError(msg)
    try:
        number = float(value)
    except ValueError:
        msg = f"{value!r} is not a number"
        raise ValueError(msg) from None
    if not math.isfinite(number):
        # inf passes every bound, and then breaks whatever counts with it.
        msg = f"{value!r} is not a finite number"
        raise ValueError(msg)
    return number


def positive_float(value: Any) -> float:
    number = as_number(value)
    if not number > 0:
        msg = f"{value!r} is not a positive number"
        raise ValueError(msg)
    return number


def non_negative_float(value: Any) -> float:
    number = as_number(value)
    if not number >= 0:
        msg = f"{value!r} is not a number of seconds (0 or more)"
        raise ValueError(msg)
    return number


def verbosity_level(value: Any) -> int:
    number = as_number(value)
    if number != int(number):
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg)
    return int(number)


def one_of(*choices: str) -> Any:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            msg = f"{value!r} is not one of {', '.join(choices)}"
            raise ValueError(msg)
        return text

    return parse


def as_text(value: Any) -> str:
    """*value* as text; a list or a mapping (a YAML slip) is not one."""
    if isinstance(value, list | tuple | dict | set):
        kind = "a mapping" if isinstance(value, dict) else "a list"
        msg = f"{value!r} is {kind}, not text; give a single value"
        raise ValueError(msg)
    return str(value)


def auth_kind(value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower().replace("-", "_")
    if text not in allowed:
        msg = f"{value!r} is not one of {', '.join(allowed)}"
        raise ValueError(msg)
    return text


def auth_chain(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        msg = f"a chain is a list of {', '.join(CHAIN_KINDS)}, not {value!r}"
        raise ValueError(msg)
    return tuple(auth_kind(item, CHAIN_KINDS) for item in items)


def parse_auth(value: Any) -> AuthSettings:
    """
    ``auth:`` as a kind (``managed_identity``), a chain (a list, or kinds joined by
    commas), or a mapping ``{kind, chain, client_id}``.
    """
    if isinstance(value, AuthSettings):
        return value
    if isinstance(value, list | tuple) or (isinstance(value, str) and "," in value):
        return AuthSettings(kind="chain", chain=auth_chain(value))
    if not isinstance(value, dict):
        return AuthSettings(kind=auth_kind(value, AUTH_KINDS))
    unknown = set(value) - {"kind", "chain", "client_id"}
    if unknown:
        msg = f"unknown key {sorted(unknown)[0]!r}; auth takes kind, chain, client_id"
        raise ValueError(msg)
    chain = auth_chain(value["chain"]) if value.get("chain") is not None else ()
    kind = auth_kind(value.get("kind") or ("chain" if chain else "auto"), AUTH_KINDS)
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
