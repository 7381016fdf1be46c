"""Run history at size: the runs list over 100 000 runs, full-text search over 30 days of
output, and capturing a 1 M-line run, each beside a baseline measured in the same run.

A. History list, GET /api/v1/runs (server time as seen by a client on the same machine: the
   overlay + Prefect on SQLite), first page and each filter, p50/p95 of N requests after one
   cold request. Baseline: the previous query path (`baseline_read_runs`: tag filters, count
   then page, a new Prefect client per call), timed in this process against the same server.
B. Full-text search (`q`) over 30 days of output. Baseline: the previous linear scan of the
   output files of the newest 2 000 runs (which also missed anything older).
C. A script printing 1 000 000 lines (~60 MB): the run's own duration in Prefect and "Run now"
   to final state, beside the same script run directly (`python -u`, as the runner does, and
   plain `python`) to a file; the stack's peak RSS growth during the run.

How the 100 000 runs get there: through Prefect's API a run costs a few ms of server time
(measured below for a sample, with 8 concurrent create calls), so the rest are inserted with
Prefect's own ORM models into its SQLite database, inside this benchmark only. They are real
flow runs of the scripts' deployments (tags, parameters, states, labels as ScriptFlow makes).

Usage: /work/venv/bin/python bench/bench_history.py [--runs 100000] [--quick] [--keep]
Prints a table and saves it to bench/results-history.txt. Machines are shared and noisy: read
medians and ratios. Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402

RESULTS = ROOT / "bench" / "results-history.txt"
N_SCRIPTS = 50
WORDS = (
    "backup rsync invoice customer order report export import database table row "
    "sync copy move archive mail smtp http request response timeout retry queue job "
    "user account ledger payment stock warehouse shipment label printer file folder "
    "disk volume mount network host server client token session cache index"
).split()

out_lines: list[str] = []


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def row(*cells) -> None:
    line = "  ".join(str(c) for c in cells)
    out_lines.append(line)
    print(line, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


def ms(v: float) -> str:
    return f"{v * 1000:7.0f} ms"


# --- setup -----------------------------------------------------------------------------------


def prefect_http(stack) -> httpx.Client:
    user, _s, pw = (stack.home / "prefect" / "auth_string").read_text().strip().partition(":")
    return httpx.Client(base_url=stack.prefect_url + "/api", auth=(user, pw), timeout=60)


def make_scripts(stack, api: httpx.Client) -> list[dict]:
    scripts = []
    with prefect_http(stack) as p:
        for i in range(N_SCRIPTS):
            r = api.post(
                "/scripts",
                files={"file": (f"job{i}.py", b"print('x')\n")},
                data={"name": f"bench-job-{i}"},
            )
            r.raise_for_status()
            s = r.json()
            dep = p.get(f"/deployments/name/run_script/{s['name']}").json()
            scripts.append(
                {
                    "id": s["id"],
                    "name": s["name"],
                    "deployment_id": dep["id"],
                    "flow_id": dep["flow_id"],
                }
            )
    return scripts


def api_create_rate(stack, scripts, n: int) -> float:
    """Runs per second that Prefect's API takes (8 concurrent creates, as finished runs)."""

    def one(i) -> bool:
        s = scripts[i % len(scripts)]
        deadline = time.monotonic() + 60
        with prefect_http(stack) as p:
            while time.monotonic() < deadline:
                try:  # SQLite: two writes at once answer 503; try again, as clients do
                    r = p.post(
                        f"/deployments/{s['deployment_id']}/create_flow_run",
                        json={
                            "tags": ["manual"],
                            "state": {"type": "COMPLETED", "name": "Completed"},
                        },
                    )
                except httpx.TransportError:
                    r = None
                if r is not None and r.status_code == 201:
                    return True
                time.sleep(random.uniform(0.02, 0.2))
        return False

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        made = sum(pool.map(one, range(n)))
    return made / (time.perf_counter() - started)


