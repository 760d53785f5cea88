"""Exercise and time every GPU path of the project, in one run of at most ~8 minutes.

    .venv/bin/python bench/gpu_check.py [--budget-s 420] [--json out.json]

What it runs, each timed in the same process so that the ratios compare like with like:

1. `--device auto`: which execution provider `inference.session.choose_device` picks.
2. Inference through `inference.session.Classifier` (the runner's own batch path: IO
   binding, pinned host staging, device-resident buffers on a GPU) on EfficientNet-Lite0,
   3 bands, 64 px, raw pixels: chips/s on the CPU, CUDA and TensorRT execution providers,
   and with the network exported by `training.export.export_onnx(..., fp16=True)` (the
   `vision export --fp16` path) against float32.
3. Training steps/s of the same network with channels_last: float32 against AMP with bf16,
   and AMP with fp16 and a GradScaler (`training.loop.train_one_epoch`, as `vision train`
   runs it on CUDA).
4. ResNet-50 at 64 px on TensorRT fp16 (the best path found): its chips/s times its FLOPs
   per chip (counted with torch's FlopCounterMode) against the GPU's dense fp16 peak: the
   share of the physical limit the pipeline reaches.

Printed: chips/s TensorRT ÷ CUDA ÷ CPU, fp16 ÷ fp32, AMP ÷ fp32 train steps/s, and the
ResNet-50 fraction of peak. A step that does not fit the time budget is skipped and says so.
On a machine without a GPU it says so and exits 0 without timing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Dense fp16/bf16 tensor-core peaks (TFLOP/s, vendor datasheets, SXM parts), by device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10": 125.0, "V100": 125.0, "T4": 65.0}
CLASSES = 10
SIZE = 64


def gpu_present() -> tuple[bool, str]:
    """Whether torch sees a CUDA device and ONNX Runtime has a GPU provider, and what they said."""
    import onnxruntime as ort
    import torch

    providers = ort.get_available_providers()
    cuda = torch.cuda.is_available()
    gpu_ep = any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    said = (f"torch.cuda.is_available() = {cuda}; ONNX Runtime {ort.__version__} providers {providers}")
    return cuda and gpu_ep, said


class Budget:
    """Seconds left for the whole check; a step that would start too late is skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


#: Seconds each timing runs for (the CPU dry run shortens it).
MIN_S = 3.0


def timed(fn: Callable[[], Any], min_s: float | None = None, max_iter: int = 10_000) -> tuple[float, int]:
    """Call ``fn`` until ``min_s`` seconds have passed; return (seconds, calls)."""
    fn()  # warm-up (engine builds, autotuning, allocations)
    n, t0, min_s = 0, time.perf_counter(), MIN_S if min_s is None else min_s
    while n < max_iter and (n < 3 or time.perf_counter() - t0 < min_s):
        fn()
        n += 1
    return time.perf_counter() - t0, n


def export_model(arch: str, path: Path, fp16: bool) -> Path:
    """A random-weight `NormalizedClassifier` of ``arch`` exported as `vision export` does."""
    import torch

    from training.export import export_onnx
    from vision.contracts.model import ModelMetadata
    from vision.models import NormalizedClassifier, get_model

    torch.manual_seed(0)
    net = NormalizedClassifier(get_model(arch, CLASSES, 3, "none", band_names=["B04", "B03", "B02"]),
                               [87.0, 97.0, 104.0], [51.0, 35.0, 29.0]).eval()
    meta = ModelMetadata(classes=tuple(f"c{k}" for k in range(CLASSES)), bands=("B04", "B03", "B02"),
                         input_size=(SIZE, SIZE), mean=(87.0, 97.0, 104.0), std=(51.0, 35.0, 29.0),
                         architecture=arch, model_name=f"gpu-check-{arch}",
                         precision="fp16" if fp16 else "fp32")
    x = torch.randint(0, 256, (16, 3, SIZE, SIZE)).float()
    # Random weights give near-uniform probabilities: the parity bound is the export's own.
    export_onnx(net, path, meta, x, fp16=fp16, max_diff=5e-2 if fp16 else None)
    return path


