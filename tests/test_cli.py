"""API.md "Starting it": the `scriptflow` command. Users and tokens against the session's
stack; start, stop (SIGTERM) and restart of a stack of its own in a fresh SCRIPTFLOW_HOME."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import free_port, start_stack, stop_stack, unique, upload, wait_run

from scriptflow_prefect.commands.stack import runner_name

SCRIPTFLOW = [sys.executable, "-m", "scriptflow_prefect.commands.cli"]


def token_for(stack, username: str, password: str) -> httpx.Response:
    return httpx.post(
        stack.url + "/api/v1/auth/token",
        json={"username": username, "password": password},
        timeout=30,
    )


def add_user(stack, name: str, password: str, *args: str) -> subprocess.CompletedProcess:
    return stack.cli("user", "add", name, *args, "--password-stdin", input=password + "\n")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))}
    return {**env, **extra}


def is_gone(pid: int) -> bool:
    # PID 1 of this machine may not reap orphans: a killed process can linger as a zombie.
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return not psutil.pid_exists(pid)


def wait_for_line(log: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while text not in (out := log.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in {log}:\n{out}")
        time.sleep(0.2)
    return out


# -- the in-process runner's name --------------------------------------------------------------


@pytest.mark.parametrize("node", ["DESKTOP-7Q2LK9", "build-01.example.org"])  # Windows, Linux
def test_it_names_the_runner_from_scriptflow_worker_name_on_every_os(node):
    assert runner_name("runner-east", node) == "runner-east"
    assert runner_name(None, node) == f"scriptflow-{node}"
    assert runner_name("", node) == f"scriptflow-{node}"


def test_it_names_the_runner_scriptflow_when_the_host_name_is_unknown():
    assert runner_name(None, "") == "scriptflow"


# -- users and tokens -----------------------------------------------------------------------
def test_it_adds_a_user_who_can_then_get_an_api_token(stack):
    name = unique("erin")
    r = add_user(stack, name, "erin-pass-123")
    assert r.returncode == 0, r.stderr
    assert name in r.stdout
    r = token_for(stack, name, "erin-pass-123")
    assert r.status_code == 200, r.text
    me = httpx.get(
        stack.url + "/api/v1/scripts",
        timeout=30,
        headers={"Authorization": f"Bearer {r.json()['token']}"},
    )
    assert me.status_code == 200 and me.json()["total"] == 0


def test_it_adds_an_admin_who_sees_everyones_scripts(stack, alice):
    name = unique("root")
    assert add_user(stack, name, "root-pass-123", "--admin").returncode == 0
    mine = upload(alice, "print(1)\n")
    token = token_for(stack, name, "root-pass-123").json()["token"]
    r = httpx.get(
        f"{stack.url}/api/v1/scripts/{mine['id']}",
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200


def test_it_refuses_a_duplicate_user_with_a_clear_message(stack):
    name = unique("frank")
    assert add_user(stack, name, "frank-pass-123").returncode == 0
    r = add_user(stack, name.upper(), "other-pass-123")
    assert r.returncode != 0
    assert "already" in r.stderr and name.upper() in r.stderr
    assert "Traceback" not in r.stderr
    # The first password still works: nothing was overwritten.
    assert token_for(stack, name, "frank-pass-123").status_code == 200


def test_it_refuses_a_short_password(stack):
    name = unique("gina")
    r = add_user(stack, name, "short")
    assert r.returncode != 0
    assert "at least 8" in r.stderr
    assert "Traceback" not in r.stderr
    assert token_for(stack, name, "short").status_code == 401


def test_it_refuses_a_user_name_with_spaces(stack):
    r = add_user(stack, "two words", "long-enough-1")
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.strip()


def test_it_changes_a_password(stack):
    name = unique("hank")
    assert add_user(stack, name, "hank-pass-old").returncode == 0
    r = stack.cli("user", "passwd", name, "--password-stdin", input="hank-pass-new\n")
    assert r.returncode == 0, r.stderr
    assert token_for(stack, name, "hank-pass-new").status_code == 200
    assert token_for(stack, name, "hank-pass-old").status_code == 401


def test_it_refuses_passwd_for_an_unknown_user_or_a_short_password(stack):
    r = stack.cli("user", "passwd", unique("nobody"), "--password-stdin", input="long-enough-1\n")
    assert r.returncode != 0 and "no user" in r.stderr
    r = stack.cli("user", "passwd", "alice", "--password-stdin", input="short\n")
    assert r.returncode != 0 and "at least 8" in r.stderr
    assert token_for(stack, "alice", "alice-pass-123").status_code == 200


def test_it_creates_a_token_that_works(stack):
    r = stack.cli("token", "create", "bob")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token and "\n" not in token and " " not in token
    me = httpx.get(
        stack.url + "/api/v1/scripts", timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200
    r = stack.cli("token", "create", unique("nobody"))
    assert r.returncode != 0 and "no user" in r.stderr


# -- Prefect for power users ----------------------------------------------------------------
def test_it_prints_the_prefect_environment_as_two_exports(stack):
    r = stack.cli("prefect-env")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0].startswith("export PREFECT_API_URL=")
    assert lines[1].startswith("export PREFECT_API_AUTH_STRING=")
    url = shlex.split(lines[0].removeprefix("export "))[0].split("=", 1)[1]
    assert url == stack.prefect_url + "/api"


def test_it_points_the_prefect_cli_at_scriptflows_server(stack, alice, tmp_path):
    script = upload(alice, "print(1)\n", name=unique("pe"))
    shell = (
        f'eval "$({shlex.join(SCRIPTFLOW)} prefect-env)" && '
        f"{shlex.quote(sys.executable)} -m prefect deployment ls"
    )
    # Only what `prefect-env` prints: the session's PREFECT_* and SCRIPTFLOW_* are gone,
    # except SCRIPTFLOW_HOME and port, which tell `prefect-env` which ScriptFlow to print.
    env = clean_env(
        SCRIPTFLOW_HOME=stack.env["SCRIPTFLOW_HOME"],
        SCRIPTFLOW_PREFECT_PORT=stack.env["SCRIPTFLOW_PREFECT_PORT"],
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        COLUMNS="300",
    )
    r = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert script["name"] in r.stdout


def prefect_env(**env: str) -> subprocess.CompletedProcess:
    """`scriptflow prefect-env` with only these settings (no stack of the session's)."""
    return subprocess.run(
        [*SCRIPTFLOW, "prefect-env"],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_prefect_env_refuses_to_invent_a_home(tmp_path):
    home = tmp_path / "nowhere"
    r = prefect_env(SCRIPTFLOW_HOME=str(home))
    assert r.returncode != 0 and r.stdout == ""
    assert f"SCRIPTFLOW_HOME={home}" in r.stderr
    assert not home.exists()  # nothing created, no auth string that matches no server


def test_prefect_env_refuses_a_home_no_stack_has_run_with(tmp_path):
    home = tmp_path / "empty"
    home.mkdir()
    r = prefect_env(SCRIPTFLOW_HOME=str(home))
    assert r.returncode != 0 and r.stdout == ""
    assert "auth_string is missing" in r.stderr
    assert list(home.iterdir()) == []


def test_prefect_env_says_when_the_stack_is_not_running(tmp_path):
    home = tmp_path / "stopped"
    (home / "prefect").mkdir(parents=True)
    (home / "prefect" / "auth_string").write_text("scriptflow:kept")
    port = free_port()
    r = prefect_env(SCRIPTFLOW_HOME=str(home), SCRIPTFLOW_PREFECT_PORT=str(port))
    # The exports stand (eval still points the CLI there), but the exit code says no server.
    assert r.returncode == 3
    assert "export PREFECT_API_AUTH_STRING=scriptflow:kept" in r.stdout
    assert f"no Prefect server answers at http://127.0.0.1:{port}/api" in r.stderr


def test_prefect_env_needs_no_home_when_the_auth_string_is_given(tmp_path):
    home = tmp_path / "unused"
    port = free_port()
    r = prefect_env(
        SCRIPTFLOW_HOME=str(home),
        SCRIPTFLOW_PREFECT_PORT=str(port),
        SCRIPTFLOW_PREFECT_AUTH_STRING="scriptflow:given",
    )
    assert "export PREFECT_API_AUTH_STRING=scriptflow:given" in r.stdout
    assert r.returncode == 3 and "no Prefect server answers" in r.stderr  # none runs here
    assert not home.exists()


# -- settings and the home lock -------------------------------------------------------------
@pytest.mark.parametrize("command", [["prefect-env"], ["up"], ["user", "add", "x"]])
def test_it_refuses_a_bad_setting_and_names_it(tmp_path, command):
    env = clean_env(SCRIPTFLOW_HOME=str(tmp_path / "home"), SCRIPTFLOW_PORT="abc")
    began = time.monotonic()
    r = subprocess.run(
        [*SCRIPTFLOW, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    assert "SCRIPTFLOW_PORT" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - began < 30


def test_it_refuses_a_second_up_on_the_same_home(stack):
    began = time.monotonic()
    r = subprocess.run(
        [*SCRIPTFLOW, "up"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    assert "already running" in r.stderr
    assert time.monotonic() - began < 20
    assert stack.proc.poll() is None
    assert httpx.get(stack.url + "/health", timeout=30).status_code == 200


# -- a stack of its own: first start, SIGTERM, restart --------------------------------------
GRANDCHILD = """\
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c",
                  "import os, time; print('grandchild', os.getpid(), flush=True); time.sleep(600)"])
time.sleep(600)
"""


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    """Start without SCRIPTFLOW_ADMIN_PASSWORD, add a user and a script, stop with SIGTERM
    while a script runs, start again on the same home. What was seen, for the tests."""
    home = tmp_path_factory.mktemp("own-home")
    unset = {"SCRIPTFLOW_ADMIN_PASSWORD": None}
    seen: dict = {}
    first = start_stack(home, unset)
    try:
        seen["first_log"] = wait_for_line(first.log, "Press Ctrl-C")
        passwords = re.findall(r"First user: admin, password (\S+)", seen["first_log"])
        seen["passwords"] = passwords
        assert len(passwords) == 1, seen["first_log"]
        login = token_for(first, "admin", passwords[0])
        seen["first_login"] = login.status_code
        first.tokens["admin"] = login.json()["token"]
        assert add_user(first, "dora", "dora-pass-123").returncode == 0
        with first.client("admin") as admin:
            seen["script"] = upload(admin, "print('still here')\n", name="kept-script")
            running = upload(admin, GRANDCHILD, name="running-at-stop")
            run_id = admin.post(f"/scripts/{running['id']}/runs").json()["id"]
            deadline = time.monotonic() + 60
            while not any(
                ln["text"].startswith("grandchild ")
                for ln in admin.get(f"/runs/{run_id}/output").json()["lines"]
            ):
                assert time.monotonic() < deadline, "the script never started its grandchild"
                time.sleep(0.2)
        seen["interrupted_run"] = run_id
        main = psutil.Process(first.proc.pid)
        started = [main, *main.children(recursive=True)]
        seen["started"] = [(p.pid, " ".join(p.cmdline())[:120]) for p in started]
        began = time.monotonic()
        first.proc.terminate()
        deadline = began + 15
        while time.monotonic() < deadline and not all(is_gone(p.pid) for p in started):
            time.sleep(0.2)
        seen["stop_seconds"] = time.monotonic() - began
        seen["left_over"] = [
            (p.pid, c)
            for (p, c) in zip(started, seen["started"], strict=True)
            if not is_gone(p.pid)
        ]
        # A process whose last threads are still exiting already shows as a zombie, before
        # it can be reaped: wait for its exit status rather than poll once.
        try:
            seen["exit_code"] = first.proc.wait(10)
        except subprocess.TimeoutExpired:
            seen["exit_code"] = None
        seen["first_log"] = first.log.read_text(errors="replace")
    finally:
        if first.proc.poll() is None:
            stop_stack(first)
    second = start_stack(home, unset)
    try:
        seen["second_log"] = wait_for_line(second.log, "Press Ctrl-C")
        seen["home"] = home
        yield seen, second
    finally:
        stop_stack(second)


def test_it_prints_a_generated_admin_password_once_on_first_start(lifecycle):
    seen, _second = lifecycle
    password = seen["passwords"][0]
    assert len(password) >= 12
    assert seen["first_log"].count(password) == 1
    assert seen["first_login"] == 200
    for log in (seen["home"] / "logs").glob("*"):
        assert password not in log.read_text(errors="replace"), log


def test_it_stops_every_process_it_started_on_sigterm(lifecycle):
    seen, _second = lifecycle
    assert len(seen["started"]) >= 4  # itself, Prefect's server, the script, its grandchild
    assert seen["left_over"] == [], seen["left_over"]
    assert seen["stop_seconds"] < 15
    assert seen["exit_code"] == 0, seen["first_log"]


def test_it_keeps_users_and_scripts_across_a_restart(lifecycle):
    seen, second = lifecycle
    assert "First user" not in seen["second_log"]
    assert "password" not in seen["second_log"].lower()
    assert token_for(second, "dora", "dora-pass-123").status_code == 200
    login = token_for(second, "admin", seen["passwords"][0])
    assert login.status_code == 200
    second.tokens["admin"] = login.json()["token"]
    with second.client("admin") as admin:
        script = admin.get(f"/scripts/{seen['script']['id']}").json()
        assert script["name"] == "kept-script"
        assert admin.get(f"/scripts/{script['id']}/content").content == b"print('still here')\n"
        run = wait_run(admin, admin.post(f"/scripts/{script['id']}/runs").json()["id"])
        assert run["status"] == "succeeded"
        assert [ln["text"] for ln in admin.get(f"/runs/{run['id']}/output").json()["lines"]] == [
            "still here"
        ]
        # The run stopped by the shutdown did not stay "running".
        interrupted = admin.get(f"/runs/{seen['interrupted_run']}").json()
        assert interrupted["status"] in ("cancelled", "crashed", "failed"), interrupted


def test_it_stops_on_sigint_like_ctrl_c(lifecycle):
    """Ctrl-C in a terminal: the same clean stop as SIGTERM (checked last: it ends the stack)."""
    _seen, second = lifecycle
    main = psutil.Process(second.proc.pid)
    started = [main, *main.children(recursive=True)]
    second.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(is_gone(p.pid) for p in started):
        time.sleep(0.2)
    assert [p.pid for p in started if not is_gone(p.pid)] == []
    assert second.proc.wait(5) == 0
