"""The job's outputs as a STAC catalog: ``DIR/stac/<stem>.json`` per scene, and
``DIR/stac/catalog.json`` linking them (ARCHITECTURE.md §5).

Each item describes one scene's class and confidence COGs (assets with hrefs relative to
the item, so the folder can be moved or served as it is) with the ``proj`` (v2.0.0),
``raster`` (v1.1.0) and ``classification`` (v2.0.0) extensions: the classes with their
values, names and colours, and the not-assessed values (nodata, cloudy, error) as classes of
their own so a cloud is never read as a class. Its ``derived_from`` link points at the input
the scene was read from: the STAC item JSON when the input was one (the scene's manifest
entry ``source``, from `vision.scene.BandPlan.to_manifest`, or a scene path ending in
``.json``), else the raster file itself. Its ``datetime`` is the windows' ``acquired``, else
the job's start (``vision:datetime_source`` says which).

Written by `inference.finalize` at the end of every run of the job (small JSON files, each
written atomically); readable with ``pystac.read_file``, and the catalog walks to the items.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inference.cog import RasterLayout, class_dtype
from inference.geo import ring_geometries, to_lonlat
from inference.palette import NOT_ASSESSED_COLOURS, NOT_ASSESSED_NAMES, class_colours, status_values
from inference.plan import ScenePlan
from inference.writers import STAC_DIR, scene_output_names
from vision.atomic import write_json_atomic

STAC_VERSION = "1.1.0"
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
CATALOG = "catalog.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_NAME = re.compile(r"[^0-9A-Za-z_-]")  # classification v2 names: ^[0-9A-Za-z-_]+$


def catalog_name() -> str:
    """The catalog's file name in the job folder."""
    return f"{STAC_DIR}/{CATALOG}"


def _hex(rgb: Sequence[int]) -> str:
    return "".join(f"{c:02X}" for c in rgb[:3])


def classification_classes(classes: Sequence[str]) -> list[dict[str, Any]]:
    """``classification:classes`` of a class COG: each class's value, name (made to fit the
    extension's pattern; ``title`` keeps it as the model names it) and colour, then the
    not-assessed values of a uint8 raster (`status_values`)."""
    dtype, top = class_dtype(len(classes))
    out: list[dict[str, Any]] = []
    for k, (name, rgb) in enumerate(zip(classes, class_colours(classes), strict=True)):
        out.append({"value": k, "name": _NAME.sub("_", name) or f"class_{k}", "title": name,
                    "color_hint": _hex(rgb)})
    for status, value in sorted(status_values(top).items(), key=lambda kv: kv[1]):
        entry: dict[str, Any] = {"value": value, "name": status,
                                 "title": NOT_ASSESSED_NAMES[status],
                                 "description": "not assessed: no model answer for these windows"}
        if NOT_ASSESSED_COLOURS[status][3]:
            entry["color_hint"] = _hex(NOT_ASSESSED_COLOURS[status])
        else:
            entry["nodata"] = True
        out.append(entry)
    return out


def _footprint(scene: ScenePlan) -> tuple[dict[str, Any] | None, list[float] | None]:
    """The scene's outline in longitude/latitude (edges densified), and its bbox."""
    info = scene.info
    if not info.crs:
        return None, None
    t = np.linspace(0.0, 1.0, 9)[:-1]
    w, h = info.width, info.height
    cols = np.concatenate([t * w, np.full(8, w), (1 - t) * w, np.zeros(8), [0.0]])
    rows = np.concatenate([np.zeros(8), t * h, np.full(8, h), (1 - t) * h, [0.0]])
    a = info.affine
    xs, ys = a.a * cols + a.b * rows + a.c, a.d * cols + a.e * rows + a.f
    lon, lat = to_lonlat(info.crs, xs, ys)
    centre = float(np.nanmean(lon)) if np.isfinite(lon).any() else 0.0
    geoms, bbox = ring_geometries(lon[None, :], lat[None, :], centre)
    return geoms[0], bbox


def _acquired(rows: pa.Table) -> datetime | None:
    """The earliest ``acquired`` of the scene's windows (``None`` when none has one)."""
    if "acquired" not in rows.column_names or rows.num_rows == 0:
        return None
    us = pc.min(rows["acquired"].cast(pa.int64())).as_py()
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC)


def _first(rows: pa.Table, name: str) -> str | None:
    col = rows[name].drop_null() if name in rows.column_names else None
    return None if col is None or len(col) == 0 else str(col[0].as_py())


def _source(scene: ScenePlan, entry: dict[str, Any]) -> str:
    """The input the scene was read from: its STAC item when known (see the module
    docstring), else the scene's file."""
    for holder in (entry, *(v for v in entry.values() if isinstance(v, dict))):
        src = holder.get("source")
        if isinstance(src, str) and src:
            return src
    return scene.path


