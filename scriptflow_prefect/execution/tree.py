"""A script's process tree, killed as a whole: the one place that chooses the OS's way.

POSIX: the script leads a new session; the kill signals its group and every descendant seen
(`posix.ProcessTree`). Windows: a Job Object holds the tree (`windows.ProcessTree`)."""

from __future__ import annotations

import subprocess
import sys
from typing import Protocol

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import ProcessTree as _OsProcessTree
else:
    from scriptflow_prefect.execution.posix import ProcessTree as _OsProcessTree


class ProcessTree(Protocol):
    def track(self) -> None:
        """Called every poll while the script runs: remember descendants that may escape."""

    def kill(self) -> None:
        """Stop every process of the tree (the script included) and wait for them."""

    def close(self) -> None:
        """Release what the tree holds; called once, after `kill`."""


def process_tree(proc: subprocess.Popen[bytes]) -> ProcessTree:
    """The tree of a process started with the options of `popen_arguments` (process.py)."""
    return _OsProcessTree(proc)
