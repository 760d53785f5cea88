"""`vision` sub-commands contributed by the training package: train, evaluate, export,
models, demo."""

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
    from training.checkpoint import atomic_write_text
    from training.evaluate import evaluate as run_eval
    from training.report import write_report

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
        console.print(f"  {c[:20]:>20} " + " ".join(f"{v:5d}" for v in row))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.json", json.dumps(rep, indent=2))
        write_report(out, rep, probs, labels)
        console.print(f"written: {out}/metrics.json, confusion_matrix.png, reliability.png")


def export(
    source: Path = typer.Argument(..., help="checkpoint (.pt) or run folder"),
    out: Path = typer.Option(..., "--out", help="destination .onnx"),
    fp16: bool = typer.Option(False, "--fp16", help="half-precision network (inputs stay float32)"),
    data: str | None = typer.Option(None, "--data", help="parity samples (default: the run's val split)"),
) -> None:
    """Export a checkpoint to ONNX (raw pixels in, normalisation and metadata inside) and
    check ONNX-vs-PyTorch parity on real samples.

    Example:

        vision export runs/rgb --out rgb-fp16.onnx --fp16
    """
    from training.exporting import export_checkpoint

    diff = export_checkpoint(source, out, fp16=fp16, data=data)
    console.print(f"exported {out} (parity max abs {diff:.2e})")


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
) -> None:
    """Move an alias (normally `champion`) to a version; the only way to set `champion`.

    Example:

        vision models promote eurosat_rgb_lite0 3 --alias champion
    """
    from training import tracking

    c = tracking.client()
    c.get_model_version(name, version)  # raises if absent
    c.set_registered_model_alias(name, alias, version)
    console.print(f"{name} v{version} is now {alias!r}")


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
    app.command("demo")(demo)
    app.add_typer(models_app, name="models")
