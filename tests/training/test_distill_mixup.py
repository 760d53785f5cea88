"""Mixup distillation (``distill.mixup``): the teacher is asked about the mixed chips themselves.

A real `tiny_cnn` student is distilled from the session's d8 `trained_run` teacher with mixup:
the targets are made on the fly even though the augmentations are d8 symmetries, the teacher
sees each mixed batch exactly (two chips of the loader, mixed by one lam), the labels' term
mixes alike, and the same seed draws the same batches again (a resumed epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training import distill
from training.trainer import run_training
from vision.config import AugmentationConfig, load_experiment, validate_experiment
from vision.errors import ConfigError


def test_mix_mixes_chips_and_labels_alike() -> None:
    x = torch.arange(4 * 2 * 2 * 2, dtype=torch.uint8).reshape(4, 2, 2, 2)
    y = torch.tensor([0, 1, 2, 1])
    order = torch.tensor([2, 0, 3, 1])
    mixed, major, soft = distill.mix(x, y, 3, 0.3, order)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, 0.3 * x.float() + 0.7 * x.float()[order])
    assert major.tolist() == [2, 0, 1, 1]  # lam < 0.5: the shuffled chip weighs more
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert soft[0].tolist() == pytest.approx([0.3, 0.0, 0.7])
    assert soft[3].tolist() == pytest.approx([0.0, 1.0, 0.0])  # a chip mixed with one of its class
    _, major, _ = distill.mix(x, y, 3, 0.5, order)
    assert torch.equal(major, y)


def test_the_labels_term_of_a_mixed_batch_is_the_mixed_cross_entropy() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(6, 3), torch.log_softmax(torch.randn(6, 3), 1)
    y, order, lam = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 4, 5, 3]), 0.8
    _, major, soft = distill.mix(torch.zeros(6, 1, 1, 1), y, 3, lam, order)
    ce = lam * torch.nn.functional.cross_entropy(s, y) + (1 - lam) * torch.nn.functional.cross_entropy(s, y[order])
    kl = distill.DistillLoss(2.0, 1.0)(s, major, t)
    got = distill.DistillLoss(2.0, 0.6)(s, major, t, soft)
    assert torch.allclose(got, 0.6 * kl + 0.4 * ce, atol=1e-6)


def test_mixup_takes_the_teacher_on_the_fly_on_the_mixed_chips(trained_run: Path, tiny_recipe, mlflow_store,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    augs = [{"name": "HorizontalFlip"}, {"name": "RandomRotate90"}]  # d8 symmetries: cached without mixup
    assert distill.choose_mode([AugmentationConfig(**a) for a in augs], "d8")[0] == "cached"
    cfg = load_experiment(tiny_recipe(
        model__tta="none", model__name="tiny_mixup", train__epochs=1, train__max_steps_per_epoch=3,
        augmentations=augs, distill={"teacher": str(trained_run), "temperature": 2.0, "alpha": 0.7, "mixup": 0.4}))
    seen: list[np.ndarray] = []
    real = distill.Teacher.log_probs

    def spy(self, x):
        seen.append(np.array(x))
        return real(self, x)

    monkeypatch.setattr(distill.Teacher, "log_probs", spy)
    monkeypatch.setattr(distill, "teacher_pass", lambda *a, **k: pytest.fail("no cache with mixup"))
    out = tmp_path / "mixup"
    run_training(cfg, out)
    record = json.loads((out / "lineage.json").read_text())["distillation"]
    assert record["mode"] == "on-the-fly" and record["mixup"] == 0.4 and "mixup 0.4" in record["mode_reason"]
    assert not (out / distill.CACHE_FILE).exists()
    assert len(seen) == 3 and all(len(x) == 8 for x in seen)
    # Mixed chips: values between the uint8 levels of the synthetic chips, not chips as read.
    assert any(not np.allclose(x, np.round(x)) for x in seen)
    card = (out / "MODEL_CARD.md").read_text()
    assert "mixup Beta(0.4, 0.4) with the teacher on the mixed chips" in card

    # The teacher saw exactly the mixed batch the student trained on, drawn again by the same seed.
    class Fixed:
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            for _ in range(3):
                yield torch.randint(0, 255, (8, 6, 32, 32), generator=g).float(), torch.randint(0, 4, (8,), generator=g)

    teacher = distill.open_teacher(cfg.distill)
    one = list(distill.OnTheFly(Fixed(), teacher, 0.4, seed=(42, 0, 0)))
    two = list(distill.OnTheFly(Fixed(), teacher, 0.4, seed=(42, 0, 0)))
    other = list(distill.OnTheFly(Fixed(), teacher, 0.4, seed=(42, 1, 0)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[3], b[3]) for a, b in zip(one, two, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, other, strict=True))
    for x, _, lp, soft in one:
        assert np.allclose(lp.numpy(), teacher.log_probs(x.numpy()), atol=1e-6)
        assert torch.allclose(soft.sum(1), torch.ones(8))


def test_mixup_is_bounded() -> None:
    base = {"data": {"source": "folder", "root": "x"}, "model": {"architecture": "tiny_cnn", "name": "m"}}
    for bad in (-0.1, 11):
        with pytest.raises(ConfigError, match="distill.mixup"):
            validate_experiment({**base, "distill": {"teacher": "r", "mixup": bad}})
    assert validate_experiment({**base, "distill": {"teacher": "r"}}).distill.mixup == 0.0
