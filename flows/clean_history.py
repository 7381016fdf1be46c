"""The `clean_history` flow: removes run history older than the retention period.

ScriptFlow keeps one deployment of it (`clean_history/daily`, every day at 03:17) that its
worker runs. It deletes, for runs expected to start before now minus the retention period
(the Settings page, else SCRIPTFLOW_RETENTION_DAYS): the flow runs in Prefect (Prefect then
deletes their logs), ScriptFlow's stored output and its index rows, working folders left by
crashed runs, and acknowledgements; and script dependency environments that no script wants
and no run used for two weeks (environments/cleanup.py). Run it by hand, for example::

    prefect deployment run 'clean_history/daily'
    prefect deployment run 'clean_history/daily' -p days=7
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger

from scriptflow_prefect.environments import service as environments
from scriptflow_prefect.history import service as history
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.settings import get_settings


@flow(name="clean_history", persist_result=False, log_prints=False, validate_parameters=True)
def clean_history(days: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Remove runs, logs and stored output older than `days` (default: the retention setting).

    `now` moves the clock (for tests and dry thinking); it defaults to the current time.
    Example: `clean_history(days=30)`.
    """
    settings = get_settings()
    db = Database(settings.sqlalchemy_url)
    try:
        report = history.clean_history(settings, db, now=now, days=days)
    finally:
        db.engine.dispose()
    moved = now.timestamp() if now else None
    report["environments"] = environments.collect_garbage(settings, now=moved)["removed"]
    get_run_logger().info(
        "Removed %s runs from Prefect and %s stored files (%s bytes) older than %s days.",
        report["prefect_runs"],
        report["files"],
        report["bytes"],
        report["days"],
    )
    return report


__all__ = ["clean_history"]
