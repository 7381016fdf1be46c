"""Run one script version in isolation and stream its output, line by line.

Prefect-independent on purpose: the `run_script` flow wraps this, and it can be tested with real
subprocesses and no server. What it guarantees:

- the script runs in its own process tree (new session on POSIX; a Job Object on Windows), and
  the whole tree is killed on timeout, on cancel, and when the script exits leaving background
  processes behind;
- stdout and stderr are read as bytes in big chunks, split on ``\\n`` (one trailing ``\\r``
  stripped), empty lines kept, a final line without newline still delivered;
- stdin is closed, the environment is scrubbed of ScriptFlow/Prefect settings and secrets.

Known limit on POSIX: children that stay in the script's session (`&`, `nohup`) are always
found; one that moves to a new session (`setsid`, a daemon) is found while its parent lives or
once the 1 s descendant scan has seen it, not if it is orphaned faster (only cgroups could).
With wine, the prefix's wineserver and services outlive a run by design: they are shared, and
exit by themselves a few seconds after the last wine process.

Example::

    result = run_script_process(
        Path("job.py"), "python", fresh_workdir(root, run_id),
        timeout=600, on_line=lambda ts, stream, text: print(stream, text),
        cancel=threading.Event(), python=ensure_script_python(root / "script-venv"),
    )
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, Protocol

import psutil

WINDOWS = sys.platform == "win32"

Outcome = Literal["succeeded", "failed", "timed_out", "cancelled"]
ScriptKind = Literal["python", "batch"]
LineCallback = Callable[[datetime, str, str], None]
LinesCallback = Callable[[datetime, str, Sequence[str]], None]

BAT_LAUNCHER_SETTING = "SCRIPTFLOW_BAT_LAUNCHER"
WINDOWS_BAT_LAUNCHER = ["cmd.exe", "/d", "/c"]
WINE_BAT_LAUNCHER = ["wine", "cmd", "/c"]
# wine's cmd reads a .bat in the OEM code page and writes to a pipe in the ANSI one; in the
# English/C locale of a Linux server that ANSI code page is 1252 (measured with wine 8).
WINE_OUTPUT_CODEPAGE = "cp1252"

KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.1
# After the tree is gone, how long to wait for pipe EOF: wine's shared wineserver keeps the
# stderr pipe open for a few seconds, yet everything the script wrote is already in the pipe.
DRAIN_GRACE_SECONDS = 0.25
READ_CHUNK = 1 << 20
PIPE_BYTES = 1 << 20
BATCH_BYTES = 1 << 16
BATCH_WAIT_SECONDS = 0.002
# A "line" longer than this without a newline is delivered in pieces (bounded memory).
MAX_LINE_BYTES = 1 << 20
_DESCENDANT_SCAN_SECONDS = 1.0
_SECRET_MARKERS = ("SECRET", "PASSWORD", "TOKEN", "AUTH", "API_KEY", "PASS")
_PRIVATE_PREFIXES = ("SCRIPTFLOW_", "PREFECT_")
# Settings of ScriptFlow's own interpreter that must not leak into the script's one.
_INTERPRETER_VARIABLES = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")
_VENV_READY_MARKER = ".scriptflow-ready"
_venv_lock = threading.Lock()


class LauncherMissing(RuntimeError):
    """A .bat script was to run on a machine with neither cmd.exe nor wine."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "Running .bat scripts needs a Windows worker or wine on this machine"
        )


class ScriptStartError(RuntimeError):
    """The interpreter or launcher could not be started (missing, not executable)."""


