"""
``--join``: the results beside the input's own columns, for pandas and spreadsheets.

``<output stem>.joined<suffix>`` (``out.csv`` → ``out.joined.csv``) has one row per
input row the run covers (all rows, or its ``--shard``/``--limit`` share), in input
order, rows not done yet included with empty result columns. Every input column comes
first, under its own name and with its own values (JSONL values keep their types;
CSV cells are text); then the flat result columns as ``read_results`` gives them
(``status``, ``output``, ``answer_*``, ``usage_*``, ``error_*`` …), a name the input
already uses prefixed with ``result_``. It is written whole at the end of each run
(in memory: it is a table for a notebook, not a stream).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.config.settings import Settings
from batchrunner.prepare.plan import select
from batchrunner.results.frame import read_results
from batchrunner.results.jsonl import dumps, encode_jsonl
from batchrunner.results.layout import replace_atomically, results_format
from batchrunner.rows.reader import open_rows


def joined_path(output: Path) -> Path:
    """Where the joined table of results *output* goes."""
    return output.with_name(f"{output.stem}.joined{output.suffix}")


def joined_frame(input_path: str, name: str, settings: Settings, output: Path) -> Any:
    """The input rows of this run, in order, with their results beside them."""
    rows = list(
        select(
            open_rows(input_path, settings.input, name=name),
            shard=settings.shard,
            limit=settings.limit,
        )
    )
    columns = list(dict.fromkeys(key for row in rows for key in row.fields))
    inputs = pd.DataFrame.from_records([row.fields for row in rows], columns=columns)
    if settings.input.id_column not in inputs.columns and "id" not in inputs.columns:
        inputs.insert(0, "id", [row.id for row in rows])  # ids were row numbers
    results = _results(output, exists=output.exists() or _has_journal(output))
    taken = set(inputs.columns)
    aligned = results.reindex([row.id for row in rows]).reset_index(drop=True)
    aligned.columns = [f"result_{c}" if c in taken else c for c in aligned.columns]
    return pd.concat([inputs.reset_index(drop=True), aligned], axis=1)


def _has_journal(output: Path) -> bool:
    return output.with_name(f"{output.name}.journal.jsonl").exists()


def _results(output: Path, *, exists: bool) -> pd.DataFrame:
    """Results by id, inputs left out, integer and boolean columns made nullable."""
    frame = read_results(output) if exists else pd.DataFrame({"id": []})
    frame = frame.set_index("id")
    frame = frame[[c for c in frame.columns if not str(c).startswith("input_")]]
    for column in frame.columns:
        kind = frame[column].dtype
        if pd.api.types.is_bool_dtype(kind):
            frame[column] = frame[column].astype("boolean")
        elif pd.api.types.is_integer_dtype(kind):
            frame[column] = frame[column].astype("Int64")
    return frame


def write_joined(input_path: str, name: str, settings: Settings, output: Path) -> Path:
    """Write the joined table of *output* beside it; return its path."""
    frame = joined_frame(input_path, name, settings, output)
    target = joined_path(output)
    kind = results_format(target)
    if kind == ".parquet":
        table = _arrow_table(frame)
        replace_atomically(target, lambda tmp: pq.write_table(table, str(tmp)))
    elif kind == ".csv":
        text = _cells(frame).to_csv(index=False, lineterminator="\n")
        replace_atomically(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    else:
        data = encode_jsonl(_records(frame))
        replace_atomically(target, lambda tmp: tmp.write_bytes(data))
    return target


def _plain(value: Any) -> Any:
    """*value* as plain JSON data: nulls as None, numpy values as Python ones."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    names = [str(c) for c in frame.columns]
    return [
        {name: _plain(value) for name, value in zip(names, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """*frame* with lists and objects as JSON text, as the CSV results have them."""
    out = frame.copy()
    for column in out.columns:
        kind = out[column].dtype
        if pd.api.types.is_object_dtype(kind) or pd.api.types.is_bool_dtype(kind):
            out[column] = pd.Series([_cell(v) for v in out[column]], dtype=object)
    return out


def _cell(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, list | dict | bool):
        return dumps(value)
    return value


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """*frame* as Arrow, typed; a column of mixed values becomes JSON text."""
    arrays, names = [], []
    for column in frame.columns:
        values = frame[column]
        try:
            array = pa.Array.from_pandas(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            array = pa.array([_text(v) for v in values], pa.string())
        arrays.append(array)
        names.append(str(column))
    return pa.Table.from_arrays(arrays, names=names)


def _text(value: Any) -> str | None:
    value = _plain(value)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
