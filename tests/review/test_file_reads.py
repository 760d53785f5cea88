"""No file outside the allowed roots is ever served or exported, against the real HTTP server.

The attacks: paths inside an imported table that are absolute, ``../`` or relative to the
server's working directory; a symlink swapped into ``explanations/``, in place of an input
or of its folder after import; a symlink added to a submitted folder before (or while) the
worker runs. Each gets 403/404 (or a refused job), never the bytes, and no export holds them.
Every request goes to uvicorn on 127.0.0.1 (`live_server`).
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from review_helpers import login, rewrite_paths, write_job, write_scene
from sqlalchemy import select, update

from review.db.engine import Database
from review.db.models import DONE, Item, Job, User, utcnow
from review.jobs.files import InputRefusedError, write_in
from review.jobs.importer import import_job
from review.jobs.worker import Worker

SECRET_TEXT = b"VISION_REVIEW_SECRET=do-not-serve-me-0123456789abcdef"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A folder outside the roots with a real scene and a file holding a secret."""
    d = tmp_path / "secret"
    d.mkdir()
    write_scene(d / "scene.tif", 64, seed=7)
    (d / "service.env").write_bytes(SECRET_TEXT)
    return d


def _client(base: str, name: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base, timeout=None, follow_redirects=True)  # a slow machine is slow, not wrong
    return c, login(c, name)


def _import_over_http(base: str, roots: Path, folder: Path, db: Database, allowed: tuple[Path, ...]) -> Job:
    ana, csrf = _client(base, "ana")
    r = ana.post("/jobs/import", data={"csrf_token": csrf, "root": "0", "path": str(folder.relative_to(roots))})
    assert r.status_code == 200 and "/jobs/" in str(r.url), r.text[:300]
    Worker(db, roots=allowed).run_once()
    with db.read() as s:
        return s.execute(select(Job).where(Job.job_dir == str(folder))).scalars().one()


@pytest.mark.parametrize("kind", ["absolute", "absolute-missing", "dotdot", "cwd-relative", "etc-passwd"])
def test_hostile_paths_in_a_table_refuse_the_import(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...], kind: str
) -> None:
    folder = write_job(roots / "jobs" / f"hostile-{kind}", n_windows=4, n_chips=1, n_bad=0)
    hostile = {
        "absolute": str(secret / "scene.tif"),
        "absolute-missing": str(secret / "no-such-scene.tif"),
        "dotdot": "../../../secret/scene.tif",
        "cwd-relative": "pyproject.toml",  # exists in the server's working directory
        "etc-passwd": "/etc/passwd",
    }[kind]
    rewrite_paths(folder, {1: hostile})
    job = _import_over_http(live_server, roots, folder, db, allowed)
    assert job.status == "failed", job.status
    assert "row 1" in (job.error or "") and "refused" in (job.error or "")
    with db.read() as s:
        assert s.execute(select(Item).where(Item.job_id == job.id)).first() is None, "no item of a refused job"
    ana, _ = _client(live_server, "ana")
    status = ana.get(f"/api/jobs/{job.id}/status").json()
    assert status["status"] == "failed" and status["counts"] == {"pending": 0, "second": 0, "done": 0}


def test_refusal_does_not_tell_whether_an_outside_file_exists(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...]
) -> None:
    messages = []
    for name, target in (("exists", secret / "scene.tif"), ("missing", secret / "nothing-here.tif")):
        folder = write_job(roots / "jobs" / name, n_windows=2, n_chips=0, n_bad=0)
        rewrite_paths(folder, {0: str(target)})
        job = _import_over_http(live_server, roots, folder, db, allowed)
        messages.append((job.error or "").replace(str(target), "PATH"))
    assert messages[0] == messages[1] and "outside the allowed folders" in messages[0]


