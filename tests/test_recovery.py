"""Crash recovery: a run left by a killed ScriptFlow or worker ends `crashed`, its script's
processes are stopped (API.md "Runs"), and a worker that never comes back is caught by the
server's dead-man automation. Real processes killed with SIGKILL, real stacks restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from scriptflow_prefect.execution import leftovers
from scriptflow_prefect.execution.leftovers import RUN_ID_VARIABLE, ProcessIdentity
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.runs import active_runs, recovery
from scriptflow_prefect.runs.messages import RunMessage

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and sessions")

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.1)


# -- the pieces, with real processes and no server ---------------------------------------------

SPAWN_AND_WAIT = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from scriptflow_prefect.execution.process import run_script_process

    script = Path(sys.argv[2])
    def run():
        run_script_process(
            script, "python", script.parent, timeout=None, on_line=None,
            cancel=threading.Event(), python=Path(sys.executable),
            on_started=lambda proc: print(proc.pid, flush=True),
        )
    threading.Thread(target=run, daemon=True).start()
    time.sleep(1000)
    """
)


def test_it_kills_the_script_at_once_when_its_worker_is_killed(tmp_path):
    """PR_SET_PDEATHSIG: the script's own process dies with the worker (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    script = tmp_path / "forever.py"
    script.write_text("import time\nwhile True:\n    time.sleep(0.1)\n")
    worker = subprocess.Popen(
        [sys.executable, "-c", SPAWN_AND_WAIT, str(ROOT), str(script)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(worker.stdout.readline())
        assert _alive(pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        _wait(lambda: not _alive(pid), 5, "the script dying with its worker")
    finally:
        worker.kill()
        worker.wait()


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        ["sleep", "1000"], start_new_session=True, env={**os.environ, **(env or {})}
    )


def test_it_finds_a_grandchild_that_left_the_session_by_the_run_id_it_inherited():
    since = time.time()
    escaped = _sleeper({RUN_ID_VARIABLE: "run-1"})
    other = _sleeper({RUN_ID_VARIABLE: "run-2"})
    try:
        found = leftovers.find_leftovers(None, "run-1", since - 1)
        assert [p.pid for p in found] == [escaped.pid]
        leftovers.stop(found)
        assert escaped.wait(5) is not None
        assert _alive(other.pid)
    finally:
        for p in (escaped, other):
            p.kill()
            p.wait()


def test_it_never_touches_a_reused_pid():
    """A record whose pid is now an unrelated process (another start time) finds nothing."""
    since = time.time() - 100
    unrelated = _sleeper()
    try:
        created = psutil.Process(unrelated.pid).create_time()
        stale = ProcessIdentity(unrelated.pid, created - 50, unrelated.pid)
        assert leftovers.find_leftovers(stale, "gone-run", since) == []
        same = ProcessIdentity(unrelated.pid, created, unrelated.pid)
        assert [p.pid for p in leftovers.find_leftovers(same, None, since)] == [unrelated.pid]
    finally:
        unrelated.kill()
        unrelated.wait()


def test_it_keeps_records_of_a_live_worker_and_hands_back_those_of_a_dead_one(tmp_path):
    active_runs.taken(tmp_path, "11111111-1111-1111-1111-111111111111", "me")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = active_runs.ActiveRun(
        "22222222-2222-2222-2222-222222222222",
        "me",
        ProcessIdentity(dead.pid, time.time() - 5, None),
        time.time(),
        None,
    )
    path = active_runs.folder(tmp_path) / f"{record.flow_run_id}.json"
    path.write_text(json.dumps(record.to_dict()))
    assert [r.flow_run_id for r in active_runs.leftover(tmp_path)] == [record.flow_run_id]
    active_runs.script_started(tmp_path, record.flow_run_id, os.getpid())
    (again,) = active_runs.leftover(tmp_path)
    assert again.script is not None and again.script.pid == os.getpid()
    active_runs.ended(tmp_path, record.flow_run_id)
    assert active_runs.leftover(tmp_path) == []


def test_the_owner_label_names_the_worker_process():
    me = active_runs.this_process()
    worker, _host, owner = recovery.parse_owner(recovery.owner_label("w@x:1", me))
    assert worker == "w@x:1" and owner.pid == me.pid
    assert recovery.parse_owner("12345") is None and recovery.parse_owner(None) is None


def test_the_crash_messages_are_translated():
    msg = RunMessage("crashed_restart", {"at": "2026-12-02T14:02+00:00"})
    assert msg.text.startswith("ScriptFlow stopped unexpectedly during this run at 2026-12-02")
    token = i18n.set_locale("pt_BR")
    try:
        assert "O ScriptFlow parou inesperadamente" in msg.translated()
        assert "14:02" in msg.translated()
        lost = RunMessage.from_labels({}, RunMessage("worker_lost").text)  # no label: by text
        assert lost is not None and lost.code == "worker_lost"
        assert "sinal de vida" in lost.translated()
    finally:
        i18n._current.reset(token)
