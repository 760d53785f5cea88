"""`vision data chips`: the windows of labelled scenes written to disk, for people and tools.

The folder holds one GeoTIFF per window (``SPLIT/CLASS/SCENE_rROW_cCOL.tif``: raw values in
the scene's dtype, band descriptions, the scene's CRS and the window's transform, the
acquisition time as ``TIFFTAG_DATETIME``, what the values mean as ``vision_radiometry``), and:

- ``manifest.csv``: ``path,label,group,split,scene,row_off,col_off,minx,miny,maxx,maxy,crs,
  acquired`` (+ ``aoi,label_source,feature``), paths relative to the folder: a manifest every
  reader of this project takes (`vision.data.sources.ManifestSource`), and ``vision data
  check DIR`` validates (chips against their rows, train-test distances, duplicates);
- ``skipped.csv``: every label, scene and window that gave no chip, with why;
- ``chips.json``: the lineage (`LabelledData.lineage`): inputs, radiometry, GSD, sampling,
  split and its distances, warnings.

The folder is written beside its destination and moved into place at the end
(`vision.atomic.atomic_dir`), so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from vision.atomic import atomic_dir, write_json_atomic
from vision.data.layout import CHIP_COLUMNS
from vision.data.scene_source import LabelledData
from vision.raster import gdal_env

#: The manifest's columns, in order.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "group", "split", *CHIP_COLUMNS, "acquired", "aoi",
                                     "label_source", "feature")
SKIPPED_COLUMNS: tuple[str, ...] = ("what", "source", "feature", "label", "kind", "reason", "scene", "row_off",
                                    "col_off")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name part from any text: other characters become ``_`` (never ``..`` or empty)."""
    out = _SAFE.sub("_", text).strip("._") or "x"
    return out[:limit]


@dataclass(frozen=True)
class ChipsWritten:
    """What `write_chips` wrote."""

    out: Path
    chips: int
    skipped: int


def write_chips(data: LabelledData, out: Path) -> ChipsWritten:
    """Write every window of ``data`` as a GeoTIFF chip, with the manifest, the skipped list
    and the lineage (the caller refuses an existing ``out`` without ``--overwrite``)."""
    h, w = data.options.size
    rows: list[dict[str, object]] = []
    names: set[str] = set()
    cols = data.columns()
    radiometry = data.radiometry.to_json()
    with atomic_dir(out) as tmp, gdal_env():
        for k, smp in enumerate(data.samples):
            sc = data.scenes[smp.scene]
            split = data.splits[k]
            base = f"{safe_name(split)}/{safe_name(smp.label)}/{safe_name(sc.id)}_r{smp.row}_c{smp.col}"
            rel, n = f"{base}.tif", 1
            while rel in names:  # two scenes whose ids differ only in unsafe characters
                n += 1
                rel = f"{base}~{n}.tif"
            names.add(rel)
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            px = data.read_window(k)
            arr = np.moveaxis(px, -1, 0)
            profile = dict(driver="GTiff", width=w, height=h, count=arr.shape[0], dtype=str(arr.dtype),
                           crs=sc.grid.crs, transform=sc.grid.window_transform((smp.row, smp.col, h, w)),
                           compress="deflate")
            with rasterio.open(target, "w", **profile) as ds:
                ds.write(arr)
                ds.descriptions = tuple(data.bands)
                tags = {"vision_radiometry": radiometry, "vision_scene": sc.id}
                if sc.acquired is not None:
                    tags["TIFFTAG_DATETIME"] = sc.acquired.strftime("%Y:%m:%d %H:%M:%S")
                ds.update_tags(**tags)
                r = data.radiometry
                if r.kind == "reflectance" and r.scale is not None and not np.issubdtype(arr.dtype, np.floating):
                    ds.scales = (r.scale,) * arr.shape[0]
                    ds.offsets = (r.offset or 0.0,) * arr.shape[0]
            fp = smp.footprint
            rows.append({"path": rel, "label": smp.label, "group": smp.group or sc.id, "split": split, "scene": sc.id,
                         "row_off": smp.row, "col_off": smp.col, "minx": fp.minx, "miny": fp.miny, "maxx": fp.maxx,
                         "maxy": fp.maxy, "crs": sc.grid.crs, "acquired": cols["acquired"][k].replace("(none)", ""),
                         "aoi": smp.aoi or "", "label_source": smp.source, "feature": smp.feature_id})
        _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)
        skipped = skipped_rows(data)
        _write_csv(tmp / "skipped.csv", SKIPPED_COLUMNS, skipped)
        write_json_atomic(tmp / "chips.json", data.lineage())
    return ChipsWritten(out, len(rows), len(skipped))


def skipped_rows(data: LabelledData) -> list[dict[str, object]]:
    """Every label, scene and window left out, one row each (``skipped.csv``)."""
    out: list[dict[str, object]] = []
    for q in data.label_problems:
        out.append({"what": "label", "source": q.source, "feature": q.feature, "label": q.label or "",
                    "kind": q.kind, "reason": q.reason, "scene": "", "row_off": "", "col_off": ""})
    for p in data.scene_problems:
        out.append({"what": "scene", "source": p.path, "feature": "", "label": "", "kind": "refused-scene",
                    "reason": p.reason, "scene": "", "row_off": "", "col_off": ""})
    for s in data.window_skips:
        c = s.candidate
        out.append({"what": "window", "source": c.source, "feature": c.feature_id, "label": c.label, "kind": s.kind,
                    "reason": s.reason, "scene": data.scenes[c.scene].id, "row_off": c.row, "col_off": c.col})
    return out


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(columns))
        wr.writeheader()
        wr.writerows(rows)
