"""The security review's web findings as rules, without a stack: the login throttle's memory and
the client address behind proxies, control characters in text that leaves ScriptFlow, the
embedded Prefect server's CORS origins, SCRIPTFLOW_TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
import re
import tracemalloc
from datetime import UTC, datetime

import httpx
import pytest
from conftest import served_overlay
from scriptflow_prefect.ui_overlay.addresses import real_client

from scriptflow_prefect.accounts import service as accounts
from scriptflow_prefect.accounts.service import LoginThrottle
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.platform.control_chars import neutralise
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.prefect_env import server_env
from scriptflow_prefect.platform.settings import SettingsError, load_settings

NASTY = "a\x1b]0;owned\x07b\x1b[2Jc\rd\x9be\u202ef\u2066g\x00h\x7fi"


def _memory_after(failures: int) -> int:
    throttle = LoginThrottle(per_user=5, per_address=30, max_keys=2000)
    tracemalloc.start()
    try:
        for n in range(failures):
            # A million user names would take a minute here; the cap is what is tested.
            throttle.failed(f"user-{n}", f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current


def test_it_keeps_the_login_throttle_bounded_whatever_the_number_of_user_names():
    small, large = _memory_after(10_000), _memory_after(100_000)
    assert large < small * 1.3, (small, large)


def test_it_still_locks_a_guessed_user_from_the_guessing_address_only():
    throttle = LoginThrottle(per_user=3, per_address=100, window=60, max_keys=100)
    for _ in range(3):
        throttle.failed("Alice", "10.0.0.1")
    for n in range(50):  # other names from elsewhere do not push the lock out
        throttle.failed(f"other-{n}", f"10.0.1.{n}")
    assert throttle.retry_after("alice", "10.0.0.1") > 0
    assert throttle.retry_after("alice", "10.0.0.2") == 0
    assert throttle.retry_after("bob", "10.0.0.1") == 0


def test_it_answers_retry_after_without_remembering_anyone():
    throttle = LoginThrottle(max_keys=10)
    for n in range(1000):
        assert throttle.retry_after(f"probe-{n}", f"10.0.0.{n % 250}") == 0
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(10_000):
            throttle.retry_after(f"probe-{n}", "10.0.0.9")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 10_000, after - before


PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "networks", "client"),
    [
        # No trusted proxies: the header is anybody's to write.
        ("203.0.113.9", ["198.51.100.1"], [], "203.0.113.9"),
        # A peer that is not a trusted proxy: its header is not believed.
        ("203.0.113.9", ["198.51.100.1"], PROXIES, "203.0.113.9"),
        # Through our proxy: the hop it appended.
        ("127.0.0.1", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        # The client wrote addresses of its own to the left: the rightmost untrusted wins.
        ("127.0.0.1", ["1.1.1.1, 2.2.2.2, 198.51.100.1"], PROXIES, "198.51.100.1"),
        # Two proxies of ours in a row, header split over two lines.
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3", "10.9.9.9"], PROXIES, "198.51.100.1"),
        # Only our proxies: the first of them is as far as we can see.
        ("127.0.0.1", ["10.1.2.3"], PROXIES, "10.1.2.3"),
        ("127.0.0.1", [], PROXIES, "127.0.0.1"),
        # Garbage where an address should be: the hop that wrote it.
        ("127.0.0.1", ["198.51.100.1, not-an-address"], PROXIES, "127.0.0.1"),
        # Ports and IPv6 forms some proxies write.
        ("127.0.0.1", ["198.51.100.1:5555"], PROXIES, "198.51.100.1"),
        ("127.0.0.1", ["[2001:db8::1]:443"], PROXIES, "2001:db8::1"),
    ],
)
def test_it_counts_the_client_behind_trusted_proxies_only(peer, forwarded, networks, client):
    assert real_client(peer, forwarded, networks) == client


def test_it_reads_trusted_proxies_and_names_a_bad_one(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("SCRIPTFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SCRIPTFLOW_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1")
    nets = load_settings().trusted_proxy_networks
    assert ipaddress.ip_address("10.2.3.4") in nets[0] and len(nets) == 3
    monkeypatch.setenv("SCRIPTFLOW_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example")
    with pytest.raises(SettingsError, match="SCRIPTFLOW_TRUSTED_PROXIES"):
        load_settings()


def test_it_writes_control_characters_as_escapes_and_keeps_the_rest():
    text = neutralise(NASTY + "\tçã ✓\nnext")
    assert text == (
        "a\\x1b]0;owned\\x07b\\x1b[2Jc\\x0dd\\x9be\\u202ef\\u2066g\\x00h\\x7fi\tçã ✓\nnext"
    )
    assert not any(ord(c) < 32 and c not in "\t\n" for c in text)


def test_a_plain_text_email_carries_no_control_characters():
    context = {
        "script_id": 3,
        "script_name": "back\u202eup",
        "failed": True,
        "more_lines": False,
        "run": {
            "status": "failed",
            "trigger": "scheduled",
            "exit_code": 3,
            "started_at": datetime(2026, 3, 5, 14, 7, tzinfo=UTC),
            "duration_seconds": 1.5,
            "message": "Exit code 3",
        },
        "lines": [{"stream": "stdout", "text": NASTY}],
        "line_count": 1,
        "run_url": "https://sf.example.test/runs/1",
        "script_url": "",
        "held_back": 0,
        "settings_url": "https://sf.example.test/scripts/3#notifications",
        "quiet_minutes": 15,
    }
    rendered = mailer.render("run", context, language="en", zone="UTC")
    for part in (rendered.subject, rendered.text, rendered.html):
        assert not any((ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in part), (
            part
        )
        assert "\u202e" not in part and "\u2066" not in part
    assert "a\\x1b]0;owned\\x07b" in rendered.text and "back\\u202eup" in rendered.subject


def test_the_embedded_prefect_server_answers_cors_to_scriptflows_origins_only(tmp_path):
    settings = load_settings(home=tmp_path, port=8123, prefect_port=4321)
    origins = server_env(settings)["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"].split(",")
    assert "*" not in origins
    assert "http://127.0.0.1:8123" in origins  # the overlay
    assert "http://127.0.0.1:4321" in origins and "http://localhost:4321" in origins  # its UI
    public = load_settings(home=tmp_path, public_url="https://sf.example.test/base/")
    assert (
        "https://sf.example.test" in server_env(public)["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"]
    )


# -- the login throttle through the real overlay app, served by uvicorn (no Prefect needed) ----


@pytest.fixture
def overlay(tmp_path):
    """The overlay app on a fresh home, served on loopback, behind a 'proxy' at 127.0.0.1."""
    settings = load_settings(home=tmp_path, trusted_proxies="127.0.0.1")
    settings.ensure_dirs()
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    with db.session() as s:
        accounts.create_user(s, "alice", "alice-pass-123")
    with served_overlay(settings, db) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def token(client, password: str, forwarded: str) -> httpx.Response:
    return client.post(
        "/api/v1/auth/token",
        json={"username": "alice", "password": password},
        headers={"X-Forwarded-For": forwarded},
    )


def test_an_attackers_failures_behind_the_proxy_do_not_lock_the_user_out(overlay):
    for _ in range(5):
        assert token(overlay, "wrong-guess-1", "198.51.100.1").status_code == 401
    assert token(overlay, "alice-pass-123", "198.51.100.1").status_code == 429
    # Writing the victim's address to the left changes nothing: our proxy appends the real one.
    assert token(overlay, "alice-pass-123", "203.0.113.7, 198.51.100.1").status_code == 429
    # Alice, from her own address through the same proxy, gets in.
    assert token(overlay, "alice-pass-123", "203.0.113.7").status_code == 200


def test_it_refuses_an_overlong_user_name_with_a_reason(overlay):
    r = overlay.post("/api/v1/auth/token", json={"username": "a" * 65, "password": "x" * 8})
    assert r.status_code == 422 and "username" in r.json()["detail"]
    page = overlay.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = overlay.post(
        "/login", data={"username": "a" * 5000, "password": "x" * 8, "csrf_token": csrf}
    )
    assert r.status_code == 422 and "at most 64 characters" in r.text
