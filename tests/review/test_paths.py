"""Job submission only reaches paths inside the allow-listed root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from review.db.engine import Database
from review.db.models import Job
from review.jobs.paths import PathRefusedError, resolve_under


@pytest.fixture
def tree(tmp_path: Path, roots: Path) -> Path:
    (roots / "batch").mkdir()
    (roots / "batch" / "a.tif").write_bytes(b"x")
    (roots / "model.onnx").write_bytes(b"onnx")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "data.tif").write_bytes(b"x")
    os.symlink(outside, roots / "escape")
    os.symlink(outside / "data.tif", roots / "escape.tif")
    (roots / "sneaky").mkdir()
    os.symlink(outside / "data.tif", roots / "sneaky" / "inner.tif")
    os.symlink(roots / "batch", roots / "inside-link")
    return roots


ATTACKS = [
    "../secret",
    "batch/../../secret",
    "..",
    "/etc",
    "/etc/passwd",
    "escape",
    "escape/data.tif",
    "escape.tif",
    "sneaky",
    "..%2Fsecret",
    "%2e%2e/secret",
    "%2e%2e%2fsecret",
    "%252e%252e%252fsecret",
    "..\\secret",
    "batch/%00",
    "~/secret",
    "",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_resolve_refuses(tree: Path, attack: str) -> None:
    with pytest.raises(PathRefusedError):
        resolve_under(tree, attack)


def test_resolve_accepts_paths_inside(tree: Path) -> None:
    assert resolve_under(tree, "batch") == (tree / "batch").resolve()
    assert resolve_under(tree, "batch/a.tif") == (tree / "batch" / "a.tif").resolve()
    assert resolve_under(tree, "inside-link") == (tree / "batch").resolve()


@pytest.mark.parametrize("attack", ATTACKS + ["batch/../../secret/data.tif"])
def test_web_submission_refuses_traversal(client_for: Any, users: Any, tree: Path, db: Database, attack: str) -> None:
    ana, csrf = client_for("ana")
    for action, extra in (("/jobs", {"model": "models:/landcover@champion"}), ("/jobs/import", {})):
        r = ana.post(action, data={"csrf_token": csrf, "root": "0", "path": attack, **extra}, follow_redirects=False)
        assert r.status_code in (400, 422), (action, attack, r.status_code)
    for model in ("../secret/data.tif", "/etc/passwd", "escape.tif", "models:/../x"):
        r = ana.post(
            "/jobs", data={"csrf_token": csrf, "root": "0", "path": "batch", "model": model}, follow_redirects=False
        )
        assert r.status_code == 400, model
    r = ana.post("/jobs", data={"csrf_token": csrf, "root": "7", "path": "batch", "model": "models:/m@a"})
    assert r.status_code == 400
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_web_submission_inside_the_root_is_queued(client_for: Any, users: Any, tree: Path, db: Database) -> None:
    ana, csrf = client_for("ana")
    r = ana.post(
        "/jobs",
        data={
            "csrf_token": csrf,
            "root": "0",
            "path": "batch",
            "model": "model.onnx",
            "classes_of_interest": "AnnualCrop",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
    assert job.status == "queued" and job.input_path == str((tree / "batch").resolve())
    assert job.model == str((tree / "model.onnx").resolve())
