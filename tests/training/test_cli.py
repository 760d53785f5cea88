"""The training commands as a user meets them: what `vision train` says while it works, the
errors that replaced tracebacks, the one overwrite rule, and `vision models list/show`."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from tests.cli_runner import run_training_cli as run_cli
from tests.cli_runner import run_vision

#: What `vision train` reports, in order, between the command and the first epoch and after
#: the last one (each with its elapsed time).
STAGES = ["reading the folder splits: done in", "band statistics of the train split: done in",
          "building tiny_cnn (weights: none): done in", "starting the MLflow run: done in", "epoch 1:",
          "training done", "calibration: predicting the val split: done in", "test: predicting the test split: done in",
          "registering tiny_synthetic in MLflow: done in", "parity on val chips: done in", "model card: done in",
          "logging metrics and artifacts to MLflow: done in", "done in", "report: "]


def test_train_says_what_it_does_from_start_to_end(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe(train__epochs=1)
    r = run_vision("train", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert r.returncode == 0, r.stderr[-3000:]
    text = re.sub(r"\s+", " ", r.stderr)  # lines wrap at the console width
    at = 0
    for stage in STAGES:
        found = text.find(stage, at)
        assert found >= 0, f"{stage!r} missing after position {at}: {text[at:at + 400]}"
        at = found
    last = r.stderr.strip().splitlines()
    assert "report" in " ".join(last[-3:]) and str(tmp_path / "run" / "report") in text.replace(" ", "")

    # The registry, readable: full names, dates, and JSON for scripts.
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    listed = run_vision("models", "list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(x["name"], x["version"], x["aliases"]) for x in rows] == [("tiny_synthetic", "1", ["challenger"])]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", rows[0]["created"])
    table = run_vision("models", "list", cwd=tmp_path, env={**env, "COLUMNS": "64"})
    assert table.returncode == 0
    cells = [line.split("│") for line in table.stdout.splitlines() if line.startswith("│")]
    assert "…" not in table.stdout  # folded onto more lines, never cut
    assert "".join(c[1].strip() for c in cells) == "tiny_synthetic"
    assert "".join(c[4].strip() for c in cells) == rows[0]["run_id"]
    wide = run_vision("models", "list", cwd=tmp_path, env={**env, "COLUMNS": "120"})
    assert f"│ {rows[0]['run_id']} │ {rows[0]['created']} │" in wide.stdout
    shown = run_vision("models", "show", "tiny_synthetic", "--json", cwd=tmp_path, env=env)
    card = json.loads(shown.stdout)
    assert card["aliases"] == {"challenger": "1"} and card["versions"][0]["metrics"]["test_accuracy"] > 0.5
    shown = run_vision("models", "show", "tiny_synthetic", cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "test_accuracy" in shown.stdout and "{" not in shown.stdout
    missing = run_vision("models", "show", "nope", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no registered model 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def _no_traceback(code: int, text: str, want_code: int, *needles: str) -> None:
    assert code == want_code, text
    assert "Traceback" not in text
    for n in needles:
        assert n in text, (n, text)


def test_weights_that_are_not_a_state_dict_are_refused_before_the_data(tiny_recipe, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    recipe = tiny_recipe(model__weights=str(passwd), data__root=str(tmp_path / "no-such-data"))
    code, text = run_cli("train", str(recipe), "--out", str(tmp_path / "run"))
    _no_traceback(code, text, 2, f"model.weights {passwd}", "not a state_dict")
    assert not (tmp_path / "run").exists()


def test_an_unknown_architecture_is_refused_before_the_data(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe(model__architecture="efficientnet_lite", data__root=str(tmp_path / "no-such-data"))
    code, text = run_cli("train", str(recipe), "--out", str(tmp_path / "run"))
    _no_traceback(code, text, 2, "unknown architecture 'efficientnet_lite'", "did you mean 'efficientnet_lite0'")
    recipe.write_text(recipe.read_text().replace("epochs:", "epocs:"))
    code, text = run_cli("train", str(recipe))
    _no_traceback(code, text, 2, "did you mean `train.epochs`")


def test_band_indices_beyond_the_chips_are_refused_when_the_data_is_opened(tiny_recipe, tmp_path: Path) -> None:
    code, text = run_cli("train", str(tiny_recipe(data__bands=[0, 99])), "--out", str(tmp_path / "run"))
    _no_traceback(code, text, 2, "data.bands [99]: out of range", "have 6 bands, indices 0..5")


def test_a_chip_with_other_bands_in_the_training_set_is_named(tiny_recipe, synthetic_root: Path,
                                                             tmp_path: Path) -> None:
    """One 3-band chip among 6-band ones was a numpy broadcast error in the band statistics."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    odd = root / "train" / "Forest" / "Forest_train_0003.tif"
    profile = dict(driver="GTiff", width=32, height=32, count=3, dtype="uint16")
    with rasterio.open(odd, "w", **profile) as ds:
        ds.write(np.full((3, 32, 32), 500, np.uint16))
    code, text = run_cli("train", str(tiny_recipe(data__root=str(root))), "--out", str(tmp_path / "run"))
    _no_traceback(code, text, 1, str(odd), "has 3 bands, the train split's chips have 6", "vision data check")


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 64, "truncated"], ids=["empty", "garbage", "truncated"])
def test_resume_from_a_broken_last_checkpoint_says_what_to_do(tiny_recipe, tmp_path: Path,
                                                              content: bytes | str) -> None:
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    if isinstance(content, str):
        torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 0}, last)
        last.write_bytes(last.read_bytes()[:200])
    else:
        last.write_bytes(content)
    recipe = tiny_recipe()
    code, text = run_cli("train", str(recipe), "--out", str(run), "--resume")
    _no_traceback(code, text, 1, str(last), "not a readable checkpoint", "--resume cannot continue from it",
                  f"delete {last}")
    torch.save({"model": {}, "epoch": 0}, last)  # readable, but not a training state
    code, text = run_cli("train", str(recipe), "--out", str(run), "--resume")
    _no_traceback(code, text, 1, "not a training state")


