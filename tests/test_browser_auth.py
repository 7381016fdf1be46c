"""Signing in and out in a real browser; user text shown as text; axe in both languages."""

from __future__ import annotations

import pytest
from babel.support import Translations
from browser.fixtures import axe_check, login, screenshot
from conftest import ROOT, unique, upload

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

HTML = "<img src=x onerror=alert(1)><b>bold</b>"


def _pt_br(msgid: str) -> str:
    return Translations.load(
        str(ROOT / "scriptflow_prefect" / "platform" / "locale"), ["pt_BR"]
    ).gettext(msgid)


def test_it_signs_in_and_out(page):
    page.goto("/")
    assert "/login" in page.url  # pages need a signed-in user
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in to ScriptFlow"
    screenshot(page, "login")

    login(page, "alice")
    assert page.url.endswith("/")
    assert page.get_by_role("heading", level=1).inner_text() == "Dashboard"
    assert "Signed in as alice" in page.locator("header").inner_text()
    assert page.locator("nav a[aria-current=page]").inner_text() == "Dashboard"

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/settings")
    assert "/login" in page.url  # the session is gone


def test_it_shows_a_wrong_password_as_an_alert(page):
    page.goto("/login")
    page.fill("#username", "bob")
    page.fill("#password", "not-bobs-password")
    page.get_by_role("button", name="Sign in").click()

    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Wrong user name or password."
    # The message is tied to the field, and what was typed is kept, except the password.
    assert page.locator("#username").get_attribute("aria-describedby") == "login-error"
    assert page.locator("#username").input_value() == "bob"
    assert page.locator("#password").input_value() == ""
    axe_check(page)

    login(page, "bob")  # and the right password still works
    assert page.get_by_role("heading", level=1).inner_text() == "Dashboard"


def test_it_returns_to_the_page_asked_for_after_signing_in(page):
    page.goto("/runs?status=failed")
    assert "/login?next=" in page.url
    page.fill("#username", "alice")
    page.fill("#password", "alice-pass-123")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/runs?status=failed")
    assert page.locator("#f-status").input_value() == "failed"


def test_it_shows_html_in_a_script_as_text(page, alice):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # Names refuse < > outright; quotes are allowed, so try breaking out of an attribute.
    name = unique("quote\"' onfocus=alert(2) x")
    script = upload(
        alice, f"print({HTML!r})\n# {HTML}\n", name=name, description=f"Uses {HTML} on purpose"
    )
    r = alice.post("/scripts", files={"file": ("x.py", b"print(1)\n")}, data={"name": HTML})
    assert r.status_code == 422

    login(page, "alice")
    row = page.locator(f"tr[data-script-id='{script['id']}']")
    assert row.get_by_role("link", name=name, exact=True).is_visible()
    assert row.locator("[onfocus]").count() == 0
    assert row.get_by_role("button", name=f"Run {name} now").is_visible()

    page.get_by_role("link", name=name, exact=True).click()
    assert page.get_by_role("heading", level=1).inner_text() == name
    assert page.get_by_text(f"Uses {HTML} on purpose", exact=True).is_visible()
    assert page.locator("pre.code").inner_text().count(HTML) == 2
    assert page.locator("main img, main b, [onfocus], [onerror]").count() == 0
    assert dialogs == []


def test_dashboard_and_login_have_no_serious_axe_violations_in_english(page, alice):
    upload(alice, "print('hello')\n")
    page.goto("/login")
    assert page.locator("html").get_attribute("lang") == "en"
    axe_check(page)
    login(page, "alice")
    axe_check(page)
    screenshot(page, "dashboard")


@pytest.mark.parametrize("page", ["pt-BR"], indirect=True)
def test_pages_speak_portuguese_to_a_portuguese_browser(page, alice):
    upload(alice, "print('olá')\n")
    page.goto("/login")
    assert page.locator("html").get_attribute("lang") == "pt-BR"
    assert page.get_by_role("button", name="Entrar", exact=True).is_visible()
    axe_check(page)
    screenshot(page, "login-pt-BR")
    login(page, "alice")
    assert page.locator("html").get_attribute("lang") == "pt-BR"
    heading = page.get_by_role("heading", level=1).inner_text()
    assert heading == _pt_br("Dashboard") != "Dashboard"
    axe_check(page)
    screenshot(page, "dashboard-pt-BR")
