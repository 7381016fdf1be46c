"""Run-start overhead of the sandbox: median of 20 runs of an empty script, with and without
it (interleaved, same machine, same moment), and the peak memory of the started process.

    .venv/bin/python bench/sandbox_bench.py [RUNS]

The sandbox is a prefix: this interpreter runs landlock.py (rules for every entry beside the
home's ancestors), restricts itself, then execs the script's interpreter, so it adds one
interpreter start and no process that stays. Needs Landlock (Linux 5.13+)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from scriptflow_prefect.execution import landlock
from scriptflow_prefect.execution.environment import ensure_script_python, scrubbed_env
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.sandbox import Sandbox, interpreter_folders, sandboxed


def main(runs: int) -> None:
    if landlock.abi_version() < 1:
        sys.exit("no Landlock here: nothing to measure")
    base = Path(tempfile.mkdtemp(prefix="sf-sandbox-bench-", dir="/var/tmp"))
    home = base / "home"
    run = home / "work" / "run"
    run.mkdir(parents=True)
    script = run / "empty.py"
    script.write_text("pass\n")
    python = ensure_script_python(home / "script-venv")
    boxes = {
        on: Sandbox((home,), (run,), (home / "script-venv", *interpreter_folders(python)), on)
        for on in (False, True)
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for on in (False, True):
            started = time.perf_counter()
            result = run_script_process(
                script,
                "python",
                run,
                timeout=60,
                on_line=None,
                cancel=threading.Event(),
                python=python,
                sandbox=boxes[on],
            )
            times[on].append(time.perf_counter() - started)
            assert result.outcome == "succeeded"
    rss = {
        on: _peak_rss_kib(sandboxed([str(python), "-u", str(script)], boxes[on]), run)
        for on in (False, True)
    }
    rules = len(
        landlock.rules(
            [str(home)], [str(run)], [str(p) for p in boxes[True].read_only], landlock.abi_version()
        )
    )
    shutil.rmtree(base, ignore_errors=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"Landlock ABI {landlock.abi_version()}, {runs} runs each, home under {base}")
    print(
        f"run of an empty script, median: without sandbox {off * 1000:.1f} ms, "
        f"with {on * 1000:.1f} ms (+{(on - off) * 1000:.1f} ms); {rules} rules"
    )
    print(f"peak RSS of the started process: without {rss[False]} KiB, with {rss[True]} KiB")


def _peak_rss_kib(argv: list[str], cwd: Path) -> int:
    proc = subprocess.Popen(argv, cwd=cwd, env=scrubbed_env())
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
