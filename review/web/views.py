"""What the JSON API answers, as response models (never hand-built dicts).

Numbers read from a job's table may be NaN or infinite in rows imported by older versions:
`Finite` turns those into ``null`` so an answer is always valid JSON.

`wgs84_location` gives the review page an item's place in latitude/longitude beside its CRS
coordinates (`vision.geo.wgs84_bounds`: west > east when the window crosses the
antimeridian).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated

from affine import Affine
from pydantic import AfterValidator, BaseModel
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError

from vision.geo import WGS84, wgs84_bounds


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


Finite = Annotated[float | None, AfterValidator(_finite)]


class Top(BaseModel):
    """One of the model's three most probable classes."""

    class_name: str
    p: float


class WindowView(BaseModel):
    """Where in the scene the item is (pixels)."""

    row_off: int
    col_off: int
    height: int
    width: int


class Wgs84View(BaseModel):
    """An item's window in WGS 84 degrees.

    Attributes:
        lon: longitude of the window's centre, in [-180, 180].
        lat: latitude of the window's centre.
        bounds: west, south, east, north; west > east when it crosses the antimeridian.
    """

    lon: float
    lat: float
    bounds: list[float]


@lru_cache(maxsize=64)
def _to_wgs84(crs: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(crs), WGS84, always_xy=True)


def wgs84_location(crs: str | None, bounds: Sequence[float] | None) -> Wgs84View | None:
    """The centre and bounds in WGS 84 of a window given in ``crs`` (``None`` when the item
    has no georeference or its CRS cannot be transformed)."""
    if not crs or not bounds or len(bounds) != 4:
        return None
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not (maxx > minx and maxy > miny):
        return None
    # The window as one pixel of a north-up grid: `wgs84_bounds` densifies its edges.
    one_pixel = Affine(maxx - minx, 0.0, minx, 0.0, miny - maxy, maxy)
    try:
        west, south, east, north = wgs84_bounds(crs, one_pixel, (0, 0, 1, 1))
        lon, lat = _to_wgs84(crs).transform((minx + maxx) / 2, (miny + maxy) / 2, errcheck=True)
    except (CRSError, ProjError, ValueError):
        return None
    box = [_wrap(west), float(south), _wrap(east), float(north)]
    if not all(math.isfinite(v) for v in (*box, lon, lat)):
        return None
    return Wgs84View(lon=_wrap(lon), lat=float(lat), bounds=box)


def _wrap(lon: float) -> float:
    """A longitude in [-180, 180] (a geographic CRS may give 180.1 for -179.9)."""
    lon = float(lon)
    if lon > 180.0:
        lon -= 360.0
    elif lon < -180.0:
        lon += 360.0
    return lon


class DateView(BaseModel):
    """One date of a change item: what the model said there, and where the window is.

    Attributes:
        label: ``before`` (the oldest date) or ``after`` (the latest).
        item: the STAC item (or scene) id of that date.
        acquired: its acquisition time (ISO 8601, UTC).
        picture_url: the window, drawn with the other date's bands and stretch.
        heatmap_url: the Grad-CAM map of that date's model (``None``: ``heatmap_note`` says why).
    """

    label: str
    item: str | None
    acquired: str | None
    class_name: str | None
    p: Finite
    p_interest: Finite = None
    cloud_fraction: Finite = None
    file: str
    window: WindowView | None
    bounds: list[float] | None
    crs: str | None
    wgs84: Wgs84View | None = None
    model: str
    picture_url: str
    heatmap_url: str | None
    heatmap_note: str | None = None


class ChangeView(BaseModel):
    """The comparison a change item asks the reviewer to confirm.

    Attributes:
        bands: band names both dates have (choices for ``?bands=``).
        default_bands: the names of the default view (natural colour where named).
    """

    change_id: str
    transition: str
    classes_of_interest: list[str]
    aoi_id: str | None
    area_ha: Finite
    alignment: str | None
    first_appeared: str | None
    before: DateView
    after: DateView
    bands: list[str]
    default_bands: list[str]


class ItemView(BaseModel):
    """What the review page shows of an item (``change``: a change item's two dates)."""

    id: int
    version: int
    job_id: int
    stage: str
    file: str
    class_name: str | None
    confidence: Finite
    interest: bool
    top3: list[Top]
    classes: list[str]
    bands: list[str]
    natural_bands: list[int] | None = None
    window: WindowView | None
    bounds: list[float] | None
    crs: str | None
    wgs84: Wgs84View | None = None
    chip_url: str
    overview_url: str | None
    heatmap_url: str | None
    heatmap_note: str | None = None
    change: ChangeView | None = None


class ClaimAnswer(BaseModel):
    """The claimed item, ``null`` when nothing is left to review, and how many items are left
    for this reviewer (the one claimed included, the ones they skipped left out; with
    ``more_left``, at least that many: `review.queue.LEFT_CAP`)."""

    item: ItemView | None
    left: int
    more_left: bool = False


class DecisionAnswer(BaseModel):
    """A recorded decision and the next item (``next_error`` says why there is none when the
    next claim failed: the decision itself is saved)."""

    decision_id: int
    item_id: int
    next: ItemView | None
    next_error: str | None = None
    left: int | None = None
    more_left: bool = False


class UndoAnswer(BaseModel):
    """An undone decision and its item, back in the reviewer's hands."""

    undone_decision_id: int
    undone: str
    item: ItemView
    left: int
    more_left: bool = False


class ReleaseAnswer(BaseModel):
    """Whether the reviewer held the item they gave back."""

    released: bool


class JobStatus(BaseModel):
    """A job's progress, polled by the job page."""

    id: int
    kind: str
    status: str
    progress_done: int
    progress_total: int
    error: str | None
    counts: dict[str, int]
