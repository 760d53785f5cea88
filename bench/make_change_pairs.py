"""Multi-date test scenes for `vision change`, built from real EuroSAT RGB chips, with the truth
of every window known.

Date ``d0`` ("before") is a mosaic of real 64 x 64 chips: fields of 2 x 2 windows, each window a
distinct chip of the field's class. Date ``d1`` ("after") is ``d0`` with known fields replaced by
real chips of another class (AnnualCrop over HerbaceousVegetation and Forest: appeared;
HerbaceousVegetation over AnnualCrop: disappeared), a share of the unchanged windows given
another real chip of the *same* class (new pixels, same truth, as a second acquisition would
give), some windows made cloudy (pixels blended towards white, and an SCL-like layer at 20 m
with classes 9 inside and 8 on the edge) and a block made nodata. ``d2`` does the same again
from ``d1`` (more fields appear; clouds elsewhere). ``d1-3857`` is ``d1`` reprojected to
EPSG:3857 (bilinear for the pixels, nearest for SCL and truth) the way ``gdalwarp -t_srs
EPSG:3857`` would, for the grid-alignment path. Chips come from the EuroSAT test split, then val
(train only if those run out; said in ``pairs.json``). The scene sits on the central meridian of
its UTM zone by default (``--easting`` moves it: away from it, grid convergence rotates the
3857 windows against the chips and more windows straddle two chips).

Written to OUT, per date ``D``: ``D.tif`` (RGB uint8, nodata 0, band descriptions B04/B03/B02),
``D.scl.tif``, ``D.truth.tif`` (bands class (255 nodata), chip (index into ``chips.json``),
cloud (0/1)), ``D.item.json`` (a local STAC item with ``visual`` and ``scl`` assets and its
``datetime``); ``truth-d0-d1.parquet``, ``truth-d0-d1-3857.parquet``, ``truth-d0-d1-d2.parquet``
(one row per window of the latest date's grid: per date ``class_K``, ``cloudy_K``, ``nodata_K``;
``first_appeared`` the first date index at which the class of interest is seen after a date it
was seen absent, clouds and nodata counting as not seen); ``aoi.geojson`` (two areas);
``chips.json``, ``pairs.json``. With ``--simulate-jobs``, also ``jobs/D``: job folders as
`vision infer` writes them (schema 2), whose predictions are simulated from the truth by a
deterministic "model" (a function of the chip under the window's centre, right with probability
``--accuracy``, calibrated-looking probabilities; `tests.inference.change.jobs`): for exercising
`vision change` without a trained model. For the real acceptance run `vision infer` on ``D.tif`` (or ``D.item.json``).

Usage:
    python bench/make_change_pairs.py OUT [--windows 16] [--seed 0] [--simulate-jobs]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

W = 64  # window = chip size
CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake")
WEIGHTS = (0.16, 0.16, 0.16, 0.04, 0.06, 0.1, 0.08, 0.1, 0.04, 0.1)
INTEREST = "AnnualCrop"
SCL_OF = {"AnnualCrop": 4, "Forest": 4, "HerbaceousVegetation": 4, "Pasture": 4, "PermanentCrop": 4,
          "Highway": 5, "Industrial": 5, "Residential": 5, "River": 6, "SeaLake": 6}
DATES = {"d0": "2023-06-15T10:30:00Z", "d1": "2024-06-14T10:30:00Z", "d2": "2025-06-16T10:30:00Z"}
#: Window shares above which a window is nodata / cloudy (`vision infer`'s --max-nodata default).
MAX_NODATA, MAX_CLOUD = 0.5, 0.5


class ChipPool:
    """Real EuroSAT RGB chips by class, from the test split, then val, then train."""

    def __init__(self, data_dir: Path, rng: np.random.Generator):
        root = data_dir / "eurosat-rgb"
        self.shards = [root / "eurosat-rgb-test-000000.tar.gz", root / "eurosat-rgb-val-000000.tar.gz",
                       *sorted(root.glob("eurosat-rgb-train-*.tar.gz"))]
        self.rng = rng
        self.pool: dict[str, list[tuple[str, bytes]]] = {c: [] for c in CLASSES}
        self.keys: list[str] = []
        self.splits: list[str] = []

    def _load_next(self) -> bool:
        from vision.data.sources import iter_shard

        if not self.shards:
            return False
        shard = self.shards.pop(0)
        self.splits.append(shard.name)
        fresh: dict[str, list[tuple[str, bytes]]] = {c: [] for c in CLASSES}
        for key, parts in iter_shard(shard):
            cls = key.rsplit("_", 1)[0]
            if "jpg" in parts and cls in fresh:
                fresh[cls].append((key, parts["jpg"]))
        for c, items in fresh.items():
            order = self.rng.permutation(len(items))
            self.pool[c].extend(items[k] for k in order)
        return True

    def take(self, cls: str) -> tuple[int, np.ndarray]:
        """A chip of ``cls`` never taken before: its id (index into `keys`) and HWC pixels."""
        from vision.data.decode import decode_image_bytes

        while not self.pool[cls]:
            if not self._load_next():
                raise RuntimeError(f"EuroSAT RGB has no more {cls} chips")
        key, data = self.pool[cls].pop(0)
        self.keys.append(key)
        return len(self.keys) - 1, decode_image_bytes(data, key)


@dataclass
class Date:
    """One date's truth per window (``g x g``)."""

    name: str
    cls: np.ndarray
    chip: np.ndarray
    cloudy: np.ndarray
    nodata: np.ndarray
    pixels: dict[int, np.ndarray] = field(default_factory=dict)  # chip id -> HWC

    def copy(self, name: str) -> Date:
        return Date(name, self.cls.copy(), self.chip.copy(), np.zeros_like(self.cloudy),
                    np.zeros_like(self.nodata), self.pixels)


