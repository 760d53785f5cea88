"""A scene's class and confidence rasters: Cloud-Optimized GeoTIFFs of the window grid's
values over the scene's extent, in the scene's CRS.

The class COG carries a colour table and GDAL category names (QGIS and ``gdalinfo`` show a
legend without styling): each class index in its colour, and the windows that were not
assessed at fixed values of their own (`inference.palette.status_values`: nodata 255, the
raster's nodata value; cloudy 254; error 253), so a cloud never reads as a class or as "no
crop here". GeoTIFF keeps category names only in GDAL's PAM sidecar (``.aux.xml``: the
bundled GDAL writes them nowhere else), written here beside the COG, atomically.

The raster's pixels tile the windows' cells exactly (`TileGrid.raster_step`); where that step
is so fine that the raster would pass `MAX_RASTER_CELLS` (a step of 1 px over a 10980 px
scene: 120 million cells), it is written at one pixel per stride instead, each pixel showing
the window owning its centre, and `RasterLayout.note` says so for the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from affine import Affine

from inference.palette import category_names, colour_table, status_values
from inference.plan import ScenePlan
from vision.atomic import atomic_path, write_bytes_atomic
from vision.contracts.predictions import STATUS_CLOUDY, STATUS_ERROR, STATUS_OK, string_scalar

#: Most cells of a class or confidence raster before it falls back to one pixel per stride.
MAX_RASTER_CELLS = 1 << 25
#: Output-raster cells written per block (bounds memory for very large scenes).
_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True)
class RasterLayout:
    """Shape and transform of a scene's output rasters, and the window of each pixel.

    Attributes:
        rows, cols: window row (column) index of each raster row (column).
        pixel: scene pixels per raster pixel ``(rows, cols)`` (fractional when coarse).
        note: why the raster is coarser than the cells' exact step, or ``None``.
    """

    height: int
    width: int
    transform: Affine
    rows: np.ndarray
    cols: np.ndarray
    pixel: tuple[float, float]
    note: str | None = None


def raster_layout(scene: ScenePlan, max_cells: int | None = None) -> RasterLayout:
    """The exact layout (`TileGrid.raster_shape`), or one pixel per stride when the exact
    one has more than ``max_cells`` (default `MAX_RASTER_CELLS`) cells (fewer still if
    even that is too many)."""
    max_cells = MAX_RASTER_CELLS if max_cells is None else max_cells
    grid, info = scene.grid, scene.info
    h, w = grid.raster_shape()
    if h * w <= max_cells:
        sr, sc = grid.raster_step()
        return RasterLayout(h, w, grid.raster_transform(info.affine), grid.raster_index(0),
                            grid.raster_index(1), (float(sr), float(sc)))
    ch = max(1, round(info.height / grid.stride[0]))
    cw = max(1, round(info.width / grid.stride[1]))
    if ch * cw > max_cells:
        shrink = (ch * cw / max_cells) ** 0.5
        ch, cw = max(1, int(ch / shrink)), max(1, int(cw / shrink))
    pr, pc_ = info.height / ch, info.width / cw
    note = (f"class and confidence rasters at {ch} x {cw} pixels of {pr:.4g} x {pc_:.4g} scene "
            f"pixels (about one per stride {list(grid.stride)}), each showing the window owning "
            f"its centre: the exact cells (window size {list(grid.size)}, stride "
            f"{list(grid.stride)}) need a step of {list(grid.raster_step())} px, {h} x {w} "
            f"pixels, more than {max_cells:,}")
    return RasterLayout(ch, cw, info.affine @ Affine.scale(pc_, pr), grid.raster_index(0, ch),
                        grid.raster_index(1, cw), (pr, pc_), note)


def class_dtype(n_classes: int) -> tuple[type[np.unsignedinteger], int]:
    """The class raster's dtype and its top value (the nodata value): uint8 while the
    classes leave room for the three not-assessed values, else uint16."""
    return (np.uint8, 255) if n_classes <= 253 else (np.uint16, 65535)


def window_grids(scene: ScenePlan, rows: pa.Table, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Class and confidence per window (``rows x cols`` of the grid), and the top value:
    classified windows hold their class, cloudy and failed windows their status value
    (`status_values`), the rest nodata; confidence is NaN where not classified."""
    grid = scene.grid
    dtype, top = class_dtype(n_classes)
    values = status_values(top)
    cls = np.full((grid.rows, grid.cols), top, dtype=dtype)
    conf = np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
    placed = rows.filter(pc.invert(pc.is_null(rows["row_off"])))
    for status in (STATUS_CLOUDY, STATUS_ERROR):
        some = placed.filter(pc.equal(placed["status"], string_scalar(status)))
        if some.num_rows:
            cls[_values(some["row_off"], np.int32) // grid.stride[0],
                _values(some["col_off"], np.int32) // grid.stride[1]] = values[status]
    ok = placed.filter(pc.equal(placed["status"], string_scalar(STATUS_OK)))
    if ok.num_rows:
        i = _values(ok["row_off"], np.int32) // grid.stride[0]
        j = _values(ok["col_off"], np.int32) // grid.stride[1]
        cls[i, j] = _values(ok["label"], np.int32)
        conf[i, j] = _values(ok["confidence"], np.float32)
    return cls, conf, top


def _values(col: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    """A null-free numeric column as numpy, from its buffers (``to_numpy`` imports pandas,
    0.25 s of a core: see `vision.contracts.predictions.column`)."""
    if col.null_count:
        raise ValueError("_values needs a column without nulls")
    parts = [np.frombuffer(c.buffers()[1], dtype=dtype)[c.offset: c.offset + len(c)]
             for c in col.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def class_tags(classes: Sequence[str], top: int) -> dict[str, str]:
    """Band metadata of the class COG: each class's name, and the not-assessed values."""
    tags = {f"class_{k}": c for k, c in enumerate(classes)}
    tags.update({f"value_{s}": str(v) for s, v in status_values(top).items()})
    return tags


def write_class_cog(path: Path, scene: ScenePlan, layout: RasterLayout, cls: np.ndarray,
                    top: int, classes: Sequence[str]) -> None:
    """The class COG (colour table for uint8) and its categories sidecar (`aux_path`)."""
    colours = colour_table(classes, top) if cls.dtype == np.uint8 else None
    write_cog(path, scene, layout, cls, top, "NEAREST", "class", class_tags(classes, top), colours)


def aux_path(cog: Path) -> Path:
    """GDAL's PAM sidecar of a raster (where GeoTIFF's category names live)."""
    return cog.with_name(cog.name + ".aux.xml")


def raster_categories(classes: Sequence[str], top: int) -> list[str]:
    """Category names of a class raster: every value of a uint8 one (`category_names`); a
    uint16 one names its classes only (a full list would name 65,536 values; its
    not-assessed values are in its tags, `class_tags`)."""
    return category_names(classes, top) if top == 255 else list(classes)


def write_categories(path: Path, names: Sequence[str]) -> None:
    """Write ``path`` (a PAM ``.aux.xml``) naming band 1's values, entry ``v`` value ``v``:
    what GDAL's ``SetCategoryNames`` writes for a GeoTIFF, here atomically."""
    names_xml = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    xml = ('<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n'
           f"{names_xml}    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")
    write_bytes_atomic(path, xml.encode())


def write_cog(path: Path, scene: ScenePlan, layout: RasterLayout, grid_values: np.ndarray,
              nodata: float, resampling: str, description: str, tags: dict[str, str] | None,
              colours: dict[int, tuple[int, int, int, int]] | None) -> None:
    """Write a one-band COG of the window grid's values over the scene's extent (tiled,
    deflate, overviews where it is big enough), block of rows by block of rows."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from vision.raster import gdal_env

    height, width = layout.height, layout.width
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1,
               "dtype": grid_values.dtype.name, "crs": scene.info.crs,
               "transform": layout.transform, "nodata": nodata,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "DEFLATE"}
    if width < 256 or height < 256:
        del profile["tiled"], profile["blockxsize"], profile["blockysize"]
    step = max(1, _BLOCK_CELLS // max(1, width))
    with gdal_env(), MemoryFile() as mem:
        with mem.open(**profile) as ds:
            for r0 in range(0, height, step):
                r1 = min(height, r0 + step)
                block = grid_values[np.ix_(layout.rows[r0:r1], layout.cols)]
                ds.write(block, 1, window=Window(0, r0, width, r1 - r0))
            if tags:
                ds.update_tags(1, **tags)
            if colours:
                ds.write_colormap(1, colours)
            ds.set_band_description(1, description)
        with mem.open() as src, atomic_path(path) as tmp:
            rio_copy(src, str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                     OVERVIEW_RESAMPLING=resampling)
