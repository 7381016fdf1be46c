"""Scheduled runs: how late they start, and whether a burst loses or doubles any.

Measured in one go on a stack of its own (a fresh SCRIPTFLOW_HOME, product defaults), each
case at its own whole minute, one after the other:

A. lateness: K=10 scripts scheduled (daily, UTC) for the same minute; each prints
   time.time() as its first line. Lateness = that time - the scheduled time (the script's own
   process has started), and Prefect's start_time - the scheduled time. Median / p95 / max;
   target p95 <= 2 s.
B. baseline: the same K=10 with Prefect's own `serve()` (default settings) on the same Prefect
   server: ten cron deployments of a flow whose first statement records time.time().
C. burst: 50 scripts scheduled for the same minute: every one must start within 30 s of it,
   none lost, none run twice (runs counted per script).
"runner took it" is the run's Pending state (the runner fetched it; scheduled runs are
prefetched up to 10 s early), which splits a delay into Prefect's side and the runner's.
Also, for reference: "Run now" start latency (POST -> the script's first line), 10 times.

Usage: /work/venv/bin/python bench/bench_schedules.py [--k 10] [--burst 50] [--no-baseline]
       [--keep]
Everything listens on and talks to 127.0.0.1; it stops by itself (~4-5 min) and stops every
process it started, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

PRINTS_TIME = "import time\nprint(repr(time.time()), flush=True)\n"
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}

SERVE_CHILD = textwrap.dedent('''
    """Prefect's own serve(): K cron deployments of a flow that records when it started."""
    import os
    import sys
    import time
    from pathlib import Path

    from prefect import flow, serve

    OUT = Path(os.environ["BENCH_SERVE_OUT"])


    @flow(name="bench-serve-probe", persist_result=False)
    def probe(i: int) -> None:
        (OUT / f"{i}.txt").write_text(repr(time.time()))


    if __name__ == "__main__":
        cron, k = sys.argv[1], int(sys.argv[2])
        serve(*[probe.to_deployment(name=f"bench-serve-{i}", cron=cron, parameters={"i": i})
                for i in range(k)])
