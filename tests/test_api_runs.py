"""API.md "Runs": start, watch, page output, cancel, time out, filter history. Real scripts run
by the session stack's real runner; process trees checked with psutil."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest
from conftest import ADMIN_PASSWORD, need_tool, output_of, scratch_dir, upload, wait_run

RUN_FIELDS = {
    "id",
    "script_id",
    "script_name",
    "status",
    "trigger",
    "scheduled_at",
    "started_at",
    "ended_at",
    "duration_seconds",
    "exit_code",
    "script_version",
}
# A script that starts a grandchild (a second python), says its PID, and waits.
WITH_GRANDCHILD = """\
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c",
                  "import os, time; print('grandchild', os.getpid(), flush=True); time.sleep(600)"])
time.sleep(600)
"""


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"].strip()
    return body["detail"]


def start(client: httpx.Client, script: dict) -> dict:
    r = client.post(f"/scripts/{script['id']}/runs")
    assert r.status_code == 202, r.text
    return r.json()


def run_source(client: httpx.Client, source: str, timeout: float = 60, **kw) -> tuple[dict, list]:
    """Upload, run to the end; the finished run and its output lines."""
    script = upload(client, source, **kw)
    run = wait_run(client, start(client, script)["id"], timeout=timeout)
    return run, output_of(client, run["id"])


def texts(lines: list[dict], stream: str | None = None) -> list[str]:
    return [ln["text"] for ln in lines if stream is None or ln["stream"] == stream]


def is_gone(pid: int) -> bool:
    # PID 1 of this machine may not reap orphans: a killed grandchild can linger as a zombie.
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return not psutil.pid_exists(pid)


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def grandchild_pid(client: httpx.Client, run_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in client.get(f"/runs/{run_id}/output").json()["lines"]:
            m = re.fullmatch(r"grandchild (\d+)", line["text"])
            if m:
                return int(m.group(1))
        time.sleep(0.2)
    raise AssertionError(f"the script never printed its grandchild's PID: {run_id}")


def at(dt: str | None) -> datetime:
    assert dt, dt
    return datetime.fromisoformat(dt)


# -- a run from start to end ----------------------------------------------------------------
def test_it_queues_a_run_and_runs_it_to_success(alice):
    script = upload(alice, "print('hello from a run')\n")
    queued = start(alice, script)
    assert set(queued) >= RUN_FIELDS
    assert queued["status"] == "queued"
    assert queued["trigger"] == "manual"
    assert queued["script_id"] == script["id"]
    assert queued["script_name"] == script["name"]
    assert queued["script_version"] == 1
    assert queued["exit_code"] is None and queued["ended_at"] is None

    run = wait_run(alice, queued["id"])
    assert set(run) >= RUN_FIELDS
    assert run["status"] == "succeeded"
    assert run["exit_code"] == 0
    assert at(run["started_at"]) <= at(run["ended_at"])
    assert run["duration_seconds"] == pytest.approx(
        (at(run["ended_at"]) - at(run["started_at"])).total_seconds(), abs=0.01
    )
    assert texts(output_of(alice, run["id"])) == ["hello from a run"]
    assert alice.get(f"/scripts/{script['id']}").json()["last_run"]["id"] == run["id"]


@pytest.fixture(scope="module")
def printed(stack):
    """One finished run of a script that prints to both streams, empty lines, bad bytes."""
    with stack.client("alice") as alice:
        return run_source(
            alice,
            """\
