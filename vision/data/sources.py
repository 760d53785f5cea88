"""Where labelled chips come from.

A `ChipSource` is a list of `SampleRef`s (what and which label) plus the means to read one
chip as raw pixels. Four readers cover the layouts we meet:

- `ShardSource`: WebDataset tar shards (``<key>.jpg`` + ``<key>.cls``), read as a stream
  straight from the (gzip) tar files: nothing is unpacked to disk;
- `FolderSource`: ``root/<class>/*.jpg|png|tif`` like torchvision's ``ImageFolder``;
  GeoTIFF chips of any band count and dtype, with band selection by name or index;
- `ManifestSource`: a CSV or Parquet table ``path,label[,group][,split]``.
"""

from __future__ import annotations

import csv
import glob
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision import settings
from vision.bands import EUROSAT_RGB_BANDS, display_names
from vision.data.decode import decode_file, decode_image_bytes
from vision.errors import ConfigError, UnreadableInputError
from vision.raster import IMAGE_SUFFIXES, open_raster


@dataclass(frozen=True)
class SampleRef:
    """One labelled chip.

    Attributes:
        path: the file, or ``shard.tar.gz#key`` for a member of a shard.
        label: class index.
        group: optional subgroup (region, sensor, season...) for subgroup metrics.
    """

    path: str
    label: int
    group: str | None = None


class ChipSource:
    """A labelled set of chips that can be read one at a time."""

    classes: list[str]
    bands: list[str]
    refs: list[SampleRef]

    def __len__(self) -> int:
        return len(self.refs)

    def read(self, index: int) -> np.ndarray:
        """Raw pixels of sample ``index`` as ``H x W x C``."""
        raise NotImplementedError

    def raw_bytes(self, index: int) -> bytes:
        """The stored bytes of sample ``index`` (for hashing and duplicate checks)."""
        return Path(self.refs[index].path).read_bytes()

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.refs], dtype=np.int64)

    def limit(self, n: int | None, seed: int = 0) -> ChipSource:
        """Keep a stratified-ish random subset of at most ``n`` samples (for smoke runs)."""
        if n is None or n >= len(self.refs):
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(self.refs))[:n])
        return _Subset(self, [int(i) for i in keep])


