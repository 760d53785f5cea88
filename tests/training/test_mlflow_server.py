"""Training against a real `mlflow server` process on 127.0.0.1, started by the test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from training.trainer import run_training
from vision.config import load_experiment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 120 s")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_training_logs_and_registers_on_a_real_server(tiny_recipe, mlflow_server, tmp_path):
    cfg = load_experiment(tiny_recipe(train__epochs=1, model__name="served_model"))
    result = run_training(cfg, tmp_path / "run")
    from training import tracking

    c = tracking.client()
    assert c.tracking_uri == mlflow_server
    mv = c.get_model_version_by_alias("served_model", "challenger")
    assert mv.run_id == result.metrics["mlflow_run_id"]
    run = c.get_run(mv.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    assert any(a.path == "model/model.onnx" for a in c.list_artifacts(mv.run_id, "model"))
    # The registered model resolves through models:/ URIs to the ONNX file.
    from training.evaluate import model_path

    with model_path("models:/served_model@challenger") as local:
        assert local.name == "model.onnx" and local.read_bytes() == (tmp_path / "run" / "model.onnx").read_bytes()
    # Promotion is the only way to champion.
    r = subprocess.run([sys.executable, "-m", "vision.cli", "models", "promote", "served_model", mv.version,
                        "--alias", "champion"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert c.get_model_version_by_alias("served_model", "champion").version == mv.version
