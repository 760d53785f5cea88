"""The model behind a job, for an evidence package: its card, ONNX sha256 and metadata.

The job's ``manifest.json`` names the model it was classified with (``model.uri``):

- an ``.onnx`` file (inside the allowed roots; a relative one beside the job folder or its
  parent): it is hashed and its metadata read (`vision.contracts.model.ModelMetadata`);
  the card is the ``MODEL_CARD.md`` training wrote into the run folder (beside the ONNX file,
  or beside the checkpoint its metadata names, or that checkpoint's parent), when one is
  there inside the roots; otherwise a card is built from the ONNX metadata, saying so.
- a registry URI (``models:/NAME...``): the card of the version the table recorded
  (``model_name``/``model_version``) is fetched from the MLflow registry, and that version's
  ``model.onnx`` hashed; when the registry cannot be reached, the card says so.
- nothing reachable: a card built from what the job recorded (name, version, sha256,
  classes, bands), saying that neither the file nor a card could be read.

The ONNX sha256 computed here is compared with the one the table recorded; a difference is
noted on the card (the file was replaced since it classified).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from review.jobs.files import InputMissingError, InputRefusedError, is_inside, open_input, read_small
from review.jobs.importer import read_manifest
from vision.hashing import stream_sha256
from vision.model_uri import is_registry_uri

CARD = "MODEL_CARD.md"
#: Largest ONNX file read for its metadata (hashing has no limit: it streams).
MAX_MODEL_BYTES = 1 << 30
MAX_CARD_BYTES = 8 << 20


@dataclass
class ModelEvidence:
    """What a package says of one model.

    Attributes:
        key: its folder in the package (``models/<key>``).
        source: where the card comes from: ``run folder``, ``registry``, ``onnx metadata``
            or ``job record``.
        onnx_sha256: of the file reached now (``None`` when none could be read).
    """

    key: str
    name: str | None
    version: str | None
    recorded_sha256: str | None
    onnx_sha256: str | None
    source: str
    card: str
    uri: str | None = None
    metadata: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """``model.json`` of the package."""
        return {"name": self.name, "version": self.version, "recorded_sha256": self.recorded_sha256,
                "onnx_sha256": self.onnx_sha256, "card_source": self.source, "uri": self.uri,
                "metadata": self.metadata, "notes": self.notes}


def model_key(name: str | None, version: str | None, sha: str | None) -> str:
    """A package folder name for a model (name, version and the start of its sha256)."""
    raw = f"{name or 'model'}-{version or 'x'}-{(sha or 'unknown')[:12]}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in raw)[:120].strip("._") or "model"


def _onnx_path(uri: str, job_dir: Path, roots: Sequence[Path]) -> str | None:
    bases = [Path("/")] if PurePosixPath(uri).is_absolute() else [job_dir, job_dir.parent]
    for base in bases:
        real = os.path.realpath(base / uri)
        if is_inside(real, roots):
            try:
                with open_input(real, roots):
                    return real
            except (InputMissingError, InputRefusedError):
                continue
    return None


def _read_onnx(path: str, roots: Sequence[Path]) -> tuple[str, dict[str, Any] | None, str | None]:
    """The file's sha256, its ``vision.*`` metadata, and the checkpoint it names."""
    with open_input(path, roots) as f:
        sha = stream_sha256(f.chunks())
        data = f.read_bytes(MAX_MODEL_BYTES) if f.size <= MAX_MODEL_BYTES else None
    meta: dict[str, Any] | None = None
    checkpoint = None
    if data is not None:
        try:
            import onnx

            proto = onnx.load_model_from_string(data)  # external data is never loaded from bytes
            from vision.contracts.model import ModelMetadata, onnx_props

            meta = onnx_props(proto)
            checkpoint = ModelMetadata.from_props(meta, path).checkpoint
        except Exception:  # a damaged or foreign file: its hash is still evidence
            checkpoint = None
    return sha, meta, checkpoint


