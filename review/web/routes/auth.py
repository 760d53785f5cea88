"""Login, logout and the health check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select, text

from review import audit
from review.auth.passwords import hash_password, is_locked, needs_rehash, record_failure, verify_password
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


@router.post("/login")
def login(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    rid: Annotated[str, Depends(request_id)],
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    """Check credentials, count failures (lockout), and start a session."""
    expected = svc.signer.unsign(request.cookies.get(LOGIN_CSRF_COOKIE))
    if not csrf_matches(expected, csrf_token):
        return JSONResponse({"detail": "CSRF token missing or wrong: reload the login page"}, 403)
    now = utcnow()
    settings = svc.settings
    with svc.db.read() as s:
        user = s.execute(select(User).where(User.name == username)).scalar_one_or_none()
        stored = user.password_hash if user is not None and user.active else None
        locked = user is not None and is_locked(user, now)
    ok = verify_password(stored, password) and not locked
    with svc.db.write() as s:
        u = s.execute(select(User).where(User.name == username)).scalar_one_or_none()
        if not ok:
            if u is not None and not locked:
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
            resp = page(
                request,
                "login.html",
                status_code=401,
                login_csrf=csrf_token,
                next=_safe_next(next),
                error=_GENERIC_FAILURE,
            )
            return resp
        assert u is not None
        if needs_rehash(u.password_hash):
            u.password_hash = hash_password(password)
        u.failed_logins, u.locked_until = 0, None
        token, _csrf = start_session(s, u, now, settings.session_seconds)
        audit.append(s, u.name, "login", f"user:{u.name}", None, {"role": u.role}, rid)
    done = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(done, svc, SESSION_COOKIE, svc.signer.sign(token), settings.session_seconds)
    done.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
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
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
