"""
The simulator's structured answers: deterministic JSON values that match a schema.

``structured_text(response_format, prompt, index)`` answers a request that asked for
``json_schema`` (or ``json_object``) with JSON text that is a function of the prompt.
Two words in the prompt make it misbehave, so tests can see how bad answers are
handled: ``BADJSON`` cuts the JSON text in half, ``BADSCHEMA`` returns valid JSON
that breaks the schema (a required property left out).

Covered: objects, arrays, strings (lengths, a few formats), integers and numbers
(bounds), booleans, null, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf`` and
local ``$ref``s. ``pattern`` is not honoured.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

BAD_JSON_WORD = "BADJSON"
BAD_SCHEMA_WORD = "BADSCHEMA"

_WORDS = (
    *("clear", "concise", "helpful", "neutral", "positive", "negative", "mixed"),
    *("brief", "detailed", "accurate", "relevant", "complete", "partial", "strong"),
    *("weak", "likely", "unlikely"),
)
_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T12:00:00Z",
    "time": "12:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/item",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
#: Deeper schemas (recursive ``$ref``s) end in null rather than recursing forever.
_MAX_DEPTH = 12


def structured_text(response_format: Mapping[str, Any], prompt: str, index: int) -> str:
    """The JSON text of choice *index* of an answer to *prompt*."""
    rng = random.Random(hashlib.sha256(f"{index}\0{prompt}".encode()).digest())
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema", {})
        value = _Maker(schema, rng).value(schema, 0)
    else:  # json_object: any object will do
        schema = {"type": "object", "required": ["answer"]}
        value = {"answer": " ".join(rng.choice(_WORDS) for _ in range(3))}
    if BAD_SCHEMA_WORD in prompt:
        value = _violating(schema, value)
    text = json.dumps(value, ensure_ascii=False)
    if BAD_JSON_WORD in prompt:
        text = text[: max(1, len(text) // 2)]
    return text


def _violating(schema: Mapping[str, Any], value: Any) -> Any:
    """*value* changed so that it no longer matches *schema*."""
    if isinstance(value, dict):
        required = [name for name in schema.get("required") or () if name in value]
        if required:
            return {k: v for k, v in value.items() if k != required[0]}
        if schema.get("additionalProperties") is False:
            return {**value, "unexpected": True}
    return ["not", "what", "the", "schema", "asks"]


class _Maker:
    """Builds one value for a schema, drawing choices from *rng*."""

    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
            return None
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [o for o in schema[key] if _kind(o) != "null"]
                return self.value((options or schema[key])[0], depth + 1)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(part if isinstance(part, Mapping) else {})
            return self.value(merged, depth + 1)
        return self._typed(_kind(schema), schema, depth)

    def _typed(self, kind: str, schema: Mapping[str, Any], depth: int) -> Any:
        if kind == "object":
            properties = schema.get("properties") or {}
            return {
                name: self.value(sub, depth + 1) for name, sub in properties.items()
            }
        if kind == "array":
            low = int(schema.get("minItems", 1))
            high = int(schema.get("maxItems", max(low, 3)))
            count = self.rng.randint(min(low, high), high)
            return [
                self.value(schema.get("items", {}), depth + 1) for _ in range(count)
            ]
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _integer(self, schema: Mapping[str, Any]) -> int:
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 11) - 1)
        return self.rng.randint(int(low), max(int(low), int(high)))

    def _number(self, schema: Mapping[str, Any]) -> float:
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 1.0)))
        # The middle half of the range keeps clear of exclusive bounds.
        return low + (high - low) * (0.25 + self.rng.random() / 2)

    def _string(self, schema: Mapping[str, Any]) -> str:
        text = _FORMATS.get(str(schema.get("format")))
        if text is None:
            text = " ".join(
                self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 4))
            )
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, len(text))))
        return text.ljust(low, "x")[:high]

    def _resolve(self, ref: str) -> Any:
        node: Any = self.root
        if not ref.startswith("#"):
            return {}
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, Mapping) else None
        return node


def _kind(schema: Any) -> str:
    """The type to make for *schema*: its first non-null type, else inferred."""
    if not isinstance(schema, Mapping):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else "string"
