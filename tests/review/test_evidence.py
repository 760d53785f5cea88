"""Evidence packages: what they hold, that `evidence verify` passes on a fresh one and names
the file after any single changed byte of any file (acceptance 5), and what each mode
(package alone, anchor, key) does and does not prove."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.io import MemoryFile
from sqlalchemy import select

from review.audit_anchor import make_anchor
from review.auth.keys import audit_key_from_env
from review.db.engine import Database
from review.db.models import AuditEntry, ChangeItem, Decision, Item
from review.evidence.build import build_package, parse_items
from review.evidence.layout import MANIFEST, EvidenceError, manifest_text, zip_info
from review.evidence.verify import verify_package
from vision.errors import ConfigError
from vision.hashing import sha256_bytes


def _post(client: Any, csrf: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json=body or {}, headers={"X-CSRF-Token": csrf})


def _review(client_for: Any, job_id: int, decisions: list[str]) -> list[int]:
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    ids = []
    for k, d in enumerate(decisions):
        r = _post(rev, csrf, f"/api/items/{item['id']}/decision",
                  {"decision": d, "version": item["version"], "comment": f"look {k}"})
        assert r.status_code == 200, r.text
        ids.append(item["id"])
        item = r.json()["next"]
    return ids


@pytest.fixture
def package(client_for: Any, change_job: int, db: Database, allowed: tuple[Path, ...], tmp_path: Path
            ) -> tuple[Path, list[int]]:
    ids = _review(client_for, change_job, ["confirmed", "no_change", "confirmed"])
    out = tmp_path / "case.zip"
    build_package(db, str(change_job), ids, out, allowed, "cli:test")
    return out, ids


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _rezip(members: dict[str, bytes], out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(zip_info(name), data)
    return out


def test_a_fresh_package_holds_everything_and_verifies(package: tuple[Path, list[int]], db: Database,
                                                       change_folder: Path) -> None:
    path, ids = package
    m = _members(path)
    for i in ids:
        for d in ("before", "after"):
            with MemoryFile(m[f"items/{i}/{d}.tif"]) as mem, mem.open() as ds:
                assert ds.crs.to_string() == "EPSG:32632" and ds.transform.a == 10.0 and ds.shape == (64, 64)
                assert ds.count == 3 and ds.descriptions == ("B04", "B03", "B02")
            assert m[f"items/{i}/{d}.png"].startswith(b"\x89PNG")
    with db.read() as s:
        ch = s.get(ChangeItem, ids[0])
        assert ch is not None
        with MemoryFile(m[f"items/{ids[0]}/before.tif"]) as mem, mem.open() as ds:
            assert ds.bounds == (ch.minx_before, ch.miny_before, ch.maxx_before, ch.maxy_before)
        with rasterio.open(ch.path_before) as src:  # the crop is the original window, value for value
            window = src.read(window=((ch.row_off_before, ch.row_off_before + 64),
                                      (ch.col_off_before, ch.col_off_before + 64)))
        with MemoryFile(m[f"items/{ids[0]}/before.tif"]) as mem, mem.open() as ds:
            assert np.array_equal(ds.read(), window)
        head = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc())).scalars().first()
        assert head is not None and head.action == "evidence.package"  # the packaging is audited
        assert json.loads(head.after)["manifest_sha256"] == sha256_bytes(m[MANIFEST])
    decisions = json.loads(m["decisions.json"])["decisions"]
    assert [(d["item_id"], d["decision"], d["reviewer"]) for d in decisions] == [
        (ids[0], "confirmed", "rev"), (ids[1], "no_change", "rev"), (ids[2], "confirmed", "rev")]
    inputs = {e["path"]: e for e in json.loads(m["inputs.json"])}
    assert inputs[str(change_folder.parent / "pairs" / "d0.tif")]["sha256_now"] == ch.input_sha256_before
    card = next(v for k, v in m.items() if k.endswith("MODEL_CARD.md"))
    assert b"neither the ONNX file nor its card could be read" in card  # the simulated jobs' model
    rows = [json.loads(line) for line in m["audit/rows.jsonl"].splitlines()]
    assert rows[0]["action"] == "job.import" and json.loads(m["audit/head.json"])["seq"] == rows[-1]["seq"]
    assert sum(r["action"] == "review.first" for r in rows) == 3
    assert set(m) == set(manifest_lines(m[MANIFEST])) | {MANIFEST}
    report = verify_package(path)
    assert not report.keyed and report.items == 3
    assert verify_package(path, key=audit_key_from_env()).keyed


def manifest_lines(data: bytes) -> list[str]:
    return [line.split("  ", 1)[1] for line in data.decode().splitlines() if "  " in line]


def test_any_changed_byte_of_any_file_is_named(package: tuple[Path, list[int]], tmp_path: Path) -> None:
    """Acceptance 5: every file of the package, the manifest and the audit rows included, at its
    first, middle and last byte and at a few others."""
    path, _ = package
    members = _members(path)
    assert len(members) >= 15 and {MANIFEST, "audit/rows.jsonl", "audit/head.json"} <= set(members)
    rng = np.random.default_rng(0)
    tried = 0
    for name, data in members.items():
        positions = {0, len(data) // 2, len(data) - 1, *rng.integers(0, len(data), 3).tolist()}
        for pos in sorted(positions):
            changed = bytearray(data)
            changed[pos] ^= 0x20
            bad = _rezip({**members, name: bytes(changed)}, tmp_path / "bad.zip")
            with pytest.raises(EvidenceError) as err:
                verify_package(bad)
            assert err.value.file == name, (name, pos, str(err.value))
            tried += 1
    assert tried >= 6 * len(members) - 10
    code, out = run_cli("review", "evidence", "verify", str(bad))
    assert code == 1 and "BROKEN" in out and name in out


def test_damage_to_the_zip_names_the_member(package: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, ids = package
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"items/{ids[0]}/after.tif")
    raw[info.header_offset + 30 + len(info.filename) + 10] ^= 0xFF  # inside its compressed bytes
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    with pytest.raises(EvidenceError) as err:
        verify_package(tmp_path / "damaged.zip")
    assert err.value.file == info.filename


def test_files_added_or_removed_are_named(package: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, ids = package
    members = _members(path)
    with pytest.raises(EvidenceError, match="not in the manifest"):
        verify_package(_rezip({**members, "items/9/extra.png": b"x"}, tmp_path / "a.zip"))
    gone = {k: v for k, v in members.items() if k != f"items/{ids[1]}/before.png"}
    with pytest.raises(EvidenceError) as err:
        verify_package(_rezip(gone, tmp_path / "b.zip"))
    assert err.value.file == f"items/{ids[1]}/before.png" and "missing" in err.value.reason


def _forge(members: dict[str, bytes], name: str, edit: Any, key: bytes = b"not the service's key") -> dict[str, bytes]:
    """Edit one file and recompute the manifest (as someone without the key could)."""
    out = {**members, name: edit(members[name])}
    hashes = {k: sha256_bytes(v) for k, v in out.items() if k != MANIFEST}
    out[MANIFEST] = manifest_text(hashes, key)
    return out


def test_a_recomputed_manifest_still_meets_the_cross_checks(package: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, ids = package
    members = _members(path)

    def decision(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["decisions"][1]["decision"] = "confirmed"
        return json.dumps(doc).encode()

    with pytest.raises(EvidenceError) as err:
        verify_package(_rezip(_forge(members, "decisions.json", decision), tmp_path / "a.zip"))
    assert err.value.file == "decisions.json" and "says 'no_change'" in err.value.reason

    def window(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["item"]["col_off"] += 64
        return json.dumps(doc).encode()

    with pytest.raises(EvidenceError) as err:
        verify_package(_rezip(_forge(members, f"items/{ids[0]}/item.json", window), tmp_path / "b.zip"))
    assert err.value.file == f"items/{ids[0]}/item.json" and "imported content" in err.value.reason

    other = members[f"items/{ids[1]}/after.png"]
    with pytest.raises(EvidenceError) as err:
        verify_package(_rezip(_forge(members, f"items/{ids[0]}/after.png", lambda _: other), tmp_path / "c.zip"))
    assert err.value.file == f"items/{ids[0]}/after.png" and "not the rendering of its crop" in err.value.reason


def test_what_only_the_key_proves(package: tuple[Path, list[int]], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows rewritten consistently (decision and audit row alike, manifest recomputed) pass the
    checks that need no key, as `--help` says; with the key the package MAC and the rows'
    HMACs name them."""
    path, ids = package
    members = _members(path)

    def rows(data: bytes) -> bytes:
        out = []
        for line in data.splitlines():
            r = json.loads(line)
            if r["action"] == "review.first" and r["target"] == f"item:{ids[1]}":
                after = json.loads(r["after"])
                after["decision"] = "confirmed"
                r["after"] = json.dumps(after, sort_keys=True, separators=(",", ":"))
            out.append(json.dumps(r, sort_keys=True).encode())
        return b"\n".join(out) + b"\n"

    def decision(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["decisions"][1]["decision"] = "confirmed"
        return json.dumps(doc).encode()

    def item(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["item"]["final_decision"] = "confirmed"
        return json.dumps(doc).encode()

    forged = _forge(_forge(_forge(members, "audit/rows.jsonl", rows), "decisions.json", decision),
                    f"items/{ids[1]}/item.json", item)
    bad = _rezip(forged, tmp_path / "forged.zip")
    assert not verify_package(bad).keyed  # consistent: the package alone cannot tell
    key = audit_key_from_env()
    assert key is not None
    with pytest.raises(EvidenceError) as err:
        verify_package(bad, key=key)
    assert err.value.file == MANIFEST and "package MAC" in err.value.reason
    # even with a MAC made with the right key, the edited row's HMAC fails
    resigned = _forge(forged, "decisions.json", lambda d: d, key=key)
    with pytest.raises(EvidenceError) as err:
        verify_package(_rezip(resigned, tmp_path / "resigned.zip"), key=key)
    assert err.value.file == "audit/rows.jsonl" and "HMAC" in err.value.reason
    code, out = run_cli("review", "evidence", "verify", str(bad))  # the key from the environment
    assert code == 1 and "MANIFEST.sha256" in out and "package MAC" in out, out
    monkeypatch.delenv("VISION_REVIEW_SECRET")
    code, out = run_cli("review", "evidence", "verify", str(bad))
    assert code == 0 and "not keyed" in out and "not that the service made the package" in out, out


def test_anchors(package: tuple[Path, list[int]], db: Database, tmp_path: Path) -> None:
    path, _ = package
    head = json.loads(_members(path)["audit/head.json"])
    good = make_anchor(head["seq"], head["hash"])
    assert verify_package(path, anchors=[good]).anchored == [head["seq"]]
    with pytest.raises(EvidenceError) as err:
        verify_package(path, anchors=[make_anchor(head["seq"], "0" * 64)])
    assert err.value.file == "audit/rows.jsonl" and "differs from the head anchored" in err.value.reason
    with pytest.raises(EvidenceError, match="no anchored head falls within"):
        verify_package(path, anchors=[make_anchor(head["seq"] + 50, "1" * 64)])
    (tmp_path / "anchors.jsonl").write_text(good.line() + "\n")
    code, out = run_cli("review", "evidence", "verify", str(path), "--anchor", str(tmp_path / "anchors.jsonl"))
    assert code == 0 and f"anchored: the rows at {head['seq']}" in out, out


def test_cli_make_and_verify(client_for: Any, change_job: int, db: Database, change_folder: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _review(client_for, change_job, ["confirmed", "confirmed"])
    out = tmp_path / "cli.zip"
    code, text = run_cli("review", "evidence", str(change_folder), "--items", ",".join(map(str, ids)), "--out",
                         str(out), "--db", db.url)
    assert code == 0 and "2 items" in text, text
    code, text = run_cli("review", "evidence", str(change_job), "--items", str(ids[0]), "--out", str(out),
                         "--db", db.url)
    assert code == 2 and "exists" in text  # no overwrite without --overwrite
    code, text = run_cli("review", "evidence", "make", str(change_job), "--items", str(ids[0]), "--out", str(out),
                         "--db", db.url, "--overwrite")
    assert code == 0, text
    code, text = run_cli("review", "evidence", "verify", str(out))
    assert code == 0 and "intact" in text and "keyed: every audit row's HMAC" in text, text
    monkeypatch.delenv("VISION_REVIEW_SECRET")
    code, text = run_cli("review", "evidence", "verify", str(out))
    assert code == 0 and "not keyed" in text, text
    code, text = run_cli("review", "audit", "verify", "--db", db.url)
    assert code == 2  # the log itself still needs the key


def test_packaging_refuses(client_for: Any, change_job: int, db: Database, change_folder: Path, job_id: int,
                           allowed: tuple[Path, ...], tmp_path: Path) -> None:
    ids = _review(client_for, change_job, ["confirmed"])
    with db.read() as s:
        other = s.execute(select(Item.id).where(Item.job_id == job_id)).scalars().first()
    with pytest.raises(ConfigError, match=f"item {other} is not an item of job {change_job}"):
        build_package(db, str(change_job), [other], tmp_path / "x.zip", allowed, "t")
    scene = change_folder.parent / "pairs" / "d1.tif"
    with rasterio.open(scene, "r+") as ds:  # the after scene rewritten since it was classified
        ds.write(np.zeros((64, 64), "uint8"), 1, window=((0, 64), (0, 64)))
    with pytest.raises(ConfigError, match="changed since"):
        build_package(db, str(change_job), ids, tmp_path / "y.zip", allowed, "t")
    assert not (tmp_path / "y.zip").exists()
    assert parse_items("3, 5-7,5") == [3, 5, 6, 7]
    for bad in ("", "a", "7-3", "1-5000"):
        with pytest.raises(ConfigError):
            parse_items(bad)


def test_a_job_item_with_its_model_card(client_for: Any, db: Database, roots: Path, users: Any,
                                        allowed: tuple[Path, ...], tmp_path: Path) -> None:
    """An item of a `vision infer` job: its window crop and picture, a whole chip file copied
    as it was classified, and the model card of the run folder (or one built from the ONNX
    metadata when the run has none)."""
    from review_helpers import sha256_of, write_job, write_model

    from review.jobs.importer import import_job

    model = write_model(roots / "run")
    folder = write_job(roots / "jobs" / "explained", n_windows=2, n_chips=1, n_bad=0, model_uri=str(model))
    from review_helpers import set_column

    set_column(folder, "input_sha256", {0: sha256_of(folder / "inputs" / "scene.tif"),
                                        1: sha256_of(folder / "inputs" / "scene.tif"),
                                        2: sha256_of(folder / "inputs" / "chip_0.png")})
    set_column(folder, "model_sha256", {i: sha256_of(model) for i in range(3)})
    job = import_job(db, folder, "test", allowed)
    ids = _review(client_for, job, ["accept", "reject", "accept"])
    out = tmp_path / "job.zip"
    build_package(db, str(job), ids, out, allowed, "t")
    m = _members(out)
    assert verify_package(out).items == 3
    card = m[next(k for k in m if k.endswith("MODEL_CARD.md"))].decode()
    assert "built from the model's metadata" in card and "vision.architecture" in card
    record = json.loads(m[next(k for k in m if k.endswith("model.json"))])
    assert record["onnx_sha256"] == sha256_of(model) == record["recorded_sha256"]
    assert record["card_source"] == "onnx metadata"
    copies = [k for k in m if k.endswith("/input.png")]
    assert len(copies) == 1 and sha256_bytes(m[copies[0]]) == sha256_of(folder / "inputs" / "chip_0.png")
    (roots / "run" / "MODEL_CARD.md").write_text("# landcover v3\n\nIntended use: tests.\n")
    build_package(db, str(job), ids, out, allowed, "t", overwrite=True)
    m = _members(out)
    assert m[next(k for k in m if k.endswith("MODEL_CARD.md"))] == b"# landcover v3\n\nIntended use: tests.\n"
    assert json.loads(m[next(k for k in m if k.endswith("model.json"))])["card_source"] == "run folder"
    with db.read() as s:
        n = len(s.execute(select(Decision).where(Decision.item_id.in_(ids))).scalars().all())
    assert len(json.loads(m["decisions.json"])["decisions"]) == n == 3
    assert verify_package(out, key=audit_key_from_env()).keyed


def test_a_registered_models_card_comes_from_the_registry(mlflow_store: str, client_for: Any, db: Database,
                                                           roots: Path, users: Any, allowed: tuple[Path, ...],
                                                           tmp_path: Path) -> None:
    from review_helpers import set_column, sha256_of, write_job, write_model

    from review.jobs.importer import import_job
    from training import tracking
    from training.model_card import log_card

    model = write_model(tmp_path / "trained")  # the file itself is not under the allowed folders
    run = tracking.start_run("evidence", "landcover")
    tracking.log_artifact(model, "model")
    tracking.end_run()
    run_id = run.info.run_id
    version = tracking.register_version("landcover", run_id, tracking.run_artifact_uri(run_id))
    (tmp_path / "MODEL_CARD.md").write_text("# landcover, as registered\n")
    (tmp_path / "model_card.json").write_text("{}")
    log_card(run_id, tmp_path / "MODEL_CARD.md", tmp_path / "model_card.json", "landcover", version)
    folder = write_job(roots / "jobs" / "registered", n_windows=1, n_chips=0, n_bad=0,
                       model_uri="models:/landcover@challenger")
    set_column(folder, "input_sha256", {0: sha256_of(folder / "inputs" / "scene.tif")})
    set_column(folder, "model_version", {0: version})
    set_column(folder, "model_sha256", {0: sha256_of(model)})
    job = import_job(db, folder, "test", allowed)
    ids = _review(client_for, job, ["accept"])
    out = tmp_path / "registered.zip"
    build_package(db, str(job), ids, out, allowed, "t")
    m = _members(out)
    card = next(k for k in m if k.endswith("MODEL_CARD.md"))
    assert m[card] == b"# landcover, as registered\n"
    record = json.loads(m[card.replace("MODEL_CARD.md", "model.json")])
    assert record["card_source"] == "registry" and record["onnx_sha256"] == sha256_of(model)
    assert verify_package(out, key=audit_key_from_env()).keyed


def test_a_reprojected_pair_keeps_each_date_in_its_own_crs(client_for: Any, db: Database, data_dir: Path,
                                                            roots: Path, users: Any, allowed: tuple[Path, ...],
                                                            tmp_path: Path) -> None:
    """The after date in EPSG:3857, the before one in UTM: each crop is in its own scene's CRS
    and pixels, and the pictures still share one stretch."""
    from change_helpers import write_change_folder

    from review.jobs.change_import import import_change_folder

    folder = write_change_folder(roots / "mercator", data_dir, after="d1-3857")
    job = import_change_folder(db, folder, "test", allowed)
    ids = _review(client_for, job, ["confirmed", "no_change"])
    out = tmp_path / "mercator.zip"
    build_package(db, str(job), ids, out, allowed, "t")
    m = _members(out)
    for d, crs in (("before", "EPSG:32632"), ("after", "EPSG:3857")):
        with MemoryFile(m[f"items/{ids[0]}/{d}.tif"]) as mem, mem.open() as ds:
            assert ds.crs.to_string() == crs
    with db.read() as s:
        assert s.get(ChangeItem, ids[0]).alignment == "reprojected"  # type: ignore[union-attr]
    assert verify_package(out, key=audit_key_from_env()).items == 2
