"""What routes depend on: the service objects, row lookups and the `Annotated` dependency aliases.

Routers import from here, never from `review.web.app` (which imports the routers): the
package has no import cycle, and `tests/review/test_web_imports.py` keeps it so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.templating import Jinja2Templates

from review.auth.sessions import CookieSigner
from review.db.engine import Database
from review.db.models import Item, Job
from review.settings import ReviewSettings
from review.web.guard import Principal, principal, request_id

#: Largest row id: ids are 32-bit integers on PostgreSQL; anything else is no such row.
MAX_ROW_ID = 2**31 - 1

RowT = TypeVar("RowT")


@dataclass
class Services:
    """What routes need, held on ``app.state.services``.

    Attributes:
        roots: where a job's files may be read (`review.jobs.files.service_roots`).
    """

    settings: ReviewSettings
    db: Database
    signer: CookieSigner
    templates: Jinja2Templates
    roots: tuple[Path, ...] = field(default_factory=tuple)


def get_services(request: Request) -> Services:
    """FastAPI dependency: the service objects."""
    svc: Services = request.app.state.services
    return svc


def _row_id(value: str, what: str) -> int:
    # Not FastAPI's int: an id past the database's integer range (or not a number at all)
    # is simply a row that does not exist, 404, never a database error.
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or not 1 <= int(value) <= MAX_ROW_ID:
        raise HTTPException(404, f"no {what} {value[:20]}")
    return int(value)


def item_id_param(item_id: Annotated[str, PathParam()]) -> int:
    """FastAPI dependency: the ``{item_id}`` of the path, 404 when it cannot be an item."""
    return _row_id(item_id, "item")


def job_id_param(job_id: Annotated[str, PathParam()]) -> int:
    """FastAPI dependency: the ``{job_id}`` of the path, 404 when it cannot be a job."""
    return _row_id(job_id, "job")


def row_or_404(svc: Services, model: type[RowT], row_id: int, missing: str) -> RowT:
    """The ``model`` row of id ``row_id``, read in its own transaction; 404 ``missing`` when none."""
    with svc.db.read() as s:
        row = s.get(model, row_id)
    if row is None:
        raise HTTPException(404, missing)
    return row


def load_item(svc: Services, item_id: int) -> tuple[Item, Job]:
    """An item and its job (404 when there is no such item)."""
    with svc.db.read() as s:
        item = s.get(Item, item_id)
        job = s.get(Job, item.job_id) if item is not None else None
    if item is None or job is None:
        raise HTTPException(404, f"no item {item_id}")
    return item, job


ServicesDep = Annotated[Services, Depends(get_services)]
Who = Annotated[Principal, Depends(principal)]
RequestId = Annotated[str, Depends(request_id)]
ItemId = Annotated[int, Depends(item_id_param)]
JobId = Annotated[int, Depends(job_id_param)]