class _Subset(ChipSource):
    def __init__(self, parent: ChipSource, indices: list[int]):
        self.parent, self.indices = parent, indices
        self.classes, self.bands = parent.classes, parent.bands
        self.refs = [parent.refs[i] for i in indices]

    def read(self, index: int) -> np.ndarray:
        return self.parent.read(self.indices[index])

    def raw_bytes(self, index: int) -> bytes:
        return self.parent.raw_bytes(self.indices[index])


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one WebDataset shard: ``(key, {extension: bytes})``.

    Members that share a key (the name up to the first dot) are grouped; the tar is read
    sequentially (gzip works), so this never unpacks to disk.
    """
    current: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tar:  # a stream: sequential, no seeking
            for member in tar:
                if not member.isfile():
                    continue
                name = Path(member.name).name
                key, _, ext = name.partition(".")
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if current is not None and key != current:
                    yield current, parts
                    parts = {}
                current = key
                parts[ext] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnreadableInputError(f"{path}: corrupt or truncated shard ({exc})") from exc
    if current is not None:
        yield current, parts


class ShardSource(ChipSource):
    """EuroSAT-style WebDataset shards: ``<key>.jpg`` with ``<key>.cls`` (label digits).

    The shards are streamed once; the (compressed) JPEG bytes are kept in memory and decoded
    on access, so training can shuffle freely without unpacking anything to disk.
    """

    def __init__(
        self,
        shards: Sequence[str | Path],
        classes: Sequence[str],
        bands: Sequence[str] = EUROSAT_RGB_BANDS,
    ):
        if not shards:
            raise ConfigError("no shards given")
        self.shards = [str(s) for s in shards]
        self.classes, self.bands = list(classes), list(bands)
        self.refs, self._data = [], []
        for shard in self.shards:
            for key, parts in iter_shard(shard):
                img = next((parts[e] for e in ("jpg", "jpeg", "png") if e in parts), None)
                if img is None or "cls" not in parts:
                    raise UnreadableInputError(f"{shard}: sample {key!r} lacks an image or .cls")
                label = int(parts["cls"].decode().strip())
                if not 0 <= label < len(self.classes):
                    raise UnreadableInputError(f"{shard}: sample {key!r} has label {label}")
                self.refs.append(SampleRef(f"{Path(shard).name}#{key}", label))
                self._data.append(img)

    def read(self, index: int) -> np.ndarray:
        return decode_image_bytes(self._data[index], self.refs[index].path)

    def raw_bytes(self, index: int) -> bytes:
        return self._data[index]


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderSource(ChipSource):
    """``root/<class>/<file>`` with ``.jpg``, ``.png`` or ``.tif`` chips.

    Args:
        root: the folder of class folders.
        classes: class names in label order; default the sorted sub-folder names. Folders
            not in ``classes`` are an error, classes without a folder are allowed (empty).
        bands: band names or 0-based indices to keep (GeoTIFFs); ``None`` for all.
        band_names: the names of the bands *after* selection (for the model metadata).
    """

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        bands: Sequence[str | int] | None = None,
        band_names: Sequence[str] | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"dataset folder not found: {self.root}")
        found = _class_dirs(self.root)
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ConfigError(f"{self.root}: folders {unknown} are not among classes {self.classes}")
        self.refs = []
        for label, name in enumerate(self.classes):
            d = self.root / name
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    self.refs.append(SampleRef(str(f), label))
        self._select = list(bands) if bands is not None else None
        self.bands = list(band_names) if band_names else _guess_band_names(self.refs, self._select)

    def read(self, index: int) -> np.ndarray:
        return _read_selected(self.refs[index].path, self._select)


class ManifestSource(ChipSource):
    """A CSV or Parquet table with columns ``path,label[,group][,split]``.

    ``path`` is relative to the manifest's folder unless absolute; ``label`` is a class
    index or a class name; rows are filtered by ``split`` when a split is asked for.
    """

    def __init__(
        self,
        manifest: str | Path,
        classes: Sequence[str] | None = None,
        split: str | None = None,
        bands: Sequence[str | int] | None = None,
        group_column: str = "group",
    ):
        self.manifest = Path(manifest)
        rows = read_table(self.manifest)
        if not rows:
            raise ConfigError(f"{self.manifest}: empty manifest")
        for col in ("path", "label"):
            if col not in rows[0]:
                raise ConfigError(f"{self.manifest}: missing column {col!r} (need path,label)")
        if split is not None and "split" in rows[0]:
            rows = [r for r in rows if str(r["split"]) == split]
        labels = [str(r["label"]) for r in rows]
        numeric = all(lab.lstrip("-").isdigit() for lab in labels)
        if classes is None:
            if numeric:
                n = max(int(x) for x in labels) + 1 if labels else 0
                classes = [str(i) for i in range(n)]
            else:
                classes = sorted(set(labels))
        self.classes = list(classes)
        base = self.manifest.parent
        self.refs = []
        for r, lab in zip(rows, labels, strict=True):
            idx = int(lab) if numeric else self._index(lab)
            if not 0 <= idx < len(self.classes):
                raise ConfigError(f"{self.manifest}: label {lab!r} out of range")
            p = Path(str(r["path"]))
            p = p if p.is_absolute() else base / p
            g = r.get(group_column)
            self.refs.append(SampleRef(str(p), idx, None if g in (None, "") else str(g)))
        self._select = list(bands) if bands is not None else None
        self.bands = _guess_band_names(self.refs, self._select)

    def _index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError as exc:
            raise ConfigError(f"{self.manifest}: unknown class {name!r}") from exc

    def read(self, index: int) -> np.ndarray:
        return _read_selected(self.refs[index].path, self._select)


def read_table(path: Path) -> list[dict[str, object]]:
    """Rows of a CSV or Parquet file as dicts."""
    if not path.exists():
        raise ConfigError(f"manifest not found: {path}")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_selected(path: str, select: list[str | int] | None) -> np.ndarray:
    if select is None:
        return decode_file(path)
    if all(isinstance(b, int) for b in select):
        return decode_file(path, bands=[int(b) for b in select])
    return decode_file(path, band_names=[str(b) for b in select])


def _guess_band_names(refs: list[SampleRef], select: list[str | int] | None) -> list[str]:
    """Band names after selection, from the first chip (descriptions or EuroSAT order)."""
    if not refs:
        return [str(b) for b in select] if select else []
    first = Path(refs[0].path)
    if first.suffix.lower() in (".tif", ".tiff"):
        try:
            with open_raster(first) as ds:
                names = display_names(ds.descriptions)
        except UnreadableInputError:
            names = []
    else:
        names = list(EUROSAT_RGB_BANDS)
    if select is None:
        return names
    return [names[b] if isinstance(b, int) and b < len(names) else str(b) for b in select]


# --- recipe and CLI entry points -------------------------------------------------------


def eurosat_classes(root: Path) -> list[str]:
    f = root / "classes.txt"
    if f.exists():
        return [c.strip() for c in f.read_text().splitlines() if c.strip()]
    return _class_dirs(root / "train")


def open_split(
    source: str,
    split: str,
    root: str | Path | None = None,
    bands: Sequence[str | int] | None = None,
    classes: Sequence[str] | None = None,
) -> ChipSource:
    """Open one split of a dataset declared in a recipe's ``data`` section."""
    if source in ("eurosat-rgb", "eurosat-ms"):
        base = Path(root) if root else settings.data_dir() / source
        if not base.is_dir():
            raise ConfigError(
                f"{source} not found at {base}; set VISION_DATA_DIR to the folder that holds it"
            )
    else:
        if root is None:
            raise ConfigError(f"data.root is required for source {source!r}")
        base = Path(root)
    if source == "eurosat-rgb":
        p = Path(split)
        if p.suffix in (".gz", ".tar") or "*" in split:
            shards = sorted(glob.glob(split))
        else:
            shards = sorted(glob.glob(str(base / f"eurosat-rgb-{split}-*.tar*")))
        if not shards:
            raise ConfigError(f"no shards for split {split!r} under {base}")
        src: ChipSource = ShardSource(shards, classes or eurosat_classes(base))
        if bands is not None:
            raise ConfigError("eurosat-rgb is RGB (B04,B03,B02): band selection is not supported")
        return src
    if source == "manifest":
        p = Path(split)
        if p.suffix.lower() in (".csv", ".parquet"):
            return ManifestSource(p if p.is_absolute() else base / p, classes, bands=bands)
        return ManifestSource(_find_manifest(base), classes, split=split, bands=bands)
    folder = base / split
    if source == "eurosat-ms":
        return FolderSource(folder, classes or eurosat_classes(base), bands=bands)
    return FolderSource(folder, classes, bands=bands)


