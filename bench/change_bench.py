"""Memory and speed of `vision change`, against `vision infer` on the same grid.

Builds two pairs from real EuroSAT chips with `bench/make_change_pairs.py` (``--windows N`` and
``2N`` windows per side: 4x the area), classifies both dates of each with `vision infer`, then runs
`vision change` on each pair in its own process, and prints:

1. peak RSS of `vision change` on the 4x pair divided by that on the smaller pair
   (``ru_maxrss`` of the child process)                                  goal < 1.2;
2. windows/s of `vision change` divided by windows/s of `vision infer` on the same (4x) grid,
   both from their manifests (the run without the interpreter's start and imports) and from
   the wall clock of the whole command                                   goal >= 10.

Without ``--model`` a tiny ONNX classifier (`tests.inference.conftest.make_model`: normalise,
1x1 conv, pool, linear) stands in; it is far faster than a real model, so ratio 2 is then a
lower bound of what the reference model gives. Scenes are given to `vision infer` as GeoTIFFs
(``--input tif``, acquisition dates passed to `vision change` with --dates) or as the pairs'
STAC items (``--input item``, once `vision infer` reads STAC).

Usage:
    python bench/change_bench.py [--windows 32] [--model runs/rgb/model.onnx] [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]


#: Runs the command named by its first argument (``vision`` or ``inference.change``) and, at exit,
#: writes the process's own peak RSS (VmHWM, kB) to the file named by VISION_BENCH_HWM: the
#: ru_maxrss that wait4() reports would include the bench process it was forked from.
_CHILD = """
import atexit, os, re, sys
def _hwm():
    kb = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
    open(os.environ["VISION_BENCH_HWM"], "w").write(kb)
atexit.register(_hwm)
which = sys.argv.pop(1)
if which == "vision":
    from vision.cli import main
else:
    from inference.change.__main__ import main
main()
"""


def change_command() -> list[str]:
    """`vision change` where the installed entry points have it, else ``python -m inference.change``."""
    if any(ep.name == "change" for ep in entry_points(group="vision.commands")):
        return ["vision", "change"]
    return ["inference.change"]


def measured(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """Run ``[vision|inference.change] ARGS...`` in a child; its wall time (s), peak RSS (KiB) and
    exit code."""
    hwm = log.with_suffix(".hwm")
    env = {**os.environ, "VISION_BENCH_HWM": str(hwm),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run([sys.executable, "-c", _CHILD, *cmd], stdout=out, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO).returncode
    return time.perf_counter() - t0, int(hwm.read_text()) if hwm.exists() else 0, code


def tiny_model(path: Path) -> Path:
    from tests.inference.conftest import make_model

    return make_model(path, ["B04", "B03", "B02"], classes=CLASSES, input_size=(64, 64))


def infer(inp: Path, model: str, out: Path, log: Path) -> dict[str, Any]:
    wall, rss, code = measured(["vision", "infer", str(inp), "--model", model,
                                "--out", str(out), "--no-progress"], log)
    if code not in (0, 1):
        raise SystemExit(f"vision infer failed ({code}): see {log}")
    m = json.loads((out / "manifest.json").read_text())
    rows = int(m.get("rows", 0))
    elapsed = float(m.get("throughput", {}).get("elapsed_s") or wall)
    return {"windows": rows, "wall_s": wall, "elapsed_s": elapsed, "rss_kib": rss}


def change(jobs: list[Path], out: Path, dates: list[str] | None, log: Path) -> dict[str, Any]:
    cmd = [*change_command(), *map(str, jobs), "--out", str(out), "--no-progress", "--overwrite"]
    if dates:
        cmd += ["--dates", ",".join(dates)]
    wall, rss, code = measured(cmd, log)
    if code != 0:
        raise SystemExit(f"vision change failed ({code}): see {log}")
    m = json.loads((out / "change_manifest.json").read_text())
    return {"windows": m["throughput"]["windows"], "wall_s": wall, "elapsed_s": m["throughput"]["elapsed_s"],
            "rss_kib": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=32, help="windows per side of the smaller pair (even)")
    ap.add_argument("--model", help="ONNX model (default: a tiny stand-in)")
    ap.add_argument("--input", choices=("tif", "item"), default="tif")
    ap.add_argument("--rounds", type=int, default=3, help="runs of vision change per pair (median)")
    ap.add_argument("--work", type=Path, help="keep the pairs and jobs here (default: a temporary folder)")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "bench"))
    import make_change_pairs as mcp

    from vision import settings

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model or str(tiny_model(work / "tiny" / "model.onnx"))
        results: dict[str, Any] = {}
        for label, n in (("1x", args.windows), ("4x", 2 * args.windows)):
            pair = work / f"pair-{n}"
            if not (pair / "pairs.json").exists():
                mcp.build(pair, settings.data_dir(), windows=n, three_dates=False, other_crs=None)
            jobs = []
            for d in ("d0", "d1"):
                inp = pair / (f"{d}.item.json" if args.input == "item" else f"{d}.tif")
                out = work / f"jobs-{n}" / d
                record = work / f"infer-{n}-{d}.json"  # kept, so a rerun with --work reuses the jobs
                if not (out / "_SUCCESS").exists() or not record.exists():
                    record.write_text(json.dumps(infer(inp, model, out, work / f"infer-{n}-{d}.log")))
                results[f"infer {label} {d}"] = json.loads(record.read_text())
                jobs.append(out)
            dates = [mcp.DATES["d0"], mcp.DATES["d1"]] if args.input == "tif" else None
            runs = [change(jobs, work / f"change-{n}", dates, work / f"change-{n}.log") for _ in range(args.rounds)]
            results[f"change {label}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            r = results[f"change {label}"]
            print(f"{label}: {n} x {n} windows; vision change peak RSS {r['rss_kib'] / 1024:.0f} MiB, "
                  f"{r['elapsed_s']:.2f} s in the run, {r['wall_s']:.2f} s wall", flush=True)
        small, big = results["change 1x"], results["change 4x"]
        print(f"\n1. peak RSS of vision change, 4x area / 1x: {big['rss_kib'] / small['rss_kib']:.3f}   goal < 1.2")
        inf = results["infer 4x d1"]
        for what in ("elapsed_s", "wall_s"):
            c = big["windows"] / big[what]
            i = inf["windows"] / inf[what]
            how = "in the run" if what == "elapsed_s" else "wall clock"
            print(f"2. windows/s ({how}): vision change {c:,.0f}, vision infer {i:,.0f}: ratio {c / i:.1f}"
                  "   goal >= 10" + ("" if args.model else " (tiny stand-in model: a lower bound)"))
        (work / "change_bench.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
