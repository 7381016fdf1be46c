"""The durable record of each run a worker executes: which worker took it, and its script's
process, so that a restart after a crash can stop what was left and end the run.

One small JSON file per run under the worker's home, `<home>/runs/active/<flow_run_id>.json`,
written whole (temporary file + `os.replace`: a crash leaves the old file or the new one):

- written when the worker takes the run, before it tells Prefect (Pending): a run killed
  while pending or preparing (installing packages) is covered;
- given the script's process identity once it exists (`script_started`, from the flow);
- removed when the run ends, whatever the end.

Each record names the worker process that wrote it (pid + start time): a restart reconciles
only the records of worker processes that are gone, never those of another worker alive on
the same home (`leftover`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scriptflow_prefect.execution.leftovers import ProcessIdentity, identity_of

log = logging.getLogger("scriptflow.recovery")
FOLDER = ("runs", "active")


@dataclass(frozen=True)
class ActiveRun:
    flow_run_id: str
    worker: str  # the worker's name in Prefect
    owner: ProcessIdentity  # the worker process
    taken_at: float  # epoch seconds
    script: ProcessIdentity | None  # None until the script's process exists

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow_run_id": self.flow_run_id,
            "worker": self.worker,
            "host": platform.node(),
            "owner": self.owner.to_dict(),
            "taken_at": self.taken_at,
            "script": self.script.to_dict() if self.script else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActiveRun:
        script = data.get("script")
        return cls(
            flow_run_id=str(data["flow_run_id"]),
            worker=str(data["worker"]),
            owner=ProcessIdentity.from_dict(data["owner"]),
            taken_at=float(data["taken_at"]),
            script=ProcessIdentity.from_dict(script) if script else None,
        )


def folder(home: Path) -> Path:
    return Path(home).joinpath(*FOLDER)


def this_process() -> ProcessIdentity:
    me = identity_of(os.getpid())
    assert me is not None  # this process is alive
    return me


def taken(home: Path, flow_run_id: object, worker: str) -> None:
    """The worker takes the run (before Prefect hears of it)."""
    record = ActiveRun(str(flow_run_id), worker, this_process(), time.time(), None)
    _write(home, record)


def script_started(home: Path, flow_run_id: object, pid: int) -> None:
    """The script's process exists: note who it is. Only a run a worker took has a record
    (the flow run another way, e.g. by Prefect's own worker, leaves none)."""
    record = _read(_path(home, str(flow_run_id)))
    identity = identity_of(pid)
    if record is None or identity is None:
        return
    _write(
        home, ActiveRun(record.flow_run_id, record.worker, record.owner, record.taken_at, identity)
    )


def ended(home: Path, flow_run_id: object) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(home, str(flow_run_id)).unlink()


def leftover(home: Path) -> list[ActiveRun]:
    """Records whose worker process is gone (pid AND start time: not a reused pid)."""
    found = []
    for path in sorted(folder(home).glob("*.json")):
        record = _read(path)
        if record is None:
            log.warning("ignoring an unreadable run record %s", path)
            continue
        alive = identity_of(record.owner.pid)
        if alive is None or abs(alive.create_time - record.owner.create_time) > 0.05:
            found.append(record)
    return found


def _path(home: Path, flow_run_id: str) -> Path:
    # A flow run id is a UUID; anything else (a path) would be refused by the caller's
    # Prefect already, and is kept to a plain file name here.
    return folder(home) / f"{Path(flow_run_id).name}.json"


def _read(path: Path) -> ActiveRun | None:
    try:
        return ActiveRun.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(home: Path, record: ActiveRun) -> None:
    path = _path(home, record.flow_run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(record.to_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())  # a power cut must not leave an empty record
    os.replace(temporary, path)
