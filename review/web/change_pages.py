"""What the review pages show of a change item: its two dates, pictures and heatmaps.

A change item's `Item` is the after window; its `ChangeItem` row holds the before window
(`review.db.models`). Both inputs are opened only through `review.jobs.files.open_input`
(inside the allowed roots, no link followed): a refused one is 403, a missing one 404, with
fixed texts. The pictures are drawn by `review.render_change` (same bands, one stretch over
both windows). Heatmaps are Grad-CAM of each date's own model (the model its job's
manifest names, `review.render.job_model`), cached in the change folder as
``explanations/<row>.<date>.png``; where a date's model cannot be explained the page says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Literal

from fastapi import HTTPException

from review.db.models import ChangeItem, Item, Job
from review.jobs.files import InputMissingError, InputRefusedError, SafeFile, open_input, read_small, write_in
from review.render import MAX_IMAGE_BYTES, WindowSpec, explanation_png, explanations_dir, job_model
from review.render_change import pair_bands, render_pair
from review.web.deps import Services, row_or_404
from review.web.views import ChangeView, DateView, WindowView, wgs84_location
from vision.errors import VisionError

Date = Literal["before", "after"]
DATES: tuple[Date, Date] = ("before", "after")
_UNREADABLE = "the change's pixels cannot be read (not a readable GeoTIFF, or bands that do not match)"


def load_change(svc: Services, item_id: int) -> ChangeItem:
    """The change row of a change item (404 when the item is not one)."""
    return row_or_404(svc, ChangeItem, item_id, f"item {item_id} is not a change item")


def path_of(item: Item, change: ChangeItem, date: Date) -> str:
    """The input file of one date (stored resolved and absolute at import)."""
    return change.path_before if date == "before" else item.path


def window_of(item: Item, change: ChangeItem, date: Date) -> WindowSpec:
    """The window of one date, in that date's own scene pixels."""
    if date == "before":
        return (change.row_off_before, change.col_off_before, change.height_before, change.width_before)
    return (item.row_off, item.col_off, item.height, item.width)


def job_dir_of(change: ChangeItem, date: Date) -> Path:
    """The `vision infer` job folder of one date."""
    return Path(change.job_before if date == "before" else change.job_after)


@contextmanager
def open_date(svc: Services, item: Item, change: ChangeItem, date: Date) -> Iterator[SafeFile]:
    """One date's input, opened inside the roots; failures become 403/404 with fixed texts."""
    try:
        with open_input(path_of(item, change, date), svc.roots) as src:
            yield src
    except InputRefusedError as exc:
        raise HTTPException(403, f"the {date} input is not served: {exc}") from exc
    except InputMissingError as exc:
        raise HTTPException(404, f"the {date} input file is missing: {exc}") from exc


def pictures(svc: Services, item: Item, change: ChangeItem, bands: list[str] | None = None) -> tuple[bytes, bytes]:
    """Both dates' PNGs (same bands, one stretch).

    Raises:
        HTTPException: 403/404 for an input refused or missing, 400 for bands that do not
            fit, 404 when the pixels cannot be read.
    """
    with open_date(svc, item, change, "before") as b, open_date(svc, item, change, "after") as a:
        try:
            return render_pair(b, window_of(item, change, "before"), a, window_of(item, change, "after"), bands)
        except VisionError as exc:
            if bands and "band" in str(exc):
                raise HTTPException(400, str(exc)) from exc
            raise HTTPException(404, _UNREADABLE) from exc
        except OSError as exc:
            raise HTTPException(404, _UNREADABLE) from exc


def heatmap_name(item: Item, date: Date) -> str:
    """The cached heatmap of one date in the change folder's `explanations_dir`."""
    return f"{int(item.row_index)}.{date}.png"


def _cached_heatmap(svc: Services, job: Job, item: Item, date: Date) -> bytes | None:
    try:
        return read_small(explanations_dir(Path(job.job_dir)) / heatmap_name(item, date), svc.roots, MAX_IMAGE_BYTES)
    except InputRefusedError as exc:
        raise HTTPException(403, f"the heatmap is not served: {exc}") from exc
    except InputMissingError:
        return None


