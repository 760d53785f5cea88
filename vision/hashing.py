"""Content hashes: every input, model and export is identified by the sha256 of its bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path, chunk: int = _CHUNK,
                on_block: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in chunks (never the whole file in memory).

    Args:
        on_block: called with the size of each block read (progress bars).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if on_block is not None:
                on_block(len(block))
    return h.hexdigest()
