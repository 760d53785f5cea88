"""Reading a planned scene's chunks through `vision.scene`: per-band files (STAC assets) at
mixed resolutions, or one file read onto another grid (the model's GSD) or harmonised, with
each window's cloud fraction measured.

A chunk is one read per file (`vision.scene.Scene.read`, resampled onto the scene's grid),
cut into windows like a file's own chunk (`inference.windows.cut_windows`). Clouds come from
the item's scene classification layer, read on the same grid with nearest neighbour, or from
s2cloudless over s2cloudless' ten bands of the same region; a window whose share of cloud
in its valid pixels exceeds ``--max-cloud`` is ``cloudy``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np

from inference.cloud_masks import region_fractions_s2cloudless, region_fractions_scl
from inference.readers import CloudSource, OnRead, SceneInfo
from inference.tiling import Chunk, TileGrid
from inference.windows import WindowError, WindowPixels, cut_windows
from vision.errors import UnreadableInputError
from vision.radiometry import IDENTITY
from vision.scene import Grid, Scene

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]

#: Open scenes kept per reader thread: a scene's chunks come one after another, and opening
#: a STAC item's dozen files for every chunk cost half of its reading time (29RKH, 9 chunks:
#: 0.5 of 1.0 s).
OPEN_PER_THREAD = 4
_lock = threading.Lock()
_open: dict[int, OrderedDict[Hashable, Scene]] = {}


@contextlib.contextmanager
def _scene(key: Hashable, make: Callable[[], Scene]) -> Iterator[Scene]:
    """The open scene ``key`` of this thread (opened with ``make`` the first time); at most
    `OPEN_PER_THREAD` stay open per thread, the least recently used closed first."""
    tid = threading.get_ident()
    with _lock:
        mine = _open.setdefault(tid, OrderedDict())
        scene = mine.pop(key, None)
    if scene is None:
        scene = make()  # kept open: closed by eviction or `close_open_scenes`
    try:
        yield scene
    finally:
        with _lock:
            mine[key] = scene
            while len(mine) > OPEN_PER_THREAD:
                mine.popitem(last=False)[1].close()


def close_open_scenes() -> None:
    """Close every scene kept open by the reader threads (the engine calls it at the end)."""
    with _lock:
        scenes = [s for per in _open.values() for s in per.values()]
        _open.clear()
    for s in scenes:
        s.close()


def _key(info: SceneInfo, which: str) -> Hashable:
    return (info.path, info.transform, info.width, info.height, info.resampling, which)


def scene_grid(info: SceneInfo) -> Grid:
    """The grid a planned scene's windows are placed on."""
    return Grid(info.crs, info.transform, info.width, info.height)


def read_planned_chunk(info: SceneInfo, grid: TileGrid, chunk: Chunk, max_nodata: float,
                       fill: Sequence[float] | None, on_read: OnRead | None,
                       max_cloud: float) -> list[WindowPixels | WindowError]:
    """`inference.readers.read_chunk` for a scene with a band plan (see the module doc).

    Raises:
        UnreadableInputError: a file of the plan cannot be opened any more.
    """
    assert info.band_plan is not None
    g = scene_grid(info)
    plan = info.band_plan
    with _scene(_key(info, "bands"), lambda: Scene(plan.sources, g, plan.harmonisation, info.resampling)) as scene:
        try:
            px = scene.read(chunk.read)
        except UnreadableInputError:
            # A damaged block spoils one read: salvage the windows that can still be read.
            return [_one_window(scene, info, g, grid, i, j, max_nodata, fill, on_read, max_cloud)
                    for i, j in chunk.windows()]
    windows = list(chunk.windows())
    return _cut(info, g, grid, chunk.read, px.data, px.valid, windows, max_nodata, fill, on_read,
                max_cloud)


