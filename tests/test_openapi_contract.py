"""/api/v1/openapi.json tells the truth: schemathesis, every check, against a real stack with an
admin's token and with a non-admin's. 0 server errors, 0 answers the document does not allow
(status, body, content type, headers), 0 bodies it calls valid that are refused (or the other
way round).

A stack of its own: schemathesis changes and deletes what it finds (the session stack's
scripts and settings belong to other tests). Left out, for the network's sake: changing the
email and chat channel settings and their test messages (PUT/POST /settings/email and
/settings/channels/...), which would send mail or web requests to whatever address
schemathesis makes up. Those are tested in test_notifications.py against local servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool, start_stack, stop_stack, upload, wait_run

EXAMPLES = 4  # per operation and phase: 1.5-2.5 min per user on two shared cores
SEED = 1  # the same cases each run: a failure here is reproducible with the printed command
# An upload's file name must end in .py or .bat and its bytes be a script: OpenAPI cannot say
# that of a multipart file, so a made-up one is refused with 400 (and a reason); names inside a
# zip or several parts, and `entry` naming one of them, are checked with 422 (and a reason).
FILE_CHECKED = ["2xx", "400", "401", "403", "404", "409", "422", "429"]
# A script's settings have rules across fields and a grammar no pattern holds: a requirement is
# PEP 508, a secret's name differs from its variables' names and from its other secrets' names
# in more than letter case, a "Start in" folder is absolute on the worker's OS and does not
# hold ScriptFlow's home. A body breaking those is refused with 422 and a reason.
CROSS_CHECKED = ["2xx", "401", "403", "404", "409", "422", "429"]


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory):
    # Requirements schemathesis makes up are resolved from an empty folder of wheels, not
    # looked up on the package index.
    wheels = tmp_path_factory.mktemp("no-wheels")
    s = start_stack(
        tmp_path_factory.mktemp("contract-home"),
        {"SCRIPTFLOW_PACKAGE_INDEX_URL": str(wheels)},
    )
    try:
        r = s.cli("user", "add", "alice", "--password-stdin", input="alice-pass-123\n")
        assert r.returncode == 0, r.stderr
        for name in ("admin", "alice"):
            s.tokens[name] = s.cli("token", "create", name).stdout.strip()
        yield s
    finally:
        stop_stack(s)


def _config(path: Path, script_ids: list[int], run_ids: list[str], version: int) -> Path:
    """Ids that exist, offered half of the time, so that tests reach past "404"."""
    ids = ", ".join(str(i) for i in script_ids)
    runs = ", ".join(f'"{r}"' for r in run_ids)
    path.write_text(
        f"""
[dictionaries.scripts]
values = [{ids}]

[dictionaries.runs]
values = [{runs}]

[dictionaries.versions]
values = [{version}]

[parameters]
"path.script_id" = {{ dictionary = "scripts", probability = 0.5 }}
"path.run_id" = {{ dictionary = "runs", probability = 0.5 }}
"path.version" = {{ dictionary = "versions", probability = 0.5 }}

[[operations]]
include-path = "/scripts"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = {FILE_CHECKED!r}

[[operations]]
include-path = "/scripts/{{script_id}}"
include-method = "PATCH"
checks.positive_data_acceptance.expected-statuses = {CROSS_CHECKED!r}

[[operations]]
include-path = "/scripts/{{script_id}}/content"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = {FILE_CHECKED!r}
"""
    )
    return path


@pytest.mark.parametrize("user", ["admin", "alice"])
def test_the_api_answers_as_its_openapi_document_says(contract_stack, user, tmp_path):
    st = need_tool(str(Path(sys.executable).parent / "st"), "schemathesis, in the test extras")
    with contract_stack.client(user) as client:
        scripts = [upload(client, f"print('contract {n}')\n") for n in range(3)]
        run = client.post(f"/scripts/{scripts[0]['id']}/runs").json()
        wait_run(client, run["id"])
    config = _config(tmp_path / "schemathesis.toml", [s["id"] for s in scripts], [run["id"]], 1)
    command = [
        st,
        "--config-file",
        str(config),
        "run",
        contract_stack.url + "/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {contract_stack.tokens[user]}",
        # The network's sake (module docstring): these two filters are one (both must match).
        "--exclude-method-regex",
        "^(PUT|POST)$",
        "--exclude-path-regex",
        "^/settings/(email|channels)",
        "--output-truncate",
        "false",
        "--no-color",
    ]
    r = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    # Exit 0: no failure of any check (warnings, e.g. alice's 403 on admin routes, are fine).
    assert r.returncode == 0, r.stdout[-30000:]
