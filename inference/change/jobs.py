"""Reading `vision infer` job folders for change detection, through their file formats only
(``manifest.json``, ``_SUCCESS``, ``predictions.parquet``; ARCHITECTURE.md §3 and §5).

A job is read in two streaming passes over its table (batches, never the whole table): this
module's pass finds each scene's window grid, and `inference.change.cells` writes the windows'
values onto it. Each scene's grid is rebuilt from the rows themselves: the window size, the
stride (the manifest's ``options.stride``, else the greatest common divisor of the offsets),
and the scene's geotransform from the windows' bounds (north-up scenes; every row is checked
against it). The class COGs are not used: their layout is the writer's business, the table is
the contract.

Both schemas are read. Schema 2 rows carry ``item_id``, ``acquired``, ``cloud_fraction`` and
``aoi_id``; for schema 1 the item id is the scene file's stem and the acquisition time comes
from the manifest (an input entry's ``acquired``/``datetime``) or from ``--dates``
(`resolve_dates`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from affine import Affine

from inference.change.arrow import codes, numeric, timestamps_us, validity
from vision.contracts.window import WINDOW_COLUMNS
from vision.errors import ConfigError, InputError

MANIFEST, SUCCESS, PREDICTIONS = "manifest.json", "_SUCCESS", "predictions.parquet"
MAX_MANIFEST_BYTES = 64 * 2**20
#: Largest window grid of one scene (cells: a 640,000-pixel square scene of 64-pixel windows)
#: and side (window indices are exact in the float32 cell rasters); a table claiming more is refused.
MAX_CELLS = 100_000_000
MAX_SIDE = 2**24
BATCH_ROWS = 65_536

REQUIRED = ("path", *WINDOW_COLUMNS, "status", "label", "probs", "input_sha256", "model_name", "model_version",
            "model_sha256")
SCHEMA2 = ("item_id", "acquired", "cloud_fraction", "aoi_id")


class JobReadError(InputError):
    """A job folder's files cannot be read or do not follow the contract."""


@dataclass(frozen=True)
class ModelIdentity:
    """Which model decided: name, version, sha256 of the ONNX file."""

    name: str | None
    version: str | None
    sha256: str | None

    def short(self) -> str:
        return f"{self.name} {self.version} ({(self.sha256 or '?')[:12]})"


@dataclass(frozen=True)
class SceneGrid:
    """The window grid of one scene of a job.

    Attributes:
        index: position among the job's scenes.
        path: the input file as the job recorded it.
        item_id: STAC item id, or the file stem (schema 1).
        acquired_us: acquisition time, microseconds since the epoch (UTC), or ``None``.
        transform: the scene's pixel geotransform (rebuilt from the rows).
        size: window ``(height, width)`` in pixels; stride: window step.
        rows, cols: the window grid's shape; shape: the scene's pixel shape.
        n_rows: table rows of the scene.
    """

    index: int
    path: str
    item_id: str
    acquired_us: int | None
    crs: str
    transform: Affine
    size: tuple[int, int]
    stride: tuple[int, int]
    rows: int
    cols: int
    shape: tuple[int, int]
    sha256: str | None
    n_rows: int

    @property
    def cell_transform(self) -> Affine:
        """One pixel per window, centred on it (`inference.tiling.TileGrid.grid_transform`)."""
        (sh, sw), (h, w) = self.stride, self.size
        return self.transform @ Affine.translation((w - sw) / 2, (h - sh) / 2) @ Affine.scale(sw, sh)

    def acquired(self) -> datetime | None:
        return None if self.acquired_us is None else datetime.fromtimestamp(self.acquired_us / 1e6, UTC)


@dataclass
class Job:
    """A finished job folder, read for change detection."""

    root: Path
    given: str
    manifest: dict[str, Any]
    classes: tuple[str, ...]
    model: ModelIdentity
    scenes: list[SceneGrid]
    columns: frozenset[str]
    num_rows: int
    acquired_source: str = "table"
    aoi_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.given

    @property
    def schema(self) -> int:
        return 2 if all(c in self.columns for c in SCHEMA2) else 1

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS

    def acquired_range(self) -> tuple[int, int]:
        times = [s.acquired_us for s in self.scenes if s.acquired_us is not None]
        if len(times) != len(self.scenes):
            raise ConfigError(f"job {self.given}: acquisition time unknown (give --dates)")
        return min(times), max(times)


