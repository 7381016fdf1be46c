""".bat files as their authors wrote them, under real wine: accents in UTF-8, cp1252 and cp850,
`chcp 65001` and emoji, the pt-BR %DATE%, whole exit codes, arguments, commands wine lacks."""

from __future__ import annotations

import os
import re
import shutil
import threading
from datetime import datetime
from pathlib import Path

import pytest

from scriptflow_prefect.execution.bat_commands import (
    WINE_LACKS,
    reads_keyboard,
    unavailable_commands,
)
from scriptflow_prefect.execution.bat_exit_code import _escaped
from scriptflow_prefect.execution.bat_text import bat_encoding, utf8_text
from scriptflow_prefect.execution.environment import scrubbed_env
from scriptflow_prefect.execution.launchers import WINE_BAT_LAUNCHER, warm_up_launcher
from scriptflow_prefect.execution.models import CommandsUnavailable, ExecutionResult
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.wine import (
    REGIONAL_FORMATS,
    date_variable,
    locale_variables,
    prepare_base_prefix,
    run_variables,
)
from scriptflow_prefect.execution.workdir import fresh_workdir
from scriptflow_prefect.runs.input_wait import InputWait

WORDS = "concluída não ação"

# --- the file's encoding, without wine ---------------------------------------------------------


@pytest.mark.parametrize("encoding", ["cp1252", "cp850"])
def test_it_tells_cp1252_from_cp850_by_the_words(encoding: str) -> None:
    data = f"@echo off\r\necho Backup {WORDS}: Relatório às 10h\r\n".encode(encoding)

    assert bat_encoding(data) == encoding
    assert utf8_text(data) == data.decode(encoding).encode("utf-8")


def test_it_takes_utf8_as_it_is_and_believes_a_chcp_line() -> None:
    assert bat_encoding(f"echo {WORDS} 🎉".encode()) == "utf-8"
    assert utf8_text(f"echo {WORDS}".encode()) is None
    # "Ótimo" alone reads as a word in both: the chcp line decides.
    assert bat_encoding("chcp 850 > nul\r\necho Ótimo\r\n".encode("cp850")) == "cp850"


# --- commands wine lacks: the scan ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("robocopy src dst /mir", ["robocopy"]),
        ("@echo off\r\necho use robocopy\r\nset timeout=5\r\nrem forfiles\r\n:: sort", []),
        ("if exist x (robocopy a b) else (xcopy a b /y)", ["robocopy"]),
        ('if /i "%1"=="fast" timeout /t 5 /nobreak > nul', ["timeout"]),
        ("for %%f in (*.log) do findstr /i error %%f", ["findstr"]),
        ("dir /b | sort", ["sort"]),
        ('type x.log | find /i "error"', ["find /i"]),
        ('type x.log | find "error"', []),
        ("net use Z: \\\\server\\share", ["net use"]),
        ("net start spooler", []),
        ('start "" /wait C:\\Windows\\System32\\ROBOCOPY.EXE a b', ["robocopy"]),
        ("echo Backup (robocopy) done", []),
        ("ping -n 2 127.0.0.1 > nul && timeout /t 1", ["timeout"]),
        ("xcopy a b ^\r\n /y", []),
    ],
)
def test_it_finds_the_commands_wine_lacks_where_cmd_runs_commands(
    text: str, found: list[str]
) -> None:
    assert unavailable_commands(text) == found


def test_the_measured_table_holds_the_commands_admins_use() -> None:
    for name in ("robocopy", "forfiles", "timeout", "choice", "schtasks", "wmic", "icacls"):
        assert name in WINE_LACKS
    for works in ("xcopy", "copy", "ping", "reg", "find", "net", "taskkill"):
        assert works not in WINE_LACKS


def test_it_knows_a_script_that_reads_the_keyboard() -> None:
    assert reads_keyboard("@echo off\r\nset /p NAME=Your name: \r\n")
    assert not reads_keyboard("@echo off\r\nset NAME=x\r\necho set /p is not run here\r\n")


def test_the_wrapper_line_gives_cmd_back_the_command_line() -> None:
    # The wrapper's `cmd /d /s /c "` quote is open when the line starts, so the quotes of
    # the line itself pair the other way round in the wrapper's parse.
    assert _escaped('"Z:\\a b&c.bat" one "t&o" 50%') == '"Z:\\a b^&c.bat" one "t^&o" 50%%'
    assert _escaped("Z:\\job.bat (x) a|b") == "Z:\\job.bat (x) a|b"


def test_the_date_variable_has_the_shape_of_the_workers_windows() -> None:
    day = datetime(2026, 3, 5, 21, 40)

    assert date_variable("pt_BR", day) == {"DATE": "05/03/2026"}
    assert date_variable("en", day) == {"DATE": "3/5/2026"}
    assert REGIONAL_FORMATS["pt_BR"]["sShortDate"] == "dd/MM/yyyy"
    assert REGIONAL_FORMATS["en"]["sShortDate"] == "M/d/yyyy"


# --- under wine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pt_wine(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, str]]:
    """A worker whose SCRIPTFLOW_LANGUAGE is pt_BR, with its own wine prefix."""
    if shutil.which("wine") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wine is missing on CI: .bat support is not tested")
        pytest.skip("wine is not installed")
    root = tmp_path_factory.mktemp("wine-pt")
    env = scrubbed_env() | {"WINEPREFIX": str(root / "prefix")} | locale_variables()
    warm_up_launcher(WINE_BAT_LAUNCHER, env)
    prepare_base_prefix("wine", env, "pt_BR")
    return WINE_BAT_LAUNCHER, env | run_variables(root, "pt_BR")


