"""Tiling a scene into model-sized windows, grouped into block-aligned chunks.

A `TileGrid` places windows of the model's input size every ``stride`` pixels, starting at
the scene's top-left corner, until the scene is covered: edge windows may reach past the
scene, and their outside part counts as nodata. Each window is one cell of the output
class raster, whose pixel is ``stride`` scene pixels wide and centred on its window.

Windows are read in chunks: a rectangle of windows whose pixel extent is widened to the
scene's internal block grid, read with one windowed read, then sliced. A chunk is also the
unit of resume and of distribution (`--engine ray`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

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
        """Transform of the class raster: one pixel per window, centred on the window."""
        (sh, sw), (h, w) = self.stride, self.size
        return scene_transform @ Affine.translation((w - sw) / 2, (h - sh) / 2) @ Affine.scale(sw, sh)


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


def chunk_grid(grid: TileGrid, block_shape: tuple[int, int],
               target_px: int = CHUNK_TARGET_PX) -> list[Chunk]:
    """Split a grid into chunks of windows, each read with one block-aligned window.

    The chunk's window count per side is chosen so that its extent is about ``target_px``
    and, where the block size allows, a whole number of blocks, so neighbouring chunks
    do not decode the same compressed blocks twice.
    """
    bh, bw = max(1, block_shape[0]), max(1, block_shape[1])
    # A huge block (a whole-width strip of a very wide scene) is not worth aligning to: the
    # read would grow with the scene; GDAL's block cache absorbs the re-reads instead.
    bh = 1 if bh > 4 * target_px else bh
    bw = 1 if bw > 4 * target_px else bw

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
            r_lo, c_lo, _, _ = grid.window(i0, j0)
            r_hi = grid.window(i1 - 1, j0)[0] + grid.size[0]
            c_hi = grid.window(i0, j1 - 1)[1] + grid.size[1]
            r0, r1 = _align(r_lo, r_hi, bh, grid.height)
            c0, c1 = _align(c_lo, c_hi, bw, grid.width)
            chunks.append(Chunk(len(chunks), i0, i1, j0, j1, (r0, c0, r1 - r0, c1 - c0)))
    return chunks
