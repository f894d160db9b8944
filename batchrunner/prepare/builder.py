"""
Row → Request: the one place an input row becomes the body of an API call.

Pure: no I/O, no clock. The validator runs every row through the same
``RequestBuilder`` before anything is sent, so a file that validates cannot fail
here later. Build one ``RequestBuilder`` per run: it does the settings work once,
and ``build`` runs on the hot path of every request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchrunner.config.settings import Settings
from batchrunner.errors import CellError, ConfigError
from batchrunner.prepare.messages import messages_fault, template_fields
from batchrunner.prepare.params import request_params
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.prepare.window import WindowCheck
from batchrunner.records import Api, Request, Row
from batchrunner.rows.files import json_type

if TYPE_CHECKING:
    from batchrunner.prepare.templates import PromptTemplate

#: The service's default ``max_tokens`` for completions; chat has no such default.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def build_request(
    row: Row, settings: Settings, counter: TokenCounter | None
) -> Request:
    """The request for *row*; for many rows, build one ``RequestBuilder`` instead."""
    return RequestBuilder(settings, path="<input>", counter=counter).build(row)


class RequestBuilder:
    """
    Turns rows into requests for one run's *settings*.

    *path* names the input in error messages; *counter*, when given, counts the
    prompt tokens of each request.
    """

    def __init__(
        self, settings: Settings, *, path: str, counter: TokenCounter | None = None
    ) -> None:
        columns = settings.input
        self.path = path
        self._api = settings.api
        self._counter = counter
        self._messages_column = columns.messages_column
        self._prompt_column = columns.prompt_column
        self._system_column = columns.system_column
        self._system = columns.system or None
        self._template = columns.template or None
        self._template_fields = template_fields(columns.template or "")
        #: The Jinja2 template file, when set: it builds every row's prompt text.
        self.template = _template_file(settings)
        self._params = request_params(settings.api, settings.request, settings.sources)
        self._completion_allowance = completion_allowance(
            settings.api, settings.request
        )
        model = settings.model or settings.deployment
        self._window = WindowCheck(model, settings.api, settings.request)
        self._checks_window = self._window.window is not None
        self._excluded = frozenset(
            {
                columns.id_column,
                columns.messages_column,
                columns.prompt_column,
                columns.system_column,
            }
        )

    def columns(self, row: Row) -> dict[str, Any]:
        """The columns of *row* that its results record carries through."""
        excluded = self._excluded
        return {k: v for k, v in row.fields.items() if k not in excluded}

    def build(self, row: Row) -> Request:
        """The request for *row*; an ``InputError`` when the row cannot make one."""
        passthrough = self.columns(row)
        counter = self._counter
        if self._api is Api.CHAT:
            messages = self._messages(row)
            if self._checks_window:
                self._check_window(row, self._window.chat_problem(messages))
            body: dict[str, Any] = {"messages": messages, **self._params}
            tokens = counter.count_chat(messages) if counter else 0
        else:
            text = self._completion_text(row)
            if self._checks_window:
                self._check_window(row, self._window.text_problem(text))
            key = "prompt" if self._api is Api.COMPLETIONS else "input"
            body = {key: text, **self._params}
            tokens = counter.count_text(text) if counter else 0
        return Request(
            row_id=row.id,
            api=self._api,
            body=body,
            prompt_tokens=tokens,
            charged_tokens=tokens + self._completion_allowance,
            passthrough=passthrough,
        )

    def _check_window(self, row: Row, problem: str | None) -> None:
        if problem is None:
            return
        fields = row.fields
        columns = (self._messages_column, self._prompt_column)
        column = next((c for c in columns if not _is_blank(fields.get(c))), None)
        raise self._error(row, column, problem)

    def _messages(self, row: Row) -> list[dict[str, Any]]:
        raw = row.fields.get(self._messages_column)
        if _is_blank(raw):
            messages = [{"role": "user", "content": self._text(row)}]
        else:
            messages = self._parse_messages(row, raw)
        system = self._system_for(row)
        if system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        return messages

    def _completion_text(self, row: Row) -> str:
        if not _is_blank(row.fields.get(self._messages_column)):
            problem = (
                f"the {self._messages_column!r} column only works with --api chat;"
                f" for --api {self._api.value} put the text in a"
                f" {self._prompt_column!r} column (input.prompt_column) or set"
                " input.template"
            )
            raise self._error(row, self._messages_column, problem)
        return self._text(row)

    def _text(self, row: Row) -> str:
        """The prompt text: the template file, else the prompt column or template."""
        if self.template is not None:
            try:
                return self.template.render(row.fields)
            except ValueError as exc:
                raise self._error(row, None, str(exc)) from None
        value = row.fields.get(self._prompt_column)
        if not _is_blank(value):
            if not isinstance(value, str):
                problem = (
                    f"the {self._prompt_column!r} value must be text, not"
                    f" {json_type(value)}; quote it as a JSON string"
                )
                raise self._error(row, self._prompt_column, problem)
            return value
        if self._template is not None:
            return self._format(row)
        raise self._no_source(row)

    def _format(self, row: Row) -> str:
        template = self._template or ""
        fields = row.fields
        for name in self._template_fields:
            if name not in fields:
                problem = (
                    f"input.template uses {{{name}}}, but this row has no {name!r}"
                    f" column; its columns are {_names(fields)}"
                )
                raise self._error(row, None, problem)
            if fields[name] is None:
                problem = f"{name!r} is null, and input.template uses {{{name}}}"
                raise self._error(row, name, problem)
        try:
            text = template.format_map(fields)
        except (LookupError, AttributeError, TypeError, ValueError) as exc:
            problem = f"input.template {template!r} cannot format this row: {exc}"
            raise self._error(row, None, problem) from exc
        if not text.strip():
            raise self._error(row, None, "input.template made an empty prompt")
        return text

    def _no_source(self, row: Row) -> CellError:
        looked = [self._prompt_column]
        if self._api is Api.CHAT:
            looked.insert(0, self._messages_column)
        present = [name for name in looked if name in row.fields]
        if present:
            cells = " and ".join(repr(name) for name in present)
            noun = "cell is" if len(present) == 1 else "cells are"
            problem = (
                f"empty prompt: the {cells} {noun} empty; fill it in, or set"
                " input.template to build prompts from other columns"
            )
            return self._error(row, present[0], problem)
        problem = (
            f"this row has no {' or '.join(map(repr, looked))} column and"
            f" input.template is not set; its columns are {_names(row.fields)}."
            " Rename yours with input.prompt_column (or input.messages_column),"
            " or set input.template"
        )
        return self._error(row, None, problem)

    def _parse_messages(self, row: Row, raw: Any) -> list[dict[str, Any]]:
        column = self._messages_column
        value = raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                problem = (
                    f"the {column!r} cell is not valid JSON: {exc}; it must be a JSON"
                    ' array like [{"role": "user", "content": "Hello"}]'
                )
                raise self._error(row, column, problem) from None
        fault = messages_fault(value)
        if fault:
            raise self._error(row, column, f"{column!r}: {fault}")
        messages: list[dict[str, Any]] = value
        return messages

    def _system_for(self, row: Row) -> str | None:
        value = row.fields.get(self._system_column)
        if _is_blank(value):
            return self._system
        if not isinstance(value, str):
            problem = (
                f"the {self._system_column!r} value must be text, not"
                f" {json_type(value)}"
            )
            raise self._error(row, self._system_column, problem)
        return value

    def _error(self, row: Row, column_name: str | None, problem: str) -> CellError:
        return CellError(self.path, row.line, column_name, problem)


def _template_file(settings: Settings) -> PromptTemplate | None:
    path = settings.input.template_file
    if not path:
        return None
    if settings.input.template:
        msg = "set input.template or input.template_file (--template), not both"
        raise ConfigError(msg)
    from batchrunner.prepare.templates import (
        PromptTemplate,  # jinja2 only when asked for
    )

    source = settings.sources.get("input.template_file", "default")
    return PromptTemplate(path, source)


def completion_allowance(api: Api, request: Mapping[str, Any]) -> int:
    """
    The completion tokens Azure's limiter charges up front for one request.

    That is ``max_tokens`` (or ``max_completion_tokens``) × ``n``, × ``best_of``
    instead when larger for completions; embeddings charge their prompt only.
    """
    if api is Api.EMBEDDINGS:
        return 0
    limit = request.get("max_tokens")
    if limit is None:
        limit = request.get("max_completion_tokens")
    if limit is None:
        limit = COMPLETIONS_DEFAULT_MAX_TOKENS if api is Api.COMPLETIONS else 0
    choices = _whole("n", request.get("n", 1))
    if api is Api.COMPLETIONS:
        choices = max(choices, _whole("best_of", request.get("best_of", 1)))
    return _whole("max_tokens", limit) * choices


def _whole(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    msg = f"request.{name} must be a whole number, not {value!r}"
    raise ConfigError(msg)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _names(fields: Mapping[str, Any]) -> str:
    return ", ".join(repr(name) for name in fields) or "(none)"
