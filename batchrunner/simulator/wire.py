"""
Azure's answers as real traffic shows them: error bodies, content-filter
results, 429s; and the decided answer to one request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from batchrunner.simulator.config import OPERATIONS, Json


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

    def __init__(
        self, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        payload = _error(code, message, type="invalid_request_error", param=param)
        self.answer = _json_answer(400, payload)


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
