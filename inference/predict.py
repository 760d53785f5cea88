"""From a work unit to prediction rows: read (`prepare`), then fill in the model's answer
(`complete`). Shared by the local and the Ray engine, so both produce the same rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inference.cloud_masks import chip_fractions
from inference.geo import wrap_bounds
from inference.model import ModelInfo
from inference.plan import Plan, Unit
from inference.readers import OnRead, WindowError, error_reason, read_chip, read_chunk, window_bounds
from vision.contracts.predictions import (
    STATUS_CLOUDY,
    STATUS_ERROR,
    STATUS_NODATA,
    STATUS_OK,
    PredictionRow,
    new_row,
)
from vision.errors import InputError, ModelOutputError, NoDataError
from vision.hashing import file_sha256
from vision.metrics import softmax
from vision.radiometry import Radiometry

log = logging.getLogger(__name__)

Row = PredictionRow


@dataclass(frozen=True)
class ReadOptions:
    """What reading needs to know besides the unit."""

    bands: tuple[str, ...]
    input_size: tuple[int, int]
    fill: tuple[float, ...] | None
    max_nodata: float
    max_cloud: float = 1.0
    radiometry: Radiometry | None = None
    allow_mismatch: bool = False

    @classmethod
    def for_model(cls, model: ModelInfo, max_nodata: float, max_cloud: float = 1.0,
                  allow_mismatch: bool = False) -> ReadOptions:
        return cls(tuple(model.bands), model.input_size,
                   tuple(model.mean) if model.mean else None, max_nodata, max_cloud,
                   model.radiometry, allow_mismatch)


@dataclass
class Pending:
    """A unit read and waiting for the model.

    Attributes:
        rows: one per item, in the unit's order; items to classify have ``status = ok``
            and no label yet.
        todo: indices of ``rows`` that need the model, in the order of ``pixels``.
        pixels: ``len(todo) x C x H x W`` float32, or ``None`` when nothing needs the model.
        logits: filled as batches come back.
        n_classified: rows the model classified (set by `RowCompleter.complete`; rows whose
            logits were not finite are errors, not classified).
    """

    unit: Unit
    rows: list[Row]
    todo: list[int]
    pixels: np.ndarray | None
    logits: np.ndarray | None = None
    filled: int = 0
    n_classified: int = 0

    @property
    def ready(self) -> bool:
        return self.filled >= len(self.todo)


def _row(path: str, status: str, sha: str | None, **kw: Any) -> Row:
    return new_row(path, status, sha, **kw)


def _safe_sha(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _bounds(b: tuple[float, float, float, float] | None) -> dict[str, float | None]:
    if b is None:
        return {"minx": None, "miny": None, "maxx": None, "maxy": None}
    return {"minx": b[0], "miny": b[1], "maxx": b[2], "maxy": b[3]}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _prepare_chips(unit: Unit, opts: ReadOptions) -> Pending:
    rows: list[Row] = []
    todo: list[int] = []
    clouds: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []  # (index in todo, its input)
    # Each chip is cast and copied straight into the unit's batch array: no per-chip float
    # array and no np.stack (~100 us a chip between them).
    pixels = np.empty((len(unit.chips), len(opts.bands), *opts.input_size), dtype=np.float32)
    for entry in unit.chips:
        item_id = _stem(entry.path)
        if entry.error is not None:
            rows.append(_row(entry.path, "error", _safe_sha(entry.source or entry.path),
                             error=entry.error, item_id=item_id))
            continue
        try:
            chip = read_chip(entry.path, opts.bands, opts.input_size, opts.fill, entry.fit,
                             opts.radiometry, opts.allow_mismatch)
        except NoDataError as exc:
            rows.append(_row(entry.path, "nodata", exc.sha256, crs=exc.crs, item_id=item_id,
                             **_bounds(exc.bounds)))
            continue
        except InputError as exc:
            rows.append(_row(entry.path, "error", _safe_sha(entry.path),
                             error=error_reason(exc, entry.path), item_id=item_id))
            continue
        except Exception as exc:  # a bug or an exotic failure must not stop the batch
            log.debug("unexpected failure on %s", entry.path, exc_info=True)
            rows.append(_row(entry.path, "error", _safe_sha(entry.path),
                             error=f"unexpected {type(exc).__name__}: {exc}", item_id=item_id))
            continue
        assert chip.pixels is not None
        np.copyto(pixels[len(todo)], chip.pixels, casting="unsafe")
        if chip.cloud is not None:
            clouds.append((len(todo), chip.cloud))
        todo.append(len(rows))
        rows.append(_row(entry.path, "ok", chip.sha256, crs=chip.crs, item_id=item_id,
                         acquired=chip.acquired, **_bounds(chip.bounds)))
    if clouds:
        todo = _mark_cloudy(rows, todo, pixels, clouds, opts.max_cloud)
    return Pending(unit, rows, todo, pixels[: len(todo)] if todo else None)


def _mark_cloudy(rows: list[Row], todo: list[int], pixels: np.ndarray,
                 clouds: list[tuple[int, tuple[np.ndarray, np.ndarray]]], max_cloud: float) -> list[int]:
    """Record the chips' cloud fractions; those over ``max_cloud`` become ``cloudy`` rows and
    leave the batch (``pixels`` compacted in place). Returns the chips still to classify."""
    fractions = chip_fractions([c for _, c in clouds])
    cloudy: set[int] = set()
    for (k, _), f in zip(clouds, fractions, strict=True):
        row = rows[todo[k]]
        row["cloud_fraction"] = f
        if f is not None and f > max_cloud:
            row["status"] = STATUS_CLOUDY
            cloudy.add(k)
    if not cloudy:
        return todo
    keep = [k for k in range(len(todo)) if k not in cloudy]
    pixels[: len(keep)] = pixels[keep]
    return [todo[k] for k in keep]


def _prepare_scene(unit: Unit, plan: Plan, opts: ReadOptions, sink: ReadSink | None) -> Pending:
    assert unit.scene is not None and unit.chunk is not None
    scene = plan.scenes[unit.scene]
    chunk = scene.chunks[unit.chunk]
    affine = scene.info.affine
    wraps = scene.info.wraps  # longitudes past ±180: normalised (RFC 7946's convention)

    item_id, acquired = scene.info.item_id or _stem(scene.path), scene.info.acquired

    def base(status: str, win: tuple[int, int, int, int], **kw: Any) -> Row:
        if scene.aoi is not None:
            kw["aoi_id"] = scene.aoi_id(win[0], win[1])
        b = window_bounds(affine, win)
        if wraps:
            west, east = wrap_bounds(b[0], b[2])
            b = (west, b[1], east, b[3])
        return _row(scene.path, status, scene.sha256, row_off=win[0], col_off=win[1],
                    height=win[2], width=win[3], crs=scene.info.crs, item_id=item_id,
                    acquired=acquired, **_bounds(b), **kw)

    try:
        on_read = sink.adder(unit.scene, unit.chunk) if sink is not None else None
        windows = read_chunk(scene.info, scene.grid, chunk, opts.max_nodata, opts.fill, on_read,
                             opts.max_cloud)
    except Exception as exc:  # the whole chunk failed to read: its windows are errors
        if not isinstance(exc, InputError):
            log.debug("unexpected failure on %s", scene.path, exc_info=True)
        reason = error_reason(exc, scene.path)
        rows = [base("error", scene.grid.window(i, j), error=reason) for i, j in chunk.windows()]
        return Pending(unit, rows, [], None)
    rows, todo, arrays = [], [], []
    for w in windows:
        if isinstance(w, WindowError):
            rows.append(base("error", w.window, error=error_reason(w.error, scene.path)))
        elif w.pixels is None:
            rows.append(base(STATUS_CLOUDY if w.cloudy else STATUS_NODATA, w.window,
                             cloud_fraction=w.cloud_fraction))
        else:
            todo.append(len(rows))
            rows.append(base(STATUS_OK, w.window, cloud_fraction=w.cloud_fraction))
            arrays.append(w.pixels)
    if not arrays:
        return Pending(unit, rows, todo, None)
    pixels = np.empty((len(arrays), *arrays[0].shape), dtype=np.float32)
    for k, a in enumerate(arrays):
        np.copyto(pixels[k], a, casting="unsafe")  # one cast and copy per window
    return Pending(unit, rows, todo, pixels)


class ReadSink(Protocol):
    """Takes the pixels of each scene read (`inference.quicklook.CanvasSink`)."""

    def adder(self, scene: int, chunk: int) -> OnRead: ...


def prepare(unit: Unit, plan: Plan, opts: ReadOptions, sink: ReadSink | None = None) -> Pending:
    """Read a unit's inputs; bad items become ``error``/``nodata`` rows, never exceptions.

    ``sink`` is handed every successful read of a scene chunk (for the quicklook).
    """
    if unit.kind == "chips":
        return _prepare_chips(unit, opts)
    return _prepare_scene(unit, plan, opts, sink)


#: The reason of a row whose logits were NaN or infinite.
NON_FINITE_REASON = error_reason(ModelOutputError(
    "the model returned non-finite logits (NaN or Inf) for this item; no class is given. Check the "
    "model (a broken export or fp16 overflow) on this input"), "")


class RowCompleter:
    """Turns logits into calibrated probabilities and fills the prediction columns.

    ``flagged`` is null for a class without an operating point. An item whose logits are
    not all finite becomes an ``error`` row with `NON_FINITE_REASON` (a NaN would otherwise
    pick an arbitrary class with a NaN confidence).
    """

    def __init__(self, model: ModelInfo):
        self.classes = model.classes
        self.temperature = model.temperature
        self.identity = (model.model_name, model.model_version, model.sha256)
        self.thresholds: np.ndarray | None = None
        if model.thresholds is not None:
            # NaN where a class has no operating point: its rows get flagged = null.
            thr = np.full(len(model.classes), np.nan, dtype=np.float32)
            for k, t in model.thresholds.items():
                thr[k] = t
            self.thresholds = thr

    def add_logits(self, pending: Pending, start: int, logits: np.ndarray) -> None:
        """Store ``logits`` for ``pending.todo[start: start + len(logits)]``."""
        if pending.logits is None:
            pending.logits = np.empty((len(pending.todo), logits.shape[1]), dtype=np.float32)
        pending.logits[start: start + len(logits)] = logits
        pending.filled += len(logits)

    def complete(self, pending: Pending) -> list[Row]:
        """The unit's rows with labels, probabilities and model identity filled in."""
        if pending.todo:
            assert pending.logits is not None
            finite = np.isfinite(pending.logits).all(axis=1)
            n_bad = len(finite) - int(finite.sum())
            # Softmax of finite logits only; the bad rows' are replaced, never shown.
            logits = pending.logits if not n_bad else np.where(finite[:, None], pending.logits, 0.0)
            probs = softmax(logits, self.temperature)
            labels = probs.argmax(axis=1)
            conf = probs[np.arange(len(labels)), labels]
            flagged: list[bool | None] | None = None
            if self.thresholds is not None:
                thr = self.thresholds[labels]
                flagged = [None if t else f for f, t in
                           zip((conf >= thr).tolist(), np.isnan(thr).tolist(), strict=True)]
            for k, idx in enumerate(pending.todo):
                row = pending.rows[idx]
                lab = int(labels[k])
                row["label"], row["class_name"] = lab, self.classes[lab]
                row["confidence"], row["probs"] = float(conf[k]), probs[k].tolist()
                row["flagged"] = flagged[k] if flagged is not None else None
            if n_bad:
                for k in np.flatnonzero(~finite).tolist():
                    row = pending.rows[pending.todo[k]]
                    row["status"], row["error"] = STATUS_ERROR, NON_FINITE_REASON
                    row["label"] = row["class_name"] = row["confidence"] = None
                    row["probs"] = row["flagged"] = None
            pending.n_classified = len(pending.todo) - n_bad
        name, version, sha = self.identity
        for row in pending.rows:
            row["model_name"], row["model_version"], row["model_sha256"] = name, version, sha
        return pending.rows
