"""Job folders as `vision infer` writes them, built from known values (no model needed).

`write_job` writes a finished job folder (``predictions.parquet`` with the columns of
`vision.contracts.predictions.PREDICTION_SCHEMA`, plus the schema-2 columns ``item_id``,
``acquired``, ``cloud_fraction``, ``aoi_id`` for ``schema=2``; ``manifest.json``; per scene a
class COG and a confidence COG on the window grid; ``_SUCCESS``) from per-window statuses and
probabilities. `simulate_job` fills those from a date of `bench/make_change_pairs.py` by a
deterministic simulated model: its answer depends only on the chip under the window's centre
(the same chip gives the same answer at every date), right with probability ``accuracy``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine

from vision.contracts.predictions import PREDICTION_SCHEMA, rows_to_table
from vision.hashing import file_sha256

REPO = Path(__file__).resolve().parents[3]
SCHEMA2_FIELDS = [pa.field("item_id", pa.string()), pa.field("acquired", pa.timestamp("us", tz="UTC")),
                  pa.field("cloud_fraction", pa.float32()), pa.field("aoi_id", pa.string())]


def pairs_module() -> Any:
    """``bench/make_change_pairs.py`` as a module."""
    import sys

    if "make_change_pairs" in sys.modules:
        return sys.modules["make_change_pairs"]
    spec = importlib.util.spec_from_file_location("make_change_pairs", REPO / "bench" / "make_change_pairs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_change_pairs"] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass
class SceneSpec:
    """One scene of a job: where it is, and per window (``rows x cols``) its values.

    ``status`` holds ``ok``/``nodata``/``cloudy``/``error``; ``probs`` is ``rows x cols x K``
    (used where ok); ``aoi_id`` (object array) and ``cloud_fraction`` are optional.
    """

    path: str
    crs: str
    transform: Affine
    shape: tuple[int, int]
    status: np.ndarray
    probs: np.ndarray
    window: int = 64
    stride: int = 64
    item_id: str | None = None
    acquired: str | None = None
    cloud_fraction: np.ndarray | None = None
    aoi_id: np.ndarray | None = None
    sha256: str | None = None


def _time(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")) if iso else None


def _bounds(t: Affine, r: int, c: int, h: int, w: int) -> dict[str, float]:
    xs, ys = zip(*(t @ (cc, rr) for rr, cc in ((r, c), (r, c + w), (r + h, c), (r + h, c + w))), strict=True)
    return {"minx": min(xs), "miny": min(ys), "maxx": max(xs), "maxy": max(ys)}


def _cog(path: Path, arr: np.ndarray, crs: str, transform: Affine, nodata: float) -> None:
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    profile = {"driver": "GTiff", "width": arr.shape[1], "height": arr.shape[0], "count": 1,
               "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr, 1)
        with mem.open() as src:
            rio_copy(src, str(path), driver="COG")


def write_job(folder: Path, scenes: list[SceneSpec], classes: list[str], schema: int = 2,
              model: tuple[str, str, str] = ("simulated-from-truth", "1", "0" * 64), success: bool = True,
              status: str = "finished", manifest_stride: bool = True) -> Path:
    """Write a job folder (see the module docstring); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    inputs = []
    for s in scenes:
        n_r, n_c = s.status.shape
        for i in range(n_r):
            for j in range(n_c):
                st = str(s.status[i, j])
                r, c = i * s.stride, j * s.stride
                row: dict[str, Any] = {
                    "path": s.path, "row_off": r, "col_off": c, "height": s.window, "width": s.window,
                    "crs": s.crs, **_bounds(s.transform, r, c, s.window, s.window), "status": st,
                    "label": None, "class_name": None, "confidence": None, "probs": None, "flagged": None,
                    "error": "simulated failure" if st == "error" else None, "input_sha256": s.sha256,
                    "model_name": model[0], "model_version": model[1], "model_sha256": model[2]}
                if st == "ok":
                    p = np.asarray(s.probs[i, j], np.float32)
                    k = int(p.argmax())
                    row.update(label=k, class_name=classes[k], confidence=float(p[k]), probs=p.tolist())
                if schema >= 2:
                    row.update(item_id=s.item_id or Path(s.path).stem,
                               acquired=_time(s.acquired),
                               cloud_fraction=float(s.cloud_fraction[i, j]) if s.cloud_fraction is not None else None,
                               aoi_id=s.aoi_id[i, j] if s.aoi_id is not None else None)
                rows.append(row)
        cls = np.full((n_r, n_c), 255, np.uint8)
        conf = np.full((n_r, n_c), np.nan, np.float32)
        ok = s.status == "ok"
        cls[ok] = s.probs.argmax(axis=2)[ok]
        conf[ok] = s.probs.max(axis=2)[ok]
        stem = Path(s.path).stem
        off = (s.window - s.stride) / 2  # one pixel per window, centred on it (as `vision infer` writes)
        grid_t = s.transform @ Affine.translation(off, off) @ Affine.scale(s.stride)
        _cog(folder / f"{stem}.classes.tif", cls, s.crs, grid_t, 255)
        _cog(folder / f"{stem}.confidence.tif", conf, s.crs, grid_t, float("nan"))
        counts = {k: int((s.status == k).sum()) for k in ("ok", "nodata", "cloudy", "error")}
        inputs.append({"path": s.path, "kind": "scene", "status": "ok", "error": None, "sha256": s.sha256,
                       "crs": s.crs, "size": list(s.shape), "grid": [n_r, n_c], "windows": counts,
                       "outputs": {"classes": f"{stem}.classes.tif", "confidence": f"{stem}.confidence.tif"}})
    if schema >= 2:
        base = rows_to_table([{k: r.get(k) for k in PREDICTION_SCHEMA.names} for r in rows])
    else:  # a schema-1 table: without the schema-2 columns
        schema1 = pa.schema([f for f in PREDICTION_SCHEMA if f.name not in {g.name for g in SCHEMA2_FIELDS}])
        base = rows_to_table([{k: r[k] for k in schema1.names} for r in rows], schema1)
    pq.write_table(base, folder / "predictions.parquet", compression="zstd")
    options: dict[str, Any] = {"inputs": [s.path for s in scenes], "max_nodata": 0.5}
    if manifest_stride:
        options["stride"] = [scenes[0].stride, scenes[0].stride]
    manifest = {"schema_version": schema, "status": status, "fingerprint": "simulated",
                "model": {"uri": "simulated", "name": model[0], "version": model[1], "sha256": model[2],
                          "classes": list(classes), "bands": ["B04", "B03", "B02"],
                          "input_size": [scenes[0].window] * 2, "temperature": 1.0},
                "options": options, "inputs": inputs, "rows": len(rows), "exit_code": 0}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if success:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def simulated_probs(true_class: int, key: tuple[int, ...], n_classes: int, accuracy: float) -> np.ndarray:
    """A deterministic calibrated-looking probability vector for one input (``key``): the true
    class on top with probability ``accuracy``, else another class; a confident top when right."""
    rng = np.random.default_rng(list(key))
    right = rng.random() < accuracy
    top = true_class if right else int((true_class + 1 + rng.integers(n_classes - 1)) % n_classes)
    p_top = rng.uniform(0.6, 0.995) if right else rng.uniform(0.35, 0.8)
    rest = rng.dirichlet(np.full(n_classes - 1, 2.0)) * (1 - p_top)
    if rest.max() >= p_top:  # keep the chosen class on top
        rest *= 0.95 * p_top / rest.max()
    p = np.insert(rest, top, 0.0)
    p[top] = 1.0 - p.sum()
    return p.astype(np.float32)


