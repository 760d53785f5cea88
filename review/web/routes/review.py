"""The review queue: claim, decide, override, and the pictures of an item."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import aliased

from review.auth.permissions import Action
from review.db.models import SECOND, Decision, Item, Job, User, utcnow
from review.queue import DecisionInput, claim_next, decide, release
from review.render import (
    band_names,
    explanation_png,
    heatmap_path,
    input_file,
    is_scene,
    job_model,
    render_chip,
    render_overview,
)
from review.web.app import Services
from review.web.guard import Principal, principal, request_id
from review.web.routes.common import make_router, page, services
from vision.atomic import write_bytes_atomic
from vision.errors import InputError, VisionError

router = make_router()

_IMAGE_CACHE = "private, max-age=600"


def _load(svc: Services, item_id: int) -> tuple[Item, Job]:
    with svc.db.read() as s:
        item = s.get(Item, item_id)
        job = s.get(Job, item.job_id) if item is not None else None
    if item is None or job is None:
        raise HTTPException(404, f"no item {item_id}")
    return item, job


@lru_cache(maxsize=256)
def _bands_of(path: str, mtime_ns: int) -> list[str]:
    try:
        return band_names(Path(path))
    except InputError:
        return []


def item_view(item: Item, job: Job) -> dict[str, Any]:
    """What the review page shows of an item (JSON)."""
    classes: list[str] = json.loads(job.classes or "[]")
    probs: list[float] = json.loads(item.probs) if item.probs else []
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[:3]
    src = input_file(Path(job.job_dir), item.path)
    try:
        bands = _bands_of(str(src), src.stat().st_mtime_ns)
    except OSError:
        bands = []
    window = None
    if item.row_off is not None:
        window = {"row_off": item.row_off, "col_off": item.col_off, "height": item.height, "width": item.width}
    bounds = None
    if item.minx is not None:
        bounds = [item.minx, item.miny, item.maxx, item.maxy]
    has_heatmap = (heatmap_path(Path(job.job_dir), item.row_index) is not None
                   or job_model(Path(job.job_dir), job.model) is not None)
    return {
        "id": item.id,
        "version": item.version,
        "job_id": item.job_id,
        "stage": "second review" if item.status == SECOND else "first review",
        "file": Path(item.path).name,
        "class_name": item.class_name,
        "confidence": item.confidence,
        "interest": item.interest,
        "top3": [{"class_name": classes[i] if i < len(classes) else str(i), "p": probs[i]} for i in ranked],
        "classes": classes,
        "bands": bands,
        "window": window,
        "bounds": bounds,
        "crs": item.crs,
        "chip_url": f"/items/{item.id}/chip.png",
        "overview_url": f"/items/{item.id}/overview.png" if window and is_scene(src) else None,
        "heatmap_url": f"/items/{item.id}/heatmap.png" if has_heatmap else None,
    }


def _claim(svc: Services, job_id: int, user: Principal) -> dict[str, Any] | None:
    with svc.db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        item = claim_next(s, job_id, user, utcnow(), svc.settings.claim_seconds)
        return item_view(item, job) if item is not None else None


@router.get("/jobs/{job_id}/review")
def review_page(request: Request, job_id: int, svc: Annotated[Services, Depends(services)]) -> Response:
    """The review page; items are claimed and decided by its script."""
    with svc.db.read() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return page(request, "review.html", job=job, classes=json.loads(job.classes or "[]"))


@router.post("/api/jobs/{job_id}/claim")
def claim_item(
    job_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
) -> JSONResponse:
    """Claim the next item that most needs a human (``item`` is null when none is left)."""
    return JSONResponse({"item": _claim(svc, job_id, who)})


@router.post("/api/items/{item_id}/release")
def release_item(
    item_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
) -> JSONResponse:
    """Give an item back to the queue (the reviewer skipped it or left)."""
    with svc.db.write() as s:
        held = release(s, item_id, who)
    return JSONResponse({"released": held})


class DecisionBody(BaseModel):
    """A decision as the review page sends it."""

    model_config = ConfigDict(extra="forbid")

    decision: str = Field(pattern="^(accept|correct|reject)$")
    class_name: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=2000)
    version: int = Field(ge=0)
    next: bool = Field(default=True, description="claim and return the next item")


@router.post("/api/items/{item_id}/decision")
def decide_item(
    item_id: int,
    body: Annotated[DecisionBody, Body()],
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
) -> JSONResponse:
    """Record a decision; answer with the next claimed item so the page moves on at once."""
    user = who
    with svc.db.write() as s:
        dec = decide(
            s,
            item_id,
            user,
            DecisionInput(body.decision, body.class_name, body.comment, body.version),
            utcnow(),
            rid,
        )
        job_id = s.get(Item, item_id).job_id  # type: ignore[union-attr]
        decision_id = dec.id
    nxt = _claim(svc, job_id, user) if body.next else None
    return JSONResponse({"decision_id": decision_id, "item_id": item_id, "next": nxt})


@router.get("/items/{item_id}")
def item_page(request: Request, item_id: int, svc: Annotated[Services, Depends(services)]) -> Response:
    """One item with its decision history (and the override form for admins)."""
    item, job = _load(svc, item_id)
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
        view=item_view(item, job),
        history=history,
        can_override=bool(p and p.may(Action.OVERRIDE_REVIEW)),
    )


@router.post("/items/{item_id}/override")
def override_item(
    item_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    decision: Annotated[str, Form(pattern="^(accept|correct|reject)$")],
    version: Annotated[int, Form(ge=0)],
    class_name: Annotated[str, Form(max_length=200)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace a finished review with an admin's decision (kept in the history)."""
    user = who
    with svc.db.write() as s:
        decide(
            s,
            item_id,
            user,
            DecisionInput(decision, class_name or None, comment, version),
            utcnow(),
            rid,
            override=True,
        )
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


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": _IMAGE_CACHE})


