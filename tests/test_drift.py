"""Drift between ScriptFlow and Prefect (issue 14): deployments deleted, renamed, doubled,
edited or moved in Prefect, found by GET /api/v1/scheduler/drift within one request and on
the scheduler page, repaired by POST .../drift/repair (admins), logged at start-up. The
changes are made as a power user makes them: with Prefect's own client and CLI."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import ADMIN_PASSWORD, free_port, unique, upload, wait_until
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from test_schedule_runs import prefect_client, prefect_exports

JOB = "print('hello from a script')\n"


@pytest.fixture(scope="module")
def prefect(stack):
    with prefect_client(stack) as client:
        yield client


def drift_of(client: httpx.Client, script_id: int | None = None) -> list[dict]:
    r = client.get("/scheduler/drift")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    if script_id is None:
        return items
    return [i for i in items if i["script"] and i["script"]["id"] == script_id]


def one(items: list[dict], kind: str) -> dict:
    found = [i for i in items if i["kind"] == kind]
    assert len(found) == 1, items
    return found[0]


def repair(client: httpx.Client, item_id: str) -> httpx.Response:
    return client.post("/scheduler/drift/repair", json={"item": item_id})


def deployment_of(prefect, name: str):
    return prefect.read_deployment_by_name(f"run_script/{name}")


def test_it_finds_a_deployment_deleted_in_prefect_and_makes_it_again(admin, alice, stack) -> None:
    script = upload(alice, JOB)
    dep = deployment_of_cli(stack, script["name"])
    r = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "delete", f"run_script/{script['name']}"],
        env={**stack.env, **prefect_exports(stack)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout

    item = one(drift_of(alice, script["id"]), "missing")
    assert item["repairable"] and item["deployment"] is None
    assert "no deployment" in item["message"] and item["repair"]
    assert repair(alice, item["id"]).status_code == 403  # repairs are an admin's
    r = repair(admin, item["id"])
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["repaired"]] == [item["id"]]
    assert drift_of(admin, script["id"]) == []
    assert deployment_of_cli(stack, script["name"]) != dep  # a new one, under the name
    run = alice.post(f"/scripts/{script['id']}/runs")
    assert run.status_code == 202, run.text
    assert repair(admin, item["id"]).status_code == 404  # repaired: it is gone


def deployment_of_cli(stack, name: str) -> str:
    """The deployment's id as `prefect deployment inspect` shows it."""
    r = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "inspect", f"run_script/{name}"],
        env={**stack.env, **prefect_exports(stack)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    return re.search(r"'id': '([0-9a-f-]{36})'", r.stdout).group(1)


def test_prefect_cannot_rename_a_deployment(stack, alice, prefect) -> None:
    """Why a rename is repaired by making a deployment under the script's name: Prefect's
    PATCH has no name (an unknown field is refused)."""
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    with stack.prefect() as api:
        r = api.patch(f"/deployments/{dep.id}", json={"name": "other-name"})
    assert r.status_code == 422, r.text
    assert deployment_of(prefect, script["name"]).id == dep.id


def test_it_repairs_a_renamed_deployment_keeping_its_schedules_and_runs(
    admin, alice, stack, prefect
) -> None:
    script = upload(alice, JOB)
    run = alice.post(f"/scripts/{script['id']}/runs").json()
    wait_until(
        lambda: alice.get(f"/runs/{run['id']}").json()["status"] == "succeeded",
        60,
        "the first run",
    )
    old = deployment_of(prefect, script["name"])
    prefect.create_deployment_schedules(old.id, [(CronSchedule(cron="0 6 * * *"), True)])
    prefect.update_deployment(old.id, DeploymentUpdate(concurrency_limit=3))
    renamed = unique("renamed-in-prefect")
    # Prefect's API cannot rename (above): its database can, as a restore of it would.
    with sqlite3.connect(stack.home / "prefect" / "prefect.db", timeout=30) as db:
        db.execute("UPDATE deployment SET name = ? WHERE id = ?", (renamed, str(old.id)))

    item = one(drift_of(admin, script["id"]), "renamed")
    assert item["deployment"] == {"id": str(old.id), "name": renamed}
    assert renamed in item["message"] and script["name"] in item["message"]
    r = repair(admin, item["id"])
    assert r.status_code == 200, r.text

    assert [i for i in drift_of(admin, script["id"]) if i["kind"] != "concurrency"] == []
    new = deployment_of(prefect, script["name"])
    assert new.id != old.id
    assert [(str(s.schedule.cron), s.active) for s in new.schedules] == [("0 6 * * *", True)]
    assert new.global_concurrency_limit is not None and new.global_concurrency_limit.limit == 3
    with pytest.raises(ObjectNotFound):
        prefect.read_deployment(old.id)
    runs = alice.get("/runs", params={"script_id": script["id"]}).json()["items"]
    assert run["id"] in {r["id"] for r in runs}  # the old deployment's run stays its history


def test_it_shows_a_second_deployment_to_the_admin_only_and_deletes_it(
    admin, alice, prefect
) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    copy_name = unique("copy")
    copy = prefect.create_deployment(
        flow_id=dep.flow_id,
        name=copy_name,
        tags=list(dep.tags),
        parameters=dict(dep.parameters),
        work_pool_name="scriptflow",
        entrypoint=dep.entrypoint,
    )
    item = one(drift_of(admin, script["id"]), "orphan")
    assert item["deployment"] == {"id": str(copy), "name": copy_name}
    assert "second deployment" in item["message"]
    assert drift_of(alice, script["id"]) == []  # the owner sees no orphan
    r = repair(admin, item["id"])
    assert r.status_code == 200, r.text
    assert drift_of(admin, script["id"]) == []
    assert deployment_of(prefect, script["name"]).id == dep.id  # the script's own stays


def test_a_power_users_own_flow_tagged_scriptflow_is_none_of_its_business(
    admin, alice, prefect
) -> None:
    """Only run_script's deployments can be scripts': another flow's, even tagged like a
    script's, is never an orphan to delete nor a deployment to adopt."""
    script = upload(alice, JOB)
    own_flow = prefect.create_flow_from_name(unique("power-users-flow"))
    theirs = prefect.create_deployment(
        flow_id=own_flow,
        name=unique("theirs"),
        tags=["scriptflow", f"script-{script['id']}"],
        entrypoint="flows.py:theirs",
    )
    assert not [
        i for i in drift_of(admin) if i["deployment"] and i["deployment"]["id"] == str(theirs)
    ]
    prefect.read_deployment(theirs)  # still there


def test_it_shows_a_deployment_left_by_a_deleted_script(admin, alice, prefect) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    assert alice.delete(f"/scripts/{script['id']}").status_code == 204
    left = prefect.create_deployment(
        flow_id=dep.flow_id,
        name=script["name"],
        tags=list(dep.tags),
        parameters=dict(dep.parameters),
        work_pool_name="scriptflow",
        entrypoint=dep.entrypoint,
    )
    item = one(
        [i for i in drift_of(admin) if i["deployment"] and i["deployment"]["id"] == str(left)],
        "orphan",
    )
    assert "deleted script" in item["message"]
    r = repair(admin, item["id"])
    assert r.status_code == 200, r.text
    assert not [i for i in drift_of(admin) if i["id"] == item["id"]]


def test_it_finds_parameters_tags_and_pool_changed_in_prefect_and_sets_them_back(
    admin, alice, bob, prefect
) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    pool = f"elsewhere-{uuid.uuid4().hex[:8]}"
    prefect.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    prefect.update_deployment(
        dep.id,
        DeploymentUpdate(
            parameters={**dep.parameters, "timeout_seconds": 5, "extra": 1},
            tags=["python", "mine"],
            work_pool_name=pool,
        ),
    )
    items = drift_of(alice, script["id"])  # the owner sees them (no repair button)
    assert {i["kind"] for i in items} == {"parameters", "tags", "work_pool"}
    assert one(items, "parameters")["parameters"] == ["extra", "timeout_seconds"]
    assert "scriptflow" in one(items, "tags")["message"]
    assert pool in one(items, "work_pool")["message"]
    assert drift_of(bob, script["id"]) == []

    r = admin.post("/scheduler/drift/repair", json={"all": True})
    assert r.status_code == 200, r.text
    assert not [f for f in r.json()["failed"] if f["item"]["script"]["id"] == script["id"]]
    assert drift_of(admin, script["id"]) == []
    now = prefect.read_deployment(dep.id)
    assert now.parameters["timeout_seconds"] == 300 and "extra" not in now.parameters
    assert set(now.tags) == {"scriptflow", "python", f"script-{script['id']}"}
    assert now.work_pool_name == "scriptflow"


def test_a_concurrency_limit_set_in_prefect_is_shown_and_kept(admin, alice, prefect) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    prefect.update_deployment(dep.id, DeploymentUpdate(concurrency_limit=2))
    item = one(drift_of(alice, script["id"]), "concurrency")
    assert not item["repairable"] and item["repair"] is None
    assert item["concurrency_limit"] == 2
    assert "At most 2" in item["message"] and "set in Prefect" in item["message"]
    r = repair(admin, item["id"])
    assert r.status_code == 409 and set(r.json()) == {"detail"}
    # an ordinary save in ScriptFlow leaves it alone
    r = alice.patch(f"/scripts/{script['id']}", json={"description": "saved again"})
    assert r.status_code == 200, r.text
    assert prefect.read_deployment(dep.id).global_concurrency_limit.limit == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all": False},
        {"item": 5},
        {"item": "nonsense"},
        {"item": "missing:1:-", "all": True},
        {"item": "missing:1:-", "extra": 1},
        {"all": "yes"},
        {"item": "x" * 10_000},
        [],
        "missing:1:-",
    ],
)
def test_it_refuses_a_bad_repair_body_with_a_reason(admin, body) -> None:
    r = admin.post("/scheduler/drift/repair", json=body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"detail"} and r.json()["detail"]


