"""Accuracy of `vision change` against the known truth of a pair from `bench/make_change_pairs.py`.

Runs `vision change JOB_BEFORE JOB_AFTER` (in-process, default --min-confidence) and prints:

1. precision and recall of ``appeared`` (and ``disappeared``) for the class of interest against
   the truth (goal: precision >= 0.95 at the default threshold), and the curve over
   --min-confidence (the rules re-applied to the same aligned rows, `inference.change.rules`);
2. the number of ``not_assessed`` windows against the number of windows made cloudy or nodata
   in either date (goal: equal, and the same windows);
3. with ``--other-after JOB [--other-truth TRUTH]`` (the after date in another CRS, e.g.
   ``d1-3857``): the same for that pair, and the share of its windows whose outcome equals the
   same-grid pair's at the window's centre (goal: >= 0.99).

The truth file is a ``truth-*.parquet`` of `bench/make_change_pairs.py` (one row per window of the
later grid). With the reference model:

    python bench/make_change_pairs.py pairs/
    for d in d0 d1 d1-3857; do vision infer pairs/$d.item.json --model MODEL --out jobs/$d; done
    python bench/change_accuracy.py jobs/d0 jobs/d1 pairs/truth-d0-d1.parquet \\
        --other-after jobs/d1-3857 --other-truth pairs/truth-d0-d1-3857.parquet

With the after date in another CRS, classifying it on the before date's grid compares the same
ground (``vision infer pairs/d1-3857.item.json --grid pairs/d0.tif ...``; the truth is then
``truth-d0-d1.parquet``).

(STAC items carry the acquisition time and the SCL cloud layer; a GeoTIFF input needs --dates
and marks no window cloudy, so check 2 then fails by design.) With ``--simulate-jobs`` of
`make_change_pairs.py` the same runs on simulated jobs (no model).

Usage:
    python bench/change_accuracy.py JOB_BEFORE JOB_AFTER TRUTH [--classes AnnualCrop]
        [--other-after JOB --other-truth TRUTH] [--dates D1,D2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def run(before: str, after: str, out: Path, classes: list[str], dates: list[str] | None) -> Path:
    from rich.console import Console

    from inference.change.run import ChangeOptions, run_change

    run_change(ChangeOptions(jobs=(before, after), out=out, classes=tuple(classes),
                             dates=tuple(dates) if dates else None, progress=False, report=False),
               console=Console(stderr=True, quiet=True))
    return out / "changes.parquet"


def _read(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.ParquetFile(path).read(columns=columns)
    return {c: np.array(t.column(c).to_pylist(), dtype=object) for c in columns}


def _truth(path: Path) -> tuple[dict[tuple[int, int], dict[str, Any]], int]:
    import pyarrow.parquet as pq

    t = pq.ParquetFile(path).read()
    n = len(json.loads(t.schema.metadata[b"dates"]))
    rows = t.to_pylist()
    return {(r["row_off"], r["col_off"]): r for r in rows}, n


def outcomes(changes: dict[str, np.ndarray], classes: list[str], interest: list[str], p_min: float) -> np.ndarray:
    """The outcome (transition, or status) of every row with ``p_min`` as --min-confidence."""
    from inference.change import rules

    def code(status: np.ndarray) -> np.ndarray:
        return np.array([rules.STATUS_CODES.get(s, rules.SRC_MISSING) if s != "missing" else rules.SRC_MISSING
                         for s in status], np.int8)

    def labels(names: np.ndarray) -> np.ndarray:
        return np.array([classes.index(c) if c is not None else -1 for c in names], np.int64)

    def probs(p: np.ndarray) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in p], np.float32)

    out = rules.pair_outcome(code(changes["status_before"]), labels(changes["class_before"]),
                             probs(changes["p_before"]), code(changes["status_after"]),
                             labels(changes["class_after"]), probs(changes["p_after"]),
                             rules.interest_mask(classes, interest), p_min)
    names = np.array([rules.OUT_STATUSES[s] for s in out.status], dtype=object)
    trans = np.array([rules.TRANSITIONS[t] if t >= 0 else None for t in out.transition], dtype=object)
    return np.where(out.status == rules.OUT_OK, trans, names)


def score(changes_path: Path, truth_path: Path, interest: list[str]) -> dict[str, Any]:
    """Precision/recall per threshold and the not-assessed check of one change table."""
    import pyarrow.parquet as pq

    from inference.change.rules import DEFAULT_MIN_CONFIDENCE

    meta = pq.ParquetFile(changes_path).schema_arrow
    assert "transition" in meta.names
    ch = _read(changes_path, ["row_off", "col_off", "status", "transition", "status_before", "status_after",
                              "class_before", "class_after", "p_before", "p_after"])
    manifest = json.loads((changes_path.parent / "change_manifest.json").read_text())
    classes = manifest["classes"]
    truth, n_dates = _truth(truth_path)
    last = n_dates - 1
    keys = list(zip(ch["row_off"].tolist(), ch["col_off"].tolist(), strict=True))
    t = [truth.get(k) for k in keys]
    missing = sum(r is None for r in t)
    not_seen = np.array([r is None or any(r[f"cloudy_{d}"] or r[f"nodata_{d}"] for d in (0, last)) for r in t])

    def truth_of(kind: str) -> np.ndarray:
        out = np.zeros(len(t), bool)
        for k, r in enumerate(t):
            if r is None or not_seen[k]:
                continue
            b, a = r["class_0"] in interest, r[f"class_{last}"] in interest
            out[k] = (not b and a) if kind == "appeared" else (b and not a)
        return out

    curve = []
    for p in sorted({*THRESHOLDS, DEFAULT_MIN_CONFIDENCE}):
        o = outcomes(ch, classes, interest, p)
        row: dict[str, Any] = {"min_confidence": p, "uncertain": int((o == "uncertain").sum())}
        for kind in ("appeared", "disappeared"):
            pred, true = o == kind, truth_of(kind)
            tp = int((pred & true).sum())
            row[kind] = {"predicted": int(pred.sum()), "true": int(true.sum()), "tp": tp,
                         "precision": round(tp / pred.sum(), 4) if pred.sum() else None,
                         "recall": round(tp / true.sum(), 4) if true.sum() else None}
        curve.append(row)
    na = ch["status"] == "not_assessed"
    return {"windows": len(keys), "truth_rows_missing": missing, "not_assessed": int(na.sum()),
            "truth_cloudy_or_nodata": int(not_seen.sum()), "not_assessed_windows_differ": int((na != not_seen).sum()),
            "default": next(r for r in curve if r["min_confidence"] == DEFAULT_MIN_CONFIDENCE), "curve": curve}


def agreement(same: Path, other: Path) -> dict[str, Any]:
    """Share of the other-grid rows whose outcome equals the same-grid row at their centre."""
    from pyproj import Transformer

    a = _read(same, ["row_off", "col_off", "minx", "maxy", "maxx", "width", "crs", "status", "transition"])
    b = _read(other, ["minx", "miny", "maxx", "maxy", "crs", "status", "transition"])
    ps = float((a["maxx"][0] - a["minx"][0]) / a["width"][0])
    x0 = float(min(a["minx"] - a["col_off"] * ps))
    y0 = float(max(a["maxy"] + a["row_off"] * ps))
    win = int(a["width"][0])
    index = {(int(r), int(c)): (t if s == "ok" else s)
             for r, c, s, t in zip(a["row_off"], a["col_off"], a["status"], a["transition"], strict=True)}
    tr = Transformer.from_crs(b["crs"][0], a["crs"][0], always_xy=True)
    x, y = tr.transform(((b["minx"] + b["maxx"]) / 2).astype(float), ((b["miny"] + b["maxy"]) / 2).astype(float))
    col = (np.floor((np.asarray(x) - x0) / ps / win) * win).astype(int)
    row = (np.floor((y0 - np.asarray(y)) / ps / win) * win).astype(int)
    same_out = [index.get((int(r), int(c))) for r, c in zip(row, col, strict=True)]
    other_out = [t if s == "ok" else s for s, t in zip(b["status"], b["transition"], strict=True)]
    pairs = [(s, o) for s, o in zip(same_out, other_out, strict=True) if s is not None]
    agree = sum(s == o for s, o in pairs)
    assessed = [(s, o) for s, o in pairs if "not_assessed" not in (s, o)]
    return {"windows": len(other_out), "matched": len(pairs), "agree": agree,
            "agreement": round(agree / len(pairs), 4) if pairs else None,
            "agreement_where_both_assessed": round(sum(s == o for s, o in assessed) / len(assessed), 4)
            if assessed else None}


def _print(name: str, s: dict[str, Any]) -> None:
    d = s["default"]
    print(f"\n== {name}: {s['windows']} windows")
    for kind in ("appeared", "disappeared"):
        k = d[kind]
        print(f"{kind:11s} at --min-confidence {d['min_confidence']}: precision {k['precision']} recall {k['recall']} "
              f"({k['tp']} of {k['predicted']} predicted, {k['true']} true)")
    ok = "OK" if s["not_assessed"] == s["truth_cloudy_or_nodata"] and not s["not_assessed_windows_differ"] else "DIFFER"
    print(f"not_assessed {s['not_assessed']} vs cloudy or nodata in either date {s['truth_cloudy_or_nodata']} "
          f"({s['not_assessed_windows_differ']} windows differ): {ok}")
    print("curve: min_confidence  appeared precision/recall  disappeared precision/recall  uncertain")
    for r in s["curve"]:
        print(f"  {r['min_confidence']:<5}  {r['appeared']['precision']!s:>7} / {r['appeared']['recall']!s:<7}"
              f"  {r['disappeared']['precision']!s:>7} / {r['disappeared']['recall']!s:<7}  {r['uncertain']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("truth", type=Path)
    ap.add_argument("--classes", default="AnnualCrop")
    ap.add_argument("--other-after")
    ap.add_argument("--other-truth", type=Path)
    ap.add_argument("--dates", help="for jobs that do not record acquisition times: D_BEFORE,D_AFTER")
    ap.add_argument("--out", type=Path, help="keep the change folders here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    interest = [c for c in args.classes.split(",") if c]
    dates = args.dates.split(",") if args.dates else None
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        same = run(args.before, args.after, root / "same_grid", interest, dates)
        result: dict[str, Any] = {"same_grid": score(same, args.truth, interest)}
        _print("same grid", result["same_grid"])
        if args.other_after:
            other = run(args.before, args.other_after, root / "other_crs", interest, dates)
            if args.other_truth:
                result["other_crs"] = score(other, args.other_truth, interest)
                _print("after date in another CRS", result["other_crs"])
            result["agreement"] = agreement(same, other)
            g = result["agreement"]
            print(f"\nother-CRS pair vs same-grid pair: {g['agree']} of {g['matched']} windows have the same outcome "
                  f"({g['agreement']}; where both assessed: {g['agreement_where_both_assessed']}); goal >= 0.99")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
