"""
The client: one ``AsyncAzureOpenAI`` per run, and the translation of its answers
and errors into ``Reply`` and ``ApiFailure``.

The pool knows only the ``Completer`` protocol, so a run can be pointed at any
implementation (the Batch API on the roadmap, a fake in unit tests).
"""

from __future__ import annotations

import base64
import inspect
import json
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx2
import openai
from openai import AsyncAzureOpenAI

from batchrunner.errors import ApiFailure
from batchrunner.records import Api, Reply, Request, Usage
from batchrunner.retry import is_retryable_status, parse_retry_after
from batchrunner.settings import Settings

TokenProvider = Callable[[], Awaitable[str]]


class Completer(Protocol):
    """Sends one request and returns its reply, or raises ``ApiFailure``."""

    async def complete(self, request: Request) -> Reply: ...

    async def aclose(self) -> None: ...


def _known_parameters(method: Callable[..., Any]) -> frozenset[str]:
    skip = {"self", "model", "extra_headers", "extra_query", "extra_body", "timeout"}
    return frozenset(inspect.signature(method).parameters) - skip


class AzureCompleter:
    """
    Sends requests with the official SDK: retries off (``max_retries=0``, they are
    ours), one connection pool sized to *settings.concurrency*.

    Exactly one of *api_key* and *token_provider* authenticates.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        endpoint: str,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
    ) -> None:
        assert settings.deployment
        self.deployment = settings.deployment
        timeout = httpx2.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
        limits = httpx2.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        self._http = httpx2.AsyncClient(limits=limits, timeout=timeout)
        self.sdk = AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            api_version=settings.api_version,
            api_key=api_key,
            azure_ad_token_provider=token_provider,
            max_retries=0,
            timeout=timeout,
            http_client=self._http,
        )
        self._create: dict[Api, Callable[..., Awaitable[Any]]] = {
            Api.CHAT: self.sdk.chat.completions.with_raw_response.create,
            Api.COMPLETIONS: self.sdk.completions.with_raw_response.create,
            Api.EMBEDDINGS: self.sdk.embeddings.with_raw_response.create,
        }
        self._known = {
            Api.CHAT: _known_parameters(self.sdk.chat.completions.create),
            Api.COMPLETIONS: _known_parameters(self.sdk.completions.create),
            Api.EMBEDDINGS: _known_parameters(self.sdk.embeddings.create),
        }

    def _arguments(self, request: Request) -> dict[str, Any]:
        # Parameters the SDK does not name yet (Azure extensions, new features)
        # still reach the service, through extra_body.
        known = self._known[request.api]
        arguments: dict[str, Any] = {"model": self.deployment}
        extra: dict[str, Any] = {}
        for key, value in request.body.items():
            (arguments if key in known else extra)[key] = value
        if extra:
            arguments["extra_body"] = extra
        return arguments

    async def complete(self, request: Request) -> Reply:
        """Send *request* once; a ``Reply``, or ``ApiFailure`` classified for retry."""
        started = time.monotonic()
        try:
            raw = await self._create[request.api](**self._arguments(request))
        except openai.OpenAIError as exc:
            latency = round((time.monotonic() - started) * 1000)
            raise failure_from(exc, latency) from None
        latency = round((time.monotonic() - started) * 1000)
        data = json.loads(raw.content)
        request_id = raw.headers.get("x-request-id") or raw.headers.get(
            "apim-request-id"
        )
        return reply_from(request.api, data, request_id, latency)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.sdk.close()
        await self._http.aclose()


# --- answers -----------------------------------------------------------------


def _usage_from(data: Mapping[str, Any]) -> Usage:
    usage = data.get("usage") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        total_tokens=usage.get("total_tokens") or 0,
        cached_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def _decode_embedding(value: Any) -> list[float]:
    if isinstance(value, list):
        return [float(v) for v in value]
    # The SDK asks for base64 by default: little-endian float32.
    floats = array("f")
    floats.frombytes(base64.b64decode(value))
    if sys.byteorder != "little":
        floats.byteswap()
    return floats.tolist()


def reply_from(
    api: Api, data: Mapping[str, Any], request_id: str | None, latency_ms: int
) -> Reply:
    """The ``Reply`` in a successful response body *data*."""
    if api is Api.EMBEDDINGS:
        items = data.get("data") or []
        if not items:
            raise ApiFailure(kind="EmptyResponse", message="no embedding in the answer")
        return Reply(
            output=None,
            embedding=_decode_embedding(items[0].get("embedding")),
            finish_reason=None,
            usage=_usage_from(data),
            model=data.get("model"),
            request_id=request_id,
            latency_ms=latency_ms,
        )
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    if api is Api.CHAT:
        texts = [(c.get("message") or {}).get("content") for c in choices]
    else:
        texts = [c.get("text") for c in choices]
    output: str | list[str | None] | None = texts[0] if len(texts) == 1 else texts
    return Reply(
        output=output,
        embedding=None,
        finish_reason=choices[0].get("finish_reason") if choices else None,
        usage=_usage_from(data),
        model=data.get("model"),
        request_id=request_id,
        latency_ms=latency_ms,
    )


# --- failures ----------------------------------------------------------------


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(body, str) and body.strip():
        # Gateways answer 502/503 in HTML; keep it short.
        return f"HTTP {exc.status_code}: {' '.join(body.split())[:200]}"
    return f"HTTP {exc.status_code}"


def failure_from(exc: openai.OpenAIError, latency_ms: int | None = None) -> ApiFailure:
    """Classify an SDK exception for the retry policy and the results record."""
    kind = type(exc).__name__
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        return ApiFailure(
            kind=kind,
            message=_status_message(exc),
            status_code=exc.status_code,
            code=exc.code,
            retryable=is_retryable_status(exc.status_code),
            retry_after=parse_retry_after(headers),
            request_id=exc.request_id or headers.get("apim-request-id"),
            latency_ms=latency_ms,
        )
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        cause = exc.__cause__
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        return ApiFailure(
            kind=kind,
            message=f"{exc.message}{detail}",
            retryable=True,
            latency_ms=latency_ms,
        )
    return ApiFailure(kind=kind, message=str(exc), latency_ms=latency_ms)
