"""The files of an evidence package and its manifest.

A package is a zip holding::

    evidence.json              what the package is: job, items, audit segment, models, notes
    decisions.json             every decision on the items (reviewer, time, comment), users
    inputs.json                each input file: sha256 recorded at classification, and recomputed
    items/<id>/item.json       the item (and change row) as the database held it
    items/<id>/<date>.tif      the window of each date (``before``/``after``; ``window`` for an
                               item of a job), a GeoTIFF with CRS and transform
    items/<id>/<date>.png      its rendering as the review page showed it
    models/<key>/MODEL_CARD.md the model card (or one built from the ONNX metadata, saying so)
    models/<key>/model.json    the model's identity, ONNX sha256 and metadata
    audit/rows.jsonl           the audit rows from the first that covers the items to the head
    audit/head.json            the chain head at packaging time (with its MAC)
    MANIFEST.sha256            sha256 of every other file, the package MAC, and its own sha256

``MANIFEST.sha256`` is text: a header line, one ``<sha256>  <name>`` line per file (sorted
by name), ``mac <hex>`` (HMAC-SHA256 over the lines before it with a key derived from the
audit key: `package_key`), and ``self <sha256>`` of every byte before that line. So a
changed byte in the manifest is named as the manifest's, never blamed on another file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from review.auth.keys import hkdf_sha256
from vision.errors import VisionError
from vision.hashing import sha256_bytes

FORMAT = 1
KIND = "vision-evidence"
MANIFEST = "MANIFEST.sha256"
EVIDENCE, DECISIONS, INPUTS = "evidence.json", "decisions.json", "inputs.json"
ROWS, HEAD = "audit/rows.jsonl", "audit/head.json"
HEADER = f"# vision evidence package, format {FORMAT}"
#: Largest package member read back (crops are windows; rows of a long log are the largest).
MAX_MEMBER = 1 << 30
#: Most members a package may hold.
MAX_MEMBERS = 100_000
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")
_PURPOSE = b"vision-review evidence package v1"


class EvidenceError(VisionError):
    """A package does not hold: ``file`` is the first file to blame, ``reason`` says why."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def item_dir(item_id: int) -> str:
    """The folder of one item in the package."""
    return f"items/{int(item_id)}"


def package_key(audit_key: bytes) -> bytes:
    """The key of a package's MAC, derived from the audit key (never the audit key itself)."""
    return hkdf_sha256(audit_key, _PURPOSE)


def manifest_text(hashes: dict[str, str], audit_key: bytes) -> bytes:
    """``MANIFEST.sha256`` for files ``{name: sha256}``, MAC'd with ``audit_key``'s package key."""
    body = HEADER + "\n" + "".join(f"{hashes[n]}  {n}\n" for n in sorted(hashes))
    mac = hmac.new(package_key(audit_key), body.encode(), hashlib.sha256).hexdigest()
    signed = f"{body}mac {mac}\n"
    return f"{signed}self {sha256_bytes(signed.encode())}\n".encode()


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: the files' hashes, the MAC, and the bytes the MAC covers."""

    hashes: dict[str, str]
    mac: str
    body: bytes


def parse_manifest(data: bytes) -> Manifest:
    """Parse and self-check ``MANIFEST.sha256``.

    Raises:
        EvidenceError: naming the manifest, for any change to it.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise EvidenceError(MANIFEST, "not ASCII text (changed)") from None
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[-2].startswith("self "):
        raise EvidenceError(MANIFEST, "does not end with its own sha256 line (changed or cut short)")
    signed = "\n".join(lines[:-2]) + "\n"
    if lines[-2] != f"self {sha256_bytes(signed.encode())}":
        raise EvidenceError(MANIFEST, "its own sha256 does not match its content (changed)")
    if lines[0] != HEADER:
        raise EvidenceError(MANIFEST, f"not a format-{FORMAT} evidence manifest")
    mac_line = lines[-3]
    if not re.fullmatch(r"mac [0-9a-f]{64}", mac_line):
        raise EvidenceError(MANIFEST, "has no package MAC line")
    hashes: dict[str, str] = {}
    for no, line in enumerate(lines[1:-3], start=2):
        m = _LINE.match(line)
        if m is None or not _NAME.match(m.group(2)) or m.group(2) in hashes:
            raise EvidenceError(MANIFEST, f"line {no} is not '<sha256>  <file>' (or repeats a file)")
        hashes[m.group(2)] = m.group(1)
    body = "\n".join(lines[:-3]) + "\n"
    return Manifest(hashes, mac_line[4:], body.encode())


def check_mac(manifest: Manifest, audit_key: bytes) -> bool:
    """Whether the manifest's MAC was made with ``audit_key``'s package key."""
    want = hmac.new(package_key(audit_key), manifest.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, manifest.mac)


def zip_info(name: str) -> zipfile.ZipInfo:
    """A member header with fixed time and mode (a package's bytes depend on its content only)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def read_members(zf: zipfile.ZipFile) -> dict[str, bytes]:
    """Every member of a package, refusing unsafe names, duplicates, links and oversize.

    Raises:
        EvidenceError: naming the member (or the package) that is refused or damaged.
    """
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise EvidenceError("(package)", f"holds {len(infos)} files, more than {MAX_MEMBERS}")
    out: dict[str, bytes] = {}
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        if not _NAME.match(name) or any(p in (".", "..") for p in name.split("/")):
            raise EvidenceError(name[:200], "not a file name a package holds (absolute, '..' or odd characters)")
        if name in out:
            raise EvidenceError(name, "appears twice in the zip")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise EvidenceError(name, "is a symbolic link")
        if info.file_size > MAX_MEMBER:
            raise EvidenceError(name, f"is larger than {MAX_MEMBER} bytes")
        try:
            out[name] = zf.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
            raise EvidenceError(name, f"cannot be read from the zip ({exc}): damaged") from exc
        if len(out[name]) != info.file_size:
            raise EvidenceError(name, "its size differs from the zip's header")
    return out


def check_files(members: dict[str, bytes], manifest: Manifest) -> None:
    """Every member except the manifest is listed with its sha256, and every listed file is there.

    Raises:
        EvidenceError: naming the first file that is changed, missing or not listed.
    """
    for name in sorted(manifest.hashes):
        if name not in members:
            raise EvidenceError(name, "listed in the manifest but missing from the package")
        if sha256_bytes(members[name]) != manifest.hashes[name]:
            raise EvidenceError(name, "its sha256 differs from the manifest's (changed)")
    extra = sorted(set(members) - set(manifest.hashes) - {MANIFEST})
    if extra:
        raise EvidenceError(extra[0], "is in the package but not in the manifest (added)")


def names_in(items: Iterable[int]) -> list[str]:
    """The item folders of some items (for messages)."""
    return [item_dir(i) for i in items]
