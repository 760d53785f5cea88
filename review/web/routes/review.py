"""The review queue: claim, decide, skip, undo, override, and the pictures of an item.

Pictures are read only through `review.jobs.files.open_input` (inside the allowed roots, no
link followed). A decision is refused when the item's pixels cannot be read: nobody can
accept what they could not see; such an item can be skipped.

The page keeps the ids the reviewer skipped (in the tab's ``sessionStorage``) and sends them
with every claim, decision and undo (``skip``), so a skipped item does not come straight
back to them; each answer says how many items are ``left`` for them.

A change job's items (`review.db.models.ChangeItem`) get the change review page: both dates
side by side (`review.web.change_pages`), decided ``confirmed``, ``no_change`` or ``unclear``
through the same claim, decision, skip and undo endpoints.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

from fastapi import Body, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from review.auth.permissions import Action
from review.db.models import JOB_READY, SECOND, ChangeItem, Decision, Item, Job, User, utcnow
from review.jobs.files import InputMissingError, InputRefusedError, SafeFile, open_input, read_small, write_in
from review.jobs.records import KIND_CHANGE
from review.queue import MAX_EXCLUDED, DecisionInput, Left, claim_next, decide, release, remaining
from review.render import (
    MAX_IMAGE_BYTES,
    WindowSpec,
    band_names,
    explanation_png,
    explanations_dir,
    heatmap_name,
    is_scene,
    item_input,
    job_model,
    natural_bands,
    render_chip,
    render_overview,
)
from review.undo import NothingToUndoError, undo_last
from review.web.change_pages import change_view, load_change, pictures
from review.web.deps import ItemId, JobId, RequestId, Services, ServicesDep, Who, load_item
from review.web.guard import Principal
from review.web.routes.common import make_router, page, png
from review.web.views import (
    ClaimAnswer,
    DecisionAnswer,
    ItemView,
    ReleaseAnswer,
    Top,
    UndoAnswer,
    WindowView,
    wgs84_location,
)
from vision.errors import BandMismatchError, VisionError

log = logging.getLogger(__name__)
router = make_router()

_UNREADABLE = "the item's pixels cannot be read (not a readable GeoTIFF, PNG or JPEG file)"


def _window(item: Item) -> tuple[int | None, int | None, int | None, int | None]:
    return (item.row_off, item.col_off, item.height, item.width)


@contextmanager
def _input(svc: Services, item: Item, job: Job) -> Iterator[SafeFile]:
    """The item's input, opened inside the roots; failures become 403/404 with fixed texts."""
    try:
        with open_input(item_input(job.job_dir, item.path), svc.roots) as src:
            yield src
    except InputRefusedError as exc:
        raise HTTPException(403, f"the item's input is not served: {exc}") from exc
    except InputMissingError as exc:
        raise HTTPException(404, f"the item's input file is missing: {exc}") from exc


def _bands(svc: Services, item: Item, job: Job) -> tuple[list[str], list[int] | None]:
    """The item's band names and its natural-colour triple (1-based), when it has one."""
    try:
        with _input(svc, item, job) as src:
            names = band_names(src)
            return names, natural_bands(src, names)
    except (HTTPException, VisionError, OSError):
        return [], None  # the chip route says what is wrong


def item_view(svc: Services, item: Item, job: Job) -> ItemView:
    """What the review page shows of an item."""
    classes = list(job.classes or [])
    probs = [p if isinstance(p, int | float) and math.isfinite(p) else -1.0 for p in (item.probs or [])]
    ranked = [i for i in sorted(range(len(probs)), key=lambda i: -probs[i])[:3] if probs[i] >= 0]
    window = None
    if item.row_off is not None and item.col_off is not None and item.height is not None and item.width is not None:
        window = WindowView(row_off=item.row_off, col_off=item.col_off, height=item.height, width=item.width)
    box = (item.minx, item.miny, item.maxx, item.maxy)
    bounds = [float(v) for v in box] if all(v is not None and math.isfinite(v) for v in box) else None  # type: ignore[arg-type]
    heatmap_note = None
    if not _has_cached_heatmap(svc, job, item):
        heatmap_note = job_model(Path(job.job_dir), job.model, svc.roots).reason or None
    names, natural = _bands(svc, item, job)
    change = None
    if job.kind == KIND_CHANGE:
        with svc.db.read() as s:
            row = s.get(ChangeItem, item.id)
        change = change_view(svc, job, item, row) if row is not None else None
    return ItemView(
        id=item.id,
        version=item.version,
        job_id=item.job_id,
        stage="second review" if item.status == SECOND else "first review",
        file=Path(item.path).name,
        class_name=item.class_name,
        confidence=item.confidence,
        interest=item.interest,
        top3=[Top(class_name=classes[i] if i < len(classes) else str(i), p=probs[i]) for i in ranked],
        classes=classes,
        bands=names,
        natural_bands=natural,
        window=window,
        bounds=bounds,
        crs=item.crs,
        wgs84=wgs84_location(item.crs, bounds),
        chip_url=f"/items/{item.id}/chip.png",
        overview_url=f"/items/{item.id}/overview.png" if window and is_scene(item.path) else None,
        heatmap_url=None if heatmap_note else f"/items/{item.id}/heatmap.png",
        heatmap_note=f"No heatmap: {heatmap_note}." if heatmap_note else None,
        change=change,
    )


