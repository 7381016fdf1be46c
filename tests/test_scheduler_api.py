"""GET /api/v1/scheduler and the /scheduler page: runs in progress, next and late runs, and
the runners' heartbeats, read from Prefect; alice's scripts do not exist for bob."""

from __future__ import annotations

import re
import shlex
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import upload, wait_run, wait_until

SLEEPS = "import time\nprint('start', flush=True)\ntime.sleep(30)\n"


@pytest.fixture(scope="module")
def prefect(stack):
    from prefect.client.orchestration import SyncPrefectClient

    r = stack.cli("prefect-env")
    assert r.returncode == 0, r.stderr
    env = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in r.stdout.splitlines()
        if line.startswith("export ")
    )
    with SyncPrefectClient(
        env["PREFECT_API_URL"], auth_string=env.get("PREFECT_API_AUTH_STRING")
    ) as client:
        yield client


def status_of(client: httpx.Client) -> dict:
    r = client.get("/scheduler")
    assert r.status_code == 200, r.text
    return r.json()


def script_ids(body: dict) -> set[int]:
    return {r["script_id"] for part in ("running", "next", "late") for r in body[part]}


def test_it_answers_in_its_shape_with_a_live_runner(admin) -> None:
    body = status_of(admin)
    assert set(body) >= {"running", "next", "late", "workers"}
    assert len(body["next"]) <= 20
    for run in body["next"]:
        assert {"script_id", "script_name", "scheduled_at"} <= set(run)
    assert body["workers"], "the stack's runner is a worker of ScriptFlow's pool"
    for worker in body["workers"]:
        assert set(worker) >= {"name", "last_heartbeat", "alive"}
        assert isinstance(worker["alive"], bool)
    alive = [w for w in body["workers"] if w["alive"]]
    assert alive
    beat = datetime.fromisoformat(alive[0]["last_heartbeat"].replace("Z", "+00:00"))
    assert datetime.now(UTC) - beat < timedelta(minutes=2)


def test_it_needs_a_token(stack) -> None:
    with stack.client(None) as anon:
        r = anon.get("/scheduler")
    assert r.status_code == 401 and set(r.json()) == {"detail"}


def test_it_shows_running_and_next_runs_to_their_owner_only(alice, bob, admin) -> None:
    long = upload(alice, SLEEPS)
    run = alice.post(f"/scripts/{long['id']}/runs").json()
    wait_run(alice, run["id"], timeout=30, until=("running",))
    running = [r for r in status_of(alice)["running"] if r["id"] == run["id"]]
    assert len(running) == 1
    assert running[0]["status"] == "running" and running[0]["script_name"] == long["name"]

    scheduled = upload(alice, "print('x')\n")
    at = (datetime.now(UTC) + timedelta(hours=6)).strftime("%H:%M")
    r = alice.put(
        f"/scripts/{scheduled['id']}/schedule",
        json={"frequency": "daily", "time": at, "timezone": "UTC"},
    )
    assert r.status_code == 200, r.text
    due = datetime.fromisoformat(r.json()["next_runs"][0])
    # Prefect's scheduler makes the runs within ~5 s of the save.
    upcoming = wait_until(
        lambda: [r for r in status_of(alice)["next"] if r["script_id"] == scheduled["id"]],
        timeout=20,
        what="the scheduled script's next run showing in /scheduler",
    )
    assert upcoming[0]["script_name"] == scheduled["name"]
    assert datetime.fromisoformat(upcoming[0]["scheduled_at"].replace("Z", "+00:00")) == due

    mine = {long["id"], scheduled["id"]}
    assert not script_ids(status_of(bob)) & mine
    assert bob.get("/scheduler").json()["workers"]  # runners are everyone's concern
    # The admin sees every script's runs (the next 20 may all be others', the running one not).
    assert run["id"] in {r["id"] for r in status_of(admin)["running"]}
    assert alice.post(f"/runs/{run['id']}/cancel").status_code == 202


def test_it_shows_a_late_run_to_its_owner_only(alice, bob, admin, prefect) -> None:
    """A run that no runner takes: due 5 minutes ago, in a paused work queue of the pool."""
    from prefect.states import Scheduled

    script = upload(alice, "print('x')\n")
    dep = prefect.read_deployment_by_name(f"run_script/{script['name']}")
    queue = prefect.create_work_queue(
        name=f"paused-{time.time_ns()}", work_pool_name="scriptflow", is_paused=True
    )
    late = None
    try:
        late = prefect.create_flow_run_from_deployment(
            dep.id,
            tags=["auto-scheduled"],
            work_queue_name=queue.name,
            state=Scheduled(scheduled_time=datetime.now(UTC) - timedelta(minutes=5)),
        )
        found = [r for r in status_of(alice)["late"] if r["id"] == str(late.id)]
        assert len(found) == 1
        assert (found[0]["script_id"], found[0]["status"], found[0]["trigger"]) == (
            script["id"],
            "queued",
            "scheduled",
        )
        assert str(late.id) in {r["id"] for r in status_of(admin)["late"]}
        assert script["id"] not in script_ids(status_of(bob))
    finally:
        if late is not None:
            prefect.delete_flow_run(late.id)
        prefect.delete_work_queue_by_id(queue.id)


def test_the_page_shows_the_state_and_is_linked_from_the_schedules_page(stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as browser:
        page = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = browser.post(
            "/login",
            data={
                "username": "alice",
                "password": "alice-pass-123",
                "csrf_token": csrf,
                "next": "/",
            },
        )
        assert r.status_code == 303, r.text
        assert 'href="/scheduler"' in browser.get("/schedules").text
        r = browser.get("/scheduler")
        assert r.status_code == 200
        for heading in ("Scheduler status", "Runners", "Running now", "Late", "Next runs"):
            assert heading in r.text
        assert "Alive" in r.text
        r = browser.get("/scheduler", headers={"Accept-Language": "pt-BR"})
        assert r.status_code == 200


def test_it_answers_for_a_user_with_more_scripts_than_one_prefect_tag_filter_takes(bob) -> None:
    """Prefect's tag filter on SQLite takes at most 127 tags (json_array's argument limit):
    a user with more scripts used to get Prefect's 500 on the scheduler page and dashboard."""
    mine = bob.get("/scripts").json()
    have = len(mine) if isinstance(mine, list) else mine.get("total", 0)
    for _ in range(max(0, 130 - have)):
        upload(bob, "print('x')\n")
    last = upload(bob, "print('x')\n")
    run = bob.post(f"/scripts/{last['id']}/runs").json()
    wait_run(bob, run["id"], timeout=60)
    status_of(bob)  # 200, not "Prefect is not reachable"
    r = bob.get("/runs", params={"script_id": last["id"]})
    assert r.status_code == 200, r.text
