"""Runs and memory: ScriptFlow's in-process runner beside Prefect's default process worker.

Measured in one go on this machine (machines are shared and noisy: read medians and ratios,
not single figures; nothing here passes or fails):

A. `scriptflow up` (tests/conftest.start_stack) to GET /health 200: fresh home, then a restart
   of the same home; beside a bare `prefect server start` (full mode). RSS of the whole stack
   at idle, by process.
B. "Run now" (POST /api/v1/scripts/{id}/runs) -> first output line visible through
   GET /api/v1/runs/{id}/output, and -> final state, for `print("hi")`, one run after the other.
C. memory per concurrent run: sleeping scripts started at once; RSS of the stack's process
   tree without the scripts' own processes, minus the idle RSS just before, divided by the most
   scripts seen running at once. 10 through "Run now"; in full mode also 50 with the runs
   created through Prefect's API (as 50 scheduled runs due together), then 50 through "Run now".
D. the baseline, on the same Prefect server: a `process` work pool, deployments of the same
   `run_script` flow with the same parameters and tags, `prefect worker start` with default
   settings (and with PREFECT_WORKER_QUERY_SECONDS=1 in full mode); the same B (output read
   through ScriptFlow's /output in both cases: the same flow writes the same output file) and
   C for 10 runs (flow-run processes counted, the scripts not).

Usage: /work/venv/bin/python bench/bench_runs.py [--quick] [--keep]
~10 min (--quick ~3.5 min). Everything listens on and talks to 127.0.0.1; every process
started here is stopped at the end (also on Ctrl-C / SIGTERM). The table is printed and saved
to bench/results-latest.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

RESULTS = ROOT / "bench" / "results-latest.txt"
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
HELLO = 'print("hi", flush=True)\n'
SLEEPER = 'import time; print("start", flush=True); time.sleep(15)\n'
SLEEP_SECONDS = 15
POOL = "bench-process"
MB = 1024 * 1024

# Every process this benchmark started, stopped in `cleanup()` whatever happens.
_started: list[subprocess.Popen] = []
_stacks: list[conftest.Stack] = []
# Every process seen in those trees (psutil checks the start time, so a reused pid is safe):
# if a parent dies first, its children are still stopped.
_seen: dict[int, psutil.Process] = {}


class StackDied(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes ------------------------------------------------------------------------------


def descendants(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        found = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for p in found:
        _seen.setdefault(p.pid, p)
    return found


def check_alive(stack: conftest.Stack) -> None:
    code = stack.proc.poll()
    if code is not None:
        tail = stack.log.read_text(errors="replace")[-1500:]
        raise StackDied(
            f"`scriptflow up` (pid {stack.proc.pid}) exited with code {code} "
            f"(negative = killed by that signal); end of its output:\n{tail}"
        )


def stop_tree(proc: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the process, then SIGKILL whatever of its tree is left after `grace` seconds."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        try:
            proc.send_signal(first)
        except ProcessLookupError:
            pass
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
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_stack(stack: conftest.Stack) -> list[int]:
    """conftest.stop_stack, then SIGKILL what survived; returns the pids that had survived."""
    tree = descendants(stack.proc.pid)
    conftest.stop_stack(stack)
    time.sleep(0.5)
    survivors = []
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                survivors.append(p.pid)
                p.kill()
        except psutil.NoSuchProcess:
            pass
    if stack in _stacks:
        _stacks.remove(stack)
    return survivors


def cleanup() -> None:
    for stack in list(_stacks):
        try:
            stop_stack(stack)
        except Exception as exc:  # keep stopping the rest
            print(f"cleanup: {exc}", file=sys.stderr)
    for proc in list(_started):
        try:
            stop_tree(proc, signal.SIGINT, grace=10)
        except Exception as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
        _started.remove(proc)
    time.sleep(0.5)
    for p in list(_seen.values()):
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                print(
                    f"cleanup: killing leftover pid {p.pid} {' '.join(p.cmdline())[:120]}",
                    file=sys.stderr,
                )
                p.kill()
        except psutil.Error:
            pass
    _seen.clear()


def is_script(p: psutil.Process, work_dir: str) -> bool:
    try:
        return any(work_dir in arg for arg in p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def label_of(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    line = " ".join(cmd)
    if "scriptflow_prefect.commands.cli up" in line:
        return "scriptflow up (web + runner)"
    if "prefect server start" in line:
        return "prefect server"
    if "prefect worker start" in line:
        return "prefect worker (process)"
    if "prefect.engine" in line:
        return "flow run (python -m prefect.engine)"
    return Path(cmd[0]).name + " " + " ".join(cmd[1:3]) if cmd else p.name()


@dataclass
class Sample:
    t: float
    scripts: int
    rss: int  # bytes, every process of the trees except the scripts' own
    by_process: dict[str, int] = field(default_factory=dict)


def sample(
    roots: list[int], work_dir: str, breakdown: bool = False, scripts_seen: set | None = None
) -> Sample:
    seen: set[int] = set()
    script_pids: set[int] = set()
    procs: list[psutil.Process] = []
    for root in roots:
        for p in descendants(root):
            if p.pid not in seen:
                seen.add(p.pid)
                procs.append(p)
    for p in procs:  # a script and everything it started
        if p.pid not in script_pids and is_script(p, work_dir):
            script_pids.add(p.pid)
            try:
                script_pids.update(c.pid for c in p.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    rss, by = 0, {}
    n_scripts = 0
    for p in procs:
        if p.pid in script_pids:
            if is_script(p, work_dir):
                n_scripts += 1
                if scripts_seen is not None:
                    try:
                        scripts_seen.add((p.pid, p.create_time()))
                    except psutil.Error:
                        pass
            continue
        try:
            r = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        rss += r
        if breakdown:
            key = f"{label_of(p)} (pid {p.pid})"
            by[key] = r
    return Sample(time.monotonic(), n_scripts, rss, by)


# --- statistics -----------------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def p90(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(0.9 * len(s) + 0.5) - 1))]


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def fmt_mb(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / MB:.0f} MB" if abs(x) >= 10 * MB else f"{x / MB:.1f} MB"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


# --- HTTP helpers ---------------------------------------------------------------------------


def healthy(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def upload(client: httpx.Client, name: str, source: str) -> dict:
    r = client.post(
        "/scripts", files={"file": (f"{name}.py", source.encode())}, data={"name": name}
    )
    r.raise_for_status()
    return r.json()


def overlay_status(client: httpx.Client, run_id: str) -> str:
    try:
        r = client.get(f"/runs/{run_id}")
    except httpx.TimeoutException:
        return "overlay timeout"
    return r.json().get("status", "?") if r.status_code == 200 else f"http {r.status_code}"


PREFECT_STATUS = {
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "CRASHED": "crashed",
}


def prefect_status(pclient, run_id: str) -> str:
    """Status read from Prefect itself: still readable when the overlay does not answer."""
    try:
        fr = pclient.read_flow_run(run_id)
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"
    if fr.state is None:
        return "queued"
    if fr.state.type.value == "FAILED" and fr.state.name == "TimedOut":
        return "timed_out"
    return PREFECT_STATUS.get(fr.state.type.value, fr.state.type.value.lower())


@dataclass
class Latency:
    first_line: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    rss_after: list[int] = field(default_factory=list)  # stack RSS after each ScriptFlow run
    ok: int = 0
    n: int = 0
    problems: list[str] = field(default_factory=list)

    def growth_per_run(self) -> float | None:
        """Slope of the stack's RSS over the second half of the runs (a leak shows here)."""
        xs = self.rss_after[len(self.rss_after) // 3 :]
        if len(xs) < 4:
            return None
        n = len(xs)
        mx, my = (n - 1) / 2, statistics.fmean(xs)
        num = sum((i - mx) * (y - my) for i, y in enumerate(xs))
        return num / sum((i - mx) ** 2 for i in range(n))


def measure_latency(
    stack: conftest.Stack,
    client: httpx.Client,
    start: Callable[[], str],
    n: int,
    pre_delay: Callable[[], float],
    label: str,
    rss: Callable[[], int] | None = None,
    budget: float = 1e9,
) -> Latency:
    """start() creates a run and returns its id; time to its first output line (through
    ScriptFlow's /output) and to a final state, one run after the other. Stops after
    `budget` seconds (a loaded machine), but not before 3 runs."""
    out = Latency(n=n)
    stop_at = time.monotonic() + budget
    failures = 0
    for i in range(n):
        if i >= 3 and time.monotonic() > stop_at:
            say(f"  {label}: time budget of {budget:.0f} s used up after {i} runs")
            out.n = i
            break
        if failures >= 2:
            say(f"  {label}: two runs in a row gave no output; stopping this series")
            out.n = i
            break
        time.sleep(pre_delay())
        t0 = time.perf_counter()
        try:
            run_id = start()
        except Exception as exc:
            check_alive(stack)
            out.problems.append(f"start failed: {exc!r}"[:300])
            continue
        first, status = None, "?"
        deadline = t0 + 60
        try:
            while time.perf_counter() < deadline:
                r = client.get(f"/runs/{run_id}/output")
                if r.status_code == 200 and r.json()["lines"]:
                    first = time.perf_counter() - t0
                    break
                time.sleep(0.05)
            while time.perf_counter() < deadline:
                status = overlay_status(client, run_id)
                if status in FINAL:
                    out.final.append(time.perf_counter() - t0)
                    break
                time.sleep(0.05)
        except httpx.TransportError as exc:
            check_alive(stack)
            status = f"overlay error {type(exc).__name__}"
        if first is not None:
            out.first_line.append(first)
        failures = failures + 1 if first is None else 0
        if status == "succeeded" and first is not None:
            out.ok += 1
        else:
            out.problems.append(
                f"run {run_id}: status {status}, first line "
                f"{'never' if first is None else f'{first:.2f} s'}"
            )
        if rss is not None:
            out.rss_after.append(rss())
        say(
            f"  {label} {i + 1}/{n}: first line {fmt_s(first)}, final "
            f"{fmt_s(out.final[-1] if status in FINAL else None)} ({status})"
        )
    return out


@dataclass
class Concurrency:
    n: int
    how: str
    idle_before: int = 0
    peak: int = 0
    max_scripts: int = 0
    started: int = 0  # distinct script processes seen
    all_started_after: float | None = None
    created: int = 0
    created_median: float | None = None
    created_after: float | None = None  # the slowest create-run request returned
    succeeded: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    after: int = 0
    leftover_scripts: int = 0
    overlay_back_after: float | None = None
    error_samples: list[str] = field(default_factory=list)
    peak_breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def per_run(self) -> float | None:
        """Peak RSS beyond idle / the most runs seen running at once."""
        return (self.peak - self.idle_before) / self.max_scripts if self.max_scripts else None


def measure_concurrency(
    stack: conftest.Stack,
    pclient,
    starters: list[Callable[[], str]],
    roots: list[int],
    work_dir: str,
    label: str,
    how: str,
) -> Concurrency:
    """Start every run at once (one thread each); sample the trees' RSS every 0.25 s until
    the scripts are done; then read every run's final state from Prefect."""
    n = len(starters)
    res = Concurrency(n=n, how=how)
    time.sleep(2)
    res.idle_before = int(statistics.median(sample(roots, work_dir).rss for _ in range(5)))
    t0 = time.monotonic()
    created: list[float] = []
    errors: dict[str, int] = {}

    def timed(start: Callable[[], str]) -> str | None:
        try:
            run_id = start()
        except Exception as exc:
            key = f"not created: {type(exc).__name__}"
            errors[key] = errors.get(key, 0) + 1
            if len(res.error_samples) < 2:
                res.error_samples.append(f"{exc!r}"[:240])
            return None
        created.append(time.monotonic() - t0)
        return run_id

    seen: set[tuple[int, float]] = set()
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(timed, s) for s in starters]
        while True:
            s = sample(roots, work_dir, breakdown=True, scripts_seen=seen)
            if s.rss > res.peak:
                res.peak, res.peak_breakdown = s.rss, s.by_process
            res.max_scripts = max(res.max_scripts, s.scripts)
            if len(seen) >= n and res.all_started_after is None:
                res.all_started_after = s.t - t0
            elapsed = time.monotonic() - t0
            done = all(f.done() for f in futures)
            if elapsed > SLEEP_SECONDS + 120 or stack.proc.poll() is not None:
                break
            if done and s.scripts == 0 and len(seen) >= len(created) and elapsed > 3:
                break
            if done and not seen and elapsed > 20:  # nothing starts: do not wait any longer
                break
            time.sleep(0.25)
        run_ids = [rid for f in futures if (rid := f.result())]
    res.created, res.started = len(run_ids), len(seen)
    res.created_after = max(created) if created else None
    res.created_median = median(created)
    res.statuses.update(errors)
    pending, final = set(run_ids), {}
    deadline = time.monotonic() + (60 if seen else 5)
    while pending and time.monotonic() < deadline:
        for rid in list(pending):
            st = prefect_status(pclient, rid)
            if st in FINAL:
                final[rid] = st
                pending.discard(rid)
        if pending:
            time.sleep(1)
    for rid in pending:
        final[rid] = prefect_status(pclient, rid) + " (not final)"
    for st in final.values():
        res.statuses[st] = res.statuses.get(st, 0) + 1
    res.succeeded = res.statuses.get("succeeded", 0)
    t1 = time.monotonic()
    while time.monotonic() - t1 < 30:
        if healthy(stack.url + "/health", timeout=5):
            res.overlay_back_after = time.monotonic() - t1
            break
        time.sleep(1)
    time.sleep(3)
    after = sample(roots, work_dir)
    res.after, res.leftover_scripts = after.rss, after.scripts
    say(
        f"  {label}: idle {fmt_mb(res.idle_before)} -> peak {fmt_mb(res.peak)}, "
        f"max {res.max_scripts}/{n} scripts at once, {res.created}/{n} runs created "
        f"(last after {fmt_s(res.created_after)}), {res.started}/{n} scripts started "
        f"(all after {fmt_s(res.all_started_after)}), outcomes {res.statuses}"
    )
    return res


