"""Where labelled chips come from: the shared types and the readers.

A `ChipSource` is a list of `SampleRef`s (what and which label) plus the means to read one
chip as raw pixels. Three readers cover the layouts we meet:

- `ShardSource`: WebDataset tar shards (``<key>.jpg`` + ``<key>.cls``), read as a stream
  straight from the (gzip) tar files: nothing is unpacked to disk;
- `FolderSource`: ``root/<class>/*.jpg|png|tif`` like torchvision's ``ImageFolder``;
  GeoTIFF chips of any band count and dtype, with band selection by name or index;
- `ManifestSource`: a CSV or Parquet table ``path,label[,group][,split]``.

Which reader opens which path, and how a data spec (``eurosat-rgb:test``, a split root,
a manifest...) or a recipe's ``data`` section names a split, is `vision.data.spec`'s
business (`open_split` and `open_data_spec` here are its entry points, kept for callers).
"""

from __future__ import annotations

import csv
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

    Args:
        shards: the shard files, read in this order.
        classes: class names in label order; ``None`` names them by index (``"0"``,
            ``"1"``...) up to the largest label seen.
        bands: the band names of the images (EuroSAT RGB's by default).
    """

    def __init__(
        self,
        shards: Sequence[str | Path],
        classes: Sequence[str] | None = None,
        bands: Sequence[str] = EUROSAT_RGB_BANDS,
    ):
        if not shards:
            raise ConfigError("no shards given")
        self.shards = [str(s) for s in shards]
        self.bands = list(bands)
        self.refs, self._data = [], []
        for shard in self.shards:
            for key, parts in iter_shard(shard):
                img = next((parts[e] for e in ("jpg", "jpeg", "png") if e in parts), None)
                if img is None or "cls" not in parts:
                    raise UnreadableInputError(f"{shard}: sample {key!r} lacks an image or .cls")
                text = parts["cls"].decode(errors="replace").strip()
                label = int(text) if text.isdigit() else -1
                if label < 0 or (classes is not None and label >= len(classes)):
                    raise UnreadableInputError(f"{shard}: sample {key!r} has label {text!r}")
                self.refs.append(SampleRef(f"{Path(shard).name}#{key}", label))
                self._data.append(img)
        if classes is None:
            classes = [str(i) for i in range(max((r.label for r in self.refs), default=-1) + 1)]
        self.classes = list(classes)

    def read(self, index: int) -> np.ndarray:
        return decode_image_bytes(self._data[index], self.refs[index].path)

    def raw_bytes(self, index: int) -> bytes:
        return self._data[index]


def class_folders(root: Path) -> list[str]:
    """Names of the sub-folders of ``root`` (hidden ones left out), sorted: class folders."""
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
        found = class_folders(self.root)
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
    index or a class name; rows are filtered by ``split`` when a split is asked for. The
    class list is that of the whole table (`manifest_classes`), so every split of one
    manifest labels a class the same way.
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
        self.classes = list(classes) if classes is not None else manifest_classes(rows)
        numeric = all(_is_index(str(r["label"])) for r in rows)
        if split is not None:
            rows = _rows_of_split(self.manifest, rows, split)
        base = self.manifest.parent
        self.refs = []
        for r in rows:
            lab = str(r["label"])
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


def _is_index(label: str) -> bool:
    return label.lstrip("-").isdigit()


def _rows_of_split(manifest: Path, rows: list[dict[str, object]], split: str) -> list[dict[str, object]]:
    """The rows of one split; a split the table does not have is an error, not an empty set."""
    if "split" not in rows[0]:
        raise ConfigError(
            f"{manifest} has no 'split' column, so it has no split {split!r}: add the "
            "column, or name the manifest file itself to use all its rows"
        )
    kept = [r for r in rows if str(r["split"]) == split]
    if not kept:
        names = ", ".join(dict.fromkeys(str(r["split"]) for r in rows))
        raise ConfigError(f"{manifest} has no split {split!r} (its splits: {names})")
    return kept


def manifest_classes(rows: list[dict[str, object]]) -> list[str]:
    """Class names of a manifest, in label order, from all its rows (every split).

    Numeric labels with a ``class_name`` column that names each index consistently take
    those names; other numeric labels are named by index (``"0"`` .. the largest); class
    name labels are sorted.
    """
    labels = [str(r["label"]) for r in rows]
    if not all(_is_index(lab) for lab in labels):
        return sorted(set(labels))
    names = _class_name_column(rows)
    if names is not None:
        return names
    n = max(int(x) for x in labels) + 1 if labels else 0
    return [str(i) for i in range(n)]


def _class_name_column(rows: list[dict[str, object]]) -> list[str] | None:
    """Names from a ``class_name`` column beside numeric labels, when it is consistent.

    ``None`` without the column, when an index has two names, or when an index below the
    largest has no row (its name is unknown).
    """
    if not rows or "class_name" not in rows[0]:
        return None
    names: dict[int, str] = {}
    for r in rows:
        label, name = str(r["label"]), str(r["class_name"])
        if not label.isdigit() or names.setdefault(int(label), name) != name:
            return None
    if sorted(names) != list(range(len(names))):
        return None
    return [names[i] for i in range(len(names))]


def read_table(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Rows of a CSV or Parquet file as dicts.

    Args:
        path: the table.
        columns: read only these columns of a Parquet file (those it has); a CSV is read
            whole.

    Raises:
        ConfigError: the file is missing or not a readable table.
    """
    if not path.exists():
        raise ConfigError(f"manifest not found: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                if columns is not None:
                    names = set(pq.read_schema(path).names)
                    columns = [c for c in columns if c in names]
                return pq.read_table(path, columns=columns).to_pylist()
            except pa.ArrowException as exc:
                raise ConfigError(f"{path}: not a readable Parquet table ({exc})") from exc
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the table ({exc})") from exc


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
