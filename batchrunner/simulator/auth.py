"""Who may call: an ``api-key`` header or an Entra ID bearer token, as Azure checks."""

from __future__ import annotations

from collections.abc import Mapping

from batchrunner.simulator.config import SimConfig
from batchrunner.simulator.wire import _KEY_DENIED, _TOKEN_DENIED, _Answer, _json_answer


def _authenticate(
    config: SimConfig, headers: Mapping[str, str]
) -> tuple[str, _Answer | None]:
    """Which credential was sent, and the 401 when it is not accepted."""
    refusal = _json_answer(401, config.key_denied_body or _KEY_DENIED)
    key = headers.get("api-key")
    if key is not None:
        return "api-key", None if key == config.api_key else refusal
    authorization = headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        validator = config.bearer_validator
        accepted = validator is not None and validator(authorization[7:].strip())
        return "bearer", None if accepted else _json_answer(401, _TOKEN_DENIED)
    return "none", refusal