def _has_cached_heatmap(svc: Services, job: Job, item: Item) -> bool:
    try:
        with open_input(explanations_dir(Path(job.job_dir)) / heatmap_name(item.row_index), svc.roots):
            return True
    except (InputRefusedError, InputMissingError):
        return False


def _ready_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    if job.status != JOB_READY:
        raise HTTPException(409, f"job {job_id} is not ready for review (it is {job.status})")
    return job


def _claim(svc: Services, job_id: int, user: Principal, skip: Sequence[int] = (),
           release_id: int | None = None) -> ClaimAnswer:
    """Claim the next item for ``user`` (after giving ``release_id`` back), with the count left."""
    now = utcnow()
    with svc.db.write() as s:
        job = _ready_job(s, job_id)
        if release_id is not None:
            release(s, release_id, user)
        item = claim_next(s, job_id, user, now, svc.settings.claim_seconds, skip)
    left = _left(svc, job_id, user, skip)
    return ClaimAnswer(item=item_view(svc, item, job) if item is not None else None, left=left.count,
                       more_left=left.more)


def _left(svc: Services, job_id: int, user: Principal, skip: Sequence[int]) -> Left:
    # Counted in a read transaction after the write commits: the count never holds the
    # write lock other reviewers' claims wait for.
    with svc.db.read() as s:
        return remaining(s, job_id, user, utcnow(), skip)


def _require_pixels(svc: Services, item: Item, job: Job) -> None:
    """Refuse (422) a decision on an item whose picture (both, for a change) cannot be drawn."""
    if job.kind == KIND_CHANGE:
        try:
            pictures(svc, item, load_change(svc, item.id))  # cached: the page drew them already
        except HTTPException as exc:
            raise HTTPException(422, f"no decision recorded: {exc.detail}") from exc
        return
    try:
        with _input(svc, item, job) as src:
            render_chip(src, _window(item))  # cached: the reviewer's page drew it already
    except HTTPException as exc:
        raise HTTPException(422, f"no decision recorded: {exc.detail}") from exc
    except (VisionError, OSError) as exc:
        raise HTTPException(422, f"no decision recorded: {_UNREADABLE}") from exc


@router.get("/jobs/{job_id}/review")
def review_page(request: Request, job_id: JobId, svc: ServicesDep) -> Response:
    """The review page; items are claimed and decided by its script."""
    with svc.db.read() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    seconds = svc.settings.claim_seconds
    window = f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
    template = "change_review.html" if job.kind == KIND_CHANGE else "review.html"
    return page(request, template, job=job, classes=list(job.classes or []), undo_window=window)


#: The ids a reviewer skipped in this session (newest last), sent with each request.
SkipList = Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]], Field(max_length=MAX_EXCLUDED)]


class ClaimBody(BaseModel):
    """What the page sends with a claim, a skip or an undo."""

    model_config = ConfigDict(extra="forbid")

    skip: SkipList = Field(default_factory=list, description="items this reviewer skipped in this session")


@router.post("/api/jobs/{job_id}/claim", response_model=ClaimAnswer)
def claim_item(
    job_id: JobId, svc: ServicesDep, who: Who, body: Annotated[ClaimBody | None, Body()] = None
) -> ClaimAnswer:
    """Claim the next item that most needs a human (``item`` is null when none is left),
    leaving out the ones this reviewer skipped."""
    return _claim(svc, job_id, who, body.skip if body else ())


