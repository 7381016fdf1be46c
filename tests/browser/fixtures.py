"""Browser fixtures: one headless Debian chromium per session, a fresh context per test.

Test modules opt in with `pytest_plugins = ["browser.fixtures"]`. Playwright's own browser
download is not used: the pilot's machines (and CI) have Debian's chromium."""

from __future__ import annotations

import pytest
from conftest import ADMIN_PASSWORD, ROOT, need_tool

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = {"desktop": (1280, 800), "phone": (375, 740)}
PASSWORDS = {"admin": ADMIN_PASSWORD, "alice": "alice-pass-123", "bob": "bob-pass-123"}


@pytest.fixture(scope="session")
def browser():
    need_tool(CHROMIUM, "browser tests drive Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(request, browser, stack):
    """A page in a new context; `@pytest.mark.parametrize("page", ["pt-BR"], indirect=True)`
    picks the browser's language (sent as Accept-Language)."""
    locale = getattr(request, "param", "en")
    context = browser.new_context(base_url=stack.url, locale=locale,
                                  extra_http_headers={"Accept-Language": locale},
                                  viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # Error pages (401, 404) are tested on purpose; any other console error is a bug.
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
         and not msg.text.startswith("Failed to load resource") else None)
    p.on("response", lambda r: errors.append(f"{r.status} from {r.url}")
         if r.status >= 500 else None)
    try:
        yield p
    finally:
        context.close()
    assert not errors, f"browser console errors: {errors}"


def login(page, user: str, password: str | None = None) -> None:
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", password or PASSWORDS[user])
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page, name: str) -> None:
    """Save the page at desktop and phone width; at phone width nothing may scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    try:
        for label, (w, h) in WIDTHS.items():
            page.set_viewport_size({"width": w, "height": h})
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{w}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth") - w
            assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {label} width"
    finally:
        page.set_viewport_size(size)


def _describe(violation: dict) -> str:
    nodes = "\n".join(f"      {' '.join(n['target']) if isinstance(n['target'], list) else n['target']}"
                      f": {n.get('failureSummary', '').splitlines()[-1].strip()}"
                      for n in violation["nodes"][:8])
    return (f"  [{violation['impact']}] {violation['id']}: {violation['help']}\n"
            f"    {violation['helpUrl']}\n{nodes}")


def axe_check(page, context=None) -> None:
    """Fail on every serious or critical axe-core violation, listed one per rule."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context=context)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    if bad:
        pytest.fail(f"axe: {len(bad)} serious/critical violation(s) on {page.url}:\n"
                    + "\n".join(_describe(v) for v in bad), pytrace=False)


def badge(locator) -> str:
    """The data-status of the badge inside `locator`."""
    return locator.locator(".badge").first.get_attribute("data-status") or ""