import sys
for i in range(5):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
print("a")
print()
print("")
print("three  spaced", flush=True)
sys.stdout.buffer.write(b"bad \\xff\\xfe byte\\n")
sys.stdout.buffer.write("caf\\u00e9 ok\\n".encode())
""",
        )


def test_it_keeps_streams_order_and_empty_lines_of_the_output(printed):
    run, lines = printed
    assert run["status"] == "succeeded"
    assert {ln["stream"] for ln in lines} == {"stdout", "stderr"}
    out = texts(lines, "stdout")
    assert out[:9] == [f"out {i}" for i in range(5)] + ["a", "", "", "three  spaced"]
    assert texts(lines, "stderr") == [f"err {i}" for i in range(5)]
    for ln in lines:
        assert at(ln["ts"]).tzinfo is not None


def test_it_replaces_bytes_that_are_not_utf8(printed):
    _run, lines = printed
    bad, good = texts(lines, "stdout")[-2:]
    assert bad.startswith("bad ") and bad.endswith(" byte") and "\ufffd" in bad
    assert good == "café ok"


def test_it_keeps_the_exit_code_and_fails_the_run(alice, history):
    run = history["bad_run"]
    assert run["status"] == "failed"
    assert run["exit_code"] == 3
    assert texts(output_of(alice, run["id"])) == ["giving up"]
    # Prefect's UI gets English; pages and emails translate by the code kept with the run.
    assert (run["message"], run["message_code"], run["message_params"]) == (
        "Exit code 3",
        "exit_code",
        {"code": 3},
    )


def test_it_fails_a_run_that_raises_and_shows_the_traceback(alice):
    run, lines = run_source(alice, "raise RuntimeError('boom')\n")
    assert run["status"] == "failed"
    assert run["exit_code"] == 1
    assert any("RuntimeError: boom" in t for t in texts(lines, "stderr"))


# -- stopping a run -------------------------------------------------------------------------
def test_it_times_out_and_stops_the_whole_process_tree(alice):
    script = upload(alice, WITH_GRANDCHILD)
    r = alice.patch(f"/scripts/{script['id']}", json={"timeout_seconds": 2})
    assert r.status_code == 200, r.text
    run_id = start(alice, script)["id"]
    pid = grandchild_pid(alice, run_id)
    run = wait_run(alice, run_id, timeout=60)
    assert run["status"] == "timed_out", run
    assert (run["message_code"], run["message_params"]) == ("timed_out", {"seconds": 2})
    assert run["duration_seconds"] < 30
    assert wait_gone(pid), f"grandchild {pid} outlived the timeout"


def test_it_cancels_a_running_script_and_its_grandchildren(alice):
    script = upload(alice, WITH_GRANDCHILD)
    run_id = start(alice, script)["id"]
    pid = grandchild_pid(alice, run_id)
    assert not is_gone(pid)
    r = alice.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["id"] == run_id
    run = wait_run(alice, run_id, timeout=30)
    assert run["status"] == "cancelled", run
    assert run["message_code"] == "cancelled", run
    assert wait_gone(pid), f"grandchild {pid} outlived the cancel"


def test_it_cancels_a_run_that_has_not_started_with_a_coded_message(stack, alice):
    script = upload(alice, "print(1)\n")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with stack.prefect() as p:
        dep = p.get(f"/deployments/name/run_script/{script['name']}").json()
        r = p.post(
            f"/deployments/{dep['id']}/create_flow_run",
            json={"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}},
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
    r = alice.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["status"] == "cancelled", run
    assert (run["message"], run["message_code"]) == (
        "Cancelled before it started",
        "cancelled_before_start",
    )


def test_the_openapi_schema_documents_the_run_as_the_contract_says(alice):
    schema = alice.get("/openapi.json").json()
    run = schema["components"]["schemas"]["Run"]
    assert RUN_FIELDS <= set(run["properties"])
    statuses = schema["components"]["schemas"]["Status"]["enum"]
    assert statuses == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "crashed",
    ]
    assert schema["components"]["schemas"]["Trigger"]["enum"] == ["manual", "scheduled", "retry"]
    responses = schema["paths"]["/runs/{run_id}"]["get"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Run")
    for path in ("/scripts", "/runs", "/schedules", "/scheduler", "/notifications"):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert "$ref" in ok["schema"], path


def test_it_refuses_to_cancel_a_finished_run_with_409(alice):
    run, _lines = run_source(alice, "print(1)\n")
    assert run["status"] == "succeeded"
    assert_error(alice.post(f"/runs/{run['id']}/cancel"), 409)
    assert alice.get(f"/runs/{run['id']}").json()["status"] == "succeeded"


# -- isolation ------------------------------------------------------------------------------
def test_it_gives_each_run_a_fresh_empty_working_folder_when_asked(alice):
    # The default folder stays between runs (test_working_folder.py); "fresh" is a choice.
    script = upload(
        alice,
        """\