def _one_window(scene: Scene, info: SceneInfo, g: Grid, grid: TileGrid, i: int, j: int,
                max_nodata: float, fill: Sequence[float] | None, on_read: OnRead | None,
                max_cloud: float) -> WindowPixels | WindowError:
    row, col, h, w = grid.window(i, j)
    region = (row, col, min(h, info.height - row), min(w, info.width - col))
    try:
        px = scene.read(region)
    except UnreadableInputError as exc:
        return WindowError(i, j, (row, col, h, w), exc)
    return _cut(info, g, grid, region, px.data, px.valid, [(i, j)], max_nodata, fill, on_read,
                max_cloud)[0]


def _cut(info: SceneInfo, g: Grid, grid: TileGrid, region: Region, data: np.ndarray,
         valid: np.ndarray, windows: list[tuple[int, int]], max_nodata: float,
         fill: Sequence[float] | None, on_read: OnRead | None,
         max_cloud: float) -> list[WindowPixels | WindowError]:
    if on_read is not None:
        on_read(region, data, valid)
    clouds = None
    if info.cloud is not None:
        clouds = region_clouds(info, info.cloud, g, region, valid, [grid.window(i, j) for i, j in windows])
    return list(cut_windows(data, valid, grid, windows, region, max_nodata, fill, clouds, max_cloud))


def region_clouds(info: SceneInfo, cloud: CloudSource, g: Grid, region: Region, valid: np.ndarray,
                  windows: Sequence[tuple[int, int, int, int]]) -> list[float | None]:
    """Cloud fractions of ``windows`` (pixel windows of the grid) of a region read at
    ``region``; ``None`` each where the cloud layer cannot be read there (logged)."""
    assert info.band_plan is not None
    origin = (region[0], region[1])
    try:
        if cloud.method == "scl":
            plan = info.band_plan
            assert plan.cloud_layer is not None
            layer_source = plan.cloud_layer
            with _scene(_key(info, "scl"), lambda: Scene((layer_source,), g, IDENTITY, "nearest")) as layer:
                scl = layer.read(region)
            return region_fractions_scl(scl.data[0], valid & scl.valid, origin, windows)
        assert cloud.plan is not None
        cplan = cloud.plan
        with _scene(_key(info, "s2cloudless"),
                    lambda: Scene(cplan.sources, g, IDENTITY, info.resampling)) as bands:
            raw = bands.read(region)
        n = raw.data.shape[0]
        scale = np.asarray(cloud.scale, np.float32).reshape(n, 1, 1)
        offset = np.asarray(cloud.offset, np.float32).reshape(n, 1, 1)
        refl = raw.data.astype(np.float32) * scale + offset
        return region_fractions_s2cloudless(refl, valid & raw.valid, origin, windows)
    except UnreadableInputError as exc:
        log.warning("%s: clouds of %s not measured: %s", info.path, region, exc)
        return [None] * len(windows)


def read_rows(info: SceneInfo, step: int, rows_needed: np.ndarray
              ) -> Iterator[tuple[Region, np.ndarray, np.ndarray]]:
    """A planned scene read band of rows by band of rows (``step`` rows at a time, only the
    bands holding one of ``rows_needed``): ``(region, data, valid)`` per read; a band that
    cannot be read is skipped (logged). For pictures of the whole scene (the quicklook of a
    scene whose chunks were read by an earlier run or elsewhere)."""
    assert info.band_plan is not None
    plan = info.band_plan
    g = scene_grid(info)
    scene = Scene(plan.sources, g, plan.harmonisation, info.resampling)
    try:
        for r0 in range(0, info.height, step):
            rh = min(step, info.height - r0)
            if not np.any((rows_needed >= r0) & (rows_needed < r0 + rh)):
                continue
            region = (r0, 0, rh, info.width)
            try:
                px = scene.read(region)
            except UnreadableInputError as exc:
                log.debug("%s: rows %d-%d unreadable: %s", info.path, r0, r0 + rh, exc)
                continue
            yield region, px.data, px.valid
    finally:
        scene.close()
