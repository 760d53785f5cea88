"""Telling chips from scenes, and reading them (`inference.readers`)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inference.readers import probe, read_chip, read_chunk
from inference.tiling import TileGrid, chunk_grid
from vision.errors import BandMismatchError

from .conftest import BAD_INPUTS, RGB_BANDS

SIZE = (64, 64)


def _bytes_name(folder: Path, name: bytes) -> str:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        f.write(b"x")
    return os.fsdecode(path)


def test_a_name_that_is_not_utf8_is_an_error_probe(tmp_path: Path) -> None:
    from inference.readers import utf8_path

    bad = _bytes_name(tmp_path, b"caf\xe9.jpg")
    shown, reason = utf8_path(bad)
    assert shown == f"{tmp_path}/caf\ufffd.jpg" and shown.encode()
    assert reason is not None and "not valid UTF-8" in reason and "caf\\xe9.jpg" in reason
    p = probe(bad, RGB_BANDS, SIZE)
    assert (p.kind, p.path, p.source) == ("error", shown, bad)
    assert utf8_path("/ok/ü.jpg") == ("/ok/ü.jpg", None)


def test_an_implausible_scene_header_is_refused_at_once() -> None:
    """100000 x 100000 x 3 pixels in 77 kB of deflate: no codec makes that true, so the
    scene is refused from its header instead of starting a job of 2.4 million windows."""
    p = probe(str(BAD_INPUTS / "implausible_scene.tif"), RGB_BANDS, SIZE)
    assert p.kind == "error", p
    assert "100000x100000 pixels x 3 bands" in str(p.error)
    assert "the header is wrong or the file is truncated" in str(p.error)


def test_max_pixels(tif_factory: Callable[..., Path]) -> None:
    scene = tif_factory("s.tif", np.ones((3, 100, 120), np.uint8))
    assert probe(str(scene), RGB_BANDS, SIZE).kind == "scene"
    refused = probe(str(scene), RGB_BANDS, SIZE, max_pixels=100 * 119)
    assert refused.kind == "error" and "--max-pixels 11,900" in str(refused.error)


def test_scene_info_knows_a_geographic_crs(tif_factory: Callable[..., Path]) -> None:
    utm = probe(str(tif_factory("u.tif", np.ones((3, 100, 100), np.uint8))), RGB_BANDS, SIZE)
    geo = probe(str(tif_factory("g.tif", np.ones((3, 100, 100), np.uint8), crs="EPSG:4326",
                                transform=(0.01, 0, 179.5, 0, -0.01, 0.0))), RGB_BANDS, SIZE)
    assert utm.scene is not None and not utm.scene.geographic and not utm.scene.wraps
    assert geo.scene is not None and geo.scene.geographic and geo.scene.wraps


def _png_header(width: int, height: int, data: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_png_size_is_checked_before_decoding(tmp_path: Path) -> None:
    """A PNG larger than the model input is refused from its header: the reason is its
    size, not whatever decoding its (here truncated) data would have run into."""
    f = tmp_path / "big.png"
    f.write_bytes(_png_header(16000, 16000, zlib.compress(b"\0" * 48001 * 2)))
    with pytest.raises(BandMismatchError, match="16000x16000 image is larger than the model input"):
        read_chip(str(f), RGB_BANDS, SIZE)


CHILD = """
import re, sys
from inference.readers import read_chip
from vision.errors import BandMismatchError
try:
    read_chip(sys.argv[1], ["B04", "B03", "B02"], (64, 64))
except BandMismatchError as exc:
    print("refused:", exc)
kb = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print("peak_kb", kb)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_real_16000_px_png_is_refused_without_decoding_it(tmp_path: Path) -> None:
    """The whole 16000 x 16000 RGB PNG (768 MB of pixels) is valid; refusing it must not
    cost its decoded size in memory (it took 3.7 GB of RSS)."""
    f = tmp_path / "huge.png"
    row = b"\0" * (1 + 3 * 16000)
    comp = zlib.compressobj(1)
    body = b"".join(comp.compress(row) for _ in range(16000)) + comp.flush()
    f.write_bytes(_png_header(16000, 16000, body))
    out = subprocess.run([sys.executable, "-c", CHILD, str(f)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: " in out.stdout and "16000x16000 image is larger" in out.stdout
    peak_mb = int(out.stdout.split("peak_kb")[1]) / 1024
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB: the image was decoded"


def test_read_chunk_hands_each_read_to_on_read(tif_factory: Callable[..., Path]) -> None:
    arr = np.random.default_rng(0).integers(1, 255, (3, 200, 260), dtype=np.uint8)
    arr[:, :10, :10] = 0
    scene = probe(str(tif_factory("s.tif", arr, nodata=0)), RGB_BANDS, SIZE).scene
    assert scene is not None
    grid = TileGrid(200, 260, SIZE, SIZE)
    seen = np.zeros((200, 260), bool)

    def on_read(read: tuple[int, int, int, int], data: np.ndarray, valid: np.ndarray) -> None:
        r0, c0, rh, rw = read
        np.testing.assert_array_equal(data, arr[:, r0: r0 + rh, c0: c0 + rw])
        np.testing.assert_array_equal(valid, (arr[:, r0: r0 + rh, c0: c0 + rw] != 0).any(axis=0))
        seen[r0: r0 + rh, c0: c0 + rw] = True

    for chunk in chunk_grid(grid, scene.block_shape):
        read_chunk(scene, grid, chunk, 0.5, None, on_read)
    assert seen.all()  # the reads cover the scene: the quicklook needs no read of its own
