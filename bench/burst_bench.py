"""Bursts on SQLite: the pilot's worst minute, with and without commands/prefect_sqlite.py.

For each variant (baseline: SCRIPTFLOW_SQLITE_IMMEDIATE_WRITES=off; fix: on) a real
`scriptflow up` on a home and ports of its own (tests/conftest.start_stack, the product's
default worker poll), PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true so that every 503 Prefect's
server answers is logged, and on a machine loaded with one busy-loop process per core:

  now-50   50 "Run now" at once (POST /api/v1/scripts/{id}/runs, one connection each)
  now-10   10 "Run now" at once: did all ten run at the same moment?
  sched-50 50 scripts scheduled for the same minute (the schedule API, daily at HH:MM UTC)

while 5 simulated users browse (the scripts and runs lists of the API in a loop). Each script
prints a line and sleeps SLEEP s. Printed per variant and phase: "Run now" answer times
(median, p95, max) and non-202 answers, 503s in Prefect's server log (and which statements
met them), start spread (first..last actual start), the most runs running at one moment,
whether all of them ran at one moment, end-to-end (click or due time -> last run ended), and
the browsing users' answer times. Machines are shared and noisy: compare the two columns of
one run, not figures across runs. Nothing here passes or fails.

Usage: .venv/bin/python bench/burst_bench.py [--runs 50] [--no-load] [--no-schedule]
[--only on|off]; ~5 min per variant. Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

SLEEP = 3
SOURCE = f"import time\nprint('started', flush=True)\ntime.sleep({SLEEP})\n"
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
RETRYABLE = "Encountered retryable exception in request"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _spin() -> None:
    while True:
        pass


class CpuLoad:
    """One busy-loop process per core (a `stress --cpu N`)."""

    def __init__(self, on: bool) -> None:
        self.procs: list[multiprocessing.Process] = []
        self.on = on

    def __enter__(self) -> CpuLoad:
        if self.on:
            for _ in range(os.cpu_count() or 1):
                p = multiprocessing.Process(target=_spin, daemon=True)
                p.start()
                self.procs.append(p)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(5)


class Browsers:
    """Five users reading lists in a loop; their answer times."""

    PATHS = ("/scripts?per_page=20", "/runs?per_page=20", "/runs?status=running", "/scripts")

    def __init__(self, stack: conftest.Stack, users: int = 5) -> None:
        self.stack, self.users = stack, users
        self.times: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, n: int) -> None:
        with self.stack.client("admin") as c:
            i = n
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    ok = c.get(self.PATHS[i % len(self.PATHS)], timeout=60).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.monotonic() - began)
                self.errors += not ok
                i += 1
                self._stop.wait(0.5)

    def __enter__(self) -> Browsers:
        for n in range(self.users):
            t = threading.Thread(target=self._loop, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(70)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def server_log(stack: conftest.Stack) -> str:
    return (stack.home / "logs" / "prefect-server.log").read_text(errors="replace")


def busy_statements(text: str) -> Counter:
    """Which SQL statements met "database is locked", from the logged tracebacks."""
    found: Counter = Counter()
    for block in text.split(RETRYABLE)[1:]:
        m = re.search(r"\[SQL: (.{0,60})", block)
        found[re.sub(r"\s+", " ", m.group(1)).strip()[:48] if m else "?"] += 1
    return found


def wait_final(client: httpx.Client, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for run_id in ids:
            if runs.get(run_id, {}).get("status") not in FINAL:
                try:
                    r = client.get(f"/runs/{run_id}", timeout=120)
                except httpx.HTTPError:  # an overloaded stack: ask again
                    continue
                if r.status_code == 200:
                    runs[run_id] = r.json()
        if all(runs.get(i, {}).get("status") in FINAL for i in ids):
            break
        time.sleep(1)
    return [runs.get(i, {"id": i, "status": "?"}) for i in ids]


def overlap(runs: list[dict]) -> tuple[int, bool]:
    """The most runs running at one moment, and whether all of them did."""
    spans = [(at(r["started_at"]), at(r["ended_at"])) for r in runs if r.get("ended_at")]
    events = sorted([(s, 1) for s, _e in spans] + [(e, -1) for _s, e in spans])
    most = now = 0
    for _t, step in events:
        now += step
        most = max(most, now)
    return most, bool(spans) and len(spans) == len(runs) and most == len(runs)


def summarise(runs: list[dict], origin: datetime) -> dict[str, str]:
    done = [r for r in runs if r.get("started_at") and r.get("ended_at")]
    statuses = Counter(r["status"] for r in runs)
    row = {"statuses": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))}
    if not done:
        return row
    starts = sorted(at(r["started_at"]) for r in done)
    most, together = overlap(runs)
    row["first start after t0 (s)"] = f"{(starts[0] - origin).total_seconds():.1f}"
    row["start spread (s)"] = f"{(starts[-1] - starts[0]).total_seconds():.1f}"
    row["most running at once"] = str(most)
    row["all ran at one moment"] = "yes" if together else "no"
    last = max(at(r["ended_at"]) for r in done)
    row["end-to-end (s)"] = f"{(last - origin).total_seconds():.1f}"
    return row


def run_now_burst(stack: conftest.Stack, scripts: list[dict]) -> tuple[dict[str, str], list]:
    def click(script: dict) -> tuple[float, int, str | None]:
        with stack.client("admin") as own:  # one connection each: many clicks at once
            began = time.monotonic()
            try:
                r = own.post(f"/scripts/{script['id']}/runs", timeout=180)
                code, run_id = r.status_code, r.json().get("id")
            except httpx.HTTPError:
                code, run_id = 0, None
            return time.monotonic() - began, code, run_id

    origin = datetime.now(UTC)
    with ThreadPoolExecutor(len(scripts)) as pool:
        answers = list(pool.map(click, scripts))
    times = [a[0] for a in answers]
    row = {
        "Run now answer median (s)": f"{statistics.median(times):.2f}",
        "Run now answer p95 (s)": f"{pct(times, 0.95):.2f}",
        "Run now answer max (s)": f"{max(times):.2f}",
        "Run now answers > 2 s": str(sum(t > 2 for t in times)),
        "Run now not 202": str(sum(a[1] != 202 for a in answers)),
    }
    ids = [a[2] for a in answers if a[2]]
    with stack.client("admin") as c:
        runs = wait_final(c, ids, timeout=300)
    return {**row, **summarise(runs, origin)}, runs


def scheduled_burst(stack: conftest.Stack, scripts: list[dict]) -> dict[str, str]:
    now = datetime.now(UTC)
    due = (now + timedelta(seconds=100)).replace(second=0, microsecond=0)
    if (due - now).total_seconds() < 50:
        due += timedelta(minutes=1)
    body = {"frequency": "daily", "time": due.strftime("%H:%M"), "timezone": "UTC"}
    with stack.client("admin") as c:
        c.timeout = httpx.Timeout(180)
        refused = 0
        for s in scripts:
            r = c.put(f"/scripts/{s['id']}/schedule", json={**body, "active": True})
            refused += r.status_code != 200  # e.g. Prefect still busy (503)
        if refused:
            say(f"  {refused} schedules were not saved")
        if datetime.now(UTC) > due - timedelta(seconds=15):
            return {"statuses": "schedules not saved in time"}
        say(f"  {len(scripts)} scripts due at {due:%H:%M:%S} UTC")
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        wanted = {s["id"] for s in scripts}
        runs: list[dict] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                r = c.get("/runs", params={"trigger": "scheduled", "per_page": 100})
                runs = [x for x in r.json()["items"] if x["script_id"] in wanted]
            except httpx.HTTPError:
                pass
            if len(runs) >= len(scripts) - refused and all(x["status"] in FINAL for x in runs):
                break
            time.sleep(2)
        for s in scripts:
            try:
                c.delete(f"/scripts/{s['id']}/schedule")
            except httpx.HTTPError:
                pass
    row = summarise(runs, due)
    row["scheduled runs seen"] = str(len(runs))
    return row


def quiet(stack: conftest.Stack, timeout: float = 300) -> None:
    """Until the previous phase's runs have all ended (a phase that gave up leaves some)."""
    deadline = time.monotonic() + timeout
    with stack.client("admin") as c:
        while time.monotonic() < deadline:
            try:
                left = sum(
                    c.get("/runs", params={"status": s, "per_page": 1}, timeout=60).json()["total"]
                    for s in ("queued", "running")
                )
            except httpx.HTTPError:
                left = -1
            if left == 0:
                return
            time.sleep(3)


