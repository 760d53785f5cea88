"""Check an evidence package offline and name the first file that does not hold.

Needs nothing but the package: no database, no input file, no network. With the audit key
(the service's ``VISION_REVIEW_SECRET`` or audit key file) it also checks every HMAC; with
anchors (``vision review audit anchor`` heads) it ties the package's rows to the chain the
service held. What each proves: `review.evidence`. The checks, in order (the first failure
is reported, naming its file):

1. the zip: safe names, no duplicates or links, every member readable (CRC);
2. ``MANIFEST.sha256`` checks itself, then every file's sha256, and that no file is missing
   or added; with the key, the package MAC over the manifest;
3. the audit rows: consecutive, each ``prev_hash`` the previous row's hash, the last one the
   recorded head; unkeyed (version 1) rows recomputed; with the key every row's HMAC and the
   head's MAC; the anchors that fall inside the rows;
4. the decisions are the ones the review rows record (kind, decision, class, comment,
   reviewer, time, request id), and no review row of the items lacks its decision;
5. each item's review state and the fingerprints of its content and change row equal what
   its last review row records;
6. each crop's size, CRS and bounds are the recorded window's, and each picture is exactly
   the rendering of its crop(s) (both dates with one stretch); a whole chip file's sha256 is
   the input's recorded one;
7. each model card names the model the item records; each input's sha256 recomputed at
   packaging time equals the one recorded at classification.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from review.audit import CHAIN_VERSION, LEGACY_VERSION, ChainFields, entry_mac, head_mac, legacy_entry_hash
from review.audit_anchor import Anchor
from review.audit_state import Expectations, decision_mismatch
from review.evidence.layout import (
    DECISIONS,
    EVIDENCE,
    FORMAT,
    HEAD,
    INPUTS,
    KIND,
    MANIFEST,
    ROWS,
    EvidenceError,
    check_files,
    check_mac,
    item_dir,
    parse_manifest,
    read_members,
)
from review.render import CHIP_DISPLAY, rgb_png
from review.render_change import Crop, crop_pixels, read_crop, render_arrays
from vision.bands import stretch_uint8
from vision.errors import InputError
from vision.hashing import sha256_bytes

_ROW_FIELDS = ("seq", "version", "at", "actor", "action", "target", "before", "after", "request_id", "prev_hash",
               "hash")


@dataclass
class VerifyReport:
    """What `verify_package` checked (it raises `EvidenceError` at the first failure)."""

    items: int
    files: int
    rows: int
    first_seq: int
    head_seq: int
    keyed: bool
    anchored: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A summary for people, saying what was and was not proven."""
        out = [
            f"evidence package intact: {self.files} files match the manifest; {self.items} items, their decisions, "
            f"pictures, crops and model cards agree with {self.rows} linked audit rows "
            f"({self.first_seq}-{self.head_seq})",
        ]
        if self.keyed:
            out.append("keyed: every audit row's HMAC, the signed head and the package MAC check with the audit key")
        else:
            out.append("not keyed: without VISION_REVIEW_SECRET the rows' HMACs and the package MAC were not checked; "
                       "this shows internal consistency, not that the service made the package")
        if self.anchored:
            out.append(f"anchored: the rows at {', '.join(map(str, self.anchored))} equal the anchored heads")
        out += [f"note: {n}" for n in self.notes]
        return out


def _json(members: dict[str, bytes], name: str) -> Any:
    if name not in members:
        raise EvidenceError(name, "missing from the package")
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceError(name, f"not JSON ({exc})") from exc


def _need(cond: bool, file: str, reason: str) -> None:
    if not cond:
        raise EvidenceError(file, reason)