import json, os
print(json.dumps(sorted(os.listdir("."))))
with open("left-behind.txt", "w") as f:
    f.write("from an earlier run")
""",
    )
    r = alice.patch(f"/scripts/{script['id']}", json={"working_folder": {"mode": "fresh"}})
    assert r.status_code == 200, r.text
    for _ in range(2):
        run = wait_run(alice, start(alice, script)["id"])
        assert run["status"] == "succeeded"
        assert texts(output_of(alice, run["id"])) == ["[]"]


def test_it_runs_the_newest_version_after_an_edit(alice):
    script = upload(alice, "print('version one')\n")
    first = wait_run(alice, start(alice, script)["id"])
    assert (first["script_version"], texts(output_of(alice, first["id"]))) == (1, ["version one"])
    r = alice.put(f"/scripts/{script['id']}/content", content=b"print('version two')\n")
    assert r.status_code == 200 and r.json()["version"] == 2
    second = wait_run(alice, start(alice, script)["id"])
    assert second["status"] == "succeeded"
    assert second["script_version"] == 2
    assert texts(output_of(alice, second["id"])) == ["version two"]
    # History keeps which version each run ran.
    assert alice.get(f"/runs/{first['id']}").json()["script_version"] == 1


def test_it_hides_scriptflow_and_prefect_settings_and_secrets_from_scripts(stack, alice):
    run, lines = run_source(alice, "import json, os\nprint(json.dumps(dict(os.environ)))\n")
    assert run["status"] == "succeeded"
    env = json.loads(texts(lines)[0])
    assert env, "the script saw no environment at all"
    # The one ScriptFlow variable a script gets: its run's id (what recovery finds its
    # processes by, execution/leftovers.py); no setting.
    assert env.pop("SCRIPTFLOW_RUN_ID") == run["id"]
    for name in env:
        assert not name.upper().startswith(("PREFECT_", "SCRIPTFLOW_")), name
        for marker in ("SECRET", "PASSWORD", "TOKEN", "AUTH", "API_KEY"):
            assert marker not in name.upper(), name
    auth_string = stack.cli("prefect-env").stdout.split("PREFECT_API_AUTH_STRING=")[1].strip()
    secrets = [ADMIN_PASSWORD, auth_string.strip("'"), *stack.tokens.values()]
    leaked = [s for s in secrets for value in env.values() if s in value]
    assert leaked == []


def test_it_closes_standard_input(alice):
    source = """\
import sys
data = sys.stdin.read() if sys.stdin is not None else ''
print('stdin:', repr(data))
"""
    script = upload(alice, source)
    assert alice.patch(f"/scripts/{script['id']}", json={"timeout_seconds": 20}).status_code == 200
    run = wait_run(alice, start(alice, script)["id"])
    assert run["status"] == "succeeded", run
    assert texts(output_of(alice, run["id"])) == ["stdin: ''"]


# Each run says it started (a file of its own in a shared folder), then waits until all ten
# have: a run that started only after another one ended could never see all ten.
TOGETHER = """\
import os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
(here / str(os.getpid())).touch()
deadline = time.monotonic() + 120
while len(list(here.iterdir())) < 10:
    if time.monotonic() > deadline:
        sys.exit(f"only {len(list(here.iterdir()))} of ten ran at once")
    time.sleep(0.1)
