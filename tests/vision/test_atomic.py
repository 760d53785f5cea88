"""vision.atomic: a destination holds the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from vision.atomic import (
    TMP_SUFFIX,
    atomic_dir,
    atomic_path,
    remove_temps,
    write_bytes_atomic,
    write_json_atomic,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "manifest.json"
    write_json_atomic(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("disk full")
    assert json.loads(dest.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_concurrent_writers_never_share_a_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    payloads = [bytes([k]) * 200_000 for k in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(5):
                write_bytes_atomic(dest, data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dest.read_bytes() in payloads  # one writer's whole file
    assert not list(tmp_path.glob(f".*{TMP_SUFFIX}"))


def test_permissions_follow_the_umask_or_the_mode_asked_for(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a", b"x")
        write_bytes_atomic(tmp_path / "b", b"x", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_atomic_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(ValueError), atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("half")
        raise ValueError
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_remove_temps_removes_only_leftovers(tmp_path: Path) -> None:
    (tmp_path / f".a.json.123{TMP_SUFFIX}").write_text("x")
    (tmp_path / "keep.tmp").write_text("not hidden: not ours")
    (tmp_path / "data.json").write_text("{}")
    assert remove_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "keep.tmp"]
