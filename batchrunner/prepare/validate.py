"""
The validation pass: the whole input read once, before anything is sent.

Each row goes through the same ``RequestBuilder`` that sending uses, so a file that
validates builds a request for every row. Problems come out as ``InputError`` with
the file, line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import Settings
from batchrunner.errors import CellError, InputError
from batchrunner.prepare.builder import RequestBuilder
from batchrunner.prepare.messages import template_fields
from batchrunner.records import Api, Request, Row
from batchrunner.rows.csv import read_header
from batchrunner.rows.files import check_readable, input_format
from batchrunner.rows.locate import located
from batchrunner.rows.reader import COLUMN_SAMPLE_ROWS, open_rows


@dataclass(frozen=True)
class InputReport:
    """What ``validate`` found: how many rows, and which columns."""

    rows: int
    #: The CSV header, or the keys seen in the first rows of a JSONL file.
    columns: list[str]


def validate(
    path: str,
    settings: Settings,
    *,
    name: str | None = None,
    observe: Callable[[Request], None] | None = None,
) -> InputReport:
    """
    Read the whole input once and raise its first problem as an ``InputError``.

    Each row goes through the ``RequestBuilder`` that sending uses, so a file that
    validates builds a request for every row; *observe*, when given, sees each
    request. *name* stands for *path* in messages. A template the settings cannot
    use is a ``ConfigError``.
    """
    shown = name or path
    builder = RequestBuilder(settings, path=shown)
    check_readable(path, shown)
    kind, _ = input_format(path, shown)
    header = None
    if kind == "csv":
        header, line = read_header(path, shown)
        _check_id_column(settings.input, header, shown, line)
        if builder.template is not None:
            builder.template.check_columns(header, f"the header of {shown}:{line}")
        else:
            _check_header(header, line, settings, shown)
    try:
        rows = open_rows(path, settings.input, name=name)
        found = _validate_rows(rows, builder, header, settings.input.id_column, observe)
    except CellError as exc:
        raise located(exc, path, header) from None
    if found.rows == 0:
        raise _no_rows(shown, kind, header is not None)
    if header is None:
        _check_id_column(settings.input, found.columns, shown, None)
    return found


def _check_id_column(
    columns: InputSettings, names: list[str], path: str, line: int | None
) -> None:
    """
    A renamed id column the file does not have is a mistake, not a reason to
    number the rows (only the default ``id`` may be absent).
    """
    id_column = columns.id_column
    if id_column == InputSettings().id_column or id_column in names:
        return
    problem = (
        f"input.id_column is {id_column!r}, but the rows have no such column (they"
        f" have {_listed(names)}); fix the name, or remove input.id_column to"
        " number the rows from 1"
    )
    raise InputError(path, line, None, problem)


def _no_rows(shown: str, kind: str, has_header: bool) -> InputError:
    """An input without a single row: as much a mistake as an empty CSV file."""
    if has_header:
        problem = "the file has a header but no rows; add a row for each prompt"
    elif shown == "<stdin>":
        problem = (
            "nothing came in on stdin; pipe JSONL into it, like"
            " cat prompts.jsonl | python -m batchrunner -"
        )
    else:
        problem = (
            f"the file is empty; a {kind.upper()} file holds one JSON object a line,"
            ' like {"id": "1", "prompt": "Hello"}'
        )
    return InputError(shown, None, None, problem)


def _validate_rows(
    rows: Iterator[Row],
    builder: RequestBuilder,
    header: list[str] | None,
    id_column: str,
    observe: Callable[[Request], None] | None = None,
) -> InputReport:
    first_line: dict[str, int] = {}
    columns = dict.fromkeys(header or ())
    count = 0
    for row in rows:
        count += 1
        if header is None and count <= COLUMN_SAMPLE_ROWS:
            columns.update(dict.fromkeys(row.fields))
        first = first_line.setdefault(row.id, row.line)
        if first != row.line:
            raise _duplicate(builder.path, id_column, row, first)
        request = builder.build(row)
        if observe is not None:
            observe(request)
    return InputReport(rows=count, columns=list(columns))


def _duplicate(path: str, id_column: str, row: Row, first: int) -> CellError:
    problem = (
        f"id {row.id!r} on line {row.line} duplicates line {first}; ids must be unique"
    )
    cell = id_column if id_column in row.fields else None
    return CellError(path, row.line, cell, problem)


def _check_header(header: list[str], line: int, settings: Settings, path: str) -> None:
    """Fail on line 1 when no row of this CSV could make a request."""
    columns = settings.input
    if columns.template:
        missing = [f for f in template_fields(columns.template) if f not in header]
        if missing:
            problem = (
                f"input.template uses {{{missing[0]}}}, but the header has no"
                f" {missing[0]!r} column; the columns are {_listed(header)}"
            )
            raise InputError(path, line, None, problem)
        return
    looked = [columns.prompt_column]
    if settings.api is Api.CHAT:
        looked.insert(0, columns.messages_column)
    if not any(name in header for name in looked):
        raise InputError(path, line, None, _no_source_problem(header, looked, settings))


def _no_source_problem(header: list[str], looked: list[str], settings: Settings) -> str:
    problem = (
        f"the header {_listed(header)} has no {' or '.join(map(repr, looked))}"
        " column to make requests from"
    )
    messages = settings.input.messages_column
    if settings.api is not Api.CHAT and messages in header:
        problem += (
            f"; the {messages!r} column only works with --api chat, so use a"
            f" {settings.input.prompt_column!r} column"
        )
    keys = "input.prompt_column"
    if settings.api is Api.CHAT:
        keys += " (or input.messages_column)"
    return (
        f"{problem}; rename your column, set {keys} to its name, or set"
        ' input.template to build prompts from columns, like "Summarise: {text}"'
    )


def _listed(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names) or "(none)"
