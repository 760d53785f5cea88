"""Login, logout and the health check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select, text
from starlette.concurrency import run_in_threadpool

from review import audit
from review.auth import hashing
from review.auth.passwords import is_locked, needs_rehash, record_failure
from review.auth.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    csrf_matches,
    end_session,
    start_session,
)
from review.db.models import User, utcnow
from review.web.deps import Services
from review.web.guard import Principal, principal, request_id
from review.web.routes.common import make_router, page, services

router = make_router()

_GENERIC_FAILURE = "wrong user name or password, or the account is locked"


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _set_cookie(response: Response, svc: Services, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=svc.settings.secure_cookies,
        path="/",
    )


def _delete_cookie(response: Response, svc: Services, name: str) -> None:
    response.delete_cookie(name, path="/", secure=svc.settings.secure_cookies, httponly=True, samesite="strict")


@router.get("/health")
def health(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    """Liveness and database reachability (no sign-in needed)."""
    with svc.db.read() as s:
        s.execute(text("SELECT 1"))
    return JSONResponse({"status": "ok"})


@router.get("/login")
def login_form(request: Request, svc: Annotated[Services, Depends(services)], next: str = "/") -> Response:
    """The sign-in page; sets the signed cookie that carries the form's CSRF token."""
    token = secrets.token_urlsafe(32)
    resp = page(request, "login.html", login_csrf=token, next=_safe_next(next), error=None)
    _set_cookie(resp, svc, LOGIN_CSRF_COOKIE, svc.signer.sign(token), 3600)
    return resp


@dataclass(frozen=True)
class _Account:
    """What the login needs to know before hashing (read in one short transaction)."""

    stored_hash: str | None  # None: no such user, or disabled (a dummy hash is checked instead)
    locked: bool


def _lookup(svc: Services, username: str, now: datetime) -> _Account:
    with svc.db.read() as s:
        user = s.execute(select(User).where(User.name == username)).scalar_one_or_none()
        stored = user.password_hash if user is not None and user.active else None
        return _Account(stored, user is not None and is_locked(user, now))


def _record(
    svc: Services, username: str, account: _Account, ok: bool, new_hash: str | None, now: datetime, rid: str
) -> str | None:
    """Count a failure (lockout) or start a session; returns the session token on success."""
    settings = svc.settings
    with svc.db.write() as s:
        u = s.execute(select(User).where(User.name == username).with_for_update()).scalar_one_or_none()
        # The account may have changed while the hash ran (new password, disabled, locked):
        # a session is only started for the state the password was checked against.
        if ok and (u is None or not u.active or u.password_hash != account.stored_hash or is_locked(u, now)):
            return None
        if not ok:
            if u is not None and not account.locked:
                before = {"failed_logins": u.failed_logins}
                now_locked = record_failure(u, now, settings.max_failed_logins, settings.lockout_seconds)
                audit.append(
                    s,
                    username,
                    "login.locked" if now_locked else "login.failed",
                    f"user:{u.name}",
                    before,
                    {"failed_logins": u.failed_logins, "locked": now_locked},
                    rid,
                )
            elif u is not None:
                audit.append(s, username, "login.refused", f"user:{u.name}", None, {"locked": True}, rid)
            return None
        assert u is not None
        if new_hash is not None:
            u.password_hash = new_hash
        u.failed_logins, u.locked_until = 0, None
        token, _csrf = start_session(s, u, now, settings.session_seconds)
        audit.append(s, u.name, "login", f"user:{u.name}", None, {"role": u.role}, rid)
        return token


@router.post("/login")
async def login(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    rid: Annotated[str, Depends(request_id)],
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    """Check credentials, count failures (lockout), and start a session.

    Async on purpose: the database work runs in the thread pool and the password hash in the
    bounded hash queue (`review.auth.hashing`), so the event loop never waits for either.
    """
    expected = svc.signer.unsign(request.cookies.get(LOGIN_CSRF_COOKIE))
    if not csrf_matches(expected, csrf_token):
        return JSONResponse({"detail": "CSRF token missing or wrong: reload the login page"}, 403)
    now = utcnow()
    lane = request.client.host if request.client else "-"
    account = await run_in_threadpool(_lookup, svc, username, now)
    try:
        matches = await hashing.verify(lane, account.stored_hash, password)
        ok = matches and not account.locked
        new_hash = await hashing.hash_new(lane, password) if ok and needs_rehash(str(account.stored_hash)) else None
    except hashing.HashQueueFullError as exc:
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "5"})
    token = await run_in_threadpool(_record, svc, username, account, ok, new_hash, now, rid)
    if token is None:
        return page(
            request,
            "login.html",
            status_code=401,
            login_csrf=csrf_token,
            next=_safe_next(next),
            error=_GENERIC_FAILURE,
        )
    done = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(done, svc, SESSION_COOKIE, svc.signer.sign(token), svc.settings.session_seconds)
    _delete_cookie(done, svc, LOGIN_CSRF_COOKIE)
    return done


@router.post("/logout")
def logout(
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
) -> Response:
    """End the session (server side too) and go back to the login page."""
    with svc.db.write() as s:
        end_session(s, who.session_id, utcnow())
        audit.append(s, who.name, "logout", f"user:{who.name}", None, None, rid)
    resp = RedirectResponse("/login", status_code=303)
    _delete_cookie(resp, svc, SESSION_COOKIE)
    return resp
