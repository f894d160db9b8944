"""
Context windows: the most tokens each model takes in one request.

Beside the price table, and looked up the same way (longest model-name prefix of
the ``model`` setting, else the deployment name). A prompt that does not fit is
refused by the service with ``400 context_length_exceeded`` for every attempt, so
batchrunner finds it before sending (and ``--dry-run`` reports it). A model that
is not here is not checked: a name that could mean models with different windows
(``gpt-4``: 8k, 32k or 128k by version) is left out on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextWindow:
    """*total* tokens of prompt and completion, of which at most *prompt* in."""

    total: int
    prompt: int


def _window(total: int, prompt: int | None = None) -> ContextWindow:
    return ContextWindow(total, total if prompt is None else prompt)


#: Model name prefix → its context window, from Azure OpenAI's model list.
CONTEXT_WINDOWS: dict[str, ContextWindow] = {
    "gpt-4o-mini": _window(128_000),
    "gpt-4o": _window(128_000),
    "gpt-4.1-nano": _window(1_047_576),
    "gpt-4.1-mini": _window(1_047_576),
    "gpt-4.1": _window(1_047_576),
    # The gpt-5 family takes 400k in all, of which 272k may be prompt.
    "gpt-5-nano": _window(400_000, 272_000),
    "gpt-5-mini": _window(400_000, 272_000),
    "gpt-5": _window(400_000, 272_000),
    "o4-mini": _window(200_000),
    "o3-mini": _window(200_000),
    "o3": _window(200_000),
    "gpt-4-turbo": _window(128_000),
    "gpt-4-32k": _window(32_768),
    "gpt-35-turbo-instruct": _window(4_097),
    "gpt-35-turbo": _window(16_385),
    "text-embedding-3-small": _window(8_191),
    "text-embedding-3-large": _window(8_191),
    "text-embedding-ada-002": _window(8_191),
}


def context_window(model: str | None) -> ContextWindow | None:
    """The window of *model* (a model or deployment name), or None when unknown."""
    name = (model or "").lower()
    matches = [prefix for prefix in CONTEXT_WINDOWS if name.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else None
