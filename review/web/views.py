"""What the JSON API answers, as response models (never hand-built dicts).

Numbers read from a job's table may be NaN or infinite in rows imported by older versions:
`Finite` turns those into ``null`` so an answer is always valid JSON.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel


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


class ItemView(BaseModel):
    """What the review page shows of an item."""

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
    window: WindowView | None
    bounds: list[float] | None
    crs: str | None
    chip_url: str
    overview_url: str | None
    heatmap_url: str | None
    heatmap_note: str | None = None


class ClaimAnswer(BaseModel):
    """The claimed item, ``null`` when nothing is left to review."""

    item: ItemView | None


class DecisionAnswer(BaseModel):
    """A recorded decision and the next item (``next_error`` says why there is none when the
    next claim failed: the decision itself is saved)."""

    decision_id: int
    item_id: int
    next: ItemView | None
    next_error: str | None = None


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
