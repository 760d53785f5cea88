"""Tiling a scene into model-sized windows, grouped into block-aligned chunks.

A `TileGrid` places windows of the model's input size every ``stride`` pixels, starting at
the scene's top-left corner, until the scene is covered: edge windows may reach past the
scene, and their outside part counts as nodata. Each window owns a *cell*: the
``stride``-wide part centred on it (the whole window without overlap); the first and last
cells of a row or column stretch to the scene's edges. The output rasters
(`TileGrid.raster_shape`) show each cell's class and stop exactly at the scene's extent.

Windows are read in chunks: a rectangle of windows whose pixel extent is widened to the
scene's internal block grid, read with one windowed read, then sliced. A chunk is also the
unit of resume and of distribution (`--engine ray`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine

#: Aim for chunks of about this many pixels on a side (a few blocks of a tiled GeoTIFF).
CHUNK_TARGET_PX = 512


@dataclass(frozen=True)
class TileGrid:
    """Windows of ``size`` every ``stride`` pixels over a ``height x width`` scene."""

    height: int
    width: int
    size: tuple[int, int]
    stride: tuple[int, int]

    def __post_init__(self) -> None:
        if min(self.size) <= 0 or min(self.stride) <= 0:
            raise ValueError(f"size {self.size} and stride {self.stride} must be positive")

    @property
    def rows(self) -> int:
        """Number of window rows."""
        return _count(self.height, self.size[0], self.stride[0])

    @property
    def cols(self) -> int:
        """Number of window columns."""
        return _count(self.width, self.size[1], self.stride[1])

    def __len__(self) -> int:
        return self.rows * self.cols

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(row_off, col_off, height, width)`` of window ``(i, j)`` in scene pixels."""
        return i * self.stride[0], j * self.stride[1], self.size[0], self.size[1]

    def grid_transform(self, scene_transform: Affine) -> Affine:
        """Transform of the cell grid: one pixel per window, centred on the window."""
        (sh, sw), (h, w) = self.stride, self.size
        return scene_transform @ Affine.translation((w - sw) / 2, (h - sh) / 2) @ Affine.scale(sw, sh)

    def raster_step(self) -> tuple[int, int]:
        """Scene pixels per output-raster pixel ``(rows, cols)``: the largest step that
        divides the stride, the scene's size and the cells' offset, so the raster's pixels
        tile every cell exactly and the raster ends at the scene's edge (the window grid
        itself when the scene is a whole number of strides)."""
        return (_step(self.height, self.size[0], self.stride[0]),
                _step(self.width, self.size[1], self.stride[1]))

    def raster_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the output rasters (see `raster_step`)."""
        sr, sc = self.raster_step()
        return self.height // sr, self.width // sc

    def raster_transform(self, scene_transform: Affine) -> Affine:
        """Transform of the output rasters: the scene's, scaled by `raster_step`."""
        sr, sc = self.raster_step()
        return scene_transform @ Affine.scale(sc, sr)

    def cell_index(self, coords: np.ndarray, axis: int) -> np.ndarray:
        """Window row (``axis`` 0) or column (1) owning each scene coordinate, in pixels
        (continuous: ``x + 0.5`` is the centre of pixel ``x``)."""
        size, stride = self.size[axis], self.stride[axis]
        n = self.rows if axis == 0 else self.cols
        k = np.floor((np.asarray(coords, dtype=np.float64) - (size - stride) / 2) / stride)
        return np.clip(k, 0, n - 1).astype(np.int64)

    def raster_index(self, axis: int, shape: int | None = None) -> np.ndarray:
        """Window index of each output-raster row (``axis`` 0) or column, for a raster of
        ``shape`` pixels along that axis over the whole scene (default `raster_shape`)."""
        extent = self.height if axis == 0 else self.width
        n = shape if shape is not None else self.raster_shape()[axis]
        centres = (np.arange(n) + 0.5) * (extent / n)
        return self.cell_index(centres, axis)


