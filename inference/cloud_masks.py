"""Cloud fractions of the windows and chips a job reads (`vision.clouds` does the
measuring): from the scene classification layer of a STAC item, or from s2cloudless for
13-band L1C data.

One s2cloudless detector serves the whole process; its LightGBM booster is loaded on first
use and called under a lock (the reader threads share it; LightGBM threads itself).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from vision.clouds import S2Cloudless, cloud_fraction, scl_fractions, window_fractions

Window = tuple[int, int, int, int]

_lock = threading.Lock()
_detector: S2Cloudless | None = None


def detector() -> S2Cloudless:
    """The process's s2cloudless detector (loaded once)."""
    global _detector
    with _lock:
        if _detector is None:
            _detector = S2Cloudless()
            _ = _detector.booster  # load now, under the lock
        return _detector


def s2cloudless_masks(reflectance: np.ndarray) -> np.ndarray:
    """Cloud masks ``N x H x W`` of ``N x 10 x H x W`` reflectance (0-1)."""
    d = detector()
    with _lock:
        proba = d.probabilities(reflectance)
    return d.masks(proba)


def region_fractions_s2cloudless(reflectance: np.ndarray, valid: np.ndarray, origin: tuple[int, int],
                                 windows: Sequence[Window]) -> list[float | None]:
    """Cloud fractions of windows of a region (``10 x H x W`` reflectance read at ``origin``):
    the mask is made over the whole region (no seams at window edges), then shared out."""
    mask = s2cloudless_masks(reflectance[None])[0]
    return window_fractions(mask, valid, origin, windows)


def region_fractions_scl(scl: np.ndarray, valid: np.ndarray, origin: tuple[int, int],
                         windows: Sequence[Window]) -> list[float | None]:
    """Cloud fractions of windows from the SCL classes of a region (SCL 0 is not valid)."""
    return scl_fractions(scl, valid, origin, windows)


def chip_fractions(chips: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float | None]:
    """Cloud fraction of each chip (``(reflectance 10 x h x w, valid h x w)``); chips of one
    size go through the detector together."""
    out: list[float | None] = [None] * len(chips)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, (refl, _) in enumerate(chips):
        by_shape.setdefault(refl.shape, []).append(k)
    for ks in by_shape.values():
        masks = s2cloudless_masks(np.stack([chips[k][0] for k in ks]))
        for m, k in zip(masks, ks, strict=True):
            out[k] = cloud_fraction(m, chips[k][1])
    return out
