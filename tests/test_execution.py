"""The script engine, with real subprocesses (python scripts, and .bat files through wine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from scriptflow_prefect.execution.environment import (
    ensure_script_python,
    scrubbed_env,
    venv_python,
)
from scriptflow_prefect.execution.launchers import WINE_BAT_LAUNCHER, bat_launcher, warm_up_launcher
from scriptflow_prefect.execution.models import ExecutionResult, LauncherMissing, ScriptStartError
from scriptflow_prefect.execution.posix import KILL_GRACE_SECONDS
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.wine import locale_variables, prepare_base_prefix, run_variables
from scriptflow_prefect.execution.workdir import fresh_workdir, remove_workdir
from scriptflow_prefect.history.output import lines_after, open_source
from scriptflow_prefect.history.output_log import OutputLogWriter

Line = tuple[str, str]


@pytest.fixture(scope="session")
def script_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_script_python(tmp_path_factory.mktemp("venvs") / "scripts")


class Runner:
    def __init__(self, tmp_path: Path, python: Path) -> None:
        self.tmp_path = tmp_path
        self.python = python
        self.lines: list[Line] = []
        self.timestamps: list[datetime] = []
        self.cancel = threading.Event()
        self.workdir = fresh_workdir(tmp_path / "runs", "run-1")

    def on_line(self, ts: datetime, stream: str, text: str) -> None:
        self.timestamps.append(ts)
        self.lines.append((stream, text))

    def run(self, code: str, *, timeout: float | None = 30, **kwargs: object) -> ExecutionResult:
        script = self.tmp_path / "script.py"
        script.write_text(code, encoding="utf-8")
        options: dict[str, object] = {"on_line": self.on_line, "python": self.python}
        options.update(kwargs)
        return run_script_process(
            script, "python", self.workdir, timeout=timeout, cancel=self.cancel, **options
        )

    def stream(self, name: str) -> list[str]:
        return [text for stream, text in self.lines if stream == name]


@pytest.fixture
def runner(tmp_path: Path, script_python: Path) -> Runner:
    return Runner(tmp_path, script_python)


def is_gone(pid: int) -> bool:
    # This machine's PID 1 does not reap orphans: a killed grandchild stays a zombie.
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return not psutil.pid_exists(pid)


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


SPAWN_GRANDCHILD = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session={escape}
)
print(child.pid, flush=True)
time.sleep(120)
"""


def grandchild_pid(runner: Runner) -> int:
    return int(runner.stream("stdout")[0])


# --- output ---------------------------------------------------------------------------------


def test_it_streams_stdout_and_stderr_lines_with_their_stream(runner: Runner) -> None:
    result = runner.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\n")

    assert sorted(runner.lines) == [("stderr", "err"), ("stdout", "out")]
    assert result.outcome == "succeeded"
    assert result.exit_code == 0
    assert all(ts.utcoffset() == timedelta(0) for ts in runner.timestamps)
    assert result.started_at <= runner.timestamps[0] <= result.ended_at


def test_it_keeps_empty_lines_and_the_order_within_each_stream(runner: Runner) -> None:
    runner.run(
        "import sys\nfor i in range(300):\n    print(i); print(); print(f'e{i}', file=sys.stderr)\n"
    )

    expected = []
    for i in range(300):
        expected += [str(i), ""]
    assert runner.stream("stdout") == expected
    assert runner.stream("stderr") == [f"e{i}" for i in range(300)]


def test_it_replaces_bytes_that_are_not_utf8(runner: Runner) -> None:
    runner.run("import sys\nsys.stdout.buffer.write(b'caf\\xe9 ok \\xc3\\xa7\\n')\n")

    assert runner.stream("stdout") == ["caf\ufffd ok \u00e7"]


def test_it_delivers_a_final_line_without_newline(runner: Runner) -> None:
    runner.run("import sys\nsys.stdout.write('first\\nlast')\nsys.stderr.write('only')\n")

    assert runner.stream("stdout") == ["first", "last"]
    assert runner.stream("stderr") == ["only"]


def test_it_keeps_what_a_terminal_shows_of_a_line_with_carriage_returns(runner: Runner) -> None:
    runner.run(
        "import sys\nsys.stdout.buffer.write("
        "b'dos\\r\\nprogress 1\\rprogress 2\\r\\r\\nabcdef\\rxy\\nend\\r')\n"
    )

    assert runner.stream("stdout") == ["dos", "progress 2", "xycdef", "end"]


def test_it_keeps_tabs_and_unicode(runner: Runner) -> None:
    runner.run("print('a\\tb\\tc ção ✓')\n")

    assert runner.stream("stdout") == ["a\tb\tc ção ✓"]


