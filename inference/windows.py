"""Cutting a read region of a scene into the model's windows: validity, nodata and cloud
decisions, and the filling of a window's few invalid pixels.

Shared by both ways a scene is read (`inference.readers.read_chunk`: one file on its own
grid; `inference.scene_reads`: per-band files or another grid, through `vision.scene`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine

from inference.tiling import TileGrid
from vision.errors import UnreadableInputError
from vision.scene import valid_mask as valid_mask  # the one validity rule, re-exported for the readers


def fill_invalid(data: np.ndarray, valid: np.ndarray, fill: Sequence[float] | None) -> np.ndarray:
    """``data`` as float32 with invalid pixels set to ``fill`` (per band; 0 without it)."""
    out = data.astype(np.float32, copy=True)
    if not valid.all():
        inv = ~valid
        for b in range(out.shape[0]):
            out[b][inv] = fill[b] if fill is not None else 0.0
    return out


@dataclass
class WindowPixels:
    """One window of a chunk: grid position, pixel window, and pixels (``None`` when not
    classified: nodata, or ``cloudy``; raw dtype, possibly a view into the chunk).

    ``cloud_fraction`` is the share of the window's valid pixels that are cloud (``None``:
    not computed); ``cloudy`` says it is over ``--max-cloud`` (the window is not classified).
    """

    i: int
    j: int
    window: tuple[int, int, int, int]
    pixels: np.ndarray | None
    cloud_fraction: float | None = None
    cloudy: bool = False


@dataclass
class WindowError:
    """A window that could not be read."""

    i: int
    j: int
    window: tuple[int, int, int, int]
    error: UnreadableInputError


def cut_windows(data: np.ndarray, valid: np.ndarray, grid: TileGrid,
                windows: Iterable[tuple[int, int]], read: tuple[int, int, int, int],
                max_nodata: float, fill: Sequence[float] | None,
                clouds: Sequence[float | None] | None = None,
                max_cloud: float = 1.0) -> list[WindowPixels]:
    """The windows of a read region ``read`` (``data``/``valid`` are its pixels).

    A window whose nodata fraction (pixels outside the region count as nodata) exceeds
    ``max_nodata`` has no pixels; so has one whose cloud fraction (``clouds``, one per window
    in order) exceeds ``max_cloud`` (``cloudy``). Others have their few invalid pixels set to
    ``fill``.
    """
    r0, c0, rh, rw = read
    h, w = grid.size
    need = (1.0 - max_nodata) * h * w
    out: list[WindowPixels] = []
    for k, (i, j) in enumerate(windows):
        row, col, _, _ = win = grid.window(i, j)
        cloud = clouds[k] if clouds is not None else None
        # The part of the window inside the read (= inside the scene).
        ra, rb = row - r0, min(row + h, r0 + rh) - r0
        ca, cb = col - c0, min(col + w, c0 + rw) - c0
        v = valid[ra:rb, ca:cb]
        n_valid = int(v.sum())
        if n_valid == 0 or n_valid < need:
            out.append(WindowPixels(i, j, win, None, cloud))
            continue
        if cloud is not None and cloud > max_cloud:
            out.append(WindowPixels(i, j, win, None, cloud, cloudy=True))
            continue
        if n_valid == h * w:  # whole and all valid (the usual case): a view, cast later
            out.append(WindowPixels(i, j, win, data[:, ra:rb, ca:cb], cloud))
            continue
        px = np.empty((data.shape[0], h, w), dtype=np.float32)
        for b in range(data.shape[0]):
            px[b] = fill[b] if fill is not None else 0.0
        px[:, : rb - ra, : cb - ca] = fill_invalid(data[:, ra:rb, ca:cb], v, fill)
        out.append(WindowPixels(i, j, win, px, cloud))
    return out


def window_bounds(transform: Affine, window: tuple[int, int, int, int]
                  ) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a pixel window (works for rotated transforms too)."""
    row, col, h, w = window
    xs, ys = [], []
    for r, c in ((row, col), (row, col + w), (row + h, col), (row + h, col + w)):
        x, y = transform @ (c, r)
        xs.append(x)
        ys.append(y)
    return min(xs), min(ys), max(xs), max(ys)
