"""
Offline token counting, exact for the OpenAI encodings.

``bpe-openai`` ships the official o200k/cl100k vocabularies (tiktoken would download
them at run time, which scheduled jobs behind a firewall cannot). When the model's
encoding is unknown, counts fall back to a documented estimate: one token per four
characters, rounded up, which is close for English text and errs high for code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

#: Model name prefixes → encoding; the longest matching prefix wins.
ENCODING_BY_PREFIX = {
    "gpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "gpt-oss": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-35-turbo": "cl100k_base",
    "gpt-3.5-turbo": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
}

#: bpe-openai refuses to encode more than this many tokens in one call.
_CHUNK_CHARS = 100_000
#: Chat framing per the OpenAI cookbook, which reproduces Azure's prompt_tokens.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


def encoding_name_for(model: str | None) -> str | None:
    """The encoding of *model* (a model or deployment name), or None when unknown."""
    if not model:
        return None
    name = model.lower()
    matches = [p for p in ENCODING_BY_PREFIX if name.startswith(p)]
    return ENCODING_BY_PREFIX[max(matches, key=len)] if matches else None


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    # Imported on first use: loading it costs a second and ~100 MB, which a run
    # that counts no tokens (no --tpm, --max-cost or --dry-run) should not pay.
    import bpe_openai

    return bpe_openai.get_encoding(name)


class TokenCounter:
    """Counts prompt tokens for one model; ``exact`` says whether it is an estimate."""

    def __init__(self, model: str | None) -> None:
        self.encoding_name = encoding_name_for(model)
        self.exact = self.encoding_name is not None
        self._encoding = _encoding(self.encoding_name) if self.encoding_name else None

    def count_text(self, text: str) -> int:
        """Tokens in *text* (special-token strings are counted as plain text)."""
        if not text:
            return 0
        if self._encoding is None:
            return math.ceil(len(text) / 4)
        encode = self._encoding.encode_ordinary
        return sum(
            len(encode(text[i : i + _CHUNK_CHARS]))
            for i in range(0, len(text), _CHUNK_CHARS)
        )

    def count_chat(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens of a chat request, as the service reports them."""
        total = _REPLY_PRIMING
        for message in messages:
            total += _PER_MESSAGE
            for key, value in message.items():
                total += self.count_text(content_text(value))
                if key == "name":
                    total += _PER_NAME
        return total


def content_text(value: Any) -> str:
    """The text of a message field; content may be a list of typed parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part.get("text", "") for part in value if isinstance(part, Mapping)
        )
    return "" if value is None else str(value)
