"""Write the evidence package of some items of a job or change job (`review.evidence`).

Everything is read in one database snapshot (the decisions, items and audit rows agree with
each other and with the head recorded), and every file through `review.jobs.files`
(inside the allowed roots, no link followed). An input whose sha256 now differs from the one
recorded when it was classified refuses the package: its crops would not show what the
model and the reviewer saw. The package is written beside ``out`` and moved into place when
complete; then an ``evidence.package`` audit row records its manifest's sha256.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from review import audit
from review.audit_changes import change_record
from review.db.batches import batches
from review.db.engine import Database
from review.db.models import JOB_FAILED, AuditEntry, AuditHead, ChangeItem, Decision, Item, Job, User, utcnow
from review.evidence.cards import ModelEvidence, card_bytes, model_evidence
from review.evidence.layout import (
    DECISIONS,
    EVIDENCE,
    FORMAT,
    HEAD,
    INPUTS,
    KIND,
    MANIFEST,
    ROWS,
    item_dir,
    manifest_text,
    zip_info,
)
from review.jobs.files import InputMissingError, InputRefusedError, SafeFile, open_input
from review.jobs.records import KIND_CHANGE
from review.render import CHIP_DISPLAY, chosen_bands, item_input, render_chip
from review.render_change import choose_bands, crop_tif, names_of, render_pair
from vision.atomic import atomic_path
from vision.cli_options import refuse_overwrite
from vision.errors import ConfigError, InputError, VisionError
from vision.hashing import sha256_bytes, stream_sha256
from vision.raster import open_raster

#: Most items one package holds.
MAX_ITEMS = 1000
#: Item columns that are not evidence (a claim is a lock, not a state).
_TRANSIENT = ("claimed_by", "claim_expires")


@dataclass
class PackageResult:
    """What `build_package` wrote."""

    out: Path
    items: int
    files: int
    head_seq: int
    head_hash: str
    manifest_sha256: str
    rows: int
    notes: list[str] = field(default_factory=list)


def parse_items(text: str) -> list[int]:
    """``"12,14,20-25"`` as item ids.

    Raises:
        ConfigError: not ids, or more than `MAX_ITEMS`.
    """
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(f"--items: {part!r} is not an item id or a range like 20-25")
        a, b = int(lo), int(hi or lo)
        if b < a or b - a >= MAX_ITEMS:
            raise ConfigError(f"--items: the range {part} is empty or longer than {MAX_ITEMS}")
        out.extend(range(a, b + 1))
    ids = list(dict.fromkeys(out))
    if not ids:
        raise ConfigError("--items: name at least one item id (the review page and the item pages show them)")
    if len(ids) > MAX_ITEMS:
        raise ConfigError(f"--items: at most {MAX_ITEMS} items per package")
    return ids


def resolve_job(db: Session, ref: str) -> Job:
    """The job ``ref`` names: its number, or its job or change folder (the latest import).

    Raises:
        ConfigError: no such job.
    """
    if ref.isdigit() and 1 <= int(ref) < 2**31:
        job = db.get(Job, int(ref))
        if job is None:
            raise ConfigError(f"no job {ref}: the jobs page gives the numbers")
        return job
    found = db.execute(
        select(Job).where(Job.job_dir == os.path.realpath(ref), Job.status != JOB_FAILED).order_by(Job.id.desc())
    ).scalars().first()
    if found is None:
        raise ConfigError(f"{ref} is neither a job number nor a job or change folder imported into the service")
    return found


def _iso(v: Any) -> Any:
    return v.isoformat(timespec="microseconds") if isinstance(v, datetime) else v


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


def item_record(item: Item) -> dict[str, Any]:
    """An item's columns as the database holds them (times as ISO text)."""
    return {c.name: _iso(getattr(item, c.name)) for c in Item.__table__.columns if c.name not in _TRANSIENT}


