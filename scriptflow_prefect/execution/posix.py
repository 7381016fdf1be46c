"""The POSIX half of execution: process groups, poll()ed pipes, flock. Imported on POSIX only.

Its names match `windows.py`: `ProcessTree`, `file_lock`, `try_file_lock`, `read_pipe`,
`popen_arguments`."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from scriptflow_prefect.execution.sandbox import Sandbox, sandboxed

if sys.platform != "win32":
    from scriptflow_prefect.execution.run_as import (
        account_env,
        find_account,
        give_folders,
        switch_user,
    )

# Imported on POSIX only; mypy --platform win32 skips the rest of this module.
assert sys.platform != "win32"

KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.1
READ_CHUNK = 1 << 20
PIPE_BYTES = 1 << 20
BATCH_BYTES = 1 << 16
BATCH_WAIT_SECONDS = 0.002
_DESCENDANT_SCAN_SECONDS = 1.0


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) against other processes."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """`file_lock` without waiting: yields True holding the lock, False if another has it."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def popen_arguments(
    argv: list[str], env: dict[str, str], sandbox: Sandbox | None, run_as: str | None
) -> tuple[list[str], dict[str, Any]]:
    """The command and Popen options: the script leads a session (and group) of its own, in
    its sandbox, as its account (whose HOME, USER and LOGNAME go into `env`); the account is
    given the run's folders first. Raises UnknownAccount."""
    options: dict[str, Any] = {"start_new_session": True}
    prefix: list[str] = []
    if run_as:
        account = find_account(run_as)
        if sandbox is not None:
            give_folders(account, sandbox.managed(), list(sandbox.read_only), list(sandbox.hidden))
        prefix, switch = switch_user(account)
        options.update(switch)
        account_env(env, account)
    command = [*prefix, *sandboxed(argv, sandbox)]
    if shutil.which(command[0], path=env.get("PATH")) is None:
        return command, options  # Popen's own error says what cannot start
    return [*_die_with_parent(), *command], options


@functools.cache
def _die_with_parent() -> list[str]:
    """The prefix that makes the script's own process get SIGKILL when the thread that
    started it ends (Linux PR_SET_PDEATHSIG, through util-linux's `setpriv`), or none.

    That thread is the run's (process.py waits on the script, then kills its tree), so the
    signal only comes if the worker dies first (SIGKILL, a crash). `setpriv` runs after Popen
    dropped to a run-as account's uid (a credential change clears the setting) and execs the
    command in the same process. An exec of a set-uid program (sudo) clears it too: then
    runs/recovery.py stops the script at the next start, as it does with grandchildren,
    which this does not cover. Not a `preexec_fn`: that makes Popen fork() instead of
    vfork(), measured 2.8 -> 160-320 ms a start for a 250 MB worker on a loaded machine
    (setpriv: 3.7 ms)."""
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    try:
        usage = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"] if "--pdeathsig" in usage else []


def read_pipe(fd: int, feed: Callable[[bytes], None], stop: threading.Event) -> None:
    """Feed what the pipe gives until EOF, or until `stop` (then what is already in it)."""
    _enlarge_pipe(fd)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while not stop.is_set():
        if not poller.poll(POLL_SECONDS * 1000):
            continue
        data = os.read(fd, READ_CHUNK)
        if not data:
            return
        feed(data)
        if len(data) < BATCH_BYTES:
            # A flood of short writes would otherwise be read a few hundred bytes at a time,
            # and the per-read cost would dominate; a few ms let a batch gather.
            time.sleep(BATCH_WAIT_SECONDS)
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError):
        while data := os.read(fd, READ_CHUNK):
            feed(data)


def _enlarge_pipe(fd: int) -> None:
    # Room for the batching wait above: a 64 KiB pipe would stall a fast writer meanwhile.
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


class ProcessTree:
    """The script's session and every descendant seen, and the means to kill all of it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._known: dict[int, psutil.Process] = {}
        self._last_scan = 0.0

    def track(self) -> None:
        """Remember descendants now and then, so that one that later leaves the session (a
        daemon) is still known when it is time to kill the tree."""
        now = time.monotonic()
        if now - self._last_scan < _DESCENDANT_SCAN_SECONDS:
            return
        self._last_scan = now
        self._remember_descendants()

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._remember_descendants()
        group = self._proc.pid  # start_new_session: the script leads its own session and group
        if not self._survivors(group) and self._proc.poll() is not None:
            return
        self._signal_all(group, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < deadline:
            if self._proc.poll() is not None and not self._survivors(group):
                return
            time.sleep(0.05)
        self._signal_all(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        psutil.wait_procs(self._survivors(group), timeout=5)

    def close(self) -> None:
        """Nothing to release on POSIX."""

    def _remember_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self._proc.pid).children(recursive=True):
                self._known.setdefault(child.pid, child)

    def _signal_all(self, group: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        for process in self._survivors(group):
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)

    def _survivors(self, group: int) -> list[psutil.Process]:
        """Live processes of the script's session or group, and known descendants, except the
        script itself (subprocess must reap that one to keep its exit code)."""
        found = {pid: p for pid, p in self._known.items() if pid != self._proc.pid}
        for process in psutil.process_iter():
            if process.pid in found or process.pid == self._proc.pid:
                continue
            try:
                if os.getsid(process.pid) == group or os.getpgid(process.pid) == group:
                    found[process.pid] = process
            except OSError:
                continue
        return [p for p in found.values() if _alive(p) and not _is_shared_wineserver(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        # Zombies are dead: on machines whose PID 1 does not reap them they stay forever.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_shared_wineserver(process: psutil.Process) -> bool:
    # The first wine call of a prefix starts wineserver, which then serves every later run.
    try:
        return process.name().startswith("wineserver")
    except psutil.Error:
        return False
