"""Confirmed changes out: GeoJSON (WGS 84) or Parquet, one record per confirmed change.

Only change items whose review is finished (``status == done``) with the decision
``confirmed`` are exported: "no change" and "unclear" never leave as a change. Each record
carries both dates (items, acquisition times, classes, probabilities, windows in their own
CRS), the reviewer and time of the deciding review, its comment, both model identities
(name, version, ONNX sha256) and both input hashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from review.db.models import CONFIRMED, DONE, ChangeItem, Decision, Item, User
from vision.atomic import atomic_path, write_text_atomic
from vision.contracts.changes import CHANGE_SCHEMA
from vision.contracts.window import WINDOW_COLUMNS, window_columns


def confirmed_changes(db: Session, job_id: int) -> Iterator[tuple[Item, ChangeItem, str, Decision | None]]:
    """``(item, change, reviewer, deciding decision)`` of the job's confirmed changes, in id order."""
    reviewer = aliased(User)
    rows = db.execute(
        select(Item, ChangeItem, reviewer.name)
        .join(ChangeItem, ChangeItem.item_id == Item.id)
        .join(reviewer, reviewer.id == Item.decided_by)
        .where(Item.job_id == job_id, Item.status == DONE, Item.final_decision == CONFIRMED)
        .order_by(Item.id)
    )
    for item, change, name in rows:
        # The deciding decision is the one that made the item's current version.
        dec = db.execute(
            select(Decision).where(Decision.item_id == item.id, Decision.item_version == item.version - 1)
        ).scalar_one_or_none()
        yield item, change, str(name), dec


def _iso(v: Any) -> str | None:
    return v.isoformat(timespec="seconds") + "Z" if v is not None else None


def change_record(item: Item, change: ChangeItem, reviewer: str, dec: Decision | None) -> dict[str, Any]:
    """One confirmed change as an export record."""
    return {
        "item_id": item.id,
        "change_id": change.change_id,
        "transition": change.transition,
        "aoi_id": change.aoi_id,
        "area_ha": change.area_ha,
        "item_before": change.item_before,
        "item_after": change.item_after,
        "acquired_before": _iso(change.acquired_before),
        "acquired_after": _iso(change.acquired_after),
        "class_before": change.class_before,
        "class_after": change.class_after,
        "p_before": change.p_before,
        "p_after": change.p_after,
        "path_before": change.path_before,
        "row_off_before": change.row_off_before,
        "col_off_before": change.col_off_before,
        "height_before": change.height_before,
        "width_before": change.width_before,
        "crs_before": change.crs_before,
        "minx_before": change.minx_before,
        "miny_before": change.miny_before,
        "maxx_before": change.maxx_before,
        "maxy_before": change.maxy_before,
        "path_after": item.path,
        "row_off": item.row_off,
        "col_off": item.col_off,
        "height": item.height,
        "width": item.width,
        "crs": item.crs,
        "minx": item.minx,
        "miny": item.miny,
        "maxx": item.maxx,
        "maxy": item.maxy,
        "decision": item.final_decision,
        "reviewer": reviewer,
        "reviewed_at": item.decided_at.isoformat() if item.decided_at else None,
        "comment": dec.comment if dec is not None else None,
        "model_name_before": change.model_name_before,
        "model_version_before": change.model_version_before,
        "model_sha256_before": change.model_sha256_before,
        "model_name_after": item.model_name,
        "model_version_after": item.model_version,
        "model_sha256_after": item.model_sha256,
        "input_sha256_before": change.input_sha256_before,
        "input_sha256_after": item.input_sha256,
    }


def _contract(name: str, rename: str | None = None) -> pa.Field:
    f = CHANGE_SCHEMA.field(name)
    return f.with_name(rename) if rename else f


#: A confirmed change: the change table's columns that locate and identify it (both dates),
#: with the human decision beside them.
CHANGE_EXPORT_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    *(_contract(c) for c in ("change_id", "transition", "aoi_id", "area_ha", "item_before", "item_after")),
    ("acquired_before", pa.string()),
    ("acquired_after", pa.string()),
    *(_contract(c) for c in ("class_before", "class_after")),
    ("p_before", pa.float64()),
    ("p_after", pa.float64()),
    *(_contract(c) for c in ("path_before", *window_columns("_before"), "path_after", *WINDOW_COLUMNS)),
    ("decision", pa.string()),
    ("reviewer", pa.string()),
    ("reviewed_at", pa.string()),
    ("comment", pa.string()),
    *(_contract(c) for c in ("model_name_before", "model_version_before", "model_sha256_before",
                             "model_name_after", "model_version_after", "model_sha256_after",
                             "input_sha256_before", "input_sha256_after")),
])


def export_changes_geojson(db: Session, job_id: int, out: Path) -> int:
    """Write the job's confirmed changes as a GeoJSON FeatureCollection (WGS 84, the after
    window); returns the count."""
    from review.export import _geometry

    features = [
        {"type": "Feature", "geometry": _geometry(item), "properties": change_record(item, change, name, dec)}
        for item, change, name, dec in confirmed_changes(db, job_id)
    ]
    write_text_atomic(out, json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


def export_changes_parquet(db: Session, job_id: int, out: Path) -> int:
    """Write the job's confirmed changes as a Parquet table; returns the count."""
    rows = [change_record(*r) for r in confirmed_changes(db, job_id)]
    table = pa.Table.from_pylist(rows, schema=CHANGE_EXPORT_SCHEMA)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return len(rows)
