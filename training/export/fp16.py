"""The float16 network of an fp16 export, within the parity bound where float16 allows it.

Only the network is converted: the raw pixels, the normalisation, the resize, the test-time
views and their softmax/mean/log stay float32 (`NormalizedClassifier`). Inside the network,
BatchNorm is folded into the convolutions first, in float32 (one rounding of each folded
weight, not three), and each convolution / linear layer then runs in float16 between float32
activations (``cast -> fp16 layer -> cast``), so any layer can stay float32.

Rounding every weight of a small, deep network to float16 can move its calibrated
probabilities by ~1e-2 (EfficientNet-Lite0: its first depthwise and projection convolutions,
with 9 weights per channel and 16-32 channels, are the most sensitive). `mixed_half` keeps
the fewest layers in float32 that bring the float16 model within the bound: it measures, on
some of the parity chips, how far rounding each layer alone moves the probabilities, and keeps
the fewest of the most sensitive ones float32 (a bisection on how many) that bring the whole
model (all rounding simulated in float32 arithmetic) within half the bound; the export's
parity check on ONNX Runtime then judges, and when it refuses, the choice is made again for a
fifth, then a twentieth of the bound (`RETRY_MARGINS`: more layers float32) before giving up.
The measurements are on one view of each chip (8 times cheaper than a d8 model: the average
of views is off by at most its worst view, and in practice by less, as errors even out); the
parity check then runs the exported graph with its views.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vision.metrics import softmax
from vision.models import NormalizedClassifier

#: Chips the layer sensitivities are measured on (the parity check then uses all of them).
SELECTION_CHIPS = 64
#: The float16 model aims at this share of the bound, so that other chips also hold.
MARGIN = 0.5
#: Shares tried in turn when ONNX Runtime's float16 kernels (which round more than the
#: simulation: 1.1e-3 measured against 3.0e-4 simulated on the reference run) miss the bound.
RETRY_MARGINS = (MARGIN, 0.2, 0.05)
_LAYERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class HalfPlan:
    """Which layers run in float16 and which stay float32, and the simulated difference.

    Attributes:
        half: names of the layers in float16; kept: those kept float32 (most sensitive first).
        simulated: max abs difference of probabilities of the plan, simulated on the selection chips.
        half_share: the float16 layers' share of the network's multiply-adds.
    """

    half: tuple[str, ...]
    kept: tuple[str, ...]
    simulated: float
    half_share: float

    def describe(self) -> str:
        return (f"{len(self.half)} of {len(self.half) + len(self.kept)} layers in float16 "
                f"({self.half_share:.0%} of the multiply-adds)"
                + (f"; kept float32: {', '.join(self.kept)}" if self.kept else ""))


class _Half(nn.Module):
    """``layer`` in float16 between float32 activations."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.half()).float()


class _Rounded(nn.Module):
    """What `_Half` computes, in float32 arithmetic: rounded input, weights and output."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = copy.deepcopy(layer)
        with torch.no_grad():
            for p in self.layer.parameters():
                p.copy_(p.half().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.half().float()).half().float()


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """``net`` with each BatchNorm folded into its convolution (eval mode, float32), or ``net``
    itself when it cannot be traced (then the norms run in float32 between the layers)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(net).eval())
    except Exception:  # noqa: BLE001 - an untraceable network is exported unfolded
        return net


def _layers(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if isinstance(m, _LAYERS)]


def _replace(net: nn.Module, names: set[str], wrap: Callable[[nn.Module], nn.Module]) -> nn.Module:
    modules = dict(net.named_modules())
    for name in names:
        parent, _, leaf = name.rpartition(".")
        setattr(modules[parent] if parent else net, leaf, wrap(modules[name]))
    return net


