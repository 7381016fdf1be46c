"""Prefect is the truth for when a script runs (issue 14): a power user changes a script's
schedules with Prefect's own CLI and client, and every ScriptFlow page and API answer says so
within 10 s. A real stack, Prefect's real CLI (`eval "$(scriptflow prefect-env)"`), no mocks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import Stack, unique, upload, wait_until
from test_schedule_runs import deployment_id, prefect_client, prefect_exports

pytestmark = pytest.mark.timeout(300)
WITHIN = 10  # seconds: the bound for a change in Prefect to show in ScriptFlow


@pytest.fixture(scope="module")
def prefect(stack):
    with prefect_client(stack) as client:
        yield client


def prefect_cli(stack: Stack, *args: str) -> str:
    """Prefect's own CLI, pointed at the stack only by what `scriptflow prefect-env` prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCRIPTFLOW_"))}
    env.update(prefect_exports(stack), PREFECT_HOME=str(stack.home / "power-user"), COLUMNS="300")
    r = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def signed_in(stack: Stack, user: str) -> httpx.Client:
    web = httpx.Client(base_url=stack.url, follow_redirects=True, timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text)[1]
    password = f"{user}-pass-123"
    r = web.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token, "next": "/"},
    )
    assert r.status_code == 200 and "/login" not in str(r.url), r.text[:300]
    return web


@pytest.fixture
def alice_web(stack):
    web = signed_in(stack, "alice")
    try:
        yield web
    finally:
        web.close()


def far_time() -> str:
    return (datetime.now(UTC) + timedelta(hours=8)).strftime("%H:%M")


def scheduled_script(alice, time: str | None = None) -> dict:
    script = upload(alice, "print('hi')\n", name=unique("truth"))
    schedule = {"frequency": "daily", "time": time or far_time(), "timezone": "UTC"}
    r = alice.put(f"/scripts/{script['id']}/schedule", json=schedule)
    assert r.status_code == 200, r.text
    return alice.get(f"/scripts/{script['id']}").json()


def row_of(page: str, name: str) -> str:
    """The table row of the script called `name` on a page."""
    start = page.index(f">{name}</a>")
    return page[page.rfind("<tr", 0, start) : page.index("</tr>", start)]


def schedule_section(page: str) -> str:
    start = page.index('id="schedule"')
    return page[start : page.index("</form>", start)]  # its form holds a section of its own


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- pause and resume in Prefect ----------------------------------------------------------------
def test_a_schedule_paused_in_prefect_shows_as_paused_everywhere(stack, alice, alice_web, prefect):
    script = scheduled_script(alice)
    sid, name = script["id"], script["name"]
    assert script["schedule_source"] == "scriptflow"
    assert script["next_run_at"] == script["schedule"]["next_runs"][0]
    (schedule,) = prefect.read_deployment_schedules(deployment_id(prefect, script))

    prefect_cli(stack, "deployment", "schedule", "pause", f"run_script/{name}", str(schedule.id))

    def paused() -> bool:
        s = alice.get(f"/scripts/{sid}").json()
        return s["schedule"]["state"] == "paused_in_prefect"

    wait_until(paused, timeout=WITHIN, what="the API to show the pause made in Prefect")
    s = alice.get(f"/scripts/{sid}").json()
    assert s["next_run_at"] is None and s["schedule"]["next_runs"] == []
    assert s["schedule"]["active"] is False and s["schedule_source"] == "scriptflow"
    listed = {i["script_id"]: i for i in alice.get("/schedules").json()["items"]}
    assert listed[sid]["state"] == "paused_in_prefect"

    row = row_of(alice_web.get("/schedules").text, name)
    assert "Paused (in Prefect)" in row and "Disabled after failures" not in row
    dashboard = row_of(alice_web.get("/dashboard/rows").text, name)
    assert "paused in Prefect" in dashboard
    assert "paused in Prefect" in row_of(alice_web.get("/scripts").text, name)
    section = schedule_section(alice_web.get(f"/scripts/{sid}").text)
    assert "Paused (in Prefect)" in section
    assert re.search(r'id="sf-active"[^>]*checked', section) is None  # the box is not ticked

    prefect_cli(stack, "deployment", "schedule", "resume", f"run_script/{name}", str(schedule.id))
    wait_until(
        lambda: alice.get(f"/scripts/{sid}").json()["next_run_at"] is not None,
        timeout=WITHIN,
        what="the API to show the resume made in Prefect",
    )
    assert "Active" in row_of(alice_web.get("/schedules").text, name)


def test_a_deployment_paused_in_prefect_is_paused_and_activating_it_here_resumes_it(
    stack, alice, alice_web, prefect
):
    script = scheduled_script(alice)
    sid = script["id"]
    prefect.pause_deployment(deployment_id(prefect, script))  # the CLI has no such command
    wait_until(
        lambda: alice.get(f"/scripts/{sid}").json()["schedule"]["state"] == "paused_in_prefect",
        timeout=WITHIN,
        what="the API to show the deployment paused in Prefect",
    )
    token = re.search(r'name="csrf_token" value="([^"]+)"', alice_web.get("/schedules").text)[1]
    r = alice_web.post(
        "/schedules/bulk", data={"csrf_token": token, "action": "activate", "script_ids": sid}
    )
    assert r.status_code == 200
    assert prefect.read_deployment(deployment_id(prefect, script)).paused is False
    assert alice.get(f"/scripts/{sid}").json()["schedule"]["state"] == "active"


