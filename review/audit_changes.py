"""What the audit log protects of change items (`review.db.models.ChangeItem`).

A change item is an `Item` (the after window and the review state, checked by
`review.audit_state` like any item) plus a ``change_items`` row: the comparison and the before
window the reviewer saw beside it. That row never changes after the import, so every review
row of a change item records its fingerprint (`change_fingerprint`, key ``"change"`` beside
the item's ``"item"``) and ``audit verify`` compares it with the table, naming an item whose
before window, classes, inputs or models were edited since a decision. `check_change_rows`
also refuses change rows without their item (or in a job that is not a change job) and
items of a change job without their change row.

The fingerprint is computed from plain values (times as ISO text), so an evidence package
(`review.evidence`) recomputes it from its own copy of the row, without the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from review.db.models import ChangeItem, Item, Job
from vision.contracts.window import window_columns

#: Kind of the jobs whose items are changes (`review.jobs.records.KIND_CHANGE`).
CHANGE_KIND = "change"

#: The columns of a change row that a decision's audit row covers (all of them).
CHANGE_FIELDS: tuple[str, ...] = (
    "item_id",
    "job_id",
    "change_id",
    "transition",
    "aoi_id",
    "area_ha",
    "alignment",
    "item_before",
    "item_after",
    "acquired_before",
    "acquired_after",
    "class_before",
    "class_after",
    "p_before",
    "p_after",
    "p_interest_before",
    "p_interest_after",
    "cloud_fraction_before",
    "cloud_fraction_after",
    "path_before",
    *window_columns("_before"),
    "input_sha256_before",
    "model_name_before",
    "model_version_before",
    "model_sha256_before",
    "job_before",
    "job_after",
    "trajectory",
    "first_appeared",
)


def _plain(value: Any) -> Any:
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


def change_record(change: Any) -> dict[str, Any]:
    """A change row as JSON-ready values (times as ISO text): what packages carry."""
    get = change.get if isinstance(change, Mapping) else lambda f: getattr(change, f)
    return {f: _plain(get(f)) for f in CHANGE_FIELDS}


def change_fingerprint(change: Any) -> str:
    """SHA-256 of a change row's content (`CHANGE_FIELDS`; a `ChangeItem` or its
    `change_record`): recorded with each decision on the item."""
    values = list(change_record(change).values())
    return hashlib.sha256(json.dumps(values, separators=(",", ":"), default=str).encode()).hexdigest()


def content_fingerprints(db: Session, item: Item) -> dict[str, str]:
    """The fingerprints a review row of ``item`` records: ``item`` always, ``change`` for a
    change item."""
    from review.audit_state import item_fingerprint

    out = {"item": item_fingerprint(item)}
    change = db.get(ChangeItem, item.id)
    if change is not None:
        out["change"] = change_fingerprint(change)
    return out


def changes_of(db: Session, item_ids: list[int]) -> dict[int, ChangeItem]:
    """The change rows of some items, by item id."""
    if not item_ids:
        return {}
    rows = db.execute(select(ChangeItem).where(ChangeItem.item_id.in_(item_ids))).scalars()
    return {c.item_id: c for c in rows}


def check_change_rows(db: Session) -> str | None:
    """Why the change rows and the items of change jobs disagree, or ``None``.

    Every change row belongs to an item of the same job, and that job is a change job; every
    item of a change job has its change row.
    """
    orphan = db.execute(
        select(ChangeItem.item_id, ChangeItem.job_id)
        .outerjoin(Item, and_(Item.id == ChangeItem.item_id, Item.job_id == ChangeItem.job_id))
        .outerjoin(Job, Job.id == ChangeItem.job_id)
        .where((Item.id.is_(None)) | (Job.kind != CHANGE_KIND))
        .order_by(ChangeItem.item_id)
        .limit(1)
    ).first()
    if orphan is not None:
        return (
            f"change row of item {orphan[0]} (job {orphan[1]}) has no item in a change job of that number: "
            "added or moved behind the service's back"
        )
    missing = db.execute(
        select(Item.id, Item.job_id)
        .join(Job, Job.id == Item.job_id)
        .outerjoin(ChangeItem, ChangeItem.item_id == Item.id)
        .where(Job.kind == CHANGE_KIND, ChangeItem.item_id.is_(None))
        .order_by(Item.id)
        .limit(1)
    ).first()
    if missing is not None:
        return f"item {missing[0]} of change job {missing[1]} has no change row: deleted behind the service's back"
    return None
