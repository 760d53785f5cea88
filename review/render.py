"""Pictures for reviewers: chips as RGB PNGs, scene overviews with the window marked.

Bands are stretched per band between the 2nd and 98th percentile of valid pixels, which
suits both 8-bit RGB and 12-bit Sentinel-2 reflectances. Multispectral rasters get a
natural-colour default (B04, B03, B02 when the bands are named, else the first three) and
any 1-based band triple can be asked for.

Explanations: ``JOB_DIR/explanations/<row>.png`` (``row`` = the item's row in
``predictions.parquet``) is overlaid on the chip. When it is missing, `explanation_png`
computes Grad-CAM from the PyTorch checkpoint behind the job's model (trust layer,
``training.explain``) and the page caches it there.
"""

from __future__ import annotations

import functools
import io
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from threading import Lock

import numpy as np
from PIL import Image, ImageDraw
from rasterio.windows import Window

from vision.bands import display_bands, display_names, raster_band_names, stretch_uint8
from vision.errors import BandMismatchError
from vision.raster import RASTER_SUFFIXES, open_raster

OVERVIEW_SIZE = 256
CHIP_DISPLAY = 256


class _LRU:
    """A small thread-safe cache of rendered PNGs."""

    def __init__(self, size: int):
        self.size, self._d, self._lock = size, OrderedDict[tuple[object, ...], bytes](), Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple[object, ...], value: bytes) -> None:
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_CACHE = _LRU(1024)


def band_names(path: Path) -> list[str]:
    """Band names of a raster (`vision.bands.display_names`)."""
    with open_raster(path) as ds:
        return display_names(ds.descriptions)


def default_bands(names: Sequence[str | None]) -> list[int]:
    """1-based bands for a natural-colour view (`vision.bands.display_bands`)."""
    return [b + 1 for b in display_bands(names)]


def stretch(arr: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """``C x H x W`` values to ``H x W x C`` uint8 with the project's display stretch
    (`vision.bands.stretch`); a band's ``nodata`` pixels are black."""
    valid = None if nodata is None else (arr != nodata)
    return stretch_uint8(arr, valid)


def _png(rgb: np.ndarray, size: int | None = None) -> bytes:
    im = Image.fromarray(rgb)
    if size and max(im.size) < size:
        scale = size / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _window(row_off: int | None, col_off: int | None, height: int | None, width: int | None) -> Window | None:
    if None in (row_off, col_off, height, width):
        return None
    return Window(col_off, row_off, width, height)


def render_chip(
    path: Path,
    window: tuple[int | None, int | None, int | None, int | None],
    bands: Sequence[int] | None = None,
) -> bytes:
    """A PNG of one item: the window of a scene, or a whole chip file.

    Args:
        path: the raster or image.
        window: ``(row_off, col_off, height, width)``, all ``None`` for a whole file.
        bands: three 1-based bands (R, G, B); default natural colour.

    Raises:
        UnreadableInputError: the file cannot be read.
        BandMismatchError: a band is out of range.
    """
    st = path.stat()
    key = ("chip", str(path), st.st_mtime_ns, window, tuple(bands or ()))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    with open_raster(path) as ds:
        chosen = list(bands) if bands else default_bands(raster_band_names(ds.descriptions))
        if len(chosen) != 3 or any(not 1 <= b <= ds.count for b in chosen):
            raise BandMismatchError(f"bands must be three of 1..{ds.count}, got {chosen}")
        if ds.count < 3 and not bands:
            chosen = [1, 1, 1]
        arr = ds.read(chosen, window=_window(*window))
        png = _png(stretch(arr, ds.nodata), CHIP_DISPLAY)
    _CACHE.put(key, png)
    return png


def render_overview(path: Path, window: tuple[int | None, int | None, int | None, int | None]) -> bytes:
    """A small PNG of the whole scene with the item's window outlined in red."""
    st = path.stat()
    key = ("overview", str(path), st.st_mtime_ns)
    base = _CACHE.get(key)
    with open_raster(path) as ds:
        scale = min(1.0, OVERVIEW_SIZE / max(ds.width, ds.height))
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        if base is None:
            chosen = default_bands(raster_band_names(ds.descriptions))
            arr = ds.read(chosen, out_shape=(3, h, w))
            base = _png(stretch(arr, ds.nodata))
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


def heatmap_path(job_dir: Path, row_index: int) -> Path | None:
    """The explanation heatmap of a row, when the job folder has one."""
    p = job_dir / "explanations" / f"{row_index}.png"
    return p if p.is_file() else None


@functools.lru_cache(maxsize=16)
def _manifest_model_uri(path: str, _mtime_ns: int) -> str | None:
    """The model URI of a job manifest, parsed once per version of the file (a manifest
    lists every input: megabytes for a large archive, and item pages ask for it each time)."""
    uri = json.loads(Path(path).read_text())["model"]["uri"]
    return str(uri) if uri else None


def job_model(job_dir: Path, submitted: str | None) -> str | None:
    """The model a job was classified with: the submitted one, else the job manifest's URI.

    Relative paths are taken from the working directory (where `vision infer` ran), then
    from beside the job folder.
    """
    uri = submitted
    if not uri:
        try:
            manifest = job_dir / "manifest.json"
            uri = _manifest_model_uri(str(manifest), manifest.stat().st_mtime_ns)
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if not uri or uri.startswith("models:/") or Path(uri).is_absolute():
        return uri
    for base in (Path.cwd(), job_dir.parent):
        if (base / uri).exists():
            return str((base / uri).resolve())
    return None


def explanation_png(model: str, path: Path,
                    window: tuple[int | None, int | None, int | None, int | None]) -> bytes:
    """Grad-CAM of one item as a jet-coloured PNG the size of the displayed chip.

    Raises:
        VisionError: no checkpoint can be found for ``model``, or the pixels do not fit it.
    """
    import matplotlib

    from training.explain import gradcam, load_explainer, read_pixels

    explainer = load_explainer(model)  # cached per checkpoint
    win = None if window[0] is None else tuple(int(v or 0) for v in window)
    chip = read_pixels(path, explainer.bands, win)  # type: ignore[arg-type]
    heat = gradcam(explainer, chip)
    rgb = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    im = Image.fromarray(rgb).resize((CHIP_DISPLAY, CHIP_DISPLAY), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def is_scene(path: Path) -> bool:
    """Whether a path is a GeoTIFF (and so can have an overview)."""
    return path.suffix.lower() in RASTER_SUFFIXES


def input_file(job_dir: Path, path: str) -> Path:
    """Where an item's input lives: absolute as given, else relative to the job folder
    (falling back to the working directory, where `vision infer` was run)."""
    p = Path(path)
    if p.is_absolute():
        return p
    in_job = job_dir / p
    return in_job if in_job.exists() else p.resolve()
