"""Run a batch-inference job: plan, classify what is not done yet, write the outputs.

The local engine overlaps reading with the model: a pool of reader threads decodes chip
blocks and scene chunks (``prepare``), a batcher thread assembles fixed-size batches from
them into a bounded queue, the calling thread hands batches to the model (on the CPU, a few
batches at once, each on its share of the cores: see `default_streams`), and a writer
thread turns finished units into part files. Decoding (OpenCV, PIL, GDAL) and ONNX Runtime
release the GIL, so with decode cheaper than inference the model never waits for I/O.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from inference.job import MANIFEST_SCHEMA_VERSION, JobFolder, fingerprint
from inference.model import ModelInfo, load_model_info
from inference.plan import CHIP_BLOCK, Plan, Unit, make_plan
from inference.predict import Pending, ReadOptions, RowCompleter, prepare
from inference.readers import discover
from inference.session import (
    Classifier,
    SessionOptions,
    choose_device,
    cpu_threads,
    default_batch_size,
    default_streams,
)
from inference.writers import (
    scene_rows,
    sort_predictions,
    write_scene_outputs,
    write_table_atomic,
)
from vision.contracts.predictions import PredictionRow, column, string_scalar
from vision.errors import ConfigError
from vision.model_uri import resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOptions:
    """Everything `vision infer` was asked to do.

    Attributes:
        inputs: files and folders as given.
        model: ``.onnx`` path or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``.
        out: the job folder.
        batch_size: ``None`` for the device's default.
        device: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.
        engine: ``local`` or ``ray``.
        overwrite: replace a job folder made for another model or options.
        stride: window step ``(rows, cols)`` in pixels; ``None`` for the model's input size.
        max_nodata: largest nodata fraction of a window that is still classified.
        workers: reader threads (local) or actors (ray); ``None`` for a default.
        threads: ONNX Runtime intra-op threads per stream on the CPU; ``None``: the cores
            shared out between the streams.
        streams: batches the model runs at once (CPU); ``None`` for `default_streams`.
        fp16: TensorRT fp16 engines.
        prefetch: batches read ahead of the model.
        progress: show progress bars.
    """

    inputs: tuple[str, ...]
    model: str
    out: Path
    batch_size: int | None = None
    device: str = "auto"
    engine: str = "local"
    overwrite: bool = False
    stride: tuple[int, int] | None = None
    max_nodata: float = 0.5
    workers: int | None = None
    threads: int | None = None
    streams: int | None = None
    fp16: bool = False
    prefetch: int = 4
    progress: bool = True


@dataclass
class JobResult:
    """How a job ended."""

    state: str  # "finished" or "already-finished"
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    classified: int = 0
    elapsed_s: float = 0.0
    items_per_s: float = 0.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_options(opts: JobOptions) -> None:
    if not opts.inputs:
        raise ConfigError("give at least one INPUT (file or folder)")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if not 0.0 <= opts.max_nodata < 1.0:
        raise ConfigError("--max-nodata must be in [0, 1)")
    if opts.engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, not {opts.engine!r}")
    if opts.stride is not None and min(opts.stride) < 1:
        raise ConfigError("--stride must be positive")
    if opts.workers is not None and opts.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if opts.streams is not None and opts.streams < 1:
        raise ConfigError("--streams must be at least 1")


class _RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


class _Tracker:
    """Turns finished units into part files, progress and counts."""

    def __init__(self, job: JobFolder, plan: Plan, progress: Progress, done: set[str]):
        self.job = job
        self.plan = plan
        self.progress = progress
        self.classified = 0
        self.left_per_scene = [len(s.chunks) for s in plan.scenes]
        by_uid = {u.uid: u for u in plan.units}
        files_done = sum(len(by_uid[u].chips) for u in done if by_uid[u].kind == "chips")
        windows_done = sum(by_uid[u].n_rows for u in done if by_uid[u].kind == "scene")
        for u in done:
            if by_uid[u].kind == "scene":
                assert by_uid[u].scene is not None
                self.left_per_scene[by_uid[u].scene] -= 1  # type: ignore[index]
        files_done += sum(1 for n in self.left_per_scene if n == 0)
        self.files = progress.add_task("files", total=len(plan.chips) + len(plan.scenes),
                                       completed=files_done)
        self.windows = progress.add_task("windows", total=max(1, plan.n_windows),
                                         completed=windows_done if plan.n_windows else 1)
        self.chips = progress.add_task("classified", total=None)

    def unit_done(self, unit: Unit, rows: list[PredictionRow], n_classified: int) -> None:
        self.job.write_part(unit.uid, rows)
        self.record(unit, n_classified)

    def record(self, unit: Unit, n_classified: int) -> None:
        self.classified += n_classified
        self.progress.advance(self.chips, n_classified)
        if unit.kind == "chips":
            self.progress.advance(self.files, len(unit.chips))
        else:
            assert unit.scene is not None
            self.progress.advance(self.windows, unit.n_rows)
            self.left_per_scene[unit.scene] -= 1
            if self.left_per_scene[unit.scene] == 0:
                self.progress.advance(self.files, 1)


_END = object()


class _Batcher(threading.Thread):
    """Reads units with a thread pool and feeds fixed-size batches into a bounded queue.

    Queue items: ``("batch", array, segments)`` where segments are
    ``(pending, start_in_todo, count, offset_in_batch)``, ``("unit", pending)`` for a unit
    that needs no model, ``("error", exc)``, and `_END`.
    """

    def __init__(self, units: Iterable[Unit], plan: Plan, read_opts: ReadOptions,
                 workers: int, batch_size: int, prefetch: int):
        super().__init__(name="vision-batcher", daemon=True)
        self.units = iter(units)
        self.plan = plan
        self.read_opts = read_opts
        self.workers = workers
        self.batch_size = batch_size
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # hand any failure to the consumer thread
            self._put(("error", exc))
        finally:
            self._put(_END)

    def _run(self) -> None:
        bs = self.batch_size
        inflight: deque[Future[Pending]] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="vision-read") as pool:

            def fill() -> None:
                # Bounded read-ahead: memory stays at a few units whatever the job size.
                while len(inflight) < 2 * self.workers:
                    unit = next(self.units, None)
                    if unit is None:
                        return
                    inflight.append(pool.submit(prepare, unit, self.plan, self.read_opts))

            fill()
            buf: np.ndarray | None = None
            segs: list[tuple[Pending, int, int, int]] = []
            n = 0
            while inflight:
                pending = inflight.popleft().result()
                fill()
                if self.stop.is_set():
                    return
                if pending.pixels is None:
                    if not self._put(("unit", pending)):
                        return
                    continue
                px = pending.pixels
                start = 0
                while start < len(px):
                    if n == 0 and len(px) - start >= bs:
                        # A whole batch from one unit: a view, no copy.
                        if not self._put(("batch", px[start: start + bs],
                                          [(pending, start, bs, 0)])):
                            return
                        start += bs
                        continue
                    if buf is None:
                        buf = np.empty((bs, *px.shape[1:]), dtype=px.dtype)
                    take = min(bs - n, len(px) - start)
                    buf[n: n + take] = px[start: start + take]
                    segs.append((pending, start, take, n))
                    n += take
                    start += take
                    if n == bs:
                        if not self._put(("batch", buf, segs)):
                            return
                        buf, segs, n = None, [], 0
            if n:
                assert buf is not None
                self._put(("batch", buf[:n], segs))


def _run_local(plan: Plan, units: list[Unit], model: ModelInfo, session: Future[Classifier],
               read_opts: ReadOptions, sess_opts: SessionOptions, workers: int,
               prefetch: int, tracker: _Tracker) -> None:
    completer = RowCompleter(model)
    batcher = _Batcher(units, plan, read_opts, workers, sess_opts.batch_size, prefetch)
    batcher.start()  # the first units are read while the session is still being built
    clf = session.result()
    # Rows and part files are written off the model's thread: the session never waits on
    # pyarrow or the disk. One writer keeps the work ordered and the tracker single-threaded.
    writer = ThreadPoolExecutor(1, thread_name_prefix="vision-write")
    writes: deque[Future[None]] = deque()

    def write(p: Pending) -> None:
        tracker.unit_done(p.unit, completer.complete(p), len(p.todo))

    def finish(p: Pending) -> None:
        p.pixels = None  # classified: the rows are all the writer needs
        writes.append(writer.submit(write, p))
        while writes and writes[0].done():
            writes.popleft().result()  # a failed write stops the job here

    # Up to `streams` batches run at once (ONNX Runtime sessions are safe to call from
    # several threads); their logits are taken back in submission order.
    streams = sess_opts.streams
    model_pool = ThreadPoolExecutor(streams, thread_name_prefix="vision-model")
    running: deque[tuple[Future[np.ndarray], list[tuple[Pending, int, int, int]]]] = deque()

    def collect(wait: bool) -> None:
        """Take back finished batches in order; with ``wait``, at least the oldest."""
        while running and (wait or running[0][0].done()):
            fut, segs = running.popleft()
            logits = fut.result()
            for pending, start, count, off in segs:
                completer.add_logits(pending, start, logits[off: off + count])
                if pending.ready:
                    finish(pending)
            wait = False

    try:
        while True:
            item = batcher.queue.get()
            if item is _END:
                break
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "unit":
                finish(item[1])
                continue
            _, batch, segs = item
            running.append((model_pool.submit(clf, batch), segs))
            collect(wait=len(running) >= streams)
        while running:
            collect(wait=True)
    finally:
        batcher.stop.set()
        batcher.join(timeout=30)
        model_pool.shutdown(wait=True)
        writer.shutdown(wait=True)  # units already classified are still recorded
    for f in writes:
        f.result()


def _identity(model: ModelInfo, opts: JobOptions, stride: tuple[int, int]) -> dict[str, Any]:
    """What makes two runs the same job (device, batch size and engine do not change rows)."""
    return {
        "model_sha256": model.sha256,
        "inputs": list(opts.inputs),
        "stride": list(stride),
        "max_nodata": opts.max_nodata,
        "fp16": opts.fp16,
        "chip_block": CHIP_BLOCK,
        "schema_version": MANIFEST_SCHEMA_VERSION,
    }


def _model_entry(model: ModelInfo, uri: str) -> dict[str, Any]:
    return {"uri": uri, "name": model.model_name, "version": model.model_version,
            "sha256": model.sha256, "precision": model.precision,
            "views": model.views, "classes": model.classes, "bands": model.bands,
            "input_size": list(model.input_size), "temperature": model.temperature,
            "thresholds": {model.classes[k]: v for k, v in (model.thresholds or {}).items()}
            or None}


def run_job(opts: JobOptions, console: Console | None = None) -> JobResult:
    """Run (or resume, or recognise as finished) a job. See `vision infer --help`.

    Raises:
        ConfigError: bad options, a model that cannot be used, or a job folder conflict.
    """
    console = console or Console(stderr=True)
    _check_options(opts)
    with resolve_model(opts.model) as model_path:
        model = load_model_info(model_path)
        stride = opts.stride or model.input_size
        identity = _identity(model, opts, stride)
        job = JobFolder(opts.out)
        state = job.open(fingerprint(identity), opts.overwrite)
        if state == "done":
            manifest = job.read_manifest() or {}
            code = int(manifest.get("exit_code", 0))
            console.print(f"job {opts.out} is already finished ({manifest.get('counts')}); "
                          "nothing to do. Use --overwrite to run it again.")
            return JobResult("already-finished", code, manifest.get("counts", {}),
                             manifest.get("class_counts", {}))
        if opts.engine == "ray":
            # The actors choose their device where they run (the driver may have no GPU).
            if opts.device not in ("auto", "cpu", "cuda", "tensorrt"):
                raise ConfigError(f"--device must be auto, cpu, cuda or tensorrt, not {opts.device!r}")
            device, batch_size = opts.device, opts.batch_size or 0
        else:
            device = choose_device(opts.device)
            batch_size = opts.batch_size or default_batch_size(device, model.views)
        if opts.fp16 and device not in ("tensorrt",):
            raise ConfigError("--fp16 builds TensorRT fp16 engines (--device tensorrt); for "
                              "CUDA or CPU, pass a model exported with `vision export --fp16`")
        workers = opts.workers or max(1, min(4, cpu_threads()))
        started, t0 = _now(), time.perf_counter()
        streams = 1 if opts.engine == "ray" else (
            opts.streams or default_streams(device, cpu_threads()))
        if streams > 1 and device != "cpu":
            raise ConfigError("--streams above 1 is for the CPU; a GPU session runs one stream")
        sess_opts = SessionOptions(device=device, threads=opts.threads, fp16=opts.fp16,
                                   batch_size=batch_size, streams=streams)
        loader = ThreadPoolExecutor(1, thread_name_prefix="vision-session")
        # Build (and optimise) the session while the inputs are being planned.
        session: Future[Classifier] | None = None
        if opts.engine == "local":
            session = loader.submit(Classifier, model_path, sess_opts,
                                    (model.num_bands, *model.input_size), model.input_dtype)
        loader.shutdown(wait=False)
        files = discover(opts.inputs, exclude=opts.out)
        plan = make_plan(files, model, stride, workers=workers)
        manifest_head: dict[str, Any] = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "status": "running",
            "fingerprint": fingerprint(identity),
            "plan_digest": plan.digest(),
            "model": _model_entry(model, opts.model),
            "options": {k: v for k, v in identity.items() if k not in ("model_sha256",)},
            "run": {"device": device, "batch_size": batch_size, "engine": opts.engine,
                    "workers": workers, "streams": streams},
            "started_at": started,
        }
        if state == "resume":
            old = job.read_manifest() or {}
            if old.get("plan_digest") != manifest_head["plan_digest"]:
                raise ConfigError(
                    f"the inputs changed since the job in {opts.out} started (files added, "
                    "removed or modified); rerun with --overwrite to start it again")
            manifest_head["started_at"] = old.get("started_at", started)
        job.write_manifest(manifest_head)
        done = job.done_units() & {u.uid for u in plan.units}
        todo = [u for u in plan.units if u.uid not in done]
        console.print(
            f"[bold]vision infer[/bold]: {len(plan.chips)} files as chips, {len(plan.scenes)} "
            f"scenes ({plan.n_windows} windows); model {model.model_name} "
            f"{model.model_version} ({model.sha256[:12]}, {model.precision}"
            + (f", {model.views} views" if model.views > 1 else "") + f"), {model.num_bands} bands "
            f"{model.bands}, {model.input_size[0]}x{model.input_size[1]}; device {device}, "
            f"batch {batch_size or 'auto'}"
            + (f" x {streams} streams of {sess_opts.intra_op_threads} threads"
               if device == "cpu" and opts.engine == "local" else "")
            + f", engine {opts.engine}"
            + (f"; resuming: {len(done)} of {len(plan.units)} units done" if done else ""),
            highlight=False,
        )
        read_opts = ReadOptions.for_model(model, opts.max_nodata)
        t_run = time.perf_counter()
        with _progress(console, opts.progress) as progress:
            tracker = _Tracker(job, plan, progress, done)
            if todo and opts.engine == "ray":
                from inference.ray_engine import run_ray

                run_ray(plan, todo, model, model_path, read_opts, sess_opts,
                        actors=opts.workers, on_unit=tracker.unit_done)
            elif todo:
                assert session is not None
                _run_local(plan, todo, model, session, read_opts, sess_opts, workers,
                           opts.prefetch, tracker)
        run_s = time.perf_counter() - t_run
        result = _finalize(job, plan, model, manifest_head)
        result.classified = tracker.classified
        result.elapsed_s = time.perf_counter() - t0
        result.items_per_s = tracker.classified / run_s if run_s > 0 else 0.0
        manifest = job.read_manifest() or {}
        manifest["throughput"] = {"classified_this_run": tracker.classified,
                                  "classify_s": round(run_s, 3),
                                  "items_per_s": round(result.items_per_s, 1),
                                  "elapsed_s": round(result.elapsed_s, 3)}
        # _SUCCESS is written after the complete manifest.
        job.write_manifest(manifest)
        job.mark_success()
        job.remove_parts()
        _summary(console, result, opts.out)
        return result


def _finalize(job: JobFolder, plan: Plan, model: ModelInfo,
              head: dict[str, Any]) -> JobResult:
    """Merge the parts into the outputs and write the final manifest (not yet _SUCCESS)."""
    table = sort_predictions(job.read_parts([u.uid for u in plan.units]))
    write_table_atomic(job.predictions_path, table)
    status = table["status"].to_pylist()
    counts = {s: status.count(s) for s in ("ok", "nodata", "error")}
    ok = pc.equal(table["status"], string_scalar("ok"))
    names = pc.value_counts(table.filter(ok)["class_name"])
    by_class = {str(v["values"]): int(v["counts"]) for v in names.to_pylist()}
    class_counts = {c: by_class.get(c, 0) for c in model.classes}
    inputs: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    scene_paths = {s.path for s in plan.scenes}
    chip_rows = table.filter(pc.invert(pc.is_in(table["path"],
                                                column(sorted(scene_paths), pa.string()))))
    for r in chip_rows.select(["path", "status", "error", "input_sha256"]).to_pylist():
        inputs.append({"path": r["path"], "kind": "file", "status": r["status"],
                       "error": r["error"], "sha256": r["input_sha256"]})
        if r["status"] == "error":
            errors.append({"path": r["path"], "error": r["error"]})
    for s in plan.scenes:
        rows = scene_rows(table, s.path)
        outputs = write_scene_outputs(s, rows, job.root, model.classes)
        st = rows["status"].to_pylist()
        n = {k: st.count(k) for k in ("ok", "nodata", "error")}
        reasons = sorted({e for e in rows["error"].to_pylist() if e})
        scene_status = "error" if n["error"] else ("ok" if n["ok"] else "nodata")
        inputs.append({"path": s.path, "kind": "scene", "status": scene_status,
                       "error": "; ".join(reasons) or None, "sha256": s.sha256,
                       "crs": s.info.crs, "size": [s.info.height, s.info.width],
                       "grid": [s.grid.rows, s.grid.cols], "windows": n, "outputs": outputs})
        for e in reasons:
            errors.append({"path": s.path, "error": e})
    inputs.sort(key=lambda e: e["path"])
    exit_code = 1 if errors else 0
    manifest = dict(head)
    manifest.update(status="finished", finished_at=_now(), exit_code=exit_code, counts=counts,
                    class_counts=class_counts, rows=table.num_rows, inputs=inputs,
                    errors=errors)
    job.write_manifest(manifest)
    return JobResult("finished", exit_code, counts, class_counts)


def _summary(console: Console, result: JobResult, out: Path) -> None:
    table = Table(title=f"vision infer: {out}", show_footer=False)
    table.add_column("class")
    table.add_column("rows", justify="right")
    for name, n in result.class_counts.items():
        table.add_row(name, f"{n:,}")
    table.add_section()
    table.add_row("[dim]nodata (not assessed)[/dim]", f"{result.counts.get('nodata', 0):,}")
    table.add_row("[red]errors[/red]", f"{result.counts.get('error', 0):,}")
    table.add_row("[bold]total rows[/bold]", f"{sum(result.counts.values()):,}")
    table.add_section()
    table.add_row("classified this run", f"{result.classified:,}")
    table.add_row("throughput", f"{result.items_per_s:,.1f} items/s")
    table.add_row("elapsed", f"{result.elapsed_s:,.1f} s")
    console.print(table)
    if result.exit_code:
        console.print(f"[yellow]finished with {result.counts.get('error', 0)} failed items: "
                      f"see 'errors' in {out / 'manifest.json'}[/yellow]")
