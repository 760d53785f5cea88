"""Many reviewers at once against a real server process: no decision lost or doubled.

This checks correctness under concurrency, not speed: every reviewer makes a fixed number
of decisions with no request timeout, so a slow, loaded machine makes it slower, never red.
The speed of the service is measured by ``bench/review_load.py`` (percentiles and ratios).
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import free_port, wait_for
from review_helpers import PASSWORD, SECRET, write_job
from sqlalchemy import func, select

from review import audit
from review.auth.users import add_user
from review.db.engine import Database
from review.db.models import AuditEntry, Decision, Item, User
from review.jobs.importer import import_job

REVIEWERS = 12
DECISIONS_EACH = 6
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


async def _reviewer(base: str, name: str, job_id: int, start: asyncio.Event, errors: list[str]) -> list[int]:
    decided: list[int] = []
    async with httpx.AsyncClient(base_url=base, timeout=None) as client:  # noqa: S113 - no timeout by design
        form = await client.get("/login")
        token = _CSRF_FIELD.search(form.text)
        assert token
        r = await client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token.group(1)},
                              follow_redirects=True)
        meta = _CSRF_META.search(r.text)
        assert meta and meta.group(1), f"login of {name} failed: {r.status_code}"
        headers = {"X-CSRF-Token": meta.group(1)}
        await start.wait()
        item = (await client.post(f"/api/jobs/{job_id}/claim", headers=headers)).json()["item"]
        while item is not None and len(decided) < DECISIONS_EACH:
            chip = await client.get(item["chip_url"])
            if chip.status_code != 200:
                errors.append(f"chip: {chip.status_code}")
            body: dict[str, Any] = {"decision": "accept", "version": item["version"]}
            r = await client.post(f"/api/items/{item['id']}/decision", json=body, headers=headers)
            if r.status_code != 200:
                errors.append(f"decision: {r.status_code} {r.text[:200]}")
                item = (await client.post(f"/api/jobs/{job_id}/claim", headers=headers)).json()["item"]
                continue
            decided.append(item["id"])
            answer = r.json()
            if answer.get("next_error"):
                errors.append(f"next: {answer['next_error']}")
            item = answer["next"]
    return decided


async def _all(base: str, names: list[str], job_id: int, errors: list[str]) -> dict[str, list[int]]:
    start = asyncio.Event()
    tasks = {n: asyncio.create_task(_reviewer(base, n, job_id, start, errors)) for n in names}
    await asyncio.sleep(0)
    start.set()  # sign-ins overlap the first claims: that is fine, nothing here is timed
    return {n: await t for n, t in tasks.items()}


def test_concurrent_reviewers_lose_or_double_no_decision(
    db: Database, roots: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    folder = write_job(roots / "jobs" / "big", n_windows=REVIEWERS * DECISIONS_EACH + 40, n_chips=0, n_bad=0)
    names = [f"rev{i:03d}" for i in range(REVIEWERS)]
    with db.write() as s:
        for n in names:
            add_user(s, n, "reviewer", PASSWORD, actor="test")
    job_id = import_job(db, folder, "test", allowed, classes_of_interest=["AnnualCrop"])
    port = free_port()
    env = dict(os.environ, VISION_REVIEW_SECRET=SECRET, VISION_REVIEW_DB=db.url,
               VISION_REVIEW_DATA=str(tmp_path / "data"), VISION_REVIEW_ROOTS=str(roots))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "review.web.app:app_from_env", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=None).status_code == 200  # noqa: S113
        except httpx.HTTPError:
            return server.poll() is not None

    try:
        assert wait_for(up) and server.poll() is None, server.stdout.read() if server.stdout else ""
        errors: list[str] = []
        decided = asyncio.run(_all(base, names, job_id, errors))
    finally:
        server.terminate()
        server.communicate(timeout=120)
    assert errors == []
    acknowledged = {(name, item) for name, items in decided.items() for item in items}
    assert len(acknowledged) == REVIEWERS * DECISIONS_EACH, "every reviewer made all their decisions"
    with db.read() as s:
        rows = s.execute(select(User.name, Decision.item_id).join(User, User.id == Decision.reviewer_id)).all()
        n_done = s.execute(select(func.count()).select_from(Item).where(Item.status == "done")).scalar_one()
        n_audit = s.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "review.first")
        ).scalar_one()
        assert audit.verify(s).ok
    assert {(n, i) for n, i in rows} == acknowledged, "lost or unacknowledged decisions"
    assert max(collections.Counter(i for _, i in rows).values()) == 1, "an item was decided twice"
    assert n_done == len(acknowledged) == n_audit
