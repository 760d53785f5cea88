"""Undo of one's own last decision: appended (never deleted), within the claim window, four
eyes kept right, and ``vision review audit verify`` still passes after a session with undos."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cli_runner import run_cli
from sqlalchemy import select, text

from review.db.engine import Database
from review.db.models import DONE, PENDING, SECOND, AuditEntry, Decision, Item, Job, User, utcnow
from review.jobs.importer import set_classes_of_interest
from review.queue import DecisionConflictError, DecisionInput, claim_next, decide
from review.undo import NothingToUndoError, undo_last


def _user(db: Database, name: str) -> User:
    with db.read() as s:
        return s.execute(select(User).where(User.name == name)).scalar_one()


def _verify(db: Database) -> tuple[int, str]:
    return run_cli("review", "audit", "verify", "--db", db.url)


def _post(client: Any, csrf: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json=body or {}, headers={"X-CSRF-Token": csrf})


def _four_eyes(db: Database, job_id: int) -> None:
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        set_classes_of_interest(s, job, ["AnnualCrop"], four_eyes=True)


def test_a_session_with_undos_still_verifies(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    first = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    r = _post(rev, csrf, f"/api/items/{first['id']}/decision", {"decision": "accept", "version": first["version"]})
    second = r.json()["next"]
    r = _post(rev, csrf, f"/api/items/{second['id']}/decision",
              {"decision": "correct", "class_name": "River", "version": second["version"], "comment": "a river"})
    third = r.json()["next"]
    assert r.json()["left"] == 50
    # U: the correction is taken back, the item comes back to its reviewer (and the third goes back)
    r = _post(rev, csrf, f"/api/jobs/{job_id}/undo")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"]["id"] == second["id"] and body["undone"] == "correct → River" and body["left"] == 51
    with db.read() as s:
        item = s.get(Item, second["id"])
        assert item is not None
        assert (item.status, item.final_decision, item.final_class, item.decided_by, item.first_reviewer_id) == (
            PENDING, None, None, None, None)
        assert item.claimed_by == _user(db, "rev").id and item.version == 2
        assert s.get(Item, third["id"]).claimed_by is None  # type: ignore[union-attr]
        rows = s.execute(select(Decision).where(Decision.item_id == second["id"]).order_by(Decision.id)).scalars().all()
    assert [(d.kind, d.decision, d.class_name, d.item_version) for d in rows] == [
        ("first", "correct", "River", 0), ("undo", "undo", None, 1)], "appended, nothing deleted or edited"
    assert _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]["id"] == second["id"]
    code, out = _verify(db)
    assert code == 0 and "intact" in out, out
    # decided again, undone again, decided a third time: still consistent
    url = f"/api/items/{second['id']}/decision"
    assert _post(rev, csrf, url, {"decision": "reject", "version": 2}).status_code == 200
    assert _post(rev, csrf, f"/api/jobs/{job_id}/undo").json()["item"]["version"] == 4
    assert _post(rev, csrf, url, {"decision": "accept", "version": 4}).status_code == 200
    with db.read() as s:
        done = s.get(Item, second["id"])
        assert done is not None and (done.status, done.final_decision) == (DONE, "accept")
        actions = s.execute(select(AuditEntry.action).where(AuditEntry.target == f"item:{second['id']}")).scalars()
        assert list(actions) == ["review.first", "review.undo", "review.first", "review.undo", "review.first"]
    code, out = _verify(db)
    assert code == 0 and "intact" in out, out
    page = rev.get(f"/items/{second['id']}")
    assert "undo" in page.text and "took back" in page.text


def test_only_ones_own_last_decision_once_and_in_time(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    rev2, csrf2 = client_for("rev2")
    r = _post(rev, csrf, f"/api/jobs/{job_id}/undo")
    assert r.status_code == 409 and "no decision" in r.json()["detail"]
    item = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    _post(rev, csrf, f"/api/items/{item['id']}/decision", {"decision": "accept", "version": 0, "next": False})
    r = _post(rev2, csrf2, f"/api/jobs/{job_id}/undo")
    assert r.status_code == 409 and "no decision" in r.json()["detail"], "nobody undoes someone else's"
    assert _post(rev, csrf, f"/api/jobs/{job_id}/undo").status_code == 200
    r = _post(rev, csrf, f"/api/jobs/{job_id}/undo")
    assert r.status_code == 409 and "undone already" in r.json()["detail"]
    # too late: the claim window has passed since the decision
    user = _user(db, "rev")
    now = utcnow()
    with db.write() as s:
        decide(s, item["id"], user, DecisionInput("reject", None, None, 2), now, "t")
    with pytest.raises(NothingToUndoError, match="too late"), db.write() as s:
        undo_last(s, job_id, user, now + timedelta(seconds=301), 300, "t")
    # an admin overrode it since: not undone
    with db.write() as s:
        decide(s, item["id"], _user(db, "adm"), DecisionInput("accept", None, "no", 3), now, "t", override=True)
    with pytest.raises(DecisionConflictError, match="reviewed again"), db.write() as s:
        undo_last(s, job_id, user, now, 300, "t")
    code, out = _verify(db)
    assert code == 0, out


def test_undoing_a_first_review_that_went_to_second_review(job_id: int, db: Database) -> None:
    _four_eyes(db, job_id)
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    now = utcnow()
    with db.write() as s:
        item = claim_next(s, job_id, rev, now, 300)
        assert item is not None and item.interest
        decide(s, item.id, rev, DecisionInput("accept", None, None, 0), now, "t")
        assert s.get(Item, item.id).status == SECOND  # type: ignore[union-attr]
    # nobody holds it: back to pending, no first reviewer, and its reviewer may review it again
    with db.write() as s:
        done = undo_last(s, job_id, rev, now, 300, "t")
        assert done.item.id == item.id
    with db.read() as s:
        back = s.get(Item, item.id)
        assert back is not None and (back.status, back.first_reviewer_id, back.final_decision) == (PENDING, None, None)
    with db.write() as s:
        again = claim_next(s, job_id, rev, now, 300)
        assert again is not None and again.id == item.id
        decide(s, item.id, rev, DecisionInput("accept", None, None, again.version), now, "t")
    # a second reviewer holds it for its second look: refused, and their look is not disturbed
    with db.write() as s:
        held = claim_next(s, job_id, rev2, now, 300)
        assert held is not None and held.id == item.id
    with pytest.raises(DecisionConflictError, match="second look"), db.write() as s:
        undo_last(s, job_id, rev, now, 300, "t")
    with db.write() as s:
        decide(s, item.id, rev2, DecisionInput("correct", "Forest", None, held.version), now, "t")
    with pytest.raises(DecisionConflictError, match="reviewed again"), db.write() as s:
        undo_last(s, job_id, rev, now, 300, "t")
    # the second reviewer undoes theirs: back to second review, the first review as it was
    with db.write() as s:
        undo_last(s, job_id, rev2, now, 300, "t")
    with db.read() as s:
        back = s.get(Item, item.id)
        assert back is not None
        assert (back.status, back.final_decision, back.final_class, back.decided_by, back.first_reviewer_id) == (
            SECOND, "accept", "AnnualCrop", rev.id, rev.id)
        assert back.claimed_by == rev2.id
    with db.write() as s:
        decide(s, item.id, rev2, DecisionInput("accept", None, None, back.version), now, "t")
    code, out = _verify(db)
    assert code == 0 and "intact" in out, out


def test_an_expired_second_look_does_not_block_an_undo(job_id: int, db: Database) -> None:
    _four_eyes(db, job_id)
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    now = utcnow()
    with db.write() as s:
        item = claim_next(s, job_id, rev, now, 300)
        assert item is not None
        decide(s, item.id, rev, DecisionInput("accept", None, None, 0), now, "t")
    with db.write() as s:
        assert claim_next(s, job_id, rev2, now, 30) is not None  # and then walked away
    with db.write() as s:
        undo_last(s, job_id, rev, now + timedelta(seconds=60), 300, "t")
    with db.read() as s:
        assert s.get(Item, item.id).status == PENDING  # type: ignore[union-attr]


def test_an_undo_changed_behind_the_services_back_is_named(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    _post(rev, csrf, f"/api/items/{item['id']}/decision", {"decision": "accept", "version": 0, "next": False})
    assert _post(rev, csrf, f"/api/jobs/{job_id}/undo").status_code == 200
    assert _verify(db)[0] == 0
    with db.engine.begin() as c:  # put the accept back without the service: the undo row says otherwise
        c.execute(text("UPDATE items SET status='done', final_decision='accept' WHERE id=:i"), {"i": item["id"]})
    code, out = _verify(db)
    assert code == 1 and f"item {item['id']}: status" in out, out
    with db.engine.begin() as c:
        c.execute(text("UPDATE items SET status='pending', final_decision=NULL WHERE id=:i"), {"i": item["id"]})
        c.execute(text("DELETE FROM decisions WHERE kind='undo'"))
    code, out = _verify(db)
    assert code == 1 and "undo decision" in out and "deleted" in out, out
