"""Garbage collection of environments: at the worker's start and daily (clean_history).

An environment is removed when no script's current requirements make it (envs/scripts/)
and no run has used it for KEEP_DAYS days, and never while a run holds a lease on it or a
build holds its lock. Resolutions no script points at go after KEEP_DAYS too (a script that
comes back resolves again), and so do builds left half-done by a crash."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from scriptflow_prefect.environments.layout import (
    KEY,
    Layout,
    age_seconds,
    in_use,
    read_json,
    try_file_lock,
)
from scriptflow_prefect.execution.workdir import remove_workdir

KEEP_DAYS = 14
DAY = 24 * 3600


def wanted(layout: Layout) -> tuple[set[str], set[str]]:
    """(environment keys, spec digests) that scripts' current requirements make."""
    keys, specs = set(), set()
    if layout.scripts_dir.is_dir():
        for pointer in layout.scripts_dir.glob("*.json"):
            spec = (read_json(pointer) or {}).get("spec")
            if not isinstance(spec, str):
                continue
            specs.add(spec)
            key = (read_json(layout.resolution(spec)) or {}).get("key")
            if isinstance(key, str):
                keys.add(key)
    return keys, specs


def collect_garbage(
    layout: Layout, *, now: float | None = None, keep_days: int = KEEP_DAYS
) -> dict[str, object]:
    """Remove what is no longer wanted; say what went and how many bytes that freed."""
    now = time.time() if now is None else now
    keep = keep_days * DAY
    keys, specs = wanted(layout)
    removed: list[str] = []
    freed = 0
    for key in _known_keys(layout):
        if key in keys or _recently_used(layout, key, now, keep):
            continue
        with try_file_lock(layout.lock("build", key)) as held:
            if not held or in_use(layout, key):
                continue  # being built, or a run is using it
            freed += _size(layout.env_dir(key))
            remove_workdir(layout.env_dir(key))
            for suffix in ("json", "log", "used", "failed"):
                layout.beside(key, suffix).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                shutil.rmtree(layout.leases_dir / key)
            removed.append(key)
    _drop_old_resolutions(layout, specs, now, keep)
    _drop_stale_builds(layout, now)
    return {"removed": removed, "bytes": freed}


def _known_keys(layout: Layout) -> list[str]:
    """Environments, and failed builds that left only their log."""
    if not layout.root.is_dir():
        return []
    names = {p.name.split(".")[0] for p in layout.root.iterdir()}
    return sorted(n for n in names if KEY.match(n))


def _recently_used(layout: Layout, key: str, now: float, keep: float) -> bool:
    ages = [age_seconds(layout.beside(key, s), now) for s in ("used", "json", "log")]
    return any(a is not None and a < keep for a in ages)


def _drop_old_resolutions(layout: Layout, specs: set[str], now: float, keep: float) -> None:
    if not layout.resolved_dir.is_dir():
        return
    for path in layout.resolved_dir.glob("*.json"):
        age = age_seconds(path, now)
        if path.stem not in specs and age is not None and age > keep:
            path.unlink(missing_ok=True)


def _drop_stale_builds(layout: Layout, now: float) -> None:
    """`.build-*` folders of builds that died (a live build is younger than a day)."""
    if not layout.root.is_dir():
        return
    for path in layout.root.glob(".build-*"):
        age = age_seconds(path, now)
        if age is not None and age > DAY:
            with contextlib.suppress(OSError):
                remove_workdir(path)


def _size(folder: Path) -> int:
    """Bytes of the folder's files; a file hard-linked from uv's cache counts here too."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
