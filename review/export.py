"""Results out: confirmed results (GeoJSON, Parquet) and a labelled dataset for training.

Only items with a finished human review (``status == done``) are exported, each with the
reviewer, the time, the model version and the input hash. The labelled dataset is what
`vision.data.sources.ManifestSource` reads: ``manifest.csv`` (``path,label,group``, label =
class name, paths relative to the manifest) and GeoTIFF chips of raw values, cut from the
scene window or copied from the chip file. Rejected/unclear items carry no label and are
left out of the dataset, as are chips whose band count differs from the model's (or, when
the job does not say, from the first chip's): those are listed in ``skipped.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from review.db.models import DONE, Item, Job, User
from review.render import input_file
from vision.atomic import atomic_dir, atomic_path, write_text_atomic
from vision.contracts.predictions import PREDICTION_SCHEMA
from vision.data.decode import decode_file
from vision.errors import InputError, VisionError
from vision.raster import RASTER_SUFFIXES, open_raster


@dataclass(frozen=True)
class ConfirmedItem:
    """An item with a finished human review."""

    item: Item
    reviewer: str


def confirmed(db: Session, job_id: int) -> Iterator[ConfirmedItem]:
    """The job's human-decided items in id order."""
    reviewer = aliased(User)
    rows = db.execute(
        select(Item, reviewer.name)
        .join(reviewer, reviewer.id == Item.decided_by)
        .where(Item.job_id == job_id, Item.status == DONE, Item.final_decision.is_not(None))
        .order_by(Item.id)
    )
    for item, name in rows:
        yield ConfirmedItem(item, str(name))


def _record(c: ConfirmedItem) -> dict[str, Any]:
    it = c.item
    return {
        "item_id": it.id,
        "path": it.path,
        "row_off": it.row_off,
        "col_off": it.col_off,
        "height": it.height,
        "width": it.width,
        "crs": it.crs,
        "minx": it.minx,
        "miny": it.miny,
        "maxx": it.maxx,
        "maxy": it.maxy,
        "predicted_class": it.class_name,
        "confidence": it.confidence,
        "decision": it.final_decision,
        "reviewed_class": it.final_class,
        "reviewer": c.reviewer,
        "reviewed_at": it.decided_at.isoformat() if it.decided_at else None,
        "model_name": it.model_name,
        "model_version": it.model_version,
        "model_sha256": it.model_sha256,
        "input_sha256": it.input_sha256,
    }


def _geometry(it: Item) -> dict[str, Any] | None:
    if None in (it.minx, it.miny, it.maxx, it.maxy):
        return None
    minx, miny, maxx, maxy = it.minx, it.miny, it.maxx, it.maxy
    if it.crs:
        from rasterio.errors import CRSError
        from rasterio.warp import transform_bounds

        # An unknown CRS text keeps the native bounds (named in the properties).
        with contextlib.suppress(CRSError, ValueError):
            minx, miny, maxx, maxy = transform_bounds(it.crs, "EPSG:4326", minx, miny, maxx, maxy)
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def export_geojson(db: Session, job_id: int, out: Path) -> int:
    """Write confirmed results as a GeoJSON FeatureCollection (WGS 84); returns the count."""
    features = [
        {"type": "Feature", "geometry": _geometry(c.item), "properties": _record(c)} for c in confirmed(db, job_id)
    ]
    doc = {"type": "FeatureCollection", "features": features}
    write_text_atomic(out, json.dumps(doc))
    return len(features)


def _prediction(name: str, rename: str | None = None) -> pa.Field:
    """A column of the prediction table (`vision.contracts.predictions`), optionally renamed."""
    f = PREDICTION_SCHEMA.field(name)
    return f.with_name(rename) if rename else f


