"""`--engine ray` on a real local Ray cluster (127.0.0.1) gives the local engine's rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from inference.runner import JobOptions, run_job

from .conftest import random_chips


@pytest.mark.slow
def test_ray_equals_local(rgb_model: Path, tmp_path: Path, tif_factory: Callable[..., Path],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    random_chips(tmp_path / "in" / "chips", 300)
    arr = np.random.default_rng(2).integers(1, 255, (3, 300, 260), dtype=np.uint8)
    arr[:, :70] = 0
    tif_factory("in/scene.tif", arr, nodata=0)
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        res = run_job(JobOptions(inputs=(str(tmp_path / "in"),), model=str(rgb_model), out=out,
                                 engine=engine, workers=1, threads=1, progress=False))
        assert res.exit_code == 0
        results[engine] = pq.read_table(out / "predictions.parquet").to_pylist()
        assert (out / "_SUCCESS").exists() and (out / "scene.classes.tif").exists()
    local, ray_rows = results["local"], results["ray"]
    assert len(local) == len(ray_rows) == 300 + 5 * 5
    for a, b in zip(local, ray_rows, strict=True):
        probs_a, probs_b = a.pop("probs"), b.pop("probs")
        conf_a, conf_b = a.pop("confidence"), b.pop("confidence")
        assert a == b
        if probs_a is not None:
            np.testing.assert_allclose(probs_a, probs_b, atol=1e-6)
            assert conf_a == pytest.approx(conf_b, abs=1e-6)
