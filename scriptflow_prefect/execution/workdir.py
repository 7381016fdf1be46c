"""A run's working folder: made empty before, removed after, whatever the script left in it."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path


def fresh_workdir(root: Path, run_id: str) -> Path:
    """An empty directory ``root/run_id`` (whatever was there before is removed)."""
    if not run_id or run_id in {".", ".."} or any(sep in run_id for sep in "/\\:"):
        raise ValueError(f"Unusable run id for a directory name: {run_id!r}")
    path = Path(root).absolute() / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_workdir(path)
    path.mkdir()
    return path


def remove_workdir(path: Path, *, attempts: int = 5) -> None:
    """Remove a directory tree; read-only files and short-lived Windows locks don't stop it."""
    path = Path(path)
    for attempt in range(attempts):
        if not os.path.lexists(path):
            return
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            elif sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=_make_writable_and_retry)
            else:
                shutil.rmtree(path, onerror=_make_writable_and_retry)
            return
        except OSError:
            # On Windows a just-killed process or a virus scanner may hold a file a moment.
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _make_writable_and_retry(function: Callable[[str], object], path: str, _exc: object) -> None:
    os.chmod(path, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
    parent = os.path.dirname(path)
    if parent and sys.platform != "win32":
        # Deleting an entry needs write permission on the directory holding it.
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
    function(path)
