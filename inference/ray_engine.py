"""`vision infer --engine ray`: the same job on a Ray cluster.

The plan's work units (blocks of chip files, chunks of scene windows) become a Ray Data
dataset; an actor pool of `UnitClassifier`s, each holding one ONNX Runtime session (one
actor per GPU where the cluster has GPUs, else CPU actors), reads and classifies each unit;
the driver writes the rows of every finished unit into the job folder exactly as the local
engine does, so resume, outputs and ``_SUCCESS`` are the same.

Cluster:
    * ``RAY_ADDRESS`` unset: a local Ray is started for the job (and stopped after it).
    * Existing cluster: ``RAY_ADDRESS=ray://HEAD:10001 vision infer ... --engine ray``
      (Ray Client) or, on a cluster node, ``RAY_ADDRESS=auto``. Every node needs this
      project installed at the same version (e.g. the project's Docker image) and must see
      the INPUT files at the same paths (a shared filesystem or mount); the model travels
      through Ray's object store, and only the driver writes the job folder.
    * ``--workers N`` sets the number of actors (default: one per GPU, or one per two CPUs);
      ``--threads`` the CPU threads per CPU actor (default 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from inference.engine import Engine, OnUnit
from inference.model import ModelInfo
from inference.plan import Plan, Unit
from inference.predict import ReadOptions, ReadSink, RowCompleter, prepare
from inference.session import Classifier, Device, SessionOptions, choose_device, default_batch_size
from vision.contracts.predictions import PREDICTION_SCHEMA, PredictionRow, rows_to_table
from vision.errors import ConfigError

log = logging.getLogger(__name__)

UNIT_COLUMN = "_unit"


class UnitClassifier:
    """A Ray actor: one ONNX session; classifies whole units (a batch holds unit indices)."""

    def __init__(self, plan: Plan, units: list[Unit], model_bytes: bytes, model: ModelInfo,
                 read_opts: ReadOptions, device: str | Device, threads: int,
                 batch_size: int | None):
        chosen = choose_device(device)
        self.batch_size = batch_size or default_batch_size(chosen, model.views)
        opts = SessionOptions(device=chosen, threads=threads, batch_size=self.batch_size)
        self.clf = Classifier(model_bytes, opts, (model.num_bands, *model.input_size),
                              model.input_dtype)
        self.completer = RowCompleter(model)
        self.plan = plan
        self.units = units
        self.read_opts = read_opts

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        tables = []
        for k in batch["i"].tolist():
            unit = self.units[int(k)]
            pending = prepare(unit, self.plan, self.read_opts)
            if pending.pixels is not None:
                for s in range(0, len(pending.pixels), self.batch_size):
                    chunk = pending.pixels[s: s + self.batch_size]
                    self.completer.add_logits(pending, s, self.clf(chunk))
            table = rows_to_table(self.completer.complete(pending))
            tables.append(table.append_column(UNIT_COLUMN, pa.array([int(k)] * table.num_rows,
                                                                    pa.int64())))
        return pa.concat_tables(tables)


def _init_ray(actors: int | None) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local Ray; return whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True,
                              "configure_logging": True}
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, **common)
        return False
    cpus = max(1, os.cpu_count() or 1, actors or 1)
    log.info("RAY_ADDRESS unset: starting a local Ray with %d CPUs", cpus)
    ray.init(num_cpus=cpus, include_dashboard=False, **common)
    return True


class RayEngine(Engine):
    """Runs units on a Ray actor pool (see the module doc)."""

    def run(self, plan: Plan, units: Sequence[Unit], on_unit: OnUnit,
            sink: ReadSink | None = None) -> None:
        """Classify on the actors (they read the units there: ``sink`` is not used)."""
        if not units:
            return
        s = self.setup
        run_ray(plan, list(units), s.model, s.model_path, s.read, s.session, s.workers, on_unit,
                device=s.device, batch_size=s.batch_size)


def run_ray(plan: Plan, units: list[Unit], model: ModelInfo, model_path: Path,
            read_opts: ReadOptions, sess_opts: SessionOptions, actors: int | None,
            on_unit: Callable[[Unit, list[PredictionRow], int], None],
            device: Device = Device.AUTO, batch_size: int | None = None) -> None:
    """Classify ``units`` on Ray; call ``on_unit`` on the driver for each finished unit.

    ``device`` is the one asked for (``auto``: GPU actors where the cluster has GPUs);
    ``batch_size`` ``None`` lets each actor take its device's default.
    """
    import ray
    import ray.data

    started = _init_ray(actors)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if device in (Device.CUDA, Device.TENSORRT) and gpus == 0:
            raise ConfigError(f"--device {device}: the Ray cluster has no GPU")
        use_gpu = gpus > 0 and device is not Device.CPU
        threads = sess_opts.threads or 1
        n_actors = actors or (gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // 2))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        model_bytes = model_path.read_bytes()
        ds: Any = ray.data.from_items([{"i": k} for k in range(len(units))],
                                 override_num_blocks=min(len(units), 10 * n_actors))
        ds = ds.map_batches(
            UnitClassifier,
            fn_constructor_kwargs={
                "plan": plan, "units": units, "model_bytes": model_bytes, "model": model,
                "read_opts": read_opts, "device": str(device if use_gpu else Device.CPU),
                "threads": threads, "batch_size": batch_size,
            },
            batch_size=1,
            batch_format="numpy",
            concurrency=n_actors,
            num_cpus=0 if use_gpu else threads,
            num_gpus=1 if use_gpu else 0,
        )
        rows_by_unit: dict[int, list[PredictionRow]] = {}
        cols = list(PREDICTION_SCHEMA.names)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            table: pa.Table = batch
            ids = table[UNIT_COLUMN].to_pylist()
            rows = table.select(cols).to_pylist()
            for k, row in zip(ids, rows, strict=True):
                rows_by_unit.setdefault(k, []).append(row)
                unit = units[k]
                if len(rows_by_unit[k]) == unit.n_rows:
                    done = rows_by_unit.pop(k)
                    on_unit(unit, done, sum(1 for r in done if r["status"] == "ok"))
        if rows_by_unit:
            raise RuntimeError(f"Ray returned incomplete units: {sorted(rows_by_unit)[:5]}")
    finally:
        if started:
            ray.shutdown()