@router.post("/api/items/{item_id}/skip", response_model=ClaimAnswer)
def skip_item(item_id: ItemId, svc: ServicesDep, who: Who, body: Annotated[ClaimBody | None, Body()] = None
              ) -> ClaimAnswer:
    """Give an item back without a decision and claim the next one, leaving out this item
    and the others skipped in this session. Works on an item whose picture cannot be read,
    so it no longer blocks the head of this reviewer's queue."""
    item, _ = load_item(svc, item_id)
    skip = [*(body.skip if body else ()), item_id][-MAX_EXCLUDED:]
    return _claim(svc, item.job_id, who, skip, release_id=item_id)


@router.post("/api/jobs/{job_id}/undo", response_model=UndoAnswer)
def undo_decision(
    job_id: JobId, svc: ServicesDep, who: Who, rid: RequestId, body: Annotated[ClaimBody | None, Body()] = None
) -> UndoAnswer:
    """Undo this reviewer's own last decision in the job (within the claim window), audited
    as ``review.undo``; the item comes back to them (`review.undo`)."""
    now = utcnow()
    skip = body.skip if body else []
    with svc.db.write() as s:
        job = _ready_job(s, job_id)
        try:
            done = undo_last(s, job_id, who, now, svc.settings.claim_seconds, rid)
        except NothingToUndoError as exc:
            raise HTTPException(409, str(exc)) from exc
        undone, item = done.undone, done.item
    left = _left(svc, job_id, who, [i for i in skip if i != item.id])
    return UndoAnswer(
        undone_decision_id=undone.id,
        undone=f"{undone.decision}{' → ' + undone.class_name if undone.class_name else ''}",
        item=item_view(svc, item, job),
        left=left.count,
        more_left=left.more,
    )


@router.post("/api/items/{item_id}/release", response_model=ReleaseAnswer)
def release_item(item_id: ItemId, svc: ServicesDep, who: Who) -> ReleaseAnswer:
    """Give an item back to the queue (the reviewer skipped it or left)."""
    with svc.db.write() as s:
        held = release(s, item_id, who)
    return ReleaseAnswer(released=held)


#: Every decision a page may send (`review.queue.decisions_for` says which fit an item).
DECISION_PATTERN = "^(accept|correct|reject|confirmed|no_change|unclear)$"


class DecisionBody(BaseModel):
    """A decision as the review page sends it."""

    model_config = ConfigDict(extra="forbid")

    decision: str = Field(pattern=DECISION_PATTERN, description="accept, correct, reject; on a change item "
                          "confirmed, no_change, unclear")
    class_name: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=2000)
    version: int = Field(ge=0, le=2**31 - 1)
    next: bool = Field(default=True, description="claim and return the next item")
    skip: SkipList = Field(default_factory=list, description="items not to claim next (skipped in this session)")


@router.post("/api/items/{item_id}/decision", response_model=DecisionAnswer)
def decide_item(
    item_id: ItemId,
    body: Annotated[DecisionBody, Body()],
    svc: ServicesDep,
    who: Who,
    rid: RequestId,
) -> DecisionAnswer:
    """Record a decision; answer with the next claimed item so the page moves on at once.

    Once the decision is committed the answer is 200 whatever happens next: a failure to
    claim the next item is reported in ``next_error``, never as an error for a saved write.
    """
    item, job = load_item(svc, item_id)
    _require_pixels(svc, item, job)
    given = DecisionInput(body.decision, body.class_name, body.comment, body.version)
    with svc.db.write() as s:
        decision_id = decide(s, item_id, who, given, utcnow(), rid).id
    nxt, error, left, more = None, None, None, False
    if body.next:
        try:
            answer = _claim(svc, job.id, who, body.skip)
            nxt, left, more = answer.item, answer.left, answer.more_left
        except HTTPException as exc:
            error = f"decision saved; the next item could not be loaded: {exc.detail}"
        except Exception:  # the decision is committed: say so, and log what went wrong
            log.exception("claim after decision %s failed", decision_id)
            error = "decision saved; the next item could not be loaded: reload the page"
    return DecisionAnswer(decision_id=decision_id, item_id=item_id, next=nxt, next_error=error, left=left,
                          more_left=more)


@router.get("/items/{item_id}")
def item_page(request: Request, item_id: ItemId, svc: ServicesDep) -> Response:
    """One item with its decision history (and the override form for admins)."""
    item, job = load_item(svc, item_id)
    reviewer = aliased(User)
    with svc.db.read() as s:
        history = s.execute(
            select(Decision, reviewer.name)
            .join(reviewer, reviewer.id == Decision.reviewer_id)
            .where(Decision.item_id == item_id)
            .order_by(Decision.id)
        ).all()
    p: Principal | None = request.state.principal
    return page(
        request,
        "item.html",
        item=item,
        job=job,
        view=item_view(svc, item, job),
        history=history,
        can_override=bool(p and p.may(Action.OVERRIDE_REVIEW)),
    )