def _proj(scene: ScenePlan, layout: RasterLayout) -> dict[str, Any]:
    crs = scene.info.crs or None
    epsg = crs if crs and re.fullmatch(r"EPSG:[0-9]+", crs) else None
    t = layout.transform
    a = scene.info.affine
    x = [a.c, a.c + a.a * scene.info.width]
    y = [a.f, a.f + a.e * scene.info.height]
    out: dict[str, Any] = {"proj:code": epsg, "proj:shape": [layout.height, layout.width],
                           "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                           "proj:bbox": [min(x), min(y), max(x), max(y)]}
    if crs and not epsg:
        out["proj:wkt2"] = crs
    return out


def scene_item(scene: ScenePlan, layout: RasterLayout, rows: pa.Table, classes: Sequence[str],
               model: dict[str, Any], entry: dict[str, Any], job_time: datetime
               ) -> dict[str, Any]:
    """The STAC item of one scene's outputs (a JSON object; see the module docstring).

    Args:
        rows: the scene's rows of the prediction table.
        model: the manifest's model entry (name, version, sha256).
        entry: the scene's input entry of the manifest (its window counts, its source).
        job_time: the job's start, the item's datetime when no window has ``acquired``.
    """
    names = scene_output_names(scene)
    acquired = _acquired(rows)
    when = acquired or job_time
    geometry, bbox = _footprint(scene)
    dtype, top = class_dtype(len(classes))
    res = abs(scene.info.affine.a) * layout.pixel[1]
    source = _source(scene, entry)
    is_item = source.lower().endswith(".json")
    item_id = _first(rows, "item_id")
    props: dict[str, Any] = {
        "datetime": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "vision:datetime_source": "acquired" if acquired else "job",
        **_proj(scene, layout),
        "vision:input": source,
        "vision:input_item_id": item_id,
        "vision:model": {k: model.get(k) for k in ("name", "version", "sha256")},
        "vision:windows": entry.get("windows"),
    }
    if layout.note:
        props["vision:raster_note"] = layout.note

    def rel(name: str) -> str:  # hrefs relative to the item, in DIR/stac/
        return f"../{name}"

    assets: dict[str, Any] = {
        "classes": {
            "href": rel(names["classes"]), "type": COG_TYPE, "roles": ["data"],
            "title": "class of each window (not-assessed windows at values of their own)",
            "raster:bands": [{"data_type": np.dtype(dtype).name, "nodata": top,
                              "spatial_resolution": res, "sampling": "area"}],
            "classification:classes": classification_classes(classes),
        },
        "confidence": {
            "href": rel(names["confidence"]), "type": COG_TYPE, "roles": ["data"],
            "title": "calibrated probability of the window's class (NaN: not assessed)",
            "raster:bands": [{"data_type": "float32", "nodata": "nan", "spatial_resolution": res,
                              "sampling": "area"}],
        },
        "categories": {"href": rel(names["classes_aux"]), "type": "application/xml",
                       "roles": ["metadata"],
                       "title": "GDAL category names of the class COG (PAM)"},
        "windows": {"href": rel(names["geojson"]), "type": "application/geo+json",
                    "roles": ["data"], "title": "the windows, RFC 7946"},
        "quicklook": {"href": rel(names["quicklook"]), "type": "image/png",
                      "roles": ["overview", "visual"], "title": "class colours over the scene"},
    }
    links = [
        {"rel": "root", "href": f"./{CATALOG}", "type": "application/json"},
        {"rel": "parent", "href": f"./{CATALOG}", "type": "application/json"},
        {"rel": "derived_from", "href": source,
         "type": "application/geo+json" if is_item else "image/tiff; application=geotiff",
         "title": "input STAC item" if is_item else "input raster (no STAC item)"},
    ]
    item: dict[str, Any] = {
        "type": "Feature", "stac_version": STAC_VERSION,
        "stac_extensions": [PROJ, RASTER, CLASSIFICATION],
        "id": scene.stem, "geometry": geometry,
    }
    if bbox is not None:
        item["bbox"] = bbox
    item.update(properties=props, links=links, assets=assets)
    return item


def write_stac(root: Path, items: Sequence[dict[str, Any]], title: str) -> list[str]:
    """Write the items and ``catalog.json`` into ``root/stac``; returns their names (relative
    to ``root``, as the manifest lists outputs)."""
    folder = root / STAC_DIR
    written = []
    for item in items:
        write_json_atomic(folder / f"{item['id']}.json", item)
        written.append(f"{STAC_DIR}/{item['id']}.json")
    catalog = {
        "type": "Catalog", "stac_version": STAC_VERSION, "id": "vision-infer-job",
        "title": title,
        "description": "Outputs of a vision infer job: per scene, the class and confidence "
                       "COGs of its windows.",
        "links": [{"rel": "root", "href": f"./{CATALOG}", "type": "application/json"},
                  *({"rel": "item", "href": f"./{os.path.basename(n)}",
                     "type": "application/geo+json"} for n in written)],
    }
    write_json_atomic(folder / CATALOG, catalog)
    return [*written, catalog_name()]
