"""
A fast, faithful Azure OpenAI simulator on loopback.

It answers ``/openai/deployments/{deployment}/chat/completions``, ``/completions``
and ``/embeddings`` the way Azure does on the wire (bodies, error bodies, headers,
429s with ``retry-after``/``retry-after-ms``), so the real ``AsyncAzureOpenAI``
client can be tested, demonstrated (``--simulate``) and benchmarked without a
network or a bill. Answers are deterministic functions of the request.

Scripted faults make tests deterministic: the k-th request whose prompt text is
``"… [[sim:429,500,reset]] …"`` gets the k-th fault (a 429, then a 500, then a
dropped connection) and normal answers once the list is used up. Fault names are
in ``FAULTS``.

Rate limits use one sliding window of ``window`` seconds: ``rpm * window / 60``
requests and ``tpm * window / 60`` tokens fit in it. As on Azure,
``x-ratelimit-limit-tokens`` is the per-minute TPM and ``x-ratelimit-limit-requests``
the per-window count; both ``remaining`` headers say what still fits in the window.

A request with a ``json_schema`` ``response_format`` gets a deterministic JSON
answer that matches the schema (``BADJSON`` / ``BADSCHEMA`` in the prompt break it,
see ``batchrunner.schemagen``).

Run it alone with ``python -m batchrunner.simulator --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import bpe_openai
import numpy as np
from aiohttp import web

from batchrunner.background import BackgroundServer
from batchrunner.schemagen import structured_text
from batchrunner.tokens import TokenCounter, encoding_name_for

Json = dict[str, Any]

FAULTS = ("429", "429long", "500", "502", "503", "408", "reset", "slow", "401", "404")
OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
}
REGION = "Sweden Central"
_MARKER = re.compile(r"\[\[sim:([^\]]*)\]\]")
_MAX_BODY = 64 * 1024 * 1024
#: Seconds unfinished answers get when the server stops: nothing is worth waiting for.
_SHUTDOWN_TIMEOUT = 0.5


def _default_deployments() -> dict[str, str]:
    return {
        "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
        "gpt-35-turbo-instruct": "gpt-35-turbo-instruct-0914",
        "text-embedding-3-small": "text-embedding-3-small",
    }


@dataclass
class SimConfig:
    """How the simulator behaves; fields may be changed while it runs."""

    api_key: str = "sim-key"
    #: Deployment name → the model name reported in answers.
    deployments: dict[str, str] = field(default_factory=_default_deployments)
    #: Seconds each answer takes, counted from the request's arrival.
    latency: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    window: float = 10.0
    seed: int = 0
    #: Fault kind → probability per request, drawn from ``random.Random(seed)``.
    fault_rates: dict[str, float] = field(default_factory=dict)
    slow_seconds: float = 30.0
    retry_after_ms: int = 200
    block_word: str = "BLOCKME"
    redact_word: str = "REDACTME"
    #: When set, ``Authorization: Bearer <t>`` is accepted iff ``validator(t)``.
    bearer_validator: Callable[[str], bool] | None = None
    embedding_dimensions: int = 1536
    #: Whether answers carry ``x-ratelimit-*`` headers (Azure's do; a proxy may not).
    rate_headers: bool = True


@dataclass(frozen=True)
class LedgerEntry:
    """One request as the simulator received and answered it."""

    #: ``time.monotonic()`` when the answer was decided.
    time: float
    deployment: str | None
    operation: str
    api_version: str | None
    auth: str
    body: Json | None
    #: HTTP status, or ``"reset"`` for a dropped connection.
    status: int | str
    #: Chat contents joined by newlines, the completions prompt or embeddings input.
    prompt: str


class Ledger:
    """
    What the simulator received; safe to read from any thread.

    With ``keep_entries=False`` only counts are kept, so a long benchmark does not
    hold every request body in memory.
    """

    def __init__(self, *, keep_entries: bool = True) -> None:
        self._lock = threading.Lock()
        self._keep = keep_entries
        self._counts: Counter[int | str] = Counter()
        self._script_hits: dict[str, int] = {}
        self._reset_hooks: list[Callable[[], None]] = []
        self.entries: list[LedgerEntry] = []
        self.in_flight = 0
        self.max_in_flight = 0
        #: Tokens charged to the rate limit by accepted requests.
        self.charged_tokens = 0

    def snapshot(self) -> Json:
        """Counts a benchmark in another process can read over HTTP."""
        with self._lock:
            return {
                "requests": self._counts.total(),
                "statuses": {str(k): v for k, v in self._counts.items()},
                "max_in_flight": self.max_in_flight,
                "charged_tokens": self.charged_tokens,
            }

    def count(self, status: int | str | None = None) -> int:
        """Requests received, or those answered with *status*."""
        with self._lock:
            return self._counts.total() if status is None else self._counts[status]

    def bodies(self) -> list[Json]:
        """Request JSON bodies in arrival order (unparsable ones left out)."""
        with self._lock:
            return [entry.body for entry in self.entries if entry.body is not None]

    def reset(self) -> None:
        """Forget every request, scripted-fault counter and rate-limit charge."""
        with self._lock:
            self.entries.clear()
            self._counts.clear()
            self._script_hits.clear()
            self.charged_tokens = 0
            self.max_in_flight = self.in_flight
            hooks = list(self._reset_hooks)
        for hook in hooks:
            hook()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _exit(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._counts[entry.status] += 1
            if self._keep:
                self.entries.append(entry)

    def add_charge(self, tokens: int) -> None:
        """Count *tokens* charged by an accepted request."""
        with self._lock:
            self.charged_tokens += tokens

    def _next_hit(self, prompt: str) -> int:
        """1 for the first request with this prompt, 2 for the second …"""
        with self._lock:
            hits = self._script_hits[prompt] = self._script_hits.get(prompt, 0) + 1
            return hits


# --- Azure's bodies, as real traffic shows them ------------------------------


def _error(code: str | None, message: str, **extra: Any) -> Json:
    return {"error": {"code": code, "message": message, **extra}}


def _invalid(message: str, param: str | None = None) -> Json:
    return _error(None, message, type="invalid_request_error", param=param)


_KEY_DENIED = _error(
    "401",
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure"
    " to provide a valid key for an active subscription and use a correct regional"
    " API endpoint for your resource.",
)
# Entra ID refusals come without the "error" wrapper.
_TOKEN_DENIED = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect"
    " (https://cognitiveservices.azure.com), or have expired.",
}
_NO_API_VERSION = _error(
    "MissingApiVersionParameter",
    "The api-version query parameter (?api-version=) is required for all requests.",
)
_NO_DEPLOYMENT = _error(
    "DeploymentNotFound",
    "The API deployment for this resource does not exist. If you created the"
    " deployment within the last 5 minutes, please wait a moment and try again.",
)
_NO_RESOURCE = _error("404", "Resource not found")
_TIMEOUT = _error("Timeout", "The operation was timeout.")
_SERVER_ERROR = (
    "The server had an error while processing your request. Sorry about that! You"
    " can retry your request, or contact us through an Azure support request at:"
    " https://go.microsoft.com/fwlink/?linkid=2213926 if the error persists. (Please"
    " include the request ID {} in your message.)"
)
# Gateways in front of the service answer 502/503 in HTML or plain text.
_BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>"
    "502 Bad Gateway</h1></center>\r\n<hr><center>Microsoft-Azure-Application-Gateway"
    "/v2</center>\r\n</body>\r\n</html>\r\n"
)
_UNAVAILABLE = (
    "upstream connect error or disconnect/reset before headers. reset reason:"
    " connection termination"
)
_SAFE = {"filtered": False, "severity": "safe"}
_HIGH = {"filtered": True, "severity": "high"}
_CLEAN = {"filtered": False, "detected": False}
_HARMS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTER = {**_HARMS, "jailbreak": _CLEAN}
_OUTPUT_FILTER = {
    **_HARMS,
    "protected_material_code": _CLEAN,
    "protected_material_text": _CLEAN,
}
_REDACTED_FILTER = {**_OUTPUT_FILTER, "violence": _HIGH}
_BLOCKED = _error(
    "content_filter",
    "The response was filtered due to the prompt triggering Azure OpenAI's content"
    " management policy. Please modify your prompt and retry. To learn more about our"
    " content filtering policies please read our documentation:"
    " https://go.microsoft.com/fwlink/?linkid=2198766",
    type=None,
    param="prompt",
    status=400,
    innererror={
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {**_HARMS, "sexual": _HIGH},
    },
)
_VOCABULARY = (
    "the quick answer covers data model token batch request result value system"
    " latency window quota budget prompt record output field reply stream retry"
    " limit queue worker thread cache index vector region service client server"
    " policy report summary detail context format schema sample metric signal"
    " status event order range scale score trend"
)
#: Filler words of the simulated answers.
_WORDS = _VOCABULARY.split()


@dataclass
class _Answer:
    """The decided answer to one request; ``status == "reset"`` drops the connection."""

    status: int | str
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0


def _json_answer(status: int, payload: Any, **headers: str) -> _Answer:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return _Answer(status, body, headers=headers)


class _Reject(Exception):
    """Raised while reading a request to answer it with a 400 at once."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.answer = _json_answer(400, _invalid(message, param))