@dataclass
class ExecutionResult:
    outcome: Outcome
    exit_code: int | None
    started_at: datetime
    ended_at: datetime

    @property
    def duration(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


# --- configuration helpers -------------------------------------------------------------------


def bat_launcher(configured: str | None) -> list[str] | None:
    """The command prefix that runs a .bat file here, or None when this machine cannot.

    `configured` is the value of SCRIPTFLOW_BAT_LAUNCHER (shell-split); blank means unset.
    """
    if configured and configured.strip():
        return _split_command(configured)
    if WINDOWS:
        return list(WINDOWS_BAT_LAUNCHER)
    if shutil.which("wine"):
        return list(WINE_BAT_LAUNCHER)
    return None


def warm_up_launcher(
    launcher: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> float:
    """Run ``exit 0`` through the launcher once; return the seconds it took.

    The first wine call in a new WINEPREFIX builds the prefix (~7 s) and prints set-up notes on
    stderr: doing it here keeps both out of the first script's run and output.
    """
    started = time.monotonic()
    try:
        subprocess.run(
            [*launcher, "exit", "0"],
            env=dict(scrubbed_env() if env is None else env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise ScriptStartError(f"Could not start {launcher[0]!r}: {exc}") from exc
    return time.monotonic() - started


def _split_command(command: str) -> list[str]:
    if not WINDOWS:
        return shlex.split(command)
    # POSIX rules would eat the backslashes of a Windows path; strip quotes ourselves instead.
    return [
        part[1:-1] if part[:1] == part[-1:] == '"' and len(part) > 1 else part
        for part in shlex.split(command, posix=False)
    ]


def scrubbed_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment that a script may see.

    Drops ScriptFlow/Prefect settings, anything that looks like a credential, and the settings
    of ScriptFlow's own Python (its virtualenv would otherwise come first on PATH).
    """
    source = os.environ if base is None else base
    env = {
        name: value
        for name, value in source.items()
        if not _is_private(name) and name.upper() not in _INTERPRETER_VARIABLES
    }
    own_bin = _own_venv_bin()
    if own_bin and "PATH" in env:
        env["PATH"] = os.pathsep.join(
            entry for entry in env["PATH"].split(os.pathsep) if not _same_dir(entry, own_bin)
        )
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["WINEDEBUG"] = "-all"
    return env


def _is_private(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(_PRIVATE_PREFIXES) or any(m in upper for m in _SECRET_MARKERS)


def _own_venv_bin() -> str | None:
    if sys.prefix == sys.base_prefix:
        return None
    return os.path.join(sys.prefix, "Scripts" if WINDOWS else "bin")


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))
    except (OSError, ValueError):
        return False


# --- the scripts' own virtualenv ---------------------------------------------------------------


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "Scripts" / "python.exe" if WINDOWS else venv_dir / "bin" / "python"


def ensure_script_python(venv_dir: Path) -> Path:
    """Create (once) the virtualenv that scripts run in and return its python.

    Created without pip: ~0.05 s and ~60 KB instead of ~2.5 s and ~26 MB. Packages can still be
    installed into it later from outside with ``pip --python <returned path> install ...``.
    Safe when several threads or processes call it at once (threading lock + file lock); a
    half-built directory left by a crash is rebuilt.
    """
    venv_dir = Path(venv_dir).absolute()
    python = venv_python(venv_dir)
    if _venv_ready(venv_dir, python):
        return python
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    with _venv_lock, _file_lock(venv_dir.with_name(venv_dir.name + ".lock")):
        if _venv_ready(venv_dir, python):
            return python
        if venv_dir.exists():
            remove_workdir(venv_dir)
        venv.EnvBuilder(with_pip=False, symlinks=not WINDOWS).create(venv_dir)
        if not python.exists():
            raise ScriptStartError(f"Creating the script virtualenv gave no {python}")
        (venv_dir / _VENV_READY_MARKER).write_text(sys.version + "\n", encoding="utf-8")
    return python


def _venv_ready(venv_dir: Path, python: Path) -> bool:
    return (venv_dir / _VENV_READY_MARKER).is_file() and python.exists()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

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
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- working directories -----------------------------------------------------------------------


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
    if parent and not WINDOWS:
        # Deleting an entry needs write permission on the directory holding it.
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
    function(path)


# --- running -----------------------------------------------------------------------------------


def run_script_process(
    script_path: Path,
    kind: ScriptKind,
    workdir: Path,
    *,
    timeout: float | None,
    on_line: LineCallback | None,
    cancel: threading.Event,
    python: Path | None = None,
    launcher: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_lines: LinesCallback | None = None,
    fallback_encoding: str | None = None,
) -> ExecutionResult:
    """Run one script to its end, timeout or cancel; deliver every output line as it comes.

    `on_line(ts, stream, text)` is called per line, `on_lines(ts, stream, texts)` per chunk
    read (the fast path for a log file); both under one lock, never after this returns.
    `env` is used as given (build it with `scrubbed_env()`); None means `scrubbed_env()`.
    Output is decoded as UTF-8; for .bat output a line that is not valid UTF-8 is decoded with
    `fallback_encoding` (default: the OEM code page on Windows, wine's ANSI one elsewhere).
    If a callback raises, the process tree is killed and the exception re-raised.
    """
    argv = _command(Path(script_path), kind, python, launcher)
    decoder = _Decoder(fallback_encoding or _default_fallback(kind))
    run_env = dict(scrubbed_env() if env is None else env)
    if kind == "python":
        _activate_venv(run_env, Path(argv[0]))
    sink = _Sink(on_line, on_lines)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    if cancel.is_set():  # cancelled while waiting to start: nothing to run
        return ExecutionResult("cancelled", None, started_at, started_at)
    proc = _spawn(argv, Path(workdir), run_env)
    tree = _ProcessTree(proc)
    readers = [
        _StreamReader(proc.stdout, "stdout", sink, decoder),
        _StreamReader(proc.stderr, "stderr", sink, decoder),
    ]
    try:
        for reader in readers:
            reader.start()
        outcome, exit_code = _supervise(proc, tree, started, timeout, cancel, sink)
    finally:
        tree.kill()  # also reaps what a finished script left running in the background
        _finish_readers(readers)
        sink.close()
        tree.close()
    if sink.error is not None:
        raise sink.error
    return ExecutionResult(outcome, exit_code, started_at, datetime.now(UTC))


def _command(
    script_path: Path, kind: ScriptKind, python: Path | None, launcher: list[str] | None
) -> list[str]:
    script = script_path.absolute()
    if kind == "python":
        return [str(python or sys.executable), "-u", str(script)]
    if kind == "batch":
        if not launcher:
            raise LauncherMissing()
        return [*launcher, _bat_argument(script, launcher)]
    raise ValueError(f"Unknown script kind: {kind!r}")


def _is_wine(launcher: Sequence[str]) -> bool:
    return os.path.basename(launcher[0]).lower().startswith("wine")


def _bat_argument(script: Path, launcher: Sequence[str]) -> str:
    if _is_wine(launcher) and not WINDOWS:
        # wine maps / to Z:, and a Windows-style path gives the batch a usual %0 and %~dp0.
        return "Z:" + str(script).replace("/", "\\")
    return str(script)


def _default_fallback(kind: ScriptKind) -> str | None:
    if kind == "python":
        return None  # PYTHONIOENCODING=utf-8; undecodable bytes become U+FFFD
    if sys.platform == "win32":
        import ctypes

        return "cp" + str(ctypes.windll.kernel32.GetOEMCP())
    return WINE_OUTPUT_CODEPAGE


def _activate_venv(env: dict[str, str], python: Path) -> None:
    # A script that runs `python` or `pip` itself should get its own virtualenv's.
    bin_dir = python.parent
    if (bin_dir.parent / "pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
        env["PATH"] = os.pathsep.join(filter(None, [str(bin_dir), env.get("PATH", "")]))


def _spawn(argv: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if not workdir.is_dir():
        raise ScriptStartError(f"Working directory {workdir} does not exist")
    creationflags = 0
    if sys.platform == "win32":
        # No console window on a service; a group of its own for the tree kill.
        creationflags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    command: list[str] | str = argv
    if WINDOWS and os.path.basename(argv[0]).lower() in {"cmd", "cmd.exe"}:
        command = _cmd_command_line(argv)
    try:
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            creationflags=creationflags,
            start_new_session=not WINDOWS,
        )
    except OSError as exc:
        raise ScriptStartError(f"Could not start {argv[0]!r}: {exc}") from exc


def _cmd_command_line(argv: list[str]) -> str:
    # cmd /c strips the first and last quote of its command when there are more than two, so
    # doubling them keeps a path with spaces or & ( ) ^ in it intact.
    return subprocess.list2cmdline(argv[:-1]) + ' ""' + argv[-1] + '""'


def _supervise(
    proc: subprocess.Popen[bytes],
    tree: _ProcessTree,
    started: float,
    timeout: float | None,
    cancel: threading.Event,
    sink: _Sink,
) -> tuple[Outcome, int | None]:
    while True:
        wait = POLL_SECONDS
        if timeout is not None:
            wait = max(0.0, min(wait, started + timeout - time.monotonic()))
        try:
            code = proc.wait(timeout=wait)
            return ("succeeded" if code == 0 else "failed"), code
        except subprocess.TimeoutExpired:
            pass
        if sink.error is not None:
            return "failed", None
        if cancel.is_set():
            return "cancelled", None
        if timeout is not None and time.monotonic() - started >= timeout:
            return "timed_out", None
        tree.track()


def _finish_readers(readers: list[_StreamReader]) -> None:
    deadline = time.monotonic() + DRAIN_GRACE_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    for reader in readers:
        reader.stop()
    for reader in readers:
        reader.join(5.0)


# --- output ------------------------------------------------------------------------------------


class _Sink:
    """Hands lines to the caller's callbacks, one batch at a time, and never after close."""

    def __init__(self, on_line: LineCallback | None, on_lines: LinesCallback | None) -> None:
        self._on_line = on_line
        self._on_lines = on_lines
        self._lock = threading.Lock()
        self._closed = False
        self.error: BaseException | None = None

    def emit(self, ts: datetime, stream: str, lines: Sequence[str]) -> None:
        with self._lock:
            if self._closed or self.error is not None:
                return
            try:
                if self._on_lines is not None:
                    self._on_lines(ts, stream, lines)
                if self._on_line is not None:
                    for text in lines:
                        self._on_line(ts, stream, text)
            except BaseException as exc:  # handed back to the caller's thread
                self.error = exc

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self.error = self.error or exc

    def close(self) -> None:
        with self._lock:
            self._closed = True


class _Decoder:
    def __init__(self, fallback: str | None) -> None:
        self._fallback = fallback

    def __call__(self, data: bytes) -> str:
        if self._fallback is None:
            return data.decode("utf-8", "replace")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "\n".join(self._line(part) for part in data.split(b"\n"))

    def _line(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode(self._fallback or "utf-8", "replace")


def _enlarge_pipe(fd: int) -> None:
    # Room for the batching wait below: a 64 KiB pipe would stall a fast writer meanwhile.
    import fcntl

    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


class _StreamReader:
    """Reads one pipe in its own thread, in big chunks, and emits whole lines."""

    def __init__(self, pipe: IO[bytes] | None, stream: str, sink: _Sink, decode: _Decoder):
        assert pipe is not None
        self._pipe = pipe
        self._stream = stream
        self._sink = sink
        self._decode = decode
        self._tail = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"scriptflow-{stream}-reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        """Read what is already in the pipe, then stop, even if someone still holds it open."""
        self._stop.set()

    def _run(self) -> None:
        try:
            if sys.platform == "win32":
                self._read_blocking()
            else:
                self._read_polling()
            self._flush_tail()
        except BaseException as exc:
            # A reader that stops would leave the script blocked on a full pipe: stop the run.
            self._sink.fail(exc)
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def _read_blocking(self) -> None:
        # Windows pipes cannot be polled; the Job Object kill closes every writer instead.
        fd = self._pipe.fileno()
        while data := os.read(fd, READ_CHUNK):
            self._feed(data)

    def _read_polling(self) -> None:
        import select

        fd = self._pipe.fileno()
        _enlarge_pipe(fd)
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self._stop.is_set():
            if not poller.poll(POLL_SECONDS * 1000):
                continue
            data = os.read(fd, READ_CHUNK)
            if not data:
                return
            self._feed(data)
            if len(data) < BATCH_BYTES:
                # A flood of short writes would otherwise be read a few hundred bytes at a
                # time, and the per-read cost would dominate; a few ms let a batch gather.
                time.sleep(BATCH_WAIT_SECONDS)
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError):
            while data := os.read(fd, READ_CHUNK):
                self._feed(data)

    def _feed(self, data: bytes) -> None:
        ts = datetime.now(UTC)
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            if len(data) > MAX_LINE_BYTES:
                self._flush_tail(ts)
            return
        self._tail = data[cut + 1 :]
        # Decoded with its last newline, so that a "\r\n" there is seen as one too.
        lines = self._decode(data[: cut + 1]).replace("\r\n", "\n").split("\n")
        lines.pop()  # the empty string after the last newline
        self._sink.emit(ts, self._stream, lines)
        if len(self._tail) > MAX_LINE_BYTES:
            self._flush_tail(ts)  # may cut a multi-byte character in two: rare, and harmless

    def _flush_tail(self, ts: datetime | None = None) -> None:
        if not self._tail:
            return
        text = self._decode(self._tail)
        self._tail = b""
        if text.endswith("\r"):
            text = text[:-1]
        self._sink.emit(ts or datetime.now(UTC), self._stream, [text])


# --- process trees -----------------------------------------------------------------------------


class _Job(Protocol):
    def terminate(self) -> bool: ...

    def close(self) -> None: ...


class _ProcessTree:
    """Everything the script started, and the means to kill all of it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._known: dict[int, psutil.Process] = {}
        self._last_scan = 0.0
        self._job: _Job | None = None
        if sys.platform == "win32":
            self._job = _WindowsJob.for_process(proc.pid)

    def track(self) -> None:
        """Remember descendants now and then, so that one that later leaves the session (a
        daemon) is still known when it is time to kill the tree."""
        now = time.monotonic()
        if WINDOWS or now - self._last_scan < _DESCENDANT_SCAN_SECONDS:
            return
        self._last_scan = now
        self._remember_descendants()

    def kill(self) -> None:
        if sys.platform == "win32":
            self._kill_windows()
        else:
            self._kill_posix()

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None

    def _remember_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self._proc.pid).children(recursive=True):
                self._known.setdefault(child.pid, child)

    def _kill_posix(self) -> None:
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

    def _kill_windows(self) -> None:
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


_JOB_INFO_EXTENDED_LIMITS = 9  # JobObjectExtendedLimitInformation
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
_PROCESS_TERMINATE = 0x0001
_PROCESS_SET_QUOTA = 0x0100

if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

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

    class _WindowsJob:
        """A Job Object: terminating it, or closing its handle, kills every process in it."""

        def __init__(self, handle: int) -> None:
            self._handle = handle

        @classmethod
        def for_process(cls, pid: int) -> _WindowsJob | None:
            # Assigned just after the start, not atomically: a child started in that instant
            # escapes the job (taskkill /T still reaches it while its parent lives). Accepted:
            # an interpreter takes far longer than that to start anything.
            kernel32 = _kernel32()
            job = kernel32.CreateJobObjectW(None, None)
            if not job:
                return None
            info = _JobExtendedLimits()
            info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
            process = kernel32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
            ok = (
                bool(process)
                and kernel32.SetInformationJobObject(
                    job, _JOB_INFO_EXTENDED_LIMITS, ctypes.byref(info), ctypes.sizeof(info)
                )
                and kernel32.AssignProcessToJobObject(job, process)
            )
            if process:
                kernel32.CloseHandle(process)
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
