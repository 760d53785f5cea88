"""A reviewer reviews with the keyboard only in headless Chromium (Playwright): decisions,
every class by key or picker, skip, undo, heatmap toggle and opacity, zoom, band
combinations and the key overlay.

Chromium comes from the system (Debian's ``chromium``, `.ci/system-deps`); Playwright never
downloads a browser. ``CHROMIUM`` overrides the executable; screenshots go to
``VISION_TEST_ARTIFACTS`` (default: the test's temporary folder): ``review-heatmap-on.png``,
``review-heatmap-off.png``, ``review-zoomed.png``, ``review-shortcuts.png`` and others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from playwright.sync_api import expect
from review_helpers import CLASSES, PASSWORD, write_job, write_model, write_relative_job
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry, Decision, User
from review.jobs.importer import import_job

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: How long an `expect` waits for the page (Playwright's default, 5 s, ran out on a 2-core
#: machine busy with other work: 2 of 7 runs of the heatmap test beside two CPU hogs). Waiting
#: costs nothing when the page is quick; only a page that never gets there takes this long.
EXPECT_TIMEOUT_MS = 60_000


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        pytest.skip("browser tests need Chromium: `sudo apt-get install chromium` "
                    "(or set CHROMIUM=/path/to/chromium); Playwright never downloads one")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield b
        b.close()


def _user_id(db: Database, name: str) -> int:
    with db.read() as s:
        return int(s.execute(select(User.id).where(User.name == name)).scalar_one())


def test_reviewer_reviews_with_the_keyboard_only(
    browser: Any, live_server: str, job_id: int, db: Database, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server}/jobs/{job_id}/review")
    assert "/login" in page.url, "anonymous visitors are sent to the login page"
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(f"**/jobs/{job_id}/review")
    expect(page.locator("#item-id")).not_to_have_text("")
    expect(page.locator("#queue-left")).to_have_text("52 left in this queue")
    chip = page.locator("#chip")
    expect(chip).to_have_js_property("complete", True)
    assert chip.evaluate("el => el.naturalWidth") > 0
    # where the window is, also in latitude/longitude (EPSG:32632 around 500000 E, 5200000 N)
    expect(page.locator("#loc-latlon")).to_contain_text("° N, 9.0")
    expect(page.locator("#loc-wgs84")).to_contain_text("W 9.00000, S 46.9")
    assert _shot(page, tmp_path, "review-page.png").stat().st_size > 10_000

    # B cycles the band combination of the 4-band scene, for the chip and the overview alike
    before = page.get_attribute("#chip", "src")
    page.keyboard.press("b")
    assert page.get_attribute("#chip", "src") != before
    assert "bands=4,3,2" in (page.get_attribute("#overview", "src") or "")
    expect(page.locator("#overview")).to_have_js_property("complete", True)
    assert page.locator("#overview").evaluate("el => el.naturalWidth") > 0
    page.keyboard.press("b")
    # H on a job without a model: says why there is no heatmap
    page.keyboard.press("h")
    expect(page.locator("#message")).to_contain_text("does not record which model")
    # ? shows every key; Esc closes it
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    expect(page.locator("#shortcuts")).to_contain_text("undo your last decision")
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    # Z zooms the chip x4, nearest neighbour
    page.keyboard.press("z")
    expect(page.locator("#workspace")).to_have_class("review-grid zoomed")
    assert chip.evaluate("el => [el.getBoundingClientRect().width, getComputedStyle(el).imageRendering]") == [
        1024, "pixelated"]
    page.keyboard.press("z")
    assert chip.evaluate("el => el.getBoundingClientRect().width") == 256

    shown: list[int] = []
    expected: dict[int, list[tuple[str, str | None]]] = {}
    decided = 0

    def current() -> int:
        expect(page.locator("#btn-accept")).to_be_enabled()  # decisions wait for the picture
        return int(page.text_content("#item-id") or 0)

    def decide(keys: list[str], decision: str, cls: str | None) -> int:
        nonlocal decided
        item = current()
        shown.append(item)
        for key in keys:
            if key.startswith("type:"):
                page.keyboard.type(key[5:])
            else:
                page.keyboard.press(key)
        decided += 1
        expect(page.locator("#session-count")).to_have_text(f"{decided} decided")
        expect(page.locator("#item-id")).not_to_have_text(str(item))
        expected.setdefault(item, []).append((decision, cls))
        return item

    decide(["a"], "accept", None)
    expect(page.locator("#queue-left")).to_have_text("51 left in this queue")
    decide(["r"], "reject", None)
    decide(["2"], "correct", "Forest")
    decide(["0"], "correct", "SeaLake")  # the 10th class has a key too
    decide(["c", "type:riv", "Enter"], "correct", "River")  # the picker, filtered by typing
    decide(["/", "type:cloud shadow?", "Escape", "a"], "accept", None)
    expect(page.locator("#queue-left")).to_have_text("46 left in this queue")

    # S gives the item back without a decision; it is not offered again in this session
    skipped = current()
    page.keyboard.press("s")
    expect(page.locator("#item-id")).not_to_have_text(str(skipped))
    expect(page.locator("#skip-count")).to_have_text("1 skipped")
    expect(page.locator("#queue-left")).to_have_text("45 left in this queue")
    undone = decide(["a"], "accept", None)
    assert undone != skipped

    # U takes back one's own last decision: the item comes back, to be decided again
    page.keyboard.press("u")
    expect(page.locator("#item-id")).to_have_text(str(undone))
    expect(page.locator("#message")).to_contain_text("undid your accept")
    decided -= 1
    expect(page.locator("#session-count")).to_have_text(f"{decided} decided")
    expected[undone].append(("undo", None))
    page.keyboard.press("u")  # only the last decision, once
    expect(page.locator("#message")).to_contain_text("undone already")
    expect(page.locator("#item-id")).to_have_text(str(undone))
    decide(["r"], "reject", None)
    decide(["9"], "correct", "River")

    # a reload keeps the session's skip list: the skipped item still does not come back
    page.reload()
    expect(page.locator("#skip-count")).to_have_text("1 skipped")
    for key in ("a", "r", "a"):
        decide([key], {"a": "accept", "r": "reject"}[key], None)
    assert skipped not in shown
    refused = [e for e in errors if "status of 409" in e]
    assert len(refused) == 1, "the second U was refused (409), and nothing else was"
    assert [e for e in errors if e not in refused] == [], errors

    with db.read() as s:
        decisions = (
            s.execute(select(Decision).where(Decision.reviewer_id == _user_id(db, "rev")).order_by(Decision.id))
            .scalars()
            .all()
        )
        actions = s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars().all()
    got: dict[int, list[tuple[str, str | None]]] = {}
    for d in decisions:
        got.setdefault(d.item_id, []).append((d.decision, d.class_name if d.decision == "correct" else None))
    assert got == expected
    assert any(d.comment == "cloud shadow?" for d in decisions)
    assert actions.count("review.undo") == 1 and actions.count("review.first") == len(shown)
    code, out = run_cli("review", "audit", "verify", "--db", db.url)
    assert code == 0 and "intact" in out, out
    page.close()


def test_heatmap_toggle_opacity_zoom_and_the_key_overlay(
    browser: Any, live_server: str, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    model = write_model(roots / "run")
    folder = write_job(roots / "jobs" / "explained", n_windows=4, n_chips=0, n_bad=0, model_uri=str(model))
    job = import_job(db, folder, "test", allowed)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _sign_in(page, live_server, job)
    heatmap = page.locator("#heatmap")
    expect(page.locator("#btn-accept")).to_be_enabled()
    # natural colour: the heatmap is on by default, at 45 %
    expect(heatmap).to_be_visible()
    expect(page.locator("#heatmap-on")).to_be_checked()
    assert heatmap.evaluate("el => getComputedStyle(el).opacity") == "0.45"
    expect(page.locator("#band-picker select")).to_have_value("0")
    _shot(page, tmp_path, "review-heatmap-on.png")
    for key, want in (("[", "0.35"), ("[", "0.25"), ("]", "0.35")):
        page.keyboard.press(key)
        assert heatmap.evaluate("el => getComputedStyle(el).opacity") == want
    expect(page.locator("#heatmap-opacity-value")).to_have_text("35 %")
    # false colour: off by default; the overview is drawn in the same bands
    natural_overview = page.get_attribute("#overview", "src")
    page.keyboard.press("b")
    expect(heatmap).to_be_hidden()
    expect(page.locator("#heatmap-on")).not_to_be_checked()
    expect(page.locator("#heatmap-state")).to_contain_text("false-colour")
    false_overview = page.get_attribute("#overview", "src")
    assert false_overview and natural_overview and "bands=4,3,2" in false_overview
    assert page.request.get(live_server + false_overview).body() != page.request.get(
        live_server + natural_overview).body()
    _shot(page, tmp_path, "review-heatmap-off.png")
    page.keyboard.press("h")  # the reviewer's choice wins
    expect(heatmap).to_be_visible()
    page.keyboard.press("h")
    expect(heatmap).to_be_hidden()
    page.keyboard.press("b")
    page.keyboard.press("h")
    expect(heatmap).to_be_visible()
    # Z: x4, nearest neighbour, arrows pan
    page.keyboard.press("z")
    expect(page.locator("#zoom-state")).to_be_visible()
    chip = page.locator("#chip")
    assert chip.evaluate("el => el.getBoundingClientRect().width") == 1024
    view = page.locator("#chip-view")
    left = view.evaluate("el => el.scrollLeft")
    page.keyboard.press("ArrowRight")
    assert view.evaluate("el => el.scrollLeft") > left
    _shot(page, tmp_path, "review-zoomed.png")
    page.keyboard.press("z")
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    _shot(page, tmp_path, "review-shortcuts.png")
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_hidden()
    page.keyboard.press("a")  # the overlay is gone: keys decide again
    expect(page.locator("#session-count")).to_have_text("1 decided")
    assert not errors, errors
    page.close()


def test_every_class_has_a_key_or_the_picker(
    browser: Any, live_server: str, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    classes = [*CLASSES, "Glacier", "Wetland"]
    folder = write_job(roots / "jobs" / "twelve", n_windows=0, n_chips=3, n_bad=0, classes=classes)
    job = import_job(db, folder, "test", allowed)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _sign_in(page, live_server, job)
    keys = page.locator("#class-keys li kbd")
    assert keys.all_text_contents() == [*"1234567890", "C", "C"]
    # read an item's id only once it is shown and decidable: on a busy machine the page may
    # still be loading it (an empty id read as 0, or the previous item's id)
    expect(page.locator("#item-id")).not_to_have_text("")
    expect(page.locator("#btn-accept")).to_be_enabled()
    first = int(page.text_content("#item-id") or 0)
    page.keyboard.press("0")
    expect(page.locator("#session-count")).to_have_text("1 decided")
    expect(page.locator("#item-id")).not_to_have_text(str(first))
    expect(page.locator("#btn-accept")).to_be_enabled()
    second = int(page.text_content("#item-id") or 0)
    page.keyboard.press("c")
    expect(page.locator("#class-picker")).to_be_visible()
    expect(page.locator("#class-list li")).to_have_count(12)
    page.keyboard.type("land")  # Wetland, and nothing else
    expect(page.locator("#class-list li")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page.locator("#session-count")).to_have_text("2 decided")
    page.keyboard.press("c")
    page.keyboard.press("ArrowUp")  # wraps to the last class
    page.keyboard.press("Escape")  # nothing chosen
    expect(page.locator("#class-picker")).to_be_hidden()
    expect(page.locator("#session-count")).to_have_text("2 decided")
    with db.read() as s:
        got = {d.item_id: d.class_name for d in s.execute(select(Decision)).scalars()}
    assert got == {first: "SeaLake", second: "Wetland"}
    page.close()


def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    shot = Path(os.environ.get("VISION_TEST_ARTIFACTS", str(tmp_path))) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    return shot


def _sign_in(page: Any, base: str, job_id: int) -> None:
    page.goto(f"{base}/jobs/{job_id}/review")
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(f"**/jobs/{job_id}/review")


def test_relative_paths_load_and_an_unreadable_chip_blocks_every_decision(
    browser: Any, live_server: str, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    # 1. A job classified with relative input paths, imported from another folder: chips load.
    folder = write_relative_job(roots / "work")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        relative_job = import_job(db, folder, "test", allowed)
    finally:
        os.chdir(cwd)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _sign_in(page, live_server, relative_job)
    expect(page.locator("#item-id")).not_to_have_text("")
    expect(page.locator("#btn-accept")).to_be_enabled()
    assert page.locator("#chip").evaluate("el => el.naturalWidth") > 0
    expect(page.locator("#heatmap-note")).to_contain_text("does not record which model")
    _shot(page, tmp_path, "review-relative-paths.png")
    assert not errors, errors

    # 2. A job whose chips became unreadable after import: keys do nothing, the API refuses.
    broken = write_job(roots / "jobs" / "broken", n_windows=0, n_chips=2, n_bad=0)
    broken_job = import_job(db, broken, "test", allowed)
    for chip in (broken / "inputs").glob("chip_*.png"):
        chip.write_bytes(b"\x89PNG\r\n\x1a\n but the rest was lost")
    page.goto(f"{live_server}/jobs/{broken_job}/review")
    expect(page.locator("#chip-error")).to_contain_text("could not be loaded")
    expect(page.locator("#btn-accept")).to_be_disabled()
    expect(page.locator("#btn-reject")).to_be_disabled()
    for key in ("a", "r", "1", "2"):
        page.keyboard.press(key)
    expect(page.locator("#message")).to_contain_text("no decision was sent")
    expect(page.locator("#session-count")).to_have_text("0 decided")
    _shot(page, tmp_path, "review-unreadable-chip.png")
    item_id = int(page.text_content("#item-id") or 0)
    # S skips an unreadable item, so it no longer blocks the head of the queue
    page.keyboard.press("s")
    expect(page.locator("#item-id")).not_to_have_text(str(item_id))
    expect(page.locator("#chip-error")).to_contain_text("could not be loaded")
    page.keyboard.press("s")
    expect(page.locator("#empty-text")).to_contain_text("You skipped 2 items")
    status, detail = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch(`/api/items/${id}/decision`, {method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({decision: "accept", version: 0})});
            return [r.status, (await r.json()).detail];
        }""",
        item_id,
    )
    assert status == 422 and "no decision recorded" in detail
    with db.read() as s:
        assert s.execute(select(Decision)).first() is None
        actions = s.execute(select(AuditEntry.action)).scalars().all()
    assert not [a for a in actions if a.startswith("review.")], "nothing in the audit chain"
    page.close()


def test_the_job_page_says_why_an_import_was_refused(
    browser: Any, live_server: str, users: Any, db: Database, roots: Path, allowed: tuple[Path, ...], tmp_path: Path
) -> None:
    from review_helpers import rewrite_paths

    from review.jobs.worker import Worker

    folder = write_job(roots / "jobs" / "hostile", n_windows=3, n_chips=0, n_bad=0)
    rewrite_paths(folder, {1: "/etc/passwd"})
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(f"{live_server}/jobs/new")
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/jobs/new")
    form = page.locator("form[action='/jobs/import']")
    form.locator("input[name=path]").fill("jobs/hostile")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    expect(page.locator("#job-status")).to_have_text("queued")
    Worker(db, roots=allowed).run_once()  # the page polls and reloads when the job ends
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#job-error")).to_contain_text("outside the allowed folders")
    _shot(page, tmp_path, "job-import-refused.png")
    page.close()
