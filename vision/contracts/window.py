"""Where a window lies: the columns the prediction table, the change table and their review
exports share (ARCHITECTURE.md §3, "row_off .. maxy").

A window is given by its pixel offset and size in its scene (``row_off``, ``col_off``,
``height``, ``width``), the scene's CRS, and its bounds in that CRS (``minx`` .. ``maxy``).
The change table carries a second window, the before date's, under the same names with the
suffix ``_before``.
"""

from __future__ import annotations

import pyarrow as pa

#: The window's bounds in its scene's CRS, in the order of a bounding box.
BOUNDS_COLUMNS: tuple[str, ...] = ("minx", "miny", "maxx", "maxy")

_WINDOW_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("row_off", pa.int32()),
    ("col_off", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("crs", pa.string()),
    *((name, pa.float64()) for name in BOUNDS_COLUMNS),
)

#: The columns that place a window, in table order.
WINDOW_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _WINDOW_TYPES)


def window_columns(suffix: str = "") -> tuple[str, ...]:
    """`WINDOW_COLUMNS` with ``suffix`` appended (``"_before"``: the change table's before window)."""
    return tuple(name + suffix for name in WINDOW_COLUMNS)


def window_fields(suffix: str = "") -> list[pa.Field]:
    """The Arrow fields of `window_columns` ``(suffix)``, typed as in the tables."""
    return [pa.field(name + suffix, type_) for name, type_ in _WINDOW_TYPES]
