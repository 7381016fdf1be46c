"""The Prefect server as ScriptFlow runs it: started, awaited, drained and stopped.

Prefect's server runs in a process of its own (`prefect server start`), pointed at
SCRIPTFLOW_HOME by `platform.prefect_env.server_env`. This module does not import Prefect:
`scriptflow server` only starts and watches that process."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.history.retention import stored_retention_days
from scriptflow_prefect.platform.prefect_env import server_env
from scriptflow_prefect.platform.settings import Settings


def api_healthy(settings: Settings) -> bool:
    req = urllib.request.Request(settings.api_url + "/health")
    if settings.auth_string:
        token = base64.b64encode(settings.auth_string.encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _server_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scriptflow_prefect.commands.prefect_child",  # `prefect`, auth strings out of /proc
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.prefect_port),
    ]


def history_retention_for_server(settings: Settings) -> Settings:
    days = stored_retention_days(settings)
    if days and days > settings.retention_days:
        return settings.model_copy(update={"retention_days": days})
    return settings


def start_prefect_server(settings: Settings) -> subprocess.Popen:
    env = {**os.environ, **server_env(settings)}
    logfile = open(settings.logs_dir / "prefect-server.log", "ab")
    kwargs: dict = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True  # we stop it, not the terminal's Ctrl-C
    return subprocess.Popen(
        _server_command(settings),
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def stop_process(proc: subprocess.Popen, grace: float = 8.0) -> None:
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(5)


def wait_for_api(settings: Settings, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api_healthy(settings):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"the Prefect server exited with code {proc.returncode}; see "
                f"{settings.logs_dir / 'prefect-server.log'}"
            )
        time.sleep(0.25)
    raise RuntimeError(f"the Prefect API at {settings.api_url} did not answer in {timeout:.0f} s")


def run_prefect_server_foreground(settings: Settings) -> int:
    setup_logging(settings, "server")
    env = {**os.environ, **server_env(settings)}
    print(
        f"Prefect server on 127.0.0.1:{settings.prefect_port}; UI at {settings.ui_url}", flush=True
    )
    command = _server_command(settings)
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP
        proc = subprocess.Popen(command, env=env, creationflags=flags)
    else:
        proc = subprocess.Popen(command, env=env, start_new_session=True)

    def _terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM must not orphan Prefect's server
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_process(proc)
        return 0
