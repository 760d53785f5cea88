"""Kill -9 at a random moment, rerun: the outputs equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio

from inference.job import LOCK

from .conftest import random_chips, write_tif

SCRIPT = """
import sys
from pathlib import Path
from inference.runner import JobOptions, run_job
res = run_job(JobOptions(inputs=tuple(sys.argv[3:]), model=sys.argv[1], out=Path(sys.argv[2]),
                         progress=False, threads=1, workers=1, batch_size=16))
sys.exit(res.exit_code)
"""


def _start(model: Path, out: Path, inputs: list[Path]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(model), str(out),
                             *map(str, inputs)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _outputs(out: Path) -> dict[str, object]:
    table = pq.read_table(out / "predictions.parquet")
    res: dict[str, object] = {"rows": table.to_pylist()}
    for tif in sorted(out.glob("*.tif")):
        with rasterio.open(tif) as ds:
            res[tif.name] = (ds.read(), ds.crs.to_string(), tuple(ds.transform))
    for gj in sorted(out.glob("*.geojson")):
        res[gj.name] = json.loads(gj.read_text())
    for png in sorted(out.glob("*.quicklook.png")):  # drawn from the reads, or the file
        res[png.name] = png.read_bytes()
    return res


def test_kill_and_resume(rgb_model: Path, tmp_path: Path) -> None:
    random_chips(tmp_path / "in" / "chips", 1100)
    rng = np.random.default_rng(5)
    for k in range(2):
        arr = rng.integers(1, 255, (3, 640, 600), dtype=np.uint8)
        arr[:, :100, :100] = 0
        write_tif(tmp_path / "in" / f"scene{k}.tif", arr, nodata=0)
    inputs = [tmp_path / "in"]
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    assert _start(rgb_model, ref, inputs).wait(timeout=300) == 0
    full = time.monotonic() - t0

    seed = random.randrange(1 << 30)
    r = random.Random(seed)
    out = tmp_path / "job"
    kills, latest = 0, 0.7
    for _ in range(10):
        if kills == 3:
            break
        proc = _start(rgb_model, out, inputs)
        # A rerun can be faster than the reference (warm caches): kill within the first part.
        time.sleep(r.uniform(0.1, latest) * full)
        if proc.poll() is not None:
            if kills:
                break
            # Finished before the first kill: start over from nothing and kill sooner.
            shutil.rmtree(out, ignore_errors=True)
            latest = max(latest / 2, 0.2)
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    proc = _start(rgb_model, out, inputs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (seed, err.decode()[-2000:])
    assert kills >= 1, f"the job finished before any kill (seed {seed}); it is too fast"
    assert _outputs(out).keys() == _outputs(ref).keys()
    a, b = _outputs(out), _outputs(ref)
    assert a["rows"] == b["rows"], f"seed {seed}"
    for key in a:
        if key.endswith(".tif"):
            np.testing.assert_array_equal(a[key][0], b[key][0])  # type: ignore[index]
            assert a[key][1:] == b[key][1:]  # type: ignore[index]
        else:
            assert a[key] == b[key], key
    leftovers = [p for p in out.rglob("*")
                 if (p.name.startswith(".") and p.name != LOCK) or p.name == "_parts"]
    assert not leftovers
    # A rerun of the finished job does nothing and says so.
    proc = _start(rgb_model, out, inputs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and b"already finished" in err


def test_tmp_files_of_a_killed_run_are_removed(rgb_model: Path, tmp_path: Path,
                                               tif_factory: Callable[..., Path]) -> None:
    from inference.runner import JobOptions, run_job

    random_chips(tmp_path / "chips", 2)
    out = tmp_path / "job"
    opts = JobOptions(inputs=(str(tmp_path / "chips"),), model=str(rgb_model), out=out,
                      progress=False, threads=1)
    run_job(opts)
    # Simulate a run killed mid-way: manifest says running, parts and a temp file remain.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").unlink()
    (out / ".predictions.parquet.123.tmp").write_bytes(b"partial")
    res = run_job(opts)
    assert res.state == "finished"
    assert [p.name for p in out.glob(".*")] == [LOCK]
