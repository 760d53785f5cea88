"""Throughput and memory of `vision infer`, in one run, on the shared data.

Prints:
  1. end-to-end chips/s of `vision infer` on a folder of real EuroSAT JPEG chips, and on a real
     scene (as is, and mosaicked to 4x and 36x its pixels), divided by the chips/s of a bare
     ONNX Runtime session on preloaded tensors (same model, same batch size, all cores);
     the bare session is measured before and after every run, and each run is compared
     with the mean of the two around it (this host's speed drifts)    goal >= 0.90;
  2. the same chips/s divided by a plain PyTorch loop a user would write (torchvision
     `ImageFolder` + `DataLoader` + `model.eval()`, same weights)       goal >= 3;
  3. peak RSS of `vision infer` on a scene and on the scene mosaicked to 4x the pixels, each
     in its own process                                                 goal < 1.2x growth.

`vision infer` is timed twice: by the job itself (manifest ``throughput.elapsed_s``: planning,
hashing, reading, classifying, writing, without the interpreter's start and imports) and by
the wall clock of the whole command.

Usage:
    python bench/infer_throughput.py [--model runs/rgb/model.onnx]
        [--checkpoint runs/rgb/checkpoints/best.pt] [--chips 10000] [--batch-size N] [--rounds 3]

The batch size (the same for every side) is by default `vision infer`'s own on the CPU: 64
forward passes, i.e. 64 chips, or 8 for a model with the 8 test-time views of ``d8``.

Without the model, a stand-in efficientnet_lite0 with random weights is built and exported
the same way (raw pixels in, normalisation inside), and serves both sides of the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision import settings  # noqa: E402

SCENE = "rasterio_cogeo.tif"  # 3-band uint8, 1024 x 1024, tiled 512, JPEG-compressed


def _data_dir() -> Path:
    d = settings.data_dir()
    return d if d.is_dir() else REPO.parent / "shared" / "data"


def extract_chips(n: int, dest: Path) -> tuple[list[tuple[Path, int]], int]:
    """``n`` EuroSAT RGB chips as ``dest/<class>/<key>.jpg``: the test split first, then
    val, then train (an archive bigger than one split amortises the job's fixed costs).
    Returns the chips with their labels and how many of them (the first) are test chips."""
    root = _data_dir() / "eurosat-rgb"
    classes = (root / "classes.txt").read_text().split()
    shards = [root / "eurosat-rgb-test-000000.tar.gz", root / "eurosat-rgb-val-000000.tar.gz",
              *sorted(root.glob("eurosat-rgb-train-*.tar.gz"))]
    out: list[tuple[Path, int]] = []
    for shard in shards:
        with tarfile.open(shard, "r:gz") as tar:
            for m in tar:
                if not m.name.endswith(".jpg"):
                    continue
                key = Path(m.name).stem
                cls = key.rsplit("_", 1)[0]
                f = tar.extractfile(m)
                assert f is not None
                p = dest / cls / f"{key}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(f.read())
                out.append((p, classes.index(cls)))
                if len(out) >= n:
                    break
        if shard == shards[0]:
            n_test = len(out)
        if len(out) >= n:
            break
    return out, n_test


def standin_model(dest: Path) -> tuple[Path, Any]:
    """Export a random-weight efficientnet_lite0 (EuroSAT RGB contract); return it and the
    PyTorch module."""
    import onnx
    import torch

    from vision.contracts.model import ModelMetadata, set_onnx_props
    from vision.models import registry

    classes = (_data_dir() / "eurosat-rgb" / "classes.txt").read_text().split()
    mean, std = [87.0, 97.0, 104.0], [51.0, 35.0, 29.0]
    torch.manual_seed(0)
    net = registry.NormalizedClassifier(
        registry.get_model("efficientnet_lite0", len(classes), 3, weights="none"), mean, std
    ).eval()
    path = dest / "model.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 64, 64),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, external_data=False)
    proto = onnx.load(str(path))
    set_onnx_props(proto, ModelMetadata(
        classes=tuple(classes), bands=("B04", "B03", "B02"), input_size=(64, 64),
        mean=tuple(mean), std=tuple(std), architecture="efficientnet_lite0",
        model_name="bench-standin", model_version="0"))
    onnx.save(proto, str(path))
    return path, net


def torch_model(checkpoint: Path) -> Any:
    """The PyTorch classifier of the lead's training run, from its checkpoint (with the
    working size and test-time views it was exported with)."""
    from training.evaluate import load_checkpoint_model

    return load_checkpoint_model(checkpoint)[0]


def preload(chips: list[tuple[Path, int]]) -> np.ndarray:
    """The chips as one ``N x 3 x 64 x 64`` float32 array (what the bare session is fed)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
                     for p, _ in chips])


