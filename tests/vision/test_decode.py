"""The libjpeg-turbo fast path decodes exactly what PIL decodes, and refuses what PIL refuses."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.data.decode import (
    _decode_jpeg_turbo,
    decode_image_bytes,
    decode_with_pil,
    jpeg_frame,
)
from vision.errors import UnreadableInputError


def _jpeg(arr: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **save)
    return buf.getvalue()


def _texture(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(np.sin(xx / (3 + k)) + np.cos(yy / (5 + k))) * 60 + 128 for k in range(c)], -1)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return arr[..., 0] if c == 1 else arr


@pytest.mark.parametrize("save", [
    {"quality": 95, "subsampling": 0},        # 4:4:4
    {"quality": 75, "subsampling": 1},        # 4:2:2
    {"quality": 50, "subsampling": 2},        # 4:2:0
    {"quality": 90, "progressive": True},
    {"quality": 85, "optimize": True},
    {"quality": 80, "restart_marker_blocks": 2},
])
@pytest.mark.parametrize("shape", [(64, 64, 3), (63, 65, 3), (17, 9, 3), (64, 64, 1)])
def test_fast_path_equals_pil(save: dict[str, object], shape: tuple[int, int, int]) -> None:
    data = _jpeg(_texture(*shape), **save)
    fast = _decode_jpeg_turbo(data)
    assert fast is not None, "a plain 8-bit JPEG takes the fast path"
    ref = decode_with_pil(data)
    assert fast.dtype == ref.dtype == np.uint8 and fast.shape == ref.shape == shape
    np.testing.assert_array_equal(fast, ref)


def test_real_eurosat_chips_decode_identically(data_dir: Path) -> None:
    shard = data_dir / "eurosat-rgb" / "eurosat-rgb-test-000000.tar.gz"
    n = 0
    with tarfile.open(shard, "r:gz") as tar:
        for m in tar:
            if not m.name.endswith(".jpg"):
                continue
            f = tar.extractfile(m)
            assert f is not None
            data = f.read()
            fast = _decode_jpeg_turbo(data)
            assert fast is not None, m.name
            np.testing.assert_array_equal(fast, decode_with_pil(data), err_msg=m.name)
            n += 1
            if n == 1500:
                break
    assert n == 1500


def test_frame_header() -> None:
    data = _jpeg(_texture(40, 70, 3))
    assert jpeg_frame(data) == (40, 70, 3)
    assert jpeg_frame(b"\x89PNG\r\n\x1a\n") is None
    assert jpeg_frame(data[:20]) is None  # cut before the frame header


def test_truncated_jpeg_is_refused_not_padded() -> None:
    data = _jpeg(_texture(64, 64, 3))
    cut = data[: len(data) * 2 // 3]
    assert _decode_jpeg_turbo(cut) is None
    with pytest.raises(UnreadableInputError, match="cannot decode"):
        decode_image_bytes(cut, "cut.jpg")


def test_unusual_jpegs_go_to_pil() -> None:
    cmyk = io.BytesIO()
    Image.fromarray(_texture(16, 16, 3)).convert("CMYK").save(cmyk, "JPEG")
    assert _decode_jpeg_turbo(cmyk.getvalue()) is None
    out = decode_image_bytes(cmyk.getvalue())
    assert out.shape == (16, 16, 3)  # PIL converts CMYK to RGB, as before

    data = bytearray(_jpeg(_texture(8, 8, 3)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = (60000).to_bytes(2, "big") * 2  # header claims 60000 x 60000
    assert _decode_jpeg_turbo(bytes(data)) is None
    with pytest.raises(UnreadableInputError):
        decode_image_bytes(bytes(data), "bomb.jpg")


def test_png_still_decodes() -> None:
    buf = io.BytesIO()
    arr = _texture(12, 10, 3)
    Image.fromarray(arr).save(buf, "PNG")
    np.testing.assert_array_equal(decode_image_bytes(buf.getvalue()), arr)


def test_image_shape_reads_headers_only() -> None:
    """Dimensions from the header, for PNG, JPEG and other PIL formats; nothing decoded, so
    a header claiming 16000 x 16000 over a few bytes of data still answers."""
    import struct
    import zlib

    from vision.data.decode import image_shape

    assert image_shape(_jpeg(_texture(40, 70, 3))) == (40, 70)
    buf = io.BytesIO()
    Image.fromarray(_texture(33, 20, 3)).save(buf, "PNG")
    assert image_shape(buf.getvalue()) == (33, 20)
    buf = io.BytesIO()
    Image.fromarray(_texture(9, 11, 3)).save(buf, "BMP")
    assert image_shape(buf.getvalue()) == (9, 11)
    ihdr = struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
    lying = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
             + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    assert image_shape(lying) == (16000, 16000)
    assert image_shape(b"not an image") is None and image_shape(b"\x89PNG\r\n\x1a\n") is None
