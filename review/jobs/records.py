"""The one factory of `Job` rows (submitted batches and imported folders alike)."""

from __future__ import annotations

from collections.abc import Iterable

from review.db.models import JOB_QUEUED, Job, utcnow

#: Job kinds: run by the worker through ``vision infer``, a finished folder imported, or a
#: `vision change` folder imported (its items are changes: `review.db.models.ChangeItem`).
KIND_INFERENCE, KIND_IMPORT, KIND_CHANGE = "inference", "import", "change"


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