#: Confirmed results: the prediction columns that locate and identify an item, with the
#: human decision beside them.
EXPORT_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        *(_prediction(c) for c in ("path", "row_off", "col_off", "height", "width", "crs",
                                   "minx", "miny", "maxx", "maxy")),
        _prediction("class_name", "predicted_class"),
        _prediction("confidence"),
        ("decision", pa.string()),
        ("reviewed_class", pa.string()),
        ("reviewer", pa.string()),
        ("reviewed_at", pa.string()),
        *(_prediction(c) for c in ("model_name", "model_version", "model_sha256", "input_sha256")),
    ]
)


def export_parquet(db: Session, job_id: int, out: Path) -> int:
    """Write confirmed results as a Parquet table; returns the count."""
    rows = [_record(c) for c in confirmed(db, job_id)]
    table = pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return len(rows)


class ExportError(VisionError):
    """The dataset could not be written."""


def export_dataset(db: Session, job_id: int, out_dir: Path, overwrite: bool = False) -> int:
    """Write the labelled dataset (manifest + GeoTIFF chips) of a job; returns the count.

    The folder is built beside ``out_dir`` and moved into place at the end (`vision.atomic.atomic_dir`).

    Raises:
        ExportError: ``out_dir`` exists and ``overwrite`` is false.
    """
    job = db.get(Job, job_id)
    if job is None:
        raise ExportError(f"no job {job_id}")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} exists; pass --overwrite to replace it")
    with atomic_dir(out_dir) as tmp:
        rows: list[tuple[str, str, str]] = []
        skipped: list[tuple[int, str]] = []
        wanted = _band_count(job)
        for c in confirmed(db, job_id):
            it = c.item
            if it.final_class is None:
                continue
            src = input_file(Path(job.job_dir), it.path)
            try:
                bands = _bands_of(src)
            except InputError as exc:
                skipped.append((it.id, str(exc)))
                continue
            if wanted is None:
                wanted = bands  # the first chip sets the band count of the dataset
            if bands != wanted:
                skipped.append((it.id, f"{bands} bands, the dataset has {wanted}"))
                continue
            rel = Path("chips") / _safe(it.final_class) / f"{job_id}_{it.id}{_suffix(src, it)}"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                _write_chip(src, it, tmp / rel)
            except InputError as exc:
                skipped.append((it.id, str(exc)))
                continue
            rows.append((rel.as_posix(), it.final_class, Path(it.path).stem))
        with (tmp / "manifest.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "group"])
            w.writerows(rows)
        if skipped:
            with (tmp / "skipped.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["item_id", "reason"])
                w.writerows(skipped)
        (tmp / "classes.txt").write_text("\n".join(json.loads(job.classes or "[]")) + "\n")
    return len(rows)


def _band_count(job: Job) -> int | None:
    """The model's band count, when the job's manifest names its bands."""
    from review.jobs.importer import read_manifest

    model = read_manifest(Path(job.job_dir)).get("model")
    bands = model.get("bands") if isinstance(model, dict) else None
    return len(bands) if isinstance(bands, list) and bands else None


def _bands_of(src: Path) -> int:
    if src.suffix.lower() in RASTER_SUFFIXES:
        with open_raster(src) as ds:
            return int(ds.count)
    return int(decode_file(src).shape[-1])


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _suffix(src: Path, it: Item) -> str:
    return ".tif" if it.row_off is not None else src.suffix.lower()


def _write_chip(src: Path, it: Item, dst: Path) -> None:
    if it.row_off is None or it.col_off is None or it.height is None or it.width is None:
        shutil.copyfile(src, dst)
        return
    win = Window(it.col_off, it.row_off, it.width, it.height)
    with open_raster(src) as ds:
        data = ds.read(window=win)
        profile = {
            "driver": "GTiff",
            "height": it.height,
            "width": it.width,
            "count": ds.count,
            "dtype": data.dtype.name,
            "crs": ds.crs,
            "nodata": ds.nodata,
            "transform": window_transform(win, ds.transform),
        }
        descriptions = ds.descriptions
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        for i, d in enumerate(descriptions, start=1):
            if d:
                out.set_band_description(i, d)
