"""Model soups (`training.soup`, recipe ``train.soup``).

What is checked, on the synthetic set with `tiny_cnn`: the average is the mean of floating
tensors and keeps counters; a soup run trains each ingredient (seed, seed + 1) into its own
folder from the same starting weights, writes their exact average as its ``best.pt``, exports
that model, records the ingredients in ``metrics.json``, the model card and MLflow; a run cut
off inside an ingredient refuses to restart without ``--resume`` and, with it, skips the
ingredients that are done and continues the one that was not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.onnx_helpers import assert_onnx_is_best_checkpoint
from training import interpolate, soup
from training.checkpoint import CheckpointError, InferenceCheckpoint, load_checkpoint
from training.trainer import run_training
from vision.config import load_experiment
from vision.errors import ConfigError


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return InferenceCheckpoint.load(run / "checkpoints" / "best.pt").state_dict


def test_the_average_is_the_mean_of_floats_and_keeps_the_first_counters() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "half": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, -2.0]), "half": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(9)}
    c = {"w": torch.tensor([2.0, 3.0]), "half": torch.tensor([6.0], dtype=torch.float16), "n": torch.tensor(1)}
    out = soup.average([a, b, c])
    assert torch.equal(out["w"], torch.tensor([2.0, 1.0]))
    assert out["half"].dtype == torch.float16 and float(out["half"]) == 3.0
    assert int(out["n"]) == 3
    with pytest.raises(CheckpointError, match="ingredient 2"):
        soup.average([a, {"w": torch.zeros(3), "half": a["half"], "n": a["n"]}])
    with pytest.raises(CheckpointError, match="at least one"):
        soup.average([])


def test_a_soup_run_exports_the_average_of_its_ingredients(tiny_recipe, mlflow_store, tmp_path: Path) -> None:
    import mlflow

    recipe = tiny_recipe(model__name="tiny_soup", train__epochs=2, train__soup=2, train__ema_decay=0.9)
    out = tmp_path / "soup"
    metrics = run_training(load_experiment(recipe), out, progress=False).metrics

    folders = [out / "ingredients" / "seed-7", out / "ingredients" / "seed-8"]
    done = [json.loads((f / "metrics.json").read_text()) for f in folders]
    assert all(d["status"] == "complete" and d["ingredient"] for d in done)
    assert [load_experiment(f / "config.yaml").seed for f in folders] == [7, 8]
    assert all(not (f / "model.onnx").exists() for f in folders)  # ingredients are not exported
    first, second = (_weights(f) for f in folders)
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    kept = _weights(out)
    for k, v in kept.items():
        if v.is_floating_point():
            assert torch.allclose(v, (first[k].double() + second[k].double()).div(2).to(v.dtype), atol=1e-7), k

    rec = metrics["soup"]
    assert [i["seed"] for i in rec["ingredients"]] == [7, 8] and rec["n"] == 2
    assert [i["val_accuracy"] for i in rec["ingredients"]] == [d["val_accuracy"] for d in done]
    assert {r["seed"] for r in metrics["history"]} == {7, 8} and len(metrics["history"]) == 4
    assert json.loads((out / "metrics.json").read_text())["soup"] == rec
    assert "A model soup: the mean of the weights of 2 models" in (out / "MODEL_CARD.md").read_text()
    logged = mlflow.tracking.MlflowClient().get_run(metrics["mlflow_run_id"]).data.metrics
    assert {"seed-7/val_accuracy", "seed-8/val_accuracy", "test_accuracy"} <= set(logged)
    assert_onnx_is_best_checkpoint(out)


def test_every_ingredient_starts_from_the_same_weights(tiny_recipe, mlflow_store, tmp_path: Path) -> None:
    # A learning rate too small to move the weights: each ingredient ends where it started.
    recipe = tiny_recipe(model__name="tiny_soup_start", train__epochs=1, train__soup=2, train__lr=1e-12,
                         train__weight_decay=0.0)
    out = tmp_path / "still"
    run_training(load_experiment(recipe), out, progress=False)
    start = load_checkpoint(out / interpolate.START_FILE)["state_dict"]
    for seed in (7, 8):
        trained = load_checkpoint(out / "ingredients" / f"seed-{seed}" / "checkpoints" / "last.pt")["model"]
        weights = [k for k in start if k.endswith(".weight") and start[k].ndim > 1]
        assert weights and all(torch.allclose(trained[k], start[k], atol=1e-8) for k in weights), seed


def test_a_run_cut_off_in_an_ingredient_resumes_it_and_skips_those_done(
        tiny_recipe, mlflow_store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow

    cfg = load_experiment(tiny_recipe(model__name="tiny_soup_resume", train__epochs=1, train__soup=2))
    out = tmp_path / "cut"
    first = run_training(cfg, out, progress=False).metrics
    kept = _weights(out)
    before = {f.name: _weights(f) for f in (out / "ingredients").iterdir()}
    # An ingredient's folder is not a run: it was never calibrated, exported or registered.
    with pytest.raises(ConfigError, match="is an ingredient of the model soup in"):
        run_training(load_experiment(out / "ingredients" / "seed-7" / "config.yaml"), out / "ingredients" / "seed-7",
                     progress=False)
    # As if the run had stopped after the second ingredient's last epoch, before it was marked done.
    (out / "metrics.json").unlink()
    (out / "ingredients" / "seed-8" / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="holds an unfinished soup: pass --resume"):
        run_training(cfg, out, progress=False)
    other = load_experiment(tiny_recipe(model__name="tiny_soup_resume", train__epochs=1, train__soup=2, seed=8))
    with pytest.raises(ConfigError, match="unfinished soup of a different recipe"):
        run_training(other, out, resume=True, progress=False)
    capsys.readouterr()
    metrics = run_training(cfg, out, resume=True, progress=False).metrics
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "Resuming the model soup" in said and "Training already completed" in said and "Resuming" in said
    assert metrics["status"] == "complete" and [i["seed"] for i in metrics["soup"]["ingredients"]] == [7, 8]
    for name, state in before.items():
        assert all(torch.equal(state[k], _weights(out / "ingredients" / name)[k]) for k in state)
    again = _weights(out)
    assert all(torch.equal(kept[k], again[k]) for k in kept)
    # One MLflow run across the cut: the resume reopened it, and it holds both ingredients' epochs.
    assert metrics["mlflow_run_id"] == first["mlflow_run_id"]
    client = mlflow.tracking.MlflowClient()
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"seed-7/val_accuracy", "seed-8/val_accuracy"} <= set(runs[0].data.metrics)
    card = (out / "MODEL_CARD.md").read_text()
    assert "Epochs run 1 of 1; best epoch 1, 1 (one per ingredient)" in card
