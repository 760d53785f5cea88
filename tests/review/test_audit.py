"""The hash-chained audit log: a real session's log verifies; any edit or deletion is named."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cli_runner import run_cli
from sqlalchemy import select, text

from review import audit
from review.audit import AuditTamperError
from review.db.engine import Database
from review.db.models import AuditEntry


def _session(client_for: Any, job_id: int) -> None:
    """A reviewer signs in, decides three items, signs out; an admin overrides one."""
    rev, csrf = client_for("rev")
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    for decision in ("accept", "reject", "correct"):
        body = {"decision": decision, "version": item["version"], "class_name": "Forest"}
        r = rev.post(f"/api/items/{item['id']}/decision", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        last, item = item, r.json()["next"]
    assert rev.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False).status_code == 303
    adm, acsrf = client_for("adm")
    r = adm.post(
        f"/items/{last['id']}/override",
        data={"csrf_token": acsrf, "decision": "accept", "version": 1, "comment": "looked again"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_verify_passes_on_a_real_session_and_names_an_edited_row(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        actions = [a for (a,) in s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))]
    for expected in ("user.add", "job.import", "login", "review.first", "logout", "review.override"):
        assert expected in actions
    code, out = run_cli("review", "audit", "verify", "--db", db.url)
    assert code == 0 and f"intact: {len(actions)} rows" in out, out
    target = actions.index("review.first") + 1
    with db.engine.begin() as c:  # tamper behind the application's back
        c.execute(text("UPDATE audit_log SET after = :a WHERE seq = :s"), {"a": '{"class":"Forest"}', "s": target})
    code, out = run_cli("review", "audit", "verify", "--db", db.url)
    assert code == 1
    assert f"row {target}" in out and "edited" in out, out


@pytest.mark.parametrize("where", ["middle", "last"])
def test_verify_names_a_deleted_row(client_for: Any, job_id: int, db: Database, where: str) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        n = s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc())).scalars().first()
    assert n is not None
    seq = 3 if where == "middle" else n
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": seq})
    with db.read() as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_seq == seq, result


def test_the_application_cannot_change_or_delete_audit_rows(db: Database, users: dict[str, str]) -> None:
    with pytest.raises(AuditTamperError), db.write() as s:
        row = s.execute(select(AuditEntry).limit(1)).scalar_one()
        row.actor = "someone else"
    with pytest.raises(AuditTamperError), db.write() as s:
        s.delete(s.execute(select(AuditEntry).limit(1)).scalar_one())
    from sqlalchemy import delete, update

    with pytest.raises(AuditTamperError), db.write() as s:
        s.execute(update(AuditEntry).values(actor="x"))
    with pytest.raises(AuditTamperError), db.write() as s:
        s.execute(delete(AuditEntry))
    with db.read() as s:
        assert audit.verify(s).ok


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    def worker(k: int) -> None:
        for i in range(15):
            with db.write() as s:
                audit.append(s, f"t{k}", "test", f"n:{i}", None, {"i": i}, "r")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as s:
        result = audit.verify(s)
    assert result.ok and result.rows == 90, result
