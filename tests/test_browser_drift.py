"""The scheduler status page's drift section in a real browser: a deployment deleted in
Prefect shows as missing, one click on Repair makes it again."""

from __future__ import annotations

import pytest
from browser.fixtures import axe_check, login, screenshot
from conftest import upload
from test_drift import deployment_of, prefect  # noqa: F401 (the fixture)

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser


def test_an_admin_repairs_a_deleted_deployment_in_one_click(page, alice, prefect) -> None:  # noqa: F811
    script = upload(alice, "print('x')\n")
    prefect.delete_deployment(deployment_of(prefect, script["name"]).id)

    login(page, "admin")
    page.goto("/scheduler")
    section = page.get_by_role("region", name="ScriptFlow and Prefect")
    row = section.locator(f'tr[data-drift^="missing:{script["id"]}:"]')
    assert "Deployment missing" in row.inner_text()
    assert script["name"] in row.get_by_role("link").inner_text()
    axe_check(page)
    screenshot(page, "scheduler-drift")

    row.get_by_role("button", name="Repair").click()
    page.wait_for_url("**/scheduler*")
    assert page.locator(".flash").first.inner_text().startswith("Repaired:")
    assert page.locator(f'tr[data-drift^="missing:{script["id"]}:"]').count() == 0
    assert deployment_of(prefect, script["name"]).name == script["name"]


@pytest.mark.parametrize("page", ["pt-BR"], indirect=True)
def test_the_owner_sees_the_item_in_portuguese_without_a_repair_button(
    page,
    alice,
    prefect,  # noqa: F811
) -> None:
    script = upload(alice, "print('x')\n")
    prefect.delete_deployment(deployment_of(prefect, script["name"]).id)
    login(page, "alice")
    page.goto("/scheduler")
    section = page.get_by_role("region", name="ScriptFlow e Prefect")
    row = section.locator(f'tr[data-drift^="missing:{script["id"]}:"]')
    assert "Implantação ausente" in row.inner_text()
    assert row.get_by_role("button").count() == 0
    assert "Um administrador pode repará-las." in section.inner_text()
    axe_check(page)
