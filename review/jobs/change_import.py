"""Bring a finished `vision change` folder into the review queue as change items.

A change folder (``change_manifest.json`` of kind ``vision-change``, ``changes.parquet`` of
the contract `vision.contracts.changes`, ``_SUCCESS``) is imported as a job of kind
``change``. Each row with ``status == ok`` whose transition is one of the job's transitions
(default `DEFAULT_TRANSITIONS`: appeared, disappeared, changed; ``--transitions`` chooses
others) becomes an `Item` (the after window: path, window, class, input and model of the
latest date) with a `ChangeItem` beside it (the comparison and the before window).
``uncertain`` and ``not_assessed`` rows are never queued: nobody is asked to confirm a
change the rules did not claim, and a window not seen at one date is never "no change".

The same rules as for job folders (`review.jobs.importer`): the change folder, both jobs'
folders and every input a queued row names (``path_before``, ``path_after``) must lie
inside the allowed roots (resolved; relative inputs are accepted beside their job folder
only with the row's sha256); one row outside refuses the whole folder. Rows are inserted
in batches, each its own short write transaction with the progress, and an interrupted
import resumes after the last row inserted.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Unpack

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import delete, func, insert, select, update

from review.db.engine import Database
from review.db.models import JOB_IMPORTING, JOB_READY, PENDING, ChangeItem, Item, Job, utcnow
from review.jobs.change_folder import (
    CHANGES_TABLE,
    DEFAULT_TRANSITIONS,
    check_change_dir,
    open_changes,
    parse_transitions,
    read_change_manifest,
)
from review.jobs.files import InputMissingError, InputRefusedError, is_inside
from review.jobs.importer import (
    HEARTBEAT_S,
    INSERT_BATCH,
    NAMED_ROWS,
    ImportResult,
    Progress,
    fail_import,
    import_here,
)
from review.jobs.inputs import InputResolver
from review.jobs.records import KIND_CHANGE, JobOptions, add_import_job, new_job
from vision.contracts.changes import (
    CHANGE_TRANSITIONS,
    STATUS_OK,
)
from vision.errors import ConfigError


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _naive(v: Any) -> datetime | None:
    if not isinstance(v, datetime):
        return None
    return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo is not None else v


def _text(v: Any, n: int) -> str | None:
    return str(v)[:n] if v is not None else None


def _queueable(r: dict[str, Any], wanted: set[str]) -> bool:
    """An ``ok`` row of a wanted transition, with both probabilities finite and both paths."""
    return (
        r.get("status") == STATUS_OK
        and r.get("transition") in wanted
        and _finite(r.get("p_before")) is not None
        and _finite(r.get("p_after")) is not None
        and all(isinstance(r.get(k), str) and r[k] for k in ("path_before", "path_after", "job_before", "job_after"))
    )


@dataclass
class _Scan:
    total: int = 0
    queued: int = 0
    bad: list[str] = field(default_factory=list)
    n_bad: int = 0
    model: tuple[str | None, str | None] = (None, None)


class _Inputs:
    """Resolves the job folders and inputs of change rows inside the roots, once each."""

    def __init__(self, roots: Sequence[Path]):
        self.roots = roots
        self._jobs: dict[str, str] = {}  # resolved, or "!why not"
        self._resolvers: dict[str, InputResolver] = {}

    def job(self, raw: str) -> str:
        """The resolved job folder ``raw`` names.

        Raises:
            InputRefusedError: relative, or outside the roots.
        """
        if raw not in self._jobs:
            if not os.path.isabs(raw):
                self._jobs[raw] = "!the job folder is not an absolute path"
            else:
                real = os.path.realpath(raw)
                ok = is_inside(real, self.roots)
                self._jobs[raw] = real if ok else "!the job folder is outside the allowed folders"
                if ok:
                    self._resolvers[real] = InputResolver(Path(real), self.roots)
        got = self._jobs[raw]
        if got.startswith("!"):
            raise InputRefusedError(got[1:])
        return got

    def resolve(self, job: str, raw: str, sha: str | None) -> str:
        return self._resolvers[self.job(job)].resolve(raw, sha)

    def known(self, job: str, raw: str, sha: str | None) -> str | None:
        real = self._jobs.get(job)
        if real is None or real.startswith("!"):
            return None
        return self._resolvers[real].known(raw, sha)


def _batches(table: pq.ParquetFile) -> Iterator[list[dict[str, Any]]]:
    try:
        for batch in table.iter_batches(batch_size=INSERT_BATCH):
            yield batch.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"{CHANGES_TABLE} cannot be read ({exc})") from exc


def _scan(table: pq.ParquetFile, wanted: set[str], inputs: _Inputs, heartbeat: Callable[[], None]) -> _Scan:
    scan = _Scan()
    last = time.monotonic()
    for rows in _batches(table):
        for r in rows:
            if time.monotonic() - last > HEARTBEAT_S:
                heartbeat()
                last = time.monotonic()
            i = scan.total
            scan.total += 1
            if not _queueable(r, wanted):
                continue
            try:
                for date in ("before", "after"):
                    inputs.resolve(r[f"job_{date}"], r[f"path_{date}"], r.get(f"input_sha256_{date}"))
            except (InputRefusedError, InputMissingError) as exc:
                scan.n_bad += 1
                if len(scan.bad) < NAMED_ROWS:
                    scan.bad.append(f"row {i} ({str(r.get('change_id'))[:80]!r}): {exc}")
                continue
            scan.queued += 1
            if scan.model == (None, None):
                scan.model = (r.get("model_name_after"), r.get("model_version_after"))
    return scan


def _trajectory(r: dict[str, Any]) -> list[Any]:
    items, states, ps = (r.get(k) or [] for k in ("trajectory_items", "trajectory", "trajectory_p"))
    return [[_text(it, 200), _text(st, 200), _finite(p)] for it, st, p in zip(items, states, ps, strict=False)]


def _rows(job: Job, i: int, r: dict[str, Any], before: str, after: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `Item` and `ChangeItem` values of change row ``i``."""
    classes = list(job.classes or [])
    p_b, p_a = _finite(r["p_before"]), _finite(r["p_after"])
    assert p_b is not None and p_a is not None
    cls = _text(r.get("class_after"), 200)
    item = {
        "job_id": job.id,
        "row_index": i,
        "path": after,
        **{k: r.get(k) for k in ("row_off", "col_off", "height", "width")},
        "crs": r.get("crs"),
        **{k: _finite(r.get(k)) for k in ("minx", "miny", "maxx", "maxy")},
        "label": classes.index(cls) if cls in classes else None,
        "class_name": cls,
        # The queue takes the least sure first: a change is as sure as its less sure date.
        "confidence": min(p_b, p_a),
        "probs": None,
        "flagged": None,
        "input_sha256": _text(r.get("input_sha256_after"), 64),
        "model_name": _text(r.get("model_name_after"), 200),
        "model_version": _text(r.get("model_version_after"), 100),
        "model_sha256": _text(r.get("model_sha256_after"), 64),
        "interest": r.get("transition") in CHANGE_TRANSITIONS,
        "status": PENDING,
        "version": 0,
    }
    change = {
        "job_id": job.id,
        "change_id": _text(r.get("change_id"), 200) or f"row-{i}",
        "transition": r["transition"],
        "aoi_id": _text(r.get("aoi_id"), 200),
        "area_ha": _finite(r.get("area_ha")),
        "alignment": _text(r.get("alignment"), 16),
        "item_before": _text(r.get("item_before"), 1000),
        "item_after": _text(r.get("item_after"), 1000),
        "acquired_before": _naive(r.get("acquired_before")),
        "acquired_after": _naive(r.get("acquired_after")),
        "class_before": _text(r.get("class_before"), 200),
        "class_after": cls,
        "p_before": p_b,
        "p_after": p_a,
        "p_interest_before": _finite(r.get("p_interest_before")),
        "p_interest_after": _finite(r.get("p_interest_after")),
        "cloud_fraction_before": _finite(r.get("cloud_fraction_before")),
        "cloud_fraction_after": _finite(r.get("cloud_fraction_after")),
        "path_before": before,
        **{f"{k}_before": r.get(f"{k}_before") for k in ("row_off", "col_off", "height", "width")},
        "crs_before": r.get("crs_before"),
        **{f"{k}_before": _finite(r.get(f"{k}_before")) for k in ("minx", "miny", "maxx", "maxy")},
        "input_sha256_before": _text(r.get("input_sha256_before"), 64),
        "model_name_before": _text(r.get("model_name_before"), 200),
        "model_version_before": _text(r.get("model_version_before"), 100),
        "model_sha256_before": _text(r.get("model_sha256_before"), 64),
        "job_before": os.path.realpath(r["job_before"]),
        "job_after": os.path.realpath(r["job_after"]),
        "trajectory": _trajectory(r),
        "first_appeared": _naive(r.get("first_appeared")),
    }
    return item, change


