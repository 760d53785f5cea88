"""How a `vision.data.labelled.LabelledSpec` becomes a `LabelledData`: the steps of
`vision.data.labelled.build` (inputs, planning, windows, reading, dedupe, split, what became of
every label), kept apart from the spec and its entry points."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from rich.console import Console
from shapely.geometry.base import BaseGeometry

from vision.clouds import S2Cloudless
from vision.data.labels import LabelFeature, LabelProblem, LabelSet, read_labels
from vision.data.sampling import Candidate, FeatureKey, WindowSkip, background_windows, sample_scene
from vision.data.scene_source import LabelledData, Sample
from vision.data.scenes import (
    SceneInfo,
    SceneInput,
    SceneProblem,
    expand_scenes,
    plan_scenes,
    read_windows,
    scene_bands,
    scene_cloud_method,
)
from vision.data.sources import read_table
from vision.data.splits import Footprint, SplitRule, assign, clustering_warning, distances
from vision.data.stac_labels import read_label_catalog
from vision.errors import ConfigError
from vision.geo import aoi_in_scene, assign_windows, footprint, read_aoi, reproject, window_polygons
from vision.radiometry import Radiometry

if TYPE_CHECKING:
    from vision.data.labelled import LabelledSpec

DEFAULT_CLASS_FIELD = "class"


def _reproject_many(geoms: Sequence[BaseGeometry], src: CRS, dst: CRS) -> list[BaseGeometry]:
    """Geometries in another CRS, edges densified as `vision.geo.reproject` does (one transformer)."""
    if src == dst:
        return list(geoms)
    arr = np.asarray(geoms, dtype=object)
    b = shapely.bounds(arr)
    step = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 64.0
    areal = np.isin(shapely.get_type_id(arr), (3, 6)) & (step > 0)
    if areal.any():
        arr[areal] = shapely.segmentize(arr[areal], step[areal])
    tr = Transformer.from_crs(src, dst, always_xy=True)
    out = shapely.transform(arr, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return list(out)


class _LabelIndex:
    """One label file's geometries in its CRS, with a spatial index, and their reprojections."""

    def __init__(self, ls: LabelSet):
        self.ls = ls
        self.geoms = [f.geometry for f in ls.features]
        self.tree = shapely.STRtree(self.geoms) if self.geoms else None
        self.by_crs: dict[str, dict[int, BaseGeometry]] = {}

    def over(self, scene_crs: str, region: BaseGeometry) -> list[tuple[int, LabelFeature, BaseGeometry]]:
        """Features whose geometry meets ``region`` (in the scene's CRS), reprojected to it."""
        if self.tree is None:
            return []
        dst = CRS.from_user_input(scene_crs)
        area = reproject(region, dst, self.ls.crs)
        if not np.isfinite(shapely.get_coordinates(area)).all():
            return []
        hits = sorted(int(k) for k in self.tree.query(area, predicate="intersects"))
        cache = self.by_crs.setdefault(scene_crs, {})
        todo = [k for k in hits if k not in cache]
        if todo:
            for k, g in zip(todo, _reproject_many([self.geoms[k] for k in todo], self.ls.crs, dst), strict=True):
                cache[k] = g
        return [(k, self.ls.features[k], cache[k]) for k in hits
                if np.isfinite(shapely.get_coordinates(cache[k])).all()]


@dataclass
class _ChipRow:
    """A manifest row: one chip, one label."""

    label: str
    group: str | None
    source: str
    feature: str


