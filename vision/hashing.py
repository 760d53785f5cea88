"""Content hashes: every input, model and export is identified by the sha256 of its bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stream_sha256(blocks: Iterable[bytes]) -> str:
    """Hex sha256 of the concatenation of ``blocks`` (a file read in chunks, lines of text)."""
    h = hashlib.sha256()
    for block in blocks:
        h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path, chunk: int = _CHUNK,
                on_block: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in chunks (never the whole file in memory).

    Args:
        on_block: called with the size of each block read (progress bars).
    """
    with open(path, "rb") as f:
        return stream_sha256(_blocks(f, chunk, on_block))


def _blocks(f: BinaryIO, chunk: int, on_block: Callable[[int], None] | None) -> Iterator[bytes]:
    while block := f.read(chunk):
        if on_block is not None:
            on_block(len(block))
        yield block
