"""Crash recovery, repeated: SIGKILL of `scriptflow up` (and, separately, of a lone
`scriptflow worker`) mid-run, then a restart on the same home.

Each repetition: a `while True` script that leaves a grandchild in a session of its own is
running; the process is killed with SIGKILL (for `up`, its Prefect server too: the machine
went down); it is started again. Printed: runs ended `crashed` (and with which message),
median / max seconds from the restart to `crashed` (and, for `up`, how much of it the stack's
own start took: restart -> /health), orphan processes left (any process whose environment
names a crashed run), duplicate runs (runs of the script beyond those started), schedules
intact (a scheduled script's next run time unchanged). The baseline, from the same run: the
stack's plain start (restart -> /health) with nothing to recover. Contract: crashed within
30 s of the restart (API.md "Runs").

Usage: .venv/bin/python bench/crash_bench.py [-n 20] [--only up|worker]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402
import test_recovery as crash  # noqa: E402

SCHEDULE = {"frequency": "daily", "time": "03:17", "timezone": "UTC", "active": True}


def _summary(label: str, results: list[dict], starts: list[float]) -> None:
    took = [r["took"] for r in results if r["took"] is not None]
    crashed = sum(r["status"] == "crashed" for r in results)
    print(f"\n{label}: {len(results)} repetitions")
    print(f"  runs ended crashed                {crashed}/{len(results)}")
    codes = sorted({r["code"] for r in results})
    print(f"  their messages                    {', '.join(str(c) for c in codes)}")
    if took:
        print(
            f"  restart -> crashed                median {statistics.median(took):.1f} s, "
            f"max {max(took):.1f} s (contract 30 s)"
        )
    if starts:
        print(
            f"  of which the start (-> /health)   median {statistics.median(starts):.1f} s, "
            f"max {max(starts):.1f} s"
        )
    print(f"  orphans left                      {sum(r['orphans'] for r in results)}")
    print(f"  duplicate runs                    {sum(r['duplicates'] for r in results)}")
    intact = sum(r["schedule_ok"] for r in results)
    print(f"  schedules intact                  {intact}/{len(results)}")


def _setup(admin) -> tuple[dict, dict, str]:
    script = conftest.upload(admin, crash.WITH_GRANDCHILD, name="forever")
    scheduled = conftest.upload(admin, "print('hi')\n", name="scheduled")
    r = admin.put(f"/scripts/{scheduled['id']}/schedule", json=SCHEDULE)
    assert r.status_code == 200, r.text
    return script, scheduled, _next_run(admin, scheduled["id"])


def _next_run(admin, script_id: int) -> str:
    """The script's schedule as it reads back (active, its next times). Prefect's own queued
    run was meant here, but the runs list did not show it within 180 s (not looked into)."""
    schedule = admin.get(f"/scripts/{script_id}/schedule").json()
    return f"{schedule.get('active')} {schedule.get('next_runs', [''])[0]}"


def _after(admin, run_id: str, script: dict, started: int, scheduled: dict, nxt: str, t0):
    run, _ = crash.wait_crashed(admin, run_id, 300)
    took = time.monotonic() - t0
    orphans = len(crash.marked(run_id))
    total = admin.get("/runs", params={"script_id": script["id"]}).json()["total"]
    return {
        "status": run["status"],
        "code": run.get("message_code"),
        "took": took if run["status"] == "crashed" else None,
        "orphans": orphans,
        "duplicates": max(0, total - started),
        "schedule_ok": _next_run(admin, scheduled["id"]) == nxt,
    }


def bench_up(n: int, work: Path) -> None:
    home = work / "up-home"
    t = time.monotonic()
    stack = crash._with_token(conftest.start_stack(home, crash.RESTART_ENV))
    baseline = [time.monotonic() - t]
    results, starts = [], []
    try:
        with stack.client() as admin:
            script, scheduled, nxt = _setup(admin)
        for i in range(n):
            with stack.client() as admin:
                run_id = crash.start_running(admin, script["id"], 2)
            crash.kill_hard(stack.proc, crash.prefect_servers_of(stack.proc))
            t0 = time.monotonic()
            stack = crash._with_token(conftest.start_stack(home, crash.RESTART_ENV))
            starts.append(time.monotonic() - t0)
            with stack.client() as admin:
                results.append(_after(admin, run_id, script, i + 1, scheduled, nxt, t0))
            print(f"up #{i + 1}: {results[-1]}", flush=True)
    finally:
        conftest.stop_stack(stack)
    _summary("SIGKILL of scriptflow up", results, starts)
    print(f"  baseline: a fresh stack's start   {baseline[0]:.1f} s")


def bench_worker(n: int, work: Path) -> None:
    split = crash.SplitStack(work / "worker-home", crash.RESTART_ENV)
    results = []
    try:
        with split.stack.client() as admin:
            script, scheduled, nxt = _setup(admin)
            for i in range(n):
                run_id = crash.start_running(admin, script["id"], 2)
                crash.kill_hard(split.worker)
                t0 = time.monotonic()
                split.worker = split.start_worker()
                results.append(_after(admin, run_id, script, i + 1, scheduled, nxt, t0))
                print(f"worker #{i + 1}: {results[-1]}", flush=True)
    finally:
        split.stop()
    _summary("SIGKILL of scriptflow worker (server and web stay up)", results, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--only", choices=["up", "worker"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    try:
        if args.only in (None, "worker"):
            bench_worker(args.n, work)
        if args.only in (None, "up"):
            bench_up(args.n, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
