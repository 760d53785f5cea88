"""Subgroup audit: does the model work equally well for every group of samples?

Per group: accuracy, macro-F1, per-class recall and calibration (ECE, 15 bins), each with a
seeded percentile-bootstrap confidence interval, plus the worst group and the gap between
the best and the worst group. Groups come from:

- ``utm_zone``: the UTM zone of each GeoTIFF chip's CRS (EuroSAT MS: zones 29N-36N), a proxy
  for region, and so for landscape, season and sun angle;
- ``brightness_quartile``: quartiles of each chip's mean raw pixel value, computed from the
  audited data itself (haze, season, illumination, surface type all shift it);
- ``group``: the ``group`` column of a manifest (`SampleRef.group`);
- any other column of a manifest (CSV/Parquet).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.data.scene_source import sample_columns
from vision.data.sources import ChipSource, ManifestSource, read_table
from vision.errors import ConfigError, UnreadableInputError, VisionError
from vision.metrics import classification_report, softmax

DERIVED = ("utm_zone", "brightness_quartile", "group")
N_BINS = 15


@dataclass
class Grouping:
    """One group name per sample, and how the groups were made.

    Attributes:
        by: the ``--group-by`` name.
        groups: one group name per sample, in source order.
        description: how the groups were derived (for reports and model cards).
        meta: extra facts (quartile edges, EPSG codes).
    """

    by: str
    groups: list[str]
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


def group_samples(source: ChipSource, group_by: str) -> Grouping:
    """Group the samples of ``source`` by ``group_by`` (see the module docstring).

    Raises:
        ConfigError: the grouping does not apply to this data (no CRS, no such column).
    """
    if group_by == "utm_zone":
        return _utm_zones(source)
    if group_by == "brightness_quartile":
        return _brightness_quartiles(source)
    columns = sample_columns(source)  # labelled scenes: scene, acquired, aoi, label_source
    if columns is not None and group_by in columns:
        by_path = columns[group_by]
        return Grouping(group_by, [by_path.get(r.path, "(none)") for r in source.refs],
                        f"the windows' {group_by} (labelled scenes)")
    manifest = _manifest_of(source)
    if group_by == "group" and manifest is None:
        if all(r.group is None for r in source.refs):
            raise ConfigError("these samples carry no `group`; use a manifest with a group column, "
                              f"or one of {DERIVED[:2]}")
        return Grouping("group", [r.group or "(none)" for r in source.refs], "the samples' group")
    if manifest is None:
        raise ConfigError(f"--group-by {group_by!r}: not one of {list(DERIVED)}, and the data is not a "
                          "manifest with such a column")
    return _manifest_column(source, manifest, group_by)


def _manifest_of(source: ChipSource) -> ManifestSource | None:
    while not isinstance(source, ManifestSource) and hasattr(source, "parent"):
        source = source.parent
    return source if isinstance(source, ManifestSource) else None


def _manifest_column(source: ChipSource, manifest: ManifestSource, column: str) -> Grouping:
    rows = read_table(manifest.manifest)
    if rows and column not in rows[0]:
        raise ConfigError(f"{manifest.manifest}: no column {column!r} (columns: {list(rows[0])}; "
                          f"derived groupings: {list(DERIVED[:2])})")
    base = manifest.manifest.parent
    by_path: dict[str, str] = {}
    for r in rows:
        p = Path(str(r["path"]))
        value = r.get(column)
        by_path[str(p if p.is_absolute() else base / p)] = "(none)" if value in (None, "") else str(value)
    return Grouping(column, [by_path.get(r.path, "(none)") for r in source.refs],
                    f"manifest column {column!r} of {manifest.manifest.name}")


def utm_zone_name(epsg: int | None) -> str:
    """``29N`` for EPSG:32629, ``33S`` for EPSG:32733; ``EPSG:xxxx`` for other CRSs."""
    if epsg is None:
        return "no EPSG code"
    if 32601 <= epsg <= 32660:
        return f"{epsg - 32600}N"
    if 32701 <= epsg <= 32760:
        return f"{epsg - 32700}S"
    return f"EPSG:{epsg}"


def _utm_zones(source: ChipSource) -> Grouping:
    from vision.raster import open_raster

    groups, epsgs = [], {}
    for r in source.refs:
        try:
            with open_raster(r.path) as ds:
                crs = ds.crs
        except UnreadableInputError as exc:
            raise ConfigError(f"--group-by utm_zone needs georeferenced GeoTIFF chips: {exc}") from exc
        if crs is None:
            raise ConfigError(f"--group-by utm_zone: {r.path} has no CRS")
        epsg = crs.to_epsg()
        name = utm_zone_name(epsg)
        epsgs[name] = f"EPSG:{epsg}" if epsg else str(crs)
        groups.append(name)
    return Grouping("utm_zone", groups, "UTM zone of each chip's CRS (a proxy for region)",
                    {"crs": dict(sorted(epsgs.items()))})


def brightness(source: ChipSource) -> np.ndarray:
    """Mean raw pixel value of each chip over all bands and pixels."""
    return np.array([float(np.mean(source.read(i), dtype=np.float64)) for i in range(len(source))])


def _brightness_quartiles(source: ChipSource) -> Grouping:
    b = brightness(source)
    if not len(b):
        return Grouping("brightness_quartile", [], "quartiles of mean pixel value")
    edges = np.quantile(b, [0.25, 0.5, 0.75])
    q = np.searchsorted(edges, b, side="left")  # Q1: b <= edge1, ..., Q4: b > edge3
    names = ["Q1 darkest", "Q2", "Q3", "Q4 brightest"]
    bounds = [float(b.min()), *map(float, edges), float(b.max())]
    return Grouping(
        "brightness_quartile", [names[int(i)] for i in q],
        "quartiles of each chip's mean raw pixel value (all bands), computed on the audited data",
        {"edges": [round(e, 3) for e in bounds],
         "ranges": {n: [round(bounds[i], 3), round(bounds[i + 1], 3)] for i, n in enumerate(names)}})


# --- metrics with bootstrap intervals ----------------------------------------------------------


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _bootstrap(conf: np.ndarray, pred: np.ndarray, y: np.ndarray, k: int, n_boot: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1, ECE and per-class recall of ``n_boot`` resamples."""
    n = len(y)
    idx = rng.integers(0, n, size=(n_boot, n))
    correct = (pred == y).astype(np.float64)
    offs = np.arange(n_boot)[:, None]
    # ECE bins as in vision.metrics: a confidence c falls in bin b when b/15 < c <= (b+1)/15.
    bins = np.clip(np.ceil(conf * N_BINS).astype(np.int64) - 1, 0, N_BINS - 1)
    flat = (bins[idx] + N_BINS * offs).ravel()
    s_conf = np.bincount(flat, weights=conf[idx].ravel(), minlength=n_boot * N_BINS)
    s_corr = np.bincount(flat, weights=correct[idx].ravel(), minlength=n_boot * N_BINS)
    ece = np.abs(s_conf - s_corr).reshape(n_boot, N_BINS).sum(axis=1) / n
    cm = np.bincount((y[idx] * k + pred[idx] + k * k * offs).ravel(),
                     minlength=n_boot * k * k).reshape(n_boot, k, k).astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        r0 = np.nan_to_num(recall)
        f1 = np.where(precision + r0 > 0, 2 * precision * r0 / (precision + r0), 0.0)
        f1 = np.where(support > 0, f1, np.nan)
        macro = np.nanmean(f1, axis=1)
    return {"accuracy": correct[idx].mean(axis=1), "macro_f1": macro, "ece": ece, "recall": recall}


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    a = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return [round(float(lo), 6), round(float(hi), 6)]