def bare_ort(model: Path, x: np.ndarray, batch: int) -> float:
    """chips/s of a bare session on preloaded tensors (tuned like `vision infer`'s)."""
    from inference.session import Classifier, SessionOptions

    clf = Classifier(model, SessionOptions(device="cpu", batch_size=batch), (3, 64, 64))
    clf(x[:batch])  # warm-up
    t = time.perf_counter()
    for s in range(0, len(x), batch):
        clf(x[s: s + batch])
    return len(x) / (time.perf_counter() - t)


def pytorch_loop(net: Any, root: Path, batch: int) -> tuple[float, float]:
    """chips/s and accuracy of the loop a user would write."""
    import torch
    from torchvision import datasets, transforms

    ds = datasets.ImageFolder(str(root), transform=transforms.Compose(
        [transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float32)]))
    # ConvertImageDtype scales to [0, 1]; the model takes raw values, as exported.
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=2)
    correct = n = 0
    t = time.perf_counter()
    with torch.no_grad():
        for xb, yb in loader:
            logits = net(xb * 255.0)
            correct += int((logits.argmax(1) == yb).sum())
            n += len(yb)
    return n / (time.perf_counter() - t), correct / max(n, 1)


#: Runs `vision infer` and, at exit, writes the process's own peak RSS (VmHWM, kB) to the
#: file named by VISION_BENCH_HWM. VmHWM covers this program only; the ru_maxrss that
#: wait4() reports would include the bench process it was forked from.
_CHILD = """
import atexit, os, re
def _hwm():
    kb = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
    open(os.environ["VISION_BENCH_HWM"], "w").write(kb)
atexit.register(_hwm)
from vision.cli import main
main()
"""


def run_infer(inputs: list[Path], model: Path, out: Path, batch: int) -> dict[str, Any]:
    """Run `vision infer` in a subprocess; return wall time, peak RSS and its manifest."""
    hwm = out.parent / f"{out.name}.hwm"
    cmd = [sys.executable, "-c", _CHILD, "infer",
           *map(str, inputs), "--model", str(model), "--out", str(out), "--no-progress",
           "--batch-size", str(batch), "--overwrite",
           # Every window of the scene at its own pixel size: the bench measures throughput, and a
           # 30 cm scene under the default --gsd model would be one 640 m window (issue 12).
           "--gsd", "native"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                          env={**os.environ, "VISION_BENCH_HWM": str(hwm)})
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"vision infer failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": wall, "rss_mb": int(hwm.read_text()) / 1024, "manifest": manifest}


