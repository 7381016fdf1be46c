"""Shared fixtures: one real ScriptFlow stack (`scriptflow up`) per test session.

Real parts only: Prefect's server, the in-process runner, real subprocesses; users
admin / alice (owner) / bob (outsider) made through the real CLI.

Two tiers, decided here at collection: a test that needs a running stack, a Prefect server
or a browser (through any of its fixtures) is marked `stack`; `make test-fast` runs the
others (`-m "not stack"`: no server starts), `make test` runs everything."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-pass-123"
IN_CI = os.environ.get("CI") == "true"


# -- tiers --------------------------------------------------------------------------------------

# Fixtures that are a running stack or drive one; any fixture or test that calls one of
# STACK_CALLS starts a server of its own (a stack on a fresh home, Prefect's test harness).
STACK_FIXTURES = {"stack", "browser"}
STACK_CALLS = {"start_stack", "prefect_test_harness"}


def _calls_a_stack(func) -> bool:
    todo = [getattr(func, "__code__", None)]
    while todo:
        code = todo.pop()
        if code is None:
            continue
        if STACK_CALLS & set(code.co_names):
            return True
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return False


def needs_stack(item: pytest.Item) -> bool:
    if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    funcs = [d.func for chain in defs for d in chain]
    return any(_calls_a_stack(f) for f in [getattr(item, "function", None), *funcs])


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marks
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if needs_stack(item):
            item.add_marker(pytest.mark.stack)


def run_async(coro: Coroutine):
    """asyncio.run(coro) on a thread of its own: Playwright's sync API keeps an event loop
    running on the main thread once the browser tests have run in the session. The context
    is copied: Prefect's settings (temporary_settings, the test harness) live in it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, asyncio.run, coro).result()


def wait_until(predicate: Callable[[], object], timeout: float = 30, what: str = "the condition"):
    """Poll `predicate` until it returns something true (and return that); fail after
    `timeout` seconds saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.1)


@contextlib.contextmanager
def served_overlay(settings, db) -> Iterator[str]:
    """The overlay app alone (no Prefect started) served by uvicorn on a loopback port; its
    URL while the block runs."""
    import threading

    import uvicorn
    from scriptflow_prefect.ui_overlay.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db=db), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the overlay starting")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def need_tool(path_or_name: str, why: str) -> str:
    """A missing tool skips locally but fails in CI (a skip there would hide a gap)."""
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).exists() else None)
    if found:
        return found
    if IN_CI:
        pytest.fail(f"{path_or_name} is missing in CI ({why}); .ci/run must install it")
    pytest.skip(f"{path_or_name} is not installed ({why})")


@dataclass
class Stack:
    home: Path
    url: str
    prefect_url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "scriptflow_prefect.commands.cli", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def client(self, user: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30)

    def prefect(self) -> httpx.Client:
        """Prefect's own API with the stack's auth string, as a power user reaches it."""
        user, _sep, password = (
            (self.home / "prefect" / "auth_string").read_text().strip().partition(":")
        )
        return httpx.Client(
            base_url=self.prefect_url + "/api",
            auth=(user, password),
            timeout=30,
            transport=RetryBusy(),
        )


class RetryBusy(httpx.HTTPTransport):
    """Prefect on SQLite answers 503 when two writes meet; its own client tries again after
    a short random wait, and so do the tests' direct calls."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + 30
        while True:
            response = super().handle_request(request)
            if response.status_code != 503 or time.monotonic() > deadline:
                return response
            response.read()
            response.close()
            time.sleep(random.uniform(0.1, 0.5))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return json.load(resp)["status"] == "ok"
    except Exception:
        return False


def stack_env(home: Path, extra_env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a `scriptflow up` on `home`, on free ports; a None value in
    `extra_env` unsets that variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))}
    env.update(
        {
            "SCRIPTFLOW_HOME": str(home),
            "SCRIPTFLOW_PORT": str(free_port()),
            "SCRIPTFLOW_PREFECT_PORT": str(free_port()),
            "SCRIPTFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SCRIPTFLOW_WORKER_POLL_SECONDS": "1",
            # A process that imports Prefect before pointing it at the stack would otherwise
            # quietly start a temporary server of its own and talk to that one.
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            **(extra_env or {}),
        }
    )
    return {k: v for k, v in env.items() if v is not None}


