"""How much does capturing output cost? A 1,000,000-line Python script, median of 3 runs:

- direct: the script's stdout to /dev/null through subprocess;
- captured: run_script_process writing every line into an OutputLogWriter (the fast
  `on_lines` path), and the per-line `on_line` path for comparison.

Usage: python bench/bench_capture.py [lines]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.workdir import fresh_workdir
from scriptflow_prefect.history.output_log import OutputLogWriter

RUNS = 3


def median_seconds(action: Callable[[], None]) -> tuple[float, float]:
    """Median wall time, and median CPU time of this process (the capturing side), which
    a busy machine disturbs less than the wall time."""
    walls, cpus = [], []
    for _ in range(RUNS):
        started, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "many_lines.py"
        script.write_text(
            f"for i in range({lines}):\n    print(f'line {{i}} some typical log output text')\n"
        )
        python = sys.executable

        def direct() -> None:
            subprocess.run([python, "-u", str(script)], stdout=subprocess.DEVNULL, check=True)

        def captured(per_line: bool) -> None:
            log_path = root / "output.log"
            log_path.unlink(missing_ok=True)
            with OutputLogWriter(log_path) as log:
                result = run_script_process(
                    script,
                    "python",
                    fresh_workdir(root, "run"),
                    timeout=None,
                    cancel=threading.Event(),
                    python=Path(python),
                    on_line=log.write if per_line else None,
                    on_lines=None if per_line else log.write_lines,
                )
            assert result.outcome == "succeeded", result
            with log_path.open("rb") as handle:
                assert (
                    sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
                    == lines
                )

        base, _ = median_seconds(direct)
        fast, fast_cpu = median_seconds(lambda: captured(per_line=False))
        slow, slow_cpu = median_seconds(lambda: captured(per_line=True))
    print(f"{lines:,} lines, median of {RUNS}")
    print(f"direct to /dev/null:                 {base:.3f} s")
    for name, wall, cpu in (("on_lines", fast, fast_cpu), ("on_line ", slow, slow_cpu)):
        print(
            f"run_script_process + log ({name}): {wall:.3f} s  ratio {wall / base:.2f}"
            f"  (capturing CPU {cpu:.3f} s)"
        )


if __name__ == "__main__":
    main()
