"""One rule for "a runner is alive", as /health, the scheduler page and its API apply it:
a heartbeat at most three of the worker's own heartbeat intervals old (Prefect's rule)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scriptflow_prefect.monitoring.models import WorkerBeat
from scriptflow_prefect.monitoring.service import is_alive
from scriptflow_prefect.platform.prefect_names import WORK_POOL

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "interval", "alive"),
    [
        (89, 30, True),
        (90, 30, True),
        (91, 30, False),
        (100, 60, True),  # the old fixed 90 s would call this one dead
        (181, 60, False),
        (10, 5, True),
        (16, 5, False),  # the old fixed 90 s would call this one alive
        (89, None, True),  # no interval given: Prefect's default, 30 s
        (91, None, False),
    ],
)
def test_it_calls_a_worker_alive_within_three_of_its_heartbeat_intervals(age, interval, alive):
    worker = WorkerBeat("runner", NOW - timedelta(seconds=age), interval)
    assert is_alive(worker, NOW) is alive


def test_it_calls_a_worker_that_never_beat_dead():
    assert is_alive(WorkerBeat("runner", None, 30), NOW) is False


def test_it_shows_a_runner_dead_once_it_missed_three_heartbeats(stack, admin):
    name = f"ghost-{uuid.uuid4().hex[:8]}"
    with stack.prefect() as prefect:
        beat = prefect.post(
            f"/work_pools/{WORK_POOL}/workers/heartbeat",
            json={"name": name, "heartbeat_interval_seconds": 1},
        )
        assert beat.status_code == 204, beat.text

    def ghost() -> dict:
        workers = admin.get("/scheduler").json()["workers"]
        return next(w for w in workers if w["name"] == name)

    assert ghost()["alive"] is True
    deadline = time.monotonic() + 30
    while ghost()["alive"]:
        assert time.monotonic() < deadline, "still alive 30 s after its last 1 s heartbeat"
        time.sleep(0.5)
    # The stack's own runner keeps beating: it stays alive, on the page and in /health.
    assert any(w["alive"] for w in admin.get("/scheduler").json()["workers"])
    assert stack.client(None).get(stack.url + "/health").json()["components"]["runner"]["ok"]
