"""Run one script version in isolation and stream its output, line by line.

Prefect-independent on purpose: the `run_script` flow wraps this, and it can be tested with real
subprocesses and no server. What it guarantees:

- the script runs in its own process tree (new session on POSIX; a Job Object on Windows), and
  the whole tree is killed on timeout, on cancel, and when the script exits leaving background
  processes behind (tree.py);
- stdout and stderr are read as bytes in big chunks and delivered as lines (streams.py); a
  Python script's sys.stdout/sys.stderr come in order over one more pipe (output_hook.py);
- a .bat's start is launchers.start_batch: under wine, its whole exit code survives;
- stdin is closed, the environment is scrubbed of ScriptFlow/Prefect settings and secrets
  (environment.py).

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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from scriptflow_prefect.execution.bat_exit_code import full_exit_code
from scriptflow_prefect.execution.environment import activate_venv, scrubbed_env
from scriptflow_prefect.execution.launchers import command, start_batch
from scriptflow_prefect.execution.models import (
    CurrentCallback,
    ExecutionResult,
    LineCallback,
    LinesCallback,
    Outcome,
    RunAsPasswordMissing,
    ScriptKind,
    ScriptStartError,
)
from scriptflow_prefect.execution.output_hook import ORDERED_FD_VARIABLE
from scriptflow_prefect.execution.sandbox import Sandbox
from scriptflow_prefect.execution.streams import (
    Decoder,
    PipeReader,
    RecordReader,
    Sink,
    StreamReader,
    finish_readers,
)
from scriptflow_prefect.execution.tree import ProcessTree, process_tree

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import popen_arguments
    from scriptflow_prefect.execution.windows_logon import start_as_account
else:
    from scriptflow_prefect.execution.posix import popen_arguments

POLL_SECONDS = 0.1


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
    arguments: Sequence[str] = (),
    sandbox: Sandbox | None = None,
    run_as: str | None = None,
    on_current: CurrentCallback | None = None,
    private_dir: Path | None = None,
    run_as_password: str | None = None,
    on_started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> ExecutionResult:
    """Run one script to its end, timeout or cancel; deliver every output line as it comes.

    `on_line(ts, stream, text)` is called per line, `on_lines(ts, stream, texts)` per chunk
    read (the fast path for a log file), `on_current(stream, text | None)` when the line a
    stream is writing (no newline yet: a progress bar) changes; all under one lock, never
    after this returns. `env` is used as given (build it with `scrubbed_env()`); None means
    `scrubbed_env()`. Output is decoded as UTF-8; for .bat output a line that is not valid
    UTF-8 is decoded with `fallback_encoding` (default: the code page cmd writes in).
    If a callback raises, the process tree is killed and the exception re-raised.
    `sandbox` holds the script and its children to its folders (sandbox.py); `run_as` is the
    OS account it runs as (None: the worker's); an unknown one raises ScriptStartError.
    `run_as_password`: that account's password, which a Windows worker logs it on with
    (POSIX ignores it); never logged. Without it a Windows `run_as` raises RunAsPasswordMissing.
    `private_dir`: a folder of this run, not the script's, for the .bat wrapper under wine
    (default: a temporary one). `on_started(proc)`: called once the script's process exists
    (the worker records its identity, to find it again after a crash: runs/active_runs.py).
    """
    with _private_folder(private_dir) as folder:
        exit_file = None
        if kind == "batch":
            argv, legacy, exit_file = start_batch(Path(script_path), launcher, arguments, folder)
            fallback_encoding = fallback_encoding or legacy
        else:
            argv = command(Path(script_path), kind, python, launcher, arguments)
        decoder = Decoder(fallback_encoding)
        run_env = dict(scrubbed_env() if env is None else env)
        if kind == "python":
            activate_venv(run_env, Path(argv[0]))
        sink = Sink(on_line, on_lines, on_current)
        started_at = datetime.now(UTC)
        started = time.monotonic()
        if cancel.is_set():  # cancelled while waiting to start: nothing to run
            return ExecutionResult("cancelled", None, started_at, started_at)
        ordered = _ordered_channel(kind, run_env)
        try:
            proc = _spawn(argv, Path(workdir), run_env, sandbox, (run_as, run_as_password), ordered)
        finally:
            if ordered is not None:
                os.close(ordered[1])  # the script holds the writing end now
        tree = process_tree(proc)
        if on_started is not None:
            on_started(proc)
        readers: list[PipeReader] = [
            StreamReader(proc.stdout, "stdout", sink, decoder),
            StreamReader(proc.stderr, "stderr", sink, decoder),
        ]
        if ordered is not None:
            readers.append(RecordReader(os.fdopen(ordered[0], "rb", buffering=0), sink, decoder))
        try:
            for reader in readers:
                reader.start()
            outcome, exit_code = _supervise(proc, tree, started, timeout, cancel, sink)
        finally:
            tree.kill()  # also reaps what a finished script left running in the background
            finish_readers(readers)
            sink.close()
            tree.close()
        if sink.error is not None:
            raise sink.error
        if exit_file is not None and exit_code is not None:
            exit_code = full_exit_code(exit_file, exit_code)
            outcome = "succeeded" if exit_code == 0 else "failed"
        return ExecutionResult(outcome, exit_code, started_at, datetime.now(UTC))


@contextlib.contextmanager
def _private_folder(given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield Path(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="scriptflow-run-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ordered_channel(kind: ScriptKind, env: dict[str, str]) -> tuple[int, int] | None:
    """A pipe for a Python script's ordered output (POSIX: inherited by fd number)."""
    if kind != "python" or sys.platform == "win32":
        return None
    read_end, write_end = os.pipe()
    env[ORDERED_FD_VARIABLE] = str(write_end)
    return read_end, write_end


def _spawn(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    sandbox: Sandbox | None,
    account: tuple[str | None, str | None],
    ordered: tuple[int, int] | None,
) -> subprocess.Popen[bytes]:
    run_as, password = account
    as_token = sys.platform == "win32" and bool(run_as)  # a logon, not Popen (windows_logon)
    try:
        if not workdir.is_dir():
            raise ScriptStartError(f"Working directory {workdir} does not exist")
        popen_command, options = popen_arguments(argv, env, sandbox, None if as_token else run_as)
    except BaseException:
        if ordered is not None:
            os.close(ordered[0])
        raise
    if sys.platform == "win32" and run_as and as_token:  # no ordered channel on Windows
        if password is None:
            raise RunAsPasswordMissing(run_as)
        return start_as_account(popen_command, workdir, env, run_as, password)
    if ordered is not None:
        options["pass_fds"] = (ordered[1],)
    try:
        return subprocess.Popen(
            popen_command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            **options,
        )
    except OSError as exc:
        if ordered is not None:
            os.close(ordered[0])
        raise ScriptStartError(f"Could not start {argv[0]!r}: {exc}") from exc


def _supervise(
    proc: subprocess.Popen[bytes],
    tree: ProcessTree,
    started: float,
    timeout: float | None,
    cancel: threading.Event,
    sink: Sink,
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
