"""The readers of `vision.data.sources`: shards, class folders, manifests, and the subset.

Every dataset is written here at test time (JPEGs, GeoTIFFs, tar shards, CSV and Parquet
tables); the shared EuroSAT data is only read in the tests marked ``data``.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from PIL import Image

from vision.data.sources import (
    FolderSource,
    ManifestSource,
    ShardSource,
    iter_shard,
    manifest_classes,
    read_table,
)
from vision.errors import ConfigError, UnreadableInputError


def jpeg(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(1, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, bytes, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for key, img, cls in samples:
            for ext, data in (("jpg", img), ("cls", cls)):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_tif(path: Path, bands: int = 4, seed: int = 0, names: tuple[str, ...] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(1, 3000, (bands, 8, 8)).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=bands, dtype="uint16",
                       crs="EPSG:32632", transform=Affine(10, 0, 500000, 0, -10, 5000000)) as ds:
        ds.write(data)
        if names:
            ds.descriptions = names
    return path


def write_csv(path: Path, header: list[str], rows: list[tuple[object, ...]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --- shards ------------------------------------------------------------------------------


def test_shard_source_reads_labels_bytes_and_pixels(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "ds-train-000000.tar.gz",
                        [("a", jpeg(1), b"1"), ("b", jpeg(2), b"0\n")])

    src = ShardSource([shard], ["Forest", "River"])

    assert [(r.path, r.label) for r in src.refs] == [
        ("ds-train-000000.tar.gz#a", 1), ("ds-train-000000.tar.gz#b", 0)
    ]
    assert src.raw_bytes(0) == jpeg(1)
    assert src.read(1).shape == (8, 8, 3) and src.bands == ["B04", "B03", "B02"]
    assert [key for key, _ in iter_shard(shard)] == ["a", "b"]


def test_shard_source_without_classes_names_labels_by_index(tmp_path: Path) -> None:
    """Old code required a class list (and `open_data_spec` crashed looking for train/)."""
    shard = write_shard(tmp_path / "s.tar.gz", [("a", jpeg(1), b"2"), ("b", jpeg(2), b"0")])

    assert ShardSource([shard]).classes == ["0", "1", "2"]


@pytest.mark.parametrize("cls", [b"x", b"-1", b"", b"7"])
def test_a_bad_shard_label_is_an_unreadable_input(tmp_path: Path, cls: bytes) -> None:
    """A ``.cls`` that is not a class index was a bare ValueError (a crash) before."""
    shard = write_shard(tmp_path / "s.tar.gz", [("a", jpeg(1), cls)])

    with pytest.raises(UnreadableInputError, match="sample 'a' has label"):
        ShardSource([shard], ["A", "B"])


def test_a_truncated_shard_is_an_unreadable_input(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "s.tar.gz", [(f"k{i}", jpeg(i, 32), b"0") for i in range(20)])
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])

    with pytest.raises(UnreadableInputError, match="corrupt or truncated shard"):
        ShardSource([shard], ["A"])


# --- class folders -----------------------------------------------------------------------


def test_folder_source_labels_by_class_and_selects_bands(tmp_path: Path) -> None:
    names = ("B02", "B03", "B04", "B08")
    for i, cls in enumerate(("Water", "Forest", "Forest")):
        write_tif(tmp_path / "chips" / cls / f"{i}.tif", seed=i, names=names)

    src = FolderSource(tmp_path / "chips")
    by_name = FolderSource(tmp_path / "chips", bands=["B08", "B04"])
    by_index = FolderSource(tmp_path / "chips", bands=[3, 2])

    assert src.classes == ["Forest", "Water"]
    assert [r.label for r in src.refs] == [0, 0, 1]
    assert src.bands == list(names) and src.read(0).shape == (8, 8, 4)
    assert by_name.bands == by_index.bands == ["B08", "B04"]
    np.testing.assert_array_equal(by_name.read(2), src.read(2)[..., [3, 2]])
    np.testing.assert_array_equal(by_index.read(2), by_name.read(2))


def test_folder_source_refuses_folders_outside_its_classes(tmp_path: Path) -> None:
    write_tif(tmp_path / "chips" / "Urban" / "0.tif")

    with pytest.raises(ConfigError, match=r"folders \['Urban'\] are not among classes"):
        FolderSource(tmp_path / "chips", ["Water"])
    assert len(FolderSource(tmp_path / "chips", ["Water", "Urban"])) == 1
    with pytest.raises(ConfigError, match="dataset folder not found"):
        FolderSource(tmp_path / "nothing")


def test_limit_keeps_a_seeded_subset_that_reads_the_same_chips(tmp_path: Path) -> None:
    for i in range(10):
        write_tif(tmp_path / "chips" / ("A" if i % 2 else "B") / f"{i}.tif", seed=i)
    src = FolderSource(tmp_path / "chips")

    sub = src.limit(4, seed=3)

    assert len(sub) == 4 and sub.refs == src.limit(4, seed=3).refs
    assert src.limit(None) is src and src.limit(10) is src
    i = src.refs.index(sub.refs[0])
    np.testing.assert_array_equal(sub.read(0), src.read(i))
    assert sub.classes == src.classes and sub.bands == src.bands


# --- manifests ---------------------------------------------------------------------------


@pytest.fixture()
def chips(tmp_path: Path) -> Path:
    for i in range(6):
        write_tif(tmp_path / "chips" / f"c{i}.tif", seed=i)
    return tmp_path / "chips"


def test_manifest_paths_groups_and_name_labels(tmp_path: Path, chips: Path) -> None:
    manifest = write_csv(tmp_path / "m.csv", ["path", "label", "group"], [
        ("chips/c0.tif", "Water", "north"),
        (str(chips / "c1.tif"), "Forest", ""),  # absolute
    ])

    src = ManifestSource(manifest)

    assert src.classes == ["Forest", "Water"]
    assert [(Path(r.path), r.label, r.group) for r in src.refs] == [
        (chips / "c0.tif", 1, "north"), (chips / "c1.tif", 0, None)
    ]
    assert src.read(0).shape == (8, 8, 4)


def test_manifest_classes_come_from_every_split(tmp_path: Path, chips: Path) -> None:
    """A class only in test kept its label in `vision data check` but broke training: the
    reader derived the class list from the asked split's rows alone."""
    manifest = write_csv(tmp_path / "m.csv", ["path", "label", "split"], [
        ("chips/c0.tif", 0, "train"), ("chips/c1.tif", 1, "train"), ("chips/c2.tif", 2, "test"),
    ])

    train = ManifestSource(manifest, split="train")
    test = ManifestSource(manifest, train.classes, split="test")

    assert train.classes == ["0", "1", "2"]
    assert [r.label for r in test.refs] == [2]


