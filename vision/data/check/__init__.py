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

The layouts understood are those of `vision.data.sources`: WebDataset shards (the split is
read from the shard name ``<name>-<split>-NNNNNN.tar.gz``), a folder of class folders, a
dataset root with split sub-folders, and a manifest table ``path,label[,group][,split]``.
`check_dataset` returns a `CheckReport`; `render_report` prints it with rich tables.

Example:
    >>> report = check_dataset(["/data/eurosat-rgb"])  # doctest: +SKIP
    >>> report.ok, report.class_counts["test"]["Forest"]  # doctest: +SKIP
    (True, 300)
"""

from __future__ import annotations

import glob
import hashlib
import math
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rasterio.errors import RasterioError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from vision import settings
from vision.atomic import write_json_atomic
from vision.data.decode import decode_image_bytes
from vision.data.sources import (
    ChipSource,
    FolderSource,
    ManifestSource,
    eurosat_classes,
    iter_shard,
    read_table,
)
from vision.errors import ConfigError, UnreadableInputError
from vision.hashing import sha256_bytes
from vision.raster import IMAGE_SUFFIXES, RASTER_SUFFIXES, open_raster

_T = TypeVar("_T")

#: Sub-folder names that mark a dataset root with one folder per split.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "valid", "validation", "test", "holdout", "dev")

#: ``<name>-<split>-<index>.tar[.gz]``, e.g. ``eurosat-rgb-train-000003.tar.gz``.
SHARD_NAME = re.compile(
    r"^(?P<name>.+)-(?P<split>[A-Za-z0-9_]+)-(?P<index>\d+)\.(?:tar|tar\.gz|tgz)$"
)
SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")

#: Data sets that may be named instead of a path (looked up under VISION_DATA_DIR).
KNOWN_DATASETS: tuple[str, ...] = ("eurosat-rgb", "eurosat-ms")

#: dtypes a chip may be required to have with ``dtype=``.
CHIP_DTYPES: tuple[str, ...] = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64",
)

#: Issue kinds, in the order a report lists them.
ISSUE_KINDS: tuple[str, ...] = (
    "unreadable", "label", "bands", "dtype", "nodata", "leakage", "duplicate",
    "size", "ignored", "missing-class", "imbalance",
)

@dataclass(frozen=True)
class Issue:
    """One problem found in the dataset.

    Attributes:
        kind: what is wrong (one of `ISSUE_KINDS`), e.g. ``"unreadable"`` or ``"leakage"``.
        path: the file (``shard.tar.gz#key`` for a shard member), or the split it concerns.
        message: why, in words, with what to compare it to.
        split: the split the file belongs to.
    """

    kind: str
    path: str
    message: str
    split: str | None = None


@dataclass
class CheckReport:
    """What `check_dataset` found.

    Attributes:
        inputs: the paths checked, as given.
        splits: split names in the order scanned.
        classes: class names (the union over splits, in label order where known).
        class_counts: ``{split: {class: number of files}}``, every class present per split.
        chips: number of samples scanned (files, or shard members).
        expected_bands: band count chips must have (the majority or ``bands=``).
        expected_dtype: dtype chips must have (the majority or ``dtype=``).
        expected_size: the most common ``[height, width]`` (others are a warning).
        imbalance: ``{split: largest / smallest non-empty class}``; ``None`` for no classes.
        imbalance_threshold: ratio above which imbalance is a warning.
        errors: problems that make the dataset unfit as it is.
        warnings: problems worth a look that do not fail the check.
        seconds: wall time of the scan.
    """

    inputs: list[str]
    splits: list[str]
    classes: list[str]
    class_counts: dict[str, dict[str, int]]
    chips: int
    expected_bands: int | None
    expected_dtype: str | None
    expected_size: list[int] | None
    imbalance: dict[str, float | None]
    imbalance_threshold: float
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors

    def errors_of(self, kind: str) -> list[Issue]:
        """The errors of one kind, e.g. ``report.errors_of("leakage")``."""
        return [e for e in self.errors if e.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole report, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


# --- what to scan ----------------------------------------------------------------------


@dataclass
class _Split:
    """One split to scan: shards, or files with their class (class folders, manifest rows)."""

    name: str
    classes: list[str]
    shards: list[Path] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    folder: Path | None = None  # the class-folder root, for the ignored-files walk

    @classmethod
    def of_source(cls, name: str, source: ChipSource, folder: Path | None = None) -> _Split:
        """A split read by a `ChipSource` (its file list and class names)."""
        files = [(r.path, source.classes[r.label]) for r in source.refs]
        return cls(name, list(source.classes), files=files, folder=folder)

    def size(self) -> int | None:
        """Number of samples, when known before reading (not for shards)."""
        return None if self.shards else len(self.files)


def _is_shard(p: Path) -> bool:
    return p.name.endswith(SHARD_SUFFIXES)


def _shard_split_name(shard: Path, default: str) -> str:
    m = SHARD_NAME.match(shard.name)
    return m.group("split") if m else default


def _shard_classes(folder: Path) -> list[str]:
    f = folder / "classes.txt"
    if f.exists():
        return [c.strip() for c in f.read_text().splitlines() if c.strip()]
    return []  # labels are shown as their index


def _splits_of_shards(shards: list[Path], default: str) -> list[_Split]:
    by_split: dict[str, list[Path]] = {}
    for s in sorted(shards):
        by_split.setdefault(_shard_split_name(s, default), []).append(s)
    classes = _shard_classes(shards[0].parent)
    return [_Split(name, classes, shards=paths) for name, paths in _order(by_split).items()]


def _order(by_split: dict[str, _T]) -> dict[str, _T]:
    """train, val, test first (the usual reading order), then the rest by name."""
    rank = {n: i for i, n in enumerate(SPLIT_NAMES)}
    return dict(sorted(by_split.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_split_root(root: Path) -> bool:
    """A folder whose sub-folders are splits (``train/``, ``val/``...) of class folders."""
    subs = _subdirs(root)
    return any(d.name.lower() in SPLIT_NAMES and _subdirs(d) for d in subs)


def _splits_of_split_root(root: Path) -> list[_Split]:
    split_dirs = [d for d in _subdirs(root) if _subdirs(d)]
    # One class list for every split, so a class absent from one split keeps its label.
    if (root / "classes.txt").exists():
        classes = eurosat_classes(root)
    else:
        classes = sorted({c.name for d in split_dirs for c in _subdirs(d)})
    return [
        _Split.of_source(name, FolderSource(d, classes), folder=d)
        for name, d in _order({d.name: d for d in split_dirs}).items()
    ]


def _splits_of_manifest(manifest: Path) -> list[_Split]:
    rows = read_table(manifest)
    whole = ManifestSource(manifest, _manifest_class_names(rows))
    names = list(dict.fromkeys(str(r["split"]) for r in rows)) if "split" in rows[0] else []
    if not names:
        return [_Split.of_source(manifest.stem, whole)]
    return [_Split.of_source(n, ManifestSource(manifest, whole.classes, split=n)) for n in names]


def _manifest_class_names(rows: list[dict[str, object]]) -> list[str] | None:
    """Class names from a ``class_name`` column beside numeric labels, when it is consistent.

    Without it (or when an index has two names) the reader's default applies: the label
    indices, or the sorted label names.
    """
    if not rows or "class_name" not in rows[0] or "label" not in rows[0]:
        return None
    names: dict[int, str] = {}
    for r in rows:
        label, name = str(r["label"]), str(r["class_name"])
        if not label.isdigit() or names.setdefault(int(label), name) != name:
            return None
    if sorted(names) != list(range(len(names))):
        return None
    return [names[i] for i in range(len(names))]


def _resolve(spec: str) -> tuple[list[_Split], str]:
    """The splits behind one PATH argument, and the name to give it if it is one split."""
    p = Path(spec).expanduser()
    if not p.exists():
        if any(c in spec for c in "*?["):
            shards = [Path(s) for s in sorted(glob.glob(spec)) if _is_shard(Path(s))]
            if not shards:
                raise ConfigError(f"no .tar/.tar.gz shards match {spec}")
            splits = _splits_of_shards(shards, shards[0].parent.name)
            return splits, splits[0].name if len(splits) == 1 else shards[0].parent.name
        name, _, split = spec.partition(":")
        if name in KNOWN_DATASETS:
            base = settings.data_dir() / name
            if not base.is_dir():
                raise ConfigError(
                    f"{name} not found at {base}: set VISION_DATA_DIR, or pass the folder itself"
                )
            splits, label = _resolve(str(base))
            if split:
                splits = [s for s in splits if s.name == split]
                if not splits:
                    raise ConfigError(f"{name} has no split {split!r}")
            return splits, split or label
        raise ConfigError(f"not found: {spec}")
    if p.is_file():
        if p.suffix.lower() in (".csv", ".parquet"):
            return _splits_of_manifest(p), p.stem
        if _is_shard(p):
            return _splits_of_shards([p], p.parent.name), _shard_split_name(p, p.name)
        raise ConfigError(
            f"{spec}: expected a folder, a .tar/.tar.gz shard or a .csv/.parquet manifest"
        )
    shards = sorted(f for f in p.iterdir() if f.is_file() and _is_shard(f))
    if shards:
        return _splits_of_shards(shards, p.name), p.name
    if _is_split_root(p):
        return _splits_of_split_root(p), p.name
    classes = eurosat_classes(p) if (p / "classes.txt").exists() else None
    return [_Split.of_source(p.name, FolderSource(p, classes), folder=p)], p.name


def _resolve_all(paths: Sequence[str]) -> list[_Split]:
    """Resolve every PATH; with several, each is a split (or a prefix of splits) named after it."""
    resolved = [_resolve(p) for p in paths]
    if len(resolved) == 1:
        return resolved[0][0]
    labels = [label for _, label in resolved]
    if len(set(labels)) < len(labels):  # e.g. a/train and b/train: use the paths as given
        labels = list(paths)
    splits: list[_Split] = []
    for (parts, _), label in zip(resolved, labels, strict=True):
        for s in parts:
            s.name = label if len(parts) == 1 else f"{label}/{s.name}"
        splits.extend(parts)
    names = [s.name for s in splits]
    if len(set(names)) < len(names):
        raise ConfigError(f"the same split is given twice: {', '.join(names)}")
    return splits


# --- reading one chip --------------------------------------------------------------------


@dataclass
class _Chip:
    """What the scan keeps of one readable chip."""

    split: str
    path: str
    label: str | None
    bands: int
    dtype: str
    size: tuple[int, int]
    sha256: str
    pixels: str  # digest of the decoded pixels (catches re-encoded duplicates)
    empty: bool  # no valid pixel (already an error)


@dataclass
class _Raw:
    """One sample as read: its bytes (``None`` if they could not be had) and its problems.

    ``sample`` is False for a record that stands for a whole broken shard, not one chip.
    """

    path: str
    label: str | None
    data: bytes | None = None
    file: Path | None = None  # GeoTIFFs are read by GDAL from disk
    problems: list[Issue] = field(default_factory=list)
    sample: bool = True


def _strip_prefix(message: str, name: str) -> str:
    """``"a.jpg: cannot decode"`` -> ``"cannot decode"`` (the path has its own column)."""
    for prefix in (f"{name}: ", f"{Path(name).name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _shard_label(text: bytes | None, classes: list[str]) -> tuple[str | None, str | None]:
    """The class name of a ``.cls`` member, or why there is none."""
    if text is None:
        return None, "no .cls member (label)"
    digits = text.decode(errors="replace").strip()
    if not digits.isdigit():
        return None, f"label {digits!r} is not a class index"
    if not classes:
        return digits, None
    if int(digits) >= len(classes):
        return None, f"label {digits} is out of range for {len(classes)} classes"
    return classes[int(digits)], None


def _iter_shard_samples(shard: Path, split: str, classes: list[str]) -> Iterator[_Raw]:
    """Samples of one shard, streamed; a broken shard ends with a record naming it."""
    try:
        for key, parts in iter_shard(shard):
            name = f"{shard.name}#{key}"
            label, why = _shard_label(parts.get("cls"), classes)
            raw = _Raw(name, label, problems=[Issue("label", name, why, split)] if why else [])
            raw.data = next((parts[e] for e in ("jpg", "jpeg", "png") if e in parts), None)
            if raw.data is None:
                raw.problems.append(Issue(
                    "unreadable", name, f"no .jpg/.png member (has {sorted(parts)})", split
                ))
            yield raw
    except UnreadableInputError as exc:
        reason = _strip_prefix(str(exc), str(shard))
        yield _Raw(str(shard), None, problems=[Issue("unreadable", str(shard), reason, split)],
                   sample=False)


def _iter_file_samples(files: list[tuple[str, str]], split: str) -> Iterator[_Raw]:
    """Samples stored as files (class folders, manifest rows): each file's bytes."""
    for path, label in files:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            reason = "file not found" if isinstance(exc, FileNotFoundError) else str(exc)
            yield _Raw(path, label, problems=[Issue("unreadable", path, reason, split)])
            continue
        is_raster = p.suffix.lower() in RASTER_SUFFIXES
        yield _Raw(path, label, data=data, file=p if is_raster else None)


def _read_geotiff(path: Path) -> tuple[np.ndarray, float | None]:
    """Pixels as ``C x H x W`` and the nodata value, through the driver allow-list."""
    with open_raster(path) as ds:
        try:
            return ds.read(), ds.nodata
        except RasterioError as exc:
            raise UnreadableInputError(f"{path}: read failed ({exc})") from exc


def _no_valid_pixel(arr: np.ndarray, nodata: float | None) -> str | None:
    """Why a chip holds no valid pixel, or ``None`` when it has some."""
    if arr.size == 0:
        return "has no pixels"
    if nodata is not None and not math.isnan(nodata) and bool((arr == nodata).all()):
        return f"all pixels equal the nodata value {nodata:g}"
    if arr.dtype.kind == "f" and bool(np.isnan(arr).all()):
        return "all pixels are NaN"
    if not arr.any():
        return "all pixels are zero"
    return None


def _inspect(raw: _Raw, split: str) -> tuple[_Chip | None, Issue | None]:
    """Decode one sample; return what the scan keeps and the error it has, if any."""
    assert raw.data is not None
    if not raw.data:
        return None, Issue("unreadable", raw.path, "empty file (0 bytes)", split)
    try:
        if raw.file is not None:
            chw, nodata = _read_geotiff(raw.file)
            bands, size = chw.shape[0], (int(chw.shape[1]), int(chw.shape[2]))
            arr = chw
        else:
            arr, nodata = decode_image_bytes(raw.data, raw.path), None
            bands, size = arr.shape[-1], (int(arr.shape[0]), int(arr.shape[1]))
    except UnreadableInputError as exc:
        return None, Issue("unreadable", raw.path, _strip_prefix(str(exc), raw.path), split)
    empty = _no_valid_pixel(arr, nodata)
    pixels = hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16)
    pixels.update(f"{arr.shape}{arr.dtype}".encode())
    chip = _Chip(
        split, raw.path, raw.label, int(bands), str(arr.dtype), size,
        sha256_bytes(raw.data), pixels.hexdigest(), empty is not None,
    )
    return chip, (Issue("nodata", raw.path, empty, split) if empty else None)


