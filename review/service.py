"""Start-up of the service: open and migrate the database, refuse unsafe configurations."""

from __future__ import annotations

import getpass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from review.auth.passwords import is_default_password
from review.db.engine import Database
from review.db.models import User
from review.db.schema import upgrade
from review.settings import ReviewSettings, check_secret
from vision.errors import ConfigError


def open_database(url: str, pool_size: int = 20) -> Database:
    """Open the database at ``url`` and migrate it to the newest schema."""
    u = make_url(url)
    if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    db = Database(url, pool_size=pool_size)
    upgrade(db.engine)
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
