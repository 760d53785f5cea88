"""Windows of labelled scenes as a `ChipSource`, with what the training run must record.

`LabelledData` is the whole sampled set (every split): the windows kept (`Sample`), their
split, their pixels (read once, kept in memory up to ``cache_mb``, so epochs after the first
cost no raster I/O), and every label, scene and window that was not used, with why.
`WindowSource` is one split of it, read like any chip source; beside ``classes``/``bands`` it
carries ``radiometry`` and ``gsd_m`` (for the model's metadata), ``columns()`` (per-sample
groups for the audit: scene, acquired, aoi, label_source) and ``lineage()``.
`labelled_facts` finds them through the wrappers training puts around a source.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.data.labels import LabelProblem, problems_by_kind
from vision.data.sampling import SamplingOptions, WindowSkip
from vision.data.scenes import SceneInfo, SceneProblem
from vision.data.sources import ChipSource, SampleRef
from vision.data.splits import Footprint
from vision.errors import ConfigError
from vision.radiometry import Radiometry
from vision.scene import Scene, open_scene

#: Skipped windows listed one by one in the lineage (all are counted).
MAX_LISTED_WINDOWS = 10_000


@dataclass(frozen=True)
class Sample:
    """A window kept for training.

    Attributes:
        scene: index into `LabelledData.scenes`.
        row, col: its offsets on the scene's grid.
        label: class name.
        feature_id: the label's id (``background``; a manifest's row path).
        source: where the label came from: a label file, a manifest, ``background``.
        footprint: its bounds in the scene's CRS.
        aoi: the area of interest it lies in, if AOIs were given.
        group: a manifest's ``group`` value.
    """

    scene: int
    row: int
    col: int
    label: str
    feature_id: str
    source: str
    footprint: Footprint
    aoi: str | None = None
    group: str | None = None


@dataclass
class LabelledData:
    """Every window sampled from labelled scenes, split, with what was left out and why."""

    kind: str
    scenes: list[SceneInfo]
    samples: list[Sample]
    splits: list[str]
    pixels: list[np.ndarray | None]
    classes: list[str]
    bands: list[str]
    radiometry: Radiometry
    gsd_m: float | None
    options: SamplingOptions
    label_problems: list[LabelProblem] = field(default_factory=list)
    window_skips: list[WindowSkip] = field(default_factory=list)
    scene_problems: list[SceneProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    split_report: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    cloud_methods: dict[str, str | None] = field(default_factory=dict)
    _open: dict[int, tuple[int, Scene, contextlib.ExitStack]] = field(default_factory=dict, repr=False)
    raster_reads: int = 0

    def split_names(self) -> list[str]:
        """The splits, ``train, val, test`` first."""
        rank = {"train": 0, "val": 1, "validate": 1, "test": 2}
        return sorted(dict.fromkeys(self.splits), key=lambda s: (rank.get(s, 3), s))

    def source(self, split: str | None, classes: Sequence[str] | None = None) -> WindowSource:
        """One split (``None``: every window) as a chip source.

        Raises:
            ConfigError: there is no such split, or a window's class is not in ``classes``.
        """
        if split is not None and split not in self.splits:
            raise ConfigError(f"the labelled windows have no split {split!r} (their splits: "
                              f"{', '.join(self.split_names()) or 'none'})")
        return WindowSource(self, split, list(classes) if classes is not None else self.classes)

    def ref_path(self, k: int) -> str:
        """A sample's name: ``scene#r<row>c<col>`` (a manifest chip: its file)."""
        s = self.samples[k]
        scene = self.scenes[s.scene]
        if s.source.startswith("manifest:"):
            return scene.path
        return f"{scene.path}#r{s.row}c{s.col}"

    def read_window(self, k: int) -> np.ndarray:
        """A sample's pixels ``H x W x C``: from memory, else a windowed read of its scene."""
        px = self.pixels[k]
        if px is not None:
            return px
        s = self.samples[k]
        h, w = self.options.size
        read = self._scene(s.scene).read((s.row, s.col, h, w))
        self.raster_reads += 1
        return np.ascontiguousarray(np.moveaxis(read.data, 0, -1))

    def _scene(self, index: int) -> Scene:
        """The scene open in this process (a loader worker reopens what its parent opened)."""
        held = self._open.get(index)
        if held is not None and held[0] == os.getpid():
            return held[1]
        info = self.scenes[index]
        stack = contextlib.ExitStack()
        scene = stack.enter_context(open_scene(info.plan, grid=info.grid))
        self._open[index] = (os.getpid(), scene, stack)
        return scene

    def close(self) -> None:
        """Close the scenes opened for reads beyond the cache."""
        for pid, _scene, stack in self._open.values():
            if pid == os.getpid():
                stack.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}  # open datasets do not travel to another process
        return state

    def columns(self) -> dict[str, list[str]]:
        """Per sample, the groups the audit can use: scene, acquired, aoi, label_source, split."""
        none = "(none)"
        out: dict[str, list[str]] = {"scene": [], "acquired": [], "aoi": [], "label_source": [], "split": []}
        for s, sp in zip(self.samples, self.splits, strict=True):
            sc = self.scenes[s.scene]
            out["scene"].append(sc.id)
            out["acquired"].append(sc.acquired.date().isoformat() if sc.acquired else none)
            out["aoi"].append(s.aoi or none)
            out["label_source"].append(s.source)
            out["split"].append(sp)
        return out

    def lineage(self) -> dict[str, Any]:
        """What the training set was made of, and every label, scene and window left out."""
        per_split = {sp: dict(sorted(Counter(s.label for s, x in zip(self.samples, self.splits, strict=True)
                                             if x == sp).items())) for sp in self.split_names()}
        skips = Counter(w.kind for w in self.window_skips)
        listed = [{"scene": self.scenes[w.candidate.scene].id, "row": w.candidate.row, "col": w.candidate.col,
                   "label": w.candidate.label, "feature": w.candidate.feature_id, "source": w.candidate.source,
                   "kind": w.kind, "reason": w.reason} for w in self.window_skips[:MAX_LISTED_WINDOWS]]
        return {"labelled": {
            "source": self.kind, "inputs": self.inputs, "bands": self.bands, "classes": self.classes,
            "radiometry": self.radiometry.to_obj(), "gsd_m": self.gsd_m, "sampling": self.options.to_obj(),
            "scenes": [s.to_obj() for s in self.scenes], "cloud_check": self.cloud_methods,
            "refused_scenes": [p.to_obj() for p in self.scene_problems],
            "windows": {"kept": len(self.samples), "per_split": per_split, "skipped": dict(skips),
                        "skipped_listed": listed, "skipped_not_listed": max(0, len(self.window_skips) - len(listed))},
            "skipped_labels": {"count": len(self.label_problems), "by_kind": problems_by_kind(self.label_problems),
                               "labels": [q.to_obj() for q in self.label_problems]},
            "split": self.split_report, "warnings": self.warnings}}


