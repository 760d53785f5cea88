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

#: The password rule, in words (error messages and the docs say exactly this).
MIN_PASSWORD_LENGTH = 12
PASSPHRASE_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 8
PASSWORD_RULE = (
    f"at least {MIN_PASSWORD_LENGTH} characters mixing at least 3 of lower-case letters, upper-case letters, "
    f"digits and symbols (or a passphrase of at least {PASSPHRASE_LENGTH} characters); at least "
    f"{MIN_DISTINCT_CHARACTERS} different characters; no runs like 'aaaa', 'abcd', '4321' or 'qwer'; "
    "not containing the user name; not a common or default password"
)

#: Passwords refused outright: shipped defaults and the most common choices. `preflight`
#: tries each against every admin's hash, so this list stays short (one hash per entry).
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

#: Common words people build passwords on; compared after `_base` strips decoration.
COMMON_BASES = DEFAULT_PASSWORDS | frozenset(
    {
        "iloveyou",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "soccer",
        "hockey",
        "sunshine",
        "princess",
        "shadow",
        "master",
        "superman",
        "batman",
        "trustno1",
        "starwars",
        "whatever",
        "hello",
        "helloworld",
        "freedom",
        "abc123",
        "qwertyuiop",
        "asdfghjkl",
        "zxcvbnm",
        "1q2w3e4r",
        "1q2w3e4r5t",
        "qazwsx",
        "q1w2e3r4",
        "michael",
        "jennifer",
        "computer",
        "internet",
        "summer",
        "winter",
        "spring",
        "autumn",
        "january",
        "december",
        "login",
        "access",
        "mustang",
        "pokemon",
        "charlie",
        "liverpool",
        "chelsea",
        "arsenal",
        "killer",
        "pepper",
        "cheese",
        "solo",
        "flower",
        "lovely",
        "tigger",
        "service",
        "database",
        "satellite",
        "imagery",
    }
)

_LEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_RUN = 4

#: A hash of nothing useful, verified when a user does not exist so timing does not tell.
_DUMMY_HASH = HASHER.hash("not-a-real-password-0")


def _classes(password: str) -> int:
    return sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )


def _base(password: str) -> str:
    """The word a password is built on: lower-cased, leetspeak undone, digits/symbols trimmed."""
    low = password.lower()
    trimmed = low.strip("0123456789!@#$%^&*()-_=+.,;:?'\" ~`")
    return trimmed.translate(_LEET) if trimmed else low.translate(_LEET)


def _predictable_run(password: str) -> str | None:
    """A run of `_RUN` repeated or consecutive characters (alphabet, digits, keyboard rows)."""
    low = password.lower()
    for i in range(len(low) - _RUN + 1):
        chunk = low[i : i + _RUN]
        if len(set(chunk)) == 1:
            return chunk
        for seq in _SEQUENCES:
            if chunk in seq or chunk[::-1] in seq:
                return chunk
    return None


def password_problems(name: str, password: str) -> list[str]:
    """What is wrong with ``password`` for the user ``name`` (empty when it is acceptable)."""
    problems = []
    low = password.lower()
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"it has {len(password)} characters, at least {MIN_PASSWORD_LENGTH} are needed")
    elif len(password) < PASSPHRASE_LENGTH and _classes(password) < 3:
        problems.append(
            f"it mixes {_classes(password)} kinds of characters: use 3 of lower-case, upper-case, digits and "
            f"symbols, or at least {PASSPHRASE_LENGTH} characters"
        )
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        problems.append(f"it has {len(set(password))} different characters, at least {MIN_DISTINCT_CHARACTERS}")
    run = _predictable_run(password)
    if run is not None:
        problems.append(f"it contains the predictable run {run!r}")
    if name and (low == name.lower() or (len(name) >= 3 and name.lower() in low)):
        problems.append("it contains the user name")
    if low in COMMON_BASES or _base(password) in COMMON_BASES:
        problems.append("it is a common or default password")
    else:
        word = _common_word(password)
        if word is not None:
            problems.append(f"it is the common word {word!r} with a few characters around it")
    return problems


def _common_word(password: str) -> str | None:
    """A common word (5+ letters) that makes up all but a few characters of ``password``."""
    plain = password.lower().translate(_LEET)
    for word in COMMON_BASES:
        if len(word) >= 5 and word in plain and len(plain) - len(word) < MIN_DISTINCT_CHARACTERS:
            return word
    return None


def check_password_rules(name: str, password: str) -> None:
    """Refuse weak passwords, saying what is wrong and what is required (`PASSWORD_RULE`).

    Raises:
        ConfigError: the password breaks the rule.
    """
    problems = password_problems(name, password)
    if problems:
        raise ConfigError(f"password refused: {'; '.join(problems)}. Required: {PASSWORD_RULE}")


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
