"""
JSONL rows: one JSON object a line, each with the line it is on.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from batchrunner.config.sections import InputSettings
from batchrunner.errors import CellError, InputError
from batchrunner.records import Row

if TYPE_CHECKING:
    pass
from batchrunner.rows.files import json_type, nonempty_id

_ABSENT = object()


def jsonl_rows(
    lines: Iterable[str], path: str, settings: InputSettings
) -> Iterator[Row]:
    # The scanner under json.loads, called directly: this loop is the hot path
    # of a million-row file, and loads' own checks cost as much as the parse.
    scan = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))
    id_column = settings.id_column
    number = 0
    for line, text in enumerate(lines, 1):
        try:
            fields, end = scan(text, 0)
            whole = end == len(text) or text[end:].isspace()
        except (StopIteration, json.JSONDecodeError):
            whole = False
        if not whole:
            if text.isspace():
                continue
            # Leading spaces or a fault: loads finds the value or says where.
            fields = _loads(text, path, line)
        if type(fields) is not dict:
            raise _not_an_object(path, line, fields)
        number += 1
        row_id = fields.get(id_column)
        if type(row_id) is not str or not (row_id := row_id.strip()):
            row_id = _json_id(fields, id_column, number, path, line)
        yield Row(row_id, line, fields)


def _loads(text: str, path: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = (
            f"not valid JSON: {exc.msg}; each line must be one JSON object,"
            ' like {"id": "1", "prompt": "Hello"}'
        )
        raise InputError(path, line, exc.colno, problem) from None


def _not_an_object(path: str, line: int, value: Any) -> InputError:
    problem = (
        f"the line holds {json_type(value)}, not a JSON object; each line must be"
        ' one object, like {"id": "1", "prompt": "Hello"}'
    )
    return InputError(path, line, 1, problem)


def _json_id(
    fields: dict[str, Any], id_column: str, number: int, path: str, line: int
) -> str:
    """The id of a JSONL row: its id value as text, else its row *number*."""
    value = fields.get(id_column, _ABSENT)
    if value is _ABSENT:
        return str(number)
    if type(value) is str:
        return nonempty_id(value, id_column, path, line)
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return str(int(value)) if value.is_integer() else str(value)
    problem = (
        f"empty id: the {id_column!r} value is {json_type(value)}; an id is a"
        " non-empty string or a number"
    )
    raise CellError(path, line, id_column, problem)
