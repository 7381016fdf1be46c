"""What reading schedules from Prefect every time costs (issue 14: schedules/truth.py).

On a real stack with N scheduled scripts (a quarter of them paused in Prefect, so the "why did
it stop" question is asked too), side by side in the same run:
- the truths of N scripts read from Prefect (`read_truths`: one bulk request + one per
  stopped schedule, kept 20 s) against the last saved forms (`saved_truth`: what the pages
  showed before issue 14, no Prefect call), in-process, median of REPEAT;
- the answer time of `GET /api/v1/scripts?per_page=N`, the dashboard rows and /schedules.

    .venv/bin/python bench/schedule_truth_bench.py [--scripts 50] [--repeat 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402
from test_prefect_truth import signed_in  # noqa: E402
from test_schedule_runs import deployment_id, prefect_client, prefect_exports  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scripts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="truth-bench-"))
    stack = conftest.start_stack(home)
    try:
        stack.cli("user", "add", "alice", "--password-stdin", input="alice-pass-123\n")
        stack.tokens["alice"] = stack.cli("token", "create", "alice").stdout.strip()
        os.environ.update(prefect_exports(stack))  # for the in-process Prefect client below
        from scriptflow_prefect.schedules.truth import read_truths, saved_truth

        scripts = []
        with stack.client("alice") as alice, prefect_client(stack) as prefect:
            for i in range(args.scripts):
                s = conftest.upload(alice, "print(1)\n", name=f"truth-bench-{i}")
                body = {"frequency": "daily", "time": f"{i % 24:02d}:15", "timezone": "UTC"}
                alice.put(f"/scripts/{s['id']}/schedule", json=body).raise_for_status()
                dep = deployment_id(prefect, s)
                if i % 4 == 0:
                    for sched in prefect.read_deployment_schedules(dep):
                        prefect.update_deployment_schedule(dep, sched.id, active=False)
                scripts.append(
                    SimpleNamespace(
                        id=s["id"], schedule={**body, "active": True}, settings=None,
                        deployment_id=str(dep),
                    )
                )  # fmt: skip
            from_prefect = median_ms(lambda: asyncio.run(read_truths(scripts)), args.repeat)
            saved = median_ms(lambda: [saved_truth(s) for s in scripts], args.repeat)
            per_page = {"per_page": min(args.scripts, 100)}
            api = median_ms(lambda: alice.get("/scripts", params=per_page), args.repeat)
            web = signed_in(stack, "alice")
            rows = median_ms(lambda: web.get("/dashboard/rows"), args.repeat)
            listed = median_ms(lambda: web.get("/schedules"), args.repeat)
            web.close()
        n = args.scripts
        print(f"schedule truth, {n} scheduled scripts ({n // 4 + (n % 4 > 0)} paused in Prefect)")
        print(f"  {'what':44} {'median ms':>10}")
        print(f"  {'read from Prefect (read_truths)':44} {from_prefect:10.1f}")
        print(f"  {'last saved form (saved_truth, baseline)':44} {saved:10.1f}")
        print(f"  {'ratio':44} {from_prefect / saved:10.2f}")
        label = f"GET /api/v1/scripts?per_page={per_page['per_page']}"
        print(f"  {label:44} {api:10.1f}")
        print(f"  {'GET /dashboard/rows':44} {rows:10.1f}")
        print(f"  {'GET /schedules':44} {listed:10.1f}")
    finally:
        conftest.stop_stack(stack)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
