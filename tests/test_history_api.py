"""Run history through the API on the session's real stack: every filter and combinations,
exact totals, full-text search over output, CSV and text export, the per-script summary with
acknowledgements, and a 1 M-line run captured completely."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest
from conftest import run_async, start_stack, stop_stack, unique, upload, wait_run, wait_until

OK_SCRIPT = "print('alpha bravo charlie')\nprint('Disk check passed')\n"
FAIL_SCRIPT = """\
import sys
print('disk almost full', flush=True)
print('warning: retrying', file=sys.stderr, flush=True)
1 / 0
"""
SLOW_SCRIPT = "import time\nprint('slow start', flush=True)\ntime.sleep(30)\n"
NO_RETRIES = {"policy": {"retries": 0, "disable_after_failures": 0}}


def prefect_api(stack) -> httpx.Client:
    return stack.prefect()


def run_with_tags(stack, client, script: dict, tags: list[str]) -> dict:
    """A run as Prefect's scheduler (tag auto-scheduled) or a retry (tag retry) makes it."""
    with prefect_api(stack) as p:
        dep = p.get(f"/deployments/name/run_script/{script['name']}").json()
        r = p.post(f"/deployments/{dep['id']}/create_flow_run", json={"tags": tags})
        assert r.status_code == 201, r.text
        return wait_run(client, r.json()["id"])


def start(client, script) -> dict:
    r = client.post(f"/scripts/{script['id']}/runs")
    assert r.status_code == 202, r.text
    return wait_run(client, r.json()["id"])


@pytest.fixture(scope="module")
def hist(stack):
    """alice: ok (manual + scheduled), fail (manual + retry), slow (timed out); bob: one run
    printing alice's phrase. All after `since`, so other modules' runs stay out of the sums."""
    with stack.client("alice") as alice, stack.client("bob") as bob:
        since = datetime.now(UTC) - timedelta(seconds=1)
        ok = upload(alice, OK_SCRIPT, name=unique("hist-ok"))
        fail = upload(alice, FAIL_SCRIPT, name=unique("hist-fail"))
        slow = upload(alice, SLOW_SCRIPT, name=unique("hist-slow"))
        for s in (ok, fail, slow):
            assert alice.patch(f"/scripts/{s['id']}", json=NO_RETRIES).status_code == 200
        assert alice.patch(f"/scripts/{slow['id']}", json={"timeout_seconds": 1}).status_code == 200
        runs = {"ok": start(alice, ok), "fail": start(alice, fail)}
        # Prefect's own clock: every later run is scheduled after the failed one ended.
        middle = datetime.fromisoformat(runs["fail"]["ended_at"])
        runs["timeout"] = start(alice, slow)
        runs["scheduled"] = run_with_tags(stack, alice, ok, ["auto-scheduled"])
        runs["retry"] = run_with_tags(stack, alice, fail, ["retry", "retry-1"])
        other = upload(bob, OK_SCRIPT, name=unique("hist-bob"))
        runs["bob"] = start(bob, other)
        yield {
            "ok": ok,
            "fail": fail,
            "slow": slow,
            "runs": runs,
            "since": since,
            "middle": middle,
            "until": datetime.now(UTC) + timedelta(seconds=1),
        }


