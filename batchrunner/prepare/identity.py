"""
Request identity: what makes two requests the same, within a run (``run_key``) and
across runs (``request_digest``), and the repeat counts the validation pass keeps.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

from batchrunner.records import Api, Request

#: JSON with sorted keys and no spaces: the same value always gives the same text.
canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode
_ENCODE_AS_IS = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, check_circular=False, default=str
).encode
_ROW_KEYS = ("messages", "prompt", "input")
#: From this many rows on, repeats are found by sorting (numpy) rather than counting.
_SORT_FROM = 20_000


def request_digest(api: Api, body: Mapping[str, Any]) -> bytes:
    """The SHA-256 that identifies a request by its operation and body."""
    text = canonical_json([api.value, body])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def stable_hash(key: Hashable) -> int:
    """
    A 64-bit hash of a ``run_key`` that is the same in every process (``hash()`` of
    a string is not), so repeat counts can be kept beside the output for re-runs.
    """
    digest = hashlib.blake2b(
        repr(key).encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def run_key(request: Request) -> Hashable:
    """
    What tells *request* apart from the other requests of its run.

    Only the part of the body built from the row (``messages``, ``prompt`` or
    ``input``): the rest, the model parameters from the settings, is the same for every
    row of a run. That makes the key exact and cheap: plain chat messages become a
    tuple of (role, content) pairs, anything else its JSON text.
    """
    body = request.body
    value = next((body[name] for name in _ROW_KEYS if name in body), None)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        pairs = []
        for message in value:
            if (
                type(message) is not dict
                or len(message) != 2
                or type(message.get("content")) is not str
                or "role" not in message
            ):
                return _ENCODE_AS_IS(value)
            pairs.append((message["role"], message["content"]))
        return tuple(pairs)
    return _ENCODE_AS_IS(body)


class RepeatCounter:
    """Counts requests by the hash of their ``run_key``, to find the repeats."""

    def __init__(self) -> None:
        self._hashes = array("q")

    def add(self, request: Request) -> None:
        """Count *request*."""
        self._hashes.append(stable_hash(run_key(request)))

    def repeats(self) -> dict[int, int]:
        """Key hash → how many requests share it, for those seen more than once."""
        if len(self._hashes) < _SORT_FROM:
            counted = Counter(self._hashes)
            return {key: count for key, count in counted.items() if count > 1}
        import numpy as np  # sorts 8 bytes a row, where a Counter takes ~100

        values, counts = np.unique(
            np.frombuffer(self._hashes, dtype=np.int64), return_counts=True
        )
        shared = counts > 1
        return dict(zip(values[shared].tolist(), counts[shared].tolist(), strict=True))
