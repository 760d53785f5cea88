"""Data specs: the one way a command line or a recipe names labelled data.

Grammar of a data spec (``vision evaluate MODEL DATA``, ``vision audit``, ``vision export
--data/--calibration``, ``vision data check PATH...``)::

    SPEC  := TARGET [":" SPLIT]
    TARGET:= PATH          an existing file or folder (see the layouts below)
           | GLOB          shard files matching a pattern with * ? or [ ]
           | NAME          a known dataset, VISION_DATA_DIR/NAME (eurosat-rgb, eurosat-ms)
    SPLIT := [A-Za-z0-9_.-]+   one split of TARGET: a shard name's split, a split folder,
                               or a value of a manifest's split column

A spec that exists as a path as a whole is that path (a folder may have a ``:`` in its
name); otherwise the text after the last ``:`` is the split. An existing path wins over a
known dataset's name: write ``eurosat-rgb:test`` for VISION_DATA_DIR's copy, and
``./eurosat-rgb`` is always the local folder.

What a PATH holds is found by `vision.data.layout`: a manifest ``.csv``/``.parquet``
(``path,label[,group][,split]``); a shard ``NAME-SPLIT-NNNNNN.tar.gz`` or a folder of them
(the split from the name); a split root (``root/train/<class>/...``); a folder of class
folders. Without ``:SPLIT``, a spec names all of a manifest's rows or all the shards it
matches, the one split of a folder of class folders, and every split of a split root or
shard folder for `vision data check` (`resolve_spec`) — to read one split (`open_spec`),
a folder with several must be given one (``root:test``).

Examples: ``eurosat-rgb:test``, ``data/eurosat-rgb/eurosat-rgb-val-*.tar.gz``,
``chips/manifest.parquet:val``, ``datasets/ms``, ``datasets/ms:test``.

A recipe's ``data`` section (``source``, ``root``, ``train``/``val``/``test``) is read by
`open_split` through the same layouts: ``source`` is a key of `SOURCES`, which says which
layouts it reads and where its data is by default; a split value is a split of ``root``'s
layout, or a file, folder or glob (relative to ``root``, or for files and globs to the
working directory).

Adding a source: a `vision.data.layout.Layout` (recognise, list splits, read), and, for a
recipe's ``data.source``, one `Source` in `SOURCES`.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vision import settings
from vision.data.layout import (
    Bands,
    Dataset,
    SplitRef,
    find_manifest,
    is_shard,
    is_stac,
    read_classes_txt,
    resolve_path,
    shards_dataset,
    with_classes,
)
from vision.data.sources import ChipSource
from vision.errors import ConfigError

_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+$")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Source:
    """A value of a recipe's ``data.source``.

    Attributes:
        name: the value (``eurosat-rgb``).
        layouts: the `vision.data.layout.LAYOUTS` keys its data may have.
        known: the data is ``VISION_DATA_DIR/<name>`` by default, and ``NAME[:SPLIT]`` is a
            data spec on the command line.
        description: one line for error messages and docs.
        whole_recipe: its splits are made from the whole ``data`` section at once (labelled
            scenes: `vision.data.labelled.open_labelled_splits`), not one split at a time.
    """

    name: str
    layouts: tuple[str, ...]
    known: bool = False
    description: str = ""
    whole_recipe: bool = False


#: Every ``data.source`` a recipe may name (vision.config's ``DataConfig.source`` lists them).
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("eurosat-rgb", ("shards",), known=True,
               description="EuroSAT RGB WebDataset shards NAME-SPLIT-NNNNNN.tar.gz"),
        Source("eurosat-ms", ("split-root", "class-folders"), known=True,
               description="EuroSAT MS GeoTIFFs in split folders of class folders"),
        Source("folder", ("split-root", "class-folders"),
               description="class folders, one folder per split under root"),
        Source("manifest", ("manifest",),
               description="a CSV/Parquet table path,label[,group][,split]"),
        Source("synthetic", ("split-root", "class-folders"),
               description="the generated demo set (class folders per split)"),
        Source("scenes", (), whole_recipe=True,
               description="GeoTIFF/STAC scenes with vector labels (data.scenes, data.labels)"),
        Source("stac", ("stac",),
               description="a STAC label catalog (data.root: its catalog/collection JSON)"),
    )
}


def known_datasets() -> list[str]:
    """The names a data spec may use instead of a path."""
    return [s.name for s in SOURCES.values() if s.known]


@dataclass(frozen=True)
class DataSpec:
    """A data spec taken apart (`parse_spec`); nothing is read yet.

    Attributes:
        text: the spec as given.
        target: the path, glob or dataset name.
        kind: ``"path"``, ``"glob"`` or ``"known"``.
        split: the split asked for, if any.
    """

    text: str
    target: str
    kind: str
    split: str | None = None


def _exists(text: str) -> bool:
    return Path(text).expanduser().exists()


def parse_spec(text: str) -> DataSpec:
    """Split a data spec into its target and split (see the module docstring).

    Raises:
        ConfigError: the spec is empty.
    """
    if not text.strip():
        raise ConfigError("empty data spec: give a folder, shards, a manifest or NAME:SPLIT")
    target, split = text, None
    if not _exists(text):
        head, sep, tail = text.rpartition(":")
        if sep and head and _SPLIT.match(tail):
            target, split = head, tail
    if _exists(target):
        kind = "path"
    elif target in known_datasets():
        kind = "known"
    elif any(c in target for c in _GLOB_CHARS):
        kind = "glob"
    else:
        kind = "path"
    return DataSpec(text, target, kind, split)


def known_root(name: str) -> Path:
    """``VISION_DATA_DIR/<name>`` for a known dataset.

    Raises:
        ConfigError: it is not there.
    """
    base = settings.data_dir() / name
    if not base.is_dir():
        raise ConfigError(
            f"{name} not found at {base}: set VISION_DATA_DIR to the folder that holds it, "
            "or give the dataset's folder itself"
        )
    return base


def glob_shards(pattern: str) -> list[Path]:
    """The shard files a glob pattern matches, sorted.

    Raises:
        ConfigError: it matches no ``.tar``/``.tar.gz`` shard.
    """
    shards = [Path(s) for s in sorted(glob.glob(str(Path(pattern).expanduser()))) if is_shard(Path(s))]
    if not shards:
        raise ConfigError(
            f"not found: {pattern} (no such file or folder, and no .tar/.tar.gz shards match "
            "it as a pattern)"
        )
    return shards


def _glob_dataset(pattern: str) -> Dataset:
    shards = glob_shards(pattern)
    ds = shards_dataset(shards, shards[0].parent.name, shards[0].parent.name)
    if len(ds.splits) == 1:  # named after its split, like one shard is
        ds = Dataset(ds.splits[0].name, ds.layout, ds.splits, ds.classes, ds.whole)
    return ds


def resolve_spec(text: str) -> Dataset:
    """The dataset a spec names, reduced to its split when it names one.

    Raises:
        ConfigError: the path does not exist, the glob matches no shard, the dataset is not
            under VISION_DATA_DIR, or it has no such split.
    """
    spec = parse_spec(text)
    if spec.kind == "known":
        ds = resolve_path(known_root(spec.target))
    elif spec.kind == "glob":
        ds = _glob_dataset(spec.target)
    else:
        ds = resolve_path(Path(spec.target).expanduser())
    return ds.select(spec.split, spec.target) if spec.split is not None else ds


def open_spec(text: str, classes: Sequence[str] | None = None, bands: Bands = None) -> ChipSource:
    """Read the data a spec names: one split, or all of a manifest's rows / matched shards.

    Args:
        text: the spec (grammar in the module docstring).
        classes: class names in label order (a model's); default the dataset's own.
        bands: band names or 0-based indices to keep (GeoTIFF chips).

    Raises:
        ConfigError: as `resolve_spec`; also a folder with several splits and none named.
    """
    return resolve_spec(text).one(text).open(classes, bands)


#: `open_data_spec` is the name the callers know.
open_data_spec = open_spec


# --- recipes -----------------------------------------------------------------------------


def recipe_root(source: str, root: str | Path | None) -> tuple[Source, Path]:
    """The `Source` a recipe names and the folder (or file) its data is in.

    Raises:
        ConfigError: unknown source, no ``root`` for a source that needs one, or a known
            dataset that is not where it should be.
    """
    src = SOURCES.get(source)
    if src is None:
        raise ConfigError(f"unknown data.source {source!r}; choose from {', '.join(SOURCES)}")
    if root:
        base = Path(root).expanduser()
        if src.known and not base.is_dir():
            raise ConfigError(f"{source} not found at {base}: check data.root")
        return src, base
    if not src.known:
        raise ConfigError(f"data.root is required for source {source!r}")
    return src, known_root(source)


def _looks_like_files(split: str) -> bool:
    return split.lower().endswith((".csv", ".parquet", ".tar", ".gz", ".tgz")) or any(
        c in split for c in _GLOB_CHARS
    )


def _split_path(base: Path, split: str) -> str | None:
    """The file, folder or glob a recipe's split value names, if it names one that is there.

    Relative values are looked up under ``base``; a file or glob also in the working
    directory (as shard globs always were).
    """
    p = Path(split).expanduser()
    candidates = [p] if p.is_absolute() else [base / p]
    if not p.is_absolute() and _looks_like_files(split):
        candidates.append(p)
    for c in candidates:
        if c.exists() or (any(ch in split for ch in _GLOB_CHARS) and glob.glob(str(c))):
            return str(c)
    return None


def _checked(ds: Dataset, src: Source, what: str) -> Dataset:
    if ds.layout not in src.layouts:
        raise ConfigError(
            f"{what} is {ds.layout.replace('-', ' ')}, but data.source {src.name} reads "
            f"{src.description}"
        )
    return ds


def recipe_split(source: str, split: str, root: str | Path | None = None) -> SplitRef:
    """Where one split of a recipe's data is (``data.source``, ``data.root``, a split value).

    The value is first a split of ``root``'s layout (``train`` of a split root, of shards
    ``*-train-*.tar.gz``, or of a manifest's split column), else a folder, file or glob
    under ``root`` (a sub-folder of class folders, a manifest, shards).

    Raises:
        ConfigError: as `recipe_root`, or the value names nothing there.
    """
    src = SOURCES.get(source)
    if src is not None and src.whole_recipe:
        raise ConfigError(f"data.source {source} samples all its splits at once from the recipe's data "
                          "section: open it with vision.data.labelled.open_labelled_splits(recipe)")
    src, base = recipe_root(source, root)
    if "stac" in src.layouts and not is_stac(base):
        raise ConfigError(f"data.root {base} is not a STAC catalog, collection or item JSON (data.source {source})")
    located = find_manifest(base) if "manifest" in src.layouts else base
    ds = resolve_path(located) if located is not None and located.exists() else None
    if ds is not None and ds.layout not in src.layouts:
        ds = None
    if ds is not None and ds.splits_named and split in ds.names():
        return ds.split(split)
    target = _split_path(base, split)
    if target is None:
        if ds is not None and ds.splits_named:
            ds.split(split, str(located))  # raises, naming the splits there are
        hint = ""
        if ds is not None and located is not None and ds.layout == "manifest":
            hint = f"; {located.name} has no 'split' column: name one manifest file per split"
        raise ConfigError(
            f"data split {split!r} is no split of {base} and no file or folder there "
            f"(data.source {source}){hint}"
        )
    sub = _glob_dataset(target) if any(c in split for c in _GLOB_CHARS) else resolve_path(Path(target))
    ref = _checked(sub, src, target).one(target)
    if ref.layout == "manifest":
        return ref
    return with_classes(ref, ds.classes if ds is not None else read_classes_txt(base))


def open_split(
    source: str,
    split: str,
    root: str | Path | None = None,
    bands: Bands = None,
    classes: Sequence[str] | None = None,
) -> ChipSource:
    """Open one split of a dataset declared in a recipe's ``data`` section.

    Args:
        source: ``data.source`` (a key of `SOURCES`).
        split: ``data.train``/``val``/``test``: a split name, or a folder, file or glob.
        root: ``data.root``; default ``VISION_DATA_DIR/<source>`` for the EuroSAT sources.
        bands: ``data.bands``.
        classes: ``data.classes``, or the training split's classes for val and test.
    """
    return recipe_split(source, split, root).open(classes, bands)