def _classes(manifest: dict[str, Any]) -> list[str]:
    c = manifest.get("classes")
    return [str(x)[:200] for x in c[:10_000]] if isinstance(c, list) and all(isinstance(x, str) for x in c) else []


def run_change_import(db: Database, job_id: int, roots: Sequence[Path],
                      on_progress: Progress | None = None) -> ImportResult:
    """Read a queued change job's table and queue its changes (see the module docstring).
    The job ends ``ready``; on an error it is left as it was for `fail_change_import`.

    Raises:
        ConfigError: the folder or table is unusable, or a row's job folder or input is
            outside the roots or missing.
    """
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.kind != KIND_CHANGE:
            raise ConfigError(f"no change job {job_id}")
        job.status, job.heartbeat_at = JOB_IMPORTING, utcnow()
        folder, wanted = Path(job.job_dir), set(job.transitions or DEFAULT_TRANSITIONS)
        start = s.execute(select(func.max(Item.row_index)).where(Item.job_id == job_id)).scalar_one()
        start = -1 if start is None else int(start)

    def heartbeat() -> None:
        with db.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow())
                      .execution_options(synchronize_session=False))

    manifest = read_change_manifest(folder, roots)
    inputs = _Inputs(roots)
    with open_changes(folder, roots) as table:
        scan = _scan(table, wanted, inputs, heartbeat)
        if scan.n_bad:
            raise ConfigError(
                (f"{scan.n_bad} change rows have" if scan.n_bad > 1 else "1 change row has")
                + " a job folder or an input outside the allowed folders or missing, so the change folder is "
                + "refused: " + "; ".join(scan.bad) + (" ..." if scan.n_bad > len(scan.bad) else "")
                + ". Keep both jobs and their inputs under an allowed folder."
            )
        with db.write() as s:
            job = s.get(Job, job_id)
            assert job is not None
            job.classes = _classes(manifest)
        i = 0
        for rows in _batches(table):
            items: list[dict[str, Any]] = []
            changes: dict[int, dict[str, Any]] = {}
            for r in rows:
                if i > start and _queueable(r, wanted):
                    before = inputs.known(r["job_before"], r["path_before"], r.get("input_sha256_before"))
                    after = inputs.known(r["job_after"], r["path_after"], r.get("input_sha256_after"))
                    if before is None or after is None:  # the table changed under us since the first pass
                        raise ConfigError(f"row {i} of {CHANGES_TABLE} changed during the import")
                    item, change = _rows(job, i, r, before, after)
                    items.append(item)
                    changes[i] = change
                i += 1
            with db.write() as s:
                if items:
                    s.execute(insert(Item), items)
                    ids = s.execute(select(Item.row_index, Item.id).where(
                        Item.job_id == job_id, Item.row_index.in_(list(changes)))).all()
                    s.execute(insert(ChangeItem), [changes[int(r)] | {"item_id": int(k)} for r, k in ids])
                s.execute(update(Job).where(Job.id == job_id).values(
                    progress_done=i, progress_total=scan.total, heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))
            if on_progress is not None:
                on_progress(i, scan.total)
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.model_name, job.model_version = scan.model
        job.rows_skipped = scan.total - scan.queued
        job.progress_done = job.progress_total = scan.total
        job.status, job.finished_at, job.error = JOB_READY, utcnow(), None
    return ImportResult(scan.queued, scan.total - scan.queued)


