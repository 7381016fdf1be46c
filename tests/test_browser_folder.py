"""A script with a companion file in a real browser: uploaded together from the New script
page, run, the files it made shown on the run page and downloaded; its folder browsed from the
script page (a sub-folder, a download); the working folder changed on the Edit page."""

from __future__ import annotations

import io
import re
import zipfile

import httpx
import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import unique

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

REPORT = """\
import configparser, os, time
time.sleep(2)  # the run page is open before the run ends: its files arrive live
from pathlib import Path
config = configparser.ConfigParser()
config.read(Path(__file__).with_name("report.ini"))
os.makedirs("out", exist_ok=True)
Path("out/summary.txt").write_text("region=" + config["report"]["region"])
print("wrote the summary for", config["report"]["region"])
"""
INI = b"[report]\nregion = sul\n"


def test_it_uploads_a_script_with_its_ini_runs_it_and_browses_its_folder(page, stack):
    name = unique("with-ini")
    login(page, "alice")
    page.goto("/scripts/new")
    page.get_by_label("Script file").set_input_files(
        files=[
            {"name": "report.py", "mimeType": "text/x-python", "buffer": REPORT.encode()},
            {"name": "report.ini", "mimeType": "text/plain", "buffer": INI},
        ]
    )
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    files = page.get_by_role("list", name="Files of this version")
    assert files.get_by_role("listitem").all_inner_texts()[1].startswith("report.ini")
    assert page.get_by_text("The folder is empty: it is made at the first run.").is_visible()

    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    page.evaluate("window.__noReload = true")
    page.get_by_role("log", name="Script output").get_by_text("wrote the summary for sul").wait_for(
        timeout=60_000
    )
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)
    made = page.get_by_role("region", name="Files this run created or changed")  # no reload
    with page.expect_download() as info:
        made.get_by_role("link", name="out/summary.txt").click()
    assert info.value.suggested_filename == "summary.txt"
    assert open(info.value.path(), "rb").read() == b"region=sul"
    assert page.evaluate("window.__noReload === true")
    axe_check(page)

    page.get_by_role("link", name="Script", exact=True).click()
    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    folder = page.get_by_role("table", name="Contents of the script’s folder")
    assert folder.get_by_role("link").all_inner_texts() == ["out/", "report.ini", "report.py"]
    axe_check(page)
    screenshot(page, "script-folder")
    folder.get_by_role("link", name="out/").click()
    page.wait_for_url(re.compile(r"/scripts/\d+/folder/out$"))
    crumbs = page.get_by_role("navigation", name="Folder path")
    assert crumbs.get_by_role("link").all_inner_texts() == [name, "out"]
    axe_check(page)
    with page.expect_download() as info:
        page.get_by_role("link", name="summary.txt").click()
    assert open(info.value.path(), "rb").read() == b"region=sul"
    script_url = page.url.split("/folder/")[0]
    # A browser resolves `..` itself; a client that sends it, or a link a script left in its
    # folder, gets nothing from outside the folder.
    script_id = script_url.rsplit("/", 1)[-1]
    (stack.home / "workspaces" / script_id / "home").symlink_to(stack.home)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=stack.url, cookies=cookies) as web:
        assert web.get(f"/scripts/{script_id}/folder/out").status_code == 200
        for escape in ("%2E%2E/%2E%2E/up.out", "out/%2E%2E/%2E%2E/%2E%2E/up.out", "home/up.out"):
            assert web.get(f"/scripts/{script_id}/folder/{escape}").status_code == 404, escape

    page.goto(script_url + "/edit")
    page.get_by_label("A new empty folder for each run, removed afterwards").check()
    axe_check(page)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    assert page.get_by_text("Each run starts in a new empty folder").is_visible()
    page.goto(script_url + "/edit")
    page.get_by_label("Start in this folder").check()
    page.get_by_label("Folder to start in").fill("relative/path")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_role("alert").is_visible()
    field = page.get_by_label("Folder to start in")
    assert field.input_value() == "relative/path" and field.get_attribute("aria-invalid") == "true"
    assert "must be absolute" in page.get_by_role("group", name="Working folder").inner_text()
    axe_check(page)

    # A new set of files from the Edit page: a zip with a sub-folder replaces them all.
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("report.py", REPORT)
        z.writestr("conf/report.ini", INI.decode())
    page.goto(script_url + "/edit")
    page.get_by_label("Upload new files").set_input_files(
        files=[{"name": "v2.zip", "mimeType": "application/zip", "buffer": zipped.getvalue()}]
    )
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    files = page.get_by_role("list", name="Files of this version")
    assert [t.split(" (")[0] for t in files.get_by_role("listitem").all_inner_texts()] == [
        "report.py",
        "conf/report.ini",
    ]
    assert page.locator(".facts").get_by_text("2", exact=True).is_visible()  # version 2
