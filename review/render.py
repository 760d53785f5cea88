"""Pictures for reviewers: chips as RGB PNGs, scene overviews with the window marked.

Every picture is drawn from a file opened by `review.jobs.files.open_input` (inside the
allowed roots, no link followed); GDAL reads it through ``/proc/self/fd/N``, so only the
window asked for is read, however large the scene.

Bands are stretched per band between the 2nd and 98th percentile of valid pixels, which
suits both 8-bit RGB and 12-bit Sentinel-2 reflectances. Multispectral rasters get a
natural-colour default (B04, B03, B02 when the bands are named, else the first three) and
any 1-based band triple can be asked for, for the chip and the scene overview alike.
`natural_bands` says which triple is natural colour (the page shows the heatmap by default
only over natural-colour views).

Explanations: ``JOB_DIR/explanations/<row>.png`` (``row`` = the item's row in
``predictions.parquet``) is overlaid on the chip. When it is missing, `explanation_png`
computes Grad-CAM from the PyTorch checkpoint behind the job's model (trust layer,
``training.explain``) and the page caches it there.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from threading import Lock

import numpy as np
from PIL import Image, ImageDraw
from rasterio.io import DatasetReader
from rasterio.windows import Window

from review.jobs.files import InputRefusedError, SafeFile, is_inside, open_input
from vision.bands import (
    RGB_DISPLAY,
    display_bands,
    display_names,
    match_bands,
    raster_band_names,
    select_bands,
    stretch_uint8,
)
from vision.errors import BandMismatchError
from vision.model_uri import is_registry_uri
from vision.raster import RASTER_SUFFIXES, open_raster

OVERVIEW_SIZE = 256
CHIP_DISPLAY = 256
#: Largest whole-file chip (PNG/JPEG) decoded in memory, and largest heatmap served.
MAX_IMAGE_BYTES = 64 << 20
#: Largest manifest parsed for the job's model.
MAX_MANIFEST_BYTES = 64 << 20

WindowSpec = tuple[int | None, int | None, int | None, int | None]


class _LRU:
    """A small thread-safe cache of rendered PNGs (and other small values)."""

    def __init__(self, size: int):
        self.size, self._d, self._lock = size, OrderedDict[tuple[object, ...], object](), Lock()

    def get(self, key: tuple[object, ...]) -> object | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple[object, ...], value: object) -> None:
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_CACHE = _LRU(1024)


def band_names(src: SafeFile) -> list[str]:
    """Band names of a raster (`vision.bands.display_names`), cached per file version."""
    key = ("bands", src.key)
    hit = _CACHE.get(key)
    if isinstance(hit, list):
        return hit
    with open_raster(src.gdal_path) as ds:
        names = display_names(ds.descriptions)
    _CACHE.put(key, names)
    return names


def default_bands(names: Sequence[str | None]) -> list[int]:
    """1-based bands for a natural-colour view (`vision.bands.display_bands`)."""
    return [b + 1 for b in display_bands(names)]


def natural_bands(src: SafeFile, names: Sequence[str]) -> list[int] | None:
    """The 1-based natural-colour triple of a file, or ``None`` when it has none.

    Bands named B04/B03/B02 (or red/green/blue) are natural colour; so are the first three
    bands of a PNG/JPEG and of a raster with exactly three unnamed bands (an RGB photo).
    ``names`` are `band_names` (``band<N>`` for unnamed bands).
    """
    try:
        return [b + 1 for b in select_bands(list(names), RGB_DISPLAY)]
    except BandMismatchError:
        pass
    unnamed = all(n == f"band{i + 1}" for i, n in enumerate(names))
    if len(names) >= 3 and (src.suffix not in RASTER_SUFFIXES or (len(names) == 3 and unnamed)):
        return [1, 2, 3]
    return None


def chosen_bands(ds: DatasetReader, bands: Sequence[int] | None) -> list[int]:
    """The 1-based bands to draw: ``bands`` (checked against the file), else natural colour."""
    count = int(ds.count)
    chosen = list(bands) if bands else default_bands(raster_band_names(ds.descriptions))
    if len(chosen) != 3 or any(not 1 <= b <= count for b in chosen):
        raise BandMismatchError(f"bands must be three of 1..{count}, got {chosen}")
    if count < 3 and not bands:
        chosen = [1, 1, 1]
    return chosen


def stretch(arr: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """``C x H x W`` values to ``H x W x C`` uint8 with the project's display stretch
    (`vision.bands.stretch`); a band's ``nodata`` pixels are black."""
    valid = None if nodata is None else (arr != nodata)
    return stretch_uint8(arr, valid)