def ids(client, **params) -> list[str]:
    r = client.get("/runs", params={"per_page": 200, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"]), "the total is exact"
    return [run["id"] for run in body["items"]]


def test_it_sees_the_runs_as_made(hist):
    r = hist["runs"]
    assert [r[k]["status"] for k in ("ok", "fail", "timeout", "scheduled", "retry")] == [
        "succeeded",
        "failed",
        "timed_out",
        "succeeded",
        "failed",
    ]
    assert [r[k]["trigger"] for k in ("ok", "scheduled", "retry")] == [
        "manual",
        "scheduled",
        "retry",
    ]


def test_it_filters_by_each_filter(alice, hist):
    r, since = hist["runs"], hist["since"].isoformat()
    mine = lambda **p: set(ids(alice, since=since, **p))  # noqa: E731
    assert mine() == {r[k]["id"] for k in ("ok", "fail", "timeout", "scheduled", "retry")}
    assert mine(script_id=hist["ok"]["id"]) == {r["ok"]["id"], r["scheduled"]["id"]}
    assert mine(status="succeeded") == {r["ok"]["id"], r["scheduled"]["id"]}
    assert mine(status="failed") == {r["fail"]["id"], r["retry"]["id"]}  # not the timed-out
    assert mine(status="timed_out") == {r["timeout"]["id"]}
    assert mine(status="cancelled") == set()
    assert mine(trigger="manual") == {r[k]["id"] for k in ("ok", "fail", "timeout")}
    assert mine(trigger="scheduled") == {r["scheduled"]["id"]}
    assert mine(trigger="retry") == {r["retry"]["id"]}
    middle = hist["middle"].isoformat()
    assert set(ids(alice, since=since, until=middle)) == {r["ok"]["id"], r["fail"]["id"]}
    assert set(ids(alice, since=middle)) == {r[k]["id"] for k in ("timeout", "scheduled", "retry")}


def test_it_combines_filters(alice, hist):
    r, since = hist["runs"], hist["since"].isoformat()
    fail, ok = hist["fail"]["id"], hist["ok"]["id"]
    assert ids(alice, since=since, script_id=fail, status="failed", trigger="retry") == [
        r["retry"]["id"]
    ]
    assert ids(alice, since=since, script_id=fail, status="failed", trigger="manual") == [
        r["fail"]["id"]
    ]
    assert ids(alice, since=since, script_id=ok, status="failed") == []
    assert ids(alice, since=since, status="succeeded", trigger="scheduled") == [
        r["scheduled"]["id"]
    ]
    assert ids(alice, since=hist["middle"].isoformat(), script_id=fail) == [r["retry"]["id"]]


def test_it_lists_newest_first_and_pages_without_gaps(alice, hist):
    since = hist["since"].isoformat()
    everything = ids(alice, since=since)
    r = hist["runs"]
    assert everything.index(r["retry"]["id"]) < everything.index(r["ok"]["id"])
    pages = []
    for page in (1, 2, 3):
        body = alice.get("/runs", params={"since": since, "per_page": 2, "page": page}).json()
        assert body["total"] == 5
        pages += [run["id"] for run in body["items"]]
    assert pages == everything


def test_bob_sees_only_his_runs(bob, hist):
    r = hist["runs"]
    assert ids(bob, since=hist["since"].isoformat()) == [r["bob"]["id"]]
    assert ids(bob, script_id=hist["ok"]["id"]) == []
    assert ids(bob, q="alpha bravo", since=hist["since"].isoformat()) == [r["bob"]["id"]]


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"status": "bogus"}, "status"),
        ({"trigger": "cron"}, "trigger"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T08:00:00"}, "until"),
        ({"script_id": "abc"}, "script_id"),
        ({"script_id": 0}, "script_id"),
        ({"page": 0}, "page"),
        ({"per_page": 201}, "per_page"),
        ({"q": "x" * 201}, "q"),
        ({"q": "?!  --"}, "letter"),
    ],
)
def test_it_answers_422_with_a_reason_for_a_bad_filter(alice, params, word):
    for path in ("/runs", "/runs.csv"):
        if path == "/runs.csv" and set(params) & {"page", "per_page"}:
            continue
        r = alice.get(path, params=params)
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and word in detail, detail


def test_search_finds_exactly_the_runs_holding_a_phrase(alice, hist):
    r, since = hist["runs"], hist["since"].isoformat()
    found = alice.get("/runs", params={"q": "ALPHA  bravo", "since": since}).json()
    assert {run["id"] for run in found["items"]} == {r["ok"]["id"], r["scheduled"]["id"]}
    assert found["total"] == 2
    for run in found["items"]:
        assert run["match"]["text"] == "alpha bravo charlie"
        assert run["match"]["stream"] == "stdout"
    assert ids(alice, q="bravo alpha", since=since) == []  # words in this order only
    assert ids(alice, q="charlie disk", since=since) == []  # never across two lines
    assert set(ids(alice, q="disk", since=since)) == {
        r[k]["id"] for k in ("ok", "scheduled", "fail", "retry")
    }
    assert set(ids(alice, q="division by zero", since=since)) == {r["fail"]["id"], r["retry"]["id"]}
    assert ids(alice, q="division by zero", since=since, trigger="retry") == [r["retry"]["id"]]
    assert ids(alice, q="disk", since=since, status="succeeded", script_id=hist["ok"]["id"]) == [
        r["scheduled"]["id"],
        r["ok"]["id"],
    ]
    zero = alice.get("/runs", params={"q": "ZeroDivisionError", "since": since}).json()
    assert {run["match"]["stream"] for run in zero["items"]} == {"stderr"}


