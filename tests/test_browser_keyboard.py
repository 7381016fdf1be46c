"""Keyboard only: skip link, upload and run a script, visible focus."""

from __future__ import annotations

import re

import pytest
from browser.fixtures import login
from conftest import unique, upload

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

FOCUSED = """() => {
  const e = document.activeElement;
  return {tag: e.tagName.toLowerCase(), id: e.id, cls: e.className,
          text: (e.innerText || e.value || "").trim(), label: e.getAttribute("aria-label")};
}"""


def focused(page) -> dict:
    return page.evaluate(FOCUSED)


def contrast(css_a: str, css_b: str) -> float:
    """WCAG contrast ratio of two computed `rgb(r, g, b)` colours."""

    def luminance(css: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", css)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(css_a), luminance(css_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def tab_to(page, text: str, limit: int = 40) -> dict:
    """Press Tab until the focused element reads `text`; fail if it is not reachable."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        f = focused(page)
        if f["text"] == text or f["label"] == text:
            return f
        seen.append(f["text"] or f["label"] or f["tag"])
    pytest.fail(f"{text!r} is not reachable with Tab; the tab stops were {seen}")


def test_the_skip_link_is_the_first_tab_stop_and_moves_focus_to_main(page):
    login(page, "alice")
    page.goto("/runs")
    page.keyboard.press("Tab")
    f = focused(page)
    assert f["cls"] == "skip-link" and f["text"] == "Skip to main content"
    box = page.locator(".skip-link").bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0  # shown on screen while focused

    page.keyboard.press("Enter")
    assert focused(page)["id"] == "main"
    page.keyboard.press("Tab")  # the next stop is inside main, not the navigation
    assert page.evaluate(
        "() => document.querySelector('main').contains(document.activeElement)"
        " && document.activeElement.id !== 'main'"
    )


def test_it_uploads_and_runs_a_script_with_the_keyboard_alone(page):
    name = unique("keyboard")
    # Playwright turns file-chooser interception on without waiting for it; a listener added
    # now has it on long before Space is pressed (a race under load otherwise).
    page.on("filechooser", lambda chooser: None)
    page.goto("/login")
    assert focused(page)["id"] == "username"  # autofocus
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("alice-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/$"))

    tab_to(page, "Upload a script")
    page.keyboard.press("Enter")
    page.wait_for_url("**/scripts/new")

    tab_to(page, "")  # the file input has no text; check it by id
    assert focused(page)["id"] == "file"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(
        files=[
            {
                "name": "keys.py",
                "mimeType": "text/x-python",
                "buffer": b"print('typed, not clicked')\n",
            }
        ]
    )
    page.keyboard.press("Tab")
    assert focused(page)["id"] == "name"
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    assert focused(page)["id"] == "description"
    page.keyboard.type("Uploaded without a mouse")
    tab_to(page, "Upload")  # past the optional schedule fields
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/scripts/\d+$"))
    assert page.get_by_role("heading", level=1).inner_text() == name

    f = tab_to(page, "Run now")
    assert f["tag"] == "button"
    outline = page.evaluate("""() => {
      const s = getComputedStyle(document.activeElement);
      return {style: s.outlineStyle, width: parseFloat(s.outlineWidth), colour: s.outlineColor,
              page: getComputedStyle(document.body).backgroundColor};
    }""")
    assert outline["style"] != "none" and outline["width"] >= 2, outline  # focus is visible
    assert contrast(outline["colour"], outline["page"]) >= 3, outline  # WCAG 1.4.11
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    page.get_by_role("log").get_by_text("typed, not clicked").wait_for(timeout=30_000)
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)


def test_cancelling_with_the_keyboard_leaves_focus_on_the_status(page, alice):
    script = upload(
        alice,
        "import time\nprint('waiting', flush=True)\ntime.sleep(300)\n",
        name=unique("cancel-keys"),
    )
    run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    login(page, "alice")
    page.goto(f"/runs/{run_id}")
    page.get_by_role("log").get_by_text("waiting").wait_for(timeout=30_000)

    tab_to(page, "Cancel run")
    page.keyboard.press("Enter")
    page.locator("#run-status .badge[data-status=cancelled]").wait_for(timeout=30_000)
    page.locator("#cancel-form").wait_for(state="hidden")
    assert focused(page)["id"] == "run-status"
    assert focused(page)["text"].endswith("Cancelled")