def _legacy_item(db: Database, job_id: int, path: str, row: int, window: bool = True) -> int:
    """An item as an older version imported it: its path taken from the table as it was."""
    with db.write() as s:
        it = Item(job_id=job_id, row_index=row, path=path, row_off=0 if window else None,
                  col_off=0 if window else None, height=32 if window else None, width=32 if window else None,
                  class_name="Forest", confidence=0.1, probs=None, interest=False, status="pending", version=0)
        s.add(it)
        s.flush()
        return int(it.id)


def _decide_all(db: Database, job_id: int) -> None:
    """Mark every item of a job reviewed (as if decided before the files were swapped)."""
    with db.write() as s:
        rev = s.execute(select(User).where(User.name == "rev")).scalar_one()
        s.execute(update(Item).where(Item.job_id == job_id).values(
            status=DONE, final_decision="accept", final_class=Item.class_name, decided_by=rev.id,
            decided_at=utcnow(), version=1))


def _export_zip(base: str, job_id: int) -> tuple[zipfile.ZipFile, int]:
    ana, csrf = _client(base, "ana")
    r = ana.post(f"/jobs/{job_id}/export/dataset", data={"csrf_token": csrf})
    assert r.status_code == 200 and r.content[:2] == b"PK", r.text[:300]
    return zipfile.ZipFile(io.BytesIO(r.content)), int(r.headers["X-Export-Skipped"])


def _holds(archive: zipfile.ZipFile, data: bytes) -> bool:
    return any(data in archive.read(n) for n in archive.namelist())


def test_rows_imported_before_are_checked_at_every_read(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...]
) -> None:
    job_id = import_job(db, write_job(roots / "jobs" / "old", n_windows=2, n_chips=0, n_bad=0), "test", allowed)
    outside = {
        "exists": _legacy_item(db, job_id, str(secret / "scene.tif"), 100),
        "missing": _legacy_item(db, job_id, str(secret / "nothing.tif"), 101),
        "dotdot": _legacy_item(db, job_id, "../../../secret/scene.tif", 102),
        "env": _legacy_item(db, job_id, str(secret / "service.env"), 103, window=False),
    }
    cwd_relative = _legacy_item(db, job_id, "pyproject.toml", 104, window=False)
    rev, _ = _client(live_server, "rev")
    bodies = set()
    for item_id in outside.values():
        for pic in ("chip.png", "overview.png"):
            r = rev.get(f"/items/{item_id}/{pic}")
            if pic == "overview.png" and item_id == outside["env"]:
                assert r.status_code == 404  # a whole file has no overview
                continue
            assert r.status_code == 403, (item_id, pic, r.status_code, r.text)
            assert SECRET_TEXT not in r.content and not r.content.startswith(b"\x89PNG")
            bodies.add(r.text)
    assert len(bodies) == 1, f"one message for every outside path, existing or not: {bodies}"
    r = rev.get(f"/items/{cwd_relative}/chip.png")
    assert r.status_code == 404, "a relative path is taken from the job folder, never the server's cwd"
    _decide_all(db, job_id)
    archive, skipped = _export_zip(live_server, job_id)
    assert skipped == 5
    assert not _holds(archive, SECRET_TEXT) and not _holds(archive, (secret / "scene.tif").read_bytes()[:4096])
    assert "skipped.csv" in archive.namelist()