def group_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], n_boot: int = 1000,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Point estimates and bootstrap intervals for one set of samples."""
    y = np.asarray(labels, dtype=np.int64)
    rep = classification_report(y, probs, list(classes), N_BINS)
    out: dict[str, Any] = {"n": int(len(y))}
    boot = (_bootstrap(probs.max(axis=1), probs.argmax(axis=1), y, len(classes), n_boot,
                       np.random.default_rng(seed)) if len(y) and n_boot > 0 else None)
    for key in ("accuracy", "macro_f1", "ece"):
        out[key] = {"value": round(float(rep[key]), 6),
                    "ci": _interval(boot[key], confidence) if boot is not None else None}
    out["recall"] = {}
    for i, c in enumerate(classes):
        pc = rep["per_class"][c]
        if pc["support"] == 0:
            continue
        out["recall"][c] = {"value": round(pc["recall"], 6), "support": pc["support"],
                            "ci": _interval(boot["recall"][:, i], confidence) if boot is not None else None}
    return out


def audit_predictions(probs: np.ndarray, labels: np.ndarray, grouping: Grouping, classes: Sequence[str],
                      n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """The subgroup audit of calibrated ``probs`` against ``labels`` (JSON-ready).

    Args:
        probs: ``N x K`` calibrated probabilities.
        labels: ``N`` true class indices.
        grouping: one group per sample (`group_samples`).
        n_boot: bootstrap resamples per group (0: no intervals).
        seed: bootstrap seed; the same seed gives the same intervals.
        confidence: interval coverage (percentile bootstrap).
    """
    groups = np.asarray(grouping.groups, dtype=object)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} samples")
    names = sorted({str(g) for g in groups}, key=_natural)
    per_group = {}
    for j, g in enumerate(names):
        m = groups == g
        per_group[g] = group_metrics(probs[m], labels[m], classes, n_boot, seed + 1 + j, confidence)
    report: dict[str, Any] = {
        "group_by": grouping.by, "grouping": grouping.description, "grouping_meta": grouping.meta,
        "classes": list(classes), "n": int(len(labels)),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": confidence, "method": "percentile"},
        "overall": group_metrics(probs, labels, classes, n_boot, seed, confidence),
        "groups": per_group,
    }
    report.update(_worst(report))
    return report


def _worst(report: dict[str, Any]) -> dict[str, Any]:
    groups = report["groups"]
    if not groups:
        return {"worst_group": {}, "gap": {}}
    worst: dict[str, Any] = {}
    gap: dict[str, float] = {}
    for key, low_is_bad in (("accuracy", True), ("macro_f1", True), ("ece", False)):
        vals = {g: m[key]["value"] for g, m in groups.items()}
        bad = min(vals, key=lambda g: vals[g]) if low_is_bad else max(vals, key=lambda g: vals[g])
        overall = report["overall"][key]["value"]
        worst[key] = {"group": bad, "value": vals[bad], "n": groups[bad]["n"],
                      "vs_overall": round(vals[bad] - overall, 6)}
        gap[key] = round(max(vals.values()) - min(vals.values()), 6)
    return {"worst_group": worst, "gap": gap}


def audit_model(model: str, data: str, group_by: str, batch_size: int = 256, n_boot: int = 1000,
                seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Run ``model`` (any form `vision evaluate` takes) on ``data`` and audit it by ``group_by``."""
    from training.evaluate import load_with_data

    m, src = load_with_data(model, data)
    grouping = group_samples(src, group_by)
    logits, labels = m.predict_logits(src, batch_size)
    report = audit_predictions(softmax(logits, m.temperature), labels, grouping, m.classes, n_boot, seed,
                               confidence)
    report.update({"model": model, "data": data, "temperature": m.temperature})
    return report


