"""Class colours, defined once for every picture and colour table of a job's outputs.

EuroSAT's classes have colours that read as what they are (forest green, water blue, roads
grey); any other class takes the next unused colour of a qualitative palette (Tableau 20's
order, which keeps neighbours distinguishable), in class order, so a model's classes get
the same colours in every job.

Windows that were not assessed (``nodata``, ``cloudy``, ``error``: no model answer) have
values and colours of their own at the top of a class raster's range (`status_values`), so
a cloud never reads as a class or as "no crop here".
"""

from __future__ import annotations

from collections.abc import Sequence

from vision.contracts.predictions import STATUS_CLOUDY, STATUS_ERROR, STATUS_NODATA

RGB = tuple[int, int, int]

#: Colours of known class names (EuroSAT, and a few common land-cover names).
NAMED: dict[str, RGB] = {
    "AnnualCrop": (228, 196, 70),
    "Forest": (34, 120, 50),
    "HerbaceousVegetation": (150, 200, 90),
    "Highway": (120, 120, 120),
    "Industrial": (200, 60, 70),
    "Pasture": (190, 230, 130),
    "PermanentCrop": (170, 110, 50),
    "Residential": (240, 140, 60),
    "River": (70, 150, 230),
    "SeaLake": (30, 70, 170),
    "Water": (30, 70, 170),
    "Cloud": (235, 235, 235),
}

#: Fallback colours, in the order they are handed out (Tableau 20).
CYCLE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)

#: Colour of windows without a class (nodata or error) where a picture must show one.
NO_CLASS: RGB = (0, 0, 0)

#: Names of the not-assessed states, as a legend (and a class raster's categories) shows them.
NOT_ASSESSED_NAMES: dict[str, str] = {
    STATUS_NODATA: "nodata (not assessed)",
    STATUS_CLOUDY: "cloudy (not assessed)",
    STATUS_ERROR: "error (not assessed)",
}
#: Colours of the not-assessed states (RGBA): nodata transparent (it is the raster's nodata
#: value), cloud a pale blue-grey unlike any class, errors magenta.
NOT_ASSESSED_COLOURS: dict[str, tuple[int, int, int, int]] = {
    STATUS_NODATA: (0, 0, 0, 0),
    STATUS_CLOUDY: (196, 206, 230, 255),
    STATUS_ERROR: (230, 0, 230, 255),
}


def class_colours(classes: Sequence[str]) -> list[RGB]:
    """One colour per class, in class order: its `NAMED` colour, else the next `CYCLE`
    colour not already taken (the cycle repeats past 20 classes, with a shade per round)."""
    taken = {NAMED[c] for c in classes if c in NAMED}
    free = [c for c in CYCLE if c not in taken]
    out: list[RGB] = []
    k = 0
    for name in classes:
        if name in NAMED:
            out.append(NAMED[name])
            continue
        base = free[k % len(free)]
        shade = (k // len(free)) % 4  # rounds past the palette get darker
        out.append((base[0] * (4 - shade) // 4, base[1] * (4 - shade) // 4,
                    base[2] * (4 - shade) // 4))
        k += 1
    return out


def status_values(top: int) -> dict[str, int]:
    """Class-raster values of the not-assessed states for a raster whose largest value is
    ``top`` (255 for uint8): nodata ``top`` (the raster's nodata value), cloudy ``top - 1``,
    error ``top - 2``. Fixed whatever the model, so a reader can rely on them."""
    return {STATUS_NODATA: top, STATUS_CLOUDY: top - 1, STATUS_ERROR: top - 2}


def colour_table(classes: Sequence[str], top: int | None = None
                 ) -> dict[int, tuple[int, int, int, int]]:
    """``{value: (r, g, b, a)}``, the form of a GDAL colour table: each class index in its
    colour and, with ``top`` (see `status_values`), the not-assessed values in theirs."""
    table = {k: (*c, 255) for k, c in enumerate(class_colours(classes))}
    if top is not None:
        table.update({v: NOT_ASSESSED_COLOURS[s] for s, v in status_values(top).items()})
    return table


def category_names(classes: Sequence[str], top: int) -> list[str]:
    """GDAL category names of a class raster: entry ``v`` names value ``v`` (the classes,
    then empty names up to the not-assessed values)."""
    names = [""] * (top + 1)
    names[:len(classes)] = list(classes)
    for status, value in status_values(top).items():
        names[value] = NOT_ASSESSED_NAMES[status]
    return names
