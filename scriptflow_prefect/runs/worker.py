"""The ScriptFlow worker: a Prefect worker type that runs `run_script` flow runs in-process.

Prefect's process worker starts a ~90 MB Python per run; here each run is a thread of one
process and the script is the only new process (ARCHITECTURE.md "Per run")."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed, Failed
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)

from scriptflow_prefect.environments import service as environments
from scriptflow_prefect.execution.launchers import bat_setup
from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.settings import get_settings
from scriptflow_prefect.runs import active_runs, dead_man, recovery
from scriptflow_prefect.runs.cancel_watch import watcher
from scriptflow_prefect.runs.messages import RunMessage

log = logging.getLogger("scriptflow.worker")


class ScriptFlowWorkerResult(BaseWorkerResult):
    pass


# The flows a ScriptFlow worker runs in-process, by Prefect flow name. Anything else in the
# pool is refused rather than imported from an arbitrary entrypoint.
FLOWS = {
    prefect_names.FLOW_NAME: prefect_names.ENTRYPOINT,
    prefect_names.DIGEST_FLOW: prefect_names.DIGEST_ENTRYPOINT,
    prefect_names.CLEAN_FLOW: prefect_names.CLEAN_ENTRYPOINT,
}


def flow_for(name: str):
    """The flow object, loaded from its entrypoint string (the core never imports `flows`)."""
    if name not in FLOWS:
        raise ValueError(f"a ScriptFlow worker does not run the flow {name!r}")
    module, attr = FLOWS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _warm_up_bat_launcher() -> None:
    """wine's first start in a new prefix takes seconds: pay it before the first .bat run."""
    settings = get_settings()
    try:
        bat_setup(settings.bat_launcher, settings.language)
    except Exception as exc:  # a missing launcher is reported by the run that needs it
        log.debug("bat launcher warm-up failed: %s", exc)


def _collect_environments() -> None:
    """Unused dependency environments go at start (and daily, with clean_history)."""
    try:
        environments.collect_garbage(get_settings())
    except Exception as exc:  # never stop a worker for this; the daily run tries again
        log.warning("collecting unused script environments failed: %s", exc)


class _HeapTrimmer:
    """Hands the C heap's free pages back to the OS after runs (glibc only).

    A run churns native memory (Prefect's client and its SSL context, pydantic-core,
    SQLite connections, pipes, threads) and frees nearly all of it, but glibc returns freed
    memory only from the top of a heap: the holes stay in RSS. Measured with 5 runs at a
    time: 145 -> 265 MB RSS after 300 runs, of which 93 MB were free heap chunks
    (malloc_info); Python objects kept by runs 50-80 were 1.2 MB (tracemalloc).
    `malloc_trim(0)` releases those pages (265 -> 169 MB) in ~50 ms, ~1 ms when there is
    little to give back. Trimmed when the process goes idle, and at most every few
    seconds while runs keep coming; a moment after the run, once its last logs have been
    shipped and its output indexed (that churn comes after the flow returns)."""

    MIN_INTERVAL = 5.0
    DELAY = 2.0

    def __init__(self) -> None:
        self._trim: Callable[[int], object] | None = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self._trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # not on musl
                if self._trim is not None:
                    self._trim.argtypes = [ctypes.c_size_t]
            except (ImportError, OSError):
                pass
        self._lock = threading.Lock()
        self._active = 0
        self._last = 0.0
        self._pending: threading.Timer | None = None

    def run_started(self) -> None:
        with self._lock:
            self._active += 1

    def run_finished(self) -> bool:
        """True if a trim is due now."""
        with self._lock:
            self._active -= 1
            due = self._active == 0 or time.monotonic() - self._last >= self.MIN_INTERVAL
            if self._trim is None or not due:
                return False
            self._last = time.monotonic()
            return True

    def trim_soon(self) -> None:
        """Trim on a timer thread DELAY seconds after the latest request: a timer still
        waiting is started over, so the last run's late churn is trimmed too."""
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()  # no effect on one already trimming: that is fine
            self._pending = threading.Timer(self.DELAY, self.trim)
            self._pending.daemon = True
            self._pending.start()

    def trim(self) -> None:
        if self._trim is None:
            return
        try:
            self._trim(0)  # ctypes releases the GIL meanwhile
        except Exception as exc:
            log.debug("malloc_trim failed: %s", exc)