def test_it_answers_404_for_an_item_that_does_not_exist(admin) -> None:
    for item in ("missing:2147483647:-", "orphan:0:" + str(uuid.uuid4()), "tags:99999:-"):
        r = repair(admin, item)
        assert r.status_code == 404, r.text
        assert set(r.json()) == {"detail"}
    r = admin.post(
        "/scheduler/drift/repair",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422


def test_it_needs_a_token(stack) -> None:
    with stack.client(None) as anon:
        assert anon.get("/scheduler/drift").status_code == 401
        assert anon.post("/scheduler/drift/repair", json={"all": True}).status_code == 401


def test_non_admins_cannot_repair_even_all(alice) -> None:
    r = alice.post("/scheduler/drift/repair", json={"all": True})
    assert r.status_code == 403 and set(r.json()) == {"detail"}


@contextlib.contextmanager
def _signed_in(stack, username: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as browser:
        page = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = browser.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf, "next": "/"},
        )
        assert r.status_code == 303, r.text
        yield browser


def test_the_scheduler_page_shows_drift_and_repairs_it_in_one_click(stack, alice, prefect) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    prefect.update_deployment(dep.id, DeploymentUpdate(tags=["python"]))
    with _signed_in(stack, "alice", "alice-pass-123") as owner:
        page = owner.get("/scheduler").text
        assert "Tags changed" in page and script["name"] in page
        assert 'action="/scheduler/drift/repair"' not in page  # an admin repairs
    with _signed_in(stack, "admin", ADMIN_PASSWORD) as browser:
        page = browser.get("/scheduler").text
        row = re.search(rf'<tr data-drift="(tags:{script["id"]}:[^"]+)"', page)
        assert row, page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = browser.post("/scheduler/drift/repair", data={"csrf_token": csrf, "item": row.group(1)})
        assert r.status_code == 303 and r.headers["location"].startswith("/scheduler")
        page = browser.get("/scheduler").text
        assert "Repaired" in page and f'data-drift="tags:{script["id"]}:' not in page
        r = browser.post("/scheduler/drift/repair", data={"item": row.group(1)})
        assert r.status_code == 403  # no CSRF token
        pt = browser.get("/scheduler", headers={"Accept-Language": "pt-BR"})
        assert pt.status_code == 200
    assert set(prefect.read_deployment(dep.id).tags) >= {"scriptflow", f"script-{script['id']}"}