def fail_change_import(db: Database, job_id: int, message: str, actor: str, request_id: str,
                       rc: int | None = None) -> None:
    """Mark a change job failed and drop what a partial import left (change rows first)."""
    with db.write() as s:
        s.execute(delete(ChangeItem).where(ChangeItem.job_id == job_id))
    fail_import(db, job_id, message, actor, request_id, rc)


class ChangeImportOptions(JobOptions, total=False):
    """The choices of a change import (`review.jobs.records.JobOptions` and this one; four
    eyes: a confirmed change needs a second reviewer).

    Attributes:
        transitions: the transitions to queue (default: every one).
    """

    transitions: Sequence[str] | None


def create_change_import_job(
    db: Database,
    folder: Path,
    actor: str,
    roots: Sequence[Path],
    queued: bool = True,
    **options: Unpack[ChangeImportOptions],
) -> int:
    """Check a finished change folder and queue it for import (audited); returns the job id.

    The job's classes of interest are those `vision change` compared; with ``four_eyes``,
    a confirmed change needs a second reviewer.

    Args:
        queued: leave the rows to a worker; ``False`` when this process imports them next.

    Raises:
        ConfigError: not a finished change folder inside the roots, an unknown transition,
            or a folder imported before (unless ``again``).
    """
    four_eyes = options.get("four_eyes", False)
    folder = Path(os.path.realpath(folder))
    wanted = parse_transitions(options.get("transitions"))
    rows, manifest = check_change_dir(folder, roots)
    interest = manifest.get("classes_of_interest")
    interest = [str(c)[:200] for c in interest] if isinstance(interest, list) else []
    with db.write() as s:
        job = new_job(KIND_CHANGE, options.get("name") or folder.name, actor, str(folder),
                      classes_of_interest=interest, four_eyes=four_eyes, transitions=wanted)
        job.progress_total = rows
        return add_import_job(
            s, job, queued=queued, again=options.get("again", False), request_id=options.get("request_id", "cli"),
            details={"job_dir": str(folder), "kind": KIND_CHANGE, "rows": rows, "transitions": wanted,
                     "classes_of_interest": job.classes_of_interest, "four_eyes": four_eyes},
        )


def import_change_folder(
    db: Database,
    folder: Path,
    actor: str,
    roots: Sequence[Path],
    on_progress: Progress | None = None,
    **options: Unpack[ChangeImportOptions],
) -> int:
    """`create_change_import_job` and `run_change_import` in this process (the CLI).

    Raises:
        ConfigError: as the two do (the job is then marked failed).
    """
    job_id = create_change_import_job(db, folder, actor, roots, queued=False, **options)
    return import_here(db, job_id, roots, on_progress, run=run_change_import, fail=fail_change_import, actor=actor,
                       request_id=options.get("request_id", "cli"))
