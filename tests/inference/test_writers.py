"""The prediction table's column builder, and what a local job leaves out of the process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vision.contracts.predictions import PREDICTION_SCHEMA, column, rows_to_table, string_scalar

from .conftest import random_chips


@pytest.mark.parametrize("type_, values", [
    (pa.string(), ["a", None, "", "ü Ω", None]),
    (pa.string(), []),
    (pa.int32(), [1, None, -7, np.int64(3), 2**31 - 1]),
    (pa.int64(), [None, None]),
    (pa.float32(), [0.5, None, float("nan"), np.float32(2.25)]),
    (pa.float64(), [1e300, None, -0.0]),
    (pa.bool_(), [True, False, None, True, False, False, True, False, True]),
    (pa.list_(pa.float32()), [[0.1, 0.9], None, np.array([0.25, 0.5, 0.25], np.float32), []]),
    (pa.list_(pa.float32()), [None, None]),
])
def test_column_equals_pa_array(type_: pa.DataType, values: list[object]) -> None:
    got = column(values, type_)
    got.validate(full=True)
    assert got.type == type_ and got.null_count == sum(v is None for v in values)
    assert got.to_pylist() == pa.array(values, type_).to_pylist() or (
        type_ == pa.float32() and np.isnan(got.to_pylist()[2]))


def test_column_refuses_what_pa_array_would() -> None:
    with pytest.raises(TypeError, match="string column"):
        column(["a", 3], pa.string())
    with pytest.raises(TypeError, match="no column builder"):
        column([1], pa.uint8())
    assert string_scalar("ok").as_py() == "ok"


def test_rows_to_table_matches_from_pylist() -> None:
    rows = [
        {"path": "/a.jpg", "status": "ok", "label": 2, "class_name": "Forest", "confidence": 0.75,
         "probs": [0.1, 0.15, 0.75], "flagged": False, "input_sha256": "ab", "model_name": "m",
         "model_version": "1", "model_sha256": "cd"},
        {"path": "/s.tif", "row_off": 64, "col_off": 0, "height": 64, "width": 64,
         "crs": "EPSG:32631", "minx": 1.0, "miny": 2.0, "maxx": 3.0, "maxy": 4.0,
         "status": "nodata", "flagged": False, "input_sha256": "ef", "model_name": "m",
         "model_version": "1", "model_sha256": "cd"},
        {"path": "/bad.tif", "status": "error", "error": "not a raster", "flagged": False,
         "model_name": "m", "model_version": "1", "model_sha256": "cd"},
    ]
    got = rows_to_table(rows)  # type: ignore[arg-type]
    want = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
    assert got.schema == PREDICTION_SCHEMA and got.equals(want)


def test_a_local_job_does_not_import_pandas(rgb_model: Path, tmp_path: Path,
                                            tif_factory: Callable[..., Path]) -> None:
    """Any pa.array or pq.read_table call makes pyarrow import pandas: 0.25 s of a core per
    job (a fifth of a 1024 x 1024 scene's run). The local engine avoids them all."""
    random_chips(tmp_path / "chips", 5)
    (tmp_path / "chips" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rng = np.random.default_rng(0)
    scene = tif_factory("scene.tif", rng.integers(1, 255, (3, 130, 140), dtype=np.uint8))
    code = (
        "import sys; from pathlib import Path; from inference.runner import JobOptions, run_job\n"
        f"r = run_job(JobOptions(inputs=({str(tmp_path / 'chips')!r}, {str(scene)!r}), "
        f"model={str(rgb_model)!r}, out=Path({str(tmp_path / 'job')!r}), progress=False))\n"
        "print(r.exit_code, sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1 []"  # the broken chip: exit code 1
