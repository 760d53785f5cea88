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
from review_helpers import PASSWORD
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry, Decision, User

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        pytest.skip("no Chromium: install Debian's `chromium` (see .ci/system-deps)")
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
