"""`vision train`: one recipe in, a tracked, calibrated, exported and registered model out.

The run folder (``--out``) holds ``config.yaml`` (resolved recipe), ``checkpoints/``
(``last.pt`` after every epoch, ``best.pt``), ``metrics.json``, ``model.onnx`` and
``report/``. ``metrics.json`` with ``"status": "complete"`` is written last: a rerun of a
finished run does nothing, an interrupted one continues with ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from training import distill, distributed, finish, interpolate, soup, tracking
from training.checkpoint import CheckpointError, InferenceCheckpoint, TrainState, rng_state, save_checkpoint
from training.data import Splits, class_weights, eval_loader, open_splits, train_loader
from training.loop import make_ema, param_groups, predict, train_one_epoch
from training.progress import Reporter, console
from vision.atomic import write_text_atomic as atomic_write_text
from vision.config import ExperimentConfig, check_resources, dump_experiment
from vision.console import make_console
from vision.data import BandStats, ChipSource, dataset_fingerprint
from vision.data.pixels import PixelFacts, pixel_facts
from vision.data.scene_source import labelled_facts
from vision.data.stats import compute_band_stats
from vision.errors import ConfigError
from vision.metrics import classification_report, softmax
from vision.models import NormalizedClassifier, get_model
from vision.models.depthwise import use_fast_depthwise

log = logging.getLogger(__name__)
#: Training chips the band statistics are computed from (a random subset beyond).
STATS_SAMPLES = 20000


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]
    skipped: bool = False


def config_hash(cfg: ExperimentConfig) -> str:
    return hashlib.sha256(dump_experiment(cfg).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup for ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def run_training(cfg: ExperimentConfig, out: Path, resume: bool = False,
                 recipe: str = "<recipe>", progress: bool = True,
                 ingredient: soup.Ingredient | None = None) -> TrainResult:
    """Train per ``cfg`` into ``out``. See the module docstring for the folder layout.

    Every step says what it does: reading the splits, band statistics, building the model,
    each epoch (a progress bar, or a line every 10 % in a log), then calibration, the test
    report, export and parity, the model card and registration (`training.finish`).
    With ``train.soup``, the epochs are those of each ingredient in turn: this function again,
    with ``ingredient`` (`training.soup`), which trains and keeps its best weights, no more.
    """
    out = Path(out)
    metrics_path, last_path = out / "metrics.json", out / "checkpoints" / "last.pt"
    chash = config_hash(cfg)
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        if done.get("status") == "complete":
            if done.get("ingredient") and ingredient is None:
                raise soup.not_a_run(out)
            if done.get("config_hash") != chash:
                raise ConfigError(f"{out} holds a finished run of a different recipe; "
                                  "choose another --out")
            console.print(f"Training already completed in {escape(str(out))} (nothing to do).")
            return TrainResult(out, done, skipped=True)
    if last_path.exists() and not resume:
        raise ConfigError(f"{out} holds an unfinished run: pass --resume to continue it, "
                          "or choose another --out")
    # What the recipe names must exist before minutes go into reading data.
    check_resources(cfg)
    state = _read_train_state(last_path, chash) if resume and last_path.exists() else None
    soup_state = soup.read_state(out, chash, resume) if cfg.train.soup else None

    dist = distributed.init()
    rank, world, is_main = dist.rank, dist.size, dist.is_main
    # Rank 0 alone speaks; the other ranks' stage lines would only repeat its own.
    report = Reporter(progress and is_main, out=None if is_main else make_console(quiet=True))
    device = pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed + rank)
    teacher = (distill.open_teacher(cfg.distill, cfg.train.threads, device.type == "cuda")
               if cfg.distill is not None else None)

    with report.stage(f"reading the {cfg.data.source} splits"):
        splits = open_splits(cfg)
    classes, bands = splits.classes, splits.bands
    if not len(splits.train) or not len(splits.val):
        raise ConfigError("train and val splits must not be empty")
    report.line(f"  {len(classes)} classes, bands {escape(', '.join(bands))}; "
                + ", ".join(f"{k} {v}" for k, v in splits.sizes().items()))
    # What the pixels mean and their size on the ground: recorded in the model, so that
    # inference refuses pixels of another kind (refused here when nothing says).
    pixels = pixel_facts(splits.train, cfg.data.source, cfg.data.radiometry, cfg.data.gsd_m)
    report.line(f"  pixels: {escape(pixels.radiometry.describe())}"
                + (f" at {pixels.gsd_m:g} m" if pixels.gsd_m else ", ground sampling distance unknown"))
    for w in pixels.warnings:
        report.line(f"  [yellow]note[/yellow]: {escape(w)}")
    distiller = (distill.plan(cfg.distill, teacher, cfg.augmentations, classes, bands, cfg.model.input_size,
                              report) if cfg.distill is not None and teacher is not None else None)
    n_stats = min(len(splits.train), STATS_SAMPLES)
    if ingredient is not None:
        stats = ingredient.stats
    else:
        with report.bar("band statistics of the train split", n_stats) as advance:
            stats = compute_band_stats(_Counted(splits.train, advance), max_samples=STATS_SAMPLES, seed=cfg.seed)
    fingerprint = dataset_fingerprint(splits.train, splits.val)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_experiment(cfg))

    with report.stage(f"building {cfg.model.architecture} (weights: {cfg.model.weights})"):
        backbone = get_model(cfg.model.architecture, len(classes), len(bands), cfg.model.weights,
                             band_names=bands, dropout=cfg.model.dropout)
    if device.type == "cpu":
        # Same weights and keys; oneDNN's slow depthwise weight gradient on small maps is
        # replaced by an exact batched form (~1.6x faster Lite0 steps on 2 cores).
        use_fast_depthwise(backbone)
    model: nn.Module = NormalizedClassifier(backbone, stats.mean, stats.std,
                                            cfg.model.work_size).to(device)
    if ingredient is not None:
        model.load_state_dict(ingredient.start)  # every ingredient of a soup starts here
    # channels_last also speeds up CPU training (oneDNN depthwise convolutions: ~25 % here).
    channels_last = cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    weight = (class_weights(splits.train.labels(), len(classes)).to(device)
              if cfg.train.imbalance == "class_weights" else None)
    criterion: nn.Module = (distiller.criterion(cfg.train.label_smoothing, weight) if distiller is not None
                            else nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.train.label_smoothing))
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.train.weight_decay, cfg.train.decay_norm_and_bias),
        lr=cfg.train.lr)
    # The average (when asked for) is what is validated, checkpointed and exported.
    ema = make_ema(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    judged: nn.Module = ema.module if ema is not None else model
    steps = max(len(splits.train) // (cfg.train.batch_size * world), 1)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    scheduler = cosine_with_warmup(optimizer, int(cfg.train.warmup_epochs * steps),
                                   cfg.train.epochs * steps)
    amp = device.type == "cuda" and cfg.train.amp
    use_scaler = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    # The weights before any step, for WiSE-FT at the end (`training.interpolate`).
    start = (interpolate.keep_start(model, out, state is not None or soup_state is not None)
             if (cfg.train.interpolate_start or cfg.train.soup) and is_main else None)
    start_epoch, history, best, bad_epochs, run_id = 0, [], None, 0, None
    if soup_state is not None:
        run_id = soup_state.get("mlflow_run_id")
        if is_main:
            console.print(f"Resuming the model soup in {escape(str(out))}")
    elif state is not None:
        state.restore(model, optimizer, scheduler, ema=ema, scaler=scaler, path=last_path)
        start_epoch, history = state.epoch + 1, state.history
        best, bad_epochs, run_id = state.best, state.bad_epochs, state.mlflow_run_id
        if is_main:
            console.print(f"Resuming {escape(str(out))} after epoch {start_epoch} of {cfg.train.epochs}")
    elif resume and is_main:
        console.print(f"No checkpoint in {escape(str(out))}: starting from the beginning")

    model_name = cfg.model.name
    lineage = {"bands": bands, "classes": classes, "mean": stats.mean, "std": stats.std,
               "split_sizes": splits.sizes(), "source": cfg.data.source, "fingerprint": fingerprint,
               "radiometry": pixels.radiometry.to_obj(), "gsd_m": pixels.gsd_m,
               "pixel_warnings": list(pixels.warnings)}
    labelled = labelled_facts(splits.train)  # labelled scenes: every label left out, and why
    if labelled is not None:
        lineage.update(labelled.lineage())
    if distiller is not None:
        # cached mode: the teacher's pass, once (for all the ingredients of a soup)
        distiller.prepare(splits.train, ingredient.cache if ingredient is not None else out, dist, report)
        lineage["distillation"] = distiller.record()
    if is_main and ingredient is None:
        with report.stage("starting the MLflow run"):
            run = tracking.start_run(cfg.experiment or model_name, out.name, run_id)
            run_id = run.info.run_id
            if cfg.train.soup:
                soup.write_state(out, chash, run_id)
            tracking.log_params(_flatten(cfg.model_dump(mode="json")))
            tracking.set_tags({"recipe": recipe, "train_data_fingerprint": fingerprint,
                               "vision.out": str(out.resolve()), "config_hash": chash})
            tracking.log_artifact(out / "config.yaml")
            atomic_write_text(out / "lineage.json", json.dumps(lineage, indent=2))
            tracking.log_artifact(out / "lineage.json")
            if distiller is not None:
                tracking.log_params({f"distill.{k}": v for k, v in distiller.record().items()
                                     if k in ("mode", "mode_reason", "teacher_sha256", "cache_seconds")})

    monitor = cfg.train.monitor
    sign = -1.0 if monitor == "val_loss" else 1.0
    val_loader = eval_loader(splits.val, cfg.train.batch_size * 2)
    prefix = soup.metric_prefix(cfg) if ingredient is not None else ""
    try:
        if cfg.train.soup:
            base = start if start is not None else interpolate.snapshot(model)
            results = _cook(cfg, out, resume, recipe, progress, soup.Ingredient(base, stats, out), report)
            if not is_main:
                return TrainResult(out, {})
            state_dict, history, soup_record = soup.combine(*results)
            model.load_state_dict(state_dict)
            epoch_kept = max(int(r["epoch"]) for r in history) if history else 0
            _inference_checkpoint(model, cfg, classes, bands, stats, epoch_kept, pixels).save(
                out / "checkpoints" / "best.pt")
            metrics = _finish(cfg, out, model, splits, fingerprint, history, run_id, chash, device, report,
                              start, soup_record)
            tracking.end_run()
            return TrainResult(out, metrics)
        for epoch in range(start_epoch, cfg.train.epochs):
            sampler = distributed.epoch_sampler(dist, len(splits.train), epoch, cfg.seed)
            loader: Any = train_loader(cfg, splits.train, epoch, sampler,
                                       distiller.targets if distiller is not None else None)
            if distiller is not None:
                loader = distiller.batches(loader, seed=(cfg.seed, epoch, dist.rank))
            with _progress(report.enabled) as progress_bar:
                task = progress_bar.add_task(f"epoch {epoch + 1}/{cfg.train.epochs}", total=steps,
                                             loss=float("nan"), acc=float("nan"), ips=0.0)

                every = max(steps // 10, 1)
                t0 = time.perf_counter()

                def on_step(step: int, loss: float, acc: float, ips: float,
                            _t: Any = task, _p: Progress = progress_bar, _e: int = epoch,
                            _every: int = every, _t0: float = t0) -> None:
                    _p.update(_t, completed=step, loss=loss, acc=acc, ips=ips)
                    if not console.is_terminal and is_main and (step % _every == 0 or step == steps):
                        # Logs (CI, nohup) get a plain line every 10 % of the epoch.
                        eta = (time.perf_counter() - _t0) / step * (steps - step)
                        console.print(f"epoch {_e + 1} step {step}/{steps} loss {loss:.4f} "
                                      f"acc {acc:.4f} {ips:.0f} img/s ETA {eta:.0f}s")

                stats_e = train_one_epoch(net, loader, criterion, optimizer, scheduler, device,
                                          amp=amp, scaler=scaler, channels_last=channels_last,
                                          max_steps=steps, on_step=on_step, ema=ema)
            distributed.save_record(dist, sampler, epoch + 1)
            # Rank 0 validates, checkpoints and decides; the others follow its decision.
            stop = False
            if is_main:
                logits, labels = predict(judged, val_loader, device, amp=amp,
                                         channels_last=channels_last)
                rep = classification_report(labels, softmax(logits), classes)
                val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits),
                                                             torch.from_numpy(labels)))
                row = {"epoch": epoch + 1, "train_loss": stats_e.loss, "train_accuracy": stats_e.accuracy,
                       "val_loss": val_loss, "val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"],
                       "samples_per_s": stats_e.samples_per_s, "lr": scheduler.get_last_lr()[0]}
                history.append(row)
                score = sign * row[monitor]
                improved = best is None or score > best
                if improved:
                    best, bad_epochs = score, 0
                else:
                    bad_epochs += 1
                console.print(
                    f"epoch {epoch + 1}: train loss {stats_e.loss:.4f} acc {stats_e.accuracy:.4f} | "
                    f"val loss {val_loss:.4f} acc {rep['accuracy']:.4f} macro-F1 {rep['macro_f1']:.4f} "
                    f"| {stats_e.samples_per_s:.0f} img/s{' *' if improved else ''}")
                tracking.log_metrics({prefix + k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
                if improved:
                    _inference_checkpoint(judged, cfg, classes, bands, stats, epoch + 1, pixels).save(
                        out / "checkpoints" / "best.pt")
                save_checkpoint(last_path, TrainState(
                    model=model.state_dict(), optimizer=optimizer.state_dict(),
                    ema=ema.state_dict() if ema is not None else None, scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else {}, rng=rng_state(),
                    epoch=epoch, history=history, best=best, bad_epochs=bad_epochs,
                    mlflow_run_id=run_id, config_hash=chash).to_dict())
                patience = cfg.train.early_stopping_patience
                if patience is not None and bad_epochs >= patience:
                    console.print(f"early stopping: no {monitor} improvement in {patience} epochs")
                    stop = True
            if distributed.rank0_decides(dist, stop):
                break
        if not is_main:
            return TrainResult(out, {})
        if ingredient is not None:  # its best weights are all the soup needs
            return TrainResult(out, soup.finish_ingredient(out, chash, history))
        metrics = _finish(cfg, out, model, splits, fingerprint, history, run_id, chash, device, report, start)
    except BaseException:
        if is_main and ingredient is None:
            tracking.end_run("KILLED")
        raise
    finally:
        if ingredient is None:
            distributed.shutdown(dist)
    tracking.end_run()
    return TrainResult(out, metrics)


def _cook(cfg: ExperimentConfig, out: Path, resume: bool, recipe: str, progress: bool,
          ingredient: soup.Ingredient, report: Reporter) -> tuple[list[Path], list[dict[str, Any]], list[int]]:
    """Train the ingredients of ``train.soup`` one after another (on every rank under torchrun):
    their folders, results (empty on ranks other than 0) and seeds, for `training.soup.combine`."""
    n = cfg.train.soup or 0
    configs = [soup.ingredient_config(cfg, k) for k in range(n)]
    results, folders = [], []
    for k, c in enumerate(configs):
        folders.append(soup.folder(out, c))
        report.line(f"[bold]soup ingredient {k + 1} of {n}[/bold] (seed {c.seed}): {escape(str(folders[-1]))}")
        results.append(run_training(c, folders[-1], resume, recipe, progress, ingredient).metrics)
    return folders, results, [c.seed for c in configs]


def _read_train_state(path: Path, chash: str) -> TrainState:
    """``last.pt`` for ``--resume``, or a clear error saying what to do with it."""
    try:
        state = TrainState.load(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}. --resume cannot continue from it: delete {path} to start the run "
                              "over, or train into another --out") from exc
    if state.config_hash != chash:
        raise ConfigError(f"{path} was written by a different recipe; cannot resume")
    return state


class _Counted(ChipSource):
    """A source that reports each chip read (progress of a pass over it)."""

    def __init__(self, parent: ChipSource, advance: Callable[[int], None]):
        self.parent, self.advance = parent, advance
        self.classes, self.bands, self.refs = parent.classes, parent.bands, parent.refs

    def read(self, index: int) -> np.ndarray:
        chip = self.parent.read(index)
        self.advance(1)
        return chip


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} "
                   "{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not enabled, transient=False)


def _inference_checkpoint(model: nn.Module, cfg: ExperimentConfig, classes: list[str], bands: list[str],
                          stats: BandStats, epoch: int, pixels: PixelFacts) -> InferenceCheckpoint:
    """What evaluation, export and explanations need: weights plus how to rebuild the model."""
    return InferenceCheckpoint(
        state_dict=model.state_dict(), architecture=cfg.model.architecture, classes=list(classes),
        bands=list(bands), mean=list(stats.mean), std=list(stats.std), input_size=cfg.model.input_size,
        epoch=epoch, work_size=cfg.model.work_size, tta=cfg.model.tta, model_name=cfg.model.name,
        dropout=cfg.model.dropout, radiometry=pixels.radiometry.to_obj(), gsd_m=pixels.gsd_m)


def _finish(cfg: ExperimentConfig, out: Path, model: nn.Module, splits: Splits, fingerprint: str,
            history: list[dict[str, Any]], run_id: str | None, chash: str, device: torch.device,
            report: Reporter, start: dict[str, torch.Tensor] | None = None,
            soup_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Best weights (interpolated toward ``start`` when the recipe asks) -> calibrate, evaluate,
    publish (`training.finish`)."""
    best_path = out / "checkpoints" / "best.pt"
    ck = InferenceCheckpoint.load(best_path)
    model.load_state_dict(ck.state_dict)
    model.eval()
    report.line(f"training done ({report.total()}); "
                + (f"the mean of {soup_record['n']} ingredients' best weights" if soup_record
                   else f"best epoch {ck.epoch} of {len(history)}"))
    chosen = None
    if start is not None and cfg.train.interpolate_start:
        chosen = interpolate.choose(model, start, cfg.train.interpolate_start,
                                    eval_loader(splits.val, cfg.train.batch_size * 2), splits.classes,
                                    cfg.train.monitor, device, report, cfg.train.channels_last).record()
    if isinstance(model, NormalizedClassifier):
        # Test-time views, from here on: calibration, test report and the exported graph.
        model.tta = cfg.model.tta
    cal = finish.calibrate(model, splits, cfg, device, report)
    ev = finish.evaluate(model, splits, cal, cfg, device, out / "report", report)
    run = finish.RunInfo(out, run_id, chash, fingerprint, history, ck.epoch, chosen, soup_record)
    metrics = finish.publish(run, cfg, model, ck, splits, cal, ev, report)
    rep = ev.report
    registered = (f"registered {escape(cfg.model.name)} v{metrics['model_version']} as challenger; "
                  if metrics["model_version"] else "")
    report.line(
        f"[green]done[/green] in {report.total()}: {ev.split} accuracy {rep['accuracy']:.4f}, macro-F1 "
        f"{rep['macro_f1']:.4f}, ECE {rep['ece_uncalibrated']:.4f} -> {rep['ece']:.4f} "
        f"(T={cal.temperature:.3f}); {registered}{escape(str(out / 'model.onnx'))} "
        f"(parity {metrics['onnx_parity_max_abs']:.1e})")
    report.line(f"report: {escape(str(out / 'report'))}/ (confusion matrix, per-class metrics, reliability "
                f"diagram) and {escape(str(out / 'MODEL_CARD.md'))}")
    return metrics
