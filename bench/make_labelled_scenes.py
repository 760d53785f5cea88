"""Build the labelled-scene fixture from the shared EuroSAT RGB shards (no data is committed).

For each split (train, val, test) the chips are laid edge to edge, in shard order, into one
georeferenced mosaic (UTM zone 32N, 10 m pixels, 256-pixel tiles, deflate), band descriptions
B04/B03/B02; the three mosaics lie 20 km apart. Cells of a mosaic left empty are masked (an
internal mask, not a nodata value: a black pixel in a chip stays valid). Labels, one per
chip, in shard order:

- ``labels.geojson``: each chip's footprint as a polygon in EPSG:4326, with ``class``
  (the class name), ``key`` (the EuroSAT file name) and ``split``;
- ``points.gpkg``: each chip's centre as a point in EPSG:3035 (ETRS89 LAEA Europe), same
  attributes.

``--verify`` then samples the windows with the library (`vision.data.labelled`, as
``experiments/eurosat_rgb_lite0_scenes.yaml`` does, from the polygons and from the points)
and compares every window's pixels with the chip of the same key decoded from the shards:
the maximum absolute difference is printed (it must be 0).

    .venv/bin/python bench/make_labelled_scenes.py --out eurosat-rgb-scenes [--limit N] [--verify]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from vision import settings
from vision.bands import EUROSAT_RGB_BANDS
from vision.data.sources import ShardSource

CRS = "EPSG:32632"
PIXEL = 10.0
CHIP = 64
GAP_M = 20_000.0
ORIGIN = (500_000.0, 5_600_000.0)


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of a mosaic of ``n`` chips: the divisor of ``n`` nearest its square
    root when there is a close one (no empty cell), else a square-ish grid."""
    root = math.isqrt(n)
    for cols in range(root, max(1, root // 2), -1):
        if n % cols == 0 and n // cols <= 2 * cols:
            return n // cols, cols
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def shards(split: str) -> list[Path]:
    d = settings.data_dir() / "eurosat-rgb"
    found = sorted(d.glob(f"eurosat-rgb-{split}-*.tar.gz"))
    if not found:
        sys.exit(f"no {split} shards in {d} (set VISION_DATA_DIR)")
    return found


def write_mosaic(path: Path, src: ShardSource, n: int, x0: float, y0: float) -> tuple[int, int]:
    """Write the first ``n`` chips of ``src`` as one mosaic; returns (rows, cols) of the grid."""
    rows, cols = grid_shape(n)
    profile = dict(driver="GTiff", width=cols * CHIP, height=rows * CHIP, count=3, dtype="uint8", crs=CRS,
                   transform=from_origin(x0, y0, PIXEL, PIXEL), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=2)
    empty = rows * cols > n
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.descriptions = EUROSAT_RGB_BANDS
        band_rows = 4  # 256-pixel strips: one row of tiles at a time
        for r0 in range(0, rows, band_rows):
            r1 = min(rows, r0 + band_rows)
            strip = np.zeros((3, (r1 - r0) * CHIP, cols * CHIP), dtype=np.uint8)
            mask = np.zeros(strip.shape[1:], dtype=np.uint8)
            for r in range(r0, r1):
                for c in range(cols):
                    k = r * cols + c
                    if k >= n:
                        continue
                    chip = src.read(k)
                    strip[:, (r - r0) * CHIP:(r - r0 + 1) * CHIP, c * CHIP:(c + 1) * CHIP] = chip.transpose(2, 0, 1)
                    mask[(r - r0) * CHIP:(r - r0 + 1) * CHIP, c * CHIP:(c + 1) * CHIP] = 255
            win = Window(0, r0 * CHIP, cols * CHIP, (r1 - r0) * CHIP)
            ds.write(strip, window=win)
            if empty:
                ds.write_mask(mask, window=win)
    return rows, cols


def write_labels(out: Path, records: list[tuple[str, str, str, float, float]]) -> None:
    """``labels.geojson`` (polygons, EPSG:4326) and ``points.gpkg`` (centres, EPSG:3035)."""
    import pyogrio
    import shapely
    from pyproj import Transformer

    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    to_laea = Transformer.from_crs(CRS, "EPSG:3035", always_xy=True)
    size = CHIP * PIXEL
    x = np.array([r[3] for r in records])
    y = np.array([r[4] for r in records])
    cx = np.stack([x, x + size, x + size, x, x], axis=1)
    cy = np.stack([y, y, y - size, y - size, y], axis=1)
    lon, lat = to_ll.transform(cx.ravel(), cy.ravel())
    polys = shapely.polygons(np.stack([np.reshape(lon, cx.shape), np.reshape(lat, cy.shape)], axis=2))
    px, py = to_laea.transform(x + size / 2, y - size / 2)
    points = shapely.points(np.asarray(px), np.asarray(py))
    fields = ["class", "key", "split"]
    data = [np.array([r[k] for r in records], dtype=object) for k in range(3)]
    for name, geoms, crs, driver, gtype in (("labels.geojson", polys, "EPSG:4326", "GeoJSON", "Polygon"),
                                            ("points.gpkg", points, "EPSG:3035", "GPKG", "Point")):
        target = out / name
        target.unlink(missing_ok=True)
        pyogrio.raw.write(target, shapely.to_wkb(geoms), data, fields, driver=driver, crs=crs, geometry_type=gtype)


def build(out: Path, limit: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    classes = (settings.data_dir() / "eurosat-rgb" / "classes.txt").read_text().split()
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    records: list[tuple[str, str, str, float, float]] = []
    x0 = ORIGIN[0]
    for split in ("train", "val", "test"):
        t = time.perf_counter()
        src = ShardSource(shards(split), classes)
        n = len(src) if limit is None else min(limit, len(src))
        rows, cols = write_mosaic(out / f"{split}.tif", src, n, x0, ORIGIN[1])
        for k in range(n):
            r, c = divmod(k, cols)
            key = src.refs[k].path.split("#", 1)[1]
            x, y = x0 + c * CHIP * PIXEL, ORIGIN[1] - r * CHIP * PIXEL
            records.append((classes[src.refs[k].label], key, split, x, y))
        print(f"{split}: {n} chips -> {out / (split + '.tif')} ({rows}x{cols} chips, {time.perf_counter() - t:.0f} s)")
        x0 += cols * CHIP * PIXEL + GAP_M
    write_labels(out, records)
    print(f"labels: {len(records)} polygons -> {out / 'labels.geojson'}, points -> {out / 'points.gpkg'}")


def verify(out: Path, limit: int | None) -> int:
    """Sample the windows as the scenes recipe does and compare them with the shard chips."""
    from vision.data.labelled import LabelledSpec
    from vision.data.labelled import build as build_windows
    from vision.data.sampling import SamplingOptions

    classes = tuple((out / "classes.txt").read_text().split())
    chips: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        src = ShardSource(shards(split), classes)
        n = len(src) if limit is None else min(limit, len(src))
        for k in range(n):
            chips[src.refs[k].path.split("#", 1)[1]] = src.read(k)
    bad = 0
    for labels in ("labels.geojson", "points.gpkg"):
        spec = LabelledSpec(kind="scenes", base=out, scenes=tuple((s, (f"{s}.tif",)) for s in ("train", "val", "test")),
                            labels=(labels,), class_field="class", id_field="key", classes=classes,
                            sampling=SamplingOptions(size=(CHIP, CHIP)))
        t = time.perf_counter()
        data = build_windows(spec, progress=False, reuse=False)
        worst, seen = 0, 0
        for k, smp in enumerate(data.samples):
            got = data.read_window(k)
            want = chips[smp.feature_id]
            worst = max(worst, int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()))
            seen += 1
        missing = len(chips) - seen
        print(f"{labels}: {seen} windows ({', '.join(f'{s} {data.splits.count(s)}' for s in data.split_names())}), "
              f"max abs difference from the shard chips {worst}, chips without a window {missing}, "
              f"labels skipped {len(data.label_problems)}, windows skipped {len(data.window_skips)} "
              f"({time.perf_counter() - t:.0f} s)")
        bad += int(worst != 0 or missing != 0)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the mosaics and labels (outside the repo)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many chips per split (quick runs)")
    ap.add_argument("--verify", action="store_true", help="also compare every sampled window with its chip")
    ap.add_argument("--verify-only", action="store_true", help="only compare (the fixture exists)")
    args = ap.parse_args()
    if not args.verify_only:
        build(args.out, args.limit)
    if args.verify or args.verify_only:
        sys.exit(verify(args.out, args.limit))


if __name__ == "__main__":
    main()
