"""
CSV rows: a header, then one row a record (a quoted field may span lines),
each with the line it starts on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from batchrunner.config.sections import InputSettings
from batchrunner.errors import InputError
from batchrunner.records import Row

if TYPE_CHECKING:
    from _csv import Reader as CsvReader
from batchrunner.rows.files import decoded_lines, input_format, nonempty_id, open_binary

#: The csv module's default cap (128 KiB a field) is below a long document prompt.
_CSV_FIELD_LIMIT = 1 << 30


def csv_rows(lines: Iterable[str], path: str, settings: InputSettings) -> Iterator[Row]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv_reader(lines)
    header, _ = csv_header(reader, path)
    width = len(header)
    id_column = settings.id_column
    id_index = header.index(id_column) if id_column in header else None
    number = 0
    start = reader.line_num + 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if len(record) != width:
                if _is_blank_record(record):
                    continue
                raise _width_error(path, line, len(record), width)
            number += 1
            if id_index is None:
                row_id = str(number)
            else:
                row_id = nonempty_id(record[id_index], id_column, path, line)
            yield Row(row_id, line, dict(zip(header, record, strict=True)))
    except csv.Error as exc:
        raise _csv_error(path, start, reader.line_num, exc) from None


def csv_header(reader: CsvReader, path: str) -> tuple[list[str], int]:
    """The header record and its line; lines before it may only be blank."""
    try:
        header = next((r for r in reader if not _is_blank_record(r)), None)
    except csv.Error as exc:
        raise _csv_error(path, 1, reader.line_num, exc) from None
    if header is None:
        problem = (
            "the file is empty; a CSV file starts with a header row naming its"
            " columns, like id,prompt"
        )
        raise InputError(path, None, None, problem)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problem = (
                f"column {name!r} appears twice in the header; names must be unique"
            )
            raise InputError(path, reader.line_num, None, problem)
        seen.add(name)
    return header, reader.line_num


def csv_reader(lines: Iterable[str]) -> CsvReader:
    # strict: an unclosed quote is an error, not a field that eats the file.
    return csv.reader(lines, strict=True)


def _is_blank_record(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def _width_error(path: str, line: int, found: int, width: int) -> InputError:
    if found > width:
        hint = 'quote a value that contains a comma, like "a, b"'
    else:
        hint = "give every row a value (maybe empty) for each column"
    problem = f"this row has {found} fields but the header has {width}; {hint}"
    return InputError(path, line, None, problem)


def _csv_error(path: str, start: int, line: int, exc: csv.Error) -> InputError:
    reason = str(exc)
    if "unexpected end of data" in reason:
        problem = (
            f"the quoted field that starts in the row on line {start} is never"
            ' closed; end it with ", and write a quote inside a field as ""'
        )
        return InputError(path, start, None, problem)
    if "new-line character" in reason:
        hint = "save the file with Windows (CRLF) or Unix (LF) line endings"
    else:
        hint = 'a value with quotes is written as "say ""hi"""'
    return InputError(path, line, None, f"not valid CSV: {reason}; {hint}")


def read_header(path: str, shown: str | None = None) -> tuple[list[str], int]:
    """The header of the CSV file at *path*, and the line it is on."""
    _, compressed = input_format(path, shown)
    with open_binary(path, compressed) as stream:
        shown = shown or path
        return csv_header(csv_reader(decoded_lines(stream, shown)), shown)
