"""A quicklook PNG per scene: the classes in their colours over a natural-colour rendering of
the scene, with a legend, small enough to open anywhere.

The rendering costs no second read of the scene: while the job reads a chunk for the model,
the pixels that fall on the quicklook's grid are copied into the scene's `Canvas` (a few
thousand values per chunk). A scene whose chunks were read by an earlier run (resume) or
elsewhere (Ray) has its canvas filled from the file instead, block row by block row, through
the same code, so the picture is the same either way. It is stretched as every picture of
this project is (`vision.bands.stretch`); windows without data show the scene alone, cloudy
and failed windows are tinted in their own colours (`inference.palette`), pixels without data
are black.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rasterio.errors import RasterioError
from rasterio.windows import Window

from inference.palette import (
    NOT_ASSESSED_COLOURS,
    NOT_ASSESSED_NAMES,
    class_colours,
    status_values,
)
from inference.plan import Plan, ScenePlan
from inference.readers import valid_mask
from vision.atomic import atomic_path
from vision.bands import DISPLAY_PERCENTILES, display_bands, stretch_uint8
from vision.contracts.predictions import STATUS_CLOUDY, STATUS_ERROR
from vision.errors import InputError
from vision.raster import open_raster

log = logging.getLogger(__name__)

#: Longest side of the picture of the scene, in pixels (the legend is beside it).
MAX_SIDE = 1024
#: Weight of the class colour over the scene.
ALPHA = 0.55
_ROW = 18  # legend line height
#: Rows of pixels read at a time when a canvas is filled from the file (rounded to blocks).
_FILL_ROWS = 512

#: ``(row_off, col_off, height, width)`` of a read, its ``C x h x w`` pixels (the model's
#: bands) and its ``h x w`` validity.
Adder = Callable[[tuple[int, int, int, int], np.ndarray, np.ndarray], None]


def quicklook_shape(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``(rows, cols)`` of the scene's picture: the scene scaled to ``max_side`` at most."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class Canvas:
    """The quicklook's pixels of one scene, gathered from reads of any part of it.

    Picture pixel ``(i, j)`` shows scene pixel ``(src_rows[i], src_cols[j])`` (nearest, at
    the centre of the picture pixel).
    """

    def __init__(self, scene: ScenePlan, model_bands: Sequence[str]):
        self.scene = scene
        self.shape = quicklook_shape(scene.info.height, scene.info.width)
        qh, qw = self.shape
        self.src_rows = ((np.arange(qh) + 0.5) * scene.info.height / qh).astype(np.int64)
        self.src_cols = ((np.arange(qw) + 0.5) * scene.info.width / qw).astype(np.int64)
        self.show = np.array(display_bands(list(model_bands)), dtype=np.int64)
        self.data = np.zeros((len(self.show), qh, qw), dtype=np.dtype(scene.info.dtype))
        self.valid = np.zeros((qh, qw), dtype=bool)
        self.chunks: set[int] = set()

    def add(self, read: tuple[int, int, int, int], data: np.ndarray, valid: np.ndarray) -> None:
        """Copy the picture's pixels that fall inside a read of the scene."""
        r0, c0, rh, rw = read
        i0, i1 = np.searchsorted(self.src_rows, (r0, r0 + rh))
        j0, j1 = np.searchsorted(self.src_cols, (c0, c0 + rw))
        if i0 == i1 or j0 == j1:
            return
        rows = self.src_rows[i0:i1] - r0
        cols = self.src_cols[j0:j1] - c0
        # One gather of just the picture's pixels (a few thousand per chunk), no copy of
        # the chunk.
        self.data[:, i0:i1, j0:j1] = data[np.ix_(self.show, rows, cols)]
        self.valid[i0:i1, j0:j1] = valid[np.ix_(rows, cols)]

    @property
    def complete(self) -> bool:
        """Every chunk of the scene has been added."""
        return len(self.chunks) == len(self.scene.chunks)

    def rgb(self) -> np.ndarray:
        """``rows x cols x 3`` uint8, stretched, black where there is no data."""
        return fast_stretch_uint8(self.data, self.valid)


