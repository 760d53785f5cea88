"""`vision review import` of a `vision change` folder: which rows become change items, what
they hold, and the allowed-roots rules for the change folder, both jobs and their inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from change_helpers import change_rows, queued_rows, set_change_column
from cli_runner import run_cli
from sqlalchemy import select

from review.audit import verify
from review.db.engine import Database
from review.db.models import JOB_FAILED, JOB_READY, AuditEntry, ChangeItem, Item, Job
from review.jobs.change_import import create_change_import_job, import_change_folder
from review.jobs.records import KIND_CHANGE
from review.jobs.worker import Worker
from vision.errors import ConfigError


def _items(db: Database, job_id: int) -> list[tuple[Item, ChangeItem]]:
    with db.read() as s:
        return list(s.execute(select(Item, ChangeItem).join(ChangeItem, ChangeItem.item_id == Item.id)
                              .where(Item.job_id == job_id).order_by(Item.row_index)).tuples())


def test_changes_become_items_with_both_dates(db: Database, change_folder: Path, change_job: int) -> None:
    rows = change_rows(change_folder)
    want = queued_rows(change_folder)
    got = _items(db, change_job)
    assert len(want) == 15 and [i.row_index for i, _ in got] == [i for i, _ in want]
    for (item, ch), (_, r) in zip(got, want, strict=True):
        assert ch.transition == r["transition"] in ("appeared", "disappeared")
        assert (item.path, item.row_off, item.col_off, item.crs, item.minx) == (
            r["path_after"], r["row_off"], r["col_off"], r["crs"], r["minx"])
        assert (ch.path_before, ch.row_off_before, ch.col_off_before, ch.crs_before, ch.maxy_before) == (
            r["path_before"], r["row_off_before"], r["col_off_before"], r["crs_before"], r["maxy_before"])
        assert (ch.class_before, item.class_name, ch.p_before, ch.p_after) == (
            r["class_before"], r["class_after"], r["p_before"], r["p_after"])
        assert item.confidence == min(r["p_before"], r["p_after"]) and item.interest
        assert (item.input_sha256, ch.input_sha256_before) == (r["input_sha256_after"], r["input_sha256_before"])
        assert (item.model_sha256, ch.model_sha256_before) == (r["model_sha256_after"], r["model_sha256_before"])
        assert ch.acquired_before.isoformat() == "2023-06-15T10:30:00" and ch.change_id == r["change_id"]
        assert ch.job_before == os.path.realpath(change_folder.parent / "jobs" / "d0")
    with db.read() as s:
        job = s.get(Job, change_job)
        assert job is not None
        assert (job.kind, job.status, job.transitions) == (KIND_CHANGE, JOB_READY, ["appeared", "disappeared",
                                                                                    "changed"])
        assert job.classes_of_interest == ["AnnualCrop"] and "Forest" in job.classes
        assert job.rows_skipped == len(rows) - 15
        actions = s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars().all()
    assert actions[-2:] == ["job.import", "job.ready"]
    # uncertain and not_assessed windows (and persisted/absent ones) are never queued
    queued = {c.change_id for _, c in got}
    skipped = [r for r in rows if r["status"] != "ok"]
    assert {"uncertain", "not_assessed"} <= {r["status"] for r in skipped}
    assert not queued & {r["change_id"] for r in skipped}


def test_transitions_are_configurable(db: Database, change_folder: Path, users: Any, allowed: tuple[Path, ...]
                                      ) -> None:
    code, out = run_cli("review", "import", str(change_folder), "--db", db.url, "--transitions", "appeared")
    assert code == 0, out
    assert "7 changes queued for review (appeared)" in out
    job_id = int(out.split()[1].rstrip(":"))
    assert {c.transition for _, c in _items(db, job_id)} == {"appeared"}
    persisted = import_change_folder(db, change_folder, "test", allowed, transitions=["persisted,absent"], again=True)
    assert len(_items(db, persisted)) == len(queued_rows(change_folder, ("persisted", "absent")))
    assert not any(i.interest for i, _ in _items(db, persisted) if _.transition == "absent")
    for bad in ("uncertain", "not_assessed", "grew"):
        code, out = run_cli("review", "import", str(change_folder), "--db", db.url, "--transitions", bad, "--again")
        assert code == 2 and "unknown transition" in out and "never queued" in out, out
    code, out = run_cli("review", "import", str(change_folder), "--db", db.url, "--again", "--interest", "Forest")
    assert code == 2 and "--interest is for job folders" in out


def test_imported_once_unless_again(db: Database, change_job: int, change_folder: Path,
                                    allowed: tuple[Path, ...]) -> None:
    with pytest.raises(ConfigError, match="imported already as job"):
        import_change_folder(db, change_folder, "test", allowed)


def test_outside_the_roots_is_refused(db: Database, users: Any, data_dir: Path, tmp_path: Path,
                                      allowed: tuple[Path, ...]) -> None:
    from change_helpers import write_change_folder

    outside = write_change_folder(tmp_path / "elsewhere", data_dir)
    code, out = run_cli("review", "import", str(outside), "--db", db.url)
    assert code == 2 and "outside the allowed folders" in out, out


def test_a_row_whose_input_or_job_is_outside_refuses_the_folder(db: Database, change_folder: Path, users: Any,
                                                               allowed: tuple[Path, ...], tmp_path: Path) -> None:
    (i0, _), (i1, _), (i2, _) = queued_rows(change_folder)[:3]
    secret = tmp_path / "secret.tif"
    secret.write_bytes(b"II*\x00 not yours")
    link = change_folder.parent / "pairs" / "looks-inside.tif"
    link.symlink_to(secret)
    set_change_column(change_folder, "path_before", {i0: "/etc/passwd", i1: str(link)})
    set_change_column(change_folder, "job_after", {i2: str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        import_change_folder(db, change_folder, "test", allowed)
    msg = str(err.value)
    assert "3 change rows" in msg and f"row {i0}" in msg and f"row {i1}" in msg and f"row {i2}" in msg
    assert "job folder is outside the allowed folders" in msg and "outside the allowed folders" in msg
    with db.read() as s:
        job = s.execute(select(Job).order_by(Job.id.desc())).scalars().first()
        assert job is not None and job.status == JOB_FAILED
        assert s.execute(select(Item)).first() is None and s.execute(select(ChangeItem)).first() is None
        assert verify(s).ok


def test_unfinished_or_foreign_folders_are_refused(db: Database, change_folder: Path, users: Any,
                                                   allowed: tuple[Path, ...]) -> None:
    (change_folder / "_SUCCESS").unlink()
    with pytest.raises(ConfigError, match="has not finished"):
        import_change_folder(db, change_folder, "test", allowed)
    (change_folder / "_SUCCESS").write_bytes(b"")
    (change_folder / "change_manifest.json").write_text('{"kind": "something else"}')
    with pytest.raises(ConfigError, match="not the manifest of a `vision change` folder"):
        import_change_folder(db, change_folder, "test", allowed)


def test_the_web_import_queues_a_change_folder_for_the_worker(db: Database, change_folder: Path, client_for: Any,
                                                              users: Any, allowed: tuple[Path, ...]) -> None:
    client, csrf = client_for("ana")
    r = client.post("/jobs/import", data={"path": "area/change", "root": "0", "transitions": "disappeared",
                                          "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    job_id = int(r.headers["location"].rsplit("/", 1)[1])
    assert Worker(db, roots=allowed).run_once()
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.kind, job.status) == (KIND_CHANGE, JOB_READY)
    assert {c.transition for _, c in _items(db, job_id)} == {"disappeared"}
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "Changes vs reviewers" in page.text and "Labelled dataset" not in page.text
    # its classes of interest are those `vision change` compared: not set here, nor changed later
    r = client.post("/jobs/import", data={"path": "area/change", "root": "0", "classes_of_interest": "Forest",
                                          "again": "true", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 400 and "vision change --classes" in r.text
    r = client.post(f"/jobs/{job_id}/settings", data={"classes_of_interest": "Forest", "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 400 and "vision change" in r.text
    with db.read() as s:
        assert s.get(Job, job_id).classes_of_interest == ["AnnualCrop"]  # type: ignore[union-attr]


def test_a_failed_worker_import_leaves_no_change_rows(db: Database, change_folder: Path, users: Any,
                                                      allowed: tuple[Path, ...]) -> None:
    job_id = create_change_import_job(db, change_folder, "test", allowed)
    (change_folder.parent / "pairs" / "d1.tif").unlink()  # an input vanished after queueing
    assert Worker(db, roots=allowed).run_once()
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JOB_FAILED and "missing" in (job.error or "")
        assert s.execute(select(ChangeItem)).first() is None
        assert verify(s).ok
