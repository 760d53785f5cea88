"""`vision change` on job folders written by the real `vision infer` (a tiny ONNX model on the
real-chip scenes): the reader follows the prediction table's contract, not a test's copy of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import typer
from typer.testing import CliRunner

from tests.inference.change.conftest import CLASSES, run_cli
from vision.hashing import file_sha256


def _infer(*args: str) -> int:
    from inference.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    result = CliRunner().invoke(app, ["infer", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code


def test_jobs_of_vision_infer_compare(pairs: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = model_factory(["B04", "B03", "B02"], classes=CLASSES)
    for d in ("d0", "d1"):
        assert _infer(str(pairs / f"{d}.tif"), "--model", str(model), "--out", str(tmp_path / d),
                      "--no-progress") in (0, 1)
    code, out = run_cli(str(tmp_path / "d0"), str(tmp_path / "d1"), "--out", str(tmp_path / "c"),
                        "--classes", "AnnualCrop", "--dates", "2023-06-15,2024-06-14", "--no-progress")
    assert code == 0, out
    rows = pq.read_table(tmp_path / "c" / "changes.parquet").to_pylist()
    assert len(rows) == 144
    assert {r["alignment"] for r in rows} == {"same_grid"}
    # the nodata blocks (6 windows before, 4 after) are not assessed; this schema-1 job has no
    # cloud mask, so its cloudy windows were classified like any other
    na = [r for r in rows if r["status"] == "not_assessed"]
    assert len(na) == 10 and {r["reason"] for r in na} == {"before nodata", "after nodata"}
    assert {r["input_sha256_after"] for r in rows} == {file_sha256(pairs / "d1.tif")}
    assert {r["model_sha256_before"] for r in rows} == {file_sha256(model)}
    assert {(r["item_before"], r["item_after"]) for r in rows} == {("d0", "d1")}
    assert all(r["row_off_before"] == r["row_off"] and r["path_before"] == str(pairs / "d0.tif")
               for r in rows if r["status"] != "not_assessed" or r["reason"] != "before nodata")
    assert (tmp_path / "c" / "report.html").stat().st_size > 10_000
