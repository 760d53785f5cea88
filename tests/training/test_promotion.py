"""The promotion gate: refusals name every failing check; --force --reason records who and why."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from tests.cli_runner import run_training_cli as run_cli
from training.promotion import Evidence, evaluate_gate, evidence_from_card
from training.trainer import run_training
from vision.config import CalibrationConfig, PromotionConfig, load_experiment
from vision.errors import ConfigError


def _card(accuracy: float = 0.99, ece: float = 0.01, groups: dict[str, float] | None = None) -> dict:
    sub = ({"status": "ok", "group_by": "utm_zone",
            "groups": {g: {"n": 10, "accuracy": {"value": v, "ci": [v - 0.05, min(v + 0.05, 1.0)]}}
                       for g, v in groups.items()}}
           if groups is not None else {"status": "not requested"})
    return {"model": {"name": "m", "version": "1"}, "metrics": {"accuracy": accuracy, "split": "test"},
            "calibration": {"ece_after": ece}, "subgroups": sub}


def test_gate_passes_when_every_minimum_is_met() -> None:
    ev = evidence_from_card(_card(groups={"29N": 0.97, "31N": 0.99}))
    ev.promotion = PromotionConfig(min_accuracy=0.985, min_group_accuracy=0.95, group_by="utm_zone",
                                  min_group_size=10)
    ev.calibration = CalibrationConfig(ece_max=0.02)
    result = evaluate_gate(ev)
    assert result.passed and [c.name for c in result.checks] == [
        "model_card", "accuracy", "subgroup_audit", "group_accuracy[29N]", "group_accuracy[31N]", "ece"]


def test_groups_below_min_group_size_are_reported_not_gated() -> None:
    ev = evidence_from_card(_card(groups={"29N": 0.50, "31N": 0.99}))
    ev.promotion = PromotionConfig(min_accuracy=0.985, min_group_accuracy=0.95, group_by="utm_zone",
                                  min_group_size=30)  # every group has n=10
    result = evaluate_gate(ev)
    assert result.passed
    small = next(c for c in result.checks if c.name == "group_accuracy[29N]")
    assert "too small to judge" in small.detail and "n=10 < min_group_size 30" in small.detail


def test_gate_names_each_failing_check() -> None:
    ev = evidence_from_card(_card(accuracy=0.97, ece=0.05, groups={"29N": 0.90, "31N": 0.99, "33N": 0.80}))
    ev.promotion = PromotionConfig(min_accuracy=0.985, min_group_accuracy=0.95, group_by="utm_zone",
                                  min_group_size=10)
    ev.calibration = CalibrationConfig(ece_max=0.02)
    result = evaluate_gate(ev)
    assert [c.name for c in result.failures] == ["accuracy", "group_accuracy[29N]", "group_accuracy[33N]", "ece"]
    assert "0.9700 < min_accuracy 0.985" in result.failures[0].detail
    assert "utm_zone=33N: accuracy 0.8000 (n=10" in result.failures[2].detail
    assert "0.0500 > ece_max 0.02" in result.failures[3].detail


def test_gate_without_card_or_audit() -> None:
    ev = Evidence(card=None, promotion=PromotionConfig(min_accuracy=0.9, min_group_accuracy=0.9,
                                                       group_by="brightness_quartile"),
                  accuracy=0.95)
    names = {c.name: c.passed for c in evaluate_gate(ev).checks}
    assert names == {"model_card": False, "accuracy": True, "subgroup_audit": False}
    ev = evidence_from_card(_card(groups={"29N": 1.0}))
    ev.promotion = PromotionConfig(group_by="brightness_quartile")
    assert "asks for 'brightness_quartile'" in evaluate_gate(ev).failures[0].detail
    assert evaluate_gate(evidence_from_card(None)).failures[0].name == "model_card"


def test_promote_refuses_then_force_records_who_and_why(tiny_recipe, mlflow_store, tmp_path: Path) -> None:
    recipe = tiny_recipe(train__epochs=1, train__threads=1,
                         promotion={"min_accuracy": 0.999, "min_group_accuracy": 0.999,
                                    "group_by": "brightness_quartile"},
                         calibration={"ece_max": 0.001})
    run_training(load_experiment(recipe), tmp_path / "run", recipe="tiny")
    from training import tracking

    code, text = run_cli("models", "promote", "tiny_synthetic", "1", "--alias", "champion")
    assert code == 1, text
    assert "refused" in text and "accuracy" in text and "group_accuracy[Q" in text and "ece" in text
    assert "min_accuracy 0.999" in text and "ece_max 0.001" in text
    c = tracking.client()
    assert "champion" not in (c.get_registered_model("tiny_synthetic").aliases or {})

    code, text = run_cli("models", "promote", "tiny_synthetic", "1", "--force")
    assert code == 2 and "--reason" in text
    code, text = run_cli("models", "promote", "tiny_synthetic", "1", "--force", "--reason", "demo for the lead")
    assert code == 0 and "forced" in text, text
    assert str(c.get_registered_model("tiny_synthetic").aliases["champion"]) == "1"
    tags = tracking.get_version("tiny_synthetic", "1").tags
    assert tags["promotion.forced"] == "true" and tags["promotion.reason"] == "demo for the lead"
    assert tags["promotion.by"] == getpass.getuser() and tags["promotion.alias"] == "champion"
    assert "accuracy" in tags["promotion.failed_checks"] and tags["promotion.at"]

    # Other aliases are not gated; a version without a card is refused for champion.
    code, text = run_cli("models", "promote", "tiny_synthetic", "1", "--alias", "staging")
    assert code == 0 and str(c.get_registered_model("tiny_synthetic").aliases["staging"]) == "1"
    mv = c.get_model_version("tiny_synthetic", "1")
    v2 = c.create_model_version("tiny_synthetic", source=mv.source, run_id=None)
    code, text = run_cli("models", "promote", "tiny_synthetic", str(v2.version))
    assert code == 1 and "model_card" in text
    code, text = run_cli("models", "promote", "tiny_synthetic", "9")
    assert code == 2 and "no registered version" in text


@pytest.mark.parametrize("alias", ["champion"])
def test_force_needs_a_reason_before_touching_mlflow(alias: str, mlflow_store) -> None:
    from training.promotion import promote

    with pytest.raises(ConfigError, match="--reason"):
        promote("nothing", "1", alias, force=True, reason="  ")
