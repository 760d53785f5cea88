"""Submitted batches run through the runner in the worker and fill the review queue."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from review_helpers import CLASSES, write_scene
from sqlalchemy import func, select

from review.db.engine import Database
from review.db.models import AuditEntry, Item, Job
from review.jobs.worker import Worker, infer_command

HERE = Path(__file__).parent

# A stand-in for `vision infer`: reports progress in progress.json (the contract), prints
# misleading "N/M" counters the worker must not read, and leaves a finished job folder.
FAKE_RUNNER = """
import sys, time, pathlib
sys.path.insert(0, {here!r})
from review_helpers import write_job
from vision.contracts.progress import JobProgress
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
marks = pathlib.Path({marks!r})
for i in range(1, 4):
    print(f"classifying 999/1000", flush=True)
    JobProgress("running", done=i, total=3).write(out)
    # wait until the test saw the worker show this step (it polls progress.json every 0.5 s);
    # the cap only keeps a worker that never reads progress.json from hanging the test
    t0 = time.monotonic()
    while not (marks / str(i)).exists() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
write_job(out, n_windows=10, n_chips=1, n_bad=1)
JobProgress("finished", done=3, total=3).write(out)
"""


def fake_command(code: str) -> Any:
    def command(input_path: str, model: str, out_dir: Path, engine: str) -> list[str]:
        return [sys.executable, "-c", code, input_path, "--model", model, "--out", str(out_dir)]

    return command


def _submit(client_for: Any, roots: Path) -> None:
    (roots / "batch").mkdir()
    write_scene(roots / "batch" / "scene.tif", 64)
    ana, csrf = client_for("ana")
    r = ana.post(
        "/jobs",
        data={"csrf_token": csrf, "root": "0", "path": "batch", "model": "models:/landcover@champion"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_worker_runs_a_submitted_job_and_queues_its_rows(
    client_for: Any, users: Any, roots: Path, db: Database, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    _submit(client_for, roots)
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = Worker(db, roots=allowed, command=fake_command(FAKE_RUNNER.format(here=str(HERE), marks=str(marks))))
    seen: list[tuple[int, int]] = []

    def watch() -> None:  # what the job page would poll, step by step
        for i in range(1, 4):
            while True:
                with db.read() as s:
                    job = s.execute(select(Job)).scalar_one()
                if (job.progress_done, job.progress_total) == (i, 3) or job.status in ("ready", "failed"):
                    break
                time.sleep(0.05)
            seen.append((job.progress_done, job.progress_total))
            (marks / str(i)).write_text("")

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert worker.run_once()
    watcher.join()
    assert seen == [(1, 3), (2, 3), (3, 3)], "progress comes from progress.json, not from '999/1000' output"
    assert not worker.run_once(), "nothing else is queued"
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
        n_items = s.execute(select(func.count()).select_from(Item)).scalar_one()
        actions = s.execute(select(AuditEntry.action)).scalars().all()
    assert job.status == "ready", job.error
    assert job.progress_done == job.progress_total == 12 and job.rows_skipped == 1
    assert n_items == 11 and job.classes == CLASSES
    assert "job.submit" in actions and "job.ready" in actions
    rev, csrf = client_for("rev")
    item = rev.post(f"/api/jobs/{job.id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    assert item is not None


def test_the_worker_confines_files_named_inside_the_input_to_its_roots(
    client_for: Any, users: Any, roots: Path, db: Database, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    """Every allowed root goes to `vision infer` as --input-root, so a submitted STAC item
    whose hrefs lead out of the roots is refused by the runner, not read."""
    _submit(client_for, roots)
    argv_file = tmp_path / "argv.json"
    code = ("import json, sys; json.dump(sys.argv, open(" + repr(str(argv_file)) + ", 'w')); "
            "print('stopped here'); sys.exit(2)")
    assert Worker(db, roots=allowed, command=fake_command(code)).run_once()
    argv = json.loads(argv_file.read_text())
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "--input-root"]
    assert given == [str(Path(r).resolve()) for r in allowed] and given


def test_a_failing_runner_fails_the_job_with_its_output(
    client_for: Any, users: Any, roots: Path, db: Database, allowed: tuple[Path, ...]
) -> None:
    _submit(client_for, roots)
    worker = Worker(db, roots=allowed, command=fake_command("import sys; print('model not found: nope'); sys.exit(2)"))
    assert worker.run_once()
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
    assert job.status == "failed" and "model not found" in (job.error or "")
    ana, _ = client_for("ana")
    assert ana.get(f"/api/jobs/{job.id}/status").json()["status"] == "failed"


def test_the_real_command_line() -> None:
    argv = infer_command("/data/batch", "models:/m@champion", Path("/jobs/job-1"), "ray")
    assert argv[1:] == [
        "-m",
        "vision.cli",
        "infer",
        "/data/batch",
        "--model",
        "models:/m@champion",
        "--out",
        "/jobs/job-1",
        "--engine",
        "ray",
    ]


def _tiny_model(path: Path, bands: list[str], classes: list[str]) -> None:
    """An ONNX model per ARCHITECTURE.md §2: mean over pixels, then a linear layer."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, k = len(bands), len(classes)
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1e-3, (c, k)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["pixels", "axes"], ["m"], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", c, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        [w, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what the installed onnxruntime reads
    meta = {
        "schema_version": "1",
        "classes": json.dumps(classes),
        "bands": json.dumps(bands),
        "input_size": "[32, 32]",
        "mean": json.dumps([0.0] * c),
        "std": json.dumps([1.0] * c),
        "temperature": "1.0",
        "architecture": "tiny",
        "model_name": "tiny",
        "model_version": "1",
        "mlflow_run_id": "",
        "train_data_fingerprint": "",
        "created_at": "2024-01-01T00:00:00Z",
    }
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=f"vision.{key}", value=value))
    onnx.save(model, path)


@pytest.mark.slow
def test_worker_with_the_real_vision_infer(
    client_for: Any, users: Any, roots: Path, db: Database, allowed: tuple[Path, ...]
) -> None:
    probe = subprocess.run([sys.executable, "-m", "vision.cli", "infer", "--help"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("`vision infer` is not available yet")
    (roots / "batch").mkdir()
    write_scene(roots / "batch" / "scene.tif", 64)
    _tiny_model(roots / "tiny.onnx", ["B02", "B03", "B04", "B08"], CLASSES)
    ana, csrf = client_for("ana")
    r = ana.post(
        "/jobs", data={"csrf_token": csrf, "root": "0", "path": "batch", "model": "tiny.onnx"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert Worker(db, roots=allowed).run_once()
    with db.read() as s:
        job = s.execute(select(Job)).scalar_one()
        n_items = s.execute(select(func.count()).select_from(Item)).scalar_one()
    assert job.status == "ready", job.error
    assert n_items > 0
