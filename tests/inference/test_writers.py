"""Writing outputs: the prediction table's columns, what a local job leaves out of the
process, and what happens when the disk is full."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vision.contracts.predictions import PREDICTION_SCHEMA, column, rows_to_table, string_scalar

from .conftest import random_chips, write_tif


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


JOB = """
import sys
from vision.cli import main
sys.argv = ["vision", "infer", *sys.argv[1:]]
main()
"""


def _infer(out: Path, inputs: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", JOB, str(inputs), "--model", str(model), "--out",
                           str(out), "--no-progress", "--threads", "1", "--workers", "1"],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _disk_full_inputs(tmp_path: Path) -> Path:
    random_chips(tmp_path / "in" / "chips", 1200)
    write_tif(tmp_path / "in" / "scene.tif",
              np.random.default_rng(0).integers(1, 255, (3, 640, 640), dtype=np.uint8))
    return tmp_path / "in"


@contextlib.contextmanager
def _tmpfs(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounting a small tmpfs needs root")
def test_a_full_disk_stops_the_job_cleanly_and_it_resumes(rgb_model: Path, tmp_path: Path) -> None:
    """A real full filesystem (a 120 kB tmpfs): the job says the disk is full and how to go
    on, keeps the finished units, exits 1 without a traceback; with space freed (the tmpfs
    grown) the same command resumes and ends with the same rows as a run that had room."""
    inputs = _disk_full_inputs(tmp_path)
    ref = tmp_path / "ref"
    assert _infer(ref, inputs, rgb_model).returncode == 0
    with _tmpfs(tmp_path / "small", "120k") as mnt:
        out = mnt / "job"
        proc = _infer(out, inputs, rgb_model)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        msg = " ".join(proc.stderr.split())
        assert "error: disk full while writing" in msg and "No space left on device" in msg
        assert "rerun the same command to resume" in msg
        kept = sorted(p.name for p in (out / "_parts").glob("*.parquet"))
        assert kept and not (out / "_SUCCESS").exists()
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        again = _infer(out, inputs, rgb_model)
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"resuming: {len(kept)} of" in " ".join(again.stderr.split())
        got = pq.read_table(out / "predictions.parquet").to_pylist()
        assert got == pq.read_table(ref / "predictions.parquet").to_pylist()
        assert json.loads((out / "progress.json").read_text())["state"] == "finished"


def test_a_write_failure_is_reported_and_resumable(rgb_model: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with an injected OSError(ENOSPC) from the part writer (where no tmpfs can be
    mounted): JobStoppedError names the file and the way on; finished units are kept."""
    import inference.job
    from inference.runner import JobOptions, JobStoppedError, run_job

    random_chips(tmp_path / "chips", 700)
    opts = JobOptions(inputs=(str(tmp_path / "chips"),), model=str(rgb_model),
                      out=tmp_path / "job", progress=False, threads=1, workers=1)
    real = inference.job.write_table_atomic
    calls = {"n": 0}

    def full_after_two(path: Path, table: pa.Table) -> None:
        calls["n"] += 1
        if calls["n"] > 2:  # the third part file meets a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, table)

    monkeypatch.setattr(inference.job, "write_table_atomic", full_after_two)
    with pytest.raises(JobStoppedError, match="disk full while writing .*c000002.parquet: No space "
                                              "left on device.*512 of 700 items.*rerun"):
        run_job(opts)
    assert len(list((tmp_path / "job" / "_parts").glob("*.parquet"))) == 2
    monkeypatch.setattr(inference.job, "write_table_atomic", real)
    res = run_job(opts)
    assert res.exit_code == 0 and res.classified == 700 - 512


def test_writing_turns_gdal_and_os_errors_into_output_write_errors(tmp_path: Path) -> None:
    from rasterio.errors import RasterioError

    from inference.writers import OutputWriteError, writing

    with pytest.raises(OutputWriteError, match="disk full while writing .*x.tif") as info, \
            writing(tmp_path / "x.tif"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.no_space
    with pytest.raises(OutputWriteError, match="write failed while writing") as info, \
            writing(tmp_path / "y.tif"):
        raise RasterioError("TIFFAppendToStrip: Write error")
    assert not info.value.no_space
