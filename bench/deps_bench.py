"""Scripts with Python dependencies: what a cold and a warm environment add to "Run now", and
the disk the environments take when many scripts share most of their packages.

Measured on one real `scriptflow up` (tests/conftest.start_stack), packages from the real
index through uv (nothing passes or fails here; read medians, the machine is shared):

A. "Run now" (POST /api/v1/scripts/{id}/runs) -> first output line through
   GET /api/v1/runs/{id}/output, polled every 20 ms:
   - none: `print("hi")` with no requirements (the shared script-venv, as before),
   - cold: a script with 3 dependencies (six, idna, attrs in a `# /// script` block), run at
     once after its upload, with <home>/envs (environments, resolutions and uv's cache)
     removed before each sample: resolve + download + install + the run,
   - warm: the same script again, its environment built: what the look-up adds.
   none and warm alternate, so that both see the same load; the median of the pairs'
   differences is given too. Then the two parts the warm path adds, measured alone in this
   process: the environment look-up (service.python_for_run on the stack's home, warm), and
   the interpreter's start to its first line, environment python vs the script-venv's.
B. Disk: 20 scripts, each with the same 3 packages plus one of its own (20 different small
   packages), their environments built (PATCH requirements -> background build). Reported:
   the environments as if each were a copy (sum of the file sizes in every environment), what
   they take on disk with uv's hard links (blocks, every inode counted once), and uv's cache
   (the downloaded wheels and the unpacked files the environments link to).

Usage: .venv/bin/python bench/deps_bench.py [--warm N]   (~3 min; prints the figures and
saves them to bench/results-deps.txt; every process it starts is stopped at the end)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from subprocess import PIPE

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

from scriptflow_prefect.environments import service  # noqa: E402
from scriptflow_prefect.execution.environment import venv_python  # noqa: E402
from scriptflow_prefect.platform.settings import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results-deps.txt"
NONE = 'print("hi", flush=True)\n'
# It prints before it imports: the figure is what ScriptFlow adds, not the packages' import time.
THREE = (
    "# /// script\n# dependencies = ['six', 'idna', 'attrs']\n# ///\n"
    "print('hi', flush=True)\nimport attrs, idna, six\n"
)
OWN = [
    "packaging",
    "pyparsing",
    "certifi",
    "urllib3",
    "chardet",
    "toml",
    "tomli",
    "typing-extensions",
    "zipp",
    "colorama",
    "click",
    "wcwidth",
    "pytz",
    "python-dateutil",
    "decorator",
    "more-itertools",
    "tabulate",
    "termcolor",
    "cachetools",
    "jmespath",
]
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "crashed"}
MB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def upload(client: httpx.Client, source: str, name: str) -> int:
    r = client.post("/scripts", files={"file": ("job.py", source.encode())}, data={"name": name})
    r.raise_for_status()
    return r.json()["id"]


def first_line(client: httpx.Client, script_id: int) -> float:
    """Seconds from "Run now" to the first output line; waits for the run to end."""
    t0 = time.perf_counter()
    r = client.post(f"/scripts/{script_id}/runs")
    r.raise_for_status()
    run_id = r.json()["id"]
    first = None
    deadline = t0 + 300
    while time.perf_counter() < deadline:
        if client.get(f"/runs/{run_id}/output").json()["lines"]:
            first = time.perf_counter() - t0
            break
        time.sleep(0.02)
    while time.perf_counter() < deadline:
        status = client.get(f"/runs/{run_id}").json()["status"]
        if status in FINAL:
            break
        time.sleep(0.05)
    if first is None or status != "succeeded":
        raise RuntimeError(f"run {run_id} of script {script_id}: {status}, first line {first}")
    return first


def environment_ready(client: httpx.Client, script_id: int) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = client.get(f"/scripts/{script_id}/environment").json()
        if body["status"] != "building":
            return body
        time.sleep(0.2)
    raise RuntimeError(f"script {script_id}: environment still building after 300 s")


def disk(folders: list[Path]) -> dict[str, int]:
    """Sizes of the files under `folders`: every path (`copies`), every inode once (`once`),
    disk blocks with every inode once (`blocks`), and files not hard-linked (`own`)."""
    sizes = {"copies": 0, "once": 0, "blocks": 0, "own": 0}
    seen: set[tuple[int, int]] = set()
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in [*files, *dirs]:
                st = os.lstat(os.path.join(root, name))
                if name in files:
                    sizes["copies"] += st.st_size
                    sizes["own"] += st.st_size if st.st_nlink == 1 else 0
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    sizes["blocks"] += st.st_blocks * 512
                    sizes["once"] += st.st_size if name in files else 0
    return sizes


def parts_of_warm_path(home: Path, script_id: int) -> tuple[list[float], list[float], list[float]]:
    """(environment look-ups, env python start -> line, script-venv python start -> line)."""
    settings = load_settings(home=home)
    source = THREE.encode()
    lookups = []
    for _ in range(200):
        t0 = time.perf_counter()
        with service.python_for_run(
            settings, kind="python", requirements=[], source=source, script_id=script_id
        ) as python:
            lookups.append(time.perf_counter() - t0)
    base = venv_python(settings.script_venv_dir)
    starts: dict[Path, list[float]] = {python: [], base: []}
    for _ in range(30):
        for exe in (python, base):
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(exe), "-c", "print('hi', flush=True)"], stdout=PIPE)
            assert proc.stdout is not None and proc.stdout.readline()
            starts[exe].append(time.perf_counter() - t0)
            proc.wait()
    return lookups, starts[python], starts[base]


def mb(n: int) -> str:
    return f"{n / MB:7.1f} MB"


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm", type=int, default=15, help="warm and none runs (each)")
    parser.add_argument("--cold", type=int, default=3, help="cold runs")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sf-deps-bench-"))
    stack = conftest.start_stack(home)
    try:
        r = stack.cli("token", "create", "admin")
        assert r.returncode == 0, r.stderr
        client = httpx.Client(
            base_url=stack.url + "/api/v1",
            headers={"Authorization": f"Bearer {r.stdout.strip()}"},
            timeout=60,
        )
        envs = home / "envs"
        none_id = upload(client, NONE, "none")
        first_line(client, none_id)  # the shared script-venv and the first-run costs, once

        say("A. cold: 3 dependencies, nothing cached (environments and uv's cache removed)")
        cold = []
        for i in range(args.cold):
            shutil.rmtree(envs, ignore_errors=True)  # no run in progress: nothing holds it
            script_id = upload(client, THREE, f"three-cold-{i}")
            cold.append(first_line(client, script_id))
            say(f"  cold {i + 1}: {cold[-1]:.2f} s")

        say("A. warm vs none, alternating")
        warm, none = [], []
        for i in range(args.warm):
            none.append(first_line(client, none_id))
            warm.append(first_line(client, script_id))
            say(f"  {i + 1}: none {none[-1] * 1000:.0f} ms, warm {warm[-1] * 1000:.0f} ms")
        lookups, env_start, base_start = parts_of_warm_path(home, script_id)

        say("B. 20 scripts sharing 3 packages, one package of their own each")
        shutil.rmtree(envs, ignore_errors=True)
        ids = []
        for n, package in enumerate(OWN):
            sid = upload(client, "import six\n", f"shared-{n}")
            client.patch(
                f"/scripts/{sid}", json={"requirements": ["six", "idna", "attrs", package]}
            ).raise_for_status()
            ids.append(sid)
        states = [environment_ready(client, sid) for sid in ids]
        failed = [s for s in states if s["status"] != "ready"]
        env_dirs = [p for p in envs.iterdir() if p.is_dir() and len(p.name) == 16]
        environments = disk(env_dirs)
        cache = disk([envs / "cache"])
        both = disk([envs])
    finally:
        conftest.stop_stack(stack)
        shutil.rmtree(home, ignore_errors=True)

    added = statistics.median(warm) - statistics.median(none)
    paired = statistics.median(w - n for w, n in zip(warm, none, strict=True))
    lines = [
        f"deps_bench {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores, shared machine)",
        "",
        "A. Run now -> first line (median)",
        f"  no requirements (script-venv)     {median_ms(none)}   n={len(none)}  (baseline)",
        f"  3 dependencies, warm environment  {median_ms(warm)}   n={len(warm)}"
        f"  -> adds {added * 1000:+.0f} ms (median of pairs {paired * 1000:+.0f} ms;"
        " target <= +200 ms)",
        f"  3 dependencies, cold (no cache)   {median_ms(cold)}   n={len(cold)}"
        f"  (min {min(cold):.2f} s, max {max(cold):.2f} s)",
        "  What the warm path adds, measured alone:",
        f"    environment look-up (resolution cached, lease, lock)   {median_ms(lookups)}"
        f"   n={len(lookups)}",
        f"    python start -> first line, dependency environment  {median_ms(env_start)}"
        f"   n={len(env_start)}",
        f"    python start -> first line, shared script-venv      {median_ms(base_start)}"
        f"   n={len(base_start)}",
        "",
        f"B. 20 scripts, 3 shared packages + 1 own each: {len(env_dirs)} environments"
        f"{f', {len(failed)} FAILED' if failed else ''}",
        f"  the environments as copies (every file of every one)   {mb(environments['copies'])}",
        f"  the environments, each hard-linked file counted once   {mb(environments['once'])}",
        f"    of which not linked (bytecode compiled per environment, records)"
        f" {mb(environments['own'])}",
        f"  uv's cache (wheels + the unpacked files linked to)     {mb(cache['once'])}",
        f"  envs/ on disk in all (4 KiB blocks, each inode once)   {mb(both['blocks'])}",
        "  The environments' package files are hard links into uv's cache: paid once on disk;",
        "  each environment adds only its own files (pyvenv.cfg, bin/, the bytecode compiled",
        "  at build time so that read-only environments need no __pycache__, uv's records).",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