def rgb_png(rgb: np.ndarray, size: int | None = None) -> bytes:
    """``H x W x 3`` uint8 as PNG bytes, enlarged (nearest neighbour) to ``size`` pixels on
    its longer side when smaller."""
    im = Image.fromarray(rgb)
    if size and max(im.size) < size:
        scale = size / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()



def _window(row_off: int | None, col_off: int | None, height: int | None, width: int | None) -> Window | None:
    if row_off is None or col_off is None or height is None or width is None:
        return None
    return Window(col_off, row_off, width, height)


def render_chip(src: SafeFile, window: WindowSpec, bands: Sequence[int] | None = None) -> bytes:
    """A PNG of one item: the window of a scene, or a whole chip file.

    Args:
        src: the opened raster or image.
        window: ``(row_off, col_off, height, width)``, all ``None`` for a whole file.
        bands: three 1-based bands (R, G, B); default natural colour.

    Raises:
        UnreadableInputError: the file cannot be read.
        BandMismatchError: a band is out of range.
    """
    key = ("chip", src.key, window, tuple(bands or ()))
    cached = _CACHE.get(key)
    if isinstance(cached, bytes):
        return cached
    with open_raster(src.gdal_path) as ds:
        chosen = chosen_bands(ds, bands)
        arr = ds.read(chosen, window=_window(*window))
        png = rgb_png(stretch(arr, ds.nodata), CHIP_DISPLAY)
    _CACHE.put(key, png)
    return png


def render_overview(src: SafeFile, window: WindowSpec, bands: Sequence[int] | None = None) -> bytes:
    """A small PNG of the whole scene with the item's window outlined in red.

    Args:
        src: the opened scene.
        window: the item's window (see `render_chip`).
        bands: three 1-based bands (R, G, B), as for the chip; default natural colour.

    Raises:
        BandMismatchError: a band is out of range.
    """
    key = ("overview", src.key, tuple(bands or ()))
    base = _CACHE.get(key)
    with open_raster(src.gdal_path) as ds:
        scale = min(1.0, OVERVIEW_SIZE / max(ds.width, ds.height))
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        if not isinstance(base, bytes):
            chosen = chosen_bands(ds, bands)
            arr = ds.read(chosen, out_shape=(3, h, w))
            base = rgb_png(stretch(arr, ds.nodata))
            _CACHE.put(key, base)
    im = Image.open(io.BytesIO(base)).convert("RGB")
    win = _window(*window)
    if win is not None:
        draw = ImageDraw.Draw(im)
        x0, y0 = win.col_off * scale, win.row_off * scale
        x1, y1 = (win.col_off + win.width) * scale, (win.row_off + win.height) * scale
        draw.rectangle([x0, y0, max(x0 + 2, x1), max(y0 + 2, y1)], outline=(255, 0, 0), width=2)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def explanations_dir(job_dir: Path) -> Path:
    """Where a job's explanation heatmaps are kept."""
    return job_dir / "explanations"


def heatmap_name(row_index: int) -> str:
    """The file name of a row's heatmap in `explanations_dir`."""
    return f"{int(row_index)}.png"


@dataclass(frozen=True)
class JobModel:
    """The model that explains a job's items, or why there is none.

    Attributes:
        model: a ``models:/`` URI or an ``.onnx``/``.pt`` path inside the roots; ``None``
            when there is none.
        reason: why there is none (shown on the review page).
    """

    model: str | None
    reason: str = ""