def seed_runs(stack, scripts, n: int, days: int) -> float:
    """Insert `n` finished runs over `days` days with Prefect's ORM models (benchmark only)."""
    import sqlalchemy as sa
    from prefect.server.database import orm_models as orm

    rng = random.Random(7)
    now = datetime.now(UTC)
    eng = sa.create_engine(
        f"sqlite:///{stack.home / 'prefect' / 'prefect.db'}", connect_args={"timeout": 120}
    )
    states = (
        [("COMPLETED", "Completed")] * 85
        + [("FAILED", "Failed")] * 9
        + [("FAILED", "TimedOut")]
        + [("CRASHED", "Crashed")] * 3
        + [("CANCELLED", "Cancelled")] * 2
    )
    started = time.perf_counter()
    runs, st = [], []
    for i in range(n):
        s = rng.choice(scripts)
        trig = rng.choices(["auto-scheduled", "manual", "retry"], [70, 25, 5])[0]
        exp = now - timedelta(seconds=rng.uniform(120, days * 86400))
        dur = rng.uniform(0.2, 120)
        state_type, state_name = rng.choice(states)
        rid, sid = uuid.uuid4(), uuid.uuid4()
        tags = ["python", "scriptflow", f"script-{s['id']}", trig] + (
            ["retry-1"] if trig == "retry" else []
        )
        runs.append(
            {
                "id": rid,
                "created": exp,
                "updated": exp,
                "name": f"bench-{i}",
                "state_type": state_type,
                "state_name": state_name,
                "run_count": 1,
                "expected_start_time": exp,
                "start_time": exp + timedelta(seconds=1),
                "end_time": exp + timedelta(seconds=1 + dur),
                "total_run_time": timedelta(seconds=dur),
                "parameters": {"script_id": s["id"], "version": 1, "script_name": s["name"]},
                "context": {},
                "empirical_policy": {},
                "tags": tags,
                "labels": {"scriptflow.exit_code": "0" if state_type == "COMPLETED" else "1"},
                "auto_scheduled": trig == "auto-scheduled",
                "flow_id": uuid.UUID(s["flow_id"]),
                "deployment_id": uuid.UUID(s["deployment_id"]),
                "state_id": sid,
                "state_timestamp": exp + timedelta(seconds=1 + dur),
                "job_variables": {},
            }
        )
        st.append(
            {
                "id": sid,
                "created": exp,
                "updated": exp,
                "type": state_type,
                "name": state_name,
                "timestamp": exp + timedelta(seconds=1 + dur),
                "message": "bench",
                "state_details": {"flow_run_id": str(rid)},
                "flow_run_id": rid,
            }
        )
    with eng.begin() as c:
        for k in range(0, n, 5000):
            c.execute(sa.insert(orm.FlowRun.__table__), runs[k : k + 5000])
            c.execute(sa.insert(orm.FlowRunState.__table__), st[k : k + 5000])
    eng.dispose()
    return time.perf_counter() - started


