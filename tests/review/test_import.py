"""Imports: in the worker and in batches, inputs found or the job refused, NaN never served."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runner import run_cli
from review_helpers import set_column, write_job, write_relative_job
from sqlalchemy import func, select, text, update

from review.db.engine import Database
from review.db.models import AuditEntry, Decision, Item, Job
from review.jobs import importer
from review.jobs.importer import create_import_job, import_job, run_import
from review.jobs.worker import Worker
from vision.errors import ConfigError


def _count(db: Database, job_id: int) -> int:
    with db.read() as s:
        return int(s.execute(select(func.count()).select_from(Item).where(Item.job_id == job_id)).scalar_one())


def test_web_import_is_queued_and_run_by_the_worker_in_batches(
    client_for: Any, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...], monkeypatch: Any
) -> None:
    write_job(roots / "jobs" / "big", n_windows=49, n_chips=3, n_bad=2)
    ana, csrf = client_for("ana")
    r = ana.post("/jobs/import", data={"csrf_token": csrf, "root": "0", "path": "jobs/big"}, follow_redirects=False)
    assert r.status_code == 303
    job_id = int(r.headers["location"].rsplit("/", 1)[1])
    status = ana.get(f"/api/jobs/{job_id}/status").json()
    assert status["status"] == "queued" and status["kind"] == "import", "the request only queues the import"
    assert _count(db, job_id) == 0
    monkeypatch.setattr(importer, "INSERT_BATCH", 10)
    seen: list[tuple[int, int, int]] = []
    real_write = db.write

    def watching_write() -> Any:  # between two batches, what the job page would show
        with db.read() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status == "importing":
                seen.append((job.progress_done, job.progress_total, _count(db, job_id)))
        return real_write()

    monkeypatch.setattr(db, "write", watching_write)
    assert Worker(db, roots=allowed).run_once()
    monkeypatch.setattr(db, "write", real_write)
    done = [p for p in seen if p[0] > 0]
    assert len(done) >= 5, seen
    assert all(p[1] == 54 for p in done) and [p[0] for p in done] == sorted(p[0] for p in done)
    assert any(0 < n < 52 for _, _, n in done), "rows are committed batch by batch, not in one transaction"
    status = ana.get(f"/api/jobs/{job_id}/status").json()
    assert status["status"] == "ready" and status["progress_done"] == status["progress_total"] == 54
    assert status["counts"]["pending"] == 52
    assert "rows imported" in ana.get(f"/jobs/{job_id}").text


def test_an_interrupted_import_resumes_after_the_last_batch(
    db: Database, users: Any, roots: Path, allowed: tuple[Path, ...], monkeypatch: Any
) -> None:
    folder = write_job(roots / "jobs" / "resume", n_windows=30, n_chips=0, n_bad=0)
    job_id = create_import_job(db, folder, "test", allowed)
    monkeypatch.setattr(importer, "INSERT_BATCH", 7)

    def crash(done: int, total: int) -> None:
        if done >= 14:
            raise KeyboardInterrupt  # the worker process is killed mid-import

    with pytest.raises(KeyboardInterrupt):
        run_import(db, job_id, allowed, on_progress=crash)
    assert _count(db, job_id) == 14
    result = run_import(db, job_id, allowed)  # a worker takes the abandoned job again
    assert result.items == 30 and _count(db, job_id) == 30
    with db.read() as s:
        rows = s.execute(select(Item.row_index).where(Item.job_id == job_id)).scalars().all()
    assert sorted(rows) == list(range(30))


def test_nan_in_a_table_is_not_assessed_and_never_reaches_json(
    client_for: Any, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...]
) -> None:
    folder = write_job(roots / "jobs" / "nan", n_windows=6, n_chips=0, n_bad=0)
    set_column(folder, "confidence", {0: math.nan, 1: math.inf})
    probs = pq.read_table(folder / "predictions.parquet").column("probs").to_pylist()
    set_column(folder, "probs", {2: [math.nan] * len(probs[2])})
    job_id = import_job(db, folder, "test", allowed)
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.rows_skipped == 3 and _count(db, job_id) == 3
    rev, csrf = client_for("rev")
    for _ in range(3):
        r = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and json.loads(r.text)["item"]
        item = r.json()["item"]
        r = rev.post(f"/api/items/{item['id']}/decision", json={"decision": "accept", "version": item["version"],
                                                              "next": False}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text


def test_nan_rows_imported_before_are_served_as_null_and_decisions_answer_200(
    client_for: Any, db: Database, job_id: int
) -> None:
    # rows an older version imported with NaN in them (SQLite and PostgreSQL store NaN floats)
    with db.write() as s:
        first = s.execute(select(Item).where(Item.job_id == job_id).order_by(Item.confidence)).scalars().first()
        assert first is not None
        s.execute(update(Item).values(confidence=math.nan, minx=math.nan))
        # what the old importer's json.dumps wrote for a NaN probability
        s.execute(text("UPDATE items SET probs = '[NaN, 0.25, Infinity]'"))
    rev, csrf = client_for("rev")
    r = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    item = json.loads(r.text)["item"]
    assert item["confidence"] is None and item["bounds"] is None
    assert [t["p"] for t in item["top3"]] == [0.25], "non-finite probabilities are left out"
    r = rev.post(f"/api/items/{item['id']}/decision", json={"decision": "accept", "version": item["version"]},
                 headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["next"]["confidence"] is None


def test_a_decision_is_200_even_when_the_next_claim_fails(
    client_for: Any, db: Database, job_id: int, monkeypatch: Any
) -> None:
    from review.web.routes import review as routes

    rev, csrf = client_for("rev")
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(routes, "claim_next", broken)
    r = rev.post(f"/api/items/{item['id']}/decision", json={"decision": "accept", "version": item["version"]},
                 headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["next"] is None
    assert "decision saved" in r.json()["next_error"]
    with db.read() as s:
        assert s.execute(select(Decision).where(Decision.item_id == item["id"])).scalar_one().decision == "accept"


def test_relative_input_paths_are_found_with_their_hash_and_stored_resolved(
    db: Database, users: Any, roots: Path, allowed: tuple[Path, ...], client_for: Any, tmp_path: Path
) -> None:
    folder = write_relative_job(roots / "work")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # imported from another folder than where `vision infer` ran
    try:
        job_id = import_job(db, folder, "test", allowed)
    finally:
        os.chdir(cwd)
    with db.read() as s:
        paths = s.execute(select(Item.path).where(Item.job_id == job_id)).scalars().all()
    assert sorted(paths) == sorted(str((roots / "work" / "chips" / f"chip_{j}.png").resolve()) for j in range(3))
    rev, _ = client_for("rev")
    with db.read() as s:
        item_id = s.execute(select(Item.id).where(Item.job_id == job_id)).scalars().first()
    assert rev.get(f"/items/{item_id}/chip.png").content[:4] == b"\x89PNG"


def test_relative_paths_whose_file_differs_refuse_the_import(
    db: Database, users: Any, roots: Path, allowed: tuple[Path, ...]
) -> None:
    folder = write_relative_job(roots / "work")
    (roots / "work" / "chips" / "chip_1.png").write_bytes(b"\x89PNG another picture")
    with pytest.raises(ConfigError, match="row 1"):
        import_job(db, folder, "test", allowed)
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
        assert job.status == "failed" and s.execute(select(Item)).first() is None


def test_a_malformed_table_is_400_not_500(client_for: Any, users: Any, roots: Path) -> None:
    ana, csrf = client_for("ana")
    cases = {
        "not-parquet": lambda d: (d / "predictions.parquet").write_bytes(b"PAR1 this is not parquet"),
        "missing-columns": lambda d: pq.write_table(pa.table({"path": ["a"]}), d / "predictions.parquet"),
        "wrong-types": lambda d: pq.write_table(
            pa.Table.from_pylist([dict.fromkeys(importer.REQUIRED_COLUMNS, 1)]), d / "predictions.parquet"),
        "no-table": lambda d: (d / "predictions.parquet").unlink(),
        "not-finished": lambda d: (d / "_SUCCESS").unlink(),
    }
    for name, spoil in cases.items():
        folder = write_job(roots / "jobs" / name, n_windows=2, n_chips=0, n_bad=0)
        spoil(folder)
        r = ana.post("/jobs/import", data={"csrf_token": csrf, "root": "0", "path": f"jobs/{name}"},
                     follow_redirects=False)
        assert r.status_code == 400, (name, r.status_code, r.text)
    code, out = run_cli("review", "import", str(roots / "jobs" / "not-parquet"))
    assert code == 2 and "not a readable Parquet table" in out, out


def test_cli_import_refuses_a_folder_imported_before_unless_again(db: Database, roots: Path) -> None:
    folder = write_job(roots / "jobs" / "twice", n_windows=3, n_chips=0, n_bad=0)
    code, out = run_cli("review", "import", str(folder), "--db", db.url, "--no-progress")
    assert code == 0 and "job 1: 3 items queued" in out, out
    code, out = run_cli("review", "import", str(folder), "--db", db.url, "--no-progress")
    assert code == 2 and "imported already as job 1" in out and "--again" in out, out
    code, out = run_cli("review", "import", str(folder), "--db", db.url, "--again", "--no-progress")
    assert code == 0 and "job 2: 3 items queued" in out, out
    with db.read() as s:
        after = [json.loads(a) for a in s.execute(
            select(AuditEntry.after).where(AuditEntry.action == "job.import").order_by(AuditEntry.seq)).scalars()]
    assert [a["again"] for a in after] == [False, True]


def test_cli_import_needs_the_folder_under_the_allowed_roots(db: Database, tmp_path: Path) -> None:
    folder = write_job(tmp_path / "elsewhere" / "job", n_windows=2, n_chips=0, n_bad=0)
    code, out = run_cli("review", "import", str(folder), "--db", db.url)
    assert code == 2 and "outside the allowed folders" in out and "VISION_REVIEW_ROOTS" in out, out
    with db.read() as s:
        assert s.execute(select(Job)).first() is None


def test_a_worker_does_not_take_an_import_the_cli_is_running(
    db: Database, users: Any, roots: Path, allowed: tuple[Path, ...]
) -> None:
    folder = write_job(roots / "jobs" / "cli", n_windows=3, n_chips=0, n_bad=0)
    job_id = create_import_job(db, folder, "cli:ada", allowed, queued=False)
    assert Worker(db, roots=allowed).claim() is None, "the CLI's import is not taken twice"
    assert run_import(db, job_id, allowed).items == 3
    queued = create_import_job(db, folder, "ana", allowed, again=True)
    assert Worker(db, roots=allowed).claim() == queued