# --- deterministic content ---------------------------------------------------------


@lru_cache(maxsize=32)
def _counter(model: str) -> TokenCounter:
    return TokenCounter(model)


@lru_cache(maxsize=8)
def _encoder(model: str) -> Any:
    name = encoding_name_for(model)
    return bpe_openai.get_encoding(name) if name else None


@lru_cache(maxsize=16384)
def _count_text(model: str, text: str) -> int:
    return _counter(model).count_text(text)


@lru_cache(maxsize=16384)
def _answer_text(kind: str, prompt: str, index: int, question: str) -> str:
    """An answer echoing the question's first words, then 5-40 filler words."""
    digest = hashlib.shake_256(f"{kind}\0{index}\0{prompt}".encode()).digest(41)
    words = question.split()
    head = " ".join(word[:24] for word in words[:5]) + (" …" if len(words) > 5 else "")
    extra = " ".join(_WORDS[b % len(_WORDS)] for b in digest[1 : 6 + digest[0] % 36])
    if kind == "chat":
        return f"Simulated answer to '{head}': {extra}."
    return f" Simulated completion of '{head}': {extra}."


@lru_cache(maxsize=16384)
def _fit(model: str, text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """*text* cut to *max_tokens* tokens: (text, its tokens, whether it was cut)."""
    tokens = _count_text(model, text)
    if max_tokens is None or tokens <= max_tokens:
        return text, tokens, False
    encoder = _encoder(model)
    if encoder is None:
        return text[: max_tokens * 4], max_tokens, True
    ids = encoder.encode_ordinary(text)[:max_tokens]
    # A cut can split a multi-byte character; drop the fragment.
    return encoder.decode_bytes(ids).decode("utf-8", "ignore"), max_tokens, True


@lru_cache(maxsize=1024)
def _embedding_bytes(text: str, dimensions: int) -> bytes:
    """A unit vector seeded by *text*, as little-endian float32 bytes."""
    seed = hashlib.shake_256(text.encode()).digest(dimensions * 2)
    vector = np.frombuffer(seed, dtype="<i2").astype("<f4")
    vector /= np.linalg.norm(vector) or 1.0
    return vector.tobytes()


def _embedding(text: str, dimensions: int, encoding_format: str) -> str | list[float]:
    raw = _embedding_bytes(text, dimensions)
    if encoding_format == "base64":
        return base64.b64encode(raw).decode()
    # float32 values widen to doubles exactly, so both formats decode alike.
    vector: list[float] = np.frombuffer(raw, dtype="<f4").tolist()
    return vector


@lru_cache(maxsize=32)
def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


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


# --- rate limiting -----------------------------------------------------------------


class _Limiter:
    """A sliding window of (time, tokens) charges, read against the live config."""

    def __init__(self) -> None:
        # The test thread resets it while the server thread charges it.
        self._lock = threading.Lock()
        self._charges: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def reset(self) -> None:
        with self._lock:
            self._charges.clear()
            self._tokens = 0

    def _evict(self, now: float, window: float) -> None:
        while self._charges and self._charges[0][0] <= now - window:
            self._tokens -= self._charges.popleft()[1]

    def charge(self, config: SimConfig, tokens: int) -> tuple[str, float] | None:
        """Charge a request, or refuse it: ("call"|"token", seconds until it fits)."""
        if config.rpm is None and config.tpm is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._evict(now, config.window)
            refusal = self._over_requests(config, now) or self._over_tokens(
                config, tokens, now
            )
            if refusal is None:
                self._charges.append((now, tokens))
                self._tokens += tokens
            return refusal

    def _over_requests(self, config: SimConfig, now: float) -> tuple[str, float] | None:
        excess = len(self._charges) + 1 - _request_limit(config)
        if config.rpm is None or excess <= 0:
            return None
        return "call", self._charges[excess - 1][0] + config.window - now

    def _over_tokens(
        self, config: SimConfig, tokens: int, now: float
    ) -> tuple[str, float] | None:
        limit = _token_limit(config)
        if config.tpm is None or self._tokens + tokens <= limit:
            return None
        # What is left after the oldest charges expire, one by one.
        left = self._tokens
        for at, charged in self._charges:
            left -= charged
            if left + tokens <= limit:
                return "token", at + config.window - now
        # Larger than a whole window: it never fits, so ask for a full window.
        return "token", config.window

    def headers(self, config: SimConfig) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers of the limits that are set."""
        headers: dict[str, str] = {}
        if (config.rpm is None and config.tpm is None) or not config.rate_headers:
            return headers
        with self._lock:
            self._evict(time.monotonic(), config.window)
            requests, tokens = len(self._charges), self._tokens
        if config.rpm is not None:
            limit = _request_limit(config)
            headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit - requests))
        if config.tpm is not None:
            left = max(0, math.floor(_token_limit(config) - tokens))
            headers["x-ratelimit-limit-tokens"] = str(config.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(left)
        return headers


def _request_limit(config: SimConfig) -> int:
    return max(1, math.floor((config.rpm or 0) * config.window / 60 + 0.5))


def _token_limit(config: SimConfig) -> float:
    return (config.tpm or 0) * config.window / 60


def _too_many(
    operation: str, api_version: str | None, kind: str, wait_ms: int
) -> _Answer:
    seconds = max(1, math.ceil(wait_ms / 1000))
    unit = "second" if seconds == 1 else "seconds"
    message = (
        f"Requests to the {OPERATIONS[operation]} Operation under Azure OpenAI API"
        f" version {api_version} have exceeded {kind} rate limit of your current"
        f" OpenAI S0 pricing tier. Please retry after {seconds} {unit}. Please go"
        " here: https://aka.ms/oai/quotaincrease if you would like to further"
        " increase the default rate limit."
    )
    headers = {"retry-after": str(seconds), "retry-after-ms": str(wait_ms)}
    return _json_answer(429, _error("429", message), **headers)


def _quota_exhausted(operation: str, api_version: str | None) -> _Answer:
    message = (
        f"Requests to the {OPERATIONS[operation]} Operation under Azure OpenAI API"
        f" version {api_version} have exceeded the daily token quota of your current"
        " OpenAI S0 pricing tier. Please retry after 86400 seconds. Please go here:"
        " https://aka.ms/oai/quotaincrease if you would like to further increase the"
        " default rate limit."
    )
    headers = {"retry-after": "86400", "retry-after-ms": "86400000"}
    return _json_answer(429, _error("429", message), **headers)


# --- one request -------------------------------------------------------------------


class Waker:
    """
    Sleeps until a deadline, on time on average. asyncio wakes a sleeper up to
    a millisecond late (epoll counts whole milliseconds, rounded up) and later
    still when the loop is busy; a 100 ms answer would take 102. This learns
    how late wake-ups come and goes to sleep that much earlier.
    """

    #: The most lateness it makes up for, and how fast it follows a change.
    MAX_LATE = 0.005
    WEIGHT = 0.1

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.late = 0.0
        self._clock = clock

    def wait_for(self, deadline: float) -> float:
        """Seconds to sleep now so as to wake up at *deadline*."""
        return deadline - self._clock() - self.late

    def woke(self, asked: float) -> None:
        """Learn from a wake-up that was asked for at clock time *asked*."""
        sample = self._clock() - asked
        late = (1 - self.WEIGHT) * self.late + self.WEIGHT * sample
        self.late = min(self.MAX_LATE, max(0.0, late))

    async def sleep_until(self, deadline: float) -> None:
        """Return at *deadline* (at once when it has passed)."""
        wait = self.wait_for(deadline)
        if wait > 0:
            asked = self._clock() + wait
            await asyncio.sleep(wait)
            self.woke(asked)


@dataclass
class _State:
    config: SimConfig
    ledger: Ledger
    limiter: _Limiter
    rng: random.Random
    waker: Waker = field(default_factory=Waker)


_STATE = web.AppKey("batchrunner_simulator_state", _State)


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


def _authenticate(
    config: SimConfig, headers: Mapping[str, str]
) -> tuple[str, _Answer | None]:
    """Which credential was sent, and the 401 when it is not accepted."""
    key = headers.get("api-key")
    if key is not None:
        denied = None if key == config.api_key else _json_answer(401, _KEY_DENIED)
        return "api-key", denied
    authorization = headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        validator = config.bearer_validator
        accepted = validator is not None and validator(authorization[7:].strip())
        return "bearer", None if accepted else _json_answer(401, _TOKEN_DENIED)
    return "none", _json_answer(401, _KEY_DENIED)


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


def _generate(
    kind: str, model: str, prompt: str, index: int, max_tokens: int, question: str
) -> tuple[str, int, str]:
    """(text, tokens, finish_reason) of one choice."""
    text = _answer_text(kind, prompt, index, question)
    text, tokens, cut = _fit(model, text, max_tokens or None)
    return text, tokens, "length" if cut else "stop"


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


def _generate_json(
    model: str, prompt: str, index: int, max_tokens: int, response_format: Json
) -> tuple[str, int, str]:
    """(JSON text, tokens, finish_reason) of one choice of a structured answer."""
    text = structured_text(response_format, prompt, index)
    text, tokens, cut = _fit(model, text, max_tokens or None)
    return text, tokens, "length" if cut else "stop"


def _plan_chat(body: Json, model: str) -> _Plan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reject("'messages' is a required property", "messages")
    if not all(isinstance(m, Mapping) for m in messages):
        raise _Reject("Each item of 'messages' must be an object.", "messages")
    n = _integer(body, "n", 1, 128)
    max_tokens = _max_tokens(body, 0)
    prompt_tokens = _counter(model).count_chat(messages)
    question = _content_text(messages[-1].get("content"))
    response_format = _response_format(body)

    def choice(prompt: str, index: int) -> tuple[str, int, str]:
        if response_format is not None:
            return _generate_json(model, prompt, index, max_tokens, response_format)
        return _generate("chat", model, prompt, index, max_tokens, question)

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
            "system_fingerprint": _fingerprint(model),
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
    prompt_tokens = sum(_count_text(model, prompt) for prompt in prompts)

    def build(call: _Call, model: str, redact: bool) -> Json:
        choices, completion_tokens = [], 0
        filters = _REDACTED_FILTER if redact else _OUTPUT_FILTER
        for i, (prompt, k) in enumerate((p, k) for p in prompts for k in range(n)):
            text, tokens, finish = _generate(
                "completions", model, prompt, k, max_tokens, prompt
            )
            if redact:
                # The filter cut the answer short.
                text, tokens, _ = _fit(model, text, max(1, tokens // 2))
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
    prompt_tokens = sum(_count_text(model, text) for text in texts)

    def build(call: _Call, model: str, redact: bool) -> Json:
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _embedding(text, dimensions, encoding_format),
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
        return _plan_chat(call.body, model)
    if call.operation == "completions":
        return _plan_completions(call.body, model)
    return _plan_embeddings(call.body, model, config.embedding_dimensions)


def _pick_fault(state: _State, call: _Call) -> str | None:
    """The scripted fault for this request, else a random one, else None."""
    match = _MARKER.search(call.prompt)
    if match:
        script = [name.strip() for name in match[1].split(",")]
        hit = state.ledger._next_hit(call.prompt)
        if hit <= len(script):
            return script[hit - 1]
    rates = state.config.fault_rates
    if not rates:
        return None
    draw, total = state.rng.random(), 0.0
    for kind in sorted(rates):
        total += rates[kind]
        if draw < total:
            return kind
    return None


def _fault_answer(state: _State, call: _Call, fault: str) -> _Answer:
    """The answer *fault* stands for (not ``slow``, which answers normally, late)."""
    match fault:
        case "429":
            retry_ms = state.config.retry_after_ms
            return _too_many(call.operation, call.api_version, "token", retry_ms)
        case "429long":
            return _quota_exhausted(call.operation, call.api_version)
        case "500":
            message = _SERVER_ERROR.format(call.request_id)
            return _json_answer(
                500, _error(None, message, type="server_error", param=None)
            )
        case "502":
            return _Answer(502, _BAD_GATEWAY.encode(), "text/html")
        case "503":
            return _Answer(503, _UNAVAILABLE.encode(), "text/plain")
        case "408":
            return _json_answer(408, _TIMEOUT)
        case "reset":
            return _Answer("reset")
        case "401":
            return _json_answer(401, _KEY_DENIED)
        case "404":
            return _json_answer(404, _NO_DEPLOYMENT)
    message = f"unknown simulator fault {fault!r}; known faults: {', '.join(FAULTS)}"
    return _json_answer(400, _error("SimulatorError", message))


def _infer(state: _State, call: _Call, model: str) -> _Answer:
    """Answer a request that passed the auth, api-version and deployment checks."""
    config = state.config
    fault = _pick_fault(state, call)
    if fault not in (None, "slow"):
        return _fault_answer(state, call, fault)
    try:
        plan = _plan(call, config, model)
    except _Reject as reject:
        return reject.answer
    refusal = state.limiter.charge(config, plan.charge)
    if refusal is not None:
        kind, wait = refusal
        wait_ms = max(1, math.ceil(wait * 1000))
        return _too_many(call.operation, call.api_version, kind, wait_ms)
    state.ledger.add_charge(plan.charge)
    if config.block_word and config.block_word in call.prompt:
        return _json_answer(400, _BLOCKED)
    redact = bool(config.redact_word) and config.redact_word in call.prompt
    answer = _json_answer(200, plan.build(call, model, redact))
    answer.stall = config.slow_seconds if fault == "slow" else 0.0
    return answer


def _decide(
    state: _State, call: _Call, headers: Mapping[str, str]
) -> tuple[str, _Answer]:
    """(auth kind, answer), checked in Azure's order: auth, api-version, deployment."""
    auth, denied = _authenticate(state.config, headers)
    if denied is not None:
        return auth, denied
    if call.api_version is None:
        return auth, _json_answer(400, _NO_API_VERSION)
    if call.operation not in OPERATIONS:
        return auth, _json_answer(404, _NO_RESOURCE)
    model = state.config.deployments.get(call.deployment or "")
    if model is None:
        return auth, _json_answer(404, _NO_DEPLOYMENT)
    return auth, _infer(state, call, model)


async def _read_call(request: web.Request, operation: str) -> _Call:
    body: Json | None = None
    if request.can_read_body:
        with contextlib.suppress(ValueError):
            parsed = json.loads(await request.read())
            body = parsed if isinstance(parsed, dict) else None
    return _Call(
        operation=operation,
        deployment=request.match_info.get("deployment"),
        api_version=request.query.get("api-version"),
        body=body,
        prompt=_flatten(operation, body),
        request_id=str(uuid.uuid4()),
    )


async def _serve(state: _State, request: web.Request, operation: str) -> web.Response:
    arrived = time.monotonic()
    call = await _read_call(request, operation)
    auth, answer = _decide(state, call, request.headers)
    entry = LedgerEntry(
        time=time.monotonic(),
        deployment=call.deployment,
        operation=operation,
        api_version=call.api_version,
        auth=auth,
        body=call.body,
        status=answer.status,
        prompt=call.prompt,
    )
    state.ledger._record(entry)
    # The latency is the answer's whole time from the request's arrival, as
    # with a service that has cores of its own: the simulator's own work (it
    # shares a machine with the client under test) is taken out of it.
    delay = state.config.latency + answer.stall
    if delay > 0:
        await state.waker.sleep_until(arrived + delay)
    if not isinstance(answer.status, int):
        # Drop the connection with nothing sent. aiohttp then finds the transport
        # closed and quietly discards the response returned here.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    headers = {
        "x-request-id": call.request_id,
        "apim-request-id": str(uuid.uuid4()),
        "x-ms-region": REGION,
        "Content-Type": answer.content_type,
        **state.limiter.headers(state.config),
        **answer.headers,
    }
    if call.deployment is not None:
        headers["x-ms-deployment-name"] = call.deployment
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def _handler(operation: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[_STATE]
        state.ledger._enter()
        try:
            return await _serve(state, request, operation)
        finally:
            state.ledger._exit()

    return handle


def _check_faults(rates: Mapping[str, float]) -> None:
    unknown = sorted(set(rates) - set(FAULTS))
    if unknown:
        msg = f"unknown fault kinds {unknown}; known faults: {', '.join(FAULTS)}"
        raise ValueError(msg)


def create_app(config: SimConfig, ledger: Ledger) -> web.Application:
    """The simulator as an aiohttp application that records into *ledger*."""
    _check_faults(config.fault_rates)
    state = _State(config, ledger, _Limiter(), random.Random(config.seed))

    def reset() -> None:
        state.limiter.reset()
        state.rng = random.Random(config.seed)

    ledger._reset_hooks.append(reset)
    # aiohttp's 1 MiB default would refuse a long-context prompt or a big batch.
    app = web.Application(client_max_size=_MAX_BODY)
    app[_STATE] = state
    prefix = "/openai/deployments/{deployment}/"
    app.router.add_post(prefix + "chat/completions", _handler("chat"))
    app.router.add_post(prefix + "completions", _handler("completions"))
    app.router.add_post(prefix + "embeddings", _handler("embeddings"))
    app.router.add_get(STATS_PATH, _stats)
    app.router.add_route("*", "/{tail:.*}", _handler("other"))
    return app


#: Where a simulator in another process tells what it received (not Azure's API).
STATS_PATH = "/_simulator/stats"


async def _stats(request: web.Request) -> web.Response:
    ledger = request.app[_STATE].ledger
    return web.json_response(ledger.snapshot())


# --- running it --------------------------------------------------------------------


async def _start(
    app: web.Application, host: str, port: int
) -> tuple[web.AppRunner, int]:
    # Binding the socket here tells the real port when port 0 was asked for.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # A client that gave up (timeout, reset) ends its handler at once.
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimulatorServer(BackgroundServer):
    """The simulator on its own event loop in a daemon thread."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config if config is not None else SimConfig()
        self.ledger = Ledger()
        self.host = host
        self.port = port
        super().__init__()

    @property
    def url(self) -> str:
        """The ``azure_endpoint`` to give the client, once started."""
        if self._thread is None:
            msg = "the simulator is not running; call start() first"
            raise RuntimeError(msg)
        return _url(self.host, self.port)

    async def _serve(self) -> web.AppRunner:
        app = create_app(self.config, self.ledger)
        runner, self.port = await _start(app, self.host, self.port)
        return runner


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name:
        msg = f"expected NAME=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, value or name


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m batchrunner.simulator",
        description="Serve a simulated Azure OpenAI endpoint until SIGINT/SIGTERM.",
    )
    add, defaults = parser.add_argument, SimConfig()
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port")
    add("--api-key", default=defaults.api_key)
    add(
        "--latency", type=float, default=0.0,
        help="seconds every answer takes, from the request's arrival",
    )  # fmt: skip
    add("--rpm", type=int)
    add("--tpm", type=int)
    add("--window", type=float, default=defaults.window, help="rate-limit window, s")
    add("--seed", type=int, default=0)
    add("--slow-seconds", type=float, default=defaults.slow_seconds)
    add("--retry-after-ms", type=int, default=defaults.retry_after_ms)
    add("--embedding-dimensions", type=int, default=defaults.embedding_dimensions)
    add(
        "--no-rate-headers",
        dest="rate_headers",
        action="store_false",
        help="answer without x-ratelimit-* headers",
    )
    add("--fault", action="append", default=[], type=_pair, metavar="KIND=RATE")
    add(
        "--deployment",
        action="append",
        default=[],
        type=_pair,
        metavar="NAME=MODEL",
        help="add a deployment (MODEL defaults to NAME)",
    )
    args = parser.parse_args(argv)
    try:
        args.fault = {kind: float(rate) for kind, rate in args.fault}
        _check_faults(args.fault)
    except ValueError as exc:
        parser.error(f"--fault: {exc}")
    return args


async def _serve_until_signalled(config: SimConfig, host: str, port: int) -> None:
    # Nobody reads this ledger: keep counts only, not every body.
    app = create_app(config, Ledger(keep_entries=False))
    runner, port = await _start(app, host, port)
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers; Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print(f"batchrunner simulator listening on {_url(host, port)}", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    config = SimConfig(
        api_key=args.api_key,
        deployments={**_default_deployments(), **dict(args.deployment)},
        latency=args.latency,
        rpm=args.rpm,
        tpm=args.tpm,
        window=args.window,
        seed=args.seed,
        fault_rates=args.fault,
        slow_seconds=args.slow_seconds,
        rate_headers=args.rate_headers,
        retry_after_ms=args.retry_after_ms,
        embedding_dimensions=args.embedding_dimensions,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, args.host, args.port))


if __name__ == "__main__":
    main()