def _rows(members: dict[str, bytes], evidence: dict[str, Any], head: dict[str, Any], key: bytes | None
          ) -> list[dict[str, Any]]:
    first = evidence["audit"]["first_seq"]
    rows: list[dict[str, Any]] = []
    prev: str | None = None
    for no, line in enumerate(members[ROWS].splitlines(), start=1):
        try:
            r = json.loads(line)
        except ValueError as exc:
            raise EvidenceError(ROWS, f"line {no} is not JSON ({exc})") from exc
        _need(isinstance(r, dict) and all(f in r for f in _ROW_FIELDS), ROWS, f"line {no} is not an audit row")
        seq = first + no - 1
        _need(r["seq"] == seq, ROWS, f"line {no} is row {r['seq']}, expected row {seq} (rows missing or reordered)")
        if prev is not None:
            _need(r["prev_hash"] == prev, ROWS, f"row {seq}: previous-hash link broken (a row before it changed)")
        fields = ChainFields.of(r)
        if r["version"] == LEGACY_VERSION:
            _need(legacy_entry_hash(*fields) == r["hash"], ROWS, f"row {seq}: content does not match its hash")
        elif r["version"] == CHAIN_VERSION:
            if key is not None:
                _need(entry_mac(key, *fields) == r["hash"], ROWS,
                      f"row {seq}: its HMAC does not match its content (edited, or VISION_REVIEW_SECRET is not the "
                      "service's)")
        else:
            raise EvidenceError(ROWS, f"row {seq} has an unknown chain version {r['version']!r}")
        prev = r["hash"]
        rows.append(r)
    _need(bool(rows), ROWS, "holds no audit row")
    _need(rows[-1]["seq"] == head.get("seq") and rows[-1]["hash"] == head.get("hash"), HEAD,
          f"the head (row {head.get('seq')}) is not the last row of {ROWS} (row {rows[-1]['seq']})")
    _need(evidence["audit"]["head_seq"] == head.get("seq"), EVIDENCE, "names another chain head than audit/head.json")
    if key is not None:
        _need(isinstance(head.get("mac"), str) and head["mac"] == head_mac(key, head["seq"], head["hash"]), HEAD,
              "the head's MAC does not check with the audit key (rewritten, or VISION_REVIEW_SECRET is not the "
              "service's)")
    return rows


def _anchors(rows: list[dict[str, Any]], anchors: Sequence[Anchor], report: VerifyReport) -> None:
    by_seq = {r["seq"]: r for r in rows}
    for a in anchors:
        r = by_seq.get(a.seq)
        if r is None:
            when = "after" if a.seq > report.head_seq else "before"
            report.notes.append(f"the head anchored at {a.at} (row {a.seq}) lies {when} the package's rows")
            continue
        _need(r["hash"] == a.hash, ROWS, f"row {a.seq} differs from the head anchored at {a.at} (rewritten)")
        report.anchored.append(a.seq)
    if anchors and not report.anchored:
        raise EvidenceError("(anchors)", f"no anchored head falls within the package's rows {report.first_seq}-"
                                         f"{report.head_seq}: anchor right after packaging (`vision review audit "
                                         "anchor`) to tie a package to the chain")


def _covering(rows: list[dict[str, Any]], evidence: dict[str, Any]) -> None:
    covering = evidence["audit"]["covering"]
    _need(isinstance(covering, dict), EVIDENCE, "audit.covering is not a map of targets to rows")
    for r in rows:
        if r["target"] in covering:
            _need(r["seq"] in covering[r["target"]], EVIDENCE,
                  f"audit row {r['seq']} ({r['action']} on {r['target']}) is not listed as covering it")
    by_seq = {r["seq"]: r for r in rows}
    for target, seqs in covering.items():
        for q in seqs:
            _need(q in by_seq and by_seq[q]["target"] == target, EVIDENCE,
                  f"row {q} is listed as covering {target} but is not a row on it in {ROWS}")


