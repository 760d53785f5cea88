"""Jobs: list, submit (from an allow-listed root), import, progress, settings, exports."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

from fastapi import Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import func, select

from review import audit
from review.db.models import Item, Job
from review.export import export_job
from review.formats import ExportFormat
from review.jobs.change_folder import is_change_folder
from review.jobs.change_import import create_change_import_job
from review.jobs.importer import create_import_job, set_classes_of_interest
from review.jobs.paths import PathRefusedError, resolve_in_roots
from review.jobs.records import KIND_CHANGE
from review.jobs.worker import submit_job as queue_job
from review.queue import agreement, change_agreement, job_counts
from review.web.deps import JobId, RequestId, Services, ServicesDep, Who, row_or_404
from review.web.routes.common import make_router, page, split_classes
from review.web.views import JobStatus
from vision.model_uri import is_wellformed_registry_uri

router = make_router()



def _job(svc: Services, job_id: int) -> Job:
    return row_or_404(svc, Job, job_id, f"no job {job_id}")


def _roots(svc: Services) -> list[tuple[int, str]]:
    return [(i, str(r)) for i, r in enumerate(svc.settings.job_roots)]


@router.get("/")
def home(request: Request, svc: ServicesDep) -> Response:
    """The list of jobs with their review progress."""
    with svc.db.read() as s:
        jobs = s.execute(select(Job).order_by(Job.id.desc()).limit(200)).scalars().all()
        counts = dict(
            s.execute(select(Item.job_id, func.count()).where(Item.status == "done").group_by(Item.job_id)).all()
        )
        totals = dict(s.execute(select(Item.job_id, func.count()).group_by(Item.job_id)).all())
    return page(request, "jobs.html", jobs=jobs, done=counts, totals=totals)


@router.get("/jobs/new")
def new_job_form(request: Request, svc: ServicesDep) -> Response:
    """The submission form: a path under one of the allowed roots."""
    return page(request, "job_new.html", roots=_roots(svc), error=None)


def _model(svc: Services, root: int, model: str) -> str:
    model = model.strip()
    if is_wellformed_registry_uri(model):
        return model
    path = resolve_in_roots(svc.settings.job_roots, root, model)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise PathRefusedError("the model must be models:/NAME@ALIAS, models:/NAME/VERSION or an .onnx file")
    return str(path)


@router.post("/jobs")
def submit_job(
    svc: ServicesDep,
    who: Who,
    rid: RequestId,
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
    svc: ServicesDep,
    who: Who,
    rid: RequestId,
    path: Annotated[str, Form(max_length=1000)],
    root: Annotated[int, Form()] = 0,
    name: Annotated[str, Form(max_length=200)] = "",
    classes_of_interest: Annotated[str, Form(max_length=2000)] = "",
    four_eyes: Annotated[bool, Form()] = False,
    again: Annotated[bool, Form()] = False,
    transitions: Annotated[str, Form(max_length=200)] = "",
    include_cloudy: Annotated[bool, Form()] = False,
) -> Response:
    """Queue a finished job folder, or a `vision change` folder, found under an allowed root
    for import.

    The folder and its table's columns are checked here (400 when unusable); the worker
    reads the rows in batches and checks every input, with progress on the job page.
    """
    target = resolve_in_roots(svc.settings.job_roots, root, path)
    if is_change_folder(target, svc.roots):
        if split_classes(classes_of_interest):
            raise HTTPException(400, "a change folder's classes of interest are the ones `vision change --classes` "
                                     "compared: leave the field empty")
        job_id = create_change_import_job(
            svc.db, target, who.name, svc.roots, name=name.strip() or None,
            transitions=split_classes(transitions), four_eyes=four_eyes, request_id=rid, again=again,
        )
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)
    job_id = create_import_job(
        svc.db,
        target,
        who.name,
        svc.roots,
        name=name.strip() or None,
        classes_of_interest=split_classes(classes_of_interest),
        four_eyes=four_eyes,
        request_id=rid,
        again=again,
        include_cloudy=include_cloudy,
    )
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _status(svc: Services, job_id: int) -> JobStatus:
    job = _job(svc, job_id)
    with svc.db.read() as s:
        counts = job_counts(s, job_id)
    return JobStatus(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress_done=job.progress_done,
        progress_total=job.progress_total,
        error=job.error,
        counts=counts,
    )


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: JobId, svc: ServicesDep) -> Response:
    """A job: live progress, review counts, model-vs-reviewer agreement, exports."""
    job = _job(svc, job_id)
    change = job.kind == KIND_CHANGE
    with svc.db.read() as s:
        counts = job_counts(s, job_id)
        agree = [] if change else agreement(s, job_id)
        transitions = change_agreement(s, job_id) if change else []
    return page(
        request,
        "job.html",
        job=job,
        counts=counts,
        agreement=agree,
        transitions=transitions,
        is_change=change,
        classes=job.classes or [],
        classes_of_interest=", ".join(job.classes_of_interest or []),
    )


@router.get("/api/jobs/{job_id}/status", response_model=JobStatus)
def job_status(job_id: JobId, svc: ServicesDep) -> JobStatus:
    """Progress of a job, polled by the job page."""
    return _status(svc, job_id)


@router.post("/jobs/{job_id}/settings")
def job_settings(
    job_id: JobId,
    svc: ServicesDep,
    who: Who,
    rid: RequestId,
    classes_of_interest: Annotated[str, Form(max_length=2000)] = "",
    four_eyes: Annotated[bool, Form()] = False,
) -> Response:
    """Change a job's classes of interest (queue order) and four-eyes rule (not of a change
    job: its classes of interest are the ones `vision change` compared)."""
    if _job(svc, job_id).kind == KIND_CHANGE:
        raise HTTPException(400, "a change job's classes of interest are the ones `vision change` compared; "
                                 "import the change folder again to review other transitions")
    with svc.db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        before = {"classes_of_interest": list(job.classes_of_interest), "four_eyes": job.four_eyes}
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


_MEDIA = {
    ExportFormat.geojson: ("application/geo+json", "confirmed.geojson"),
    ExportFormat.parquet: ("application/vnd.apache.parquet", "confirmed.parquet"),
    ExportFormat.dataset: ("application/zip", "dataset.zip"),
}


@router.post("/jobs/{job_id}/export/{fmt}", name="export_results")
def export_results(job_id: JobId, fmt: ExportFormat, svc: ServicesDep, who: Who, rid: RequestId) -> Response:
    """Download the confirmed results (GeoJSON or Parquet: human-decided items only) or the
    reviewed items as a labelled dataset (manifest.csv + chips, zipped).

    A dataset answer says in ``X-Export-Skipped`` how many labelled items were left out
    (``skipped.csv`` in the archive says why).
    """
    _job(svc, job_id)
    out_dir = svc.settings.data_dir / "exports" / f"job-{job_id:06d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    media, filename = _MEDIA[fmt]
    target = out_dir / ("dataset" if fmt is ExportFormat.dataset else filename)
    with svc.db.read() as s:  # files are written outside any write transaction
        done = export_job(s, job_id, fmt, target, svc.roots, overwrite=True)
    out = Path(shutil.make_archive(str(target), "zip", root_dir=target)) if fmt is ExportFormat.dataset else target
    with svc.db.write() as s:
        audit.append(s, who.name, "export", f"job:{job_id}", None,
                     {"format": fmt.value, "items": done.items, "skipped": len(done.skipped)}, rid)
    headers = {"X-Export-Skipped": str(len(done.skipped))} if fmt is ExportFormat.dataset else None
    return FileResponse(out, media_type=media, filename=f"job-{job_id}-{filename}", headers=headers)
