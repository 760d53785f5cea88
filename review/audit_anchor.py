"""Anchors: copies of the audit chain's head kept outside the database.

The keyed chain stops anyone without the key from rewriting the log, but someone who can
write the database can still put back an older copy of it, or wipe it together with every
table. An anchor, one JSON line ``{"seq": N, "hash": "...", "at": "..."}`` appended to a
file that lives elsewhere (another host, write-once storage, a ticket), records how long the
chain was and how row N hashed; ``vision review audit verify --anchor FILE`` then fails when
the log is shorter than, or differs from, any anchored head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vision.errors import ConfigError


@dataclass(frozen=True)
class Anchor:
    """One anchored head.

    Attributes:
        seq: the number of rows the log had (the last row's sequence number).
        hash: that row's hash.
        at: when it was anchored (ISO 8601, UTC).
    """

    seq: int
    hash: str
    at: str

    def line(self) -> str:
        """The anchor as one JSON line (no newline)."""
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at}, sort_keys=True)


def make_anchor(seq: int, hash_: str) -> Anchor:
    """An anchor of the head ``(seq, hash_)`` stamped with the current time."""
    return Anchor(seq, hash_, datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def append_anchor(path: Path, anchor: Anchor) -> None:
    """Append ``anchor`` to ``path`` (created owner-only; opened ``O_APPEND``, never rewritten).

    Raises:
        ConfigError: the file cannot be opened for appending.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot append to {path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, (anchor.line() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor in ``path``, in file order (blank lines skipped).

    Raises:
        ConfigError: the file is unreadable or a line is not an anchor (naming the line).
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the anchor file {path}: {exc}") from exc
    anchors = []
    for no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            seq, hash_, at = data["seq"], data["hash"], data["at"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{no}: not an anchor line (expected {{\"seq\", \"hash\", \"at\"}})") from exc
        if not (isinstance(seq, int) and seq >= 0 and isinstance(hash_, str) and len(hash_) == 64):
            raise ConfigError(f"{path}:{no}: an anchor needs a row number >= 0 and a 64-character hash")
        anchors.append(Anchor(seq, hash_, str(at)))
    return anchors
