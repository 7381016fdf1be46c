"""Run history rules: where a script's runs are in Prefect, the per-script summary, the
acknowledgement of failed scheduled runs, and retention.

Prefect keeps the runs; the overlay keeps only what is its own: which deployments it made
for each script (so history queries use Prefect's deployment index instead of a tag scan),
who acknowledged which failed run, and the retention period (an AppSetting).

Example::

    report = clean_history(settings, db, now=datetime.now(UTC))   # what retention removed
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect.client.schemas.objects import FlowRun
from pydantic import TypeAdapter
from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import prefect as history_prefect
from scriptflow_prefect.history.retention import (
    MAX_DAYS,
    MIN_DAYS,
    RETENTION_KEY,
    forget_workspaces,
)
from scriptflow_prefect.platform.models import AppSetting, Base, UTCDateTime, utcnow
from scriptflow_prefect.platform.settings import Settings
from scriptflow_prefect.runs.filters import RunQuery
from scriptflow_prefect.runs.models import FAILURES, FINAL, Run, Trigger, status_of
from scriptflow_prefect.scripts.models import Script

log = logging.getLogger("scriptflow.history")

LAST_CLEAN_KEY = "retention_last_clean"
FAILED_STATES = ("FAILED", "CRASHED")
FINISHED_STATES = ("COMPLETED", *FAILED_STATES)  # a cancelled run is no verdict on a script
STRIP_DAYS = 30


class ScriptDeployment(Base):
    """Every Prefect deployment a script has had: a rename makes a new one, and a deleted
    script's runs keep pointing at its last one."""

    __tablename__ = "script_deployments"

    script_id: Mapped[int] = mapped_column(
        ForeignKey("scripts.id", ondelete="CASCADE"), primary_key=True
    )
    deployment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunAcknowledgement(Base):
    """Someone has seen this failed scheduled run; the script page stops flagging it."""

    __tablename__ = "run_acknowledgements"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


def remember_deployment(script: Script) -> None:
    """Count the script's current deployment among its own: a rename makes a new deployment,
    and the runs of the old one stay the script's history. Called by whoever sets
    `script.deployment_id` (scripts.deployment.sync_deployment); the row is written with the
    caller's transaction, and a failure reaches the caller."""
    db = Session.object_session(script)
    if db is None or script.id is None or not script.deployment_id:
        raise ValueError("remember_deployment needs a stored script with a deployment")
    if db.get(ScriptDeployment, (script.id, script.deployment_id)) is None:
        db.add(ScriptDeployment(script_id=script.id, deployment_id=script.deployment_id))


def scope(db: Session, script_ids: list[int] | None) -> RunQuery:
    """The query scope for these scripts (None: every script): their deployments when
    ScriptFlow knows one for each of them, else their tags."""
    ids_q = select(Script.id, Script.deployment_id)
    if script_ids is not None:
        if not script_ids:
            return RunQuery(script_ids=[])
        ids_q = ids_q.where(Script.id.in_(script_ids))
    current = db.execute(ids_q).all()
    known: dict[int, set[str]] = {sid: {dep} if dep else set() for sid, dep in current}
    rows = select(ScriptDeployment.script_id, ScriptDeployment.deployment_id)
    if script_ids is not None:
        rows = rows.where(ScriptDeployment.script_id.in_(script_ids))
    for sid, dep in db.execute(rows):
        known.setdefault(sid, set()).add(dep)
    wanted = script_ids if script_ids is not None else list(known)
    complete = bool(wanted) and all(known.get(s) for s in wanted)
    deployments = sorted({UUID(d) for s in wanted for d in known.get(s, ())}) if complete else None
    return RunQuery(script_ids=script_ids, deployment_ids=deployments)


async def read_runs(
    query: RunQuery,
    *,
    limit: int = 20,
    offset: int = 0,
    with_total: bool = True,
    sort: str | None = None,
) -> tuple[list[FlowRun], int]:
    """A page of runs newest first, and the exact total (-1 without `with_total`): the
    history's fast path (history/prefect.py)."""
    return await history_prefect.read_history(
        query, limit=limit, offset=offset, with_total=with_total, sort=sort
    )


async def read_rows(query: RunQuery, *, limit: int = 1000, offset: int = 0) -> list[dict]:
    """Light rows ({"id", "state_type", "timestamp", "duration"}) of up to 1000 runs."""
    return await history_prefect.read_history_light(query, limit=limit, offset=offset)


_caught_up = {"at": 0.0}
CATCH_UP_SECONDS = 3.0


