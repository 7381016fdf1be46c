"""`scriptflow up` (and `server`, `worker`, `web`) stopped at any moment of start-up, killed
outright, or started over a Prefect server an earlier crash left behind (issue 13, part 2).

Real `scriptflow up` subprocesses on free ports with homes of their own, signals sent by the
test; what is left afterwards is read with psutil."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_port, port_free, stack_env, start_stack, stop_stack, wait_until

SERVER_CHILD = "scriptflow_prefect.commands.prefect_child"
START_DEADLINE = 240  # a loaded machine: Prefect's server alone can take a minute to answer


def launch(home: Path, env: dict[str, str], command: str = "up") -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", command],
        env=env,
        stdout=open(home / f"{command}.stdout", "wb"),  # noqa: SIM115 (the child holds it)
        stderr=open(home / f"{command}.stderr", "wb"),  # noqa: SIM115
        stdin=subprocess.DEVNULL,
    )


def said(home: Path, command: str = "up") -> tuple[str, str]:
    return (
        (home / f"{command}.stdout").read_text(errors="replace"),
        (home / f"{command}.stderr").read_text(errors="replace"),
    )


def home_processes(home: Path) -> list[psutil.Process]:
    """Live processes (not this test) with the home in their command line or environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            if (
                any(str(home) in arg for arg in proc.cmdline())
                or env.get("SCRIPTFLOW_HOME") == str(home)
                or env.get("PREFECT_HOME", "").startswith(str(home))
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def answers(port: int) -> bool:
    """Anything HTTP on the port (Prefect answers 401 without the home's auth string)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def server_child(proc: subprocess.Popen) -> psutil.Process | None:
    try:
        children = psutil.Process(proc.pid).children()
    except psutil.Error:
        return None
    return next((c for c in children if SERVER_CHILD in " ".join(c.cmdline())), None)


def catches_sigterm(pid: int) -> bool:
    """Linux: the process has a handler for SIGTERM (SigCgt, a bit per signal)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def gone(proc: psutil.Process) -> bool:
    """Ended (a zombie waiting for its reaper has ended too)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_stopped_cleanly(proc: subprocess.Popen, home: Path, prefect_port: int, what: str):
    rc = proc.wait(120)
    out, err = said(home)
    assert rc == 0, f"{what}: exit code {rc}\n{out}\n{err}"
    assert "Traceback" not in err, f"{what}:\n{err}"
    assert out.count("Stopping ScriptFlow") == 1, f"{what}:\n{out}"
    # Everything was stopped and waited for before `up` exited: nothing to wait for here.
    assert home_processes(home) == [], what
    assert port_free(prefect_port), what


def test_it_stops_cleanly_at_any_moment_of_start_up(tmp_path):
    home = tmp_path / "home"
    env = stack_env(home)
    prefect_port = int(env["SCRIPTFLOW_PREFECT_PORT"])

    # 1. Half a second in: still importing. Not before the handler exists: until then the
    # interpreter itself is starting (no Python code ran yet; on a loaded machine that alone
    # can take longer), and SIGTERM ends it with nothing started.
    proc = launch(home, env)
    try:
        proc.wait(0.5)
    except subprocess.TimeoutExpired:
        pass
    wait_until(lambda: catches_sigterm(proc.pid), what="the stop handler installed")
    proc.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(proc, home, prefect_port, "SIGTERM at 0.5 s")

    # 2. While waiting for Prefect's server to answer.
    proc = launch(home, env)
    wait_until(lambda: server_child(proc), timeout=START_DEADLINE, what="Prefect's server started")
    assert not answers(prefect_port)
    proc.send_signal(signal.SIGINT)
    assert_stopped_cleanly(proc, home, prefect_port, "SIGINT while Prefect starts")

    # 3. Prefect answers, ScriptFlow is not ready yet (migrations, Prefect objects, runner);
    # the start itself shows the stop above left nothing in the way. Twice Ctrl-C: the second
    # one, while stopping, must not break the stop either.
    for signals in ([signal.SIGTERM], [signal.SIGINT, signal.SIGINT]):
        proc = launch(home, env)
        wait_until(
            lambda p=proc: answers(prefect_port) or p.poll() is not None,
            timeout=START_DEADLINE,
            what="Prefect answering",
        )
        for sig in signals:
            proc.send_signal(sig)
        assert_stopped_cleanly(proc, home, prefect_port, f"{signals} after Prefect answered")

    # 4. The next start on the same home and ports comes up, and stops cleanly once ready.
    stack = start_stack(home, env)
    try:
        stack.proc.send_signal(signal.SIGTERM)
        rc = stack.proc.wait(120)
    finally:
        stop_stack(stack)
    log = stack.log.read_text()
    assert rc == 0 and "Traceback" not in log, log
    assert home_processes(home) == []
    assert port_free(prefect_port)


def test_a_killed_up_never_leaves_prefects_server_behind(tmp_path):
    home = tmp_path / "home"
    env = stack_env(home)
    prefect_port = int(env["SCRIPTFLOW_PREFECT_PORT"])

    # During start-up: Prefect's server started, not answering yet.
    proc = launch(home, env)
    child = wait_until(lambda: server_child(proc), timeout=START_DEADLINE, what="server started")
    proc.kill()
    proc.wait()
    wait_until(lambda: gone(child), timeout=60, what="the server stopping")
    wait_until(lambda: port_free(prefect_port), timeout=30, what="the port freed")

    # Once ready. First a `scriptflow worker` of its own, serving this stack, is stopped
    # with Ctrl-C while it polls.
    stack = start_stack(home, env)
    try:
        worker_home = tmp_path / "worker-home"
        auth = (home / "prefect" / "auth_string").read_text().strip()
        worker_env = stack_env(
            worker_home,
            {
                "SCRIPTFLOW_PREFECT_API_URL": stack.prefect_url + "/api",
                "SCRIPTFLOW_PREFECT_AUTH_STRING": auth,
            },
        )
        worker = launch(worker_home, worker_env, "worker")
        wait_until(
            lambda: "started" in said(worker_home, "worker")[0] or worker.poll() is not None,
            timeout=START_DEADLINE,
            what="the worker polling",
        )
        worker.send_signal(signal.SIGINT)
        assert worker.wait(60) == 0, said(worker_home, "worker")
        out, err = said(worker_home, "worker")
        assert "Traceback" not in err and "Stopping ScriptFlow" in out, out + err

        child = server_child(stack.proc)
        assert child is not None
        stack.proc.kill()
        stack.proc.wait()
        wait_until(lambda: gone(child), timeout=60, what="the server stopping")
        wait_until(lambda: port_free(prefect_port), timeout=30, what="the port freed")
    finally:
        stop_stack(stack)


def _untied_server(home: Path, env: dict[str, str]) -> subprocess.Popen:
    """Prefect's server for this home started as `up` starts it, but tied to nothing: what an
    earlier crash the lifeline could not answer (the OOM killer, an older version) leaves."""
    code = textwrap.dedent(
        """
        import os, subprocess, sys
        from scriptflow_prefect.commands.prefect_server import _server_command
        from scriptflow_prefect.platform.prefect_env import server_env
        from scriptflow_prefect.platform.settings import load_settings
        settings = load_settings()
        os.execve(sys.executable, _server_command(settings), {**os.environ, **server_env(settings)})
        """
    )
    (home / "logs").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=open(home / "logs" / "untied.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _record(home: Path, env: dict[str, str], pid: int) -> None:
    """Record `pid` as this home's server the way `up` does, from a process that then ends
    (the crashed owner)."""
    code = (
        "from scriptflow_prefect.commands.leftover import record_server;"
        "from scriptflow_prefect.platform.settings import load_settings;"
        f"record_server(load_settings(), {pid})"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_a_leftover_server_of_this_home_is_replaced_and_a_foreign_one_refused(tmp_path):
    home = tmp_path / "home"
    env = stack_env(home)
    prefect_port = int(env["SCRIPTFLOW_PREFECT_PORT"])
    leftover = _untied_server(home, env)
    try:
        wait_until(
            lambda: answers(prefect_port) or leftover.poll() is not None,
            timeout=START_DEADLINE,
            what="the untied server answering",
        )
        assert leftover.poll() is None, (home / "logs" / "untied.log").read_text()

        # No record: somebody else's server; refused, and left alone.
        refused = launch(home, env)
        assert refused.wait(120) == 1
        assert "already answers as a Prefect API" in said(home)[1]
        assert leftover.poll() is None

        # A record, but of another home (a copied home folder): still not ours.
        _record(home, env, leftover.pid)
        record_path = home / "prefect-server.json"
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "home": str(tmp_path / "elsewhere")}))
        refused = launch(home, env)
        assert refused.wait(120) == 1
        assert "already answers as a Prefect API" in said(home)[1]
        assert leftover.poll() is None

        # Recorded by this home's crashed `up`: stopped and replaced.
        record_path.write_text(json.dumps(record))
        stack = start_stack(home, env)
        try:
            assert leftover.wait(30) is not None
            assert f"Stopped a Prefect server (pid {leftover.pid})" in stack.log.read_text()
            assert json.loads(record_path.read_text())["pid"] != leftover.pid
        finally:
            stop_stack(stack)
        assert stack.proc.returncode == 0
        assert not record_path.exists()  # a clean stop forgets its server
    finally:
        if leftover.poll() is None:
            os.killpg(leftover.pid, signal.SIGKILL)
            leftover.wait()


@pytest.mark.stack  # starts Prefect's server
def test_scriptflow_server_stops_cleanly_and_dies_with_its_command(tmp_path):
    home = tmp_path / "home"
    env = stack_env(home)
    prefect_port = int(env["SCRIPTFLOW_PREFECT_PORT"])

    proc = launch(home, env, "server")
    child = wait_until(lambda: server_child(proc), timeout=START_DEADLINE, what="server started")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    out, err = said(home, "server")
    assert "Traceback" not in err and "Stopping ScriptFlow" in out, out + err
    assert gone(child)

    proc = launch(home, env, "server")
    child = wait_until(lambda: server_child(proc), timeout=START_DEADLINE, what="server started")
    proc.kill()
    proc.wait()
    wait_until(lambda: gone(child), timeout=60, what="the server stopping")
    wait_until(lambda: port_free(prefect_port), timeout=30, what="the port freed")
    assert home_processes(home) == []


@pytest.mark.parametrize(("command", "sig"), [("worker", signal.SIGINT), ("web", signal.SIGTERM)])
def test_worker_and_web_stop_cleanly_while_waiting_for_prefect(tmp_path, command, sig):
    home = tmp_path / "home"
    # A Prefect API nobody answers: the command waits for it (up to a minute).
    env = stack_env(home, {"SCRIPTFLOW_PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    proc = launch(home, env, command)
    log = home / "logs" / ("runner.log" if command == "worker" else "web.log")
    wait_until(log.exists, timeout=60, what=f"{command} logging")
    try:
        proc.wait(1)  # into its wait for the API
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(sig)
    assert proc.wait(60) == 0
    out, err = said(home, command)
    assert "Traceback" not in err, err
    assert "Stopping ScriptFlow" in out, out


TIED_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from scriptflow_prefect.platform.lifeline import on_parent_exit

    def stop():
        Path(sys.argv[2]).write_text("the parent is gone")
        os._exit(0)

    mode = sys.argv[1]
    on_parent_exit(stop if mode == "pipe" else lambda: None)
    if mode == "pipe":  # only the pipe can stop it: the parent-death signal is ignored
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(sys.argv[2] + ".ready").write_text(str(os.getpid()))
    time.sleep(120)
    """
)
TYING_PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from scriptflow_prefect.platform.lifeline import Lifeline

    line = Lifeline()
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], *sys.argv[2:]],
        env={**os.environ, **line.env()},
        **line.popen_options(),
    )
    line.hold(child)
    # A process started afterwards (a script) must not keep the line open.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(120)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="the Windows line is a Job Object")
@pytest.mark.parametrize("mode", ["pipe", "signal"])
def test_a_tied_child_stops_when_its_parent_is_killed(tmp_path, mode):
    if mode == "signal" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    marker = tmp_path / "stopped"
    parent = subprocess.Popen(
        [sys.executable, "-c", TYING_PARENT, TIED_CHILD, mode, str(marker)],
        stdin=subprocess.DEVNULL,
    )
    ready = tmp_path / "stopped.ready"
    try:
        wait_until(ready.exists, timeout=60, what="the tied child starting")
        child = psutil.Process(int(wait_until(ready.read_text, what="its pid")))
        sleeper = next(
            c for c in psutil.Process(parent.pid).children() if "time.sleep" in c.cmdline()[-1]
        )
        parent.kill()
        parent.wait()
        wait_until(lambda: gone(child), timeout=30, what="the tied child stopping")
        if mode == "pipe":
            assert marker.read_text() == "the parent is gone"
        assert sleeper.is_running()  # untied: only the tied child goes
        sleeper.kill()
    finally:
        parent.kill()
