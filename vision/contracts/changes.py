"""The change table's contract (ARCHITECTURE.md §5, "Change table") as a type.

`CHANGE_SCHEMA` is the Arrow schema of ``changes.parquet``, the table `vision change` writes:
one row per window of the latest job's grid. `ChangeRow` is one row as a typed dict (what
``table.to_pylist()`` gives). The review side (change items, before/after pages, evidence
packages) takes the column names, types and vocabularies from here.

A row describes the *after* window (the latest date) in the row's own columns (``row_off`` ..
``maxy`` in the after scene's pixels and CRS, as in the prediction table), and the *before*
window (the oldest date) in the ``*_before`` columns, in the before scene's own pixels and CRS
(the nearest window of the earlier grid when the two grids differ): enough to crop both
windows from their input files (``path_before``/``path_after``, checked by
``input_sha256_before``/``input_sha256_after``) and to name the models that decided
(``model_*_before``/``model_*_after``).

Vocabularies:

- ``status``: `STATUS_OK` (both dates assessed and confident: ``transition`` is set),
  `STATUS_UNCERTAIN` (both assessed, but a date's class probability is below
  ``--min-confidence``: neither change nor no change is claimed), `STATUS_NOT_ASSESSED`
  (either date nodata, cloudy, error, or without a window there: never "no change").
- ``transition`` (only with status ok): `TRANSITIONS`.
- ``status_before``/``status_after``: the jobs' own row status (``ok``, ``nodata``, ``cloudy``,
  ``error``) or `SOURCE_MISSING` where the job has no window at that place.
- ``alignment``: `ALIGN_SAME_GRID` (the earlier window is the same window) or
  `ALIGN_REPROJECTED` (nearest window of the earlier grid, probabilities bilinear).

The exact rules are in `inference.change.rules`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TypedDict

import pyarrow as pa

from vision.contracts.window import window_fields
from vision.errors import InputError

#: Version of this table's layout (in ``manifest.json`` of a change folder).
CHANGE_SCHEMA_VERSION = 1

STATUS_OK, STATUS_UNCERTAIN, STATUS_NOT_ASSESSED = "ok", "uncertain", "not_assessed"
CHANGE_STATUSES: tuple[str, ...] = (STATUS_OK, STATUS_UNCERTAIN, STATUS_NOT_ASSESSED)

APPEARED, DISAPPEARED, PERSISTED, ABSENT, CHANGED = (
    "appeared", "disappeared", "persisted", "absent", "changed")
#: Transitions, in the order of their codes in the change raster (`CHANGE_CODES`).
TRANSITIONS: tuple[str, ...] = (ABSENT, APPEARED, DISAPPEARED, PERSISTED, CHANGED)
#: Transitions that are a change (what ``changes.geojson`` and review items hold).
CHANGE_TRANSITIONS: tuple[str, ...] = (APPEARED, DISAPPEARED, CHANGED)

#: Value of each outcome in the change COG (uint8; `CHANGE_RASTER_NODATA` where no window).
CHANGE_CODES: dict[str, int] = {**{t: k for k, t in enumerate(TRANSITIONS)},
                                STATUS_UNCERTAIN: 5, STATUS_NOT_ASSESSED: 6}
CHANGE_RASTER_NODATA = 255
#: RGBA colour of each outcome in the change COG's colour table and in report.html.
CHANGE_COLOURS: dict[str, tuple[int, int, int, int]] = {
    ABSENT: (215, 215, 215, 255),
    APPEARED: (228, 26, 28, 255),
    DISAPPEARED: (55, 126, 184, 255),
    PERSISTED: (255, 190, 0, 255),
    CHANGED: (152, 78, 163, 255),
    STATUS_UNCERTAIN: (247, 129, 191, 255),
    STATUS_NOT_ASSESSED: (90, 90, 90, 255),
}

#: ``status_before``/``status_after`` where the job has no window at the place.
SOURCE_MISSING = "missing"
ALIGN_SAME_GRID, ALIGN_REPROJECTED = "same_grid", "reprojected"

_TS = pa.timestamp("us", tz="UTC")

#: The columns of ``changes.parquet``, in order.
CHANGE_SCHEMA = pa.schema([
    ("change_id", pa.string()),
    # the after window (latest date): the row's place, as in the prediction table
    *window_fields(),
    ("aoi_id", pa.string()),
    ("area_ha", pa.float64()),
    # the comparison
    ("item_before", pa.string()),
    ("item_after", pa.string()),
    ("acquired_before", _TS),
    ("acquired_after", _TS),
    ("class_before", pa.string()),
    ("class_after", pa.string()),
    ("p_before", pa.float32()),
    ("p_after", pa.float32()),
    ("p_interest_before", pa.float32()),
    ("p_interest_after", pa.float32()),
    ("transition", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("status_before", pa.string()),
    ("status_after", pa.string()),
    ("cloud_fraction_before", pa.float32()),
    ("cloud_fraction_after", pa.float32()),
    ("alignment", pa.string()),
    # the before window (oldest date) in its own scene's pixels and CRS
    ("path_before", pa.string()),
    *window_fields("_before"),
    ("path_after", pa.string()),
    # what the evidence needs: inputs, jobs and models of both dates
    ("input_sha256_before", pa.string()),
    ("input_sha256_after", pa.string()),
    ("job_before", pa.string()),
    ("job_after", pa.string()),
    ("model_name_before", pa.string()),
    ("model_version_before", pa.string()),
    ("model_sha256_before", pa.string()),
    ("model_name_after", pa.string()),
    ("model_version_after", pa.string()),
    ("model_sha256_after", pa.string()),
    # every date, oldest first (two entries for a pair)
    ("trajectory", pa.list_(pa.string())),
    ("trajectory_p", pa.list_(pa.float32())),
    ("trajectory_items", pa.list_(pa.string())),
    ("first_appeared", _TS),
    ("first_appeared_item", pa.string()),
    ("last_absent", _TS),
])

#: Columns a reader of the table may rely on (every column of the schema).
CHANGE_COLUMNS: tuple[str, ...] = tuple(CHANGE_SCHEMA.names)


class ChangeRow(TypedDict):
    """One row of ``changes.parquet`` (``None`` is null). See the module docstring.

    ``trajectory`` holds per date (oldest first) the date's class, or the job's status
    (``nodata``, ``cloudy``, ``error``, ``missing``) where the date was not assessed;
    ``trajectory_p`` the probability of that class (null where not assessed).
    ``first_appeared``: acquisition time of the first date at which a class of interest was
    confidently present after a date at which it was confidently absent (``last_absent``,
    the latest such date before it): the appearance happened in ``(last_absent,
    first_appeared]``.
    """

    change_id: str
    row_off: int
    col_off: int
    height: int
    width: int
    crs: str
    minx: float
    miny: float
    maxx: float
    maxy: float
    aoi_id: str | None
    area_ha: float
    item_before: str | None
    item_after: str
    acquired_before: datetime | None
    acquired_after: datetime | None
    class_before: str | None
    class_after: str | None
    p_before: float | None
    p_after: float | None
    p_interest_before: float | None
    p_interest_after: float | None
    transition: str | None
    status: str
    reason: str | None
    status_before: str
    status_after: str
    cloud_fraction_before: float | None
    cloud_fraction_after: float | None
    alignment: str | None
    path_before: str | None
    row_off_before: int | None
    col_off_before: int | None
    height_before: int | None
    width_before: int | None
    crs_before: str | None
    minx_before: float | None
    miny_before: float | None
    maxx_before: float | None
    maxy_before: float | None
    path_after: str
    input_sha256_before: str | None
    input_sha256_after: str | None
    job_before: str
    job_after: str
    model_name_before: str | None
    model_version_before: str | None
    model_sha256_before: str | None
    model_name_after: str | None
    model_version_after: str | None
    model_sha256_after: str | None
    trajectory: list[str]
    trajectory_p: list[float | None]
    trajectory_items: list[str | None]
    first_appeared: datetime | None
    first_appeared_item: str | None
    last_absent: datetime | None


class ChangeTableError(InputError, ValueError):
    """A table is not a change table of this contract (missing or mistyped columns)."""


def check_change_table(schema: pa.Schema) -> None:
    """Check that ``schema`` has every column of `CHANGE_SCHEMA` with its type (extra
    columns are allowed: a later version may add some).

    Raises:
        ChangeTableError: naming the missing or mistyped columns.
    """
    problems = []
    for f in CHANGE_SCHEMA:
        if f.name not in schema.names:
            problems.append(f"missing column {f.name!r}")
        elif not schema.field(f.name).type.equals(f.type):
            problems.append(f"column {f.name!r} is {schema.field(f.name).type}, not {f.type}")
    if problems:
        raise ChangeTableError("not a change table: " + "; ".join(problems))


def read_change_rows(path: str | Path, columns: list[str] | None = None,
                     where_status: str | None = None) -> list[ChangeRow]:
    """The rows of a ``changes.parquet`` as typed dicts, optionally only one ``status``.

    Raises:
        ChangeTableError: the file is not a change table.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from vision.contracts.predictions import string_scalar

    pf = pq.ParquetFile(path)
    check_change_table(pf.schema_arrow)
    table = pf.read(columns=columns)
    if where_status is not None:
        if "status" not in table.column_names:
            table = pf.read(columns=[*(columns or []), "status"])
        table = table.filter(pc.equal(table["status"], string_scalar(where_status)))
    return table.to_pylist()