def _step(extent: int, size: int, stride: int) -> int:
    twice_offset = size - stride
    if twice_offset % 2:  # cells start on half pixels: only single pixels tile them
        return 1
    return math.gcd(stride, extent, twice_offset // 2)


def _count(extent: int, size: int, stride: int) -> int:
    if extent <= size:
        return 1
    return math.ceil((extent - size) / stride) + 1


@dataclass(frozen=True)
class Chunk:
    """A rectangle of windows ``[i0, i1) x [j0, j1)`` of a grid and the pixels to read.

    Attributes:
        index: position in the scene's chunk order (stable: it names the chunk's part file).
        read: ``(row_off, col_off, height, width)`` of the block-aligned read, inside the scene.
    """

    index: int
    i0: int
    i1: int
    j0: int
    j1: int
    read: tuple[int, int, int, int]

    def __len__(self) -> int:
        return (self.i1 - self.i0) * (self.j1 - self.j0)

    def windows(self) -> Iterator[tuple[int, int]]:
        for i in range(self.i0, self.i1):
            for j in range(self.j0, self.j1):
                yield i, j


def _align(lo: int, hi: int, block: int, limit: int) -> tuple[int, int]:
    lo = max(0, min(lo, limit))
    hi = max(lo, min(hi, limit))
    return (lo // block) * block, min(limit, -(-hi // block) * block)


def _blocks(block_shape: tuple[int, int], target_px: int) -> tuple[int, int]:
    """The block size reads are aligned to. A huge block (a whole-width strip of a very wide
    scene) is not worth aligning to: the read would grow with the scene; GDAL's block cache
    absorbs the re-reads instead."""
    bh, bw = max(1, block_shape[0]), max(1, block_shape[1])
    return (1 if bh > 4 * target_px else bh), (1 if bw > 4 * target_px else bw)


def _read_region(grid: TileGrid, i0: int, i1: int, j0: int, j1: int, bh: int,
                 bw: int) -> tuple[int, int, int, int]:
    """The block-aligned read (inside the scene) of windows ``[i0, i1) x [j0, j1)``."""
    r_lo, c_lo, _, _ = grid.window(i0, j0)
    r_hi = grid.window(i1 - 1, j0)[0] + grid.size[0]
    c_hi = grid.window(i0, j1 - 1)[1] + grid.size[1]
    r0, r1 = _align(r_lo, r_hi, bh, grid.height)
    c0, c1 = _align(c_lo, c_hi, bw, grid.width)
    return r0, c0, r1 - r0, c1 - c0


def chunk_grid(grid: TileGrid, block_shape: tuple[int, int],
               target_px: int = CHUNK_TARGET_PX) -> list[Chunk]:
    """Split a grid into chunks of windows, each read with one block-aligned window.

    The chunk's window count per side is chosen so that its extent is about ``target_px``
    and, where the block size allows, a whole number of blocks, so neighbouring chunks
    do not decode the same compressed blocks twice.
    """
    bh, bw = _blocks(block_shape, target_px)

    def per_side(stride: int, block: int) -> int:
        side = max(target_px, block)
        n = max(1, side // stride)
        # Round to a whole number of blocks when windows tile blocks exactly.
        if block % stride == 0 and block > stride:
            n = max(block // stride, (n // (block // stride)) * (block // stride))
        return n

    nr = per_side(grid.stride[0], bh)
    nc = per_side(grid.stride[1], bw)
    chunks: list[Chunk] = []
    for i0 in range(0, grid.rows, nr):
        i1 = min(grid.rows, i0 + nr)
        for j0 in range(0, grid.cols, nc):
            j1 = min(grid.cols, j0 + nc)
            chunks.append(Chunk(len(chunks), i0, i1, j0, j1, _read_region(grid, i0, i1, j0, j1, bh, bw)))
    return chunks


def restrict_chunks(grid: TileGrid, chunks: Sequence[Chunk], keep: np.ndarray) -> list[Chunk]:
    """The chunks of a grid cut down to the windows in ``keep`` (one bool per window,
    ``k = i * cols + j``), so that no pixel of a window that is not kept is read (an area of
    interest: `inference.plan`).

    A chunk without a kept window is dropped. The kept windows of the others are split into
    rectangles (the runs of kept windows along each window row, merged down the rows while
    they span the same columns), each a chunk read with exactly its windows' extent: not
    widened to the blocks, which would read the neighbouring windows (GDAL's block cache
    absorbs a block decoded for two reads). The chunks are numbered in order (their index
    is their position).
    """
    mask = np.asarray(keep, dtype=bool).reshape(grid.rows, grid.cols)
    out: list[Chunk] = []
    for ch in chunks:
        for i0, i1, j0, j1 in _rectangles(mask[ch.i0:ch.i1, ch.j0:ch.j1]):
            a0, a1, b0, b1 = ch.i0 + i0, ch.i0 + i1, ch.j0 + j0, ch.j0 + j1
            out.append(Chunk(len(out), a0, a1, b0, b1, _read_region(grid, a0, a1, b0, b1, 1, 1)))
    return out


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of ``True`` in a bool vector."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _rectangles(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(i0, i1, j0, j1)`` rectangles that tile the ``True`` cells of a 2-D mask: each row's
    runs, merged with the run above when it spans the same columns; sorted by ``(i0, j0)``."""
    done: list[tuple[int, int, int, int]] = []
    open_: dict[tuple[int, int], int] = {}  # (j0, j1) -> i0 of the rectangle still growing
    for i in range(mask.shape[0]):
        runs = set(_runs(mask[i]))
        for run in [r for r in open_ if r not in runs]:
            done.append((open_.pop(run), i, *run))
        for run in runs:
            open_.setdefault(run, i)
    done += [(i0, mask.shape[0], *run) for run, i0 in open_.items()]
    return sorted(done, key=lambda r: (r[0], r[2]))


def window_rects(grid: TileGrid) -> np.ndarray:
    """``(row_off, col_off, height, width)`` of every window, ``k = i * cols + j``."""
    i, j = np.divmod(np.arange(len(grid)), grid.cols)
    return np.column_stack([i * grid.stride[0], j * grid.stride[1],
                            np.full(len(grid), grid.size[0]), np.full(len(grid), grid.size[1])])
