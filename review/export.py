"""Results out: confirmed results (GeoJSON, Parquet) and a labelled dataset for training.

Only items with a finished human review (``status == done``) are exported, each with the
reviewer, the time, the model version and the input hash. The labelled dataset is what
`vision.data.sources.ManifestSource` reads: ``manifest.csv`` (``path,label,group``, label =
class name, paths relative to the manifest) and GeoTIFF chips of raw values, cut from the
scene window or copied from the chip file. Rejected/unclear items carry no label and are
left out of the dataset, as are chips whose band count differs from the model's (or, when
the job does not say, from the first chip's) and inputs that cannot be read inside the
allowed roots (`review.jobs.files.open_input`: outside them, behind a link, missing): those
are listed in ``skipped.csv`` and returned, with their reasons, in `DatasetExport`.

A change job exports its confirmed changes only (`review.export_changes`); it has no
labelled dataset.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from review.db.models import DONE, Item, Job, User
from review.formats import ExportFormat
from review.jobs.files import InputMissingError, InputRefusedError, SafeFile, open_input
from review.jobs.importer import read_manifest
from review.jobs.records import KIND_CHANGE
from review.render import MAX_IMAGE_BYTES, item_input
from vision.atomic import atomic_dir, atomic_path, write_text_atomic
from vision.cli_options import refuse_overwrite
from vision.contracts.predictions import PREDICTION_SCHEMA
from vision.contracts.window import WINDOW_COLUMNS
from vision.data.decode import decode_image_bytes
from vision.errors import ConfigError, InputError, VisionError
from vision.raster import IMAGE_SUFFIXES, RASTER_SUFFIXES, open_raster


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
        *(_prediction(c) for c in ("path", *WINDOW_COLUMNS)),
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


@dataclass
class DatasetExport:
    """What a dataset export wrote and left out.

    Attributes:
        written: chips in ``manifest.csv``.
        skipped: ``(item_id, reason)`` of labelled items left out.
    """

    written: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def export_dataset(
    db: Session, job_id: int, out_dir: Path, roots: Sequence[Path], overwrite: bool = False
) -> DatasetExport:
    """Write the labelled dataset (manifest + GeoTIFF chips) of a job.

    The folder is built beside ``out_dir`` and moved into place at the end
    (`vision.atomic.atomic_dir`). Inputs are read only inside ``roots``.

    Raises:
        ConfigError: ``out_dir`` exists and ``overwrite`` is false, or there is no such job.
    """
    job = _job(db, job_id)
    refuse_overwrite(out_dir, overwrite)
    result = DatasetExport()
    with atomic_dir(out_dir) as tmp:
        rows: list[tuple[str, str, str]] = []
        wanted = _band_count(job, roots)
        radiometry = _radiometry(job, roots)
        for c in confirmed(db, job_id):
            it = c.item
            if it.final_class is None:
                continue
            try:
                with open_input(item_input(job.job_dir, it.path), roots) as src:
                    rel, bands = _export_one(src, it, job_id, tmp, wanted, radiometry)
                wanted = wanted or bands  # the first chip sets the band count of the dataset
            except (InputRefusedError, InputMissingError) as exc:
                result.skipped.append((it.id, f"input not read: {exc}"))
                continue
            except _Skip as exc:
                result.skipped.append((it.id, str(exc)))
                continue
            rows.append((rel.as_posix(), it.final_class, Path(it.path).stem))
        with (tmp / "manifest.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "group"])
            w.writerows(rows)
        if result.skipped:
            with (tmp / "skipped.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["item_id", "reason"])
                w.writerows(result.skipped)
        (tmp / "classes.txt").write_text("\n".join(job.classes or []) + "\n")
    result.written = len(rows)
    return result


class _Skip(VisionError):
    """This item is left out of the dataset (the message says why)."""


def _export_one(src: SafeFile, it: Item, job_id: int, tmp: Path, wanted: int | None,
                radiometry: str | None = None) -> tuple[Path, int]:
    try:
        bands = _bands_of(src)
    except (InputError, RasterioError) as exc:
        raise _Skip("input not readable as a GeoTIFF, PNG or JPEG") from exc
    if wanted is not None and bands != wanted:
        raise _Skip(f"{bands} bands, the dataset has {wanted}")
    suffix = ".tif" if it.row_off is not None else src.suffix
    if suffix not in IMAGE_SUFFIXES:
        raise _Skip(f"input of type {suffix or '(none)'} is not a GeoTIFF, PNG or JPEG")
    rel = Path("chips") / _safe(it.final_class or "_") / f"{job_id}_{it.id}{suffix}"
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_chip(src, it, tmp / rel, radiometry)
    except (InputError, RasterioError) as exc:
        (tmp / rel).unlink(missing_ok=True)
        raise _Skip("input not readable as a GeoTIFF, PNG or JPEG") from exc
    return rel, bands


def _band_count(job: Job, roots: Sequence[Path]) -> int | None:
    """The model's band count, when the job's manifest names its bands."""
    model = read_manifest(Path(job.job_dir), roots).get("model")
    bands = model.get("bands") if isinstance(model, dict) else None
    return len(bands) if isinstance(bands, list) and bands else None


def _bands_of(src: SafeFile) -> int:
    if src.suffix in RASTER_SUFFIXES:
        with open_raster(src.gdal_path) as ds:
            return int(ds.count)
    return int(decode_image_bytes(src.read_bytes(MAX_IMAGE_BYTES), Path(src.name).name).shape[-1])


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _radiometry(job: Job, roots: Sequence[Path]) -> str | None:
    """What the job's pixels mean, as its manifest records the model's radiometry (the job's
    inputs were checked against it), as the JSON of a ``vision_radiometry`` GeoTIFF tag."""
    model = read_manifest(Path(job.job_dir), roots).get("model")
    rad = model.get("radiometry") if isinstance(model, dict) else None
    return json.dumps(rad) if isinstance(rad, dict) and rad.get("kind") else None


def _write_chip(src: SafeFile, it: Item, dst: Path, radiometry: str | None = None) -> None:
    if it.row_off is None or it.col_off is None or it.height is None or it.width is None:
        with dst.open("wb") as out:  # a byte-identical copy of the chip file opened inside the roots
            for block in src.chunks():
                out.write(block)
        return
    win = Window(it.col_off, it.row_off, it.width, it.height)
    with open_raster(src.gdal_path) as ds:
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
        descriptions, scales, offsets = ds.descriptions, ds.scales, ds.offsets
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        for i, d in enumerate(descriptions, start=1):
            if d:
                out.set_band_description(i, d)
        out.scales, out.offsets = scales, offsets  # what the values mean, as the source declared it
        if radiometry is not None:
            out.update_tags(vision_radiometry=radiometry)


def _job(db: Session, job_id: int) -> Job:
    job = db.get(Job, job_id) if 1 <= job_id < 2**31 else None
    if job is None:
        raise ConfigError(f"no job {job_id}: the jobs page (or the job's import message) gives the number")
    return job


@dataclass(frozen=True)
class ExportDone:
    """One finished export.

    Attributes:
        items: items written (features, rows or chips).
        skipped: for a dataset, the labelled items left out, with their reasons.
    """

    fmt: ExportFormat
    out: Path
    items: int
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def reasons(self) -> list[tuple[str, int]]:
        """Distinct reasons for skipping, most frequent first, with their counts."""
        return Counter(reason for _, reason in self.skipped).most_common()


def export_job(
    db: Session, job_id: int, fmt: ExportFormat, out: Path, roots: Sequence[Path], overwrite: bool = False
) -> ExportDone:
    """Write one export of a job (the CLI and the web app both call this).

    Raises:
        ConfigError: no such job, or ``out`` exists and ``overwrite`` is false.
    """
    job = _job(db, job_id)
    refuse_overwrite(out, overwrite)
    if job.kind == KIND_CHANGE:
        from review.export_changes import export_changes_geojson, export_changes_parquet

        if fmt is ExportFormat.dataset:
            raise ConfigError(f"job {job_id} is a change job: it exports confirmed changes (--format geojson or "
                              "parquet), not a labelled dataset")
        write = export_changes_geojson if fmt is ExportFormat.geojson else export_changes_parquet
        return ExportDone(fmt, out, write(db, job_id, out))
    if fmt is ExportFormat.geojson:
        return ExportDone(fmt, out, export_geojson(db, job_id, out))
    if fmt is ExportFormat.parquet:
        return ExportDone(fmt, out, export_parquet(db, job_id, out))
    done = export_dataset(db, job_id, out, roots, overwrite=overwrite)
    return ExportDone(fmt, out, done.written, done.skipped)
