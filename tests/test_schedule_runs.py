"""Scheduled runs for real: a schedule one minute ahead runs on time, and the run policies
(retry, switching the schedule off, overlap, missed times) act on real flow runs of a real
stack. No mocks: Prefect's scheduler, the in-process runner and real subprocesses.

A scheduled run is emulated, where waiting for a real schedule would cost minutes, by
creating a flow run from the script's deployment with the Prefect client, tagged
`auto-scheduled` (the tag Prefect's scheduler puts on its runs) and due now."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from conftest import Stack, free_port, start_stack, stop_stack, upload, wait_run

pytestmark = pytest.mark.timeout(240)

PRINTS_TIME = "import time\nprint(time.time(), flush=True)\n"
FAILS = "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"
LONG = "import time\nprint(time.time(), flush=True)\ntime.sleep(4)\nprint('done', flush=True)\n"


# --- helpers --------------------------------------------------------------------------------


def prefect_exports(stack: Stack) -> dict[str, str]:
    r = stack.cli("prefect-env")
    assert r.returncode == 0, r.stderr
    return dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in r.stdout.splitlines()
        if line.startswith("export ")
    )


def prefect_client(stack: Stack):
    """Prefect's own client, pointed at the stack the way `scriptflow prefect-env` says."""
    from prefect.client.orchestration import SyncPrefectClient

    env = prefect_exports(stack)
    return SyncPrefectClient(env["PREFECT_API_URL"], auth_string=env.get("PREFECT_API_AUTH_STRING"))


@pytest.fixture(scope="module")
def prefect(stack):
    with prefect_client(stack) as client:
        yield client


def deployment_id(prefect, script: dict):
    return prefect.read_deployment_by_name(f"run_script/{script['name']}").id


def emulate_scheduled(prefect, script: dict, at: datetime | None = None):
    """A flow run as Prefect's scheduler makes it: from the deployment, tagged, Scheduled."""
    from prefect.states import Scheduled

    return prefect.create_flow_run_from_deployment(
        deployment_id(prefect, script),
        tags=["auto-scheduled"],
        state=Scheduled(scheduled_time=at or datetime.now(UTC)),
    )


