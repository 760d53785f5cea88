"""Run submitted batches through ``vision infer`` in a worker process.

The jobs table is the queue: a worker takes the oldest ``queued`` job with a
compare-and-set update, runs ``python -m vision.cli infer INPUT --model MODEL --out DIR
[--engine ray]`` as a subprocess (so the service never imports inference code and a crash
cannot take the service down), reports progress and a heartbeat while it runs, and imports
the finished table into the review queue. A job whose worker stopped heartbeating is
queued again; ``vision infer`` resumes an interrupted job and a finished one is a no-op.

Progress comes from ``N/M`` counters in the runner's output, or from the counts in
``DIR/manifest.json`` when the runner keeps it up to date.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from review import audit
from review.db.engine import Database
from review.db.models import JOB_FAILED, JOB_QUEUED, JOB_RUNNING, Job, utcnow
from review.jobs.importer import import_rows, read_manifest
from vision.raster import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

_COUNTER = re.compile(r"(\d+)\s*/\s*(\d+)")

InferCommand = Callable[[str, str, Path, str], Sequence[str]]


def infer_command(input_path: str, model: str, out_dir: Path, engine: str) -> list[str]:
    """The ``vision infer`` command line for one job."""
    argv = [sys.executable, "-m", "vision.cli", "infer", input_path, "--model", model]
    argv += ["--out", str(out_dir)]
    if engine != "local":
        argv += ["--engine", engine]
    return argv


def count_inputs(path: Path, limit: int = 100_000) -> int:
    """How many image files a batch holds (the progress total before the runner says)."""
    if path.is_file():
        return 1
    n = 0
    for _dirpath, _dirs, files in os.walk(path):
        n += sum(1 for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if n >= limit:
            break
    return n


class Worker:
    """Takes queued jobs from the database and runs them one at a time.

    Args:
        db: the service database.
        engine: ``local`` or ``ray`` (passed to ``vision infer``).
        command: builds the runner's command line (tests swap in a stand-in).
        stale_after_s: a running job without heartbeat for this long is queued again.
    """

    def __init__(
        self,
        db: Database,
        engine: str = "local",
        command: InferCommand = infer_command,
        stale_after_s: float = 120.0,
        poll_s: float = 1.0,
    ):
        self.db, self.engine, self.command = db, engine, command
        self.stale_after_s, self.poll_s = stale_after_s, poll_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def claim(self) -> int | None:
        """Take the oldest queued (or abandoned) job; returns its id."""
        now = utcnow()
        stale = now - timedelta(seconds=self.stale_after_s)
        with self.db.write() as s:
            candidates = (
                s.execute(
                    select(Job.id)
                    .where(
                        or_(
                            Job.status == JOB_QUEUED,
                            (Job.status == JOB_RUNNING) & (Job.heartbeat_at < stale),
                        )
                    )
                    .order_by(Job.id)
                    .limit(5)
                )
                .scalars()
                .all()
            )
            for job_id in candidates:
                res = s.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        or_(
                            Job.status == JOB_QUEUED,
                            (Job.status == JOB_RUNNING) & (Job.heartbeat_at < stale),
                        ),
                    )
                    .values(status=JOB_RUNNING, worker_id=self.worker_id, heartbeat_at=now, started_at=now)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    return int(job_id)
        return None

    def run_once(self) -> bool:
        """Run one job if one is waiting. Returns whether one ran."""
        job_id = self.claim()
        if job_id is None:
            return False
        self.run_job(job_id)
        return True

    def run_forever(self, stop: threading.Event) -> None:
        """Keep taking jobs until ``stop`` is set."""
        while not stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # keep serving other jobs; the failure is logged
                log.exception("worker loop error")
                ran = False
            if not ran:
                stop.wait(self.poll_s)

    def run_job(self, job_id: int) -> None:
        """Run the runner for a claimed job, then import its rows or record the failure."""
        with self.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            input_path, model, out_dir = str(job.input_path), str(job.model), Path(job.job_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        total = count_inputs(Path(input_path))
        self._progress(job_id, 0, total)
        argv = list(self.command(input_path, model, out_dir, self.engine))
        log.info("job %s: %s", job_id, " ".join(argv))
        tail: deque[str] = deque(maxlen=40)
        state = {"done": 0, "total": total}

        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
        )

        def read_output() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                for done, tot in _COUNTER.findall(line)[-1:]:
                    if int(tot) > 0:
                        state["done"], state["total"] = int(done), int(tot)

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        while proc.poll() is None:
            time.sleep(0.5)
            counts = read_manifest(out_dir).get("counts")
            if isinstance(counts, dict) and isinstance(counts.get("total"), int):
                state["total"] = counts["total"]
                state["done"] = sum(int(v) for k, v in counts.items() if k != "total" and isinstance(v, int))
            self._progress(job_id, state["done"], state["total"])
        reader.join(timeout=5)
        rc = proc.returncode
        ok = rc in (0, 1) and (out_dir / "predictions.parquet").is_file()
        with self.db.write() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if ok:
                try:
                    n = import_rows(s, job, out_dir)
                except Exception as exc:  # a broken table fails this job, not the worker
                    ok, msg = False, f"import failed: {exc}"
                else:
                    audit.append(
                        s,
                        "worker",
                        "job.ready",
                        f"job:{job_id}",
                        {"status": JOB_RUNNING},
                        {"status": job.status, "items": n, "skipped": job.rows_skipped, "rc": rc},
                        "worker",
                    )
                    return
            else:
                msg = f"`vision infer` exited with {rc}: " + "\n".join(tail)[-4000:]
            job.status, job.error, job.finished_at = JOB_FAILED, msg, utcnow()
            audit.append(
                s,
                "worker",
                "job.failed",
                f"job:{job_id}",
                {"status": JOB_RUNNING},
                {"status": JOB_FAILED, "rc": rc},
                "worker",
            )

    def _progress(self, job_id: int, done: int, total: int) -> None:
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(progress_done=done, progress_total=total, heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )


def submit_job(
    db: Database,
    input_path: Path,
    model: str,
    actor: str,
    jobs_dir: Path,
    name: str | None = None,
    classes_of_interest: list[str] | None = None,
    four_eyes: bool = False,
    request_id: str = "cli",
) -> int:
    """Queue a batch for the worker (audited); returns the job id."""
    with db.write() as s:
        job = Job(
            name=name or input_path.name,
            kind="inference",
            status=JOB_QUEUED,
            input_path=str(input_path),
            model=model,
            job_dir="",
            classes="[]",
            classes_of_interest=json.dumps(sorted(classes_of_interest or [])),
            four_eyes=four_eyes,
            submitted_by=actor,
            created_at=utcnow(),
            progress_done=0,
            progress_total=0,
            rows_skipped=0,
        )
        s.add(job)
        s.flush()
        job.job_dir = str(jobs_dir / f"job-{job.id:06d}")
        audit.append(
            s,
            actor,
            "job.submit",
            f"job:{job.id}",
            None,
            {
                "input": str(input_path),
                "model": model,
                "classes_of_interest": classes_of_interest or [],
                "four_eyes": four_eyes,
            },
            request_id,
        )
        return int(job.id)