def _time(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if isinstance(v, str) else None


def _decisions(members: dict[str, bytes], exp: Expectations, item_ids: set[int]) -> dict[int, str]:
    doc = _json(members, DECISIONS)
    _need(isinstance(doc, dict) and isinstance(doc.get("decisions"), list), DECISIONS, "not a list of decisions")
    names = {int(k): str(v) for k, v in (doc.get("users") or {}).items()}
    seen = set()
    for d in doc["decisions"]:
        _need(d.get("item_id") in item_ids, DECISIONS, f"decision {d.get('id')} is on an item not in the package")
        key = (d["item_id"], d["item_version"])
        review = exp.reviews.get(key)
        _need(review is not None, DECISIONS,
              f"decision {d['id']} (item {d['item_id']}, version {d['item_version']}) has no audit row in the package")
        ns = SimpleNamespace(**d)
        ns.decided_at = _time(d.get("decided_at"))
        bad = decision_mismatch(ns, review, names)  # type: ignore[arg-type]
        _need(bad is None, DECISIONS, str(bad))
        seen.add(key)
    for key, r in exp.reviews.items():
        if r.item_id in item_ids:
            _need(key in seen, DECISIONS, f"audit row {r.seq} records a {r.kind} decision on item {r.item_id} "
                                          "that decisions.json lacks")
    return names


def _png_pixels(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            _need(im.format == "PNG", name, "not a PNG")
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise EvidenceError(name, f"not a readable PNG ({exc})") from exc


def _same_picture(members: dict[str, bytes], name: str, rgb: np.ndarray) -> None:
    _need(name in members, name, "missing from the package")
    want = _png_pixels(rgb_png(rgb, CHIP_DISPLAY), name)
    have = _png_pixels(members[name], name)
    _need(have.shape == want.shape and bool((have == want).all()), name,
          "is not the rendering of its crop(s): the picture differs from what the crop gives")


def _crop(members: dict[str, bytes], pic: dict[str, Any], bounds: list[Any], crs: str | None, where: str) -> Crop:
    name: Any = pic.get("crop")
    _need(isinstance(name, str) and name in members, where, f"names a crop {name!r} the package lacks")
    try:
        crop = read_crop(members[name])
    except InputError as exc:
        raise EvidenceError(name, str(exc)) from exc
    r, c, h, w = pic["window"]
    _need(crop.data.shape[1:] == (h, w), name, f"is {crop.data.shape[1]} x {crop.data.shape[2]}, the window {h} x {w}")
    if all(isinstance(v, int | float) for v in bounds):
        scale = max(1.0, *(abs(float(v)) for v in bounds))
        _need(all(math.isclose(a, float(b), rel_tol=0, abs_tol=1e-6 * scale) for a, b in zip(crop.bounds, bounds,
                                                                                              strict=True)),
              name, f"covers {list(crop.bounds)}, not the recorded window {bounds}")
    if crs:
        from rasterio.crs import CRS

        _need(crop.crs is not None and CRS.from_user_input(crop.crs) == CRS.from_user_input(crs), name,
              f"is in {crop.crs}, not the recorded {crs}")
    return crop


def _item(members: dict[str, bytes], item_id: int, job_id: int, exp: Expectations, names: dict[int, str],
          report: VerifyReport) -> dict[str, Any]:
    where = f"{item_dir(item_id)}/item.json"
    rec = _json(members, where)
    _need(isinstance(rec, dict) and isinstance(rec.get("item"), dict), where, "not an item record")
    it: Any = rec["item"]
    change: Any = rec.get("change")
    _need(it.get("id") == item_id and it.get("job_id") == job_id, where, f"is not item {item_id} of job {job_id}")
    ns = SimpleNamespace(**it)
    ns.decided_at = _time(it.get("decided_at"))
    bad = exp.check_item(ns, names, change)
    _need(bad is None, where, bad.reason if bad is not None else "")
    pics: Any = rec.get("pictures") or {}
    if change is not None:
        b: Any = pics.get("before")
        a: Any = pics.get("after")
        _need(isinstance(b, dict) and isinstance(a, dict), where, "lacks the before and after pictures")
        cb = _crop(members, b, [change[f"{k}_before"] for k in ("minx", "miny", "maxx", "maxy")], change["crs_before"],
                   where)
        ca = _crop(members, a, [it[k] for k in ("minx", "miny", "maxx", "maxy")], it["crs"], where)
        try:
            rgb_b, rgb_a = render_arrays(crop_pixels(cb, b["bands"]), crop_pixels(ca, a["bands"]))
        except (IndexError, ValueError, TypeError) as exc:
            raise EvidenceError(where, f"its bands do not fit its crops ({exc})") from exc
        _same_picture(members, b["png"], rgb_b)
        _same_picture(members, a["png"], rgb_a)
    else:
        p: Any = pics.get("window")
        _need(isinstance(p, dict), where, "lacks its picture")
        if str(p.get("crop", "")).endswith("/window.tif"):
            crop = _crop(members, p, [it[k] for k in ("minx", "miny", "maxx", "maxy")], it["crs"], where)
            px = crop_pixels(crop, p["bands"])  # as `review.render.render_chip` draws a window
            valid = None if px.nodata is None else px.data != px.nodata
            _same_picture(members, p["png"], stretch_uint8(px.data, valid))
        else:  # a whole chip file, copied: it must be the file that was classified
            name: Any = p.get("crop")
            _need(isinstance(name, str) and name in members, where, f"names a copy {name!r} the package lacks")
            if it.get("input_sha256"):
                _need(sha256_bytes(members[name]) == it["input_sha256"], name,
                      "is not the classified file (its sha256 differs from the item's input_sha256)")
            else:
                report.notes.append(f"item {item_id}: the table recorded no input sha256 to compare its copy with")
    return rec


def _models(members: dict[str, bytes], rec: dict[str, Any], report: VerifyReport) -> None:
    it: Any = rec["item"]
    change: Any = rec.get("change")
    for date, pic in rec["pictures"].items():
        folder: Any = pic.get("model")
        where = f"{folder}/model.json"
        model = _json(members, where)
        _need(f"{folder}/MODEL_CARD.md" in members, f"{folder}/MODEL_CARD.md", "missing from the package")
        want = change["model_sha256_before"] if date == "before" else it["model_sha256"]
        _need(model.get("recorded_sha256") == want, where,
              f"names the model {model.get('recorded_sha256')}, the item's {date} model is {want}")
        now = model.get("onnx_sha256")
        if now and want and now != want:
            report.notes.append(f"item {it['id']} ({date}): the ONNX file reached at packaging differs from the one "
                                "that classified (see the card)")


def _inputs(members: dict[str, bytes], records: list[dict[str, Any]]) -> None:
    listed = {e.get("path"): e for e in _json(members, INPUTS)}
    for rec in records:
        it: Any = rec["item"]
        change: Any = rec.get("change")
        for date, pic in rec["pictures"].items():
            want = change["input_sha256_before"] if date == "before" else it["input_sha256"]
            e: Any = listed.get(pic.get("source"))
            _need(e is not None, INPUTS, f"does not list the input {pic.get('source')} of item {it['id']}")
            if want:
                _need(want in e["recorded_sha256"] and e["sha256_now"] == want, INPUTS,
                      f"{pic.get('source')}: sha256 recorded {want}, at packaging {e['sha256_now']}")


def verify_package(path: Path, key: bytes | None = None, anchors: Sequence[Anchor] = ()) -> VerifyReport:
    """Check an evidence package (see the module docstring).

    Raises:
        EvidenceError: naming the first file (or member) that does not hold.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = read_members(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EvidenceError(path.name, f"not a readable zip ({exc})") from exc
    _need(MANIFEST in members, MANIFEST, "missing: this is not an evidence package")
    manifest = parse_manifest(members[MANIFEST])
    check_files(members, manifest)
    if key is not None:
        _need(check_mac(manifest, key), MANIFEST, "its package MAC does not check with the audit key (made or "
                                                  "changed without it, or VISION_REVIEW_SECRET is not the service's)")
    evidence = _json(members, EVIDENCE)
    _need(isinstance(evidence, dict) and evidence.get("kind") == KIND and evidence.get("format") == FORMAT, EVIDENCE,
          f"not a format-{FORMAT} evidence description")
    head = _json(members, HEAD)
    _need(ROWS in members, ROWS, "missing from the package")
    rows = _rows(members, evidence, head, key)
    item_ids = [int(i) for i in evidence["items"]]
    report = VerifyReport(len(item_ids), len(members), len(rows), rows[0]["seq"], rows[-1]["seq"], key is not None,
                          notes=[str(n) for n in evidence.get("notes") or []])
    _anchors(rows, anchors, report)
    _covering(rows, evidence)
    exp = Expectations()
    for r in rows:
        exp.feed(SimpleNamespace(**r))  # type: ignore[arg-type]
    names = _decisions(members, exp, set(item_ids))
    records = [_item(members, i, int(evidence["job"]["id"]), exp, names, report) for i in item_ids]
    for rec in records:
        _models(members, rec, report)
    _inputs(members, records)
    reviewed = {r.item_id for r in exp.reviews.values()} & set(item_ids)
    if len(reviewed) < len(item_ids):
        report.notes.append(f"{len(item_ids) - len(reviewed)} of the items have no review row (not reviewed)")
    return report
