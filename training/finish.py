"""After the last epoch: calibrate, evaluate, publish.

`calibrate` fits the temperature and operating points on the validation split; `evaluate`
reports on the test split (the validation split when there is none) and writes
``report/``; `publish` saves the calibrated checkpoint, registers the version, exports and
checks the ONNX graph, audits subgroups, writes the model card, logs everything to MLflow and
writes ``metrics.json`` (``status: complete``) last. Each step says what it does and how
long it took.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from training import tracking
from training.calibration import fit_temperature, operating_points
from training.checkpoint import InferenceCheckpoint
from training.data import Splits, eval_loader
from training.export.graph import export_onnx
from training.export.metadata import Identity, checkpoint_metadata
from training.export.stac import write_model_stac
from training.loop import predict
from training.progress import Reporter
from training.report import plot_reliability, write_report
from vision.atomic import write_text_atomic
from vision.config import ExperimentConfig
from vision.data import ChipSource
from vision.hashing import file_sha256
from vision.metrics import classification_report, softmax

#: Validation chips the exported graph is checked on.
PARITY_CHIPS = 256
_VIEWS = {"none": "", "flips": ", 4 views each", "d8": ", 8 views each"}


@dataclass(frozen=True)
class RunInfo:
    """What publishing needs to know about the run that trained the model.

    Attributes:
        out: the run folder.
        run_id: MLflow run (``None`` without tracking).
        config_hash: of the resolved recipe.
        fingerprint: of the training data (train + val).
        history: per-epoch metric rows.
        best_epoch: the epoch ``best.pt`` is from.
        interpolation: the WiSE-FT choice (`training.interpolate`), when the recipe asked for one.
        soup: the ingredients averaged (`training.soup`), when the recipe asked for a soup.
    """

    out: Path
    run_id: str | None
    config_hash: str
    fingerprint: str
    history: list[dict[str, Any]]
    best_epoch: int
    interpolation: dict[str, Any] | None = None
    soup: dict[str, Any] | None = None


@dataclass
class Calibration:
    """Temperature and operating points fitted on the validation split.

    Attributes:
        temperature: softmax temperature (1.0 when the recipe turns scaling off).
        thresholds: per-class operating points (`training.calibration.operating_points`).
        val: ``n``, ``accuracy``, ``macro_f1``, ``ece`` (calibrated) and ``ece_uncalibrated``.
        logits, labels: the validation predictions they were fitted on.
    """

    temperature: float
    thresholds: dict[str, float]
    val: dict[str, float]
    logits: np.ndarray
    labels: np.ndarray


@dataclass
class Evaluation:
    """The held-out report: on the test split, or the validation split without one.

    Attributes:
        split: ``test`` or ``val``.
        source: its chips.
        labels, probs: calibrated probabilities per chip.
        report: `vision.metrics.classification_report` plus ``ece_uncalibrated``.
    """

    split: str
    source: ChipSource
    labels: np.ndarray
    probs: np.ndarray
    report: dict[str, Any]


def _predict(model: nn.Module, source: ChipSource, batch_size: int, device: torch.device, report: Reporter,
             what: str, tta: str) -> tuple[np.ndarray, np.ndarray]:
    with report.bar(f"{what}{_VIEWS.get(tta, '')}", len(source)) as advance:
        return predict(model, eval_loader(source, batch_size), device, on_batch=advance)


def calibrate(model: nn.Module, splits: Splits, cfg: ExperimentConfig, device: torch.device,
              report: Reporter) -> Calibration:
    """Fit the temperature (validation NLL) and the recipe's operating points."""
    logits, labels = _predict(model, splits.val, cfg.train.batch_size * 2, device, report,
                              "calibration: predicting the val split", cfg.model.tta)
    temperature = fit_temperature(logits, labels) if cfg.calibration.temperature_scaling else 1.0
    thresholds = (operating_points(logits, labels, splits.classes, cfg.calibration.targets, temperature)
                  if cfg.calibration.targets else {})
    rep = classification_report(labels, softmax(logits, temperature), splits.classes)
    val = {k: rep[k] for k in ("n", "accuracy", "macro_f1", "ece")}
    val["ece_uncalibrated"] = classification_report(labels, softmax(logits), splits.classes)["ece"]
    report.line(f"calibration: T = {temperature:.3f}, val ECE {val['ece_uncalibrated']:.4f} -> {val['ece']:.4f}"
                + (escape(f"; thresholds {thresholds}") if thresholds else ""))
    return Calibration(temperature, thresholds, val, logits, labels)


def evaluate(model: nn.Module, splits: Splits, cal: Calibration, cfg: ExperimentConfig, device: torch.device,
             report_dir: Path, report: Reporter) -> Evaluation:
    """Report on the test split (else reuse the validation predictions) into ``report_dir``."""
    if splits.test is not None and len(splits.test):
        split, source = "test", splits.test
        logits, labels = _predict(model, source, cfg.train.batch_size * 2, device, report,
                                  "test: predicting the test split", cfg.model.tta)
    else:
        split, source, logits, labels = "val", splits.val, cal.logits, cal.labels
    probs = softmax(logits, cal.temperature)
    rep = classification_report(labels, probs, splits.classes)
    rep["ece_uncalibrated"] = classification_report(labels, softmax(logits), splits.classes)["ece"]
    paths = write_report(report_dir, rep, probs, labels, prefix=f"{split}_")
    plot_reliability(probs, labels, paths["reliability"], other=softmax(logits),
                     title=f"{split}: ECE {rep['ece_uncalibrated']:.3f} -> {rep['ece']:.3f}")
    write_text_atomic(report_dir / f"{split}_report.json", json.dumps(rep, indent=2))
    report.line(f"{split}: accuracy {rep['accuracy']:.4f}, macro-F1 {rep['macro_f1']:.4f}")
    return Evaluation(split, source, labels, probs, rep)