def simulate_job(pairs_dir: Path, name: str, out: Path, accuracy: float = 0.95, seed: int = 0,
                 schema: int = 2, classes: list[str] | None = None) -> Path:
    """A simulated job for date ``name`` of a `bench/make_change_pairs.py` folder."""
    mcp = pairs_module()
    classes = list(classes or mcp.CLASSES)
    keys = json.loads((pairs_dir / "chips.json").read_text())
    item = json.loads((pairs_dir / f"{name}.item.json").read_text())
    scene = pairs_dir / f"{name}.tif"
    with rasterio.open(scene) as ds:
        crs, transform, shape = ds.crs.to_string(), ds.transform, (ds.height, ds.width)
    with rasterio.open(pairs_dir / f"{name}.truth.tif") as ds:
        truth = mcp.window_truth(ds.read())
    n_r, n_c = truth["class"].shape
    status = np.full((n_r, n_c), "ok", object)
    status[truth["nodata"]] = "nodata"
    if schema >= 2:
        status[truth["cloudy"]] = "cloudy"
    probs = np.zeros((n_r, n_c, len(classes)), np.float32)
    for i in range(n_r):
        for j in range(n_c):
            chip = int(truth["chip"][i, j])
            if chip < 0:
                continue
            cls = classes.index(keys[chip].rsplit("_", 1)[0])
            if truth["cloudy"][i, j] and schema < 2:  # no cloud mask: the model sees clouds
                probs[i, j] = simulated_probs(classes.index("SeaLake"), (seed, chip, 7), len(classes), 0.5)
            else:
                probs[i, j] = simulated_probs(cls, (seed, chip), len(classes), accuracy)
    spec = SceneSpec(str(scene), crs, transform, shape, status, probs, item_id=item["id"] if schema >= 2 else None,
                     acquired=item["properties"]["datetime"], cloud_fraction=truth["cloud_fraction"],
                     sha256=file_sha256(scene))
    sha = hashlib.sha256(f"simulated accuracy={accuracy} seed={seed}".encode()).hexdigest()
    return write_job(out, [spec], classes, schema=schema, model=("simulated-from-truth", "1", sha))
