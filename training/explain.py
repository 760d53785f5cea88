"""Grad-CAM explanations (Selvaraju et al. 2017) from the PyTorch weights behind a model.

An exported ``model.onnx`` cannot be differentiated, so explanations come from the checkpoint
it was exported from: the ``vision.checkpoint`` metadata path, or the MLflow run
(``vision.mlflow_run_id``: the run folder it names, or its ``checkpoint/best.pt`` artifact).
Every registered architecture declares the layer Grad-CAM explains (``ModelSpec.gradcam_layer``).

For the review service::

    explainer = load_explainer("runs/rgb/model.onnx")    # cached per checkpoint file
    heat = gradcam(explainer, chip)                      # H x W float32 in [0, 1]

Sanity checks as in Adebayo et al. 2018 ("Sanity Checks for Saliency Maps"): `randomized_copy`
re-initialises the weights; an explanation that survives that unchanged explains the input,
not the model. `rank_correlation` compares two heatmaps.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vision.atomic import write_bytes_atomic
from vision.bands import display_bands, match_bands, raster_band_names, stretch
from vision.contracts.model import read_model_file
from vision.errors import BandMismatchError, ConfigError, ModelFormatError
from vision.models import NormalizedClassifier, get_spec
from vision.raster import RASTER_SUFFIXES, open_raster

log = logging.getLogger(__name__)


@dataclass
class Explainer:
    """A PyTorch model ready for Grad-CAM, with what is needed to feed it.

    Attributes:
        model: raw pixels in, logits out (normalisation inside).
        layer: dotted path (within ``model``) of the layer Grad-CAM explains.
        classes: class names in logit order.
        bands: band names in input order.
        input_size: ``(H, W)`` the model was trained at; other chip sizes are resized to it.
        temperature: calibration temperature (for the reported probabilities).
        checkpoint: the checkpoint file the weights came from.
    """

    model: nn.Module
    layer: str
    classes: list[str]
    bands: list[str]
    input_size: tuple[int, int]
    temperature: float = 1.0
    architecture: str = ""
    checkpoint: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass
class Explanation:
    """One Grad-CAM result.

    Attributes:
        heatmap: ``H x W`` float32 in [0, 1], the chip's own size.
        target: class index explained.
        probs: calibrated class probabilities of the chip.
        contrast: ``(max - min) / max`` of the map before scaling; near 0 means the model
            attends to the chip evenly (the [0, 1] scaling would exaggerate any ripple).
    """

    heatmap: np.ndarray
    target: int
    probs: np.ndarray
    contrast: float = 0.0


def gradcam_layer(architecture: str, wrapped: bool = True) -> str:
    """The registry's Grad-CAM layer for ``architecture``; ``backbone.``-prefixed when wrapped
    in a `NormalizedClassifier`."""
    layer = get_spec(architecture).gradcam_layer
    return f"backbone.{layer}" if wrapped else layer


def explain(model: Explainer | nn.Module, chip: np.ndarray, target: int | str | None = None,
            layer: str | None = None) -> Explanation:
    """Grad-CAM of one chip.

    Args:
        model: an `Explainer` (see `load_explainer`), or a module with ``layer`` given.
        chip: raw pixels ``H x W x C`` (as a `ChipSource` reads them), bands in model order.
        target: class index or name to explain; default the top-1 prediction.
        layer: dotted layer path, overriding the registry's choice.

    Returns:
        The heatmap (chip size, [0, 1]), the explained class and the calibrated probabilities.
    """
    if isinstance(model, Explainer):
        net, where, size, temp = model.model, layer or model.layer, model.input_size, model.temperature
        classes: list[str] | None = model.classes
        lock: threading.Lock | None = model._lock
    else:
        if layer is None:
            raise ValueError("give the layer to explain (e.g. gradcam_layer(architecture))")
        net, where, size, temp, classes, lock = model, layer, None, 1.0, None, None
    if chip.ndim == 2:
        chip = chip[..., None]
    if chip.ndim != 3:
        raise BandMismatchError(f"a chip is H x W x C, got shape {chip.shape}")
    if isinstance(target, str):
        if classes is None or target not in classes:
            raise ConfigError(f"unknown class {target!r}; classes: {classes}")
        target = classes.index(target)
    x = torch.from_numpy(np.ascontiguousarray(chip.transpose(2, 0, 1), dtype=np.float32))[None]
    hw = (chip.shape[0], chip.shape[1])
    if size is not None and hw != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    try:
        module = net.get_submodule(where)
    except AttributeError as exc:
        raise ConfigError(f"the model has no layer {where!r}") from exc
    if lock is None:
        return _gradcam(net, module, x, target, hw, temp)
    with lock:  # forward hooks on a shared module: one explanation at a time
        return _gradcam(net, module, x, target, hw, temp)


def gradcam(model: Explainer | nn.Module, chip: np.ndarray, target: int | str | None = None,
            layer: str | None = None) -> np.ndarray:
    """The Grad-CAM heatmap of ``chip``: ``H x W`` float32 in [0, 1] (see `explain`)."""
    return explain(model, chip, target, layer).heatmap


def _gradcam(net: nn.Module, module: nn.Module, x: torch.Tensor, target: int | None,
             out_hw: tuple[int, int], temperature: float) -> Explanation:
    acts: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: Any) -> None:
        acts.append(out[0] if isinstance(out, tuple) else out)

    was_training = net.training
    net.eval()
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = net(x)
            t = int(logits[0].argmax()) if target is None else int(target)
            if not 0 <= t < logits.shape[1]:
                raise ConfigError(f"class index {t} out of range for {logits.shape[1]} classes")
            if not acts or acts[-1].ndim != 4:
                raise ModelFormatError("the Grad-CAM layer must give an N x C x H x W activation")
            act = acts[-1]
            (grad,) = torch.autograd.grad(logits[0, t], act)
    finally:
        handle.remove()
        net.train(was_training)
    with torch.no_grad():
        weights = grad.mean(dim=(2, 3), keepdim=True)  # global-average-pooled gradients
        cam = F.relu((weights * act).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=out_hw, mode="bilinear", align_corners=False)[0, 0]
        lo, hi = float(cam.min()), float(cam.max())
        # Min-max scaling as in the Grad-CAM reference code; `contrast` keeps what it hides.
        heat = ((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam)).clamp_(0, 1)
        contrast = (hi - lo) / hi if hi > 0 else 0.0
        z = logits.detach()[0].double() / temperature
        probs = torch.softmax(z, dim=0).float().numpy()
    return Explanation(heat.numpy().astype(np.float32), t, probs, contrast)


# --- sanity checks (Adebayo et al. 2018) ----------------------------------------------


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every learnable layer re-initialised (the "model parameter
    randomisation test"); normalisation buffers of `NormalizedClassifier` are kept."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset) and m is not clone:
                reset()
    return clone.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two heatmaps (Adebayo et al. use it to compare maps)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant map carries no ranking (and argsort would invent one)
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1)[inverse]


# --- finding and loading the weights ------------------------------------------------------


def find_checkpoint(model: str) -> Path:
    """The PyTorch checkpoint behind ``model`` (``.pt``, run folder, ``.onnx`` or ``models:/``).

    Raises:
        ModelFormatError: the model does not say where its weights are, or they are gone.
    """
    from training.evaluate import model_path

    with model_path(model) as path:
        if path.suffix == ".pt":
            return path
        if path.suffix != ".onnx":
            raise ModelFormatError(f"{path}: expected a .onnx model or a .pt checkpoint")
        return _checkpoint_for_onnx(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _checkpoint_for_onnx(path: str, _mtime_ns: int) -> Path:
    meta = read_model_file(path).metadata
    tried: list[str] = []
    recorded = meta.checkpoint
    if recorded:
        if Path(recorded).exists():
            return Path(recorded)
        tried.append(f"vision.checkpoint {recorded} (missing)")
    run_id = meta.mlflow_run_id
    if run_id:
        from training import tracking

        found, where = tracking.find_run_checkpoint(run_id)
        if found is not None:
            return found
        tried.append(where)
    if not tried:
        tried.append("no vision.checkpoint or vision.mlflow_run_id metadata")
    raise ModelFormatError(
        f"{path}: cannot find the PyTorch checkpoint it was exported from ({'; '.join(tried)}). "
        "Explanations need the weights: give checkpoints/best.pt or the run folder instead.")


def load_explainer(model: str) -> Explainer:
    """An `Explainer` for ``model`` (any form `vision evaluate` takes), cached per checkpoint file.

    When ``model`` is an ONNX file, its classes, bands and architecture must match the
    checkpoint's (a rerun into the same folder would otherwise explain a different model).
    """
    ck_path = find_checkpoint(model)
    explainer = _load_cached(str(ck_path.resolve()), ck_path.stat().st_mtime_ns)
    if str(model).endswith(".onnx"):
        meta = read_model_file(model).metadata
        for key, want, have in (("classes", list(meta.classes), explainer.classes),
                                ("bands", list(meta.bands), explainer.bands),
                                ("architecture", meta.architecture, explainer.architecture)):
            if want and want != have:
                raise ModelFormatError(f"{model}: vision.{key} {want} differs from its checkpoint "
                                       f"{ck_path} ({have}); the checkpoint was overwritten")
    return explainer


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, _mtime_ns: int) -> Explainer:
    from training.evaluate import load_checkpoint_model

    net, ck = load_checkpoint_model(Path(path))
    # Grad-CAM explains one view: the chip as it is (test-time views would fire the hooks
    # once per view).
    net.tta = "none"
    return Explainer(model=net, layer=gradcam_layer(ck.architecture, isinstance(net, NormalizedClassifier)),
                     classes=list(ck.classes), bands=list(ck.bands), input_size=ck.input_size,
                     temperature=ck.temperature, architecture=ck.architecture, checkpoint=Path(path))


# --- reading what to explain ---------------------------------------------------------------


@dataclass
class ChipInput:
    """A chip to explain: raw ``H x W x C`` pixels and where they came from.

    Attributes:
        row: the prediction-table row, for ``JOB_DIR#ROW`` inputs.
    """

    pixels: np.ndarray
    source: str
    row: dict[str, Any] | None = None


def read_input(spec: str, bands: list[str]) -> ChipInput:
    """Read an image/GeoTIFF chip, a shard member ``SHARD.tar.gz#KEY``, or ``JOB_DIR#ROW``
    (row ROW of ``JOB_DIR/predictions.parquet``; scene rows read their window).

    Raises:
        ConfigError: the job, row or key does not exist.
        UnreadableInputError, BandMismatchError: the pixels cannot be read for this model.
    """
    left, sep, right = spec.rpartition("#")
    if sep and Path(left).is_dir():
        return _read_job_row(Path(left), right, bands)
    if sep and Path(left).is_file() and left.endswith((".tar", ".tar.gz", ".tgz")):
        return ChipInput(_read_shard_member(Path(left), right, bands), spec)
    return ChipInput(read_pixels(spec, bands), spec)


def read_pixels(path: str | Path, bands: list[str],
                window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``H x W x C`` raw pixels of an image or GeoTIFF in the model's band order.

    Args:
        window: ``(row_off, col_off, height, width)`` to read from a GeoTIFF scene.
    """
    p = Path(path)
    if p.suffix.lower() in RASTER_SUFFIXES:
        from rasterio.windows import Window

        with open_raster(p) as ds:
            idx = match_bands(raster_band_names(ds.descriptions), bands)
            win = Window(window[1], window[0], window[3], window[2]) if window is not None else None
            arr = ds.read([i + 1 for i in idx], window=win)
        return np.moveaxis(arr, 0, -1)
    from vision.data.decode import decode_file

    arr = decode_file(p)
    if window is not None:
        r, c, h, w = window
        arr = arr[r:r + h, c:c + w]
    if arr.shape[-1] != len(bands):
        raise BandMismatchError(f"{p}: has {arr.shape[-1]} bands, the model takes {len(bands)} {bands}")
    return arr


