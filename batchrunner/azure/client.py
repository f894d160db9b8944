"""
The client: one ``AsyncAzureOpenAI`` per run, and the translation of its answers
and errors into ``Reply`` and ``ApiFailure``.

The pool knows only the ``Completer`` protocol, so a run can be pointed at any
implementation (the Batch API on the roadmap, a fake in unit tests).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx2
import openai
from openai import AsyncAzureOpenAI

from batchrunner.azure.headers import (
    is_retryable_status,
    parse_rate_limits,
    parse_retry_after,
)
from batchrunner.azure.transport import AiohttpClient
from batchrunner.azure.urlcache import install as install_url_cache
from batchrunner.config.groups import ClientSettings
from batchrunner.errors import ApiFailure
from batchrunner.records import Api, RateLimits, Reply, Request, Usage

TokenProvider = Callable[[], Awaitable[str]]


class Completer(Protocol):
    """Sends one request and returns its reply, or raises ``ApiFailure``."""

    async def complete(self, request: Request) -> Reply: ...

    async def aclose(self) -> None: ...


#: Where each operation is posted; the client routes it under the deployment.
PATHS = {
    Api.CHAT: "/chat/completions",
    Api.COMPLETIONS: "/completions",
    Api.EMBEDDINGS: "/embeddings",
}


class AzureCompleter:
    """
    Sends requests with the official SDK: retries off (``max_retries=0``, they are
    ours), one connection pool of *client.connections*.

    Requests go through the client's raw ``post``: the same auth, routing,
    api-version, headers, timeouts and errors as ``chat.completions.create``,
    without the typed-parameter transform and response models, which cost about
    a fifth of the CPU of a request and which a pass-through of user-given
    parameters has no use for. Exactly one of *api_key* and *token_provider*
    authenticates.
    """

    def __init__(
        self,
        client: ClientSettings,
        *,
        endpoint: str,
        deployment: str,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
    ) -> None:
        self.deployment = deployment
        install_url_cache()
        timeout = httpx2.Timeout(client.timeout, connect=min(client.timeout, 10.0))
        self._http = http_client(client, timeout)
        self.sdk = AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            api_version=client.api_version,
            api_key=api_key,
            azure_ad_token_provider=token_provider,
            max_retries=0,
            timeout=timeout,
            http_client=self._http,
        )

    def _body(self, request: Request) -> dict[str, Any]:
        body = {"model": self.deployment, **request.body}
        if request.api is Api.EMBEDDINGS:
            # As the SDK does by default: a quarter of the bytes of float lists.
            body.setdefault("encoding_format", "base64")
        return body

    async def complete(self, request: Request) -> Reply:
        """Send *request* once; a ``Reply``, or ``ApiFailure`` classified for retry."""
        started = time.monotonic()
        try:
            response = await self.sdk.post(
                PATHS[request.api], cast_to=httpx2.Response, body=self._body(request)
            )
        except openai.OpenAIError as exc:
            latency = round((time.monotonic() - started) * 1000)
            raise failure_from(exc, latency) from None
        latency = round((time.monotonic() - started) * 1000)
        data = json.loads(response.content)
        # One pass over the raw headers: httpx2's get() scans and decodes them all.
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in response.headers.raw
        }
        request_id = headers.get("x-request-id") or headers.get("apim-request-id")
        limits = parse_rate_limits(headers)
        return reply_from(request.api, data, request_id, latency, limits)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.sdk.close()
        await self._http.aclose()


def http_client(client: ClientSettings, timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    """
    The SDK's HTTP client: one pool of *client.connections* connections, over
    aiohttp unless the settings say httpx (the SDK's default transport).
    """
    limits = httpx2.Limits(
        max_connections=client.connections,
        max_keepalive_connections=client.connections,
    )
    if client.http_transport == "httpx":
        return httpx2.AsyncClient(limits=limits, timeout=timeout)
    return AiohttpClient(limits=limits, timeout=timeout)


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
    api: Api,
    data: Mapping[str, Any],
    request_id: str | None,
    latency_ms: int,
    limits: RateLimits | None = None,
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
            limits=limits,
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
        limits=limits,
    )


# --- failures ----------------------------------------------------------------

#: The ``type`` of a failure that got no answer at all: the connection was refused
#: or dropped, the name did not resolve, or the answer did not come in time.
CONNECTION_FAILURES = frozenset(
    {openai.APIConnectionError.__name__, openai.APITimeoutError.__name__}
)


#: Where services put their words in a JSON error body: Azure and OpenAI
#: (``message``), FastAPI apps and RFC 9457 problems (``detail``, ``title``),
#: OAuth (``error_description``), validation lists (``msg``).
_TEXT_KEYS = ("message", "detail", "error_description", "title", "msg", "error")


def _text_in(value: object, depth: int = 0) -> str | None:
    """The first text in a JSON error body *value*, searched a few levels deep."""
    if isinstance(value, str):
        return " ".join(value.split()) or None
    if depth > 3:
        return None
    if isinstance(value, list):  # FastAPI's validation errors: [{"msg": …}, …]
        texts = [text for item in value if (text := _text_in(item, depth + 1))]
        return "; ".join(texts) or None
    if isinstance(value, dict):
        for key in _TEXT_KEYS:
            text = _text_in(value.get(key), depth + 1)
            if text:
                return text
    return None


def _status_message(exc: openai.APIStatusError) -> str:
    """The service's own words for a failed request, wherever its body has them."""
    body = exc.body
    text = _text_in(body)
    if text is None:
        return _bare(exc)
    if isinstance(body, str) and "json" not in exc.response.headers.get(
        "content-type", ""
    ):
        # Gateways answer 502/503 in HTML or plain text; keep it short.
        return f"HTTP {exc.status_code}: {text[:200]}"
    return text


def _bare(exc: openai.APIStatusError) -> str:
    reason = exc.response.reason_phrase
    return f"HTTP {exc.status_code} {reason}".rstrip()


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
            retry_after=parse_retry_after(headers, throttled=exc.status_code == 429),
            request_id=exc.request_id or headers.get("apim-request-id"),
            latency_ms=latency_ms,
            limits=parse_rate_limits(headers),
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
