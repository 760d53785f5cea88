"""Train from labelled scenes: ``data.source: scenes`` (GeoTIFF/STAC scenes + vector labels,
plus extra chip manifests) and ``data.source: stac`` (a STAC label catalog).

`build` turns a `LabelledSpec` into a `vision.data.scene_source.LabelledData`:

1. the scenes are named (`vision.data.scenes.expand_scenes`, or a label catalog's items,
   `vision.data.stac_labels`) and the labels read (`vision.data.labels.read_labels`); rows of
   extra manifests (the review service's dataset export: ``path,label[,group][,split]``
   GeoTIFF chips) are scenes of one window each;
2. every scene is planned against one training radiometry and GSD (`plan_scenes`);
3. per scene, the labels over it are reprojected to its CRS and its windows placed
   (`vision.data.sampling`); the windows are read chunk by chunk and judged (nodata, clouds:
   `vision.data.scenes.read_windows`), their pixels kept;
4. the windows are split (`vision.data.splits`): per-split scenes, ``ml-aoi:split`` and a
   manifest's split column are kept, the others assigned by blocks (or at random);
5. every label that gave no window, every scene refused and every window skipped is recorded
   with why, and the warnings (radiometry assumptions, band order, clustering) are printed.

Training opens all splits at once with `open_labelled_splits` (one sampling for every split,
since the split rule sees all windows). A built set is kept for the next call with the same
spec and unchanged files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from vision.console import make_console
from vision.data.builder import Builder
from vision.data.sampling import SamplingOptions
from vision.data.scene_source import LabelledData, WindowSource
from vision.data.splits import SplitRule
from vision.radiometry import Radiometry

if TYPE_CHECKING:
    from vision.config import DataConfig, ExperimentConfig

_BUILT: dict[tuple[Any, ...], LabelledData] = {}


@dataclass(frozen=True)
class LabelledSpec:
    """Everything that decides which windows a labelled source yields.

    Attributes:
        kind: ``scenes`` or ``stac``.
        base: the folder relative paths are under.
        scenes: ``(split or None, paths/globs)`` groups.
        catalog: the STAC label catalog (``stac``).
        labels: label files.
        class_field, id_field: the label attributes with the class and an id.
        classes: the classes (``None``: every value found, sorted).
        bands: band names or indices (``None``: the first scene's).
        radiometry: what pixels mean, for data that declares nothing.
        gsd_m: the GSD every scene is read at (``None``: as they are, which must agree).
        manifests: extra chip manifests merged in.
        aoi, aoi_field: areas of interest for the ``aoi`` group.
        sampling: window placement and checks.
        split: the rule for windows without a preset split (``None``: default blocks, and a
            STAC catalog's ``ml-aoi:split`` is kept).
        cache_mb: pixels kept in memory.
        strict_split: a split that cannot be made is an error (training); else (a check) a
            warning, and the windows stay unsplit (``train``).
    """

    kind: str = "scenes"
    base: Path = Path(".")
    scenes: tuple[tuple[str | None, tuple[str, ...]], ...] = ()
    catalog: str | None = None
    labels: tuple[str, ...] = ()
    class_field: str | None = None
    id_field: str | None = None
    classes: tuple[str, ...] | None = None
    bands: tuple[str | int, ...] | None = None
    radiometry: Radiometry | None = None
    gsd_m: float | None = None
    manifests: tuple[str, ...] = ()
    aoi: str | None = None
    aoi_field: str | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    split: SplitRule | None = None
    cache_mb: int = 4096
    strict_split: bool = True

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.base / q


def spec_from_config(d: DataConfig, input_size: Sequence[int], seed: int = 0) -> LabelledSpec:
    """The `LabelledSpec` of a recipe's ``data`` section (windows of ``model.input_size``)."""
    base = Path(d.root).expanduser() if d.root and d.source == "scenes" else Path(".")
    groups: tuple[tuple[str | None, tuple[str, ...]], ...] = ()
    if isinstance(d.scenes, dict):
        groups = tuple((k, tuple(v)) for k, v in d.scenes.items())
    elif d.scenes:
        groups = ((None, tuple(d.scenes)),)
    sampling = SamplingOptions(
        size=(int(input_size[0]), int(input_size[1])), min_inside=d.min_inside, max_per_polygon=d.max_per_polygon,
        mode=d.sampling, stride=d.stride, background=d.background, background_buffer_m=d.background_buffer_m,
        background_max=d.background_max, max_nodata=d.max_nodata, max_cloud=d.max_cloud, seed=seed)
    s = d.split
    rule = SplitRule(s.method, s.block_m, s.val, s.test, s.seed, s.buffer_m, s.regions) if s is not None else None
    return LabelledSpec(
        kind=d.source, base=base, scenes=groups, catalog=d.root if d.source == "stac" else None,
        labels=tuple(d.labels or ()), class_field=d.class_field, id_field=d.label_id_field,
        classes=tuple(d.classes) if d.classes else None, bands=tuple(d.bands) if d.bands else None,
        radiometry=Radiometry.from_obj(d.radiometry) if d.radiometry else None, gsd_m=d.gsd_m,
        manifests=tuple(d.manifests or ()), aoi=d.aoi, aoi_field=d.aoi_field, sampling=sampling, split=rule,
        cache_mb=d.cache_mb)


@dataclass(frozen=True)
class LabelledSplits:
    """A recipe's splits of a labelled source."""

    train: WindowSource
    val: WindowSource
    test: WindowSource | None
    data: LabelledData


def open_labelled_splits(cfg: ExperimentConfig, console: Console | None = None) -> LabelledSplits:
    """The train/val/test splits of a recipe whose ``data.source`` is ``scenes`` or ``stac``
    (the training hookup: one sampling for all splits)."""
    d = cfg.data
    out = console or make_console(stderr=True)
    data = build(spec_from_config(d, cfg.model.input_size, cfg.seed), console=out, progress=out.is_terminal)
    train = data.source(d.train, d.classes)
    val = data.source(d.val, train.classes)
    test = data.source(d.test, train.classes) if d.test else None
    return LabelledSplits(train, val, test, data)


def _stamp(spec: LabelledSpec) -> tuple[Any, ...]:
    files = [spec.path(p) for p in (*spec.labels, *spec.manifests, *(e for _, g in spec.scenes for e in g))]
    if spec.catalog:
        files.append(Path(spec.catalog))
    stats: list[tuple[str, int | None, int | None]] = []
    for f in files:
        try:
            st = f.stat()
            stats.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((str(f), None, None))
    return (spec, tuple(stats))


def build(spec: LabelledSpec, console: Console | None = None, progress: bool = False, quiet: bool = False,
          reuse: bool = True) -> LabelledData:
    """Sample, read and split the windows of a labelled source (see the module docstring).

    Args:
        spec: what to sample.
        console: where warnings go (default stderr).
        progress: show a progress bar while windows are read.
        quiet: do not print the warnings (they are in the result either way).
        reuse: return the set built last for the same spec and unchanged files.

    Raises:
        ConfigError: no scene, no usable window, unreadable label file, unknown radiometry, ...
    """
    key = _stamp(spec)
    if reuse and key in _BUILT:
        return _BUILT[key]
    data = Builder(spec).run(progress, console)
    if not quiet:
        report_warnings(data, console or make_console(stderr=True))
    _BUILT.clear()  # one set kept: they hold pixels
    _BUILT[key] = data
    return data


def report_warnings(data: LabelledData, console: Console) -> None:
    """Print a labelled set's warnings and what was left out (escaped for Rich)."""
    for w in data.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    for p in data.scene_problems:
        console.print(f"[yellow]scene refused:[/yellow] {escape(p.path)}: {escape(p.reason)}", highlight=False)
    if data.label_problems:
        kinds = ", ".join(f"{k} {n}" for k, n in Counter(q.kind for q in data.label_problems).items())
        console.print(f"[yellow]{len(data.label_problems)} label(s) gave no window[/yellow] ({escape(kinds)}); "
                      "each is listed with why in the run's lineage.json and by `vision data check`", highlight=False)
    if data.window_skips:
        kinds = ", ".join(f"{k} {n}" for k, n in Counter(w.kind for w in data.window_skips).items())
        console.print(f"{len(data.window_skips)} window(s) skipped ({escape(kinds)})", highlight=False)
    per = Counter(data.splits)
    console.print(f"labelled windows: {', '.join(f'{s} {per[s]}' for s in data.split_names())} "
                  f"({data.kind}, {len(data.scenes)} scene(s), {data.gsd_m or '?'} m)", highlight=False)


