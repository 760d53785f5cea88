"""A reviewer reviews ten items with the keyboard in headless Chromium (Playwright).

Chromium comes from the system (Debian's ``chromium``, `.ci/system-deps`); Playwright never
downloads a browser. ``CHROMIUM`` overrides the executable; the screenshot goes to
``VISION_TEST_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from review_helpers import PASSWORD, write_job, write_relative_job
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry, Decision, User
from review.jobs.importer import import_job

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        pytest.skip("browser tests need Chromium: `sudo apt-get install chromium` "
                    "(or set CHROMIUM=/path/to/chromium); Playwright never downloads one")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield b
        b.close()


def test_reviewer_reviews_ten_items_with_the_keyboard(
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
    chip = page.locator("#chip")
    expect(chip).to_have_js_property("complete", True)
    assert chip.evaluate("el => el.naturalWidth") > 0
    shot = Path(os.environ.get("VISION_TEST_ARTIFACTS", str(tmp_path))) / "review-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # B cycles the band combination of the 4-band scene
    before = page.get_attribute("#chip", "src")
    page.keyboard.press("b")
    assert page.get_attribute("#chip", "src") != before

    keys = ["a", "r", "2", "a", "c", "a", "/", "r", "9", "a"]
    expected = []
    shown: list[int] = []
    for n, key in enumerate(keys, start=1):
        expect(page.locator("#btn-accept")).to_be_enabled()  # decisions wait for the picture
        shown.append(int(page.text_content("#item-id") or 0))
        if key == "c":  # choose a class in the list, then Enter
            page.keyboard.press("c")
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            expected.append("correct")
        elif key == "/":  # type a comment, leave the field, accept
            page.keyboard.press("/")
            page.keyboard.type("cloud shadow?")
            page.keyboard.press("Escape")
            page.keyboard.press("a")
            expected.append("accept")
        else:
            page.keyboard.press(key)
            expected.append({"a": "accept", "r": "reject"}.get(key, "correct"))
        expect(page.locator("#session-count")).to_have_text(f"{n} decided")
        expect(page.locator("#item-id")).not_to_have_text(str(shown[-1]))
    assert not errors, errors
    assert len(set(shown)) == 10

    with db.read() as s:
        rev = s.execute(select(User).where(User.name == "rev")).scalar_one()
        decisions = (
            s.execute(select(Decision).where(Decision.reviewer_id == rev.id).order_by(Decision.id)).scalars().all()
        )
        audit_rows = (
            s.execute(select(AuditEntry).where(AuditEntry.action == "review.first").order_by(AuditEntry.seq))
            .scalars()
            .all()
        )
    assert [d.item_id for d in decisions] == shown
    assert [d.decision for d in decisions] == expected
    assert any(d.comment == "cloud shadow?" for d in decisions)
    assert [r.target for r in audit_rows] == [f"item:{i}" for i in shown]
    assert all(r.actor == "rev" for r in audit_rows)
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
