"""Bring a finished job folder (ARCHITECTURE.md §3) into the review queue.

Only rows with ``status == ok`` and finite numbers become review items; ``nodata``,
``cloudy`` (schema 2: cloud over ``--max-cloud``) and ``error`` rows, and rows whose
confidence or probabilities are NaN or infinite (an old or hostile table, counted as
``invalid``), are counted on the job as not assessed, by reason (``Job.not_assessed``). An
import with ``include_cloudy`` queues the ``cloudy`` rows too, without a predicted class: a
reviewer labels what the window shows (``correct``) or rejects it. Tables of schema 1 and 2
(ARCHITECTURE.md §5) are both accepted.

Every input of a reviewable row must be a regular file inside the allowed roots (symlinks
resolved; `review.jobs.inputs`); the path stored on the item is that resolved, absolute path.
One input outside the roots or missing refuses the whole job, naming the first rows.

Importing is split so that no request holds the database: `create_import_job` checks the
folder and queues the job (fast); `run_import` (the worker, or the CLI) reads the table and
inserts its rows in batches of `INSERT_BATCH`, each its own short write transaction that
also records the progress shown on the job page. An interrupted import resumes after the
last row inserted.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from review import audit
from review.db.engine import Database
from review.db.models import JOB_FAILED, JOB_IMPORTING, JOB_READY, PENDING, Item, Job, utcnow
from review.jobs.files import InputMissingError, InputRefusedError, is_inside, open_input, read_small
from review.jobs.inputs import InputResolver
from review.jobs.records import KIND_IMPORT, JobOptions, add_import_job, new_job
from vision.contracts.predictions import STATUS_CLOUDY, STATUS_ERROR, STATUS_NODATA, STATUS_OK
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
#: Longest time without a heartbeat while the inputs are checked (a worker's job is taken
#: over by another after `review.jobs.worker.Worker.stale_after_s` without one).
HEARTBEAT_S = 10.0
#: Rows per insert transaction (each also records the progress and the heartbeat).
INSERT_BATCH = 2000
#: Largest manifest read (it lists every input of a job: megabytes for a large archive).
MANIFEST_LIMIT = 64 << 20
#: Most classes a table may name (a hostile label must not size a list of a billion names).
MAX_CLASSES = 10_000
#: How many offending rows a refusal names.
NAMED_ROWS = 5

Progress = Callable[[int, int], None]


def read_manifest(job_dir: Path, roots: Sequence[Path]) -> dict[str, Any]:
    """The job's ``manifest.json`` (empty when absent, unreadable or outside the roots)."""
    try:
        data = json.loads(read_small(job_dir / "manifest.json", roots, MANIFEST_LIMIT))
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


@contextmanager
def open_table(job_dir: Path, roots: Sequence[Path]) -> Iterator[pq.ParquetFile]:
    """``job_dir/predictions.parquet``, opened inside the roots, with its columns checked.

    Raises:
        ConfigError: missing, outside the roots, not Parquet, or lacking required columns.
    """
    try:
        with open_input(job_dir / "predictions.parquet", roots) as f, os.fdopen(os.dup(f.fd), "rb") as fobj:
            try:
                table = pq.ParquetFile(fobj)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise ConfigError(f"{job_dir}/predictions.parquet is not a readable Parquet table ({exc})") from exc
            _check_columns(job_dir, table.schema_arrow)
            yield table
    except InputMissingError as exc:
        raise ConfigError(f"{job_dir}: no predictions.parquet (is this a `vision infer` output?)") from exc
    except InputRefusedError as exc:
        raise ConfigError(f"{job_dir}/predictions.parquet: {exc}") from exc


def _check_columns(job_dir: Path, schema: pa.Schema) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ConfigError(f"{job_dir}/predictions.parquet lacks columns {missing}")
    expect = {
        "path": pa.types.is_string,
        "status": pa.types.is_string,
        "confidence": pa.types.is_floating,
        "probs": lambda t: pa.types.is_list(t) and pa.types.is_floating(t.value_type),
        "row_off": pa.types.is_integer,
        "label": pa.types.is_integer,
    }
    schema_2 = {  # optional: a schema-1 table has none of them
        "item_id": pa.types.is_string,
        "acquired": pa.types.is_timestamp,
        "cloud_fraction": pa.types.is_floating,
        "aoi_id": pa.types.is_string,
    }
    expect.update({c: ok for c, ok in schema_2.items() if c in schema.names})
    wrong = [f"{c} ({schema.field(c).type})" for c, ok in expect.items() if not ok(schema.field(c).type)]
    if wrong:
        raise ConfigError(f"{job_dir}/predictions.parquet has columns of the wrong type: {', '.join(wrong)}")