def variant(setting: str, n: int, load: bool, schedule: bool) -> dict[str, dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix=f"sf-burst-{setting}-"))
    env = {
        "SCRIPTFLOW_SQLITE_IMMEDIATE_WRITES": setting,
        "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
        "SCRIPTFLOW_WORKER_POLL_SECONDS": None,  # the product's default, not the tests' 1 s
    }
    say(f"variant {setting}: starting scriptflow up in {home}")
    stack = conftest.start_stack(home, env)
    results: dict[str, dict[str, str]] = {}
    try:
        r = stack.cli("token", "create", "admin")
        assert r.returncode == 0, r.stderr
        stack.tokens["admin"] = r.stdout.strip()
        with stack.client("admin") as c:
            scripts = [conftest.upload(c, SOURCE) for _ in range(n)]
        phases = [("now-10", scripts[:10]), (f"now-{n}", scripts)]
        if schedule:
            phases.append((f"sched-{n}", scripts))
        for name, chosen in phases:
            quiet(stack)
            say(f"  {name}")
            before = server_log(stack).count(RETRYABLE)
            before_text = len(server_log(stack))
            with CpuLoad(load), Browsers(stack) as users:
                if name.startswith("sched"):
                    row = scheduled_burst(stack, chosen)
                else:
                    row, _runs = run_now_burst(stack, chosen)
            log = server_log(stack)
            row["503s in Prefect's log"] = str(log.count(RETRYABLE) - before)
            for stmt, count in busy_statements(log[before_text:]).most_common(4):
                say(f"    503 x{count}: {stmt}")
            row["browsing answer median/max (s)"] = (
                f"{statistics.median(users.times):.2f} / {max(users.times):.2f}"
                if users.times
                else "-"
            )
            row["browsing errors"] = str(users.errors)
            results[name] = row
            for k, v in row.items():
                say(f"    {k}: {v}")
            time.sleep(3)
    finally:
        conftest.stop_stack(stack)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-load", action="store_true", help="no busy-loop processes")
    ap.add_argument("--no-schedule", action="store_true", help="skip the scheduled burst")
    ap.add_argument("--only", choices=("on", "off"), help="one variant only")
    args = ap.parse_args()
    load, schedule = not args.no_load, not args.no_schedule
    settings = [args.only] if args.only else ["off", "on"]
    out = {s: variant(s, args.runs, load, schedule) for s in settings}
    say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"\n{'':38} | " + " | ".join(f"{'baseline' if s == 'off' else 'fix':>22}" for s in out))
    phases = list(next(iter(out.values())))
    for phase in phases:
        print(f"-- {phase}")
        keys = list(dict.fromkeys(k for s in out for k in out[s].get(phase, {})))
        for k in keys:
            cells = " | ".join(f"{out[s].get(phase, {}).get(k, '-'):>22}" for s in out)
            print(f"{k:38} | {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