def _read_job_row(job: Path, row: str, bands: list[str]) -> ChipInput:
    import pyarrow.parquet as pq

    table_path = job / "predictions.parquet"
    if not table_path.exists():
        raise ConfigError(f"{job}: no predictions.parquet (is it a finished `vision infer` job?)")
    if not row.isdigit():
        raise ConfigError(f"JOB_DIR#ROW needs a row index, got {row!r}")
    table = pq.read_table(table_path)
    i = int(row)
    if i >= table.num_rows:
        raise ConfigError(f"{table_path} has {table.num_rows} rows; row {i} does not exist")
    rec = table.slice(i, 1).to_pylist()[0]
    path = Path(str(rec["path"]))
    if not path.exists() and (job / path).exists():
        path = job / path
    window = None
    if rec.get("row_off") is not None:
        window = (int(rec["row_off"]), int(rec["col_off"]), int(rec["height"]), int(rec["width"]))
    return ChipInput(read_pixels(path, bands, window), f"{job}#{i} ({path}"
                     + (f" window {window}" if window else "") + ")", rec)


def _read_shard_member(shard: Path, key: str, bands: list[str]) -> np.ndarray:
    from vision.data.decode import decode_image_bytes
    from vision.data.sources import iter_shard

    for k, parts in iter_shard(shard):
        if k == key:
            img = next((parts[e] for e in ("jpg", "jpeg", "png") if e in parts), None)
            if img is None:
                break
            arr = decode_image_bytes(img, f"{shard}#{key}")
            if arr.shape[-1] != len(bands):
                raise BandMismatchError(f"{shard}#{key}: has {arr.shape[-1]} bands, the model takes {bands}")
            return arr
    raise ConfigError(f"{shard}: no image sample with key {key!r}")


# --- rendering -------------------------------------------------------------------------------


def display_rgb(chip: np.ndarray, bands: list[str]) -> np.ndarray:
    """An ``H x W x 3`` float image in [0, 1] for display of an ``H x W x C`` chip: natural
    colour where the bands allow (`vision.bands.display_bands`), with the project's display
    stretch (`vision.bands.stretch`)."""
    names: list[str | None] = list(bands) if len(bands) == chip.shape[-1] else [None] * chip.shape[-1]
    idx = display_bands(names)
    return stretch(np.moveaxis(chip[..., idx], -1, 0))


def render_overlay(chip: np.ndarray, heatmap: np.ndarray, bands: list[str], out: Path,
                   title: str = "", alpha: float = 0.5) -> Path:
    """Write a PNG: the chip beside the chip with the heatmap overlaid (jet colour map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = display_rgb(chip, bands)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8), dpi=120)
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("chip", fontsize=9)
    axes[1].imshow(rgb, interpolation="nearest")
    im = axes[1].imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title("Grad-CAM", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out)
    write_bytes_atomic(out, buf.getvalue())
    return out