async def catch_up(settings: Settings, *, force: bool = False) -> int:
    """Index finished runs whose output this machine has but the index does not (a worker
    that stopped before indexing, runs from before the index). At most every CATCH_UP_SECONDS."""
    if not force and time.monotonic() - _caught_up["at"] < CATCH_UP_SECONDS:
        return 0
    _caught_up["at"] = time.monotonic()
    missing = await asyncio.to_thread(history_index.unindexed_runs, settings)
    done = 0
    for i in range(0, len(missing), 200):
        part = [UUID(r) for r in missing[i : i + 200]]
        runs, _n = await history_prefect.read_history(
            RunQuery(run_ids=part), limit=len(part), with_total=False
        )
        for fr in runs:
            if status_of(fr.state) not in FINAL:
                continue
            sid = (fr.parameters or {}).get("script_id")
            job = (settings, fr.id)
            kwargs = {
                "script_id": sid if isinstance(sid, int) else None,
                "expected": fr.expected_start_time or fr.created,
            }
            path = history_index.plain_path(settings, fr.id)
            if path.exists() and path.stat().st_size > history_index.SYNC_INDEX_BYTES:
                history_index.indexer.submit(
                    lambda job=job, kwargs=kwargs: history_index.index_run(*job, **kwargs)
                )
            else:
                await asyncio.to_thread(history_index.index_run, *job, **kwargs)
            done += 1
    return done


# -- retention ---------------------------------------------------------------------------


def retention_days(db: Session, settings) -> int:
    row = db.get(AppSetting, RETENTION_KEY)
    if row and isinstance(row.value, dict):
        days = row.value.get("days")
        if isinstance(days, int) and MIN_DAYS <= days <= MAX_DAYS:
            return days
    return settings.retention_days