def test_symlinks_swapped_in_after_import_are_not_followed(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...]
) -> None:
    folder = write_job(roots / "jobs" / "swapped", n_windows=3, n_chips=1, n_bad=0)
    job_id = import_job(db, folder, "test", allowed)
    with db.read() as s:
        items = s.execute(select(Item).where(Item.job_id == job_id).order_by(Item.row_index)).scalars().all()
    scene_item, chip_item = items[0], items[-1]
    rev, _ = _client(live_server, "rev")
    assert rev.get(f"/items/{scene_item.id}/chip.png").status_code == 200
    # 1. a heatmap replaced by a link to the service's secret
    (folder / "explanations").mkdir()
    os.symlink(secret / "service.env", folder / "explanations" / f"{scene_item.row_index}.png")
    r = rev.get(f"/items/{scene_item.id}/heatmap.png")
    assert r.status_code == 403 and SECRET_TEXT not in r.content
    # 2. the chip file replaced by a link to a file outside
    chip = Path(chip_item.path)
    chip.unlink()
    os.symlink(secret / "service.env", chip)
    r = rev.get(f"/items/{chip_item.id}/chip.png")
    assert r.status_code == 403 and SECRET_TEXT not in r.content
    # 3. the inputs folder replaced by a link to a folder holding a scene of the same name
    assert Path(scene_item.path).name == "scene.tif" and (secret / "scene.tif").is_file()
    inputs = folder / "inputs"
    inputs.rename(folder / "inputs-moved")
    os.symlink(secret, inputs)
    for pic in ("chip.png", "overview.png"):
        r = rev.get(f"/items/{scene_item.id}/{pic}")
        assert r.status_code == 403, (pic, r.status_code)
    _decide_all(db, job_id)
    archive, skipped = _export_zip(live_server, job_id)
    assert skipped == 4 and not _holds(archive, SECRET_TEXT)
    assert not _holds(archive, (secret / "scene.tif").read_bytes()[:4096])


def test_a_heatmap_is_never_written_through_a_planted_link(roots: Path, secret: Path,
                                                           allowed: tuple[Path, ...]) -> None:
    job = roots / "jobs" / "w"
    job.mkdir(parents=True)
    os.symlink(secret, job / "explanations")  # the cache folder is a link out
    with pytest.raises(InputRefusedError):
        write_in(job / "explanations", "0.png", b"\x89PNG...", allowed)
    (job / "explanations").unlink()
    (job / "explanations").mkdir()
    os.symlink(secret / "service.env", job / "explanations" / "1.png")  # the file is a link out
    write_in(job / "explanations", "1.png", b"\x89PNG new", allowed)
    assert (secret / "service.env").read_bytes() == SECRET_TEXT, "the link was replaced, not written through"
    assert (job / "explanations" / "1.png").read_bytes() == b"\x89PNG new"


RUNNER = """
import os, sys, pathlib
sys.path.insert(0, {here!r})
from review_helpers import write_job, rewrite_paths
inp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
{body}
"""


def _submit(base: str, roots: Path) -> None:
    (roots / "batch").mkdir()
    write_scene(roots / "batch" / "scene.tif", 64)
    ana, csrf = _client(base, "ana")
    r = ana.post("/jobs", data={"csrf_token": csrf, "root": "0", "path": "batch", "model": "models:/m@champion"})
    assert r.status_code == 200, r.text[:300]


def _runner(body: str) -> Any:
    code = RUNNER.format(here=str(Path(__file__).parent), body=body)

    def command(input_path: str, model: str, out_dir: Path, engine: str) -> list[str]:
        return [sys.executable, "-c", code, input_path, "--out", str(out_dir)]

    return command


def test_a_link_added_to_a_submitted_folder_before_the_worker_runs_is_refused(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    _submit(live_server, roots)
    os.symlink(secret / "scene.tif", roots / "batch" / "evil.tif")  # after the submission was accepted
    ran = tmp_path / "runner-ran"
    assert Worker(db, roots=allowed, command=_runner(f"pathlib.Path({str(ran)!r}).write_text('')")).run_once()
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
    assert job.status == "failed" and "links outside the allowed folders" in (job.error or "")
    assert not ran.exists(), "the runner never saw the folder"


def test_a_link_planted_while_the_runner_runs_is_caught_at_import(
    live_server: str, users: Any, db: Database, roots: Path, secret: Path, allowed: tuple[Path, ...]
) -> None:
    _submit(live_server, roots)
    body = f"""
os.symlink({str(secret / 'scene.tif')!r}, inp / "late.tif")
write_job(out, n_windows=2, n_chips=0, n_bad=0)
rewrite_paths(out, {{1: str(inp / "late.tif")}})
"""
    assert Worker(db, roots=allowed, command=_runner(body)).run_once()
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
        assert s.execute(select(Item)).first() is None
    assert job.status == "failed" and "outside the allowed folders" in (job.error or "")