def test_evaluate_and_audit_refuse_to_replace_their_output(trained_run: Path, synthetic_root: Path,
                                                           tmp_path: Path) -> None:
    """One overwrite rule: `evaluate --out` and `audit --json` used to replace silently."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    test = str(synthetic_root / "test")
    code, text = run_cli("evaluate", str(trained_run), test, "--out", str(out), "--no-progress")
    _no_traceback(code, text, 2, "metrics.json exists", "--overwrite")
    assert (out / "metrics.json").read_text() == "{}"
    code, text = run_cli("evaluate", str(trained_run), test, "--out", str(out), "--overwrite", "-b", "8")
    assert code == 0, text
    assert json.loads((out / "metrics.json").read_text())["n"] == 32

    report = tmp_path / "audit.json"
    report.write_text("keep")
    args = ["audit", str(trained_run / "model.onnx"), test, "--group-by", "brightness_quartile", "--json",
            str(report), "--n-boot", "50"]
    code, text = run_cli(*args)
    _no_traceback(code, text, 2, "audit.json exists", "--overwrite")
    assert report.read_text() == "keep"
    code, text = run_cli(*args, "--overwrite")
    assert code == 0, text
    assert set(json.loads(report.read_text())["groups"]) == {"Q1 darkest", "Q2", "Q3", "Q4 brightest"}


def test_every_training_command_takes_the_shared_options() -> None:
    """The MODEL argument, --out/-o, --overwrite, --progress and --batch-size/-b, as the other
    packages' commands spell them (`vision.cli_options`)."""
    want = {"train": ["--out", "-o", "--progress"],
            "evaluate": ["MODEL", "--out", "-o", "--overwrite", "--batch-size", "-b", "--progress"],
            "export": ["MODEL", "--out", "-o", "--overwrite", "--progress", "--max-diff"],
            "explain": ["MODEL", "--out", "-o", "--overwrite"],
            "audit": ["MODEL", "--overwrite", "--batch-size", "-b"]}
    for command, options in want.items():
        code, text = run_cli(command, "--help", width=250)
        assert code == 0 and "Example" in text, text
        for option in options:
            assert option in text, (command, option)



def test_paths_with_rich_markup_are_printed_as_they_are(tiny_recipe, tmp_path: Path) -> None:
    """`[/x]` in a run folder was a Rich MarkupError (or vanished from the line) wherever vision
    train printed the path: the run, its resume and its "already completed" line."""
    run = tmp_path / "run[/x]" / "[bold]r"
    recipe = tiny_recipe(train__epochs=1)
    code, text = run_cli("train", str(recipe), "--out", str(run))
    _no_traceback(code, text, 0, f"{run}{os.sep}report")
    code, text = run_cli("train", str(recipe), "--out", str(run), "--resume")
    _no_traceback(code, text, 0, f"Training already completed in {run}")
