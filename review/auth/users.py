"""Managing people: add, change role, disable, unlock. Every change is audited.

The same rules hold on the command line and on the web admin page, because both come here:
passwords must pass `review.auth.passwords.check_password_rules`, and a new password, a
role change or a disable revokes every session of that person.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from review import audit
from review.auth.passwords import check_password_rules, hash_password
from review.auth.sessions import revoke_user_sessions
from review.db.models import ROLES, User, utcnow
from vision.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")


def _public(user: User) -> dict[str, object]:
    return {"name": user.name, "role": user.role, "active": user.active}


def add_user(db: Session, name: str, role: str, password: str, actor: str, request_id: str = "cli") -> User:
    """Create a user with a checked, hashed password.

    Raises:
        ConfigError: bad name or role, name taken, or a weak/default password.
    """
    if not _NAME.match(name):
        raise ConfigError("user names are 2-64 characters: letters, digits, _ . @ -")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    check_password_rules(name, password)
    if db.execute(select(User.id).where(User.name == name)).first() is not None:
        raise ConfigError(f"user {name!r} exists already")
    user = User(
        name=name,
        role=role,
        password_hash=hash_password(password),
        active=True,
        failed_logins=0,
        created_at=utcnow(),
    )
    db.add(user)
    db.flush()
    audit.append(db, actor, "user.add", f"user:{name}", None, _public(user), request_id)
    return user


def get_user(db: Session, name: str) -> User:
    """The user called ``name``.

    Raises:
        ConfigError: no such user.
    """
    user = db.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise ConfigError(f"no user {name!r}")
    return user


def update_user(
    db: Session,
    user: User,
    actor: str,
    role: str | None = None,
    active: bool | None = None,
    unlock: bool = False,
    password: str | None = None,
    request_id: str = "cli",
) -> User:
    """Change a user's role, active flag, lock or password (audited; password never logged).

    A new password, another role, or a disable (or enable) revokes all of the user's
    sessions, so a stolen or left-open session does not outlive the change.

    Raises:
        ConfigError: unknown role or weak password (nothing is changed).
    """
    if role is not None and role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if password is not None:
        check_password_rules(user.name, password)
    before = _public(user) | {"locked": user.locked_until is not None}
    # Enabling revokes too: sessions left over from before the disable never come back.
    revoke = (role is not None and role != user.role) or (active is not None and active != user.active)
    revoke = revoke or password is not None
    if role is not None:
        user.role = role
    if active is not None:
        user.active = active
    if unlock:
        user.locked_until, user.failed_logins = None, 0
    after: dict[str, object] = _public(user) | {"locked": user.locked_until is not None}
    if password is not None:
        user.password_hash = hash_password(password)
        after["password"] = "changed"
    if revoke:
        after["sessions_revoked"] = revoke_user_sessions(db, user.id, utcnow())
    audit.append(db, actor, "user.update", f"user:{user.name}", before, after, request_id)
    return user