# Over SYNC_INDEX_BYTES, and the run does not end: nothing indexes it while the stack lives.
BIG_OUTPUT = """\
import time
for n in range(40000):
    print(f'filler line {n:06d} ' + 'x' * 80)
print('the missed run says goodbye', flush=True)
time.sleep(600)
"""


def kill_tree(proc, home) -> None:
    """The machine loses power: every process of the stack stops at once (SIGKILL). Found
    by its home as well: Prefect's server runs in a session of its own and was left behind
    (alive after the test session) when only the tree was killed."""
    main = psutil.Process(proc.pid)
    procs = [main, *main.children(recursive=True)]
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p not in procs and p.environ().get("SCRIPTFLOW_HOME") == str(home):
                procs.append(p)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=30)


def test_search_covers_runs_the_index_missed(tmp_path_factory):
    """A stack killed while a run with a big output was still going (its output is indexed
    when the run ends, which never came). Once the run is ended in Prefect (Crashed, as a
    power user or crash recovery does), the started-again stack's search finds its lines."""
    home = tmp_path_factory.mktemp("missed-home")
    first = start_stack(home)
    try:
        token = first.cli("token", "create", "admin")
        assert token.returncode == 0, token.stderr
        first.tokens["admin"] = token.stdout.strip()
        with first.client("admin") as admin:
            script = upload(admin, BIG_OUTPUT, name="big-output")
            r = admin.post(f"/scripts/{script['id']}/runs")
            assert r.status_code == 202, r.text
            run_id = r.json()["id"]
            wait_until(
                lambda: "says goodbye" in admin.get(f"/runs/{run_id}/output.txt").text,
                timeout=60,
                what="the run printing its last line",
            )
        kill_tree(first.proc, home)
    finally:
        if first.proc.poll() is None:
            stop_stack(first)
    outputs = home / "outputs"
    assert (outputs / f"{run_id}.log").exists() and not (outputs / f"{run_id}.log.gz").exists()
    second = start_stack(home)
    try:
        second.tokens["admin"] = first.tokens["admin"]
        with second.prefect() as prefect:
            crashed = {"type": "CRASHED", "name": "Crashed", "message": "the machine stopped"}
            r = prefect.post(
                f"/flow_runs/{run_id}/set_state", json={"state": crashed, "force": True}
            )
            assert r.status_code in (200, 201), r.text
        with second.client("admin") as admin:
            wait_until(
                lambda: ids(admin, q="missed run says goodbye") == [run_id],
                timeout=30,
                what="a search finding the run the index missed",
            )
    finally:
        stop_stack(second)


def test_it_exports_the_filtered_list_as_csv(alice, hist):
    r, since = hist["runs"], hist["since"].isoformat()
    resp = alice.get("/runs.csv", params={"since": since, "script_id": hist["fail"]["id"]})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [row["id"] for row in rows] == ids(alice, since=since, script_id=hist["fail"]["id"])
    row = next(row for row in rows if row["id"] == r["retry"]["id"])
    assert (row["status"], row["trigger"], row["exit_code"]) == ("failed", "retry", "1")
    assert row["script_name"] == hist["fail"]["name"]
    assert datetime.fromisoformat(row["started_at"]).tzinfo is not None
    found = list(
        csv.DictReader(
            io.StringIO(
                alice.get("/runs.csv", params={"since": since, "q": "division by zero"}).text
            )
        )
    )
    assert {row["id"] for row in found} == {r["fail"]["id"], r["retry"]["id"]}
    assert all("ZeroDivisionError" in row["match"] for row in found)


def test_the_summary_flags_failed_scheduled_runs_until_acknowledged(alice, bob, hist):
    fail, ok = hist["fail"], hist["ok"]
    summary = alice.get(f"/scripts/{fail['id']}/summary").json()
    assert summary["rate_7"] == 0 and summary["finished_7"] == 2
    assert [r["id"] for r in summary["unacknowledged"]] == [hist["runs"]["retry"]["id"]]
    assert len(summary["strip"]) == 30 and summary["strip"][-1]["outcome"] == "failed"
    ok_summary = alice.get(f"/scripts/{ok['id']}/summary").json()
    assert ok_summary["rate_30"] == 1 and ok_summary["unacknowledged"] == []
    assert (
        ok_summary["avg_duration"] > 0
        and ok_summary["p95_duration"] >= ok_summary["avg_duration"] * 0.5
    )
    retry_id = hist["runs"]["retry"]["id"]
    assert bob.post(f"/runs/{retry_id}/acknowledge").status_code == 404
    assert alice.post(f"/runs/{hist['runs']['ok']['id']}/acknowledge").status_code == 409
    assert alice.post(f"/runs/{retry_id}/acknowledge").status_code == 204
    assert alice.get(f"/scripts/{fail['id']}/summary").json()["unacknowledged"] == []


