"""50 concurrent reviewers against a real server process: no errors, nothing lost or doubled.

The suite runs it for ``VISION_LOAD_SECONDS`` (default 10 s); the acceptance run is 60 s::

    VISION_LOAD_SECONDS=60 python -m pytest tests/review/test_load.py -s
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for
from load_client import run
from review_helpers import PASSWORD, SECRET, write_job
from sqlalchemy import func, select

from review.auth.users import add_user
from review.db.engine import Database
from review.db.models import AuditEntry, Decision, Item, User
from review.jobs.importer import import_job

REVIEWERS = 50


@pytest.mark.slow
def test_fifty_reviewers(db: Database, tmp_path: Path) -> None:
    duration = float(os.environ.get("VISION_LOAD_SECONDS", "10"))
    folder = write_job(tmp_path / "jobs" / "big", n_windows=int(200 * duration) + 2000, n_chips=0, n_bad=0)
    names = [f"rev{i:03d}" for i in range(REVIEWERS)]
    with db.write() as s:
        for n in names:
            add_user(s, n, "reviewer", PASSWORD, actor="test")
        job_id = import_job(s, folder, "test", classes_of_interest=["AnnualCrop"]).id
    port = free_port()
    env = dict(
        os.environ, VISION_REVIEW_SECRET=SECRET, VISION_REVIEW_DB=db.url, VISION_REVIEW_DATA=str(tmp_path / "data")
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "review.web.app:app_from_env",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            # Idle keep-alive connections must outlive the test: uvicorn's default 5 s lets the
            # server close a connection just as the client reuses it ("Server disconnected").
            "--timeout-keep-alive",
            "120",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return server.poll() is not None

    try:
        assert wait_for(up, timeout=60) and server.poll() is None, server.stdout.read() if server.stdout else ""
        summary = asyncio.run(run(base, job_id, names, PASSWORD, duration))
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    decided = summary.pop("decided")
    print("\nload test:", json.dumps(summary, indent=2))
    report = os.environ.get("VISION_TEST_ARTIFACTS")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        (Path(report) / "load-test.json").write_text(json.dumps(summary, indent=2))
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["decisions"] > REVIEWERS
    acknowledged = {(name, item) for name, items in decided.items() for item in items}
    assert len(acknowledged) == summary["decisions"], "an item acknowledged twice to one reviewer"
    with db.read() as s:
        rows = s.execute(select(User.name, Decision.item_id).join(User, User.id == Decision.reviewer_id)).all()
        per_item = collections.Counter(item for _, item in rows)
        n_done = s.execute(select(func.count()).select_from(Item).where(Item.status == "done")).scalar_one()
        n_audit = s.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "review.first")
        ).scalar_one()
    assert {(n, i) for n, i in rows} == acknowledged, "lost or unacknowledged decisions"
    assert max(per_item.values()) == 1, "an item was decided twice"
    assert n_done == len(acknowledged) == n_audit
    from review import audit

    with db.read() as s:
        assert audit.verify(s).ok