def publish(run: RunInfo, cfg: ExperimentConfig, model: nn.Module, ck: InferenceCheckpoint, splits: Splits,
            cal: Calibration, ev: Evaluation, report: Reporter) -> dict[str, Any]:
    """Save, register, export, audit, card, log; ``metrics.json`` last. Returns the metrics."""
    from training import audit as subgroup_audit
    from training import model_card

    out, report_dir = run.out, run.out / "report"
    best_path = out / "checkpoints" / "best.pt"
    ck.temperature, ck.thresholds = cal.temperature, dict(cal.thresholds)
    ck.state_dict = model.state_dict()
    ck.save(best_path)
    version = ""
    if run.run_id:
        with report.stage(f"registering {cfg.model.name} in MLflow"):
            version = tracking.register_version(cfg.model.name, run.run_id, tracking.run_artifact_uri(run.run_id),
                                                tags={"train_data_fingerprint": run.fingerprint})
    meta = checkpoint_metadata(ck, best_path, Identity(version, run.run_id or "", run.fingerprint))
    parity_x = torch.stack([eval_loader(splits.val, 1).dataset[i][0]
                            for i in range(min(len(splits.val), PARITY_CHIPS))])
    model = model.cpu().to(memory_format=torch.contiguous_format)
    with report.bar(f"export: {out / 'model.onnx'}, parity on val chips{_VIEWS.get(ck.tta, '')}",
                    len(parity_x)) as advance:
        diff = export_onnx(model, out / "model.onnx", meta, parity_x, temperature=cal.temperature,
                           on_chips=advance)
    write_model_stac(out / "model.onnx")
    rep = ev.report
    metrics: dict[str, Any] = {
        "status": "complete", "config_hash": run.config_hash, "history": run.history,
        "best_epoch": run.best_epoch, "temperature": cal.temperature, "thresholds": cal.thresholds,
        "train_data_fingerprint": run.fingerprint, "val": cal.val, ev.split: rep,
        "model_name": cfg.model.name, "model_version": version, "mlflow_run_id": run.run_id,
        "onnx_parity_max_abs": diff, "model_sha256": file_sha256(out / "model.onnx")}
    if run.interpolation is not None:
        metrics["interpolation"] = run.interpolation
    if run.soup is not None:
        metrics["soup"] = run.soup

    # Subgroup audit (recipe promotion.group_by) and model card: the promotion gate reads both.
    audit, audit_error = None, None
    if cfg.promotion.group_by:
        with report.stage(f"subgroup audit by {cfg.promotion.group_by}"):
            audit, audit_error = subgroup_audit.registration_audit(
                cfg.promotion.group_by, ev.source, ev.probs, ev.labels, splits.classes, ev.split, cfg.seed)
    if audit is not None:
        write_text_atomic(report_dir / f"subgroups_{audit['group_by']}.json", json.dumps(audit, indent=2))
        metrics["subgroups"] = {k: audit[k] for k in ("group_by", "worst_group", "gap")}
        report.line(escape(subgroup_audit.summary_line(audit)))
    elif audit_error:
        report.line(f"[yellow]subgroup audit skipped[/yellow]: {escape(audit_error)}")
    with report.stage("model card"):
        card = model_card.build_card(
            cfg, metrics, json.loads((out / "lineage.json").read_text()),
            model_card.class_counts({"train": splits.train, "val": splits.val, "test": splits.test}, splits.classes),
            audit=audit, audit_error=audit_error, resolution=model_card.ground_resolution(cfg, splits.train),
            run_tags=model_card.run_tags(run.run_id),
            report_files=sorted(f"report/{p.name}" for p in report_dir.iterdir()))
        card_md, card_json = model_card.write_card(out, card)
    if run.run_id:
        with report.stage("logging metrics and artifacts to MLflow"):
            s = ev.split
            tracking.log_metrics({f"{s}_accuracy": rep["accuracy"], f"{s}_macro_f1": rep["macro_f1"],
                                  f"{s}_ece": rep["ece"], f"{s}_ece_uncalibrated": rep["ece_uncalibrated"],
                                  "temperature": cal.temperature, "onnx_parity_max_abs": diff,
                                  **({"interpolation_w": run.interpolation["chosen"]} if run.interpolation else {})})
            tracking.log_artifact(out / "model.onnx", "model")
            for p in sorted(report_dir.iterdir()):
                tracking.log_artifact(p, "report")
            tracking.log_artifact(best_path, "checkpoint")  # explanations find the weights via the run id
            model_card.log_card(run.run_id, card_md, card_json, cfg.model.name, version)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    if run.run_id:
        tracking.log_artifact(out / "metrics.json")
    return metrics
