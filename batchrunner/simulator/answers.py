"""
The simulator's deterministic answers: filler text echoing the question, cut to
a token budget as the model would, structured (JSON) answers, embeddings, and
the token counts every charge is made of.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any

import bpe_openai
import numpy as np

from batchrunner.prepare.tokens import TokenCounter, encoding_name_for
from batchrunner.simulator.config import Json
from batchrunner.simulator.schemagen import structured_text

_VOCABULARY = (
    "the quick answer covers data model token batch request result value system"
    " latency window quota budget prompt record output field reply stream retry"
    " limit queue worker thread cache index vector region service client server"
    " policy report summary detail context format schema sample metric signal"
    " status event order range scale score trend"
)

#: Filler words of the simulated answers.
_WORDS = _VOCABULARY.split()


@lru_cache(maxsize=32)
def counter(model: str) -> TokenCounter:
    return TokenCounter(model)


@lru_cache(maxsize=8)
def _encoder(model: str) -> Any:
    name = encoding_name_for(model)
    return bpe_openai.get_encoding(name) if name else None


@lru_cache(maxsize=16384)
def count_text(model: str, text: str) -> int:
    return counter(model).count_text(text)


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
def fit(model: str, text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """*text* cut to *max_tokens* tokens: (text, its tokens, whether it was cut)."""
    tokens = count_text(model, text)
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


def embedding(text: str, dimensions: int, encoding_format: str) -> str | list[float]:
    raw = _embedding_bytes(text, dimensions)
    if encoding_format == "base64":
        return base64.b64encode(raw).decode()
    # float32 values widen to doubles exactly, so both formats decode alike.
    vector: list[float] = np.frombuffer(raw, dtype="<f4").tolist()
    return vector


@lru_cache(maxsize=32)
def fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def generate(
    kind: str, model: str, prompt: str, index: int, max_tokens: int, question: str
) -> tuple[str, int, str]:
    """(text, tokens, finish_reason) of one choice."""
    text = _answer_text(kind, prompt, index, question)
    text, tokens, cut = fit(model, text, max_tokens or None)
    return text, tokens, "length" if cut else "stop"


def generate_json(
    model: str, prompt: str, index: int, max_tokens: int, response_format: Json
) -> tuple[str, int, str]:
    """(JSON text, tokens, finish_reason) of one choice of a structured answer."""
    text = structured_text(response_format, prompt, index)
    text, tokens, cut = fit(model, text, max_tokens or None)
    return text, tokens, "length" if cut else "stop"
