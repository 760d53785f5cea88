"""Bring a finished job folder (ARCHITECTURE.md §3) into the review queue.

Only rows with ``status == ok`` become review items; ``nodata`` and ``error`` rows are
counted on the job. Class names come from ``manifest.json`` when it lists them, otherwise
from the ``label``/``class_name`` pairs in the table (``probs`` fixes how many there are).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from review import audit
from review.db.models import JOB_READY, PENDING, Item, Job, utcnow
from vision.errors import ConfigError

REQUIRED_COLUMNS = (
    "path",
    "row_off",
    "col_off",
    "height",
    "width",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "status",
    "label",
    "class_name",
    "confidence",
    "probs",
    "input_sha256",
    "model_name",
    "model_version",
    "model_sha256",
)

_INSERT_BATCH = 2000


def read_manifest(job_dir: Path) -> dict[str, Any]:
    """The job's ``manifest.json`` (empty when absent or unreadable)."""
    f = job_dir / "manifest.json"
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _classes_from_manifest(manifest: dict[str, Any]) -> list[str] | None:
    for holder in (manifest.get("model"), manifest):
        if isinstance(holder, dict):
            c = holder.get("classes")
            if isinstance(c, list) and all(isinstance(x, str) for x in c):
                return list(c)
    return None


def check_job_dir(job_dir: Path, require_success: bool = True) -> Path:
    """The ``predictions.parquet`` of a finished job folder.

    Raises:
        ConfigError: not a job folder, or not finished (no ``_SUCCESS``).
    """
    table = job_dir / "predictions.parquet"
    if not table.is_file():
        raise ConfigError(f"{job_dir}: no predictions.parquet (is this a `vision infer` output?)")
    if require_success and not (job_dir / "_SUCCESS").exists():
        raise ConfigError(f"{job_dir}: the job has not finished (no _SUCCESS marker)")
    return table


def import_rows(db: Session, job: Job, job_dir: Path) -> int:
    """Insert the reviewable rows of ``job_dir`` as items of ``job``; returns their number.

    Raises:
        ConfigError: the table lacks required columns.
    """
    table = pq.read_table(check_job_dir(job_dir, require_success=False))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ConfigError(f"{job_dir}/predictions.parquet lacks columns {missing}")
    rows = table.to_pylist()
    manifest = read_manifest(job_dir)
    classes = _classes_from_manifest(manifest) or _classes_from_rows(rows)
    interest = set(json.loads(job.classes_of_interest or "[]"))
    batch: list[dict[str, Any]] = []
    n_ok = 0
    for i, r in enumerate(rows):
        if r.get("status") != "ok":
            continue
        n_ok += 1
        probs = r.get("probs")
        batch.append(
            {
                "job_id": job.id,
                "row_index": i,
                "path": str(r["path"]),
                "row_off": r.get("row_off"),
                "col_off": r.get("col_off"),
                "height": r.get("height"),
                "width": r.get("width"),
                "crs": r.get("crs"),
                "minx": r.get("minx"),
                "miny": r.get("miny"),
                "maxx": r.get("maxx"),
                "maxy": r.get("maxy"),
                "label": r.get("label"),
                "class_name": r.get("class_name"),
                "confidence": r.get("confidence"),
                "probs": json.dumps([round(float(p), 6) for p in probs]) if probs else None,
                "flagged": r.get("flagged"),
                "input_sha256": r.get("input_sha256"),
                "model_name": r.get("model_name"),
                "model_version": r.get("model_version"),
                "model_sha256": r.get("model_sha256"),
                "interest": r.get("class_name") in interest,
                "status": PENDING,
                "version": 0,
            }
        )
        if len(batch) >= _INSERT_BATCH:
            db.execute(insert(Item), batch)
            batch = []
    if batch:
        db.execute(insert(Item), batch)
    first = next((r for r in rows if r.get("status") == "ok"), rows[0] if rows else {})
    job.classes = json.dumps(classes)
    job.model_name = first.get("model_name")
    job.model_version = first.get("model_version")
    job.rows_skipped = len(rows) - n_ok
    job.progress_done = job.progress_total = len(rows)
    job.status, job.finished_at = JOB_READY, utcnow()
    return n_ok


def _classes_from_rows(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[int, str] = {}
    k = 0
    for r in rows:
        if r.get("label") is not None and r.get("class_name"):
            names[int(r["label"])] = str(r["class_name"])
        if r.get("probs"):
            k = max(k, len(r["probs"]))
    k = max(k, max(names) + 1 if names else 0)
    return [names.get(i, f"class_{i}") for i in range(k)]


def import_job(
    db: Session,
    job_dir: Path,
    actor: str,
    name: str | None = None,
    classes_of_interest: list[str] | None = None,
    four_eyes: bool = False,
    request_id: str = "cli",
) -> Job:
    """Create a job for a finished job folder and queue its rows for review (audited).

    Raises:
        ConfigError: not a finished job folder, or bad columns.
    """
    job_dir = job_dir.resolve()
    check_job_dir(job_dir)
    job = Job(
        name=name or job_dir.name,
        kind="import",
        status="importing",
        job_dir=str(job_dir),
        classes="[]",
        classes_of_interest=json.dumps(sorted(classes_of_interest or [])),
        four_eyes=four_eyes,
        submitted_by=actor,
        created_at=utcnow(),
        progress_done=0,
        progress_total=0,
        rows_skipped=0,
    )
    db.add(job)
    db.flush()
    n = import_rows(db, job, job_dir)
    audit.append(
        db,
        actor,
        "job.import",
        f"job:{job.id}",
        None,
        {
            "job_dir": str(job_dir),
            "items": n,
            "skipped": job.rows_skipped,
            "classes_of_interest": json.loads(job.classes_of_interest),
            "four_eyes": four_eyes,
        },
        request_id,
    )
    return job


def set_classes_of_interest(db: Session, job: Job, classes: list[str], four_eyes: bool) -> None:
    """Change a job's classes of interest and four-eyes flag, re-marking its items."""
    job.classes_of_interest = json.dumps(sorted(classes))
    job.four_eyes = four_eyes
    db.execute(update(Item).where(Item.job_id == job.id).values(interest=Item.class_name.in_(classes)))
