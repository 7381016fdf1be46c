"""What a run's working folder costs the runner before and after the script, median of 5:

- baseline: what every run did before (a fresh folder, the one script file written, the
  folder removed afterwards);
- `script` mode: the version's files written into the kept folder (unchanged files are
  compared, not rewritten), the folder scanned before and after, what changed kept;
- the same with a folder the runs filled over time (1 000 and 10 000 old files), and with
  a version of 100 files / 10 MB.

Usage: python bench/bench_workspace.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from scriptflow_prefect.execution import workspace
from scriptflow_prefect.execution.workdir import fresh_workdir, remove_workdir
from scriptflow_prefect.history import run_files

RUNS = 5
SCRIPT = b"print('hello')\n" * 20
RUN_ID = "00000000-0000-4000-8000-000000000000"


def median_ms(action: Callable[[], None]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = SimpleNamespace(outputs_dir=home / "outputs")
        kw = {"workspaces": home / "workspaces", "home": home}

        def baseline() -> None:
            root = fresh_workdir(home / "work", "r")
            (root / "script").mkdir()
            (root / "cwd").mkdir()
            (root / "script" / "script.py").write_bytes(SCRIPT)
            remove_workdir(root)

        def kept(script_id: int, files: list[tuple[str, bytes]]) -> Callable[[], None]:
            def run() -> None:
                run_root = fresh_workdir(home / "work", "r")
                place = workspace.prepare(
                    "script", None, run_root=run_root, script_id=script_id, **kw
                )
                workspace.write_files(place.script_dir, files)
                before = workspace.snapshot(place.cwd)
                (place.cwd / "run.log").write_bytes(os.urandom(64))  # what the script does
                changed, complete = workspace.changed_since(before, place.cwd)
                run_files.keep(settings, RUN_ID, place.cwd, changed, complete)
                remove_workdir(run_root)

            return run

        def filled(script_id: int, n: int) -> None:
            folder = home / "workspaces" / str(script_id) / "archive"
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:05}.log").write_bytes(b"x")

        filled(2, 1_000)
        filled(3, 10_000)
        big = [("job.py", SCRIPT)] + [(f"data/{i}.bin", os.urandom(100_000)) for i in range(99)]
        rows = [
            ("baseline: fresh folder, one file", median_ms(baseline)),
            ("script mode, one file, empty folder", median_ms(kept(1, [("job.py", SCRIPT)]))),
            ("script mode, folder of 1 000 files", median_ms(kept(2, [("job.py", SCRIPT)]))),
            ("script mode, folder of 10 000 files", median_ms(kept(3, [("job.py", SCRIPT)]))),
            ("script mode, 100 files / 10 MB version", median_ms(kept(4, big))),
        ]
    width = max(len(label) for label, _ms in rows)
    for label, ms in rows:
        print(f"{label:<{width}}  {ms:8.1f} ms  (+{ms - rows[0][1]:.1f} ms over baseline)")


if __name__ == "__main__":
    main()