@router.post("/items/{item_id}/override")
def override_item(
    item_id: ItemId,
    svc: ServicesDep,
    who: Who,
    rid: RequestId,
    decision: Annotated[str, Form(pattern=DECISION_PATTERN)],
    version: Annotated[int, Form(ge=0, le=2**31 - 1)],
    class_name: Annotated[str, Form(max_length=200)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace a finished review with an admin's decision (kept in the history)."""
    item, job = load_item(svc, item_id)
    _require_pixels(svc, item, job)
    with svc.db.write() as s:
        decide(s, item_id, who, DecisionInput(decision, class_name or None, comment, version), utcnow(), rid,
               override=True)
    return RedirectResponse(f"/items/{item_id}", status_code=303)


def _bands_param(bands: str | None) -> list[int] | None:
    if not bands:
        return None
    try:
        out = [int(b) for b in bands.split(",")]
    except ValueError as exc:
        raise HTTPException(400, "bands must be three comma-separated 1-based numbers") from exc
    if len(out) != 3:
        raise HTTPException(400, "bands must be three comma-separated 1-based numbers")
    return out


#: `review.render.render_chip` or `render_overview`: a PNG of a window in chosen bands.
Render = Callable[[SafeFile, WindowSpec, Sequence[int] | None], bytes]


def _drawn(svc: Services, item: Item, job: Job, render: Render, wanted: list[int] | None) -> Response:
    """The PNG ``render`` draws of the item's window in the ``wanted`` bands (400/404 saying why not)."""
    with _input(svc, item, job) as src:
        try:
            return png(render(src, _window(item), wanted))
        except BandMismatchError as exc:
            raise HTTPException(400, str(exc)) from exc
        except (VisionError, OSError) as exc:
            raise HTTPException(404, _UNREADABLE) from exc


@router.get("/items/{item_id}/chip.png")
def item_chip(
    item_id: ItemId,
    svc: ServicesDep,
    bands: Annotated[str | None, Query(max_length=20, description="e.g. 8,4,3 (1-based)")] = None,
) -> Response:
    """The item's pixels as an RGB PNG (percentile stretch, chosen band triple)."""
    item, job = load_item(svc, item_id)
    return _drawn(svc, item, job, render_chip, _bands_param(bands))


@router.get("/items/{item_id}/overview.png")
def item_overview(
    item_id: ItemId,
    svc: ServicesDep,
    bands: Annotated[str | None, Query(max_length=20, description="e.g. 8,4,3 (1-based), as for chip.png")] = None,
) -> Response:
    """A small view of the whole scene, in the chosen band combination, with the item's
    window outlined."""
    item, job = load_item(svc, item_id)
    if item.row_off is None or not is_scene(item.path):
        raise HTTPException(404, "this item is a whole file: no scene overview")
    return _drawn(svc, item, job, render_overview, _bands_param(bands))


@router.get("/items/{item_id}/heatmap.png")
def item_heatmap(item_id: ItemId, svc: ServicesDep) -> Response:
    """The explanation heatmap written beside the job, when there is one (else computed)."""
    item, job = load_item(svc, item_id)
    job_dir = Path(job.job_dir)
    folder, name = explanations_dir(job_dir), heatmap_name(item.row_index)
    try:
        return png(read_small(folder / name, svc.roots, MAX_IMAGE_BYTES))
    except InputRefusedError as exc:
        raise HTTPException(403, f"the heatmap is not served: {exc}") from exc
    except InputMissingError:
        pass  # not computed yet
    found = job_model(job_dir, job.model, svc.roots)
    if found.model is None:
        raise HTTPException(404, f"no explanation for this item: {found.reason}")
    with _input(svc, item, job) as src:
        try:
            data = explanation_png(found.model, src, _window(item))
        except (VisionError, OSError) as exc:  # the model's checkpoint is gone, or bands differ
            why = str(exc).replace(src.gdal_path, Path(item.path).name)
            raise HTTPException(404, f"no explanation for this item: {why}") from exc
    # Cache beside the job, so the next reviewer gets it at once; a read-only job folder
    # still gets the picture, just not cached.
    with suppress(OSError, VisionError):
        write_in(folder, name, data, svc.roots)
    return png(data)
