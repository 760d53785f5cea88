"""Builders for the review tests: job folders with real rasters, users, signed-in clients.

`write_job` writes what `vision infer` leaves behind (ARCHITECTURE.md §3): a 4-band uint16
GeoTIFF scene (B02, B03, B04, B08 in EPSG:32632), a few whole-file PNG chips, a
``predictions.parquet`` with the contract's columns and types, ``manifest.json`` and
``_SUCCESS``.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from PIL import Image
from rasterio.transform import from_origin

CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
PASSWORD = "correct-horse-battery-staple"
SECRET = secrets.token_urlsafe(48)

# The contract's table schema, from the writer of `predictions.parquet` (one definition).
from vision.contracts.predictions import PREDICTION_SCHEMA  # noqa: E402


def write_scene(path: Path, size: int = 128, seed: int = 0) -> None:
    """A 4-band uint16 GeoTIFF with named bands and a UTM transform."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    data = np.stack([(1000 + 8 * xx + 5 * b * yy + rng.integers(0, 200, (size, size))) for b in range(4)]).astype(
        np.uint16
    )
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32632",
        "transform": from_origin(500000.0, 5200000.0, 10.0, 10.0),
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, name in enumerate(["B02", "B03", "B04", "B08"], start=1):
            ds.set_band_description(i, name)


def write_job(
    job_dir: Path,
    n_windows: int = 49,
    n_chips: int = 3,
    n_bad: int = 2,
    scene_size: int = 128,
    window: int = 32,
    seed: int = 0,
    classes: list[str] | None = None,
    model_uri: str | None = None,
) -> Path:
    """Write a finished job folder; returns it. Windows overlap (stride 16) for numbers.

    ``classes`` replaces the model's ten EuroSAT classes; ``model_uri`` is the model the
    manifest names (for heatmaps, see `write_model`)."""
    classes = list(classes or CLASSES)
    job_dir.mkdir(parents=True, exist_ok=True)
    inputs = job_dir / "inputs"
    inputs.mkdir(exist_ok=True)
    scene = inputs / "scene.tif"
    write_scene(scene, scene_size, seed)
    rng = np.random.default_rng(seed + 1)
    rows: list[dict[str, Any]] = []
    base = {"input_sha256": "a" * 64, "model_name": "landcover", "model_version": "3", "model_sha256": "b" * 64}

    def prediction() -> dict[str, Any]:
        logits = rng.normal(0, 1.5, len(classes))
        p = np.exp(logits) / np.exp(logits).sum()
        k = int(p.argmax())
        return {
            "status": "ok",
            "label": k,
            "class_name": classes[k],
            "confidence": float(p[k]),
            "probs": [float(x) for x in p],
            "flagged": bool(p[k] > 0.5),
            "error": None,
        }

    stride = 16
    positions = [
        (r, c) for r in range(0, scene_size - window + 1, stride) for c in range(0, scene_size - window + 1, stride)
    ]
    for i in range(n_windows):
        r, c = positions[i % len(positions)]
        minx, maxy = 500000.0 + c * 10, 5200000.0 - r * 10
        rows.append(
            {
                "path": str(scene),
                "row_off": r,
                "col_off": c,
                "height": window,
                "width": window,
                "crs": "EPSG:32632",
                "minx": minx,
                "miny": maxy - window * 10,
                "maxx": minx + window * 10,
                "maxy": maxy,
                **prediction(),
                **base,
            }
        )
    for j in range(n_chips):
        chip = inputs / f"chip_{j}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(chip)
        rows.append(
            {
                "path": str(chip),
                "row_off": None,
                "col_off": None,
                "height": None,
                "width": None,
                "crs": None,
                "minx": None,
                "miny": None,
                "maxx": None,
                "maxy": None,
                **prediction(),
                **base,
            }
        )
    for j in range(n_bad):
        rows.append(
            {
                "path": str(inputs / f"broken_{j}.tif"),
                "row_off": None,
                "col_off": None,
                "height": None,
                "width": None,
                "crs": None,
                "minx": None,
                "miny": None,
                "maxx": None,
                "maxy": None,
                "status": "error" if j % 2 == 0 else "nodata",
                "label": None,
                "class_name": None,
                "confidence": None,
                "probs": None,
                "flagged": None,
                "error": "not a readable raster" if j % 2 == 0 else None,
                **base,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), job_dir / "predictions.parquet")
    bands = ["B02", "B03", "B04", "B08"]
    model: dict[str, Any] = {"name": "landcover", "version": "3", "classes": classes, "bands": bands,
                             "radiometry": {"kind": "reflectance", "level": "L2A", "scale": 0.0001,
                                            "offset": 0.0, "source": "review test scenes"}}
    if model_uri:
        model["uri"] = model_uri
    manifest = {
        "model": model,
        "counts": {"total": len(rows), "ok": len(rows) - n_bad, "error": n_bad},
    }
    (job_dir / "manifest.json").write_text(json.dumps(manifest))
    (job_dir / "_SUCCESS").write_text("")
    return job_dir


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def login(client: Any, name: str, password: str = PASSWORD) -> str:
    """Sign ``client`` (TestClient or httpx.Client) in; returns the session's CSRF token."""
    r = client.get("/login")
    token = _CSRF_FIELD.search(r.text)
    assert token, r.text
    r = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token.group(1), "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, (r.status_code, r.text[:500])
    home = client.get("/")
    meta = _CSRF_META.search(home.text)
    assert meta and meta.group(1), home.text[:500]
    return meta.group(1)


