"""What faithful text costs, each figure beside its baseline from the same run (medians):

- .bat start under wine: `wine cmd /c job.bat` (the old way, 8-bit exit code) against the
  wrapper that keeps the whole exit code (one more cmd process), a one-line script, prefix warm;
- Python start: the script's virtualenv with the ordered-output hook against the same Python
  with the hook's variable unset (the hook does nothing then), `print("hi")`;
- ordering: 1,000 alternating stdout/stderr lines through run_script_process, out-of-order
  count with the ordered channel and with two plain pipes;
- throughput: 1,000,000 lines through run_script_process, ordered channel against plain pipes.

Usage: python bench/bench_text.py [runs]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scriptflow_prefect.execution import process
from scriptflow_prefect.execution.bat_exit_code import wrapped_command
from scriptflow_prefect.execution.environment import ensure_script_python, scrubbed_env
from scriptflow_prefect.execution.launchers import WINE_BAT_LAUNCHER, warm_up_launcher
from scriptflow_prefect.execution.output_hook import ORDERED_FD_VARIABLE
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.wine import (
    locale_variables,
    prepare_base_prefix,
    run_variables,
    windows_path,
)
from scriptflow_prefect.execution.workdir import fresh_workdir


def median(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    """Medians of a and b run turn about, so that a busy moment hits both alike."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(median(a, 1))
        tb.append(median(b, 1))
    return statistics.median(ta), statistics.median(tb)


def bench_wine(root: Path, runs: int) -> None:
    if shutil.which("wine") is None:
        print("wine: not installed, skipped")
        return
    launcher = WINE_BAT_LAUNCHER
    env = scrubbed_env() | {"WINEPREFIX": str(root / "prefix")} | locale_variables()
    warm_up_launcher(launcher, env)
    prepare_base_prefix("wine", env, "pt_BR")
    env |= run_variables(root, "pt_BR")
    script = root / "job.bat"
    script.write_bytes(b"@echo off\r\necho hello\r\n")
    folder = root / "private"
    folder.mkdir()
    wrapped, _exit_file = wrapped_command(launcher, script, [], folder)

    def start(argv: list[str]) -> Callable[[], object]:
        # Output to a file: wine's services keep an inherited pipe open for seconds.
        def go() -> None:
            with open(root / "out.txt", "wb") as out:
                subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, check=False)

        return go

    direct, wrapper = interleaved(start([*launcher, windows_path(script)]), start(wrapped), runs)
    subprocess.run(["wineserver", "-k"], env=env, check=False)  # the bench's own prefix
    print(
        f"wine .bat start: direct {direct * 1000:.0f} ms, through the exit-code wrapper "
        f"{wrapper * 1000:.0f} ms (+{(wrapper - direct) * 1000:.0f} ms)"
    )


def bench_python(root: Path, runs: int) -> None:
    python = ensure_script_python(root / "venv")
    env = scrubbed_env()

    def start(with_hook: bool) -> Callable[[], object]:
        def go() -> None:
            variables = dict(env)
            if with_hook:
                # An inherited pipe, as the runner gives it: the hook installs itself.
                read_end, write_end = os.pipe()
                variables[ORDERED_FD_VARIABLE] = str(write_end)
                subprocess.run(
                    [str(python), "-c", "print('hi')"],
                    env=variables,
                    pass_fds=(write_end,),
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
                os.close(write_end)
                os.close(read_end)
            else:
                subprocess.run(
                    [str(python), "-c", "print('hi')"],
                    env=variables,
                    stdout=subprocess.DEVNULL,
                    check=True,
                )

        return go

    plain, hooked = interleaved(start(False), start(True), runs)
    print(
        f"python start: without the hook {plain * 1000:.1f} ms, with it "
        f"{hooked * 1000:.1f} ms (+{(hooked - plain) * 1000:.1f} ms)"
    )

    source = root / "alternate.py"
    source.write_text(
        "import sys\nfor i in range(1000):\n    print(f'out {i}')\n"
        "    print(f'err {i}', file=sys.stderr)\n"
    )
    expected = [s for i in range(1000) for s in (("stdout", f"out {i}"), ("stderr", f"err {i}"))]
    many = root / "many.py"
    many.write_text(
        "for i in range(1_000_000):\n    print(f'line {i} some typical log output text')\n"
    )
    ordered_channel = process._ordered_channel
    plain_pipes = lambda kind, env: None  # noqa: E731 - the runner without the channel

    def with_channel(channel: object, action: Callable[[], object]) -> Callable[[], object]:
        def go() -> object:
            process._ordered_channel = channel  # type: ignore[assignment]
            try:
                return action()
            finally:
                process._ordered_channel = ordered_channel

        return go

    def alternate() -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        run_script_process(
            source,
            "python",
            fresh_workdir(root, "run"),
            timeout=60,
            on_line=lambda ts, stream, text: lines.append((stream, text)),
            cancel=threading.Event(),
            python=python,
        )
        return lines

    def flood() -> None:
        run_script_process(
            many,
            "python",
            fresh_workdir(root, "run"),
            timeout=600,
            on_line=None,
            on_lines=lambda ts, stream, texts: None,
            cancel=threading.Event(),
            python=python,
        )

    for label, channel in (("ordered channel", ordered_channel), ("two plain pipes", plain_pipes)):
        got = with_channel(channel, alternate)()
        wrong = sum(1 for have, want in zip(got, expected, strict=True) if have != want)
        print(f"{label}: {wrong} of 2000 alternating lines out of order")
    ordered, plain = interleaved(
        with_channel(ordered_channel, flood), with_channel(plain_pipes, flood), 3
    )
    print(
        f"1,000,000 lines (median of 3): ordered channel {ordered:.1f} s, "
        f"two plain pipes {plain:.1f} s"
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        bench_python(Path(tmp), runs)
        bench_wine(Path(tmp), runs)


if __name__ == "__main__":
    main()
