"""`scriptflow worker`: a script runner on its own, polling ScriptFlow's work pool."""

from __future__ import annotations

import asyncio
import signal
import sys

from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.commands.prefect_server import wait_for_api
from scriptflow_prefect.commands.startup import announce_sandbox
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.prefect_env import apply_client_env
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs.cancel_watch import watcher


def run_worker_foreground(settings: Settings) -> int:
    setup_logging(settings, "runner")
    apply_client_env(settings)
    try:
        wait_for_api(settings, None, 60)
    except RuntimeError as exc:
        print(f"scriptflow: {exc}", file=sys.stderr)
        return 1
    announce_sandbox(settings)
    # Prefect reads its settings when first imported: only now, after apply_client_env.
    from scriptflow_prefect.runs.worker import ScriptFlowWorker
    from scriptflow_prefect.scripts import prefect as scripts_prefect

    async def main():
        await scripts_prefect.ensure_work_pool()
        worker = ScriptFlowWorker(
            work_pool_name=prefect_names.WORK_POOL,
            name=settings.worker_name,
            max_runs=settings.max_concurrent_runs,
        )
        await worker.start(printer=print)

    def _terminate(_signum, _frame):
        # One SIGTERM must be enough to stop a worker (ARCHITECTURE.md: Prefect's is not).
        watcher.cancel_all()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0
