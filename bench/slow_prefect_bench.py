"""Pages and runs with a slow Prefect API: the same stack with Prefect answering at once and
with every call held 5 s (tests/delay_proxy.py in front of a real `scriptflow server`).

Measures, side by side for delay 0 s and 5 s:
- the answer time of each page (median of REPEAT fetches) and whether it said "Prefect is
  slow to answer" (pages share a 4 s budget for Prefect: platform/prefect_budget.py);
- the same for two API reads (no budget: they wait for Prefect);
- a run's time from "Run now" to its final state as the API reports it.

    .venv/bin/python bench/slow_prefect_bench.py [--delay 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402
from delay_proxy import stack_behind_proxy  # noqa: E402
from test_faults import signed_in  # noqa: E402

PAGES = ("/", "/scripts", "/scripts/{script}", "/runs", "/runs/{run}", "/schedules")
API = ("/api/v1/scripts", "/api/v1/runs")


def timed(client: httpx.Client, path: str, repeat: int) -> tuple[float, int, bool]:
    times, status, slow = [], 0, False
    for _ in range(repeat):
        started = time.monotonic()
        r = client.get(path)
        times.append(time.monotonic() - started)
        status, slow = r.status_code, slow or 'id="prefect-slow"' in r.text
    return statistics.median(times), status, slow


def run_time(admin: httpx.Client, script_id: int) -> tuple[float, str]:
    started = time.monotonic()
    run = admin.post(f"/scripts/{script_id}/runs").json()
    done = conftest.wait_run(admin, run["id"], timeout=1800)
    return time.monotonic() - started, done["status"]


def measure(stack, admin, browser, ids: dict, repeat: int) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for path in PAGES:
        out[path] = timed(browser, path.format(**ids), repeat)
    for path in API:
        out[path] = timed(admin, path.removeprefix("/api/v1"), repeat)
    out["run (Run now -> final)"] = run_time(admin, ids["script"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = conftest.private_home_base() / f"slow-bench-{os.getpid()}"
    try:
        with stack_behind_proxy(home) as (stack, proxy):
            with stack.client("admin") as admin, signed_in(stack.url) as browser:
                admin.timeout = browser.timeout = httpx.Timeout(600)
                script = conftest.upload(admin, "print('bench')\n")
                run = admin.post(f"/scripts/{script['id']}/runs").json()
                conftest.wait_run(admin, run["id"])
                ids = {"script": script["id"], "run": run["id"]}
                proxy.delay = 0.0
                fast = measure(stack, admin, browser, ids, args.repeat)
                proxy.delay = args.delay
                slow = measure(stack, admin, browser, ids, args.repeat)
                calls = proxy.requests
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"Prefect delay per call: 0 s vs {args.delay:g} s (median of {args.repeat})")
    slow_head = f"{args.delay:g} s"
    print(f"{'what':<28}{'0 s':>10}{'':>6}{slow_head:>10}{'':>6}  note at {slow_head}")
    for key in fast:
        f, s = fast[key], slow[key]
        if key.startswith("run"):
            print(f"{key:<28}{f[0]:>9.2f}s {f[1]:>5}{s[0]:>9.2f}s {s[1]:>5}")
            continue
        note = "Prefect is slow to answer" if s[2] else ""
        print(f"{key:<28}{f[0]:>9.2f}s {f[1]:>5}{s[0]:>9.2f}s {s[1]:>5}  {note}")
    print(f"requests through the proxy in all: {calls}")


if __name__ == "__main__":
    main()
