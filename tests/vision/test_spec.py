"""`vision.data.spec`: the one grammar for naming data, on the command line and in recipes.

Datasets are written at test time in every layout (split root, class folders, shards,
manifest); the shared EuroSAT data is read in the tests marked ``data``.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.data import open_data_spec, open_split
from vision.data import sources as sources_module
from vision.data.layout import resolve_path
from vision.data.spec import SOURCES, parse_spec, resolve_spec
from vision.errors import ConfigError

CLASSES = ["Forest", "River", "SeaLake"]


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(1, 255, (8, 8, 3), dtype=np.uint8)).save(
        buf, format="JPEG")
    return buf.getvalue()


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(seed))


@pytest.fixture()
def split_root(tmp_path: Path) -> Path:
    """``ds/{train,val,test}/<class>/*.jpg``; val has no SeaLake folder at all."""
    root = tmp_path / "ds"
    seed = 0
    for split, classes in (("train", CLASSES), ("val", CLASSES[:2]), ("test", CLASSES)):
        for c in classes:
            for i in range(2):
                seed += 1
                write_image(root / split / c / f"{c}_{i}.jpg", seed)
    return root


@pytest.fixture()
def shard_dir(tmp_path: Path) -> Path:
    root = tmp_path / "shards"
    root.mkdir()
    for split, n in (("train", 4), ("val", 2)):
        with tarfile.open(root / f"x-{split}-000000.tar.gz", "w:gz") as tar:
            for i in range(n):
                for ext, data in (("jpg", jpeg(100 + i)), ("cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(f"{split}{i}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


# --- the grammar -------------------------------------------------------------------------


def test_parse_spec_splits_on_the_last_colon_unless_the_path_exists(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()

    assert parse_spec(str(odd)) == parse_spec(str(odd))  # deterministic
    assert (parse_spec(str(odd)).target, parse_spec(str(odd)).split) == (str(odd), None)
    assert (parse_spec(f"{odd}:test").target, parse_spec(f"{odd}:test").split) == (str(odd), "test")
    assert parse_spec("eurosat-rgb:test").kind == "known"
    assert parse_spec("data/*.tar.gz:val").kind == "glob"
    assert parse_spec("data/*.tar.gz:val").split == "val"
    assert parse_spec("no/such:x/y").split is None  # "x/y" is no split name
    with pytest.raises(ConfigError, match="empty data spec"):
        parse_spec("  ")


def test_every_recipe_source_is_a_config_choice() -> None:
    from typing import get_args

    from vision.config import DataConfig

    assert set(get_args(DataConfig.model_fields["source"].annotation)) == set(SOURCES)


# --- a split root works wherever a spec is accepted ---------------------------------------


def test_split_root_colon_split_opens_that_split(split_root: Path) -> None:
    """`vision evaluate MODEL root:test` was "cannot open" before: only `vision data check`
    understood split roots."""
    test = open_data_spec(f"{split_root}:test")
    val = open_data_spec(f"{split_root}:val")

    assert len(test) == 6 and test.classes == CLASSES
    assert val.classes == CLASSES  # the dataset's classes, though val has no SeaLake folder
    assert {Path(r.path).parts[-3] for r in val.refs} == {"val"}
    with pytest.raises(ConfigError, match=r"has no split 'holdout' \(its splits: train, val, test\)"):
        open_data_spec(f"{split_root}:holdout")


def test_a_split_root_without_a_split_is_refused_not_misread(split_root: Path) -> None:
    """Before, the split folders were taken for classes: labels train/val/test."""
    with pytest.raises(ConfigError, match="holds the splits train, val, test: name one"):
        open_data_spec(str(split_root))


def test_same_split_through_spec_recipe_and_check(split_root: Path) -> None:
    from vision.data.check import check_dataset

    spec = open_data_spec(f"{split_root}:test")
    recipe = open_split("folder", "test", str(split_root))
    report = check_dataset([f"{split_root}:test"], progress=False)

    assert [r.path for r in spec.refs] == [r.path for r in recipe.refs]
    assert spec.classes == recipe.classes
    assert report.splits == ["test"] and report.chips == 6
    assert report.class_counts["test"] == {"Forest": 2, "River": 2, "SeaLake": 2}


def test_class_folders_and_classes_txt(split_root: Path) -> None:
    """classes.txt in a split root sets the label order for training too (only check and
    eurosat-ms read it before; `folder` recipes sorted the folder names)."""
    (split_root / "classes.txt").write_text("SeaLake\nRiver\nForest\n")

    assert open_data_spec(str(split_root / "train")).classes == CLASSES  # one folder: its own
    assert open_split("folder", "train", str(split_root)).classes == ["SeaLake", "River", "Forest"]
    assert open_data_spec(f"{split_root}:train").classes == ["SeaLake", "River", "Forest"]


# --- shards ------------------------------------------------------------------------------


def test_shard_folder_split_glob_and_file(shard_dir: Path) -> None:
    """A shard folder as a spec gave an empty FolderSource; now it is split by shard name."""
    val = open_data_spec(f"{shard_dir}:val")
    every = open_data_spec(str(shard_dir / "x-*-000000.tar.gz"))
    one = open_data_spec(str(shard_dir / "x-train-000000.tar.gz"))

    assert [r.path for r in val.refs] == ["x-val-000000.tar.gz#val0", "x-val-000000.tar.gz#val1"]
    assert val.classes == ["0", "1"]  # no classes.txt: labels by index
    assert len(every) == 6 and len(one) == 4
    assert open_data_spec(f"{shard_dir}:val", classes=CLASSES).classes == CLASSES
    with pytest.raises(ConfigError, match="holds the splits train, val"):
        open_data_spec(str(shard_dir))
    with pytest.raises(ConfigError, match="band selection is not supported"):
        open_data_spec(f"{shard_dir}:val", bands=["B04"])
    with pytest.raises(ConfigError, match="not found"):
        open_data_spec(str(shard_dir / "y-*.tar.gz"))


def test_recipe_shards_by_split_name_or_glob(shard_dir: Path) -> None:
    (shard_dir / "classes.txt").write_text("\n".join(CLASSES))

    train = open_split("eurosat-rgb", "train", str(shard_dir))
    globbed = open_split("eurosat-rgb", str(shard_dir / "x-val-*.tar.gz"), str(shard_dir))

    assert len(train) == 4 and train.classes == CLASSES
    assert len(globbed) == 2 and globbed.classes == CLASSES
    with pytest.raises(ConfigError, match="has no split 'test'"):
        open_split("eurosat-rgb", "test", str(shard_dir))
    with pytest.raises(ConfigError, match="band selection is not supported"):
        open_split("eurosat-rgb", "train", str(shard_dir), bands=[0])


# --- manifests ---------------------------------------------------------------------------


@pytest.fixture()
def manifest(split_root: Path) -> Path:
    path = split_root / "manifest.csv"
    rows = [(str(p.relative_to(split_root)), p.parent.name, p.parts[-3])
            for p in sorted(split_root.rglob("*.jpg"))]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return path


def test_manifest_spec_whole_or_one_split(manifest: Path) -> None:
    assert len(open_data_spec(str(manifest))) == 16  # a file: all its rows
    assert len(open_data_spec(f"{manifest}:val")) == 4
    assert resolve_spec(str(manifest)).names() == ["test", "train", "val"]  # order of rows


def test_recipe_manifest_split_or_file(manifest: Path) -> None:
    root = str(manifest.parent)

    assert len(open_split("manifest", "train", root)) == 6
    assert len(open_split("manifest", "manifest.csv", root)) == 16
    assert open_split("manifest", "val", root).classes == CLASSES


def test_recipe_manifest_without_split_column_refuses_a_split_name(tmp_path: Path) -> None:
    """Old: `data.train: train` on a manifest with no split column read every row, and
    `data.val: val` the same rows again."""
    write_image(tmp_path / "a.jpg", 1)
    (tmp_path / "manifest.csv").write_text("path,label\na.jpg,Forest\n")

    with pytest.raises(ConfigError, match="manifest.csv has no 'split' column"):
        open_split("manifest", "train", str(tmp_path))
    assert len(open_split("manifest", "manifest.csv", str(tmp_path))) == 1


# --- recipes: errors ----------------------------------------------------------------------


def test_recipe_errors(tmp_path: Path, split_root: Path) -> None:
    with pytest.raises(ConfigError, match="data.root is required"):
        open_split("folder", "train")
    with pytest.raises(ConfigError, match="unknown data.source 'tfrecord'"):
        open_split("tfrecord", "train", str(tmp_path))
    with pytest.raises(ConfigError, match="is not a STAC catalog, collection or item JSON"):
        open_split("stac", "train", str(tmp_path))
    with pytest.raises(ConfigError, match="samples all its splits at once"):
        open_split("scenes", "train", str(tmp_path))
    with pytest.raises(ConfigError, match="data split 'nope' is no split of .* and no file or folder there"):
        open_split("folder", "nope", str(tmp_path))
    with pytest.raises(ConfigError, match="is split root, but data.source eurosat-rgb reads"):
        open_split("eurosat-rgb", str(split_root), str(tmp_path))


def test_the_package_entry_points_are_the_spec_functions(split_root: Path) -> None:
    import vision.data
    from vision.data import spec

    assert vision.data.open_split is spec.open_split and vision.data.open_data_spec is spec.open_data_spec
    assert not hasattr(sources_module, "open_split")  # one resolver: no forwarding copy left
    a = vision.data.open_split("folder", "val", str(split_root))
    b = vision.data.open_data_spec(f"{split_root}:val")
    assert a.refs == b.refs and a.classes == b.classes
    assert resolve_path(split_root).layout == "split-root"


# --- the shared data ---------------------------------------------------------------------


@pytest.mark.data
def test_known_datasets_by_name(data_dir: Path) -> None:
    test = open_data_spec("eurosat-rgb:test")
    ms_val = open_data_spec("eurosat-ms:val")
    ms_folder = open_data_spec(f"{data_dir / 'eurosat-ms'}:val")

    assert len(test) == 2700 and test.classes[0] == "AnnualCrop"
    assert len(ms_val) == 20 and len(ms_val.classes) == 10  # Highway/Industrial: no val folder
    assert ms_folder.refs == ms_val.refs
    assert open_split("eurosat-ms", "val").refs == ms_val.refs
    with pytest.raises(ConfigError, match="eurosat-rgb has no split 'dev'"):
        open_data_spec("eurosat-rgb:dev")
    with pytest.raises(ConfigError, match="holds the splits train, val, test"):
        open_data_spec("eurosat-rgb")


def test_a_known_dataset_that_is_not_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError, match="eurosat-rgb not found at .*set VISION_DATA_DIR"):
        open_data_spec("eurosat-rgb:test")
    with pytest.raises(ConfigError, match="eurosat-ms not found at"):
        open_split("eurosat-ms", "train")