# --- scanning, in one process or several -------------------------------------------------

#: Files per unit of work when class folders or manifests are scanned by several processes.
_FILES_PER_UNIT = 512


@dataclass
class _Unit:
    """A piece of one split that one process scans: a shard, or a run of files."""

    split: str
    classes: list[str]
    shard: Path | None = None
    files: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Scanned:
    """The outcome for one sample (or, with ``sample=False``, for a whole broken shard)."""

    split: str
    label: str | None
    problems: list[Issue]
    chip: _Chip | None
    sample: bool = True


def _units(splits: list[_Split]) -> list[_Unit]:
    units: list[_Unit] = []
    for s in splits:
        units += [_Unit(s.name, s.classes, shard=shard) for shard in s.shards]
        for i in range(0, len(s.files), _FILES_PER_UNIT):
            units.append(_Unit(s.name, s.classes, files=s.files[i:i + _FILES_PER_UNIT]))
    return units


def _scan(unit: _Unit) -> Iterator[_Scanned]:
    """Read, hash and decode every sample of a unit, in one pass."""
    if unit.shard is not None:
        raws = _iter_shard_samples(unit.shard, unit.split, unit.classes)
    else:
        raws = _iter_file_samples(unit.files, unit.split)
    for raw in raws:
        chip = None
        problems = list(raw.problems)
        if raw.data is not None:
            chip, error = _inspect(raw, unit.split)
            if error is not None:
                problems.append(error)
        yield _Scanned(unit.split, raw.label, problems, chip, raw.sample)


