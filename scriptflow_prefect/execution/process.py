"""Run one script version in isolation and stream its output, line by line.

Prefect-independent on purpose: the `run_script` flow wraps this, and it can be tested with real
subprocesses and no server. What it guarantees:

- the script runs in its own process tree (new session on POSIX; a Job Object on Windows), and
  the whole tree is killed on timeout, on cancel, and when the script exits leaving background
  processes behind (tree.py);
- stdout and stderr are read as bytes in big chunks and delivered as lines (streams.py);
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

import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from scriptflow_prefect.execution.environment import activate_venv, scrubbed_env
from scriptflow_prefect.execution.launchers import command, default_fallback_encoding
from scriptflow_prefect.execution.models import (
    ExecutionResult,
    LineCallback,
    LinesCallback,
    Outcome,
    ScriptKind,
    ScriptStartError,
)
from scriptflow_prefect.execution.sandbox import Sandbox
from scriptflow_prefect.execution.streams import Decoder, Sink, StreamReader, finish_readers
from scriptflow_prefect.execution.tree import ProcessTree, process_tree

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import popen_arguments
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
) -> ExecutionResult:
    """Run one script to its end, timeout or cancel; deliver every output line as it comes.

    `on_line(ts, stream, text)` is called per line, `on_lines(ts, stream, texts)` per chunk
    read (the fast path for a log file); both under one lock, never after this returns.
    `env` is used as given (build it with `scrubbed_env()`); None means `scrubbed_env()`.
    Output is decoded as UTF-8; for .bat output a line that is not valid UTF-8 is decoded with
    `fallback_encoding` (default: the OEM code page on Windows, wine's ANSI one elsewhere).
    If a callback raises, the process tree is killed and the exception re-raised.
    `sandbox` holds the script and its children to its folders (sandbox.py); `run_as` is the
    OS account it runs as (None: the worker's); an unknown one raises ScriptStartError.
    """
    argv = command(Path(script_path), kind, python, launcher, arguments)
    decoder = Decoder(fallback_encoding or default_fallback_encoding(kind))
    run_env = dict(scrubbed_env() if env is None else env)
    if kind == "python":
        activate_venv(run_env, Path(argv[0]))
    sink = Sink(on_line, on_lines)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    if cancel.is_set():  # cancelled while waiting to start: nothing to run
        return ExecutionResult("cancelled", None, started_at, started_at)
    proc = _spawn(argv, Path(workdir), run_env, sandbox, run_as)
    tree = process_tree(proc)
    readers = [
        StreamReader(proc.stdout, "stdout", sink, decoder),
        StreamReader(proc.stderr, "stderr", sink, decoder),
    ]
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
    return ExecutionResult(outcome, exit_code, started_at, datetime.now(UTC))


def _spawn(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    sandbox: Sandbox | None,
    run_as: str | None,
) -> subprocess.Popen[bytes]:
    if not workdir.is_dir():
        raise ScriptStartError(f"Working directory {workdir} does not exist")
    popen_command, options = popen_arguments(argv, env, sandbox, run_as)
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
