"""Settings of the review service, read in one place.

Environment:

- ``VISION_REVIEW_SECRET``: key that signs session cookies (at least 32 characters). The
  service refuses to start without it.
- ``VISION_REVIEW_DB``: SQLAlchemy URL; default SQLite ``review.db`` in the data folder.
  ``postgresql://user@host/db`` selects PostgreSQL (driver psycopg 3).
- ``VISION_REVIEW_DATA``: folder for the database, jobs run by the service and exports;
  default ``./review-data``.
- ``VISION_REVIEW_ROOTS``: allow-listed folders (``os.pathsep``-separated) from which
  analysts may submit batches on the web page; default ``DATA/incoming``.
- ``VISION_REVIEW_ENGINE``: ``local`` (default) or ``ray``, passed to ``vision infer``.
- ``VISION_REVIEW_SECURE_COOKIES``: ``1`` to mark cookies ``Secure`` and send HSTS (behind
  an HTTPS reverse proxy; ``vision review serve --tls-cert/--tls-key`` turns both on itself).
- ``VISION_REVIEW_AUDIT_KEY_FILE``: optional file holding the audit chain's key (owner-only,
  at least 32 bytes). Without it the audit key is derived from ``VISION_REVIEW_SECRET``.
  Choose once, before the first keyed audit row: rows verify only with the key they were
  written with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from vision.errors import ConfigError

MIN_SECRET_LENGTH = 32

#: Secrets that are placeholders, never real keys.
PLACEHOLDER_SECRETS = frozenset({"changeme", "secret", "development", "dev", "test", "please-change"})


@dataclass(frozen=True)
class ReviewSettings:
    """Everything the service needs to run.

    Attributes:
        secret_key: signs session and CSRF cookies.
        db_url: SQLAlchemy URL.
        data_dir: folder for service-run jobs and exports.
        job_roots: folders analysts may submit batches from (resolved, absolute).
        claim_seconds: how long a reviewer holds an item before others may take it.
        max_failed_logins: failures in a row that lock an account.
        lockout_seconds: how long a locked account stays locked.
        session_seconds: lifetime of a login session.
        secure_cookies: mark cookies ``Secure`` (HTTPS deployments).
        infer_engine: ``local`` or ``ray`` for the worker's ``vision infer`` runs.
        audit_key_file: dedicated audit key file (``None``: derive it from the secret).
    """

    secret_key: str
    db_url: str
    data_dir: Path
    job_roots: tuple[Path, ...] = field(default_factory=tuple)
    claim_seconds: int = 300
    max_failed_logins: int = 5
    lockout_seconds: int = 900
    session_seconds: int = 12 * 3600
    secure_cookies: bool = False
    infer_engine: str = "local"
    audit_key_file: Path | None = None

    @classmethod
    def from_env(cls, db_url: str | None = None, require_secret: bool = True) -> ReviewSettings:
        """Settings from the environment; ``db_url`` (a ``--db`` option) wins over the env.

        Raises:
            ConfigError: the secret key is missing or weak (when ``require_secret``), or the
                engine is unknown.
        """
        data_dir = Path(os.environ.get("VISION_REVIEW_DATA", "review-data")).expanduser().resolve()
        url = db_url or os.environ.get("VISION_REVIEW_DB") or f"sqlite:///{data_dir / 'review.db'}"
        roots_env = os.environ.get("VISION_REVIEW_ROOTS")
        roots = (
            tuple(Path(p).expanduser().resolve() for p in roots_env.split(os.pathsep) if p)
            if roots_env
            else (data_dir / "incoming",)
        )
        secret = os.environ.get("VISION_REVIEW_SECRET", "")
        if require_secret:
            check_secret(secret)
        key_file = os.environ.get("VISION_REVIEW_AUDIT_KEY_FILE", "").strip()
        engine = os.environ.get("VISION_REVIEW_ENGINE", "local")
        if engine not in ("local", "ray"):
            raise ConfigError(f"VISION_REVIEW_ENGINE must be local or ray, not {engine!r}")
        return cls(
            secret_key=secret,
            db_url=normalize_db_url(url),
            data_dir=data_dir,
            job_roots=roots,
            secure_cookies=os.environ.get("VISION_REVIEW_SECURE_COOKIES", "") in ("1", "true"),
            infer_engine=engine,
            audit_key_file=Path(key_file).expanduser().resolve() if key_file else None,
        )

    def audit_key(self) -> bytes:
        """The audit chain's key (see `review.auth.keys`); never stored in the database.

        Raises:
            ConfigError: no usable secret or key file.
        """
        from review.auth.keys import audit_key

        return audit_key(self.secret_key, self.audit_key_file)

    def with_(self, **changes: object) -> ReviewSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def check_secret(secret: str) -> None:
    """Refuse a missing, short or placeholder secret key.

    Raises:
        ConfigError: with what to do about it.
    """
    if not secret:
        raise ConfigError(
            "VISION_REVIEW_SECRET is not set; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    if len(secret) < MIN_SECRET_LENGTH or secret.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"VISION_REVIEW_SECRET is too weak: use at least {MIN_SECRET_LENGTH} random characters")
    if len(set(secret)) < 8:
        raise ConfigError("VISION_REVIEW_SECRET is too repetitive: use random characters")


def normalize_db_url(url: str) -> str:
    """Select the psycopg 3 driver for bare ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