# --- the stacks -----------------------------------------------------------------------------


def start_stack(home: Path) -> tuple[conftest.Stack, float]:
    t0 = time.monotonic()
    stack = conftest.start_stack(home)
    took = time.monotonic() - t0
    _stacks.append(stack)
    descendants(stack.proc.pid)  # remembered for the clean-up
    return stack, took


def bare_prefect_server(tmp: Path) -> tuple[float | None, float | None]:
    """A plain `prefect server start` on a fresh PREFECT_HOME, then restarted: s to health."""
    times: list[float | None] = []
    home = tmp / "bare-prefect"
    for _ in range(2):
        port = conftest.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCRIPTFLOW_"))}
        env.update(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            }
        )
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=open(tmp / "bare-prefect.log", "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp,
        )
        _started.append(proc)
        took = None
        while time.monotonic() - t0 < 150 and proc.poll() is None:
            descendants(proc.pid)
            if healthy(f"http://127.0.0.1:{port}/api/health"):
                took = time.monotonic() - t0
                break
            time.sleep(0.3)
        times.append(took)
        stop_tree(proc, signal.SIGTERM, grace=10)
        _started.remove(proc)
    return times[0], times[1]


def prefect_env_of(stack: conftest.Stack) -> dict[str, str]:
    r = stack.cli("prefect-env")
    if r.returncode != 0:
        raise RuntimeError(f"scriptflow prefect-env failed: {r.stderr}")
    env = {}
    for line in r.stdout.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export":
            k, _, v = parts[1].partition("=")
            env[k] = v
    return env