class _Builder:
    def __init__(self, s: Session, job: Job, roots: Sequence[Path]):
        self.s, self.job, self.roots = s, job, roots
        self.files: dict[str, bytes] = {}
        self.inputs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, ModelEvidence] = {}
        self.notes: list[str] = []

    def add(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return name

    @contextmanager
    def _open(self, path: str, what: str) -> Iterator[SafeFile]:
        try:
            with open_input(path, self.roots) as f:
                yield f
        except (InputRefusedError, InputMissingError) as exc:
            raise ConfigError(f"{what} ({path}) cannot be read: {exc}") from exc

    def input(self, src: SafeFile, path: str, recorded: str | None) -> None:
        """Hash an opened input once (the crops are cut from the same descriptor); refuse
        one that changed since it was classified."""
        if path in self.inputs:
            entry = self.inputs[path]
            if recorded and recorded not in entry["recorded_sha256"]:
                entry["recorded_sha256"].append(recorded)
            if recorded and recorded != entry["sha256_now"]:
                raise ConfigError(f"the input {path} has sha256 {entry['sha256_now']}, not the {recorded} recorded "
                                  "when it was classified: no package was written")
            return
        now = stream_sha256(src.chunks())
        if recorded and now != recorded:
            raise ConfigError(
                f"the input {path} has sha256 {now}, not the {recorded} recorded when it was classified: it changed "
                "since, so its crops would not show what the model and the reviewer saw; no package was written"
            )
        self.inputs[path] = {"path": path, "recorded_sha256": [recorded] if recorded else [], "sha256_now": now}

    def model(self, job_dir: str, name: str | None, version: str | None, sha: str | None) -> str:
        ev = model_evidence(Path(job_dir), name, version, sha, self.roots)
        if ev.key not in self.models:
            self.models[ev.key] = ev
            card, record = card_bytes(ev)
            self.add(f"models/{ev.key}/MODEL_CARD.md", card)
            self.add(f"models/{ev.key}/model.json", record)
            self.notes += [f"model {ev.key}: {n}" for n in ev.notes]
        return f"models/{ev.key}"

    def change_item(self, item: Item, change: ChangeItem) -> dict[str, Any]:
        base = item_dir(item.id)
        wb = (change.row_off_before, change.col_off_before, change.height_before, change.width_before)
        wa = (item.row_off, item.col_off, item.height, item.width)
        with self._open(change.path_before, "the before input") as b, self._open(item.path, "the after input") as a:
            self.input(b, change.path_before, change.input_sha256_before)
            self.input(a, item.path, item.input_sha256)
            try:
                with open_raster(b.gdal_path) as ds_b, open_raster(a.gdal_path) as ds_a:
                    bb, ba, names = choose_bands(names_of(ds_b.descriptions), names_of(ds_a.descriptions))
                png_b, png_a = render_pair(b, wb, a, wa)
                tif_b, tif_a = crop_tif(b, wb), crop_tif(a, wa)
            except (VisionError, OSError) as exc:
                raise ConfigError(f"item {item.id}: the windows cannot be read ({exc})") from exc
        pictures = {
            "before": {"crop": self.add(f"{base}/before.tif", tif_b), "png": self.add(f"{base}/before.png", png_b),
                       "bands": bb, "band_names": names, "source": change.path_before, "window": list(wb),
                       "model": self.model(change.job_before, change.model_name_before, change.model_version_before,
                                           change.model_sha256_before)},
            "after": {"crop": self.add(f"{base}/after.tif", tif_a), "png": self.add(f"{base}/after.png", png_a),
                      "bands": ba, "band_names": names, "source": item.path, "window": list(wa),
                      "model": self.model(change.job_after, item.model_name, item.model_version, item.model_sha256)},
        }
        return pictures

    def job_item(self, item: Item) -> dict[str, Any]:
        base = item_dir(item.id)
        path = item_input(self.job.job_dir, item.path)
        window = (item.row_off, item.col_off, item.height, item.width)
        with self._open(path, "the input") as src:
            self.input(src, path, item.input_sha256)
            try:
                png = render_chip(src, window)
                with open_raster(src.gdal_path) as ds:
                    bands = chosen_bands(ds, None)
                if item.row_off is not None:
                    crop = self.add(f"{base}/window.tif", crop_tif(src, window))
                else:  # a whole chip file: the file itself is the window
                    crop = self.add(f"{base}/input{src.suffix or '.bin'}", src.read_bytes(64 << 20))
            except (VisionError, OSError) as exc:
                raise ConfigError(f"item {item.id}: its input cannot be read ({exc})") from exc
        model = self.model(self.job.job_dir, item.model_name, item.model_version, item.model_sha256)
        return {"window": {"crop": crop, "png": self.add(f"{base}/window.png", png), "bands": bands,
                           "source": path, "window": list(window), "model": model}}


def _audit_rows(s: Session, job: Job, item_ids: list[int], head: AuditHead) -> tuple[bytes, dict[str, list[int]], int]:
    """The audit segment from the first row covering the items (or the job) to the head."""
    targets = [f"job:{job.id}", *(f"item:{i}" for i in item_ids)]
    covering: dict[str, list[int]] = {t: [] for t in targets}
    for seq, target in s.execute(select(AuditEntry.seq, AuditEntry.target).where(
            AuditEntry.target.in_(targets), AuditEntry.seq <= head.seq).order_by(AuditEntry.seq)):
        covering[str(target)].append(int(seq))
    first = min((q for qs in covering.values() for q in qs), default=head.seq)
    lines: list[bytes] = []
    for batch in batches(s, AuditEntry, AuditEntry.seq, after=first - 1, where=[AuditEntry.seq <= head.seq]):
        for r in batch:
            lines.append(json.dumps({c.name: getattr(r, c.name) for c in AuditEntry.__table__.columns},
                                    sort_keys=True).encode() + b"\n")
    return b"".join(lines), covering, first


def build_package(db: Database, job_ref: str, item_ids: list[int], out: Path, roots: Sequence[Path], actor: str,
                  overwrite: bool = False) -> PackageResult:
    """Write the evidence package of ``item_ids`` of the job ``job_ref`` to ``out`` (a zip).

    Raises:
        ConfigError: no such job, an item not of it, an input unreadable or changed since it
            was classified, an audit log without a head, or ``out`` exists (``overwrite``).
        AuditKeyError: no audit key (the package's MAC and its audit row need it).
    """
    refuse_overwrite(out, overwrite)
    item_ids = list(dict.fromkeys(item_ids))
    with db.snapshot() as s:
        key = audit.session_key(s)
        job = resolve_job(s, job_ref)
        head = s.get(AuditHead, 1)
        if head is None:
            raise ConfigError("the audit log is empty: there is nothing to give evidence of")
        head_info: dict[str, Any] = {"seq": head.seq, "hash": head.hash, "mac": head.mac}
        b = _Builder(s, job, roots)
        items = []
        for i in item_ids:
            item = s.get(Item, i)
            if item is None or item.job_id != job.id:
                raise ConfigError(f"item {i} is not an item of job {job.id} ({job.name})")
            items.append(item)
        records: list[dict[str, Any]] = []
        for item in items:
            change = s.get(ChangeItem, item.id) if job.kind == KIND_CHANGE else None
            if job.kind == KIND_CHANGE and change is None:
                raise ConfigError(f"item {item.id} of change job {job.id} has no change row")
            try:
                pictures = b.change_item(item, change) if change is not None else b.job_item(item)
            except InputError as exc:
                raise ConfigError(f"item {item.id}: {exc}") from exc
            record = {"item": item_record(item), "change": change_record(change) if change is not None else None,
                      "pictures": pictures, "display_size": CHIP_DISPLAY}
            records.append(record)
            b.add(f"{item_dir(item.id)}/item.json", _json(record))
        decisions = s.execute(
            select(Decision).where(Decision.item_id.in_(item_ids)).order_by(Decision.id)).scalars().all()
        user_ids = {d.reviewer_id for d in decisions}
        user_ids |= {u for it in items for u in (it.decided_by, it.first_reviewer_id) if u is not None}
        users = {int(u): str(n) for u, n in s.execute(select(User.id, User.name).where(User.id.in_(user_ids)))}
        b.add(DECISIONS, _json({
            "decisions": [{"id": d.id, "item_id": d.item_id, "item_version": d.item_version, "kind": d.kind,
                           "decision": d.decision, "class_name": d.class_name, "comment": d.comment,
                           "reviewer_id": d.reviewer_id, "reviewer": users.get(d.reviewer_id),
                           "decided_at": _iso(d.decided_at), "request_id": d.request_id} for d in decisions],
            "users": {str(k): v for k, v in sorted(users.items())}}))
        b.add(INPUTS, _json(sorted(b.inputs.values(), key=lambda e: e["path"])))
        rows, covering, first = _audit_rows(s, job, item_ids, head)
        b.add(ROWS, rows)
        b.add(HEAD, _json(head_info))
        if not decisions:
            b.notes.append("none of the items has a decision yet")
        b.add(EVIDENCE, _json({
            "format": FORMAT, "kind": KIND, "created_at": utcnow().isoformat(timespec="seconds") + "Z",
            "created_by": actor, "items": item_ids,
            "job": {"id": job.id, "name": job.name, "kind": job.kind, "folder": job.job_dir,
                    "classes": job.classes, "classes_of_interest": job.classes_of_interest,
                    "four_eyes": job.four_eyes, "transitions": job.transitions},
            "audit": {"rows": ROWS, "head": HEAD, "first_seq": first, "head_seq": head.seq, "covering": covering},
            "models": sorted(b.models), "notes": b.notes,
        }))
    hashes = {name: sha256_bytes(data) for name, data in b.files.items()}
    manifest = manifest_text(hashes, key)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(b.files):
            zf.writestr(zip_info(name), b.files[name])
        zf.writestr(zip_info(MANIFEST), manifest)
    digest = sha256_bytes(manifest)
    with db.write() as w:
        audit.append(w, actor, "evidence.package", f"job:{job.id}", None,
                     {"items": item_ids, "manifest_sha256": digest, "head_seq": head_info["seq"],
                      "head_hash": head_info["hash"], "files": len(b.files) + 1, "out": str(out)}, "cli")
    return PackageResult(out, len(items), len(b.files) + 1, int(head_info["seq"]), str(head_info["hash"]), digest,
                         rows.count(b"\n"), b.notes)
