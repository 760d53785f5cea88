"""Throughput of `vision infer` on a STAC item with per-band files against the same product
stacked into one file, as a ratio, in one run.

Classifies the Sentinel-2 L2A tile 29RKH twice per round, with the same 12-band L2A model,
the same windows and the same options:

  a. through its STAC item (shared/data/s2-l2a-29RKH): twelve single-band COGs at 100, 200
     and 600 m, each chunk read per file and resampled (bilinear) onto the 100 m grid;
  b. through shared/data/scenes/S2A_29RKH_20200219_L2A_12band_100m.tif: the same bands
     stacked on the 100 m grid, one windowed read per chunk (the fast path).

and prints windows/s of each (the job's own ``throughput.elapsed_s``: planning, hashing,
reading, classifying, writing) and the ratio a / b (goal >= 0.8). Rounds alternate a and b
(this host's speed drifts); the ratio is the mean of the rounds' ratios. Clouds are not
held back (``--max-cloud 1``), so both jobs classify the same windows.

The model (say which in a report): by default an untrained EfficientNet-Lite0 with 12 input
bands, L2A radiometry and a 100 m GSD in its metadata (the fixture is decimated to 100 m);
``--tiny`` a 1x1-convolution model instead (fast: for the test of this script, reading
dominates its time). ``--stride`` overlaps the windows to give the jobs more work than the
tile's 18 x 18 windows: the fixture is 29RKH decimated to 100 m (1098 x 1098 pixels, 1/100 of
the real 10 m tile), so at stride 32 (1,155 windows, 1.3 s a job) a job's fixed cost (planning,
the session's first batches, writing the outputs: ~0.13 s) is a third of the --aoi job's time.
The default, 8 (17,161 windows, ~15 s a job), gives the jobs a tile's worth of work. Measured
2026-12-02 (untrained Lite0, 2 cores): STAC / stacked 0.74, 0.82, 0.95 and --aoi time ratio
0.37, 0.24, 0.17 at stride 32, 16, 8 (the windows that meet the 10 % box: 0.146, 0.155, 0.158
of the scene's).

With ``--aoi``, each round also classifies the stacked file with ``--aoi`` over a box of
about 10 % of the scene (centred, drawn in UTM, stored in EPSG:4326) and prints its elapsed
time / the whole scene's (goal <= 0.2): the windows outside the area are never read.

Usage:
    python bench/stac_throughput.py [--stride 8] [--rounds 2] [--tiny] [--batch-size 64] [--aoi]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision import settings  # noqa: E402

ITEM = Path("s2-l2a-29RKH") / "S2A_29RKH_20200219_0_L2A.json"
STACKED = Path("scenes") / "S2A_29RKH_20200219_L2A_12band_100m.tif"
#: The stacked file's band order (EuroSAT order without B10).
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A")
GOAL = 0.8
#: ``--aoi``: the area's share of the scene, and the goal for its time / the whole scene's.
AOI_SHARE = 0.1
AOI_GOAL = 0.2


def _data_dir() -> Path:
    d = settings.data_dir()
    return d if (d / ITEM).is_file() else REPO.parent / "shared" / "data"


def make_model(dest: Path, tiny: bool) -> Path:
    """Export the bench's 12-band L2A model (untrained EfficientNet-Lite0, or a tiny one)."""
    import onnx
    import torch
    from torch import nn

    from vision.contracts.model import ModelMetadata, set_onnx_props
    from vision.models import registry
    from vision.radiometry import Radiometry

    mean, std = [1500.0] * len(BANDS), [800.0] * len(BANDS)
    torch.manual_seed(0)
    net: nn.Module
    if tiny:
        net = nn.Sequential(nn.Conv2d(len(BANDS), 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 10))
        arch = "tiny-1x1"
    else:
        net = registry.get_model("efficientnet_lite0", 10, len(BANDS), weights="none")
        arch = "efficientnet_lite0"
    net = registry.NormalizedClassifier(net, mean, std).eval()
    path = dest / "model.onnx"
    torch.onnx.export(net, (torch.zeros(2, len(BANDS), 64, 64),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, external_data=False)
    proto = onnx.load(str(path))
    set_onnx_props(proto, ModelMetadata(
        classes=tuple(f"class{k}" for k in range(10)), bands=BANDS, input_size=(64, 64),
        mean=tuple(mean), std=tuple(std), architecture=arch, model_name=f"bench-stac-{arch}",
        model_version="0", gsd_m=100.0,
        radiometry=Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0,
                              source="bench stand-in (untrained)")))
    onnx.save(proto, str(path))
    return path


