"""Issue 13, bursts on SQLite: the server-side patch (commands/prefect_sqlite.py) is pinned to
the Prefect code it changes and applied in the real server; many "Run now" at once make one
run each, with no busy answer from Prefect; a "Run now" Prefect cannot take at once is
answered queued and created once it can. Figures: bench/burst_bench.py."""

from __future__ import annotations

import asyncio
import inspect
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from conftest import upload, wait_run
from prefect.cli import _server_utils
from prefect.server.api import deployments as deployments_api
from prefect.server.api import flow_runs as flow_runs_api
from prefect.server.api import server as prefect_server
from prefect.server.api import workers as workers_api
from prefect.server.database.configurations import AioSqliteConfiguration

from scriptflow_prefect.commands import prefect_sqlite
from scriptflow_prefect.platform import prefect_budget
from scriptflow_prefect.platform.prefect import PrefectUnavailable, call

RETRYABLE = "Encountered retryable exception in request"


# -- the pin: what the patch relies on in Prefect's private code ----------------------------
def test_prefect_still_has_what_the_patch_changes():
    begin = inspect.signature(AioSqliteConfiguration.begin_transaction)
    assert list(begin.parameters) == ["self", "session", "with_for_update"]
    source = inspect.getsource(AioSqliteConfiguration.begin_transaction)
    assert '"IMMEDIATE" if with_for_update else "DEFERRED"' in source
    create = inspect.signature(prefect_server.create_app)
    assert {"settings", "ephemeral", "webserver_only", "final"} <= set(create.parameters)
    # `prefect server start` looks create_app up in its module when it starts, so the
    # patched one is the one it serves.
    assert "from prefect.server.api.server import create_app" in inspect.getsource(
        _server_utils._run_in_foreground
    )


@pytest.mark.parametrize(
    ("endpoint", "method", "path"),
    [
        (
            deployments_api.create_flow_run_from_deployment,
            "POST",
            "/api/deployments/{id}/create_flow_run",
        ),
        (flow_runs_api.create_flow_run, "POST", "/api/flow_runs/"),
        (flow_runs_api.update_flow_run_labels, "PATCH", "/api/flow_runs/{id}/labels"),
        (workers_api.worker_heartbeat, "POST", "/api/work_pools/{name}/workers/heartbeat"),
        (deployments_api.update_deployment, "PATCH", "/api/deployments/{id}"),
    ],
)
def test_the_calls_it_starts_immediate_still_read_first_in_a_deferred_transaction(
    endpoint, method, path
):
    """When Prefect opens these IMMEDIATE itself (or moves them), the patch can go."""
    source = inspect.getsource(endpoint)
    assert "session_context(begin_transaction=True)" in source
    assert "with_for_update" not in source
    routes = {
        (m, "/api" + r.path)
        for router in (deployments_api.router, flow_runs_api.router, workers_api.router)
        for r in router.routes
        for m in getattr(r, "methods", ())
    }
    declared = path.replace("{id}", "{id:uuid}").replace("{name}", "{work_pool_name}")
    assert (method, declared) in routes
    concrete = path.replace("{id}", "0b6e4c5e-4f4b-4a51-9a3b-6a1f1c8d2e10")
    concrete = concrete.replace("{name}", "scriptflow")
    assert prefect_sqlite.reads_then_writes(method, concrete)


def test_it_leaves_other_calls_deferred():
    run = "0b6e4c5e-4f4b-4a51-9a3b-6a1f1c8d2e10"
    assert not prefect_sqlite.reads_then_writes("POST", f"/api/flow_runs/{run}/set_state")
    assert not prefect_sqlite.reads_then_writes("POST", "/api/logs/")
    assert not prefect_sqlite.reads_then_writes("GET", f"/api/flow_runs/{run}/labels")


def _run(coro):
    """asyncio.run on a thread of its own: earlier tests of the session (a browser's
    driver) may leave an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_a_busy_answer_says_retry_after():
    async def busy(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/api/logs/"}
    _run(prefect_sqlite.WriteLockFirst(busy)(scope, receive, send))
    assert (b"retry-after", prefect_sqlite.RETRY_AFTER) in sent[0]["headers"]


# -- the real stack -------------------------------------------------------------------------
def _server_log(stack) -> str:
    return (stack.home / "logs" / "prefect-server.log").read_text(errors="replace")


def _prefect_server(stack) -> psutil.Process:
    for p in psutil.Process(stack.proc.pid).children(recursive=True):
        if "scriptflow_prefect.commands.prefect_child" in " ".join(p.cmdline()):
            return p
    raise AssertionError("no Prefect server under `scriptflow up`")


def test_a_task_that_outlives_its_page_is_not_cut_by_the_pages_prefect_budget():
    """A queued Run now is created by a task started inside a page's budget: a copy of the
    page's context. Past the answer, the budget must not cut its retries (runs/prefect.py)."""

    async def prefect_call():
        await asyncio.sleep(0.05)
        return "created"

    async def background(detach: bool):
        if detach:
            prefect_budget.detach()
        await asyncio.sleep(0.1)  # the page has answered; its budget has run out
        return await call(prefect_call())

    async def page(detach: bool):
        with prefect_budget.budget(0.05):
            task = asyncio.ensure_future(background(detach))
        return await asyncio.gather(task, return_exceptions=True)

    assert _run(page(detach=True)) == ["created"]
    (without,) = _run(page(detach=False))
    assert isinstance(without, PrefectUnavailable)  # what happened before: every retry cut


def test_the_real_server_runs_patched(stack):
    assert prefect_sqlite.INSTALLED_NOTE in _server_log(stack)


def test_twenty_run_now_at_once_make_twenty_runs_and_no_busy_answer(stack, alice):
    scripts = [upload(alice, "print('once')\n") for _ in range(20)]
    busy_before = _server_log(stack).count(RETRYABLE)

    def run_now(script: dict) -> tuple[int, str]:
        with stack.client("alice") as own:  # one connection each: twenty clicks at once
            r = own.post(f"/scripts/{script['id']}/runs")
            return r.status_code, r.json().get("id")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(run_now, scripts))
    assert [code for code, _id in answers] == [202] * 20
    assert len({run_id for _code, run_id in answers}) == 20
    runs = [wait_run(alice, run_id, timeout=120) for _code, run_id in answers]
    assert [r["status"] for r in runs] == ["succeeded"] * 20
    for script in scripts:  # exactly one run each: no duplicate from a retried create
        listed = alice.get("/runs", params={"script_id": script["id"]}).json()
        assert listed["total"] == 1, listed
    assert _server_log(stack).count(RETRYABLE) == busy_before


def test_a_run_now_prefect_cannot_take_yet_is_answered_queued_and_created_once(stack, alice):
    script = upload(alice, "print('later')\n")
    server = _prefect_server(stack)
    server.send_signal(signal.SIGSTOP)  # Prefect takes nothing for now
    try:
        with stack.client("alice") as own:
            r = own.post(f"/scripts/{script['id']}/runs")
        # answered while Prefect's server was stopped: the create did not hold the answer
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["status"] == "queued"
        assert queued["script_id"] == script["id"] and queued["trigger"] == "manual"
        seen = alice.get(f"/runs/{queued['id']}")
        assert seen.status_code == 200 and seen.json()["status"] == "queued"
    finally:
        server.send_signal(signal.SIGCONT)
    run = wait_run(alice, queued["id"], timeout=120)
    assert run["status"] == "succeeded"
    listed = alice.get("/runs", params={"script_id": script["id"]}).json()
    assert listed["total"] == 1, listed
    assert listed["items"][0]["id"] == run["id"]
