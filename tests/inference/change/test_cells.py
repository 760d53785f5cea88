"""Cell rasters (`inference.change.cells`): every row lands on its window's cell, tile by tile,
in any row order; rows that lie are refused or not assessed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from inference.change.cells import B_LABEL, B_PROBS, B_STATUS, CellRasters
from inference.change.jobs import JobReadError, open_job
from inference.change.rules import SRC_CLOUDY, SRC_ERROR, SRC_NODATA, SRC_OK


def _cells(folder: Path, tmp_path: Path) -> np.ndarray:
    job = open_job(folder)
    cells = CellRasters(job, tmp_path / "cells")
    cells.build()
    with rasterio.open(cells.paths[0]) as ds:
        return ds.read()


def test_rows_land_on_their_cells_across_tiles_in_any_order(make_grid_job: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    status = rng.choice(np.array(["ok", "nodata", "cloudy", "error"], object), size=(260, 3), p=[.7, .1, .1, .1])
    labels = rng.integers(0, 10, (260, 3))
    folder = make_grid_job("a", status, labels)
    t = pq.read_table(folder / "predictions.parquet")
    pq.write_table(t.take(pa.array(rng.permutation(t.num_rows))), folder / "predictions.parquet")  # shuffled
    data = _cells(folder, tmp_path)
    codes = {"ok": SRC_OK, "nodata": SRC_NODATA, "cloudy": SRC_CLOUDY, "error": SRC_ERROR}
    assert (data[B_STATUS - 1] == np.vectorize(codes.get)(status)).all()
    ok = status == "ok"
    assert (data[B_LABEL - 1][ok] == labels[ok]).all() and (data[B_LABEL - 1][~ok] == -1).all()
    p = data[B_PROBS - 1:]
    assert np.allclose(p[:, ok].sum(axis=0), 1.0) and np.isnan(p[:, ~ok]).all()


def test_a_window_given_twice_is_refused(make_grid_job: Any, tmp_path: Path) -> None:
    folder = make_grid_job("a", np.full((2, 2), "ok", object), np.zeros((2, 2), int))
    t = pq.read_table(folder / "predictions.parquet")
    pq.write_table(pa.concat_tables([t, t.slice(3, 1)]), folder / "predictions.parquet")
    with pytest.raises(JobReadError, match="more than one row"):
        _cells(folder, tmp_path)


def test_an_ok_row_with_unusable_probabilities_is_not_assessed(make_grid_job: Any, tmp_path: Path) -> None:
    folder = make_grid_job("a", np.full((1, 4), "ok", object), np.zeros((1, 4), int))
    t = pq.read_table(folder / "predictions.parquet")
    probs = t["probs"].to_pylist()
    labels = t["label"].to_pylist()
    probs[0] = probs[0][:3]             # too short
    probs[1] = [float("nan")] * 10       # NaN (a model that failed)
    labels[2] = 12                       # a class the model does not have
    t = t.set_column(t.schema.get_field_index("probs"), "probs", pa.array(probs, pa.list_(pa.float32())))
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels, pa.int32()))
    pq.write_table(t, folder / "predictions.parquet")
    data = _cells(folder, tmp_path)
    assert data[B_STATUS - 1, 0].tolist() == [SRC_ERROR, SRC_ERROR, SRC_ERROR, SRC_OK]


def test_the_cell_raster_is_sparse_where_a_job_has_no_rows(make_grid_job: Any, tmp_path: Path) -> None:
    """A job restricted to a small AOI in a huge scene: the cost follows the rows, not the grid."""
    status = np.full((600, 600), "ok", object)
    folder = make_grid_job("a", status[:2, :2], np.zeros((2, 2), int))
    import json

    m = json.loads((folder / "manifest.json").read_text())
    m["inputs"][0]["grid"] = [600, 600]  # 360,000 windows, 4 of them classified
    (folder / "manifest.json").write_text(json.dumps(m))
    job = open_job(folder)
    cells = CellRasters(job, tmp_path / "cells")
    cells.build()
    assert (job.scenes[0].rows, job.scenes[0].cols) == (600, 600)
    # 600 x 600 x 17 float32 bands would be 24 MB; one 256 x 256 tile is 4.5 MB
    assert cells.paths[0].stat().st_size < 6 * 2**20
    with rasterio.open(cells.paths[0]) as ds:
        far = ds.read(window=rasterio.windows.Window(400, 400, 10, 10))
        near = ds.read(B_STATUS, window=rasterio.windows.Window(0, 0, 3, 3))
    assert np.isnan(far).all()
    assert (near[:2, :2] == SRC_OK).all() and np.isnan(near[2]).all() and np.isnan(near[:, 2]).all()
