"""API.md "HTTP" and "Auth": tokens for a user name and password, the login throttle, bearer-only
/api/v1, the OpenAPI document and /health. Against the session's real stack."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest
from conftest import unique


@pytest.fixture
def anon(stack) -> httpx.Client:
    with stack.client(None) as c:
        yield c


def make_user(stack, name: str, password: str) -> None:
    r = stack.cli("user", "add", name, "--password-stdin", input=password + "\n")
    assert r.returncode == 0, r.stderr


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"].strip()
    return body["detail"]


def test_it_trades_a_user_name_and_password_for_a_token(stack, anon):
    r = anon.post("/auth/token", json={"username": "alice", "password": "alice-pass-123"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"token", "expires_at"}
    assert isinstance(body["token"], str) and len(body["token"]) >= 20
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires.tzinfo is not None and expires > datetime.now(UTC)
    # The token is good for the API.
    me = anon.get("/scripts", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200, me.text


def test_it_answers_401_for_a_wrong_password(anon):
    r = anon.post("/auth/token", json={"username": "alice", "password": "not-her-password"})
    assert_error(r, 401)


def test_it_answers_401_for_an_unknown_user(anon):
    r = anon.post("/auth/token", json={"username": unique("nobody"), "password": "whatever-123"})
    assert_error(r, 401)


def test_it_answers_422_with_a_reason_for_a_body_without_credentials(anon):
    detail = assert_error(anon.post("/auth/token", json={}), 422)
    assert "username" in detail and "password" in detail
    assert_error(anon.post("/auth/token", content=b"not json"), 422)


def test_it_throttles_repeated_failures_for_one_user_but_not_for_others(stack, anon):
    victim = unique("carol")
    make_user(stack, victim, "carol-pass-123")
    for _ in range(5):
        r = anon.post("/auth/token", json={"username": victim, "password": "wrong-guess-1"})
        assert_error(r, 401)
    # Now even the right password is refused for a while ...
    r = anon.post("/auth/token", json={"username": victim, "password": "carol-pass-123"})
    detail = assert_error(r, 429)
    assert "again" in detail.lower()
    assert int(r.headers["retry-after"]) > 0
    # ... while another user, from the same address, still gets in.
    r = anon.post("/auth/token", json={"username": "alice", "password": "alice-pass-123"})
    assert r.status_code == 200, r.text


def test_it_answers_401_without_a_token(anon):
    r = anon.get("/scripts")
    assert_error(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sf_not-a-real-token",
        "Bearer",
        "Basic YWxpY2U6YWxpY2UtcGFzcy0xMjM=",
        "sf_no-scheme",
    ],
)
def test_it_answers_401_for_a_bad_token(anon, header):
    assert_error(anon.get("/scripts", headers={"Authorization": header}), 401)


def test_it_does_not_honour_a_session_cookie_on_the_api(stack):
    with httpx.Client(base_url=stack.url, timeout=30) as browser:
        page = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = browser.post(
            "/login",
            data={
                "username": "alice",
                "password": "alice-pass-123",
                "csrf_token": csrf,
                "next": "/",
            },
        )
        assert r.status_code == 303, r.text
        assert "scriptflow_session" in browser.cookies
        assert browser.get("/").status_code == 200  # signed in for the pages
        assert_error(browser.get("/api/v1/scripts"), 401)
        assert_error(browser.post("/api/v1/scripts", files={"file": ("x.py", b"print(1)\n")}), 401)


def test_it_serves_the_openapi_document_at_api_v1_openapi_json(anon):
    r = anon.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/auth/token",
        "/scripts",
        "/scripts/{script_id}",
        "/scripts/{script_id}/content",
        "/scripts/{script_id}/versions",
        "/scripts/{script_id}/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/output",
        "/runs/{run_id}/output.txt",
    ):
        assert path in doc["paths"], path


def test_it_reports_health_without_auth(stack):
    r = httpx.get(stack.url + "/health", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    # "warnings": what is not wrong enough to fail (here: the test home under /tmp, which
    # the sandbox's allow-list cannot protect as well as /var/lib/scriptflow).
    assert {"status", "components"} <= set(body) <= {"status", "components", "warnings"}, body
    assert all(isinstance(w, str) and w for w in body.get("warnings", [])), body
    assert body["status"] == "ok"
    assert isinstance(body["components"], dict) and body["components"]
    for name, component in body["components"].items():
        assert isinstance(component, dict), name
        assert component["ok"] is True, (name, component)


def test_it_answers_404_as_json_for_an_unknown_api_path(admin):
    assert_error(admin.get("/no-such-thing"), 404)