def infer_rate(model: Path, device: str, batch: int, fp16_engine: bool = False) -> float:
    """Chips/s of the runner's `Classifier` on ``device`` (raw uint8-valued float32 pixels)."""
    from inference.choices import Device
    from inference.session import Classifier, SessionOptions
    from vision.contracts.model import read_model_file

    dtype = read_model_file(model).input_dtype
    clf = Classifier(model, SessionOptions(device=Device.parse(device), batch_size=batch, fp16=fp16_engine),
                     (3, SIZE, SIZE), dtype)
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, SIZE, SIZE)).astype(np.float32)
    seconds, n = timed(lambda: clf(x))
    return n * batch / seconds


def train_rate(arch: str, amp: str, batch: int = 256, device: str = "cuda") -> float:
    """Training steps/s with channels_last: ``amp`` none, bf16 or fp16 (+ GradScaler)."""
    import torch
    from torch import nn

    from training.loop import train_one_epoch
    from vision.models import NormalizedClassifier, get_model

    dev = torch.device(device)
    torch.manual_seed(0)
    net = NormalizedClassifier(get_model(arch, CLASSES, 3, "none"), [87.0, 97.0, 104.0],
                               [51.0, 35.0, 29.0]).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _s: 1.0)
    crit = nn.CrossEntropyLoss()
    x = torch.randint(0, 256, (batch, 3, SIZE, SIZE), device=dev).float()
    y = torch.randint(0, CLASSES, (batch,), device=dev)
    steps = 20 if dev.type == "cuda" else 2
    loader = [(x, y)] * steps
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and dev.type == "cuda" else None
    real_bf16 = torch.cuda.is_bf16_supported
    if amp == "fp16":  # training.loop.autocast_for picks bf16 where supported: ask for fp16 here
        torch.cuda.is_bf16_supported = lambda *a, **k: False
    try:
        def epoch() -> None:
            train_one_epoch(net, loader, crit, opt, sched, dev, amp=amp != "none", scaler=scaler,
                            channels_last=True, max_steps=steps)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        seconds, n = timed(epoch, min_s=4.0 if dev.type == "cuda" else 0.0)
    finally:
        torch.cuda.is_bf16_supported = real_bf16
    return n * steps / seconds


