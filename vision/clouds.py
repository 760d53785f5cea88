"""Cloud fractions per window: from a Sentinel-2 scene classification layer (SCL), or from
the s2cloudless pixel classifier for 13-band L1C data; otherwise none (``None``).

``cloud_fraction`` is the share of a window's *valid* pixels that are cloud or cloud shadow,
so a window half outside the scene and otherwise clear is clear, and cloud never reads as
"no crop here".

- SCL: classes 3 (cloud shadow), 8 and 9 (cloud, medium and high probability) and 10 (thin
  cirrus) are cloud; 0 is SCL's own nodata (not counted). The layer is read onto the
  window's grid with nearest neighbour (`vision.scene.open_scene` with ``cloud_layer``).
- s2cloudless (Sentinel Hub, PyPI ``s2cloudless``): its LightGBM model, shipped inside the
  package, is loaded with ``lightgbm.Booster(model_file=...)`` from the package folder found
  with `importlib.util.find_spec`, without importing the package (which imports the
  ``sentinelhub`` network client). Its recipe is replicated: bands B01, B02, B04, B05, B08,
  B8A, B09, B10, B11, B12 as reflectance 0-1, probability averaged over a disk
  (``cv2.filter2D``, reflected borders), threshold 0.4, mask dilated with a disk.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.bands import canonical_band
from vision.errors import ConfigError

#: SCL classes counted as cloud: 3 cloud shadow, 8 cloud medium probability, 9 cloud high
#: probability, 10 thin cirrus.
SCL_CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
#: SCL's "no data" class.
SCL_NODATA = 0
#: The bands s2cloudless' model takes, in its order.
S2CLOUDLESS_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
S2CLOUDLESS_MODEL = "pixel_s2_cloud_detector_lightGBM_v0.1.txt"
#: s2cloudless' documented settings (README: threshold 0.4, average_over 4, dilation_size 2).
S2CLOUDLESS_THRESHOLD = 0.4
S2CLOUDLESS_AVERAGE_OVER = 4
S2CLOUDLESS_DILATION = 2

Window = tuple[int, int, int, int]


class CloudModelUnavailable(ConfigError, RuntimeError):
    """The s2cloudless model file is not installed."""


def scl_cloud(scl: np.ndarray) -> np.ndarray:
    """Boolean cloud mask of SCL classes."""
    return np.isin(scl, SCL_CLOUD_CLASSES)


def cloud_fraction(cloud: np.ndarray, valid: np.ndarray) -> float | None:
    """Share of the valid pixels that are cloud, ``None`` when none is valid."""
    n = int(valid.sum())
    return float((cloud & valid).sum()) / n if n else None


def window_fractions(cloud: np.ndarray, valid: np.ndarray, origin: tuple[int, int],
                     windows: Sequence[Window]) -> list[float | None]:
    """Cloud fractions of windows of a chunk read at ``origin`` (row, col) of the grid.

    The parts of a window outside the chunk are not valid (they were not read).
    """
    r0, c0 = origin
    out: list[float | None] = []
    for row, col, h, w in windows:
        ra, ca = max(0, row - r0), max(0, col - c0)
        rb, cb = max(ra, row + h - r0), max(ca, col + w - c0)
        out.append(cloud_fraction(cloud[ra:rb, ca:cb], valid[ra:rb, ca:cb]))
    return out


def scl_fractions(scl: np.ndarray, valid: np.ndarray, origin: tuple[int, int],
                  windows: Sequence[Window]) -> list[float | None]:
    """Cloud fractions of windows from an SCL chunk on the windows' grid (``valid``: the
    image's validity; SCL's nodata is excluded too)."""
    return window_fractions(scl_cloud(scl), valid & (scl != SCL_NODATA), origin, windows)


def s2cloudless_model_path() -> Path:
    """The LightGBM model file inside the installed ``s2cloudless`` package (not imported).

    Raises:
        CloudModelUnavailable: the package or its model file is not installed.
    """
    spec = importlib.util.find_spec("s2cloudless")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        p = Path(folder) / "models" / S2CLOUDLESS_MODEL
        if p.is_file():
            return p
    raise CloudModelUnavailable(f"s2cloudless model {S2CLOUDLESS_MODEL} not found: install the s2cloudless package")


def disk(radius: int) -> np.ndarray:
    """The disk structuring element of s2cloudless (``skimage.morphology.disk`` via OpenCV)."""
    import cv2

    return cv2.circle(np.zeros((2 * radius + 1, 2 * radius + 1), dtype=np.uint8),
                      (radius, radius), radius, color=1, thickness=-1)


def s2cloudless_band_indices(names: Sequence[str | None]) -> list[int] | None:
    """0-based indices of s2cloudless' bands among an input's band names, or ``None``."""
    ids = [canonical_band(n) if n else None for n in names]
    try:
        return [ids.index(b) for b in S2CLOUDLESS_BANDS]
    except ValueError:
        return None


@dataclass
class S2Cloudless:
    """The s2cloudless detector on ``N x 10 x H x W`` reflectance (0-1) batches.

    Attributes:
        threshold: cloud probability threshold.
        average_over: radius in pixels of the disk the probability is averaged over (0: none).
        dilation: radius in pixels of the disk the mask is dilated with (0: none).
        num_threads: LightGBM threads (0: its default).
    """

    threshold: float = S2CLOUDLESS_THRESHOLD
    average_over: int = S2CLOUDLESS_AVERAGE_OVER
    dilation: int = S2CLOUDLESS_DILATION
    num_threads: int = 0
    model_file: Path | None = None
    _booster: Any = field(default=None, repr=False)

    @property
    def booster(self) -> Any:
        if self._booster is None:
            import lightgbm

            self._booster = lightgbm.Booster(model_file=str(self.model_file or s2cloudless_model_path()))
        return self._booster

    def probabilities(self, reflectance: np.ndarray) -> np.ndarray:
        """Per-pixel cloud probability ``N x H x W`` of ``N x 10 x H x W`` reflectance."""
        if reflectance.ndim != 4 or reflectance.shape[1] != len(S2CLOUDLESS_BANDS):
            raise ValueError(f"expected N x {len(S2CLOUDLESS_BANDS)} x H x W reflectance, got {reflectance.shape}")
        n, c, h, w = reflectance.shape
        pixels = np.ascontiguousarray(reflectance.transpose(0, 2, 3, 1).reshape(-1, c), dtype=np.float64)
        kw = {"num_threads": self.num_threads} if self.num_threads else {}
        proba = np.asarray(self.booster.predict(pixels, **kw), dtype=np.float32)
        return proba.reshape(n, h, w)

    def masks(self, proba: np.ndarray) -> np.ndarray:
        """Cloud masks ``N x H x W`` (bool) from probabilities, as s2cloudless makes them."""
        import cv2

        out = np.empty(proba.shape, dtype=bool)
        conv = disk(self.average_over).astype(np.float32) if self.average_over else None
        dil = disk(self.dilation) if self.dilation else None
        for k, p in enumerate(proba):
            if conv is not None:
                m = (cv2.filter2D(p.astype(np.float32), -1, conv / conv.sum(), borderType=cv2.BORDER_REFLECT)
                     > self.threshold).astype(np.uint8)
            else:
                m = (p > self.threshold).astype(np.uint8)
            if dil is not None:
                m = cv2.dilate(m, dil)
            out[k] = m.astype(bool)
        return out

    def fractions(self, reflectance: np.ndarray, valid: np.ndarray) -> list[float | None]:
        """Cloud fraction of each of ``N`` windows (``valid``: ``N x H x W``)."""
        masks = self.masks(self.probabilities(reflectance))
        return [cloud_fraction(m, v) for m, v in zip(masks, valid, strict=True)]


def to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Digital numbers as reflectance (``DN * scale + offset``), float32."""
    out = dn.astype(np.float32) * np.float32(scale)
    if offset:
        out += np.float32(offset)
    return out


def cloud_method(has_scl: bool, level: str | None, band_names: Sequence[str | None]) -> str | None:
    """How an input's cloud fractions are computed: ``scl`` when it has a scene
    classification layer, ``s2cloudless`` for L1C data with s2cloudless' 10 bands (L2A
    surface reflectance is not what its model was trained on), else ``None`` (null
    ``cloud_fraction``)."""
    if has_scl:
        return "scl"
    if level == "L1C" and s2cloudless_band_indices(band_names) is not None:
        return "s2cloudless"
    return None
