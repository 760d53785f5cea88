"""Run a batch-inference job: plan, classify what is not done yet, write the outputs.

The steps, each in its own module: `inference.options` (what was asked, checked once),
`inference.job` (the job folder: marker, lock, parts), `inference.plan` (inputs, scenes and
work units), `inference.engine` (the local or Ray engine that classifies units),
`inference.progress` (progress bars, ``progress.json``, summary) and `inference.finalize`
(the prediction table, per-scene outputs and the manifest).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from inference.aoi import AreasOfInterest
from inference.aoi_summary import SceneGrid, render_summary, summarise, write_summary
from inference.engine import Engine, EngineKind, EngineSetup, make_engine
from inference.finalize import SceneOutputs, finalize
from inference.fit_manifest import annotate_inputs, job_warnings, model_entry_fit
from inference.inputs import discover, stac_files
from inference.job import AOI_SUMMARY, MANIFEST_SCHEMA_VERSION, JobFolder, fingerprint
from inference.model import ModelInfo, load_model_info
from inference.options import JobOptions
from inference.plan import CHIP_BLOCK, Plan, Unit, make_plan
from inference.predict import ReadOptions
from inference.progress import (
    JobResult,
    ProgressFile,
    Tracker,
    plan_items,
    print_failures,
    print_summary,
    progress_bars,
)
from inference.quicklook import CanvasSink
from inference.scenes import FitOptions, read_grid
from inference.session import (
    Device,
    SessionOptions,
    choose_device,
    cpu_threads,
    default_batch_size,
    default_streams,
)
from inference.writers import OutputWriteError, scene_output_names, writing
from vision.console import make_console
from vision.contracts.predictions import PredictionRow
from vision.errors import ConfigError, ModelFormatError, VisionError
from vision.hashing import file_sha256
from vision.model_uri import resolve_model
from vision.scene import Grid

__all__ = ["JobOptions", "JobResult", "JobStoppedError", "run_job"]


class JobStoppedError(VisionError):
    """The job stopped part-way (its outputs could not be written); what was finished is
    kept, and rerunning the same command resumes it."""


@dataclass(frozen=True)
class RunSettings:
    """How this run executes (none of it changes the rows)."""

    device: Device
    batch_size: int
    streams: int
    workers: int
    session: SessionOptions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _settings(opts: JobOptions, model: ModelInfo) -> RunSettings:
    """Resolve the device and the sizes that depend on it.

    Raises:
        ConfigError: the device is not available, or options that do not fit it.
    """
    if opts.engine is EngineKind.RAY:
        # The actors choose their device where they run (the driver may have no GPU).
        device, batch_size, streams = opts.device, opts.batch_size or 0, 1
    else:
        device = choose_device(opts.device)
        batch_size = opts.batch_size or default_batch_size(device, model.views)
        streams = opts.streams or default_streams(device, cpu_threads())
    if opts.fp16 and device is not Device.TENSORRT:
        raise ConfigError("--fp16 builds TensorRT fp16 engines (--device tensorrt); for "
                          "CUDA or CPU, pass a model exported with `vision export --fp16`")
    if streams > 1 and device is not Device.CPU:
        raise ConfigError("--streams above 1 is for the CPU; a GPU session runs one stream")
    workers = opts.workers or max(1, min(4, cpu_threads()))
    # A Ray driver does not build a session; its actors resolve `auto` where they run.
    session_device = Device.CPU if device is Device.AUTO else device
    session = SessionOptions(device=session_device, threads=opts.threads, fp16=opts.fp16,
                             batch_size=batch_size or 64, streams=streams)
    return RunSettings(device, batch_size, streams, workers, session)


def _identity(model: ModelInfo, inputs: list[str], opts: JobOptions,
              stride: tuple[int, int], aois: AreasOfInterest | None = None,
              grid: Grid | None = None) -> dict[str, Any]:
    """What makes two runs the same job (device, batch size and engine do not change rows);
    with ``--aoi``, the AOI file's content and id field too; with ``--grid``, the grid itself."""
    identity: dict[str, Any] = {
        "model_sha256": model.sha256,
        "inputs": inputs,
        "stride": list(stride),
        "max_nodata": opts.max_nodata,
        "max_pixels": opts.max_pixels,
        "fp16": opts.fp16,
        "resolution": opts.resolution,
        "resampling": str(opts.resampling or "auto"),
        "gsd": str(opts.gsd),
        "allow_radiometry_mismatch": opts.allow_radiometry_mismatch,
        "max_cloud": opts.max_cloud,
        "chip_block": CHIP_BLOCK,
        "schema_version": MANIFEST_SCHEMA_VERSION,
    }
    if opts.input_roots:  # they decide which items' files may be read: part of what the job is
        identity["input_roots"] = sorted(os.path.realpath(r) for r in opts.input_roots)
    if grid is not None:
        identity["grid"] = {"crs": grid.crs, "transform": list(grid.transform), "size": [grid.width, grid.height]}
    if aois is not None and opts.aoi is not None:
        identity["aoi"] = {"path": os.path.realpath(opts.aoi), "sha256": file_sha256(opts.aoi),
                           "id_field": aois.id_field}
    return identity


