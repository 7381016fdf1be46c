"""A child process that does not outlive the process that started it.

Prefect's server runs in a process of its own. When `scriptflow up` is killed (SIGKILL, the
OOM killer, a crash), nothing of it may stay behind holding the port and the database; so the
child is tied to its parent three ways:

- Linux: the child asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG). The kernel sends
  it when the *thread* that started the child ends, so the parent starts it from its main
  thread, which lives as long as the process.
- POSIX: the child watches a pipe whose only writer is the parent: end of file means the
  parent is gone, whatever killed it.
- Windows: the child is put in a Job Object that kills its processes when its last handle
  closes, which Windows does when the parent ends.

Parent side (on the main thread)::

    line = Lifeline()
    proc = subprocess.Popen(cmd, env={**env, **line.env()}, **line.popen_options())
    line.hold(proc)      # keep `line` as long as the child may live; line.release() after

Child side, first thing::

    on_parent_exit(stop)     # `stop()` is called (on a thread) once the parent is gone
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

if sys.platform == "win32":
    from scriptflow_prefect.platform.windows_job import Job

PIPE_VARIABLE = "SCRIPTFLOW_LIFELINE_FD"
PARENT_VARIABLE = "SCRIPTFLOW_LIFELINE_PARENT"
_PR_SET_PDEATHSIG = 1


class Lifeline:
    """The parent's end: a pipe's writing end (POSIX), a kill-on-close Job Object (Windows)."""

    def __init__(self) -> None:
        self._read = self._write = -1
        self._job: Any = None
        if sys.platform != "win32":
            # Not inheritable (PEP 446): only the child given `pass_fds` gets the reading end,
            # so no script started later holds the line open.
            self._read, self._write = os.pipe()

    def env(self) -> dict[str, str]:
        env = {PARENT_VARIABLE: str(os.getpid())}
        if self._read >= 0:
            env[PIPE_VARIABLE] = str(self._read)
        return env

    def popen_options(self) -> dict[str, Any]:
        return {"pass_fds": (self._read,)} if self._read >= 0 else {}

    def hold(self, proc: subprocess.Popen[bytes]) -> None:
        """Once the child started: the reading end is the child's alone; on Windows the child
        goes into a job that dies with this process."""
        if self._read >= 0:
            os.close(self._read)
            self._read = -1
        if sys.platform == "win32":
            self._job = Job.for_process(proc.pid)

    def release(self) -> None:
        """The child has been stopped: let go of the line."""
        for fd in (self._read, self._write):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1
        if self._job is not None:
            self._job.close()
            self._job = None


def on_parent_exit(stop: Callable[[], None]) -> None:
    """In a child started with a `Lifeline`: call `stop` once its parent is gone. Nothing
    happens in a process started otherwise (by hand, by a test)."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    fd = os.environ.pop(PIPE_VARIABLE, None)  # the child's own children are not tied to it
    if parent is None or sys.platform == "win32":
        return  # Windows: the job does it
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if fd is not None:
        threading.Thread(
            target=_watch, args=(int(fd), stop), daemon=True, name="scriptflow-lifeline"
        ).start()
    if os.getppid() != int(parent):  # it died before the line was set
        stop()


def _watch(fd: int, stop: Callable[[], None]) -> None:
    try:
        while os.read(fd, 512):  # the parent never writes: this returns at end of file
            pass
    except OSError:
        pass
    stop()