def _read_manifest(root: Path, given: str) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{given}: not a `vision infer` job folder (no {MANIFEST})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise JobReadError(f"{given}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobReadError(f"{given}: {MANIFEST} is unreadable ({exc})") from exc
    if not isinstance(obj, dict):
        raise JobReadError(f"{given}: {MANIFEST} is not a JSON object")
    return obj


def _classes(manifest: dict[str, Any], given: str) -> tuple[str, ...]:
    model = manifest.get("model")
    classes = model.get("classes") if isinstance(model, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise JobReadError(f"{given}: {MANIFEST} has no model.classes list")
    if len(set(classes)) != len(classes):
        raise JobReadError(f"{given}: {MANIFEST} lists a class twice: {classes}")
    return tuple(classes)


def _manifest_stride(manifest: dict[str, Any]) -> tuple[int, int] | None:
    opts = manifest.get("options")
    s = opts.get("stride") if isinstance(opts, dict) else None
    if isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s):
        return s[0], s[1]
    return None


def _manifest_inputs(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    inputs = manifest.get("inputs")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(inputs, list):
        for e in inputs:
            if isinstance(e, dict) and isinstance(e.get("path"), str):
                out[e["path"]] = e
    return out


def parse_time(value: str, what: str) -> int:
    """An ISO 8601 date or date-time as microseconds since the epoch (naive: UTC).

    Raises:
        ConfigError: not an ISO date.
    """
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r} is not an ISO date (e.g. 2024-06-30 or "
                          "2024-06-30T10:30:00Z)") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(round(t.timestamp() * 1e6))


@dataclass
class _Acc:
    """What pass 1 gathers about one scene."""

    n: int = 0
    rmax: int = 0
    cmax: int = 0
    gcd_r: int = 0
    gcd_c: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    crs: set[str] = field(default_factory=set)
    sha: set[str | None] = field(default_factory=set)
    items: set[str | None] = field(default_factory=set)
    acquired: set[int] = field(default_factory=set)
    transform: tuple[float, float, float, float] | None = None  # a, x0, e, y0
    misfit: float = 0.0


def _acquired(col: Any, given: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``acquired`` column as microseconds (UTC) and validity: a timestamp column, or ISO
    strings (a writer that kept them as text)."""
    import pyarrow as pa

    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        return timestamps_us(col)
    idx, names = codes(col)
    times = np.array([parse_time(str(v), f"{given}: acquired") for v in names] or [0], np.int64)
    return np.where(idx >= 0, times[np.maximum(idx, 0)], 0), idx >= 0


def _models(batch: Any) -> set[ModelIdentity]:
    out = set()
    parts = [codes(batch.column(c)) for c in ("model_name", "model_version", "model_sha256")]
    combo = np.stack([p[0] for p in parts], axis=1) if batch.num_rows else np.zeros((0, 3), np.int64)
    for row in np.unique(combo, axis=0):
        vals = [p[1][k] if k >= 0 else None for p, k in zip(parts, row, strict=True)]
        out.add(ModelIdentity(*vals))
    return out


def _fit(acc: _Acc, r: np.ndarray, c: np.ndarray, h: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
    """Rebuild (first rows) or check the scene's north-up geotransform against the bounds."""
    minx, miny, maxx, maxy = b
    if acc.transform is None:
        a = (maxx[0] - minx[0]) / w[0]
        e = -(maxy[0] - miny[0]) / h[0]
        acc.transform = (a, minx[0] - c[0] * a, e, maxy[0] - r[0] * e)
    a, x0, e, y0 = acc.transform
    err = max(np.abs(x0 + c * a - minx).max(), np.abs(x0 + (c + w) * a - maxx).max(),
              np.abs(y0 + r * e - maxy).max(), np.abs(y0 + (r + h) * e - miny).max())
    acc.misfit = max(acc.misfit, float(err) / max(abs(a), abs(e), 1e-300))


def _scan(job: Job, on_rows: Any) -> dict[str, _Acc]:
    """Pass 1: per scene path, the facts of its rows."""
    accs: dict[str, _Acc] = {}
    models: set[ModelIdentity] = set()
    aois: set[str] = set()
    cols = [c for c in (*REQUIRED, *SCHEMA2) if c in job.columns and c not in ("status", "label", "probs")]
    pf = pq.ParquetFile(job.predictions)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
        n = batch.num_rows
        models |= _models(batch)
        if "aoi_id" in job.columns:
            aois |= {str(a) for a in codes(batch.column("aoi_id"))[1] if a is not None}
        scene = validity(batch.column("row_off"))
        if not scene.any():
            on_rows(n)
            continue
        pcode, pnames = codes(batch.column("path"))
        ints = {k: numeric(batch.column(k), np.int64, fill=-1) for k in ("row_off", "col_off", "height", "width")}
        bounds = np.stack([numeric(batch.column(k), np.float64, fill=np.nan)
                           for k in ("minx", "miny", "maxx", "maxy")])
        crs_c, crs_n = codes(batch.column("crs"))
        sha_c, sha_n = codes(batch.column("input_sha256"))
        item_c, item_n = codes(batch.column("item_id")) if "item_id" in job.columns else (
            np.full(n, -1), [])
        if "acquired" in job.columns:
            acq, acq_ok = _acquired(batch.column("acquired"), job.given)
        else:
            acq, acq_ok = np.zeros(n, np.int64), np.zeros(n, bool)
        for u in np.unique(pcode[scene]):
            m = scene & (pcode == u)
            path = pnames[u] if u >= 0 else None
            if path is None:
                raise JobReadError(f"{job.given}: a window row has no path")
            acc = accs.setdefault(path, _Acc())
            r, c, h, w = (ints[k][m] for k in ("row_off", "col_off", "height", "width"))
            bb = bounds[:, m]
            if (r < 0).any() or (c < 0).any() or (h < 1).any() or (w < 1).any():
                raise JobReadError(f"{job.given}: {path}: a window has a negative offset or no size")
            if not np.isfinite(bb).all():
                raise JobReadError(f"{job.given}: {path}: a window has no bounds")
            acc.n += int(m.sum())
            acc.rmax, acc.cmax = max(acc.rmax, int(r.max())), max(acc.cmax, int(c.max()))
            acc.gcd_r = int(np.gcd.reduce(np.append(r, acc.gcd_r)))
            acc.gcd_c = int(np.gcd.reduce(np.append(c, acc.gcd_c)))
            acc.sizes |= {(int(a), int(b)) for a, b in np.unique(np.stack([h, w], 1), axis=0)}
            acc.crs |= {crs_n[k] if k >= 0 else "" for k in np.unique(crs_c[m])}
            acc.sha |= {sha_n[k] if k >= 0 else None for k in np.unique(sha_c[m])}
            acc.items |= {item_n[k] if k >= 0 else None for k in np.unique(item_c[m])}
            acc.acquired |= {int(t) for t in np.unique(acq[m][acq_ok[m]])}
            _fit(acc, r, c, h, w, bb)
        on_rows(n)
    if len(models) > 1:
        raise JobReadError(f"{job.given}: its rows name {len(models)} models "
                           f"({', '.join(sorted(m.short() for m in models))}); a job has one")
    if models:
        job.model = models.pop()
    job.aoi_ids = sorted(aois)
    return accs


def _grid(job: Job, k: int, path: str, acc: _Acc, stride: tuple[int, int] | None,
          entry: dict[str, Any]) -> SceneGrid:
    where = f"{job.given}: {path}"
    if len(acc.sizes) != 1:
        raise JobReadError(f"{where}: windows of several sizes {sorted(acc.sizes)}")
    size = next(iter(acc.sizes))
    if len(acc.crs) != 1 or "" in acc.crs:
        raise JobReadError(f"{where}: windows without one CRS ({sorted(acc.crs)})")
    if acc.misfit > 1e-3:
        raise JobReadError(f"{where}: the windows' bounds do not follow one north-up grid (off by "
                           f"{acc.misfit:.3g} pixels); vision change needs north-up scenes")
    if stride is None:
        stride = (acc.gcd_r or size[0], acc.gcd_c or size[1])
    elif acc.gcd_r % stride[0] or acc.gcd_c % stride[1]:
        raise JobReadError(f"{where}: window offsets are not multiples of the manifest's stride {list(stride)}")
    rows, cols = acc.rmax // stride[0] + 1, acc.cmax // stride[1] + 1
    grid = entry.get("grid")
    if isinstance(grid, list) and len(grid) == 2 and all(isinstance(v, int) for v in grid):
        if rows > grid[0] or cols > grid[1]:
            raise JobReadError(f"{where}: windows beyond the manifest's grid {grid}")
        rows, cols = grid
    if rows * cols > MAX_CELLS or max(rows, cols) > MAX_SIDE:
        raise JobReadError(f"{where}: a grid of {rows} x {cols} windows is larger than allowed")
    shape = entry.get("size")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        shape = [acc.rmax + size[0], acc.cmax + size[1]]
    a, x0, e, y0 = acc.transform or (1.0, 0.0, -1.0, 0.0)
    if len(acc.sha) > 1:
        raise JobReadError(f"{where}: rows name several input sha256")
    items = {i for i in acc.items if i}
    if len(items) > 1:
        raise JobReadError(f"{where}: rows name several item ids {sorted(items)}")
    item = items.pop() if items else Path(path).stem
    if len(acc.acquired) > 1:
        raise JobReadError(f"{where}: rows give several acquisition times")
    acquired = next(iter(acc.acquired)) if acc.acquired else None
    if acquired is None:
        for key in ("acquired", "datetime"):
            if isinstance(entry.get(key), str):
                acquired = parse_time(entry[key], f"{job.given}: {MANIFEST} input {path} {key}")
                break
    return SceneGrid(k, path, item, acquired, next(iter(acc.crs)), Affine(a, 0.0, x0, 0.0, e, y0),
                     size, stride, rows, cols, (int(shape[0]), int(shape[1])), next(iter(acc.sha)),
                     acc.n)


def open_job(folder: str | Path, on_rows: Any = None) -> Job:
    """Read a finished job folder's manifest and its scenes' grids (pass 1).

    Args:
        on_rows: called with the number of table rows read (progress).

    Raises:
        ConfigError: not a job folder, not finished, no scene windows.
        JobReadError: files unreadable or against the contract.
    """
    given = str(folder)
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ConfigError(f"{given}: job folder not found")
    manifest = _read_manifest(root, given)
    if not (root / SUCCESS).is_file() or manifest.get("status", "finished") != "finished":
        raise ConfigError(f"{given}: the job is not finished (no {SUCCESS}); rerun its `vision infer` "
                          "command to finish it, then compare")
    classes = _classes(manifest, given)
    try:
        pf = pq.ParquetFile(root / PREDICTIONS)
    except (OSError, ValueError) as exc:
        raise JobReadError(f"{given}: {PREDICTIONS} is unreadable ({exc})") from exc
    names = frozenset(pf.schema_arrow.names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise JobReadError(f"{given}: {PREDICTIONS} lacks the columns {missing}")
    job = Job(root, given, manifest, classes, ModelIdentity(None, None, None), [], names,
              pf.metadata.num_rows)
    try:
        accs = _scan(job, on_rows or (lambda n: None))
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise JobReadError(f"{given}: {PREDICTIONS} cannot be read ({exc})") from exc
    if not accs:
        raise ConfigError(f"{given}: the job holds no windows of georeferenced scenes (only whole "
                          "files); vision change compares scenes")
    entries = _manifest_inputs(manifest)
    stride = _manifest_stride(manifest)
    job.scenes = [_grid(job, k, p, accs[p], stride, entries.get(p, {})) for k, p in enumerate(sorted(accs))]
    if any(s.acquired_us is not None for s in job.scenes):
        job.acquired_source = "table" if "acquired" in names else "manifest"
    return job


def resolve_dates(jobs: list[Job], dates: list[str] | None) -> None:
    """Fill in acquisition times from ``--dates`` (one per job, in the order given) where a job
    does not record them, and check the recorded ones against it.

    Raises:
        ConfigError: a job without acquisition time and no ``--dates``; ``--dates`` of the wrong
            length or disagreeing with a job's own record (by calendar day, UTC).
    """
    if dates is not None and len(dates) != len(jobs):
        raise ConfigError(f"--dates gives {len(dates)} dates for {len(jobs)} jobs; give one per JOB, "
                          "in the order of the JOB arguments")
    for k, job in enumerate(jobs):
        given = parse_time(dates[k], "--dates") if dates is not None else None
        unknown = [s for s in job.scenes if s.acquired_us is None]
        known = [s for s in job.scenes if s.acquired_us is not None]
        if given is not None:
            day = math.floor(given / 86_400e6)
            for s in known:
                when = s.acquired()
                assert when is not None and s.acquired_us is not None and dates is not None
                if math.floor(s.acquired_us / 86_400e6) != day:
                    raise ConfigError(
                        f"--dates gives {dates[k]} for job {job.given}, but its scene {s.path} was "
                        f"acquired {when:%Y-%m-%d %H:%M} UTC; drop --dates or fix it")
            if unknown:
                job.scenes = [replace(s, acquired_us=given) if s.acquired_us is None else s
                              for s in job.scenes]
                job.acquired_source = "--dates" if not known else f"{job.acquired_source} and --dates"
        elif unknown:
            raise ConfigError(
                f"job {job.given} does not record when its imagery was acquired (schema {job.schema} "
                f"predictions, scene {unknown[0].path}); give --dates with one ISO date per JOB, e.g. "
                "--dates 2023-06-01,2024-06-01")


def check_compatible(jobs: list[Job]) -> None:
    """Same classes in the same order, no job twice.

    Raises:
        ConfigError: naming the jobs that differ.
    """
    first = jobs[0]
    seen: dict[Path, str] = {}
    for job in jobs:
        if job.root in seen:
            raise ConfigError(f"job {job.given} is given twice (also as {seen[job.root]})")
        seen[job.root] = job.given
        if job.classes != first.classes:
            raise ConfigError(
                f"jobs {first.given} and {job.given} were classified by models with different classes "
                f"({list(first.classes)} vs {list(job.classes)}); compare jobs of models with the same "
                "classes in the same order")
