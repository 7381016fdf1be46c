"""One thread per process that notices cancel requests for the runs this process executes.

Prefect's worker only cancels runs that have not started; a run executing in-process is
stopped by us: one query a second covers every run of the process, however many."""

from __future__ import annotations

import logging
import threading
from uuid import UUID

log = logging.getLogger("scriptflow.cancel")


class CancelWatcher:
    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self._events: dict[UUID, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def register(self, run_id: UUID) -> threading.Event:
        with self._lock:
            event = self._events.setdefault(run_id, threading.Event())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="scriptflow-cancel", daemon=True
                )
                self._thread.start()
        return event

    def cancel_all(self) -> None:
        """Stop every run of this process (the process is stopping: no script outlives it)."""
        with self._lock:
            for event in self._events.values():
                event.set()

    def unregister(self, run_id: UUID) -> None:
        with self._lock:
            self._events.pop(run_id, None)

    def _loop(self) -> None:
        from prefect import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:
            while True:
                with self._lock:
                    ids = list(self._events)
                if ids:
                    try:
                        runs = client.read_flow_runs(
                            flow_run_filter=FlowRunFilter(
                                id=FlowRunFilterId(any_=ids),
                                state=FlowRunFilterState(
                                    type=FlowRunFilterStateType(
                                        any_=[StateType.CANCELLING, StateType.CANCELLED]
                                    )
                                ),
                            )
                        )
                        with self._lock:
                            for run in runs:
                                if run.id in self._events:
                                    self._events[run.id].set()
                    except Exception as exc:  # the API may be restarting; try again
                        log.debug("cancel poll failed: %s", exc)
                self._wake.wait(self.interval)


watcher = CancelWatcher()


def cancel_local(run_id: UUID) -> bool:
    """Stop a run of this process at once (the web and the runner share a process)."""
    with watcher._lock:
        event = watcher._events.get(run_id)
    if event is not None:
        event.set()
    return event is not None
