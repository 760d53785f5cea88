"""Sign-in, sessions, lockout, password rules and the refusal to start unsafely."""

from __future__ import annotations

from typing import Any

import pytest
from cli_runner import run_cli
from fastapi.testclient import TestClient
from review_helpers import PASSWORD, login
from sqlalchemy import select

from review.auth import passwords
from review.auth.users import add_user
from review.db.engine import Database
from review.db.models import AuditEntry, LoginSession, User, utcnow
from review.service import preflight
from review.settings import ReviewSettings, check_secret
from vision.errors import ConfigError


def test_session_cookie_is_signed_httponly_samesite(app_client: TestClient, users: dict[str, str]) -> None:
    r = app_client.get("/login")
    assert "httponly" in r.headers["set-cookie"].lower()
    token = r.text.split('name="csrf_token" value="')[1].split('"')[0]
    r = app_client.post(
        "/login", data={"username": "rev", "password": PASSWORD, "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("vision_review_session=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # a forged (unsigned) cookie is nobody
    app_client.cookies.set("vision_review_session", "forged")
    assert app_client.get("/api/jobs/1/status").status_code == 401


def test_logout_ends_the_session_server_side(settings: ReviewSettings, db: Database, users: dict[str, str]) -> None:
    from review.web.app import create_app

    with TestClient(create_app(settings, db)) as c:
        csrf = login(c, "rev")
        stolen = c.cookies.get("vision_review_session")
        assert c.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False).status_code == 303
    with TestClient(create_app(settings, db)) as thief:
        thief.cookies.set("vision_review_session", stolen or "")
        assert thief.get("/api/jobs/1/status").status_code == 401
    with db.read() as s:
        assert s.execute(select(LoginSession.revoked_at)).scalar_one() is not None


def test_lockout_after_repeated_failures(app_client: TestClient, db: Database, users: dict[str, str]) -> None:
    def attempt(password: str) -> int:
        page = app_client.get("/login").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        r = app_client.post(
            "/login", data={"username": "rev", "password": password, "csrf_token": token}, follow_redirects=False
        )
        return r.status_code

    for _ in range(5):
        assert attempt("wrong-password-123") == 401
    assert attempt(PASSWORD) == 401, "locked: even the right password is refused"
    with db.read() as s:
        user = s.execute(select(User).where(User.name == "rev")).scalar_one()
        actions = s.execute(select(AuditEntry.action).where(AuditEntry.target == "user:rev")).scalars().all()
    assert user.locked_until is not None and user.locked_until > utcnow()
    assert actions.count("login.failed") == 4 and "login.locked" in actions and "login.refused" in actions
    code, out = run_cli("users", "set", "rev", "--unlock", "--db", db.url)
    assert code == 0, out
    assert attempt(PASSWORD) == 303


@pytest.mark.parametrize("password", ["admin", "password", "changeme", "Password", "admin123", "short"])
def test_default_and_weak_passwords_are_refused(db: Database, password: str) -> None:
    code, out = run_cli(
        "users", "add", "boss", "--role", "admin", "--password-stdin", "--db", db.url, input=password + "\n"
    )
    assert code == 2 and "password" in out
    with db.read() as s:
        assert s.execute(select(User)).first() is None


def test_users_add_prompts_and_hashes(db: Database) -> None:
    code, out = run_cli("users", "list", "--db", db.url)  # nobody yet: say so, and how to start
    assert code == 0 and "no users yet" in out and "vision users add NAME --role admin" in out, out
    code, out = run_cli("users", "add", "boss", "--role", "admin", "--db", db.url, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, out
    with db.read() as s:
        user = s.execute(select(User)).scalar_one()
    assert user.role == "admin" and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    code, out = run_cli("users", "list", "--db", db.url)
    assert "boss\tadmin\tactive" in out


@pytest.mark.parametrize("secret", ["", "changeme", "short-secret", "a" * 64])
def test_weak_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigError):
        check_secret(secret)


def test_serve_refuses_without_a_secret(monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
    monkeypatch.delenv("VISION_REVIEW_SECRET", raising=False)
    code, out = run_cli("review", "serve", "--db", db.url, "--no-worker")
    assert code == 2 and "VISION_REVIEW_SECRET" in out


def test_serve_refuses_an_admin_with_a_default_password(settings: ReviewSettings, db: Database) -> None:
    with db.write() as s:  # as if created by hand, bypassing `vision users add`
        s.add(
            User(
                name="root",
                role="admin",
                password_hash=passwords.hash_password("changeme"),
                active=True,
                failed_logins=0,
                created_at=utcnow(),
            )
        )
    with pytest.raises(ConfigError, match="default password"):
        preflight(settings, db)


def test_admin_manages_people_on_the_web(client_for: Any, db: Database, users: dict[str, str]) -> None:
    adm, csrf = client_for("adm")
    with db.read() as s:
        rev2 = s.execute(select(User).where(User.name == "rev2")).scalar_one()
    r = adm.post(
        f"/admin/users/{rev2.id}", data={"csrf_token": csrf, "role": "analyst", "active": "no"}, follow_redirects=False
    )
    assert r.status_code == 303
    r = adm.post("/admin/users", data={"csrf_token": csrf, "name": "x1", "role": "reviewer", "password": "password"})
    assert r.status_code == 400
    with db.read() as s:
        changed = s.get(User, rev2.id)
        audit_rows = s.execute(select(AuditEntry).where(AuditEntry.target == "user:rev2")).scalars().all()
    assert changed is not None and changed.role == "analyst" and not changed.active
    assert audit_rows[-1].action == "user.update" and '"role":"reviewer"' in audit_rows[-1].before
    with db.write() as s:
        add_user(s, "x2", "reviewer", PASSWORD, actor="test")


WEAK = [
    "aaaaaaaaaa",  # the example: short, one character
    "aaaaaaaaaaaaaaaaaaaa",  # long but one character
    "abcdefgh12345678",  # runs
    "Password2024!",  # a common password with decoration
    "P@ssw0rd-2024",  # the same in leetspeak
    "Summer2024!x",  # a common word with a few characters around it
    "lowercaseonly",  # 13 characters of one kind
    "boss-the-great-one",  # contains the user name
]


@pytest.mark.parametrize("password", WEAK)
def test_weak_passwords_are_refused_saying_what_is_required(db: Database, password: str) -> None:
    code, out = run_cli(
        "users", "add", "boss", "--role", "admin", "--password-stdin", "--db", db.url, input=password + "\n"
    )
    assert code == 2 and "password refused" in out and "Required: at least 12 characters" in out, out
    with db.read() as s:
        assert s.execute(select(User)).first() is None


@pytest.mark.parametrize("password", ["correct-horse-battery-staple", "Kx9#mQ2vL7pz", "Tr0ub4dor&3x-later"])
def test_strong_passwords_are_accepted(db: Database, password: str) -> None:
    code, out = run_cli(
        "users", "add", "boss", "--role", "admin", "--password-stdin", "--db", db.url, input=password + "\n"
    )
    assert code == 0, out


def test_the_same_rule_holds_for_a_new_password_and_on_the_web(
    client_for: Any, db: Database, users: dict[str, str]
) -> None:
    code, out = run_cli("users", "set", "rev", "--password-stdin", "--db", db.url, input="aaaaaaaaaa\n")
    assert code == 2 and "at least 12 are needed" in out, out
    adm, csrf = client_for("adm")
    r = adm.post("/admin/users", data={"csrf_token": csrf, "name": "boss", "role": "admin", "password": "aaaaaaaaaa"})
    assert r.status_code == 400 and "Required: at least 12 characters" in r.json()["detail"], r.text
    with db.read() as s:
        assert s.execute(select(User).where(User.name == "boss")).first() is None


def test_login_required_is_a_vision_error() -> None:
    from review.web.guard import LoginRequiredError
    from vision.errors import VisionError

    assert issubclass(LoginRequiredError, VisionError)


def test_keys_are_hkdf_sha256_and_differ_per_purpose() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from review.auth.keys import AUDIT_PURPOSE, COOKIE_PURPOSE, derive_key

    secret = "s" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
    for purpose in (AUDIT_PURPOSE, COOKIE_PURPOSE):
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret.encode())
        assert derive_key(secret, purpose) == expected
    assert derive_key(secret, AUDIT_PURPOSE) != derive_key(secret, COOKIE_PURPOSE)


@pytest.mark.parametrize("secure", [False, True])
def test_behind_an_https_proxy_cookies_are_secure_and_hsts_is_sent(
    settings: ReviewSettings, db: Database, users: dict[str, str], secure: bool
) -> None:
    from review.web.app import create_app

    with TestClient(create_app(settings.with_(secure_cookies=secure), db)) as c:
        r = c.get("/login")
        assert ("strict-transport-security" in r.headers) is secure
        assert ("; secure" in r.headers["set-cookie"].lower()) is secure
