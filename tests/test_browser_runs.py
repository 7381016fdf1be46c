"""Upload, run and watch scripts in a real browser: live output, Cancel, history, dashboard."""

from __future__ import annotations

import re

import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import unique, upload, wait_run

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

TICKING = """\
import sys, time
for i in range(3):
    print(f"tick {i}", flush=True)
    print(f"warn {i}", file=sys.stderr, flush=True)
    time.sleep(1)
print("done", flush=True)
"""
LONG = """\
import time
for i in range(300):
    print(f"still here {i}", flush=True)
    time.sleep(1)
"""


def mark_page(page) -> None:
    """A flag that survives only as long as the document: a reload would drop it."""
    page.evaluate("window.__noReload = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__noReload === true")


def test_it_uploads_runs_and_follows_the_output_live(page):
    name = unique("ticking")
    login(page, "alice")
    page.get_by_role("link", name="Upload a script").click()
    axe_check(page)
    screenshot(page, "upload")
    page.get_by_label("Script file").set_input_files(
        files=[{"name": "ticking.py", "mimeType": "text/x-python", "buffer": TICKING.encode()}]
    )
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill("Prints a line a second")
    page.get_by_role("button", name="Upload").click()

    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    assert page.get_by_role("heading", level=1).inner_text() == name
    assert page.locator(".flash").inner_text() == f"Uploaded {name} (version 1)."
    axe_check(page)
    screenshot(page, "script")

    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    mark_page(page)
    output = page.get_by_role("log", name="Script output")
    # The first line arrives while the script is still sleeping: no reload, no wait for the end.
    output.get_by_text("tick 0").wait_for(timeout=30_000)
    assert "done" not in output.inner_text()
    output.get_by_text("done").wait_for(timeout=30_000)
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)
    assert page.locator("#run-status").inner_text().strip().endswith("Succeeded")
    assert not_reloaded(page)

    # Two pipes: each stream keeps its order, their interleaving is up to the OS.
    stdout, stderr = output.locator(".line.stdout"), output.locator(".line.stderr")
    assert stdout.all_inner_texts() == ["tick 0", "tick 1", "tick 2", "done"]
    assert stderr.all_inner_texts() == ["warn 0", "warn 1", "warn 2"]
    # Told apart by a mark as well as by colour (the mark stays out of copied text).
    assert stderr.first.evaluate("e => getComputedStyle(e, '::before').content") == '"⚠ "'
    colour = "e => getComputedStyle(e).color"
    assert stderr.first.evaluate(colour) != stdout.first.evaluate(colour)
    assert page.locator("#cancel-form").is_hidden()  # nothing left to cancel
    assert page.locator("#run-exit").inner_text() == "0"
    assert page.locator("#run-started").inner_text()  # queued on arrival, filled in live
    axe_check(page)
    screenshot(page, "run")


def test_it_cancels_a_run_in_place(page, alice):
    script = upload(alice, LONG, name=unique("long"))
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    mark_page(page)
    page.get_by_text("still here 0").wait_for(timeout=30_000)

    page.get_by_role("button", name="Cancel run").click()
    page.locator("#run-status .badge[data-status=cancelled]").wait_for(timeout=30_000)
    assert page.locator("#run-status").inner_text().strip().endswith("Cancelled")
    page.locator("#cancel-form").wait_for(state="hidden")
    assert not_reloaded(page)
    run_id = page.url.rsplit("/", 1)[1]
    assert wait_run(alice, run_id)["status"] == "cancelled"


def test_the_runs_page_lists_and_filters_runs(page, alice):
    script = upload(alice, "print('fine')\n", name=unique("history"))
    failing = upload(alice, "raise SystemExit(3)\n", name=unique("failing"))
    ok = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    bad = alice.post(f"/scripts/{failing['id']}/runs").json()["id"]
    assert wait_run(alice, ok)["status"] == "succeeded"
    assert wait_run(alice, bad)["status"] == "failed"

    login(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    assert page.locator(f"a[href='/runs/{ok}']").is_visible()
    assert page.locator(f"a[href='/runs/{bad}']").is_visible()
    axe_check(page)
    screenshot(page, "runs")

    page.get_by_label("Status").select_option(label="Failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=failed"))
    assert page.locator(f"a[href='/runs/{bad}']").is_visible()
    assert page.locator(f"a[href='/runs/{ok}']").count() == 0
    badges = page.locator("tbody .badge")
    assert set(badges.evaluate_all("bs => bs.map(b => b.dataset.status)")) == {"failed"}


def test_the_dashboard_follows_a_run_without_reloading(page, alice):
    script = upload(alice, "import time\ntime.sleep(2)\nprint('ok')\n", name=unique("watched"))
    login(page, "alice")
    row = page.locator(f"tr[data-script-id='{script['id']}']")
    assert row.locator(".badge").get_attribute("data-status") == "none"
    mark_page(page)

    run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    row.locator(".badge[data-status=succeeded]").wait_for(timeout=30_000)
    assert not_reloaded(page)
    assert (
        row.get_by_role("link", name=f"Output of the last run of {script['name']}").get_attribute(
            "href"
        )
        == f"/runs/{run_id}"
    )


def test_scripts_and_settings_pages_pass_axe(page, admin):
    upload(admin, "print(1)\n", name=unique("admin-owned"))
    login(page, "admin")
    page.goto("/scripts")
    axe_check(page)
    screenshot(page, "scripts")
    page.goto("/settings")
    page.get_by_label("Label").fill("browser test")
    page.get_by_role("button", name="Create token").click()
    assert page.locator("#new-token").inner_text().startswith("sf_")
    axe_check(page)
    screenshot(page, "settings")