def _window(item: Item) -> tuple[int | None, int | None, int | None, int | None]:
    return (item.row_off, item.col_off, item.height, item.width)


@router.get("/items/{item_id}/chip.png")
def item_chip(
    item_id: int,
    svc: Annotated[Services, Depends(services)],
    bands: Annotated[str | None, Query(max_length=20, description="e.g. 8,4,3 (1-based)")] = None,
) -> Response:
    """The item's pixels as an RGB PNG (percentile stretch, chosen band triple)."""
    item, job = _load(svc, item_id)
    src = input_file(Path(job.job_dir), item.path)
    return _png(render_chip(src, _window(item), _bands_param(bands)))


@router.get("/items/{item_id}/overview.png")
def item_overview(item_id: int, svc: Annotated[Services, Depends(services)]) -> Response:
    """A small view of the whole scene with the item's window outlined."""
    item, job = _load(svc, item_id)
    src = input_file(Path(job.job_dir), item.path)
    if item.row_off is None or not is_scene(src):
        raise HTTPException(404, "this item is a whole file: no scene overview")
    return _png(render_overview(src, _window(item)))


@router.get("/items/{item_id}/heatmap.png")
def item_heatmap(item_id: int, svc: Annotated[Services, Depends(services)]) -> Response:
    """The explanation heatmap written beside the job, when there is one."""
    item, job = _load(svc, item_id)
    job_dir = Path(job.job_dir)
    p = heatmap_path(job_dir, item.row_index)
    if p is not None:
        return FileResponse(p, media_type="image/png", headers={"Cache-Control": _IMAGE_CACHE})
    model = job_model(job_dir, job.model)
    if model is None:
        raise HTTPException(404, "no explanation for this item (the job's model is unknown)")
    try:
        data = explanation_png(model, input_file(job_dir, item.path), _window(item))
    except (VisionError, OSError) as exc:
        raise HTTPException(404, f"no explanation for this item: {exc}") from exc
    # Cache beside the job (atomically), so the next reviewer gets it at once.
    out = job_dir / "explanations" / f"{item.row_index}.png"
    try:
        out.parent.mkdir(exist_ok=True)
        write_bytes_atomic(out, data)
    except OSError:
        pass  # a read-only job folder still gets the picture, just not cached
    return _png(data)
