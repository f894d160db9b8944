"""
Results as a pandas DataFrame, for notebooks: ``read_results(path)``.

Kept apart from ``resume`` so that a run does not import pandas: it reads the
same files the same way, through the helpers in ``writer``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.results.csv import csv_records
from batchrunner.results.jsonl import jsonl_lines, parse_record
from batchrunner.results.layout import (
    FIXED_COLUMNS,
    INT_COLUMNS,
    flatten_record,
    journal_path,
    results_format,
)

log = logging.getLogger("batchrunner.results.frame")

_TEXT_COLUMNS = tuple(
    name for name in FIXED_COLUMNS if name not in INT_COLUMNS and name != "embedding"
)
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
#: Results format → the JSON values its answer columns may hold as text.
_TEXT_KINDS: dict[str, tuple[type, ...]] = {
    ".csv": (int, float, bool, list, dict),
    ".parquet": (list, dict),
}
# pandas 3 has a text dtype that keeps nulls; pandas 2 would turn them into "None".
_STR_KEEPS_NULLS = bool(pd.Series([None], dtype=object).astype("str").isna().all())


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """
    The records of results file *path*, the last one of each id, in file order.

    Columns are flat, as in CSV: ``usage_*``, ``error_*``, ``answer_*`` (a structured
    answer's fields) and ``input_*``. Token counts and attempts are int64 (Int64 where
    some are missing); answer fields get the type their values share (from CSV, where
    every cell is text, cells that all read as JSON numbers or booleans are converted);
    a torn last record is left out. For Parquet, the journal is read when it is newer
    than the Parquet file (a run that was stopped before it could render it).
    """
    path = Path(path)
    kind = results_format(path)
    if kind == ".csv":
        frame = _csv_frame(path)
    elif kind == ".parquet" and not _journal_is_newer(path):
        # Nullable dtypes: an integer column with gaps must not turn into floats.
        frame = pq.read_table(path).to_pandas(types_mapper=_NULLABLE.get)
    else:
        source = journal_path(path) if kind == ".parquet" else path
        frame = _frame([flatten_record(record) for record in _jsonl_records(source)])
    frame = frame.drop_duplicates("id", keep="last").reset_index(drop=True)
    for name in [c for c in frame.columns if str(c).startswith("answer_")]:
        frame[name] = answer_column(frame[name], source=kind)
    return _typed(frame)


def _journal_is_newer(parquet: Path) -> bool:
    journal = journal_path(parquet)
    if not journal.exists():
        return False
    return (
        not parquet.exists() or journal.stat().st_mtime_ns > parquet.stat().st_mtime_ns
    )


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in jsonl_lines(path):
        record = parse_record(line)
        if record is None:
            log.warning("%s:%d: skipped a damaged line", path, number)
        else:
            yield record


def _csv_frame(path: Path) -> pd.DataFrame:
    with path.open("rb") as reader:
        records = csv_records(path, reader, os.fstat(reader.fileno()).st_size)
        header, _ = next(records, ([], 0))
        # CSV has one spelling for null and "": the empty field; read it as null.
        rows = [[cell or None for cell in row] for row, _ in records]
    frame = _frame([dict(zip(header, row, strict=True)) for row in rows])
    frame["embedding"] = frame["embedding"].map(_parse_vector)
    return frame


def _parse_vector(cell: Any) -> Any:
    return json.loads(cell) if isinstance(cell, str) else cell


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """*rows* as a frame: the fixed columns, then the input ones, then any others."""
    names = dict.fromkeys(key for row in rows for key in row)
    answers = [name for name in names if name.startswith("answer_")]
    inputs = [name for name in names if name.startswith("input_")]
    known = {*FIXED_COLUMNS, *answers, *inputs}
    others = [name for name in names if name not in known]
    return pd.DataFrame(rows, columns=[*FIXED_COLUMNS, *answers, *inputs, *others])


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Integers as int64 (Int64 with gaps) and text as strings, whatever the source."""
    # Parquet gives None for a missing vector, and so should JSONL and CSV.
    vectors = [None if _is_null(value) else value for value in frame["embedding"]]
    frame["embedding"] = pd.Series(vectors, index=frame.index, dtype=object)
    for name in INT_COLUMNS.intersection(frame.columns):
        frame[name] = _integers(frame[name])
    for name in _TEXT_COLUMNS if _STR_KEEPS_NULLS else ():
        column = frame[name]
        # An output of n > 1 choices is a list: leave such a column as objects.
        if column.map(_is_text_or_null).all():
            frame[name] = column.astype("str")
    return frame


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and value != value  # NaN


def _is_text_or_null(value: Any) -> bool:
    return isinstance(value, str) or _is_null(value)


def _integers(column: pd.Series[Any]) -> pd.Series[Any]:
    numbers = pd.to_numeric(column, errors="coerce").astype("Int64")
    return numbers if numbers.hasnans else numbers.astype("int64")


def answer_column(column: pd.Series[Any], *, source: str) -> pd.Series[Any]:
    """
    *column* of a structured answer with the dtype its values share.

    Text that stands for other JSON values is read as JSON first, when every cell of
    the column is such text: a CSV *source* (``".csv"``) writes every value as text,
    Parquet writes arrays and objects as JSON text.
    """
    values = [None if _is_null(value) else _python(value) for value in column]
    if source in _TEXT_KINDS:
        values = _decoded_cells(values, _TEXT_KINDS[source])
    present = [value for value in values if value is not None]
    index = column.index
    if present and all(isinstance(value, bool) for value in present):
        return pd.Series(values, index=index, dtype="boolean")
    if present and all(_is_int(value) for value in present):
        return _integers(pd.Series(values, index=index, dtype=object))
    if present and all(_is_number(value) for value in present):
        return pd.Series(values, index=index, dtype="float64")
    if _STR_KEEPS_NULLS and all(isinstance(value, str) for value in present):
        return pd.Series(values, index=index, dtype=object).astype("str")
    return pd.Series(values, index=index, dtype=object)


def _python(value: Any) -> Any:
    """A numpy scalar (from a typed column) as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _decoded_cells(cells: list[Any], kinds: tuple[type, ...]) -> list[Any]:
    """*cells* read as JSON when each one is text holding one of *kinds*."""
    decoded: list[Any] = []
    for cell in cells:
        if cell is None:
            decoded.append(None)
            continue
        try:
            value = json.loads(cell) if isinstance(cell, str) else None
        except ValueError:
            return cells
        if not isinstance(value, kinds):
            return cells
        decoded.append(value)
    return decoded


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
