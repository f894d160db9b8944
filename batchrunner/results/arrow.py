"""
Results typed for Arrow: the type of each column, and journal lines turned into
record batches (fast through Arrow's JSON reader, value by value where a slice
holds an odd value).
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.json as pj

from batchrunner.results.jsonl import (
    dumps,
    parse_record,
)
from batchrunner.results.layout import (
    INT_COLUMNS,
    NESTED,
    flatten_record,
)


def nested_schema(flat: pa.Schema) -> pa.Schema:
    """The shape of JSONL records whose flat columns are *flat*, in the same order."""
    fields: list[pa.Field] = []
    groups: dict[str, list[pa.Field]] = {}
    for field in flat:
        group, _, name = field.name.partition("_")
        if group not in NESTED or not name:
            fields.append(field)
            continue
        if group not in groups:
            groups[group] = []
            fields.append(pa.field(group, pa.null()))  # a placeholder, replaced below
        groups[group].append(pa.field(name, field.type))
    return pa.schema(
        [
            pa.field(f.name, pa.struct(groups[f.name])) if f.name in groups else f
            for f in fields
        ]
    )


def slice_batch(
    lines: list[bytes], nested: pa.Schema, flat: pa.Schema
) -> pa.RecordBatch:
    """
    *lines* converted to a batch of *flat* columns.

    Arrow's JSON reader does it fast when every value has its column's type; a slice
    with any odd value (a list of outputs, mixed input types, a lone surrogate) takes
    the slower way through Python, which converts value by value.
    """
    data = b"".join(lines)
    options = pj.ParseOptions(
        explicit_schema=nested, unexpected_field_behavior="ignore"
    )
    block = max(1 << 20, max(len(line) for line in lines) + 1)
    try:
        table = pj.read_json(
            io.BytesIO(data), pj.ReadOptions(block_size=block), options
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        rows = [flatten_record(parse_record(line) or {}) for line in lines]
        return record_batch(rows, flat)
    arrays: list[pa.Array] = []
    for column in table.columns:
        combined = column.combine_chunks()
        if pa.types.is_struct(combined.type):
            arrays.extend(combined.flatten())
        else:
            arrays.append(combined)
    return pa.RecordBatch.from_arrays(arrays, schema=flat)


def fixed_type(name: str) -> pa.DataType:
    if name == "embedding":
        # Azure computes embeddings in float32; storing them so halves the file.
        return pa.list_(pa.float32())
    return pa.int64() if name in INT_COLUMNS else pa.string()


def input_type(kinds: set[type]) -> pa.DataType:
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()  # mixed or nested values: as text, JSON where not a string


def record_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    columns = [
        arrow_column([row.get(field.name) for row in rows], field.type)
        for field in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def arrow_column(values: list[Any], kind: pa.DataType) -> pa.Array:
    """*values* as an array of *kind*; a value that does not fit becomes null."""
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
        pass  # some value is off-type: convert one by one
    if pa.types.is_string(kind):
        return pa.array([_as_text(value) for value in values], kind)
    if pa.types.is_integer(kind):
        return pa.array([_as_int(value) for value in values], kind)
    if pa.types.is_floating(kind):
        return pa.array([_as_float(value) for value in values], kind)
    if pa.types.is_boolean(kind):
        return pa.array([v if isinstance(v, bool) else None for v in values], kind)
    return pa.array([_as_vector(value) for value in values], kind)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else dumps(value)
    # Parquet text is UTF-8, which a lone surrogate has no form in.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _as_int(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -(2**63) <= value < 2**63
    ):
        return value
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _as_vector(value: Any) -> list[Any] | None:
    if not isinstance(value, list):
        return None
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    return value if numeric else None