def _load_aois(opts: JobOptions) -> AreasOfInterest | None:
    """The job's areas of interest (``None`` without ``--aoi``).

    Raises:
        AoiError: the file cannot be used (one line naming it; exit code 1).
    """
    if opts.aoi is None:
        return None
    return AreasOfInterest.load(opts.aoi, opts.aoi_field)


def _aoi_errors(aois: AreasOfInterest) -> list[dict[str, str]]:
    """The manifest's error entries for an AOI file: each refused feature, and the areas
    that overlap no input (after every scene was planned)."""
    found: list[BaseException] = [*aois.problems]
    overlap = aois.no_overlap_error()
    if overlap is not None:
        found.append(overlap)
    return [{"path": aois.path, "error": str(e)} for e in found]


def _model_entry(model: ModelInfo, uri: str) -> dict[str, Any]:
    return {"uri": uri, "name": model.model_name, "version": model.model_version,
            "sha256": model.sha256, "precision": model.precision,
            "views": model.views, "classes": model.classes, "bands": model.bands,
            "input_size": list(model.input_size), "temperature": model.temperature,
            "thresholds": {model.classes[k]: v for k, v in (model.thresholds or {}).items()}
            or None, **model_entry_fit(model)}


def _load_model(path: Path, uri: str) -> ModelInfo:
    try:
        return load_model_info(path)
    except ModelFormatError as exc:  # a model this tool cannot use: a configuration error
        raise ConfigError(f"--model {uri}: {exc}") from exc


def run_job(opts: JobOptions, console: Console | None = None) -> JobResult:
    """Run (or resume, or recognise as finished) a job. See `vision infer --help`.

    Nothing is created before the model, the device and the inputs are known to be usable,
    so a mistyped command leaves no empty job folder behind.

    Raises:
        ConfigError: bad options, a model that cannot be used, a job folder conflict, or
            the job running in another process (`inference.job.JobRunningError`).
        JobStoppedError: the outputs could not be written (a full disk); rerun to resume.
    """
    console = console or make_console(stderr=True)
    with resolve_model(opts.model) as model_path:
        model = _load_model(model_path, opts.model)
        stride = opts.stride or model.input_size
        settings = _settings(opts, model)
        inputs = [os.path.realpath(i) for i in opts.inputs]
        files = discover(opts.inputs, exclude=opts.out)
        aois = _load_aois(opts)
        grid = read_grid(opts.grid, model, opts.gsd) if opts.grid is not None else None
        identity = _identity(model, inputs, opts, stride, aois, grid)
        job = JobFolder(opts.out)
        state = job.open(fingerprint(identity), opts.overwrite)
        progress = ProgressFile(job.root)
        try:
            if state == "done":
                return _already_finished(job, console, opts.out)
            run = _Run(job, state, opts, model, model_path, identity, settings, progress, console,
                       aois, grid)
            return run(files, stride)
        except BaseException as exc:
            if job.manifest_path.exists():
                progress.set("failed")
            else:
                job.discard_if_unused()
            if isinstance(exc, OutputWriteError):
                raise JobStoppedError(
                    f"{exc}. Every unit finished so far is kept ({progress.done:,} of "
                    f"{progress.total:,} items); free space (or fix the folder) and rerun the "
                    "same command to resume") from exc
            raise
        finally:
            job.close()


