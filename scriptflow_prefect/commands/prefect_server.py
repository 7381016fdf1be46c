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
from typing import BinaryIO

from scriptflow_prefect.commands.leftover import forget_server, record_server, stop_leftover
from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.commands.stopping import STOP, StopRequested
from scriptflow_prefect.history.retention import stored_retention_days
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.platform.lifeline import Lifeline
from scriptflow_prefect.platform.prefect_env import UI_SERVE_BASE, server_env
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


class PrefectServer:
    """Prefect's server process as ScriptFlow started it: tied to this process (it dies with
    it, `platform/lifeline.py`) and recorded in the home (`leftover.py`)."""

    def __init__(self, settings: Settings, output: BinaryIO | None) -> None:
        self.settings = settings
        self.line = Lifeline()
        env = {**os.environ, **server_env(settings), **self.line.env()}
        kwargs: dict = self.line.popen_options()
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True  # we stop it, not the terminal's Ctrl-C
        # On the calling thread, which must live as long as the server: the main thread
        # (Linux's parent-death signal follows the thread that started the child).
        self.proc = subprocess.Popen(
            _server_command(settings),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )
        self.line.hold(self.proc)
        record_server(settings, self.proc.pid)

    def stop(self) -> None:
        """Stop it and wait for it; then forget it."""
        stop_process(self.proc)
        self.line.release()
        forget_server(self.settings, self.proc.pid)


def start_prefect_server(settings: Settings) -> PrefectServer:
    """The server for `scriptflow up`, its output in the home's logs. Call it on the main
    thread, inside `STOP.deferred()`: a stop request must not fall between the start and the
    record."""
    with open(settings.logs_dir / "prefect-server.log", "ab") as logfile:
        return PrefectServer(settings, logfile)


def replace_leftover_or_refuse(settings: Settings) -> None:
    """Before starting this home's server: one left running by an earlier crash of this home
    is stopped; anything else answering on the port is refused (RuntimeError)."""
    pid = stop_leftover(settings)
    if pid is not None:
        print(
            _(
                "Stopped a Prefect server (pid %(pid)s) left running on this home by an "
                "earlier ScriptFlow.",
                pid=pid,
            ),
            flush=True,
        )
    if api_healthy(settings):
        raise RuntimeError(
            f"port {settings.prefect_port} already answers as a Prefect API; "
            "set SCRIPTFLOW_PREFECT_PORT or SCRIPTFLOW_PREFECT_API_URL."
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
    STOP.install()
    setup_logging(settings, "server")
    server = None
    try:
        replace_leftover_or_refuse(settings)
        print(
            f"Prefect server on 127.0.0.1:{settings.prefect_port}; "
            f"UI at {settings.ui_url}{UI_SERVE_BASE}/",
            flush=True,
        )
        with STOP.deferred():
            server = PrefectServer(settings, None)  # its output on this terminal
        return server.proc.wait()
    except StopRequested:
        return 0
    except RuntimeError as exc:
        print(f"scriptflow: {exc}", file=sys.stderr)
        return 1
    finally:
        STOP.finishing()
        if server is not None:
            server.stop()