''')

_stack: conftest.Stack | None = None
_children: list[subprocess.Popen] = []


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stop_tree(proc: subprocess.Popen, first: int = signal.SIGINT, grace: float = 15) -> None:
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
        except psutil.NoSuchProcess:
            pass


def cleanup() -> None:
    global _stack
    for proc in list(_children):
        stop_tree(proc)
        _children.remove(proc)
    if _stack is not None:
        tree = []
        try:
            tree = psutil.Process(_stack.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        conftest.stop_stack(_stack)
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        _stack = None


# --- figures --------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"median {statistics.median(values):+.2f} s, p95 {p95(values):+.2f} s, "
        f"max {max(values):+.2f} s (n={len(values)})"
    )


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- ScriptFlow -----------------------------------------------------------------------------


def api_client(stack: conftest.Stack) -> httpx.Client:
    token = stack.cli("token", "create", "admin").stdout.strip()
    return httpx.Client(
        base_url=stack.url + "/api/v1", timeout=60, headers={"Authorization": f"Bearer {token}"}
    )


def upload_many(api: httpx.Client, n: int, prefix: str) -> list[dict]:
    def one(i: int) -> dict:
        r = api.post(
            "/scripts",
            files={"file": ("probe.py", PRINTS_TIME.encode())},
            data={"name": f"{prefix}-{i:03d}"},
        )
        r.raise_for_status()
        return r.json()

    # One at a time, as a person uploads: the figures are about runs, not uploads.
    return [one(i) for i in range(n)]


def schedule_all(api: httpx.Client, scripts: list[dict], at: datetime) -> None:
    body = {"frequency": "daily", "time": at.strftime("%H:%M"), "timezone": "UTC"}

    def one(script: dict) -> None:
        r = api.put(f"/scripts/{script['id']}/schedule", json=body)
        r.raise_for_status()
        assert ts(r.json()["next_runs"][0]) == at, r.json()

    for script in scripts:
        one(script)


def next_minute(margin: float) -> datetime:
    """The first whole minute at least `margin` seconds from now."""
    now = datetime.now(UTC)
    at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while (at - now).total_seconds() < margin:
        at += timedelta(minutes=1)
    return at


def first_line(api: httpx.Client, run_id: str) -> float | None:
    lines = api.get(f"/runs/{run_id}/output").json()["lines"]
    return float(lines[0]["text"]) if lines else None


def collect(api: httpx.Client, scripts: list[dict], at: datetime, wait_until: float) -> dict:
    """Per script: its scheduled runs due at `at` (once all are final, or at the deadline)."""
    while True:
        per_script = {}
        for s in scripts:
            items = api.get("/runs", params={"script_id": s["id"], "per_page": 100}).json()["items"]
            per_script[s["id"]] = [r for r in items if ts(r["scheduled_at"]) == at]
        runs = [r for rs in per_script.values() for r in rs]
        if (
            all(per_script.values()) and all(r["status"] in FINAL for r in runs)
        ) or time.time() > wait_until:
            return per_script
        time.sleep(1)


def prefect_exports(stack: conftest.Stack) -> dict[str, str]:
    return dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in stack.cli("prefect-env").stdout.splitlines()
        if line.startswith("export ")
    )


def pending_at(prefect, run_id: str) -> datetime | None:
    """When the runner took the run (its Pending state): splits the lateness into Prefect
    handing the run over and the runner starting it."""
    from uuid import UUID

    states = prefect.read_flow_run_states(UUID(run_id))
    return min((st.timestamp for st in states if st.type.value == "PENDING"), default=None)


def measure_scheduled(
    api: httpx.Client, prefect, scripts: list[dict], at: datetime, allowed_late: float
) -> dict:
    sleep_for = at.timestamp() - time.time()
    if sleep_for > 0:
        say(f"waiting {sleep_for:.0f} s for {at:%H:%M} UTC ({len(scripts)} scripts)")
        time.sleep(sleep_for)
    per_script = collect(api, scripts, at, wait_until=time.time() + allowed_late + 60)
    script_late, prefect_late, pending_late = [], [], []
    lost = [sid for sid, runs in per_script.items() if not runs]
    twice = [sid for sid, runs in per_script.items() if len(runs) > 1]
    failed = []
    for runs in per_script.values():
        for r in runs:
            if r["status"] != "succeeded" or r["trigger"] != "scheduled":
                failed.append((r["script_id"], r["status"], r["trigger"], r.get("message")))
                continue
            prefect_late.append((ts(r["started_at"]) - at).total_seconds())
            pending = pending_at(prefect, r["id"])
            if pending is not None:
                pending_late.append((pending - at).total_seconds())
            line = first_line(api, r["id"])
            if line is not None:
                script_late.append(line - at.timestamp())
    return {
        "script": script_late,
        "prefect": prefect_late,
        "pending": pending_late,
        "lost": lost,
        "twice": twice,
        "failed": failed,
        "in_window": sum(1 for v in script_late if v <= allowed_late),
    }


def measure_run_now(api: httpx.Client, n: int) -> list[float]:
    script = upload_many(api, 1, f"bench-runnow-{os.getpid()}")[0]
    out = []
    for _ in range(n):
        t0 = time.time()
        run = api.post(f"/scripts/{script['id']}/runs").json()
        deadline = time.time() + 60
        while api.get(f"/runs/{run['id']}").json()["status"] not in FINAL:
            assert time.time() < deadline, "a Run now did not finish in 60 s"
            time.sleep(0.1)
        line = first_line(api, run["id"])
        if line is not None:
            out.append(line - t0)
    return out


# --- Prefect's serve() baseline ---------------------------------------------------------------


def start_serve(stack: conftest.Stack, at: datetime, k: int, work: Path) -> Path:
    out = work / "serve-out"
    out.mkdir()
    child = work / "serve_child.py"
    child.write_text(SERVE_CHILD)
    exports = prefect_exports(stack)
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith(("PREFECT_", "SCRIPTFLOW_"))}
    env.update(exports)
    env.update(
        {
            "PREFECT_HOME": str(work / "prefect-home"),
            "BENCH_SERVE_OUT": str(out),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    cron = f"{at.minute} {at.hour} * * *"
    proc = subprocess.Popen(
        [sys.executable, str(child), cron, str(k)],
        env=env,
        cwd=work,
        stdout=open(work / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    _children.append(proc)
    return out


def measure_serve(out: Path, at: datetime, k: int, allowed_late: float) -> dict:
    sleep_for = at.timestamp() - time.time()
    if sleep_for > 0:
        say(f"waiting {sleep_for:.0f} s for {at:%H:%M} UTC (Prefect serve(), {k} flows)")
        time.sleep(sleep_for)
    deadline = time.time() + allowed_late + 60
    while len(list(out.glob("*.txt"))) < k and time.time() < deadline:
        time.sleep(0.5)
    late = [float(p.read_text()) - at.timestamp() for p in out.glob("*.txt")]
    return {"script": late, "lost": k - len(late)}


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10, help="scripts in the lateness case (A, B)")
    ap.add_argument("--burst", type=int, default=50, help="scripts in the burst case (C)")
    ap.add_argument("--no-baseline", action="store_true", help="skip Prefect's serve() (B)")
    ap.add_argument("--keep", action="store_true", help="keep the stack's home and logs")
    args = ap.parse_args()

    global _stack
    work = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    load_before = os.getloadavg()[0]
    try:
        say(f"starting a ScriptFlow stack in {work}")
        # Product defaults: the runner's poll is SCRIPTFLOW_WORKER_POLL_SECONDS=2.
        _stack = conftest.start_stack(work / "home", {"SCRIPTFLOW_WORKER_POLL_SECONDS": "2"})
        api = api_client(_stack)

        say("Run now, 10 times (reference)")
        run_now = measure_run_now(api, 10)

        say(f"uploading {args.k} + {args.burst} scripts")
        tag = f"bench-{os.getpid()}"
        started = time.monotonic()
        lateness_scripts = upload_many(api, args.k, f"{tag}-a")
        burst_scripts = upload_many(api, args.burst, f"{tag}-c")
        per_call = (time.monotonic() - started) / (args.k + args.burst)

        # Every schedule is saved before A's minute, with room for Prefect's scheduler (~5 s)
        # and serve()'s start: saving them while runs start would weigh on the figures.
        a_at = next_minute(margin=25 + 0.5 * per_call * (args.k + args.burst))  # PUTs are quicker
        b_at = a_at + timedelta(minutes=1)
        c_at = b_at + timedelta(minutes=0 if args.no_baseline else 1)
        schedule_all(api, burst_scripts, c_at)
        schedule_all(api, lateness_scripts, a_at)
        serve_out = None if args.no_baseline else start_serve(_stack, b_at, args.k, work)
        b_note = "" if args.no_baseline else f"B at {b_at:%H:%M}, "
        say(
            f"A at {a_at:%H:%M}, {b_note}C at {c_at:%H:%M} UTC; "
            f"{(a_at - datetime.now(UTC)).total_seconds():.0f} s to spare"
        )

        from prefect.client.orchestration import SyncPrefectClient

        env = prefect_exports(_stack)
        prefect = SyncPrefectClient(
            env["PREFECT_API_URL"], auth_string=env.get("PREFECT_API_AUTH_STRING")
        )
        prefect.__enter__()
        a = measure_scheduled(api, prefect, lateness_scripts, a_at, allowed_late=30)
        b = measure_serve(serve_out, b_at, args.k, allowed_late=60) if serve_out else None
        for proc in list(_children):  # serve() is done: it must not weigh on C
            stop_tree(proc)
            _children.remove(proc)
        c = measure_scheduled(api, prefect, burst_scripts, c_at, allowed_late=30)
        load_after = os.getloadavg()[0]
    finally:
        cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"Scheduled-run lateness (seconds after the scheduled time), {time.strftime('%F %T')}, "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end (other work on this machine skews every figure)"
    )
    rows = [
        (
            "",
            f"ScriptFlow, K={args.k}",
            f"Prefect serve(), K={args.k}" if b else "Prefect serve(): skipped",
            f"ScriptFlow burst, {args.burst}",
        ),
        (
            "script's first line",
            summary(a["script"]),
            summary(b["script"]) if b else "-",
            summary(c["script"]),
        ),
        ("runner took it", summary(a["pending"]), "-", summary(c["pending"])),
        ("Prefect start_time", summary(a["prefect"]), "-", summary(c["prefect"])),
        (
            "lost / twice / failed",
            f"{len(a['lost'])} / {len(a['twice'])} / {len(a['failed'])}",
            f"{b['lost']} lost" if b else "-",
            f"{len(c['lost'])} / {len(c['twice'])} / {len(c['failed'])}",
        ),
    ]
    for row in rows:
        print(f"  {row[0]:<22} | {row[1]:<52} | {row[2]:<52} | {row[3]}")
    print(f"  Run now -> script's first line (reference, same stack): {summary(run_now)}")

    ok_a = bool(a["script"]) and p95(a["script"]) <= 2.0 and not (a["lost"] or a["twice"])
    ok_c = c["in_window"] == args.burst and not (c["lost"] or c["twice"] or c["failed"])
    print(
        f"  A: p95 <= 2 s: {'yes' if ok_a else 'NO'}   "
        f"C: all {args.burst} within 30 s, none lost, none twice: {'yes' if ok_c else 'NO'}"
    )
    for name, res in (("A", a), ("C", c)):
        if res["failed"]:
            print(f"  {name} not succeeded: {res['failed'][:5]}")
    return 0 if ok_a and ok_c else 1


if __name__ == "__main__":
    sys.exit(main())