def _manifest_model_uri(job_dir: Path, roots: Sequence[Path]) -> str | None:
    """The model URI of a job manifest, parsed once per version of the file (a manifest
    lists every input: megabytes for a large archive, and item pages ask for it each time)."""
    with open_input(job_dir / "manifest.json", roots) as f:
        key = ("manifest-model", f.key)
        hit = _CACHE.get(key)
        if hit is not None:
            return hit if isinstance(hit, str) else None
        uri = json.loads(f.read_bytes(MAX_MANIFEST_BYTES))["model"]["uri"]
    value = str(uri) if uri else ""
    _CACHE.put(key, value)
    return value or None


def job_model(job_dir: Path, submitted: str | None, roots: Sequence[Path]) -> JobModel:
    """The model a job was classified with: the submitted one, else the job manifest's URI.

    A model file must lie inside the allowed roots. A relative path is taken from beside the
    job folder, then from the folder holding it (never from the service's working directory).
    """
    uri = submitted
    if not uri:
        try:
            uri = _manifest_model_uri(job_dir, roots)
        except (OSError, ValueError, KeyError, TypeError, InputRefusedError):
            uri = None
        if not uri:
            return JobModel(None, "the job does not record which model classified it")
    if is_registry_uri(uri):
        return JobModel(uri)
    bases = [Path("/")] if PurePosixPath(uri).is_absolute() else [job_dir, job_dir.parent]
    for base in bases:
        real = os.path.realpath(base / uri)
        if is_inside(real, roots) and os.path.isfile(real):
            return JobModel(real)
    return JobModel(None, "the job's model file is missing or outside the allowed folders")


def _pixels(src: SafeFile, bands: list[str], window: WindowSpec) -> np.ndarray:
    """``H x W x C`` raw pixels of an opened image or GeoTIFF in the model's band order."""
    win = _window(*window)
    if src.suffix in RASTER_SUFFIXES:
        with open_raster(src.gdal_path) as ds:
            idx = match_bands(raster_band_names(ds.descriptions), bands)
            arr = ds.read([i + 1 for i in idx], window=win)
        return np.moveaxis(arr, 0, -1)
    from vision.data.decode import decode_image_bytes

    img = decode_image_bytes(src.read_bytes(MAX_IMAGE_BYTES), PurePosixPath(src.name).name)
    if win is not None:
        r, c, h, w = (int(v) for v in (win.row_off, win.col_off, win.height, win.width))
        img = img[r:r + h, c:c + w]
    if img.shape[-1] != len(bands):
        raise BandMismatchError(f"the image has {img.shape[-1]} bands, the model takes {len(bands)} {bands}")
    return img


def explanation_png(model: str, src: SafeFile, window: WindowSpec) -> bytes:
    """Grad-CAM of one item as a jet-coloured PNG the size of the displayed chip.

    Raises:
        VisionError: no checkpoint can be found for ``model``, or the pixels do not fit it.
    """
    import matplotlib

    from training.explain import gradcam, load_explainer

    explainer = load_explainer(model)  # cached per checkpoint
    heat = gradcam(explainer, _pixels(src, list(explainer.bands), window))
    rgb = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    im = Image.fromarray(rgb).resize((CHIP_DISPLAY, CHIP_DISPLAY), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def is_scene(path: str | Path) -> bool:
    """Whether a path is a GeoTIFF (and so can have an overview)."""
    return PurePosixPath(str(path)).suffix.lower() in RASTER_SUFFIXES


def item_input(job_dir: str | Path, path: str) -> str:
    """Where an item's input lives: its stored absolute path; a relative one (rows imported
    before paths were resolved at import) is taken from the job folder, never from the
    service's working directory."""
    return path if PurePosixPath(path).is_absolute() else str(PurePosixPath(str(job_dir)) / path)

