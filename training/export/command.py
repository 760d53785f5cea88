"""`vision export`: ONNX from a checkpoint or run folder, with the parity check, and its STAC
item beside it (`training.export.stac`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from training.checkpoint import InferenceCheckpoint
from training.export.graph import PARITY_TOL_FP16, export_onnx
from training.export.metadata import Identity, checkpoint_metadata
from training.export.stac import write_model_stac
from training.progress import Reporter
from training.quantize import MIN_AGREEMENT, QuantReport, quantization_metadata, quantize_model
from vision.config import ExperimentConfig, load_experiment
from vision.contracts.model import ModelMetadata
from vision.data import ChipDataset, ChipSource, open_data_spec, open_split
from vision.errors import ConfigError, ParityError
from vision.models import NormalizedClassifier


def _stack(ds: ChipDataset, n: int, report: Reporter, what: str) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` chips spread evenly over ``ds`` (every class of a split sorted by class)."""
    idx = np.unique(np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int))
    xs, ys = [], []
    with report.bar(f"reading {what}", len(idx)) as advance:
        for i in idx:
            x, y = ds[int(i)]
            xs.append(x)
            ys.append(y)
            advance(1)
    return torch.stack(xs), np.array(ys)


def _run_of(source: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for a run folder or a ``.pt`` file."""
    if source.is_dir():
        return source, source / "checkpoints" / "best.pt"
    return source.parent.parent, source


def export_checkpoint(source: Path, out: Path, fp16: bool = False, data: str | None = None,
                      n_parity: int = 256, int8: bool = False, calibration: str | None = None,
                      n_calibration: int = 512, n_check: int = 1000,
                      min_agreement: float = MIN_AGREEMENT, progress: bool = True,
                      max_diff: float | None = None) -> tuple[float, QuantReport | None]:
    """Export ``source`` (``.pt`` or a run folder) to ``out``.

    Returns the parity difference of the exported graph against the float32 PyTorch model
    and, with ``int8``, how the quantized model compares with the float graph
    (`training.quantize`): calibrated on ``n_calibration`` chips of the training split (or
    ``calibration``), checked on ``n_check`` chips of the validation split (or ``data``),
    refused when fewer than ``min_agreement`` of them keep their top-1 class. ``max_diff``
    overrides the parity bound (`training.export.graph.export_onnx`).

    Raises:
        ConfigError: options that exclude each other, no checkpoint, no data to check on.
        CheckpointError: the checkpoint cannot be read.
        ParityError: the graph (or the int8 model) disagrees; nothing is written.
    """
    if fp16 and int8:
        raise ConfigError("--fp16 and --int8 exclude each other: fp16 is for GPUs, int8 for CPUs")
    report = Reporter(progress)
    run_dir, ck_path = _run_of(source)
    if not ck_path.exists():
        raise ConfigError(f"no checkpoint at {ck_path} (give checkpoints/best.pt or a run folder)")
    with report.stage(f"loading {ck_path}"):
        ck = InferenceCheckpoint.load(ck_path)
        model = ck.build_model(ck_path)
    cfg_path = run_dir / "config.yaml"
    cfg = load_experiment(cfg_path) if cfg_path.exists() else None
    meta = checkpoint_metadata(ck, ck_path, Identity.of_run(run_dir), "fp16" if fp16 else "fp32")
    src = _check_source(data, cfg, ck, "--data", "parity samples")
    ds = ChipDataset(src)
    x, _ = _stack(ds, n_parity, report, "parity chips")
    views = {"none": "", "flips": ", 4 views each", "d8": ", 8 views each"}[ck.tta]
    if not int8:
        diff = (_export_fp16(model, out, meta, x, ck, views, report, max_diff) if fp16 else
                _export_graph(model, out, meta, x, ck, views, report, max_diff))
        write_model_stac(out)
        return diff, None

    cal_src = _check_source(calibration, cfg, ck, "--calibration", "int8 calibration", split="train")
    cal_name = calibration or (f"{cfg.data.source}:{cfg.data.train}" if cfg is not None else "")
    cal, _ = _stack(ChipDataset(cal_src), n_calibration, report, "calibration chips")
    chk, chk_labels = _stack(ds, n_check, report, "check chips")
    with tempfile.TemporaryDirectory(prefix="vision-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        with report.bar(f"exporting the float graph and checking parity{views}", len(x)) as adv:
            diff = export_onnx(model, float_path, meta, x, temperature=ck.temperature, on_chips=adv,
                               max_diff=max_diff)
        with report.stage(f"quantizing to int8 and comparing on {len(chk)} check chips"):
            q = quantize_model(float_path, out, cal.numpy(), chk.numpy(), chk_labels, temperature=ck.temperature,
                               metadata=quantization_metadata(len(cal), cal_name), min_agreement=min_agreement)
    write_model_stac(out)
    return diff, q


def _export_graph(model: NormalizedClassifier, out: Path, meta: ModelMetadata, x: torch.Tensor,
                  ck: InferenceCheckpoint, views: str, report: Reporter, max_diff: float | None,
                  half_layers: tuple[str, ...] | None = None) -> float:
    kind = "fp16" if half_layers is not None else "fp32"
    with report.bar(f"exporting {kind} graph and checking parity{views}", len(x)) as adv:
        return export_onnx(model, out, meta, x, temperature=ck.temperature, fp16=half_layers is not None,
                           on_chips=adv, max_diff=max_diff, half_layers=half_layers)


def _export_fp16(model: NormalizedClassifier, out: Path, meta: ModelMetadata, x: torch.Tensor,
                 ck: InferenceCheckpoint, views: str, report: Reporter, max_diff: float | None) -> float:
    """The fp16 graph with the most float16 layers that passes parity: the layers are chosen
    for a share of the bound, and again for smaller shares while ONNX Runtime refuses
    (`training.export.fp16.RETRY_MARGINS`); the last refusal is raised."""
    from training.export.fp16 import RETRY_MARGINS, HalfPlanner

    tol = max_diff if max_diff is not None else PARITY_TOL_FP16
    planner = HalfPlanner(model, x, ck.temperature)  # measures once for every margin tried

    def attempt(margin: float) -> float:
        with report.stage(f"fp16: measuring which layers float16 can hold within {margin:.0%} of the bound "
                          "(the rest stays float32)"):
            plan = planner.plan(tol * margin)
        report.line(f"fp16: {escape(plan.describe())}; simulated max abs difference {plan.simulated:.2e}")
        return _export_graph(model, out, meta, x, ck, views, report, max_diff, plan.half)

    for margin in RETRY_MARGINS[:-1]:
        try:
            return attempt(margin)
        except ParityError as exc:
            report.line(f"{escape(str(exc))}; choosing again with more layers float32")
    return attempt(RETRY_MARGINS[-1])


def _check_source(spec: str | None, cfg: ExperimentConfig | None, ck: InferenceCheckpoint, option: str,
                  what: str, split: str = "val") -> ChipSource:
    """Chips for ``what``: ``spec``, else the run's ``split``; they must fit the checkpoint's bands."""
    if spec is not None:
        src = open_data_spec(spec, classes=ck.classes)
    elif cfg is not None:
        d = cfg.data
        src = open_split(d.source, d.val if split == "val" else d.train, d.root, d.bands, ck.classes)
    else:
        raise ConfigError(f"no run folder around the checkpoint: give {option} for {what}")
    if not len(src):
        raise ConfigError(f"no chips for {what} ({spec or split})")
    if src.bands and len(src.bands) != len(ck.bands):
        raise ConfigError(f"{what}: the data has {len(src.bands)} bands, the model takes "
                          f"{len(ck.bands)} {ck.bands}")
    return src