# -- schedules added in Prefect -----------------------------------------------------------------
def test_a_cron_added_in_prefect_shows_as_set_in_prefect_with_its_next_runs(
    stack, alice, alice_web
):
    script = upload(alice, "print('hi')\n", name=unique("cron"))
    sid, name = script["id"], script["name"]
    assert script["schedule"] is None and script["schedule_source"] is None

    prefect_cli(
        stack, "deployment", "schedule", "create", f"run_script/{name}",
        "--cron", "0 6 * * *", "--timezone", "UTC",
    )  # fmt: skip

    wait_until(
        lambda: alice.get(f"/scripts/{sid}").json()["schedule_source"] == "prefect",
        timeout=WITHIN,
        what="the API to show the cron added in Prefect",
    )
    s = alice.get(f"/scripts/{sid}").json()
    now = datetime.now(UTC)
    six = now.replace(hour=6, minute=0, second=0, microsecond=0)
    expected = six if six > now else six + timedelta(days=1)
    assert ts(s["next_run_at"]) == expected
    assert [ts(t) for t in s["schedule"]["next_runs"]] == [
        expected + timedelta(days=i) for i in range(5)
    ]
    assert "06:00" in s["schedule"]["description"]
    assert "(set in Prefect)" in s["schedule"]["description"]
    assert s["schedule"]["prefect_schedules"][0]["value"] == "0 6 * * *"
    assert alice.get(f"/scripts/{sid}/schedule").json()["source"] == "prefect"

    assert "(set in Prefect)" in row_of(alice_web.get("/schedules").text, name)
    assert "not scheduled" not in row_of(alice_web.get("/dashboard/rows").text, name)
    section = schedule_section(alice_web.get(f"/scripts/{sid}").text)
    assert "(set in Prefect)" in section and 'id="sf-replace"' in section

    # Saving the simple form asks before replacing it: 409, nothing changed; then replaced.
    form = {"frequency": "weekly", "time": "07:30", "timezone": "UTC", "days_of_week": ["mon"]}
    r = alice.put(f"/scripts/{sid}/schedule", json=form)
    assert r.status_code == 409 and "Prefect" in r.json()["detail"], r.text
    assert alice.get(f"/scripts/{sid}").json()["schedule_source"] == "prefect"
    r = alice.put(f"/scripts/{sid}/schedule", json={**form, "replace": True})
    assert r.status_code == 200 and r.json()["source"] == "scriptflow", r.text
    assert r.json()["prefect_schedules"][0]["value"] == "30 7 * * mon"


def test_an_extra_interval_beside_the_forms_schedule_is_shown_and_kept_through_edits(
    stack, alice, prefect
):
    from prefect.client.schemas.schedules import IntervalSchedule

    script = scheduled_script(alice)
    sid = script["id"]
    dep = deployment_id(prefect, script)
    prefect.create_deployment_schedules(
        dep, [(IntervalSchedule(interval=timedelta(hours=2)), True)]
    )
    s = alice.get(f"/scripts/{sid}").json()
    assert s["schedule_source"] == "prefect"
    kinds = sorted(p["kind"] for p in s["schedule"]["prefect_schedules"])
    assert kinds == ["cron", "interval"]
    assert "every 2 hours" in s["schedule"]["description"]
    # Every 2 hours: the next run is within 2 hours, before the daily one 8 hours away.
    assert ts(s["next_run_at"]) <= datetime.now(UTC) + timedelta(hours=2, minutes=1)

    # An edit here (a new description, a rename) never rewrites what Prefect runs, nor the
    # concurrency limit a power user set there.
    from prefect.client.schemas.actions import DeploymentUpdate

    prefect.update_deployment(dep, DeploymentUpdate(concurrency_limit=2))
    assert alice.patch(f"/scripts/{sid}", json={"description": "edited"}).status_code == 200
    renamed = unique("renamed")
    r = alice.patch(f"/scripts/{sid}", json={"name": renamed})
    assert r.status_code == 200, r.text
    assert r.json()["schedule_source"] == "prefect"
    moved = prefect.read_deployment_by_name(f"run_script/{renamed}")
    assert moved.global_concurrency_limit and moved.global_concurrency_limit.limit == 2
    assert sorted(type(s.schedule).__name__ for s in moved.schedules) == [
        "CronSchedule",
        "IntervalSchedule",
    ]


