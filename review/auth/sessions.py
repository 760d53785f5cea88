"""Login sessions: a random token in a signed, HttpOnly, SameSite cookie.

The database keeps only the token's SHA-256, with the session's CSRF token, expiry and
revocation, so logout really ends a session and a stolen database holds no usable cookie.
Changing a person's password, role or active flag revokes all of their sessions
(`revoke_user_sessions`, called by `review.auth.users.update_user`): a revoked session never
comes back, even when the account is enabled again. Before login, a separate signed cookie
carries the login form's CSRF token (double submit). Cookies are signed with a key derived
from the service's secret for that purpose only (`review.auth.keys`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from review.auth.keys import COOKIE_PURPOSE, derive_key
from review.db.models import LoginSession, User

SESSION_COOKIE = "vision_review_session"
LOGIN_CSRF_COOKIE = "vision_review_login_csrf"


class CookieSigner:
    """Signs and checks cookie values with the service's secret key."""

    def __init__(self, secret: str, max_age: int):
        self._s = URLSafeTimedSerializer(derive_key(secret, COOKIE_PURPOSE), salt="vision-review-cookie")
        self.max_age = max_age

    def sign(self, value: str) -> str:
        """The signed form of ``value``."""
        return self._s.dumps(value)

    def unsign(self, signed: str | None) -> str | None:
        """The value, or ``None`` when missing, forged or too old."""
        if not signed:
            return None
        try:
            value = self._s.loads(signed, max_age=self.max_age)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None


def token_id(token: str) -> str:
    """The stored id of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Session, user: User, now: datetime, lifetime_s: int) -> tuple[str, str]:
    """Create a session for ``user``. Returns ``(cookie token, csrf token)``."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    db.add(
        LoginSession(
            id=token_id(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime_s),
        )
    )
    return token, csrf


def load_session(db: Session, token: str, now: datetime) -> tuple[LoginSession, User] | None:
    """The live session and its (active) user for a cookie token, if any."""
    row = db.execute(
        select(LoginSession, User).join(User, User.id == LoginSession.user_id).where(LoginSession.id == token_id(token))
    ).first()
    if row is None:
        return None
    sess, user = row
    if sess.revoked_at is not None or sess.expires_at <= now or not user.active:
        return None
    return sess, user


def end_session(db: Session, session_id: str, now: datetime) -> None:
    """Revoke a session (logout)."""
    sess = db.get(LoginSession, session_id)
    if sess is not None and sess.revoked_at is None:
        sess.revoked_at = now


def revoke_user_sessions(db: Session, user_id: int, now: datetime) -> int:
    """Revoke every live session of a user (credentials or rights changed). Returns how many."""
    res = db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens; missing tokens never match."""
    if not expected or not given:
        return False
    return secrets.compare_digest(expected.encode(), given.encode())
