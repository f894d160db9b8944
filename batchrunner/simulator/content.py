"""
Deterministic content: what each valid request is charged and answered (the
answers themselves come from ``answers``), and the prompt text where scripted
faults and filter words are sought.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchrunner.simulator.answers import (
    count_text,
    counter,
    embedding,
    fingerprint,
    fit,
    generate,
    generate_json,
)
from batchrunner.simulator.config import Json, SimConfig
from batchrunner.simulator.wire import (
    _OUTPUT_FILTER,
    _PROMPT_FILTER,
    _REDACTED_FILTER,
    _Reject,
)


def _content_text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, Mapping))
    return value if isinstance(value, str) else ""


def _flatten(operation: str, body: Json | None) -> str:
    """The prompt text of a request: where markers and filter words are sought."""
    if body is None:
        return ""
    if operation == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return ""
        contents = (m.get("content") for m in messages if isinstance(m, Mapping))
        return "\n".join(_content_text(content) for content in contents)
    value = body.get("prompt" if operation == "completions" else "input")
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class _Call:
    operation: str
    deployment: str | None
    api_version: str | None
    body: Json | None
    prompt: str
    request_id: str


@dataclass(frozen=True)
class _Plan:
    """A valid inference request: what it is charged and how to build its answer."""

    charge: int
    build: Callable[[_Call, str, bool], Json]


def _integer(body: Json, name: str, default: int, upper: int = 10_000_000) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
        msg = f"{value!r} is not valid for '{name}': expected an integer 1-{upper}."
        raise _Reject(msg, name)
    return value


def _max_tokens(body: Json, default: int) -> int:
    """The answer's token budget; 0 means unlimited."""
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return _integer(body, name, default)


def _texts(body: Json, name: str) -> list[str]:
    value = body.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise _Reject(f"'{name}' must be a string or a non-empty list of strings.", name)


def _response_format(body: Json) -> Json | None:
    """The JSON answer format asked for, or None for text; a 400 when malformed."""
    value = body.get("response_format")
    if value is None or (isinstance(value, Mapping) and value.get("type") == "text"):
        return None
    if not isinstance(value, Mapping) or value.get("type") not in (
        "json_object",
        "json_schema",
    ):
        msg = "Invalid value for 'response_format.type': expected one of 'text',"
        raise _Reject(f"{msg} 'json_object' or 'json_schema'.", "response_format")
    if value["type"] == "json_schema":
        wrapper = value.get("json_schema")
        if not isinstance(wrapper, Mapping) or not isinstance(
            wrapper.get("schema"), Mapping
        ):
            msg = "Missing required parameter: 'response_format.json_schema'."
            raise _Reject(msg, "response_format")
    return dict(value)


def _check_context(prompt_tokens: int, max_tokens: int, window: int | None) -> None:
    """A 400 ``context_length_exceeded`` when the request overflows the model."""
    if window is None or prompt_tokens + max_tokens <= window:
        return
    head = f"This model's maximum context length is {window} tokens. However,"
    if max_tokens:
        total = prompt_tokens + max_tokens
        message = (
            f"{head} you requested {total} tokens ({prompt_tokens} in the messages,"
            f" {max_tokens} in the completion). Please reduce the length of the"
            " messages or completion."
        )
    else:
        message = (
            f"{head} your messages resulted in {prompt_tokens} tokens. Please reduce"
            " the length of the messages."
        )
    raise _Reject(message, "messages", "context_length_exceeded")


