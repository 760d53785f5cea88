"""The end of a job's work: each scene's outputs as soon as the scene is done, then the parts
merged into ``predictions.parquet``, the job's STAC catalog written (`inference.stac_items`)
and the final manifest built (its caller writes it once, then ``_SUCCESS``)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from inference.cog import raster_layout
from inference.job import JobFolder
from inference.model import ModelInfo
from inference.plan import Plan
from inference.progress import JobResult
from inference.quicklook import CanvasSink, canvas_from_file
from inference.stac_items import scene_item, write_stac
from inference.writers import (
    OutputWriteError,
    scene_files,
    scene_output_names,
    scene_rows,
    sort_predictions,
    write_scene_outputs,
    write_table_atomic,
)
from vision.contracts.predictions import (
    STATUS_CLOUDY,
    STATUS_ERROR,
    STATUS_NODATA,
    STATUS_OK,
    STATUSES,
    column,
    string_scalar,
)


class SceneOutputs:
    """Writes each scene's rasters, GeoJSON and quicklook once all its windows are recorded:
    while the model works on the next units (`done`, from the engine's writer), or at the
    end for scenes finished by an earlier run (`finish`)."""

    def __init__(self, job: JobFolder, plan: Plan, model: ModelInfo, sink: CanvasSink | None):
        self.job = job
        self.plan = plan
        self.model = model
        self.sink = sink
        self.written: set[int] = set()
        # Quicklooks are encoded here while the rasters and GeoJSON are written.
        self._background = ThreadPoolExecutor(1, thread_name_prefix="vision-quicklook")
        self._quicklooks: list[Future[None]] = []

    def done(self, scene: int) -> None:
        """Every unit of ``scene`` is recorded: write its outputs now."""
        s = self.plan.scenes[scene]
        uids = [u.uid for u in self.plan.units if u.scene == scene]
        rows = sort_predictions(self.job.read_parts(uids))
        canvas = self.sink.take(scene) if self.sink is not None else None
        if canvas is None:  # chunks read by an earlier run or elsewhere
            canvas = canvas_from_file(s, self.model.bands)
        job = write_scene_outputs(s, rows, self.job.root, self.model.classes, canvas,
                                  self._background)
        if job is not None:
            self._quicklooks.append(job)
        self._collect(wait=False)
        self.written.add(scene)

    def _collect(self, wait: bool) -> None:
        """Take back finished quicklooks (all of them with ``wait``); raise a failed one's
        error."""
        while self._quicklooks and (wait or self._quicklooks[0].done()):
            self._quicklooks.pop(0).result()

    def close(self) -> None:
        """Wait for the quicklooks being written (their errors are raised by `finish`)."""
        self._background.shutdown(wait=True)

    def finish(self) -> None:
        """Write the outputs of the scenes not written by this run, unless an earlier run
        of the job wrote them all (each file is written whole, and only once the scene's
        windows were all recorded)."""
        for s in self.plan.scenes:
            if s.index in self.written:
                continue
            names = scene_files(s).values()
            if not all((self.job.root / n).is_file() for n in names):
                self.done(s.index)
        self._collect(wait=True)


def _counts(values: list[str]) -> dict[str, int]:
    return {s: values.count(s) for s in STATUSES}


def _scene_status(n: dict[str, int]) -> str:
    """A scene's status: ``error`` when a window failed, ``ok`` when one was classified,
    else why none was (``cloudy`` when clouds hid any of it, else ``nodata``)."""
    if n[STATUS_ERROR]:
        return STATUS_ERROR
    if n[STATUS_OK]:
        return STATUS_OK
    return STATUS_CLOUDY if n[STATUS_CLOUDY] else STATUS_NODATA


def _job_time(head: dict[str, Any]) -> datetime:
    try:
        t = datetime.fromisoformat(str(head.get("started_at")))
    except ValueError:
        return datetime.now(UTC)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def finalize(job: JobFolder, plan: Plan, model: ModelInfo, head: dict[str, Any],
             scenes: SceneOutputs) -> tuple[dict[str, Any], JobResult]:
    """Write the scenes' outputs not written yet, merge the parts and write the job's STAC
    catalog; return the final manifest (not yet written) and the job's result.

    Raises:
        OutputWriteError: an output could not be written (the parts are kept).
    """
    scenes.finish()
    table = sort_predictions(job.read_parts([u.uid for u in plan.units]))
    write_table_atomic(job.predictions_path, table)
    counts = _counts(table["status"].to_pylist())
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
    items = []
    for s in plan.scenes:
        rows = scene_rows(table, s.path)
        outputs = scene_output_names(s)
        n = _counts(rows["status"].to_pylist())
        reasons = sorted({e for e in rows["error"].to_pylist() if e})
        layout = raster_layout(s)
        entry: dict[str, Any] = {
            "path": s.path, "kind": "scene", "status": _scene_status(n),
            "error": "; ".join(reasons) or None, "sha256": s.sha256, "crs": s.info.crs,
            "size": [s.info.height, s.info.width], "grid": [s.grid.rows, s.grid.cols],
            "windows": n, "outputs": outputs,
            "raster": {"shape": [layout.height, layout.width],
                       "scene_pixels_per_cell": [round(v, 6) for v in layout.pixel],
                       "note": layout.note}}
        inputs.append(entry)
        items.append(scene_item(s, layout, rows, model.classes, head.get("model") or {}, entry,
                                _job_time(head)))
        for e in reasons:
            errors.append({"path": s.path, "error": e})
    title = f"vision infer: {model.model_name} {model.model_version}"
    try:
        stac_names = write_stac(job.root, items, title) if items else []
    except OSError as exc:
        raise OutputWriteError(job.root / "stac", exc) from exc
    inputs.sort(key=lambda e: e["path"])
    errors.sort(key=lambda e: e["path"])
    exit_code = 1 if errors else 0
    manifest = dict(head)
    manifest.update(status="finished", finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    exit_code=exit_code, counts=counts, class_counts=class_counts,
                    rows=table.num_rows, inputs=inputs, errors=errors,
                    outputs=sorted({*head.get("outputs", []), *stac_names}))
    return manifest, JobResult("finished", exit_code, counts, class_counts, errors=errors)