def _already_finished(job: JobFolder, console: Console, out: Path) -> JobResult:
    manifest = job.read_manifest() or {}
    code = int(manifest.get("exit_code", 0))
    console.print(f"job {escape(str(out))} is already finished "
                  f"({escape(str(manifest.get('counts')))}); nothing to do. Use --overwrite "
                  "to run it again.", highlight=False)
    errors = [e for e in manifest.get("errors") or [] if isinstance(e, dict)]
    if code:
        print_failures(console, int((manifest.get("counts") or {}).get("error", 0)), errors, out)
    return JobResult("already-finished", code, manifest.get("counts", {}),
                     manifest.get("class_counts", {}), errors=errors)


@dataclass
class _Run:
    """One run of a job in a locked folder: plan, classify, write the outputs."""

    job: JobFolder
    state: str
    opts: JobOptions
    model: ModelInfo
    model_path: Path
    identity: dict[str, Any]
    settings: RunSettings
    progress: ProgressFile
    console: Console
    aois: AreasOfInterest | None = None
    grid: Grid | None = None

    def __call__(self, files: list[str], stride: tuple[int, int]) -> JobResult:
        opts, model, settings = self.opts, self.model, self.settings
        started, t0 = _now(), time.perf_counter()
        self.progress.set("planning")
        engine = make_engine(opts.engine, EngineSetup(
            model=model, model_path=self.model_path, session=settings.session,
            read=ReadOptions.for_model(model, opts.max_nodata, opts.max_cloud,
                                       opts.allow_radiometry_mismatch),
            workers=settings.workers if opts.engine is EngineKind.LOCAL else opts.workers,
            prefetch=opts.prefetch, device=settings.device, batch_size=opts.batch_size))
        engine.start()  # the local engine builds its session while the inputs are planned
        plan = make_plan(files, model, stride, workers=settings.workers,
                         max_pixels=opts.max_pixels, fit=FitOptions(
                             opts.allow_radiometry_mismatch, opts.gsd, opts.resolution,
                             opts.resampling, self.grid, os.path.realpath(opts.grid) if opts.grid else ""),
                         stac_files=stac_files(opts.inputs), aois=self.aois, input_roots=opts.input_roots)
        head = _manifest_head(self.job, self.state, plan, model, opts, self.identity, settings,
                              started)
        aoi_errors = self._aoi_head(head, plan)
        self.job.write_manifest(head)
        done = self.job.done_units() & {u.uid for u in plan.units}
        _print_header(self.console, plan, model, settings, opts, len(done))
        sink = CanvasSink(plan, model.bands)  # the quicklooks' pixels, gathered while reading
        scenes = SceneOutputs(self.job, plan, model, sink)
        try:
            t_run = time.perf_counter()
            classified = self._classify(engine, plan, done, sink, scenes)
            run_s = time.perf_counter() - t_run
            self.progress.set("finalizing", done=plan_items(plan))
            manifest, result = finalize(self.job, plan, model, head, scenes)
        finally:
            scenes.close()
        annotate_inputs(manifest, plan)
        summary = self._aoi_summary(manifest, plan, aoi_errors)
        if aoi_errors:
            result.exit_code = 1
            result.errors = [*result.errors, *aoi_errors]
        result.classified = classified
        result.elapsed_s = time.perf_counter() - t0
        result.items_per_s = classified / run_s if run_s > 0 else 0.0
        manifest["throughput"] = {"classified_this_run": classified,
                                  "classify_s": round(run_s, 3),
                                  "items_per_s": round(result.items_per_s, 1),
                                  "elapsed_s": round(result.elapsed_s, 3)}
        self.job.write_manifest(manifest)  # the final manifest, once; _SUCCESS after it
        self.job.mark_success()
        self.job.remove_parts()
        self.progress.set("finished")
        print_summary(self.console, result, opts.out)
        if summary is not None:
            render_summary(summary, self.console)
        return result

    def _aoi_head(self, head: dict[str, Any], plan: Plan) -> list[dict[str, str]]:
        """With ``--aoi``: the AOI file in the head manifest, its summary among the outputs;
        returns the AOI file's error entries (refused features, areas over no input)."""
        if self.aois is None:
            return []
        head["aoi"] = {**self.aois.to_manifest(), "scenes_outside": list(plan.outside_aoi),
                       "summary": AOI_SUMMARY}
        head["outputs"] = sorted({*head["outputs"], AOI_SUMMARY})
        return _aoi_errors(self.aois)

    def _aoi_summary(self, manifest: dict[str, Any], plan: Plan,
                     aoi_errors: list[dict[str, str]]) -> dict[str, Any] | None:
        """With ``--aoi``: write ``aoi_summary.json`` from the final table and record the AOI
        file's errors in the manifest (exit code 1; the rest of the job ran)."""
        if self.aois is None:
            return None
        import pyarrow.parquet as pq

        table = pq.read_table(self.job.predictions_path)
        grids = {s.path: SceneGrid(s.info.crs, s.info.affine, s.grid) for s in plan.scenes}
        summary = summarise(table, self.aois, grids, self.model.classes)
        path = self.job.root / AOI_SUMMARY
        with writing(path):
            write_summary(path, summary)
        if aoi_errors:
            manifest["errors"] = sorted([*manifest.get("errors", []), *aoi_errors], key=lambda e: e["path"])
            manifest["exit_code"] = 1
        return summary

    def _classify(self, engine: Engine, plan: Plan, done: set[str], sink: CanvasSink,
                  scenes: SceneOutputs) -> int:
        """Run the units not done yet; return how many items the model classified."""
        todo = [u for u in plan.units if u.uid not in done]
        with progress_bars(self.console, self.opts.progress) as bars:
            tracker = Tracker(plan, bars, self.progress, done)

            def on_unit(unit: Unit, rows: list[PredictionRow], n_classified: int) -> None:
                self.job.write_part(unit.uid, rows)
                scene = tracker.record(unit, n_classified)
                if scene is not None:  # written while the model works on the next units
                    scenes.done(scene)

            engine.run(plan, todo, on_unit, sink)
        return tracker.classified


