"""The end of a job: scene outputs written as each scene is done, or at the end for scenes
an earlier run finished, and the final manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inference.job import JobFolder
from inference.runner import JobOptions, run_job

from .conftest import random_chips


def _opts(inputs: list[Path], model: Path, out: Path) -> JobOptions:
    return JobOptions(inputs=tuple(map(str, inputs)), model=str(model), out=out, progress=False,
                      threads=1, workers=1)


def test_outputs_of_scenes_finished_by_an_earlier_run(rgb_model: Path, tmp_path: Path,
                                                      tif_factory: Callable[..., Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped after every unit was recorded, with one scene's outputs written and
    another's only in part: the next run classifies nothing, leaves the complete scene's
    files alone and writes the other's (its quicklook read from the file), byte for byte
    those of an uninterrupted run."""
    rng = np.random.default_rng(3)
    a = tif_factory("a.tif", rng.integers(1, 255, (3, 300, 200), dtype=np.uint8))
    b = tif_factory("b.tif", rng.integers(1, 255, (3, 150, 260), dtype=np.uint8))
    random_chips(tmp_path / "chips", 3)
    inputs = [a, b, tmp_path / "chips"]
    ref = tmp_path / "ref"
    run_job(_opts(inputs, rgb_model, ref))
    out = tmp_path / "job"
    with monkeypatch.context() as m:  # keep the parts, as a kill before the clean-up would
        m.setattr(JobFolder, "remove_parts", lambda self: None)
        run_job(_opts(inputs, rgb_model, out))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").unlink()
    for name in ("b.geojson", "b.quicklook.png"):
        (out / name).unlink()
    a_files = {n: (out / n).stat().st_mtime_ns for n in manifest["outputs"] if n.startswith("a.")}
    res = run_job(_opts(inputs, rgb_model, out))
    assert res.state == "finished" and res.classified == 0
    for name in manifest["outputs"]:
        if name.startswith("stac/") and name != "stac/catalog.json":  # datetime: the job's start
            got, want = (json.loads((d / name).read_text()) for d in (out, ref))
            got["properties"].pop("datetime"), want["properties"].pop("datetime")
            assert got == want, name
            continue
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert {n: (out / n).stat().st_mtime_ns for n in a_files} == a_files
    final = json.loads((out / "manifest.json").read_text())
    assert final["status"] == "finished" and final["outputs"] == sorted(final["outputs"])
    scenes = [e for e in final["inputs"] if e["kind"] == "scene"]
    assert [e["path"] for e in scenes] == [str(a), str(b)]
    assert scenes[1]["outputs"] == {"classes": "b.classes.tif",
                                    "classes_aux": "b.classes.tif.aux.xml",
                                    "confidence": "b.confidence.tif", "geojson": "b.geojson",
                                    "quicklook": "b.quicklook.png", "stac": "stac/b.json"}
    assert {"stac/a.json", "stac/b.json", "stac/catalog.json"} <= set(final["outputs"])
    assert (out / "_SUCCESS").exists() and not (out / "_parts").exists()
