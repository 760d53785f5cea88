"""The review API: 404 for what does not exist, and no decision on an item nobody could see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry, Decision, Item, Job

ABSURD = ["99999999999999999999", "2147483648", "-1", "0", "abc", "1e9", "%20", "１２"]


def test_absurd_ids_are_404_not_500(client_for: Any, job_id: int) -> None:
    rev, csrf = client_for("rev")
    adm, acsrf = client_for("adm")
    h = {"X-CSRF-Token": csrf}
    for bad in ABSURD:
        for r in (
            rev.get(f"/items/{bad}/chip.png"),
            rev.get(f"/items/{bad}/overview.png"),
            rev.get(f"/items/{bad}/heatmap.png"),
            rev.get(f"/items/{bad}"),
            rev.get(f"/jobs/{bad}/review"),
            rev.get(f"/jobs/{bad}"),
            rev.get(f"/api/jobs/{bad}/status"),
            rev.post(f"/api/jobs/{bad}/claim", headers=h),
            rev.post(f"/api/items/{bad}/release", headers=h),
            rev.post(f"/api/items/{bad}/decision", json={"decision": "accept", "version": 0}, headers=h),
            adm.post(f"/items/{bad}/override", data={"csrf_token": acsrf, "decision": "accept", "version": 0}),
        ):
            assert r.status_code == 404, (bad, r.request.url, r.status_code, r.text[:200])


def _first_item(db: Database, job_id: int) -> Item:
    with db.read() as s:
        item = s.execute(select(Item).where(Item.job_id == job_id).order_by(Item.id)).scalars().first()
    assert item is not None
    return item


def _claim(client: Any, csrf: str, job_id: int) -> dict[str, Any]:
    r = client.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()["item"]
    return item


def _no_decision_recorded(db: Database) -> None:
    with db.read() as s:
        assert s.execute(select(Decision)).first() is None
        actions = s.execute(select(AuditEntry.action)).scalars().all()
    assert not [a for a in actions if a.startswith("review.")], actions


def test_a_missing_input_is_404_and_refuses_decisions(client_for: Any, db: Database, job_id: int) -> None:
    with db.read() as s:
        paths = set(s.execute(select(Item.path).where(Item.job_id == job_id)).scalars())
    for p in paths:
        Path(p).unlink()  # the inputs were moved away after the import
    rev, csrf = client_for("rev")
    item = _claim(rev, csrf, job_id)
    for url in filter(None, (item["chip_url"], item["overview_url"])):
        r = rev.get(url)
        assert r.status_code == 404 and "missing" in r.json()["detail"], (url, r.status_code, r.text)
    assert rev.get(f"/items/{item['id']}").status_code == 200, "the item page still opens"
    r = rev.post(f"/api/items/{item['id']}/decision", json={"decision": "accept", "version": item["version"]},
                 headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "no decision recorded" in r.json()["detail"], r.text
    _no_decision_recorded(db)


def test_unreadable_pixels_refuse_decisions_and_overrides(client_for: Any, db: Database, job_id: int) -> None:
    with db.read() as s:
        paths = set(s.execute(select(Item.path).where(Item.job_id == job_id)).scalars())
    for p in paths:
        Path(p).write_bytes(b"II*\x00 a truncated TIFF header, nothing else")
    rev, csrf = client_for("rev")
    item = _claim(rev, csrf, job_id)
    r = rev.get(item["chip_url"])
    assert r.status_code == 404 and "cannot be read" in r.json()["detail"]
    assert "/proc/self/fd" not in r.text
    r = rev.post(f"/api/items/{item['id']}/decision", json={"decision": "reject", "version": item["version"]},
                 headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "cannot be read" in r.json()["detail"]
    _no_decision_recorded(db)
    adm, acsrf = client_for("adm")
    r = adm.post(f"/items/{item['id']}/override", data={"csrf_token": acsrf, "decision": "accept", "version": 0},
                 headers={"Accept": "application/json"})
    assert r.status_code == 422
    _no_decision_recorded(db)


def test_the_page_is_told_why_there_is_no_heatmap(client_for: Any, job_id: int) -> None:
    rev, csrf = client_for("rev")
    item = _claim(rev, csrf, job_id)
    assert item["heatmap_url"] is None
    assert "does not record which model" in item["heatmap_note"]


def test_a_job_still_importing_cannot_be_claimed(client_for: Any, db: Database, job_id: int) -> None:
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status = "importing"
    rev, csrf = client_for("rev")
    r = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and "not ready" in r.json()["detail"]
