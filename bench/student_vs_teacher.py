"""A distilled one-pass student against its 8-view teacher, side by side in one run.

Prints, for each round, the chips/s of `vision infer` on a folder of real EuroSAT JPEG chips
(each model at `vision infer`'s own CPU batch: 64 chips one pass, 8 chips of 8 views) and of a
bare ONNX Runtime session on preloaded tensors, student then teacher, and the student's
speed-up over the teacher in that round; then the median speed-ups and both models'
accuracy on the test-split chips of the folder (the same for every round).

Rounds interleave the two models, so that the host's drifting speed (these machines are
shared) falls on both alike. Issue 16's goal: ``vision infer`` student / teacher >= 6.

    python bench/student_vs_teacher.py --student runs/rgb-student/model.onnx \\
        --teacher runs/rgb-tta/model.onnx [--chips 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.infer_throughput import accuracy, bare_ort, extract_chips, preload, run_infer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, default=REPO / "runs" / "rgb-student" / "model.onnx")
    ap.add_argument("--teacher", type=Path, default=REPO / "runs" / "rgb-tta" / "model.onnx")
    ap.add_argument("--chips", type=int, default=4000, help="chips in the folder (test split first)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median speed-up)")
    args = ap.parse_args()
    for m in (args.student, args.teacher):
        if not m.is_file():
            raise SystemExit(f"{m}: no such model (train the recipes first: see the student recipe's comments)")
    from inference.model import load_model_info
    from inference.session import default_batch_size

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    models = {"student": args.student, "teacher": args.teacher}
    infos = {k: load_model_info(m) for k, m in models.items()}
    batch = {k: default_batch_size("cpu", i.views) for k, i in infos.items()}
    with tempfile.TemporaryDirectory(prefix="vision-bench-") as tmp_s:
        tmp = Path(tmp_s)
        chips, n_test = extract_chips(args.chips, tmp / "chips")
        x = preload(chips)
        print(f"# {len(chips)} EuroSAT RGB chips ({n_test} from the test split); {os.cpu_count()} CPUs; "
              + "; ".join(f"{k} {m} ({infos[k].views} view(s), batch {batch[k]})" for k, m in models.items()),
              flush=True)
        infer: dict[str, list[float]] = {k: [] for k in models}
        bare: dict[str, list[float]] = {k: [] for k in models}
        acc: dict[str, float] = {}
        for r in range(args.rounds):
            for k, m in models.items():
                res = run_infer([tmp / "chips"], m, tmp / f"job-{k}", batch[k])
                infer[k].append(len(chips) / res["manifest"]["throughput"]["elapsed_s"])
                acc[k] = accuracy(tmp / f"job-{k}", chips[:n_test], res["manifest"]["model"]["classes"])
                bare[k].append(bare_ort(m, x, batch[k]))
            print(f"round {r + 1}: vision infer student {infer['student'][-1]:,.0f} / teacher "
                  f"{infer['teacher'][-1]:,.0f} chips/s = {infer['student'][-1] / infer['teacher'][-1]:.2f}x; "
                  f"bare ORT student {bare['student'][-1]:,.0f} / teacher {bare['teacher'][-1]:,.0f} chips/s "
                  f"= {bare['student'][-1] / bare['teacher'][-1]:.2f}x", flush=True)

        def speedup(d: dict[str, list[float]]) -> float:
            return float(np.median([s / t for s, t in zip(d["student"], d["teacher"], strict=True)]))

        print("\n== student / teacher ==")
        print(f"vision infer chips/s : {speedup(infer):.2f}x (student median {np.median(infer['student']):,.0f}, "
              f"teacher {np.median(infer['teacher']):,.0f})   goal >= 6")
        print(f"bare ORT chips/s     : {speedup(bare):.2f}x (student median {np.median(bare['student']):,.0f}, "
              f"teacher {np.median(bare['teacher']):,.0f})")
        print(f"vision infer / bare  : student {np.median(infer['student']) / np.median(bare['student']):.2f}, "
              f"teacher {np.median(infer['teacher']) / np.median(bare['teacher']):.2f}")
        print(f"test-split accuracy  : student {acc['student']:.4f}, teacher {acc['teacher']:.4f} "
              f"({n_test} chips; difference {100 * (acc['student'] - acc['teacher']):+.2f} points)")


if __name__ == "__main__":
    main()
