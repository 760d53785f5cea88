from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from inference.tiling import TileGrid, chunk_grid


@pytest.mark.parametrize(("h", "w", "size", "stride", "rows", "cols"), [
    (64, 64, 64, 64, 1, 1),
    (65, 128, 64, 64, 2, 2),
    (718, 791, 64, 64, 12, 13),
    (128, 128, 64, 32, 3, 3),
    (30, 30, 64, 64, 1, 1),
])
def test_grid_covers_scene(h: int, w: int, size: int, stride: int, rows: int, cols: int) -> None:
    g = TileGrid(h, w, (size, size), (stride, stride))
    assert (g.rows, g.cols) == (rows, cols)
    last_r, last_c, sh, sw = g.window(g.rows - 1, g.cols - 1)
    assert last_r + sh >= h and last_c + sw >= w


@pytest.mark.parametrize("block", [(256, 256), (3, 791), (1, 224), (512, 512), (100, 100)])
def test_chunks_partition_windows_and_align(block: tuple[int, int]) -> None:
    g = TileGrid(1098, 1000, (64, 64), (64, 64))
    chunks = chunk_grid(g, block)
    seen = [ij for ch in chunks for ij in ch.windows()]
    assert sorted(seen) == [(i, j) for i in range(g.rows) for j in range(g.cols)]
    for ch in chunks:
        r0, c0, rh, rw = ch.read
        assert r0 % block[0] == 0 and c0 % block[1] == 0
        assert r0 + rh <= g.height and c0 + rw <= g.width
        for i, j in ch.windows():
            row, col, h, w = g.window(i, j)
            # the in-scene part of each window is inside the read
            assert r0 <= row and min(row + h, g.height) <= r0 + rh
            assert c0 <= col and min(col + w, g.width) <= c0 + rw


def test_grid_transform_centres_pixels_on_windows() -> None:
    t = Affine(10, 0, 1000, 0, -10, 5000)
    g = TileGrid(256, 256, (64, 64), (64, 64))
    assert g.grid_transform(t) == Affine(640, 0, 1000, 0, -640, 5000)
    overlap = TileGrid(256, 256, (64, 64), (32, 32))
    gt = overlap.grid_transform(t)
    # pixel (0, 0) is the central 32x32 of window (0, 0)
    assert gt @ (0, 0) == (1000 + 160, 5000 - 160)
    assert gt.a == 320


@pytest.mark.parametrize(("h", "w", "size", "stride", "step"), [
    (1024, 1024, 64, 64, (64, 64)),  # a whole number of windows: the window grid itself
    (718, 791, 64, 64, (2, 1)),
    (10980, 10980, 64, 64, (4, 4)),
    (256, 256, 64, 32, (16, 16)),  # cells start 16 px in
    (256, 256, 64, 33, (1, 1)),  # cells start on a half pixel
])
def test_output_raster_ends_at_the_scene_edge(h: int, w: int, size: int, stride: int,
                                              step: tuple[int, int]) -> None:
    g = TileGrid(h, w, (size, size), (stride, stride))
    assert g.raster_step() == step
    rows, cols = g.raster_shape()
    assert (rows * step[0], cols * step[1]) == (h, w)
    t = Affine(10, 0, 1000, 0, -10, 5000)
    rt = g.raster_transform(t)
    assert rt @ (cols, rows) == t @ (w, h)  # the far corner is the scene's


def test_each_raster_pixel_shows_the_window_that_owns_it() -> None:
    g = TileGrid(200, 150, (64, 64), (64, 64))
    rows = g.raster_index(0)
    assert g.raster_step() == (8, 2) and len(rows) == 25
    assert rows.tolist() == [0] * 8 + [1] * 8 + [2] * 8 + [3]
    overlap = TileGrid(256, 256, (64, 64), (32, 32))
    # cells are the central 32 px of each window; the edges go to the first/last window
    idx = overlap.cell_index(np.array([0.5, 15.5, 16.5, 47.5, 48.5, 255.5]), axis=0)
    assert idx.tolist() == [0, 0, 0, 0, 1, overlap.rows - 1]
