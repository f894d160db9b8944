"""
Whether a prompt fits the model's context window, checked for every row before
anything is sent.

Cheap for the rows that surely fit: a token is at least one byte of UTF-8 and a
character at most four, so a prompt of few enough characters needs no counting.
Only a prompt that might not fit is counted, exactly where the model's encoding
is known (the tokenizer loads then, and only then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batchrunner.config.windows import ContextWindow, context_window
from batchrunner.prepare.tokens import TokenCounter, content_text
from batchrunner.records import Api

#: The most UTF-8 bytes, and so tokens, one character can make.
_TOKENS_PER_CHAR = 4
#: Chat framing, as ``TokenCounter.count_chat`` counts it, with room for a name.
_PER_MESSAGE = 4
_PRIMING = 3


class WindowCheck:
    """The context-window check of one run's *model* and *request* parameters."""

    def __init__(self, model: str | None, api: Api, request: Mapping[str, Any]):
        self.model = model
        self.window: ContextWindow | None = context_window(model)
        self._completion = _completion_tokens(api, request)
        self._counter: TokenCounter | None = None

    def chat_problem(self, messages: Iterable[Mapping[str, Any]]) -> str | None:
        """What is wrong with *messages* for the window, or None when they fit."""
        if self.window is None:
            return None
        messages = list(messages)
        # The hot path of every row: plain strings are measured without a call.
        chars = 0
        for message in messages:
            for value in message.values():
                chars += len(value) if type(value) is str else len(content_text(value))
        bound = _PRIMING + _PER_MESSAGE * len(messages) + _TOKENS_PER_CHAR * chars
        if self._fits(bound):
            return None
        return self._problem(self._count().count_chat(messages), "the messages come")

    def text_problem(self, text: str) -> str | None:
        """What is wrong with prompt *text* for the window, or None when it fits."""
        if self.window is None or self._fits(_TOKENS_PER_CHAR * len(text)):
            return None
        return self._problem(self._count().count_text(text), "the prompt comes")

    def _fits(self, tokens: int) -> bool:
        window = self.window
        assert window is not None
        return tokens <= window.prompt and tokens + self._completion <= window.total

    def _count(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(self.model)
        return self._counter

    def _problem(self, tokens: int, subject: str) -> str | None:
        if self._fits(tokens):
            return None
        window = self.window
        assert window is not None
        about = "" if self._count().exact else "about "
        if tokens > window.prompt:
            said = f"{subject} to {about}{tokens:,} tokens"
            limit = f"{self.model}'s context window takes {window.prompt:,}"
        else:
            said = (
                f"{subject} to {about}{tokens:,} tokens, and with max_tokens"
                f" ({self._completion:,}) to {tokens + self._completion:,}"
            )
            limit = f"{self.model}'s context window is {window.total:,} tokens"
        return (
            f"{said}, and {limit}: the service would refuse it"
            " (context_length_exceeded); shorten it, lower request.max_tokens, or"
            " use a model with a longer window"
        )


def _completion_tokens(api: Api, request: Mapping[str, Any]) -> int:
    """The completion tokens a request asks room for (once, whatever ``n``)."""
    if api is Api.EMBEDDINGS:
        return 0
    limit = request.get("max_tokens")
    if limit is None:
        limit = request.get("max_completion_tokens")
    if limit is None:
        # Legacy completions stop at 16 tokens unless told otherwise.
        limit = 16 if api is Api.COMPLETIONS else 0
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
