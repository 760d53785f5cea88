"""`vision data check`: every kind of problem on tiny datasets written at test time.

The broken files are made here, next to what they break: a JPEG cut in half, a zero-byte
file, copies under another name, GeoTIFFs with the wrong band count, dtype or only nodata.
The shared EuroSAT data is checked in the ``data`` tier.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from tests.cli_runner import run_cli
from vision import settings
from vision.data.check import CheckReport, check_dataset

CLASSES = ["Forest", "River", "SeaLake"]


# --- chip factories ------------------------------------------------------------------------


def _pixels(seed: int, shape: tuple[int, ...] = (32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, shape, dtype=np.uint8)


def write_image(path: Path, seed: int = 0, pixels: np.ndarray | None = None) -> Path:
    """A small JPEG or PNG (by suffix) with random (or the given) pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed) if pixels is None else pixels).save(path)
    return path


def write_tif(
    path: Path,
    bands: int = 13,
    dtype: str = "uint16",
    seed: int = 0,
    fill: float | None = None,
    nodata: float | None = None,
) -> Path:
    """A 16x16 georeferenced GeoTIFF chip (UTM 32N, 10 m), random or filled with ``fill``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (bands, 16, 16)
    if fill is not None:
        data = np.full(shape, fill, dtype=dtype)
    else:
        data = np.random.default_rng(seed).integers(1, 200, shape).astype(dtype)
    with rasterio.open(
        path, "w", driver="GTiff", width=16, height=16, count=bands, dtype=dtype,
        crs="EPSG:32632", transform=Affine(10, 0, 500000, 0, -10, 5000000), nodata=nodata,
    ) as ds:
        ds.write(data)
    return path


def class_folders(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """``root/<class>/<class>_<i>.jpg`` with distinct random pixels."""
    for c, n in per_class.items():
        for i in range(n):
            seed += 1
            write_image(root / c / f"{c}_{i}.jpg", seed)
    return root


def write_shard(path: Path, samples: list[tuple[str, bytes | None, bytes | None]]) -> Path:
    """A WebDataset shard: ``<key>.jpg`` and ``<key>.cls`` members (``None`` leaves one out)."""
    with tarfile.open(path, "w:gz") as tar:
        for key, jpg, cls in samples:
            for ext, data in (("jpg", jpg), ("cls", cls)):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buf, format="JPEG")
    return buf.getvalue()


def run_check(*args: str) -> tuple[int, str]:
    """``vision data check ARGS`` in-process (the one CLI runner); the exit code and output."""
    return run_cli("data", "check", *args, "--no-progress", commands=("vision",), width=250, env={"COLUMNS": "250"})


def check(*paths: Path, **kwargs: object) -> CheckReport:
    return check_dataset([str(p) for p in paths], progress=False, **kwargs)  # type: ignore[arg-type]


# --- a healthy dataset ---------------------------------------------------------------------


def test_clean_class_folders_pass_with_their_counts(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "chips", {"Forest": 3, "River": 2})

    report = check(root)

    assert report.ok, report.errors
    assert report.warnings == []
    assert report.splits == ["chips"]
    assert report.class_counts == {"chips": {"Forest": 3, "River": 2}}
    assert report.chips == 5
    assert (report.expected_bands, report.expected_dtype) == (3, "uint8")
    assert report.expected_size == [32, 32]
    assert report.imbalance == {"chips": 1.5}
    code, out = run_check(str(root))
    assert code == 0
    assert "OK" in out and "Forest" in out


# --- the acceptance case: truncated JPEG, zero-byte file, duplicate ------------------------


@pytest.fixture()
def bad_folder(tmp_path: Path) -> Path:
    root = class_folders(tmp_path / "bad", {"Forest": 3, "River": 3})
    whole = (root / "Forest" / "Forest_0.jpg").read_bytes()
    (root / "Forest" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "River" / "empty.jpg").write_bytes(b"")
    shutil.copy(root / "Forest" / "Forest_1.jpg", root / "River" / "copy_of_forest_1.jpg")
    return root


def test_bad_folder_names_each_broken_file(bad_folder: Path) -> None:
    report = check(bad_folder)

    assert not report.ok
    by_file = {Path(e.path).name: e for e in report.errors}
    assert set(by_file) == {"truncated.jpg", "empty.jpg", "copy_of_forest_1.jpg"}
    assert by_file["truncated.jpg"].kind == "unreadable"
    assert "truncated" in by_file["truncated.jpg"].message.lower()
    assert by_file["empty.jpg"].kind == "unreadable"
    assert "0 bytes" in by_file["empty.jpg"].message
    dup = by_file["copy_of_forest_1.jpg"]
    assert dup.kind == "duplicate"
    assert "Forest_1.jpg" in dup.message and "labelled River here and Forest there" in dup.message
    # every file is counted under its folder's class, readable or not
    assert report.class_counts == {"bad": {"Forest": 4, "River": 5}}


def test_bad_folder_cli_exits_1_and_prints_each_file(bad_folder: Path) -> None:
    code, out = run_check(str(bad_folder))

    assert code == 1
    for name in ("truncated.jpg", "empty.jpg", "copy_of_forest_1.jpg"):
        assert name in out
    assert "FAILED: 3 error(s)" in out


def test_json_report_lists_every_issue(bad_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "check.json"

    code, _ = run_check(str(bad_folder), "--json", str(out), "--max-rows", "1")

    assert code == 1
    data = json.loads(out.read_text())
    assert data["ok"] is False
    assert sorted(e["kind"] for e in data["errors"]) == ["duplicate", "unreadable", "unreadable"]
    assert data["class_counts"]["bad"]["River"] == 5
    assert not list(out.parent.glob(".check.json.*"))  # the temp file was renamed away


# --- band count, dtype, nodata -------------------------------------------------------------


def test_band_count_and_dtype_minorities_are_errors(tmp_path: Path) -> None:
    root = tmp_path / "ms"
    for i in range(4):
        write_tif(root / "Forest" / f"ok_{i}.tif", seed=i)
    write_tif(root / "Forest" / "twelve_bands.tif", bands=12, seed=10)
    write_tif(root / "River" / "ok.tif", seed=11)
    write_tif(root / "River" / "bytes.tif", dtype="uint8", seed=12)

    report = check(root)

    assert (report.expected_bands, report.expected_dtype) == (13, "uint16")
    assert [(e.kind, Path(e.path).name) for e in report.errors] == [
        ("bands", "twelve_bands.tif"),
        ("dtype", "bytes.tif"),
    ]
    assert "has 12 bands, expected 13 (the majority of chips)" in report.errors[0].message

    asked = check(root, bands=12, dtype="uint8")
    assert sum(e.kind == "bands" for e in asked.errors) == 6
    assert sum(e.kind == "dtype" for e in asked.errors) == 6
    assert all("as asked" in e.message for e in asked.errors)


def test_chips_without_valid_pixels_are_errors(tmp_path: Path) -> None:
    root = tmp_path / "chips"
    write_tif(root / "A" / "valid.tif", seed=1)
    write_tif(root / "A" / "some_nodata.tif", seed=2, nodata=7)  # some pixels are 7, not all
    write_tif(root / "A" / "all_nodata.tif", fill=65535, nodata=65535)
    write_tif(root / "A" / "all_zero.tif", fill=0)
    write_tif(root / "B" / "all_nan.tif", dtype="float32", fill=float("nan"), nodata=float("nan"))
    write_image(root / "B" / "black.png", pixels=np.zeros((32, 32, 3), np.uint8))

    report = check(root)

    nodata = {Path(e.path).name: e.message for e in report.errors_of("nodata")}
    assert nodata == {
        "all_nodata.tif": "all pixels equal the nodata value 65535",
        "all_zero.tif": "all pixels are zero",
        "all_nan.tif": "all pixels are NaN",
        "black.png": "all pixels are zero",
    }


def test_a_corrupt_geotiff_is_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "chips"
    good = write_tif(root / "A" / "good.tif", seed=1)
    write_tif(root / "A" / "other.tif", seed=2)
    data = good.read_bytes()
    (root / "A" / "cut.tif").write_bytes(data[: len(data) // 3])
    (root / "A" / "notes.txt").write_text("not a chip")

    report = check(root)

    assert [(e.kind, Path(e.path).name) for e in report.errors] == [("unreadable", "cut.tif")]
    assert [(w.kind, Path(w.path).name) for w in report.warnings] == [("ignored", "notes.txt")]


# --- duplicates and leakage ----------------------------------------------------------------


def test_copies_across_split_folders_are_leakage(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    class_folders(root / "train", {"Forest": 3, "River": 3})
    class_folders(root / "test", {"Forest": 2, "River": 2}, seed=100)
    shutil.copy(root / "train" / "River" / "River_2.jpg", root / "test" / "River" / "leaked.jpg")

    report = check(root)

    assert report.splits == ["train", "test"]
    assert report.class_counts["test"] == {"Forest": 2, "River": 3}
    [leak] = report.errors
    assert leak.kind == "leakage" and leak.split == "test"
    assert Path(leak.path).name == "leaked.jpg"
    assert "River_2.jpg" in leak.message and "in split train" in leak.message


def test_several_paths_are_splits_named_after_them(tmp_path: Path) -> None:
    a = class_folders(tmp_path / "batch_a", {"Forest": 2})
    b = class_folders(tmp_path / "batch_b", {"Forest": 2}, seed=50)
    shutil.copy(a / "Forest" / "Forest_0.jpg", b / "Forest" / "again.jpg")

    report = check(a, b)

    assert report.splits == ["batch_a", "batch_b"]
    assert [(e.kind, Path(e.path).name, e.split) for e in report.errors] == [
        ("leakage", "again.jpg", "batch_b")
    ]
    code, out = run_check(str(a), str(b))
    assert code == 1 and "1 leaked chip(s)" in out


def test_same_pixels_in_different_files_are_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "chips"
    pixels = _pixels(7)
    write_image(root / "A" / "one.png", pixels=pixels)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)  # other bytes, same pixels
    (root / "A" / "two.png").write_bytes(buf.getvalue())
    write_image(root / "A" / "three.png", seed=8)

    report = check(root)

    [dup] = report.errors
    assert (dup.kind, Path(dup.path).name) == ("duplicate", "two.png")
    assert dup.message.startswith("same pixels as ")


# --- class balance -------------------------------------------------------------------------


def test_imbalance_is_a_warning_above_the_threshold(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "chips", {"Forest": 11, "River": 1})

    report = check(root)

    assert report.ok  # a warning, not an error
    assert report.imbalance["chips"] == 11.0
    [warning] = report.warnings
    assert warning.kind == "imbalance"
    assert "Forest (11)" in warning.message and "River (1)" in warning.message
    assert check(root, imbalance_threshold=20).warnings == []
    code, out = run_check(str(root))
    assert code == 0 and "imbalance" in out


# --- shards and manifests ------------------------------------------------------------------


@pytest.fixture()
def shard_dir(tmp_path: Path) -> Path:
    root = tmp_path / "shards"
    root.mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    write_shard(root / "ds-train-000000.tar.gz", [
        (f"k{i}", jpeg_bytes(i), str(i % 3).encode()) for i in range(6)
    ])
    write_shard(root / "ds-train-000001.tar.gz", [
        ("k6", jpeg_bytes(6), b"0"),
        ("nolabel", jpeg_bytes(7), None),
        ("badlabel", jpeg_bytes(8), b"9"),
    ])
    write_shard(root / "ds-val-000000.tar.gz", [
        ("v0", jpeg_bytes(20), b"1"),
        ("v1", jpeg_bytes(3), b"0"),  # the bytes of train's k3
    ])
    return root


def test_shards_split_by_name_with_label_problems_and_leakage(shard_dir: Path) -> None:
    report = check(shard_dir)

    assert report.splits == ["train", "val"]
    assert report.classes == CLASSES
    assert report.class_counts == {
        "train": {"Forest": 3, "River": 2, "SeaLake": 2},
        "val": {"Forest": 1, "River": 1, "SeaLake": 0},
    }
    problems = {(e.kind, e.path) for e in report.errors}
    assert problems == {
        ("label", "ds-train-000001.tar.gz#nolabel"),
        ("label", "ds-train-000001.tar.gz#badlabel"),
        ("leakage", "ds-val-000000.tar.gz#v1"),
    }
    leak = report.errors_of("leakage")[0]
    assert "ds-train-000000.tar.gz#k3" in leak.message
    assert [w.kind for w in report.warnings] == ["missing-class"]


def test_a_truncated_shard_is_named_and_its_samples_so_far_kept(shard_dir: Path) -> None:
    shard = shard_dir / "ds-train-000000.tar.gz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])

    report = check(shard_dir)

    broken = [e for e in report.errors if e.path == str(shard)]
    assert len(broken) == 1 and broken[0].kind == "unreadable"
    assert 0 < sum(report.class_counts["train"].values()) < 8


def test_parallel_workers_give_the_same_report(shard_dir: Path) -> None:
    one = check(shard_dir, workers=1)
    two = check(shard_dir, workers=2)

    assert two.errors == one.errors
    assert two.class_counts == one.class_counts
    assert two.chips == one.chips == 11


def test_manifest_splits_and_missing_files(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "files", {"Forest": 2, "River": 2})
    rows = [
        ("files/Forest/Forest_0.jpg", 0, "Forest", "train"),
        ("files/River/River_0.jpg", 1, "River", "train"),
        ("files/River/River_1.jpg", 1, "River", "test"),
        ("files/Forest/gone.jpg", 0, "Forest", "test"),
        (str(root / "Forest" / "Forest_0.jpg"), 0, "Forest", "test"),  # absolute, and leaked
    ]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "class_name", "split"])
        w.writerows(rows)

    report = check(manifest)

    assert report.splits == ["train", "test"]
    assert report.class_counts == {
        "train": {"Forest": 1, "River": 1},
        "test": {"Forest": 2, "River": 1},
    }
    kinds = sorted((e.kind, Path(e.path).name) for e in report.errors)
    assert kinds == [("leakage", "Forest_0.jpg"), ("unreadable", "gone.jpg")]
    assert report.errors_of("unreadable")[0].message == "file not found"


# --- usage errors: exit code 2 through the real entry point --------------------------------


def _main_exit_code(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    import vision.cli

    monkeypatch.setattr(vision.cli, "_register_plugins", lambda: None)  # only `vision data`
    monkeypatch.setattr(sys, "argv", ["vision", "data", "check", "--no-progress", *args])
    with pytest.raises(SystemExit) as exc:
        vision.cli.main()
    return int(exc.value.code or 0)


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty" / "Forest").mkdir(parents=True)
    chips = class_folders(tmp_path / "chips", {"Forest": 1})

    assert _main_exit_code(monkeypatch, str(tmp_path / "missing")) == 2
    assert "not found" in capsys.readouterr().err
    assert _main_exit_code(monkeypatch, str(tmp_path / "empty")) == 2
    assert "no chips" in capsys.readouterr().err
    assert _main_exit_code(monkeypatch, str(chips), "--dtype", "uint9") == 2
    assert "unknown dtype" in capsys.readouterr().err
    code, out = run_check(str(chips), "--bands", "0")  # option parsing (typer's own usage error)
    assert code == 2 and "--bands" in out


def test_option_usage_errors_exit_2_through_vision_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chips = class_folders(tmp_path / "chips", {"Forest": 1})
    assert _main_exit_code(monkeypatch, str(chips), "--bands", "0") == 2


# --- the shared EuroSAT data ---------------------------------------------------------------

#: Per-class counts of the shared splits (train, val, test), from shared/data/README.md.
EUROSAT_RGB_COUNTS = {
    "AnnualCrop": (1950, 300, 300),
    "Forest": (1950, 300, 300),
    "HerbaceousVegetation": (1950, 300, 300),
    "Highway": (1625, 250, 250),
    "Industrial": (1625, 250, 250),
    "Pasture": (1300, 200, 200),
    "PermanentCrop": (1625, 250, 250),
    "Residential": (1950, 300, 300),
    "River": (1625, 250, 250),
    "SeaLake": (1950, 300, 300),
}


def _shared(name: str) -> Path:
    path = settings.data_dir() / name
    if not path.is_dir():
        pytest.skip(f"{path} not found (set VISION_DATA_DIR)")
    return path


@pytest.mark.data
def test_eurosat_rgb_has_the_published_counts_and_no_leakage() -> None:
    report = check(_shared("eurosat-rgb"))

    assert report.ok, report.errors[:5]
    assert report.splits == ["train", "val", "test"]
    assert report.chips == 22950
    for cls, (train, val, test) in EUROSAT_RGB_COUNTS.items():
        assert report.class_counts["train"][cls] == train
        assert report.class_counts["val"][cls] == val
        assert report.class_counts["test"][cls] == test
    assert (report.expected_bands, report.expected_dtype, report.expected_size) == (
        3, "uint8", [64, 64]
    )
    assert report.imbalance == {"train": 1.5, "val": 1.5, "test": 1.5}
    assert report.warnings == []


@pytest.mark.data
def test_eurosat_ms_counts_and_its_missing_val_classes() -> None:
    report = check(_shared("eurosat-ms"))

    assert report.ok
    assert [sum(report.class_counts[s].values()) for s in ("train", "val", "test")] == [
        172, 20, 27
    ]
    assert (report.expected_bands, report.expected_dtype) == (13, "uint16")
    assert sorted(w.message for w in report.warnings) == [
        "class Highway has no samples in this split",
        "class Industrial has no samples in this split",
    ]


# --- data specs, the --json file, what is printed -----------------------------------------


def test_one_split_of_a_split_root_by_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ROOT:SPLIT`` was "not found" before: only the known datasets took ``:SPLIT``."""
    root = tmp_path / "dataset"
    class_folders(root / "train", {"Forest": 2, "River": 2})
    class_folders(root / "test", {"Forest": 1, "River": 3}, seed=100)

    report = check(Path(f"{root}:test"))

    assert report.splits == ["test"]
    assert report.class_counts == {"test": {"Forest": 1, "River": 3}}
    code, out = run_check(f"{root}:train", f"{root}:test")
    assert code == 0 and "no leakage" in out
    assert _main_exit_code(monkeypatch, f"{root}:holdout") == 2
    assert "has no split 'holdout'" in " ".join(capsys.readouterr().err.split())