def baseline_env(stack: conftest.Stack, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Prefect's defaults, pointed at the stack's Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCRIPTFLOW_"))}
    env.update(prefect_env_of(stack))
    env.update(
        {
            "PREFECT_HOME": str(stack.home / "bench-prefect-home"),
            "DO_NOT_TRACK": "1",
            **(extra or {}),
        }
    )
    return env


def start_process_worker(
    stack: conftest.Stack, name: str, extra: dict[str, str]
) -> subprocess.Popen:
    log = stack.home / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name],
        env=baseline_env(stack, extra),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=stack.home,
    )
    _started.append(proc)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        descendants(proc.pid)
        if proc.poll() is not None:
            raise RuntimeError(f"prefect worker exited: {log.read_text()[-3000:]}")
        if "started!" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    raise RuntimeError(f"prefect worker did not start: {log.read_text()[-3000:]}")


def stop_worker(proc: subprocess.Popen) -> None:
    stop_tree(proc, signal.SIGINT, grace=10)
    if proc in _started:
        _started.remove(proc)


def make_baseline_deployments(
    stack: conftest.Stack, pclient, script_names: dict[str, str]
) -> dict[str, str]:
    """key -> deployment id of a `process`-pool copy of ScriptFlow script `name`'s deployment."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "work-pool",
            "create",
            POOL,
            "--type",
            "process",
            "--overwrite",
        ],
        env=baseline_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=stack.home,
    )
    if r.returncode != 0:
        raise RuntimeError(f"prefect work-pool create failed: {r.stdout}\n{r.stderr}")
    ids = {}
    flow_id = pclient.create_flow_from_name("run_script")
    for key, name in script_names.items():
        own = pclient.read_deployment_by_name(f"run_script/{name}")
        dep_id = pclient.create_deployment(
            flow_id=flow_id,
            name=f"bench-baseline-{key}",
            work_pool_name=POOL,
            # What `prefect deploy` writes for local code: cd to the project, load the file.
            entrypoint="flows/run_script.py:run_script",
            path=str(ROOT),
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ],
            parameters=dict(own.parameters),
            parameter_openapi_schema=own.parameter_openapi_schema,
            enforce_parameter_schema=False,
            tags=list(own.tags),  # `scriptflow`, `script-<id>`: ScriptFlow's /output reads it
            job_variables={"working_dir": str(ROOT), "env": {"SCRIPTFLOW_HOME": str(stack.home)}},
        )
        ids[key] = str(dep_id)
    return ids


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, no 50-run tests (~3 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = ap.parse_args()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="scriptflow-bench-")).resolve()
    r: dict = {
        "mode": "quick" if args.quick else "full",
        "began": time.monotonic(),
        "load_start": os.getloadavg()[0],
        "conc": {},
    }
    keep = args.keep
    try:
        run_all(r, tmp, args.quick)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        r["error"] = "interrupted"
    except Exception as exc:
        say(f"FAILED: {exc!r}")
        r["error"] = f"{type(exc).__name__}: {exc}"
        keep = True
    finally:
        cleanup()
        if keep:
            say(f"kept {tmp} (logs: home/up.out, home/logs/, home/bench-worker-*.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    r["elapsed"] = time.monotonic() - r["began"]
    if r.get("error") != "interrupted":
        report(r)
    return 1 if r.get("error") else 0


def run_all(r: dict, tmp: Path, quick: bool) -> None:
    n_latency = 5 if quick else 15
    # the default worker polls every 10 s: ~20 s a run with the random phase, so fewer runs
    n_latency_default = 3 if quick else 10
    idle_wait = 10 if quick else 20
    # seconds each latency series may take at most (a loaded machine stretches everything)
    r["budgets"] = {"sf": 30 if quick else 60, "default": 60 if quick else 120, "poll1s": 60}
    home = tmp / "home"

    # A. start-up and idle memory ------------------------------------------------------------
    say(f"A. `scriptflow up` on a fresh home {home}")
    stack, r["start_fresh"] = start_stack(home)
    say(f"  fresh: /health 200 after {r['start_fresh']:.1f} s; stopping it")
    r["survivors_first_stop"] = stop_stack(stack)
    stack, r["start_restart"] = start_stack(home)
    say(f"  restart: /health 200 after {r['start_restart']:.1f} s")
    work_dir = str(home / "work")
    roots = [stack.proc.pid]
    time.sleep(idle_wait)
    r["idle"] = idle = sample(roots, work_dir, breakdown=True)
    say(f"  idle after {idle_wait} s: {fmt_mb(idle.rss)}")
    if not quick:
        say("A'. bare `prefect server start` (fresh, restart), for comparison")
        r["bare_fresh"], r["bare_restart"] = bare_prefect_server(tmp)
        say(
            f"  bare prefect server: fresh {fmt_s(r['bare_fresh'])}, "
            f"restart {fmt_s(r['bare_restart'])}"
        )

    token = stack.cli("token", "create", "admin")
    if token.returncode != 0:
        raise RuntimeError(f"token create failed: {token.stderr}")
    stack.tokens["admin"] = token.stdout.strip()
    client = stack.client("admin")
    # This process's own Prefect client (baseline runs, states): the stack's server.
    os.environ.update(
        {
            k: v
            for k, v in baseline_env(stack).items()
            if k.startswith("PREFECT_") or k == "DO_NOT_TRACK"
        }
    )
    from prefect import get_client

    with get_client(sync_client=True) as pclient:
        run_phases(r, stack, client, pclient, roots, work_dir, quick, n_latency, n_latency_default)
    client.close()
    check_alive(stack)
    r["survivors_last_stop"] = stop_stack(stack)


def run_phases(
    r, stack, client, pclient, roots, work_dir, quick, n_latency, n_latency_default
) -> None:
    # B. ScriptFlow "Run now" ----------------------------------------------------------------
    hello = upload(client, "bench-hello", HELLO)
    sleepers = [upload(client, f"bench-sleep-{i}", SLEEPER) for i in range(10 if quick else 50)]
    say(f"B. ScriptFlow: Run now x{n_latency}")

    def sf_start(script_id: int) -> Callable[[], str]:
        def go() -> str:
            resp = client.post(f"/scripts/{script_id}/runs")
            resp.raise_for_status()
            return resp.json()["id"]

        return go

    def api_start(deployment_id: str) -> Callable[[], str]:
        def go() -> str:
            return str(pclient.create_flow_run_from_deployment(deployment_id, tags=["manual"]).id)

        return go

    r["sf_lat"] = measure_latency(
        stack,
        client,
        sf_start(hello["id"]),
        n_latency,
        lambda: random.uniform(0.2, 1.0),
        "scriptflow",
        lambda: sample(roots, work_dir).rss,
        r["budgets"]["sf"],
    )
    r["sf_idle_after_latency"] = sample(roots, work_dir).rss

    # C. ScriptFlow: 10 at once through "Run now" -------------------------------------------
    say("C. ScriptFlow: 10 sleeping scripts at once (POST /scripts/{id}/runs)")
    r["conc"]["sf10"] = measure_concurrency(
        stack,
        pclient,
        [sf_start(s["id"]) for s in sleepers[:10]],
        roots,
        work_dir,
        "scriptflow x10",
        "Run now",
    )

    # D. the baseline: Prefect's process worker on the same server ---------------------------
    say("D. baseline: `process` work pool, deployments, `prefect worker start`")
    deps = make_baseline_deployments(
        stack, pclient, {"hello": hello["name"], "sleep": sleepers[0]["name"]}
    )
    variants = [("default", {}, 10.0, n_latency_default)]
    if not quick:
        variants.append(("poll1s", {"PREFECT_WORKER_QUERY_SECONDS": "1"}, 1.0, n_latency))
    for key, extra, poll, n in variants:
        worker = start_process_worker(stack, f"bench-worker-{key}", extra)
        try:
            if key == "default":
                time.sleep(5)
                r["pf_idle_worker"] = sample([worker.pid], work_dir, breakdown=True)
            say(f"D. prefect-{key}: run x{n} (random phase against the worker's poll)")
            r[f"pf_lat_{key}"] = measure_latency(
                stack,
                client,
                api_start(deps["hello"]),
                n,
                lambda p=poll: random.uniform(0.2, p),
                f"prefect-{key}",
                budget=r["budgets"][key],
            )
            if key == "default":
                say("D. prefect-default: 10 sleeping scripts at once")
                r["conc"]["pf10"] = measure_concurrency(
                    stack,
                    pclient,
                    [api_start(deps["sleep"])] * 10,
                    [stack.proc.pid, worker.pid],
                    work_dir,
                    "prefect-default x10",
                    "Prefect API",
                )
        finally:
            say(f"  stopping the process worker ({key}): SIGINT, SIGKILL after 10 s")
            stop_worker(worker)
    if quick:
        return

    # C'. ScriptFlow: 50 at once, created through Prefect's API (as 50 scheduled runs due at
    # the same time would be), then through "Run now" (last: it may leave the overlay stuck)
    say("C'. ScriptFlow: 50 sleeping scripts at once, runs created through Prefect's API")
    dep_ids = [str(pclient.read_deployment_by_name(f"run_script/{s['name']}").id) for s in sleepers]
    r["conc"]["sf50api"] = measure_concurrency(
        stack,
        pclient,
        [api_start(d) for d in dep_ids],
        roots,
        work_dir,
        "scriptflow x50 (Prefect API)",
        "Prefect API",
    )
    say("C''. ScriptFlow: 50 sleeping scripts at once (POST /scripts/{id}/runs)")
    r["conc"]["sf50"] = measure_concurrency(
        stack,
        pclient,
        [sf_start(s["id"]) for s in sleepers],
        roots,
        work_dir,
        "scriptflow x50 (Run now)",
        "Run now",
    )
    r["sf_idle_end"] = sample(roots, work_dir).rss


def report(r: dict) -> None:
    lines: list[str] = []
    add = lines.append
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    import prefect

    add(
        f"bench_runs.py --{r['mode']}  {datetime.now().isoformat(timespec='seconds')}  "
        f"commit {commit} (+ working tree)  prefect {prefect.__version__}  "
        f"python {platform.python_version()}  {os.cpu_count()} cpus  "
        f"load {r['load_start']:.1f} -> {os.getloadavg()[0]:.1f}  took {r['elapsed']:.0f} s"
    )
    add(
        "scriptflow = `scriptflow up` (Prefect server + one web/runner process); "
        "prefect-default = the same\nPrefect server + `prefect worker start` (process pool, "
        "defaults); prefect-poll1s = the same with\nPREFECT_WORKER_QUERY_SECONDS=1. "
        "ratio = scriptflow / baseline."
    )
    if r.get("error"):
        add(f"!! INCOMPLETE: {r['error'].splitlines()[0][:200]}")
    add("")
    w = (41, 12, 16, 7, 15, 7, 9)
    head = ("metric", "scriptflow", "prefect-default", "ratio", "prefect-poll1s", "ratio", "target")
    add("".join(h.ljust(x) for h, x in zip(head, w, strict=True)).rstrip())

    def row(metric, sf, base=None, poll1=None, target="", sf_v=None, base_v=None, p_v=None):
        cells = (
            metric,
            sf or "-",
            base or "-",
            ratio(sf_v, base_v),
            poll1 or "-",
            ratio(sf_v, p_v),
            target,
        )
        add("".join(str(c).ljust(x) for c, x in zip(cells, w, strict=True)).rstrip())

    sl, dl, pl = r.get("sf_lat"), r.get("pf_lat_default"), r.get("pf_lat_poll1s")

    def stat(lat, fn, attr):
        return fn(getattr(lat, attr)) if lat else None

    for name, fn, attr, tgt in (
        ("run now -> first line (median)", median, "first_line", "<= 1 s"),
        ("run now -> first line (p90)", p90, "first_line", ""),
        ("run now -> final (median)", median, "final", ""),
        ("run now -> final (p90)", p90, "final", ""),
    ):
        a, b, c = stat(sl, fn, attr), stat(dl, fn, attr), stat(pl, fn, attr)
        row(name, fmt_s(a), fmt_s(b), fmt_s(c), tgt, a, b, c)
    row(
        "  runs succeeded",
        sl and f"{sl.ok}/{sl.n}",
        dl and f"{dl.ok}/{dl.n}",
        pl and f"{pl.ok}/{pl.n}",
    )

    idle = r["idle"].rss if r.get("idle") else None
    server_rss = (
        sum(v for k, v in r["idle"].by_process.items() if k.startswith("prefect server"))
        if r.get("idle")
        else 0
    )
    worker_idle = r.get("pf_idle_worker")
    base_idle = server_rss + worker_idle.rss if worker_idle else None
    row(
        "whole stack idle (RSS)",
        fmt_mb(idle),
        fmt_mb(base_idle),
        target="<= 350 MB",
        sf_v=idle,
        base_v=base_idle,
    )
    conc = r["conc"]
    c10, p10 = conc.get("sf10"), conc.get("pf10")

    def conc_rows(title, c, b=None, target_ok=""):
        n = c.n
        row(
            f"memory per concurrent run, {title}",
            fmt_mb(c.per_run),
            b and fmt_mb(b.per_run),
            target="<= 10 MB",
            sf_v=c.per_run,
            base_v=b and b.per_run,
        )
        row(
            "  peak RSS beyond idle",
            fmt_mb(c.peak - c.idle_before),
            b and fmt_mb(b.peak - b.idle_before),
            sf_v=c.peak - c.idle_before,
            base_v=b and b.peak - b.idle_before,
        )
        row(
            "  most scripts running at once", f"{c.max_scripts}/{n}", b and f"{b.max_scripts}/{b.n}"
        )
        row(
            "  runs created / scripts started",
            f"{c.created}/{c.started}",
            b and f"{b.created}/{b.started}",
        )
        row(
            "  runs succeeded", f"{c.succeeded}/{n}", b and f"{b.succeeded}/{b.n}", target=target_ok
        )
        row(
            "  run created after (median)",
            fmt_s(c.created_median),
            b and fmt_s(b.created_median),
            sf_v=c.created_median,
            base_v=b and b.created_median,
        )
        row(
            "  all runs created within",
            fmt_s(c.created_after),
            b and fmt_s(b.created_after),
            sf_v=c.created_after,
            base_v=b and b.created_after,
        )
        row(
            "  all scripts started within",
            fmt_s(c.all_started_after),
            b and fmt_s(b.all_started_after),
            sf_v=c.all_started_after,
            base_v=b and b.all_started_after,
        )

    if c10:
        conc_rows("10", c10, p10, "10/10")
    if conc.get("sf50api"):
        conc_rows("50 (API)", conc["sf50api"], None, "50/50")
    if conc.get("sf50"):
        c50 = conc["sf50"]
        conc_rows("50 (Run now)", c50, None, "50/50")
        row(
            "  overlay /health 200 again after",
            fmt_s(c50.overlay_back_after) if c50.overlay_back_after is not None else "> 30 s",
        )
    bare = r.get("bare_fresh") is not None
    if "start_fresh" in r:
        row(
            "start-up fresh home -> /health",
            fmt_s(r["start_fresh"]),
            bare and fmt_s(r.get("bare_fresh")) + " bare",
            sf_v=r["start_fresh"],
            base_v=r.get("bare_fresh"),
        )
    if "start_restart" in r:
        row(
            "start-up restart -> /health",
            fmt_s(r["start_restart"]),
            bare and fmt_s(r.get("bare_restart")) + " bare",
            sf_v=r["start_restart"],
            base_v=r.get("bare_restart"),
        )
    add("")
    if r.get("idle"):
        add("Idle RSS by process (scriptflow, restarted home, after the idle wait):")
        for k, v in sorted(r["idle"].by_process.items(), key=lambda kv: -kv[1]):
            add(f"  {fmt_mb(v):>8}  {k}")
    if worker_idle:
        add("Idle RSS of the baseline's process worker:")
        for k, v in worker_idle.by_process.items():
            add(f"  {fmt_mb(v):>8}  {k}")
    if sl and sl.rss_after:
        g = sl.growth_per_run()
        add(
            f"ScriptFlow stack RSS across the {sl.n} sequential runs: "
            f"{fmt_mb(sl.rss_after[0])} after the first, {fmt_mb(sl.rss_after[-1])} after the "
            f"last; slope over the last two thirds {fmt_mb(g)}/run"
        )
    add("")
    add("Concurrency detail (RSS of the process trees without the scripts' own processes):")
    for key, c in conc.items():
        add(
            f"  {key} ({c.how}): idle {fmt_mb(c.idle_before)} -> peak {fmt_mb(c.peak)} -> "
            f"{fmt_mb(c.after)} after; outcomes {c.statuses}; scripts running after: "
            f"{c.leftover_scripts}"
        )
        for e in c.error_samples:
            add(f"      error: {e}")
        top = sorted(c.peak_breakdown.items(), key=lambda kv: -kv[1])
        for k, v in top[:3]:
            add(f"      {fmt_mb(v):>8}  {k}")
        if len(top) > 3:
            add(f"      {fmt_mb(sum(v for _k, v in top[3:])):>8}  {len(top) - 3} more processes")
    marks = [
        ("before any run", idle),
        ("after the sequential runs", r.get("sf_idle_after_latency")),
        ("at the end", r.get("sf_idle_end")),
    ]
    add(
        "  ScriptFlow stack RSS " + ", ".join(f"{k} {fmt_mb(v)}" for k, v in marks if v is not None)
    )
    for key, when in (("survivors_first_stop", "first"), ("survivors_last_stop", "last")):
        if r.get(key):
            add(
                f"  {when} stop of the stack: pids {r[key]} were still alive after SIGTERM to "
                "`scriptflow up` (+30 s, then SIGKILL); the bench killed them"
            )
    for k, lat in (("scriptflow", sl), ("prefect-default", dl), ("prefect-poll1s", pl)):
        if lat and lat.problems:
            add(f"  {k} latency problems: " + "; ".join(lat.problems[:5]))
    if r.get("error"):
        add("")
        add("Error: " + r["error"])
    add("")
    add(
        "Notes: medians and ratios are what to compare: the machine is shared. Baseline idle =\n"
        "the same Prefect server + an idle process worker. Memory per concurrent run = (peak\n"
        "RSS of the trees without the scripts - idle just before) / most scripts seen running\n"
        "at once. Baseline runs start at a random phase of the worker's poll, as a click would."
    )
    text = "\n".join(lines) + "\n"
    print("\n" + text, end="")
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