def _find_card(onnx: str, checkpoint: str | None, roots: Sequence[Path]) -> tuple[str | None, list[str]]:
    places = [Path(onnx).parent]
    if checkpoint and PurePosixPath(checkpoint).is_absolute():
        places += [Path(checkpoint).parent, Path(checkpoint).parent.parent]
    looked = []
    for folder in dict.fromkeys(places):
        path = folder / CARD
        looked.append(str(path))
        try:
            return read_small(path, roots, MAX_CARD_BYTES).decode("utf-8", "replace"), looked
        except (InputMissingError, InputRefusedError):
            continue
    return None, looked


def _metadata_card(meta: dict[str, Any] | None, ident: dict[str, Any], why: str) -> str:
    lines = ["# Model card (built from the model's metadata: no MODEL_CARD.md was available)", "",
             f"> {why}", ""]
    lines += [f"- {k}: `{v}`" for k, v in ident.items() if v is not None]
    if meta:
        lines += ["", "## ONNX metadata (`vision.*`)", ""]
        lines += [f"- {k}: `{v}`" for k, v in sorted(meta.items())]
    return "\n".join(lines) + "\n"


def _registry(name: str | None, version: str | None) -> tuple[str | None, str | None, str]:
    """The registry's card and the version's ONNX sha256 (``None`` each when unreachable)."""
    if not name or not version:
        return None, None, "the table does not record the model's registered name and version"
    try:
        from training.model_card import fetch_card
        from vision.hashing import file_sha256
        from vision.model_uri import resolve_model

        _, md = fetch_card(name, version)
        with resolve_model(f"models:/{name}/{version}") as onnx:
            sha = file_sha256(onnx)
        return md, sha, "" if md else f"{name} v{version} has no model card in the registry"
    except Exception as exc:  # the registry is another service: any failure means "not reachable"
        return None, None, f"the MLflow registry could not be read ({str(exc)[:300]})"


def model_evidence(job_dir: Path, name: str | None, version: str | None, sha: str | None,
                   roots: Sequence[Path]) -> ModelEvidence:
    """The card, ONNX sha256 and metadata of the model a job names (see the module docstring)."""
    manifest = read_manifest(job_dir, roots)
    recorded = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    assert isinstance(recorded, dict)
    uri = recorded.get("uri") if isinstance(recorded.get("uri"), str) else None
    ident = {"name": name, "version": version, "recorded ONNX sha256": sha, "uri": uri,
             "classes": recorded.get("classes"), "bands": recorded.get("bands")}
    ev = ModelEvidence(model_key(name, version, sha), name, version, sha, None, "job record", "", uri=uri)
    if uri and is_registry_uri(uri):
        md, ev.onnx_sha256, why = _registry(name, version)
        if md:
            ev.source, ev.card = "registry", md
        else:
            ev.notes.append(why)
            ev.card = _metadata_card(None, ident, f"The model card could not be fetched: {why}.")
    elif uri and (path := _onnx_path(uri, job_dir, roots)) is not None:
        ev.onnx_sha256, ev.metadata, checkpoint = _read_onnx(path, roots)
        card, looked = _find_card(path, checkpoint, roots)
        if card is not None:
            ev.source, ev.card = "run folder", card
        else:
            ev.source = "onnx metadata"
            why = (f"No {CARD} inside the allowed folders beside the ONNX file or its checkpoint "
                   f"(looked in {', '.join(looked)}); this card lists the ONNX file's own metadata.")
            ev.notes.append(why)
            ev.card = _metadata_card(ev.metadata, ident | {"ONNX sha256 (now)": ev.onnx_sha256}, why)
    else:
        why = (f"The job's model ({uri or 'not recorded'}) is not a file inside the allowed folders nor a "
               "registry URI: neither the ONNX file nor its card could be read; this card lists what the job "
               "recorded.")
        ev.notes.append(why)
        ev.card = _metadata_card(None, ident, why)
    if ev.onnx_sha256 and sha and ev.onnx_sha256 != sha:
        ev.notes.append(f"the ONNX file reached now has sha256 {ev.onnx_sha256}, not the {sha} the job recorded: "
                        "it was replaced since it classified")
    return ev


def card_bytes(ev: ModelEvidence) -> tuple[bytes, bytes]:
    """``MODEL_CARD.md`` and ``model.json`` of a model in the package."""
    return ev.card.encode(), json.dumps(ev.record(), indent=1, sort_keys=True, default=str).encode()