class Builder:
    def __init__(self, spec: LabelledSpec):
        self.spec = spec
        self.opts = spec.sampling
        self.inputs: list[SceneInput] = []
        self.label_sets: list[LabelSet] = []
        self.bound: dict[int, int] = {}
        self.chips: dict[int, _ChipRow] = {}
        self.scene_problems: list[SceneProblem] = []
        self.label_problems: list[LabelProblem] = []
        self.warnings: list[str] = []
        self.skips: list[WindowSkip] = []
        self.band_order: list[str] = []

    # --- 1. inputs ------------------------------------------------------------------------

    def _inputs(self) -> dict[str, Any]:
        s = self.spec
        info: dict[str, Any] = {}
        if s.kind == "stac":
            if not s.catalog:
                raise ConfigError("data.source stac needs the catalog JSON (data.root)")
            cat = read_label_catalog(s.catalog, s.class_field, s.classes, use_splits=s.split is None)
            self.inputs += cat.inputs
            self.label_sets += cat.labels
            self.bound.update(cat.bound)
            self.scene_problems += cat.problems
            self.warnings += cat.warnings
            self.band_order = list(cat.warnings)
            info["catalog"] = str(s.catalog)
            info["ml_aoi_splits"] = cat.splits
        else:
            for split, entries in s.scenes:
                found, probs = expand_scenes(entries, s.base, split)
                self.inputs += found
                self.scene_problems += probs
            for f in s.labels:
                self.label_sets.append(read_labels(s.path(f), s.class_field or DEFAULT_CLASS_FIELD, s.classes,
                                                   s.id_field))
            info["scenes"] = {sp or "all": list(g) for sp, g in s.scenes}
        info["labels"] = [{"path": ls.path, "crs": ls.crs.to_string(), "features": len(ls.features) + len(ls.problems),
                           "usable": len(ls.features)} for ls in self.label_sets if self.spec.kind != "stac"]
        for m in s.manifests:
            self._manifest(s.path(m))
        info["manifests"] = [str(s.path(m)) for m in s.manifests]
        for ls in self.label_sets:
            self.label_problems += ls.problems
        if not self.inputs:
            raise ConfigError("no usable scene: " + ("; ".join(f"{p.path}: {p.reason}" for p in self.scene_problems[:5])
                                                      or "data.scenes names none"))
        return info

    def _manifest(self, path: Path) -> None:
        rows = read_table(path)
        if rows and not {"path", "label"} <= set(rows[0]):
            raise ConfigError(f"{path}: a chip manifest needs the columns path,label")
        for k, r in enumerate(rows):
            p = Path(str(r["path"]))
            p = p if p.is_absolute() else path.parent / p
            label = str(r.get("label") or "").strip()
            if "class_name" in r and label.isdigit() and r.get("class_name"):
                label = str(r["class_name"])
            feature = f"row {k + 2}"
            if not label or (self.spec.classes is not None and label not in self.spec.classes):
                why = "no label" if not label else f"class {label!r} is not one of the classes"
                self.label_problems.append(LabelProblem(path.name, feature, label or None, "class", why))
                continue
            if not p.is_file():
                self.label_problems.append(LabelProblem(path.name, feature, label, "scene", f"chip {p} not found"))
                continue
            split = str(r["split"]) if r.get("split") not in (None, "") else None
            self.chips[len(self.inputs)] = _ChipRow(label, str(r["group"]) if r.get("group") not in (None, "")
                                                    else None, f"manifest:{path.name}", feature)
            self.inputs.append(SceneInput(str(p.resolve()), None, split))

    # --- the whole run -------------------------------------------------------------------------

    def run(self, progress: bool, console: Console | None) -> LabelledData:
        inputs_info = self._inputs()
        s = self.spec
        bands = self._bands()
        planned = plan_scenes(self.inputs, bands, s.radiometry, s.gsd_m)
        self.warnings += planned.warnings
        self.scene_problems += planned.problems
        classes = self._classes()
        scene_of: dict[int, int] = {}
        scenes: list[SceneInfo] = []
        for k, sc in enumerate(planned.scenes):
            if sc is not None:
                scene_of[k] = len(scenes)
                scenes.append(sc)
        self._band_order(scenes, scene_of)
        cands = self._candidates(scenes, scene_of)
        kept, pixels, methods = self._read(scenes, cands, planned.radiometry, bands, progress, console)
        samples, pixels = self._dedupe(scenes, kept, pixels)
        preset = [scenes[smp.scene].split for smp in samples]
        fps = [smp.footprint for smp in samples]
        if not samples:
            raise ConfigError("no usable window: " + _why_none(self.label_problems, self.skips, self.scene_problems))
        rule = s.split or SplitRule()
        try:
            result = assign(fps, preset, rule)
        except ConfigError as exc:
            if s.strict_split:
                raise
            self.warnings.append(f"split not made: {exc}; every window is counted as train here")
            result = assign(fps, preset, SplitRule("random", rule.block_m, 0.0, 0.0))
        for k, why in result.dropped.items():
            smp = samples[k]
            self.skips.append(WindowSkip(Candidate(smp.scene, smp.row, smp.col, smp.label, None, smp.feature_id,
                                                   smp.source), "buffer", why))
        keep = [k for k, sp in enumerate(result.splits) if sp is not None]
        samples = [samples[k] for k in keep]
        pixels = [pixels[k] for k in keep]
        splits = [str(result.splits[k]) for k in keep]
        fps = [fps[k] for k in keep]
        self._label_outcomes(samples)
        report = dict(result.report)
        report["distances"] = distances(fps, splits)
        warn = clustering_warning(fps, splits, rule, report["distances"])
        if warn and any(p is None for p in preset):
            self.warnings.append(warn)
        if s.aoi:
            samples = self._aois(scenes, samples)
        return LabelledData(
            kind=s.kind, scenes=scenes, samples=samples, splits=splits, pixels=pixels, classes=classes,
            bands=list(planned.bands), radiometry=planned.radiometry, gsd_m=planned.gsd_m, options=self.opts,
            label_problems=self.label_problems, window_skips=self.skips, scene_problems=self.scene_problems,
            warnings=self.warnings, split_report=report, inputs=inputs_info, cloud_methods=methods)

    def _band_order(self, scenes: list[SceneInfo], scene_of: dict[int, int], sample: int = 8) -> None:
        """`vision.band_order` on a few GeoTIFF scenes (a catalog's items are checked together)."""
        from vision.band_order import band_medians, band_order_warnings
        from vision.bands import raster_band_names
        from vision.raster import open_raster

        done = 0
        for k, si in scene_of.items():
            inp = self.inputs[k]
            if inp.item is not None or k in self.chips or done >= sample:
                continue
            with open_raster(inp.path) as ds:
                names = raster_band_names(ds.descriptions)
            warn = band_order_warnings(names, list(band_medians(inp.path)), scenes[si].id)
            self.band_order += warn
            self.warnings += warn
            done += 1

    def _bands(self) -> list[str]:
        first = scene_bands(self.inputs[0])
        if self.spec.bands is None:
            return first
        out = []
        for b in self.spec.bands:
            if isinstance(b, int):
                if not 0 <= b < len(first):
                    raise ConfigError(f"data.bands {b}: the scenes have {len(first)} bands ({', '.join(first)})")
                out.append(first[b])
            else:
                out.append(str(b))
        return out

    def _classes(self) -> list[str]:
        bg = self.opts.background
        if self.spec.classes is not None:
            if bg is not None and bg not in self.spec.classes:
                raise ConfigError(f"data.background {bg!r} is not one of data.classes {list(self.spec.classes)}")
            return list(self.spec.classes)
        found = {f.label for ls in self.label_sets for f in ls.features} | {c.label for c in self.chips.values()}
        return sorted(found | ({bg} if bg else set()))

    # --- 2. windows -------------------------------------------------------------------------------

    def _candidates(self, scenes: list[SceneInfo], scene_of: dict[int, int]) -> list[list[Candidate]]:
        index = [_LabelIndex(ls) for ls in self.label_sets]
        self.seen: set[FeatureKey] = set()
        self.notes: dict[FeatureKey, tuple[str, str]] = {}
        self.tried: Counter[FeatureKey] = Counter()
        out: list[list[Candidate]] = [[] for _ in scenes]
        bound_scene = {li: scene_of.get(k) for li, k in self.bound.items()}
        h, w = self.opts.size
        for k, si in scene_of.items():
            sc = scenes[si]
            g = sc.grid
            if k in self.chips:
                row = self.chips[k]
                cand = Candidate(si, 0, 0, row.label, None, row.feature, row.source)
                if (g.height, g.width) != (h, w):
                    why = f"chip is {g.height}x{g.width} px at {sc.gsd_m:.3g} m, the windows are {h}x{w}"
                    self.label_problems.append(
                        LabelProblem(row.source.removeprefix("manifest:"), row.feature, row.label, "chip-size", why))
                else:
                    out[si].append(cand)
                continue
            fp = footprint(g.crs, g.affine, g.width, g.height)
            margin = fp.buffer(self.opts.background_buffer_m * g.res[0] / sc.gsd_m) if self.opts.background else fp
            feats = []
            for li, idx in enumerate(index):
                if li in bound_scene and bound_scene[li] != si:
                    continue
                feats += [((li, f.index), f, geom) for _k, f, geom in idx.over(g.crs, margin)]
            got = sample_scene(si, g.width, g.height, g.affine, sc.gsd_m, feats, self.opts)
            self.seen |= got.seen
            for key, note in got.notes.items():
                self.notes.setdefault(key, note)
            for c in (*got.candidates, *(x.candidate for x in got.skipped)):
                if c.feature is not None:
                    self.tried[c.feature] += 1
            self.skips += got.skipped
            out[si] += got.candidates
            out[si] += background_windows(si, g.width, g.height, g.affine, sc.gsd_m, [geom for _, _, geom in feats],
                                          self.opts)
        return out

    def _read(self, scenes: list[SceneInfo], cands: list[list[Candidate]], training: Radiometry, bands: list[str],
              progress: bool, console: Console | None
              ) -> tuple[list[Candidate], list[np.ndarray | None], dict[str, Any]]:
        from vision.data.check.scan import progress_bar

        total = sum(len(c) for c in cands)
        budget = self.spec.cache_mb * 2**20
        used = 0
        clouds: S2Cloudless | None = None
        methods: dict[str, Any] = {}
        kept: list[Candidate] = []
        pixels: list[np.ndarray | None] = []
        unchecked: list[str] = []
        with progress_bar(progress, console) as bar:
            task = bar.add_task("reading windows", total=total)
            for si, group in enumerate(cands):
                if not group:
                    continue
                sc = scenes[si]
                method = scene_cloud_method(sc, training, bands)
                if method == "s2cloudless" and self.band_order:
                    unchecked.append(sc.id)
                    method = None
                methods[sc.id] = method
                if method == "s2cloudless" and clouds is None:
                    clouds = S2Cloudless(num_threads=min(2, os.cpu_count() or 1))
                for r in read_windows(sc, group, self.opts, method, training, bands, clouds):
                    bar.advance(task)
                    if r.skip is not None:
                        self.skips.append(r.skip)
                        continue
                    assert r.pixels is not None
                    kept.append(r.candidate)
                    if used + r.pixels.nbytes <= budget:
                        pixels.append(r.pixels)
                        used += r.pixels.nbytes
                    else:
                        pixels.append(None)
        if unchecked:
            self.warnings.append(f"no s2cloudless cloud check on {len(unchecked)} scene(s) ({unchecked[0]}, ...): the "
                                 "declared band order does not fit the pixels (see the band-order warning), so it "
                                 "would read the wrong bands")
        return kept, pixels, methods

    def _dedupe(self, scenes: list[SceneInfo], kept: list[Candidate], pixels: list[np.ndarray | None]
                ) -> tuple[list[Sample], list[np.ndarray | None]]:
        h, w = self.opts.size
        rank = {"background": 2}
        order = sorted(range(len(kept)), key=lambda j: (
            rank.get(kept[j].source, 1 if kept[j].source.startswith("manifest:") else 0),
            kept[j].feature or (0, 0), kept[j].scene, kept[j].row, kept[j].col))
        first: dict[tuple[int, int, int], Candidate] = {}
        chip_rows = {(r.source, r.feature): r for r in self.chips.values()}
        samples: list[Sample] = []
        out_px: list[np.ndarray | None] = []
        for j in order:
            c = kept[j]
            where = (c.scene, c.row, c.col)
            prev = first.get(where)
            if prev is not None:
                kind = "duplicate" if prev.label == c.label else "conflict"
                self.skips.append(WindowSkip(c, kind, f"the same window as label {prev.feature_id!r} of {prev.source} "
                                                      f"({prev.label})"))
                continue
            first[where] = c
            g = scenes[c.scene].grid
            t = g.window_transform((c.row, c.col, h, w))
            xs = [t.c, t.c + t.a * w]
            ys = [t.f, t.f + t.e * h]
            fp = Footprint(g.crs, min(xs), min(ys), max(xs), max(ys))
            row = chip_rows.get((c.source, c.feature_id))
            samples.append(Sample(c.scene, c.row, c.col, c.label, c.feature_id, c.source, fp,
                                  group=row.group if row else None))
            out_px.append(pixels[j])
        return samples, out_px

    # --- 3. what became of each label ------------------------------------------------------------

    def _label_outcomes(self, samples: list[Sample]) -> None:
        used = Counter((s.source, s.feature_id) for s in samples)
        skipped: dict[tuple[str, str], Counter[str]] = {}
        for w in self.skips:
            skipped.setdefault((w.candidate.source, w.candidate.feature_id), Counter())[w.kind] += 1
        for li, ls in enumerate(self.label_sets):
            none_seen = not any((li, f.index) in self.seen for f in ls.features)
            for f in ls.features:
                key = (li, f.index)
                if used[(f.source, f.id)]:
                    continue
                if key not in self.seen:
                    if none_seen and li not in self.bound:
                        kind, why = "crs", (f"none of the {len(ls.features)} labels of {ls.name} (CRS "
                                            f"{ls.crs.to_string()}) lies over any scene: is its CRS right?")
                    else:
                        kind, why = "outside", ("outside its item's raster" if li in self.bound
                                                else "outside every scene")
                elif key in self.notes and not self.tried[key]:
                    kind, why = self.notes[key]
                else:
                    counts = skipped.get((f.source, f.id), Counter())
                    kind = "windows-skipped"
                    why = "all its windows were skipped: " + ", ".join(f"{k} {n}" for k, n in counts.items())
                self.label_problems.append(LabelProblem(f.source, f.id, f.label, kind, why))
        for c in self.chips.values():
            if not used[(c.source, c.feature)] and (c.source, c.feature) in skipped:
                counts = skipped[(c.source, c.feature)]
                self.label_problems.append(LabelProblem(c.source.removeprefix("manifest:"), c.feature, c.label,
                                                        "windows-skipped", "its chip was skipped: " +
                                                        ", ".join(f"{k} {n}" for k, n in counts.items())))

    def _aois(self, scenes: list[SceneInfo], samples: list[Sample]) -> list[Sample]:
        assert self.spec.aoi is not None
        aois = read_aoi(self.spec.path(self.spec.aoi), self.spec.aoi_field)
        self.warnings += [f"{aois.path}: AOI {q.feature}: {q.reason}" for q in aois.problems]
        h, w = self.opts.size
        by_scene: dict[int, list[int]] = {}
        for k, smp in enumerate(samples):
            by_scene.setdefault(smp.scene, []).append(k)
        out = list(samples)
        for si, ks in by_scene.items():
            g = scenes[si].grid
            fp = footprint(g.crs, g.affine, g.width, g.height)
            parts = [(a.id, geom) for a in aois.aois if (geom := aoi_in_scene(a, aois.crs, g.crs, fp)) is not None]
            ids = assign_windows(window_polygons(g.affine, [(samples[k].row, samples[k].col, h, w) for k in ks]), parts)
            for k, aid in zip(ks, ids, strict=True):
                out[k] = replace(samples[k], aoi=aid)
        return out


def _why_none(labels: list[LabelProblem], skips: list[WindowSkip], scenes: list[SceneProblem]) -> str:
    def counts(kinds: list[str]) -> str:
        return ", ".join(f"{k} {n}" for k, n in Counter(kinds).items())

    parts = [f"{len(labels)} label(s) unusable ({counts([q.kind for q in labels])})"]
    if skips:
        parts.append(f"{len(skips)} window(s) skipped ({counts([w.kind for w in skips])})")
    if scenes:
        parts.append(f"{len(scenes)} scene(s) refused")
    return "; ".join(parts) + ": run `vision data check` for the list"
