"""A script's history spans its deployments: a rename makes a new Prefect deployment, and the
runs of the old one stay the script's (history.service.remember_deployment)."""

from __future__ import annotations

from conftest import unique, upload, wait_run


def run_now(client, script_id: int) -> str:
    r = client.post(f"/scripts/{script_id}/runs")
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_it_keeps_a_scripts_runs_before_a_rename_in_its_history(alice):
    script = upload(alice, "print('hello')\n")
    before = run_now(alice, script["id"])
    assert wait_run(alice, before)["status"] == "succeeded"

    r = alice.patch(f"/scripts/{script['id']}", json={"name": unique("renamed")})
    assert r.status_code == 200, r.text
    after = run_now(alice, script["id"])
    assert wait_run(alice, after)["status"] == "succeeded"

    listed = alice.get("/runs", params={"script_id": script["id"]}).json()
    assert {run["id"] for run in listed["items"]} == {before, after}
    assert listed["total"] == 2
