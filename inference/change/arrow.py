"""Arrow columns to and from numpy, through buffers.

``Array.to_numpy`` and ``pa.array`` make pyarrow import pandas (0.25 s of a core: see
`vision.contracts.predictions.column`), a large share of a change run on a small grid, so
the change code moves its columns through the arrays' buffers instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from vision.contracts.predictions import column

_INT = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
        pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32,
        pa.uint64(): np.uint64}
_FLOAT = {pa.float32(): np.float32, pa.float64(): np.float64}


def _chunks(arr: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(arr.chunks) if isinstance(arr, pa.ChunkedArray) else [arr]


def validity(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``True`` where ``arr`` is not null."""
    parts = []
    for c in _chunks(arr):
        buf = c.buffers()[0]
        if buf is None or c.null_count == 0:
            parts.append(np.ones(len(c), bool))
            continue
        bits = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")
        parts.append(bits[c.offset: c.offset + len(c)].astype(bool))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def numeric(arr: pa.Array | pa.ChunkedArray, dtype: type[np.generic], fill: float = 0) -> np.ndarray:
    """A numeric column as ``dtype``, nulls set to ``fill``.

    Raises:
        TypeError: the column is not of an integer or floating type.
    """
    parts = []
    for c in _chunks(arr):
        t = c.type
        src = _INT.get(t) or _FLOAT.get(t)
        if src is None:
            raise TypeError(f"a numeric column is {t}")
        v = np.frombuffer(c.buffers()[1], src)[c.offset: c.offset + len(c)].astype(dtype)
        if c.null_count:
            v[~validity(c)] = fill
        parts.append(v)
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def timestamps_us(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A timestamp column as int64 microseconds since the epoch (UTC; a naive timestamp is
    taken as UTC) and its validity."""
    import pyarrow.compute as pc

    target = pa.timestamp("us", tz="UTC")
    vals, ok = [], []
    for c in _chunks(arr):
        if not pa.types.is_timestamp(c.type):
            raise TypeError(f"a timestamp column is {c.type}")
        if c.type.tz is None:
            c = pc.assume_timezone(c, "UTC")
        c = c.cast(target)
        vals.append(np.frombuffer(c.buffers()[1], np.int64)[c.offset: c.offset + len(c)].copy())
        ok.append(validity(c))
    if not vals:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    return np.concatenate(vals), np.concatenate(ok)


def codes(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A string column as integer codes into its distinct values (null: -1)."""
    import pyarrow.compute as pc

    index: dict[str, int] = {}
    out = []
    for c in _chunks(arr):
        if len(c) == 0:
            continue
        d = pc.dictionary_encode(c)
        remap = np.array([index.setdefault(v, len(index)) for v in d.dictionary.to_pylist()] or [0],
                         np.int64)
        idx = numeric(d.indices, np.int64, fill=-1)
        valid = idx >= 0
        idx[valid] = remap[idx[valid]]
        out.append(idx)
    return (np.concatenate(out) if out else np.zeros(0, np.int64)), list(index)


def float_lists(arr: pa.Array | pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``list<float>`` column as an ``n x width`` float32 matrix (NaN where null) and a mask
    of the rows that held a list of exactly ``width`` values."""
    mats, oks = [], []
    for c in _chunks(arr):
        n = len(c)
        mat = np.full((n, width), np.nan, np.float32)
        if not pa.types.is_list(c.type) and not pa.types.is_large_list(c.type):
            raise TypeError(f"a list column is {c.type}")
        offsets = numeric(c.offsets, np.int64)
        lengths = np.diff(offsets)
        ok = validity(c) & (lengths == width)
        values = numeric(c.values, np.float32, fill=np.nan)
        if ok.any():
            starts = offsets[:-1][ok]
            mat[ok] = values[starts[:, None] + np.arange(width)[None, :]]
        mats.append(mat)
        oks.append(ok)
    if not mats:
        return np.zeros((0, width), np.float32), np.zeros(0, bool)
    return np.concatenate(mats), np.concatenate(oks)


def _validity_buffer(valid: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    if valid is None or valid.all():
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), int((~valid).sum())


def from_numpy(values: np.ndarray, type_: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """An Arrow array of a numeric (or timestamp, from int64 microseconds) numpy array."""
    found: Any = np.int64 if pa.types.is_timestamp(type_) else (_INT.get(type_) or _FLOAT.get(type_))
    if found is None:
        raise TypeError(f"no numpy builder for {type_}")
    data = np.ascontiguousarray(values, dtype=found)
    buf, nulls = _validity_buffer(valid)
    return pa.Array.from_buffers(type_, len(data), [buf, pa.py_buffer(data)], null_count=nulls)


def strings(index: np.ndarray, names: Sequence[str | None]) -> pa.Array:
    """A string array of ``names[index]`` (``-1`` or a ``None`` name: null), built without a
    Python loop over the rows."""
    idx = np.asarray(index, np.int64)
    encoded = [b"" if s is None else s.encode() for s in names] or [b""]
    lens = np.array([len(b) for b in encoded], np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    blob = np.frombuffer(b"".join(encoded), np.uint8) if lens.sum() else np.zeros(0, np.uint8)
    none = np.array([s is None for s in names] or [True], bool)
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    valid &= ~none[safe]
    row_len = np.where(valid, lens[safe], 0)
    offsets = np.zeros(len(idx) + 1, np.int32)
    np.cumsum(row_len, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        # byte k of row r is blob[starts[row] + (k - offsets[r])]
        row_of_byte = np.repeat(np.arange(len(idx)), row_len)
        pos = starts[safe][row_of_byte] + (np.arange(total) - offsets[:-1][row_of_byte])
        data = blob[pos].tobytes()
    else:
        data = b""
    buf, nulls = _validity_buffer(valid)
    return pa.Array.from_buffers(pa.string(), len(idx), [buf, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def constant_strings(value: str | None, n: int) -> pa.Array:
    """``n`` times the same string (or null)."""
    return strings(np.zeros(n, np.int64), [value])


def fixed_lists(child: pa.Array, n: int, width: int) -> pa.Array:
    """A list array of ``n`` rows of ``width`` consecutive items of ``child``."""
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.list_(child.type), n, [None, pa.py_buffer(offsets)], children=[child])


def python_strings(values: Sequence[str | None]) -> pa.Array:
    """A string array of Python values (few rows)."""
    return column(list(values), pa.string())


def pylist(arr: pa.Array | pa.ChunkedArray) -> list[object]:
    """``arr.to_pylist()``, with time-zone-aware timestamps read as UTC ``datetime``s without
    pyarrow's pandas-backed time-zone conversion."""
    from datetime import UTC

    if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        us, ok = timestamps_us(arr)
        naive = from_numpy(us, pa.timestamp("us"), ok).to_pylist()
        return [None if t is None else t.replace(tzinfo=UTC) for t in naive]
    return arr.to_pylist()


def table_rows(table: pa.Table, columns: Sequence[str]) -> list[dict[str, object]]:
    """The rows of ``columns`` of a table as dicts (see `pylist`)."""
    values = [pylist(table.column(c)) for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