def check_job_dir(job_dir: Path, roots: Sequence[Path], require_success: bool = True) -> int:
    """Check a finished job folder before queueing it; returns its number of rows.

    Raises:
        ConfigError: outside the roots, not a job folder, not finished (no ``_SUCCESS``), or
            a malformed table.
    """
    if not is_inside(job_dir, roots):
        raise ConfigError(
            f"{job_dir} is outside the allowed folders ({', '.join(map(str, roots))}); "
            "add its folder to VISION_REVIEW_ROOTS to import it"
        )
    with open_table(job_dir, roots) as table:
        rows = int(table.metadata.num_rows)
    if require_success:
        try:
            with open_input(job_dir / "_SUCCESS", roots):
                pass
        except (InputMissingError, InputRefusedError) as exc:
            raise ConfigError(f"{job_dir}: the job has not finished (no _SUCCESS marker)") from exc
    return rows


def _finite(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and math.isfinite(v))


def _assessable(r: dict[str, Any]) -> bool:
    """An ``ok`` row whose numbers are all finite (NaN is no prediction, and not JSON)."""
    probs = r.get("probs")
    return (
        r.get("status") == STATUS_OK
        and isinstance(r.get("path"), str)
        and _finite(r.get("confidence"))
        and (probs is None or all(_finite(p) and p is not None for p in probs))
    )


#: What a row says of the model's answer: a not-assessed (cloudy) row has none, whatever it carries.
_ANSWER = ("label", "class_name", "confidence", "probs", "flagged")


def _queued(r: dict[str, Any], include_cloudy: bool) -> bool:
    """Whether a row becomes a review item: assessable, or cloudy when those are included
    (its answer fields are then cleared in place: cloud is never the model's answer)."""
    if include_cloudy and r.get("status") == STATUS_CLOUDY and isinstance(r.get("path"), str):
        r.update(dict.fromkeys(_ANSWER))
        return True
    return _assessable(r)


#: Reasons a row is not queued, as ``Job.not_assessed`` counts them.
NOT_ASSESSED_REASONS = (STATUS_NODATA, STATUS_CLOUDY, STATUS_ERROR, "invalid")


def _reason(r: dict[str, Any]) -> str:
    status = r.get("status")
    return status if status in (STATUS_NODATA, STATUS_CLOUDY, STATUS_ERROR) else "invalid"


@dataclass
class _Scan:
    """What the first pass over the table found."""

    total: int = 0
    assessable: int = 0
    classes: dict[int, str] = field(default_factory=dict)
    width: int = 0
    model_name: str | None = None
    model_version: str | None = None
    bad: list[str] = field(default_factory=list)
    n_bad: int = 0
    not_assessed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOT_ASSESSED_REASONS, 0))


_SCAN_COLUMNS = ["path", "status", "confidence", "probs", "label", "class_name", "input_sha256",
                 "model_name", "model_version"]


def _batches(table: pq.ParquetFile, columns: list[str]) -> Iterator[list[dict[str, Any]]]:
    try:
        for batch in table.iter_batches(batch_size=INSERT_BATCH, columns=columns):
            yield batch.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"predictions.parquet cannot be read ({exc})") from exc


def _scan(table: pq.ParquetFile, inputs: InputResolver, heartbeat: Callable[[], None],
          include_cloudy: bool = False) -> _Scan:
    scan = _Scan()
    last = time.monotonic()
    for rows in _batches(table, _SCAN_COLUMNS):
        for r in rows:
            if time.monotonic() - last > HEARTBEAT_S:  # hashing relative inputs can be slow
                heartbeat()
                last = time.monotonic()
            i = scan.total
            scan.total += 1
            if not _queued(r, include_cloudy):
                scan.not_assessed[_reason(r)] += 1
                continue
            try:
                inputs.resolve(r["path"], r.get("input_sha256"))
            except (InputRefusedError, InputMissingError) as exc:
                scan.n_bad += 1
                if len(scan.bad) < NAMED_ROWS:
                    scan.bad.append(f"row {i} ({r['path'][:300]!r}): {exc}")
                continue
            scan.assessable += 1
            if scan.model_name is None:
                scan.model_name, scan.model_version = r.get("model_name"), r.get("model_version")
            label = r.get("label")
            if isinstance(label, int) and 0 <= label < MAX_CLASSES and r.get("class_name"):
                scan.classes[label] = str(r["class_name"])[:200]
            scan.width = min(MAX_CLASSES, max(scan.width, len(r.get("probs") or ())))
    return scan