def test_manifest_class_name_column_names_numeric_labels(tmp_path: Path, chips: Path) -> None:
    """The reader named classes 0..n-1 where `vision data check` showed the class_name."""
    manifest = write_csv(tmp_path / "m.csv", ["path", "label", "class_name"], [
        ("chips/c0.tif", 1, "Water"), ("chips/c1.tif", 0, "Forest"), ("chips/c2.tif", 1, "Water"),
    ])

    assert ManifestSource(manifest).classes == ["Forest", "Water"]
    assert manifest_classes([{"label": "0", "class_name": "A"}, {"label": "0", "class_name": "B"}]) == ["0"]
    assert manifest_classes([{"label": "1", "class_name": "B"}]) == ["0", "1"]  # no name for 0


def test_manifest_split_that_is_not_there_is_an_error(tmp_path: Path, chips: Path) -> None:
    """Asking a manifest without a split column for `train` gave all its rows, silently."""
    plain = write_csv(tmp_path / "plain.csv", ["path", "label"], [("chips/c0.tif", 0)])
    split = write_csv(tmp_path / "split.csv", ["path", "label", "split"], [("chips/c0.tif", 0, "a")])

    with pytest.raises(ConfigError, match="no 'split' column"):
        ManifestSource(plain, split="train")
    with pytest.raises(ConfigError, match=r"no split 'b' \(its splits: a\)"):
        ManifestSource(split, split="b")


def test_parquet_manifest_and_unreadable_tables(tmp_path: Path, chips: Path) -> None:
    table = pa.table({"path": ["chips/c3.tif", "chips/c4.tif"], "label": [1, 0],
                      "split": ["val", "val"]})
    pq.write_table(table, tmp_path / "m.parquet")

    src = ManifestSource(tmp_path / "m.parquet", split="val")

    assert [r.label for r in src.refs] == [1, 0] and src.classes == ["0", "1"]
    assert read_table(tmp_path / "m.parquet", columns=["split", "nope"]) == [{"split": "val"}] * 2
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match="not a readable Parquet table"):
        ManifestSource(tmp_path / "bad.parquet")
    (tmp_path / "bad.csv").write_bytes(b"path,label\n\xff\xfe,0\n")
    with pytest.raises(ConfigError, match="cannot read the table"):
        ManifestSource(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="missing column 'label'"):
        ManifestSource(write_csv(tmp_path / "nolabel.csv", ["path"], [("chips/c0.tif",)]))
    with pytest.raises(ConfigError, match="empty manifest"):
        ManifestSource(write_csv(tmp_path / "empty.csv", ["path", "label"], []))


# --- the shared data ---------------------------------------------------------------------


@pytest.mark.data
def test_eurosat_ms_chips_read_as_13_bands(data_dir: Path) -> None:
    src = FolderSource(data_dir / "eurosat-ms" / "val")

    assert len(src) == 20 and src.read(0).shape == (64, 64, 13)
    assert src.bands[-1] == "B8A"