def heatmap(svc: Services, job: Job, item: Item, change: ChangeItem, date: Date) -> bytes:
    """Grad-CAM of one date's window with that date's model, cached beside the change.

    Raises:
        HTTPException: 404 saying why there is none.
    """
    cached = _cached_heatmap(svc, job, item, date)
    if cached is not None:
        return cached
    found = job_model(job_dir_of(change, date), None, svc.roots)
    if found.model is None:
        raise HTTPException(404, f"no explanation for the {date} date: {found.reason}")
    with open_date(svc, item, change, date) as src:
        try:
            data = explanation_png(found.model, src, window_of(item, change, date))
        except (VisionError, OSError) as exc:
            why = str(exc).replace(src.gdal_path, Path(path_of(item, change, date)).name)
            raise HTTPException(404, f"no explanation for the {date} date: {why}") from exc
    # a read-only change folder still gets the picture, just not cached
    with suppress(OSError, VisionError):
        write_in(explanations_dir(Path(job.job_dir)), heatmap_name(item, date), data, svc.roots)
    return data


def _iso(v: datetime | None) -> str | None:
    return v.isoformat(timespec="seconds") + "Z" if v is not None else None


def _bounds(box: tuple[float | None, ...]) -> list[float] | None:
    ok = all(v is not None and math.isfinite(v) for v in box)
    return [float(v) for v in box] if ok else None  # type: ignore[arg-type]


def _date_view(svc: Services, job: Job, item: Item, change: ChangeItem, date: Date) -> DateView:
    r, c, h, w = window_of(item, change, date)
    window = WindowView(row_off=r, col_off=c, height=h, width=w) if None not in (r, c, h, w) else None  # type: ignore[arg-type]
    if date == "before":
        box = (change.minx_before, change.miny_before, change.maxx_before, change.maxy_before)
        crs, model = change.crs_before, f"{change.model_name_before or '?'} {change.model_version_before or ''}"
        cls, p = change.class_before, change.p_before
        p_i, cloud = change.p_interest_before, change.cloud_fraction_before
        stac, acquired = change.item_before, change.acquired_before
    else:
        box, crs = (item.minx, item.miny, item.maxx, item.maxy), item.crs
        model = f"{item.model_name or '?'} {item.model_version or ''}"
        cls, p, p_i, cloud = change.class_after, change.p_after, change.p_interest_after, change.cloud_fraction_after
        stac, acquired = change.item_after, change.acquired_after
    bounds = _bounds(box)
    note = None
    try:
        cached = _cached_heatmap(svc, job, item, date) is not None
    except HTTPException:
        cached = False
    if not cached:
        note = job_model(job_dir_of(change, date), None, svc.roots).reason or None
    base = f"/items/{item.id}/change/{date}"
    return DateView(
        label=date, item=stac, acquired=_iso(acquired), class_name=cls, p=p, p_interest=p_i, cloud_fraction=cloud,
        file=Path(path_of(item, change, date)).name, window=window, bounds=bounds, crs=crs,
        wgs84=wgs84_location(crs, bounds), model=model.strip(), picture_url=f"{base}/picture.png",
        heatmap_url=None if note else f"{base}/heatmap.png",
        heatmap_note=f"No heatmap for the {date} date: {note}." if note else None,
    )


def change_view(svc: Services, job: Job, item: Item, change: ChangeItem) -> ChangeView:
    """What the change review page shows of a change item."""
    try:
        with open_date(svc, item, change, "before") as b, open_date(svc, item, change, "after") as a:
            common, default = pair_bands(b, a)
    except (HTTPException, VisionError, OSError):
        common, default = [], []  # the picture routes say what is wrong
    return ChangeView(
        change_id=change.change_id,
        transition=change.transition,
        classes_of_interest=list(job.classes_of_interest or []),
        aoi_id=change.aoi_id,
        area_ha=change.area_ha,
        alignment=change.alignment,
        first_appeared=_iso(change.first_appeared),
        before=_date_view(svc, job, item, change, "before"),
        after=_date_view(svc, job, item, change, "after"),
        bands=common,
        default_bands=default,
    )
