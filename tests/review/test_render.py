"""Pictures of the review page: the scene overview in the chosen bands, natural colour known."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from review_helpers import write_scene
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import Item
from review.jobs.files import open_input
from review.render import band_names, natural_bands


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_overview_is_drawn_in_the_chosen_bands(client_for: Any, job_id: int, db: Database) -> None:
    rev, _ = client_for("rev")
    with db.read() as s:
        item = s.execute(select(Item).where(Item.job_id == job_id, Item.row_off.is_not(None))).scalars().first()
    assert item is not None
    url = f"/items/{item.id}/overview.png"
    natural, false_colour = rev.get(url), rev.get(url + "?bands=4,3,2")
    assert natural.status_code == false_colour.status_code == 200
    a, b = _pixels(natural.content), _pixels(false_colour.content)
    assert a.shape == b.shape and not np.array_equal(a, b)
    # the default is natural colour: the same picture as asking for B04,B03,B02 by number
    assert np.array_equal(a, _pixels(rev.get(url + "?bands=3,2,1").content))
    # the window is outlined in red in every combination
    assert (b[..., 0] == 255).any() and ((b[..., 0] == 255) & (b[..., 1] == 0)).any()
    assert rev.get(url + "?bands=9,3,2").status_code == 400
    assert rev.get(url + "?bands=4,3").status_code == 400


def _tif(path: Path, count: int, names: list[str] | None) -> Path:
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": count, "dtype": "uint8",
               "crs": "EPSG:32632", "transform": from_origin(500000.0, 5200000.0, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((count, 8, 8), np.uint8))
        for i, n in enumerate(names or [], start=1):
            ds.set_band_description(i, n)
    return path


def test_natural_colour_is_known_per_file(tmp_path: Path) -> None:
    roots = (tmp_path,)
    write_scene(tmp_path / "s2.tif")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "chip.png")
    cases = {
        "s2.tif": [3, 2, 1],  # B02 B03 B04 B08
        "chip.png": [1, 2, 3],
        "rgb.tif": [1, 2, 3],  # three unnamed bands: a photo
        "stac.tif": [2, 1, 3],  # named by STAC common names
        "four.tif": None,  # four unnamed bands: nobody knows which are red, green, blue
        "grey.tif": None,
    }
    _tif(tmp_path / "rgb.tif", 3, None)
    _tif(tmp_path / "stac.tif", 3, ["green", "red", "blue"])
    _tif(tmp_path / "four.tif", 4, None)
    _tif(tmp_path / "grey.tif", 1, None)
    for name, want in cases.items():
        with open_input(str(tmp_path / name), roots) as src:
            assert natural_bands(src, band_names(src)) == want, name
