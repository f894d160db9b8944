"""
What a row may hold: chat messages checked before anything is sent, and the
column names a ``str.format`` prompt template uses.
"""

from __future__ import annotations

import re
import string
from typing import Any

from batchrunner.errors import ConfigError
from batchrunner.rows.files import json_type

ROLES = ("system", "user", "assistant", "tool", "developer")
_FIELD_NAME_END = re.compile(r"[.\[]")
_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """
    The column names *template* formats, in order of first use, each once.

    A template that ``str.format`` cannot use is a ``ConfigError``.
    """
    names: dict[str, None] = {}
    try:
        _collect_fields(template, names)
    except ValueError as exc:
        msg = (
            f"input.template {template!r} is not a valid template: {exc}; write a"
            " column as {name} and a literal brace as {{ or }}"
        )
        raise ConfigError(msg) from exc
    return list(names)


def _collect_fields(template: str, names: dict[str, None]) -> None:
    for _literal, field, spec, conversion in _FORMATTER.parse(template):
        if field is None:
            continue
        name = _FIELD_NAME_END.split(field, maxsplit=1)[0]
        if not name or name.isdigit():
            msg = f"{{{field}}} is positional; name a column instead, like {{text}}"
            raise ValueError(msg)
        if conversion not in (None, "r", "s", "a"):
            msg = f"!{conversion} is not a conversion; use !r, !s or !a"
            raise ValueError(msg)
        names[name] = None
        if spec:
            # A format spec may itself hold fields, like {text:{width}}.
            _collect_fields(spec, names)


def messages_fault(value: Any) -> str | None:
    """What is wrong with *value* as a list of chat messages, or None."""
    if not isinstance(value, list):
        return (
            f"must be a JSON array of messages, not {json_type(value)}, like"
            ' [{"role": "user", "content": "Hello"}]'
        )
    if not value:
        return "is an empty array; give at least one message"
    for number, message in enumerate(value, 1):
        fault = _message_fault(message)
        if fault:
            return f"message {number} of {len(value)} {fault}"
    return None


def _message_fault(message: Any) -> str | None:
    if not isinstance(message, dict):
        return (
            f'is {json_type(message)}, not an object like {{"role": …, "content": …}}'
        )
    role = message.get("role")
    if role not in ROLES:
        return f"has role {role!r}; a role is one of {', '.join(ROLES)}"
    if "content" not in message:
        return "has no 'content'"
    content = message["content"]
    if content is None:
        return None if role == "assistant" else "has null content (only assistant may)"
    if isinstance(content, str):
        return None
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return None
    return (
        f"has {json_type(content)} content; content is a string or a list of parts"
        ' like [{"type": "text", "text": "Hello"}]'
    )