print("all ten at once")
"""


def test_it_runs_ten_scripts_at_the_same_time(stack, alice):
    together = scratch_dir() / f"sf-together-{uuid.uuid4().hex}"
    together.mkdir()
    scripts = [upload(alice, TOGETHER) for _ in range(10)]

    def run_now(script: dict) -> str:
        with stack.client("alice") as own:  # one connection each: ten clicks at once
            r = own.post(f"/scripts/{script['id']}/runs", json={"arguments": [str(together)]})
            assert r.status_code == 202, r.text
            return r.json()["id"]

    try:
        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(run_now, scripts))
        runs = [wait_run(alice, run_id, timeout=180) for run_id in ids]
        assert [r["status"] for r in runs] == ["succeeded"] * 10, [
            texts(output_of(alice, r["id"])) for r in runs
        ]
        assert all(texts(output_of(alice, r["id"])) == ["all ten at once"] for r in runs)
        starts = [at(r["started_at"]) for r in runs]
        ends = [at(r["ended_at"]) for r in runs]
        assert max(starts) < min(ends), "all ten were running at one moment"
    finally:
        shutil.rmtree(together, ignore_errors=True)


# -- history --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history(stack):
    """Two of alice's scripts, one run each: one succeeded, one failed."""
    with stack.client("alice") as alice:
        before = datetime.now(UTC) - timedelta(seconds=1)
        good = upload(alice, "print('fine')\n")
        bad = upload(alice, "import sys\nprint('giving up')\nsys.exit(3)\n")
        good_run = wait_run(alice, start(alice, good)["id"])
        bad_run = wait_run(alice, start(alice, bad)["id"])
        after = datetime.now(UTC) + timedelta(seconds=1)
        return {
            "good": good,
            "bad": bad,
            "good_run": good_run,
            "bad_run": bad_run,
            "before": before,
            "after": after,
        }


def run_ids(client: httpx.Client, **params) -> list[str]:
    r = client.get("/runs", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] >= len(body["items"])
    return [run["id"] for run in body["items"]]


def test_it_filters_history_by_script_status_trigger_and_time(alice, history):
    good, bad = history["good"]["id"], history["bad"]["id"]
    good_run, bad_run = history["good_run"]["id"], history["bad_run"]["id"]
    assert run_ids(alice, script_id=good) == [good_run]
    assert run_ids(alice, script_id=bad) == [bad_run]
    assert run_ids(alice, script_id=good, status="succeeded") == [good_run]
    assert run_ids(alice, script_id=good, status="failed") == []
    assert run_ids(alice, script_id=bad, status="failed") == [bad_run]
    assert run_ids(alice, script_id=good, trigger="manual") == [good_run]
    assert run_ids(alice, script_id=good, trigger="scheduled") == []
    since, until = history["before"].isoformat(), history["after"].isoformat()
    assert run_ids(alice, script_id=good, since=since, until=until) == [good_run]
    assert run_ids(alice, script_id=good, since=history["after"].isoformat()) == []
    assert run_ids(alice, script_id=good, until=history["before"].isoformat()) == []
    assert run_ids(alice, script_id=good, since=since.replace("+00:00", "Z")) == [good_run]
    # Newest first, and both in alice's unfiltered history.
    everything = run_ids(alice, per_page=200)
    assert everything.index(bad_run) < everything.index(good_run)


def test_it_pages_history(alice, history):
    first = alice.get("/runs", params={"per_page": 1, "page": 1}).json()
    second = alice.get("/runs", params={"per_page": 1, "page": 2}).json()
    assert len(first["items"]) == len(second["items"]) == 1
    assert first["total"] == second["total"] >= 2
    assert first["items"][0]["id"] != second["items"][0]["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"trigger": "cron"},
        {"since": "not-a-date"},
        {"since": "2026-01-01T00:00:00"},
        {"until": "2026-01-01T08:00:00"},
        {"per_page": 0},
        {"per_page": 100000},
        {"page": 0},
        {"script_id": "abc"},
    ],
)
def test_it_answers_422_for_bad_history_filters(alice, params):
    assert_error(alice.get("/runs", params=params), 422)


