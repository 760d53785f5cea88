"""Fixtures for the inference tests: tiny ONNX models that follow ARCHITECTURE.md §2, and
small GeoTIFFs written at test time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("VISION_DATA_DIR", REPO.parent / "shared" / "data"))
SCENES = DATA_DIR / "scenes"
BAD_INPUTS = Path(__file__).parent / "data" / "bad_inputs"
BAD_STAC = Path(__file__).parent / "data" / "bad_stac"

RGB_BANDS = ["B04", "B03", "B02"]
CLASSES = ["AnnualCrop", "Forest", "Highway", "SeaLake"]


def make_model(path: Path, bands: Sequence[str], classes: Sequence[str] = CLASSES,
               input_size: tuple[int, int] = (64, 64), temperature: float = 1.0,
               thresholds: dict[str, float] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, seed: int = 0,
               extra_meta: dict[str, object] | None = None,
               nan_below: float | None = None) -> Path:
    """Export a tiny classifier (normalise, 1x1 conv, ReLU, global pool, linear) to ONNX,
    with its `ModelMetadata` (``extra_meta``: more metadata fields, e.g. ``tta``).

    ``nan_below``: the logits are NaN for an input whose first band's mean (raw) is below
    it, and unchanged otherwise (the same finite number is added to every logit), like a
    broken export on some inputs."""
    import onnx
    import torch
    from torch import nn

    from vision.contracts.model import ModelMetadata, set_onnx_props

    c = len(bands)
    mean = list(mean) if mean is not None else [100.0] * c
    std = list(std) if std is not None else [50.0] * c

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
            self.conv = nn.Conv2d(c, 8, 1)
            self.fc = nn.Linear(8, len(classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.fc(torch.relu(self.conv((x - self.mean) / self.std)).mean(dim=(2, 3)))
            if nan_below is None:
                return logits
            # log of a negative number is NaN; a shift shared by all classes changes nothing
            return logits + torch.log(x[:, :1].mean(dim=(2, 3)) - nan_below + 1e-3)

    torch.manual_seed(seed)
    net = Tiny().eval()
    with torch.no_grad():
        net.conv.weight.mul_(3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, (torch.zeros(2, c, *input_size),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}},
                      external_data=False)
    proto = onnx.load(str(path))
    meta = ModelMetadata(
        classes=tuple(classes), bands=tuple(bands), input_size=input_size, mean=tuple(mean),
        std=tuple(std), temperature=temperature, thresholds=thresholds, architecture="tiny-test",
        model_name=f"tiny-{c}band", model_version="1", train_data_fingerprint="test",
        created_at="2024-01-01", **(extra_meta or {}))  # type: ignore[arg-type]
    set_onnx_props(proto, meta)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session and signature) a tiny model; returns its path."""
    root = tmp_path_factory.mktemp("models")
    cache: dict[str, Path] = {}

    def build(bands: Sequence[str] = tuple(RGB_BANDS), **kw: object) -> Path:
        key = json.dumps([list(bands), sorted((k, repr(v)) for k, v in kw.items())])
        if key not in cache:
            cache[key] = make_model(root / f"m{len(cache)}" / "model.onnx", bands, **kw)  # type: ignore[arg-type]
        return cache[key]

    return build


@pytest.fixture(scope="session")
def corpus_model(model_factory: Callable[..., Path]) -> Path:
    """The model of the bad-input corpus: 3 bands, 64 x 64, NaN logits on a black input."""
    return model_factory(RGB_BANDS, temperature=1.5, thresholds={"AnnualCrop": 0.3},
                         nan_below=10.0)


@pytest.fixture(scope="session")
def rgb_model(model_factory: Callable[..., Path]) -> Path:
    return model_factory(RGB_BANDS, temperature=1.5,
                         thresholds={"AnnualCrop": 0.3, "Forest": 0.5})


def write_tif(path: Path, array: np.ndarray, crs: str | None = "EPSG:32631",
              transform: tuple[float, ...] | None = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
              nodata: float | None = None, descriptions: Sequence[str] | None = None,
              tiled: bool = True, blocksize: int = 64) -> Path:
    """Write a ``C x H x W`` array as a GeoTIFF."""
    import rasterio
    from affine import Affine

    c, h, w = array.shape
    profile: dict[str, object] = {"driver": "GTiff", "width": w, "height": h, "count": c,
                                  "dtype": array.dtype.name, "compress": "deflate"}
    if tiled and h >= blocksize and w >= blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = Affine(*transform)
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                ds.set_band_description(i, d)
    return path


@pytest.fixture
def tif_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, array: np.ndarray, **kw: object) -> Path:
        return write_tif(tmp_path / name, array, **kw)  # type: ignore[arg-type]

    return make


def random_chips(folder: Path, n: int, seed: int = 0, size: int = 64) -> list[Path]:
    """``n`` random RGB JPEG chips."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        base = rng.integers(0, 255, size=3)
        arr = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        p = folder / f"chip_{k:04d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out
