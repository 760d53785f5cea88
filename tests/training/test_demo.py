"""`vision demo` from a clean folder, as `make demo` runs it: the run, the job, and every
command it prints under "Next" works as printed, pasted into the same shell.

The real command in a subprocess with its output on a pipe (as `make demo | tee` or CI would
show it): the summary must not be cut at 80 columns, or the pasted commands would be broken.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.cli_runner import run_vision


@pytest.mark.slow
def test_demo_then_each_printed_next_command_works(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": ""}  # as on a new machine: the default store in the folder
    r = run_vision("demo", "--epochs", "1", cwd=tmp_path, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = r.stdout + r.stderr
    assert "Traceback" not in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next (copy and paste"))
    commands = []
    for line in lines[start + 1:]:  # the indented block right under "Next"
        if not line.startswith("  "):
            break
        commands.append(line.strip())
    assert [c.split()[1] for c in commands] == ["evaluate", "models", "explain", "ui"], commands
    assert (tmp_path / "demo-out" / "job" / "_SUCCESS").exists()
    for command in commands[:-1]:  # the last one starts the MLflow web UI and keeps running
        argv = shlex.split(command)
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env})
        assert done.returncode == 0, (command, (done.stdout + done.stderr)[-2000:])
    assert (tmp_path / "demo-out" / "row0.png").stat().st_size > 0  # what explain wrote
    ui = shlex.split(commands[-1])
    assert Path(ui[0]).name == "mlflow" and ui[1:3] == ["ui", "--backend-store-uri"] and ui[3].startswith("sqlite:")