def test_it_delivers_every_line_of_a_large_output_to_the_log_file(
    runner: Runner, tmp_path: Path
) -> None:
    log_path = tmp_path / "output.log"
    with OutputLogWriter(log_path) as log:
        result = runner.run(
            "for i in range(200_000):\n    print(i)\n", on_line=None, on_lines=log.write_lines
        )

    with open_source(log_path, log_path.with_suffix(".log.gz"), None) as src:
        lines, _cursor, more = lines_after(src, 0, 300_000)
    assert result.outcome == "succeeded"
    assert [line["text"] for line in lines] == [str(i) for i in range(200_000)]
    assert not more


def test_it_hands_back_an_exception_from_the_callback_and_stops_the_script(
    runner: Runner,
) -> None:
    def broken(ts: datetime, stream: str, text: str) -> None:
        raise OSError("disk full")

    started = time.monotonic()
    with pytest.raises(OSError, match="disk full"):
        runner.run("import time\nprint('x', flush=True)\ntime.sleep(60)\n", on_line=broken)

    assert time.monotonic() - started < 10


# --- exit codes, timeout, cancel -----------------------------------------------------------


def test_it_keeps_the_exit_code(runner: Runner) -> None:
    result = runner.run("import sys\nsys.exit(3)\n")

    assert result.outcome == "failed"
    assert result.exit_code == 3


def test_it_kills_the_grandchild_on_timeout(runner: Runner) -> None:
    started = time.monotonic()
    result = runner.run(SPAWN_GRANDCHILD.format(escape=False), timeout=2)

    assert result.outcome == "timed_out"
    assert result.exit_code is None
    assert 2 <= time.monotonic() - started < 2 + KILL_GRACE_SECONDS + 3
    assert is_gone(grandchild_pid(runner))


def test_it_kills_a_grandchild_that_left_the_session_on_cancel(runner: Runner) -> None:
    def cancel_on_first_line(ts: datetime, stream: str, text: str) -> None:
        runner.on_line(ts, stream, text)
        runner.cancel.set()

    started = time.monotonic()
    result = runner.run(SPAWN_GRANDCHILD.format(escape=True), on_line=cancel_on_first_line)

    assert result.outcome == "cancelled"
    assert result.exit_code is None
    assert time.monotonic() - started < 5
    assert is_gone(grandchild_pid(runner))


def test_it_does_not_start_a_run_cancelled_before_it_began(runner: Runner) -> None:
    runner.cancel.set()

    result = runner.run("open('ran.txt', 'w').close()\n")

    assert result.outcome == "cancelled"
    assert not (runner.workdir / "ran.txt").exists()


def test_it_kills_a_script_that_ignores_sigterm(runner: Runner) -> None:
    started = time.monotonic()
    result = runner.run(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n",
        timeout=0.5,
    )

    assert result.outcome == "timed_out"
    assert time.monotonic() - started < 0.5 + KILL_GRACE_SECONDS + 3


def test_it_kills_what_the_script_left_running_when_it_exits(runner: Runner) -> None:
    result = runner.run(
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid)\n"
    )

    assert result.outcome == "succeeded"
    assert is_gone(grandchild_pid(runner))


# --- isolation ------------------------------------------------------------------------------


