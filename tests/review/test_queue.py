"""The review queue: order, exclusive claims, conflicts detected, four eyes."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyproj import Transformer
from sqlalchemy import func, select

from review.db.engine import Database
from review.db.models import DONE, SECOND, Decision, Item, Job, User, utcnow
from review.jobs.importer import set_classes_of_interest
from review.queue import DecisionConflictError, DecisionInput, InvalidDecisionError, Left, claim_next, decide, remaining


def _user(db: Database, name: str) -> User:
    with db.read() as s:
        return s.execute(select(User).where(User.name == name)).scalar_one()


def test_order_is_interest_first_then_lowest_confidence(db: Database, job_id: int) -> None:
    rev = _user(db, "rev")
    seen = []
    for _ in range(52):
        with db.write() as s:
            item = claim_next(s, job_id, rev, utcnow(), 300)
            assert item is not None
            seen.append((item.interest, item.confidence))
            decide(s, item.id, rev, DecisionInput("accept", None, None, item.version), utcnow(), "t")
    with db.write() as s:
        assert claim_next(s, job_id, rev, utcnow(), 300) is None
    interest = [c for i, c in seen if i]
    rest = [c for i, c in seen if not i]
    assert interest, "the fixture has AnnualCrop predictions"
    assert seen[: len(interest)] == [(True, c) for c in interest]
    assert interest == sorted(interest) and rest == sorted(rest)


def test_two_reviewers_never_hold_the_same_item(db: Database, job_id: int) -> None:
    people = [_user(db, n) for n in ("rev", "rev2", "adm")]
    got: dict[int, list[int]] = {u.id: [] for u in people}
    barrier = threading.Barrier(len(people))

    def run(u: User) -> None:
        barrier.wait()
        for _ in range(10):
            with db.write() as s:
                item = claim_next(s, job_id, u, utcnow(), 300)
                assert item is not None
                got[u.id].append(item.id)
                decide(s, item.id, u, DecisionInput("reject", None, None, item.version), utcnow(), "t")

    threads = [threading.Thread(target=run, args=(u,)) for u in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for ids in got.values() for i in ids]
    assert len(all_ids) == 30 and len(set(all_ids)) == 30
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Decision)).scalar_one() == 30


def test_claims_expire_and_are_exclusive_until_then(db: Database, job_id: int) -> None:
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    now = utcnow()
    with db.write() as s:
        a = claim_next(s, job_id, rev, now, 60)
        b = claim_next(s, job_id, rev2, now, 60)
        assert a and b and a.id != b.id
        again = claim_next(s, job_id, rev, now, 60)
        assert again is not None and again.id == a.id, "a reload gives back the held item"
    with db.write() as s:  # after expiry the first item is offered again
        c = claim_next(s, job_id, rev2, now + timedelta(seconds=120), 60)
        assert c is not None and c.id == a.id


def test_a_concurrent_decision_is_detected_not_lost(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    adm, acsrf = client_for("adm")
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    r = rev.post(
        f"/api/items/{item['id']}/decision",
        json={"decision": "accept", "version": item["version"], "next": False},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200
    # someone who loaded the same version before it was decided
    r2 = adm.post(
        f"/api/items/{item['id']}/decision",
        json={"decision": "correct", "class_name": "Forest", "version": item["version"]},
        headers={"X-CSRF-Token": acsrf},
    )
    assert r2.status_code == 409 and "changed since you opened it" in r2.json()["detail"]
    with db.read() as s:
        decisions = s.execute(select(Decision).where(Decision.item_id == item["id"])).scalars().all()
        it = s.get(Item, item["id"])
    assert [d.decision for d in decisions] == ["accept"]
    assert it is not None and it.final_decision == "accept" and it.status == DONE


def test_decisions_on_an_item_held_by_someone_else_are_refused(db: Database, job_id: int) -> None:
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    with db.write() as s:
        item = claim_next(s, job_id, rev, utcnow(), 300)
        assert item is not None
    with pytest.raises(DecisionConflictError), db.write() as s:
        decide(s, item.id, rev2, DecisionInput("accept", None, None, item.version), utcnow(), "t")


def test_bad_decisions_are_refused(db: Database, job_id: int) -> None:
    rev = _user(db, "rev")
    with db.write() as s:
        item = claim_next(s, job_id, rev, utcnow(), 300)
        assert item is not None
    for given in (
        DecisionInput("maybe", None, None, 0),
        DecisionInput("correct", None, None, 0),
        DecisionInput("correct", "NotAClass", None, 0),
    ):
        with pytest.raises(InvalidDecisionError), db.write() as s:
            decide(s, item.id, rev, given, utcnow(), "t")


def test_four_eyes_for_positives_of_classes_of_interest(db: Database, job_id: int) -> None:
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        set_classes_of_interest(s, job, ["AnnualCrop", "Forest"], four_eyes=True)
    with db.write() as s:
        item = claim_next(s, job_id, rev, utcnow(), 300)
        assert item is not None and item.interest
        decide(s, item.id, rev, DecisionInput("accept", None, None, item.version), utcnow(), "t")
        assert s.get(Item, item.id).status == SECOND  # type: ignore[union-attr]
    with db.write() as s:  # the first reviewer is not offered it again
        other = claim_next(s, job_id, rev, utcnow(), 300)
        assert other is not None and other.id != item.id
        s.execute(Item.__table__.update().where(Item.id == other.id).values(claimed_by=None))
    with pytest.raises(InvalidDecisionError), db.write() as s:
        decide(s, item.id, rev, DecisionInput("accept", None, None, 1), utcnow(), "t")
    with db.write() as s:
        second = claim_next(s, job_id, rev2, utcnow(), 300)
        assert second is not None and second.id == item.id, "second looks come first"
        decide(s, item.id, rev2, DecisionInput("accept", None, None, second.version), utcnow(), "t")
    with db.read() as s:
        done = s.get(Item, item.id)
        kinds = (
            s.execute(select(Decision.kind).where(Decision.item_id == item.id).order_by(Decision.id)).scalars().all()
        )
    assert done is not None and done.status == DONE and kinds == ["first", "second"]
    # a correction away from the classes of interest needs no second look
    with db.write() as s:
        nxt = claim_next(s, job_id, rev, utcnow(), 300)
        assert nxt is not None
        decide(s, nxt.id, rev, DecisionInput("correct", "River", None, nxt.version), utcnow(), "t")
        assert s.get(Item, nxt.id).status == DONE  # type: ignore[union-attr]


def test_review_page_api_shows_what_a_reviewer_needs(client_for: Any, job_id: int) -> None:
    rev, csrf = client_for("rev")
    page = rev.get(f"/jobs/{job_id}/review")
    assert page.status_code == 200 and "review.js" in page.text
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    assert len(item["top3"]) == 3 and item["top3"][0]["class_name"] == item["class_name"]
    assert item["crs"] == "EPSG:32632" and len(item["bounds"]) == 4 and item["window"]["width"] == 32
    assert item["bands"] == ["B02", "B03", "B04", "B08"] and item["natural_bands"] == [3, 2, 1]
    b = item["bounds"]
    lon, lat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform((b[0] + b[2]) / 2,
                                                                                        (b[1] + b[3]) / 2)
    assert [item["wgs84"]["lon"], item["wgs84"]["lat"]] == pytest.approx([lon, lat], abs=1e-9)
    assert 8.9 < item["wgs84"]["bounds"][0] < lon < item["wgs84"]["bounds"][2] < 9.1
    chip = rev.get(item["chip_url"])
    assert chip.status_code == 200 and chip.content[:4] == b"\x89PNG"
    assert rev.get(item["chip_url"] + "?bands=4,3,2").status_code == 200
    assert rev.get(item["chip_url"] + "?bands=9,3,2").status_code == 400
    assert rev.get(item["overview_url"]).content[:4] == b"\x89PNG"
    assert item["heatmap_url"] is None
    job = rev.get(f"/jobs/{job_id}")
    assert "Model vs reviewers" in job.text
    status = rev.get(f"/api/jobs/{job_id}/status").json()
    assert status["status"] == "ready" and status["counts"]["pending"] == 52
    assert json.loads(json.dumps(status))


def test_agreement_is_model_precision_per_class(client_for: Any, job_id: int) -> None:
    rev, csrf = client_for("rev")
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    first_class = item["class_name"]
    other = next(c for c in item["classes"] if c != first_class)
    decisions = [("accept", None), ("correct", other)]
    for decision, cls in decisions:
        r = rev.post(
            f"/api/items/{item['id']}/decision",
            json={"decision": decision, "class_name": cls, "version": item["version"]},
            headers={"X-CSRF-Token": csrf},
        )
        item = r.json()["next"]
    from review.queue import agreement

    db = rev.app.state.services.db  # type: ignore[attr-defined]
    with db.read() as s:
        rows = {a.class_name: a for a in agreement(s, job_id)}
    total = sum(a.reviewed for a in rows.values())
    agreed = sum(a.agreed for a in rows.values())
    assert total == 2 and agreed == 1


def test_a_skipped_item_is_not_offered_again_to_that_reviewer(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    rev2, csrf2 = client_for("rev2")
    h = {"X-CSRF-Token": csrf}
    head = rev.post(f"/api/jobs/{job_id}/claim", headers=h).json()["item"]
    r = rev.post(f"/api/items/{head['id']}/skip", json={"skip": []}, headers=h)
    assert r.status_code == 200, r.text
    nxt = r.json()["item"]
    assert nxt["id"] != head["id"] and r.json()["left"] == 51
    with db.read() as s:
        assert s.get(Item, head["id"]).claimed_by is None  # type: ignore[union-attr]
    # neither the next claim nor the claim after a decision gives it back to them
    skip = [head["id"]]
    again = rev.post(f"/api/jobs/{job_id}/claim", json={"skip": skip}, headers=h).json()["item"]
    assert again["id"] == nxt["id"]
    r = rev.post(f"/api/items/{nxt['id']}/decision", json={"decision": "accept", "version": 0, "skip": skip}, headers=h)
    assert r.json()["next"]["id"] != head["id"] and r.json()["left"] == 50
    # another reviewer still gets it first: it is the head of the queue
    other = rev2.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf2}).json()["item"]
    assert other["id"] == head["id"]
    too_many = rev.post(f"/api/jobs/{job_id}/claim", json={"skip": list(range(1, 1002))}, headers=h)
    assert too_many.status_code == 422


def test_skip_works_on_an_item_whose_picture_cannot_be_read(client_for: Any, job_id: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    h = {"X-CSRF-Token": csrf}
    head = rev.post(f"/api/jobs/{job_id}/claim", headers=h).json()["item"]
    with db.read() as s:
        path = s.get(Item, head["id"]).path  # type: ignore[union-attr]
    Path(path).write_bytes(b"II*\x00 not a TIFF any more")
    r = rev.post(f"/api/items/{head['id']}/decision", json={"decision": "accept", "version": 0}, headers=h)
    assert r.status_code == 422
    r = rev.post(f"/api/items/{head['id']}/skip", headers=h)
    assert r.status_code == 200 and r.json()["item"]["id"] != head["id"]


def test_left_counts_what_this_reviewer_may_still_take(db: Database, job_id: int) -> None:
    rev, rev2 = _user(db, "rev"), _user(db, "rev2")
    with db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        set_classes_of_interest(s, job, ["AnnualCrop"], four_eyes=True)
    now = utcnow()
    with db.write() as s:
        assert remaining(s, job_id, rev, now).count == 52
        mine = claim_next(s, job_id, rev, now, 300)
        theirs = claim_next(s, job_id, rev2, now, 300)
        assert mine is not None and theirs is not None and mine.interest
        assert remaining(s, job_id, rev, now).count == 51, "what someone else holds is not left for me"
        assert remaining(s, job_id, rev, now, exclude=[mine.id]).count == 50
        decide(s, mine.id, rev, DecisionInput("accept", None, None, 0), now, "t")  # goes to second review
        assert remaining(s, job_id, rev, now).count == 50, "my own first review is not mine to second"
        assert remaining(s, job_id, rev2, now).count == 52, "the second look is theirs to give (and they hold one)"
        assert remaining(s, job_id, rev, now + timedelta(seconds=301)).count == 51, "an expired claim is free again"
        assert remaining(s, job_id, rev, now, cap=10) == Left(10, more=True)
        assert remaining(s, job_id, rev, now, cap=50) == Left(50, more=False)


def test_a_big_queue_says_at_least_how_many_are_left(
    client_for: Any, job_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import review.queue

    monkeypatch.setattr(review.queue, "LEFT_CAP", 20)  # the count stops there, so it stays cheap
    rev, csrf = client_for("rev")
    answer = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()
    assert (answer["left"], answer["more_left"]) == (20, True)
