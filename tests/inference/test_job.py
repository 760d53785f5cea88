"""The job folder: only a folder with the job's marker is taken for a job, ``--overwrite``
removes the job's own files and nothing else, and one process at a time runs a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inference.runner import JobOptions, run_job
from vision.errors import ConfigError

from .conftest import RGB_BANDS, random_chips

SCRIPT = """
import sys
from vision.cli import main
sys.argv = ["vision", "infer", sys.argv[3], "--model", sys.argv[1], "--out", sys.argv[2],
            "--no-progress", "--threads", "1", "--workers", "1", "--batch-size", "8"]
main()
"""  # the real command line: its exit codes and messages, not a copy of their mapping

def _run(inputs: list[Path], model: Path, out: Path, **kw: object) -> object:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=1, **kw))  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_overwrite_refuses_a_folder_without_the_job_marker(rgb_model: Path, tmp_path: Path) -> None:
    """A manifest.json that parses as a JSON object is not enough: without the job's marker
    (schema version and fingerprint) the folder is not a job's, and nothing in it is deleted,
    --overwrite or not."""
    random_chips(tmp_path / "chips", 2)
    folder = tmp_path / "thesis"
    (folder / "figures").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"title": "my thesis", "chapters": 5}))
    (folder / "thesis.docx").write_bytes(b"PK\x03\x04 six months of work")
    (folder / "figures" / "map.png").write_bytes(b"\x89PNG")
    before = _tree(folder)
    for overwrite in (True, False):
        with pytest.raises(ConfigError, match="not a job folder.*thesis.docx"):
            _run([tmp_path / "chips"], rgb_model, folder, overwrite=overwrite)
        assert _tree(folder) == before
    # A marker with a made-up fingerprint that is not a sha256 is no marker either.
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 2, "fingerprint": "x"}))
    with pytest.raises(ConfigError, match="not a job folder"):
        _run([tmp_path / "chips"], rgb_model, folder, overwrite=True)
    assert (folder / "thesis.docx").exists() and (folder / "figures" / "map.png").exists()


def test_overwrite_removes_only_the_jobs_files(rgb_model: Path, tmp_path: Path,
                                               model_factory: Callable[..., Path],
                                               tif_factory: Callable[..., Path]) -> None:
    rng = np.random.default_rng(0)
    first = tif_factory("first.tif", rng.integers(1, 255, (3, 130, 140), dtype=np.uint8))
    second = tif_factory("second.tif", rng.integers(1, 255, (3, 100, 100), dtype=np.uint8))
    out = tmp_path / "job"
    _run([first], rgb_model, out)
    made = set(json.loads((out / "manifest.json").read_text())["outputs"])
    assert made == {"first.classes.tif", "first.classes.tif.aux.xml", "first.confidence.tif",
                    "first.geojson", "first.quicklook.png", "stac/first.json", "stac/catalog.json"}
    (out / "my-notes.txt").write_text("written by hand in the job folder")
    (out / "keep").mkdir()
    (out / "keep" / "a.tif").write_bytes(b"mine")
    (out / "_parts").mkdir()
    (out / "_parts" / "mine.txt").write_text("not a part file")
    _run([second], model_factory(RGB_BANDS, seed=5), out, overwrite=True)
    names = {p.name for p in out.iterdir()}
    assert not {n for n in names if n.startswith("first.")}  # the old job's outputs: gone
    assert {"second.classes.tif", "second.geojson", "second.quicklook.png"} <= names
    assert (out / "my-notes.txt").read_text() == "written by hand in the job folder"
    assert (out / "keep" / "a.tif").read_bytes() == b"mine"
    assert (out / "_parts" / "mine.txt").exists()  # _parts keeps what is not a part file


def test_manifest_outputs_are_plain_names_only() -> None:
    """Whatever a manifest lists, only plain output names in the folder are the job's."""
    from inference.job import is_job_manifest, manifest_outputs

    manifest = {"schema_version": 2, "fingerprint": "a" * 64,
                "outputs": ["s.classes.tif", "../outside.tif", "/etc/passwd.tif", "thesis.docx",
                            ".hidden.tif", "sub/x.geojson", 7, "s.quicklook.png"],
                "inputs": [{"outputs": {"geojson": "old.geojson", "x": "../../y.png"}}]}
    assert is_job_manifest(manifest)
    assert manifest_outputs(manifest) == {"s.classes.tif", "s.quicklook.png", "old.geojson"}
    for bad in ({"schema_version": 2}, {"fingerprint": "a" * 64}, [], "x",
                {"schema_version": 99, "fingerprint": "a" * 64}):
        assert not is_job_manifest(bad)


def test_only_the_jobs_own_json_names_are_outputs() -> None:
    """A manifest listing a user's JSON file never makes it the job's (so --overwrite keeps it):
    only ``aoi_summary.json`` in the folder and STAC items in ``stac/`` are."""
    from inference.job import manifest_outputs

    manifest = {"schema_version": 2, "fingerprint": "a" * 64,
                "outputs": ["aoi_summary.json", "notes.json", "stac/s.json", "stac/catalog.json",
                            "other/x.json", "stac/../notes.json", "s.classes.tif.aux.xml"]}
    assert manifest_outputs(manifest) == {"aoi_summary.json", "stac/s.json", "stac/catalog.json",
                                          "s.classes.tif.aux.xml"}


def test_leftovers_of_a_run_stopped_while_planning_are_not_foreign(rgb_model: Path,
                                                                   tmp_path: Path) -> None:
    random_chips(tmp_path / "chips", 2)
    out = tmp_path / "job"
    out.mkdir()
    (out / ".lock").write_text("123\n")
    (out / "progress.json").write_text('{"state": "planning", "done": 0, "total": 0}')
    (out / ".progress.json.abc123.tmp").write_text("{")
    res = _run([tmp_path / "chips"], rgb_model, out)
    assert res.exit_code == 0  # type: ignore[attr-defined]
    assert not list(out.glob(".*.tmp"))


def test_a_second_process_on_the_same_job_is_refused(rgb_model: Path, tmp_path: Path) -> None:
    """Two real processes on one --out: the second says the job is running and exits 2,
    touching nothing; the first finishes normally."""
    random_chips(tmp_path / "chips", 600)
    out = tmp_path / "job"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(rgb_model), str(out),
                                 str(tmp_path / "chips")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    first = start()
    # The lock file names its holder once it is taken: freeze the holder right there.
    while first.poll() is None:
        try:
            if (out / ".lock").read_text().strip() == str(first.pid):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    assert first.poll() is None, "the first process ended before it could be paused"
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = start()
        _, err = second.communicate(timeout=600)
        assert second.returncode == 2, err.decode()[-2000:]
        assert f"is running in another process (pid {first.pid})" in err.decode()
        assert b"Traceback" not in err
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()[-2000:]
    assert (out / "_SUCCESS").exists()
    # The lock is free again: a rerun reports the finished job.
    again = start()
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and b"already finished" in err


def test_lock_is_exclusive_in_one_process_too(tmp_path: Path) -> None:
    from inference.job import JobFolder, JobRunningError

    a, b = JobFolder(tmp_path / "job"), JobFolder(tmp_path / "job")
    assert a.open("f" * 64, overwrite=False) == "fresh"
    with pytest.raises(JobRunningError, match="running in another process"):
        b.open("f" * 64, overwrite=False)
    a.close()
    assert b.open("f" * 64, overwrite=False) == "fresh"
    b.close()
