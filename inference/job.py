"""The job folder: what a job is (its fingerprint), what is done, and its final outputs.

Layout (ARCHITECTURE.md §3)::

    DIR/manifest.json          job: model identity, options, inputs and their status, counts
    DIR/_parts/<unit>.parquet  rows of each finished unit (while the job runs)
    DIR/predictions.parquet    all rows, sorted by path and window
    DIR/<stem>.classes.tif     per scene: class COG on the window grid
    DIR/<stem>.confidence.tif  per scene: confidence COG
    DIR/<stem>.geojson         per scene: the windows with class and confidence
    DIR/_SUCCESS               written last

A unit's part file is written atomically when the unit is finished, so after a kill at any
moment the next run skips exactly the finished units. The manifest is written (status
``running``) before the first part, with a fingerprint of the model and the options that
change results; a job folder with another fingerprint is refused unless ``--overwrite``.
Leftover temporary files (``.*.tmp``) of a killed run are removed when the job reopens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inference.writers import write_table_atomic
from vision.atomic import remove_temps, write_bytes_atomic, write_json_atomic
from vision.contracts.predictions import PREDICTION_SCHEMA, PredictionRow, rows_to_table
from vision.errors import ConfigError

MANIFEST_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
PREDICTIONS = "predictions.parquet"
PARTS = "_parts"


def fingerprint(identity: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of what makes two jobs the same job."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class JobFolder:
    """One job's folder on disk."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest_path = root / MANIFEST
        self.success_path = root / SUCCESS
        self.predictions_path = root / PREDICTIONS
        self.parts_dir = root / PARTS

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, job_fingerprint: str, overwrite: bool) -> str:
        """Prepare the folder; return ``fresh``, ``resume`` or ``done``.

        Raises:
            ConfigError: the folder holds another job (without ``overwrite``), or files that
                are not a job's.
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out {self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_temps()
        manifest = self.read_manifest()
        if manifest is None:
            others = [p.name for p in self.root.iterdir() if p.name != PARTS]
            if others:
                raise ConfigError(
                    f"--out {self.root} is not empty and is not a job folder (no {MANIFEST}); "
                    "choose a new or empty folder")
            self._clear()
            return "fresh"
        if overwrite:
            self._clear()
            return "fresh"
        if manifest.get("fingerprint") != job_fingerprint:
            old = manifest.get("model", {})
            raise ConfigError(
                f"--out {self.root} holds a job for another model or other options (model "
                f"{old.get('name')} {old.get('version')} sha256 {str(old.get('sha256'))[:12]}, "
                f"options {manifest.get('options')}); rerun with --overwrite to replace it, "
                "or choose another --out")
        if self.success_path.exists() and manifest.get("status") == "finished":
            if self.parts_dir.exists():  # killed between _SUCCESS and the clean-up
                shutil.rmtree(self.parts_dir)
            return "done"
        return "resume"

    def _clear(self) -> None:
        """Remove everything in the folder (only called on a job folder or an empty one)."""
        for p in self.root.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def remove_temps(self) -> None:
        for folder in (self.root, self.parts_dir):
            remove_temps(folder)

    # -- manifest --------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            obj = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{self.manifest_path} is unreadable ({exc}); use --overwrite") \
                from exc
        return obj if isinstance(obj, dict) else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    # -- parts -----------------------------------------------------------------------------

    def part_path(self, uid: str) -> Path:
        return self.parts_dir / f"{uid}.parquet"

    def done_units(self) -> set[str]:
        if not self.parts_dir.is_dir():
            return set()
        return {p.stem for p in self.parts_dir.glob("*.parquet")}

    def write_part(self, uid: str, rows: list[PredictionRow]) -> None:
        self.parts_dir.mkdir(exist_ok=True)
        write_table_atomic(self.part_path(uid), rows_to_table(rows))

    def write_part_table(self, uid: str, table: pa.Table) -> None:
        self.parts_dir.mkdir(exist_ok=True)
        write_table_atomic(self.part_path(uid), table)

    def read_parts(self, uids: list[str]) -> pa.Table:
        # ParquetFile, not pq.read_table: the latter imports pandas (see writers.column).
        tables = [pq.ParquetFile(self.part_path(u)).read().cast(PREDICTION_SCHEMA) for u in uids]
        if not tables:
            return PREDICTION_SCHEMA.empty_table()
        return pa.concat_tables(tables)

    def remove_parts(self) -> None:
        if self.parts_dir.exists():
            shutil.rmtree(self.parts_dir)

    def mark_success(self) -> None:
        write_bytes_atomic(self.success_path, b"")