def _find_manifest(base: Path) -> Path:
    if base.is_file():
        return base
    for name in ("manifest.parquet", "manifest.csv"):
        if (base / name).exists():
            return base / name
    raise ConfigError(f"no manifest.csv or manifest.parquet in {base}")


def open_data_spec(
    spec: str, classes: Sequence[str] | None = None, bands: Sequence[str | int] | None = None
) -> ChipSource:
    """Open data named on the command line.

    ``spec`` is one of: ``eurosat-rgb:test`` / ``eurosat-ms:val`` (a split of a known
    dataset under VISION_DATA_DIR); a ``.tar``/``.tar.gz`` shard or glob of shards; a
    manifest ``.csv``/``.parquet``; a folder of class folders.
    """
    name, sep, split = spec.partition(":")
    if sep and name in ("eurosat-rgb", "eurosat-ms") and not Path(spec).exists():
        return open_split(name, split, bands=bands, classes=classes)
    p = Path(spec)
    if spec.endswith((".tar", ".tar.gz", ".tgz")) or "*" in spec:
        shards = sorted(glob.glob(spec))
        if not shards:
            raise ConfigError(f"no shards match {spec}")
        base = Path(shards[0]).parent
        return ShardSource(shards, classes or eurosat_classes(base))
    if p.suffix.lower() in (".csv", ".parquet"):
        return ManifestSource(p, classes, bands=bands)
    if p.is_dir():
        return FolderSource(p, classes, bands=bands)
    raise ConfigError(
        f"cannot open {spec!r}: expected eurosat-rgb:SPLIT, shards, a manifest or a folder"
    )