def _manifest_head(job: JobFolder, state: str, plan: Plan, model: ModelInfo, opts: JobOptions,
                   identity: dict[str, Any], settings: RunSettings, started: str
                   ) -> dict[str, Any]:
    """The manifest written before the first part: the job's marker, what it runs, and the
    names of every file it will write (what ``--overwrite`` may remove)."""
    head: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "status": "running",
        "fingerprint": fingerprint(identity),
        "plan_digest": plan.digest(),
        "model": _model_entry(model, opts.model),
        "options": {k: v for k, v in identity.items() if k not in ("model_sha256",)},
        "run": {"device": str(settings.device), "batch_size": settings.batch_size,
                "engine": str(opts.engine), "workers": settings.workers,
                "streams": settings.streams},
        "outputs": sorted(n for s in plan.scenes for n in scene_output_names(s).values()),
        "warnings": job_warnings(plan, model, opts.allow_radiometry_mismatch),
        "started_at": started,
    }
    if state == "resume":
        old = job.read_manifest() or {}
        if old.get("plan_digest") != head["plan_digest"]:
            raise ConfigError(
                f"the inputs changed since the job in {opts.out} started (files added, "
                "removed or modified); rerun with --overwrite to start it again")
        head["started_at"] = old.get("started_at", started)
    return head


def _print_header(console: Console, plan: Plan, model: ModelInfo, settings: RunSettings,
                  opts: JobOptions, n_done: int) -> None:
    local_cpu = settings.device is Device.CPU and opts.engine is EngineKind.LOCAL
    text = (
        f"{len(plan.chips)} files as chips, {len(plan.scenes)} scenes ({plan.n_windows} "
        f"windows); model {model.model_name} {model.model_version} ({model.sha256[:12]}, "
        f"{model.precision}" + (f", {model.views} views" if model.views > 1 else "")
        + f"), {model.num_bands} bands {model.bands}, {model.input_size[0]}x{model.input_size[1]}; "
        f"device {settings.device}, batch {settings.batch_size or 'auto'}"
        + (f" x {settings.streams} streams of {settings.session.intra_op_threads} threads"
           if local_cpu else "")
        + f", engine {opts.engine}"
        + (f"; resuming: {n_done} of {len(plan.units)} units done" if n_done else "")
    )
    console.print(f"[bold]vision infer[/bold]: {escape(text)}", highlight=False)
