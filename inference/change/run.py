"""`vision change`: compare jobs of the same area at different dates.

Steps: read every job (manifest, ``_SUCCESS``, the table's window grids: `inference.change.jobs`),
check they can be compared (same classes, acquisition times known and distinct, overlapping
footprints), sort them by acquisition time, write each job's windows as cell rasters
(`inference.change.cells`), then walk the latest job's grid chunk by chunk: align every date
(`inference.change.align`), apply the rules (`inference.change.rules`) and append the rows and
pictures (`inference.change.outputs`). The folder is built beside ``--out`` and moved into
place when complete, with ``change_manifest.json`` and ``_SUCCESS`` last.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from shapely.geometry.base import BaseGeometry

from inference.change.align import Aligner, DateValues, footprint
from inference.change.cells import CellRasters, tiles
from inference.change.jobs import Job, SceneGrid, check_compatible, open_job, resolve_dates
from inference.change.outputs import ChangeRaster, GeoJsonWriter, ParquetOut, Summary, outcome_codes, stem_for
from inference.change.report import MAX_MAPS, Candidates, Sources, scene_map, write_report
from inference.change.rules import DEFAULT_MIN_CONFIDENCE, SRC_MISSING, interest_mask, pair_outcome, trajectory
from inference.change.table import Chunk, TableBuilder
from vision import geo
from vision.atomic import atomic_dir, write_bytes_atomic, write_json_atomic
from vision.cli_options import refuse_overwrite
from vision.console import make_console
from vision.contracts.changes import CHANGE_CODES, CHANGE_SCHEMA_VERSION
from vision.errors import ConfigError
from vision.hashing import file_sha256

CHANGE_MANIFEST = "change_manifest.json"
MANIFEST_KIND = "vision-change"
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class ChangeOptions:
    """Everything `vision change` was asked to do (see its ``--help``)."""

    jobs: tuple[str, ...]
    out: Path
    classes: tuple[str, ...] | None = None
    aoi: Path | None = None
    aoi_field: str | None = None
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    dates: tuple[str, ...] | None = None
    overwrite: bool = False
    progress: bool = True
    report: bool = True
    thumbnails: int = 12


@dataclass
class ChangeResult:
    """How a change run ended."""

    out: Path
    windows: int
    counts: dict[str, int]
    hectares: dict[str, float]
    order: list[str]
    elapsed_s: float
    windows_per_s: float
    notes: list[str] = field(default_factory=list)


def _advance(progress: Progress, task: TaskID) -> Callable[[int], None]:
    return lambda n: progress.advance(task, n)


def _check_out(opts: ChangeOptions) -> None:
    out = opts.out.resolve()
    for given in opts.jobs:
        root = Path(given).resolve()
        if out == root or out.is_relative_to(root) or root.is_relative_to(out):
            raise ConfigError(f"--out {opts.out} and job {given} overlap; write the comparison to its own folder")
    if not opts.out.exists() and not opts.out.is_symlink():
        return
    refuse_overwrite(opts.out, opts.overwrite)
    if opts.out.is_symlink() or not opts.out.is_dir():
        raise ConfigError(f"--out {opts.out} is not a folder; refusing to replace it")
    entries = list(opts.out.iterdir())
    manifest = opts.out / CHANGE_MANIFEST
    if entries:
        try:
            kind = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != MANIFEST_KIND:
            raise ConfigError(f"--out {opts.out} is not a `vision change` folder (no {CHANGE_MANIFEST}); "
                              "--overwrite replaces only those; choose another path")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    disable=not enabled)


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d")


def _order(jobs: list[Job], notes: list[str]) -> list[Job]:
    """Jobs sorted by acquisition (said so when the order given differs); time ranges must not overlap."""
    ranked = sorted(jobs, key=lambda j: j.acquired_range())
    if [j.given for j in ranked] != [j.given for j in jobs]:
        notes.append("jobs sorted by acquisition time: " + " < ".join(
            f"{j.given} ({_day(j.acquired_range()[0])})" for j in ranked))
    for a, b in zip(ranked, ranked[1:], strict=False):
        if a.acquired_range()[1] >= b.acquired_range()[0]:
            raise ConfigError(f"jobs {a.given} and {b.given} overlap in time (or share a date): each JOB must be "
                              "one date (or a span of days) strictly before the next")
    return ranked


def _interest(jobs: list[Job], classes: tuple[str, ...] | None) -> list[str]:
    known = jobs[0].classes
    if classes is None:
        return list(known)
    wanted = list(dict.fromkeys(c.strip() for c in classes if c.strip()))
    bad = [c for c in wanted if c not in known]
    if bad or not wanted:
        raise ConfigError(f"--classes {','.join(classes)}: {bad or 'none given'} not among the model's classes "
                          f"{list(known)}")
    return wanted


def _subset(v: DateValues, idx: np.ndarray) -> DateValues:
    return DateValues(**{f.name: getattr(v, f.name)[idx] for f in dataclasses.fields(v)})


class _Areas:
    """Per later scene: the area counted for it (not already counted for an earlier scene of the
    later job) and the AOI parts inside it."""

    def __init__(self, later: Job, aois: geo.AoiSet | None, notes: list[str]):
        self.own: dict[int, BaseGeometry] = {}
        self.parts: dict[int, list[tuple[str, Any]]] = {}
        #: per scene and AOI: the part whose hectares this scene counts (AOI part and own area)
        self.counted: dict[int, dict[str, BaseGeometry]] = {}
        done: list[tuple[str, Any]] = []
        used: set[str] = set()
        for s in later.scenes:
            fp = footprint(s)
            own = fp
            for crs, g in done:
                own = own.difference(geo.reproject(g, crs, s.crs))
            done.append((s.crs, fp))
            self.own[s.index] = own
            parts = []
            for a in aois.aois if aois is not None else ():
                g = geo.aoi_in_scene(a, aois.crs, s.crs, fp)  # type: ignore[union-attr]
                if g is not None:
                    parts.append((a.id, g))
                    used.add(a.id)
            self.parts[s.index] = parts
            self.counted[s.index] = {a: g.intersection(own) for a, g in parts}
        if aois is not None:
            for q in aois.problems:
                notes.append(f"AOI feature {q.feature} ignored: {q.reason}")
            unused = [a.id for a in aois.aois if a.id not in used]
            if unused:
                notes.append(f"AOIs over no scene of the latest job: {', '.join(unused[:20])}")
            if not used:
                raise ConfigError(f"--aoi {aois.path}: no area overlaps the latest job's scenes")


def _chunk(s: SceneGrid, i0: int, i1: int, j0: int, j1: int, vals: list[DateValues], areas: _Areas,
           aois: geo.AoiSet | None, later: Job, interest: np.ndarray, p_min: float) -> Chunk | None:
    keep = np.flatnonzero(vals[-1].status != SRC_MISSING)
    if not len(keep):
        return None
    i, j = keep // (j1 - j0) + i0, keep % (j1 - j0) + j0
    cells = geo.window_polygons(s.cell_transform, np.stack([i, j, np.ones_like(i), np.ones_like(j)], 1))  # type: ignore[arg-type]
    if aois is not None:
        wins = np.stack([i * s.stride[0], j * s.stride[1], np.full_like(i, s.size[0]), np.full_like(j, s.size[1])], 1)
        ids = geo.assign_windows(geo.window_polygons(s.transform, wins), areas.parts[s.index])  # type: ignore[arg-type]
        inside = np.array([a is not None for a in ids], bool)
        keep, i, j, cells = keep[inside], i[inside], j[inside], cells[inside]
        aoi_ids: list[str | None] = [a for a in ids if a is not None]
        if not len(keep):
            return None
    else:
        codes = vals[-1].aoi[keep]
        aoi_ids = [later.aoi_ids[c] if c >= 0 else None for c in codes.tolist()]
    dates = [_subset(v, keep) for v in vals]
    area = np.zeros(len(keep))
    own = areas.own[s.index]
    keys = np.array([a if a is not None else "" for a in aoi_ids], dtype=object)
    for key in set(keys.tolist()):
        m = keys == key
        geom = areas.counted[s.index][key] if aois is not None else own
        if not geom.is_empty:
            area[m] = geo.intersection_hectares(cells[m], geom, s.crs)
    b, a = dates[0], dates[-1]
    outcome = pair_outcome(b.status, b.label, b.p, a.status, a.label, a.p, interest, p_min)
    traj = trajectory(np.stack([d.status for d in dates]), np.stack([d.label for d in dates]),
                      np.stack([d.p for d in dates]), interest, p_min)
    return Chunk(s, i, j, dates, outcome, traj, aoi_ids, area)


def _job_entry(job: Job) -> dict[str, Any]:
    t0, t1 = job.acquired_range()
    iso = [datetime.fromtimestamp(t / 1e6, UTC).isoformat().replace("+00:00", "Z") for t in (t0, t1)]
    return {"job": job.given, "root": str(job.root), "schema": job.schema, "acquired": iso,
            "acquired_source": job.acquired_source,
            "model": {"name": job.model.name, "version": job.model.version, "sha256": job.model.sha256},
            "predictions_sha256": file_sha256(job.predictions),
            "manifest_sha256": file_sha256(job.root / "manifest.json"),
            "scenes": [{"path": s.path, "item_id": s.item_id, "sha256": s.sha256, "crs": s.crs,
                        "grid": [s.rows, s.cols], "window": list(s.size), "stride": list(s.stride),
                        "windows": s.n_rows} for s in job.scenes]}


def run_change(opts: ChangeOptions, console: Console | None = None) -> ChangeResult:
    """Compare the jobs and write the change folder. See `vision change --help`.

    Raises:
        ConfigError: bad options, jobs that cannot be compared, an --out conflict.
        JobReadError: a job's files are unreadable or against the contract.
    """
    console = console or make_console(stderr=True)
    t_start = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if len(opts.jobs) < 2:
        raise ConfigError("give at least two JOB folders (before and after)")
    if not 0.0 <= opts.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be in [0, 1], not {opts.min_confidence}")
    _check_out(opts)
    notes: list[str] = []
    with _progress(console, opts.progress) as progress:
        given: list[Job] = []
        tasks = []
        for j in opts.jobs:
            task = progress.add_task(f"read {escape(j)}", total=None)
            tasks.append(task)
            job = open_job(j, on_rows=_advance(progress, task))
            progress.update(task, total=2 * job.num_rows)
            given.append(job)
        check_compatible(given)
        resolve_dates(given, list(opts.dates) if opts.dates is not None else None)
        task_of = {id(j): t for j, t in zip(given, tasks, strict=True)}
        jobs = _order(given, notes)
        interest_names = _interest(jobs, opts.classes)
        interest = interest_mask(jobs[0].classes, interest_names)
        aois = geo.read_aoi(opts.aoi, opts.aoi_field) if opts.aoi is not None else None
        later = jobs[-1]
        areas = _Areas(later, aois, notes)
        with atomic_dir(opts.out) as tmp:
            work = tmp / ".work"
            cells = [CellRasters(job, work / f"job{k}") for k, job in enumerate(jobs)]
            for job, c in zip(jobs, cells, strict=True):
                c.build(on_rows=_advance(progress, task_of[id(job)]))
            result = _compare(opts, jobs, cells, interest, interest_names, aois, areas, tmp, progress, notes)
            shutil.rmtree(work)
            result.elapsed_s = time.perf_counter() - t_start
            result.windows_per_s = result.windows / result.elapsed_s if result.elapsed_s > 0 else 0.0
            manifest = {
                "kind": MANIFEST_KIND, "schema_version": CHANGE_SCHEMA_VERSION, "status": "finished",
                "started_at": started, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "jobs": [_job_entry(j) for j in jobs], "order": "oldest first",
                "classes": list(jobs[0].classes), "classes_of_interest": interest_names,
                "min_confidence": opts.min_confidence,
                "aoi": str(opts.aoi) if opts.aoi is not None else None, "counts": result.counts,
                "hectares": result.hectares, "notes": notes,
                "outputs": sorted(p.name for p in tmp.iterdir() if not p.name.startswith(".")),
                "throughput": {"windows": result.windows, "elapsed_s": round(result.elapsed_s, 3),
                               "windows_per_s": round(result.windows_per_s, 1)},
            }
            write_json_atomic(tmp / CHANGE_MANIFEST, manifest)
            write_bytes_atomic(tmp / SUCCESS, b"")
    result.out = opts.out
    result.order = [j.given for j in jobs]
    _print_summary(console, result)
    return result


def _compare(opts: ChangeOptions, jobs: list[Job], cells: list[CellRasters], interest: np.ndarray,
             interest_names: list[str], aois: geo.AoiSet | None, areas: _Areas, tmp: Path, progress: Progress,
             notes: list[str]) -> ChangeResult:
    later = jobs[-1]
    builder = TableBuilder(jobs)
    summary = Summary(jobs, interest_names)
    if aois is not None:
        summary.declared = [a.id for a in aois.aois if any(a.id == p for ps in areas.parts.values() for p, _ in ps)]
    candidates = Candidates(opts.thumbnails if opts.report else 0)
    parquet = ParquetOut(tmp / "changes.parquet")
    geojson = GeoJsonWriter(tmp / "changes.geojson", "changes")
    rasters: list[ChangeRaster] = []
    stems: set[str] = set()
    windows = 0
    task = progress.add_task("compare windows", total=sum(s.n_rows for s in later.scenes))
    with Aligner(jobs, cells, interest) as aligner:
        for date, job in enumerate(jobs[:-1]):
            if not aligner.covering(date):
                raise ConfigError(f"jobs {job.given} and {later.given} do not overlap: no scene of one covers any "
                                  "scene of the other")
            kinds = {("same grid" if same else f"reprojected {src.crs} -> {s.crs}")
                     for s in later.scenes for src, same in aligner.sources[s.index][date]}
            notes.append(f"{job.given} onto {later.given}: {', '.join(sorted(kinds))}")
        for s in later.scenes:
            raster = ChangeRaster(s, tmp, stem_for(s, stems))
            rasters.append(raster)
            for i0, i1, j0, j1 in tiles(s.rows, s.cols):
                vals = aligner.chunk(s, i0, i1, j0, j1)
                n_later = int((vals[-1].status != SRC_MISSING).sum())
                chunk = _chunk(s, i0, i1, j0, j1, vals, areas, aois, later, interest, opts.min_confidence)
                if chunk is not None:
                    table = builder.build(chunk)
                    parquet.add(table)
                    raster.write(i0, i1, j0, j1, chunk.i, chunk.j, outcome_codes(chunk))
                    geojson.add(chunk, table)
                    summary.add(chunk)
                    candidates.add(chunk, table)
                    windows += len(chunk)
                progress.advance(task, n_later)
    parquet.close()
    geojson.close()
    paths = [r.finish() for r in rasters]
    labels = [datetime.fromtimestamp(j.acquired_range()[0] / 1e6, UTC).isoformat().replace("+00:00", "Z")
              for j in jobs]
    summ = {"schema_version": CHANGE_SCHEMA_VERSION, "classes_of_interest": interest_names,
            "min_confidence": opts.min_confidence, "dates": labels,
            "area_note": "hectares of each window's cell inside the scene (and AOI), in the scene's projected CRS "
                         "or an equal-area projection for geographic and Mercator CRSs",
            **summary.to_obj(labels)}
    write_json_atomic(tmp / "change_summary.json", summ)
    if opts.report:
        rtask = progress.add_task("report", total=min(len(paths), MAX_MAPS) + 1)
        sources = Sources()
        maps = []
        for s, p in list(zip(later.scenes, paths, strict=True))[:MAX_MAPS]:
            acq = s.acquired()
            uri, problem = scene_map(s, p, sources)
            maps.append((f"{s.item_id} ({acq:%Y-%m-%d} UTC), {p.name}" if acq else s.item_id, uri, problem))
            progress.advance(rtask)
        write_report(tmp / "report.html", jobs, summ, {"classes_of_interest": interest_names,
                                                        "min_confidence": opts.min_confidence},
                     maps, candidates.best(), sources, notes)
        progress.advance(rtask)
    counts = dict.fromkeys(CHANGE_CODES, 0)
    hectares = dict.fromkeys(CHANGE_CODES, 0.0)
    for a in summary.to_obj(labels)["areas"]:
        for o in CHANGE_CODES:
            counts[o] += a["windows"][o]
            hectares[o] += a["hectares"][o]
    return ChangeResult(opts.out, windows, counts, {k: round(v, 4) for k, v in hectares.items()}, [], 0.0, 0.0, notes)


def _print_summary(console: Console, result: ChangeResult) -> None:
    for n in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(n)}", highlight=False)
    table = Table(title=f"vision change: {escape(str(result.out))}")
    table.add_column("outcome")
    table.add_column("windows", justify="right")
    table.add_column("hectares", justify="right")
    for k, count in result.counts.items():
        table.add_row(k, f"{count:,}", f"{result.hectares[k]:,.2f}")
    table.add_section()
    table.add_row("[bold]total[/bold]", f"{result.windows:,}", f"{sum(result.hectares.values()):,.2f}")
    table.add_row("throughput", f"{result.windows_per_s:,.0f} windows/s", f"{result.elapsed_s:,.1f} s")
    console.print(table)