def _scan_all(unit: _Unit) -> list[_Scanned]:
    """`_scan` to a list (what a worker process sends back)."""
    return list(_scan(unit))


def _results(units: list[_Unit], workers: int, stack: ExitStack) -> Iterator[_Scanned]:
    """Outcomes in a fixed order (that of ``units``), whatever the number of processes.

    With several workers, every unit is submitted here, before the caller starts its
    progress bar: the workers are forked while this process has no other thread.
    """
    if workers <= 1:
        return (r for unit in units for r in _scan(unit))
    # fork: workers inherit the imported modules instead of each importing torch again.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=context))
    batches = pool.map(_scan_all, units)
    return (r for batch in batches for r in batch)


# --- the check ----------------------------------------------------------------------------


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
        paths: one dataset (a shard folder, a dataset root with split folders, a folder of
            class folders, a manifest, or ``eurosat-rgb``/``eurosat-ms`` under
            VISION_DATA_DIR), or several, each then a split named after it.
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
    splits = _resolve_all([str(p) for p in paths])
    sizes = [s.size() for s in splits]
    total = None if any(n is None for n in sizes) else sum(n or 0 for n in sizes)
    if total == 0:
        raise ConfigError(
            f"no chips (.jpg/.png/.tif) found in {', '.join(map(str, paths))}: expected "
            "class folders, split folders of class folders, shards or a manifest"
        )

    units = _units(splits)
    if workers <= 0:
        workers = min(os.cpu_count() or 1, 8)
    workers = min(workers, len(units))
    errors: list[Issue] = []
    warnings: list[Issue] = []
    chips: list[_Chip] = []
    counts: dict[str, Counter[str]] = {s.name: Counter() for s in splits}
    scanned = 0
    with ExitStack() as stack:
        results = _results(units, workers, stack)
        bar = stack.enter_context(_progress_bar(progress, console))
        task = bar.add_task(f"checking ({workers} process(es))", total=total)
        for r in results:
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
            warnings += _ignored_files(s.folder, s.name)

    expected_bands = bands or _majority(c.bands for c in chips)
    expected_dtype = dtype or _majority(c.dtype for c in chips)
    expected_size = _majority(c.size for c in chips)
    errors += _mismatches(chips, expected_bands, expected_dtype, asked=(bands, dtype))
    warnings += [
        Issue("size", c.path, f"is {c.size[0]}x{c.size[1]} px, most chips are "
              f"{expected_size[0]}x{expected_size[1]}", c.split)
        for c in chips if c.size != expected_size
    ]
    errors += _duplicates(chips)
    classes = _class_order(splits, counts)
    class_counts = {s.name: {c: counts[s.name][c] for c in classes} for s in splits}
    imbalance = {name: _ratio(per_class) for name, per_class in class_counts.items()}
    warnings += _balance_issues(class_counts, imbalance, imbalance_threshold)

    rank = {k: i for i, k in enumerate(ISSUE_KINDS)}
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
        errors=sorted(errors, key=lambda e: rank.get(e.kind, len(rank))),
        warnings=sorted(warnings, key=lambda e: rank.get(e.kind, len(rank))),
        seconds=time.perf_counter() - t0,
    )


