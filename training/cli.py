"""`vision` sub-commands contributed by the training package: train, evaluate, export,
explain, audit, models (list, show, card, promote), demo."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry.")


def train(
    recipe: Path = typer.Argument(..., help="experiment YAML, e.g. experiments/eurosat_rgb_lite0.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a recipe value: key.path=value (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/<recipe name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
) -> None:
    """Train a model per RECIPE; track it in MLflow, calibrate, export ONNX, register it.

    Example:

        vision train experiments/eurosat_rgb_lite0.yaml --out runs/rgb

        vision train experiments/eurosat_rgb_lite0.yaml --set model.weights=none --out runs/rgb-scratch

    A rerun of a finished run does nothing; after an interruption, rerun with --resume.
    """
    from training.trainer import run_training
    from vision.config import load_experiment

    cfg = load_experiment(recipe, set_)
    run_training(cfg, out or Path("runs") / recipe.stem, resume=resume, recipe=str(recipe))


def evaluate(
    model: str = typer.Argument(..., help="model.onnx, checkpoints/best.pt, a run folder or models:/NAME@ALIAS"),
    data: str = typer.Argument(..., help="eurosat-rgb:test, *.tar.gz shards, a manifest or a class folder"),
    out: Path | None = typer.Option(None, "--out", help="write metrics.json and plots here"),
    batch_size: int = typer.Option(256, help="batch size"),
) -> None:
    """Accuracy, macro-F1, per-class metrics, calibration and confusion matrix of MODEL on DATA.

    Example:

        vision evaluate runs/rgb/model.onnx eurosat-rgb:test --out runs/rgb/eval-test
    """
    from training.evaluate import evaluate as run_eval
    from training.report import write_report
    from vision.atomic import write_text_atomic as atomic_write_text

    rep, probs, labels = run_eval(model, data, batch_size)
    table = Table(title=f"{model} on {data} ({rep['n']} samples)")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for c, m in rep["per_class"].items():
        table.add_row(c, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(table)
    console.print(f"accuracy {rep['accuracy']:.4f}  macro-F1 {rep['macro_f1']:.4f}  "
                  f"ECE {rep['ece']:.4f} (uncalibrated {rep['ece_uncalibrated']:.4f})")
    console.print("confusion matrix (rows true, columns predicted):")
    for c, row in zip(rep["classes"], rep["confusion_matrix"], strict=True):
        console.print(f"  {c[:20]:>20} " + " ".join(f"{v:5d}" for v in row), soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.json", json.dumps(rep, indent=2))
        write_report(out, rep, probs, labels)
        console.print(f"written: {out}/metrics.json, confusion_matrix.png, reliability.png")


def export(
    source: Path = typer.Argument(..., help="checkpoint (.pt) or run folder"),
    out: Path = typer.Option(..., "--out", help="destination .onnx"),
    fp16: bool = typer.Option(False, "--fp16", help="half-precision network for GPUs (inputs stay float32)"),
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
) -> None:
    """Export a checkpoint to ONNX (raw pixels in, normalisation and metadata inside) and
    check ONNX-vs-PyTorch parity on real samples.

    --int8 writes a quantized model for CPU inference (about 1.8x the chips/s of the float
    model on an AVX2 CPU, a quarter of its size). It is refused when it changes the top-1
    class of more than 2 % of the check chips (--min-agreement); the float and int8
    accuracies on those chips are printed.

    Examples:

        vision export runs/rgb --out rgb-fp16.onnx --fp16
        vision export runs/rgb --out rgb-int8.onnx --int8
    """
    from training.exporting import export_checkpoint

    diff, q = export_checkpoint(source, out, fp16=fp16, data=data, int8=int8,
                                calibration=calibration, n_calibration=calibration_chips,
                                min_agreement=min_agreement)
    console.print(f"exported {out} (parity max abs {diff:.2e}" + (" of the float graph)" if q else ")"))
    if q is not None:
        acc = (f"; accuracy {q.accuracy_float:.4f} float -> {q.accuracy_int8:.4f} int8"
               if q.accuracy_float is not None and q.accuracy_int8 is not None else "")
        console.print(
            f"int8: calibrated on {q.n_calibration} chips; on {q.n_check} check chips the top-1 "
            f"class agrees on {q.agreement:.2%} (max probability difference "
            f"{q.max_prob_diff:.3f}){acc}; {q.size_float / 1e6:.1f} MB -> {q.size_int8 / 1e6:.1f} MB")


@models_app.command("list")
def models_list() -> None:
    """Registered models with their versions and aliases.

    Example:

        vision models list
    """
    from training import tracking

    c = tracking.client()
    table = Table(title="registered models")
    for col in ("name", "version", "aliases", "run", "created"):
        table.add_column(col)
    for rm in c.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for a, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(a)
        for mv in c.search_model_versions(f"name='{rm.name}'"):
            table.add_row(rm.name, str(mv.version), ",".join(aliases.get(str(mv.version), [])),
                          mv.run_id or "", str(mv.creation_timestamp))
    console.print(table)


@models_app.command("show")
def models_show(name: str = typer.Argument(..., help="registered model name")) -> None:
    """Versions, aliases and metrics of one registered model.

    Example:

        vision models show eurosat_rgb_lite0
    """
    from training import tracking

    c = tracking.client()
    rm = c.get_registered_model(name)
    console.print(f"[bold]{name}[/bold] aliases: {dict(rm.aliases or {})}")
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
        keep = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("test_", "val_acc"))}
        console.print(f"  v{mv.version} run {mv.run_id} {keep} tags {dict(mv.tags)}")


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
    model: str = typer.Argument(..., help="model.onnx, checkpoints/best.pt, a run folder or models:/NAME@ALIAS"),
    input_: str = typer.Argument(..., metavar="IMAGE_OR_JOB_ROW",
                                 help="chip file (.jpg/.png/.tif), SHARD.tar.gz#KEY, or JOB_DIR#ROW "
                                      "(row of JOB_DIR/predictions.parquet; scene rows read their window)"),
    out: Path = typer.Option(Path("heatmap.png"), "--out", help="PNG: the chip and the heatmap overlaid"),
    target: str | None = typer.Option(None, "--class", help="class to explain (default: the prediction)"),
    layer: str | None = typer.Option(None, "--layer", help="layer to explain (default: the registry's)"),
    npy: Path | None = typer.Option(None, "--npy", help="also save the H x W heatmap as .npy"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
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
    from vision.errors import ConfigError

    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
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

        np.save(npy, res.heatmap)
    console.print(f"{chip.source}: {title}; contrast {res.contrast:.3f}", highlight=False)
    console.print(f"written: {out}" + (f", {npy}" if npy else ""))


def audit(
    model: str = typer.Argument(..., help="model.onnx, checkpoints/best.pt, a run folder or models:/NAME@ALIAS"),
    data: str = typer.Argument(..., help="eurosat-rgb:test, eurosat-ms:train, shards, a manifest or a class folder"),
    group_by: str = typer.Option(..., "--group-by", help="utm_zone (GeoTIFF CRS), brightness_quartile, group, "
                                 "or any manifest column"),
    json_out: Path | None = typer.Option(None, "--json", help="write the full report as JSON"),
    n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples per group"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed (same seed, same intervals)"),
    batch_size: int = typer.Option(256, help="batch size"),
) -> None:
    """Subgroup audit: accuracy, macro-F1, per-class recall and ECE per group, with bootstrap
    confidence intervals, and the worst-group gap.

    Example:

        vision audit runs/rgb/model.onnx eurosat-rgb:test --group-by brightness_quartile

        vision audit runs/ms/model.onnx eurosat-ms:train --group-by utm_zone --json audit.json
    """
    from training.audit import audit_model, render_tables, summary_line
    from vision.atomic import write_text_atomic as atomic_write_text

    rep = audit_model(model, data, group_by, batch_size=batch_size, n_boot=n_boot, seed=seed)
    for table in render_tables(rep):
        console.print(table)
    console.print(summary_line(rep))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rep, indent=2))
        console.print(f"written: {json_out}")


def demo(
    data: str = typer.Option("synthetic", "--data", help="synthetic (built in) or eurosat (VISION_DATA_DIR)"),
    out: Path = typer.Option(Path("demo-out"), "--out", help="where the demo writes everything"),
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
