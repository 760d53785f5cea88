"""Finding a job's input files (`inference.inputs`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.inputs import discover
from vision.errors import ConfigError

from .conftest import random_chips


def _bytes_name(folder: Path, name: bytes) -> str:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        f.write(b"x")
    return os.fsdecode(path)


def test_discover_gives_absolute_resolved_paths_in_a_stable_order(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "in"
    random_chips(root / "b", 2)
    random_chips(root / "a", 1)
    (root / "z.jpg").write_bytes(b"x")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "c.jpg").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "far.jpg").write_bytes(b"x")
    (root / "dirlink").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "filelink.jpg").symlink_to(tmp_path / "elsewhere" / "far.jpg")
    (root / "job").mkdir()
    (root / "job" / "out.tif").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    got = discover(["in", "in/z.jpg"], exclude=Path("in/job"))
    r = str(tmp_path.resolve())
    assert got == [f"{r}/elsewhere/far.jpg", f"{r}/in/z.jpg", f"{r}/in/a/chip_0000.jpg",
                   f"{r}/in/b/chip_0000.jpg", f"{r}/in/b/chip_0001.jpg"]
    with pytest.raises(ConfigError, match="input not found: in/nope"):
        discover(["in", "in/nope"])


def test_discover_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    bad = _bytes_name(tmp_path, b"caf\xe9.jpg")
    assert discover([str(tmp_path)]) == [bad]
