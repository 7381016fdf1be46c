"""Files a run created or changed in its working folder, kept beside its output file:
copies under `<outputs>/<run id>.files/` and their list in `<outputs>/<run id>.files.json`.
Retention removes them with the run's output (history/retention.py).

Bounded: at most MAX_LISTED files listed, each copied if at most MAX_FILE_BYTES, at most
MAX_RUN_BYTES copied per run; what is left out is listed with the reason (`too_big`,
`over_total`, `unreadable`, `disk_full`: copying it would eat the disk's reserve,
platform/disk_space.py).

Example::

    keep(settings, run_id, cwd, changed, complete=True)
    files, complete = listed(settings, run_id)
    with open_kept(settings, run_id, "report.csv") as f: ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from scriptflow_prefect.execution import nofollow
from scriptflow_prefect.platform.disk_space import check_room, is_full

MAX_LISTED = 1000
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_RUN_BYTES = 50 * 1024 * 1024
_SAFE_RUN_ID = set("0123456789abcdef-")


def _checked(run_id: str) -> str:
    run_id = str(run_id)
    if not run_id or set(run_id) - _SAFE_RUN_ID:
        raise ValueError(f"not a run id: {run_id!r}")
    return run_id


def files_dir(settings, run_id: str) -> Path:
    return Path(settings.outputs_dir) / f"{_checked(run_id)}.files"


def index_path(settings, run_id: str) -> Path:
    return Path(settings.outputs_dir) / f"{_checked(run_id)}.files.json"


def keep(settings, run_id: str, cwd: Path, changed: list[nofollow.Entry], complete: bool) -> int:
    """Copy what the run changed and write its list; the number of files listed."""
    if not changed and complete:
        return 0
    target = files_dir(settings, run_id)
    room = MAX_RUN_BYTES
    items: list[dict[str, Any]] = []
    for entry in changed[:MAX_LISTED]:
        item: dict[str, Any] = {"name": entry.name, "size": entry.size, "stored": False}
        if entry.size > MAX_FILE_BYTES:
            item["reason"] = "too_big"
        elif entry.size > room:
            item["reason"] = "over_total"
        else:
            try:
                with nofollow.open_file(cwd, entry.name) as f:
                    data = f.read(min(MAX_FILE_BYTES, room) + 1)
                if len(data) > min(MAX_FILE_BYTES, room):  # it grew since the scan
                    item["reason"] = "too_big" if len(data) > MAX_FILE_BYTES else "over_total"
                else:
                    check_room(Path(settings.outputs_dir), len(data))
                    nofollow.write_file(target, entry.name, data)
                    item.update(size=len(data), stored=True)
                    room -= len(data)
            except OSError as exc:
                item["reason"] = "disk_full" if is_full(exc) else "unreadable"
        items.append(item)
    index = {"files": items, "complete": complete and len(changed) <= MAX_LISTED}
    path = index_path(settings, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(json.dumps(index), encoding="utf-8")
        os.replace(temp, path)
    except OSError:  # no list, no half list: the copies go with the run's output
        temp.unlink(missing_ok=True)
        raise
    return len(items)


def listed(settings, run_id: str) -> tuple[list[dict[str, Any]], bool]:
    """The run's files as kept (none when it kept none or ran on another machine)."""
    try:
        data = json.loads(index_path(settings, run_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], True
    if not isinstance(data, dict):
        return [], True
    files = [
        {
            "name": f["name"],
            "size": f["size"],
            "stored": bool(f.get("stored")),
            "reason": f.get("reason") if isinstance(f.get("reason"), str) else None,
        }
        for f in data.get("files") or []
        if isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("size"), int)
    ]
    return files, bool(data.get("complete", True))


def open_kept(settings, run_id: str, name: str) -> BinaryIO:
    """A kept copy; FileNotFoundError for a name the run's list does not hold as stored."""
    files, _complete = listed(settings, run_id)
    if not any(f["name"] == name and f.get("stored") for f in files):
        raise FileNotFoundError(name)
    return nofollow.open_file(files_dir(settings, run_id), name)


def remove(settings, run_id: str) -> tuple[int, int]:
    """Delete a run's kept files and list: (files removed, bytes freed)."""
    count = size = 0
    folder = files_dir(settings, run_id)
    for root, _dirs, names in os.walk(folder):
        for n in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(root, n)).st_size
                count += 1
    shutil.rmtree(folder, ignore_errors=True)
    index = index_path(settings, run_id)
    with contextlib.suppress(FileNotFoundError):
        size += index.stat().st_size
        index.unlink()
        count += 1
    return count, size
