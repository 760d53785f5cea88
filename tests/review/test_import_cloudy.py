"""Schema-2 tables in review: cloudy windows are not queued by default and are counted as not
assessed, by reason, on the job (CLI and job page); ``--include-cloudy`` queues them without a
class, to be labelled, and the dataset export keeps working."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runner import run_cli
from review_helpers import write_job
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import Item, Job, User, utcnow
from review.jobs.importer import import_job
from review.queue import DecisionInput, InvalidDecisionError, claim_next, decide
from vision.contracts.predictions import PREDICTION_SCHEMA
from vision.data.sources import ManifestSource
from vision.errors import ConfigError

CLOUDY = (1, 4, 6)  # rows of the scene made cloudy


def _schema_2_job(folder: Path) -> Path:
    """A job whose scene rows carry the schema-2 columns, three of them cloudy."""
    write_job(folder, n_windows=8, n_chips=0, n_bad=2)
    rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    for i, r in enumerate(rows[:8]):
        r.update(item_id="S2A_32TMT_20200219", acquired=datetime(2020, 2, 19, 10, 27, tzinfo=UTC),
                 cloud_fraction=0.1)
        if i in CLOUDY:
            r.update(status="cloudy", label=None, class_name=None, confidence=None, probs=None,
                     flagged=False, cloud_fraction=0.8)
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), folder / "predictions.parquet")
    return folder


def _job(db: Database, job_id: int) -> Job:
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def test_cloudy_rows_are_not_queued_and_are_counted_as_not_assessed(
        client_for: Any, users: Any, db: Database, roots: Path) -> None:
    folder = _schema_2_job(roots / "jobs" / "clouds")
    code, out = run_cli("review", "import", str(folder), "--db", db.url, "--no-progress")
    assert code == 0, out
    assert "job 1: 5 items queued for review, 5 rows not assessed (nodata 1, cloudy 3, error 1" in out, out
    job = _job(db, 1)
    assert job.not_assessed == {"nodata": 1, "cloudy": 3, "error": 1, "invalid": 0}
    assert job.rows_skipped == 5 and not job.include_cloudy
    with db.read() as s:
        queued = s.execute(select(Item.row_index).where(Item.job_id == 1)).scalars().all()
    assert sorted(queued) == [i for i in range(8) if i not in CLOUDY]
    ana, _ = client_for("ana")
    page = ana.get("/jobs/1").text
    assert '<span id="not-assessed-cloudy">3</span> cloudy' in page
    assert '<span id="count-not-assessed">5</span> rows were not assessed' in page


def test_include_cloudy_queues_them_to_be_labelled_and_the_dataset_exports(
        client_for: Any, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...],
        tmp_path: Path) -> None:
    folder = _schema_2_job(roots / "jobs" / "clouds")
    job_id = import_job(db, folder, "test", allowed, include_cloudy=True)
    job = _job(db, job_id)
    assert job.include_cloudy and job.not_assessed == {"nodata": 1, "cloudy": 0, "error": 1, "invalid": 0}
    with db.read() as s:
        items = s.execute(select(Item).where(Item.job_id == job_id)).scalars().all()
        rev = s.execute(select(User).where(User.name == "rev")).scalar_one()
        cloudy = sorted(it.id for it in items if it.row_index in CLOUDY)
    assert len(items) == 8 and len(cloudy) == 3
    assert all(it.class_name is None and it.confidence is None for it in items if it.row_index in CLOUDY)
    ana, _ = client_for("ana")
    assert "cloudy windows are in the queue, without a class" in ana.get(f"/jobs/{job_id}").text
    done = 0
    while True:
        with db.write() as s:
            item = claim_next(s, job_id, rev, utcnow(), 300)
            if item is None:
                break
            if item.class_name is None:  # accepting "no class" means nothing: refused
                with pytest.raises(InvalidDecisionError, match="did not assess this window"):
                    decide(s, item.id, rev, DecisionInput("accept", None, None, item.version), utcnow(), "t")
                decide(s, item.id, rev, DecisionInput("correct", "Forest", None, item.version), utcnow(), "t")
            else:
                decide(s, item.id, rev, DecisionInput("accept", None, None, item.version), utcnow(), "t")
            done += 1
    assert done == 8
    out = tmp_path / "dataset"
    code, text = run_cli("review", "export", str(job_id), "--format", "dataset", "--out", str(out),
                         "--db", db.url)
    assert code == 0, text
    src = ManifestSource(out / "manifest.csv")
    assert len(src) == 8 and "Forest" in src.classes
    with db.read() as s:
        finals = dict(s.execute(select(Item.id, Item.final_class).where(Item.id.in_(cloudy))).all())
    assert set(finals.values()) == {"Forest"}


def test_a_cloudy_row_that_carries_a_class_is_queued_without_it(
        db: Database, roots: Path, allowed: tuple[Path, ...]) -> None:
    """Cloud is never the model's answer: a cloudy row whose writer left a class (and a NaN
    confidence) in it is queued without class, confidence or probabilities, so it cannot be
    accepted, and its class does not count among the job's classes."""
    folder = _schema_2_job(roots / "jobs" / "lying")
    rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    for i in CLOUDY:
        rows[i].update(label=9, class_name="Cloudland", confidence=float("nan"), probs=[float("nan")] * 4,
                       flagged=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), folder / "predictions.parquet")
    job_id = import_job(db, folder, "test", allowed, include_cloudy=True)
    with db.read() as s:
        items = s.execute(select(Item).where(Item.job_id == job_id)).scalars().all()
    lying = [it for it in items if it.row_index in CLOUDY]
    assert len(lying) == 3
    assert all(it.class_name is None and it.label is None and it.confidence is None and it.probs is None
               and it.flagged is None for it in lying)
    assert "Cloudland" not in (_job(db, job_id).classes or [])


