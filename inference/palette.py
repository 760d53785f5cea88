"""Colours of a job's outputs: the classes' (`vision.palette`, the same for every output of
the project) and those of the windows that were not assessed.

Windows that were not assessed (``nodata``, ``cloudy``, ``error``: no model answer) have
values and colours of their own at the top of a class raster's range (`status_values`), so
a cloud never reads as a class or as "no crop here".
"""

from __future__ import annotations

from collections.abc import Sequence

from vision.contracts.predictions import STATUS_CLOUDY, STATUS_ERROR, STATUS_NODATA
from vision.palette import CYCLE, NAMED, NO_CLASS, RGB, class_colours

__all__ = ["CYCLE", "NAMED", "NOT_ASSESSED_COLOURS", "NOT_ASSESSED_NAMES", "NO_CLASS", "RGB",
           "category_names", "class_colours", "colour_table", "status_values"]

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
