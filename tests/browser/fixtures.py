"""Browser fixtures: one headless Debian chromium per session, a fresh context per test.

Test modules opt in with `pytest_plugins = ["browser.fixtures"]`. Playwright's own browser
download is not used: the pilot's machines (and CI) have Debian's chromium."""

from __future__ import annotations

import pytest
from conftest import ADMIN_PASSWORD, ROOT, need_tool

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = {"desktop": (1280, 800), "phone": (375, 740)}
PASSWORDS = {"admin": ADMIN_PASSWORD, "alice": "alice-pass-123", "bob": "bob-pass-123"}


@pytest.fixture(scope="session")
def browser():
    need_tool(CHROMIUM, "browser tests drive Debian's chromium")
    from playwright.sync_api import sync_playwright

    for stale in SCREENSHOTS.glob("FAILED-*.png"):
        stale.unlink()
    with sync_playwright() as pw:
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
    context = browser.new_context(
        base_url=stack.url,
        locale=locale,
        extra_http_headers={"Accept-Language": locale},
        viewport={"width": 1280, "height": 800},
    )
    context.set_default_timeout(10_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # Error pages (401, 404) are tested on purpose; any other console error is a bug.
    p.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    p.on(
        "response", lambda r: errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None
    )
    try:
        yield p
        if getattr(request.node, "failed_call", False):  # what the page showed when it failed
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            p.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"browser console errors: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True
    return report


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
    lines = [
        f"  [{violation['impact']}] {violation['id']}: {violation['help']}",
        f"    {violation['helpUrl']}",
    ]
    for node in violation["nodes"][:8]:
        target = node["target"]
        where = " ".join(map(str, target)) if isinstance(target, list) else str(target)
        why = [
            ln.strip()
            for ln in (node.get("failureSummary") or "").splitlines()
            if ln.strip() and not ln.startswith("Fix ")
        ]
        lines.append(f"      {where}: {why[0] if why else ''}")
    if len(violation["nodes"]) > 8:
        lines.append(f"      … and {len(violation['nodes']) - 8} more")
    return "\n".join(lines)


def axe_check(page, context=None) -> None:
    """Fail on every serious or critical axe-core violation, listed one per rule."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context=context)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    if bad:
        pytest.fail(
            f"axe: {len(bad)} serious/critical violation(s) on {page.url}:\n"
            + "\n".join(_describe(v) for v in bad),
            pytrace=False,
        )