def test_scriptflow_web_logs_drift_at_start_without_repairing_it(stack, alice, prefect) -> None:
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    prefect.update_deployment(dep.id, DeploymentUpdate(tags=["python"]))
    log = stack.home / "logs" / "web.log"
    before = log.read_text() if log.exists() else ""
    env = {**stack.env, "SCRIPTFLOW_PORT": str(free_port())}
    web = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", "web"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = f"drift tags:{script['id']}:{dep.id}"
        wait_until(lambda: line in log.read_text()[len(before) :], 60, "the drift line in web.log")
    finally:
        web.terminate()
        web.wait(30)
    assert "scriptflow" not in prefect.read_deployment(dep.id).tags  # not repaired


def test_a_deployment_tagged_for_a_script_that_lost_its_own_is_adopted(
    admin, alice, prefect
) -> None:
    """The script's deployment deleted, another one carrying its tag (made in Prefect under
    another name, with a schedule): repair adopts that one, under the script's name, with its
    schedule, rather than making a second."""
    script = upload(alice, JOB)
    dep = deployment_of(prefect, script["name"])
    other = unique("made-in-prefect")
    kept = prefect.create_deployment(
        flow_id=dep.flow_id,
        name=other,
        tags=list(dep.tags),
        parameters=dict(dep.parameters),
        work_pool_name="scriptflow",
        entrypoint=dep.entrypoint,
    )
    prefect.create_deployment_schedules(kept, [(CronSchedule(cron="15 7 * * *"), True)])
    prefect.delete_deployment(dep.id)

    items = drift_of(admin, script["id"])
    item = one(items, "missing")
    assert other in item["message"] and "adopts" in item["repair"]
    assert not [i for i in items if i["kind"] == "orphan"]  # it is the script's, not an orphan
    r = repair(admin, item["id"])
    assert r.status_code == 200, r.text
    assert drift_of(admin, script["id"]) == []
    now = deployment_of(prefect, script["name"])
    assert [s.schedule.cron for s in now.schedules] == ["15 7 * * *"]
    with pytest.raises(ObjectNotFound):
        prefect.read_deployment(kept)


def test_it_answers_503_while_prefect_is_down_and_the_page_says_so(tmp_path) -> None:
    """Prefect behind a proxy that closes every connection: the API answers 503 with a
    reason, never 500, and nothing is repaired; the page (within its budget) says it cannot
    tell. (Prefect's client tries a while before giving up: the API answer is slow.)"""
    from delay_proxy import stack_behind_proxy

    with stack_behind_proxy(tmp_path / "home") as (stack, proxy), stack.client() as api:
        upload(api, JOB)
        assert api.get("/scheduler/drift").status_code == 200
        proxy.refuse = True
        with _signed_in(stack, "admin", ADMIN_PASSWORD) as browser:
            page = browser.get("/scheduler", timeout=120)
        assert page.status_code == 200
        assert "cannot be shown" in page.text
        started = time.monotonic()
        r = api.post("/scheduler/drift/repair", json={"all": True}, timeout=180)
        print(f"503 after {time.monotonic() - started:.1f} s")
        assert r.status_code == 503, r.text
        assert set(r.json()) == {"detail"} and "Prefect" in r.json()["detail"]
        proxy.refuse = False
