"""Run history in a real browser: filter the runs page (filters in the URL, Back works),
search output, open a run at its match, jump to its first error, download its output; the
script page's summary; a big output opens as a window of lines."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import unique, upload, wait_run, wait_until
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

NOISY = """\
import sys
for i in range(40):
    print(f"preparing step {i}")
print("reading the ledger of pelican bay", flush=True)
print("ValueError: the ledger is empty", file=sys.stderr)
for i in range(40):
    print(f"cleanup step {i}")
raise SystemExit(4)
"""
QUIET = "print('nothing about birds here')\n"
BIG = "for i in range(60_000):\n    print(f'row {i} of a long report')\n"


def query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


@pytest.fixture(scope="module")
def two_runs(stack):
    with stack.client("alice") as alice:
        noisy = upload(alice, NOISY, name=unique("noisy"))
        quiet = upload(alice, QUIET, name=unique("quiet"))
        bad = wait_run(alice, alice.post(f"/scripts/{noisy['id']}/runs").json()["id"])
        good = wait_run(alice, alice.post(f"/scripts/{quiet['id']}/runs").json()["id"])
        assert (bad["status"], good["status"]) == ("failed", "succeeded")
        return {"noisy": noisy, "quiet": quiet, "bad": bad, "good": good}


def test_filter_search_open_jump_and_download(page, two_runs, tmp_path):
    bad, good = two_runs["bad"]["id"], two_runs["good"]["id"]
    login(page, "alice")
    page.goto("/runs")
    assert page.locator(f"a[href='/runs/{bad}']").is_visible()
    assert page.locator(f"a[href='/runs/{good}']").is_visible()
    axe_check(page)

    # Filters combine and live in the URL; Back goes to the previous filter.
    page.get_by_label("Status").select_option(label="Failed")
    page.get_by_label("Script").select_option(label=two_runs["noisy"]["name"])
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=failed"))
    assert query(page) == {"script_id": str(two_runs["noisy"]["id"]), "status": "failed"}
    assert page.locator("tbody tr").count() == 1
    assert page.locator(f"a[href='/runs/{bad}']").is_visible()
    assert page.locator("tbody .badge").get_attribute("data-status") == "failed"
    csv_link = page.get_by_role("link", name="Download as CSV")
    assert csv_link.get_attribute("href") == "/runs.csv?" + urlparse(page.url).query
    page.go_back()
    page.wait_for_url(lambda url: "status=" not in url)
    assert page.locator(f"a[href='/runs/{good}']").is_visible()

    # Full-text search: only the run whose output holds the words, with the line.
    page.get_by_label("Text in output").fill("ledger of pelican")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=ledger"))
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert (
        rows.first.locator(".match")
        .inner_text()
        .strip()
        .endswith("reading the ledger of pelican bay")
    )
    screenshot(page, "runs-search")

    # The run opens at the match, highlighted; "Jump to first error" goes to the stderr line.
    rows.first.get_by_role("link").click()
    page.wait_for_url(re.compile(rf"/runs/{bad}\?q="))
    status = page.locator("#output-status")
    status.get_by_text("Match 1 of 1.").wait_for()
    current = page.locator("#output .line.current")
    assert current.inner_text() == "reading the ledger of pelican bay"
    assert current.locator("mark").inner_text().lower() == "ledger of pelican"
    page.get_by_role("button", name="Go to the end").click()
    page.get_by_role("button", name="Jump to first error").click()
    status.get_by_text("First error line.").wait_for()
    current = page.locator("#output .line.current")
    assert "stderr" in current.get_attribute("class")
    assert current.inner_text().endswith("ValueError: the ledger is empty")
    assert page.evaluate("document.activeElement.classList.contains('current')")
    axe_check(page)
    screenshot(page, "run-first-error")

    # Find within the output: next match wraps around.
    page.get_by_label("Find in output").fill("step 3")
    page.get_by_role("button", name="Find", exact=True).click()
    status.get_by_text(re.compile(r"Match 1 of \d+\.")).wait_for()
    total = int(re.search(r"of (\d+)", status.inner_text()).group(1))
    assert total == 2 + 2 * 10  # "step 3" and "step 30".."step 39", twice
    page.get_by_role("button", name="Next match").click()
    status.get_by_text(f"Match 2 of {total}.").wait_for()

    with page.expect_download() as info:
        page.get_by_role("link", name="Download output").click()
    path = tmp_path / "out.txt"
    info.value.save_as(path)
    rows = path.read_text().splitlines()
    assert len(rows) == 82
    assert [r for r in rows if " stderr " in r][0].endswith(
        " stderr ValueError: the ledger is empty"
    )
    assert any(re.fullmatch(r"\S+ stdout preparing step 0", r) for r in rows)


def test_the_script_page_shows_the_run_summary(page, two_runs):
    login(page, "alice")
    page.goto(f"/scripts/{two_runs['noisy']['id']}")
    section = page.locator("#history-summary")
    section.get_by_text("Success rate, 7 days").wait_for()
    assert "0%" in section.inner_text()
    strip = section.locator(".strip li")
    assert strip.count() == 30
    last = strip.last
    assert "day-failed" in last.get_attribute("class")
    assert re.search(r": 1 run, 1 failed$", last.locator(".sr-only").inner_text())
    axe_check(page)
    screenshot(page, "script-summary")


@pytest.fixture(scope="module")
def big_run(stack) -> dict:
    with stack.client("alice") as alice:
        script = upload(alice, BIG, name=unique("big-window"))
        return wait_run(
            alice, alice.post(f"/scripts/{script['id']}/runs").json()["id"], timeout=120
        )


def test_a_big_output_opens_as_a_window_of_lines(page, big_run):
    login(page, "alice")
    page.goto(f"/runs/{big_run['id']}")
    output = page.get_by_role("log", name="Script output")
    output.get_by_text("row 0 of a long report", exact=True).wait_for()
    page.get_by_role("button", name="Go to the end").click()
    output.get_by_text("row 59999 of a long report", exact=True).wait_for()
    assert 0 < output.locator(".line").count() <= 3000
    assert output.get_by_text("row 0 of a long report", exact=True).count() == 0
    page.get_by_role("button", name="Load earlier lines").click()
    output.get_by_text("row 58000 of a long report", exact=True).wait_for()
    assert output.locator(".line").count() <= 3000


def test_going_to_the_end_between_two_reads_shows_the_end_alone(page, big_run):
    """The page reads a finished big output 1000 lines every 150 ms. "Go to the end" clicked
    between two reads, on a server slow to answer the tail (as a busy CI machine was), must
    not let the next read from the old place add its lines to the new window: they would sit
    above the end, and "Load earlier lines" would load the lines before them instead."""
    login(page, "alice")
    now = datetime.now(UTC)
    page.clock.install(time=now)
    page.clock.pause_at(now + timedelta(seconds=1))  # the page's timers run when this test says
    tail = re.compile(r"/output\.json\?tail=1")
    held: list = []
    page.route(tail, lambda route: held.append(route))
    page.goto(f"/runs/{big_run['id']}")
    output = page.get_by_role("log", name="Script output")
    output.get_by_text("row 0 of a long report", exact=True).wait_for()  # next read: in 150 ms

    page.get_by_role("button", name="Go to the end").click()
    wait_until(lambda: page.evaluate("1") and held, 10, "the page asking for the end")
    # The next read falls due; if the page still makes it, its lines come back first.
    with contextlib.suppress(PlaywrightTimeoutError):
        with page.expect_request(lambda r: "/output.json?after=" in r.url, timeout=1000) as read:
            page.clock.run_for(1000)
        read.value.response()
    held[0].continue_()
    page.unroute(tail)

    output.get_by_text("row 59999 of a long report", exact=True).wait_for()
    lines = output.locator(".line")
    assert lines.first.inner_text() == "row 59000 of a long report"
    assert lines.count() == 1000
    page.get_by_role("button", name="Load earlier lines").click()
    output.get_by_text("row 58000 of a long report", exact=True).wait_for()
    assert lines.first.inner_text() == "row 58000 of a long report"
    assert lines.count() == 2000


FLOOD = """\
import sys, time
print("flood begins", flush=True)
time.sleep(2)
for i in range(300_000):
    print(f"flood line {i} with some padding to make it longer")
sys.stdout.flush()
time.sleep(3)
print("flood is over", flush=True)
time.sleep(2)
"""


def test_the_live_view_keeps_up_with_a_flood(page, stack):
    with stack.client("alice") as alice:
        script = upload(alice, FLOOD, name=unique("flood"))
        run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    login(page, "alice")
    refused = []

    def busy_once(route):
        # The first jump to the newest lines loses its connection: the live view must go on
        # (it used to stop for good on any failed jump, and "flood is over" never came).
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("connectionreset")

    page.route(re.compile(r"/output\.json\?tail=1"), busy_once)
    page.goto(f"/runs/{run_id}")
    output = page.get_by_role("log", name="Script output")
    output.get_by_text("flood begins").wait_for(timeout=30_000)
    # It skips ahead to the newest lines instead of rendering 300 000 of them.
    output.get_by_text("flood is over").wait_for(timeout=30_000)
    assert refused, "the page never jumped to the newest lines"
    assert output.locator(".line").count() <= 3000
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)
    page.get_by_role("button", name="Load earlier lines").click()
    output.get_by_text(re.compile(r"^flood line 29\d{4} ")).first.wait_for()
    assert output.locator(".line").count() <= 3000
