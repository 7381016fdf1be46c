"""Scripts with Python dependencies on the real stack: requirements saved through the API and
PEP 723 blocks in the file, installed by real uv from the real index; the run waits for its
environment, and a failed install fails the run with the installer's words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import output_of, upload, wait_run, wait_until

SIX = "# /// script\n# dependencies = ['six']\n# ///\n"
PRINT_VERSIONS = (
    "import importlib.metadata as m, json, sys\n"
    "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))\n"
    "print('then to stderr', file=sys.stderr)\n"
    "print('then to stdout')\n"
)


def env_keys(stack) -> set[str]:
    root = stack.home / "envs"
    return (
        {p.name for p in root.iterdir() if p.is_dir() and len(p.name) == 16}
        if root.exists()
        else set()
    )


def run_clean_history(stack, parameters: dict) -> None:
    """The daily clean_history deployment, run through Prefect as its schedule runs it."""
    with stack.prefect() as p:
        deployment = p.get("/deployments/name/clean_history/daily").json()
        r = p.post(
            f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}
        )
        assert r.status_code == 201, r.text

        def ended():
            state = p.get(f"/flow_runs/{r.json()['id']}").json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        state = wait_until(ended, 90, "the clean_history run")
        assert state["type"] == "COMPLETED", state


def run_now(client, script_id: int, timeout: float = 120) -> dict:
    run = client.post(f"/scripts/{script_id}/runs")
    assert run.status_code == 202, run.text
    return wait_run(client, run.json()["id"], timeout=timeout)


def ready(client, script_id: int) -> dict:
    def check():
        body = client.get(f"/scripts/{script_id}/environment").json()
        return body if body["status"] != "building" else None

    return wait_until(check, 120, f"the environment of script {script_id} being built")


def test_a_script_gets_its_block_and_its_requirements_and_a_second_run_installs_nothing(
    stack, alice
):
    script = upload(alice, SIX + PRINT_VERSIONS)
    r = alice.patch(
        f"/scripts/{script['id']}", json={"requirements": ["idna"], "arguments": ["six", "idna"]}
    )
    assert r.status_code == 200 and r.json()["requirements"] == ["idna"]

    first = run_now(alice, script["id"])
    assert first["status"] == "succeeded", first
    lines = output_of(alice, first["id"])
    versions = json.loads(lines[0]["text"])
    # In the order written, as in the shared script-venv (the hook is in every environment).
    assert [(line["stream"], line["text"]) for line in lines[1:]] == [
        ("stderr", "then to stderr"),
        ("stdout", "then to stdout"),
    ]
    env = alice.get(f"/scripts/{script['id']}/environment").json()
    assert env["status"] == "ready" and env["requirements"] == ["idna", "six"]
    assert {p["name"]: p["version"] for p in env["packages"]} == versions
    assert "uv pip sync" in env["log"] and env["built_at"]

    second = run_now(alice, script["id"])
    assert second["status"] == "succeeded", second
    again = alice.get(f"/scripts/{script['id']}/environment").json()
    # Built once: the same install log and build time; the run installed nothing.
    assert (again["log"], again["built_at"]) == (env["log"], env["built_at"])


def test_two_scripts_with_the_same_set_share_one_environment(stack, alice):
    first = upload(alice, "# /// script\n# dependencies = ['idna', 'six']\n# ///\nimport six\n")
    assert run_now(alice, first["id"])["status"] == "succeeded"
    built = env_keys(stack)
    second = upload(alice, "import idna, six\nprint('shared')\n")
    alice.patch(f"/scripts/{second['id']}", json={"requirements": ["six>=1", "idna"]})
    run = run_now(alice, second["id"])
    assert run["status"] == "succeeded" and output_of(alice, run["id"])[0]["text"] == "shared"
    assert env_keys(stack) == built
    a, b = (alice.get(f"/scripts/{s['id']}/environment").json() for s in (first, second))
    assert a["built_at"] == b["built_at"] and a["packages"] == b["packages"]


def test_a_requirement_that_cannot_be_installed_fails_the_run_with_uvs_words(stack, alice):
    script = upload(alice, "import six\nprint('never')\n")
    alice.patch(f"/scripts/{script['id']}", json={"requirements": ["six==999.0"]})
    run = run_now(alice, script["id"])
    assert run["status"] == "failed", run
    assert run["message_code"] == "install_failed"
    assert run["message"].startswith("Could not install six==999.0: ")
    assert "no version of six==999.0" in run["message"]
    lines = [line["text"] for line in output_of(alice, run["id"])]
    assert lines[0] == run["message"]
    assert not any("ModuleNotFoundError" in text for text in lines)
    env = ready(alice, script["id"])
    assert env["status"] == "failed" and "no version of six==999.0" in env["log"]
    assert env["message"].startswith("Could not install six==999.0")

    # Translated by the code kept with the run.
    pt = alice.get(f"/runs/{run['id']}", headers={"Accept-Language": "pt-BR"}).json()
    assert pt["message_code"] == "install_failed"


def test_saving_requirements_starts_the_build_before_any_run(stack, alice):
    script = upload(alice, "import idna\n")
    r = alice.patch(f"/scripts/{script['id']}", json={"requirements": ["idna", "six"]})
    assert r.status_code == 200
    env = ready(alice, script["id"])  # no run was started
    assert env["status"] == "ready" and {p["name"] for p in env["packages"]} == {"idna", "six"}


def test_a_script_whose_block_cannot_be_read_is_refused_naming_the_line(alice):
    source = "print(1)\n# /// script\n# dependencies = 'six'\n# ///\n"
    r = alice.post("/scripts", files={"file": ("bad.py", source.encode())}, data={"name": "x"})
    assert r.status_code == 400 and "line 2" in r.json()["detail"], r.text
    ok = upload(alice, "print(1)\n")
    r = alice.put(f"/scripts/{ok['id']}/content", content=source.encode())
    assert r.status_code == 400 and "line 2" in r.json()["detail"]


def test_a_script_without_requirements_needs_no_environment(alice):
    script = upload(alice, "print(1)\n")
    assert alice.get(f"/scripts/{script['id']}/environment").json() == {
        "status": "ready",
        "packages": [],
        "log": "",
        "requirements": [],
        "python": alice.get(f"/scripts/{script['id']}/environment").json()["python"],
        "built_at": None,
        "message": None,
    }


@pytest.mark.parametrize("script_id", ["0", "999999999", "9" * 30, "-1", "x"])
def test_the_environment_of_an_unknown_script_is_404(alice, script_id):
    r = alice.get(f"/scripts/{script_id}/environment")
    assert r.status_code == 404 and r.json()["detail"]


def test_the_environment_is_the_owners_and_needs_a_token(stack, alice, bob):
    script = upload(alice, "print(1)\n")
    r = bob.get(f"/scripts/{script['id']}/environment")
    assert r.status_code == 404 and r.json()["detail"]
    with stack.client(None) as anonymous:
        r = anonymous.get(f"/scripts/{script['id']}/environment")
    assert r.status_code == 401 and r.json()["detail"]


def test_the_daily_clean_up_removes_an_environment_no_script_wants_any_more(stack, alice):
    script = upload(alice, "print('gc')\n")
    alice.patch(f"/scripts/{script['id']}", json={"requirements": ["attrs"]})
    assert run_now(alice, script["id"])["status"] == "succeeded"
    (attrs_key,) = {  # no other test asks for attrs
        key
        for key in env_keys(stack)
        if "attrs==" in (stack.home / "envs" / key / "scriptflow-requirements.txt").read_text()
    }
    alice.patch(f"/scripts/{script['id']}", json={"requirements": ["six"]})
    assert run_now(alice, script["id"])["status"] == "succeeded"
    # The daily clean_history run, its clock 15 days on; history itself keeps 10 years.
    later = datetime.now(UTC) + timedelta(days=15)
    run_clean_history(stack, {"days": 3650, "now": later.isoformat()})
    assert attrs_key not in env_keys(stack)
    env = alice.get(f"/scripts/{script['id']}/environment").json()
    assert env["status"] == "ready" and [p["name"] for p in env["packages"]] == ["six"]
    assert run_now(alice, script["id"])["status"] == "succeeded"  # its own one was kept