def _mismatches(
    chips: list[_Chip], bands: int | None, dtype: str | None, asked: tuple[int | None, str | None]
) -> list[Issue]:
    """Chips whose band count or dtype is not the expected one."""
    why_bands = "as asked" if asked[0] else "the majority of chips"
    why_dtype = "as asked" if asked[1] else "the majority of chips"
    out: list[Issue] = []
    for c in chips:
        if c.bands != bands:
            out.append(Issue(
                "bands", c.path, f"has {c.bands} bands, expected {bands} ({why_bands})", c.split
            ))
        if c.dtype != dtype:
            out.append(Issue(
                "dtype", c.path, f"is {c.dtype}, expected {dtype} ({why_dtype})", c.split
            ))
    return out


def _ratio(per_class: dict[str, int]) -> float | None:
    """Largest over smallest non-empty class; ``None`` when no class has samples."""
    present = [n for n in per_class.values() if n > 0]
    return max(present) / min(present) if present else None


def _balance_issues(
    class_counts: dict[str, dict[str, int]],
    imbalance: dict[str, float | None],
    threshold: float,
) -> list[Issue]:
    """Warnings for splits above the imbalance threshold and classes missing from a split."""
    out: list[Issue] = []
    for split, per_class in class_counts.items():
        ratio = imbalance[split]
        if ratio is not None and ratio > threshold:
            present = {c: n for c, n in per_class.items() if n > 0}
            big = max(present, key=lambda c: present[c])
            small = min(present, key=lambda c: present[c])
            out.append(Issue(
                "imbalance", split,
                f"largest class {big} ({present[big]}) is {ratio:.1f}x the smallest "
                f"{small} ({present[small]}), above the threshold {threshold:g}", split,
            ))
        out += [
            Issue("missing-class", split, f"class {c} has no samples in this split", split)
            for c, n in per_class.items() if n == 0
        ]
    return out


