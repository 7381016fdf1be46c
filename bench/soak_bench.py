"""Soak: many runs over a long time, a few at once; does anything get stuck or grow?

Issue 13's soak: 1 000 runs over an hour with 10 at a time. `--concurrency` client loops each
do "Run now" (POST /api/v1/scripts/{id}/runs) on their own script, wait for its final state,
and start the next, until `--runs` have been started. Each script prints a line a second for
`--script-seconds` (default: sized so the runs fill `--minutes`).

Printed at the end (nothing passes or fails here; the machines are shared and noisy):
- runs by final status, runs not final 120 s after the last one should have ended (stuck);
- "Run now" answer time and queue delay (answer -> started) medians and p95;
- memory of the stack's process tree (the scripts excluded): after the warm-up (the
  baseline, measured in the same run), every minute, at the end; end / start ratio.

Usage: python bench/soak_bench.py [--runs 1000] [--concurrency 10] [--minutes 60]
Quick check: --runs 60 --minutes 3. Talks only to 127.0.0.1; stops everything it started.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
MB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def script_source(seconds: int) -> str:
    return (
        "import time, sys\n"
        f"for i in range({seconds}):\n"
        "    print(f'line {i}: ' + 'x' * 60, flush=True)\n"
        "    if i % 10 == 9: print('a warning', file=sys.stderr, flush=True)\n"
        "    time.sleep(1)\n"
    )


def stack_rss(stack: conftest.Stack) -> int:
    """RSS of `up` and its descendants, without the scripts (they run under work/)."""
    total = 0
    try:
        root = psutil.Process(stack.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            cmd = " ".join(p.cmdline())
            if "scriptflow_prefect" not in cmd and "prefect" not in cmd:
                continue  # a script, wine, uv: not the stack's own memory
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--script-seconds", type=int, default=None)
    args = ap.parse_args()
    per_loop = args.runs / args.concurrency
    seconds = args.script_seconds or max(1, int(args.minutes * 60 / per_loop) - 3)

    home = Path(tempfile.mkdtemp(prefix="scriptflow-soak-", dir="/var/tmp"))
    say(
        f"starting the stack on {home}; {args.runs} runs, {args.concurrency} at once, "
        f"scripts of {seconds} s"
    )
    stack = conftest.start_stack(home)
    try:
        r = stack.cli("token", "create", "admin")
        assert r.returncode == 0, r.stderr
        stack.tokens["admin"] = r.stdout.strip()
        api = stack.client()
        api.timeout = 60
        ids = []
        for i in range(args.concurrency):
            resp = api.post(
                "/scripts",
                files={"file": (f"soak{i}.py", script_source(seconds).encode())},
                data={"name": f"soak-{i}"},
            )
            resp.raise_for_status()
            ids.append(resp.json()["id"])
        # Warm-up: one short run per script, then the baseline memory.
        warm = [api.post(f"/scripts/{sid}/runs").json()["id"] for sid in ids]
        deadline = time.monotonic() + seconds + 120
        while time.monotonic() < deadline:
            if all(api.get(f"/runs/{rid}").json()["status"] in FINAL for rid in warm):
                break
            time.sleep(1)
        time.sleep(5)
        start_rss = stack_rss(stack)
        say(f"baseline memory after warm-up: {start_rss / MB:.0f} MB")

        lock = threading.Lock()
        started = {"n": 0}
        answers: list[float] = []
        queue_delays: list[float] = []
        outcomes: Counter[str] = Counter()
        unfinished: list[str] = []
        errors: list[str] = []
        samples: list[tuple[float, int]] = [(0.0, start_rss)]

        def loop(script_id: int) -> None:
            client = stack.client()
            client.timeout = 60
            while True:
                with lock:
                    if started["n"] >= args.runs:
                        return
                    started["n"] += 1
                t0 = time.monotonic()
                try:
                    resp = client.post(f"/scripts/{script_id}/runs")
                except httpx.HTTPError as exc:
                    errors.append(f"run now: {exc!r}")
                    continue
                answer = time.monotonic() - t0
                if resp.status_code != 202:
                    errors.append(f"run now: HTTP {resp.status_code} {resp.text[:100]}")
                    continue
                run_id = resp.json()["id"]
                answered_at = time.time()
                end_by = time.monotonic() + seconds + 180
                status, run = "queued", {}
                while time.monotonic() < end_by:
                    try:
                        run = client.get(f"/runs/{run_id}").json()
                        status = run.get("status", "?")
                    except httpx.HTTPError:
                        pass
                    if status in FINAL:
                        break
                    time.sleep(1)
                began = parse_time(run.get("started_at"))
                with lock:
                    answers.append(answer)
                    outcomes[status] += 1
                    if began:
                        queue_delays.append(max(0.0, began - answered_at))
                    if status not in FINAL:
                        unfinished.append(run_id)

        threads = [threading.Thread(target=loop, args=(sid,), daemon=True) for sid in ids]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(60 if args.minutes >= 10 else 10)
            rss = stack_rss(stack)
            samples.append((time.monotonic() - t_start, rss))
            say(
                f"{started['n']} runs started, {sum(outcomes.values())} ended; stack "
                f"{rss / MB:.0f} MB"
            )
        took = time.monotonic() - t_start
        time.sleep(5)
        end_rss = stack_rss(stack)
        # Runs still not final: are they stuck, or just slow? Ask once more.
        stuck = [rid for rid in unfinished if api.get(f"/runs/{rid}").json()["status"] not in FINAL]

        print()
        print(
            f"Soak: {sum(outcomes.values())} runs in {took / 60:.1f} min, "
            f"{args.concurrency} at a time, scripts of {seconds} s"
        )
        print(f"  final statuses:        {dict(outcomes)}")
        print(f"  stuck (not final):     {len(stuck)} {stuck[:5]}")
        print(f"  request errors:        {len(errors)} {errors[:3]}")
        print(
            f"  Run now answer:        median {statistics.median(answers):.2f} s, "
            f"p95 {pct(answers, 0.95):.2f} s, max {max(answers):.2f} s"
        )
        if queue_delays:
            print(
                f"  answer -> started:     median {statistics.median(queue_delays):.2f} s, "
                f"p95 {pct(queue_delays, 0.95):.2f} s, max {max(queue_delays):.2f} s"
            )
        peak = max(rss for _t, rss in samples)
        print(
            f"  stack memory:          start {start_rss / MB:.0f} MB (baseline, after "
            f"warm-up), end {end_rss / MB:.0f} MB, peak {peak / MB:.0f} MB; "
            f"end/start {end_rss / start_rss:.2f}"
        )
        return 0
    finally:
        conftest.stop_stack(stack)


if __name__ == "__main__":
    sys.exit(main())
