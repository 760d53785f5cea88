"""Arrow columns through buffers (`inference.change.arrow`): the same values as pyarrow's own
conversions, nulls and slices included."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from inference.change import arrow


def test_strings_from_codes_equal_pyarrow() -> None:
    names = ["AnnualCrop", None, "Forêt", ""]
    idx = np.array([0, 1, -1, 2, 3, 0, 2])
    expected = pa.array([names[i] if i >= 0 else None for i in idx], pa.string())
    assert arrow.strings(idx, names).equals(expected)
    assert arrow.strings(np.zeros(0, int), names).equals(pa.array([], pa.string()))


def test_numeric_validity_and_codes_read_slices_and_nulls() -> None:
    a = pa.array([1, None, 3, 4, None], pa.int32()).slice(1)
    assert arrow.numeric(a, np.int64, fill=-9).tolist() == [-9, 3, 4, -9]
    assert arrow.validity(a).tolist() == [False, True, True, False]
    codes, names = arrow.codes(pa.chunked_array([pa.array(["b", None, "a"]), pa.array(["a", "c"])]))
    assert [names[c] if c >= 0 else None for c in codes] == ["b", None, "a", "a", "c"]


def test_float_lists_mark_rows_of_the_wrong_length() -> None:
    a = pa.array([[0.1, 0.9], None, [0.5], [0.3, 0.7]], pa.list_(pa.float32())).slice(1)
    mat, ok = arrow.float_lists(a, 2)
    assert ok.tolist() == [False, False, True] and np.isnan(mat[:2]).all()
    assert np.allclose(mat[2], [0.3, 0.7])


def test_timestamps_and_lists_round_trip() -> None:
    t = datetime(2024, 6, 1, 10, 30, tzinfo=UTC)
    us = np.array([int(t.timestamp() * 1e6), 0])
    arr = arrow.from_numpy(us, pa.timestamp("us", tz="UTC"), np.array([True, False]))
    assert arrow.pylist(arr) == [t, None]
    naive = pa.array([datetime(2024, 6, 1, 10, 30)], pa.timestamp("ms"))
    assert arrow.timestamps_us(naive)[0].tolist() == [us[0]]  # a naive time is UTC
    lists = arrow.fixed_lists(arrow.strings(np.array([0, 1, 1, 0]), ["x", "y"]), 2, 2)
    assert lists.to_pylist() == [["x", "y"], ["y", "x"]]
