"""
Pointing at a cell: the line and column where a value stands in the input file,
found by reading the file again, so the fast path never keeps positions.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

from batchrunner.errors import CellError, InputError
from batchrunner.rows.files import decoded_lines, input_format, open_binary


def located(exc: CellError, path: str, header: list[str] | None) -> InputError:
    """*exc* with the line and column of its cell, found by re-reading the file."""
    position = None
    if exc.column_name is not None and exc.line is not None:
        position = _cell_position(path, exc.path, exc.line, exc.column_name, header)
    line, column = position or (exc.line, None)
    return InputError(exc.path, line, column, exc.problem)


def _cell_position(
    path: str, shown: str, line: int, name: str, header: list[str] | None
) -> tuple[int, int] | None:
    kind, compressed = input_format(path, shown)
    with open_binary(path, compressed) as stream:
        lines = itertools.islice(decoded_lines(stream, shown), line - 1, None)
        if kind == "jsonl":
            column = _json_value_column(next(lines, ""), name)
            return None if column is None else (line, column)
        if header is None or name not in header:
            return None
        return _csv_cell_start(lines, line, header.index(name))


def _csv_cell_start(
    lines: Iterable[str], line: int, index: int
) -> tuple[int, int] | None:
    """Line and 1-based column where field *index* of the record on *line* starts."""
    if index == 0:
        return line, 1
    field, quoted = 0, False
    for offset, text in enumerate(lines):
        for column, char in enumerate(text, 1):
            # A doubled quote inside a quoted field flips twice: no change.
            if char == '"':
                quoted = not quoted
            elif char == "," and not quoted:
                field += 1
                if field == index:
                    return line + offset, column + 1
    return None


def _json_value_column(text: str, key: str) -> int | None:
    """The 1-based column where the value of top-level *key* starts in *text*."""
    decoder = json.JSONDecoder()
    found = None
    try:
        pos = _skip_space(text, text.index("{") + 1)
        while text[pos] == '"':
            name, pos = decoder.raw_decode(text, pos)
            pos = _skip_space(text, _skip_space(text, pos) + 1)
            if name == key:
                # json keeps the last of duplicate keys, so point at the last.
                found = pos + 1
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip_space(text, pos)
            if text[pos] != ",":
                break
            pos = _skip_space(text, pos + 1)
    except (ValueError, IndexError):
        return None
    return found


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
