"""The job folder: what a job is (its fingerprint and marker), who runs it (the lock), what
is done, and which files are the job's.

Layout::

    DIR/manifest.json          job: marker, model identity, options, inputs, counts, outputs
    DIR/progress.json          state and items done, while the job runs and after
    DIR/_parts/<unit>.parquet  rows of each finished unit (while the job runs)
    DIR/predictions.parquet    all rows, sorted by path and window
    DIR/<stem>.classes.tif     per scene: class COG, ending at the scene's edges
    DIR/<stem>.confidence.tif  per scene: confidence COG
    DIR/<stem>.geojson         per scene: the windows, RFC 7946 (WGS 84 longitude/latitude)
    DIR/<stem>.quicklook.png   per scene: class colours over the scene, with a legend
    DIR/_SUCCESS               written last
    DIR/.lock                  held (flock) by the process running the job

A unit's part file is written atomically when the unit is finished, so after a kill at any
moment the next run skips exactly the finished units. The manifest is written (status
``running``) before the first part, with the job's marker: the manifest schema version and
a fingerprint of the model and the options that change results, and the names of every
output the job will write. A folder is taken for a job folder only when its manifest carries
that marker; ``--overwrite`` then removes the job's own files and nothing else, and a folder
with other content and no marker is refused whatever the options. One process at a time
runs a job: the second finds ``.lock`` held and stops (`JobRunningError`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inference.writers import write_table_atomic, writing
from vision.atomic import TMP_SUFFIX, write_bytes_atomic, write_json_atomic
from vision.contracts.predictions import PREDICTION_SCHEMA, PredictionRow, rows_to_table
from vision.contracts.progress import PROGRESS_FILE
from vision.errors import ConfigError

#: Version 2: absolute input paths, the output list, RFC 7946 GeoJSON and clipped rasters.
MANIFEST_SCHEMA_VERSION = 2
#: Manifest versions recognised as a job's marker (their jobs may be replaced).
MARKER_SCHEMAS = frozenset({1, 2})
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
PREDICTIONS = "predictions.parquet"
PARTS = "_parts"
LOCK = ".lock"
#: Files every job has, whatever its inputs.
JOB_FILES = (MANIFEST, PROGRESS_FILE, PREDICTIONS, SUCCESS, LOCK)
#: Suffixes of the per-scene outputs a manifest may name (anything else is not the job's).
OUTPUT_SUFFIXES = (".tif", ".geojson", ".png", ".aux.xml")
#: JSON a job writes beside those: its AOI summary, and (in `OUTPUT_FOLDER`) its STAC items.
#: No other ``.json`` name counts as the job's, so ``--overwrite`` never removes a user's file.
AOI_SUMMARY = "aoi_summary.json"
#: The one sub-folder outputs may be in (the job's STAC catalog: ``stac/<stem>.json``).
OUTPUT_FOLDER = "stac"
_PART = re.compile(r"[cs][0-9]{5,6}(-[0-9]{6})?\.parquet")
_PART_TEMP = re.compile(r"\.[cs][0-9]{5,6}(-[0-9]{6})?\.parquet\..+" + re.escape(TMP_SUFFIX))
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class JobRunningError(ConfigError):
    """Another process is running the job in this folder."""


def fingerprint(identity: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of what makes two jobs the same job."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def is_job_manifest(obj: object) -> bool:
    """Whether a parsed ``manifest.json`` carries a job's marker: a known manifest schema
    version and a job fingerprint (a sha256)."""
    return (isinstance(obj, dict) and obj.get("schema_version") in MARKER_SCHEMAS
            and isinstance(obj.get("fingerprint"), str)
            and _FINGERPRINT.fullmatch(obj["fingerprint"]) is not None)


def _is_part_file(p: Path) -> bool:
    """A unit's part file (or a temporary one) in ``_parts``."""
    return (p.is_file() or p.is_symlink()) and bool(_PART.fullmatch(p.name) or _PART_TEMP.fullmatch(p.name))


def _is_output_name(name: object) -> bool:
    """A per-scene output file name as the job writes it: a plain name in the folder, or in
    its `OUTPUT_FOLDER`."""
    folder, _, base = name.rpartition("/") if isinstance(name, str) else ("", "", "")
    if folder not in ("", OUTPUT_FOLDER) or base in ("", ".", "..") or base.startswith("."):
        return False
    if base.endswith(".json"):
        return base == AOI_SUMMARY if folder == "" else True
    return base.endswith(OUTPUT_SUFFIXES)


