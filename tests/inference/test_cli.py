"""`vision infer` through the real entry point (`vision.cli.main` in a subprocess): the
bad-input corpus, usage errors, and user strings that Rich must print as they are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from inference.runner import JobOptions, run_job
from vision.errors import ConfigError

from .conftest import BAD_INPUTS, BAD_STAC, RGB_BANDS, random_chips
from .data.make_bad_inputs import EXPECTED, EXPECTED_STAC, RUNTIME_CASES, add_runtime_cases

REPO = Path(__file__).resolve().parents[2]
VISION = [sys.executable, "-c", "from vision.cli import main; main()"]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([*VISION, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def _relpath(path: str, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def test_bad_input_corpus(corpus_model: Path, tmp_path: Path) -> None:
    """Acceptance: the whole corpus gives exit code 1, a reason per bad file, every good
    file classified, no traceback; the first failures are printed with their reasons."""
    corpus = tmp_path / "corpus"
    shutil.copytree(BAD_INPUTS, corpus)
    add_runtime_cases(corpus)  # a file name that is not UTF-8
    stac = tmp_path / "stac"  # STAC items are named on the command line (folders are walked for rasters)
    shutil.copytree(BAD_STAC, stac)
    out = tmp_path / "job"
    proc = cli("infer", str(corpus), *(str(stac / n) for n in EXPECTED_STAC),
               "--model", str(corpus_model), "--out", str(out), "--no-progress", "--threads", "1")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    assert "INFO " not in proc.stderr, "log lines that restate the header only with -v"
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    by_file: dict[str, list[dict[str, object]]] = {}
    for r in table:
        by_file.setdefault(_relpath(str(r["path"]), corpus), []).append(r)
    expected = dict(EXPECTED) | {f"../stac/{n}": v for n, v in EXPECTED_STAC.items()}
    for name, status, reason in RUNTIME_CASES:
        shown = name.decode("utf-8", "replace")
        expected[shown] = (status, reason)
    assert sorted(by_file) == sorted(expected)
    for name, (status, reason) in expected.items():
        rows = by_file[name]
        statuses = {r["status"] for r in rows}
        if name == "truncated_scene.tif":  # the readable windows are salvaged
            assert statuses == {"ok", "error"}
        else:
            assert statuses == {status}, (name, statuses, rows[0]["error"])
        for r in rows:
            if r["status"] == "error":
                assert reason is not None and reason in str(r["error"]), (name, r["error"])
            if r["status"] == "ok":  # classified: a class and a finite confidence
                assert r["class_name"] and 0 <= float(r["confidence"]) <= 1  # type: ignore[arg-type]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exit_code"] == 1 and (out / "_SUCCESS").exists()
    failed = {n for n, (s, _) in expected.items() if s == "error"}
    assert {_relpath(e["path"], corpus) for e in manifest["errors"]} == failed
    # The console names the first failures with their reasons (the paths unharmed by Rich).
    assert "failed items" in proc.stderr
    shown = [e for e in manifest["errors"][:5]]
    for e in shown:
        assert e["path"] in proc.stderr.replace("\n", ""), e["path"]
    assert json.loads((out / "progress.json").read_text())["state"] == "finished"


def test_markup_in_paths_is_printed_as_is(rgb_model: Path, tmp_path: Path) -> None:
    """Input and output paths with ``[/x]`` (Rich markup) in them: the job runs, its summary
    and the error of a missing input are printed with the text as it is."""
    chips = tmp_path / "in[/x]put"
    random_chips(chips, 3)
    (chips / "broken[").mkdir()
    (chips / "broken[" / "b].jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # .../broken[/b].jpg
    out = tmp_path / "out[/x]"
    proc = cli("infer", str(chips), "--model", str(rgb_model), "--out", str(out),
               "--no-progress")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    flat = proc.stderr.replace("\n", "")
    assert f"{chips}/broken[/b].jpg" in flat and str(out) in flat
    again = cli("infer", str(chips), "--model", str(rgb_model), "--out", str(out))
    assert again.returncode == 1 and "already finished" in again.stderr
    assert str(out) in again.stderr.replace("\n", "")
    missing = cli("infer", str(tmp_path / "no[/x]such"), "--model", str(rgb_model),
                  "--out", str(tmp_path / "j"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"input not found: {tmp_path / 'no[/x]such'}" in missing.stderr.replace("\n", "")


def test_a_wrong_input_path_leaves_no_out_folder(rgb_model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    random_chips(tmp_path / "chips", 2)
    out = tmp_path / "jobs" / "new"
    proc = cli("infer", str(tmp_path / "chips"), str(tmp_path / "typo"), "--model",
               str(rgb_model), "--out", str(out))
    assert proc.returncode == 2 and "input not found" in proc.stderr
    assert not (tmp_path / "jobs").exists()
    # Nor does an option that does not fit the device, found before anything is written.
    with pytest.raises(ConfigError, match="--fp16"):
        run_job(JobOptions(inputs=(str(tmp_path / "chips"),), model=str(rgb_model), out=out,
                           progress=False, fp16=True))
    assert not (tmp_path / "jobs").exists()
    # A run stopped while planning (before its manifest) takes away the folders it made.
    import inference.runner

    def interrupted(*args: object, **kw: object) -> None:
        assert (out / ".lock").exists() and (out / "progress.json").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(inference.runner, "make_plan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(JobOptions(inputs=(str(tmp_path / "chips"),), model=str(rgb_model), out=out,
                           progress=False))
    assert not (tmp_path / "jobs").exists()


def test_model_claiming_a_huge_input_is_refused(rgb_model: Path, tmp_path: Path) -> None:
    """ONNX metadata with input_size [100000, 100000] is refused clearly, before anything is
    allocated or written (exit code 2: the model is a configuration error)."""
    proto = onnx.load(str(rgb_model))
    for prop in proto.metadata_props:
        if prop.key == "vision.input_size":
            prop.value = "[100000, 100000]"
    bad = tmp_path / "huge.onnx"
    onnx.save(proto, str(bad))
    random_chips(tmp_path / "chips", 2)
    proc = cli("infer", str(tmp_path / "chips"), "--model", str(bad), "--out",
               str(tmp_path / "job"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "input_size" in proc.stderr and "1..4096" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "job").exists()


def test_help_and_usage_errors(rgb_model: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from inference.cli import register

    app = typer.Typer()
    register(app)

    @app.command("other")
    def _other() -> None:  # a second command keeps `infer` a sub-command
        pass

    res = CliRunner().invoke(app, ["infer", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Example" in res.output and "--engine" in res.output
    # Defaults in square brackets survive Rich markup (unescaped, "[default: ...]" vanishes).
    for text in ("[default: min(4, cores)]", "[default: cores / streams", "[default: 64 on CPU",
                 "[default: the model's input size", "[default: 2^32", "auto|cpu|cuda|tensorrt",
                 "local|ray"):
        assert text in res.output, text
    # The real entry point maps a configuration error to exit code 2, with no traceback.
    proc = cli("infer", str(BAD_INPUTS), "--model", str(tmp_path / "missing.onnx"),
               "--out", str(tmp_path / "j"))
    assert proc.returncode == 2 and "model not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    # --device and --engine are checked once, against their choices.
    for option, value, said in (("--device", "tpu", "'tpu' is not one of"),
                                ("--engine", "spark", "'spark' is not one of"),
                                ("--batch-size", "0", "greater than or equal to 1")):
        proc = cli("infer", str(BAD_INPUTS), "--model", str(rgb_model), "--out",
                   str(tmp_path / "j"), option, value)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "j").exists()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
            run_job(JobOptions(inputs=(str(BAD_INPUTS),), model=str(rgb_model),
                               out=tmp_path / "j2", device="cuda", progress=False))


def test_cli_refuses_fp16_without_tensorrt(model_factory: Callable[..., Path],
                                           tmp_path: Path) -> None:
    random_chips(tmp_path / "chips", 1)
    proc = cli("infer", str(tmp_path / "chips"), "--model", str(model_factory(RGB_BANDS)),
               "--out", str(tmp_path / "j"), "--fp16", "--device", "cpu")
    assert proc.returncode == 2 and "--fp16" in proc.stderr and not (tmp_path / "j").exists()
