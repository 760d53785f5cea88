"""`vision` sub-commands contributed by the training package: train, evaluate, export,
explain, audit, models (list, show, card, promote), demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from vision.cli_options import (
    batch_size_option,
    model_argument,
    out_option,
    overwrite_option,
    progress_option,
    refuse_overwrite,
)
from vision.console import make_console

console = make_console()
err = make_console(stderr=True)

models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry.")


def train(
    recipe: Path = typer.Argument(..., help="experiment YAML, e.g. experiments/eurosat_rgb_lite0.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a recipe value: key.path=value (repeatable)"),
    out: Path | None = out_option("run folder \\[default: runs/<recipe name>]"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    progress: bool = progress_option(),
) -> None:
    """Train a model per RECIPE; track it in MLflow, calibrate, export ONNX, register it.

    Example:

        vision train experiments/eurosat_rgb_lite0.yaml --out runs/rgb

        vision train experiments/eurosat_rgb_lite0.yaml --set model.weights=none --out runs/rgb-scratch

    A rerun of a finished run does nothing; after an interruption, rerun with --resume.
    Every step prints what it does and how long it took; the last line points to the report.
    """
    from training.trainer import run_training
    from vision.config import load_experiment

    cfg = load_experiment(recipe, set_)
    run_training(cfg, out or Path("runs") / recipe.stem, resume=resume, recipe=str(recipe), progress=progress)


def evaluate(
    model: str = model_argument(),
    data: str = typer.Argument(..., help="eurosat-rgb:test, *.tar.gz shards, a manifest or a class folder"),
    out: Path | None = out_option("write metrics.json and plots into this folder"),
    overwrite: bool = overwrite_option("an existing --out/metrics.json"),
    batch_size: int = batch_size_option(256),
    progress: bool = progress_option(),
) -> None:
    """Accuracy, macro-F1, per-class metrics, calibration and confusion matrix of MODEL on DATA.

    Example:

        vision evaluate runs/rgb/model.onnx eurosat-rgb:test --out runs/rgb/eval-test
    """
    from training.evaluate import evaluate as run_eval
    from training.report import write_report
    from vision.atomic import write_text_atomic

    if out is not None:
        refuse_overwrite(out / "metrics.json", overwrite)
    rep, probs, labels = run_eval(model, data, batch_size, progress=progress)
    table = Table(title=escape(f"{model} on {data} ({rep['n']} samples)"))
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "class" else "left", overflow="fold")
    for c, m in rep["per_class"].items():
        table.add_row(escape(c), f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(table)
    console.print(f"accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  "
                  f"ECE {rep['ece']:.4f} (uncalibrated {rep['ece_uncalibrated']:.4f})")
    console.print("confusion matrix (rows true, columns predicted):")
    for c, row in zip(rep["classes"], rep["confusion_matrix"], strict=True):
        console.print(f"  {escape(c[:20]):>20} " + " ".join(f"{v:5d}" for v in row), soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(rep, indent=2))
        write_report(out, rep, probs, labels)
        console.print(f"written: {escape(str(out))}/metrics.json, confusion_matrix.png, reliability.png")


def export(
    source: Path = model_argument("a run folder or its checkpoints/best.pt"),
    out: Path = out_option("destination .onnx", required=True),
    overwrite: bool = overwrite_option("an existing --out"),
    fp16: bool = typer.Option(False, "--fp16", help="half-precision network for GPUs (inputs, normalisation "
                              "and outputs stay float32)"),
    int8: bool = typer.Option(False, "--int8",
                              help="int8 network for CPUs (static quantization, calibrated on "
                                   "training chips, checked on validation chips)"),
    data: str | None = typer.Option(None, "--data",
                                    help="parity (and int8 check) samples \\[default: the run's val split]"),
    calibration: str | None = typer.Option(
        None, "--calibration", help="int8 calibration chips \\[default: the run's train split]"),
    calibration_chips: int = typer.Option(512, "--calibration-chips", min=1,
                                          help="how many, spread evenly over the split"),
    min_agreement: float = typer.Option(
        0.98, "--min-agreement", min=0.0, max=1.0,
        help="int8 is refused when fewer check chips keep their float top-1 class"),
    max_diff: float | None = typer.Option(
        None, "--max-diff", min=0.0, help="largest ONNX-vs-PyTorch probability difference accepted "
        "\\[default: 1e-4; 1e-3 with --fp16]"),
    progress: bool = progress_option(),
) -> None:
    """Export a checkpoint to ONNX (raw pixels in, normalisation and metadata inside) and
    check ONNX-vs-PyTorch parity on real samples (the first few chips first: a graph that is
    off is refused at once).

    --fp16 runs the network in half precision for GPUs; parity against the float32 model
    must hold within 1e-3 on probabilities (--max-diff: float16 rounding moves some networks'
    probabilities by more; the refusal says by how much). --int8 writes a quantized model for CPU
    inference (about 1.8x the chips/s of the float model on an AVX2 CPU, a quarter of its
    size). It is refused when it changes the top-1 class of more than 2 % of the check chips
    (--min-agreement); the float and int8 agreement and accuracies are printed.

    Examples:

        vision export runs/rgb --out rgb-fp16.onnx --fp16

        vision export runs/rgb --out rgb-int8.onnx --int8
    """
    from training.export.command import export_checkpoint

    refuse_overwrite(out, overwrite)
    diff, q = export_checkpoint(Path(source), out, fp16=fp16, data=data, int8=int8,
                                calibration=calibration, n_calibration=calibration_chips,
                                min_agreement=min_agreement, progress=progress, max_diff=max_diff)
    console.print(f"exported {escape(str(out))} (parity max abs {diff:.2e}"
                  + (" of the float graph)" if q else ")"), highlight=False)
    if q is not None:
        acc = (f"; accuracy {q.accuracy_float:.4f} float -> {q.accuracy_int8:.4f} int8"
               if q.accuracy_float is not None and q.accuracy_int8 is not None else "")
        console.print(
            f"int8: calibrated on {q.n_calibration} chips; on {q.n_check} check chips the top-1 "
            f"class agrees on {q.agreement:.2%} (max probability difference "
            f"{q.max_prob_diff:.3f}){acc}; {q.size_float / 1e6:.1f} MB -> {q.size_int8 / 1e6:.1f} MB",
            highlight=False)


def _when(ms: int | None) -> str:
    """A registry timestamp (ms since the epoch) as ``2025-03-01 14:05 UTC``."""
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Registered models with their versions and aliases.

    Example:

        vision models list

        vision models list --json
    """
    from training import tracking

    c = tracking.client()
    rows = []
    for rm in c.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for a, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(a)
        for mv in sorted(c.search_model_versions(f"name='{rm.name}'"), key=lambda m: int(m.version)):
            rows.append({"name": rm.name, "version": str(mv.version),
                         "aliases": sorted(aliases.get(str(mv.version), [])), "run_id": mv.run_id or "",
                         "created": _when(mv.creation_timestamp)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="registered models")
    widest = max((len(r["name"]) for r in rows), default=4)
    for col in ("name", "version", "aliases", "run", "created"):
        # Full names and run ids: folded onto more lines on a narrow terminal, never cut;
        # names keep their width first.
        table.add_column(col, overflow="fold", min_width=min(widest, 24) if col == "name" else None)
    for r in rows:
        table.add_row(escape(r["name"]), r["version"], escape(", ".join(r["aliases"])), r["run_id"], r["created"])
    console.print(table)


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="registered model name"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Versions, aliases, metrics and tags of one registered model.

    Example:

        vision models show eurosat_rgb_lite0

        vision models show eurosat_rgb_lite0 --json
    """
    from training import tracking

    c = tracking.client()
    rm = tracking.get_registered_model(name)
    by_version: dict[str, list[str]] = {}
    for a, v in (rm.aliases or {}).items():
        by_version.setdefault(str(v), []).append(a)
    versions: list[dict[str, Any]] = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
        keep = {k: v for k, v in sorted(metrics.items()) if k.startswith(("test_", "val_acc"))}
        versions.append({"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                         "run_id": mv.run_id or "", "created": _when(mv.creation_timestamp),
                         "metrics": keep, "tags": dict(mv.tags)})
    if as_json:
        print(json.dumps({"name": name, "aliases": {a: str(v) for a, v in (rm.aliases or {}).items()},
                          "versions": versions}, indent=2))
        return
    table = Table(title=escape(f"{name}: {len(versions)} version(s)"))
    for col in ("version", "aliases", "created", "run", "metrics", "tags"):
        table.add_column(col, overflow="fold")
    for v in versions:
        table.add_row(v["version"], escape(", ".join(v["aliases"])), v["created"], v["run_id"],
                      "\n".join(f"{k} {val:.4f}" for k, val in v["metrics"].items()),
                      escape("\n".join(f"{k}={val}" for k, val in sorted(v["tags"].items()))))
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: str = typer.Argument(..., help="registered model name"),
    version: str = typer.Argument(..., help="version number"),
    alias: str = typer.Option("champion", "--alias", help="alias to move to this version"),
    force: bool = typer.Option(False, "--force", help="promote although gate checks fail (needs --reason)"),
    reason: str | None = typer.Option(None, "--reason", help="why; recorded as a tag on the version"),
) -> None:
    """Move an alias (normally `champion`) to a version; the only way to set `champion`.

    `champion` is gated: the version needs a model card, and its accuracy, every subgroup's
    accuracy and its ECE must meet the minimums of the recipe it was trained with
    (`promotion.min_accuracy`, `promotion.min_group_accuracy` by `promotion.group_by`,
    `calibration.ece_max`). A refusal names each failing check and exits with code 1.
    `--force --reason "..."` promotes anyway and records who and why on the version.

    Example:

        vision models promote eurosat_rgb_lite0 3 --alias champion

        vision models promote eurosat_rgb_lite0 3 --force --reason "hotfix; group Q1 re-labelled"
    """
    from training.promotion import promote

    moved, result = promote(name, version, alias, force=force, reason=reason)
    for c in result.checks:
        mark = "[green]pass[/green]" if c.passed else "[red]FAIL[/red]"
        console.print(f"  {mark} {c.name}: {c.detail}", highlight=False)
    if not moved:
        names = ", ".join(c.name for c in result.failures)
        err.print(f"[red]refused[/red]: {name} v{version} cannot become {alias!r}; failing checks: {names}. "
                  "Fix them, or override with --force --reason \"...\" (recorded on the version).",
                  highlight=False)
        raise typer.Exit(1)
    forced = " [yellow](forced past failing checks; reason recorded)[/yellow]" if result.failures else ""
    console.print(f"{name} v{version} is now {alias!r}{forced}")


@models_app.command("card")
def models_card(
    name: str = typer.Argument(..., help="registered model name"),
    version: str = typer.Argument(..., help="version number"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON card instead of Markdown"),
    generate: bool = typer.Option(False, "--generate", help="(re)make the card from the run folder "
                                  "(tag vision.out), log it, then print it; for versions trained before cards"),
    group_by: str | None = typer.Option(None, "--group-by", help="with --generate: subgroup audit grouping "
                                        "(default the recipe's promotion.group_by)"),
) -> None:
    """Print the model card (MODEL_CARD.md) of a registered version.

    Example:

        vision models card eurosat_rgb_lite0 3

        vision models card eurosat_rgb_lite0 1 --generate --group-by brightness_quartile
    """
    from rich.markdown import Markdown

    from training import tracking
    from training.model_card import fetch_card, generate_for_run
    from vision.errors import ConfigError

    if generate:
        mv = tracking.get_version(name, version)
        out = tracking.client().get_run(mv.run_id).data.tags.get("vision.out") if mv.run_id else None
        if not out or not Path(out).is_dir():
            raise ConfigError(f"{name} v{version}: its run folder ({out}) is not on this machine")
        generate_for_run(Path(out), group_by=group_by)
    card, md = fetch_card(name, version)
    if card is None or md is None:
        err.print(f"{name} v{version} has no model card; make one with --generate")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(card, indent=2))
    else:
        console.print(Markdown(md))


def explain(
    model: str = model_argument(),
    input_: str = typer.Argument(..., metavar="IMAGE_OR_JOB_ROW",
                                 help="chip file (.jpg/.png/.tif), SHARD.tar.gz#KEY, or JOB_DIR#ROW "
                                      "(row of JOB_DIR/predictions.parquet; scene rows read their window)"),
    out: Path | None = out_option("PNG: the chip and the heatmap overlaid \\[default: heatmap.png]"),
    target: str | None = typer.Option(None, "--class", help="class to explain (default: the prediction)"),
    layer: str | None = typer.Option(None, "--layer", help="layer to explain (default: the registry's)"),
    npy: Path | None = typer.Option(None, "--npy", help="also save the H x W heatmap as .npy"),
    overwrite: bool = overwrite_option("an existing --out or --npy"),
) -> None:
    """Grad-CAM: where in the chip the model looked for its decision.

    Computed from the PyTorch checkpoint the ONNX model was exported from (its
    vision.checkpoint metadata, or its MLflow run).

    Example:

        vision explain runs/rgb/model.onnx chip.tif --out heatmap.png

        vision explain models:/eurosat_rgb_lite0@champion job-out#12 --out row12.png
    """
    from training.explain import explain as run_explain
    from training.explain import load_explainer, read_input, render_overlay

    out = out or Path("heatmap.png")
    refuse_overwrite(out, overwrite)
    if npy is not None:
        refuse_overwrite(npy, overwrite)
    ex = load_explainer(model)
    chip = read_input(input_, ex.bands)
    cls: int | str | None = int(target) if target is not None and target.isdigit() else target
    res = run_explain(ex, chip.pixels, cls, layer)
    top = int(res.probs.argmax())
    title = (f"predicted {ex.classes[top]} ({res.probs[top]:.1%}); Grad-CAM of {ex.classes[res.target]} "
             f"at {layer or ex.layer}")
    render_overlay(chip.pixels, res.heatmap, ex.bands, out, title=f"{Path(input_).name}\n{title}")
    if npy is not None:
        import numpy as np

        from vision.atomic import atomic_path

        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, res.heatmap)
    console.print(escape(f"{chip.source}: {title}; contrast {res.contrast:.3f}"), highlight=False)
    console.print(escape(f"written: {out}" + (f", {npy}" if npy else "")), highlight=False)


def audit(
    model: str = model_argument(),
    data: str = typer.Argument(..., help="eurosat-rgb:test, eurosat-ms:train, shards, a manifest or a class folder"),
    group_by: str = typer.Option(..., "--group-by", help="utm_zone (GeoTIFF CRS), brightness_quartile, group, "
                                 "or any manifest column"),
    json_out: Path | None = typer.Option(None, "--json", help="write the full report as JSON"),
    overwrite: bool = overwrite_option("an existing --json file"),
    n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples per group"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed (same seed, same intervals)"),
    batch_size: int = batch_size_option(256),
) -> None:
    """Subgroup audit: accuracy, macro-F1, per-class recall and ECE per group, with bootstrap
    confidence intervals, and the worst-group gap.

    Example:

        vision audit runs/rgb/model.onnx eurosat-rgb:test --group-by brightness_quartile

        vision audit runs/ms/model.onnx eurosat-ms:train --group-by utm_zone --json audit.json
    """
    from training.audit import audit_model, render_tables, summary_line
    from vision.atomic import write_text_atomic

    if json_out is not None:
        refuse_overwrite(json_out, overwrite)
    rep = audit_model(model, data, group_by, batch_size=batch_size, n_boot=n_boot, seed=seed)
    for table in render_tables(rep):
        console.print(table)
    console.print(summary_line(rep))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(rep, indent=2))
        console.print(escape(f"written: {json_out}"), highlight=False)


def demo(
    data: str = typer.Option("synthetic", "--data", help="synthetic (built in) or eurosat (VISION_DATA_DIR)"),
    out: Path = out_option("where the demo writes everything", default=Path("demo-out")),
    epochs: int = typer.Option(6, help="training epochs"),
) -> None:
    """The whole path on embedded defaults: make data, train, register, export, classify.

    Example:

        vision demo                 # synthetic multispectral chips, no downloads

        vision demo --data eurosat  # EuroSAT RGB from VISION_DATA_DIR
    """
    from training.demo import run_demo

    run_demo(data, out, epochs)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `vision` CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("export")(export)
    app.command("explain")(explain)
    app.command("audit")(audit)
    app.command("demo")(demo)
    app.add_typer(models_app, name="models")
