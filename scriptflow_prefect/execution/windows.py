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
from ctypes import wintypes
from pathlib import Path
from typing import Any

from scriptflow_prefect.execution.models import ScriptStartError
from scriptflow_prefect.execution.sandbox import Sandbox

# Imported on Windows only; mypy --platform linux skips the rest of this module.
assert sys.platform == "win32"

READ_CHUNK = 1 << 20
_JOB_INFO_EXTENDED_LIMITS = 9  # JobObjectExtendedLimitInformation
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
_PROCESS_TERMINATE = 0x0001
_PROCESS_SET_QUOTA = 0x0100


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


class _IoCounters(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            "ReadOperationCount",
            "WriteOperationCount",
            "OtherOperationCount",
            "ReadTransferCount",
            "WriteTransferCount",
            "OtherTransferCount",
        )
    ]


class _JobBasicLimits(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class _JobExtendedLimits(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", _JobBasicLimits),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def _kernel32() -> ctypes.WinDLL:
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.argtypes = [wintypes.LPVOID, wintypes.LPCWSTR]
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.SetInformationJobObject.argtypes = [
        wintypes.HANDLE,
        ctypes.c_int,
        wintypes.LPVOID,
        wintypes.DWORD,
    ]
    kernel32.SetInformationJobObject.restype = wintypes.BOOL
    kernel32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
    kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    kernel32.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
    kernel32.TerminateJobObject.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    kernel32.CloseHandle.restype = wintypes.BOOL
    return kernel32


class Job:
    """A Job Object: terminating it, or closing its handle, kills every process in it."""

    def __init__(self, handle: int) -> None:
        self._handle = handle

    @classmethod
    def for_process(cls, pid: int) -> Job | None:
        # Assigned just after the start, not atomically: a child started in that instant
        # escapes the job (taskkill /T still reaches it while its parent lives). Accepted:
        # an interpreter takes far longer than that to start anything.
        kernel32 = _kernel32()
        process = kernel32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if not process:
            return None
        try:
            return cls.for_handle(process)
        finally:
            kernel32.CloseHandle(process)

    @classmethod
    def for_handle(cls, process: int) -> Job | None:
        """A new job holding the process of this handle (one that may set quota, terminate)."""
        kernel32 = _kernel32()
        job = kernel32.CreateJobObjectW(None, None)
        if not job:
            return None
        info = _JobExtendedLimits()
        info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        ok = kernel32.SetInformationJobObject(
            job, _JOB_INFO_EXTENDED_LIMITS, ctypes.byref(info), ctypes.sizeof(info)
        ) and kernel32.AssignProcessToJobObject(job, process)
        if not ok:
            kernel32.CloseHandle(job)
            return None
        return cls(job)

    def terminate(self) -> bool:
        return bool(self._handle and _kernel32().TerminateJobObject(self._handle, 1))

    def close(self) -> None:
        if self._handle:
            _kernel32().CloseHandle(self._handle)
            self._handle = 0
