"""Class colours, defined once for every picture and colour table of the project's outputs
(a job's rasters and quicklooks, a model's STAC item).

EuroSAT's classes have colours that read as what they are (forest green, water blue, roads
grey); any other class takes the next unused colour of a qualitative palette (Tableau 20's
order, which keeps neighbours distinguishable), in class order, so a model's classes get
the same colours in every job.
"""

from __future__ import annotations

from collections.abc import Sequence

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