def test_it_searches_within_one_run_and_finds_its_first_error(alice, hist):
    run_id = hist["runs"]["fail"]["id"]
    body = alice.get(f"/runs/{run_id}/output/search", params={"q": "DISK"}).json()
    assert body["total"] == 1
    line = alice.get(
        f"/runs/{run_id}/output", params={"after": body["matches"][0], "limit": 1}
    ).json()["lines"][0]
    assert line["text"] == "disk almost full"
    first = alice.get(
        f"/runs/{run_id}/output", params={"after": body["first_error"], "limit": 1}
    ).json()["lines"][0]
    assert (first["stream"], first["text"]) == ("stderr", "warning: retrying")


MILLION = """\
import sys
for i in range(1_000_000):
    if i % 250_000 == 0:
        print(f"checkpoint {i}", file=sys.stderr)
    print(f"line {i} of the big output, with some ordinary log text")
"""


@pytest.mark.timeout(600)
def test_a_million_line_run_is_captured_completely(stack, alice):
    script = upload(alice, MILLION, name=unique("million"))
    proc = psutil.Process(stack.proc.pid)
    rss_before = proc.memory_info().rss
    run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    peak = rss_before
    deadline = time.monotonic() + 300
    while alice.get(f"/runs/{run_id}").json()["status"] in ("queued", "running"):
        peak = max(peak, proc.memory_info().rss)
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert alice.get(f"/runs/{run_id}").json()["status"] == "succeeded"
    # Memory stays flat: the output goes to disk, in chunks, not into the process.
    assert peak - rss_before < 64 * 1024 * 1024, (rss_before, peak)

    # stdout and stderr are two pipes: each keeps its order, but which of the first stdout
    # and first stderr line is read first is up to the scheduler.
    count, first, last, opening = 0, {}, {}, []
    with alice.stream("GET", f"/runs/{run_id}/output.txt", timeout=300) as resp:
        assert resp.status_code == 200
        for row in resp.iter_lines():
            m = re.fullmatch(r"(\S+) (stdout|stderr) (.*)", row)
            assert m, row
            count += 1
            if count <= 3:
                opening.append(m.group(3))
            first.setdefault(m.group(2), m.group(3))
            last[m.group(2)] = m.group(3)
    assert count == 1_000_004
    assert first == {
        "stderr": "checkpoint 0",
        "stdout": "line 0 of the big output, with some ordinary log text",
    }
    assert last == {
        "stderr": "checkpoint 750000",
        "stdout": "line 999999 of the big output, with some ordinary log text",
    }
    # Paging by cursor works on it, from the start and after the last line.
    page = alice.get(f"/runs/{run_id}/output", params={"limit": 3}).json()
    assert [ln["text"] for ln in page["lines"]] == opening
    # Once indexed in the background it is stored compressed, and searchable.
    deadline = time.monotonic() + 120
    gz = stack.home / "outputs" / f"{run_id}.log.gz"
    while not gz.exists():
        assert time.monotonic() < deadline, "the big output was not compressed"
        time.sleep(1)
    assert gz.stat().st_size < 20 * 1024 * 1024
    assert ids(alice, q="line 999999 of the big", script_id=script["id"]) == [run_id]
    search = alice.get(f"/runs/{run_id}/output/search", params={"q": "checkpoint 750000"}).json()
    assert search["total"] == 1
    # The first error is the first stderr line: where it sits among the stdout lines depends
    # on which of the two pipes was read first, so it is asserted by what is there.
    first_error = alice.get(
        f"/runs/{run_id}/output", params={"after": search["first_error"], "limit": 1}
    ).json()
    assert [(ln["stream"], ln["text"]) for ln in first_error["lines"]] == [
        ("stderr", "checkpoint 0")
    ]
    end = alice.get(
        f"/runs/{run_id}/output", params={"after": search["matches"][0], "limit": 2}
    ).json()
    assert end["lines"][0]["text"] == "checkpoint 750000"  # stderr: its own pipe, so its
    assert end["lines"][1]["stream"] == "stdout"  # place among stdout lines is approximate