def _majority(values: Iterator[Any]) -> Any:
    """The most common value (the first seen among equals), ``None`` for no values."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def _duplicates(chips: list[_Chip]) -> list[Issue]:
    """Second and later copies of a chip: in the same split a duplicate, across splits leakage.

    Identical bytes are looked for first, then identical decoded pixels (the same image
    stored twice in different files, e.g. re-saved). Chips without valid pixels are left
    out of the pixel comparison: they all look alike and are errors already.
    """
    issues: list[Issue] = []
    seen: dict[str, _Chip] = {}
    seen_pixels: dict[str, _Chip] = {}
    for c in chips:
        first, what = seen.get(c.sha256), "bytes"
        if first is None and not c.empty:
            first, what = seen_pixels.get(c.pixels), "pixels"
        seen.setdefault(c.sha256, c)
        if not c.empty:
            seen_pixels.setdefault(c.pixels, c)
        if first is None:
            continue
        labels = ""
        if first.label != c.label:
            labels = f"; labelled {c.label} here and {first.label} there"
        if first.split != c.split:
            issues.append(Issue(
                "leakage", c.path,
                f"same {what} as {first.path} in split {first.split}{labels}", c.split,
            ))
        else:
            issues.append(
                Issue("duplicate", c.path, f"same {what} as {first.path}{labels}", c.split)
            )
    return issues


def _ignored_files(root: Path, split: str) -> list[Issue]:
    """Files a reader would skip: not chips, or not inside a class folder."""
    out: list[Issue] = []
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
            out.append(Issue("ignored", str(f), "not in a class folder: ignored", split))
    for d in _subdirs(root):
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            for n in sorted(filenames):
                if not n.startswith(".") and Path(n).suffix.lower() not in IMAGE_SUFFIXES:
                    out.append(Issue(
                        "ignored", os.path.join(dirpath, n),
                        f"not a chip ({', '.join(IMAGE_SUFFIXES)}): ignored", split,
                    ))
    return out


def _class_order(splits: list[_Split], counts: dict[str, Counter[str]]) -> list[str]:
    """Declared classes first (label order), then any other label seen, by name."""
    order: list[str] = []
    for s in splits:
        order.extend(c for c in s.classes if c not in order)
    extra = {c for n in counts.values() for c in n if c not in order}
    return order + sorted(extra, key=lambda c: (len(c), c))


def _progress_bar(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chips"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


# --- output -------------------------------------------------------------------------------


def render_report(report: CheckReport, console: Console, max_rows: int = 50) -> None:
    """Print the report: a summary, class counts per split, then errors and warnings.

    Args:
        report: what `check_dataset` returned.
        console: where to print.
        max_rows: most errors (and warnings) listed; all are in ``write_json``'s file.
    """
    chip = "no readable chip"
    if report.expected_bands is not None and report.expected_size is not None:
        height, width = report.expected_size
        chip = f"{report.expected_bands} bands {report.expected_dtype} {height}x{width} px"
    console.print(
        f"[bold]Checked[/bold] {', '.join(report.inputs)}: {report.chips:,} chips in "
        f"{len(report.splits)} split(s) · {len(report.classes)} classes · {chip} · "
        f"{report.seconds:.1f} s",
        highlight=False,
    )
    table = Table(title="Class counts", title_justify="left")
    table.add_column("class")
    for s in report.splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right", style="bold")
    for c in report.classes:
        row = [report.class_counts[s][c] for s in report.splits]
        table.add_row(c, *(f"{n:,}" for n in row), f"{sum(row):,}")
    totals = [sum(report.class_counts[s].values()) for s in report.splits]
    table.add_section()
    table.add_row("total", *(f"{n:,}" for n in totals), f"{sum(totals):,}", style="bold")

    def ratio(split: str) -> str:
        r = report.imbalance[split]
        if r is None:
            return "-"
        text = f"{r:.2f}"
        return f"[yellow]{text}[/yellow]" if r > report.imbalance_threshold else text

    table.add_row("max/min", *(ratio(s) for s in report.splits), "")
    console.print(table)
    _print_issues(console, "Errors", report.errors, "red", max_rows)
    _print_issues(console, "Warnings", report.warnings, "yellow", max_rows)
    leak = len(report.errors_of("leakage"))
    if len(report.splits) < 2:
        leakage = "one split: no leakage check"
    else:
        leakage = "no leakage" if not leak else f"[red]{leak} leaked chip(s)[/red]"
    failed = f"[red]FAILED: {len(report.errors)} error(s)[/red]"
    verdict = "[green]OK[/green]" if report.ok else failed
    console.print(
        f"{verdict} · {len(report.warnings)} warning(s) · {leakage}", highlight=False
    )


def _print_issues(console: Console, title: str, issues: list[Issue], colour: str,
                  max_rows: int) -> None:
    if not issues:
        return
    by_kind = Counter(i.kind for i in issues)
    summary = ", ".join(f"{k} {n}" for k, n in by_kind.items())
    table = Table(
        title=f"[{colour}]{title} ({len(issues)}: {summary})[/{colour}]", title_justify="left"
    )
    table.add_column("kind", style=colour, no_wrap=True)
    table.add_column("split", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("reason", overflow="fold")
    for i in issues[:max_rows]:
        table.add_row(i.kind, i.split or "", i.path, i.message)
    console.print(table)
    if len(issues) > max_rows:
        console.print(f"... and {len(issues) - max_rows} more (all are in --json FILE)")


def write_json(report: CheckReport, path: str | Path) -> None:
    """Write the report as JSON, atomically (`vision.atomic`)."""
    write_json_atomic(path, report.to_dict())

