"""What a finished `vision change` folder is, and the checks made before it is imported.

A change folder holds ``change_manifest.json`` (of kind `MANIFEST_KIND`), ``changes.parquet``
(the contract `vision.contracts.changes`) and ``_SUCCESS``; each is read only inside the
allowed roots (`review.jobs.files`). `review.jobs.change_import` imports such a folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from review.jobs.files import InputMissingError, InputRefusedError, is_inside, open_input, read_small
from vision.contracts.changes import CHANGE_TRANSITIONS, TRANSITIONS, ChangeTableError, check_change_table
from vision.errors import ConfigError

CHANGE_MANIFEST, CHANGES_TABLE, SUCCESS = "change_manifest.json", "changes.parquet", "_SUCCESS"
#: ``kind`` of a change folder's manifest (what `vision change` writes).
MANIFEST_KIND = "vision-change"
#: Transitions queued for review unless the import names others.
DEFAULT_TRANSITIONS: tuple[str, ...] = CHANGE_TRANSITIONS
#: Largest change manifest read.
MANIFEST_LIMIT = 64 << 20


def parse_transitions(values: Sequence[str] | None) -> list[str]:
    """The transitions to queue (``None`` or empty: `DEFAULT_TRANSITIONS`); items may be
    comma-separated.

    Raises:
        ConfigError: an unknown transition.
    """
    wanted = [t.strip() for v in (values or ()) for t in v.split(",") if t.strip()]
    if not wanted:
        return list(DEFAULT_TRANSITIONS)
    bad = [t for t in wanted if t not in TRANSITIONS]
    if bad:
        raise ConfigError(
            f"unknown transition(s) {', '.join(bad)}: choose among {', '.join(TRANSITIONS)} "
            "(uncertain and not_assessed windows are never queued as changes)"
        )
    return sorted(set(wanted), key=TRANSITIONS.index)


def is_change_folder(folder: Path, roots: Sequence[Path]) -> bool:
    """Whether ``folder`` (inside the roots) holds a change manifest: a `vision change` output."""
    try:
        with open_input(Path(os.path.realpath(folder)) / CHANGE_MANIFEST, roots):
            return True
    except (InputMissingError, InputRefusedError):
        return False


def read_change_manifest(folder: Path, roots: Sequence[Path]) -> dict[str, Any]:
    """The folder's ``change_manifest.json``, checked to be a change folder's.

    Raises:
        ConfigError: missing, outside the roots, unreadable, or not of a change folder.
    """
    try:
        data = json.loads(read_small(folder / CHANGE_MANIFEST, roots, MANIFEST_LIMIT))
    except (InputMissingError, InputRefusedError) as exc:
        raise ConfigError(f"{folder}/{CHANGE_MANIFEST}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{folder}/{CHANGE_MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise ConfigError(f"{folder}/{CHANGE_MANIFEST} is not the manifest of a `vision change` folder")
    return data


@contextmanager
def open_changes(folder: Path, roots: Sequence[Path]) -> Iterator[pq.ParquetFile]:
    """``folder/changes.parquet``, opened inside the roots, checked against the contract.

    Raises:
        ConfigError: missing, outside the roots, not Parquet, or not a change table.
    """
    try:
        with open_input(folder / CHANGES_TABLE, roots) as f, os.fdopen(os.dup(f.fd), "rb") as fobj:
            try:
                table = pq.ParquetFile(fobj)
                check_change_table(table.schema_arrow)
            except ChangeTableError as exc:
                raise ConfigError(f"{folder}/{CHANGES_TABLE}: {exc}") from exc
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise ConfigError(f"{folder}/{CHANGES_TABLE} is not a readable Parquet table ({exc})") from exc
            yield table
    except InputMissingError as exc:
        raise ConfigError(f"{folder}: no {CHANGES_TABLE} (is this a `vision change` output?)") from exc
    except InputRefusedError as exc:
        raise ConfigError(f"{folder}/{CHANGES_TABLE}: {exc}") from exc


def check_change_dir(folder: Path, roots: Sequence[Path]) -> tuple[int, dict[str, Any]]:
    """Check a finished change folder before queueing it; returns its rows and manifest.

    Raises:
        ConfigError: outside the roots, not a change folder, unfinished, or a bad table.
    """
    if not is_inside(folder, roots):
        raise ConfigError(
            f"{folder} is outside the allowed folders ({', '.join(map(str, roots))}); "
            "add its folder to VISION_REVIEW_ROOTS to import it"
        )
    manifest = read_change_manifest(folder, roots)
    with open_changes(folder, roots) as table:
        rows = int(table.metadata.num_rows)
    try:
        with open_input(folder / SUCCESS, roots):
            pass
    except (InputMissingError, InputRefusedError) as exc:
        raise ConfigError(f"{folder}: `vision change` has not finished (no {SUCCESS} marker)") from exc
    return rows, manifest
