"""Reviewing change items: both dates on one page, the change decisions, four eyes, undo,
heatmaps or the reason there are none, confirmed-changes exports, and ``vision review audit
verify`` over a session with change decisions (naming an edited one)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_runner import run_cli
from PIL import Image
from sqlalchemy import select, text

from review.db.engine import Database
from review.db.models import DONE, SECOND, ChangeItem, Decision, Item, Job
from review.jobs.change_import import import_change_folder


def _post(client: Any, csrf: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, json=body or {}, headers={"X-CSRF-Token": csrf})


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _decide(client: Any, csrf: str, item: dict[str, Any], decision: str, comment: str | None = None) -> Any:
    return _post(client, csrf, f"/api/items/{item['id']}/decision",
                 {"decision": decision, "version": item["version"], "comment": comment})


def _verify(db: Database) -> tuple[int, str]:
    return run_cli("review", "audit", "verify", "--db", db.url)


def test_the_page_shows_both_dates(client_for: Any, change_job: int, db: Database) -> None:
    rev, csrf = client_for("rev")
    page = rev.get(f"/jobs/{change_job}/review")
    assert page.status_code == 200 and "change_review.js" in page.text and "Confirmed change" in page.text
    r = _post(rev, csrf, f"/api/jobs/{change_job}/claim")
    assert r.status_code == 200 and r.json()["left"] == 15
    item = r.json()["item"]
    c = item["change"]
    with db.read() as s:
        ch = s.get(ChangeItem, item["id"])
        assert ch is not None
    assert c["transition"] == ch.transition and c["classes_of_interest"] == ["AnnualCrop"]
    assert (c["before"]["class_name"], c["after"]["class_name"]) == (ch.class_before, ch.class_after)
    assert c["before"]["acquired"] == "2023-06-15T10:30:00Z" and c["after"]["acquired"] == "2024-06-14T10:30:00Z"
    assert c["before"]["item"] == "change-pair-d0" and c["after"]["file"] == "d1.tif"
    assert c["after"]["wgs84"]["lat"] == pytest.approx(48.26, abs=0.05) and c["before"]["crs"] == "EPSG:32632"
    assert c["default_bands"] == ["B04", "B03", "B02"] and c["bands"] == ["B04", "B03", "B02"]
    # both pictures, the size of the page's chip; the simulated jobs' models cannot be explained
    for d in ("before", "after"):
        got = rev.get(c[d]["picture_url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert _png(got.content).shape == (256, 256, 3)
        assert c[d]["heatmap_url"] is None
        assert "No heatmap for the" in c[d]["heatmap_note"] and "model file is missing" in c[d]["heatmap_note"]
        hm = rev.get(f"/items/{item['id']}/change/{d}/heatmap.png")
        assert hm.status_code == 404 and "model file is missing" in hm.json()["detail"]
    # bands by name, the same for both dates; a band one date lacks is refused
    assert rev.get(c["before"]["picture_url"] + "?bands=B02,B03,B04").status_code == 200
    bad = rev.get(c["before"]["picture_url"] + "?bands=B08,B04,B03")
    assert bad.status_code == 400 and "B08" in bad.json()["detail"]
    assert rev.get(f"/items/{item['id']}/change/later/picture.png").status_code == 404


def test_both_dates_share_one_stretch() -> None:
    """A window darker at one date stays darker on the page: the stretch is computed over both
    windows together, not per date (which would make them look alike)."""
    from review.render_change import Pixels, render_arrays

    rng = np.random.default_rng(0)
    base = rng.integers(200, 1200, (3, 16, 16)).astype(np.uint16)
    dark, bright = render_arrays(Pixels(base, None), Pixels(base * 3, None))
    assert bright.mean() > dark.mean() + 60
    alone_dark, _ = render_arrays(Pixels(base, None), Pixels(base, None))
    assert alone_dark.mean() > dark.mean() + 30  # stretched alone, the dark date would look brighter
    # nodata pixels are black and do not take part in the stretch
    holey = base.copy()
    holey[:, :4] = 0
    b, _ = render_arrays(Pixels(holey, 0), Pixels(base, 0))
    assert (b[:4] == 0).all() and b[4:].mean() > 50


def test_change_decisions_four_eyes_and_undo(client_for: Any, change_job: int, db: Database) -> None:
    with db.write() as s:
        job = s.get(Job, change_job)
        assert job is not None
        job.four_eyes = True
    rev, csrf = client_for("rev")
    rev2, csrf2 = client_for("rev2")
    first = _post(rev, csrf, f"/api/jobs/{change_job}/claim").json()["item"]
    # the decisions of prediction items do not apply to a change
    for wrong in ("accept", "correct", "reject"):
        r = _decide(rev, csrf, first, wrong)
        assert r.status_code == 400 and "confirmed, no_change, unclear" in r.json()["detail"], r.text
    r = _decide(rev, csrf, first, "confirmed", "new field, ploughed")
    assert r.status_code == 200, r.text
    second = r.json()["next"]
    r = _decide(rev, csrf, second, "no_change")
    third = r.json()["next"]
    _decide(rev, csrf, third, "unclear", "haze")
    with db.read() as s:
        states = {i: (s.get(Item, i).status, s.get(Item, i).final_decision)  # type: ignore[union-attr]
                  for i in (first["id"], second["id"], third["id"])}
    # four eyes: a confirmed change waits for a second reviewer; no change / unclear do not
    assert states == {first["id"]: (SECOND, "confirmed"), second["id"]: (DONE, "no_change"),
                      third["id"]: (DONE, "unclear")}
    # U takes back the last one (unclear); it comes back to decide again
    r = _post(rev, csrf, f"/api/jobs/{change_job}/undo")
    assert r.status_code == 200 and r.json()["item"]["id"] == third["id"] and r.json()["undone"] == "unclear"
    again = r.json()["item"]
    assert _decide(rev, csrf, again, "no_change").status_code == 200
    # the second look comes from someone else, first in their queue
    got = _post(rev2, csrf2, f"/api/jobs/{change_job}/claim").json()["item"]
    assert got["id"] == first["id"] and got["stage"] == "second review"
    assert _decide(rev2, csrf2, got, "confirmed").status_code == 200
    with db.read() as s:
        assert s.get(Item, first["id"]).status == DONE  # type: ignore[union-attr]
        kinds = [d.kind for d in s.execute(select(Decision).order_by(Decision.id)).scalars()]
    assert kinds == ["first", "first", "first", "undo", "first", "second"]
    code, out = _verify(db)
    assert code == 0 and "intact" in out, out
    page = rev.get(f"/jobs/{change_job}")
    assert "Changes vs reviewers" in page.text
    assert "<td>appeared</td>" in page.text or "<td>disappeared</td>" in page.text


def test_an_unreadable_date_blocks_the_decision(client_for: Any, change_job: int, db: Database,
                                                change_folder: Path) -> None:
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{change_job}/claim").json()["item"]
    (change_folder.parent / "pairs" / "d0.tif").write_bytes(b"II*\x00 the rest was lost")
    r = rev.get(item["change"]["before"]["picture_url"])
    assert r.status_code == 404 and "cannot be read" in r.json()["detail"]
    r = _decide(rev, csrf, item, "confirmed")
    assert r.status_code == 422 and "no decision recorded" in r.json()["detail"]
    with db.read() as s:
        assert s.execute(select(Decision)).first() is None


def test_heatmaps_of_each_dates_model(client_for: Any, db: Database, data_dir: Path, roots: Path, users: Any,
                                      allowed: tuple[Path, ...]) -> None:
    from change_helpers import write_change_folder
    from review_helpers import write_model

    folder = write_change_folder(roots / "explained", data_dir)
    model = write_model(roots / "run", bands=["B04", "B03", "B02"])
    for d in ("d0", "d1"):  # the jobs name a real model (their predictions stay simulated)
        manifest = folder.parent / "jobs" / d / "manifest.json"
        doc = json.loads(manifest.read_text())
        doc["model"]["uri"] = str(model)
        manifest.write_text(json.dumps(doc))
    job = import_change_folder(db, folder, "test", allowed)
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{job}/claim").json()["item"]
    maps = []
    for d in ("before", "after"):
        url = item["change"][d]["heatmap_url"]
        assert url and item["change"][d]["heatmap_note"] is None
        r = rev.get(url)
        assert r.status_code == 200, r.text
        im = _png(r.content)
        assert im.shape == (256, 256, 3) and im.std() > 5
        assert (folder / "explanations" / f"{item_row(db, item['id'])}.{d}.png").read_bytes() == r.content
        maps.append(r.content)
    assert maps[0] != maps[1]  # two dates, two windows' pixels, two maps


def item_row(db: Database, item_id: int) -> int:
    with db.read() as s:
        return int(s.get(Item, item_id).row_index)  # type: ignore[union-attr]


def _session(client_for: Any, job_id: int) -> list[dict[str, Any]]:
    """A reviewer confirms 3 changes, rejects 2 ("no change") and leaves 1 unclear."""
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    done = []
    for decision in ("confirmed", "no_change", "confirmed", "unclear", "confirmed", "no_change"):
        r = _decide(rev, csrf, item, decision, f"{decision} by eye")
        assert r.status_code == 200, r.text
        done.append({**item, "decision": decision})
        item = r.json()["next"]
    return done


def test_export_holds_confirmed_changes_only(client_for: Any, change_job: int, db: Database, tmp_path: Path) -> None:
    done = _session(client_for, change_job)
    confirmed = {d["id"] for d in done if d["decision"] == "confirmed"}
    code, out = run_cli("review", "export", str(change_job), "--format", "geojson", "--out",
                        str(tmp_path / "c.geojson"), "--db", db.url)
    assert code == 0 and "3 items written" in out, out
    doc = json.loads((tmp_path / "c.geojson").read_text())
    props = [f["properties"] for f in doc["features"]]
    assert {p["item_id"] for p in props} == confirmed
    with db.read() as s:
        for p in props:
            ch = s.get(ChangeItem, p["item_id"])
            it = s.get(Item, p["item_id"])
            assert ch is not None and it is not None
            assert p["reviewer"] == "rev" and p["reviewed_at"] and p["comment"] == "confirmed by eye"
            assert (p["model_sha256_before"], p["model_sha256_after"]) == (ch.model_sha256_before, it.model_sha256)
            assert (p["model_name_before"], p["model_version_after"]) == (ch.model_name_before, it.model_version)
            assert (p["input_sha256_before"], p["input_sha256_after"]) == (ch.input_sha256_before, it.input_sha256)
            assert p["transition"] == ch.transition and p["acquired_before"] == "2023-06-15T10:30:00Z"
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 8.9 < lon < 9.2 and 48.0 < lat < 48.5  # WGS 84
    code, out = run_cli("review", "export", str(change_job), "--format", "parquet", "--out",
                        str(tmp_path / "c.parquet"), "--db", db.url)
    assert code == 0, out
    table = pq.read_table(tmp_path / "c.parquet")
    assert set(table.column("item_id").to_pylist()) == confirmed
    assert {"input_sha256_before", "input_sha256_after", "model_sha256_before", "reviewer"} <= set(table.column_names)
    code, out = run_cli("review", "export", str(change_job), "--format", "dataset", "--out", str(tmp_path / "ds"),
                        "--db", db.url)
    assert code == 2 and "change job" in out


def test_item_page_and_override_of_a_change(client_for: Any, change_job: int, db: Database) -> None:
    done = _session(client_for, change_job)
    adm, csrf = client_for("adm")
    target = done[1]  # "no change"
    page = adm.get(f"/items/{target['id']}")
    assert page.status_code == 200 and "change/before/picture.png" in page.text and "confirmed change" in page.text
    with db.read() as s:
        version = s.get(Item, target["id"]).version  # type: ignore[union-attr]
    r = adm.post(f"/items/{target['id']}/override", data={"decision": "confirmed", "version": str(version),
                                                          "comment": "seen on the ground", "csrf_token": csrf},
                 follow_redirects=False)
    assert r.status_code == 303, r.text
    with db.read() as s:
        assert s.get(Item, target["id"]).final_decision == "confirmed"  # type: ignore[union-attr]
    code, out = _verify(db)
    assert code == 0, out


def test_audit_verify_names_an_edited_change_decision(client_for: Any, change_job: int, db: Database) -> None:
    _session(client_for, change_job)
    code, out = _verify(db)
    assert code == 0 and "intact" in out, out
    with db.read() as s:
        dec = s.execute(select(Decision).where(Decision.decision == "no_change")).scalars().first()
    assert dec is not None
    with db.engine.begin() as c:
        c.execute(text("UPDATE decisions SET decision = 'confirmed' WHERE id = :i"), {"i": dec.id})
    code, out = _verify(db)
    assert code == 1 and f"decision {dec.id} (item {dec.item_id}): decision is 'confirmed'" in out, out
    assert "says 'no_change'" in out


@pytest.mark.parametrize("edit", ["before window", "before input", "delete row", "kind"])
def test_audit_verify_names_an_edited_change_row(client_for: Any, change_job: int, db: Database, edit: str) -> None:
    done = _session(client_for, change_job)
    decided = done[0]["id"]
    with db.read() as s:
        undecided = s.execute(select(Item.id).where(Item.job_id == change_job, Item.version == 0)).scalars().first()
    sql = {
        "before window": ("UPDATE change_items SET col_off_before = col_off_before + 64 WHERE item_id = :i", decided),
        "before input": ("UPDATE change_items SET path_before = '/elsewhere/d0.tif' WHERE item_id = :i", decided),
        "delete row": ("DELETE FROM change_items WHERE item_id = :i", undecided),
        "kind": ("UPDATE jobs SET kind = 'import' WHERE id = :i", change_job),
    }[edit]
    with db.engine.begin() as c:
        c.execute(text(sql[0]), {"i": sql[1]})
    code, out = _verify(db)
    assert code == 1, out
    if edit in ("before window", "before input"):
        assert f"item {decided}: its imported change (before window, classes, inputs, models) changed" in out, out
    elif edit == "delete row":
        assert f"item {undecided} of change job {change_job} has no change row" in out, out
    else:
        assert "has no item in a change job" in out, out


def test_change_decisions_do_not_apply_to_items_of_a_job(client_for: Any, job_id: int) -> None:
    rev, csrf = client_for("rev")
    item = _post(rev, csrf, f"/api/jobs/{job_id}/claim").json()["item"]
    assert item["change"] is None
    r = _decide(rev, csrf, item, "confirmed")
    assert r.status_code == 400 and "accept, correct, reject" in r.json()["detail"]
    assert rev.get(f"/items/{item['id']}/change/before/picture.png").status_code == 404
