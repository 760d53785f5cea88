"""`vision demo`: the whole path on embedded defaults, with no external data or network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rich.markup import escape
from rich.panel import Panel

from training.trainer import run_training
from vision import settings
from vision.config import validate_experiment
from vision.console import make_console
from vision.data.synthetic import BANDS, NOTICE, write_synthetic_dataset
from vision.errors import VisionError

console = make_console()


def demo_recipe(data: str, out: Path, epochs: int) -> dict[str, object]:
    """The demo recipe (also in experiments/demo.yaml, for reading)."""
    if data == "eurosat":
        return {
            "data": {"source": "eurosat-rgb", "limit_per_split": 2000, "num_workers": 1},
            "model": {"architecture": "efficientnet_lite0", "weights": "imagenet",
                      "name": "demo_eurosat_lite0", "input_size": [64, 64]},
            "augmentations": [{"name": "HorizontalFlip"}, {"name": "RandomRotate90"}],
            "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3},
            "experiment": "demo",
        }
    return {
        "data": {"source": "folder", "root": str(out / "data"), "num_workers": 0},
        "model": {"architecture": "efficientnet_lite0", "weights": "imagenet",
                  "name": "demo_synthetic_lite0", "input_size": [32, 32]},
        "augmentations": [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"},
                          {"name": "RandomRotate90"}],
        "train": {"epochs": epochs, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.3},
        "experiment": "demo",
    }


def _classify(inputs: Path, model: Path, job: Path) -> None:
    """Run the analyst's batch job on the demo chips through the `vision infer` command.

    A subprocess keeps `training` independent of `inference` (imports point one way).
    """
    cmd = [sys.executable, "-m", "vision.cli", "infer", str(inputs), "--model", str(model),
           "--out", str(job), "--no-progress"]
    console.print(f"[bold]classifying[/bold] {inputs} -> {job}")
    r = subprocess.run(cmd, text=True)
    if r.returncode != 0:
        raise VisionError(f"`{' '.join(cmd)}` failed with exit code {r.returncode}")


def run_demo(data: str, out: Path, epochs: int = 6) -> None:
    out = out.resolve()
    if data not in ("synthetic", "eurosat"):
        from vision.errors import ConfigError

        raise ConfigError("--data takes synthetic or eurosat")
    if data == "synthetic":
        if not (out / "data" / "SYNTHETIC_NOTICE.txt").exists():
            write_synthetic_dataset(out / "data")
        _box(NOTICE.strip() + f"\nBands: {', '.join(BANDS)}; 4 classes; written to {out / 'data'}",
             "demo data", "yellow")
    cfg = validate_experiment(demo_recipe(data, out, epochs), source="demo recipe")
    run_dir = out / "run"
    result = run_training(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").exists(),
                          recipe="vision demo")
    m = result.metrics
    split = "test" if "test" in m else "val"
    job = out / "job"
    if data == "synthetic":
        _classify(out / "data" / "test", run_dir / "model.onnx", job)
    _box(
        f"{split} accuracy: {m[split]['accuracy']:.4f}  macro-F1: {m[split]['macro_f1']:.4f}\n"
        f"run folder:   {run_dir}\n"
        f"ONNX model:   {run_dir / 'model.onnx'}\n"
        f"MLflow:       {settings.tracking_uri()} (model {m['model_name']} v{m['model_version']}, "
        f"alias challenger)\n"
        + (f"classified:   {job / 'predictions.parquet'} (+ manifest.json; a rerun is a no-op)\n\n"
           if data == "synthetic" else "\n")
        +
        "Next (copy and paste; or `source .venv/bin/activate` first and drop the folder):\n"
        f"  {_tool('vision')} evaluate {_here(run_dir / 'model.onnx')} {_here(out / 'data' / 'test')}\n"
        f"  {_tool('vision')} models show {m['model_name']}\n"
        + (f"  {_tool('vision')} explain {_here(run_dir / 'model.onnx')} {_here(job)}#0 "
           f"--out {_here(out / 'row0.png')}\n" if data == "synthetic" else "")
        + f"  {_tool('mlflow')} ui --backend-store-uri {settings.tracking_uri()}",
        "demo complete", "green")


def _box(text: str, title: str, style: str) -> None:
    """``text`` in a titled box on a terminal; on a pipe or file, a titled rule and the lines
    as they are (a box there is cut at 80 columns, and the commands in it must stay whole
    for copying)."""
    if console.is_terminal:
        console.print(Panel(escape(text), title=title, style=style))
        return
    console.rule(title, style=style)
    for line in text.splitlines():
        console.print(line, markup=False, highlight=False)
    console.rule(style=style)


def _tool(name: str) -> str:
    """How to call ``name`` from the working directory: the virtual environment's own script
    (``.venv/bin/vision``), since `make demo` does not activate the environment."""
    script = Path(sys.executable).parent / name
    if not script.exists() or shutil.which(name) == str(script):
        return name
    return _here(script)


def _here(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter to paste)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
