"""The pictures of a change item: each date's window (same bands, one stretch) and heatmap."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query
from fastapi.responses import Response

from review.db.models import Item, Job
from review.web.change_pages import DATES, Date, heatmap, load_change, pictures
from review.web.deps import ItemId, Services, ServicesDep
from review.web.routes.common import make_router

router = make_router()

_IMAGE_CACHE = "private, max-age=600"


def _load(svc: Services, item_id: int) -> tuple[Item, Job]:
    with svc.db.read() as s:
        item = s.get(Item, item_id)
        job = s.get(Job, item.job_id) if item is not None else None
    if item is None or job is None:
        raise HTTPException(404, f"no item {item_id}")
    return item, job


def _date(date: str) -> Date:
    if date not in DATES:
        raise HTTPException(404, "the date is 'before' or 'after'")
    return date


def _bands(bands: str | None) -> list[str] | None:
    if not bands:
        return None
    names = [b.strip() for b in bands.split(",")]
    if len(names) != 3 or not all(n and n.isascii() and n.replace("_", "").isalnum() for n in names):
        raise HTTPException(400, "bands must be three comma-separated band names both dates have, e.g. B08,B04,B03")
    return names


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": _IMAGE_CACHE})


@router.get("/items/{item_id}/change/{date}/picture.png")
def change_picture(
    item_id: ItemId,
    date: str,
    svc: ServicesDep,
    bands: Annotated[str | None, Query(max_length=40, description="e.g. B08,B04,B03 (names)")] = None,
) -> Response:
    """One date's window of a change item, drawn with the same bands and the same stretch
    (over both windows together) as the other date."""
    when = _date(date)
    item, _ = _load(svc, item_id)
    before, after = pictures(svc, item, load_change(svc, item_id), _bands(bands))
    return _png(before if when == "before" else after)


@router.get("/items/{item_id}/change/{date}/heatmap.png")
def change_heatmap(item_id: ItemId, date: str, svc: ServicesDep) -> Response:
    """Grad-CAM of one date's window with that date's model (404 saying why when there is none)."""
    when = _date(date)
    item, job = _load(svc, item_id)
    return _png(heatmap(svc, job, item, load_change(svc, item_id), when))
