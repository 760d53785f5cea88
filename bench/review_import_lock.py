"""How long a large import holds the review database's write lock, and what another writer waits.

Builds a job of ``--rows`` windows in a temporary folder (the tests' job builder, as
`bench/review_load.py` does), imports it into a fresh SQLite database with the product's
importer (`review.jobs.importer.import_job`: the rows in batches of `INSERT_BATCH`, each its
own short write transaction, as the job worker runs them), and meanwhile a second thread opens
a small write transaction every 50 ms, as a reviewer's claim or decision would. Printed: the
import's time, its write transactions (count, median, longest) and the other writer's wait
(median, p99, longest), as JSON. (The issue this answers: a 200k-row import once held the lock
for 22 s inside one request.)

Usage:
    python bench/review_import_lock.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "review"))


def measure(tmp: Path, rows: int) -> dict[str, float | int]:
    from review_helpers import write_job  # the tests' builder of a real job folder

    from review.jobs.files import service_roots
    from review.jobs.importer import import_job
    from review.service import open_database

    os.environ["VISION_REVIEW_SECRET"] = secrets.token_urlsafe(48)  # the audit rows are keyed
    roots = tmp / "incoming"
    side = 32 + 16 * (int(rows ** 0.5) + 1)  # windows of 32 px at stride 16 cover the rows
    folder = write_job(roots / "jobs" / "big", n_windows=rows, n_chips=0, n_bad=0, scene_size=side)
    db = open_database(f"sqlite:///{tmp / 'review.db'}", pool_size=4)
    plain = db.write
    durations: list[float] = []

    @contextlib.contextmanager
    def timed() -> Iterator[object]:
        t = time.perf_counter()
        with plain() as s:
            yield s
        durations.append(time.perf_counter() - t)

    db.write = timed  # type: ignore[method-assign]
    waits: list[float] = []
    stop = threading.Event()

    def other_writer() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            with plain() as s:
                s.execute(text("select count(*) from jobs"))
            waits.append(time.perf_counter() - t)
            time.sleep(0.05)

    th = threading.Thread(target=other_writer)
    th.start()
    t0 = time.perf_counter()
    try:
        job = import_job(db, folder, "bench", service_roots((roots,), tmp / "data"))
    finally:
        total = time.perf_counter() - t0
        stop.set()
        th.join()
    with plain() as s:
        n = int(s.execute(text("select count(*) from items where job_id = :j"), {"j": job}).scalar_one())
    db.dispose()
    durations.sort()
    waits.sort()
    return {"rows": n, "import_s": round(total, 2), "write_transactions": len(durations),
            "longest_transaction_s": round(durations[-1], 3),
            "median_transaction_s": round(durations[len(durations) // 2], 3),
            "other_writer_tries": len(waits), "other_writer_median_ms": round(waits[len(waits) // 2] * 1000, 1),
            "other_writer_p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000, 1),
            "other_writer_max_ms": round(waits[-1] * 1000, 1)}


def main() -> None:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000, help="windows in the imported job")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="review-import-lock-") as d:
        print(json.dumps(measure(Path(d), a.rows), indent=2))


if __name__ == "__main__":
    main()