def _plan_chat(body: Json, model: str, window: int | None = None) -> _Plan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reject("'messages' is a required property", "messages")
    if not all(isinstance(m, Mapping) for m in messages):
        raise _Reject("Each item of 'messages' must be an object.", "messages")
    n = _integer(body, "n", 1, 128)
    max_tokens = _max_tokens(body, 0)
    prompt_tokens = counter(model).count_chat(messages)
    _check_context(prompt_tokens, max_tokens * n, window)
    question = _content_text(messages[-1].get("content"))
    response_format = _response_format(body)

    def choice(prompt: str, index: int) -> tuple[str, int, str]:
        if response_format is not None:
            return generate_json(model, prompt, index, max_tokens, response_format)
        return generate("chat", model, prompt, index, max_tokens, question)

    def build(call: _Call, model: str, redact: bool) -> Json:
        choices, completion_tokens = [], 0
        filters = _REDACTED_FILTER if redact else _OUTPUT_FILTER
        for index in range(n):
            text, tokens, finish = choice(call.prompt, index)
            # A redacted answer is withheld whole.
            content = None if redact else text
            completion_tokens += 0 if redact else tokens
            choices.append(
                {
                    "content_filter_results": filters,
                    "finish_reason": "content_filter" if redact else finish,
                    "index": index,
                    "logprobs": None,
                    "message": {
                        "content": content,
                        "refusal": None,
                        "role": "assistant",
                    },
                }
            )
        return {
            "choices": choices,
            "created": int(time.time()),
            "id": "chatcmpl-" + call.request_id.replace("-", "")[:29],
            "model": model,
            "object": "chat.completion",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": _PROMPT_FILTER}
            ],
            "system_fingerprint": fingerprint(model),
            "usage": {
                "completion_tokens": completion_tokens,
                "completion_tokens_details": {"reasoning_tokens": 0},
                "prompt_tokens": prompt_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return _Plan(prompt_tokens + max_tokens * n, build)


def _plan_completions(body: Json, model: str) -> _Plan:
    prompts = _texts(body, "prompt")
    n = _integer(body, "n", 1, 128)
    best_of = _integer(body, "best_of", n, 128)
    if best_of < n:
        raise _Reject("best_of must be greater than or equal to n.", "best_of")
    # Legacy completions stop at 16 tokens unless told otherwise.
    max_tokens = _max_tokens(body, 16)
    prompt_tokens = sum(count_text(model, prompt) for prompt in prompts)

    def build(call: _Call, model: str, redact: bool) -> Json:
        choices, completion_tokens = [], 0
        filters = _REDACTED_FILTER if redact else _OUTPUT_FILTER
        for i, (prompt, k) in enumerate((p, k) for p in prompts for k in range(n)):
            text, tokens, finish = generate(
                "completions", model, prompt, k, max_tokens, prompt
            )
            if redact:
                # The filter cut the answer short.
                text, tokens, _ = fit(model, text, max(1, tokens // 2))
                finish = "content_filter"
            completion_tokens += tokens
            choices.append(
                {
                    "text": text,
                    "index": i,
                    "finish_reason": finish,
                    "logprobs": None,
                    "content_filter_results": filters,
                }
            )
        return {
            "id": "cmpl-" + call.request_id.replace("-", "")[:29],
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "prompt_filter_results": [
                {"prompt_index": p, "content_filter_results": _PROMPT_FILTER}
                for p in range(len(prompts))
            ],
            "usage": {
                "completion_tokens": completion_tokens,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # best_of answers are generated (and charged) for every prompt, n returned.
    return _Plan(prompt_tokens + max_tokens * best_of * len(prompts), build)


def _plan_embeddings(body: Json, model: str, default_dimensions: int) -> _Plan:
    texts = _texts(body, "input")
    dimensions = _integer(body, "dimensions", default_dimensions, 65_536)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        msg = f"{encoding_format!r} is not one of ['float', 'base64']"
        raise _Reject(msg, "encoding_format")
    prompt_tokens = sum(count_text(model, text) for text in texts)

    def build(call: _Call, model: str, redact: bool) -> Json:
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding(text, dimensions, encoding_format),
            }
            for i, text in enumerate(texts)
        ]
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    return _Plan(prompt_tokens, build)


def _plan(call: _Call, config: SimConfig, model: str) -> _Plan:
    if call.body is None:
        msg = (
            "We could not parse the JSON body of your request. The OpenAI API expects"
            " a JSON payload."
        )
        raise _Reject(msg)
    if call.operation == "chat":
        return _plan_chat(call.body, model, config.context_windows.get(model))
    if call.operation == "completions":
        return _plan_completions(call.body, model)
    return _plan_embeddings(call.body, model, config.embedding_dimensions)