def _classes(manifest: dict[str, Any], scan: _Scan) -> list[str]:
    named = _classes_from_manifest(manifest)
    if named:
        return named
    k = max(scan.width, max(scan.classes) + 1 if scan.classes else 0)
    return [scan.classes.get(i, f"class_{i}") for i in range(k)]


@dataclass(frozen=True)
class ImportResult:
    """What an import brought in.

    Attributes:
        items: rows queued for review.
        skipped: rows not queued (nodata, cloudy unless included, error, or non-finite numbers).
        not_assessed: ``skipped`` by reason (`NOT_ASSESSED_REASONS`).
    """

    items: int
    skipped: int
    not_assessed: dict[str, int] = field(default_factory=dict)


def _item(job: Job, i: int, r: dict[str, Any], path: str, interest: set[str]) -> dict[str, Any]:
    probs = r.get("probs")
    return {
        "job_id": job.id,
        "row_index": i,
        "path": path,
        **{k: r.get(k) for k in ("row_off", "col_off", "height", "width", "crs", "minx", "miny", "maxx", "maxy",
                                 "label", "class_name", "confidence", "flagged", "input_sha256", "model_name",
                                 "model_version", "model_sha256")},
        "probs": [round(float(p), 6) for p in probs] if probs else None,
        "interest": r.get("class_name") in interest,
        "status": PENDING,
        "version": 0,
    }


def run_import(db: Database, job_id: int, roots: Sequence[Path], on_progress: Progress | None = None) -> ImportResult:
    """Read the table of a queued job's folder and queue its rows for review (see the module
    docstring). The job ends ``ready``; on an error it is left as it was for `fail_import`.

    Raises:
        ConfigError: the folder or table is unusable, or an input is outside the roots or missing.
    """
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise ConfigError(f"no job {job_id}")
        job.status, job.heartbeat_at = JOB_IMPORTING, utcnow()
        job_dir, interest = Path(job.job_dir), set(job.classes_of_interest)
        include_cloudy = bool(job.include_cloudy)
        start = s.execute(select(func.max(Item.row_index)).where(Item.job_id == job_id)).scalar_one()
        start = -1 if start is None else int(start)

    def heartbeat() -> None:  # the first pass can take a while: stay alive
        with db.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow())
                      .execution_options(synchronize_session=False))

    inputs = InputResolver(job_dir, roots)
    with open_table(job_dir, roots) as table:
        scan = _scan(table, inputs, heartbeat, include_cloudy)
        if scan.n_bad:
            raise ConfigError(
                (f"{scan.n_bad} rows have inputs" if scan.n_bad > 1 else "1 row has an input")
                + " outside the allowed folders or missing, so the job is refused: "
                + "; ".join(scan.bad)
                + (" ..." if scan.n_bad > len(scan.bad) else "")
                + ". Keep a job's inputs under an allowed folder and classify them with absolute paths."
            )
        i = 0
        for rows in _batches(table, [*REQUIRED_COLUMNS, *(["flagged"] if "flagged" in table.schema_arrow.names
                                                            else [])]):
            batch: list[dict[str, Any]] = []
            with db.write() as s:
                job = s.get(Job, job_id)
                assert job is not None
                for r in rows:
                    if i > start and _queued(r, include_cloudy):
                        path = inputs.known(r["path"], r.get("input_sha256"))
                        if path is None:  # the table changed under us since the first pass
                            raise ConfigError(f"row {i} of predictions.parquet changed during the import")
                        batch.append(_item(job, i, r, path, interest))
                    i += 1
                if batch:
                    s.execute(insert(Item), batch)
                job.progress_done, job.progress_total, job.heartbeat_at = i, scan.total, utcnow()
            if on_progress is not None:
                on_progress(i, scan.total)
    manifest = read_manifest(job_dir, roots)
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.classes = _classes(manifest, scan)
        job.model_name, job.model_version = scan.model_name, scan.model_version
        job.rows_skipped = scan.total - scan.assessable
        job.not_assessed = dict(scan.not_assessed)
        job.progress_done = job.progress_total = scan.total
        job.status, job.finished_at, job.error = JOB_READY, utcnow(), None
    return ImportResult(scan.assessable, scan.total - scan.assessable, dict(scan.not_assessed))


def fail_import(db: Database, job_id: int, message: str, actor: str, request_id: str, rc: int | None = None) -> None:
    """Mark a job failed with ``message``, drop the rows a partial import left (audited)."""
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        before = {"status": job.status}
        s.execute(delete(Item).where(Item.job_id == job_id))
        job.status, job.error, job.finished_at = JOB_FAILED, message[-4000:], utcnow()
        after: dict[str, Any] = {"status": JOB_FAILED}
        if rc is not None:
            after["rc"] = rc
        audit.append(s, actor, "job.failed", f"job:{job_id}", before, after, request_id)