def start_stack(home: Path, extra_env: dict[str, str | None] | None = None) -> Stack:
    """`scriptflow up` on `home`; a None value in `extra_env` unsets that variable."""
    env = stack_env(home, extra_env)
    port, prefect_port = env["SCRIPTFLOW_PORT"], env["SCRIPTFLOW_PREFECT_PORT"]
    home.mkdir(parents=True, exist_ok=True)
    log = home / "up.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", "up"],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or _healthy(url),
            timeout=150,
            what="scriptflow up answering /health",
        )
        if proc.poll() is not None:
            raise AssertionError(f"scriptflow up exited with {proc.returncode}")
    except AssertionError as exc:
        proc.kill()
        raise RuntimeError(f"{exc}; its output:\n" + log.read_text()) from None
    return Stack(
        home=home,
        url=url,
        prefect_url=f"http://127.0.0.1:{prefect_port}",
        env=env,
        proc=proc,
        log=log,
    )


def stop_stack(stack: Stack) -> None:
    stack.proc.terminate()
    try:
        stack.proc.wait(30)
    except subprocess.TimeoutExpired:
        stack.proc.kill()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    s = start_stack(tmp_path_factory.mktemp("scriptflow-home"))
    try:
        for name in ("alice", "bob"):
            r = s.cli(
                "user",
                "add",
                name,
                "--email",
                f"{name}@example.test",
                "--password-stdin",
                input=f"{name}-pass-123\n",
            )
            assert r.returncode == 0, r.stderr
        for name in ("admin", "alice", "bob"):
            r = s.cli("token", "create", name)
            assert r.returncode == 0, r.stderr
            s.tokens[name] = r.stdout.strip()
        yield s
    finally:
        stop_stack(s)


@pytest.fixture
def admin(stack) -> httpx.Client:
    with stack.client("admin") as c:
        yield c


@pytest.fixture
def alice(stack) -> httpx.Client:
    with stack.client("alice") as c:
        yield c


@pytest.fixture
def bob(stack) -> httpx.Client:
    with stack.client("bob") as c:
        yield c


_counter = {"n": 0}


def unique(name: str) -> str:
    _counter["n"] += 1
    return f"{name}-{os.getpid()}-{_counter['n']}"


def upload(
    client: httpx.Client,
    source: str,
    *,
    filename: str = "job.py",
    name: str | None = None,
    **fields,
) -> dict:
    data = {"name": name or unique(Path(filename).stem), **fields}
    r = client.post("/scripts", files={"file": (filename, source.encode())}, data=data)
    assert r.status_code == 201, r.text
    return r.json()


def wait_run(
    client: httpx.Client,
    run_id: str,
    timeout: float = 60,
    until=("succeeded", "failed", "timed_out", "cancelled", "crashed"),
) -> dict:
    last: dict = {}

    def reached() -> dict | None:
        last.update(client.get(f"/runs/{run_id}").json())
        return dict(last) if last["status"] in until else None

    try:
        return wait_until(reached, timeout, f"run {run_id} reaching {'/'.join(until)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it stayed {last.get('status')}: {last}") from None


def output_of(client: httpx.Client, run_id: str) -> list[dict]:
    lines, cursor = [], None
    while True:
        params = {"after": cursor} if cursor else {}
        body = client.get(f"/runs/{run_id}/output", params=params).json()
        lines += body["lines"]
        cursor = body["next"]
        if body["complete"] or not body["lines"]:
            return lines


def private_home_base() -> Path:
    """Where stacks with the recommended layout live: a folder of their own, not under /tmp
    (the sandbox cannot let scripts create entries directly in the folders above the home)."""
    base = Path("/var/lib/scriptflow-tests") if os.geteuid() == 0 else Path.home() / ".sf-tests"
    base.mkdir(parents=True, exist_ok=True)
    return base


def scratch_dir() -> Path:
    """Where a sandboxed script creates a new file as any program would: /tmp, unless
    ScriptFlow itself is installed under /tmp (a clone in a temporary folder). Its code is
    read-only to scripts, and Landlock's allow-list then cannot let them create entries
    directly in /tmp (README "The sandbox"): /var/tmp is the same kind of folder."""
    own = [Path(sys.prefix).resolve(), Path(__file__).resolve().parent]
    if any(Path("/tmp") in p.parents for p in own):
        return Path("/var/tmp")
    return Path("/tmp")


@pytest.fixture(scope="session")
def private_stack() -> Stack:
    """A stack whose home is laid out as README's production recipe says (admin, alice)."""
    home = private_home_base() / f"home-{os.getpid()}"
    s = start_stack(home)
    try:
        r = s.cli("user", "add", "alice", "--password-stdin", input="alice-pass-123\n")
        assert r.returncode == 0, r.stderr
        for name in ("admin", "alice"):
            r = s.cli("token", "create", name)
            assert r.returncode == 0, r.stderr
            s.tokens[name] = r.stdout.strip()
        yield s
    finally:
        stop_stack(s)
        shutil.rmtree(home, ignore_errors=True)
