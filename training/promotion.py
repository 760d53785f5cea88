"""The promotion gate: a version becomes ``champion`` only when its evidence meets the recipe.

Checks, each named in a refusal:

- ``model_card``: the version's run has ``card/model_card.json``;
- ``accuracy``: overall accuracy (test split, else val) >= ``promotion.min_accuracy``;
- ``subgroup_audit`` / ``group_accuracy[G]``: with ``promotion.min_group_accuracy`` (or
  ``group_by``), a subgroup audit exists and every group's accuracy meets the minimum;
- ``ece``: calibrated ECE <= ``calibration.ece_max``.

The minimums come from the recipe the version was trained with (the run's ``config.yaml``).
``force`` promotes anyway and records who and why as tags on the version.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from vision.config import CalibrationConfig, ExperimentConfig, PromotionConfig, validate_experiment
from vision.errors import ConfigError

GATED_ALIASES = frozenset({"champion"})


@dataclass(frozen=True)
class Check:
    """One gate check: its name, outcome and the numbers behind it."""

    name: str
    passed: bool
    detail: str


@dataclass
class Evidence:
    """What the gate judges: the card (or run metrics) and the recipe's declared minimums."""

    card: dict[str, Any] | None
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    accuracy: float | None = None
    ece: float | None = None
    split: str = "test"
    audit: dict[str, Any] | None = None


@dataclass
class GateResult:
    """All checks of one gate evaluation."""

    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def evidence_from_card(card: dict[str, Any] | None, cfg: ExperimentConfig | None = None,
                       run_metrics: dict[str, float] | None = None,
                       audit: dict[str, Any] | None = None) -> Evidence:
    """Gather evidence: the card first; the run's metrics and audit artifact where it is missing.

    Minimums come from ``cfg`` (the run's recipe), else from the card's copy of them.
    """
    if cfg is not None:
        promotion, calibration = cfg.promotion, cfg.calibration
    elif card is not None:
        pr = card.get("promotion", {})
        promotion = PromotionConfig(min_accuracy=pr.get("min_accuracy"),
                                    min_group_accuracy=pr.get("min_group_accuracy"), group_by=pr.get("group_by"),
                                    min_group_size=pr.get("min_group_size", PromotionConfig().min_group_size))
        calibration = CalibrationConfig(ece_max=pr.get("ece_max"))
    else:
        promotion, calibration = PromotionConfig(), CalibrationConfig()
    ev = Evidence(card, promotion, calibration)
    if card is not None:
        ev.accuracy, ev.ece = card["metrics"].get("accuracy"), card["calibration"].get("ece_after")
        ev.split = card["metrics"].get("split", "test")
        sub = card.get("subgroups", {})
        ev.audit = sub if sub.get("status") == "ok" else None
    if run_metrics:
        for split in ("test", "val"):
            if ev.accuracy is None and f"{split}_accuracy" in run_metrics:
                ev.accuracy, ev.split = run_metrics[f"{split}_accuracy"], split
            if ev.ece is None and f"{split}_ece" in run_metrics:
                ev.ece = run_metrics[f"{split}_ece"]
    if ev.audit is None and audit is not None:
        ev.audit = audit
    return ev


def evaluate_gate(ev: Evidence) -> GateResult:
    """Run every check on ``ev``; nothing is short-circuited so a refusal names them all."""
    checks: list[Check] = []
    if ev.card is None:
        checks.append(Check("model_card", False, "no model card (card/model_card.json) in the version's run; "
                                                 "make one with `vision models card NAME VERSION --generate`"))
    else:
        checks.append(Check("model_card", True, f"card of {ev.card['model']['name']} v{ev.card['model']['version']}"))
    pr = ev.promotion
    if pr.min_accuracy is not None:
        if ev.accuracy is None:
            checks.append(Check("accuracy", False, f"no {ev.split} accuracy recorded; min_accuracy {pr.min_accuracy}"))
        else:
            ok = ev.accuracy >= pr.min_accuracy
            checks.append(Check("accuracy", ok, f"{ev.split} accuracy {ev.accuracy:.4f} "
                                                f"{'>=' if ok else '<'} min_accuracy {pr.min_accuracy}"))
    if pr.min_group_accuracy is not None or pr.group_by is not None:
        checks += _group_checks(ev)
    ece_max = ev.calibration.ece_max
    if ece_max is not None:
        if ev.ece is None:
            checks.append(Check("ece", False, f"no calibrated ECE recorded; ece_max {ece_max}"))
        else:
            ok = ev.ece <= ece_max
            checks.append(Check("ece", ok, f"{ev.split} ECE {ev.ece:.4f} {'<=' if ok else '>'} ece_max {ece_max}"))
    return GateResult(checks)