class WindowSource(ChipSource):
    """One split of a `LabelledData`, read like chips (``H x W x C`` raw values)."""

    def __init__(self, data: LabelledData, split: str | None, classes: list[str]):
        self.data, self.split = data, split
        self.indices = [k for k, s in enumerate(data.splits) if split is None or s == split]
        self.classes = classes
        unknown = sorted({data.samples[k].label for k in self.indices} - set(classes))
        if unknown:
            raise ConfigError(f"the {split} windows have classes {unknown} that are not among {classes}")
        self.bands = list(data.bands)
        self.refs = [SampleRef(data.ref_path(k), classes.index(data.samples[k].label),
                               data.samples[k].group or data.scenes[data.samples[k].scene].id) for k in self.indices]

    @property
    def radiometry(self) -> Radiometry:
        """What the pixels mean (for `ModelMetadata.radiometry`)."""
        return self.data.radiometry

    @property
    def gsd_m(self) -> float | None:
        """The windows' ground sampling distance in metres (for `ModelMetadata.gsd_m`)."""
        return self.data.gsd_m

    def read(self, index: int) -> np.ndarray:
        return self.data.read_window(self.indices[index])

    def raw_bytes(self, index: int) -> bytes:
        return self.read(index).tobytes()

    def columns(self) -> dict[str, list[str]]:
        """Per sample of this split: scene, acquired, aoi, label_source (audit groups)."""
        allc = self.data.columns()
        return {k: [v[i] for i in self.indices] for k, v in allc.items() if k != "split"}

    def lineage(self) -> dict[str, Any]:
        return self.data.lineage()


def labelled_facts(source: ChipSource) -> WindowSource | None:
    """The `WindowSource` under the wrappers training puts around a split (a subset, a band
    check), or ``None`` for other sources."""
    seen = 0
    while not isinstance(source, WindowSource) and seen < 16:
        parent = getattr(source, "parent", None)
        if not isinstance(parent, ChipSource):
            return None
        source, seen = parent, seen + 1
    return source if isinstance(source, WindowSource) else None


def sample_columns(source: ChipSource) -> dict[str, dict[str, str]] | None:
    """Audit groups by sample path (``{column: {path: value}}``) of a labelled source under
    any wrapper, or ``None`` for other sources: `training.audit` groups ``--group-by scene``
    (``acquired``, ``aoi``, ``label_source``) with it."""
    ws = labelled_facts(source)
    if ws is None:
        return None
    cols = ws.columns()
    return {name: {r.path: v for r, v in zip(ws.refs, values, strict=True)} for name, values in cols.items()}
