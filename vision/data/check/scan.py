"""The scan of `vision data check`: every chip of every split read, hashed and decoded once.

A split to scan (`ScanSplit`) is shards, streamed member by member, or files with their
class (class folders, manifest rows), listed by the split's reader. The work is cut into
units (a shard, or 512 files) that one process or several scan; the outcome is the same,
in the same order, whatever the number of processes. What the scan keeps of a chip
(`Chip`) is what the rules need: band count, dtype, size, the digests of its bytes and of
its decoded pixels, and whether it has any valid pixel.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

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

from vision.console import make_console
from vision.data.check.report import Issue
from vision.data.decode import decode_image_bytes
from vision.data.layout import SplitRef
from vision.data.sources import iter_shard
from vision.errors import UnreadableInputError
from vision.hashing import sha256_bytes
from vision.raster import RASTER_SUFFIXES, open_raster


@dataclass
class ScanSplit:
    """One split to scan: shards, or files with their class (class folders, manifest rows)."""

    name: str
    classes: list[str]
    shards: list[Path] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    folder: Path | None = None  # the class-folder root, for the ignored-files walk

    @classmethod
    def of(cls, ref: SplitRef) -> ScanSplit:
        """The split as its reader lists it (shards are listed, not read, here)."""
        if ref.shards:
            return cls(ref.name, list(ref.classes or ()), shards=list(ref.shards))
        source = ref.open()
        files = [(r.path, source.classes[r.label]) for r in source.refs]
        folder = ref.path if ref.path.is_dir() else None
        return cls(ref.name, list(source.classes), files=files, folder=folder)

    def size(self) -> int | None:
        """Number of samples, when known before reading (not for shards)."""
        return None if self.shards else len(self.files)


@dataclass
class Chip:
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


def _inspect(raw: _Raw, split: str) -> tuple[Chip | None, Issue | None]:
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
    chip = Chip(
        split, raw.path, raw.label, int(bands), str(arr.dtype), size,
        sha256_bytes(raw.data), pixels.hexdigest(), empty is not None,
    )
    return chip, (Issue("nodata", raw.path, empty, split) if empty else None)


# --- scanning, in one process or several -------------------------------------------------

#: Files per unit of work when class folders or manifests are scanned by several processes.
_FILES_PER_UNIT = 512


@dataclass
class Unit:
    """A piece of one split that one process scans: a shard, or a run of files."""

    split: str
    classes: list[str]
    shard: Path | None = None
    files: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Scanned:
    """The outcome for one sample (or, with ``sample=False``, for a whole broken shard)."""

    split: str
    label: str | None
    problems: list[Issue]
    chip: Chip | None
    sample: bool = True


def work_units(splits: list[ScanSplit]) -> list[Unit]:
    """The splits cut into units: one per shard, one per `_FILES_PER_UNIT` files."""
    units: list[Unit] = []
    for s in splits:
        units += [Unit(s.name, s.classes, shard=shard) for shard in s.shards]
        for i in range(0, len(s.files), _FILES_PER_UNIT):
            units.append(Unit(s.name, s.classes, files=s.files[i:i + _FILES_PER_UNIT]))
    return units


def _scan(unit: Unit) -> Iterator[Scanned]:
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
        yield Scanned(unit.split, raw.label, problems, chip, raw.sample)


def _scan_all(unit: Unit) -> list[Scanned]:
    """`_scan` to a list (what a worker process sends back)."""
    return list(_scan(unit))


def results(units: list[Unit], workers: int, stack: ExitStack) -> Iterator[Scanned]:
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


def progress_bar(enabled: bool, console: Console | None) -> Progress:
    """The check's bar: samples scanned (of how many, when known), on stderr by default."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chips"),
        TimeElapsedColumn(),
        console=console or make_console(stderr=True),
        disable=not enabled,
        transient=True,
    )
