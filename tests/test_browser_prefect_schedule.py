"""A schedule set in Prefect, seen and replaced from the script's page: the page says what
Prefect runs and asks before the simple form replaces it (issue 14)."""

from __future__ import annotations

import pytest
from browser.fixtures import axe_check, login
from conftest import unique, upload
from test_prefect_truth import prefect_cli

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser


def test_the_script_page_shows_a_schedule_set_in_prefect_and_asks_before_replacing_it(page, stack):
    with stack.client("alice") as alice:
        script = upload(alice, "print('hi')\n", name=unique("set-in-prefect"))
        sid, name = script["id"], script["name"]
        prefect_cli(
            stack, "deployment", "schedule", "create", f"run_script/{name}",
            "--cron", "0 */4 * * *", "--timezone", "UTC",
        )  # fmt: skip

        login(page, "alice")
        page.goto(f"/scripts/{sid}")
        now = page.locator("#schedule-now")
        assert "(set in Prefect)" in now.inner_text()
        assert "0 */4 * * *" in page.locator("#schedule-set-in-prefect").inner_text()
        assert page.locator("#schedule-next li").count() == 5
        axe_check(page, "#schedule")

        # Saved without the box ticked: refused, nothing changed.
        page.select_option("#sf-frequency", "daily")
        page.fill("#sf-time", "05:45")
        page.fill("#sf-timezone", "UTC")
        page.click("#schedule-form button[type=submit]")
        page.wait_for_url(f"**/scripts/{sid}#schedule")
        assert "was not saved" in page.locator(".flash-error").first.inner_text()
        assert alice.get(f"/scripts/{sid}").json()["schedule_source"] == "prefect"

        # With the box ticked: Prefect now runs the form's schedule.
        page.select_option("#sf-frequency", "daily")
        page.fill("#sf-time", "05:45")
        page.fill("#sf-timezone", "UTC")
        page.check("#sf-replace")
        page.click("#schedule-form button[type=submit]")
        page.wait_for_url(f"**/scripts/{sid}#schedule")
        assert "Every day at 05:45, UTC" in page.locator("#schedule-now").inner_text()
        assert page.locator("#sf-replace").count() == 0
        after = alice.get(f"/scripts/{sid}").json()
        assert after["schedule_source"] == "scriptflow"
        assert after["schedule"]["prefect_schedules"][0]["value"] == "45 5 * * *"