def test_it_hides_prefect_scriptflow_and_secret_variables(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = {
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
        "SCRIPTFLOW_SMTP_PASSWORD": "x",
        "SCRIPTFLOW_DATA_DIR": "/srv",
        "MY_API_KEY": "k",
        "db_password": "p",
        "GITHUB_TOKEN": "t",
        "AWS_SECRET_ACCESS_KEY": "s",
        "HTTP_AUTH": "a",
        "SMTP_PASS": "p",
    }
    for name, value in hidden.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARMLESS_SETTING", "kept")

    runner.run("import json, os\nprint(json.dumps(dict(os.environ)))\n")

    seen = json.loads(runner.stream("stdout")[0])
    assert not set(hidden) & set(seen)
    assert not [name for name in seen if name.upper().startswith(("PREFECT_", "SCRIPTFLOW_"))]
    assert seen["HARMLESS_SETTING"] == "kept"
    assert seen["PYTHONUNBUFFERED"] == "1"
    assert seen["PYTHONIOENCODING"] == "utf-8"


def test_scrubbed_env_drops_scriptflows_own_python_settings() -> None:
    own_bin = os.path.join(sys.prefix, "bin")
    env = scrubbed_env(
        {
            "PATH": os.pathsep.join([own_bin, "/usr/bin"]),
            "VIRTUAL_ENV": sys.prefix,
            "PYTHONPATH": "/work/main",
            "LANG": "C.UTF-8",
            "Some_Token": "x",
        }
    )

    assert env == {
        "PATH": "/usr/bin" if sys.prefix != sys.base_prefix else env["PATH"],
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "WINEDEBUG": "-all",
    }


def test_it_runs_python_scripts_in_their_own_virtualenv(
    runner: Runner, script_python: Path
) -> None:
    runner.run("import os, shutil, sys\nprint(sys.prefix)\nprint(shutil.which('python'))\n")

    prefix, python_on_path = runner.stream("stdout")
    assert Path(prefix) == script_python.parent.parent
    assert Path(prefix) != Path(sys.prefix)
    assert Path(python_on_path).parent == script_python.parent


def test_it_closes_stdin(runner: Runner) -> None:
    result = runner.run("input()\n", timeout=10)

    assert result.outcome == "failed"
    assert result.exit_code == 1
    assert "EOFError" in runner.stream("stderr")[-1]


def test_it_runs_the_script_in_the_fresh_workdir(runner: Runner) -> None:
    runner.run("import os\nprint(os.getcwd())\nopen('made-here.txt', 'w').close()\n")

    assert runner.stream("stdout") == [str(runner.workdir)]
    assert (runner.workdir / "made-here.txt").exists()


def test_fresh_workdir_empties_a_used_directory(tmp_path: Path) -> None:
    used = fresh_workdir(tmp_path, "run-7")
    (used / "sub").mkdir()
    (used / "sub" / "locked.txt").write_text("x")
    os.chmod(used / "sub" / "locked.txt", stat.S_IREAD)
    os.chmod(used / "sub", stat.S_IREAD | stat.S_IEXEC)

    again = fresh_workdir(tmp_path, "run-7")

    assert again == used
    assert list(again.iterdir()) == []


def test_remove_workdir_removes_read_only_trees_and_ignores_missing_ones(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "f").write_text("x")
    os.chmod(tree / "a" / "f", stat.S_IREAD)

    remove_workdir(tree)
    remove_workdir(tree)

    assert not tree.exists()


@pytest.mark.parametrize("run_id", ["", ".", "..", "a/b", "a\\b", "c:x"])
def test_fresh_workdir_refuses_a_run_id_that_is_not_a_plain_name(
    tmp_path: Path, run_id: str
) -> None:
    with pytest.raises(ValueError):
        fresh_workdir(tmp_path, run_id)


def test_it_raises_a_clear_error_when_the_interpreter_is_missing(runner: Runner) -> None:
    with pytest.raises(ScriptStartError, match="no-such-python"):
        runner.run("print(1)\n", python=Path("/nowhere/no-such-python"))


# --- the scripts' virtualenv ---------------------------------------------------------------


def test_ensure_script_python_is_idempotent_and_safe_from_two_threads(tmp_path: Path) -> None:
    venv_dir = tmp_path / "script-venv"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_script_python(venv_dir)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    started = time.monotonic()
    again = ensure_script_python(venv_dir)

    assert results == [venv_python(venv_dir)] * 2 == [again] * 2
    assert time.monotonic() - started < 0.05
    assert not (venv_dir / "bin" / "pip").exists()


def test_ensure_script_python_rebuilds_a_half_built_virtualenv(tmp_path: Path) -> None:
    venv_dir = tmp_path / "script-venv"
    (venv_dir / "bin").mkdir(parents=True)  # a crash before the ready marker

    python = ensure_script_python(venv_dir)

    assert python.exists()


# --- .bat files -----------------------------------------------------------------------------


def test_it_needs_a_launcher_for_bat_files(tmp_path: Path) -> None:
    script = tmp_path / "job.bat"
    script.write_text("echo hi\r\n")

    with pytest.raises(LauncherMissing) as raised:
        run_script_process(
            script,
            "batch",
            tmp_path,
            timeout=5,
            on_line=None,
            cancel=threading.Event(),
            launcher=None,
        )

    assert isinstance(raised.value, RuntimeError)
    assert str(raised.value) == (
        "Running .bat scripts needs a Windows worker or wine on this machine"
    )


def test_bat_launcher_prefers_the_configured_command() -> None:
    assert bat_launcher("'/opt/my wine/wine64' cmd /c") == ["/opt/my wine/wine64", "cmd", "/c"]


def test_bat_launcher_finds_wine_on_the_path_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = shutil.which("wine")
    assert bat_launcher(None) == (WINE_BAT_LAUNCHER if found else None)
    assert bat_launcher("  ") == bat_launcher(None)

    monkeypatch.setenv("PATH", str(tmp_path))
    assert bat_launcher(None) is None


@pytest.fixture(scope="session")
def wine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("wine") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wine is missing on CI: .bat support is not tested")
        pytest.skip("wine is not installed")
    root = tmp_path_factory.mktemp("wine")
    env = scrubbed_env() | {"WINEPREFIX": str(root / "prefix")} | locale_variables()
    # Builds the prefix once (several seconds) so that tests time only themselves.
    warm_up_launcher(WINE_BAT_LAUNCHER, env)
    prepare_base_prefix("wine", env, "en")
    return env | run_variables(root, "en")


def run_bat(
    tmp_path: Path,
    content: bytes,
    env: dict[str, str],
    *,
    name: str = "job.bat",
    timeout: float | None = 60,
    on_line: Callable[..., None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[ExecutionResult, list[Line]]:
    script = tmp_path / name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_bytes(content)
    lines: list[Line] = []

    def collect(ts: datetime, stream: str, text: str) -> None:
        lines.append((stream, text))
        if on_line:
            on_line(ts, stream, text)

    result = run_script_process(
        script,
        "batch",
        fresh_workdir(tmp_path / "runs", "bat"),
        timeout=timeout,
        on_line=collect,
        cancel=cancel or threading.Event(),
        launcher=WINE_BAT_LAUNCHER,
        env=env,
    )
    return result, lines


@pytest.mark.wine
def test_it_runs_a_bat_file_through_wine(tmp_path: Path, wine_env: dict[str, str]) -> None:
    result, lines = run_bat(
        tmp_path,
        b"@echo off\r\necho hello\r\necho.\r\necho err 1>&2\r\necho %CD%\r\nexit /b 3\r\n",
        wine_env,
    )

    workdir = "Z:" + str(tmp_path / "runs" / "bat").replace("/", "\\")
    assert result.outcome == "failed"
    assert result.exit_code == 3
    assert [text for stream, text in lines if stream == "stdout"] == ["hello", "", workdir]
    # cmd keeps the space before "1>&2" as part of the text.
    assert [text for stream, text in lines if stream == "stderr"] == ["err "]


@pytest.mark.wine
def test_it_runs_a_bat_file_whose_path_has_spaces(tmp_path: Path, wine_env: dict[str, str]) -> None:
    result, lines = run_bat(
        tmp_path, b"@echo off\r\necho %~dp0\r\nexit /b 0\r\n", wine_env, name="my dir/a b.bat"
    )

    assert result.outcome == "succeeded"
    assert lines == [("stdout", "Z:" + str(tmp_path / "my dir").replace("/", "\\") + "\\")]


@pytest.mark.wine
def test_it_reads_a_bat_in_a_legacy_oem_code_page(tmp_path: Path, wine_env: dict[str, str]) -> None:
    # 0x82 is é in cp850 (and cp437); in cp1252 it is a low quote: the file is cp850.
    _, lines = run_bat(tmp_path, b"@echo off\r\necho caf\x82\r\n", wine_env)

    assert lines == [("stdout", "café")]


@pytest.mark.wine
def test_it_kills_the_whole_bat_tree_on_cancel(tmp_path: Path, wine_env: dict[str, str]) -> None:
    cancel = threading.Event()
    marker = f"ping -n {57 + os.getpid() % 40}"  # unique to this test process
    content = (
        f'@echo off\r\necho started\r\nstart /b cmd /c "{marker} 127.0.0.1 > nul"\r\n'
        f"{marker} 127.0.0.1 > nul\r\necho not reached\r\n"
    ).encode()

    def cancel_when_started(ts: datetime, stream: str, text: str) -> None:
        if text == "started":
            threading.Timer(1.0, cancel.set).start()

    started = time.monotonic()
    result, lines = run_bat(tmp_path, content, wine_env, on_line=cancel_when_started, cancel=cancel)

    assert result.outcome == "cancelled"
    assert time.monotonic() - started < 10
    assert ("stdout", "not reached") not in lines
    assert wait_for(lambda: not live_processes_matching(marker), seconds=1)


@pytest.mark.wine
def test_it_kills_a_bat_file_on_timeout(tmp_path: Path, wine_env: dict[str, str]) -> None:
    marker = f"ping -n {97 + os.getpid() % 40}"
    result, _ = run_bat(tmp_path, f"@{marker} 127.0.0.1 > nul\r\n".encode(), wine_env, timeout=2)

    assert result.outcome == "timed_out"
    assert not live_processes_matching(marker)


def live_processes_matching(fragment: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if fragment in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@pytest.mark.wine
def test_an_english_worker_keeps_wines_us_date_and_time(
    tmp_path: Path, wine_env: dict[str, str]
) -> None:
    _, lines = run_bat(tmp_path, b"@echo off\r\necho %DATE%\r\necho %TIME%\r\n", wine_env)

    day, clock = (text for _, text in lines)
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", day), day  # M/d/yyyy
    assert re.fullmatch(r"\d{1,2}:\d\d [AP]M", clock), clock  # h:mm AM