def test_removing_every_schedule_in_prefect_reads_as_not_scheduled(
    stack, alice, alice_web, prefect
):
    script = scheduled_script(alice)
    sid, name = script["id"], script["name"]
    dep = deployment_id(prefect, script)
    for schedule in prefect.read_deployment_schedules(dep):
        prefect.delete_deployment_schedule(dep, schedule.id)
    s = alice.get(f"/scripts/{sid}").json()
    assert s["schedule"] is None and s["schedule_source"] is None and s["next_run_at"] is None
    assert alice.get(f"/scripts/{sid}/schedule").status_code == 404
    assert "removed in Prefect" in row_of(alice_web.get("/schedules").text, name)


def test_a_deployment_deleted_in_prefect_reads_as_not_scheduled(stack, alice, prefect):
    script = scheduled_script(alice)
    prefect.delete_deployment(deployment_id(prefect, script))
    s = alice.get(f"/scripts/{script['id']}").json()
    assert s["schedule"] is None and s["next_run_at"] is None
    listed = [i["script_id"] for i in alice.get("/schedules").json()["items"]]
    assert script["id"] not in listed


def test_next_run_at_is_the_next_run_of_the_schedule_prefect_runs(alice):
    script = scheduled_script(alice, time="23:59")
    listed = {s["id"]: s for s in alice.get("/scripts", params={"per_page": 100}).json()["items"]}
    mine = listed[script["id"]]
    now = datetime.now(UTC)
    at = now.replace(hour=23, minute=59, second=0, microsecond=0)
    assert ts(mine["next_run_at"]) == (at if at > now else at + timedelta(days=1))
    assert mine["schedule_source"] == "scriptflow"


def test_put_schedule_refuses_a_replace_that_is_not_a_boolean(alice):
    script = upload(alice, "print(1)\n", name=unique("bad"))
    body = {"frequency": "daily", "time": "08:00", "timezone": "UTC", "replace": "yes"}
    r = alice.put(f"/scripts/{script['id']}/schedule", json=body)
    assert r.status_code == 422 and "replace" in r.json()["detail"]
    assert alice.get(f"/scripts/{script['id']}").json()["schedule"] is None


def bulk(web: httpx.Client, action: str, *ids: int) -> httpx.Response:
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/schedules").text)[1]
    data = {"csrf_token": token, "action": action, "script_ids": [str(i) for i in ids]}
    return web.post("/schedules/bulk", data=data)


def test_a_schedule_set_in_prefect_switched_off_here_reads_inactive_and_on_again(
    stack, alice, alice_web, prefect
):
    script = upload(alice, "print('hi')\n", name=unique("off-here"))
    sid = script["id"]
    prefect_cli(
        stack, "deployment", "schedule", "create", f"run_script/{script['name']}",
        "--cron", "0 */6 * * *", "--timezone", "UTC",
    )  # fmt: skip
    assert bulk(alice_web, "deactivate", sid).status_code == 200
    s = alice.get(f"/scripts/{sid}").json()
    assert s["schedule_source"] == "prefect" and s["schedule"]["state"] == "inactive"
    # Switched where it is, not replaced: still the power user's cron.
    (only,) = prefect.read_deployment_schedules(deployment_id(prefect, script))
    assert only.schedule.cron == "0 */6 * * *" and only.active is False
    assert bulk(alice_web, "activate", sid).status_code == 200
    assert alice.get(f"/scripts/{sid}").json()["schedule"]["state"] == "active"


def test_half_of_a_day_30_pair_paused_in_prefect_is_a_schedule_set_in_prefect(alice, prefect):
    script = upload(alice, "print('hi')\n", name=unique("half"))
    body = {"frequency": "monthly", "time": "12:00", "timezone": "UTC", "day_of_month": 30}
    assert alice.put(f"/scripts/{script['id']}/schedule", json=body).status_code == 200
    dep = deployment_id(prefect, script)
    february = next(
        s for s in prefect.read_deployment_schedules(dep) if s.schedule.cron.endswith("L 2 *")
    )
    prefect.update_deployment_schedule(dep, february.id, active=False)
    s = alice.get(f"/scripts/{script['id']}").json()
    assert s["schedule_source"] == "prefect" and s["schedule"]["state"] == "active"
    assert all(ts(t).month != 2 for t in s["schedule"]["next_runs"])  # February's is off
    r = alice.put(f"/scripts/{script['id']}/schedule", json=body)
    assert r.status_code == 409  # saving the form would switch February on again: asks


def test_switching_a_schedule_whose_deployment_is_gone_says_so(stack, alice, alice_web, prefect):
    script = scheduled_script(alice)
    prefect.delete_deployment(deployment_id(prefect, script))
    r = bulk(alice_web, "deactivate", script["id"])
    assert r.status_code == 200 and "has no deployment in Prefect" in r.text
    r = alice.put(
        f"/scripts/{script['id']}/schedule",
        json={"frequency": "daily", "time": "08:00", "timezone": "UTC"},
    )
    assert r.status_code == 409 and "scheduler status" in r.json()["detail"]
    page = alice_web.get(f"/scripts/{script['id']}").text
    assert "has no deployment in Prefect" in schedule_section(page)
