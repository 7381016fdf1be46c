"""The Edit page's "How it runs" section and "Run now with arguments…", in a real browser."""

from __future__ import annotations

import re

import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import upload, wait_run
from playwright.sync_api import expect

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

SECRET = "Sw0rdfish-4409-kx"
PRINTS = """\
import json, os, sys
print(json.dumps(sys.argv[1:]))
print("region", os.environ.get("REGION"))
print("key", os.environ.get("API_KEY"))
"""


def parsed(page, box: str) -> list[str]:
    return page.locator(f"#{box} ol.args li code").all_inner_texts()


def test_it_edits_arguments_environment_and_secrets(page, alice):
    script = upload(alice, PRINTS)
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}/edit")
    section = page.get_by_role("region", name="How it runs")
    arguments = section.get_by_label("Arguments", exact=True)
    arguments.fill('--days 7 "D:\\Backups\\Daily files"')
    # the list the run will get, split by the server as one types
    expect(page.locator("#arguments-parsed ol.args li code")).to_have_text(
        ["--days", "7", "D:\\Backups\\Daily files"]
    )
    section.get_by_label("One NAME=value per line").fill("REGION=sul\n")
    section.get_by_label("New secret variable: name").fill("API_KEY")
    section.get_by_label("Its value").fill(SECRET)
    axe_check(page)
    screenshot(page, "how-it-runs-edit")
    page.get_by_role("button", name="Save").click()

    page.wait_for_url(re.compile(rf"/scripts/{script['id']}$"))
    card = page.get_by_role("region", name="How it runs")
    assert card.locator("ol.args code").all_inner_texts() == [
        "--days",
        "7",
        "D:\\Backups\\Daily files",
    ]
    assert "REGION=sul" in card.inner_text() and "API_KEY=••••" in card.inner_text()
    assert SECRET not in page.content()
    saved = alice.get(f"/scripts/{script['id']}").json()
    assert saved["arguments"] == ["--days", "7", "D:\\Backups\\Daily files"]
    assert (saved["environment"], saved["secrets"]) == ({"REGION": "sul"}, ["API_KEY"])

    # Back on the Edit page: the secret shows as •••• and its value is nowhere in the page.
    card.get_by_role("link", name="Change how it runs").click()
    row = page.locator("#run-secrets tbody tr")
    assert row.get_by_role("cell", name="API_KEY", exact=True).is_visible()
    assert row.locator("td").nth(1).inner_text().startswith("••••")
    assert SECRET not in page.content()
    assert page.get_by_label("One NAME=value per line").input_value() == "REGION=sul\n"
    assert page.get_by_label("Arguments", exact=True).input_value() == (
        '--days 7 "D:\\Backups\\Daily files"'
    )

    # Mistakes are told at their fieldset; a typed secret value is not put back in the page.
    page.get_by_label("New value for API_KEY (empty: keep the saved one)").fill("typed-9931")
    page.get_by_role("button", name="Add another secret variable").click()
    rows = page.locator("#new-secrets .new-secret")
    assert rows.count() == 2
    rows.nth(0).get_by_label("New secret variable: name").fill("DB_PASS")
    rows.nth(0).get_by_label("Its value").fill("db-pw-5512")
    rows.nth(1).get_by_label("New secret variable: name").fill("TOKEN")  # no value
    page.get_by_label("One NAME=value per line").fill("REGION=sul\nno equals sign here\n")
    page.get_by_role("button", name="Save").click()
    page.locator("#edit-error").wait_for()
    env_box = page.get_by_label("One NAME=value per line")
    assert env_box.get_attribute("aria-invalid") == "true"
    assert "environment-error" in env_box.get_attribute("aria-describedby")
    assert page.locator("#environment-error").inner_text() == "Line 2: write NAME=value."
    assert page.locator("#secrets-error").inner_text() == "Give the secret variable TOKEN a value."
    assert "secrets-error" in page.locator("#run-secrets").get_attribute("aria-describedby")
    assert "typed-9931" not in page.content() and "db-pw-5512" not in page.content()
    axe_check(page)
    assert alice.get(f"/scripts/{script['id']}").json()["environment"] == {"REGION": "sul"}

    # Fixed: replace API_KEY, add TOKEN, then remove API_KEY in a second save.
    page.get_by_label("One NAME=value per line").fill("REGION=norte\n")
    page.get_by_label("New value for API_KEY (empty: keep the saved one)").fill("replaced-7788")
    rows = page.locator("#new-secrets .new-secret")
    rows.nth(0).get_by_label("Its value").fill("db-pw-5512")
    rows.nth(1).get_by_label("Its value").fill("tok-0042")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(rf"/scripts/{script['id']}$"))
    saved = alice.get(f"/scripts/{script['id']}").json()
    assert saved["secrets"] == ["API_KEY", "DB_PASS", "TOKEN"]
    assert saved["environment"] == {"REGION": "norte"}
    done = wait_run(alice, alice.post(f"/scripts/{script['id']}/runs").json()["id"])
    lines = [ln["text"] for ln in alice.get(f"/runs/{done['id']}/output").json()["lines"]]
    assert lines[1:] == ["region norte", "key ***"]

    page.goto(f"/scripts/{script['id']}/edit")
    page.get_by_label("Remove API_KEY").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(rf"/scripts/{script['id']}$"))
    assert alice.get(f"/scripts/{script['id']}").json()["secrets"] == ["DB_PASS", "TOKEN"]


def test_it_runs_now_with_other_arguments(page, alice):
    script = upload(alice, PRINTS)
    alice.patch(
        f"/scripts/{script['id']}",
        json={"arguments": ["--days", "7"], "secrets": {"API_KEY": SECRET}},
    )
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")
    page.get_by_text("Run now with arguments…").click()
    field = page.get_by_label("Arguments for this run")
    assert field.input_value() == "--days 7"  # the script's own, to change
    assert parsed(page, "run-arguments-parsed") == ["--days", "7"]
    field.fill('--days 30 "D:\\x y" ""')
    expect(page.locator("#run-arguments-parsed ol.args li code")).to_have_text(
        ["--days", "30", "D:\\x y", "(empty)"]
    )
    axe_check(page)
    screenshot(page, "run-with-arguments")
    page.get_by_role("button", name="Run with these arguments").click()

    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    output = page.get_by_role("log", name="Script output")
    output.get_by_text("key ***").wait_for(timeout=30_000)
    assert '["--days", "30", "D:\\\\x y", ""]' in output.inner_text()
    assert SECRET not in page.content()
    facts = page.locator("#run-arguments ol.args code")
    assert facts.all_inner_texts() == ["--days", "30", "D:\\x y", "(empty)"]
    run_id = page.url.rsplit("/", 1)[-1]
    assert alice.get(f"/runs/{run_id}").json()["arguments"] == ["--days", "30", "D:\\x y", ""]
    assert alice.get(f"/scripts/{script['id']}").json()["arguments"] == ["--days", "7"]