heap_trimmer = _HeapTrimmer()


def _execute(flow, flow_run: FlowRun):
    from prefect.flow_engine import run_flow

    return run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")


class ScriptFlowWorker(BaseWorker[BaseJobConfiguration, BaseVariables, ScriptFlowWorkerResult]):
    type = "scriptflow"
    job_configuration = BaseJobConfiguration
    job_configuration_variables = BaseVariables
    _description = (
        "Runs ScriptFlow scripts on threads of one process; the script is its only child."
    )
    _display_name = "ScriptFlow"

    def __init__(self, *args, max_runs: int = 50, **kwargs):
        kwargs.setdefault("limit", max_runs)
        super().__init__(*args, **kwargs)
        self._threads = anyio.CapacityLimiter(max_runs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flow_names: dict = {}
        self._home = get_settings().home
        self._me = active_runs.this_process()

    async def run(self, flow_run, configuration, task_status=None) -> ScriptFlowWorkerResult:
        if task_status is not None:
            # Prefect stores it as the run's infrastructure_pid (its own write): which worker
            # process runs it, for recovery.py when the record is missing.
            task_status.started(recovery.owner_label(self.name, self._me))
        heap_trimmer.run_started()
        try:
            flow = flow_for(await self._flow_name(flow_run.flow_id))
            state = None
            if not await self._refused_parameters(flow, flow_run):
                state = await anyio.to_thread.run_sync(
                    partial(_execute, flow, flow_run), limiter=self._threads
                )
        except Exception as exc:
            # Outside the flow (Prefect's engine, the API gone mid-run): Prefect's worker
            # would only log it and leave the run Running with nothing behind it.
            await self._crash_unfinished(flow_run, exc)
            raise
        finally:
            trim_due = heap_trimmer.run_finished()
            # One unlink, not awaited: in a task cancelled by a clean stop, an await here
            # would raise first and leave a record that the next start reads as a crash.
            active_runs.ended(self._home, flow_run.id)
        if trim_due:  # off the event loop: a trim with much to give back takes ~50 ms
            heap_trimmer.trim_soon()
        ok = getattr(state, "is_completed", lambda: False)()
        return ScriptFlowWorkerResult(identifier=str(flow_run.id), status_code=0 if ok else 1)

    async def _refused_parameters(self, flow, flow_run: FlowRun) -> bool:
        """Parameters edited in Prefect that the flow cannot take (an unknown name, a word for
        a number): the run fails at once with a coded message. (Prefect's engine would fail it
        too, in its own words, untranslated.)"""
        params = dict(flow_run.parameters or {})
        unknown = sorted(set(params) - set(inspect.signature(flow.fn).parameters))
        try:
            if unknown:
                raise ValueError(f"unknown parameter(s) {', '.join(unknown)}")
            await anyio.to_thread.run_sync(flow.validate_parameters, params)
            return False
        except Exception as exc:
            text = str(exc).replace("Flow run received invalid parameters:", "")
            reason = "; ".join(line.strip(" -") for line in text.splitlines() if line.strip())
        msg = RunMessage("parameters_invalid", {"reason": reason[:300]})
        try:
            async with get_client() as client:
                labels: dict[str, Any] = msg.label()
                await client.update_flow_run_labels(flow_run.id, labels)
                await client.set_flow_run_state(flow_run.id, Failed(message=msg.text), force=True)
        except Exception as error:  # Prefect's engine then fails it in its own words
            log.warning("could not refuse run %s: %s", flow_run.id, error)
            return False
        return True

    async def _crash_unfinished(self, flow_run: FlowRun, exc: Exception) -> None:
        log.exception("run %s failed outside its flow", flow_run.id)
        msg = RunMessage("runner_failed", {"reason": f"{type(exc).__name__}: {exc}"[:300]})
        try:
            async with get_client() as client:
                current = await client.read_flow_run(flow_run.id)
                if current.state is not None and not current.state.is_final():
                    labels: dict[str, Any] = msg.label()
                    await client.update_flow_run_labels(flow_run.id, labels)
                    await client.set_flow_run_state(
                        flow_run.id, Crashed(message=msg.text), force=True
                    )
        except Exception as error:  # the dead-man automation ends it (runs/dead_man.py)
            log.warning("could not mark run %s crashed: %s", flow_run.id, error)

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """The run's record is written before Prefect hears it is taken: a crash at any later
        moment leaves a record for the next start (active_runs.py)."""
        try:
            await anyio.to_thread.run_sync(active_runs.taken, self._home, flow_run.id, self.name)
        except OSError as exc:  # a full disk must not stop runs; recovery then relies on
            log.warning("could not record run %s: %s", flow_run.id, exc)  # infrastructure_pid
        taken = await super()._propose_pending_state(flow_run)
        if not taken:
            await anyio.to_thread.run_sync(active_runs.ended, self._home, flow_run.id)
        return taken

    async def _give_worker_labels_to_flow_run(self, flow_run_id) -> None:
        """Skipped: ScriptFlow does not use worker labels, and on SQLite this extra write per
        run collides under a burst (503, then the client's 2-4-8-16-32 s back-off), which
        held runs in Pending for over 100 s when 50 were due together."""
        return None

    async def _flow_name(self, flow_id) -> str:
        if flow_id not in self._flow_names:
            self._flow_names[flow_id] = (await self.client.read_flow(flow_id)).name
        return self._flow_names[flow_id]

    async def start(self, *args, **kwargs) -> None:
        await self._recover()
        self._loop = asyncio.get_running_loop()  # "Run now" wakes it from here on
        threading.Thread(
            target=_warm_up_bat_launcher, daemon=True, name="scriptflow-wine-warmup"
        ).start()
        threading.Thread(
            target=_collect_environments, daemon=True, name="scriptflow-environments-gc"
        ).start()
        await super().start(*args, **kwargs)

    async def _recover(self) -> None:
        """Before taking any run: end what a crash of an earlier worker process left
        (recovery.py), and keep the server's dead-man automation (dead_man.py)."""
        steps: dict[str, Callable[[PrefectClient], Awaitable[object]]] = {
            "crash recovery": partial(recovery.reconcile, home=self._home, worker=self.name),
            "the dead-man automation": partial(
                dead_man.ensure_automation, within_seconds=get_settings().dead_man_seconds
            ),
        }
        async with get_client() as client:
            for what, step in steps.items():
                for attempt in range(1, 4):
                    try:
                        await step(client)
                        break
                    except Exception as exc:  # Prefect busy or restarting: again, then go on
                        log.warning("%s failed (try %d of 3): %s", what, attempt, exc)
                        await asyncio.sleep(2)

    def wake(self) -> None:
        """Look for new runs now instead of at the next poll ("Run now" in the same process)."""
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._poll_now(), self._loop)

    async def _poll_now(self) -> None:
        try:
            await self.get_and_submit_flow_runs()
        except Exception as exc:  # the regular poll will catch up
            log.debug("immediate poll failed: %s", exc)


class WorkerThread:
    """Hosts the worker's event loop in a thread of the web process (`scriptflow up`)."""

    def __init__(self, name: str, max_runs: int):
        self.name, self.max_runs = name, max_runs
        self.worker: ScriptFlowWorker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._serving_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="scriptflow-worker", daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.worker = ScriptFlowWorker(
            work_pool_name=prefect_names.WORK_POOL, name=self.name, max_runs=self.max_runs
        )
        self._stop = asyncio.Event()
        self._serving_loop = asyncio.get_running_loop()  # stop() needs it from the start
        self._ready.set()
        task = asyncio.create_task(self.worker.start(printer=log.info))
        await self._stop.wait()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def stop(self, timeout: float = 8.0) -> None:
        watcher.cancel_all()  # running scripts must not outlive ScriptFlow
        loop = self._serving_loop
        if loop is not None and loop.is_running():  # also while recovering, before polling
            loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
