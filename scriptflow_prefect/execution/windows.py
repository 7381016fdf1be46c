"""The Windows half of execution: Job Objects, blocking pipe reads, msvcrt locks, cmd quoting.

Imported on Windows only. Its names match `posix.py`: `ProcessTree`, `file_lock`,
`try_file_lock`, `read_pipe`, `popen_arguments`; and `console_codepage` for .bat output."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import msvcrt
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scriptflow_prefect.execution.models import ScriptStartError
from scriptflow_prefect.execution.sandbox import Sandbox

if sys.platform == "win32":  # as this whole module (the assert below is for mypy)
    from scriptflow_prefect.platform.windows_job import Job

# Imported on Windows only; mypy --platform linux skips the rest of this module.
assert sys.platform == "win32"

READ_CHUNK = 1 << 20


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) against other processes."""
    with open(path, "a+b") as handle:
        handle.seek(0)  # msvcrt locks bytes from the current position
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                break
            except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                continue
        try:
            yield
        finally:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """`file_lock` without waiting: yields True holding the lock, False if another has it."""
    with open(path, "a+b") as handle:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def console_codepage(named: int | None) -> str:
    """The code page cmd.exe writes a .bat's output to a pipe in: the console's, which starts
    as the OEM one and which the last `chcp N` of the file (`named`) sets. 65001 is UTF-8,
    which the decoder tries first anyway: lines before that chcp are still OEM."""
    if named is not None and named != 65001:
        try:
            return codecs.lookup(f"cp{named}").name
        except LookupError:
            pass
    return "cp" + str(ctypes.windll.kernel32.GetOEMCP())


def popen_arguments(
    argv: list[str], env: dict[str, str], sandbox: Sandbox | None, run_as: str | None
) -> tuple[list[str] | str, dict[str, Any]]:
    """The command and Popen options: no console window on a service, a group of its own.

    Windows has no Landlock: `sandbox` is not enforced here (sandbox_state says so, and
    /health shows it). Another account (`run_as`) is started by `windows_logon`, with its
    password, not by Popen: process.py calls this for its command line only."""
    if run_as:
        raise ScriptStartError(f"Running a script as {run_as!r} needs windows_logon")
    flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    command: list[str] | str = argv
    if os.path.basename(argv[0]).lower() in {"cmd", "cmd.exe"}:
        # cmd /c strips the first and last quote of its command when there are more than two,
        # so doubling them keeps a path with spaces or & ( ) ^ in it intact.
        command = subprocess.list2cmdline(argv[:-1]) + ' ""' + argv[-1] + '""'
    return command, {"creationflags": flags}


def read_pipe(fd: int, feed: Callable[[bytes], None], stop: threading.Event) -> None:
    """Feed what the pipe gives until EOF. Windows pipes cannot be polled, so `stop` is not
    looked at: the Job Object kill closes every writer instead."""
    while data := os.read(fd, READ_CHUNK):
        feed(data)


class ProcessTree:
    """The script and everything it starts, in one Job Object."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        # A process started as another account comes in its job already (windows_logon.py).
        self._job: Job | None = getattr(proc, "job", None) or Job.for_process(proc.pid)

    def track(self) -> None:
        """Nothing to do: the Job Object holds every descendant."""

    def kill(self) -> None:
        if self._job is not None and self._job.terminate():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            return
        if self._proc.poll() is None:
            # No Job Object (assigning can fail on old systems): let taskkill walk the tree.
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(self._proc.pid)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None
