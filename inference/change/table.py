"""The rows of ``changes.parquet`` for a chunk of windows, built column by column from the
aligned arrays (`vision.contracts.changes.CHANGE_SCHEMA`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from affine import Affine

from inference.change.align import DateValues
from inference.change.arrow import constant_strings, fixed_lists, from_numpy, python_strings, strings
from inference.change.jobs import Job, SceneGrid
from inference.change.rules import OUT_OK, OUT_STATUSES, REASONS, SOURCE_STATUSES, PairOutcome, Trajectory
from vision.contracts.changes import ALIGN_REPROJECTED, ALIGN_SAME_GRID, CHANGE_SCHEMA, TRANSITIONS

_TS = pa.timestamp("us", tz="UTC")
#: Source status names by ``code + 1``.
_SRC_NAMES = [SOURCE_STATUSES[c] for c in range(-1, 4)]


@dataclass
class Chunk:
    """A chunk of the later grid, restricted to the windows that get a row.

    Attributes:
        scene: the later scene.
        i, j: window row and column in its grid.
        dates: every date's values (oldest first), already restricted.
        outcome, traj: the rules' results.
        aoi: AOI id per window (``None``: none); area_ha: hectares counted per window.
    """

    scene: SceneGrid
    i: np.ndarray
    j: np.ndarray
    dates: list[DateValues]
    outcome: PairOutcome
    traj: Trajectory
    aoi: list[str | None]
    area_ha: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def window_bounds(transform: Affine, row: np.ndarray, col: np.ndarray, h: np.ndarray | int,
                  w: np.ndarray | int) -> tuple[np.ndarray, ...]:
    """``minx, miny, maxx, maxy`` of pixel windows of a north-up transform."""
    a, x0, e, y0 = float(transform.a), float(transform.c), float(transform.e), float(transform.f)
    xa, xb = x0 + col * a, x0 + (col + w) * a
    ya, yb = y0 + row * e, y0 + (row + h) * e
    return np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)


class TableBuilder:
    """Builds the change table's columns for chunks (one instance per run).

    Args:
        jobs: oldest first.
    """

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.classes = list(jobs[0].classes)
        self.n_dates = len(jobs)
        first, last = jobs[0], jobs[-1]
        self._keys: dict[int, str] = {}
        for s in last.scenes:
            ident = "\x1f".join([str(first.root), str(last.root), s.path, s.item_id, s.sha256 or "",
                                 first.model.sha256 or "", last.model.sha256 or ""])
            self._keys[s.index] = hashlib.sha256(ident.encode()).hexdigest()[:16]
        # trajectory items: every date's scene item ids in one list, offset per date
        self._item_offset = np.cumsum([0] + [len(j.scenes) for j in jobs[:-1]])
        self._items = [s.item_id for j in jobs for s in j.scenes]

    def _acquired(self, date: int, scene: np.ndarray) -> pa.Array:
        job = self.jobs[date]
        times = np.array([s.acquired_us or 0 for s in job.scenes] or [0], np.int64)
        known = np.array([s.acquired_us is not None for s in job.scenes] or [False], bool)
        safe = np.maximum(scene, 0)
        return from_numpy(times[safe], _TS, (scene >= 0) & known[safe])

    def _at_date(self, date_idx: np.ndarray, chunk: Chunk, what: str) -> pa.Array:
        """Per window, the acquisition time (``what='time'``) or item id of the date index."""
        n = len(chunk)
        times = np.zeros(n, np.int64)
        valid = np.zeros(n, bool)
        items = np.full(n, -1, np.int64)
        for k in range(self.n_dates):
            m = date_idx == k
            if not m.any():
                continue
            scene = chunk.dates[k].scene[m]
            job = self.jobs[k]
            t = np.array([s.acquired_us or 0 for s in job.scenes], np.int64)
            ok = np.array([s.acquired_us is not None for s in job.scenes], bool)
            safe = np.maximum(scene, 0)
            times[m] = t[safe]
            valid[m] = (scene >= 0) & ok[safe]
            items[m] = np.where(scene >= 0, self._item_offset[k] + scene, -1)
        if what == "time":
            return from_numpy(times, _TS, valid)
        return strings(items, self._items)

    def build(self, chunk: Chunk) -> pa.Table:
        """The table of a chunk's rows, in `CHANGE_SCHEMA`."""
        n = len(chunk)
        later, first = self.jobs[-1], self.jobs[0]
        s = chunk.scene
        b, a = chunk.dates[0], chunk.dates[-1]
        row = chunk.i.astype(np.int64) * s.stride[0]
        col = chunk.j.astype(np.int64) * s.stride[1]
        h, w = s.size
        minx, miny, maxx, maxy = window_bounds(s.transform, row, col, h, w)
        key = self._keys[s.index]
        cols: dict[str, pa.Array] = {
            "change_id": python_strings([f"{key}-{r}-{c}" for r, c in zip(row.tolist(), col.tolist(), strict=True)]),
            "row_off": from_numpy(row, pa.int32()), "col_off": from_numpy(col, pa.int32()),
            "height": from_numpy(np.full(n, h), pa.int32()), "width": from_numpy(np.full(n, w), pa.int32()),
            "crs": constant_strings(s.crs, n),
            "minx": from_numpy(minx, pa.float64()), "miny": from_numpy(miny, pa.float64()),
            "maxx": from_numpy(maxx, pa.float64()), "maxy": from_numpy(maxy, pa.float64()),
            "aoi_id": python_strings(chunk.aoi),
            "area_ha": from_numpy(chunk.area_ha, pa.float64()),
        }
        scene_names = [[sc.item_id for sc in j.scenes] for j in (first, later)]
        cols["item_before"] = strings(b.scene, scene_names[0])
        cols["item_after"] = strings(a.scene, scene_names[1])
        cols["acquired_before"] = self._acquired(0, b.scene)
        cols["acquired_after"] = self._acquired(self.n_dates - 1, a.scene)
        for name, v in (("before", b), ("after", a)):
            cols[f"class_{name}"] = strings(v.label, self.classes)
            cols[f"p_{name}"] = from_numpy(v.p, pa.float32(), np.isfinite(v.p))
            cols[f"p_interest_{name}"] = from_numpy(v.p_interest, pa.float32(), np.isfinite(v.p_interest))
        out = chunk.outcome
        cols["transition"] = strings(np.where(out.status == OUT_OK, out.transition, -1), TRANSITIONS)
        cols["status"] = strings(out.status, OUT_STATUSES)
        cols["reason"] = strings(out.reason, REASONS)
        cols["status_before"] = strings(b.status.astype(np.int64) + 1, _SRC_NAMES)
        cols["status_after"] = strings(a.status.astype(np.int64) + 1, _SRC_NAMES)
        cols["cloud_fraction_before"] = from_numpy(b.cloud, pa.float32(), np.isfinite(b.cloud))
        cols["cloud_fraction_after"] = from_numpy(a.cloud, pa.float32(), np.isfinite(a.cloud))
        cols["alignment"] = strings(np.where(b.scene < 0, -1, np.where(b.same_grid, 0, 1)),
                                    [ALIGN_SAME_GRID, ALIGN_REPROJECTED])
        cols.update(self._before_window(b))
        cols["path_after"] = constant_strings(s.path, n)
        cols["input_sha256_before"] = strings(b.scene, [sc.sha256 for sc in first.scenes])
        cols["input_sha256_after"] = constant_strings(s.sha256, n)
        cols["job_before"] = constant_strings(str(first.root), n)
        cols["job_after"] = constant_strings(str(later.root), n)
        for name, job in (("before", first), ("after", later)):
            cols[f"model_name_{name}"] = constant_strings(job.model.name, n)
            cols[f"model_version_{name}"] = constant_strings(job.model.version, n)
            cols[f"model_sha256_{name}"] = constant_strings(job.model.sha256, n)
        cols.update(self._trajectory(chunk))
        cols["first_appeared"] = self._at_date(chunk.traj.first_appeared, chunk, "time")
        cols["first_appeared_item"] = self._at_date(chunk.traj.first_appeared, chunk, "item")
        cols["last_absent"] = self._at_date(chunk.traj.last_absent, chunk, "time")
        return pa.Table.from_arrays([cols[f.name] for f in CHANGE_SCHEMA], schema=CHANGE_SCHEMA)

    def _before_window(self, b: DateValues) -> dict[str, pa.Array]:
        job = self.jobs[0]
        scenes = job.scenes
        safe = np.maximum(b.scene, 0)
        found = (b.scene >= 0) & (b.src_i >= 0)
        sr = np.array([sc.stride[0] for sc in scenes], np.int64)[safe]
        sc_ = np.array([sc.stride[1] for sc in scenes], np.int64)[safe]
        hh = np.array([sc.size[0] for sc in scenes], np.int64)[safe]
        ww = np.array([sc.size[1] for sc in scenes], np.int64)[safe]
        row, col = b.src_i.astype(np.int64) * sr, b.src_j.astype(np.int64) * sc_
        tr = np.array([tuple(sc.transform)[:6] for sc in scenes], np.float64)[safe]
        a_, x0, e, y0 = tr[:, 0], tr[:, 2], tr[:, 4], tr[:, 5]
        xa, xb = x0 + col * a_, x0 + (col + ww) * a_
        ya, yb = y0 + row * e, y0 + (row + hh) * e
        bounds = (np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
        out = {
            "path_before": strings(b.scene, [sc.path for sc in scenes]),
            "row_off_before": from_numpy(row, pa.int32(), found),
            "col_off_before": from_numpy(col, pa.int32(), found),
            "height_before": from_numpy(hh, pa.int32(), found),
            "width_before": from_numpy(ww, pa.int32(), found),
            "crs_before": strings(b.scene, [sc.crs for sc in scenes]),
        }
        for name, v in zip(("minx", "miny", "maxx", "maxy"), bounds, strict=True):
            out[f"{name}_before"] = from_numpy(v, pa.float64(), found)
        return out

    def _trajectory(self, chunk: Chunk) -> dict[str, pa.Array]:
        n, k = len(chunk), len(self.classes)
        names = self.classes + _SRC_NAMES
        code = np.empty((n, self.n_dates), np.int64)
        prob = np.empty((n, self.n_dates), np.float32)
        item = np.empty((n, self.n_dates), np.int64)
        for d, v in enumerate(chunk.dates):
            assessed = (v.label >= 0) & np.isfinite(v.p)
            code[:, d] = np.where(assessed, v.label, k + v.status.astype(np.int64) + 1)
            prob[:, d] = np.where(assessed, v.p, np.nan)
            item[:, d] = np.where(v.scene >= 0, self._item_offset[d] + v.scene, -1)
        flat_p = prob.reshape(-1)
        return {
            "trajectory": fixed_lists(strings(code.reshape(-1), names), n, self.n_dates),
            "trajectory_p": fixed_lists(from_numpy(flat_p, pa.float32(), np.isfinite(flat_p)), n, self.n_dates),
            "trajectory_items": fixed_lists(strings(item.reshape(-1), self._items), n, self.n_dates),
        }