def run(
    tmp_path: Path,
    data: bytes,
    wine: tuple[list[str], dict[str, str]],
    *,
    name: str = "job.bat",
    arguments: tuple[str, ...] = (),
) -> tuple[ExecutionResult, list[tuple[str, str]]]:
    script = tmp_path / name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_bytes(data)
    lines: list[tuple[str, str]] = []
    result = run_script_process(
        script,
        "batch",
        fresh_workdir(tmp_path / "runs", "bat"),
        timeout=60,
        on_line=lambda ts, stream, text: lines.append((stream, text)),
        cancel=threading.Event(),
        launcher=wine[0],
        env=wine[1],
        arguments=arguments,
    )
    return result, lines


@pytest.mark.wine
@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "cp850"])
def test_it_shows_accents_as_written_in_each_encoding(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]], encoding: str
) -> None:
    data = f"@echo off\r\necho {WORDS}\r\necho erro: {WORDS} 1>&2\r\n".encode(encoding)

    result, lines = run(tmp_path, data, pt_wine)

    assert result.outcome == "succeeded"
    assert lines.count(("stdout", WORDS)) == 1
    assert ("stderr", f"erro: {WORDS} ") in lines


@pytest.mark.wine
def test_it_runs_chcp_65001_and_shows_emoji(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]]
) -> None:
    data = f"@echo off\r\nchcp 65001 > nul\r\necho {WORDS} 🎉 ✓\r\n".encode()

    result, lines = run(tmp_path, data, pt_wine)

    assert lines == [("stdout", f"{WORDS} 🎉 ✓")]
    assert (result.outcome, result.exit_code) == ("succeeded", 0)


@pytest.mark.wine
def test_it_names_folders_with_accents_as_written(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]]
) -> None:
    data = 'mkdir "Relatórios"\r\necho x > "Relatórios\\ação.txt"\r\n'.encode("cp1252")

    result, _ = run(tmp_path, data, pt_wine)

    assert result.outcome == "succeeded"
    assert (tmp_path / "runs" / "bat" / "Relatórios" / "ação.txt").is_file()


@pytest.mark.wine
def test_its_date_has_the_brazilian_shape(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]]
) -> None:
    data = (
        b"@echo off\r\necho %DATE%;%date:~6,4%;%date:~3,2%;%date:~0,2%\r\n"
        b"echo %TIME%;%time:~0,2%;%time:~3,2%\r\n"
    )

    before = datetime.now()
    _, lines = run(tmp_path, data, pt_wine)
    after = datetime.now()

    date_line, time_line = (text for _, text in lines)
    days = {before.strftime("%d/%m/%Y"), after.strftime("%d/%m/%Y")}
    day = date_line.split(";")[0]
    assert day in days
    assert date_line == f"{day};{day[6:]};{day[3:5]};{day[:2]}"
    shown, hour, minute = time_line.split(";")
    assert re.fullmatch(r"\d\d:\d\d ?", shown), shown  # 24 h, as pt-BR Windows has it
    assert (hour, minute) == (shown[:2], shown[3:5])


@pytest.mark.wine
@pytest.mark.parametrize(
    ("body", "code"),
    [(b"nosuchcommand", 9009), (b"exit 16", 16), (b"exit /b 300", 300), (b"exit /b 256", 256)],
)
def test_it_keeps_the_whole_exit_code(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]], body: bytes, code: int
) -> None:
    result, _ = run(tmp_path, b"@echo off\r\n" + body + b"\r\n", pt_wine)

    assert (result.outcome, result.exit_code) == ("failed", code)


@pytest.mark.wine
def test_the_wrapper_leaves_arguments_and_the_scripts_own_path_alone(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]]
) -> None:
    data = b"@echo off\r\necho 0=%0\r\necho dp0=%~dp0\r\necho 1=%~1\r\necho 2=%2\r\necho 3=%3\r\n"

    result, lines = run(
        tmp_path, data, pt_wine, name="my dir/a b&c.bat", arguments=("um", "dois & três", "(x)")
    )

    folder = "Z:" + str(tmp_path / "my dir").replace("/", "\\")
    assert result.outcome == "succeeded"
    assert [text for _, text in lines] == [
        f'0="{folder}\\a b&c.bat"',
        f"dp0={folder}\\",
        "1=um",
        '2="dois & três"',
        "3=(x)",
    ]


@pytest.mark.wine
def test_it_refuses_to_start_a_script_using_a_command_wine_only_stubs(
    tmp_path: Path, pt_wine: tuple[list[str], dict[str, str]]
) -> None:
    marker = tmp_path / "runs" / "bat" / "started.txt"
    data = b"@echo off\r\necho started > started.txt\r\nrobocopy C:\\src D:\\dst /mir\r\n"

    with pytest.raises(CommandsUnavailable) as caught:
        run(tmp_path, data, pt_wine)

    assert caught.value.commands == ["robocopy"]
    assert "run this script on a Windows worker" in str(caught.value)
    assert not marker.exists()


def test_a_failed_run_that_waited_for_the_keyboard_is_recognised() -> None:
    python = InputWait("python", "")
    python.lines("stdout", ["Your name: "])
    assert not python.seen
    python.lines(
        "stderr", ["Traceback (most recent call last):", "EOFError: EOF when reading a line"]
    )
    assert python.seen

    pause = InputWait("batch", "@echo off\r\npause\r\nexit /b 1\r\n")
    assert not pause.seen
    pause.lines("stdout", ["Press any key to continue... "])
    assert pause.seen

    assert InputWait("batch", "@echo off\r\nset /p NAME=Name: \r\n").seen
