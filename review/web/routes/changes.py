"""The pictures of a change item: each date's window (same bands, one stretch) and heatmap."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query
from fastapi.responses import Response

from review.web.change_pages import DATES, Date, heatmap, load_change, pictures
from review.web.deps import ItemId, ServicesDep, load_item
from review.web.routes.common import make_router, png

router = make_router()

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
    item, _ = load_item(svc, item_id)
    before, after = pictures(svc, item, load_change(svc, item_id), _bands(bands))
    return png(before if when == "before" else after)


@router.get("/items/{item_id}/change/{date}/heatmap.png")
def change_heatmap(item_id: ItemId, date: str, svc: ServicesDep) -> Response:
    """Grad-CAM of one date's window with that date's model (404 saying why when there is none)."""
    when = _date(date)
    item, job = load_item(svc, item_id)
    return png(heatmap(svc, job, item, load_change(svc, item_id), when))
