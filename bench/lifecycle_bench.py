"""`scriptflow up` killed or stopped at bad moments, N times each (issue 13, part 2):

- SIGKILL during start-up (alternately: Prefect's server started but not answering yet, and
  Prefect answering but ScriptFlow not ready),
- SIGKILL once ready and idle,
- SIGTERM during start-up (the same two moments).

For each kind: Prefect servers left behind (alive 60 s after the kill), the time until
Prefect's port is free again (median, max), how many next starts on the same home got going
(the next `up` started its own Prefect server, not refused by a leftover holding the port),
and for SIGTERM the exits with code 0 and without a traceback.

    .venv/bin/python bench/lifecycle_bench.py [N]      (default 20)

There is no baseline from the same run: main's behaviour (a server orphaned by every SIGKILL,
and by SIGTERM during start-up) is not runnable from this branch; the leftovers column is the
figure to compare with N."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import free_port, port_free  # noqa: E402  (the tests' own port helpers)

SERVER_CHILD = "scriptflow_prefect.commands.prefect_child"
DEADLINE = 300.0
LEFTOVER_AFTER = 60.0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Home:
    def __init__(self, base: Path, name: str) -> None:
        self.path = base / name
        self.path.mkdir(parents=True)
        self.port, self.prefect_port = free_port(), free_port()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))
        }
        self.env.update(
            SCRIPTFLOW_HOME=str(self.path),
            SCRIPTFLOW_PORT=str(self.port),
            SCRIPTFLOW_PREFECT_PORT=str(self.prefect_port),
            SCRIPTFLOW_ADMIN_PASSWORD="bench-pass-123",
            PREFECT_SERVER_EPHEMERAL_ENABLED="false",
        )

    def launch(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "scriptflow_prefect.commands.cli", "up"],
            env=self.env,
            stdout=open(self.path / "up.stdout", "wb"),  # noqa: SIM115 (the child holds it)
            stderr=open(self.path / "up.stderr", "wb"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
        )

    def stderr(self) -> str:
        return (self.path / "up.stderr").read_text(errors="replace")


def wait_for(predicate, timeout: float = DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def server_child(proc: subprocess.Popen) -> psutil.Process | None:
    try:
        children = psutil.Process(proc.pid).children()
    except psutil.Error:
        return None
    return next((c for c in children if SERVER_CHILD in " ".join(c.cmdline())), None)


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reach(home: Home, proc: subprocess.Popen, moment: str) -> psutil.Process | None:
    """Wait for the moment to strike; the server child then, or None (`up` exited)."""
    child = wait_for(lambda: server_child(proc) or proc.poll() is not None)
    if not isinstance(child, psutil.Process):
        return None
    if moment == "prefect answers":
        wait_for(lambda: answers(f"http://127.0.0.1:{home.prefect_port}/api/health"))
    elif moment == "ready":
        wait_for(lambda: answers(f"http://127.0.0.1:{home.port}/health"))
    return child


def one_kind(base: Path, kind: str, sig: signal.Signals, moments: list[str], n: int) -> dict:
    home = Home(base, kind.replace(" ", "-"))
    left, free_after, started, clean = 0, [], 0, 0
    proc = home.launch()
    for i in range(n):
        child = reach(home, proc, moments[i % len(moments)])
        if child is None:
            proc = home.launch()  # refused or failed: counted as a start that did not go
            continue
        if i:
            started += 1  # this `up`, the next start after the last kill, got going
        proc.send_signal(sig)
        t = time.monotonic()
        rc = proc.wait(120)
        if wait_for(lambda c=child: gone(c) and port_free(home.prefect_port), LEFTOVER_AFTER):
            free_after.append(time.monotonic() - t)
        else:
            left += 1
            child.kill()
        if sig == signal.SIGTERM and rc == 0 and "Traceback" not in home.stderr():
            clean += 1
        proc = home.launch()
    # The next start after the last kill.
    if reach(home, proc, "server started") is not None:
        started += 1
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return {
        "kind": kind,
        "left": left,
        "median": statistics.median(free_after) if free_after else float("nan"),
        "max": max(free_after) if free_after else float("nan"),
        "started": started,
        "clean": clean if sig == signal.SIGTERM else None,
    }


def main(n: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="sf-lifecycle-bench-", dir="/var/tmp"))
    kinds = [
        ("SIGKILL during start-up", signal.SIGKILL, ["server started", "prefect answers"]),
        ("SIGKILL once ready", signal.SIGKILL, ["ready"]),
        ("SIGTERM during start-up", signal.SIGTERM, ["server started", "prefect answers"]),
    ]
    print(f"{n} repetitions each; load average {os.getloadavg()[0]:.1f}; homes in {base}")
    print(
        f"{'kind':<26} {'servers left':>12} {'port free median':>17} {'max':>7} "
        f"{'next start OK':>14} {'clean exits':>12}"
    )
    for kind, sig, moments in kinds:
        r = one_kind(base, kind, sig, moments, n)
        clean = f"{r['clean']}/{n}" if r["clean"] is not None else "-"
        print(
            f"{r['kind']:<26} {r['left']:>12} {r['median']:>16.2f}s {r['max']:>6.2f}s "
            f"{r['started']:>11}/{n} {clean:>12}",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
