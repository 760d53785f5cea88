"""Distillation (`training.distill`): a one-pass student from the d8 `trained_run` teacher.

The teacher is the session's `tiny_cnn` run with 8 test-time views; the students are real
runs on the synthetic set. What is checked: the cached targets are the teacher's d8
probabilities (recomputed here from its PyTorch weights, view by view), the cache is the
right choice only for symmetry augmentations, a teacher of other classes/bands/size is
refused before training, and a resumed run reads the cache back instead of recomputing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training import distill
from training.checkpoint import InferenceCheckpoint
from training.trainer import run_training
from vision.config import AugmentationConfig, DistillConfig, load_experiment, validate_experiment
from vision.data import FolderSource
from vision.errors import ConfigError


def _fresh_d8_log_probs(run: Path, chip: np.ndarray) -> np.ndarray:
    """The teacher's calibrated d8 log-probabilities of one chip (H x W x C), from its PyTorch
    weights: the 8 symmetries one by one, softmax, mean, log, over its temperature."""
    ck = InferenceCheckpoint.load(run / "checkpoints" / "best.pt")
    model = ck.build_model(run / "checkpoints" / "best.pt")
    model.tta = "none"
    x = torch.from_numpy(chip.transpose(2, 0, 1).astype(np.float32))[None]
    views = []
    for k in range(4):
        r = torch.rot90(x, k, (-2, -1))
        views += [r, r.flip(-1)]
    with torch.no_grad():
        probs = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    return torch.log_softmax(probs.log() / ck.temperature, 1).numpy()[0]


def _student(tiny_recipe, teacher: Path, **overrides):
    base = {"model__tta": "none", "model__name": "tiny_student", "train__epochs": 2,
            "distill": {"teacher": str(teacher), "temperature": 2.0, "alpha": 0.7}}
    return load_experiment(tiny_recipe(**{**base, **overrides}))


def test_cached_targets_are_the_teachers_d8_probabilities_and_resume_reads_them(
        trained_run: Path, tiny_recipe, mlflow_store, synthetic_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The recipe's augmentations (HorizontalFlip, RandomRotate90) are d8 symmetries: cached.
    cfg = _student(tiny_recipe, trained_run, augmentations=[{"name": "HorizontalFlip"}, {"name": "VerticalFlip"},
                                                            {"name": "RandomRotate90"}])
    out = tmp_path / "student"
    from training import trainer

    real_save, passes = trainer.save_checkpoint, []
    real_pass = distill.teacher_pass

    def counted_pass(*args, **kwargs):
        passes.append(1)
        return real_pass(*args, **kwargs)

    def save_then_interrupt(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 0:
            raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(distill, "teacher_pass", counted_pass)
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, out)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    cache = out / distill.CACHE_FILE
    assert passes == [1] and cache.is_file()
    before = cache.read_bytes()

    # The cache holds, per training chip in split order, the teacher's calibrated d8 output.
    with np.load(cache) as z:
        cached = z["log_probs"]
    train = FolderSource(synthetic_root / "train", json.loads((trained_run / "lineage.json").read_text())["classes"])
    assert cached.shape == (len(train), 4)
    teacher = distill.open_teacher(cfg.distill)  # type: ignore[arg-type]
    for i in (0, len(train) // 2, len(train) - 1):
        chip = train.read(i)
        fresh = _fresh_d8_log_probs(trained_run, chip)
        assert np.abs(np.exp(cached[i]) - np.exp(fresh)).max() < 1e-4, i
        # ... and it is the same for every augmented copy of the chip (why caching is exact).
        for k in range(4):
            for flip in (False, True):
                v = np.rot90(chip, k, (0, 1))
                v = v[:, ::-1] if flip else v
                got = teacher.log_probs(v.transpose(2, 0, 1)[None].astype(np.float32))[0]
                assert np.abs(np.exp(got) - np.exp(cached[i])).max() < 1e-5

    # Resume: the targets are read back, not recomputed.
    monkeypatch.setattr(distill, "teacher_pass", lambda *a, **k: pytest.fail("the teacher pass ran again"))
    result = run_training(cfg, out, resume=True)
    assert cache.read_bytes() == before
    assert result.metrics["status"] == "complete" and len(result.metrics["history"]) == 2

    # Recorded: lineage, MLflow params, the model card.
    record = json.loads((out / "lineage.json").read_text())["distillation"]
    assert record["mode"] == "cached" and "only permutes them" in record["mode_reason"]
    assert record["teacher_sha256"] and record["teacher_tta"] == "d8" and record["cache_seconds"] >= 0
    from mlflow.tracking import MlflowClient

    params = MlflowClient().get_run(result.metrics["mlflow_run_id"]).data.params
    assert params["distill.mode"] == "cached" and params["distill.teacher"] == str(trained_run)
    assert params["distill.temperature"] == "2.0" and "permutes" in params["distill.mode_reason"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "- Distilled from tiny_trained" in card and "teacher targets cached:" in card
    assert json.loads((out / "model_card.json").read_text())["training"]["distillation"]["mode"] == "cached"


def test_a_non_symmetry_augmentation_takes_the_teacher_on_the_fly(trained_run: Path, tiny_recipe, mlflow_store,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    augs = [{"name": "HorizontalFlip"}, {"name": "Affine", "params": {"scale": [0.8, 1.2], "p": 1.0}}]
    cfg = _student(tiny_recipe, trained_run, augmentations=augs, train__epochs=1, train__max_steps_per_epoch=3)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = distill.Teacher.log_probs

    def spy(self, x):
        out = real(self, x)
        seen.append((torch.from_numpy(np.array(x)), torch.from_numpy(out)))
        return out

    monkeypatch.setattr(distill.Teacher, "log_probs", spy)
    monkeypatch.setattr(distill, "teacher_pass", lambda *a, **k: pytest.fail("no cache in on-the-fly mode"))
    out = tmp_path / "otf"
    run_training(cfg, out)
    record = json.loads((out / "lineage.json").read_text())["distillation"]
    assert record["mode"] == "on-the-fly" and record["mode_reason"].startswith("Affine changes what the teacher sees")
    assert not (out / distill.CACHE_FILE).exists() and "cache_seconds" not in record
    assert len(seen) == 3 and all(len(x) == 8 for x, _ in seen)  # one teacher pass per augmented batch

    # The choice itself.
    mode, why = distill.choose_mode([AugmentationConfig(name="HorizontalFlip")], "flips")
    assert mode == "cached"
    mode, why = distill.choose_mode([AugmentationConfig(name="RandomRotate90")], "flips")
    assert mode == "on-the-fly" and "RandomRotate90" in why  # a flips teacher does not average rotations
    assert distill.choose_mode([AugmentationConfig(name="HorizontalFlip")], None)[0] == "on-the-fly"
    assert distill.choose_mode([], None)[0] == "cached"


@pytest.mark.parametrize("overrides, message", [
    ({"model__input_size": [40, 40]}, r"input size \[32, 32\] \(model.input_size: \[40, 40\]\)"),
    ({"data__classes": ["Water", "Forest", "Cropland", "Urban"]}, "its classes"),
    ({"data__bands": ["B02", "B03", "B04"]}, r"its bands \['B02', 'B03', 'B04', 'B08', 'B11', 'B12'\]"),
], ids=["input-size", "classes", "bands"])
def test_a_teacher_that_does_not_fit_is_refused_before_training(trained_run: Path, tiny_recipe, mlflow_store,
                                                                tmp_path: Path, overrides, message) -> None:
    cfg = _student(tiny_recipe, trained_run, **overrides)
    out = tmp_path / "refused"
    with pytest.raises(ConfigError, match=message) as err:
        run_training(cfg, out)
    assert "does not fit this recipe" in str(err.value)
    assert not (out / "checkpoints").exists() and not (out / "lineage.json").exists()


def test_a_missing_teacher_is_refused_first(tiny_recipe, tmp_path: Path, monkeypatch) -> None:
    cfg = _student(tiny_recipe, tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no such run folder or .onnx file"):
        run_training(cfg, tmp_path / "out")
    (tmp_path / "unfinished").mkdir()
    cfg = _student(tiny_recipe, tmp_path / "unfinished")
    with pytest.raises(ConfigError, match="no model.onnx in that folder"):
        run_training(cfg, tmp_path / "out")


def test_the_loss_mixes_kl_at_temperature_and_cross_entropy() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(5, 4, requires_grad=True), torch.log_softmax(torch.randn(5, 4), 1)
    y = torch.tensor([0, 1, 2, 3, 0])
    T = 3.0
    kl = (torch.softmax(t / T, 1) * (torch.log_softmax(t / T, 1) - torch.log_softmax(s / T, 1))).sum(1).mean()
    ce = torch.nn.functional.cross_entropy(s, y, label_smoothing=0.1)
    got = distill.DistillLoss(T, 0.25, label_smoothing=0.1)(s, y, t)
    assert torch.allclose(got, 0.25 * T * T * kl + 0.75 * ce, atol=1e-6)
    # A student equal to the teacher (alpha 1) has no soft loss and no gradient.
    same = t.clone().requires_grad_(True)
    loss = distill.DistillLoss(T, 1.0)(same, y, t)
    loss.backward()
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and float(same.grad.abs().max()) < 1e-6


def test_the_recipe_section_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"data": {"source": "folder", "root": "x"}, "model": {"architecture": "tiny_cnn", "name": "m"}}
    for bad, message in [({"teacher": "r", "alpha": 0}, "distill.alpha"), ({"teacher": "r", "alpha": 1.5}, "alpha"),
                         ({"teacher": "r", "temperature": 0}, "distill.temperature"),
                         ({"teacher": ""}, "distill.teacher"), ({"temperature": 2}, "distill.teacher"),
                         ({"teacher": "r", "temprature": 2}, "did you mean `distill.temperature`"),
                         ({"teacher": "${VISION_NO_SUCH_VAR}/r"}, "VISION_NO_SUCH_VAR is not set")]:
        with pytest.raises(ConfigError, match=message):
            validate_experiment({**base, "distill": bad})
    monkeypatch.delenv("VISION_RUNS_DIR", raising=False)
    assert validate_experiment({**base, "distill": {"teacher": "${VISION_RUNS_DIR:-runs}/t"}}).distill == \
        DistillConfig(teacher="runs/t")
    monkeypatch.setenv("VISION_RUNS_DIR", "/data/runs")
    assert validate_experiment({**base, "distill": {"teacher": "${VISION_RUNS_DIR:-runs}/t"}}).distill.teacher \
        == "/data/runs/t"
    # A recipe without the section dumps (and hashes) as before.
    from vision.config import dump_experiment

    assert "distill" not in dump_experiment(validate_experiment(base))


def test_the_reference_student_recipe_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("VISION_RUNS_DIR", "/somewhere/runs")
    student = load_experiment(root / "experiments" / "eurosat_rgb_lite0_distilled.yaml")
    reference = load_experiment(root / "experiments" / "eurosat_rgb_lite0.yaml")
    assert student.distill is not None and student.distill.teacher == "/somewhere/runs/rgb-tta"
    assert student.model.tta == "none" and reference.model.tta == "d8"
    assert distill.choose_mode(student.augmentations, reference.model.tta)[0] == "cached"
    assert student.model.weights == "/somewhere/runs/rgb-tta/checkpoints/best.pt"
    same = ("data", "augmentations", "calibration", "promotion", "seed")
    assert all(getattr(student, k) == getattr(reference, k) for k in same)
    # the schedule is the one knowingly different part: short and gentle from the teacher's
    # weights, then interpolated back toward them
    kept = ("batch_size", "weight_decay", "label_smoothing", "monitor", "amp", "channels_last")
    assert all(getattr(student.train, k) == getattr(reference.train, k) for k in kept)
    assert student.train.epochs < reference.train.epochs and student.train.lr < reference.train.lr
    assert student.train.interpolate_start and reference.train.interpolate_start is None
