"""`vision train` under ``torchrun --nproc_per_node=2`` with the gloo backend (CPU).

The same code path runs NCCL on GPUs (`training.distributed`). Two launches of the real CLI:
the first is killed (the whole process group, as a preempted job is) once epoch 1's
checkpoint exists; the second, with ``--resume``, continues from it and finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.distributed import RECORD_ENV

ROOT = Path(__file__).resolve().parents[2]
#: A hung collective must fail the test, not the suite.
LAUNCH_TIMEOUT_S = 420  # a hang guard, not a timing: a busy 2-core machine takes minutes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "vision.cli",
            "train", str(recipe), "--out", str(out), "--no-progress", *extra]


def _env(tmp_path: Path, record: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", RECORD_ENV: str(record)}


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren... (torchrun's workers may leave its process group)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL torchrun and every worker it started, as a preemption would."""
    pids = [proc.pid, *_descendants(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids[1:]):
        assert time.time() < deadline, "workers survived SIGKILL"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]).lower()
    except (OSError, IndexError):
        return "zombie"


def test_torchrun_two_processes_gloo(tiny_recipe, synthetic_root: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(train__epochs=3, train__batch_size=8, train__threads=1,
                         train__early_stopping_patience=None)
    out, record = tmp_path / "run", tmp_path / "record"
    env = _env(tmp_path, record)
    last = out / "checkpoints" / "last.pt"

    # Launch 1: killed (torchrun and both workers) as soon as epoch 1 is checkpointed.
    log1 = tmp_path / "launch1.log"
    with log1.open("w") as fh:
        proc = subprocess.Popen(_command(recipe, out), cwd=tmp_path, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + LAUNCH_TIMEOUT_S
        try:
            while not last.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
        finally:
            _kill_tree(proc)
    text1 = log1.read_text()
    assert last.exists(), text1[-3000:]
    assert not (out / "metrics.json").exists(), "the run finished before it could be interrupted"
    # Rank 0 alone speaks: one line per epoch, not one per process.
    assert text1.count("epoch 1: train loss") == 1, text1[-3000:]

    # The distributed sampler: disjoint chips of the train split, each rank its half.
    shares = [json.loads((record / f"epoch1_rank{r}.json").read_text()) for r in (0, 1)]
    a, b = (set(s["indices"]) for s in shares)
    assert shares[0]["world_size"] == 2 and a and b and not a & b, (len(a), len(b), len(a & b))
    n_train = sum(1 for _ in (synthetic_root / "train").rglob("*.tif"))
    steps = n_train // (8 * 2)
    assert len(shares[0]["indices"]) == len(shares[1]["indices"]) == steps * 8
    assert a | b <= set(range(n_train))

    # Launch 2: --resume under torchrun continues after the checkpointed epoch(s) and finishes.
    import torch

    done_epochs = int(torch.load(last, weights_only=True)["epoch"]) + 1
    r = subprocess.run(_command(recipe, out, "--resume"), cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=LAUNCH_TIMEOUT_S)
    text2 = r.stdout + r.stderr
    assert r.returncode == 0, text2[-3000:]
    assert text2.count(f"Resuming {out} after epoch {done_epochs} of 3") == 1, text2[-3000:]
    assert f"epoch {done_epochs}: train loss" not in text2  # the finished epochs are not redone
    assert text2.count("epoch 3: train loss") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete" and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert (out / "model.onnx").exists() and (out / "MODEL_CARD.md").exists()
    # Epochs after the resume were distributed too.
    later = [json.loads((record / f"epoch3_rank{r}.json").read_text())["indices"] for r in (0, 1)]
    assert later[0] and later[1] and not set(later[0]) & set(later[1])

    # Rank 0 alone logs and registers: one MLflow run (reopened by the resume), one version.
    from mlflow.tracking import MlflowClient

    # Both URIs explicit: an earlier in-process test may have set the global registry URI.
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    runs = [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]
    assert len(runs) == 1 and runs[0].info.run_id == metrics["mlflow_run_id"]
    assert runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_accuracy")) == 3
    versions = client.search_model_versions("name='tiny_synthetic'")
    assert len(versions) == 1 and versions[0].run_id == metrics["mlflow_run_id"]


@pytest.mark.parametrize("world", [1, 2])
def test_epoch_sampler_shares_are_disjoint_and_drop_the_padding(world: int) -> None:
    """Without drop_last the sampler pads 11 chips to 12 by repeating one: two ranks would
    train on the same chip in the same epoch."""
    from training.distributed import World, epoch_sampler

    if world == 1:
        assert epoch_sampler(World(0, 1), 11, 0, 7) is None  # the loader's own sampler
        return
    shares = [list(epoch_sampler(World(r, 2), 11, 3, 7) or []) for r in (0, 1)]
    assert [len(s) for s in shares] == [5, 5] and not set(shares[0]) & set(shares[1])
    assert shares != [list(epoch_sampler(World(r, 2), 11, 4, 7) or []) for r in (0, 1)]  # per epoch


def test_a_soup_under_torchrun_trains_each_ingredient_on_both_ranks(tiny_recipe, tmp_path: Path) -> None:
    """`train.soup` under torchrun: each ingredient is a distributed run of its own (the
    process group is set up once and outlives them); rank 0 alone averages, logs and registers."""
    recipe = tiny_recipe(model__name="tiny_soup_ddp", train__epochs=1, train__threads=1, train__soup=2)
    out, record = tmp_path / "soup", tmp_path / "record"
    env = _env(tmp_path, record)
    r = subprocess.run(_command(recipe, out), cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=LAUNCH_TIMEOUT_S)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert text.count("soup ingredient 2 of 2") == 1 and text.count("epoch 1: train loss") == 2, text[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [i["seed"] for i in metrics["soup"]["ingredients"]] == [7, 8]
    for seed in (7, 8):
        assert json.loads((out / "ingredients" / f"seed-{seed}" / "metrics.json").read_text())["status"] == "complete"
    # The last ingredient's epoch, as each rank read it: disjoint halves.
    a, b = (set(json.loads((record / f"epoch1_rank{r}.json").read_text())["indices"]) for r in (0, 1))
    assert a and b and not a & b

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    runs = [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"seed-7/val_accuracy", "seed-8/val_accuracy"} <= set(runs[0].data.metrics)
    assert len(client.search_model_versions("name='tiny_soup_ddp'")) == 1
