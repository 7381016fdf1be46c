"""`scriptflow worker`: a script runner on its own, polling ScriptFlow's work pool."""

from __future__ import annotations

import asyncio
import platform
import sys

from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.commands.prefect_server import wait_for_api
from scriptflow_prefect.commands.stack import runner_name
from scriptflow_prefect.commands.startup import announce_sandbox
from scriptflow_prefect.commands.stopping import STOP, StopRequested
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.prefect_env import apply_client_env
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs.cancel_watch import watcher


def run_worker_foreground(settings: Settings) -> int:
    STOP.install()
    setup_logging(settings, "runner")
    apply_client_env(settings)
    try:
        wait_for_api(settings, None, 60)
        announce_sandbox(settings)
        asyncio.run(_serve(settings))
    except (StopRequested, asyncio.CancelledError):
        return 0
    except RuntimeError as exc:
        print(f"scriptflow: {exc}", file=sys.stderr)
        return 1
    finally:
        STOP.finishing()
    return 0


async def _serve(settings: Settings) -> None:
    # Prefect reads its settings when first imported: only now, after apply_client_env.
    from scriptflow_prefect.runs.worker import ScriptFlowWorker
    from scriptflow_prefect.scripts import prefect as scripts_prefect

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def stop() -> None:
        # One SIGTERM must be enough to stop a worker (ARCHITECTURE.md: Prefect's is not):
        # its runs' scripts are stopped, then the worker.
        watcher.cancel_all()
        main.cancel()

    await scripts_prefect.ensure_work_pool()
    worker = ScriptFlowWorker(
        work_pool_name=prefect_names.WORK_POOL,
        # The same name at every start (not Prefect's random one): recovery finds the runs
        # this worker left without a record by it.
        name=runner_name(settings.worker_name, platform.node()),
        max_runs=settings.max_concurrent_runs,
    )
    # From the signal handler, only a hand-over to the loop: cancel_all takes a lock the
    # interrupted code may hold.
    with STOP.serving(lambda: loop.call_soon_threadsafe(stop)):
        await worker.start(printer=print)