def _fields(g: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(0, g, 2) for j in range(0, g, 2)]


def _set_field(d: Date, i: int, j: int, cls: int, pool: ChipPool) -> None:
    for a in range(i, min(i + 2, d.cls.shape[0])):
        for b in range(j, min(j + 2, d.cls.shape[1])):
            cid, px = pool.take(CLASSES[cls])
            d.cls[a, b], d.chip[a, b], d.pixels[cid] = cls, cid, px


def _first_date(g: int, pool: ChipPool, rng: np.random.Generator) -> Date:
    d = Date("d0", np.zeros((g, g), np.int16), np.zeros((g, g), np.int32), np.zeros((g, g), bool),
             np.zeros((g, g), bool))
    for i, j in _fields(g):
        _set_field(d, i, j, int(rng.choice(len(CLASSES), p=WEIGHTS)), pool)
    return d


def _next_date(prev: Date, name: str, pool: ChipPool, rng: np.random.Generator, appear: float,
               disappear: float, swap: float) -> Date:
    d = prev.copy(name)
    ac, hv, fo = (CLASSES.index(c) for c in ("AnnualCrop", "HerbaceousVegetation", "Forest"))
    changed = np.zeros_like(d.cloudy)
    for i, j in _fields(d.cls.shape[0]):
        c = int(prev.cls[i, j])
        if c in (hv, fo) and rng.random() < appear:
            _set_field(d, i, j, ac, pool)
            changed[i: i + 2, j: j + 2] = True
        elif c == ac and rng.random() < disappear:
            _set_field(d, i, j, hv, pool)
            changed[i: i + 2, j: j + 2] = True
    for i, j in zip(*np.nonzero(~changed), strict=True):
        if rng.random() < swap:  # same class, another real chip
            cid, px = pool.take(CLASSES[int(d.cls[i, j])])
            d.chip[i, j], d.pixels[cid] = cid, px
    return d


def _weather(d: Date, rng: np.random.Generator, cloudy: float, nodata_block: tuple[int, int, int, int]) -> None:
    g = d.cls.shape[0]
    d.cloudy |= rng.random((g, g)) < cloudy
    r0, r1, c0, c1 = nodata_block
    d.nodata[r0:r1, c0:c1] = True
    d.cloudy &= ~d.nodata


