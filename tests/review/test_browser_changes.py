"""Acceptance 4 of the change issue: a reviewer reviews changes with the keyboard only in
headless Chromium (Playwright, Debian's Chromium as in `test_browser.py`): confirms 5
changes and rejects 2 ("no change"); the decisions are in the database and the audit chain,
and a screenshot of the before/after page is saved (``change-review.png`` in
``VISION_TEST_ARTIFACTS``, default the test's temporary folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cli_runner import run_cli
from playwright.sync_api import expect
from review_helpers import PASSWORD
from sqlalchemy import select
from test_browser import browser  # noqa: F401  (the fixture: Debian's Chromium, never a download)

from review.db.engine import Database
from review.db.models import AuditEntry, ChangeItem, Decision, Item, User


def test_reviewer_confirms_and_rejects_changes_with_the_keyboard(
    browser: Any, live_server: str, change_job: int, db: Database, tmp_path: Path  # noqa: F811
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server}/jobs/{change_job}/review")
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(f"**/jobs/{change_job}/review")
    expect(page.locator("#queue-left")).to_have_text("15 left in this queue")
    expect(page.locator("#btn-confirmed")).to_be_enabled()  # both pictures have loaded
    for d in ("before", "after"):
        chip = page.locator(f"#{d}-chip")
        expect(chip).to_have_js_property("complete", True)
        assert chip.evaluate("el => el.naturalWidth") == 256
    expect(page.locator("#before-acquired")).to_have_text("2023-06-15")
    expect(page.locator("#after-acquired")).to_have_text("2024-06-14")
    expect(page.locator("#transition")).not_to_have_text("")
    expect(page.locator("#before-heatmap-note")).to_contain_text("No heatmap for the before date")
    expect(page.locator("#loc-latlon")).to_contain_text("° N, 9.0")
    shot = Path(os.environ.get("VISION_TEST_ARTIFACTS", str(tmp_path))) / "change-review.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    # ? lists the keys; Esc closes the list
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_contain_text("confirmed change")
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()

    expected: dict[int, str] = {}
    keys = [("a", "confirmed"), ("r", "no_change"), ("a", "confirmed"), ("y", "confirmed"), ("n", "no_change"),
            ("a", "confirmed"), ("a", "confirmed")]
    for decided, (key, decision) in enumerate(keys, start=1):
        expect(page.locator("#btn-confirmed")).to_be_enabled()
        item = int(page.text_content("#item-id") or 0)
        if decided == 3:  # a comment goes with the next decision
            page.keyboard.press("/")
            page.keyboard.type("new field since last year")
            page.keyboard.press("Enter")
        page.keyboard.press(key)
        expect(page.locator("#session-count")).to_have_text(f"{decided} decided")
        expect(page.locator("#item-id")).not_to_have_text(str(item))
        expected[item] = decision
    expect(page.locator("#queue-left")).to_have_text("8 left in this queue")
    assert not errors, errors

    with db.read() as s:
        rev = s.execute(select(User.id).where(User.name == "rev")).scalar_one()
        decisions = s.execute(select(Decision).order_by(Decision.id)).scalars().all()
        rows = s.execute(select(AuditEntry).where(AuditEntry.action == "review.first")
                         .order_by(AuditEntry.seq)).scalars().all()
        changes = {c.item_id for c in s.execute(select(ChangeItem)).scalars()}
        final = {i.id: i.final_decision for i in s.execute(select(Item).where(Item.id.in_(list(expected)))).scalars()}
    assert {d.item_id: d.decision for d in decisions} == expected and final == expected
    assert sorted(expected.values()).count("confirmed") == 5 and list(expected.values()).count("no_change") == 2
    assert all(d.reviewer_id == rev and d.kind == "first" for d in decisions) and set(expected) <= changes
    assert [d.comment for d in decisions].count("new field since last year") == 1
    # every decision is in the audit chain, with the change row's fingerprint beside the item's
    assert [(r.target, json.loads(r.after)["decision"]) for r in rows] == [
        (f"item:{d.item_id}", d.decision) for d in decisions]
    assert all({"item", "change"} <= set(json.loads(r.after)) for r in rows)
    code, out = run_cli("review", "audit", "verify", "--db", db.url)
    assert code == 0 and "intact" in out, out
    page.close()
