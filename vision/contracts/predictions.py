"""The prediction table's contract (ARCHITECTURE.md §3) as a type.

`PREDICTION_SCHEMA` is the Arrow schema of ``predictions.parquet``; `PredictionRow` is one
row as the runner builds it (a typed dict: rows are made by the thousand per second, and a
dict is what the column builders read); `new_row` makes a row with every column present.
`rows_to_table` turns rows into a table with `column`, which builds Arrow arrays from numpy
buffers (see its docstring for why not ``pa.array``).

Readers of the table (review, explanations, change detection) take the column names and
types from here rather than restating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa

from vision.contracts.window import window_fields

#: Row states: classified; not assessed because mostly nodata, or cloud over ``--max-cloud``
#: (schema 2); failed. ``nodata`` and ``cloudy`` rows carry no label: never "no crop here".
STATUS_OK, STATUS_NODATA, STATUS_CLOUDY, STATUS_ERROR = "ok", "nodata", "cloudy", "error"
STATUSES: tuple[str, ...] = (STATUS_OK, STATUS_NODATA, STATUS_CLOUDY, STATUS_ERROR)
#: The states that are "not assessed": no model answer, counted apart from classes.
NOT_ASSESSED: tuple[str, ...] = (STATUS_NODATA, STATUS_CLOUDY, STATUS_ERROR)

#: The UTC timestamp type of ``acquired`` (microseconds, as pyarrow writes Python datetimes).
ACQUIRED_TYPE = pa.timestamp("us", tz="UTC")

#: The columns of ``predictions.parquet``, in order.
PREDICTION_SCHEMA = pa.schema([
    ("path", pa.string()),
    *window_fields(),
    ("status", pa.string()),
    ("label", pa.int32()),
    ("class_name", pa.string()),
    ("confidence", pa.float32()),
    ("probs", pa.list_(pa.float32())),
    ("flagged", pa.bool_()),
    ("error", pa.string()),
    ("input_sha256", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("model_sha256", pa.string()),
    # schema 2 (ARCHITECTURE.md §5): nullable where they do not apply
    ("item_id", pa.string()),
    ("acquired", ACQUIRED_TYPE),
    ("cloud_fraction", pa.float32()),
    ("aoi_id", pa.string()),
])

#: Columns a reader of the table may rely on (every column of the schema).
PREDICTION_COLUMNS: tuple[str, ...] = tuple(PREDICTION_SCHEMA.names)


class PredictionRow(TypedDict):
    """One row of ``predictions.parquet`` (``None`` is null). See ARCHITECTURE.md §3."""

    path: str
    row_off: int | None
    col_off: int | None
    height: int | None
    width: int | None
    crs: str | None
    minx: float | None
    miny: float | None
    maxx: float | None
    maxy: float | None
    status: str
    label: int | None
    class_name: str | None
    confidence: float | None
    probs: list[float] | None
    flagged: bool | None
    error: str | None
    input_sha256: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    item_id: str | None
    acquired: datetime | None
    cloud_fraction: float | None
    aoi_id: str | None


def new_row(path: str, status: str, input_sha256: str | None, **values: Any) -> PredictionRow:
    """A row with every column present: ``values`` set, the rest null."""
    row: PredictionRow = {
        "path": path, "row_off": None, "col_off": None, "height": None, "width": None,
        "crs": None, "minx": None, "miny": None, "maxx": None, "maxy": None,
        "status": status, "label": None, "class_name": None, "confidence": None,
        "probs": None, "flagged": None, "error": None, "input_sha256": input_sha256,
        "model_name": None, "model_version": None, "model_sha256": None,
        "item_id": None, "acquired": None, "cloud_fraction": None, "aoi_id": None,
    }
    for k, v in values.items():
        if k not in row:
            raise KeyError(f"{k!r} is not a prediction column")
        row[k] = v  # type: ignore[literal-required]
    return row


def rows_to_table(rows: Sequence[PredictionRow] | Sequence[dict[str, Any]],
                  schema: pa.Schema = PREDICTION_SCHEMA) -> pa.Table:
    """The table of ``rows``, built column by column from buffers (`column`)."""
    return pa.Table.from_arrays([column([r.get(f.name) for r in rows], f.type)
                                 for f in schema], schema=schema)


def _utf8(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"a string column got {type(value).__name__} {value!r}")
    return value.encode()


def string_scalar(value: str) -> pa.Scalar:
    """A string scalar for compute functions (a Python ``str`` there goes through pandas too)."""
    return column([value], pa.string())[0]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: Any) -> int:
    """Microseconds since the epoch of an aware datetime (a naive one is refused: ambiguous)."""
    if not isinstance(value, datetime):
        raise TypeError(f"a timestamp column got {type(value).__name__} {value!r}")
    if value.tzinfo is None:
        raise TypeError(f"a timestamp column got a naive datetime {value!r}: give it a time zone")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float32(): np.float32,
                pa.float64(): np.float64}


def column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``values`` (``None`` is null) for the prediction table's types:
    strings, 32/64-bit ints and floats, booleans, lists of float32, UTC timestamps (from
    aware datetimes).

    Built from numpy buffers rather than with ``pa.array``: any ``pa.array`` call makes
    pyarrow import pandas to ask whether its input is a pandas object, 0.25 s of one core
    per job, a fifth of a 1024 x 1024 scene's run. (``Table.from_pylist`` would also cost
    0.5 ms a row.) The result equals ``pa.array(values, type_)``.

    Raises:
        TypeError: a type outside that set, or a string column holding a non-string.
    """
    n = len(values)
    nulls = np.fromiter((v is None for v in values), bool, n)
    n_null = int(nulls.sum())
    validity = pa.py_buffer(np.packbits(~nulls, bitorder="little")) if n_null else None
    if pa.types.is_string(type_):
        data = [b"" if v is None else _utf8(v) for v in values]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.fromiter(map(len, data), np.int64, n), out=offsets[1:])
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets),
                                                pa.py_buffer(b"".join(data))], null_count=n_null)
    if pa.types.is_boolean(type_):
        bits = np.packbits(np.fromiter((bool(v) for v in values), bool, n), bitorder="little")
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(bits)], null_count=n_null)
    if pa.types.is_list(type_) and type_.value_type == pa.float32():
        items = [np.asarray(v, np.float32).ravel() for v in values if v is not None]
        lengths = np.zeros(n, np.int64)
        lengths[~nulls] = [len(a) for a in items]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(items) if items else np.zeros(0, np.float32)
        child = pa.Array.from_buffers(pa.float32(), len(flat), [None, pa.py_buffer(flat)])
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets)],
                                     null_count=n_null, children=[child])
    if pa.types.is_timestamp(type_):
        us = np.array([0 if v is None else _micros(v) for v in values], dtype=np.int64)
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(us)], null_count=n_null)
    if type_ not in _NUMPY_TYPES:
        raise TypeError(f"no column builder for {type_}")
    arr = np.array([0 if v is None else v for v in values], dtype=_NUMPY_TYPES[type_])
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(arr)], null_count=n_null)
