""" "None breaks a run" (issue 14): a run of a deployment whose parameters were edited in
Prefect ends with a message that says what is wrong, translated, and the runner goes on
taking runs. The parameters are changed with Prefect's own client, as a power user would."""

from __future__ import annotations

import pytest
from conftest import upload, wait_run
from prefect.client.schemas.actions import DeploymentUpdate
from test_drift import deployment_of, prefect  # noqa: F401 (the fixture)

MISSING = "0" * 64
CASES = {
    "sha256 of nothing stored": ({"sha256": MISSING}, "files_unavailable", "not in the script"),
    "sha256 not a hash": ({"sha256": "nope"}, "files_unavailable", "nope"),
    "an unknown parameter": ({"surprise": 1}, "parameters_invalid", "surprise"),
    "timeout as a word": ({"timeout_seconds": "abc"}, "parameters_invalid", "timeout_seconds"),
    "an unknown kind": ({"kind": "perl"}, "parameters_invalid", "kind"),
    "a policy that is none": ({"policy": {"retries": "many"}}, "parameters_invalid", "retries"),
    "a file outside its folder": (
        {"files": [{"name": "../evil.py", "sha256": MISSING}]},
        "files_unavailable",
        "evil.py",
    ),
    "an entry point outside its folder": (
        {"filename": "../../x.py"},
        "files_unavailable",
        "x.py",
    ),
}


def run_with(admin, prefect, changes: dict) -> dict:  # noqa: F811
    script = upload(admin, "print('hi')\n")
    dep = deployment_of(prefect, script["name"])
    prefect.update_deployment(dep.id, DeploymentUpdate(parameters={**dep.parameters, **changes}))
    r = admin.post(f"/scripts/{script['id']}/runs")
    assert r.status_code == 202, r.text
    return wait_run(admin, r.json()["id"], timeout=60)


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_with_parameters_edited_in_prefect_ends_with_a_clear_message(
    admin,
    prefect,  # noqa: F811
    case,
) -> None:
    changes, code, names = CASES[case]
    run = run_with(admin, prefect, changes)
    assert run["status"] == "failed", run
    assert run["message_code"] == code, run
    assert names in run["message"] and "scheduler status page" in run["message"]
    assert "/store/" not in run["message"]  # no folder of the server's in a message
    translated = admin.get(f"/runs/{run['id']}", headers={"Accept-Language": "pt-BR"})
    assert translated.status_code == 200


def test_a_version_edited_in_prefect_runs_the_bytes_of_its_hash_and_shows_as_drift(
    admin,
    prefect,  # noqa: F811
) -> None:
    """The version number is a label; the bytes are the hash's (verified). The drift list
    says the parameters differ."""
    run = run_with(admin, prefect, {"version": 999})
    assert run["status"] == "succeeded", run
    items = admin.get("/scheduler/drift").json()["items"]
    assert any(
        i["kind"] == "parameters" and i["script"]["id"] == run["script_id"]
        for i in items
        if i["script"]
    )


def test_the_runner_goes_on_taking_runs_afterwards(admin) -> None:
    script = upload(admin, "print('still here')\n")
    r = admin.post(f"/scripts/{script['id']}/runs")
    assert wait_run(admin, r.json()["id"], timeout=60)["status"] == "succeeded"
