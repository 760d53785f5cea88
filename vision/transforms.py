"""Augmentation pipelines declared in a recipe and built with albumentations.

Overhead imagery has no "up": flips and 90-degree rotations are label-preserving. Colour
transforms assume 8-bit RGB and are refused for other bands, where they would mix physical
units (reflectance) in ways no sensor produces.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np

from vision.config import AugmentationConfig
from vision.errors import ConfigError

#: Transforms that change pixel values as if they were display colours.
COLOUR_TRANSFORMS = frozenset(
    {
        "ColorJitter",
        "HueSaturationValue",
        "RGBShift",
        "ChannelShuffle",
        "ToGray",
        "ToSepia",
        "RandomBrightnessContrast",
        "RandomGamma",
        "CLAHE",
        "Equalize",
        "Posterize",
        "Solarize",
        "FancyPCA",
    }
)


class Augmenter:
    """Callable ``H x W x C -> H x W x C`` wrapping an albumentations ``Compose``."""

    def __init__(self, compose: A.Compose):
        self.compose = compose

    def __call__(self, chip: np.ndarray) -> np.ndarray:
        return self.compose(image=chip)["image"]

    def reseed(self, seed: int) -> None:
        """Make the random stream reproducible (called per epoch and per worker)."""
        self.compose.set_random_seed(seed)


def build_augmenter(
    augs: Sequence[AugmentationConfig], bands: Sequence[str], seed: int = 0
) -> Augmenter | None:
    """Build the training augmentation pipeline; ``None`` when the recipe declares none.

    Raises:
        ConfigError: unknown transform, bad parameters, or a colour transform on non-RGB bands.
    """
    if not augs:
        return None
    rgb = list(bands) == ["B04", "B03", "B02"] or list(bands) == ["R", "G", "B"]
    transforms = []
    for aug in augs:
        cls = getattr(A, aug.name, None)
        if not isinstance(cls, type):
            raise ConfigError(f"unknown albumentations transform {aug.name!r}")
        if aug.name in COLOUR_TRANSFORMS and not rgb:
            raise ConfigError(
                f"{aug.name} is a colour transform; it only makes sense for 8-bit RGB, "
                f"not bands {list(bands)}"
            )
        try:
            transforms.append(cls(**aug.params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{aug.name}({aug.params}): {exc}") from exc
    compose = A.Compose(transforms, seed=seed)
    return Augmenter(compose)
