"""Resolve a path typed by a user into a path inside an allow-listed root, or refuse.

Refused: empty paths, NUL bytes, absolute paths, any ``..`` component, backslashes,
percent-encoded forms of any of these (decoded repeatedly, so ``%252e%252e`` is caught),
and anything whose real path (symlinks followed) leaves the root, including symlinks
inside a submitted folder that point out of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from vision.errors import VisionError


class PathRefusedError(VisionError, PermissionError):
    """A submitted path is outside the allow-listed roots or otherwise unsafe."""


#: Most files a submitted folder may hold for the symlink scan (larger batches: split them).
MAX_SCAN = 200_000


def _decoded_forms(text: str) -> list[str]:
    forms = [text]
    for _ in range(4):
        nxt = unquote(forms[-1])
        if nxt == forms[-1]:
            break
        forms.append(nxt)
    return forms


def resolve_under(root: Path, user_path: str, scan_folder: bool = True) -> Path:
    """The real path of ``user_path`` taken relative to ``root``.

    Args:
        root: an allow-listed folder.
        user_path: what the user typed, relative to ``root``.
        scan_folder: when the result is a folder, refuse it if anything inside resolves
            outside ``root`` (symlinks).

    Raises:
        PathRefusedError: the path is unsafe, leaves the root, or does not exist.
    """
    root_real = Path(os.path.realpath(root))
    for form in _decoded_forms(user_path.strip()):
        if not form or "\x00" in form:
            raise PathRefusedError("empty path or NUL byte")
        if "\\" in form:
            raise PathRefusedError("backslashes are not allowed in paths")
        p = PurePosixPath(form)
        if p.is_absolute() or form.startswith("~"):
            raise PathRefusedError("give a path relative to the allowed folder, not an absolute one")
        if any(part == ".." for part in p.parts):
            raise PathRefusedError("'..' is not allowed in paths")
    if user_path != unquote(user_path):
        raise PathRefusedError("percent-encoded paths are not accepted")
    target = Path(os.path.realpath(root_real / user_path))
    if not _inside(target, root_real):
        raise PathRefusedError("the path leaves the allowed folder (symlink?)")
    if not target.exists():
        raise PathRefusedError(f"{user_path}: no such file or folder under the allowed root")
    if scan_folder and target.is_dir():
        scan_links(target, lambda p: _inside(p, root_real))
    return target


def resolve_in_roots(roots: tuple[Path, ...], root_index: int, user_path: str) -> Path:
    """`resolve_under` for the root chosen by index (as the submission form sends it).

    Raises:
        PathRefusedError: bad index or unsafe path.
    """
    if not 0 <= root_index < len(roots):
        raise PathRefusedError("unknown root")
    return resolve_under(roots[root_index], user_path)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def scan_links(folder: Path, allowed: Callable[[Path], bool], limit: int = MAX_SCAN) -> None:
    """Refuse ``folder`` when a symlink inside it resolves to a path ``allowed`` refuses.

    Raises:
        PathRefusedError: such a link, or more than ``limit`` entries.
    """
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            n += 1
            if n > limit:
                raise PathRefusedError(f"the folder holds more than {limit} entries")
            entry = Path(dirpath) / name
            if entry.is_symlink() and not allowed(Path(os.path.realpath(entry))):
                raise PathRefusedError(f"{entry.relative_to(folder)} links outside the allowed folders")
