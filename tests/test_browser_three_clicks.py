"""The main tasks are at most three clicks from the dashboard; every page speaks Portuguese
to a Portuguese browser and passes axe in both languages.

Only clicks are counted (button, link, summary, checkbox); typing and choosing a file are not."""

from __future__ import annotations

import re

import pytest
from babel.support import Translations
from browser.fixtures import axe_check, login, screenshot
from conftest import ROOT, unique, upload, wait_run

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

MAX_CLICKS = 3
FINAL = "succeeded|failed|timed_out|cancelled|crashed"


class Clicks:
    """Wraps page.click / locator.click and counts every click the user makes."""

    def __init__(self, page) -> None:
        self.page, self.n, self.what = page, 0, []

    def __call__(self, target) -> None:
        self.n += 1
        if isinstance(target, str):
            self.what.append(target)
            self.page.click(target)
        else:
            self.what.append(str(target))
            target.click()


def test_upload_and_schedule_from_the_dashboard(page):
    name = unique("scheduled-upload")
    login(page, "alice")
    click = Clicks(page)

    click(page.get_by_role("link", name="Upload a script"))  # 1
    page.wait_for_url("**/scripts/new")
    page.get_by_label("Script file").set_input_files(  # choosing a file: not a click
        files=[{"name": "job.py", "mimeType": "text/x-python", "buffer": b"print('hi')\n"}]
    )
    page.locator("#name").fill(name)  # typing: not a click
    click(page.get_by_text("Schedule it (optional)"))  # 2
    page.get_by_label("Time of day").fill("07:30")  # typing: not a click
    page.get_by_label("Time zone").fill("America/Sao_Paulo")
    # Filling in a schedule field ticks "Run this script on a schedule" by itself.
    assert page.get_by_label("Run this script on a schedule").is_checked()
    click(page.get_by_role("button", name="Upload"))  # 3

    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    assert page.get_by_role("heading", level=1).inner_text() == name
    schedule = page.locator("#schedule")
    assert "Not scheduled" not in schedule.inner_text()
    assert re.search(r"7:30|07:30", schedule.locator("p").first.inner_text())
    assert page.locator("#sf-time").input_value() == "07:30"
    assert page.locator("#sf-timezone").input_value() == "America/Sao_Paulo"
    assert click.n <= MAX_CLICKS, click.what


def test_run_a_script_from_the_dashboard(page, alice):
    script = upload(alice, "print('ran from the dashboard')\n", name=unique("run-me"))
    login(page, "alice")
    click = Clicks(page)

    row = page.locator(f"tr[data-script-id='{script['id']}']")
    click(row.get_by_role("button", name=f"Run {script['name']} now"))  # 1
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)
    assert (
        page.get_by_role("log", name="Script output").inner_text().strip()
        == "ran from the dashboard"
    )
    assert click.n == 1 <= MAX_CLICKS, click.what


def test_open_the_output_of_the_last_run_from_the_dashboard(page, alice):
    script = upload(alice, "print('last output')\n", name=unique("seen"))
    run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    assert wait_run(alice, run_id)["status"] == "succeeded"
    login(page, "alice")
    click = Clicks(page)

    row = page.locator(f"tr[data-script-id='{script['id']}']")
    click(row.get_by_role("link", name=f"Output of the last run of {script['name']}"))  # 1
    page.wait_for_url(f"**/runs/{run_id}")
    output = page.get_by_role("log", name="Script output")
    output.get_by_text("last output").wait_for()
    assert output.is_visible()
    assert re.fullmatch(FINAL, page.locator("#run-status .badge").get_attribute("data-status"))
    assert click.n == 1 <= MAX_CLICKS, click.what


def _pt_br(msgid: str, **kw) -> str:
    t = Translations.load(
        str(ROOT / "scriptflow_prefect" / "platform" / "locale"), ["pt_BR"]
    ).gettext(msgid)
    return t % kw if kw else t


def _admin_pages(admin) -> list[tuple[str, str, str]]:
    """(name, path, English h1) for every main page, with a scheduled script and a run."""
    script = upload(admin, "print('oi')\n", name=unique("pages"))
    r = admin.put(
        f"/scripts/{script['id']}/schedule",
        json={"frequency": "daily", "time": "06:15", "timezone": "UTC"},
    )
    assert r.status_code == 200, r.text
    run_id = admin.post(f"/scripts/{script['id']}/runs").json()["id"]
    wait_run(admin, run_id)
    return [
        ("dashboard", "/", "Dashboard"),
        ("scripts", "/scripts", "Scripts"),
        ("upload", "/scripts/new", "Upload a script"),
        ("script", f"/scripts/{script['id']}", None),  # h1 is the script's own name
        ("run", f"/runs/{run_id}", ("Run of %(name)s", script["name"])),
        ("runs", "/runs", "Runs"),
        ("schedules", "/schedules", "Schedules"),
        ("settings", "/settings", "Settings"),
        ("scheduler", "/scheduler", "Scheduler status"),
        ("notifications", "/notifications", "Notification history"),
    ]


@pytest.mark.parametrize("page", ["pt-BR"], indirect=True)
def test_every_page_speaks_portuguese_and_passes_axe(page, admin):
    pages = _admin_pages(admin)
    login(page, "admin")
    for name, path, english in pages:
        page.goto(path)
        assert page.locator("html").get_attribute("lang") == "pt-BR", path
        h1 = page.get_by_role("heading", level=1).inner_text()
        if isinstance(english, tuple):  # a heading with the script's name in it
            msgid, script_name = english
            english, portuguese = msgid % {"name": script_name}, _pt_br(msgid, name=script_name)
        else:
            portuguese = _pt_br(english) if english else None
        if english == "Scripts":  # the same word in Portuguese: check the page around it
            assert h1 == portuguese, path
            assert page.get_by_role("link", name=_pt_br("Upload a script")).first.is_visible()
        elif english is not None:
            assert h1 == portuguese != english, f"{path}: <h1> is {h1!r}"
        else:  # the script page: its schedule form must be translated instead
            assert page.locator("#schedule-h").inner_text() != "Schedule", path
            assert page.locator("label[for=sf-time]").inner_text() != "Time of day", path
        axe_check(page)
        screenshot(page, f"{name}-pt-BR")


def test_schedules_scheduler_and_notifications_pass_axe_in_english(page, admin):
    pages = {name: (path, h1) for name, path, h1 in _admin_pages(admin) if name != "run"}
    login(page, "admin")
    for name in ("schedules", "scheduler", "notifications"):
        path, english = pages[name]
        page.goto(path)
        assert page.get_by_role("heading", level=1).inner_text() == english
        axe_check(page)
        screenshot(page, name)
