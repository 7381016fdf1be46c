"""`scriptflow up` (the whole stack) and `scriptflow web` (the overlay alone).

`up` runs two processes, not four: the Prefect server (its own process, ~230 MB) and one
process hosting the web overlay and the script runner together, so Prefect's client is
imported once (issue 2's idle memory budget).

Prefect reads its settings when first imported: modules that import it are loaded inside the
functions below, once `apply_client_env` has pointed it at ScriptFlow's server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import uvicorn

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.commands.prefect_server import (
    PrefectServer,
    history_retention_for_server,
    replace_leftover_or_refuse,
    start_prefect_server,
    wait_for_api,
)
from scriptflow_prefect.commands.startup import announce_sandbox
from scriptflow_prefect.commands.stopping import STOP, StopRequested
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.prefect_env import apply_client_env
from scriptflow_prefect.platform.settings import Settings

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

log = logging.getLogger("scriptflow")
SERVER_START_TIMEOUT = 120


class AlreadyRunning(RuntimeError):
    pass


class HomeLock:
    """One `scriptflow up` per SCRIPTFLOW_HOME: an OS lock that dies with the process."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: TextIO | None = None  # kept open: the lock lives as long as the handle

    def acquire(self) -> None:
        fh = open(self.path, "a+")  # noqa: SIM115
        try:
            if sys.platform == "win32":
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            pid = fh.read().strip()
            fh.close()
            raise AlreadyRunning(pid) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the handle releases the lock
            self._fh = None


