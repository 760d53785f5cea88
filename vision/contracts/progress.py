"""A running job's progress, as the runner reports it to whoever watches the job folder.

``DIR/progress.json`` is rewritten atomically by `vision infer` while it runs (at most a few
times a second) and left behind with ``state = finished`` (or ``failed``) at the end. The
review service's worker reads it instead of scraping the runner's console output.

Fields: ``state`` (`STATES`), ``done`` and ``total`` (items: chip files plus scene windows),
``updated_at`` (ISO 8601, UTC).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vision.atomic import write_json_atomic

PROGRESS_FILE = "progress.json"
STATES: tuple[str, ...] = ("planning", "running", "finalizing", "finished", "failed")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobProgress:
    """How far a job is."""

    state: str
    done: int = 0
    total: int = 0
    updated_at: str = field(default_factory=_now)

    def write(self, job_dir: Path) -> None:
        """Write ``job_dir/progress.json`` atomically."""
        write_json_atomic(job_dir / PROGRESS_FILE, asdict(self))

    @classmethod
    def read(cls, job_dir: Path) -> JobProgress | None:
        """The progress in ``job_dir``, or ``None`` when absent or unreadable (a job folder is
        written by another process: a malformed file is not an error of the reader)."""
        try:
            raw = json.loads((job_dir / PROGRESS_FILE).read_text())
            p = cls(state=str(raw["state"]), done=int(raw["done"]), total=int(raw["total"]),
                    updated_at=str(raw.get("updated_at", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return p if p.state in STATES and p.done >= 0 and p.total >= 0 else None
