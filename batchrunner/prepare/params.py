"""
The parameters each operation takes under ``request:`` in the settings.

From the Azure OpenAI REST reference, as the openai SDK's ``create()`` signatures
list them (``openai.resources.chat.completions``, ``completions``, ``embeddings``;
a test keeps this table and the installed SDK in step), plus Azure's own
``data_sources`` for chat. A key the chosen operation does not take is refused
before anything is sent: a typo such as ``temprature`` would otherwise reach the
service with every row. A parameter newer than this table goes under
``request.extra_body``, which is sent as it stands, as the SDK does.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from batchrunner.errors import ConfigError
from batchrunner.records import Api

_SAMPLING = (
    "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "temperature", "top_p", "user",
)  # fmt: skip

_CHAT = (
    *_SAMPLING, "audio", "function_call", "functions", "max_completion_tokens",
    "metadata", "modalities", "moderation", "parallel_tool_calls", "prediction",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "service_tier",
    "store", "tool_choice", "tools", "top_logprobs", "verbosity",
    "web_search_options",
    # Azure's own: "On Your Data", in the REST reference, not in the SDK's list.
    "data_sources",
)  # fmt: skip

#: Operation → the request parameters it takes besides the row's text.
PARAMETERS: dict[Api, frozenset[str]] = {
    Api.CHAT: frozenset(_CHAT),
    Api.COMPLETIONS: frozenset((*_SAMPLING, "best_of", "echo", "suffix")),
    Api.EMBEDDINGS: frozenset(("dimensions", "encoding_format", "user")),
}

#: Keys the SDK's ``create()`` takes that have no place under ``request:``.
REFUSED = {
    "messages": "the request text comes from the input rows",
    "prompt": "the request text comes from the input rows",
    "input": "the request text comes from the input rows",
    "model": "the deployment names the model: use --deployment (or 'deployment:')",
    "stream": "batchrunner reads each answer whole; remove it",
    "stream_options": "batchrunner reads each answer whole; remove it",
    "timeout": "use the 'timeout' setting (--timeout) instead",
    "extra_headers": "it is an SDK option, not a parameter of the request",
    "extra_query": "it is an SDK option, not a parameter of the request",
}

#: Sent as it stands: the way to a parameter this table does not know yet.
EXTRA_BODY = "extra_body"

#: Parameters whose type the service checks on every row: what each must be.
_COUNTS = ("n", "best_of", "max_tokens", "max_completion_tokens", "dimensions")
_NUMBERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_FLAGS = ("logprobs", "echo", "store", "parallel_tool_calls")


def request_params(
    api: Api, request: Mapping[str, Any], sources: Mapping[str, str]
) -> dict[str, Any]:
    """
    The body parameters *request* adds to every *api* call; a ``ConfigError``
    for a key that *api* does not take, with the nearest name it does. *sources*
    says where each ``request.<key>`` was set, for the message.
    """
    params: dict[str, Any] = {}
    for key, value in request.items():
        if key == EXTRA_BODY:
            params.update(_extra_body(value))
        else:
            source = sources.get(f"request.{key}")
            check_key(api, str(key), source)
            check_value(str(key), value, source)
            params[key] = value
    return params


def check_value(key: str, value: Any, source: str | None = None) -> None:
    """Refuse a *value* of a type the service would refuse for *key*, on every row."""
    if key in _COUNTS:
        fits = _is_int(value) and value >= 1
        wanted = "a whole number of at least 1"
    elif key == "seed":
        fits, wanted = _is_int(value), "a whole number"
    elif key in _NUMBERS:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
        wanted = "a number"
    elif key in _FLAGS:
        fits, wanted = isinstance(value, bool), "true or false"
    else:
        return
    if not fits:
        where = f"request.{key}" + (f" ({source})" if source else "")
        msg = f"{where} must be {wanted}, not {value!r}"
        raise ConfigError(msg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_key(api: Api, key: str, source: str | None = None) -> None:
    """Refuse *key* under ``request:`` unless *api* takes it (set by *source*)."""
    where = f"request.{key}" + (f" ({source})" if source else "")
    if key in REFUSED:
        msg = f"{where} cannot be set: {REFUSED[key]}"
        raise ConfigError(msg)
    known = PARAMETERS[api]
    if key in known:
        return
    others = [a.value for a in Api if key in PARAMETERS[a]]
    if others:
        problem = f"--api {api.value} does not take it (only {', '.join(others)})"
        msg = f"{where}: {problem}; remove it, or choose that --api"
        raise ConfigError(msg)
    problem = f"it is not a parameter of --api {api.value}"
    hint = difflib.get_close_matches(key, sorted(known), n=1)
    if hint:
        problem += f" (did you mean {hint[0]!r}?)"
    msg = (
        f"{where}: {problem}; fix or remove it, or put a parameter this version"
        f" does not know under request.{EXTRA_BODY}"
    )
    raise ConfigError(msg)


def _extra_body(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        msg = f"request.{EXTRA_BODY} must map parameter names to values"
        raise ConfigError(msg)
    for key in value:
        if key in ("messages", "prompt", "input", "model"):
            msg = f"request.{EXTRA_BODY}.{key} cannot be set: {REFUSED[key]}"
            raise ConfigError(msg)
    return value
