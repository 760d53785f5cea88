"""Administration: people and the audit log (read-only: nothing here edits audit rows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from review import audit
from review.auth.users import add_user as create_user
from review.auth.users import update_user as change_user
from review.db.models import ROLES, AuditEntry, User
from review.web.deps import Services
from review.web.guard import Principal, principal, request_id
from review.web.routes.common import make_router, page, services

router = make_router()


@router.get("/admin/users")
def users_page(request: Request, svc: Annotated[Services, Depends(services)]) -> Response:
    """Everyone who can sign in, with forms to add and change people."""
    with svc.db.read() as s:
        users = s.execute(select(User).order_by(User.name)).scalars().all()
    return page(request, "users.html", users=users, roles=ROLES)


@router.post("/admin/users")
def add_user(
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    name: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=16)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Add a person (default and weak passwords are refused)."""
    with svc.db.write() as s:
        create_user(s, name, role, password, actor=who.name, request_id=rid)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}")
def update_user(
    user_id: int,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(principal)],
    rid: Annotated[str, Depends(request_id)],
    role: Annotated[str, Form(max_length=16)] = "",
    active: Annotated[str, Form(pattern="^(|yes|no)$")] = "",
    unlock: Annotated[bool, Form()] = False,
) -> Response:
    """Change a person's role, disable or enable them, or lift a lockout."""
    with svc.db.write() as s:
        user = s.get(User, user_id)
        if user is None:
            raise HTTPException(404, f"no user {user_id}")
        if user.id == who.user_id and (role not in ("", user.role) or active == "no"):
            raise HTTPException(400, "you cannot demote or disable yourself")
        change_user(
            s,
            user,
            who.name,
            role=role or None,
            active=None if active == "" else active == "yes",
            unlock=unlock,
            request_id=rid,
        )
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/audit")
def audit_page(request: Request, svc: Annotated[Services, Depends(services)], verify: bool = False) -> Response:
    """The latest audit rows, and the full check (`review.audit.verify`) on demand."""
    with svc.db.snapshot() as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(200)).scalars().all()
        result = audit.verify(s) if verify else None
    return page(request, "audit.html", rows=rows, result=result)
