"""The Prefect UI and API behind ScriptFlow's login (`/prefect/`, issue 14 deliverable 3):
admins and power users get in without ever seeing Prefect's auth string; others get 403; a
page of another site gets nothing; a Prefect that is away is a 503 with a reason, not a 500.

Real parts: the session's `scriptflow up` (Prefect's server under /prefect), real sign-ins,
real websockets; the no-Prefect case on the overlay app served by uvicorn."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from alembic import command
from alembic.config import Config
from conftest import free_port, run_async, served_overlay, unique, upload
from sqlalchemy import text
from test_web_security import csrf_of, sign_in
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.platform.db import _MIGRATIONS, Database
from scriptflow_prefect.platform.settings import load_settings


def _user(stack, *flags: str) -> tuple[str, str]:
    name, password = unique("pu"), "power-pass-123"
    r = stack.cli("user", "add", name, *flags, "--password-stdin", input=password + "\n")
    assert r.returncode == 0, r.stderr
    return name, password


def _cookie(web: httpx.Client) -> str:
    return "; ".join(f"{k}={v}" for k, v in web.cookies.items())


def _filter_deployments(web: httpx.Client, origin: str | None) -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    return web.post("/prefect/api/deployments/filter", json={"limit": 200}, headers=headers)


def test_it_serves_the_prefect_ui_and_api_to_an_admin_without_any_auth_header(stack, alice):
    script = upload(alice, "print('hi')\n")
    web = sign_in(stack, "admin", "admin-pass-123")

    index = web.get("/prefect/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "/prefect/assets/" in index.text  # Prefect serves its UI under /prefect
    assert "server" not in index.headers
    assert "style-src 'self' 'unsafe-inline'" in index.headers["content-security-policy"]
    assert index.headers["x-frame-options"] == "DENY"

    ui = web.get("/prefect/ui-settings").json()
    assert ui["api_url"] == stack.url + "/prefect/api" and ui["auth"] is None  # never prompts
    assert stack.prefect_url not in json.dumps(ui)

    r = _filter_deployments(web, stack.url)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"  # run data: no copy in the browser's cache
    names = {d["name"] for d in r.json()}
    with stack.prefect() as prefect:  # the direct port, with the auth string (the CLI's way)
        direct = prefect.post("/deployments/filter", json={"limit": 200}).json()
    assert names == {d["name"] for d in direct}
    assert any(f"script-{script['id']}" in d["tags"] for d in r.json())

    # The direct port still wants the auth string; the proxy never hands it out.
    assert httpx.get(stack.prefect_url + "/api/flows/count", timeout=30).status_code == 401
    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    assert auth not in index.text and auth not in json.dumps(ui)


def test_a_power_user_gets_in_and_a_plain_user_gets_403(stack):
    name, password = _user(stack, "--power-user")
    listed = stack.cli("user", "list").stdout
    assert re.search(rf"^{re.escape(name)}\tpower user\tactive", listed, re.M), listed
    power = sign_in(stack, name, password)
    assert power.get("/prefect/").status_code == 200
    assert _filter_deployments(power, stack.url).status_code == 200
    assert 'href="/prefect/"' in power.get("/").text  # the navigation's "Prefect" link

    bob = sign_in(stack, "bob", "bob-pass-123")
    page = bob.get("/prefect/")
    assert page.status_code == 403
    assert "Only administrators and power users can open the Prefect UI" in page.text
    api = bob.get("/prefect/api/health")
    assert api.status_code == 403 and "power users" in api.json()["detail"]
    assert 'href="/prefect/"' not in bob.get("/").text
    pt = bob.get("/prefect/", headers={"Accept-Language": "pt-BR"})
    assert pt.status_code == 403 and "usuários avançados" in pt.text


def test_an_admin_marks_and_unmarks_a_power_user_on_the_settings_page(stack):
    name, password = _user(stack)
    user = sign_in(stack, name, password)
    assert user.get("/prefect/").status_code == 403

    web = sign_in(stack, "admin", "admin-pass-123")
    page = web.get("/settings").text
    uid = re.search(
        rf">{re.escape(name)}</th>.*?action=\"/settings/users/(\d+)/power\"", page, re.S
    )
    assert uid and "Make power user" in page
    toggle = f"/settings/users/{uid.group(1)}/power"
    assert web.post(toggle).status_code == 403  # no CSRF token
    r = web.post(toggle, data={"csrf_token": csrf_of(web)})
    assert r.status_code == 422  # which way is not said: nothing changes
    r = web.post(toggle, data={"csrf_token": csrf_of(web), "power": "1"})
    assert r.status_code == 303
    assert f"{name} may now open the Prefect UI." in web.get("/settings").text
    assert user.get("/prefect/").status_code == 200  # the same session: no sign-in again
    with sqlite3.connect(stack.home / "scriptflow.db") as db:
        audited = db.execute(
            "SELECT action FROM audit_events WHERE target = ? AND action LIKE 'user.%'", (name,)
        )
        assert [a for (a,) in audited] == ["user.power"]

    r = web.post(toggle, data={"csrf_token": csrf_of(web), "power": "0"})
    assert r.status_code == 303 and user.get("/prefect/").status_code == 403
    # A second "remove" (an old tab) stays removed: it sets, it does not flip.
    r = web.post(toggle, data={"csrf_token": csrf_of(web), "power": "0"})
    assert r.status_code == 303 and user.get("/prefect/").status_code == 403

    # Only admins mark; an admin always is one; an id that is nobody is 404.
    assert user.post(toggle, data={"csrf_token": csrf_of(user)}).status_code == 403
    for bad, status in (
        ("/settings/users/1/power", 422),  # the first admin
        ("/settings/users/99999999/power", 404),
        ("/settings/users/x/power", 404),
    ):
        assert web.post(bad, data={"csrf_token": csrf_of(web)}).status_code == status


def test_an_admin_is_always_a_power_user(stack):
    web = sign_in(stack, "admin", "admin-pass-123")
    page = web.get("/settings").text
    row = re.search(r">admin</th>(.*?)</tr>", page, re.S)
    assert row and "Yes (administrator)" in row.group(1) and "/power" not in row.group(1)


def test_without_a_session_pages_go_to_sign_in_and_the_api_is_401(stack):
    anonymous = httpx.Client(base_url=stack.url, timeout=30)
    r = anonymous.get("/prefect/deployments?x=1")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/prefect/deployments%3Fx%3D1"
    r = anonymous.get("/prefect/api/health")
    assert r.status_code == 401 and r.json()["detail"] == "Sign in first."
    assert anonymous.get("/prefect/ui-settings").status_code == 401
    # Prefect's own credentials are no key to the proxy: only ScriptFlow's session is.
    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    assert anonymous.get("/prefect/api/health", auth=tuple(auth.split(":", 1))).status_code == 401


def test_it_refuses_writes_from_other_sites(stack):
    web = sign_in(stack, "admin", "admin-pass-123")
    r = _filter_deployments(web, "http://evil.example")
    assert r.status_code == 403 and "ScriptFlow's own pages" in r.json()["detail"]
    assert _filter_deployments(web, None).status_code == 403  # neither Origin nor Referer
    assert _filter_deployments(web, "null").status_code == 403  # a sandboxed frame
    referer = web.post(
        "/prefect/api/deployments/filter", json={}, headers={"Referer": stack.url + "/prefect/"}
    )
    assert referer.status_code == 200
    # A preflight from another site gets no CORS answer through the proxy either.
    r = web.options(
        "/prefect/api/health",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    # The session cookie itself stays on this site (SameSite=Lax): another site's form POST
    # does not carry it at all.
    login = httpx.Client(base_url=stack.url, timeout=30)
    page = login.get("/login")
    assert "samesite=lax" in page.headers["set-cookie"].lower()


def _raw(stack, method: str, path: str, cookie: str) -> int:
    """A request line sent as it is (httpx would resolve dot segments itself)."""
    address = urlsplit(stack.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Cookie", cookie)
        conn.putheader("Accept", "application/json")
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_bad_paths_are_4xx_never_500(stack):
    web = sign_in(stack, "admin", "admin-pass-123")
    cookie = _cookie(web)
    for path in (
        "/prefect/../api/admin/settings",
        "/prefect/%2e%2e/api/health",
        "/prefect/api/../../api/health",
        "/prefect/%00",
        "/prefect/api/flow_runs/not-a-uuid",
        "/prefect/api/flow_runs/" + "9" * 5000,
        "/prefect/api/deployments/00000000-0000-0000-0000-000000000000",
        "/prefect/api/no-such-endpoint",
    ):
        status = _raw(stack, "GET", path, cookie)
        assert 400 <= status < 500, (path, status)
    assert _raw(stack, "GET", "/prefect/%2e%2e/api/health", cookie) == 404
    assert web.post("/prefect/ui-settings", headers={"Origin": stack.url}).status_code == 405
    r = web.post(
        "/prefect/api/flow_runs/filter",
        content=b"{not json",
        headers={"Origin": stack.url, "Content-Type": "application/json"},
    )
    assert r.status_code == 422


async def _events(stack, cookie: str, origin: str, start) -> list[dict]:
    url = stack.url.replace("http", "ws", 1) + "/prefect/api/events/out"
    headers = {"Cookie": cookie, "Origin": origin}
    run_id: list[str] = []

    async def started() -> None:
        run_id.append(await asyncio.to_thread(start))

    async with connect(url, subprotocols=["prefect"], additional_headers=headers) as ws:
        # The browser has no token to send: the proxy puts the real one in.
        await ws.send(json.dumps({"type": "auth", "token": "anything"}))
        got = [json.loads(await asyncio.wait_for(ws.recv(), 30))]
        # Live, not only the backfill: Prefect's filters end "now" unless told otherwise.
        until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        event_filter = {"event": {"prefix": ["prefect.flow-run."]}, "occurred": {"until": until}}
        await ws.send(json.dumps({"type": "filter", "filter": event_filter}))
        await started()
        while True:  # the backfill (older runs' events) first, then this run's
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            if run_id and run_id[0] in json.dumps(got[-1]):
                return got


async def _refused(stack, headers: dict) -> int:
    url = stack.url.replace("http", "ws", 1) + "/prefect/api/events/out"
    try:
        async with connect(url, subprotocols=["prefect"], additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_prefects_event_websocket_works_through_the_proxy(stack, alice):
    script = upload(alice, "print('event')\n")
    web = sign_in(stack, "admin", "admin-pass-123")

    def start() -> str:  # once subscribed: its events come live
        return alice.post(f"/scripts/{script['id']}/runs").json()["id"]

    got = run_async(_events(stack, _cookie(web), stack.url, start))
    assert got[0] == {"type": "auth_success"}
    assert got[-1]["type"] == "event" and got[-1]["event"]["event"].startswith("prefect.flow-run")

    bob = sign_in(stack, "bob", "bob-pass-123")
    assert run_async(_refused(stack, {"Cookie": _cookie(bob), "Origin": stack.url})) == 403
    assert run_async(_refused(stack, {"Origin": stack.url})) == 403
    assert (
        run_async(_refused(stack, {"Cookie": _cookie(web), "Origin": "http://evil.example"})) == 403
    )


async def _closed_after_sign_out(stack, web: httpx.Client) -> int | None:
    """Open Prefect's event stream as `web`'s user, sign them out, wait for the proxy to end
    the stream; its close code."""
    url = stack.url.replace("http", "ws", 1) + "/prefect/api/events/out"
    headers = {"Cookie": _cookie(web), "Origin": stack.url}
    async with connect(url, subprotocols=["prefect"], additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "auth", "token": None}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "auth_success"}
        await asyncio.to_thread(
            web.post, "/logout", data={"csrf_token": await asyncio.to_thread(csrf_of, web)}
        )
        try:
            while True:  # events may still come until the proxy's next check (15 s)
                await asyncio.wait_for(ws.recv(), 40)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


def test_an_open_event_stream_ends_when_its_user_signs_out(stack):
    name, password = _user(stack, "--power-user")
    web = sign_in(stack, name, password)
    assert run_async(_closed_after_sign_out(stack, web)) == 1008


def test_a_get_with_a_body_is_a_4xx_not_a_500(stack):
    web = sign_in(stack, "admin", "admin-pass-123")
    r = web.request("GET", "/prefect/api/health", content=b"0123456789")
    assert r.status_code < 500, r.text


def test_prefects_redirects_stay_under_prefect():
    from scriptflow_prefect.ui_overlay.prefect_access import Upstream

    up = Upstream(
        api_url="http://127.0.0.1:4200/api", root_url="http://127.0.0.1:4200", auth_string=None
    )
    assert up.browser_location("http://127.0.0.1:4200/api/flows/") == "/prefect/api/flows/"
    assert up.browser_location("/api/flows/?a=1") == "/prefect/api/flows/?a=1"
    assert up.browser_location("http://127.0.0.1:4200/prefect/runs") == "/prefect/runs"
    assert up.browser_location("http://127.0.0.1:42001/x") == "http://127.0.0.1:42001/x"
    assert up.browser_location("http://127.0.0.1:4200/docs") == "/prefect/"


def test_the_shared_pool_keeps_no_cookie_prefect_sets():
    """A cookie Prefect sets in one user's answer must not ride along with the next user's
    request: the pool is shared. A loopback server that sets one and echoes what it got."""
    import http.server
    from types import SimpleNamespace

    from scriptflow_prefect.ui_overlay.prefect_proxy import client

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = (self.headers.get("Cookie") or "").encode()
            self.send_response(200)
            self.send_header("Set-Cookie", "prefect_x=1; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    async def twice() -> str:
        pool = client(SimpleNamespace(state=SimpleNamespace()))
        try:
            await pool.get(url)
            return (await pool.get(url)).text
        finally:
            await pool.aclose()

    try:
        assert run_async(twice()) == ""
    finally:
        server.shutdown()
        server.server_close()


# -- Prefect away: the overlay alone, its Prefect address answering nothing ------------------


@pytest.fixture
def no_prefect(tmp_path):
    settings = load_settings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
    settings.ensure_dirs()
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    with db.session() as s:
        accounts.create_user(s, "admin", "admin-pass-123", is_admin=True)
    with served_overlay(settings, db) as url:
        yield type("Overlay", (), {"url": url})


def test_a_prefect_that_is_away_is_a_503_with_a_reason(no_prefect):
    web = sign_in(no_prefect, "admin", "admin-pass-123")
    page = web.get("/prefect/")
    assert page.status_code == 503 and page.headers["retry-after"]
    assert "Prefect&#39;s server is not reachable" in page.text
    assert web.get("/prefect/", headers={"Accept-Language": "pt-BR"}).status_code == 503
    assert "não responde" in web.get("/prefect/", headers={"Accept-Language": "pt-BR"}).text
    api = web.get("/prefect/api/health")
    assert api.status_code == 503 and "not reachable" in api.json()["detail"]
    assert web.get("/prefect/ui-settings").status_code == 503


# -- power users in the database: the upgrade, the rule ----------------------------------------


def test_users_from_before_the_upgrade_are_not_power_users(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006_notification_outbox")
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, is_admin, is_active, session_epoch,"
                " created_at) VALUES ('old', 'x', 0, 1, 0, '2026-01-01'),"
                " ('boss', 'x', 1, 1, 0, '2026-01-01')"
            )
        )
    db.migrate()
    with db.session() as s:
        old, boss = accounts.find_user(s, "old"), accounts.find_user(s, "boss")
        assert (old.is_power_user, old.uses_prefect) == (False, False)
        assert (boss.is_power_user, boss.uses_prefect) == (False, True)  # admins always are
        new = accounts.create_user(s, "newer", "power-pass-123", is_power_user=True)
        assert new.uses_prefect