def _madds(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Multiply-adds of each layer for one chip (the work it does)."""
    out: dict[str, float] = {}
    hooks = [m.register_forward_hook(
        lambda mod, _i, o, n=n: out.__setitem__(n, float(mod.weight.numel() * (o.shape[-1] * o.shape[-2]
                                                                               if o.dim() == 4 else 1))))
        for n, m in net.named_modules() if isinstance(m, _LAYERS)]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return out


def build(model: NormalizedClassifier, half: set[str], rounded: bool = False) -> NormalizedClassifier:
    """A copy of ``model`` (BatchNorm folded) whose layers ``half`` run in float16 (`_Half`), or
    with ``rounded`` are simulated in float32 arithmetic (`_Rounded`)."""
    clone = copy.deepcopy(model).eval()
    clone.backbone = _replace(fold_batchnorm(clone.backbone), half, _Rounded if rounded else _Half)
    return clone


class HalfPlanner:
    """Chooses the float32 layers (module docstring) for any bound, measuring each layer's
    sensitivity and each tried split once: a second, tighter bound (`RETRY_MARGINS`) reuses the
    measurements of the first. ``on_step`` is called after each measurement."""

    def __init__(self, model: NormalizedClassifier, x: torch.Tensor, temperature: float,
                 on_step: Callable[[], None] | None = None):
        sim = copy.deepcopy(model).eval()
        sim.tta = "none"  # one view per chip (module docstring)
        picks = np.unique(np.linspace(0, len(x) - 1, num=min(SELECTION_CHIPS, len(x))).round().astype(int))
        self.sample = x[picks].float()
        self.temperature, self.on_step = temperature, on_step
        with torch.no_grad():
            self.ref = softmax(sim(self.sample).numpy(), temperature)
        sim.backbone = fold_batchnorm(sim.backbone)
        self.sim, self.names = sim, _layers(sim.backbone)
        self.work = _madds(sim.backbone, (self.sample - model.mean) / model.std)
        self.total = sum(self.work.values()) or 1.0
        self.modules = dict(sim.backbone.named_modules())
        self.exact = {n: self.modules[n] for n in self.names}
        self.rounded = {n: _Rounded(self.exact[n]) for n in self.names}
        self._measured: dict[frozenset[str], float] = {}
        self._order: list[str] | None = None

    def diff(self, half: frozenset[str]) -> float:
        """Max abs difference of probabilities with the layers ``half`` rounded (simulated)."""
        if half in self._measured:
            return self._measured[half]
        for n in self.names:  # swap the simulated float16 layers in, the others back
            parent, _, leaf = n.rpartition(".")
            setattr(self.modules[parent] if parent else self.sim.backbone, leaf,
                    self.rounded[n] if n in half else self.exact[n])
        with torch.no_grad():
            got = softmax(self.sim(self.sample).numpy(), self.temperature)
        if self.on_step is not None:
            self.on_step()
        d = float(np.abs(got - self.ref).max())
        self._measured[half] = d if np.isfinite(d) else float("inf")
        return self._measured[half]

    def order(self) -> list[str]:
        """The layers, most sensitive to rounding first (each measured alone, once)."""
        if self._order is None:
            sensitivity = {n: self.diff(frozenset({n})) for n in self.names}
            self._order = sorted(self.names, key=lambda n: -sensitivity[n])
        return self._order

    def plan(self, bound: float) -> HalfPlan:
        """The fewest most-sensitive layers kept float32 for the simulated difference to stay
        within ``bound``: a bisection on how many."""
        everything = frozenset(self.names)
        whole = self.diff(everything)
        if whole <= bound:
            return self._plan(everything, whole, self.names)
        order = self.order()
        best: tuple[frozenset[str], float] = (frozenset(), 0.0)  # all kept float32: no rounding at all
        lo, hi = 1, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            half = everything - set(order[:mid])
            d = self.diff(half)
            if d <= bound:
                hi, best = mid, (half, d)
            else:
                lo = mid + 1
        return self._plan(*best, order)

    def _plan(self, half: frozenset[str], d: float, order: list[str]) -> HalfPlan:
        kept = tuple(n for n in order if n not in half)
        return HalfPlan(tuple(n for n in self.names if n in half), kept, d,
                        sum(self.work.get(n, 0.0) for n in half) / self.total)


def mixed_half(model: NormalizedClassifier, x: torch.Tensor, temperature: float, tol: float,
               on_step: Callable[[], None] | None = None, margin: float = MARGIN) -> HalfPlan:
    """The `HalfPlanner`'s plan for a simulated difference within ``margin * tol``."""
    return HalfPlanner(model, x, temperature, on_step).plan(tol * margin)


def all_layers(model: NormalizedClassifier) -> list[str]:
    """The names of the network's convolution and linear layers, BatchNorm folded."""
    return _layers(fold_batchnorm(model.backbone))