def rewrite_paths(job_dir: Path, paths: dict[int, str]) -> None:
    """Change the ``path`` of some rows of a job's table (as an analyst with a text editor
    and pyarrow could), keeping everything else."""
    table = pq.read_table(job_dir / "predictions.parquet")
    rows = table.to_pylist()
    for i, p in paths.items():
        rows[i]["path"] = p
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), job_dir / "predictions.parquet")


def set_column(job_dir: Path, name: str, values: dict[int, Any]) -> None:
    """Change one column of some rows of a job's table."""
    table = pq.read_table(job_dir / "predictions.parquet")
    rows = table.to_pylist()
    for i, v in values.items():
        rows[i][name] = v
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), job_dir / "predictions.parquet")


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file (what `vision infer` records as ``input_sha256``)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_relative_job(work: Path, seed: int = 0) -> Path:
    """`cd work && vision infer chips/ --out out` by an older `vision infer`: three PNG chips
    in ``work/chips`` and a job folder ``work/out`` whose paths are relative to ``work``
    (with their real ``input_sha256``); returns the job folder."""
    folder = write_job(work / "out", n_windows=0, n_chips=3, n_bad=0, seed=seed)
    (work / "chips").mkdir()
    table = pq.read_table(folder / "predictions.parquet").to_pylist()
    paths, hashes = {}, {}
    for i, row in enumerate(table):
        src = Path(row["path"])
        shutil.move(src, work / "chips" / src.name)
        paths[i] = f"chips/{src.name}"
        hashes[i] = sha256_of(work / "chips" / src.name)
    rewrite_paths(folder, paths)
    set_column(folder, "input_sha256", hashes)
    return folder


def write_model(folder: Path, bands: list[str] | None = None) -> Path:
    """A small real model (`tiny_cnn`, seeded, the scene's four bands or ``bands``)
    exported with its checkpoint as training does; returns the ``.onnx`` (heatmaps are
    Grad-CAM from the checkpoint it names)."""
    import torch

    from training.checkpoint import save_checkpoint
    from training.export import export_onnx
    from vision.contracts.model import ModelMetadata
    from vision.models import NormalizedClassifier, get_model

    bands = list(bands or ["B02", "B03", "B04", "B08"])
    n = len(bands)
    torch.manual_seed(0)
    net = NormalizedClassifier(get_model("tiny_cnn", len(CLASSES), n, "none", band_names=bands),
                               [1000.0] * n, [500.0] * n).eval()
    ck = folder / "checkpoints" / "best.pt"
    save_checkpoint(ck, {"model": net.state_dict(), "architecture": "tiny_cnn", "classes": CLASSES,
                         "bands": bands, "mean": [1000.0] * n, "std": [500.0] * n, "input_size": [32, 32],
                         "temperature": 1.0, "thresholds": {}, "model_name": "landcover", "dropout": 0.2})
    meta = ModelMetadata(classes=tuple(CLASSES), bands=tuple(bands), input_size=(32, 32), mean=(1000.0,) * n,
                         std=(500.0,) * n, temperature=1.0, architecture="tiny_cnn", model_name="landcover",
                         model_version="3", checkpoint=str(ck))
    onnx_path = folder / "model.onnx"
    export_onnx(net, onnx_path, meta, torch.rand(4, n, 32, 32) * 3000)
    return onnx_path
