"""Run vocabulary: how Prefect's state types map to a run's status."""

from __future__ import annotations

from prefect.client.schemas.objects import StateType

STATUS_BY_STATE = {
    StateType.SCHEDULED: "queued",
    StateType.PENDING: "queued",
    StateType.PAUSED: "queued",
    StateType.RUNNING: "running",
    StateType.CANCELLING: "running",
    StateType.COMPLETED: "succeeded",
    StateType.FAILED: "failed",
    StateType.CANCELLED: "cancelled",
    StateType.CRASHED: "crashed",
}


STATES_BY_STATUS: dict[str, list[StateType]] = {}


for _state, _status in STATUS_BY_STATE.items():
    STATES_BY_STATUS.setdefault(_status, []).append(_state)
