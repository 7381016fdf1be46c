"""The security review's web findings, against the session's real stack: sessions end on the
server, ids of any size or shape are 404 on every route, no-store and no server header,
control characters in output.txt, the embedded Prefect API's CORS, the retention figures a
non-admin sees, and the 409 for a taken script name."""

from __future__ import annotations

import re
import string

import httpx
import pytest
from conftest import ADMIN_PASSWORD, unique, upload, wait_run, wait_until
from scriptflow_prefect.ui_overlay.app import create_app
from starlette.routing import Mount

from scriptflow_prefect.platform.settings import load_settings

BAD_IDS = ["99999999999999999999999", "9223372036854775808", "2147483648", "-1", "0", "abc", "1e3"]


def make_user(stack, name: str, password: str, email: str | None = None) -> None:
    args = ["user", "add", name, "--password-stdin"] + (["--email", email] if email else [])
    r = stack.cli(*args, input=password + "\n")
    assert r.returncode == 0, r.stderr


def sign_in(stack, user: str, password: str) -> httpx.Client:
    web = httpx.Client(base_url=stack.url, timeout=30)
    page = web.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = web.post("/login", data={"username": user, "password": password, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    return web


def csrf_of(web: httpx.Client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', web.get("/settings").text).group(1)


def signed_in(web: httpx.Client) -> bool:
    r = web.get("/settings")
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


# -- sessions -------------------------------------------------------------------------------------


def test_a_session_cookie_replayed_after_logout_signs_nobody_in(stack):
    web = sign_in(stack, "alice", "alice-pass-123")
    other = sign_in(stack, "alice", "alice-pass-123")  # her other browser
    stolen = dict(web.cookies)
    r = web.post("/logout", data={"csrf_token": csrf_of(web)})
    assert r.status_code == 303
    with httpx.Client(base_url=stack.url, cookies=stolen, timeout=30) as replay:
        r = replay.get("/settings")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = replay.get("/runs/status.json", headers={"accept": "application/json"})
        assert r.status_code == 401
    assert signed_in(other)  # signing out here ends this session only


def test_a_new_password_ends_other_sessions_and_revokes_api_tokens(stack):
    name = unique("erin")
    make_user(stack, name, "erin-pass-old")
    here, there = sign_in(stack, name, "erin-pass-old"), sign_in(stack, name, "erin-pass-old")
    old_cookie = dict(here.cookies)
    token = stack.cli("token", "create", name).stdout.strip()
    api = {"Authorization": f"Bearer {token}"}
    assert httpx.get(stack.url + "/api/v1/scripts", headers=api).status_code == 200
    r = here.post(
        "/settings/password",
        data={"current": "erin-pass-old", "new": "erin-pass-new", "csrf_token": csrf_of(here)},
    )
    assert r.status_code == 303, r.text
    assert signed_in(here)  # the browser that changed it stays signed in (a new session)
    assert not signed_in(there)
    with httpx.Client(base_url=stack.url, cookies=old_cookie, timeout=30) as replay:
        assert not signed_in(replay)
    assert httpx.get(stack.url + "/api/v1/scripts", headers=api).status_code == 401
    # `scriptflow user passwd` does the same.
    token = stack.cli("token", "create", name).stdout.strip()
    r = stack.cli("user", "passwd", name, "--password-stdin", input="erin-pass-newer\n")
    assert r.returncode == 0, r.stderr
    assert not signed_in(here)
    api = {"Authorization": f"Bearer {token}"}
    assert httpx.get(stack.url + "/api/v1/scripts", headers=api).status_code == 401


# -- ids of any size and shape --------------------------------------------------------------------


def _routes():
    """Every route of the overlay with a parameter in its path: (pages or api, method, path),
    read from the app's own route tables (through the OpenAPI documents FastAPI builds)."""
    # Only read for its routes: a secret key given, so that nothing is written to the home.
    app = create_app(load_settings(home="/nonexistent-scriptflow-home", secret_key="x" * 32))
    api = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == "/api/v1")
    return [
        (where, method.upper(), path)
        for where, doc in (("pages", app.openapi()), ("api", api.openapi()))
        for path, operations in doc["paths"].items()
        if "{" in path
        for method in sorted(operations)
    ]


ROUTES = _routes()


def test_the_route_walk_finds_the_routes_with_ids():
    paths = {path for _w, _m, path in ROUTES}
    assert {"/scripts/{script_id}", "/runs/{run_id}", "/settings/users/{user_id}/active"} <= paths
    assert len(ROUTES) > 40


@pytest.mark.parametrize(("where", "method", "path"), ROUTES)
def test_an_id_of_any_size_or_shape_is_404_never_500(stack, where, method, path):
    names = [n for _l, n, _f, _c in string.Formatter().parse(path) if n]
    if where == "api":
        client = httpx.Client(
            base_url=stack.url + "/api/v1",
            headers={"Authorization": f"Bearer {stack.tokens['admin']}"},
            timeout=30,
        )
    else:
        client = sign_in(stack, "admin", ADMIN_PASSWORD)
        client.headers["x-csrf-token"] = csrf_of(client)
    try:
        for bad in BAD_IDS:
            url = path.format(**dict.fromkeys(names, bad))
            body = {} if method in ("POST", "PUT", "PATCH") else None
            # `q`: a route that needs it (output search) checks the id, not a missing query.
            r = client.request(method, url, json=body, params={"q": "x"})
            assert r.status_code == 404, (method, url, r.status_code, r.text[:300])
            if where == "api":
                answer = r.json()
                assert set(answer) == {"detail"} and answer["detail"].strip(), answer
    finally:
        client.close()


# -- headers --------------------------------------------------------------------------------------


def test_signed_in_pages_and_api_answers_are_not_stored_and_name_no_server(stack, admin):
    web = sign_in(stack, "alice", "alice-pass-123")
    answers = [
        web.get("/"),
        web.get("/settings"),
        web.get("/login"),
        admin.get("/scripts"),
        admin.get("/scripts/99999999"),
        httpx.get(stack.url + "/health", timeout=30),
    ]
    for r in answers:
        assert r.headers.get("cache-control") == "no-store", (r.url, r.headers)
        assert "server" not in r.headers, (r.url, r.headers)
    static = web.get("/static/app.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
    assert "server" not in static.headers


def test_the_embedded_prefect_api_does_not_answer_cors_to_any_origin(stack):
    preflight = {"Access-Control-Request-Method": "GET"}
    r = httpx.options(
        stack.prefect_url + "/api/health",
        headers={"Origin": "http://evil.example", **preflight},
        timeout=30,
    )
    assert r.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
    r = httpx.get(
        stack.prefect_url + "/api/health", headers={"Origin": "http://evil.example"}, timeout=30
    )
    assert r.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
    r = httpx.options(
        stack.prefect_url + "/api/health", headers={"Origin": stack.url, **preflight}, timeout=30
    )
    assert r.headers.get("access-control-allow-origin") == stack.url


# -- output.txt -----------------------------------------------------------------------------------

NASTY = r"""import sys
print("\x1b]0;owned\x07title \x1b[31mred\x1b[0m bell\x07 \u202eevil\u2069 c1\x9b.")
print("shown\rhidden by a carriage return")
print("\x1b[2J", file=sys.stderr)
"""


def test_output_txt_shows_control_characters_as_escapes(stack, alice):
    script = upload(alice, NASTY)
    run = alice.post(f"/scripts/{script['id']}/runs").json()
    assert wait_run(alice, run["id"])["status"] == "succeeded"
    web = sign_in(stack, "alice", "alice-pass-123")
    for text in (
        alice.get(f"/runs/{run['id']}/output.txt").text,
        web.get(f"/runs/{run['id']}/output.txt").text,
    ):
        assert "\\x1b]0;owned\\x07title \\x1b[31mred\\x1b[0m bell\\x07 " in text
        assert "\\u202eevil\\u2069 c1\\x9b." in text and "stderr \\x1b[2J" in text
        # A carriage return is kept as a terminal shows it (the line's final state): the
        # text after it is what is stored, nothing is hidden behind it.
        assert "stdout hidden by a carriage return" in text and "shown" not in text
        bad = [c for c in text if (ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F]
        assert not bad and "\u202e" not in text and "\u2069" not in text


# -- what a user who is not an administrator sees --------------------------------------------


def test_the_retention_figures_of_a_non_admin_are_their_own(stack, admin):
    name = unique("dora")
    make_user(stack, name, "dora-pass-123")
    token = stack.cli("token", "create", name).stdout.strip()
    with httpx.Client(
        base_url=stack.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as dora:
        script = upload(dora, "print('one line of dora')\n")
        run = dora.post(f"/scripts/{script['id']}/runs").json()
        assert wait_run(dora, run["id"])["status"] == "succeeded"
    web = sign_in(stack, name, "dora-pass-123")

    def indexed() -> str | None:
        text = web.get("/settings/retention.html").text
        return text if "1 run," in text else None

    fragment = wait_until(indexed, 60, "dora's indexed run on the retention page")
    assert "Run history of your scripts" in fragment
    for server_wide in ("Search index", "Prefect database", "Last clean-up", "Working folders"):
        assert server_wide not in fragment
    assert 'name="days"' not in fragment  # only an admin changes the period
    everyone = sign_in(stack, "admin", ADMIN_PASSWORD).get("/settings/retention.html").text
    assert "Search index" in everyone and "Disk used by run history on this server" in everyone


def test_a_taken_name_is_refused_alike_whoever_has_it(alice, bob):
    mine = upload(alice, "print(1)\n")
    theirs = upload(bob, "print(2)\n")

    def refusal(name: str) -> str:
        r = alice.post("/scripts", files={"file": ("x.py", b"print(3)\n")}, data={"name": name})
        assert r.status_code == 409, r.text
        return r.json()["detail"].replace(name, "<name>")

    own, other = refusal(mine["name"]), refusal(theirs["name"])
    assert own == other
    assert "bob" not in other and str(theirs["id"]) not in other
    # A rename answers the same.
    r = alice.patch(f"/scripts/{mine['id']}", json={"name": theirs["name"]})
    assert r.status_code == 409 and r.json()["detail"].replace(theirs["name"], "<name>") == own
