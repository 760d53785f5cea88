"""Atomic file replacement, written once for every package.

A file is written to a temporary name beside its destination and ``os.replace``d onto it
when, and only when, the writing succeeded: a reader (or a resumed job) sees the old file
or the new one, never half of one. The temporary name starts with a dot and ends in
`TMP_SUFFIX`, so an interrupted writer's leftovers are recognised (`remove_temps`).

Temporary files are created with `tempfile.mkstemp` (a unique name, so two threads or
processes writing the same destination never share a temp file) and given the permissions
an ordinary ``open`` would give (``0666 & ~umask``), or ``mode`` when the caller asks for one
(owner-only files of the review service).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Suffix of every temporary file written here.
TMP_SUFFIX = ".tmp"


def _umask_mode(base: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path``, moved onto ``path`` when the block succeeds.

    The caller writes the temporary file by any means (``open``, GDAL, pyarrow). On an
    exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the destination; its folder is created when missing.
        mode: permissions of the new file; default ``0666 & ~umask``.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode() if mode is None else mode)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode(), mode)


def write_json_atomic(path: str | Path, obj: Any, mode: int | None = None) -> None:
    """Write ``obj`` as indented JSON (plus a newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", mode)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path``, moved onto it (replacing it) when the block
    succeeds, removed otherwise."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=dest.parent))
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_temps(folder: str | Path) -> int:
    """Remove leftover temporary files of interrupted writers in ``folder``; returns how many."""
    d = Path(folder)
    if not d.is_dir():
        return 0
    n = 0
    for p in d.glob(f".*{TMP_SUFFIX}"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