def set_policy(client: httpx.Client, script: dict, **policy) -> None:
    r = client.patch(f"/scripts/{script['id']}", json={"policy": policy})
    assert r.status_code == 200, r.text
    assert {k: r.json()["policy"][k] for k in policy} == policy


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def runs_of(client: httpx.Client, script: dict, **params) -> list[dict]:
    r = client.get("/runs", params={"script_id": script["id"], "per_page": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def poll(what, timeout: float, every: float = 0.3):
    """`what()` once it is truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {timeout} s (last: {value!r})")
        time.sleep(every)


def first_line_time(client: httpx.Client, run_id: str) -> float:
    lines = client.get(f"/runs/{run_id}/output").json()["lines"]
    return float(lines[0]["text"])


def schedule_states(client: httpx.Client) -> dict[int, str]:
    r = client.get("/schedules")
    assert r.status_code == 200, r.text
    return {item["script_id"]: item["state"] for item in r.json()["items"]}


def far_away_time() -> str:
    """A daily time that does not come round while the tests run."""
    return (datetime.now(UTC) + timedelta(hours=8)).strftime("%H:%M")


# --- a real schedule, one minute ahead ------------------------------------------------------


@pytest.fixture(scope="module")
def soon(stack, prefect):
    """A script scheduled for the next whole minute (the one after if that is under 20 s
    away). Saved first so that the policy tests below run while the minute comes round."""
    with stack.client("alice") as alice:
        script = upload(alice, PRINTS_TIME)
        now = datetime.now(UTC)
        target = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (target - now).total_seconds() < 20:
            target += timedelta(minutes=1)
        saved_at = time.monotonic()
        r = alice.put(
            f"/scripts/{script['id']}/schedule",
            json={"frequency": "daily", "time": target.strftime("%H:%M"), "timezone": "UTC"},
        )
        assert r.status_code == 200, r.text
        assert ts(r.json()["next_runs"][0]) == target
    return SimpleNamespace(script=script, target=target, saved_at=saved_at)


def test_a_saved_schedule_reaches_prefects_scheduler_within_seconds(soon, prefect) -> None:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    dep = deployment_id(prefect, soon.script)
    at = FlowRunFilterExpectedStartTime(after_=soon.target, before_=soon.target)

    def created():
        return prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(expected_start_time=at),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep])),
        )

    runs = poll(created, timeout=20, every=0.25)
    took = time.monotonic() - soon.saved_at
    print(f"\nPUT schedule -> flow run created by Prefect's scheduler: {took:.1f} s")
    assert len(runs) == 1
    assert runs[0].auto_scheduled and runs[0].state.is_scheduled()
    assert took <= 15  # the recent-deployments loop (5 s), not the 60 s main loop


# --- policies on emulated scheduled runs ----------------------------------------------------


def test_it_retries_a_failed_scheduled_run_once_after_the_delay(alice, prefect) -> None:
    script = upload(alice, FAILS)
    set_policy(alice, script, retries=1, retry_delay_seconds=2, disable_after_failures=0)
    flow_run = emulate_scheduled(prefect, script)

    first = wait_run(alice, str(flow_run.id), timeout=30)
    assert (first["status"], first["trigger"]) == ("failed", "scheduled")
    retry = poll(lambda: runs_of(alice, script, trigger="retry"), timeout=15)
    assert len(retry) == 1
    retry = wait_run(alice, retry[0]["id"], timeout=30)
    assert (retry["status"], retry["trigger"], retry["exit_code"]) == ("failed", "retry", 3)

    delay = (ts(retry["scheduled_at"]) - ts(first["ended_at"])).total_seconds()
    started = (ts(retry["started_at"]) - ts(first["ended_at"])).total_seconds()
    print(f"\nretry due {delay:.2f} s after the failure, started {started:.2f} s after it")
    # The retry is due 2 s after the script exited, which is between the run's start and
    # its end as Prefect records it (the final state lands later on a loaded server).
    assert ts(retry["scheduled_at"]) >= ts(first["started_at"]) + timedelta(seconds=2)
    assert delay <= 3.0
    assert started <= 8.0
    # ... and it does not start before it is due (the runner may fetch it early).
    assert ts(retry["started_at"]) >= ts(retry["scheduled_at"]) - timedelta(seconds=1)
    # The retry failed too, and retries=1: no second retry, not even one due later
    # (GET /runs shows only runs that are due, so ask Prefect for every run of the script).
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    every = prefect.read_flow_runs(
        deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id(prefect, script)])
        )
    )
    tag = f"script-{script['id']}"
    assert sorted(sorted(r.tags) for r in every) == sorted(
        [
            sorted(["auto-scheduled", "python", "scriptflow", tag]),
            sorted(["retry", "retry-1", "python", "scriptflow", tag]),
        ]
    )


def stack_url(client) -> str:
    return str(client.base_url).rstrip("/").removesuffix("/api/v1")


def dashboard_flags(url: str, user: str) -> str:
    """The text of the dashboard's "switched off" section, as `user` sees it."""
    import re

    import httpx

    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as web:
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text)[1]
        page = web.post(
            "/login",
            data={
                "username": user,
                "password": f"{user}-pass-123",
                "csrf_token": token,
                "next": "/",
            },
        ).text
    start = page.find('id="off-h"')
    return page[start : page.find("</section>", start)] if start >= 0 else ""


def test_it_switches_the_schedule_off_after_three_failed_scheduled_runs_in_a_row(
    alice, prefect
) -> None:
    script = upload(alice, FAILS)
    schedule = {"frequency": "daily", "time": far_away_time(), "timezone": "UTC"}
    assert alice.put(f"/scripts/{script['id']}/schedule", json=schedule).status_code == 200
    set_policy(alice, script, retries=0, disable_after_failures=3)
    dep = deployment_id(prefect, script)
    assert [s.active for s in prefect.read_deployment_schedules(dep)] == [True]

    for n in (1, 2, 3):
        run = wait_run(alice, str(emulate_scheduled(prefect, script).id), timeout=30)
        assert run["status"] == "failed"
        active = [s.active for s in prefect.read_deployment_schedules(dep)]
        assert active == ([True] if n < 3 else [False]), f"after failure {n}: {active}"

    assert schedule_states(alice)[script["id"]] == "disabled"
    # Other edits keep it off: only saving the schedule switches it back on.
    assert (
        alice.patch(f"/scripts/{script['id']}", json={"description": "edited"}).status_code == 200
    )
    assert [s.active for s in prefect.read_deployment_schedules(dep)] == [False]
    # The dashboard flags it until someone switches it back on or acknowledges it.
    assert script["name"] in dashboard_flags(stack_url(alice), "alice")
    # Saving the schedule again is the acknowledgement that switches it back on.
    assert alice.put(f"/scripts/{script['id']}/schedule", json=schedule).status_code == 200
    assert [s.active for s in prefect.read_deployment_schedules(dep)] == [True]
    assert schedule_states(alice)[script["id"]] == "active"


def test_a_scheduled_run_is_skipped_while_the_previous_one_still_runs(alice, prefect) -> None:
    script = upload(alice, LONG)
    set_policy(alice, script, retries=0, overlap="skip")
    first = emulate_scheduled(prefect, script)
    wait_run(alice, str(first.id), timeout=30, until=("running",))

    second = wait_run(alice, str(emulate_scheduled(prefect, script).id), timeout=30)
    assert second["status"] == "cancelled"
    assert "skipped" in second["message"] and "still running" in second["message"]
    assert wait_run(alice, str(first.id), timeout=30)["status"] == "succeeded"


def test_with_overlap_queue_the_next_run_waits_for_the_previous_one(alice, prefect) -> None:
    script = upload(alice, LONG)
    set_policy(alice, script, retries=0, overlap="queue")
    first = emulate_scheduled(prefect, script)
    wait_run(alice, str(first.id), timeout=30, until=("running",))
    second = emulate_scheduled(prefect, script)

    a = wait_run(alice, str(first.id), timeout=30)
    b = wait_run(alice, str(second.id), timeout=30)
    assert (a["status"], b["status"]) == ("succeeded", "succeeded")
    waited = first_line_time(alice, b["id"]) - ts(a["ended_at"]).timestamp()
    print(f"\nqueued run started its script {waited:.2f} s after the previous run ended")
    assert 0 <= waited <= 5


def test_queued_runs_run_one_after_the_other_and_never_wait_for_each_other(alice, prefect) -> None:
    # The third run waits for the first two; the second must wait only for the first (it
    # started before the third), not for the third as well: that would wait for ever.
    script = upload(alice, LONG)
    set_policy(alice, script, retries=0, overlap="queue")
    runs = []
    for _ in range(3):
        runs.append(emulate_scheduled(prefect, script))
        wait_run(alice, str(runs[-1].id), timeout=30, until=("running",))
    done = [wait_run(alice, str(r.id), timeout=40) for r in runs]
    assert [r["status"] for r in done] == ["succeeded"] * 3
    windows = [(first_line_time(alice, r["id"]), ts(r["ended_at"]).timestamp()) for r in done]
    for before, after in zip(windows, windows[1:], strict=False):
        assert after[0] >= before[1] - 0.5, windows


def test_a_late_run_whose_newer_time_already_ran_is_skipped_as_missed(alice, prefect) -> None:
    # The runs of a catch-up are not always picked up in one poll: the newest may be over
    # before an older one starts. The older one is still covered by it.
    script = upload(alice, PRINTS_TIME)
    set_policy(alice, script, retries=0, missed="once")
    now = datetime.now(UTC)
    newest = emulate_scheduled(prefect, script, at=now - timedelta(minutes=3))
    assert wait_run(alice, str(newest.id), timeout=30)["status"] == "succeeded"
    older = emulate_scheduled(prefect, script, at=now - timedelta(minutes=5))
    run = wait_run(alice, str(older.id), timeout=30)
    assert run["status"] == "cancelled" and "missed" in run["message"].lower(), run


@pytest.fixture
def probe_deployment(prefect):
    """A deployment of `run_script` in no work pool: its runs stay in the states set here
    (no runner picks them up), so `before_start` can be asked about exact situations."""
    flow_id = prefect.create_flow_from_name("run_script")
    dep = prefect.create_deployment(flow_id=flow_id, name=f"policy-probe-{time.time_ns()}")
    yield dep
    prefect.delete_deployment(dep)


def _running_since(prefect, dep, due: datetime):
    from prefect.states import Running, Scheduled

    run = prefect.create_flow_run_from_deployment(
        dep, tags=["auto-scheduled"], state=Scheduled(scheduled_time=due)
    )
    prefect.set_flow_run_state(run.id, Running(), force=True)
    return prefect.read_flow_run(run.id)


def test_the_runs_of_a_catch_up_do_not_count_as_overlapping(prefect, probe_deployment) -> None:
    # After a downtime the late runs start together, and each is Running while it decides:
    # the newest must not be skipped as overlapping the older ones that give way to it.
    from scriptflow_prefect.runs.policies import RunPolicy, before_start

    now = datetime.now(UTC)
    older = [_running_since(prefect, probe_deployment, now - timedelta(minutes=m)) for m in (5, 4)]
    newest = _running_since(prefect, probe_deployment, now - timedelta(minutes=3))

    def decide(run, rules):
        # In a thread: a wrong "queue" decision waits for ever instead of answering.
        answer: list = []
        worker = threading.Thread(
            target=lambda: answer.append(before_start(prefect, run, rules)), daemon=True
        )
        worker.start()
        worker.join(10)
        assert answer, f"before_start was still waiting after 10 s ({rules.overlap})"
        return answer[0]

    for rules in (RunPolicy(overlap="skip"), RunPolicy(overlap="queue")):
        assert decide(newest, rules).run
        for run in older:
            decision = decide(run, rules)
            assert not decision.run and "missed" in decision.message.text.lower()


# --- the real schedule's run (its minute has come round meanwhile) --------------------------


def test_a_scheduled_run_starts_on_time_and_succeeds(soon, alice) -> None:
    wait_for = (soon.target - datetime.now(UTC)).total_seconds() + 30

    def run():
        runs = runs_of(alice, soon.script, trigger="scheduled")
        return runs and runs[0]["started_at"] and runs[0]

    run = poll(run, timeout=max(wait_for, 5), every=0.5)
    run = wait_run(alice, run["id"], timeout=30)
    assert run["status"] == "succeeded", run
    assert ts(run["scheduled_at"]) == soon.target
    late = (ts(run["started_at"]) - soon.target).total_seconds()
    script_late = first_line_time(alice, run["id"]) - soon.target.timestamp()
    print(
        f"\nscheduled run: started {late:+.2f} s after its time, "
        f"script's first line {script_late:+.2f} s"
    )
    assert -1.0 <= late <= 10.0


# --- missed times: a dedicated stack that is down when its runs are due ----------------------


def _prefects_server_alone(home) -> tuple[subprocess.Popen, dict[str, str]]:
    """`scriptflow server` in `home`: Prefect's server (API, scheduler) as its own process, as
    in a scale-out install; returns it and the exports of `scriptflow prefect-env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))}
    env.update({"SCRIPTFLOW_HOME": str(home), "SCRIPTFLOW_PREFECT_PORT": str(free_port())})
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", "server"],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    # `prefect-env` exits 0 once the home has the server's auth string and the server answers.
    deadline = time.monotonic() + 120
    while True:
        cli = subprocess.run(
            [sys.executable, "-m", "scriptflow_prefect.commands.cli", "prefect-env"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if cli.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc)
            raise AssertionError("scriptflow server did not start:\n" + log.read_text())
        time.sleep(0.3)
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in cli.stdout.splitlines()
        if line.startswith("export ")
    )
    return proc, exports


def _stop_group(proc: subprocess.Popen) -> None:
    # Ctrl-C, as a person stops it: `scriptflow server` stops Prefect's server on SIGINT.
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def after_downtime(tmp_path_factory):
    """Two scripts (missed "once" and "skip") on a stack of their own whose Prefect server
    runs apart from ScriptFlow (`scriptflow server`, then `scriptflow up` pointed at it with
    SCRIPTFLOW_PREFECT_API_URL, as in a scale-out install). The downtime is then real for
    ScriptFlow: its runner and web are stopped while Prefect keeps the scheduled runs. Three
    runs of each script, due 5, 4 and 3 minutes ago, are put in Prefect meanwhile, the way its
    scheduler makes them (waiting for real daily times would take days); then ScriptFlow
    starts again and its runner finds them late."""
    home = tmp_path_factory.mktemp("missed-home")
    server, exports = _prefects_server_alone(home)
    try:
        outside = {
            "SCRIPTFLOW_PREFECT_API_URL": exports["PREFECT_API_URL"],
            "SCRIPTFLOW_PREFECT_AUTH_STRING": exports["PREFECT_API_AUTH_STRING"],
        }
        stack = start_stack(home, outside)
        scripts = {}
        try:
            token = stack.cli("token", "create", "admin").stdout.strip()
            with httpx.Client(
                base_url=stack.url + "/api/v1",
                timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            ) as admin:
                for missed in ("once", "skip"):
                    script = upload(admin, PRINTS_TIME)
                    r = admin.put(
                        f"/scripts/{script['id']}/schedule",
                        json={"frequency": "daily", "time": far_away_time(), "timezone": "UTC"},
                    )
                    assert r.status_code == 200, r.text
                    set_policy(admin, script, retries=0, missed=missed)
                    scripts[missed] = script
        finally:
            stop_stack(stack)

        now = datetime.now(UTC)
        with prefect_client(stack) as prefect:
            for script in scripts.values():
                for minutes in (5, 4, 3):
                    emulate_scheduled(prefect, script, at=now - timedelta(minutes=minutes))

        stack = start_stack(home, outside)
        stack.tokens["admin"] = token
        try:
            with stack.client("admin") as admin:
                yield SimpleNamespace(admin=admin, scripts=scripts, due=now)
        finally:
            stop_stack(stack)
    finally:
        _stop_group(server)


def _three_final_runs(admin: httpx.Client, script: dict) -> list[dict]:
    final = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}

    def done():
        runs = runs_of(admin, script)
        return len(runs) == 3 and all(r["status"] in final for r in runs) and runs

    return poll(done, timeout=60, every=0.5)


def test_after_downtime_only_the_newest_missed_run_runs(after_downtime) -> None:
    runs = _three_final_runs(after_downtime.admin, after_downtime.scripts["once"])
    newest, *older = sorted(runs, key=lambda r: r["scheduled_at"], reverse=True)
    assert newest["status"] == "succeeded", newest
    assert ts(newest["scheduled_at"]) == after_downtime.due - timedelta(minutes=3)
    for run in older:
        assert run["status"] == "cancelled", run
        assert "missed" in run["message"].lower(), run


def test_with_missed_skip_no_missed_run_runs(after_downtime) -> None:
    runs = _three_final_runs(after_downtime.admin, after_downtime.scripts["skip"])
    for run in runs:
        assert run["status"] == "cancelled", run
        assert "missed" in run["message"].lower(), run
        assert run["exit_code"] is None
