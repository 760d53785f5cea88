"""The one factory of `Job` rows (submitted batches and imported folders alike), and the
steps every folder import takes to add its row, so that a prediction import and a change
import refuse a second import and audit their creation the same way."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from review import audit
from review.db.models import JOB_FAILED, JOB_IMPORTING, JOB_QUEUED, Job, utcnow
from vision.errors import ConfigError

#: Job kinds: run by the worker through ``vision infer``, a finished folder imported, or a
#: `vision change` folder imported (its items are changes: `review.db.models.ChangeItem`).
KIND_INFERENCE, KIND_IMPORT, KIND_CHANGE = "inference", "import", "change"


class JobOptions(TypedDict, total=False):
    """The choices every folder import takes, all optional (keywords of `create_import_job`,
    `import_job` in `review.jobs.importer` and their change-import twins).

    Attributes:
        name: the job's name (default: the folder's).
        four_eyes: a decision needs a second reviewer (default off).
        request_id: the HTTP request id, or ``cli`` (the default).
        again: import a folder imported before (default: refused).
    """

    name: str | None
    four_eyes: bool
    request_id: str
    again: bool


def new_job(
    kind: str,
    name: str,
    actor: str,
    job_dir: str,
    *,
    input_path: str | None = None,
    model: str | None = None,
    classes_of_interest: Iterable[str] = (),
    four_eyes: bool = False,
    transitions: Iterable[str] | None = None,
) -> Job:
    """A queued job (not yet added to a session).

    Args:
        kind: `KIND_INFERENCE`, `KIND_IMPORT` or `KIND_CHANGE`.
        transitions: for a change job, the transitions that become review items.
        job_dir: the job folder ("" when the id names it: set it after the first flush).
    """
    return Job(
        name=name[:200],
        kind=kind,
        status=JOB_QUEUED,
        input_path=input_path,
        model=model,
        job_dir=job_dir,
        classes=[],
        classes_of_interest=sorted(set(classes_of_interest)),
        four_eyes=four_eyes,
        transitions=list(transitions) if transitions is not None else None,
        submitted_by=actor,
        created_at=utcnow(),
        progress_done=0,
        progress_total=0,
        rows_skipped=0,
    )


def imported_before(db: Session, job_dir: Path, kind: str = KIND_IMPORT) -> int | None:
    """The id of a job of ``kind`` (a prediction or a change import) already imported from
    ``job_dir`` (failed imports do not count)."""
    return db.execute(
        select(Job.id)
        .where(Job.kind == kind, Job.job_dir == str(job_dir), Job.status != JOB_FAILED)
        .order_by(Job.id)
        .limit(1)
    ).scalar_one_or_none()


def add_import_job(
    db: Session, job: Job, *, queued: bool, again: bool, request_id: str, details: dict[str, Any]
) -> int:
    """Add a new import job from `new_job` (audited ``job.import``); returns its id.

    Args:
        db: a session inside a write transaction.
        job: the job; its ``job_dir`` is the resolved folder, its ``submitted_by`` the actor.
        queued: leave the rows to a worker; ``False`` when this process imports them next
            (the job is then marked importing with a heartbeat, so no worker takes it too).
        again: import a folder imported before (otherwise refused).
        details: what the audit row records besides ``again`` (the folder, rows, settings).

    Raises:
        ConfigError: the folder was imported before as a job of the same kind, and not ``again``.
    """
    before = imported_before(db, Path(job.job_dir), job.kind)
    if before is not None and not again:
        raise ConfigError(f"{job.job_dir} was imported already as job {before}; import it again with --again")
    if not queued:
        job.status, job.heartbeat_at, job.started_at = JOB_IMPORTING, utcnow(), utcnow()
        job.worker_id = f"{job.submitted_by}:{os.getpid()}"[:64]
    db.add(job)
    db.flush()
    audit.append(db, job.submitted_by, "job.import", f"job:{job.id}", None,
                 details | {"again": before is not None}, request_id)
    return int(job.id)
