"""Start-up of the service: open and migrate the database, refuse unsafe configurations.

Everything the service writes is owner-only: `private_files` sets the process umask to
``077`` (so job folders, exports and the files `vision infer` writes for the worker are
``0700``/``0600``), and `open_database` creates the data folder ``0700`` and the SQLite file
``0600`` even when a command runs it before the service (SQLite gives its ``-wal``/``-shm``
files the database file's mode).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from review.auth.passwords import is_default_password
from review.db.engine import Database
from review.db.models import User
from review.db.schema import upgrade
from review.settings import ReviewSettings, check_secret
from vision.errors import ConfigError

#: Owner-only permissions for what the service creates.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_files() -> None:
    """Make every file and folder this process (and its children) creates owner-only."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) owner-only; existing folders are left as they are."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(p, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask; be exact


def open_database(url: str, pool_size: int = 20, audit_key: bytes | None = None) -> Database:
    """Open the database at ``url`` and migrate it to the newest schema.

    Args:
        url: SQLAlchemy URL.
        pool_size: connections kept open.
        audit_key: the audit chain's key (default: from the environment, see
            `review.auth.keys.audit_key_from_env`); needed to write audit rows.

    Raises:
        ConfigError: the key in the environment is unusable, or the upgrade needs it.
    """
    from review.auth.keys import audit_key_from_env

    key = audit_key if audit_key is not None else audit_key_from_env()
    u = make_url(url)
    if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
        path = Path(u.database).expanduser()
        make_private_dir(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))  # SQLite takes an empty file
    db = Database(url, pool_size=pool_size, audit_key=key)
    upgrade(db.engine, audit_key=key)
    return db


def cli_actor() -> str:
    """The audit actor of a command-line action: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def preflight(settings: ReviewSettings, db: Database) -> None:
    """Refuse to serve with a weak secret or an admin account on a default password.

    Raises:
        ConfigError: what is wrong and how to fix it.
    """
    check_secret(settings.secret_key)
    with db.read() as s:
        admins = s.execute(select(User).where(User.role == "admin", User.active.is_(True))).scalars()
        for user in admins:
            if is_default_password(user.password_hash):
                raise ConfigError(
                    f"admin {user.name!r} has a default password: change it with "
                    f"`vision users set {user.name} --password` before serving"
                )
    make_private_dir(settings.data_dir)
