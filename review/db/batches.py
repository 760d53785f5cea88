"""Reading a large table a batch at a time, in key order (keyset pagination).

The audit checks and evidence packages walk whole tables (audit rows, decisions, items):
`batches` reads them ``size`` rows at a time by their integer key, and clears the session
between batches, so memory stays flat however large the table is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

RowT = TypeVar("RowT")

#: Rows read per query unless the caller says otherwise.
BATCH_ROWS = 5000


def batches(
    db: Session,
    model: type[RowT],
    key: InstrumentedAttribute[int],
    after: int = 0,
    size: int = BATCH_ROWS,
    where: Sequence[Any] = (),
) -> Iterator[Sequence[RowT]]:
    """The ``model`` rows whose ``key`` is above ``after`` (and that match ``where``), in key
    order, ``size`` at a time.

    Rows of a batch are expunged from the session when the next batch is asked for: do not
    keep them past that.
    """
    last = after
    while True:
        batch = db.execute(select(model).where(key > last, *where).order_by(key).limit(size)).scalars().all()
        if not batch:
            return
        yield batch
        last = getattr(batch[-1], key.key)
        db.expunge_all()
