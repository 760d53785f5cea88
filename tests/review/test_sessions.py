"""Sessions end when credentials or rights change: new password, disable/enable, role change.

Both ways of changing a person (``vision users set`` and the web admin page) must revoke
every session of that person, and only theirs.
"""

from __future__ import annotations

from typing import Any

import pytest
from cli_runner import run_cli
from fastapi.testclient import TestClient
from review_helpers import login
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry, LoginSession, User

NEW_PASSWORD = "a-brand-new-passphrase-42"


def _works(client: TestClient) -> bool:
    r = client.get("/api/jobs/1/status")
    assert r.status_code in (200, 401, 404), r.text
    return r.status_code != 401


def _user_id(db: Database, name: str) -> int:
    with db.read() as s:
        return int(s.execute(select(User.id).where(User.name == name)).scalar_one())


@pytest.mark.parametrize(
    "change",
    [
        ("--password-stdin",),
        ("--disable",),
        ("--role", "analyst"),
    ],
)
def test_users_set_revokes_the_sessions_of_that_user(
    client_for: Any, db: Database, job_id: int, change: tuple[str, ...]
) -> None:
    first, _ = client_for("rev")
    second, _ = client_for("rev")  # another browser of the same person
    other, _ = client_for("rev2")
    assert _works(first) and _works(second) and _works(other)
    code, out = run_cli("users", "set", "rev", *change, "--db", db.url, input=NEW_PASSWORD + "\n")
    assert code == 0, out
    assert not _works(first) and not _works(second), "the old sessions outlived the change"
    assert _works(other), "someone else's session was revoked"
    with db.read() as s:
        row = s.execute(
            select(AuditEntry).where(AuditEntry.target == "user:rev").order_by(AuditEntry.seq.desc()).limit(1)
        ).scalar_one()
    assert '"sessions_revoked":2' in row.after


def test_disable_then_enable_does_not_bring_old_sessions_back(client_for: Any, db: Database, job_id: int) -> None:
    rev, _ = client_for("rev")
    assert _works(rev)
    assert run_cli("users", "set", "rev", "--disable", "--db", db.url)[0] == 0
    assert run_cli("users", "set", "rev", "--enable", "--db", db.url)[0] == 0
    assert not _works(rev)
    again, _ = client_for("rev")  # signing in again works
    assert _works(again)


def test_unlock_keeps_sessions(client_for: Any, db: Database, job_id: int) -> None:
    rev, _ = client_for("rev")
    assert run_cli("users", "set", "rev", "--unlock", "--db", db.url)[0] == 0
    assert _works(rev)


def test_a_new_password_is_needed_after_a_change(
    client_for: Any, app_client: TestClient, db: Database, job_id: int
) -> None:
    rev, _ = client_for("rev")
    assert run_cli("users", "set", "rev", "--password-stdin", "--db", db.url, input=NEW_PASSWORD + "\n")[0] == 0
    assert not _works(rev)
    login(app_client, "rev", NEW_PASSWORD)
    assert _works(app_client)


@pytest.mark.parametrize(
    "form",
    [
        [{"active": "no"}, {"active": "yes"}],
        [{"role": "analyst"}],
    ],
)
def test_the_web_admin_page_revokes_sessions_too(
    client_for: Any, db: Database, job_id: int, form: list[dict[str, str]]
) -> None:
    rev, _ = client_for("rev")
    other, _ = client_for("rev2")
    adm, csrf = client_for("adm")
    uid = _user_id(db, "rev")
    for fields in form:
        r = adm.post(f"/admin/users/{uid}", data={"csrf_token": csrf, **fields}, follow_redirects=False)
        assert r.status_code == 303, r.text
    assert not _works(rev)
    assert _works(other) and _works(adm)
    with db.read() as s:
        live = s.execute(
            select(LoginSession).where(LoginSession.user_id == uid, LoginSession.revoked_at.is_(None))
        ).all()
    assert live == []
