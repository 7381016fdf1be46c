"""A script's processes left running by a worker that died: found from a record, stopped.

While the worker lives, `tree.ProcessTree` holds the script's tree. When the worker is killed
(SIGKILL, power cut of the service, a crash), nothing holds it any more; what the worker wrote
down at the start (`ProcessIdentity`: pid + start time + session) and the run's id in every
process's environment (`RUN_ID_VARIABLE`, inherited by children, grandchildren, daemons) find
it again at the next start (runs/recovery.py):

- the script's own process, if a process with its pid AND its start time is alive (a pid
  reused by an unrelated process has another start time: never touched);
- POSIX: every process of its session started after it (a session id cannot be reused while
  one of its processes lives), unless a process with the session's id started at another
  time (then the session is someone else's);
- every process started after the run was taken whose environment names the run (one that
  left the session: `setsid`, a daemon), as far as this account may read environments;
- the descendants of all of these.

OS-neutral (psutil); Windows has no sessions, and its Job Object already dies with the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import psutil

# Set in the script's environment by the flow: the run's id, for finding its processes after
# a crash. Scripts may read it too (their run's id).
RUN_ID_VARIABLE = "SCRIPTFLOW_RUN_ID"
GRACE_SECONDS = 2.0
# psutil's start times come from clock ticks: the same process always gives the same value.
_SAME_START = 0.05


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    create_time: float
    sid: int | None  # POSIX session id (the script leads its own); None on Windows

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "sid": self.sid}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessIdentity:
        sid = data.get("sid")
        return cls(int(data["pid"]), float(data["create_time"]), None if sid is None else int(sid))


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of a live process (None if it is already gone)."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return ProcessIdentity(pid, created, _sid(pid))


def find_leftovers(
    identity: ProcessIdentity | None, run_id: str | None, since: float
) -> list[psutil.Process]:
    """Live processes of the recorded script (see the module's docstring). `since`: a time
    (epoch seconds) before the run was taken; nothing older is ever a leftover."""
    found: dict[int, psutil.Process] = {}
    own = os.getpid()
    if identity is not None:
        main = _same_process(identity.pid, identity.create_time)
        if main is not None:
            found[main.pid] = main
        session = identity.sid if _session_is_ours(identity) else None
    else:
        session = None
    for process in psutil.process_iter(["create_time"]):
        if process.pid in found or process.pid == own:
            continue
        created = process.info.get("create_time")
        if created is None or created < since - _SAME_START:
            continue
        if session is not None and identity is not None and created >= identity.create_time:
            if _sid(process.pid) == session:
                found[process.pid] = process
                continue
        if run_id is not None and _names_run(process, run_id):
            found[process.pid] = process
    for process in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in process.children(recursive=True):
                if child.pid != own:
                    found.setdefault(child.pid, child)
    return [p for p in found.values() if _alive(p)]


def stop(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> None:
    """Ask every process to stop (SIGTERM), then kill what is left after `grace` seconds."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) <= _SAME_START and _alive(process):
            return process
    except psutil.Error:
        pass
    return None


def _session_is_ours(identity: ProcessIdentity) -> bool:
    if identity.sid is None:
        return False
    try:  # the session's leader alive with another start time: the id was reused
        leader = psutil.Process(identity.sid)
        return abs(leader.create_time() - identity.create_time) <= _SAME_START
    except psutil.NoSuchProcess:
        return True  # leader gone; its id stays reserved while the session has members
    except psutil.Error:
        return False


def _sid(pid: int) -> int | None:
    if sys.platform == "win32":
        return None
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _names_run(process: psutil.Process, run_id: str) -> bool:
    try:
        return process.environ().get(RUN_ID_VARIABLE) == run_id
    except (psutil.Error, OSError):  # another account's process, or a kernel thread
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
