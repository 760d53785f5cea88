"""How a labelled dataset lies on disk: which layout a path has, and where each split is.

A `Layout` recognises a path, lists its splits as `SplitRef`s (nothing is read yet but
folder listings and a manifest's table), and opens one split as a `ChipSource`. The
layouts, in the order they are tried (`LAYOUTS`):

- ``manifest``: a ``.csv``/``.parquet`` table ``path,label[,group][,split]``; one split per
  value of its ``split`` column, or one split named after the file without that column;
- ``shards``: a WebDataset shard ``NAME-SPLIT-NNNNNN.tar[.gz]`` or a folder holding shards
  (a glob of shards is `shards_dataset`); the split is read from each shard's name, and
  a shard named otherwise belongs to a split named after its folder;
- ``split-root``: a folder with split sub-folders (at least one named like `SPLIT_NAMES`)
  of class folders, ``root/train/<class>/...``; every sub-folder holding folders is a split;
- ``stac``: a STAC catalog, collection or item JSON with the label extension: its items are
  scenes, their label assets the labels, ``ml-aoi:split`` the splits (`vision.data.labelled`
  samples the windows, at 64x64 pixels from the command line, at the model's input size in a
  recipe);
- ``chips``: a folder written by ``vision data chips``: GeoTIFF chips and a ``manifest.csv``
  with their place (``scene,row_off,col_off,minx..maxy,crs,acquired``), read as a manifest;
- ``class-folders``: any other folder, ``root/<class>/*.jpg|png|tif``: one split named
  after the folder.

Class names in label order, for shards and folders: a ``classes.txt`` (one name a line) in
the dataset's folder; else, for a split root, the sorted class folder names of all its
splits together, so a class missing from one split keeps its label; else the split's own
(sorted class folders; shard labels by index). A manifest's come from its table
(`vision.data.sources.manifest_classes`). Classes given to `SplitRef.open` win over all.

A new kind of data (a STAC catalog, scenes with vector labels) is one more `Layout`: how to
recognise it, how to list its splits, and its reader; `vision.data.spec` then accepts it
on the command line, in recipes (with a `vision.data.spec.Source`) and in `vision data
check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from vision.data.sources import (
    ChipSource,
    FolderSource,
    ManifestSource,
    ShardSource,
    class_folders,
    read_table,
)
from vision.errors import ConfigError

_T = TypeVar("_T")

#: Band names or 0-based indices to keep; ``None`` for all.
Bands = Sequence[str | int] | None

#: Sub-folder names that mark a dataset root with one folder per split, in reading order.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "valid", "validation", "test", "holdout", "dev")

#: ``<name>-<split>-<index>.tar[.gz]``, e.g. ``eurosat-rgb-train-000003.tar.gz``.
SHARD_NAME = re.compile(
    r"^(?P<name>.+)-(?P<split>[A-Za-z0-9_]+)-(?P<index>\d+)\.(?:tar|tar\.gz|tgz)$"
)
SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


@dataclass(frozen=True)
class SplitRef:
    """One split of a dataset, found but not read.

    Attributes:
        name: the split's name (``train``; a file or folder name when it has none).
        layout: the key of the `Layout` in `LAYOUTS` that reads it.
        path: what is read: the folder of class folders, the manifest, or the shards' folder.
        classes: the dataset's class names in label order, when it declares them.
        shards: the shard files (``shards`` layout).
        rows: the manifest's ``split`` value to keep; ``None`` keeps every row.
    """

    name: str
    layout: str
    path: Path
    classes: tuple[str, ...] | None = None
    shards: tuple[Path, ...] = ()
    rows: str | None = None

    def open(self, classes: Sequence[str] | None = None, bands: Bands = None) -> ChipSource:
        """Read the split: its samples and labels (pixels are decoded on access).

        Args:
            classes: class names in label order (a model's, or a recipe's); default the
                dataset's own.
            bands: band names or indices to keep (GeoTIFF chips).
        """
        chosen = list(classes) if classes is not None else self.classes
        return LAYOUTS[self.layout].read(self, list(chosen) if chosen is not None else None, bands)


@dataclass(frozen=True)
class Dataset:
    """What a path holds: its splits, and how to read it all at once where that makes sense.

    Attributes:
        label: a short name for it (its file or folder name; the split's, once one is chosen).
        layout: the key of its `Layout`.
        splits: the splits, ``train, val, test`` first.
        classes: the class names it declares (see the module docstring), if any.
        whole: everything as one split, for the layouts whose files are named one by one
            (a manifest, shards); ``None`` where splits must be chosen (a split root).
        splits_named: whether the split names come from the data (split folders, shard
            names, a split column), not from a file or folder name (one set of chips).
    """

    label: str
    layout: str
    splits: tuple[SplitRef, ...]
    classes: tuple[str, ...] | None = None
    whole: SplitRef | None = None
    splits_named: bool = True

    def names(self) -> list[str]:
        """The split names, in order."""
        return [s.name for s in self.splits]

    def split(self, name: str, what: str | None = None) -> SplitRef:
        """The split called ``name``.

        Raises:
            ConfigError: there is no such split (the message lists those there are).
        """
        for s in self.splits:
            if s.name == name:
                return s
        raise ConfigError(
            f"{what or self.label} has no split {name!r} (its splits: {', '.join(self.names())})"
        )

    def select(self, name: str, what: str | None = None) -> Dataset:
        """The dataset reduced to one split, labelled with the split's name."""
        return Dataset(name, self.layout, (self.split(name, what),), self.classes)

    def one(self, what: str) -> SplitRef:
        """The split to read when none is named: the only one, or all of a file's rows.

        Raises:
            ConfigError: a folder with several splits (name one as ``WHAT:SPLIT``).
        """
        if len(self.splits) == 1:
            return self.splits[0]
        if self.whole is not None:
            return self.whole
        raise ConfigError(
            f"{what} holds the splits {', '.join(self.names())}: name one, e.g. "
            f"{what}:{self.splits[-1].name}"
        )


@dataclass(frozen=True)
class Layout:
    """One way labelled data can lie on disk.

    Attributes:
        name: its key in `LAYOUTS`.
        detect: whether an existing path has this layout.
        resolve: the `Dataset` of such a path.
        read: opens one of its splits, given the class list (or ``None``) and the bands.
    """

    name: str
    detect: Callable[[Path], bool]
    resolve: Callable[[Path], Dataset]
    read: Callable[[SplitRef, list[str] | None, Bands], ChipSource]


def resolve_path(path: Path) -> Dataset:
    """The dataset an existing file or folder holds, by the first layout that fits.

    Raises:
        ConfigError: the path does not exist, or is a file of no known kind.
    """
    if not path.exists():
        raise ConfigError(f"not found: {path}")
    for layout in LAYOUTS.values():
        if layout.detect(path):
            return layout.resolve(path)
    raise ConfigError(
        f"{path}: expected a folder, a .tar/.tar.gz shard, a .csv/.parquet manifest or a STAC "
        "label catalog .json"
    )


# --- shards ------------------------------------------------------------------------------


def is_shard(p: Path) -> bool:
    """Whether a file name is that of a tar shard (``.tar``, ``.tar.gz``, ``.tgz``)."""
    return p.name.endswith(SHARD_SUFFIXES)


def shard_split_name(shard: Path, default: str) -> str:
    """The split in a shard's name (``ds-val-000000.tar.gz`` -> ``val``), else ``default``."""
    m = SHARD_NAME.match(shard.name)
    return m.group("split") if m else default


def read_classes_txt(folder: Path) -> tuple[str, ...] | None:
    """The class names listed in ``folder/classes.txt``, or ``None`` without that file."""
    f = folder / "classes.txt"
    if not f.is_file():
        return None
    return tuple(c.strip() for c in f.read_text().splitlines() if c.strip())


def shards_dataset(shards: Sequence[Path], label: str, default_split: str,
                   whole: bool = True) -> Dataset:
    """The dataset of some shard files: split by shard name, classes from their folder.

    ``whole``: the shards were named one by one (a file, a glob), so without a split they
    are read together; a folder of shards has splits to choose from, like a split root.
    """
    by_split: dict[str, list[Path]] = {}
    for s in sorted(shards):
        by_split.setdefault(shard_split_name(s, default_split), []).append(s)
    folder = sorted(shards)[0].parent
    classes = read_classes_txt(folder)
    splits = tuple(
        SplitRef(name, "shards", folder, classes, shards=tuple(paths))
        for name, paths in order_splits(by_split).items()
    )
    every = SplitRef(label, "shards", folder, classes, shards=tuple(sorted(shards)))
    return Dataset(label, "shards", splits, classes, every if whole else None)


def _has_shards(p: Path) -> bool:
    if p.is_file():
        return is_shard(p)
    return p.is_dir() and any(f.is_file() and is_shard(f) for f in p.iterdir())


def _resolve_shards(p: Path) -> Dataset:
    if p.is_file():
        return shards_dataset([p], shard_split_name(p, p.name), p.parent.name)
    shards = [f for f in p.iterdir() if f.is_file() and is_shard(f)]
    return shards_dataset(shards, p.name, p.name, whole=False)


def _read_shards(ref: SplitRef, classes: list[str] | None, bands: Bands) -> ChipSource:
    if bands is not None:
        raise ConfigError(
            f"{ref.path}: shards hold RGB JPEGs (B04,B03,B02): band selection is not supported"
        )
    return ShardSource(ref.shards, classes)


# --- folders -----------------------------------------------------------------------------


def subdirs(p: Path) -> list[Path]:
    """The sub-folders of ``p``, hidden ones left out, sorted by name."""
    return [p / name for name in class_folders(p)]


def order_splits(by_split: dict[str, _T]) -> dict[str, _T]:
    """``train, val, test`` first (the usual reading order), then the rest by name."""
    rank = {n: i for i, n in enumerate(SPLIT_NAMES)}
    return dict(sorted(by_split.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def is_split_root(root: Path) -> bool:
    """A folder whose sub-folders are splits (``train/``, ``val/``...) of class folders."""
    return root.is_dir() and any(
        d.name.lower() in SPLIT_NAMES and subdirs(d) for d in subdirs(root)
    )


def _resolve_split_root(root: Path) -> Dataset:
    split_dirs = [d for d in subdirs(root) if subdirs(d)]
    # One class list for every split, so a class absent from one split keeps its label.
    classes = read_classes_txt(root) or tuple(
        sorted({c.name for d in split_dirs for c in subdirs(d)})
    )
    splits = tuple(
        SplitRef(name, "split-root", d, classes)
        for name, d in order_splits({d.name: d for d in split_dirs}).items()
    )
    return Dataset(root.name, "split-root", splits, classes)


def _resolve_class_folders(root: Path) -> Dataset:
    classes = read_classes_txt(root)
    ref = SplitRef(root.name, "class-folders", root, classes)
    return Dataset(root.name, "class-folders", (ref,), classes, splits_named=False)


def _read_folder(ref: SplitRef, classes: list[str] | None, bands: Bands) -> ChipSource:
    return FolderSource(ref.path, classes, bands=bands)


# --- manifests ---------------------------------------------------------------------------


def is_manifest(p: Path) -> bool:
    """Whether a path names a manifest table (``.csv`` or ``.parquet``)."""
    return p.suffix.lower() in MANIFEST_SUFFIXES


def find_manifest(folder: Path) -> Path | None:
    """``folder`` itself if it is a file, else its ``manifest.parquet`` or ``manifest.csv``."""
    if folder.is_file():
        return folder
    for name in ("manifest.parquet", "manifest.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def manifest_splits(p: Path) -> list[str]:
    """The values of a manifest's ``split`` column, in order of appearance ([] without one)."""
    rows = read_table(p, columns=["split"])
    if not rows or "split" not in rows[0]:
        return []
    values = [r["split"] for r in rows]
    return list(dict.fromkeys(str(v) for v in values))


def _resolve_manifest(p: Path) -> Dataset:
    names = manifest_splits(p)
    whole = SplitRef(p.stem, "manifest", p)
    splits = tuple(SplitRef(n, "manifest", p, rows=n) for n in names) or (whole,)
    return Dataset(p.stem, "manifest", splits, None, whole, splits_named=bool(names))


def _read_manifest(ref: SplitRef, classes: list[str] | None, bands: Bands) -> ChipSource:
    return ManifestSource(ref.path, classes, split=ref.rows, bands=bands)


# --- STAC label catalogs and chip folders (vision.data.labelled, vision.data.chips) ---------

#: Columns a chip folder's manifest has beyond ``path,label`` (`vision.data.chips`).
CHIP_COLUMNS: tuple[str, ...] = ("scene", "row_off", "col_off", "minx", "miny", "maxx", "maxy", "crs")
#: Window size of a STAC label catalog read from the command line (a recipe: model.input_size).
STAC_WINDOW = (64, 64)


def is_stac(p: Path) -> bool:
    """A ``.json`` file that says it is a STAC Catalog, Collection or Item (first 64 KiB)."""
    if not (p.is_file() and p.suffix.lower() == ".json"):
        return False
    with p.open("rb") as f:
        head = f.read(65536).decode("utf-8", errors="replace")
    return '"stac_version"' in head and re.search(r'"type"\s*:\s*"(Catalog|Collection|Feature)"', head) is not None


def _resolve_stac(p: Path) -> Dataset:
    from vision.data.stac_labels import catalog_splits

    names = catalog_splits(p)
    whole = SplitRef(p.stem, "stac", p)
    splits = tuple(SplitRef(n, "stac", p, rows=n) for n in order_splits({n: n for n in names})) or (whole,)
    return Dataset(p.stem, "stac", splits, None, whole, splits_named=bool(names))


def _read_stac(ref: SplitRef, classes: list[str] | None, bands: Bands) -> ChipSource:
    from vision.data.labelled import LabelledSpec, build
    from vision.data.sampling import SamplingOptions

    spec = LabelledSpec(kind="stac", catalog=str(ref.path), bands=tuple(bands) if bands is not None else None,
                        sampling=SamplingOptions(size=STAC_WINDOW))
    data = build(spec)
    return data.source(ref.rows, classes)


def chip_manifest(p: Path) -> Path | None:
    """A chip folder's ``manifest.csv`` (it has the `CHIP_COLUMNS`), else ``None``."""
    m = p / "manifest.csv"
    if not (p.is_dir() and m.is_file()):
        return None
    with m.open(newline="", errors="replace") as f:
        header = f.readline().strip().split(",")
    return m if {"path", "label", *CHIP_COLUMNS} <= set(header) else None


def _resolve_chips(p: Path) -> Dataset:
    m = chip_manifest(p)
    assert m is not None
    names = manifest_splits(m)
    whole = SplitRef(p.name, "chips", m)
    splits = tuple(SplitRef(n, "chips", m, rows=n) for n in names) or (whole,)
    return Dataset(p.name, "chips", splits, None, whole, splits_named=bool(names))


#: Every layout, in the order `resolve_path` tries them (class folders catch any folder).
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("manifest", lambda p: p.is_file() and is_manifest(p), _resolve_manifest,
               _read_manifest),
        Layout("stac", is_stac, _resolve_stac, _read_stac),
        Layout("chips", lambda p: chip_manifest(p) is not None, _resolve_chips, _read_manifest),
        Layout("shards", _has_shards, _resolve_shards, _read_shards),
        Layout("split-root", is_split_root, _resolve_split_root, _read_folder),
        Layout("class-folders", Path.is_dir, _resolve_class_folders, _read_folder),
    )
}


def with_classes(ref: SplitRef, classes: tuple[str, ...] | None) -> SplitRef:
    """``ref`` with ``classes`` as its declared class list, unless it declares its own."""
    return ref if ref.classes is not None or classes is None else replace(ref, classes=classes)
