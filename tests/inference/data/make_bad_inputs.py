"""Write the bad-input corpus in ``bad_inputs/`` (kept in the repository; rerun to refresh).

Each file is broken in one way that a batch job must survive: it becomes a row (or a
manifest entry) with ``status = error`` or ``nodata`` and a reason, and the rest of the batch
is classified. Good files (``good_chip.jpg``, ``good_scene.tif``, a scene across the
antimeridian) are mixed in. All are for a 3-band, 64x64 model that returns NaN logits for
a black input (`tests.inference.conftest.make_model` with ``nan_below``).

Cases that cannot live in a repository (a file name that is not UTF-8) are made at test
time by `add_runtime_cases`.

``bad_stac/`` holds STAC items (named on the command line: a folder's ``.json`` files are not
read as STAC) with their small band files: a good one, and items whose asset file is missing,
whose asset href is remote (``https``), and whose bands do not cover the model's.

    python tests/inference/data/make_bad_inputs.py
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

OUT = Path(__file__).parent / "bad_inputs"
STAC_OUT = Path(__file__).parent / "bad_stac"
UTM = "EPSG:32631"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)

#: Each file (its path in the corpus), the row status it must get and a part of the reason
#: of its error rows.
EXPECTED: dict[str, tuple[str, str | None]] = {
    "good_chip.jpg": ("ok", None),
    "good_scene.tif": ("ok", None),
    "antimeridian_scene.tif": ("ok", None),
    "empty.tif": ("error", "empty (0 bytes)"),
    "empty.jpg": ("error", "empty (0 bytes)"),
    "truncated_chip.jpg": ("error", "truncated"),
    "corrupt.jpg": ("error", "cannot decode image"),
    # Rich markup in a printed path: a folder "markup[" holding "x]corrupt.jpg"
    "markup[/x]corrupt.jpg": ("error", "cannot decode image"),
    "truncated_scene.tif": ("error", "damaged or truncated"),  # its readable windows are "ok"
    "notes.txt": ("error", "not an image file"),
    "text_named.tif": ("error", "unrecognised header"),
    "vrt_disguised.tif": ("error", "unrecognised header"),
    "huge_header.tif": ("error", "larger than allowed"),
    "huge_header.png": ("error", "larger than the model input"),
    "big_dims.png": ("error", "16000x16000 image is larger than the model input"),
    "implausible_scene.tif": ("error", "the header is wrong or the file is truncated"),
    "no_crs_scene.tif": ("error", "not georeferenced"),
    "all_nodata_scene.tif": ("nodata", None),
    "nan_float_scene.tif": ("nodata", None),
    "wrong_bands_scene.tif": ("error", "has 5 bands"),
    "wrong_bands_chip.tif": ("error", "has 5 bands"),
    "grey_chip.png": ("error", "has 1 bands"),
    "nan_logits_chip.png": ("error", "non-finite logits"),
}

#: Each STAC item of ``bad_stac/``, the status of its rows and a part of their reason.
EXPECTED_STAC: dict[str, tuple[str, str | None]] = {
    "good_item.json": ("ok", None),
    "missing_asset.json": ("error", "asset 'red' of item 'missing_asset': file not found: "),
    "http_href.json": ("error", "asset 'red' of item 'http_href': href https://example.com/red.tif is remote"),
    "bands_not_covered.json": ("error", "no asset has the model's bands ['B02']"),
}
#: The band files the items of ``bad_stac/`` point at.
STAC_FILES = ("red.tif", "green.tif", "blue.tif")

#: Made at test time by `add_runtime_cases` (name as bytes, status, reason part).
RUNTIME_CASES: tuple[tuple[bytes, str, str], ...] = (
    (b"caf\xe9_latin1_name.jpg", "error", "not valid UTF-8"),
)


def _tif(path: Path, arr: np.ndarray, crs: str | None = UTM, nodata: float | None = None,
         transform: Affine | None = TRANSFORM) -> None:
    c, h, w = arr.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": c, "dtype": arr.dtype.name,
               "compress": "deflate", "tiled": True, "blockxsize": 64, "blockysize": 64}
    if crs:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr)


def _jpeg_bytes(rng: np.random.Generator) -> bytes:
    arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _huge_tiff() -> bytes:
    """A little-endian TIFF whose header claims 2^20 x 2^20 pixels (one tiny strip)."""
    entries = [  # tag, type, count, value
        (256, 4, 1, 1 << 20), (257, 4, 1, 1 << 20), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 10 + 4), (277, 3, 1, 1), (278, 4, 1, 1 << 20),
        (279, 4, 1, 16), (284, 3, 1, 1),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def _huge_png() -> bytes:
    """A PNG whose IHDR claims 100000 x 100000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) \
        + chunk(b"IEND", b"")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` RGB pixels and whose data stops after a
    few rows: a decoder would allocate the whole image before finding out."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _implausible_scene(path: Path) -> None:
    """A 100000 x 100000 x 3 deflate GeoTIFF of a few tens of kB: sparse, no tile written,
    so only the tile index is in the file (a header no codec could make true)."""
    profile = {"driver": "GTiff", "width": 100_000, "height": 100_000, "count": 3,
               "dtype": "uint8", "compress": "deflate", "tiled": True, "blockxsize": 1024,
               "blockysize": 1024, "crs": UTM, "transform": TRANSFORM, "SPARSE_OK": True}
    with rasterio.open(path, "w", **profile):
        pass


def _item(item_id: str, assets: dict[str, tuple[str, str]]) -> dict[str, object]:
    """A STAC 1.0 item on the corpus's UTM grid; ``assets``: key -> (href, eo:bands name)."""
    w, s, e, n = 3.0, 45.1, 3.02, 45.12  # roughly where TRANSFORM is (EPSG:32631)
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n], "properties": {"datetime": "2021-06-01T10:30:00Z"}, "links": [],
        "assets": {key: {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"],
                         "eo:bands": [{"name": name, "common_name": name}]}
                   for key, (href, name) in assets.items()},
    }


def write_stac(folder: Path, rng: np.random.Generator) -> None:
    """The STAC items of `EXPECTED_STAC` and their band files, in ``folder``."""
    import json

    folder.mkdir(parents=True)
    for name in STAC_FILES:
        _tif(folder / name, rng.integers(1, 255, (1, 128, 128), dtype=np.uint8), nodata=0)
    rgb = {"red": ("./red.tif", "red"), "green": ("./green.tif", "green"), "blue": ("./blue.tif", "blue")}
    items = {
        "good_item": rgb,
        "missing_asset": {**rgb, "red": ("./gone_red.tif", "red")},
        "http_href": {**rgb, "red": ("https://example.com/red.tif", "red")},
        "bands_not_covered": {k: v for k, v in rgb.items() if k != "blue"},
    }
    for item_id, assets in items.items():
        (folder / f"{item_id}.json").write_text(json.dumps(_item(item_id, assets), indent=1) + "\n")


def add_runtime_cases(folder: Path) -> None:
    """Write `RUNTIME_CASES` into ``folder`` (a copy of the corpus)."""
    rng = np.random.default_rng(11)
    for name, _, _ in RUNTIME_CASES:
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(_jpeg_bytes(rng))


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    rng = np.random.default_rng(7)
    (OUT / "good_chip.jpg").write_bytes(_jpeg_bytes(rng))
    _tif(OUT / "good_scene.tif", rng.integers(1, 255, (3, 128, 128), dtype=np.uint8), nodata=0)
    (OUT / "empty.tif").write_bytes(b"")
    (OUT / "empty.jpg").write_bytes(b"")
    jpg = _jpeg_bytes(rng)
    (OUT / "truncated_chip.jpg").write_bytes(jpg[: len(jpg) // 3])
    (OUT / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(2000))
    big = OUT / "truncated_scene.tif"
    _tif(big, rng.integers(1, 255, (3, 256, 256), dtype=np.uint8))
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    (OUT / "notes.txt").write_text("field notes, not an image\n")
    (OUT / "text_named.tif").write_text("this is text named like a GeoTIFF\n")
    (OUT / "vrt_disguised.tif").write_text(
        '<VRTDataset rasterXSize="128" rasterYSize="128">\n'
        '  <VRTRasterBand dataType="Byte" band="1">\n'
        '    <SimpleSource><SourceFilename relativeToVRT="0">/etc/passwd</SourceFilename>'
        "</SimpleSource>\n  </VRTRasterBand>\n</VRTDataset>\n")
    (OUT / "huge_header.tif").write_bytes(_huge_tiff())
    (OUT / "huge_header.png").write_bytes(_huge_png())
    _tif(OUT / "no_crs_scene.tif", rng.integers(1, 255, (3, 128, 128), dtype=np.uint8),
         crs=None, transform=None)
    _tif(OUT / "all_nodata_scene.tif", np.zeros((3, 128, 128), np.uint8), nodata=0)
    _tif(OUT / "nan_float_scene.tif", np.full((3, 128, 128), np.nan, np.float32))
    _tif(OUT / "wrong_bands_scene.tif", rng.integers(1, 255, (5, 128, 128), dtype=np.uint8))
    _tif(OUT / "wrong_bands_chip.tif", rng.integers(1, 255, (5, 64, 64), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(OUT / "grey_chip.png")
    (OUT / "markup[").mkdir()
    (OUT / "markup[" / "x]corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(500))
    (OUT / "big_dims.png").write_bytes(_png_claiming(16000, 16000))
    _implausible_scene(OUT / "implausible_scene.tif")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(OUT / "nan_logits_chip.png")
    # EPSG:4326 from 179.7 E to 180.34 E: longitudes past 180 in the header.
    _tif(OUT / "antimeridian_scene.tif", rng.integers(1, 255, (3, 128, 128), dtype=np.uint8),
         crs="EPSG:4326", transform=Affine(0.005, 0.0, 179.7, 0.0, -0.005, -16.0))
    made = [p.relative_to(OUT).as_posix() for p in OUT.rglob("*") if p.is_file()]
    assert sorted(made) == sorted(EXPECTED)
    shutil.rmtree(STAC_OUT, ignore_errors=True)
    write_stac(STAC_OUT, rng)
    made = [p.name for p in STAC_OUT.iterdir()]
    assert sorted(made) == sorted([*EXPECTED_STAC, *STAC_FILES])


if __name__ == "__main__":
    main()
