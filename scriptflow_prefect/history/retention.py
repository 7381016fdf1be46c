"""How long run history is kept: the period as the Settings page stores it (an AppSetting),
readable without importing Prefect (`scriptflow up` reads it before Prefect's server and client
are set up); forgetting what is older; what the history takes on disk."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from scriptflow_prefect.history import run_files
from scriptflow_prefect.history.catalog import (
    catalog,
    day_of,
    forget_day_file,
    gz_path,
    history_dir,
    plain_path,
)
from scriptflow_prefect.platform.db import make_engine

RETENTION_KEY = "retention"
MIN_DAYS, MAX_DAYS = 1, 3650


def stored_retention_days(settings) -> int | None:
    """The Settings page's period in days, or None if it was never set (or no database)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(
                text("SELECT value FROM app_settings WHERE key = :k"), {"k": RETENTION_KEY}
            ).scalar()
    except Exception:  # no database or no table yet (first start)
        return None
    finally:
        engine.dispose()
    if isinstance(value, str):
        value = json.loads(value)
    days = value.get("days") if isinstance(value, dict) else None
    return days if isinstance(days, int) and MIN_DAYS <= days <= MAX_DAYS else None


def forget_before(settings, cutoff: datetime) -> dict:
    """Drop index rows, day files and stored outputs of runs expected before `cutoff`.
    Output files the index never saw go by their modification time."""
    freed = {"runs": 0, "files": 0, "bytes": 0}
    d = history_dir(settings)
    ts = cutoff.timestamp()
    if (d / "catalog.db").exists():
        cat = catalog(settings)
        try:
            old = cat.execute("SELECT seq, run_id FROM runs WHERE expected < ?", (ts,)).fetchall()
            for _seq, run_id in old:
                freed["bytes"] += _remove_outputs(settings, run_id, freed)
            cat.execute("BEGIN IMMEDIATE")
            for i in range(0, len(old), 500):
                part = [s for s, _r in old[i : i + 500]]
                marks = ",".join("?" * len(part))
                cat.execute(f"DELETE FROM blocks WHERE seq IN ({marks})", part)
                cat.execute(f"DELETE FROM runs WHERE seq IN ({marks})", part)
            cat.execute("COMMIT")
            freed["runs"] = len(old)
        finally:
            cat.close()
        last_day = day_of(cutoff - timedelta(days=1))
        for p in d.glob("fts-*.db"):
            if p.name[4:14] <= last_day:
                for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                    with contextlib.suppress(FileNotFoundError):
                        freed["bytes"] += f.stat().st_size
                        f.unlink()
                        freed["files"] += 1
                forget_day_file(p)
    with contextlib.suppress(FileNotFoundError), os.scandir(settings.outputs_dir) as entries:
        for e in entries:
            if e.is_file() and e.stat().st_mtime < ts:
                freed["bytes"] += e.stat().st_size
                os.unlink(e.path)
                freed["files"] += 1
            elif e.name.endswith(".files") and e.is_dir(follow_symlinks=False):
                if e.stat(follow_symlinks=False).st_mtime < ts:  # a run's kept files
                    shutil.rmtree(e.path, ignore_errors=True)
                    freed["files"] += 1
    return freed


def _remove_outputs(settings, run_id: str, freed: dict) -> int:
    count, n = run_files.remove(settings, run_id)  # files the run made, kept beside it
    freed["files"] += count
    for p in (plain_path(settings, run_id), gz_path(settings, run_id)):
        with contextlib.suppress(FileNotFoundError):
            n += p.stat().st_size
            p.unlink()
            freed["files"] += 1
    return n


def disk_usage(settings) -> dict:
    """What ScriptFlow keeps of run history on this machine, in bytes and counts."""
    out: dict[str, Any] = {
        "outputs_bytes": 0,
        "outputs_files": 0,
        "index_bytes": 0,
        "runs_indexed": 0,
        "oldest": None,
        "work_bytes": 0,
    }
    with contextlib.suppress(FileNotFoundError):
        for root, _dirs, files in os.walk(settings.outputs_dir):  # with the runs' kept files
            for f in files:
                with contextlib.suppress(OSError):
                    out["outputs_bytes"] += os.lstat(os.path.join(root, f)).st_size
                    out["outputs_files"] += 1
    d = history_dir(settings)
    if d.exists():
        for p in d.iterdir():
            out["index_bytes"] += p.stat().st_size
        if (d / "catalog.db").exists():
            cat = catalog(settings)
            try:
                n, oldest = cat.execute(
                    "SELECT count(*), min(expected) FROM runs WHERE state = 'indexed'"
                ).fetchone()
            finally:
                cat.close()
            out["runs_indexed"] = n
            out["oldest"] = datetime.fromtimestamp(oldest, UTC) if oldest else None
    with contextlib.suppress(FileNotFoundError):
        for root, _dirs, files in os.walk(settings.work_dir):
            for f in files:
                with contextlib.suppress(OSError):
                    out["work_bytes"] += os.lstat(os.path.join(root, f)).st_size
    return out


def disk_usage_of(settings, script_ids: list[int]) -> dict:
    """The run history of these scripts only (what a user who is not an administrator may
    see of it): their indexed runs, the bytes of their stored outputs, the oldest."""
    out: dict[str, Any] = {"outputs_bytes": 0, "runs_indexed": 0, "oldest": None}
    if not script_ids or not (history_dir(settings) / "catalog.db").exists():
        return out
    cat = catalog(settings)
    try:
        for i in range(0, len(script_ids), 500):
            part = script_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            n, stored, oldest = cat.execute(
                "SELECT count(*), coalesce(sum(stored_bytes), 0), min(expected) FROM runs "
                f"WHERE state = 'indexed' AND script_id IN ({marks})",
                part,
            ).fetchone()
            out["runs_indexed"] += n
            out["outputs_bytes"] += stored
            if oldest is not None:
                when = datetime.fromtimestamp(oldest, UTC)
                out["oldest"] = min(out["oldest"] or when, when)
    finally:
        cat.close()
    return out


def forget_workspaces(settings, script_ids: list[int]) -> int:
    """Remove the folders of these (deleted) scripts; how many there were."""
    n = 0
    for script_id in script_ids:
        folder = Path(settings.workspaces_dir) / str(int(script_id))
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            n += 1
    return n
