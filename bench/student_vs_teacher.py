"""A distilled one-pass student against its 8-view teacher, side by side in one run.

Prints, for each round, the chips/s of `vision infer` on a folder of real EuroSAT JPEG chips
(each model at `vision infer`'s own CPU batch: 64 chips one pass, 8 chips of 8 views) and of a
bare ONNX Runtime session on preloaded tensors, student then teacher, and the student's
speed-up over the teacher in that round; then the median speed-ups, both models' accuracy on
the test-split chips of the folder (the same for every round), and how far apart the two are
in a paired comparison: the chips only one of them gets right, and the exact McNemar p-value
(two-sided) of their difference, with its standard deviation in points. An accuracy gap well
inside that deviation is one this test split cannot tell from chance.

Rounds interleave the two models, so that the host's drifting speed (these machines are
shared) falls on both alike. Issue 16's goal: ``vision infer`` student / teacher >= 6.

    python bench/student_vs_teacher.py --student runs/rgb-student/model.onnx \\
        --teacher runs/rgb-tta/model.onnx [--chips 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.infer_throughput import accuracy, bare_ort, extract_chips, preload, run_infer  # noqa: E402


def right(job: Path, chips: list[tuple[Path, int]]) -> np.ndarray:
    """Per chip of ``chips``: did the job's prediction name its class (``label``, an index)."""
    import pyarrow.parquet as pq

    label = {r["path"]: r["label"] for r in pq.read_table(job / "predictions.parquet").to_pylist()}
    return np.array([label.get(str(p)) == y for p, y in chips], dtype=bool)


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Chips only ``a`` gets right, only ``b`` does, and the exact two-sided McNemar p-value."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return only_a, only_b, p


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
        hits: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for k, m in models.items():
                res = run_infer([tmp / "chips"], m, tmp / f"job-{k}", batch[k])
                infer[k].append(len(chips) / res["manifest"]["throughput"]["elapsed_s"])
                acc[k] = accuracy(tmp / f"job-{k}", chips[:n_test], res["manifest"]["model"]["classes"])
                hits[k] = right(tmp / f"job-{k}", chips[:n_test])
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
        only_s, only_t, p = mcnemar(hits["student"], hits["teacher"])
        print(f"paired               : student {int(hits['student'].sum())} right, teacher "
              f"{int(hits['teacher'].sum())}; {only_t} chips only the teacher gets right, {only_s} only the student; "
              f"exact McNemar p = {p:.2f}; sd of the difference {100 * math.sqrt(only_s + only_t) / n_test:.2f} points")


if __name__ == "__main__":
    main()
