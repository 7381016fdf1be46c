"""Retention on a stack of its own (it deletes runs, so it must not share the session's):
the daily `clean_history` deployment, run with a moved clock, removes what is older than the
period from Prefect and from ScriptFlow's storage, and keeps what is not; the Settings page
stores the period."""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import ADMIN_PASSWORD, start_stack, stop_stack, upload, wait_run


def prefect_api(stack) -> httpx.Client:
    return stack.prefect()


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("retention-home"))
    try:
        r = s.cli("token", "create", "admin")
        assert r.returncode == 0, r.stderr
        s.tokens["admin"] = r.stdout.strip()
        yield s
    finally:
        stop_stack(s)


def run(client, script) -> dict:
    r = client.post(f"/scripts/{script['id']}/runs")
    assert r.status_code == 202, r.text
    return wait_run(client, r.json()["id"])


def clean(stack, **parameters) -> dict:
    """Run the clean_history deployment through Prefect, as its daily schedule does."""
    with prefect_api(stack) as p:
        dep = p.get("/deployments/name/clean_history/daily")
        assert dep.status_code == 200, "scriptflow up creates the clean_history deployment"
        assert dep.json()["schedules"][0]["schedule"]["cron"] == "17 3 * * *"
        r = p.post(
            f"/deployments/{dep.json()['id']}/create_flow_run", json={"parameters": parameters}
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while True:
            state = p.get(f"/flow_runs/{run_id}").json()["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                assert state["type"] == "COMPLETED", state
                return state
            assert time.monotonic() < deadline, state
            time.sleep(0.5)


def test_it_removes_what_is_older_than_the_period_and_keeps_the_rest(own_stack):
    with own_stack.client("admin") as admin:
        script = upload(admin, "print('retention marker words')\n")
        old = run(admin, script)
        # Prefect's clock (this machine's): the old run was scheduled before it ended, the
        # new one is scheduled, and writes its output, after that.
        boundary = datetime.fromisoformat(old["ended_at"])
        new = run(admin, script)
        outputs = own_stack.home / "outputs"
        assert (outputs / f"{old['id']}.log").exists()
        stale_dir = own_stack.home / "work" / "left-by-a-crash"
        stale_dir.mkdir(parents=True)
        (stale_dir / "junk.txt").write_text("x")
        long_ago = (boundary - timedelta(days=1)).timestamp()
        os.utime(stale_dir, (long_ago, long_ago))
        found = admin.get("/runs", params={"q": "retention marker"}).json()
        assert {r["id"] for r in found["items"]} == {old["id"], new["id"]}

        # The clock moved 30 days past the boundary: the old run is out, the new one in.
        clean(own_stack, days=30, now=(boundary + timedelta(days=30)).isoformat())

        assert admin.get(f"/runs/{old['id']}").status_code == 404
        assert admin.get(f"/runs/{new['id']}").json()["status"] == "succeeded"
        assert not (outputs / f"{old['id']}.log").exists()
        assert (outputs / f"{new['id']}.log").exists()
        found = admin.get("/runs", params={"q": "retention marker"}).json()
        assert [r["id"] for r in found["items"]] == [new["id"]] and found["total"] == 1
        assert (
            admin.get(f"/runs/{new['id']}/output").json()["lines"][0]["text"]
            == "retention marker words"
        )
        assert not stale_dir.exists()
        with prefect_api(own_stack) as p:  # Prefect removes the run's logs with it
            logs = p.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [old["id"]]}}})
            deadline = time.monotonic() + 20
            while logs.json() and time.monotonic() < deadline:
                time.sleep(0.5)
                logs = p.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [old["id"]]}}})
            assert logs.json() == []

        # A clock that did not move removes nothing.
        clean(own_stack)
        assert admin.get(f"/runs/{new['id']}").status_code == 200


def test_it_refuses_a_period_out_of_range(own_stack):
    with prefect_api(own_stack) as p:
        dep = p.get("/deployments/name/clean_history/daily").json()
        r = p.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"days": 0}})
        run_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while p.get(f"/flow_runs/{run_id}").json()["state"]["type"] not in ("FAILED", "COMPLETED"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert p.get(f"/flow_runs/{run_id}").json()["state"]["type"] == "FAILED"


@contextlib.contextmanager
def signed_in(stack):
    with httpx.Client(base_url=stack.url, timeout=30) as web:
        login_page = web.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
        r = web.post(
            "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
        )
        assert r.status_code == 303, r.text
        yield web


def test_the_settings_page_stores_the_period_and_shows_the_disk_used(own_stack):
    with signed_in(own_stack) as web:
        page = web.get("/settings")
        assert (
            'id="retention"' in page.text
            and 'data-fragment="/settings/retention.html"' in page.text
        )
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        bad = web.post("/settings/retention", data={"days": "0", "csrf_token": csrf})
        assert bad.status_code == 422 and "whole number of days" in bad.text
        assert web.post("/settings/retention", data={"days": "45"}).status_code == 403  # CSRF
        ok = web.post("/settings/retention", data={"days": "45", "csrf_token": csrf})
        assert ok.status_code == 303
        fragment = web.get("/settings/retention.html").text
        assert 'value="45"' in fragment and "kept for 45 days" in fragment
        assert "Stored output" in fragment and "MB" in fragment
    # The daily clean-up now uses 45 days: a run 40 days "old" stays.
    with own_stack.client("admin") as admin:
        script = upload(admin, "print('kept for 45 days')\n")
        kept = run(admin, script)
        clean(own_stack, now=(datetime.now(UTC) + timedelta(days=40)).isoformat())
        assert admin.get(f"/runs/{kept['id']}").status_code == 200


def test_a_runs_kept_files_go_with_its_output_and_a_deleted_scripts_folder_after_the_period(
    own_stack,
):
    with own_stack.client("admin") as admin:
        script = upload(admin, "import uuid\nopen('made.txt', 'w').write(uuid.uuid4().hex)\n")
        old = run(admin, script)
        boundary = datetime.fromisoformat(old["ended_at"])
        new = run(admin, script)
        assert (
            [f["name"] for f in old["files"]] == [f["name"] for f in new["files"]] == ["made.txt"]
        )
        outputs, folder = (
            own_stack.home / "outputs",
            own_stack.home / "workspaces" / str(script["id"]),
        )
        assert (outputs / f"{old['id']}.files" / "made.txt").exists()
        assert admin.delete(f"/scripts/{script['id']}").status_code == 204

        clean(own_stack, days=30, now=(boundary + timedelta(days=30)).isoformat())
        assert not (outputs / f"{old['id']}.files").exists()
        assert not (outputs / f"{old['id']}.files.json").exists()
        assert admin.get(f"/runs/{new['id']}/files/made.txt").status_code == 200
        assert (folder / "made.txt").exists()  # deleted after the cut-off: kept

        # Once the script has been deleted for longer than the period, its folder goes too.
        clean(own_stack, days=30, now=(datetime.now(UTC) + timedelta(days=31)).isoformat())
        assert not folder.exists()
        assert not (outputs / f"{new['id']}.files").exists()
