"""Where a run's script sits and which folder it starts in, per the script's working folder:

- `script` (default): `<home>/workspaces/<script id>/`, kept between runs; the version's files
  are written there under their own names before each run (other files stay), and the run
  starts there: relative paths, `__file__` and `%~dp0` all mean that folder. Runs of the same
  script at the same time share it.
- `path`: the script's files go to that same folder of its own; the run starts in the given
  absolute folder (Task Scheduler's "Start in"), made if missing. ScriptFlow's home, or a
  folder holding it, is refused: a run's changed files are shown to the script's owner.
- `fresh`: an empty folder in the run's own folder (the files beside it, in a sibling
  folder), removed with it after the run.

What a run created or changed is found by comparing names, sizes and modification times of
the folder it started in before and after (`snapshot`, `changed_since`).

Example::

    place = prepare("script", None, run_root=fresh_workdir(home / "work", run_id),
                    workspaces=home / "workspaces", home=home, script_id=7)
    write_files(place.script_dir, [("job.py", b"..."), ("conf/settings.ini", b"...")])
    before = snapshot(place.cwd)
    ...  # the run
    entries, complete = changed_since(before, place.cwd)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from scriptflow_prefect.execution import nofollow

SCAN_LIMIT = 10_000  # entries looked at (files and folders), before and after a run
# A file the first scan did not reach counts as new if it was modified after the run began.
_CLOCK_SLACK_NS = 2_000_000_000


class WorkingFolderError(RuntimeError):
    """The working folder cannot be used on this worker; the message says why."""


@dataclass(frozen=True)
class Place:
    script_dir: Path  # the version's files are written here
    cwd: Path  # the run starts here
    created: bool = False  # path: the folder did not exist and was made

    def beyond(self, run_root: Path) -> tuple[Path, ...]:
        """Its folders outside the run's own folder (the sandbox lets the run write there)."""
        outside = [
            p for p in (self.script_dir, self.cwd) if p != run_root and run_root not in p.parents
        ]
        return tuple(dict.fromkeys(outside))


def overlaps(path: str | Path, home: Path) -> bool:
    """True when `path` is ScriptFlow's home, inside it, or a folder that holds it."""
    p = os.path.normcase(os.path.normpath(str(path)))
    h = os.path.normcase(os.path.normpath(str(home)))
    return (
        p == h or p.startswith(h.rstrip(os.sep) + os.sep) or h.startswith(p.rstrip(os.sep) + os.sep)
    )


def is_absolute_here(path: str) -> bool:
    """Absolute on this machine: `D:\\backups` is not, on a Linux worker."""
    pure = PureWindowsPath(path) if os.name == "nt" else PurePosixPath(path)
    return pure.is_absolute()


def prepare(
    mode: str,
    path: str | None,
    *,
    run_root: Path,
    workspaces: Path,
    home: Path,
    script_id: int,
) -> Place:
    """Where the run's files go and where it starts; `run_root` is the run's own (empty)
    folder, removed after the run by the caller."""
    if mode == "fresh":
        (run_root / "script").mkdir()
        (run_root / "cwd").mkdir()
        return Place(run_root / "script", run_root / "cwd")
    folder = Path(workspaces) / str(int(script_id))
    folder.mkdir(parents=True, exist_ok=True)
    if mode != "path":
        return Place(folder, folder)
    if not path or not is_absolute_here(path):
        raise WorkingFolderError(f"{path!r} is not an absolute folder on this worker ({os.name})")
    cwd = Path(path)
    created = not cwd.exists()
    try:
        cwd.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkingFolderError(f"{path} cannot be made: {exc.strerror or exc}") from None
    if not cwd.is_dir():
        raise WorkingFolderError(f"{path} is not a folder")
    if overlaps(os.path.realpath(cwd), home):
        raise WorkingFolderError(f"{path} is ScriptFlow's home or holds it")
    return Place(folder, cwd, created=created)


def write_files(folder: Path, files: list[tuple[str, bytes]]) -> None:
    """Each file under its own name; a file that already holds those bytes is left as is
    (its modification time too)."""
    for name, data in files:
        nofollow.write_file(folder, name, data)


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, tuple[int, int]]  # name -> (size, mtime_ns)
    complete: bool
    taken_ns: int


def snapshot(cwd: Path) -> Snapshot:
    taken = time.time_ns()
    entries, complete = nofollow.scan(cwd, SCAN_LIMIT)
    return Snapshot({e.name: (e.size, e.mtime_ns) for e in entries}, complete, taken)


def changed_since(before: Snapshot, cwd: Path) -> tuple[list[nofollow.Entry], bool]:
    """Files created or changed in `cwd` since `before`, and whether both scans saw all."""
    after, complete = nofollow.scan(cwd, SCAN_LIMIT)
    found = []
    for e in after:
        old = before.files.get(e.name)
        if old is None:
            if before.complete or e.mtime_ns >= before.taken_ns - _CLOCK_SLACK_NS:
                found.append(e)
        elif old != (e.size, e.mtime_ns):
            found.append(e)
    return found, complete and before.complete
