"""What does masking secret values cost where output lines are delivered? The same
1,000,000 lines in batches of 500 (about what a pipe read gives), median CPU time of 5:

- baseline: no secret (the runner does not call the pattern at all);
- 3 secrets, none printed (the common case: one scan of each batch);
- 3 secrets, one printed on every 100th line (those batches are masked line by line);
- 3 secrets, one printed on every line (the worst case).

Usage: python bench/bench_masking.py [lines]
"""

from __future__ import annotations

import statistics
import sys
import time

from scriptflow_prefect.execution.masking import Masker

RUNS = 5
BATCH = 500
SECRETS = ["Tr0ub4dor-7731-zq", "db-password-2026", "ab7"]


def lines(n: int, every: int | None) -> list[list[str]]:
    texts = [
        f"2026-12-02 03:00:{i % 60:02d} copied file {i} of {n} to D:\\Backups\\daily"
        + (f" using {SECRETS[0]}" if every and i % every == 0 else "")
        for i in range(n)
    ]
    return [texts[i : i + BATCH] for i in range(0, n, BATCH)]


def cpu_seconds(mask: Masker, batches: list[list[str]]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.process_time()
        for batch in batches:
            if mask:
                mask.lines(batch)
        times.append(time.process_time() - started)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    masked = Masker(SECRETS)
    cases = [
        ("baseline: no secret", Masker([]), None),
        ("3 secrets, none printed", masked, None),
        ("3 secrets, every 100th line", masked, 100),
        ("3 secrets, every line", masked, 1),
    ]
    print(f"{n:,} lines in batches of {BATCH}, median CPU of {RUNS}")
    base = None
    for label, mask, every in cases:
        seconds = cpu_seconds(mask, lines(n, every))
        base = seconds if base is None else base
        per_line = seconds / n * 1e6
        print(f"  {label:<30} {seconds:7.3f} s  {per_line:6.3f} µs/line  +{seconds - base:.3f} s")


if __name__ == "__main__":
    main()
