"""Time `inference.aoi.AreasOfInterest.select` (which windows of a scene meet an area of
interest) and `inference.aoi_summary.summarise` on the 29RKH grids, without reading a pixel.

Cases (UTM 29N, the tile's real transform): the 10 m grid (10980 x 10980 px) with 64 px windows
stride 64 (29,584 windows) and 32 px stride 32 (118,336), and the 100 m grid (1098 x 1098 px)
with 8 px windows stride 8 (19,044); each against three AOI files in EPSG:4326: a polygon over
about 10 % of the tile, one over the whole tile, and 100 districts tiling the tile (first match
among many). Each timing is the best of ``--repeat`` runs on a fresh `AreasOfInterest` (the
per-scene clipping of the areas is included). Printed: windows, kept, select ms, summary ms.

    python bench/aoi_select.py [--repeat 3] [--case 10m-64 --case 100m-8] [--no-summary]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.aoi import AreasOfInterest  # noqa: E402
from inference.aoi_summary import SceneGrid, summarise  # noqa: E402
from inference.tiling import TileGrid  # noqa: E402
from vision import geo  # noqa: E402
from vision.contracts.predictions import new_row, rows_to_table  # noqa: E402

UTM29 = "EPSG:32629"
X0, Y0, EXTENT = 199980.0, 2800020.0, 109800.0
#: grid name: (pixel size m, pixels per side, window, stride)
CASES = {"10m-64": (10.0, 10980, 64, 64), "10m-32": (10.0, 10980, 32, 32), "100m-8": (100.0, 1098, 8, 8)}


def aoi_files() -> dict[str, list[geo.Aoi]]:
    """The three AOI sets, in EPSG:4326 (edges drawn in UTM, densified by `reproject`)."""
    ten = shapely.Point(X0 + 0.3 * EXTENT, Y0 - 0.4 * EXTENT).buffer(EXTENT * np.sqrt(0.1 / np.pi), 64)
    whole = shapely.box(X0 - 500, Y0 - EXTENT - 500, X0 + EXTENT + 500, Y0 + 500)
    step = EXTENT / 10
    districts = [geo.Aoi(f"d{i:02d}{j:02d}", geo.reproject(
        shapely.box(X0 + j * step, Y0 - (i + 1) * step, X0 + (j + 1) * step, Y0 - i * step), UTM29, "EPSG:4326"))
        for i in range(10) for j in range(10)]
    return {"10 % polygon": [geo.Aoi("ten", geo.reproject(ten, UTM29, "EPSG:4326"))],
            "whole tile": [geo.Aoi("whole", geo.reproject(whole, UTM29, "EPSG:4326"))],
            "100 districts": districts}


def table_of(path: str, windows: np.ndarray, keep: np.ndarray, ids: list[str | None]):  # type: ignore[no-untyped-def]
    rows = [new_row(path, "ok", None, row_off=int(r), col_off=int(c), height=int(h), width=int(w),
                    class_name="Forest", label=0, aoi_id=ids[k])
            for k, (r, c, h, w) in enumerate(windows.tolist()) if keep[k]]
    return rows_to_table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (the best is printed)")
    ap.add_argument("--no-summary", action="store_true", help="time the selection only")
    ap.add_argument("--case", action="append", choices=list(CASES), help="only these grids (repeatable)")
    args = ap.parse_args(argv)
    cases = [(name, *CASES[name]) for name in args.case or CASES]
    print(f"{'grid, window/stride':<20} {'AOI':<14} {'windows':>8} {'kept':>8} {'select ms':>10} {'summary ms':>11}")
    for name, res, n, size, stride in cases:
        t = Affine(res, 0, X0, 0, -res, Y0)
        grid = TileGrid(n, n, (size, size), (stride, stride))
        windows = np.array([grid.window(i, j) for i in range(grid.rows) for j in range(grid.cols)])
        for aoi_name, areas in aoi_files().items():
            best, best_sum = float("inf"), float("inf")
            for _ in range(max(1, args.repeat)):
                aois = AreasOfInterest("bench.geojson", CRS.from_epsg(4326), tuple(areas))
                t0 = time.perf_counter()
                sel = aois.select(UTM29, t, n, n, windows)
                best = min(best, time.perf_counter() - t0)
            summary_ms = ""
            if not args.no_summary:
                table = table_of("scene.tif", windows, sel.keep, sel.aoi_ids())
                for _ in range(max(1, args.repeat)):
                    aois = AreasOfInterest("bench.geojson", CRS.from_epsg(4326), tuple(areas))
                    t0 = time.perf_counter()
                    summarise(table, aois, {"scene.tif": SceneGrid(UTM29, t, grid)})
                    best_sum = min(best_sum, time.perf_counter() - t0)
                summary_ms = f"{best_sum * 1e3:.0f}"
            print(f"{name:<20} {aoi_name:<14} {len(windows):>8,} {sel.n_kept:>8,} {best * 1e3:>10.1f} "
                  f"{summary_ms:>11}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