def test_a_time_range_that_ends_before_it_starts_is_empty(alice):
    # Two valid times whose order no schema can state: nothing is in between (not a 422).
    r = alice.get(
        "/runs", params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    )
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0}


@pytest.mark.parametrize(
    "run_id",
    ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "3f6b1f0e-9a5c-4c47-8f43-0d1b2f3c4d5e"],
)
def test_it_answers_404_for_an_unknown_run(alice, run_id):
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/output", f"/runs/{run_id}/output.txt"):
        assert_error(alice.get(path), 404)
    assert_error(alice.post(f"/runs/{run_id}/cancel"), 404)


def test_it_hides_alices_runs_from_bob(alice, bob, admin, history):
    run_id = history["good_run"]["id"]
    for method, path in (
        ("GET", f"/runs/{run_id}"),
        ("POST", f"/runs/{run_id}/cancel"),
        ("GET", f"/runs/{run_id}/output"),
        ("GET", f"/runs/{run_id}/output.txt"),
    ):
        r = bob.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
    assert bob.get("/runs", params={"script_id": history["good"]["id"]}).json() == {
        "items": [],
        "total": 0,
    }
    assert run_id not in run_ids(bob, per_page=200)
    assert admin.get(f"/runs/{run_id}").status_code == 200
    assert admin.get(f"/runs/{run_id}/output").json()["lines"][0]["text"] == "fine"


# -- output ---------------------------------------------------------------------------------
def test_it_pages_output_with_a_cursor(alice, printed):
    run, lines = printed
    paged, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"after": cursor} if cursor else {})}
        body = alice.get(f"/runs/{run['id']}/output", params=params).json()
        assert len(body["lines"]) <= 2
        paged += body["lines"]
        cursor, pages = body["next"], pages + 1
        if body["complete"]:
            break
        assert pages < 50
    assert paged == lines
    assert pages >= len(lines) // 2
    # Asking again from the end gives nothing new.
    body = alice.get(f"/runs/{run['id']}/output", params={"after": cursor}).json()
    assert body["lines"] == [] and body["complete"] is True


@pytest.mark.parametrize("cursor", ["abc", "-5", "3", "99999999"])
def test_it_answers_400_for_a_bad_output_cursor(alice, history, cursor):
    r = alice.get(f"/runs/{history['good_run']['id']}/output", params={"after": cursor})
    assert_error(r, 400)


def test_it_downloads_the_output_as_text(alice, printed):
    run, lines = printed
    r = alice.get(f"/runs/{run['id']}/output.txt")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    rows = r.text.split("\n")
    assert rows[-1] == ""  # every line ends with a newline
    parsed = []
    for row in rows[:-1]:
        m = re.fullmatch(r"(\S+) (stdout|stderr) (.*)", row)
        assert m, row
        assert at(m.group(1)).tzinfo is not None
        parsed.append((m.group(2), m.group(3)))
    # The same lines as the JSON output, in the same order (across streams, order is only
    # as good as two pipes allow), spaces and empty lines kept.
    assert parsed == [(ln["stream"], ln["text"]) for ln in lines]
    assert ("stdout", "three  spaced") in parsed and ("stdout", "") in parsed


# -- .bat -----------------------------------------------------------------------------------
@pytest.mark.wine
def test_it_runs_a_bat_script_through_wine(alice):
    need_tool("wine", ".bat scripts run through wine on Linux")
    source = "@echo off\r\necho hello\r\necho.\r\necho oops 1>&2\r\nexit /b 4\r\n"
    run, lines = run_source(alice, source, filename="job.bat", timeout=180)
    assert run["status"] == "failed", run
    assert run["exit_code"] == 4
    assert [t.rstrip() for t in texts(lines, "stdout")] == ["hello", ""]
    assert [t.rstrip() for t in texts(lines, "stderr")] == ["oops"]
