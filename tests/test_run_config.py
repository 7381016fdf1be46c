"""A script's "How it runs" settings: arguments and environment reach the script; bad input is
a 422 with a reason and changes nothing."""

from __future__ import annotations

import json

import pytest
from conftest import output_of, upload, wait_run

from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.scripts import run_config


def test_defaults_for_a_script_saved_before_the_settings_existed():
    config = run_config.run_config({"policy": {}})
    assert config.arguments == [] and config.environment == {}
    assert config.working_folder.mode == "script"


@pytest.mark.parametrize(
    "changes",
    [
        {"arguments": "--all"},
        {"arguments": ["a\x00b"]},
        {"environment": {"1BAD": "x"}},
        {"environment": {"PREFECT_API_URL": "x"}},
        {"environment": {"OK": 3}},
        {"requirements": ["requests>>2"]},
        {"requirements": ["requests @ https://example.invalid/requests.whl"]},
        {"working_folder": {"mode": "path", "path": "relative/dir"}},
        {"working_folder": {"mode": "path"}},
        {"working_folder": {"mode": "elsewhere"}},
        {"run_as": "bad name;rm"},
    ],
)
def test_it_refuses_bad_settings_with_a_reason(changes):
    with pytest.raises(ServiceError) as caught:
        run_config.apply_changes(run_config.RunConfig(), changes)
    assert caught.value.status == 422 and str(caught.value)


def test_it_accepts_windows_and_posix_absolute_folders_and_requirement_text():
    config = run_config.apply_changes(
        run_config.RunConfig(),
        {
            "working_folder": {"mode": "path", "path": "D:\\backups"},
            "requirements": "requests>=2  # http\n\nopenpyxl==3.1.5\n",
        },
    )
    assert config.working_folder.path == "D:\\backups"
    assert config.requirements == ["requests>=2", "openpyxl==3.1.5"]
    posix = run_config.check_working_folder({"mode": "path", "path": "/srv/reports"})
    assert posix.path == "/srv/reports"


def test_arguments_and_environment_reach_the_script(alice):
    source = "import json, os, sys\nprint(json.dumps([sys.argv[1:], os.environ.get('REGION')]))\n"
    script = upload(alice, source)
    r = alice.patch(
        f"/scripts/{script['id']}",
        json={"arguments": ["--days", "7", "two words"], "environment": {"REGION": "sul"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["arguments"] == ["--days", "7", "two words"]
    assert r.json()["environment"] == {"REGION": "sul"}
    run = alice.post(f"/scripts/{script['id']}/runs").json()
    done = wait_run(alice, run["id"])
    assert done["status"] == "succeeded", done
    printed = json.loads(output_of(alice, run["id"])[0]["text"])
    assert printed == [["--days", "7", "two words"], "sul"]


def test_a_bad_setting_changes_nothing(alice):
    script = upload(alice, "print(1)\n")
    alice.patch(f"/scripts/{script['id']}", json={"arguments": ["keep"]})
    r = alice.patch(
        f"/scripts/{script['id']}", json={"arguments": ["new"], "environment": {"9": "x"}}
    )
    assert r.status_code == 422 and "9" in r.json()["detail"]
    assert alice.get(f"/scripts/{script['id']}").json()["arguments"] == ["keep"]


def test_only_an_admin_sets_the_account_a_script_runs_as(alice, admin):
    script = upload(alice, "print(1)\n")
    r = alice.patch(f"/scripts/{script['id']}", json={"run_as": "nobody"})
    assert r.status_code == 403 and r.json()["detail"]
    r = admin.patch(f"/scripts/{script['id']}", json={"run_as": None})
    assert r.status_code == 200 and r.json()["run_as"] is None
