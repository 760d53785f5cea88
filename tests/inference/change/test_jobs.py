"""Reading job folders (`inference.change.jobs`): grids rebuilt from the table, both schemas,
acquisition times, and refusals that say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from affine import Affine

from inference.change.jobs import JobReadError, check_compatible, open_job, parse_time, resolve_dates
from vision.errors import ConfigError

OK3 = np.full((3, 4), "ok", object)
LAB3 = np.zeros((3, 4), int)


def test_the_grid_is_rebuilt_from_the_rows(make_grid_job: Any) -> None:
    job = open_job(make_grid_job("a", OK3, LAB3, origin=(500_000.0, 5_350_000.0), pixel=10.0))
    (s,) = job.scenes
    assert (s.rows, s.cols, s.size, s.stride) == (3, 4, (64, 64), (64, 64))
    assert s.transform.almost_equals(Affine(10, 0, 500_000, 0, -10, 5_350_000))
    assert s.cell_transform.almost_equals(Affine(640, 0, 500_000, 0, -640, 5_350_000))
    assert s.item_id == "a" and s.acquired() is not None and s.acquired().isoformat() == "2024-06-01T10:00:00+00:00"
    assert job.schema == 2 and job.acquired_source == "table" and job.model.name == "simulated-from-truth"


def test_overlapping_windows_stride_from_the_offsets_when_the_manifest_has_none(make_grid_job: Any) -> None:
    job = open_job(make_grid_job("a", OK3, LAB3, stride=32, manifest_stride=False))
    (s,) = job.scenes
    assert s.stride == (32, 32) and s.size == (64, 64)
    # cells are stride-sized and centred on their windows
    assert s.cell_transform.almost_equals(s.transform @ Affine.translation(16, 16) @ Affine.scale(32))


def _rewrite(folder: Path, **changes: Any) -> None:
    t = pq.read_table(folder / "predictions.parquet")
    for name, values in changes.items():
        if values is None:
            t = t.drop_columns([name])
        else:
            t = t.set_column(t.schema.get_field_index(name), name, pa.array(values, t.schema.field(name).type))
    pq.write_table(t, folder / "predictions.parquet")


def test_bounds_that_do_not_follow_one_north_up_grid_are_refused(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3)
    minx = pq.read_table(folder / "predictions.parquet")["minx"].to_pylist()
    minx[5] += 123.0
    _rewrite(folder, minx=minx)
    with pytest.raises(JobReadError, match="north-up"):
        open_job(folder)


def test_a_missing_column_is_named(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3)
    _rewrite(folder, probs=None)
    with pytest.raises(JobReadError, match="probs"):
        open_job(folder)


def test_rows_of_two_models_are_refused(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3)
    names = pq.read_table(folder / "predictions.parquet")["model_name"].to_pylist()
    names[0] = "other-model"
    _rewrite(folder, model_name=names)
    with pytest.raises(JobReadError, match="2 models"):
        open_job(folder)


def test_a_running_job_is_not_finished(make_grid_job: Any) -> None:
    with pytest.raises(ConfigError, match="not finished"):
        open_job(make_grid_job("a", OK3, LAB3, job_status="running"))


def test_a_folder_without_a_manifest_is_not_a_job(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="not a `vision infer` job folder"):
        open_job(tmp_path / "x")
    with pytest.raises(ConfigError, match="not found"):
        open_job(tmp_path / "missing")


def test_a_table_claiming_a_huge_grid_is_refused(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3)
    m = json.loads((folder / "manifest.json").read_text())
    m["inputs"][0]["grid"] = [2, 2]  # the rows reach past the grid the manifest declares
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(JobReadError, match="beyond the manifest's grid"):
        open_job(folder)


def test_schema1_times_from_dates_and_the_recorded_ones_checked(make_grid_job: Any) -> None:
    a = open_job(make_grid_job("a", OK3, LAB3, schema=1))
    b = open_job(make_grid_job("b", OK3, LAB3, acquired="2024-06-01T10:00:00Z"))
    assert a.schema == 1 and a.scenes[0].acquired_us is None and a.scenes[0].item_id == "a"
    with pytest.raises(ConfigError, match="--dates"):
        resolve_dates([a, b], None)
    with pytest.raises(ConfigError, match="one per JOB"):
        resolve_dates([a, b], ["2023-01-01"])
    with pytest.raises(ConfigError, match="drop --dates or fix it"):
        resolve_dates([a, b], ["2023-01-01", "2024-06-02"])
    resolve_dates([a, b], ["2023-01-01", "2024-06-01"])
    assert a.scenes[0].acquired_us == parse_time("2023-01-01", "x") and a.acquired_source == "--dates"
    assert b.acquired_source == "table"
    with pytest.raises(ConfigError, match="not an ISO date"):
        parse_time("yesterday", "--dates")


def test_the_manifest_may_carry_the_acquisition_time(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3, schema=1)
    m = json.loads((folder / "manifest.json").read_text())
    m["inputs"][0]["acquired"] = "2022-03-04T05:06:07Z"
    (folder / "manifest.json").write_text(json.dumps(m))
    job = open_job(folder)
    assert job.acquired_source == "manifest" and job.scenes[0].acquired().isoformat() == "2022-03-04T05:06:07+00:00"


def test_compatible_needs_the_same_classes_in_the_same_order(make_grid_job: Any) -> None:
    a = open_job(make_grid_job("a", OK3, LAB3))
    b = open_job(make_grid_job("b", OK3, LAB3, classes=["Forest", "AnnualCrop"]))
    with pytest.raises(ConfigError, match="different classes"):
        check_compatible([a, b])


def test_acquisition_times_written_as_text_are_read(make_grid_job: Any) -> None:
    folder = make_grid_job("a", OK3, LAB3)
    t = pq.read_table(folder / "predictions.parquet")
    k = t.schema.get_field_index("acquired")
    t = t.set_column(k, pa.field("acquired", pa.string()), pa.array(["2021-05-06T07:08:09Z"] * t.num_rows))
    pq.write_table(t, folder / "predictions.parquet")
    assert open_job(folder).scenes[0].acquired().isoformat() == "2021-05-06T07:08:09+00:00"