def _percentiles(counts: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """`np.percentile` (linear) of the values a histogram counts, from its cumulative sum."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out = []
    for p in percentiles:
        rank = (n - 1) * p / 100.0
        k = int(np.floor(rank))
        v0 = float(np.searchsorted(cum, k, side="right"))
        v1 = float(np.searchsorted(cum, min(k + 1, n - 1), side="right"))
        out.append(v0 + (v1 - v0) * (rank - k))
    return out[0], out[1]


def fast_stretch_uint8(bands: np.ndarray, valid: np.ndarray,
                       percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> np.ndarray:
    """`vision.bands.stretch_uint8` for unsigned 8/16-bit bands, through a histogram and a
    lookup table (a tenth of its time on a 1024 x 1024 picture; equal to it within one grey
    level). Other dtypes go to `stretch_uint8` itself."""
    if bands.dtype not in (np.uint8, np.uint16):
        return stretch_uint8(bands, valid)
    levels = 256 if bands.dtype == np.uint8 else 65536
    out = np.zeros((*bands.shape[1:], bands.shape[0]), dtype=np.uint8)
    for i, band in enumerate(bands):
        values = band[valid]
        if not values.size:
            continue
        lo, hi = _percentiles(np.bincount(values, minlength=levels), percentiles)
        if hi <= lo:
            hi = lo + 1.0
        scaled = np.clip((np.arange(levels, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
        lut = (scaled.astype(np.float32) * 255).astype(np.uint8)
        out[..., i] = np.where(valid, lut[band], 0)
    return out


class CanvasSink:
    """The canvases of the scenes being read, shared by the reader threads (each chunk is
    added by one thread; a canvas is made once, under a lock)."""

    def __init__(self, plan: Plan, model_bands: Sequence[str]):
        self.plan = plan
        self.model_bands = list(model_bands)
        self._canvases: dict[int, Canvas] = {}
        self._lock = threading.Lock()

    def adder(self, scene: int, chunk: int) -> Adder:
        """What a reader calls with each read of ``chunk`` of ``scene``."""
        with self._lock:
            canvas = self._canvases.get(scene)
            if canvas is None:
                canvas = self._canvases[scene] = Canvas(self.plan.scenes[scene], self.model_bands)

        def add(read: tuple[int, int, int, int], data: np.ndarray, valid: np.ndarray) -> None:
            canvas.add(read, data, valid)
            canvas.chunks.add(chunk)

        return add

    def take(self, scene: int) -> Canvas | None:
        """The scene's canvas, if every chunk was added (then forgotten here), else ``None``."""
        with self._lock:
            canvas = self._canvases.pop(scene, None)
        return canvas if canvas is not None and canvas.complete else None


def canvas_from_file(scene: ScenePlan, model_bands: Sequence[str]) -> Canvas:
    """A scene's canvas read from its file, block row by block row (rows that fail to read
    stay black). Each block is decoded once, whatever GDAL's block cache."""
    canvas = Canvas(scene, model_bands)
    info = scene.info
    step = max(info.block_shape[0], (_FILL_ROWS // max(1, info.block_shape[0])) * info.block_shape[0])
    if info.band_plan is not None:  # a STAC item, or a file read onto another grid
        from inference.scene_reads import read_rows

        try:
            for read, data, valid in read_rows(info, step, canvas.src_rows):
                canvas.add(read, data, valid)
        except (InputError, RasterioError, OSError) as exc:
            log.warning("quicklook of %s without the scene (%s)", scene.path, exc)
        canvas.chunks.update(range(len(scene.chunks)))
        return canvas
    try:
        with open_raster(scene.path) as ds:
            mask_needed = info.dataset_mask
            for r0 in range(0, info.height, step):
                rh = min(step, info.height - r0)
                if not np.any((canvas.src_rows >= r0) & (canvas.src_rows < r0 + rh)):
                    continue
                win = Window(0, r0, info.width, rh)
                try:
                    data = ds.read([b + 1 for b in info.bands], window=win)
                    mask = ds.dataset_mask(window=win) if mask_needed else None
                except RasterioError as exc:
                    log.debug("quicklook of %s: rows %d-%d unreadable: %s", scene.path, r0, r0 + rh, exc)
                    continue
                canvas.add((r0, 0, rh, info.width), data, valid_mask(data, info.nodata, mask))
    except (InputError, RasterioError, OSError) as exc:
        log.warning("quicklook of %s without the scene (%s)", scene.path, exc)
    canvas.chunks.update(range(len(scene.chunks)))
    return canvas


def render(canvas: Canvas, class_grid: np.ndarray, no_class: int, classes: Sequence[str]
           ) -> Image.Image:
    """The quicklook: the canvas, the classes of ``class_grid`` (the window grid; ``no_class``,
    the class raster's top value, where there is no data, and the not-assessed values of
    `status_values` below it) over it, and a legend of every class and of the not-assessed
    states present: cloudy and failed windows are tinted in their own colours, never in a
    class's; windows without data show the scene alone."""
    grid = canvas.scene.grid
    rgb = canvas.rgb()
    cells = class_grid[np.ix_(grid.raster_index(0, canvas.shape[0]),
                              grid.raster_index(1, canvas.shape[1]))]
    shown = [s for s in (STATUS_CLOUDY, STATUS_ERROR) if (class_grid == status_values(no_class)[s]).any()]
    # The blend as a table: (class + shown states + "none") x channel x grey level -> level.
    colours = np.array(class_colours(classes) + [NOT_ASSESSED_COLOURS[s][:3] for s in shown],
                       np.float64).reshape(-1, 3)
    levels = np.arange(256, dtype=np.float64)
    lut = np.empty((len(colours) + 1, 3, 256), np.uint8)
    lut[:-1] = np.round((1 - ALPHA) * levels[None, None, :] + ALPHA * colours[:, :, None])
    lut[-1] = np.arange(256, dtype=np.uint8)  # no data: the scene alone
    idx = np.where(cells < len(classes), cells, len(colours)).astype(np.int64)
    for k, status in enumerate(shown):
        idx[cells == status_values(no_class)[status]] = len(classes) + k
    for ch in range(3):
        rgb[..., ch] = lut[idx, ch, rgb[..., ch]]
    entries = list(zip(classes, class_colours(classes), strict=True))
    entries += [(NOT_ASSESSED_NAMES[s], NOT_ASSESSED_COLOURS[s][:3]) for s in shown]
    return _with_legend(Image.fromarray(rgb, "RGB"), entries)


def _with_legend(picture: Image.Image, entries: Sequence[tuple[str, tuple[int, ...]]]
                 ) -> Image.Image:
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(picture)
    text_w = max((probe.textlength(name, font=font) for name, _ in entries), default=0)
    legend_w = int(text_w) + 40
    height = max(picture.height, _ROW * len(entries) + 12)
    out = Image.new("RGB", (picture.width + legend_w, height), (255, 255, 255))
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    x0 = picture.width + 8
    for k, (name, colour) in enumerate(entries):
        y = 6 + k * _ROW
        draw.rectangle([x0, y, x0 + 14, y + 12], fill=tuple(colour), outline=(60, 60, 60))
        draw.text((x0 + 20, y), name, fill=(0, 0, 0), font=font)
    return out


def write_quicklook(path: Path, canvas: Canvas, class_grid: np.ndarray, no_class: int,
                    classes: Sequence[str]) -> None:
    """Render and write ``path`` (PNG) atomically."""
    image = render(canvas, class_grid, no_class, classes)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)  # 3x faster than the default 6
