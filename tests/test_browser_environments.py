"""The script page's "Python packages" section in a real browser: what is installed, the
install log, a failed install in the installer's words; in English and Portuguese; axe."""

from __future__ import annotations

import re

import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import unique, upload, wait_until
from playwright.sync_api import expect

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser


def settled(client, script_id: int) -> dict:
    def check():
        body = client.get(f"/scripts/{script_id}/environment").json()
        return body if body["status"] != "building" else None

    return wait_until(check, 120, f"the environment of script {script_id} settling")


@pytest.mark.parametrize(
    ("page", "words"),
    [
        ("en", ("Python packages", "Ready", "Install log")),
        ("pt-BR", ("Pacotes Python", "Pronto", "Registro da instalação")),
    ],
    indirect=["page"],
)
def test_the_script_page_lists_the_installed_packages(page, alice, words):
    script = upload(
        alice, "# /// script\n# dependencies = ['six']\n# ///\nimport six\n", name=unique("pkgs")
    )
    env = settled(alice, script["id"])
    assert env["status"] == "ready", env
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")
    section = page.get_by_role("region", name=words[0])
    assert words[1] in section.get_by_role("status").inner_text()
    six = next(p for p in env["packages"] if p["name"] == "six")
    assert section.get_by_role("row", name=f"six {six['version']}").is_visible()
    log = section.get_by_role("region", name=words[2])
    assert not log.is_visible()  # folded away while all is well
    section.get_by_text(words[2], exact=True).click()
    assert "uv pip sync" in log.inner_text()
    axe_check(page)
    screenshot(page, f"script-packages-{words[1].lower()}")


def test_a_failed_install_shows_the_installers_words_and_the_log(page, alice):
    script = upload(alice, "import six\n", name=unique("pkgs-bad"))
    alice.patch(f"/scripts/{script['id']}", json={"requirements": ["six==999.0"]})
    env = settled(alice, script["id"])
    assert env["status"] == "failed", env
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")
    section = page.get_by_role("region", name="Python packages")
    assert "Installation failed" in section.get_by_role("status").inner_text()
    assert (
        section.locator("#environment-error")
        .inner_text()
        .startswith("Could not install six==999.0: ")
    )
    log = section.get_by_role("region", name="Install log")
    assert log.is_visible() and "no version of six==999.0" in log.inner_text()
    axe_check(page)


def test_packages_typed_on_the_edit_page_are_installed_and_shown_live(page, alice):
    script = upload(alice, "import six\nprint(six.__name__)\n", name=unique("pkgs-edit"))
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}/edit")
    box = page.get_by_label("One requirement per line, like requests<3")
    box.fill("six>=1  # what the script imports\n")
    axe_check(page)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(rf"/scripts/{script['id']}$"))
    assert alice.get(f"/scripts/{script['id']}").json()["requirements"] == ["six>=1"]
    # The section follows the install without a reload (refresh.js), to "Ready".
    section = page.get_by_role("region", name="Python packages")
    expect(section.locator("[data-status=ready]")).to_be_visible(timeout=60_000)
    assert section.get_by_role("cell", name="six", exact=True).is_visible()
    section.get_by_role("link", name="Change the packages").click()
    assert page.get_by_label("One requirement per line, like requests<3").input_value() == (
        "six>=1\n"
    )
    # A line that is not a requirement is told at the fieldset, and nothing is saved.
    page.get_by_label("One requirement per line, like requests<3").fill("six>>1\n")
    page.get_by_role("button", name="Save").click()
    assert "not a valid requirement" in page.locator("#requirements-error").inner_text()
    assert alice.get(f"/scripts/{script['id']}").json()["requirements"] == ["six>=1"]