class ImportOptions(JobOptions, total=False):
    """The choices of a prediction import (`JobOptions` and these).

    Attributes:
        classes_of_interest: the classes whose items are marked of interest (default none).
        include_cloudy: queue the ``cloudy`` rows too (not assessed by the model: a reviewer
            labels them); by default they are counted as not assessed.
    """

    classes_of_interest: list[str] | None
    include_cloudy: bool


def create_import_job(
    db: Database, job_dir: Path, actor: str, roots: Sequence[Path], queued: bool = True,
    **options: Unpack[ImportOptions],
) -> int:
    """Check a finished job folder and queue it for import (audited); returns the job id.

    Args:
        queued: leave the rows to a worker; ``False`` when this process imports them next
            (the job is then marked importing with a heartbeat, so no worker takes it too).

    Raises:
        ConfigError: not a finished job folder inside the roots, a malformed table, or a
            folder imported before (unless ``again``).
    """
    four_eyes, include_cloudy = options.get("four_eyes", False), options.get("include_cloudy", False)
    job_dir = Path(os.path.realpath(job_dir))
    rows = check_job_dir(job_dir, roots)
    with db.write() as s:
        job = new_job(KIND_IMPORT, options.get("name") or job_dir.name, actor, str(job_dir),
                      classes_of_interest=options.get("classes_of_interest") or [], four_eyes=four_eyes)
        job.progress_total = rows
        job.include_cloudy = include_cloudy
        return add_import_job(
            s, job, queued=queued, again=options.get("again", False), request_id=options.get("request_id", "cli"),
            details={"job_dir": str(job_dir), "rows": rows, "classes_of_interest": job.classes_of_interest,
                     "four_eyes": four_eyes, "include_cloudy": include_cloudy},
        )


#: `fail_import` or its change-import twin.
FailImport = Callable[[Database, int, str, str, str], None]
#: `run_import` or its change-import twin.
RunImport = Callable[[Database, int, Sequence[Path], Progress | None], ImportResult]


def import_here(
    db: Database, job_id: int, roots: Sequence[Path], on_progress: Progress | None, *,
    run: RunImport, fail: FailImport, actor: str, request_id: str,
) -> int:
    """Import a job created with ``queued=False`` in this process (the CLI), then audit
    ``job.ready`` (`ready_record`); returns the job id.

    Raises:
        ConfigError: as ``run`` does (the job is then marked failed with ``fail``).
    """
    try:
        result = run(db, job_id, roots, on_progress)
    except ConfigError as exc:
        fail(db, job_id, f"import failed: {exc}", actor, request_id)
        raise
    with db.write() as s:
        audit.append(s, actor, "job.ready", f"job:{job_id}", {"status": JOB_IMPORTING}, ready_record(result),
                     request_id)
    return job_id


def ready_record(result: ImportResult, rc: int | None = None) -> dict[str, Any]:
    """What ``job.ready`` records, for the CLI and the worker alike: the items and skipped rows,
    the not-assessed counts by reason that the job now holds (`review.audit_state` checks them; a
    change import counts none), and the runner's exit code when a worker ran one."""
    after: dict[str, Any] = {"status": JOB_READY, "items": result.items, "skipped": result.skipped}
    if result.not_assessed:
        after["not_assessed"] = result.not_assessed
    if rc is not None:
        after["rc"] = rc
    return after


def import_job(
    db: Database, job_dir: Path, actor: str, roots: Sequence[Path], on_progress: Progress | None = None,
    **options: Unpack[ImportOptions],
) -> int:
    """`create_import_job` and `run_import` in this process (the CLI); returns the job id.

    Raises:
        ConfigError: as the two do (the job is then marked failed).
    """
    job_id = create_import_job(db, job_dir, actor, roots, queued=False, **options)
    return import_here(db, job_id, roots, on_progress, run=run_import, fail=fail_import, actor=actor,
                       request_id=options.get("request_id", "cli"))


def set_classes_of_interest(db: Session, job: Job, classes: list[str], four_eyes: bool) -> None:
    """Change a job's classes of interest and four-eyes flag, re-marking its items."""
    job.classes_of_interest = sorted(classes)
    job.four_eyes = four_eyes
    db.execute(update(Item).where(Item.job_id == job.id).values(interest=Item.class_name.in_(classes)))
