"""Weight interpolation toward the starting weights (`training.interpolate`, WiSE-FT).

What is checked, on the synthetic set with `tiny_cnn`: the fraction kept is the one best on
val (a good start and broken training end keep a small ``w``; the reverse keeps ``w = 1``);
a real run started from the session's trained model saves its starting weights, exports and
records exactly ``(1 - w) * start + w * trained`` with the recorded ``w``, and says so in
its model card; a resumed run reads its saved start back; recipes refuse fractions outside
(0, 1] and expand ``${VAR}`` in ``model.weights``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.onnx_helpers import assert_onnx_is_best_checkpoint
from training import interpolate
from training.checkpoint import CheckpointError, InferenceCheckpoint, load_checkpoint
from training.data import eval_loader
from training.progress import Reporter
from training.trainer import run_training
from vision.config import load_experiment
from vision.data import FolderSource
from vision.errors import ConfigError


def _trained(run: Path) -> tuple[torch.nn.Module, list[str]]:
    ck = InferenceCheckpoint.load(run / "checkpoints" / "best.pt")
    model = ck.build_model(run / "checkpoints" / "best.pt")
    model.tta = "none"
    return model.eval(), ck.classes


def _broken(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The same tensors with their signs scrambled: a model that has forgotten the task."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v * torch.randint(0, 2, v.shape, generator=g).mul(2).sub(1).to(v.dtype)
                if v.is_floating_point() and v.ndim > 1 else v) for k, v in state.items()}


def test_mix_interpolates_floats_and_keeps_the_trained_counters() -> None:
    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    trained = {"w": torch.tensor([2.0, 4.0, -8.0]), "n": torch.tensor(9)}
    out = interpolate.mix(start, trained, 0.25)
    assert torch.equal(out["w"], torch.tensor([0.5, 1.0, -2.0]))
    assert int(out["n"]) == 9
    assert torch.equal(interpolate.mix(start, trained, 1.0)["w"], trained["w"])


def test_the_fraction_kept_is_the_one_best_on_val(trained_run: Path, synthetic_root: Path) -> None:
    model, classes = _trained(trained_run)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    broken = _broken(good)
    val = eval_loader(FolderSource(synthetic_root / "val", classes=classes), 16)
    report = Reporter(False)

    # A good start, and training that broke the model: the point nearest the start wins.
    model.load_state_dict(broken)
    choice = interpolate.choose(model, good, [0.25, 0.5, 0.75], val, classes, "val_accuracy",
                                torch.device("cpu"), report)
    by_w = {r["w"]: r for r in choice.candidates}
    assert sorted(by_w) == [0.25, 0.5, 0.75, 1.0]
    assert by_w[0.25]["val_accuracy"] > by_w[1.0]["val_accuracy"]
    assert choice.weight == max(by_w, key=lambda w: (by_w[w]["val_accuracy"], -by_w[w]["val_loss"], w))
    assert choice.weight < 1.0
    kept = model.state_dict()
    expected = interpolate.mix(good, broken, choice.weight)
    assert all(torch.allclose(kept[k].float(), expected[k].float()) for k in kept)

    # A broken start and a good model: the trained weights themselves are kept.
    model.load_state_dict(good)
    choice = interpolate.choose(model, broken, [0.25, 0.5], val, classes, "val_loss", torch.device("cpu"), report)
    assert choice.weight == 1.0
    assert all(torch.equal(model.state_dict()[k], good[k]) for k in good)
    assert choice.record()["chosen"] == 1.0


def test_a_run_from_a_trained_model_records_and_exports_the_interpolated_weights(
        trained_run: Path, tiny_recipe, mlflow_store, tmp_path: Path) -> None:
    recipe = tiny_recipe(model__weights=str(trained_run / "checkpoints" / "best.pt"), model__name="tiny_wise",
                         train__epochs=1, train__lr=0.02, train__interpolate_start=[0.25, 0.5, 0.75])
    out = tmp_path / "wise"
    metrics = run_training(load_experiment(recipe), out, progress=False).metrics

    rec = metrics["interpolation"]
    ws = [c["w"] for c in rec["candidates"]]
    assert ws == [0.25, 0.5, 0.75, 1.0]
    best = max(rec["candidates"], key=lambda c: (c["val_accuracy"], -c["val_loss"], c["w"]))
    assert rec["chosen"] == best["w"]
    # The start saved is the trained_run model's weights, as the recipe named them.
    start = load_checkpoint(out / interpolate.START_FILE)["state_dict"]
    teacher = InferenceCheckpoint.load(trained_run / "checkpoints" / "best.pt").state_dict
    assert all(torch.equal(start[k], teacher[k]) for k in start if k.startswith("backbone."))
    # One epoch, no average: the trained weights are last.pt's; best.pt holds the mix kept.
    trained = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    kept = InferenceCheckpoint.load(out / "checkpoints" / "best.pt").state_dict
    expected = interpolate.mix(start, trained, rec["chosen"])
    assert all(torch.allclose(kept[k].float(), expected[k].float(), atol=1e-6) for k in kept)
    assert_onnx_is_best_checkpoint(out)  # the exported graph is that model
    card = (out / "MODEL_CARD.md").read_text()
    assert f"WiSE-FT): kept w = {rec['chosen']}" in card
    assert json.loads((out / "metrics.json").read_text())["interpolation"] == rec


def test_a_resumed_run_reads_its_saved_start_back(trained_run: Path, tmp_path: Path) -> None:
    model, _ = _trained(trained_run)
    saved = interpolate.keep_start(model, tmp_path, resume=False)
    assert (tmp_path / interpolate.START_FILE).is_file()
    model.load_state_dict(_broken(saved))  # what model.weights would build now
    again = interpolate.keep_start(model, tmp_path, resume=True)
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    fresh = interpolate.keep_start(model, tmp_path, resume=False)  # a new run: the model as built
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)
    torch.save({"state_dict": [1, 2]}, tmp_path / interpolate.START_FILE)
    with pytest.raises(CheckpointError, match="not the starting weights"):
        interpolate.keep_start(model, tmp_path, resume=True)


@pytest.mark.parametrize("bad", [[0.0], [1.5], [-0.2, 0.5], []])
def test_recipes_refuse_fractions_outside_zero_one(tiny_recipe, trained_run: Path, bad: list[float]) -> None:
    weights = str(trained_run / "checkpoints" / "best.pt")
    with pytest.raises(ConfigError, match="train.interpolate_start"):
        load_experiment(tiny_recipe(model__weights=weights, train__interpolate_start=bad))


@pytest.mark.parametrize("weights", ["none", "imagenet"])
def test_interpolation_needs_a_start_trained_for_the_task(tiny_recipe, weights: str) -> None:
    with pytest.raises(ConfigError, match=f"and {weights} weights have no classifier"):
        load_experiment(tiny_recipe(model__weights=weights, train__interpolate_start=[0.5]))


def test_model_weights_expand_environment_variables(tiny_recipe, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("VISION_RUNS_DIR", str(tmp_path))
    cfg = load_experiment(tiny_recipe(model__weights="${VISION_RUNS_DIR:-runs}/t/checkpoints/best.pt"))
    assert cfg.model.weights == f"{tmp_path}/t/checkpoints/best.pt"
    monkeypatch.delenv("VISION_RUNS_DIR")
    assert load_experiment(tiny_recipe(model__weights="${VISION_RUNS_DIR:-runs}/t.pt")).model.weights == "runs/t.pt"
    with pytest.raises(ConfigError, match="VISION_RUNS_DIR is not set"):
        load_experiment(tiny_recipe(model__weights="${VISION_RUNS_DIR}/t.pt"))
