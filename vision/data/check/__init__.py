"""Validate a labelled chip dataset before training on it (`vision data check`).

One pass over every chip of every split finds what would spoil a training run:

- files that cannot be read (empty, truncated, corrupt, not an image);
- chips whose band count or dtype differs from the rest of the dataset (the majority, or
  what ``bands=`` / ``dtype=`` ask for);
- chips with no valid pixel (all equal to the GeoTIFF's nodata value, all zero, or all NaN);
- exact duplicates: the same file bytes (or the same decoded pixels) twice in one split,
  or in two splits (*leakage*: the model is tested on what it trained on);
- per-split class counts, and a warning when the largest class outnumbers the smallest by
  more than a threshold or a class is missing from a split.

Each PATH is a data spec (`vision.data.spec`): WebDataset shards (the split is read from
the shard name ``<name>-<split>-NNNNNN.tar.gz``), a folder of class folders, a dataset root
with split sub-folders, a manifest table ``path,label[,group][,split]``, ``eurosat-rgb``
under VISION_DATA_DIR, each optionally ``:SPLIT``. The parts: `vision.data.check.scan`
reads the chips, `vision.data.check.rules` finds the issues, `vision.data.check.report`
holds and prints them. `check_dataset` returns a `CheckReport`; `render_report` prints it.

Labelled scenes (PATHs that are scenes, with ``labels=``), a STAC label catalog, or a recipe
whose ``data.source`` is ``scenes``/``stac`` are sampled as training samples them and their
labels, windows and split reported (`vision.data.check.labels`); a chip folder written by
``vision data chips`` is scanned as a manifest, then its rows, distances and duplicates checked.

Example:
    >>> report = check_dataset(["/data/eurosat-rgb"])  # doctest: +SKIP
    >>> report.ok, report.class_counts["test"]["Forest"]  # doctest: +SKIP
    (True, 300)
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from vision.data.check import rules
from vision.data.check.labels import check_labelled_data, chip_folder_rules
from vision.data.check.report import ISSUE_KINDS, CheckReport, Issue, by_kind, render_report, write_json
from vision.data.check.scan import Chip, ScanSplit, progress_bar, results, work_units
from vision.data.layout import STAC_WINDOW, is_stac
from vision.data.spec import resolve_spec
from vision.errors import ConfigError

#: dtypes a chip may be required to have with ``dtype=``.
CHIP_DTYPES: tuple[str, ...] = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64",
)


def _resolve_all(paths: Sequence[str], chip_manifests: list[Path] | None = None) -> list[ScanSplit]:
    """Resolve every PATH; with several, each is a split (or a prefix of splits) named after it.
    Chip folders (``vision data chips``) are noted in ``chip_manifests``."""
    resolved = []
    for p in paths:
        ds = resolve_spec(p)
        if ds.layout == "chips" and chip_manifests is not None and ds.splits[0].path not in chip_manifests:
            chip_manifests.append(ds.splits[0].path)
        resolved.append(([ScanSplit.of(ref) for ref in ds.splits], ds.label))
    if len(resolved) == 1:
        return resolved[0][0]
    labels = [label for _, label in resolved]
    if len(set(labels)) < len(labels):  # e.g. a/train and b/train: use the paths as given
        labels = list(paths)
    splits: list[ScanSplit] = []
    for (parts, _), label in zip(resolved, labels, strict=True):
        for s in parts:
            s.name = label if len(parts) == 1 else f"{label}/{s.name}"
        splits.extend(parts)
    names = [s.name for s in splits]
    if len(set(names)) < len(names):
        raise ConfigError(f"the same split is given twice: {', '.join(names)}")
    return splits


def check_dataset(
    paths: Sequence[str | Path],
    bands: int | None = None,
    dtype: str | None = None,
    imbalance_threshold: float = 10.0,
    progress: bool = True,
    console: Console | None = None,
    workers: int = 1,
) -> CheckReport:
    """Scan a dataset once and report what is wrong with it.

    Args:
        paths: one dataset spec (a shard folder, a dataset root with split folders, a
            folder of class folders, a manifest, or ``eurosat-rgb``/``eurosat-ms`` under
            VISION_DATA_DIR, each optionally ``:SPLIT``), or several, each then a split
            named after it.
        bands: band count every chip must have; default the majority of chips.
        dtype: dtype every chip must have (e.g. ``"uint16"``); default the majority.
        imbalance_threshold: warn when a split's largest class is more than this many
            times its smallest.
        progress: show a progress bar (on ``console``, default stderr).
        console: where the progress bar goes.
        workers: processes that read and decode in parallel (a shard, or 512 files, each
            at a time); 0 for one per CPU core (at most 8). The report is the same.

    Returns:
        The report; ``report.ok`` is False when there are errors.

    Raises:
        ConfigError: a path does not exist, is of no known layout, or holds no chips.
    """
    if not paths:
        raise ConfigError("no PATH given")
    if bands is not None and bands < 1:
        raise ConfigError(f"bands must be at least 1, got {bands}")
    if dtype is not None and dtype not in CHIP_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose from {', '.join(CHIP_DTYPES)}")
    if not imbalance_threshold >= 1:
        raise ConfigError(f"the imbalance threshold must be at least 1, got {imbalance_threshold}")
    t0 = time.perf_counter()
    chip_manifests: list[Path] = []
    splits = _resolve_all([str(p) for p in paths], chip_manifests)
    sizes = [s.size() for s in splits]
    total = None if any(n is None for n in sizes) else sum(n or 0 for n in sizes)
    if total == 0:
        raise ConfigError(
            f"no chips (.jpg/.png/.tif) found in {', '.join(map(str, paths))}: expected "
            "class folders, split folders of class folders, shards or a manifest"
        )

    units = work_units(splits)
    if workers <= 0:
        workers = min(os.cpu_count() or 1, 8)
    workers = min(workers, len(units))
    errors: list[Issue] = []
    warnings: list[Issue] = []
    chips: list[Chip] = []
    counts: dict[str, Counter[str]] = {s.name: Counter() for s in splits}
    scanned = 0
    with ExitStack() as stack:
        outcomes = results(units, workers, stack)
        bar = stack.enter_context(progress_bar(progress, console))
        task = bar.add_task(f"checking ({workers} process(es))", total=total)
        for r in outcomes:
            errors += r.problems
            if not r.sample:
                continue
            if r.chip is not None:
                chips.append(r.chip)
            if r.label is not None:
                counts[r.split][r.label] += 1
            scanned += 1
            bar.advance(task)
    for s in splits:
        if s.folder is not None:
            warnings += rules.ignored_files(s.folder, s.name)

    expected_bands = bands or rules.majority(c.bands for c in chips)
    expected_dtype = dtype or rules.majority(c.dtype for c in chips)
    expected_size = rules.majority(c.size for c in chips)
    errors += rules.mismatches(chips, expected_bands, expected_dtype, asked=(bands, dtype))
    warnings += rules.odd_sizes(chips, expected_size)
    errors += rules.duplicates(chips)
    classes = rules.class_order(splits, counts)
    class_counts = {s.name: {c: counts[s.name][c] for c in classes} for s in splits}
    imbalance = {name: rules.ratio(per_class) for name, per_class in class_counts.items()}
    warnings += rules.balance_issues(class_counts, imbalance, imbalance_threshold)
    spatial = None
    for m in chip_manifests:
        e, w, spatial = chip_folder_rules(m)
        errors += e
        warnings += w

    return CheckReport(
        inputs=[str(p) for p in paths],
        splits=[s.name for s in splits],
        classes=classes,
        class_counts=class_counts,
        chips=scanned,
        expected_bands=expected_bands,
        expected_dtype=expected_dtype,
        expected_size=list(expected_size) if expected_size else None,
        imbalance=imbalance,
        imbalance_threshold=imbalance_threshold,
        errors=by_kind(errors),
        warnings=by_kind(warnings),
        seconds=time.perf_counter() - t0,
        spatial=spatial,
    )


def is_labelled_input(path: str | Path) -> bool:
    """A recipe (``.yaml``) or a STAC label catalog: checked by sampling its windows."""
    p = Path(path)
    return p.is_file() and (p.suffix.lower() in (".yaml", ".yml") or is_stac(p))


def check_labelled(
    paths: Sequence[str | Path],
    labels: Sequence[str | Path] = (),
    class_field: str | None = None,
    classes: Sequence[str] | None = None,
    size: tuple[int, int] = STAC_WINDOW,
    id_field: str | None = None,
    manifests: Sequence[str | Path] = (),
    min_inside: float = 0.75,
    progress: bool = True,
    console: Console | None = None,
) -> CheckReport:
    """Sample labelled data as training does and report its labels, windows and split.

    Args:
        paths: scenes (GeoTIFFs, STAC items) with ``labels``/``manifests``; else one STAC
            label catalog, or one recipe (its ``data`` section, at its ``model.input_size``).
        labels: vector label files over the scenes.
        class_field, id_field: the label attributes with the class and an id.
        classes: the classes a label may have (others are reported).
        size: the window size (scenes and catalogs; a recipe's is its model's input size).
        manifests: extra chip manifests merged in.
        min_inside: share of a window inside its polygon.

    Raises:
        ConfigError: as `vision.data.labelled.build`; a recipe of another data source.
    """
    from vision.data.labelled import LabelledSpec, build, spec_from_config
    from vision.data.sampling import SamplingOptions

    t0 = time.perf_counter()
    names = [str(p) for p in paths]
    sampling = SamplingOptions(size=size, min_inside=min_inside)
    cls = tuple(classes) if classes else None
    if labels or manifests:
        spec = LabelledSpec(kind="scenes", scenes=((None, tuple(names)),), labels=tuple(map(str, labels)),
                            class_field=class_field, id_field=id_field, classes=cls,
                            manifests=tuple(map(str, manifests)), sampling=sampling)
    elif len(names) == 1 and Path(names[0]).suffix.lower() in (".yaml", ".yml"):
        from vision.config import load_experiment

        cfg = load_experiment(names[0])
        if cfg.data.source not in ("scenes", "stac"):
            raise ConfigError(f"{names[0]}: data.source {cfg.data.source}: give the data itself to check "
                              "(a recipe is checked here only for data.source scenes or stac)")
        spec = spec_from_config(cfg.data, cfg.model.input_size, cfg.seed)
    elif len(names) == 1 and is_stac(Path(names[0])):
        spec = LabelledSpec(kind="stac", catalog=names[0], class_field=class_field, classes=cls, sampling=sampling)
    else:
        raise ConfigError("scenes need --labels FILE (vector labels) or --manifest FILE; a STAC label catalog or "
                          "a recipe is checked alone")
    data = build(replace(spec, strict_split=False), console=console, progress=progress, quiet=True, reuse=False)
    return check_labelled_data(data, names, time.perf_counter() - t0)


__all__ = [
    "CHIP_DTYPES",
    "ISSUE_KINDS",
    "CheckReport",
    "Issue",
    "check_dataset",
    "check_labelled",
    "is_labelled_input",
    "render_report",
    "write_json",
]