def set_retention_days(db: Session, days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(days)
    row = db.get(AppSetting, RETENTION_KEY)
    if row is None:
        db.add(AppSetting(key=RETENTION_KEY, value={"days": days}))
    else:
        row.value = {"days": days}


def clean_history(
    settings, db, *, now: datetime | None = None, days: int | None = None, prefect: bool = True
) -> dict[str, Any]:
    """Remove what is older than the retention period: Prefect's flow runs and logs (through
    its API), stored outputs, index rows, left-over working folders and acknowledgements.
    `now` is a parameter so that tests can move the clock. `db` is a `Database`."""
    now = now or datetime.now(UTC)
    if days is not None and (isinstance(days, bool) or not MIN_DAYS <= days <= MAX_DAYS):
        raise ValueError(f"days must be from {MIN_DAYS} to {MAX_DAYS}, not {days!r}")
    with db.session() as s:
        days = days or retention_days(s, settings)
    cutoff = now - timedelta(days=days)
    report: dict[str, Any] = {"at": now.isoformat(), "days": days, "cutoff": cutoff.isoformat()}
    report["prefect_runs"] = history_prefect.delete_old_runs(cutoff) if prefect else 0
    freed = history_index.forget_before(settings, cutoff)
    report.update(indexed_runs=freed["runs"], files=freed["files"], bytes=freed["bytes"])
    report["work_dirs"] = _remove_old_dirs(settings.work_dir, cutoff)
    with db.session() as s:
        # A deleted script's folder is kept as long as its runs are (its data, not ours).
        gone_ids = s.scalars(select(Script.id).where(Script.deleted_at < cutoff))
        report["workspaces"] = forget_workspaces(settings, list(gone_ids))
        gone = s.execute(delete(RunAcknowledgement).where(RunAcknowledgement.at < cutoff))
        report["acknowledgements"] = gone.rowcount or 0
        row = s.get(AppSetting, LAST_CLEAN_KEY)
        if row is None:
            s.add(AppSetting(key=LAST_CLEAN_KEY, value=report))
        else:
            row.value = report
    log.info("history cleaned: %s", report)
    return report


def _remove_old_dirs(root, cutoff: datetime) -> int:
    """A run removes its working folder when it ends; one left by a crash goes here."""
    n = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for e in entries:
        if e.is_dir(follow_symlinks=False) and e.stat().st_mtime < cutoff.timestamp():
            shutil.rmtree(e.path, ignore_errors=True)
            n += 1
    return n


def retention_report(db: Session, settings, script_ids: list[int] | None = None) -> dict[str, Any]:
    """What the Settings page shows: the period, what is kept and how much disk it takes.
    With `script_ids` (a user who is not an administrator: their scripts), the figures of
    those scripts' runs only; the server's totals and the last clean-up are left out."""
    days = retention_days(db, settings)
    common = {
        "days": days,
        "default_days": settings.retention_days,
        "kept_since": datetime.now(UTC) - timedelta(days=days),
    }
    if script_ids is not None:
        return {**common, "own": True, "usage": history_index.disk_usage_of(settings, script_ids)}
    usage = history_index.disk_usage(settings)
    prefect_db = settings.prefect_home / "prefect.db"
    usage["prefect_bytes"] = (
        sum(
            p.stat().st_size
            for p in (prefect_db, prefect_db.with_name("prefect.db-wal"))
            if p.exists()
        )
        if settings.embedded_prefect
        else None
    )
    last = db.get(AppSetting, LAST_CLEAN_KEY)
    return {**common, "own": False, "usage": usage, "last_clean": last.value if last else None}


# -- per-script summary ----------------------------------------------------------------------

_seconds = TypeAdapter(timedelta)


def _duration(value) -> float:
    if isinstance(value, int | float):
        return float(value)
    return _seconds.validate_python(value).total_seconds()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(rows: list[dict[str, Any]], *, now: datetime, zone: str = "UTC") -> dict[str, Any]:
    """Success rates, durations and the 30-day strip from Prefect's light run rows
    ({"id", "state_type", "timestamp", "duration"})."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    first = today - timedelta(days=STRIP_DAYS - 1)
    week_start, month_start = now - timedelta(days=7), now - timedelta(days=30)
    days: dict[date, Counter] = {first + timedelta(days=i): Counter() for i in range(STRIP_DAYS)}
    rate = {7: Counter(), 30: Counter()}
    durations = []
    for row in rows:
        at = datetime.fromisoformat(str(row["timestamp"]).replace("Z", "+00:00"))
        state = row["state_type"]
        day = at.astimezone(tz).date()
        if day in days:
            days[day][state] += 1
        if state not in FINISHED_STATES or at < month_start:
            continue
        for window, counter in rate.items():
            if window == 30 or at >= week_start:
                counter["ok" if state == "COMPLETED" else "failed"] += 1
        if state in ("COMPLETED", "FAILED"):
            durations.append(_duration(row["duration"]))
    strip = []
    for day, counts in days.items():
        finished = sum(counts[s] for s in FINISHED_STATES)
        failed = sum(counts[s] for s in FAILED_STATES)
        outcome = "none" if not finished else "failed" if failed else "succeeded"
        strip.append(
            {
                "day": day,
                "outcome": outcome,
                "runs": sum(counts.values()),
                "finished": finished,
                "failed": failed,
            }
        )

    def ratio(c: Counter) -> float | None:
        total = c["ok"] + c["failed"]
        return c["ok"] / total if total else None

    return {
        "rate_7": ratio(rate[7]),
        "finished_7": rate[7]["ok"] + rate[7]["failed"],
        "rate_30": ratio(rate[30]),
        "finished_30": rate[30]["ok"] + rate[30]["failed"],
        "avg_duration": sum(durations) / len(durations) if durations else None,
        "p95_duration": percentile(durations, 95),
        "strip": strip,
        "runs_30": len(rows),
    }


async def script_summary(
    db: Session, script: Script, *, now: datetime | None = None, zone: str = "UTC"
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    query = scope(db, [script.id])
    query.since = now - timedelta(days=STRIP_DAYS + 1)  # the strip's first local day
    rows: list[dict[str, Any]] = []
    while True:
        batch = await history_prefect.read_history_light(query, limit=1000, offset=len(rows))
        rows += batch
        if len(batch) < 1000:
            break
    summary = summarize(rows, now=now, zone=zone)
    summary["unacknowledged"] = await unacknowledged_failures(db, script, now=now)
    return summary


async def unacknowledged_failures(
    db: Session, script: Script, *, now: datetime | None = None
) -> list[Run]:
    """Failed scheduled runs (and their retries) of the last 30 days nobody acknowledged."""
    now = now or datetime.now(UTC)
    query = scope(db, [script.id])
    query.since = now - timedelta(days=STRIP_DAYS)
    query.statuses = sorted(FAILURES)
    runs, _total = await history_prefect.read_history(query, limit=200, with_total=False)
    runs = [r for r in runs if Trigger.of(r) in (Trigger.SCHEDULED, Trigger.RETRY)]
    if not runs:
        return []
    seen = set(
        db.scalars(
            select(RunAcknowledgement.run_id).where(
                RunAcknowledgement.run_id.in_([str(r.id) for r in runs])
            )
        )
    )
    names = {script.id: script.name}
    return [Run.from_flow_run(r, names) for r in runs if str(r.id) not in seen]


def acknowledge(db: Session, script: Script, user_id: int, run_ids: list[str]) -> int:
    """Acknowledge these failed runs of the script; returns how many were new."""
    have = set(
        db.scalars(select(RunAcknowledgement.run_id).where(RunAcknowledgement.run_id.in_(run_ids)))
    )
    new = [r for r in dict.fromkeys(run_ids) if r not in have]
    for run_id in new:
        db.add(RunAcknowledgement(run_id=run_id, script_id=script.id, user_id=user_id))
    return len(new)
