"""
Structured answers: a JSON schema that every answer must match.

The schema comes from ``--schema FILE`` (``schema:`` in the settings) or from
``request.response_format`` itself. It is sent as Azure's ``response_format``
(``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``), and each
answer is parsed and checked with ``jsonschema``: a match lands under ``answer``
(``answer_<field>`` columns in CSV/Parquet); anything else makes the row an error of
type ``SchemaError`` with the raw text kept in ``output``. Such rows are not retried
within the run (the same prompt tends to give the same answer); a re-run tries them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrunner.config.settings import Settings
from batchrunner.errors import ConfigError
from batchrunner.records import Api, ErrorInfo, RowResult

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

#: Azure's limits on ``json_schema.name``.
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")
_NAME_LENGTH = 64
#: Error messages quote at most this much of the answer or the schema fault.
_SHOWN = 300


def with_schema(settings: Settings) -> Settings:
    """*settings* with ``--schema FILE`` read into ``request.response_format``."""
    if not settings.schema:
        return settings
    source = settings.sources.get("schema", "default")
    response_format = load_schema_file(settings.schema, source)
    sources = dict(settings.sources)
    sources["request.response_format"] = f"schema {settings.schema} ({source})"
    request = {**settings.request, "response_format": response_format}
    return replace(settings, request=request, sources=sources)


def load_schema_file(path: str, source: str) -> dict[str, Any]:
    """
    The ``response_format`` for the schema file at *path* (set by *source*).

    The file holds a bare JSON schema (named after the file, strict), a
    ``{"name", "schema", "strict"}`` object, or a whole ``response_format``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        msg = f"schema file {path!r} ({source}): cannot read it: {reason}"
        raise ConfigError(msg) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        msg = f"{where}: the schema is not valid JSON: {exc.msg}"
        raise ConfigError(msg) from exc
    if not isinstance(data, dict):
        msg = f'{path}: a schema file holds a JSON object, like {{"type": "object"}}'
        raise ConfigError(msg)
    if data.get("type") == "json_schema" and "json_schema" in data:
        return data
    if isinstance(data.get("schema"), dict):
        return {"type": "json_schema", "json_schema": data}
    name = _NAME_CHARS.sub("_", Path(path).stem)[:_NAME_LENGTH] or "answer"
    wrapped = {"name": name, "schema": data, "strict": True}
    return {"type": "json_schema", "json_schema": wrapped}


class AnswerChecker:
    """Parses each ok answer as JSON and checks it against the response schema."""

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.schema = schema
        self._validator: Validator | None = None
        if schema is not None:
            from jsonschema import validators  # a run without a schema skips it

            self._validator = validators.validator_for(schema)(schema)
        properties = (schema or {}).get("properties")
        #: The CSV columns of the answer, in the schema's order.
        self.columns = [f"answer_{name}" for name in properties or {}]

    def check(self, result: RowResult) -> RowResult:
        """*result* with its parsed ``answer``, or turned into a ``SchemaError``."""
        reply = result.reply
        if result.status != "ok" or reply is None:
            return result
        text = reply.output
        if not isinstance(text, str):
            why = f"finish_reason {reply.finish_reason!r}"
            return _failed(result, "no_answer", f"the answer is empty ({why})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            message = (
                f"the answer is not valid JSON ({exc.msg} at line {exc.lineno}"
                f" column {exc.colno})"
            )
            if reply.finish_reason == "length":
                message += "; it was cut off at max_tokens: raise request.max_tokens"
            return _failed(result, "invalid_json", message)
        problem = self._problem(value)
        if problem is not None:
            return _failed(result, "schema_mismatch", problem)
        return replace(result, answer=value)

    def _problem(self, value: Any) -> str | None:
        if self._validator is None:
            if isinstance(value, dict):
                return None
            return "the answer is JSON but not an object"
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        return (
            f"the answer does not match the schema at {error.json_path}:"
            f" {error.message[:_SHOWN]}"
        )


def _failed(result: RowResult, code: str, message: str) -> RowResult:
    error = ErrorInfo(type="SchemaError", status_code=None, code=code, message=message)
    return replace(result, status="error", error=error, answer=None)


def checker_for(settings: Settings) -> AnswerChecker | None:
    """
    The answer checker the settings ask for, or None; a ``ConfigError`` when the
    ``response_format`` cannot work, so that nothing is sent.
    """
    response_format = settings.request.get("response_format")
    if response_format is None:
        return None
    where = _where(settings)
    if not isinstance(response_format, Mapping):
        msg = f"{where}: response_format must be an object, like {{type: json_object}}"
        raise ConfigError(msg)
    kind = response_format.get("type")
    if kind == "text":
        return None
    if settings.api is not Api.CHAT:
        msg = f"{where}: structured answers need --api chat, not {settings.api.value}"
        raise ConfigError(msg)
    choices = settings.request.get("n")
    if isinstance(choices, int) and choices > 1:
        msg = (
            f"{where}: structured answers with n > 1 are not supported (one answer"
            " a row becomes its columns); repeat the rows instead"
        )
        raise ConfigError(msg)
    if kind == "json_object":
        return AnswerChecker(None)
    if kind != "json_schema":
        msg = f"{where}: type {kind!r} is not json_schema, json_object or text"
        raise ConfigError(msg)
    return AnswerChecker(_checked_schema(response_format.get("json_schema"), where))


def _where(settings: Settings) -> str:
    source = settings.sources.get("request.response_format") or settings.sources.get(
        "request", "default"
    )
    return f"request.response_format ({source})"


def _checked_schema(wrapper: Any, where: str) -> dict[str, Any]:
    if not isinstance(wrapper, Mapping) or not isinstance(
        wrapper.get("schema"), Mapping
    ):
        msg = f"{where}: json_schema must be an object with a 'schema' object"
        raise ConfigError(msg)
    name = wrapper.get("name")
    if not isinstance(name, str) or not name or _NAME_CHARS.search(name):
        msg = f"{where}: json_schema.name {name!r} must be letters, digits, _ or -"
        raise ConfigError(msg)
    schema = dict(wrapper["schema"])
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        msg = f"{where}: not a valid JSON schema at {exc.json_path}: {exc.message}"
        raise ConfigError(msg) from None
    if schema.get("type") != "object":
        msg = f'{where}: the schema\'s root must be {{"type": "object"}}'
        raise ConfigError(msg)
    if wrapper.get("strict", False):
        _check_strict(schema, where)
    return schema


def _check_strict(schema: Mapping[str, Any], where: str) -> None:
    """Azure's two rules for strict schemas, checked before a row is sent."""
    for path, node in _objects(schema, "$"):
        properties = set(node.get("properties") or {})
        if node.get("additionalProperties") is not False:
            problem = 'every object needs "additionalProperties": false'
        elif set(node.get("required") or ()) != properties:
            problem = 'every property must be listed in "required"'
        else:
            continue
        msg = (
            f"{where}: with strict structured outputs {problem} (at {path}); fix the"
            ' schema, or wrap it as {"name": …, "strict": false, "schema": …}'
        )
        raise ConfigError(msg)


def _objects(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every object schema in *node*, with its JSON path."""
    if not isinstance(node, Mapping):
        return
    if node.get("type") == "object" or "properties" in node:
        yield path, node
    for key in ("properties", "$defs", "definitions"):
        for name, child in (node.get(key) or {}).items():
            yield from _objects(child, f"{path}.{key}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from _objects(node["items"], f"{path}.items")
    for key in ("anyOf", "oneOf", "allOf"):
        for index, child in enumerate(node.get(key) or []):
            yield from _objects(child, f"{path}.{key}[{index}]")
