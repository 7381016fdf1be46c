"""The environments folder (`<home>/envs/`) and the files kept beside each environment.

envs/<key>/              an environment, complete (renamed into place when built), read-only
envs/<key>.json          what it holds: the pinned set, when it was built
envs/<key>.log           its install log (uv's own words)
envs/<key>.lock          held while it is built, and by the garbage collection
envs/<key>.used          touched by every run that uses it
envs/<key>.failed        its last build failed (the log says why); a run tries again
envs/.build-<key>-<rand> an environment being built
envs/resolved/<spec>.json  a spec's pinned set (or why it could not be resolved)
envs/scripts/<id>.json   the spec a script's current requirements make (kept by the GC)
envs/leases/<key>/       one locked file per run using the environment
envs/cache/              uv's cache (the environments' files are hard links into it)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scriptflow_prefect.environments.models import WaitCancelled

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import file_lock, try_file_lock
else:
    from scriptflow_prefect.execution.posix import file_lock, try_file_lock

KEY = re.compile(r"^[0-9a-f]{16}$")
LOCK_POLL_SECONDS = 0.1


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def resolved_dir(self) -> Path:
        return self.root / "resolved"

    @property
    def scripts_dir(self) -> Path:
        return self.root / "scripts"

    @property
    def leases_dir(self) -> Path:
        return self.root / "leases"

    def env_dir(self, key: str) -> Path:
        return self.root / key

    def lock(self, kind: str, name: str) -> Path:
        """The lock for building environment `name` (kind "build") or resolving spec `name`
        (kind "resolve")."""
        return self.root / "locks" / f"{kind}-{name[:2]}.lock"

    def beside(self, key: str, suffix: str) -> Path:
        """`<key>.json`, `.log`, `.used` or `.failed`."""
        return self.root / f"{key}.{suffix}"

    def build_dir(self, key: str) -> Path:
        return self.root / f".build-{key}-{uuid.uuid4().hex[:8]}"

    def resolution(self, spec_digest: str) -> Path:
        return self.resolved_dir / f"{spec_digest}.json"

    def pointer(self, script_id: int) -> Path:
        return self.scripts_dir / f"{int(script_id)}.json"

    def keys(self) -> list[str]:
        """Every environment that is there, complete."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if KEY.match(p.name) and p.is_dir())

    def ensure(self) -> None:
        for folder in (self.root, self.resolved_dir, self.scripts_dir, self.leases_dir):
            folder.mkdir(parents=True, exist_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Written whole or not at all: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def waiting_lock(path: Path, cancel: threading.Event | None = None) -> Iterator[None]:
    """Hold the lock on `path`, waiting for it; WaitCancelled if `cancel` is set meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if cancel is None:
        with file_lock(path):
            yield
        return
    while True:
        with try_file_lock(path) as held:
            if held:
                yield
                return
        if cancel.wait(LOCK_POLL_SECONDS):
            raise WaitCancelled()


def is_locked(path: Path) -> bool:
    """Someone holds the lock on `path` now (a build is going on)."""
    if not path.exists():
        return False
    with try_file_lock(path) as held:
        return not held


@contextlib.contextmanager
def lease(layout: Layout, key: str) -> Iterator[None]:
    """Mark the environment as used by this run until the block ends (a locked file).

    The garbage collection removes a lease file only once it could lock it (its run is
    gone). A lease file it removed between our creating and locking it is found missing
    after the lock, and made again."""
    folder = layout.leases_dir / key
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.lock"
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(file_lock(path))
            except FileNotFoundError:  # the collection removed the empty folder meanwhile
                continue
            if not path.exists():
                continue
            try:
                yield
            finally:
                held.close()  # unlocked first: Windows cannot remove an open file
                with contextlib.suppress(OSError):
                    path.unlink()
            return


def in_use(layout: Layout, key: str) -> bool:
    """A run holds a lease on the environment; leases left by dead runs are removed."""
    folder = layout.leases_dir / key
    if not folder.is_dir():
        return False
    for path in folder.iterdir():
        with try_file_lock(path) as held:
            if not held:
                return True
            try:
                path.unlink()
            except OSError:  # Windows: open by a run that is just starting
                return True
    return False


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    try:
        os.utime(path, (now, now))
    except FileNotFoundError:
        path.touch()


def age_seconds(path: Path, now: float) -> float | None:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return None