def manifest_outputs(manifest: dict[str, Any]) -> set[str]:
    """The per-scene output names a job's manifest lists (version 2: ``outputs``; version 1:
    each scene input's ``outputs``), keeping only plain file names with an output suffix."""
    names: list[object] = list(manifest.get("outputs") or [])
    for entry in manifest.get("inputs") or []:
        if isinstance(entry, dict) and isinstance(entry.get("outputs"), dict):
            names.extend(entry["outputs"].values())
    return {n for n in names if _is_output_name(n)}  # type: ignore[misc]


class JobFolder:
    """One job's folder on disk."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest_path = root / MANIFEST
        self.success_path = root / SUCCESS
        self.predictions_path = root / PREDICTIONS
        self.parts_dir = root / PARTS
        self.lock_path = root / LOCK
        self._lock_fd: int | None = None
        self._created: list[Path] = []

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, job_fingerprint: str, overwrite: bool) -> str:
        """Lock the folder and prepare it; return ``fresh``, ``resume`` or ``done``.

        Raises:
            JobRunningError: another process holds the job's lock.
            ConfigError: the folder holds another job (without ``overwrite``), or content
                that is not a job's (whatever ``overwrite``).
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out {self.root} exists and is not a folder")
        try:
            if self.root.is_dir():  # refuse a foreign folder before writing anything into it
                self._check_is_job_or_empty(self._marker())
            self._mkdir()
            self._lock()
        except OSError as exc:  # a read-only place, or a filesystem without file locks
            raise ConfigError(f"--out {self.root} cannot be used as a job folder: "
                              f"{exc.strerror or exc}; choose a folder you can write to on a "
                              "local or lock-capable filesystem") from exc
        try:
            return self._prepare(job_fingerprint, overwrite)
        except BaseException:
            self.close()
            raise

    def _prepare(self, job_fingerprint: str, overwrite: bool) -> str:
        manifest = self._marker()
        self._check_is_job_or_empty(manifest)
        if manifest is None:
            self._remove_job_files(set())  # leftovers of a run stopped while planning
            return "fresh"
        if overwrite:
            self._remove_job_files(manifest_outputs(manifest))
            return "fresh"
        if manifest.get("fingerprint") != job_fingerprint:
            old = manifest.get("model") or {}
            raise ConfigError(
                f"--out {self.root} holds a job for another model or other options (model "
                f"{old.get('name')} {old.get('version')} sha256 {str(old.get('sha256'))[:12]}, "
                f"options {manifest.get('options')}); rerun with --overwrite to replace it, "
                "or choose another --out")
        self.remove_temps(manifest_outputs(manifest))
        if self.success_path.exists() and manifest.get("status") == "finished":
            self._remove_parts()  # killed between _SUCCESS and the clean-up
            return "done"
        return "resume"

    def close(self) -> None:
        """Release the lock (the lock file stays: removing it would race a waiting opener)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def discard_if_unused(self) -> None:
        """After a failure before the job wrote its manifest: remove what this run created
        (the lock and progress files, and the folders it made), so a mistyped command
        leaves no empty ``--out`` behind."""
        if self.manifest_path.exists():
            self.close()
            return
        for name in (PROGRESS_FILE, LOCK):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()
        self.close()
        for d in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: something else is there now
                d.rmdir()

    def _mkdir(self) -> None:
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        self._created = list(reversed(missing))

    def _lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise JobRunningError(
                f"the job in {self.root} is running in another process"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + "; wait for it to finish (rerunning then resumes or reports it finished), "
                "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _marker(self) -> dict[str, Any] | None:
        """The manifest when it carries a job's marker, else ``None``."""
        try:
            obj = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return obj if is_job_manifest(obj) else None

    def _check_is_job_or_empty(self, manifest: dict[str, Any] | None) -> None:
        if manifest is not None:
            return
        foreign = sorted(self._foreign(set()))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            what = ("a manifest.json without a vision infer job's marker" if self.manifest_path.exists()
                    else f"no {MANIFEST}")
            raise ConfigError(
                f"--out {self.root} is not empty and is not a job folder ({what}; it holds "
                f"{shown}); nothing was changed there. Choose a new or empty folder")

    def _owned(self, outputs: set[str]) -> set[str]:
        return {*JOB_FILES, *outputs}

    @staticmethod
    def _is_temp_of(name: str, owned: set[str]) -> bool:
        """Whether ``name`` is a temporary file of one of ``owned`` (`vision.atomic` names
        them ``.<name>.<random>.tmp``; GDAL's own temps of a COG add suffixes before it)."""
        return (name.startswith(".") and name.endswith(TMP_SUFFIX)
                and any(name.startswith(f".{o}.") for o in owned))

    def _foreign(self, outputs: set[str]) -> list[str]:
        """Entries of the folder that are not this job's (nor a run's leftovers)."""
        owned = self._owned(outputs)
        out = []
        for p in self.root.iterdir():
            if p.name in owned or self._is_temp_of(p.name, owned):
                continue
            if p.name == PARTS and p.is_dir() and not p.is_symlink() and not self._foreign_parts():
                continue
            out.append(p.name)
        return out

    def _foreign_parts(self) -> list[str]:
        return [p.name for p in self.parts_dir.iterdir()
                if not _is_part_file(p)]

    def _remove_job_files(self, outputs: set[str]) -> None:
        """Remove this job's files (and temps of them); leave everything else."""
        owned = self._owned(outputs) - {LOCK}
        for p in self.root.iterdir():
            if p.name == PARTS:
                self._remove_parts()
            elif (p.name in owned or self._is_temp_of(p.name, owned)) and (p.is_file() or p.is_symlink()):
                p.unlink()
            elif p.name == OUTPUT_FOLDER and p.is_dir() and not p.is_symlink():  # never through a link
                for q in p.iterdir():
                    if f"{OUTPUT_FOLDER}/{q.name}" in owned and (q.is_file() or q.is_symlink()):
                        q.unlink()
                with contextlib.suppress(OSError):  # not empty: something else is there
                    p.rmdir()

    def remove_temps(self, outputs: Iterable[str] = ()) -> None:
        """Remove leftover temporary files of the job's own files (a killed run's)."""
        owned = self._owned(set(outputs))
        for p in self.root.iterdir():
            if self._is_temp_of(p.name, owned) and (p.is_file() or p.is_symlink()):
                p.unlink()
        if self.parts_dir.is_dir() and not self.parts_dir.is_symlink():
            for p in self.parts_dir.iterdir():
                if _PART_TEMP.fullmatch(p.name) and p.is_file():
                    p.unlink()

    # -- manifest --------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        """The job's manifest (with its marker), or ``None``."""
        return self._marker()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        with writing(self.manifest_path):
            write_json_atomic(self.manifest_path, manifest)

    # -- parts -----------------------------------------------------------------------------

    def part_path(self, uid: str) -> Path:
        return self.parts_dir / f"{uid}.parquet"

    def done_units(self) -> set[str]:
        if not self.parts_dir.is_dir():
            return set()
        return {p.stem for p in self.parts_dir.glob("*.parquet")}

    def write_part(self, uid: str, rows: list[PredictionRow]) -> None:
        self.write_part_table(uid, rows_to_table(rows))

    def write_part_table(self, uid: str, table: pa.Table) -> None:
        path = self.part_path(uid)
        with writing(path):
            self.parts_dir.mkdir(exist_ok=True)
            write_table_atomic(path, table)

    def read_parts(self, uids: list[str]) -> pa.Table:
        # ParquetFile, not pq.read_table: the latter imports pandas (see writers.column).
        tables = [pq.ParquetFile(self.part_path(u)).read().cast(PREDICTION_SCHEMA) for u in uids]
        if not tables:
            return PREDICTION_SCHEMA.empty_table()
        return pa.concat_tables(tables)

    def _remove_parts(self) -> None:
        """Remove the part files (and their temps); the folder too when nothing else is in it."""
        d = self.parts_dir
        if d.is_symlink():
            d.unlink()
            return
        if not d.is_dir():
            return
        for p in d.iterdir():
            if _is_part_file(p):
                p.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()

    def remove_parts(self) -> None:
        """Remove the part files once the outputs are complete (after ``_SUCCESS``)."""
        self._remove_parts()

    def mark_success(self) -> None:
        with writing(self.success_path):
            write_bytes_atomic(self.success_path, b"")
