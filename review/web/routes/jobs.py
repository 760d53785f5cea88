"""Jobs: list, submit (from an allow-listed root), import, progress, settings, exports."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select

from review import audit
from review.db.models import Item, Job
from review.export import export_dataset, export_geojson, export_parquet
from review.jobs.importer import import_job, set_classes_of_interest
from review.jobs.paths import PathRefusedError, resolve_in_roots
from review.jobs.worker import submit_job as queue_job
from review.queue import agreement, job_counts
from review.web.app import Services
from review.web.guard import Principal, principal, request_id
from review.web.routes.common import make_router, page, services, split_classes

router = make_router()

_MODEL_URI = re.compile(r"^models:/[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+|/[0-9]+)$")


def _job(svc: Services, job_id: int) -> Job:
    with svc.db.read() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _roots(svc: Services) -> list[tuple[int, str]]:
    return [(i, str(r)) for i, r in enumerate(svc.settings.job_roots)]


@router.get("/")
def home(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    """The list of jobs with their review progress."""
    with svc.db.read() as s:
        jobs = s.execute(select(Job).order_by(Job.id.desc()).limit(200)).scalars().all()
        counts = dict(
            s.execute(select(Item.job_id, func.count()).where(Item.status == "done").group_by(Item.job_id)).all()
        )
        totals = dict(s.execute(select(Item.job_id, func.count()).group_by(Item.job_id)).all())
    return page(request, "jobs.html", jobs=jobs, done=counts, totals=totals)


@router.get("/jobs/new")
def new_job_form(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    """The submission form: a path under one of the allowed roots."""
    return page(request, "job_new.html", roots=_roots(svc), error=None)


def _model(svc: Services, root: int, model: str) -> str:
    model = model.strip()
    if _MODEL_URI.match(model):
        return model
    path = resolve_in_roots(svc.settings.job_roots, root, model)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise PathRefusedError("the model must be models:/NAME@ALIAS, models:/NAME/VERSION or an .onnx file")
    return str(path)


@router.post("/jobs")
def submit_job(
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    path: Annotated[str, Form(max_length=1000)],
    model: Annotated[str, Form(max_length=1000)],
    root: Annotated[int, Form()] = 0,
    name: Annotated[str, Form(max_length=200)] = "",
    classes_of_interest: Annotated[str, Form(max_length=2000)] = "",
    four_eyes: Annotated[bool, Form()] = False,
) -> Response:
    """Queue a batch for the worker; it runs ``vision infer`` and fills the review queue."""
    target = resolve_in_roots(svc.settings.job_roots, root, path)
    model_ref = _model(svc, root, model)
    job_id = queue_job(
        svc.db,
        target,
        model_ref,
        who.name,
        svc.settings.data_dir / "jobs",
        name=name.strip() or None,
        classes_of_interest=split_classes(classes_of_interest),
        four_eyes=four_eyes,
        request_id=rid,
    )
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/import", name="import_job")
def import_job_route(
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    path: Annotated[str, Form(max_length=1000)],
    root: Annotated[int, Form()] = 0,
    name: Annotated[str, Form(max_length=200)] = "",
    classes_of_interest: Annotated[str, Form(max_length=2000)] = "",
    four_eyes: Annotated[bool, Form()] = False,
) -> Response:
    """Import a finished job folder found under an allowed root."""
    target = resolve_in_roots(svc.settings.job_roots, root, path)
    with svc.db.write() as s:
        job = import_job(
            s,
            target,
            who.name,
            name=name.strip() or None,
            classes_of_interest=split_classes(classes_of_interest),
            four_eyes=four_eyes,
            request_id=rid,
        )
        job_id = job.id
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _status(svc: Services, job_id: int) -> dict[str, object]:
    job = _job(svc, job_id)
    with svc.db.read() as s:
        counts = job_counts(s, job_id)
    return {
        "id": job.id,
        "status": job.status,
        "progress_done": job.progress_done,
        "progress_total": job.progress_total,
        "error": job.error,
        "counts": counts,
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: int, svc: Annotated[Services, Depends(services)]) -> Response:
    """A job: live progress, review counts, model-vs-reviewer agreement, exports."""
    job = _job(svc, job_id)
    with svc.db.read() as s:
        counts = job_counts(s, job_id)
        agree = agreement(s, job_id)
    return page(
        request,
        "job.html",
        job=job,
        counts=counts,
        agreement=agree,
        classes=json.loads(job.classes or "[]"),
        classes_of_interest=", ".join(json.loads(job.classes_of_interest or "[]")),
    )


@router.get("/api/jobs/{job_id}/status")
def job_status(job_id: int, svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    """Progress of a job, polled by the job page."""
    return JSONResponse(_status(svc, job_id))


@router.post("/jobs/{job_id}/settings")
def job_settings(
    job_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    classes_of_interest: Annotated[str, Form(max_length=2000)] = "",
    four_eyes: Annotated[bool, Form()] = False,
) -> Response:
    """Change a job's classes of interest (queue order) and four-eyes rule."""
    _job(svc, job_id)
    with svc.db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        before = {"classes_of_interest": json.loads(job.classes_of_interest), "four_eyes": job.four_eyes}
        wanted = split_classes(classes_of_interest)
        set_classes_of_interest(s, job, wanted, four_eyes)
        audit.append(
            s,
            who.name,
            "job.settings",
            f"job:{job_id}",
            before,
            {"classes_of_interest": sorted(wanted), "four_eyes": four_eyes},
            rid,
        )
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _export_dir(svc: Services, job_id: int) -> Path:
    d = svc.settings.data_dir / "exports" / f"job-{job_id:06d}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _export(svc: Services, who: Principal, rid: str, job_id: int, fmt: str) -> Path:
    _job(svc, job_id)
    out_dir = _export_dir(svc, job_id)
    with svc.db.write() as s:
        if fmt == "geojson":
            out = out_dir / "confirmed.geojson"
            n = export_geojson(s, job_id, out)
        elif fmt == "parquet":
            out = out_dir / "confirmed.parquet"
            n = export_parquet(s, job_id, out)
        else:
            folder = out_dir / "dataset"
            n = export_dataset(s, job_id, folder, overwrite=True)
            archive = shutil.make_archive(str(out_dir / "dataset"), "zip", root_dir=folder)
            out = Path(archive)
        audit.append(s, who.name, "export", f"job:{job_id}", None, {"format": fmt, "items": n}, rid)
    return out


@router.post("/jobs/{job_id}/export/geojson", name="export_geojson")
def export_geojson_route(
    job_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
) -> Response:
    """Download the confirmed results as GeoJSON (human-decided items only)."""
    out = _export(svc, who, rid, job_id, "geojson")
    return FileResponse(out, media_type="application/geo+json", filename=f"job-{job_id}-confirmed.geojson")


@router.post("/jobs/{job_id}/export/parquet", name="export_parquet")
def export_parquet_route(
    job_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
) -> Response:
    """Download the confirmed results as Parquet (human-decided items only)."""
    out = _export(svc, who, rid, job_id, "parquet")
    return FileResponse(out, media_type="application/vnd.apache.parquet", filename=f"job-{job_id}-confirmed.parquet")


@router.post("/jobs/{job_id}/export/dataset", name="export_dataset")
def export_dataset_route(
    job_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
) -> Response:
    """Download the reviewed items as a labelled dataset (manifest.csv + chips, zipped)."""
    out = _export(svc, who, rid, job_id, "dataset")
    return FileResponse(out, media_type="application/zip", filename=f"job-{job_id}-dataset.zip")
