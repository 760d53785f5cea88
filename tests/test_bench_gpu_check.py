"""bench/gpu_check.py: on a machine without a GPU it says so and exits 0, timing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_gpu_check_without_a_gpu_says_so_and_exits_0() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would time it")
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no GPU here" in r.stdout and "nothing was timed" in r.stdout
    assert "chips/s" not in r.stdout


def test_gpu_check_teaches_its_options() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--budget-s" in r.stdout and "--peak-tflops" in r.stdout


@pytest.mark.slow
def test_gpu_check_steps_run_on_the_cpu() -> None:
    """The script's own code (exports, the runner's classifier, a training step, the FLOP
    count) runs, so that the day a GPU is lent the check does not fail on a typo."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run-cpu"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every CPU-runnable step ran" in r.stdout
    assert "GFLOP/chip" in r.stdout