def test_the_first_lines_also_reach_prefects_log(stack, hist):
    """Power users see a run's output in the Prefect UI too (its first 20 000 lines)."""
    run_id = hist["runs"]["fail"]["id"]
    with prefect_api(stack) as p:
        deadline = time.monotonic() + 20
        while True:
            logs = p.post(
                "/logs/filter",
                json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"},
            ).json()
            out = [
                (log["name"], log["level"], log["message"])
                for log in logs
                if log["name"].startswith("prefect.flow_runs.std")
            ]
            if len(out) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert ("prefect.flow_runs.stdout", 20, "disk almost full") in out
    assert ("prefect.flow_runs.stderr", 30, "warning: retrying") in out
    assert any(m.startswith("ZeroDivisionError") for _n, _l, m in out)


def test_prefects_ui_run_history_still_gives_what_the_history_reads(stack, hist):
    """Summaries and counts read Prefect's UI-private `/ui/flow_runs/history` (one wrapper in
    history/prefect.py). If a Prefect upgrade changes its rows, this fails first."""
    from uuid import UUID

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import StateType

    from scriptflow_prefect.history import prefect as history_prefect
    from scriptflow_prefect.history import service as history
    from scriptflow_prefect.runs.filters import RunQuery

    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    runs = hist["runs"]
    wanted = sorted(UUID(runs[k]["id"]) for k in ("ok", "fail", "timeout"))

    async def read() -> list[dict]:
        async with PrefectClient(stack.prefect_url + "/api", auth_string=auth) as client:
            query = RunQuery(run_ids=wanted).flow_run_filter()
            return await history_prefect.ui_flow_run_history(
                client, query, 10, sort="START_TIME_DESC"
            )

    rows = run_async(read())
    assert sorted(UUID(r["id"]) for r in rows) == wanted
    for row in rows:
        assert set(history_prefect.UI_HISTORY_FIELDS) <= set(row), row
        assert row["state_type"] in {t.value for t in StateType}
    assert sorted(r["state_type"] for r in rows) == ["COMPLETED", "FAILED", "FAILED"]
    summary = history.summarize(rows, now=datetime.now(UTC))
    assert (summary["finished_7"], summary["rate_7"]) == (3, 1 / 3)
    assert summary["avg_duration"] is not None and summary["avg_duration"] >= 0


def all_ids(client, **params) -> tuple[int, list[str]]:
    """The total and every run id, page by page (200 a page)."""
    body = client.get("/runs", params={"per_page": 200, **params}).json()
    found = [r["id"] for r in body["items"]]
    page = 1
    while len(found) < body["total"] and page < 100:
        page += 1
        found += [
            r["id"]
            for r in client.get("/runs", params={"per_page": 200, "page": page, **params}).json()[
                "items"
            ]
        ]
    return body["total"], found


def test_admin_totals_stay_exact_while_runs_arrive_and_finish(admin, alice):
    """An admin's totals over every script are partly kept between requests (history.py):
    they must stay equal to what the pages list, while runs start and end."""
    filters = (
        {},
        {"status": "succeeded"},
        {"trigger": "manual"},
        {"status": "succeeded", "trigger": "manual"},
        {"status": "failed"},
    )
    first = {}
    for f in filters:
        total, found = all_ids(admin, **f)
        assert total == len(found) == len(set(found)), f
        first[tuple(f.items())] = total
    script = upload(
        alice, "import time\nprint('tick', flush=True)\ntime.sleep(4)\n", name=unique("arriving")
    )
    run_id = alice.post(f"/scripts/{script['id']}/runs").json()["id"]
    wait_run(alice, run_id, until=("running",))
    for f in filters:  # counted while the run is running
        total, found = all_ids(admin, **f)
        assert total == len(found), f
    assert wait_run(alice, run_id)["status"] == "succeeded"
    for f in filters:
        total, found = all_ids(admin, **f)
        assert total == len(found), f
        grew = f.get("status", "succeeded") == "succeeded"
        assert total == first[tuple(f.items())] + grew, f
        assert (run_id in found) == grew
