"""`vision data check` for labelled scenes, STAC label catalogs and chip folders.

Labels over scenes (``vision data check SCENE... --labels FILE``, a STAC label catalog, a
recipe whose ``data.source`` is ``scenes`` or ``stac``) are sampled exactly as training samples
them (`vision.data.labelled.build`), and the report lists, each with its reason and counted
by kind:

- errors: invalid or missing geometry (``geometry``), no or an unknown class (``class``), a
  label file whose CRS puts it over no scene (``crs``), a window labelled with two classes
  (``conflict``), the same place twice on the same date (``duplicate-place``);
- warnings: labels outside every scene (``outside``), polygons smaller than one window
  (``too-small``), polygons no window fits in (``no-window``), labels all of whose windows
  were skipped (``windows-skipped``), refused scenes (``refused-scene``), skipped windows
  (``edge``, ``nodata``, ``cloudy``, ``buffer``, ``duplicate``), and the data's own warnings
  (``data``: radiometry assumptions, a declared band order that does not fit the pixels) and
  the split's (``split``: a random split of clustered labels);

and the split: its method and the smallest distance from a train window to a val/test one.

A chip folder (``vision data chips``' output) is scanned as a manifest, then its rows are
checked against the chips (CRS and bounds), and the same distances and duplicates reported;
``chips.json`` adds the labels that were skipped when it was written.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from vision.data.check.report import CheckReport, Issue, by_kind
from vision.data.scene_source import LabelledData
from vision.data.sources import read_table
from vision.data.splits import Footprint, distances, metric_frames, polygons_in
from vision.errors import UnreadableInputError
from vision.raster import open_raster

#: Label problem kinds that are errors (the others are warnings).
ERROR_KINDS = frozenset({"geometry", "class", "crs", "conflict", "duplicate-place"})
#: Two windows this much the same place (intersection over union) are duplicates.
SAME_PLACE_IOU = 0.5


def place_duplicates(fps: Sequence[Footprint], dates: Sequence[str | None], features: Sequence[str],
                     names: Sequence[str], splits: Sequence[str]) -> list[Issue]:
    """Pairs of windows of different labels covering the same place (IoU >= 0.5): an error on
    the same date, a warning when a date is unknown; other dates are a time series, fine."""
    out: list[Issue] = []
    frames = metric_frames(fps)
    groups: dict[tuple[str, float], list[int]] = {}
    for k, fr in enumerate(frames):
        groups.setdefault(fr, []).append(k)
    for (frame, _f), idx in groups.items():
        polys = polygons_in(fps, idx, frame)
        tree = shapely.STRtree(polys)
        a, b = tree.query(polys, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        if not len(a):
            continue
        inter = shapely.area(shapely.intersection(polys[a], polys[b]))
        union = shapely.area(polys[a]) + shapely.area(polys[b]) - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-300), 0.0)
        for i, j, v in zip(a[iou >= SAME_PLACE_IOU], b[iou >= SAME_PLACE_IOU], iou[iou >= SAME_PLACE_IOU], strict=True):
            ki, kj = idx[int(i)], idx[int(j)]
            if features[ki] == features[kj]:
                continue  # overlapping windows of one label (a dense grid) are not duplicates
            di, dj = dates[ki], dates[kj]
            if di and dj and di != dj:
                continue
            same = bool(di and dj)
            out.append(Issue("duplicate-place" if same else "possible-duplicate", names[kj],
                             f"the same place as {names[ki]} (overlap {v:.0%}), "
                             + (f"the same date {di}" if same else "a date unknown"), splits[kj]))
    return out


def _issue_kinds(data: LabelledData) -> tuple[list[Issue], list[Issue]]:
    errors: list[Issue] = []
    warnings: list[Issue] = []
    for q in data.label_problems:
        issue = Issue(q.kind, f"{q.source}#{q.feature}", f"{q.reason}" + (f" (class {q.label})" if q.label else ""))
        (errors if q.kind in ERROR_KINDS else warnings).append(issue)
    for p in data.scene_problems:
        warnings.append(Issue("refused-scene", p.path, p.reason))
    for s in data.window_skips:
        c = s.candidate
        issue = Issue(s.kind, f"{data.scenes[c.scene].id}#r{c.row}c{c.col}",
                      f"{s.reason} (label {c.feature_id} of {c.source}, class {c.label})")
        (errors if s.kind in ERROR_KINDS else warnings).append(issue)
    for w in data.warnings:
        kind = "split" if w.startswith(("random split", "split not made")) else "data"
        warnings.append(Issue(kind, data.kind, w))
    return errors, warnings


def spatial_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The split's method and its distances, for `CheckReport.spatial`."""
    rule = report.get("rule", {})
    return {"method": rule.get("method"), "block_m": rule.get("block_m"), "buffer_m": rule.get("buffer_m"),
            "preset": report.get("preset"), "blocks": report.get("blocks"),
            "buffer_dropped": report.get("buffer_dropped"), "distances": report.get("distances", {})}