def _group_checks(ev: Evidence) -> list[Check]:
    pr, audit = ev.promotion, ev.audit
    if audit is None:
        return [Check("subgroup_audit", False, f"the recipe declares promotion.group_by={pr.group_by!r} / "
                                               f"min_group_accuracy={pr.min_group_accuracy} but the version has no "
                                               "subgroup audit")]
    if pr.group_by is not None and audit.get("group_by") != pr.group_by:
        return [Check("subgroup_audit", False, f"the audit groups by {audit.get('group_by')!r}, the recipe asks for "
                                               f"{pr.group_by!r}")]
    out = [Check("subgroup_audit", True, f"{len(audit['groups'])} groups by {audit['group_by']}")]
    if pr.min_group_accuracy is None:
        return out
    for g, m in audit["groups"].items():
        acc = m["accuracy"]["value"]
        if m["n"] < pr.min_group_size:
            out.append(Check(f"group_accuracy[{g}]", True, f"{audit['group_by']}={g}: accuracy {acc:.4f} (n={m['n']} < "
                                                           f"min_group_size {pr.min_group_size}: too small to judge; "
                                                           "reported, not gated)"))
            continue
        ok = acc >= pr.min_group_accuracy
        ci = m["accuracy"].get("ci")
        ci_txt = f", 95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        out.append(Check(f"group_accuracy[{g}]", ok, f"{audit['group_by']}={g}: accuracy {acc:.4f} (n={m['n']}"
                                                     f"{ci_txt}) {'>=' if ok else '<'} min_group_accuracy "
                                                     f"{pr.min_group_accuracy}"))
    return out


def gather_evidence(name: str, version: str) -> Evidence:
    """Evidence for a registered version, from its MLflow run (card, config.yaml, metrics)."""
    from training import tracking
    from training.model_card import fetch_card

    mv = tracking.get_version(name, version)
    card, _ = fetch_card(name, version)
    cfg = None
    run_metrics: dict[str, float] = {}
    audit = None
    if mv.run_id:
        conf = tracking.download_run_artifact(mv.run_id, "config.yaml")
        if conf is not None:
            try:
                cfg = validate_experiment(yaml.safe_load(conf.read_text()), source=f"run {mv.run_id} config.yaml")
            except ConfigError:
                cfg = None  # an older recipe schema: fall back to the card's copy of the minimums
        run_metrics = dict(tracking.client().get_run(mv.run_id).data.metrics)
        group_by = cfg.promotion.group_by if cfg is not None else None
        if card is None and group_by:
            got = tracking.download_run_artifact(mv.run_id, f"report/subgroups_{group_by}.json")
            audit = json.loads(got.read_text()) if got is not None else None
    return evidence_from_card(card, cfg, run_metrics, audit)


def promote(name: str, version: str, alias: str = "champion", force: bool = False, reason: str | None = None,
            user: str | None = None) -> tuple[bool, GateResult]:
    """Move ``alias`` to ``name`` v``version`` if the gate passes (or ``force``).

    Every promotion is recorded as version tags (``promotion.by``, ``promotion.at``,
    ``promotion.alias``); a forced one adds ``promotion.forced``, ``promotion.reason`` and
    ``promotion.failed_checks``. Aliases other than ``champion`` are not gated.

    Returns:
        Whether the alias moved, and the gate's checks.

    Raises:
        ConfigError: ``force`` without a reason, or no such version.
    """
    if force and not (reason and reason.strip()):
        raise ConfigError("--force needs --reason \"...\" (it is recorded on the version)")
    result = evaluate_gate(gather_evidence(name, version)) if alias in GATED_ALIASES else GateResult([])
    if not result.passed and not force:
        return False, result
    from training import tracking

    tracking.set_alias(name, alias, version)
    tags = {"promotion.alias": alias, "promotion.by": user or getpass.getuser(),
            "promotion.at": datetime.now(UTC).isoformat(timespec="seconds"),
            "promotion.forced": "true" if force and not result.passed else "false"}
    if reason:
        tags["promotion.reason"] = reason
    if force and not result.passed:
        tags["promotion.failed_checks"] = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)[:5000]
    tracking.set_version_tags(name, version, tags)
    return True, result