def render(d: Date, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The date's RGB scene (3 x H x W uint8), SCL at half resolution, and truth (3 bands)."""
    g = d.cls.shape[0]
    rgb = np.zeros((3, g * W, g * W), np.uint8)
    truth = np.zeros((3, g * W, g * W), np.int32)
    scl = np.zeros((g * W // 2, g * W // 2), np.uint8)
    for i in range(g):
        for j in range(g):
            sl = (slice(i * W, (i + 1) * W), slice(j * W, (j + 1) * W))
            hs = (slice(i * W // 2, (i + 1) * W // 2), slice(j * W // 2, (j + 1) * W // 2))
            if d.nodata[i, j]:
                truth[0][sl], truth[1][sl] = 255, -1
                continue
            px = d.pixels[int(d.chip[i, j])].transpose(2, 0, 1).astype(np.float32)
            truth[0][sl], truth[1][sl] = d.cls[i, j], d.chip[i, j]
            scl[hs] = SCL_OF[CLASSES[int(d.cls[i, j])]]
            if d.cloudy[i, j]:
                white = 235 + rng.normal(0, 8, (1, W, W))
                px = 0.2 * px + 0.8 * white
                truth[2][sl] = 1
                block = np.full((W // 2, W // 2), 8, np.uint8)
                block[2:-2, 2:-2] = 9
                scl[hs] = block
            rgb[(slice(None), *sl)] = np.clip(px, 1, 255).astype(np.uint8)  # 0 is nodata
    return rgb, scl, truth


def _write(path: Path, arr: np.ndarray, crs: str, transform: Any, nodata: float | None,
           names: list[str] | None = None) -> None:
    import rasterio

    arr = arr if arr.ndim == 3 else arr[None]
    profile = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
               "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr)
        for k, n in enumerate(names or [], 1):
            ds.set_band_description(k, n)


def stac_item(out: Path, name: str, crs: str, transform: Any, shape: tuple[int, int], when: str) -> Path:
    """A minimal local STAC item with a ``visual`` RGB asset and an ``scl`` asset."""
    from vision import geo

    fp = geo.reproject(geo.footprint(crs, transform, shape[1], shape[0]), crs, "EPSG:4326")
    epsg = int(crs.split(":")[1])
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": f"change-pair-{name}",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "geometry": fp.__geo_interface__, "bbox": list(fp.bounds),
        "properties": {"datetime": when, "platform": "sentinel-2", "proj:epsg": epsg,
                       "description": "EuroSAT RGB chips mosaicked by bench/make_change_pairs.py"},
        "links": [],
        "assets": {
            "visual": {"href": f"./{name}.tif", "type": "image/tiff; application=geotiff", "roles": ["visual"],
                       "title": "True color image (EuroSAT RGB chips)",
                       "eo:bands": [{"name": n, "common_name": n} for n in ("red", "green", "blue")],
                       "proj:shape": list(shape), "proj:transform": list(transform)[:6]},
            "scl": {"href": f"./{name}.scl.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                    "title": "Scene classification map (SCL)",
                    "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]},
        },
    }
    path = out / f"{name}.item.json"
    path.write_text(json.dumps(item, indent=1))
    return path


def write_date(out: Path, d: Date, rng: np.random.Generator, crs: str, origin: tuple[float, float]) -> Path:
    from affine import Affine

    rgb, scl, truth = render(d, rng)
    t = Affine(10.0, 0, origin[0], 0, -10.0, origin[1])
    _write(out / f"{d.name}.tif", rgb, crs, t, 0, ["B04", "B03", "B02"])
    _write(out / f"{d.name}.scl.tif", scl, crs, t @ Affine.scale(2), 0, ["SCL"])
    _write(out / f"{d.name}.truth.tif", truth, crs, t, None, ["class", "chip", "cloud"])
    return stac_item(out, d.name, crs, t, rgb.shape[1:], DATES[d.name])


def reproject_date(out: Path, src: str, name: str, dst_crs: str = "EPSG:3857") -> Path:
    """``src`` (its scene, SCL and truth) warped to ``dst_crs`` as gdalwarp's defaults would."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(out / f"{src}.tif") as ds:
        t, w, h = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds)
    for suffix, res, nodata in ((".tif", Resampling.bilinear, 0), (".scl.tif", Resampling.nearest, 0),
                                (".truth.tif", Resampling.nearest, None)):
        with rasterio.open(out / f"{src}{suffix}") as ds:
            f = 2 if suffix == ".scl.tif" else 1
            dst = np.zeros((ds.count, h // f, w // f), ds.dtypes[0])
            if suffix == ".truth.tif":
                dst[0], dst[1] = 255, -1
            reproject(ds.read(), dst, src_transform=ds.transform, src_crs=ds.crs, src_nodata=nodata,
                      dst_transform=t @ rasterio.Affine.scale(f), dst_crs=dst_crs, dst_nodata=nodata, resampling=res)
            _write(out / f"{name}{suffix}", dst, dst_crs, t @ rasterio.Affine.scale(f), nodata,
                   list(ds.descriptions) if ds.descriptions[0] else None)
    return stac_item(out, name, dst_crs, t, (h, w), DATES[src])


def window_truth(truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per 64-pixel window of a truth raster (3 x H x W): majority class (-1 when nodata),
    centre chip, cloudy, nodata (shares as `vision infer` would judge them)."""
    _, h, w = truth.shape
    rows, cols = max(1, -(-(h - W) // W) + 1), max(1, -(-(w - W) // W) + 1)
    pad = np.full((3, rows * W, cols * W), -1, np.int32)
    pad[0] = 255
    pad[:, :h, :w] = truth
    blocks = pad.reshape(3, rows, W, cols, W).transpose(0, 1, 3, 2, 4).reshape(3, rows, cols, W * W)
    cls, cloud = blocks[0], blocks[2]
    valid = cls != 255
    nodata = valid.mean(axis=2) < 1 - MAX_NODATA
    counts = np.stack([(cls == k).sum(axis=2) for k in range(len(CLASSES))], axis=2)
    major = np.where(valid.any(axis=2), counts.argmax(axis=2), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cloud_share = np.where(valid, cloud == 1, False).sum(axis=2) / valid.sum(axis=2)
    cloudy = ~nodata & (np.nan_to_num(cloud_share) > MAX_CLOUD)
    centre = pad[1, W // 2::W, W // 2::W][:rows, :cols]
    return {"class": np.where(nodata, -1, major), "chip": centre, "cloudy": cloudy, "nodata": nodata,
            "cloud_fraction": np.nan_to_num(cloud_share).astype(np.float32)}


def _read_truth(out: Path, name: str, onto: str | None = None) -> np.ndarray:
    """A date's truth raster, on its own grid or (nearest) on the grid of date ``onto``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    with rasterio.open(out / f"{name}.truth.tif") as ds:
        data = ds.read()
        if onto is None:
            return data
        with rasterio.open(out / f"{onto}.truth.tif") as dst_ds:
            dst = np.zeros((3, dst_ds.height, dst_ds.width), np.int32)
            dst[0], dst[1] = 255, -1
            reproject(data, dst, src_transform=ds.transform, src_crs=ds.crs, dst_transform=dst_ds.transform,
                      dst_crs=dst_ds.crs, resampling=Resampling.nearest)
            return dst


def truth_table(out: Path, names: list[str], interest: str = INTEREST) -> Path:
    """``truth-<names>.parquet``: per window of the last date's grid, every date's truth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    later = names[-1]
    per = [window_truth(_read_truth(out, n, None if n == later else later)) for n in names]
    rows, cols = per[-1]["class"].shape
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cols_: dict[str, Any] = {"row_off": pa.array((ii * W).ravel(), pa.int32()),
                             "col_off": pa.array((jj * W).ravel(), pa.int32())}
    k_int = CLASSES.index(interest)
    first = np.full(rows * cols, -1)
    absent_seen = np.zeros(rows * cols, bool)
    for k, t in enumerate(per):
        c = t["class"].ravel()
        seen = ~t["cloudy"].ravel() & ~t["nodata"].ravel() & (c >= 0)
        cols_[f"class_{k}"] = pa.array([CLASSES[v] if v >= 0 else None for v in c], pa.string())
        cols_[f"cloudy_{k}"] = pa.array(t["cloudy"].ravel())
        cols_[f"nodata_{k}"] = pa.array(t["nodata"].ravel())
        hit = seen & (c == k_int) & absent_seen & (first < 0)
        first[hit] = k
        absent_seen |= seen & (c != k_int) & (first < 0)
    cols_["first_appeared"] = pa.array(first, pa.int32())
    table = pa.table(cols_).replace_schema_metadata({"dates": json.dumps(names), "interest": interest,
                                                     "max_nodata": str(MAX_NODATA), "max_cloud": str(MAX_CLOUD)})
    path = out / f"truth-{'-'.join(names)}.parquet"
    pq.write_table(table, path)
    return path


def aoi_file(out: Path, name: str) -> Path:
    """Two areas of interest (WGS 84) over the date's scene: its west half and a south-east block."""
    import rasterio
    import shapely

    from vision import geo

    with rasterio.open(out / f"{name}.tif") as ds:
        x0, y0, x1, y1 = ds.bounds
        crs = ds.crs.to_string()
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    west = geo.reproject(shapely.box(x0 - 50, y0 - 50, xm, y1 + 50), crs, "EPSG:4326")
    se = geo.reproject(shapely.box(xm + (x1 - xm) / 4, y0 + 10, x1 - 10, ym), crs, "EPSG:4326")
    feats = [{"type": "Feature", "properties": {"name": n}, "geometry": g.__geo_interface__}
             for n, g in (("west", west), ("south-east", se))]
    path = out / "aoi.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def build(out: Path, data_dir: Path, windows: int = 16, seed: int = 0, appear: float = 0.35,
          disappear: float = 0.25, swap: float = 0.2, cloudy: float = 0.08, crs: str = "EPSG:32632",
          easting: float = 500_000.0, northing: float = 5_350_000.0, three_dates: bool = True,
          other_crs: str | None = "EPSG:3857") -> dict[str, Any]:
    """Build the dates, truth tables and AOIs in ``out``; returns what ``pairs.json`` holds."""
    out.mkdir(parents=True, exist_ok=True)
    g = windows + windows % 2
    rng = np.random.default_rng(seed)
    pool = ChipPool(data_dir, rng)
    origin = (easting - g * W * 10 / 2, northing)
    d0 = _first_date(g, pool, rng)
    _weather(d0, rng, cloudy / 2, (g - 2, g, 0, 3))
    d1 = _next_date(d0, "d1", pool, rng, appear, disappear, swap)
    _weather(d1, rng, cloudy, (0, 2, g - 2, g))
    dates = [d0, d1]
    if three_dates:
        d2 = _next_date(d1, "d2", pool, rng, appear, disappear / 2, swap)
        _weather(d2, rng, cloudy, (g // 2, g // 2 + 1, g // 2, g // 2 + 2))
        dates.append(d2)
    items = {d.name: str(write_date(out, d, rng, crs, origin)) for d in dates}
    pairs: dict[str, Any] = {"same_grid": ["d0", "d1"]}
    truths = {"same_grid": str(truth_table(out, ["d0", "d1"]))}
    if other_crs is not None:
        items["d1-3857"] = str(reproject_date(out, "d1", "d1-3857", other_crs))
        pairs["other_crs"] = ["d0", "d1-3857"]
        truths["other_crs"] = str(truth_table(out, ["d0", "d1-3857"]))
    if three_dates:
        pairs["three_dates"] = ["d0", "d1", "d2"]
        truths["three_dates"] = str(truth_table(out, ["d0", "d1", "d2"]))
    meta = {"windows": g, "window_px": W, "seed": seed, "crs": crs, "origin": origin, "interest": INTEREST,
            "dates": {d.name: DATES[d.name] for d in dates}, "items": items, "pairs": pairs, "truth": truths,
            "aoi": str(aoi_file(out, "d0")), "chip_shards": pool.splits,
            "chips_per_date": {d.name: {f"{i},{j}": pool.keys[int(d.chip[i, j])] for i in range(g) for j in range(g)
                                        if not d.nodata[i, j]} for d in dates}}
    (out / "chips.json").write_text(json.dumps(pool.keys))
    (out / "pairs.json").write_text(json.dumps(meta, indent=1))
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data-dir", type=Path, default=None, help="shared data (default: VISION_DATA_DIR)")
    ap.add_argument("--windows", type=int, default=16, help="windows per side (even)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--appear", type=float, default=0.35,
                    help="share of HerbaceousVegetation/Forest fields turned AnnualCrop")
    ap.add_argument("--disappear", type=float, default=0.25,
                    help="share of AnnualCrop fields turned HerbaceousVegetation")
    ap.add_argument("--swap", type=float, default=0.2,
                    help="share of unchanged windows given another chip of their class")
    ap.add_argument("--cloudy", type=float, default=0.08, help="share of windows made cloudy per date")
    ap.add_argument("--easting", type=float, default=500_000.0, help="scene centre easting (500000: central meridian)")
    ap.add_argument("--simulate-jobs", action="store_true", help="also write simulated job folders in OUT/jobs")
    ap.add_argument("--accuracy", type=float, default=0.95, help="simulated model: share of windows it gets right")
    args = ap.parse_args()
    from vision import settings

    meta = build(args.out, args.data_dir or settings.data_dir(), args.windows, args.seed, args.appear,
                 args.disappear, args.swap, args.cloudy, easting=args.easting)
    if args.simulate_jobs:
        from tests.inference.change.jobs import simulate_job  # the tests' job-folder writer

        for name in meta["items"]:
            simulate_job(args.out, name, args.out / "jobs" / name, accuracy=args.accuracy, seed=args.seed)
    print(json.dumps({k: meta[k] for k in ("windows", "pairs", "truth", "items", "chip_shards")}, indent=1))


if __name__ == "__main__":
    main()