def check_labelled_data(data: LabelledData, inputs: Sequence[str], seconds: float = 0.0) -> CheckReport:
    """The report of a sampled labelled set (see the module docstring)."""
    errors, warnings = _issue_kinds(data)
    cols = data.columns()
    names = [data.ref_path(k) for k in range(len(data.samples))]
    dates = [None if v == "(none)" else v for v in cols["acquired"]]
    dups = place_duplicates([s.footprint for s in data.samples], dates,
                            [f"{s.source}#{s.feature_id}" for s in data.samples], names, data.splits)
    errors += [d for d in dups if d.kind in ERROR_KINDS]
    warnings += [d for d in dups if d.kind not in ERROR_KINDS]
    split_names = data.split_names()
    counts = {sp: Counter(s.label for s, x in zip(data.samples, data.splits, strict=True) if x == sp)
              for sp in split_names}
    class_counts = {sp: {c: counts[sp][c] for c in data.classes} for sp in split_names}
    h, w = data.options.size
    dtype = str(data.pixels[0].dtype) if data.pixels and data.pixels[0] is not None else None
    return CheckReport(
        inputs=list(inputs), splits=split_names, classes=list(data.classes), class_counts=class_counts,
        chips=len(data.samples), expected_bands=len(data.bands), expected_dtype=dtype, expected_size=[h, w],
        imbalance={sp: _ratio(class_counts[sp]) for sp in split_names}, imbalance_threshold=10.0,
        errors=by_kind(errors), warnings=by_kind(warnings), seconds=seconds,
        spatial=spatial_summary(data.split_report), labelled=data.lineage()["labelled"]["skipped_labels"]["by_kind"])


def _ratio(per_class: dict[str, int]) -> float | None:
    n = [v for v in per_class.values() if v > 0]
    return max(n) / min(n) if n else None


# --- chip folders -----------------------------------------------------------------------------


def _float(v: object) -> float | None:
    try:
        f = float(str(v))
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def chip_folder_rules(manifest: Path) -> tuple[list[Issue], list[Issue], dict[str, Any]]:
    """The rows of a chip folder's manifest against its chips, its split distances and
    duplicates, and what ``chips.json`` says was skipped.

    Returns:
        ``(errors, warnings, spatial)``.
    """
    rows = read_table(manifest)
    base = manifest.parent
    errors: list[Issue] = []
    warnings: list[Issue] = []
    fps: list[Footprint] = []
    keep: list[dict[str, object]] = []
    for r in rows:
        path = str(r.get("path", ""))
        split = str(r.get("split") or "")
        b = [_float(r.get(k)) for k in ("minx", "miny", "maxx", "maxy")]
        crs = str(r.get("crs") or "")
        if None in b or not crs:
            errors.append(Issue("place", path, "row without bounds (minx..maxy) or crs", split))
            continue
        minx, miny, maxx, maxy = (float(v) for v in b if v is not None)
        try:
            with open_raster(base / path) as ds:
                ok_crs = ds.crs is not None and ds.crs == ds.crs.from_user_input(crs)
                cb = ds.bounds
        except UnreadableInputError:
            continue  # the scan reports unreadable chips
        tol = 1e-6 * max(1.0, abs(maxx - minx), abs(maxy - miny))
        if not ok_crs:
            errors.append(Issue("place", path, f"the chip's CRS is not the row's {crs}", split))
        elif max(abs(cb.left - minx), abs(cb.bottom - miny), abs(cb.right - maxx), abs(cb.top - maxy)) > tol:
            errors.append(Issue("place", path, f"the chip's bounds {tuple(round(v, 3) for v in cb)} are not the row's "
                                               f"({minx:.3f}, {miny:.3f}, {maxx:.3f}, {maxy:.3f})", split))
        fps.append(Footprint(crs, minx, miny, maxx, maxy))
        keep.append(r)
    splits = [str(r.get("split") or "") for r in keep]
    dates = [str(r.get("acquired") or "")[:10] or None for r in keep]
    feats = [f"{r.get('label_source', '')}#{r.get('feature', '') or r.get('path')}" for r in keep]
    dups = place_duplicates(fps, dates, feats, [str(r.get("path")) for r in keep], splits)
    errors += [d for d in dups if d.kind in ERROR_KINDS]
    warnings += [d for d in dups if d.kind not in ERROR_KINDS]
    spatial: dict[str, Any] = {"distances": distances(fps, splits)}
    lineage = manifest.parent / "chips.json"
    if lineage.is_file():
        try:
            info = json.loads(lineage.read_text())["labelled"]
        except (json.JSONDecodeError, KeyError, TypeError):
            warnings.append(Issue("data", str(lineage), "not the lineage vision data chips writes"))
        else:
            for q in info.get("skipped_labels", {}).get("labels", []):
                kind = str(q.get("kind"))
                (errors if kind in ERROR_KINDS else warnings).append(
                    Issue(kind, f"{q.get('source')}#{q.get('feature')}", str(q.get("reason"))))
            warnings += [Issue("split" if str(w).startswith("random split") else "data", "chips.json", str(w))
                         for w in info.get("warnings", [])]
            rule = info.get("split", {}).get("rule", {})
            spatial.update({"method": rule.get("method"), "block_m": rule.get("block_m"),
                            "buffer_m": rule.get("buffer_m")})
    return errors, warnings, spatial
