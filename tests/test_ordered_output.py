"""Python scripts' output in the order it was written, progress bars, and source encodings,
with real interpreters (the scripts' own virtualenv and its ordered-output hook)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scriptflow_prefect.execution import output_hook
from scriptflow_prefect.execution.environment import (
    ensure_script_python,
    scrubbed_env,
    site_packages,
)
from scriptflow_prefect.execution.models import ExecutionResult
from scriptflow_prefect.execution.output_hook_module import _VARIABLE
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.streams import overwrite
from scriptflow_prefect.execution.workdir import fresh_workdir


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_script_python(tmp_path_factory.mktemp("venvs") / "scripts")


class Run:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.current: list[tuple[str, str | None]] = []


def run(
    tmp_path: Path, python: Path, source: bytes | str, **options: object
) -> tuple[ExecutionResult, Run]:
    script = tmp_path / "job.py"
    script.write_bytes(source.encode() if isinstance(source, str) else source)
    seen = Run()
    result = run_script_process(
        script,
        "python",
        fresh_workdir(tmp_path, "run"),
        timeout=60,
        on_line=lambda ts, stream, text: seen.lines.append((stream, text)),
        on_current=lambda stream, text: seen.current.append((stream, text)),
        cancel=threading.Event(),
        python=python,
        **options,  # type: ignore[arg-type]
    )
    return result, seen


def test_it_keeps_1000_alternating_stdout_and_stderr_lines_in_order(
    tmp_path: Path, python: Path
) -> None:
    result, seen = run(
        tmp_path,
        python,
        "import sys\nfor i in range(1000):\n"
        "    print(f'out {i}')\n    print(f'err {i}', file=sys.stderr)\n",
    )

    expected = []
    for i in range(1000):
        expected += [("stdout", f"out {i}"), ("stderr", f"err {i}")]
    assert result.outcome == "succeeded"
    assert seen.lines == expected


def test_a_print_before_a_raise_comes_before_the_traceback(tmp_path: Path, python: Path) -> None:
    result, seen = run(
        tmp_path,
        python,
        "print('copying files', end=' ')\nprint('done')\nraise RuntimeError('disk full')\n",
    )

    assert result.exit_code == 1
    assert seen.lines[0] == ("stdout", "copying files done")
    # The traceback as Python prints it: no frame of the hook in it.
    assert [text for stream, text in seen.lines[1:]] == [
        "Traceback (most recent call last):",
        f'  File "{tmp_path / "job.py"}", line 3, in <module>',
        "    raise RuntimeError('disk full')",
        "RuntimeError: disk full",
    ]
    assert {stream for stream, _ in seen.lines[1:]} == {"stderr"}


def test_a_partial_line_still_comes_before_what_the_other_stream_writes_next(
    tmp_path: Path, python: Path
) -> None:
    _, seen = run(
        tmp_path,
        python,
        "import sys\nsys.stdout.write('Progress: ')\nprint('warning', file=sys.stderr)\n"
        "print('ok')\n",
    )

    assert seen.lines == [("stdout", "Progress: "), ("stderr", "warning"), ("stdout", "ok")]


def test_child_processes_and_raw_fd_writes_still_reach_the_output(
    tmp_path: Path, python: Path
) -> None:
    _, seen = run(
        tmp_path,
        python,
        "import os, subprocess, sys\nos.write(1, b'raw\\n')\n"
        "subprocess.run([sys.executable, '-c', 'print(\"child\")'], check=True)\n"
        "print('parent', flush=True)\n",
    )

    assert sorted(seen.lines) == [("stdout", "child"), ("stdout", "parent"), ("stdout", "raw")]


def test_a_progress_bar_is_stored_as_its_final_state_and_shown_while_it_moves(
    tmp_path: Path, python: Path
) -> None:
    result, seen = run(
        tmp_path,
        python,
        "import sys, time\nfor p in range(0, 101, 25):\n"
        "    sys.stderr.write(f'\\rcopying {p:3d}%')\n    sys.stderr.flush()\n"
        "    time.sleep(0.3)\nsys.stderr.write('\\n')\nprint('done')\n",
    )

    assert result.outcome == "succeeded"
    assert seen.lines == [("stderr", "copying 100%"), ("stdout", "done")]
    shown = [text for stream, text in seen.current if stream == "stderr" and text]
    assert shown[0] == "copying   0%"
    assert "copying  50%" in shown
    assert shown[-1] == "copying 100%"
    assert seen.current[-1][1] is None  # the line ended: nothing in progress


def test_overwrite_works_as_a_terminal() -> None:
    assert overwrite("50%\r100%") == "100%"
    assert overwrite("abcdef\rxy") == "xycdef"
    assert overwrite("done\r") == "done"
    assert overwrite("plain") == "plain"


def test_a_cp1252_source_with_a_coding_line_prints_its_accents(
    tmp_path: Path, python: Path
) -> None:
    source = "# -*- coding: cp1252 -*-\nprint('Relatório concluído: ação')\n".encode("cp1252")

    result, seen = run(tmp_path, python, source)

    assert result.outcome == "succeeded"
    assert seen.lines == [("stdout", "Relatório concluído: ação")]


def test_input_fails_with_eof_as_stdin_is_closed(tmp_path: Path, python: Path) -> None:
    result, seen = run(tmp_path, python, "name = input('Your name: ')\n")

    assert result.exit_code == 1
    assert seen.lines[0] == ("stdout", "Your name: ")
    assert seen.lines[-1] == ("stderr", "EOFError: EOF when reading a line")


def test_the_hook_is_installed_once_and_renewed_when_it_changes(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    output_hook.install(site)
    module = site / f"{output_hook.MODULE_NAME}.py"
    first = module.stat().st_mtime_ns
    time.sleep(0.01)
    output_hook.install(site)

    assert output_hook.installed(site)
    assert module.stat().st_mtime_ns == first
    module.write_text("# an older version\n")
    assert not output_hook.installed(site)
    assert _VARIABLE == output_hook.ORDERED_FD_VARIABLE


def test_the_base_virtualenv_gets_the_hook_and_python_outside_scriptflow_is_unchanged(
    python: Path,
) -> None:
    assert output_hook.installed(site_packages(python.parent.parent))
    done = subprocess.run(
        [str(python), "-c", "import sys; print(type(sys.stdout).__name__, sys.stdout.fileno())"],
        env=scrubbed_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["TextIOWrapper", "1"]
    assert sys.platform != "win32"