def test_schema_1_tables_still_import_and_a_wrong_schema_2_type_is_refused(
        db: Database, roots: Path, allowed: tuple[Path, ...]) -> None:
    old = write_job(roots / "jobs" / "v1", n_windows=4, n_chips=0, n_bad=0)
    table = pq.read_table(old / "predictions.parquet")
    pq.write_table(table.drop_columns(["item_id", "acquired", "cloud_fraction", "aoi_id"]),
                   old / "predictions.parquet")
    job_id = import_job(db, old, "test", allowed)
    assert _job(db, job_id).not_assessed == {"nodata": 0, "cloudy": 0, "error": 0, "invalid": 0}
    bad = write_job(roots / "jobs" / "bad", n_windows=4, n_chips=0, n_bad=0)
    table = pq.read_table(bad / "predictions.parquet")
    k = table.schema.get_field_index("cloud_fraction")
    table = table.set_column(k, "cloud_fraction", pa.array(["lots"] * table.num_rows))
    pq.write_table(table, bad / "predictions.parquet")
    with pytest.raises(ConfigError, match=r"wrong type: cloud_fraction \(string\)"):
        import_job(db, bad, "test", allowed)


def test_include_cloudy_is_for_job_folders(db: Database, roots: Path) -> None:
    folder = _schema_2_job(roots / "jobs" / "clouds")
    code, out = run_cli("review", "import", str(folder), "--db", db.url, "--include-cloudy", "--no-progress")
    assert code == 0 and "8 items queued for review (cloudy windows included, without a class)" in out, out


@pytest.mark.parametrize("via", ["cli", "worker"])
def test_audit_verify_holds_the_jobs_cloudy_setting_and_counts_to_the_log(
        db: Database, roots: Path, allowed: tuple[Path, ...], via: str) -> None:
    """Which rows were queued (``include_cloudy``) and what was counted as not assessed are
    part of the record: changing either in the jobs table behind the service's back is found."""
    from sqlalchemy import update

    from review import audit
    from review.jobs.importer import create_import_job
    from review.jobs.worker import Worker

    folder = _schema_2_job(roots / "jobs" / "clouds")
    if via == "cli":
        job_id = import_job(db, folder, "test", allowed, include_cloudy=True)
    else:
        job_id = create_import_job(db, folder, "test", allowed, include_cloudy=True)
        assert Worker(db, roots=allowed).run_once()
    assert _job(db, job_id).not_assessed == {"nodata": 1, "cloudy": 0, "error": 1, "invalid": 0}
    with db.snapshot() as s:
        assert audit.verify(s).ok
    for change, recorded in (({"include_cloudy": False}, "include_cloudy=False but audit row"),
                             ({"not_assessed": {"nodata": 0, "cloudy": 0, "error": 0, "invalid": 0}},
                              "not_assessed={'nodata': 0")):
        with db.write() as s:
            before = s.get(Job, job_id)
            assert before is not None
            kept = {k: getattr(before, k) for k in change}
            s.execute(update(Job).where(Job.id == job_id).values(**change))
        with db.snapshot() as s:
            result = audit.verify(s)
        assert not result.ok and recorded in str(result.reason), result
        with db.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**kept))
    with db.snapshot() as s:
        assert audit.verify(s).ok