def write_aoi(scene: Path, dest: Path, share: float = AOI_SHARE) -> Path:
    """A GeoJSON (EPSG:4326) box over ``share`` of a scene's area, centred on it."""
    import rasterio
    import shapely

    from vision import geo

    with rasterio.open(scene) as ds:
        b, crs = ds.bounds, ds.crs.to_string()
    side = share ** 0.5
    cx, cy, w, h = (b.left + b.right) / 2, (b.bottom + b.top) / 2, b.right - b.left, b.top - b.bottom
    box = shapely.box(cx - side * w / 2, cy - side * h / 2, cx + side * w / 2, cy + side * h / 2)
    ll = geo.reproject(shapely.segmentize(box, max(w, h) / 100), crs, "EPSG:4326")
    dest.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "centre"}, "geometry": json.loads(shapely.to_geojson(ll))}]}))
    return dest


def run_infer(inp: Path, model: Path, out: Path, stride: int, batch: int,
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run `vision infer` in a subprocess; return its manifest."""
    cmd = [sys.executable, "-m", "vision.cli", "infer", str(inp), "--model", str(model), "--out", str(out),
           "--no-progress", "--overwrite", "--stride", str(stride), "--batch-size", str(batch),
           "--max-cloud", "1", "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"vision infer {inp.name} failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def rate(manifest: dict[str, Any]) -> tuple[int, float]:
    """(windows classified, windows/s over the job's elapsed time)."""
    t = manifest["throughput"]
    return int(t["classified_this_run"]), t["classified_this_run"] / t["elapsed_s"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stride", type=int, default=8, help="window step in pixels (64: no overlap)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (item, stacked file)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tiny", action="store_true", help="a 1x1-convolution model instead of Lite0")
    ap.add_argument("--aoi", action="store_true",
                    help=f"also time --aoi over {100 * AOI_SHARE:.0f} %% of the stacked scene against the whole scene "
                         f"(goal <= {AOI_GOAL})")
    args = ap.parse_args(argv)
    data = _data_dir()
    item, stacked = data / ITEM, data / STACKED
    with tempfile.TemporaryDirectory(prefix="stac-bench-") as tmp:
        root = Path(tmp)
        model = make_model(root, args.tiny)
        kind = "tiny 1x1-conv" if args.tiny else "untrained EfficientNet-Lite0"
        print(f"# model: {kind}, 12 bands (L2A, 100 m); 29RKH; stride {args.stride}; batch "
              f"{args.batch_size}; {os.cpu_count()} CPUs")
        ratios, aoi_ratios = [], []
        aoi = write_aoi(stacked, root / "aoi.geojson") if args.aoi else None
        for r in range(1, args.rounds + 1):
            a = run_infer(item, model, root / "item", args.stride, args.batch_size)
            b = run_infer(stacked, model, root / "file", args.stride, args.batch_size)
            (na, ra), (nb, rb) = rate(a), rate(b)
            if na != nb:
                raise SystemExit(f"the two jobs classified different windows ({na} vs {nb})")
            assert a["inputs"][0]["read"] == "vision.scene" and b["inputs"][0]["read"] == "file"
            ratios.append(ra / rb)
            print(f"round {r}: STAC item (12 per-band files, resampled) {ra:.1f} windows/s, stacked file "
                  f"{rb:.1f} windows/s, {na} windows each; ratio {ra / rb:.2f}")
            if aoi is not None:
                c = run_infer(stacked, model, root / "aoi", args.stride, args.batch_size, ("--aoi", str(aoi)))
                nc, tc, tb = rate(c)[0], c["throughput"]["elapsed_s"], b["throughput"]["elapsed_s"]
                aoi_ratios.append(tc / tb)
                cc, cb = c["throughput"]["classify_s"], b["throughput"]["classify_s"]
                print(f"round {r}: --aoi over {AOI_SHARE:.0%} of the stacked scene: {nc} windows in {tc:.2f} s "
                      f"(reading and classifying {cc:.2f} s); whole scene {nb} windows in {tb:.2f} s ({cb:.2f} s); "
                      f"time ratio {tc / tb:.2f}")
        mean = sum(ratios) / len(ratios)
        print(f"ratio STAC item / stacked file: {mean:.2f} (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)})   goal >= {GOAL}")
        if aoi_ratios:
            print(f"time ratio --aoi {AOI_SHARE:.0%} / whole scene: {sum(aoi_ratios) / len(aoi_ratios):.2f} "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in aoi_ratios)})   goal <= {AOI_GOAL}")


if __name__ == "__main__":
    main()