def test_json_report_is_not_replaced_without_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = class_folders(tmp_path / "chips", {"Forest": 2})
    out = tmp_path / "check.json"
    out.write_text("keep me")

    assert _main_exit_code(monkeypatch, str(root), "--json", str(out)) == 2

    assert "exists; pass --overwrite" in " ".join(capsys.readouterr().err.split())
    assert out.read_text() == "keep me"
    code, _ = run_check(str(root), "--json", str(out), "--overwrite")
    assert code == 0 and json.loads(out.read_text())["ok"] is True


def test_paths_and_names_print_literally_not_as_markup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rich read ``[red]...[/red]`` in a path or class name as markup (and dropped it), and a
    stray ``[/x]`` in an error message crashed `vision` with a MarkupError."""
    root = tmp_path / "[red]odd[/red]"  # a folder "[red]odd[" holding "red]"
    class_folders(root, {"[bold]Forest": 2, "River": 1})
    (root / "[bold]Forest" / "[red]empty.jpg").write_bytes(b"")

    code, out = run_check(str(root))

    flat = "".join(out.split())
    assert code == 1
    assert "".join(str(root).split()) in flat  # the summary line
    assert "[bold]Forest" in out and "[red]empty.jpg" in flat  # class counts, errors table
    assert _main_exit_code(monkeypatch, str(tmp_path / "[/x]missing")) == 2
    assert "[/x]missing" in capsys.readouterr().err