def drain_prefect_services(timeout: float = 5.0) -> None:
    """Send the last run logs and events while Prefect's server still answers. Left to the
    interpreter's exit, they would be retried against a stopped server for a minute."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=timeout)
        except Exception as exc:  # shutting down: never let this stop the rest
            log.debug("draining %s failed: %s", service.__name__, exc)


def prepare_overlay(settings: Settings):
    """Database migrated, first admin, Prefect objects ScriptFlow needs (pool, store)."""
    from scriptflow_prefect.history import prefect as history_prefect
    from scriptflow_prefect.notifications import service as notifications
    from scriptflow_prefect.scripts import prefect as scripts_prefect
    from scriptflow_prefect.scripts import store

    db = Database(settings.sqlalchemy_url)
    with STOP.deferred():  # a second or so; a migration cut in half would be worse
        db.migrate()
        with db.session() as s:
            pw = settings.admin_password.get_secret_value() if settings.admin_password else None
            generated = accounts.ensure_first_admin(s, pw)

    async def _prefect_objects():
        await scripts_prefect.ensure_work_pool()
        await store.ensure_store_block(str(settings.store_dir))
        await notifications.start(db, settings)  # SCRIPTFLOW_SMTP_*, automations, digests
        await history_prefect.ensure_clean_history_deployment(settings.timezone)  # daily retention

    asyncio.run(_prefect_objects())
    return db, generated


def _uvicorn_server(settings: Settings, app):
    class Server(uvicorn.Server):
        # uvicorn's own handlers would re-raise SIGINT/SIGTERM once it has stopped, killing
        # this process before it stops the runner and the Prefect server: ours stay in place
        # (commands/stopping.py), and tell uvicorn to exit.
        @contextlib.contextmanager
        def capture_signals(self):
            with STOP.serving(self.request_exit):
                yield

        def request_exit(self) -> None:
            self.should_exit = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        # The client's address behind a proxy is read by the overlay itself, only from the
        # proxies in SCRIPTFLOW_TRUSTED_PROXIES (ui_overlay/addresses.py).
        proxy_headers=False,
        server_header=False,  # no `server: uvicorn`: what runs here is nobody else's business
    )
    return Server(config)


def run_stack(settings: Settings) -> int:
    # Before anything else: a stop at any moment of start-up is a clean stop (cli.main
    # installed them already when `up` came from the command line).
    STOP.install()
    setup_logging(settings, "web")
    # Prefect reads its settings once, when first imported: point it at our server before
    # any step below may import it (or it starts a temporary server of its own).
    apply_client_env(settings)
    lock = HomeLock(settings.path("up.lock"))
    server: PrefectServer | None = None
    try:
        with STOP.deferred():
            lock.acquire()
        started = time.monotonic()
        if settings.embedded_prefect:
            replace_leftover_or_refuse(settings)
            print(f"Starting Prefect server on 127.0.0.1:{settings.prefect_port} …", flush=True)
            with STOP.deferred():  # started and recorded, or not started
                # Prefect's db_vacuum must not delete runs the Settings page asks to keep.
                server = start_prefect_server(history_retention_for_server(settings))
        wait_for_api(settings, server.proc if server else None, SERVER_START_TIMEOUT)
        apply_client_env(settings)
        db, generated = prepare_overlay(settings)
        return _serve_web(settings, db, generated, with_runner=True, server=server, started=started)
    except StopRequested:
        return 0
    except AlreadyRunning as exc:
        print(
            f"scriptflow: ScriptFlow is already running on {settings.home} (pid {exc}). "
            "Stop it first, or set SCRIPTFLOW_HOME to another folder.",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as exc:
        print(f"scriptflow: {exc}", file=sys.stderr)
        return 1
    finally:
        STOP.finishing()
        if server is not None:
            drain_prefect_services()
            server.stop()
        lock.release()


def runner_name(configured: str | None, node: str) -> str:
    """The in-process runner's worker name: SCRIPTFLOW_WORKER_NAME if set, on every OS;
    else `scriptflow-<host>` (`node`: the machine's network name, empty when unknown)."""
    if configured:
        return configured
    return f"scriptflow-{node}" if node else "scriptflow"


def _serve_web(
    settings: Settings,
    db,
    generated: str | None,
    *,
    with_runner: bool,
    server: PrefectServer | None = None,
    started: float | None = None,
) -> int:
    from scriptflow_prefect.runs.worker import WorkerThread
    from scriptflow_prefect.ui_overlay.app import create_app

    runner = None
    server_died = threading.Event()
    try:
        if with_runner:
            announce_sandbox(settings)
            runner = WorkerThread(
                name=runner_name(settings.worker_name, platform.node()),
                max_runs=settings.max_concurrent_runs,
            )
            runner.start()
        app = create_app(settings, db=db, runner=runner)
        web = _uvicorn_server(settings, app)
        if server is not None:
            _watch_server(server.proc, web, server_died)
        threading.Thread(
            target=_announce, args=(settings, web, generated, started), daemon=True
        ).start()
        threading.Thread(target=_check_drift, args=(db,), daemon=True, name="drift").start()
        web.run()
    finally:
        STOP.finishing()
        if runner is not None:
            runner.stop()
    # 0 is for a stop that was asked for; a service manager restarts on anything else.
    return 1 if server_died.is_set() else 0


def _check_drift(db) -> None:
    """Once at start, beside it: drift with Prefect, one log line per item (scripts/drift.py);
    repaired by an admin on the scheduler page, never here (a deletion may be deliberate)."""
    from scriptflow_prefect.scripts import drift

    async def check() -> None:
        with db.session() as session:
            await drift.log_drift(session)

    try:
        asyncio.run(check())
    except Exception as exc:  # the scheduler page shows it later
        log.warning("the drift check at start-up failed: %s", exc)


def _watch_server(proc: subprocess.Popen, web: uvicorn.Server, died: threading.Event) -> None:
    """If Prefect's server dies, stop everything rather than limp on."""

    def watch():
        proc.wait()
        if not web.should_exit:
            log.error("the Prefect server exited (code %s); stopping", proc.returncode)
            died.set()
            web.should_exit = True

    threading.Thread(target=watch, daemon=True, name="scriptflow-server-watch").start()


def _announce(settings: Settings, web: uvicorn.Server, generated: str | None, started) -> None:
    while not web.started and not web.should_exit:
        time.sleep(0.05)
    if web.started:
        took = f" in {time.monotonic() - started:.1f} s" if started else ""
        print(f"ScriptFlow is ready{took}.", flush=True)
        print(f"  Web:        {settings.overlay_url}", flush=True)
        # Behind the overlay's login (ui_overlay/prefect_proxy.py): nobody types an auth string.
        print(f"  Prefect UI: {settings.link_url}/prefect/", flush=True)
        if generated:
            print(
                f"  First user: admin, password {generated} (shown once: change it "
                "on the Settings page)",
                flush=True,
            )
        print("Press Ctrl-C to stop.", flush=True)


def run_web_foreground(settings: Settings) -> int:
    STOP.install()
    setup_logging(settings, "web")
    apply_client_env(settings)
    try:
        wait_for_api(settings, None, 60)
        db, generated = prepare_overlay(settings)
        return _serve_web(settings, db, generated, with_runner=False)
    except StopRequested:
        return 0
    except RuntimeError as exc:
        print(f"scriptflow: {exc}", file=sys.stderr)
        return 1
    finally:
        STOP.finishing()