def seed_outputs(stack, scripts, days: int, per_day: int, lines: int):
    """Output files (and index) for per_day runs a day: they are flow runs too, so that the
    search's Prefect half answers for them. Returns (run ids by day, bytes, seconds)."""
    from prefect.client.schemas.objects import StateType  # noqa: F401

    from scriptflow_prefect.history import index as history_index
    from scriptflow_prefect.history.output_log import OutputLogWriter
    from scriptflow_prefect.platform.settings import Settings

    settings = Settings(home=stack.home)
    rng = random.Random(11)
    now = datetime.now(UTC)
    made, total_bytes, index_s = [], 0, 0.0
    import sqlalchemy as sa
    from prefect.server.database import orm_models as orm

    eng = sa.create_engine(
        f"sqlite:///{stack.home / 'prefect' / 'prefect.db'}", connect_args={"timeout": 120}
    )
    rows, states = [], []
    for d in range(days):
        for k in range(per_day):
            s = rng.choice(scripts)
            exp = now - timedelta(days=d, seconds=rng.uniform(60, 80000))
            rid, sid = uuid.uuid4(), uuid.uuid4()
            path = history_index.plain_path(settings, rid)
            with OutputLogWriter(path) as out:
                batch = []
                for _i in range(lines):
                    text = " ".join(rng.choices(WORDS, k=6)) + f" {rng.randint(0, 99999)}"
                    if rng.random() < 0.001:
                        text = f"disk quota exceeded on vol-{rng.randint(0, 9)}"
                    batch.append(text)
                    if len(batch) == 500:
                        out.write_lines(exp, "stdout", batch)
                        batch = []
                if batch:
                    out.write_lines(exp, "stdout", batch)
                if k == 0:
                    out.write(exp, "stderr", f"pelican ledger mismatch day {d}")
            total_bytes += path.stat().st_size
            t = time.perf_counter()
            history_index.index_run(settings, rid, script_id=s["id"], expected=exp)
            index_s += time.perf_counter() - t
            made.append((d, str(rid)))
            rows.append(
                {
                    "id": rid,
                    "created": exp,
                    "updated": exp,
                    "name": f"out-{d}-{k}",
                    "state_type": "COMPLETED",
                    "state_name": "Completed",
                    "run_count": 1,
                    "expected_start_time": exp,
                    "start_time": exp,
                    "end_time": exp + timedelta(seconds=3),
                    "total_run_time": timedelta(seconds=3),
                    "parameters": {"script_id": s["id"], "version": 1, "script_name": s["name"]},
                    "context": {},
                    "empirical_policy": {},
                    "tags": ["python", "scriptflow", f"script-{s['id']}", "auto-scheduled"],
                    "labels": {"scriptflow.exit_code": "0"},
                    "auto_scheduled": True,
                    "flow_id": uuid.UUID(s["flow_id"]),
                    "deployment_id": uuid.UUID(s["deployment_id"]),
                    "state_id": sid,
                    "state_timestamp": exp,
                    "job_variables": {},
                }
            )
            states.append(
                {
                    "id": sid,
                    "created": exp,
                    "updated": exp,
                    "type": "COMPLETED",
                    "name": "Completed",
                    "timestamp": exp,
                    "message": "bench",
                    "state_details": {"flow_run_id": str(rid)},
                    "flow_run_id": rid,
                }
            )
    with eng.begin() as c:
        c.execute(sa.insert(orm.FlowRun.__table__), rows)
        c.execute(sa.insert(orm.FlowRunState.__table__), states)
    eng.dispose()
    return made, total_bytes, index_s


# --- measurements ------------------------------------------------------------------------------


def time_api(api: httpx.Client, params: dict, n: int) -> tuple[float, list[float], int]:
    t = time.perf_counter()
    r = api.get("/runs", params=params)
    cold = time.perf_counter() - t
    r.raise_for_status()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = api.get("/runs", params=params)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return cold, times, r.json()["total"]


@dataclass
class BaselineQuery:
    """The previous query path's filter (tags for everything), kept here as the baseline."""

    script_ids: list[int] | None = None
    statuses: list[str] | None = None
    triggers: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def flow_run_filter(self):
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )

        from scriptflow_prefect.runs.models import Status, Trigger, states_of

        tags = ["scriptflow"] + [Trigger(t).tag for t in (self.triggers or [])[:1]]
        f = FlowRunFilter(tags=FlowRunFilterTags(all_=tags))
        if self.script_ids is not None:
            f.tags.any_ = [f"script-{i}" for i in self.script_ids]
        if self.statuses:
            types = [t for s in self.statuses for t in states_of(Status(s))]
            f.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types))
        now = datetime.now(UTC) + timedelta(seconds=1)
        before = min(self.until, now) if self.until else now
        f.expected_start_time = FlowRunFilterExpectedStartTime(after_=self.since, before_=before)
        return f


async def baseline_read_runs(query: BaselineQuery, *, limit: int, offset: int):
    """The previous path: count then page, a new Prefect client per call."""
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        flow_filter = query.flow_run_filter()
        total = await client.count_flow_runs(flow_run_filter=flow_filter)
        runs = await client.read_flow_runs(
            flow_run_filter=flow_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
            offset=offset,
        )
        return runs, total


