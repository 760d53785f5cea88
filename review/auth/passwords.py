"""Password hashing (argon2id), password rules and account lockout."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from review.db.models import User
from vision.errors import ConfigError

#: argon2id with the library's RFC 9106 low-memory profile (64 MiB, 3 passes).
HASHER = PasswordHasher()

#: At most this many hashes at once: each one takes 64 MiB and ~0.1 s of a core, so a burst
#: of logins must queue rather than exhaust memory.
_HASH_SLOTS = threading.BoundedSemaphore(2)

MIN_PASSWORD_LENGTH = 10

#: Passwords refused outright: shipped defaults and the most common choices.
DEFAULT_PASSWORDS = frozenset(
    {
        "admin",
        "administrator",
        "password",
        "password1",
        "passw0rd",
        "changeme",
        "change-me",
        "changeit",
        "letmein",
        "welcome",
        "secret",
        "default",
        "root",
        "toor",
        "guest",
        "qwerty",
        "123456",
        "12345678",
        "1234567890",
        "reviewer",
        "analyst",
        "vision",
        "admin123",
        "password123",
        "changeme123",
    }
)

#: A hash of nothing useful, verified when a user does not exist so timing does not tell.
_DUMMY_HASH = HASHER.hash("not-a-real-password-0")


def check_password_rules(name: str, password: str) -> None:
    """Refuse default, common, short or name-derived passwords.

    Raises:
        ConfigError: saying what is wrong with the password.
    """
    low = password.lower()
    if low in DEFAULT_PASSWORDS or low.strip("0123456789!") in DEFAULT_PASSWORDS:
        raise ConfigError("this password is a well-known default; choose another")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if name and name.lower() in low:
        raise ConfigError("the password must not contain the user name")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    with _HASH_SLOTS:
        return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (``None``: no such user, still timed)."""
    with _HASH_SLOTS:
        try:
            return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether a hash was made with weaker parameters than today's."""
    return HASHER.check_needs_rehash(stored_hash)


def is_default_password(stored_hash: str) -> bool:
    """Whether a stored hash is of one of the `DEFAULT_PASSWORDS` (slow: one hash each)."""
    return any(verify_password(stored_hash, p) for p in sorted(DEFAULT_PASSWORDS))


def is_locked(user: User, now: datetime) -> bool:
    """Whether the account is locked out at ``now``."""
    return user.locked_until is not None and user.locked_until > now


def record_failure(user: User, now: datetime, max_failures: int, lockout_seconds: int) -> bool:
    """Count a failed login; lock the account after ``max_failures``. Returns locked-now."""
    user.failed_logins += 1
    if user.failed_logins >= max_failures:
        user.locked_until = now + timedelta(seconds=lockout_seconds)
        user.failed_logins = 0
        return True
    return False