def registration_audit(group_by: str | None, source: ChipSource | None, probs: np.ndarray,
                       labels: np.ndarray, classes: Sequence[str], split: str, seed: int = 0
                       ) -> tuple[dict[str, Any] | None, str | None]:
    """The audit made at registration (recipe ``promotion.group_by``): ``(report, None)``, or
    ``(None, reason)`` when the grouping does not apply (training must still finish)."""
    if not group_by or source is None:
        return None, None if group_by is None else "no evaluation split"
    try:
        grouping = group_samples(source, group_by)
    except VisionError as exc:
        return None, f"--group-by {group_by}: {exc}"
    report = audit_predictions(probs, labels, grouping, classes, seed=seed)
    report["split"] = split
    return report, None


# --- display ------------------------------------------------------------------------------------


def _fmt(m: dict[str, Any] | None, pct: bool = True) -> str:
    if not m:
        return "-"
    scale = 100 if pct else 1
    v = f"{m['value'] * scale:.1f}" if pct else f"{m['value']:.3f}"
    if m.get("ci") is None:
        return v
    lo, hi = (x * scale for x in m["ci"])
    return f"{v} [{lo:.1f}, {hi:.1f}]" if pct else f"{v} [{lo:.3f}, {hi:.3f}]"


def render_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables: one row per group (accuracy, macro-F1, ECE, lowest recall), and per-class
    recall by group. Values in %, intervals in brackets."""
    from rich.table import Table

    conf = int(round(report["bootstrap"]["confidence"] * 100))
    t = Table(title=f"subgroups by {report['group_by']} ({report['n']} samples; "
                    f"{conf}% bootstrap CIs, {report['bootstrap']['n_boot']} resamples, seed "
                    f"{report['bootstrap']['seed']})")
    for col in ("group", "n", "accuracy %", "macro-F1 %", "ECE %", "lowest recall %"):
        t.add_column(col, justify="left" if col == "group" else "right")
    rows = [*report["groups"].items(), ("all", report["overall"])]
    for g, m in rows:
        low = min(m["recall"].items(), key=lambda kv: kv[1]["value"]) if m["recall"] else None
        t.add_row(g, str(m["n"]), _fmt(m["accuracy"]), _fmt(m["macro_f1"]), _fmt(m["ece"]),
                  f"{low[0]} {_fmt(low[1])}" if low else "-", end_section=g == rows[-2][0])
    r = Table(title="per-class recall % by group")
    r.add_column("class")
    for g, _ in rows:
        r.add_column(g, justify="right")
    for c in report["classes"]:
        r.add_row(c, *(_fmt(m["recall"].get(c)) for _, m in rows))
    return [t, r]


def summary_line(report: dict[str, Any]) -> str:
    """Worst group and gaps in one line."""
    w, gap = report.get("worst_group", {}), report.get("gap", {})
    if not w:
        return "no groups"
    acc = w["accuracy"]
    return (f"worst group by accuracy: {acc['group']} {acc['value'] * 100:.2f}% (n={acc['n']}, "
            f"{acc['vs_overall'] * 100:+.2f} pts vs overall); best-worst gap: accuracy "
            f"{gap['accuracy'] * 100:.2f} pts, macro-F1 {gap['macro_f1'] * 100:.2f} pts, "
            f"ECE {gap['ece'] * 100:.2f} pts")
