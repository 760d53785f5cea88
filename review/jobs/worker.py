"""Run submitted batches through ``vision infer``, and imports, in a worker process.

The jobs table is the queue: a worker takes the oldest ``queued`` job with a
compare-and-set update. An *inference* job runs ``python -m vision.cli infer INPUT --model
MODEL --out DIR [--engine ray]`` as a subprocess (so the service never imports inference
code and a crash cannot take the service down) and then imports the finished table; an
*import* job (a finished folder queued by ``POST /jobs/import``) is imported directly, and a
*change* job (a `vision change` folder) by `review.jobs.change_import`. The
import runs in batches (`review.jobs.importer.run_import`), so review requests never wait
on one long write.

Progress comes from ``DIR/progress.json``, which the runner rewrites while it runs
(`vision.contracts.progress.JobProgress`), then from the import's own row count. The worker
heartbeats while it works; a job whose worker stopped heartbeating is queued again:
``vision infer`` resumes an interrupted job (a finished one is a no-op) and the import
resumes after the last row it inserted.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from review import audit
from review.db.engine import Database
from review.db.models import JOB_IMPORTING, JOB_QUEUED, JOB_RUNNING, Job, utcnow
from review.jobs.files import check_tree
from review.jobs.importer import fail_import, ready_record, run_import
from review.jobs.records import KIND_CHANGE, KIND_INFERENCE, new_job
from vision.contracts.progress import JobProgress
from vision.errors import VisionError
from vision.model_uri import is_registry_uri

log = logging.getLogger(__name__)

InferCommand = Callable[[str, str, Path, str], Sequence[str]]

#: The worker's audit actor and request id.
WORKER = "worker"


def infer_command(input_path: str, model: str, out_dir: Path, engine: str) -> list[str]:
    """The ``vision infer`` command line for one job."""
    argv = [sys.executable, "-m", "vision.cli", "infer", input_path, "--model", model]
    argv += ["--out", str(out_dir)]
    if engine != "local":
        argv += ["--engine", engine]
    return argv


class RunnerFailedError(VisionError):
    """``vision infer`` did not leave a table behind."""

    def __init__(self, message: str, rc: int | None):
        super().__init__(message)
        self.rc = rc


class Worker:
    """Takes queued jobs from the database and runs them one at a time.

    Args:
        db: the service database.
        roots: where a job's files may lie (`review.jobs.files.service_roots`).
        engine: ``local`` or ``ray`` (passed to ``vision infer``).
        command: builds the runner's command line (tests swap in a stand-in).
        stale_after_s: a running job without heartbeat for this long is queued again.
        poll_s: how long to wait for work when the queue is empty.
    """

    def __init__(
        self,
        db: Database,
        *,
        roots: Sequence[Path],
        engine: str = "local",
        command: InferCommand = infer_command,
        stale_after_s: float = 120.0,
        poll_s: float = 1.0,
    ):
        self.db, self.roots, self.engine, self.command = db, tuple(roots), engine, command
        self.stale_after_s, self.poll_s = stale_after_s, poll_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[:64]

    def _takeable(self, stale: object) -> object:
        return or_(
            Job.status == JOB_QUEUED,
            Job.status.in_((JOB_RUNNING, JOB_IMPORTING)) & (Job.heartbeat_at < stale),
        )

    def claim(self) -> int | None:
        """Take the oldest queued (or abandoned) job; returns its id."""
        now = utcnow()
        stale = now - timedelta(seconds=self.stale_after_s)
        with self.db.write() as s:
            candidates = (
                s.execute(select(Job.id).where(self._takeable(stale)).order_by(Job.id).limit(5))  # type: ignore[arg-type]
                .scalars()
                .all()
            )
            for job_id in candidates:
                res = s.execute(
                    update(Job)
                    .where(Job.id == job_id, self._takeable(stale))  # type: ignore[arg-type]
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
        """Run a claimed job (the runner, then the import) and record how it ended."""
        with self.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            kind, input_path, model, out_dir = job.kind, job.input_path, job.model, Path(job.job_dir)
        rc: int | None = None
        fail = fail_import
        try:
            if kind == KIND_CHANGE:
                from review.jobs.change_import import fail_change_import, run_change_import

                fail = fail_change_import
                result = run_change_import(self.db, job_id, self.roots)
            else:
                if kind == KIND_INFERENCE:
                    rc = self._infer(job_id, str(input_path), str(model), out_dir)
                result = run_import(self.db, job_id, self.roots)
        except RunnerFailedError as exc:
            fail(self.db, job_id, str(exc), WORKER, WORKER, exc.rc)
            return
        except Exception as exc:  # a broken table fails this job, not the worker
            log.warning("job %s: import failed: %s", job_id, exc)
            fail(self.db, job_id, f"import failed: {exc}", WORKER, WORKER, rc)
            return
        with self.db.write() as s:
            audit.append(s, WORKER, "job.ready", f"job:{job_id}", {"status": JOB_IMPORTING},
                         ready_record(result, rc), WORKER)

    def _infer(self, job_id: int, input_path: str, model: str, out_dir: Path) -> int:
        """Run ``vision infer`` for a job, following its ``progress.json``; returns its exit code.

        Raises:
            RunnerFailedError: the input now links outside the roots, or the runner failed.
        """
        try:  # again: links may have been planted since the submission was accepted
            checked = check_tree(input_path, self.roots)
            if not is_registry_uri(model):
                model = str(check_tree(model, self.roots))
        except (PermissionError, OSError) as exc:
            raise RunnerFailedError(f"the submitted input was refused: {exc}", None) from exc
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.command(str(checked), model, out_dir, self.engine))
        # Files named inside the input (STAC hrefs) must resolve into the roots too.
        argv += [arg for root in self.roots for arg in ("--input-root", str(Path(root).resolve()))]
        log.info("job %s: %s", job_id, " ".join(argv))
        tail: deque[str] = deque(maxlen=40)
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
        )

        def keep_tail() -> None:  # the runner's last lines explain a failure on the job page
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip()[:500])

        reader = threading.Thread(target=keep_tail, daemon=True)
        reader.start()
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                self._progress(job_id, JobProgress.read(out_dir))
        reader.join(timeout=5)
        self._progress(job_id, JobProgress.read(out_dir))
        rc = proc.returncode
        # 1: finished with some inputs in error (their rows say so); anything else failed.
        if rc not in (0, 1) or not (out_dir / "predictions.parquet").is_file():
            raise RunnerFailedError(f"`vision infer` exited with {rc}: " + "\n".join(tail)[-4000:], rc)
        return int(rc)

    def _progress(self, job_id: int, progress: JobProgress | None) -> None:
        values: dict[str, object] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values.update(progress_done=progress.done, progress_total=progress.total)
        with self.db.write() as s:
            s.execute(
                update(Job).where(Job.id == job_id).values(**values).execution_options(synchronize_session=False)
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
        job = new_job(KIND_INFERENCE, name or input_path.name, actor, "", input_path=str(input_path), model=model,
                      classes_of_interest=classes_of_interest or [], four_eyes=four_eyes)
        s.add(job)
        s.flush()
        # resolved: the job's files are later opened only inside the (resolved) roots
        job.job_dir = os.path.join(os.path.realpath(jobs_dir), f"job-{job.id:06d}")
        audit.append(
            s,
            actor,
            "job.submit",
            f"job:{job.id}",
            None,
            {
                "input": str(input_path),
                "model": model,
                "classes_of_interest": job.classes_of_interest,
                "four_eyes": four_eyes,
            },
            request_id,
        )
        return int(job.id)