def time_baseline(stack, queries: dict, n: int) -> dict:
    """The previous path, in this process, against the same Prefect server."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    async def measure():
        out = {}
        for name, (q, offset) in queries.items():
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await baseline_read_runs(q, limit=25, offset=offset)
                times.append(time.perf_counter() - t)
            out[name] = times
        return out

    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    with temporary_settings(
        {PREFECT_API_URL: stack.prefect_url + "/api", PREFECT_API_AUTH_STRING: auth}
    ):
        return asyncio.run(measure())


def baseline_search(stack, needle: str) -> tuple[float, int]:
    """The previous search: the output files of the newest 2 000 runs (10 pages of runs
    from Prefect), read line by line. It read plain files only: here the compressed ones are
    inflated on the fly for it, so it finds what it would have found."""
    import gzip

    from scriptflow_prefect.history.output_log import parse_record

    started = time.perf_counter()
    folded = needle.casefold()
    files = sorted((stack.home / "outputs").glob("*.log*"), key=lambda p: -p.stat().st_mtime)
    hits = 0
    for path in files[:2000]:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            for raw in fh:
                if folded in parse_record(raw.rstrip(b"\n"))["text"].casefold():
                    hits += 1
                    break
    return time.perf_counter() - started, hits


def capture(stack, api: httpx.Client, lines: int, repeats: int) -> None:
    src = (
        f"for i in range({lines}):\n"
        f"    print(f'line {{i}} of the output, with some ordinary log text')\n"
    )
    script = api.post(
        "/scripts",
        files={"file": ("million.py", src.encode())},
        data={"name": f"bench-million-{lines}"},
    ).json()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "s.py").write_text(src)
    proc = psutil.Process(stack.proc.pid)
    rows_ = {
        "direct -u > file": [],
        "direct > file": [],
        "ScriptFlow run (Prefect)": [],
        "ScriptFlow Run now -> final": [],
    }
    peaks = []
    for _ in range(repeats):  # interleaved, so that load on the machine hits both alike
        for flags, label in ((["-u"], "direct -u > file"), ([], "direct > file")):
            t = time.perf_counter()
            with open(tmp / "out.txt", "wb") as fh:
                subprocess.run([sys.executable, *flags, str(tmp / "s.py")], stdout=fh, check=True)
            rows_[label].append(time.perf_counter() - t)
        before = proc.memory_info().rss
        peak = before
        t = time.perf_counter()
        run_id = api.post(f"/scripts/{script['id']}/runs").json()["id"]
        while True:
            run = api.get(f"/runs/{run_id}").json()
            peak = max(peak, proc.memory_info().rss)
            if run["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        rows_["ScriptFlow Run now -> final"].append(time.perf_counter() - t)
        rows_["ScriptFlow run (Prefect)"].append(run["duration_seconds"])
        peaks.append(peak - before)
        assert run["status"] == "succeeded", run
        n = 0
        with api.stream("GET", f"/runs/{run_id}/output.txt", timeout=600) as resp:
            for chunk in resp.iter_bytes():
                n += chunk.count(b"\n")
        assert n == lines, (n, lines)
    base = statistics.median(rows_["direct -u > file"])
    row(
        f"C. capture of {lines:,} lines, median of {repeats} (all captured: output.txt has "
        f"every line)"
    )
    for label, values in rows_.items():
        med = statistics.median(values)
        row(f"   {label:32s} {med:7.2f} s   x{med / base:4.2f} of direct -u")
    plain = statistics.median(rows_["direct > file"])
    run = statistics.median(rows_["ScriptFlow run (Prefect)"])
    row(f"   run / direct (buffered):         x{run / plain:4.2f}   target <= 1.5")
    row(f"   stack RSS growth during the run: {max(peaks) / 2**20:.0f} MB (peak of {repeats})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=100, help="runs with output per day")
    ap.add_argument("--lines", type=int, default=1000, help="output lines per such run")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--capture-lines", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.per_day, args.lines, args.repeat = 10_000, 10, 300, 5
        args.capture_lines = 200_000
    home = Path(tempfile.mkdtemp(prefix="bench-history-"))
    stack = conftest.start_stack(home)
    try:
        r = stack.cli("token", "create", "admin")
        api = httpx.Client(
            base_url=stack.url + "/api/v1",
            timeout=600,
            headers={"Authorization": f"Bearer {r.stdout.strip()}"},
        )
        row(
            f"bench_history  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  {os.cpu_count()} CPUs  "
            f"load {os.getloadavg()[0]:.1f}  python {sys.version.split()[0]}"
        )
        say("scripts")
        scripts = make_scripts(stack, api)
        say("Prefect API create rate")
        rate = api_create_rate(stack, scripts, 200 if not args.quick else 50)
        say(f"seeding {args.runs} runs")
        seed_s = seed_runs(stack, scripts, args.runs, args.days)
        row(
            f"setup: Prefect API takes {rate:.0f} runs/s (8 concurrent creates): "
            f"{args.runs / rate / 60:.0f} min for {args.runs:,}; inserted instead with "
            f"Prefect's ORM models in {seed_s:.0f} s"
        )
        say("seeding outputs")
        made, nbytes, index_s = seed_outputs(stack, scripts, args.days, args.per_day, args.lines)
        row(
            f"setup: {len(made):,} runs with output over {args.days} days, "
            f"{len(made) * args.lines:,} lines, {nbytes / 2**20:.0f} MB; indexing took "
            f"{index_s:.0f} s ({nbytes / 2**20 / max(index_s, 1e-9):.0f} MB/s)"
        )
        total = api.get("/runs", params={"per_page": 1}).json()["total"]
        row(f"history: {total:,} runs in Prefect")

        now = datetime.now(UTC)
        s0 = scripts[0]["id"]
        cases = {
            "first page": ({}, BaselineQuery(), 0),
            "page 100": ({"page": 100}, BaselineQuery(), 99 * 25),
            "script": ({"script_id": s0}, BaselineQuery(script_ids=[s0]), 0),
            "status=failed": ({"status": "failed"}, BaselineQuery(statuses=["failed"]), 0),
            "status=succeeded": (
                {"status": "succeeded"},
                BaselineQuery(statuses=["succeeded"]),
                0,
            ),
            "trigger=manual": (
                {"trigger": "manual"},
                BaselineQuery(triggers=["manual"]),
                0,
            ),
            "trigger=retry": ({"trigger": "retry"}, BaselineQuery(triggers=["retry"]), 0),
            "2-day range": (
                {
                    "since": (now - timedelta(days=9)).isoformat(),
                    "until": (now - timedelta(days=7)).isoformat(),
                },
                BaselineQuery(since=now - timedelta(days=9), until=now - timedelta(days=7)),
                0,
            ),
            "script+failed+retry": (
                {"script_id": s0, "status": "failed", "trigger": "retry"},
                BaselineQuery(script_ids=[s0], statuses=["failed"], triggers=["retry"]),
                0,
            ),
        }
        say("A. history list")
        base = time_baseline(
            stack, {k: (v[1], v[2]) for k, v in cases.items()}, max(3, args.repeat // 4)
        )
        row(
            f"A. GET /api/v1/runs, 25 a page, {args.repeat} requests after a cold one "
            f"(target p95 <= 300 ms)"
        )
        row(
            f"   {'filter':22s} {'total':>7s}  {'cold':>10s} {'p50':>10s} {'p95':>10s}   "
            f"{'baseline p50':>12s}"
        )
        api.headers["Authorization"] = api.headers["Authorization"]
        for name, (params, _q, _o) in cases.items():  # noqa: B007
            cold, times, n = time_api(api, {**params, "per_page": 25}, args.repeat)
            row(
                f"   {name:22s} {n:7d}  {ms(cold)} {ms(pct(times, 50))} {ms(pct(times, 95))}"
                f"   {ms(statistics.median(base[name]))}"
            )

        say("B. search")
        row(
            f"B. full-text search over {args.days} days of output (GET /runs?q=, first page; "
            f"target <= 1 s)"
        )
        for q in ("disk quota exceeded on vol-3", "pelican ledger mismatch", "invoice"):
            cold, times, n = time_api(api, {"q": q, "per_page": 25}, max(3, args.repeat // 4))
            old_s, old_hits = baseline_search(stack, q)
            row(
                f"   q={q!r:34s} {n:6d} runs  cold {ms(cold)}  p50 {ms(pct(times, 50))}  "
                f"p95 {ms(pct(times, 95))}   baseline {ms(old_s)} ({old_hits} runs, newest "
                f"2000 files only)"
            )

        say("C. capture")
        capture(stack, api, args.capture_lines, 3 if not args.quick else 1)
        RESULTS.write_text("\n".join(out_lines) + "\n")
        say(f"saved {RESULTS}")
    finally:
        if not args.keep:
            conftest.stop_stack(stack)
            import shutil

            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"kept: {stack.url} home {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
