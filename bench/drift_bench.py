"""What the drift check costs: GET /api/v1/scheduler/drift (one read of Prefect: the run_script
deployments, those tagged `scriptflow`, and the scripts' ids) beside GET /api/v1/scheduler
(the baseline: the page's other reads), with N scripts, on a real `scriptflow up` of its own.
Also the scheduler page itself (which now makes both). Printed: median, p95 and max of
REPEAT answers each, per N. Compare the columns of one run, not figures across runs.

Usage: .venv/bin/python bench/drift_bench.py [--scripts 50 200] [--repeat 20]
Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)


def timed(call, repeat: int) -> list[float]:
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = call()
        took.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    return took


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    return f"median {statistics.median(ms):6.1f}  p95 {p95:6.1f}  max {ms[-1]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scripts", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    stack = conftest.start_stack(Path(tempfile.mkdtemp(prefix="drift-bench-")))
    try:
        token = stack.cli("token", "create", "admin").stdout.strip()
        api = httpx.Client(
            base_url=stack.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        page = httpx.Client(base_url=stack.url, timeout=60)
        login = page.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
        page.post(
            "/login",
            data={"username": "admin", "password": conftest.ADMIN_PASSWORD, "csrf_token": csrf},
        )
        have = 0
        for n in args.scripts:
            for i in range(have, n):
                files = {"file": (f"s{i}.py", b"print('x')\n")}
                assert api.post("/scripts", files=files, data={"name": f"s{i}"}).status_code == 201
            have = n
            print(f"{n} scripts, {args.repeat} answers each")
            print(
                "  GET /scheduler (baseline)  ",
                summary(timed(lambda: api.get("/scheduler"), args.repeat)),
            )
            print(
                "  GET /scheduler/drift       ",
                summary(timed(lambda: api.get("/scheduler/drift"), args.repeat)),
            )
            print(
                "  the /scheduler page (both) ",
                summary(timed(lambda: page.get("/scheduler"), args.repeat)),
            )
    finally:
        conftest.stop_stack(stack)


if __name__ == "__main__":
    main()