def flops_per_chip(arch: str) -> float:
    """Forward FLOPs of one 64 px chip (torch's FlopCounterMode: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vision.models import get_model

    net = get_model(arch, CLASSES, 3, "none").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, SIZE, SIZE))
    return float(counter.get_total_flops())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=420.0, help="time for the whole check")
    ap.add_argument("--batch", type=int, default=256, help="chips per batch on the GPU")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense fp16 peak (default: from its name, see PEAK_TFLOPS)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="without a GPU: run every step that can run on the CPU once, briefly (checks "
                    "that the script works; the numbers mean nothing)")
    args = ap.parse_args()

    present, said = gpu_present()
    if args.dry_run_cpu:
        return dry_run_cpu()
    if not present:
        print(f"gpu_check: no GPU here ({said}); nothing was timed.")
        return 0
    import torch

    from inference.session import available_devices, choose_device

    budget = Budget(args.budget_s)
    name = torch.cuda.get_device_name(0)
    res: dict[str, Any] = {"gpu": name, "devices": [str(d) for d in available_devices()],
                           "auto": str(choose_device("auto")), "skipped": []}
    print(f"gpu_check on {name}: ORT devices {res['devices']}; --device auto chose {res['auto']}")
    b = args.batch

    def step(key: str, fn: Callable[[], Any], need_s: float) -> None:
        if budget.left() < need_s:
            res["skipped"].append(key)
            print(f"  {key}: skipped (budget: {budget.left():.0f} s left, needs ~{need_s:.0f} s)")
            return
        t0 = time.perf_counter()
        try:
            res[key] = fn()
        except Exception as exc:  # a path that fails is reported, the others still run
            res[key] = None
            res.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
            print(f"  {key}: FAILED {type(exc).__name__}: {exc}")
            return
        print(f"  {key}: {res[key]:,.1f} ({time.perf_counter() - t0:.0f} s)")

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        d = Path(tmp)
        lite32 = export_model("efficientnet_lite0", d / "lite0-fp32.onnx", fp16=False)
        lite16 = export_model("efficientnet_lite0", d / "lite0-fp16.onnx", fp16=True)
        print("chips/s, EfficientNet-Lite0 64 px:")
        step("cpu", lambda: infer_rate(lite32, "cpu", 64), 20)
        step("cuda_fp32", lambda: infer_rate(lite32, "cuda", b), 30)
        step("cuda_fp16", lambda: infer_rate(lite16, "cuda", b), 30)
        step("tensorrt_fp32", lambda: infer_rate(lite32, "tensorrt", b), 120)
        step("tensorrt_fp16", lambda: infer_rate(lite32, "tensorrt", b, fp16_engine=True), 120)
        print("train steps/s, EfficientNet-Lite0 64 px, batch 256, channels_last:")
        step("train_fp32", lambda: train_rate("efficientnet_lite0", "none"), 30)
        step("train_amp_bf16", lambda: train_rate("efficientnet_lite0", "bf16"), 30)
        step("train_amp_fp16", lambda: train_rate("efficientnet_lite0", "fp16"), 30)
        print("ResNet-50 64 px against the GPU's fp16 peak:")
        r50 = export_model("resnet50", d / "r50.onnx", fp16=False)
        res["resnet50_flops_per_chip"] = flops_per_chip("resnet50")
        best = "tensorrt" if "tensorrt" in res["devices"] else "cuda"
        step("resnet50_chips_s", lambda: infer_rate(r50, best, b, fp16_engine=best == "tensorrt"), 150)

    def ratio(a: str, bkey: str) -> str:
        x, y = res.get(a), res.get(bkey)
        return f"{x / y:.2f}" if x and y else "n/a"

    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    frac = "n/a"
    if peak and res.get("resnet50_chips_s"):
        frac = f"{res['resnet50_flops_per_chip'] * res['resnet50_chips_s'] / (peak * 1e12):.3f}"
    res["peak_tflops"], res["resnet50_fraction_of_peak"] = peak, frac
    print("\nratios (same run):")
    print(f"  chips/s TensorRT fp16 / CUDA fp32: {ratio('tensorrt_fp16', 'cuda_fp32')}; "
          f"TensorRT fp32 / CUDA fp32: {ratio('tensorrt_fp32', 'cuda_fp32')}; "
          f"CUDA fp32 / CPU: {ratio('cuda_fp32', 'cpu')}")
    print(f"  fp16 / fp32 (CUDA, vision export --fp16): {ratio('cuda_fp16', 'cuda_fp32')}; "
          f"(TensorRT engines): {ratio('tensorrt_fp16', 'tensorrt_fp32')}")
    print(f"  train steps/s AMP bf16 / fp32: {ratio('train_amp_bf16', 'train_fp32')}; "
          f"AMP fp16+scaler / fp32: {ratio('train_amp_fp16', 'train_fp32')}")
    print(f"  ResNet-50 64 px: {res['resnet50_flops_per_chip'] / 1e9:.2f} GFLOP/chip x "
          f"{res.get('resnet50_chips_s') or 0:,.0f} chips/s / {peak or '?'} TFLOP/s peak = {frac}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 1 if res.get("errors") else 0


def dry_run_cpu() -> int:
    """Every step that the CPU can run, once and briefly: exports (fp32, fp16), the runner's
    classifier, a training step, the FLOP count."""
    global MIN_S
    MIN_S = 0.0
    with tempfile.TemporaryDirectory(prefix="gpu-check-dry-") as tmp:
        d = Path(tmp)
        for fp16 in (False, True):
            m = export_model("efficientnet_lite0", d / f"lite0-{fp16}.onnx", fp16=fp16)
            print(f"dry run: exported {m.name}; cpu chips/s {infer_rate(m, 'cpu', 8):,.0f}")
        print(f"dry run: train steps/s on cpu {train_rate('efficientnet_lite0', 'none', 8, 'cpu'):.2f}")
        print(f"dry run: ResNet-50 64 px {flops_per_chip('resnet50') / 1e9:.2f} GFLOP/chip")
    print("dry run: every CPU-runnable step ran; the GPU steps need a GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