def mosaic(src: Path, dest: Path, k: int = 2) -> Path:
    """The scene tiled ``k x k`` times (``k**2`` x the pixels), same CRS and origin."""
    import rasterio

    with rasterio.open(src) as ds:
        arr = ds.read()
        profile = ds.profile.copy()
    profile.update(width=arr.shape[2] * k, height=arr.shape[1] * k, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate")
    profile.pop("photometric", None)
    with rasterio.open(dest, "w", **profile) as out:
        for i in range(k):
            for j in range(k):
                out.write(arr, window=rasterio.windows.Window(
                    j * arr.shape[2], i * arr.shape[1], arr.shape[2], arr.shape[1]))
    return dest


def accuracy(manifest_dir: Path, chips: list[tuple[Path, int]], classes: list[str]) -> float:
    import pyarrow.parquet as pq

    rows = {r["path"]: r for r in pq.read_table(manifest_dir / "predictions.parquet").to_pylist()}
    ok = sum(rows[str(p)]["label"] == y for p, y in chips if str(p) in rows)
    return ok / len(chips)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "runs" / "rgb" / "model.onnx")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="PyTorch checkpoint of --model [default: <model dir>/checkpoints/best.pt]")
    ap.add_argument("--chips", type=int, default=10000,
                    help="chips in the archive (test split first; accuracy covers all)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="chips per batch, every side [default: vision infer's on the CPU]")
    ap.add_argument("--rounds", type=int, default=3, help="chip-folder rounds (median ratio)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="vision-bench-") as tmp_s:
        tmp = Path(tmp_s)
        chips, n_test = extract_chips(args.chips, tmp / "chips")
        net = None
        model = args.model
        if model.exists():
            ckpt = args.checkpoint or model.parent / "checkpoints" / "best.pt"
            net = torch_model(ckpt) if ckpt.exists() else None
            note = f"model {model}" + ("" if net is not None else f" (no checkpoint at {ckpt}: "
                                       "PyTorch ratio skipped)")
        else:
            model, net = standin_model(tmp)
            note = f"{args.model} not found: stand-in efficientnet_lite0 with random weights"
        if args.batch_size is None:
            from inference.model import load_model_info
            from inference.session import default_batch_size

            args.batch_size = default_batch_size("cpu", load_model_info(model).views)
        print(f"# {note}; {len(chips)} EuroSAT RGB chips ({n_test} from the test split); batch {args.batch_size}; "
              f"{os.cpu_count()} CPUs", flush=True)
        # The host's speed drifts: bare ORT is measured before and after each `vision infer`
        # run, and each run is compared with the mean of the two measurements around it.
        x = preload(chips)
        ort_runs = [bare_ort(model, x, args.batch_size)]
        print(f"bare onnxruntime on preloaded tensors: {ort_runs[-1]:,.0f} chips/s", flush=True)

        def around() -> float:
            ort_runs.append(bare_ort(model, x, args.batch_size))
            print(f"bare onnxruntime on preloaded tensors: {ort_runs[-1]:,.0f} chips/s", flush=True)
            return (ort_runs[-2] + ort_runs[-1]) / 2

        # Chips: several rounds (bare, infer, bare, infer, ..., bare); the ratio reported is
        # the median of the rounds' ratios.
        chip_ratios, chip_wall_ratios, chip_cps = [], [], []
        for k in range(args.rounds):
            res = run_infer([tmp / "chips"], model, tmp / "job-chips", args.batch_size)
            ref = around()
            th = res["manifest"]["throughput"]
            job_cps = len(chips) / th["elapsed_s"]
            wall_cps = len(chips) / res["wall_s"]
            chip_ratios.append(job_cps / ref)
            chip_wall_ratios.append(wall_cps / ref)
            chip_cps.append(job_cps)
            classes = res["manifest"]["model"]["classes"]
            acc = accuracy(tmp / "job-chips", chips[:n_test], classes)
            print(f"vision infer, chips folder, round {k + 1}: {job_cps:,.0f} chips/s end to end "
                  f"in the job ({th['elapsed_s']:.2f} s; classify loop {th['items_per_s']:,.0f}/s), "
                  f"{wall_cps:,.0f} chips/s wall incl. interpreter start ({res['wall_s']:.1f} s); "
                  f"ratio {chip_ratios[-1]:.2f}; test-split accuracy {acc:.4f}", flush=True)
        chip_ratio = float(np.median(chip_ratios))
        job_cps = float(np.median(chip_cps))

        scene = _data_dir() / "scenes" / SCENE
        big = mosaic(scene, tmp / "mosaic4x.tif")
        # A 1024 x 1024 scene is 256 windows, ~0.2 s of model time: fixed costs (session,
        # first batches, COG and GeoJSON) dominate it. 6 x 6 tiles show the steady state.
        huge = mosaic(scene, tmp / "mosaic36x.tif", k=6)
        sc, rss, ort_sc = {}, {}, {}
        for name, path in (("scene", scene), ("scene 4x", big), ("scene 36x", huge)):
            r = run_infer([path], model, tmp / f"job-{name.replace(' ', '')}", args.batch_size)
            ort_sc[name] = around()
            n = sum(r["manifest"]["counts"].values())
            el = r["manifest"]["throughput"]["elapsed_s"]
            sc[name], rss[name] = n / el, r["rss_mb"]
            fixed = el - n / ort_sc[name]
            print(f"vision infer, {name}: {n} windows in {el:.2f} s, {sc[name]:,.0f} windows/s in "
                  f"the job ({fixed:.2f} s more than bare ORT would take), {n / r['wall_s']:,.0f}/s "
                  f"wall; peak RSS {r['rss_mb']:.0f} MiB", flush=True)

        torch_cps = None
        if net is not None:
            import torch

            torch_cps, torch_acc = pytorch_loop(net, tmp / "chips", args.batch_size)
            ort_torch = around()
            print(f"PyTorch ImageFolder + DataLoader loop: {torch_cps:,.0f} chips/s "
                  f"(torch threads {torch.get_num_threads()}), accuracy over all chips {torch_acc:.4f}")

        print("\n== ratios ==")
        print(f"bare ORT measurements (chips/s)      : {', '.join(f'{v:,.0f}' for v in ort_runs)}")
        print(f"vision infer chips / bare ORT        : {chip_ratio:.2f} (rounds: "
              f"{', '.join(f'{r:.2f}' for r in chip_ratios)}; wall incl. interpreter start: "
              f"{float(np.median(chip_wall_ratios)):.2f})   goal >= 0.90")
        print(f"vision infer scene / bare ORT        : {sc['scene'] / ort_sc['scene']:.2f}; "
              f"4x scene: {sc['scene 4x'] / ort_sc['scene 4x']:.2f}; "
              f"36x scene: {sc['scene 36x'] / ort_sc['scene 36x']:.2f}   goal >= 0.90")
        if torch_cps:
            # Both sides against their own bare-ORT reference, so host drift cancels.
            rel = chip_ratio / (torch_cps / ort_torch)
            print(f"vision infer chips / PyTorch loop    : {rel:.2f} "
                  f"(raw {job_cps:,.0f} / {torch_cps:,.0f} = {job_cps / torch_cps:.2f})   goal >= 3")
        print(f"peak RSS 4x scene / scene            : {rss['scene 4x'] / rss['scene']:.2f} "
              f"({rss['scene']:.0f} -> {rss['scene 4x']:.0f} MiB)   goal < 1.2")


if __name__ == "__main__":
    main()
