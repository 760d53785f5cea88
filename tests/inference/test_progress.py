"""Progress while a job runs: ``DIR/progress.json`` (states, items, throttled writes) and the
summary's failure list."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from inference.progress import SHOWN_ERRORS, ProgressFile, print_failures
from vision.contracts.progress import JobProgress

from .conftest import random_chips, write_tif

SCRIPT = """
import sys
from pathlib import Path
from inference.runner import JobOptions, run_job
res = run_job(JobOptions(inputs=tuple(sys.argv[3:]), model=sys.argv[1], out=Path(sys.argv[2]),
                         progress=False, threads=1, workers=1, batch_size=8))
sys.exit(res.exit_code)
"""


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_file_is_throttled(tmp_path: Path) -> None:
    """State changes are written at once; item counts at most every interval."""
    clock = FakeClock()
    pf = ProgressFile(tmp_path, interval_s=0.25, clock=clock)
    pf.set("planning")
    pf.set("running", done=0, total=1000)
    assert pf.writes == 2
    for _ in range(100):  # 100 units within 0.1 s: no write
        clock.t += 0.001
        pf.advance(10)
    assert pf.writes == 2 and JobProgress.read(tmp_path).done == 0  # type: ignore[union-attr]
    clock.t += 0.3
    pf.advance(10)
    assert pf.writes == 3
    got = JobProgress.read(tmp_path)
    assert got is not None and (got.state, got.done, got.total) == ("running", 1000, 1000)
    pf.set("finished")
    assert JobProgress.read(tmp_path).state == "finished"  # type: ignore[union-attr]


def test_progress_file_write_failure_is_not_fatal(tmp_path: Path) -> None:
    pf = ProgressFile(tmp_path / "missing" / "folder-is-a-file")
    (tmp_path / "missing").write_text("a file where the folder should be")
    pf.set("running", done=1, total=2)  # logged, not raised
    assert pf.writes == 0


def test_progress_json_while_the_job_runs(rgb_model: Path, tmp_path: Path) -> None:
    """A real run, paused part-way: progress.json says running with done/total in items
    (chip files plus scene windows); at the end finished with done == total."""
    random_chips(tmp_path / "in" / "chips", 700)
    import numpy as np

    write_tif(tmp_path / "in" / "scene.tif",
              np.random.default_rng(1).integers(1, 255, (3, 640, 640), dtype=np.uint8))
    total = 700 + 10 * 10
    out = tmp_path / "job"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(rgb_model), str(out),
                             str(tmp_path / "in")], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[JobProgress] = []
    held = None
    while proc.poll() is None:
        p = JobProgress.read(out)
        if p is not None and (not seen or p != seen[-1]):
            seen.append(p)
            if p.state == "running" and held is None:
                os.kill(proc.pid, signal.SIGSTOP)  # hold it while it runs, and look
                try:
                    held = JobProgress.read(out)
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert held is not None and held.state == "running"
    assert held.total == total and 0 <= held.done < total
    final = JobProgress.read(out)
    assert final is not None and (final.state, final.done, final.total) == ("finished", total, total)
    states = [p.state for p in seen] + ["finished"]
    order = ["planning", "running", "finalizing", "finished"]
    assert [s for s in order if s in states] == [s for s in dict.fromkeys(states)], states
    assert "running" in states
    dones = [p.done for p in seen if p.state == "running"]
    assert dones == sorted(dones)


def test_failures_are_printed_with_their_reasons(tmp_path: Path) -> None:
    console = Console(record=True, width=300)
    errors = [{"path": f"/data/in[/x]/f{k}.jpg", "error": f"UnreadableInputError: bad [b]{k}"}
              for k in range(SHOWN_ERRORS + 2)]
    print_failures(console, 9, errors, tmp_path)
    text = console.export_text()
    assert "finished with 9 failed items in 7 inputs" in text
    for e in errors[:SHOWN_ERRORS]:
        assert f"{e['path']}: {e['error']}" in text
    assert errors[-1]["path"] not in text and "2 more" in text
