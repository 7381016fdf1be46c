"""The Prefect server a home's ScriptFlow started, recorded so that one left behind is replaced.

`up` and `server` note the server they start (pid, process start time, home, and the same for
themselves, its owner) in SCRIPTFLOW_HOME. If a crash the lifeline could not answer (the
kernel's OOM killer taking both, an older version) left that server running, the next start
finds it still holding the port: the record tells it apart from anyone else's server. It is
ours, and a leftover, only if the recorded process is alive, is the same process (its start
time matches: pids are reused), runs on this home, and its owner is gone. Anything else on the
port is refused as before."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import psutil

from scriptflow_prefect.platform.settings import Settings

RECORD = "prefect-server.json"
STOP_GRACE_SECONDS = 8.0
# psutil computes start times from boot time and clock ticks: equal for one process, give or
# take rounding.
_SAME_START = 0.05


def _path(settings: Settings) -> Path:
    return settings.path(RECORD)


def _identity(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def record_server(settings: Settings, pid: int) -> None:
    """Note the server just started by this process."""
    started = _identity(pid)
    if started is None:
        return  # already gone: waiting for it will say so
    record = {
        "pid": pid,
        "started": started,
        "home": str(settings.home),
        "prefect_home": str(settings.prefect_home),
        "owner_pid": os.getpid(),
        "owner_started": _identity(os.getpid()),
    }
    path = _path(settings)
    temporary = path.with_suffix(".tmp")
    # Without it (a full disk) the server still starts: only a later leftover goes unknown.
    with contextlib.suppress(OSError):
        temporary.write_text(json.dumps(record), encoding="utf-8")
        os.replace(temporary, path)


def forget_server(settings: Settings, pid: int) -> None:
    """The server `pid` has been stopped: its record goes (if it is still the record)."""
    record = _read(settings)
    if record is not None and record.get("pid") == pid:
        with contextlib.suppress(OSError):
            _path(settings).unlink()


def _read(settings: Settings) -> dict | None:
    try:
        record = json.loads(_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same(pid: object, started: object) -> psutil.Process | None:
    if not isinstance(pid, int) or not isinstance(started, int | float):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > _SAME_START:
            return None
    except psutil.Error:
        return None
    return proc


def leftover_server(settings: Settings) -> psutil.Process | None:
    """The recorded server of this home if it still runs and the process that started it
    does not (a leftover of a crash), else None."""
    record = _read(settings)
    if record is None or record.get("home") != str(settings.home):
        return None
    proc = _same(record.get("pid"), record.get("started"))
    if proc is None or _same(record.get("owner_pid"), record.get("owner_started")) is not None:
        return None  # gone, not the same process, or its owner still runs it
    try:
        home = proc.environ().get("PREFECT_HOME")
    except psutil.Error:
        return None  # not ours to read, so not ours to stop
    return proc if home == record.get("prefect_home") == str(settings.prefect_home) else None


def stop_leftover(settings: Settings) -> int | None:
    """Stop this home's leftover server and everything it started; its pid, or None."""
    proc = leftover_server(settings)
    if proc is None:
        return None
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        procs = [proc]
    for each in procs:
        with contextlib.suppress(psutil.Error):
            each.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_SECONDS)
    for each in alive:
        with contextlib.suppress(psutil.Error):
            each.kill()
    psutil.wait_procs(alive, timeout=5)
    forget_server(settings, proc.pid)
    return proc.pid
