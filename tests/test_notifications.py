"""Email notifications end to end: a real stack seeded with SCRIPTFLOW_SMTP_* pointing at a
real SMTP server on loopback (aiosmtpd), Prefect automations calling the ScriptFlow email
block inside Prefect's server, the digest flow in ScriptFlow's worker, and a browser.

This module starts its own stack (the `stack` fixture is overridden here) because the
email settings are global: the other modules' stack never sends email."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import free_port, start_stack, stop_stack, unique, upload, wait_run, wait_until

pytest_plugins = ["browser.fixtures"]

FAILING = """\
import sys
print("starting the export")
print("disk full: cannot write /backup/db.dump", file=sys.stderr)
sys.exit(3)
"""
FINE = "print('all good')\n"
SLEEPY = "import time\nprint('waiting', flush=True)\ntime.sleep(30)\n"


# -- a real SMTP server on loopback ----------------------------------------------------------
class Mailbox:
    """What an aiosmtpd server received; it can go down and come back on the same port."""

    def __init__(self, authenticator=None):
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()
        self.authenticator = authenticator
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"

    def start(self) -> None:
        kwargs = (
            {"authenticator": self.authenticator, "auth_require_tls": False}
            if self.authenticator
            else {}
        )
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(
        self, text: str, timeout: float = 60, to: str | None = None
    ) -> email.message.EmailMessage:
        """The first message whose subject contains `text` (sent to `to`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.about(text, to)
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(
            f"no email about {text!r} within {timeout} s; "
            f"got {[m['Subject'] for m in self.messages]}"
        )

    def about(self, text: str, to: str | None = None) -> list[email.message.EmailMessage]:
        with self.lock:
            return [
                m
                for m in self.messages
                if text in str(m["Subject"]) and (to is None or m["To"] == to)
            ]


def body(msg, kind: str = "plain") -> str:
    part = msg.get_body(preferencelist=(kind,))
    return part.get_content() if part is not None else ""


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mailbox):
    """A stack of our own, seeded from SCRIPTFLOW_SMTP_* (overrides conftest's `stack`)."""
    s = start_stack(
        tmp_path_factory.mktemp("notify-home"),
        {
            "SCRIPTFLOW_SMTP_HOST": "127.0.0.1",
            "SCRIPTFLOW_SMTP_PORT": str(mailbox.port),
            "SCRIPTFLOW_SMTP_SECURITY": "none",
            "SCRIPTFLOW_SMTP_FROM": "scriptflow@example.test",
            "SCRIPTFLOW_PUBLIC_URL": "https://scriptflow.example.test",
            # The outbox's back-off in seconds, as the old in-memory retries were.
            "SCRIPTFLOW_NOTIFICATION_RETRY": "2s,5s",
        },
    )
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


@pytest.fixture(scope="module")
def prefect(stack):
    """Prefect's own REST API, as a power user reaches it."""
    with stack.prefect() as c:
        yield c


def automations_of(prefect, script_id: int) -> list[dict]:
    r = prefect.post(
        "/automations/filter",
        json={"automations": {"tags": {"all_": ["scriptflow-email", f"script-{script_id}"]}}},
    )
    r.raise_for_status()
    return r.json()


def run(client, script_id: int) -> dict:
    r = client.post(f"/scripts/{script_id}/runs")
    assert r.status_code == 202, r.text
    return wait_run(client, r.json()["id"])


def history(client, until, timeout: float = 30, **params) -> list[dict]:
    """The settled outcomes in the notification history once `until(items)` holds (events
    are stored in batches); emails still waiting in the outbox are left out."""
    deadline = time.monotonic() + timeout
    while True:
        items = client.get("/notifications", params=params).json()["items"]
        items = [i for i in items if i["status"] != "pending"]
        if until(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.5)


def signed_in(stack, user: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=stack.url, timeout=30, follow_redirects=True)
    page = c.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = c.post(
        "/login", data={"username": user, "password": password, "csrf_token": csrf, "next": "/"}
    )
    assert r.status_code == 200, r.text
    return c


# -- settings ----------------------------------------------------------------------------------
def test_it_seeds_the_email_settings_from_the_environment(admin, alice):
    settings = admin.get("/settings/email").json()
    assert settings["host"] == "127.0.0.1" and settings["security"] == "none"
    assert settings["from_address"] == "scriptflow@example.test" and settings["configured"]
    assert "password" not in settings
    assert alice.get("/settings/email").status_code == 403


def test_it_refuses_bad_email_settings_with_reasons(admin):
    r = admin.put(
        "/settings/email",
        json={"host": "smtp example", "port": 70000, "security": "tls", "from_address": "nobody"},
    )
    assert r.status_code == 422
    for word in ("host", "port", "security", "from_address"):
        assert word in r.json()["detail"]
    assert admin.get("/settings/email").json()["host"] == "127.0.0.1"  # nothing changed


def test_it_sends_a_test_email(admin, mailbox):
    r = admin.post("/settings/email/test", json={"to": "ops@example.test"})
    assert r.status_code == 200, r.text
    msg = mailbox.wait_for("ScriptFlow test email", timeout=10)
    assert msg["To"] == "ops@example.test" and msg["From"] == "scriptflow@example.test"
    assert "https://scriptflow.example.test" in body(msg)


# -- emails about runs -------------------------------------------------------------------------
def test_it_emails_the_owner_when_a_script_fails(alice, mailbox, prefect):
    script = upload(alice, FAILING, name=unique("nightly-export"))
    name = script["name"]
    prefs = alice.get(f"/scripts/{script['id']}/notifications").json()
    assert prefs["on_failure"] is True and prefs["on_success"] is False  # the defaults
    assert prefs["recipients"] == ["alice@example.test"] and prefs["default_recipients"]

    finished = run(alice, script["id"])
    assert finished["status"] == "failed"
    ended = time.monotonic()
    msg = mailbox.wait_for(name, timeout=60)
    assert time.monotonic() - ended < 60
    assert msg["To"] == "alice@example.test"
    assert name in msg["Subject"] and "failed" in msg["Subject"]
    text = body(msg)
    assert "! disk full: cannot write /backup/db.dump" in text  # stderr marked
    assert "  starting the export" in text
    assert "Exit code: 3" in text and "Trigger: Manual" in text
    assert f"https://scriptflow.example.test/runs/{finished['id']}" in text
    assert "disk full" in body(msg, "html") and "⚠" in body(msg, "html")

    items = history(alice, lambda items: items, script_id=script["id"])
    assert [(i["status"], i["recipient"], i["run_id"]) for i in items] == [
        ("sent", "alice@example.test", finished["id"])
    ]


def test_a_secret_the_failing_script_printed_is_masked_in_the_email(alice, mailbox, prefect):
    secret = "Hunter2-mail-6610"
    source = (
        "import os, sys\n"
        "print('connecting with', os.environ['DB_PASS'])\n"
        "print('login refused for ' + os.environ['DB_PASS'], file=sys.stderr)\n"
        "sys.exit(2)\n"
    )
    script = upload(alice, source, name=unique("masked-mail"))
    r = alice.patch(f"/scripts/{script['id']}", json={"secrets": {"DB_PASS": secret}})
    assert r.status_code == 200, r.text
    assert run(alice, script["id"])["status"] == "failed"
    msg = mailbox.wait_for(script["name"], timeout=60)
    text, html = body(msg), body(msg, "html")
    assert "  connecting with ***" in text and "! login refused for ***" in text
    assert secret not in text and secret not in html and secret not in str(msg["Subject"])


def test_the_automation_of_a_script_is_visible_in_prefect(alice, prefect):
    script = upload(alice, FINE, name=unique("visible"))
    deadline = time.monotonic() + 15
    while not (found := automations_of(prefect, script["id"])) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert [a["name"] for a in found] == [f"ScriptFlow · {script['name']} · failure"]
    automation = found[0]
    assert set(automation["trigger"]["expect"]) == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.TimedOut",
        "prefect.flow-run.Crashed",
    }
    assert (
        automation["trigger"]["match_related"]["prefect.resource.id"]
        == f"prefect.tag.script-{script['id']}"
    )
    action = automation["actions"][0]
    block = prefect.get(f"/block_documents/{action['block_document_id']}").json()
    assert action["type"] == "send-notification" and block["name"] == "scriptflow-email"
    assert block["block_type"]["slug"] == "scriptflow-email"

    renamed = unique("renamed")
    assert alice.patch(f"/scripts/{script['id']}", json={"name": renamed}).status_code == 200
    deadline = time.monotonic() + 15
    while [a["name"] for a in automations_of(prefect, script["id"])] != [
        f"ScriptFlow · {renamed} · failure"
    ]:
        assert time.monotonic() < deadline, automations_of(prefect, script["id"])
        time.sleep(0.3)

    assert alice.delete(f"/scripts/{script['id']}").status_code == 204
    assert automations_of(prefect, script["id"]) == []


def test_it_sends_no_email_on_success_unless_asked(alice, mailbox, prefect):
    script = upload(alice, FINE, name=unique("quiet"))
    unasked = run(alice, script["id"])
    assert unasked["status"] == "succeeded"

    r = alice.put(
        f"/scripts/{script['id']}/notifications", json={"on_success": True, "on_failure": False}
    )
    assert r.status_code == 200, r.text
    assert [a["name"].rsplit(" · ", 1)[1] for a in automations_of(prefect, script["id"])] == [
        "success"
    ]
    asked = run(alice, script["id"])
    assert asked["status"] == "succeeded"
    msg = mailbox.wait_for(script["name"], timeout=60)
    assert "succeeded" in msg["Subject"] and "all good" in body(msg)
    # The asked-for email came after anything the first run could have caused: the history
    # holds that one email only, and the mailbox nothing about the first run.
    items = history(alice, lambda items: items, script_id=script["id"])
    assert [(i["status"], i["run_id"]) for i in items] == [("sent", asked["id"])]
    assert [m["Subject"] for m in mailbox.about(script["name"])] == [msg["Subject"]]
    assert f"/runs/{asked['id']}" in body(msg)


def test_it_emails_when_a_run_times_out(alice, mailbox, prefect):
    script = upload(alice, SLEEPY, name=unique("slowpoke"))
    assert alice.patch(f"/scripts/{script['id']}", json={"timeout_seconds": 1}).status_code == 200
    assert run(alice, script["id"])["status"] == "timed_out"
    msg = mailbox.wait_for(script["name"], timeout=60)
    assert "timed out" in msg["Subject"] and "waiting" in body(msg)
    # What Prefect emitted and rendered into the automation's template (flow_run is there).
    deadline = time.monotonic() + 20
    while not (
        events := prefect.post(
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["scriptflow.email.sent"]},
                    "resource": {"id": [f"scriptflow.script.{script['id']}"]},
                }
            },
        ).json()["events"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    payload = events[0]["payload"]
    assert payload["event"] == "prefect.flow-run.TimedOut" and payload["state"] == "TimedOut"


def test_it_refuses_bad_preferences_with_reasons(alice, bob):
    script = upload(alice, FINE, name=unique("prefs"))
    url = f"/scripts/{script['id']}/notifications"
    r = alice.put(
        url,
        json={
            "on_failure": "yes",
            "digest": "hourly",
            "recipients": ["ops@example.test", "not an address"],
        },
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "on_failure" in detail and "digest" in detail and "not an address" in detail
    assert alice.put(url, json={"colour": "red"}).status_code == 422
    assert bob.get(url).status_code == 404 and bob.put(url, json={}).status_code == 404
    r = alice.put(url, json={"recipients": ["ops@example.test", "OPS@example.test"]})
    assert r.status_code == 200, r.text
    assert r.json()["recipients"] == ["ops@example.test"] and not r.json()["default_recipients"]


# -- other channels: a webhook on loopback, Teams and Slack as far as loopback allows ----------
class Hook:
    """An HTTP server on loopback that keeps the JSON of every POST it gets."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "json": json.loads(data or b"null")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.received):
                if text in str(r["json"]):
                    return r
            time.sleep(0.2)
        raise AssertionError(f"no POST about {text!r} within {timeout} s; got {self.received}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def test_it_posts_to_a_webhook_when_a_script_fails(admin, alice, hook, prefect, mailbox):
    url = f"http://127.0.0.1:{hook.port}/incoming?token=s3cret"
    r = admin.put("/settings/channels/webhook", json={"url": url})
    assert r.status_code == 200, r.text
    assert r.json()["configured"] and r.json()["url_set"] and "s3cret" not in r.text
    assert "s3cret" not in admin.get("/settings/channels/webhook").text  # write-only
    try:
        r = admin.post("/settings/channels/webhook/test", json={})
        assert r.status_code == 200, r.text
        assert hook.wait_for("ScriptFlow test message", timeout=20)["path"] == (
            "/incoming?token=s3cret"
        )

        script = upload(alice, FAILING, name=unique("hooked"))
        prefs_url = f"/scripts/{script['id']}/notifications"
        assert alice.get(prefs_url).json()["channels"] == ["email"]  # the default
        r = alice.put(prefs_url, json={"channels": ["email", "webhook"]})
        assert r.status_code == 200, r.text
        assert r.json()["channels"] == ["email", "webhook"]
        [automation] = automations_of(prefect, script["id"])
        assert automation["name"] == f"ScriptFlow · {script['name']} · failure"
        assert len(automation["actions"]) == 2

        finished = run(alice, script["id"])
        assert finished["status"] == "failed"
        got = hook.wait_for(script["name"])["json"]
        assert script["name"] in got["subject"] and "Failed" in got["subject"]
        assert f"https://scriptflow.example.test/runs/{finished['id']}" in got["body"]
        mailbox.wait_for(script["name"])  # email too: both channels
    finally:
        assert admin.put("/settings/channels/webhook", json={"url": ""}).status_code == 200
    assert not admin.get("/settings/channels/webhook").json()["configured"]


def test_it_refuses_bad_channel_settings_with_reasons(admin, alice):
    r = admin.put("/settings/channels/teams", json={"url": "https://example.test/hook"})
    assert r.status_code == 422 and "url" in r.json()["detail"]
    r = admin.put("/settings/channels/slack", json={"url": "https://hooks.example.test/x"})
    assert r.status_code == 422 and "Slack" in r.json()["detail"]
    r = admin.put("/settings/channels/webhook", json={"url": "ftp://127.0.0.1/x"})
    assert r.status_code == 422 and "http" in r.json()["detail"]
    assert admin.put("/settings/channels/webhook", json={"colour": 1}).status_code == 422
    assert admin.put("/settings/channels/pigeon", json={"url": ""}).status_code == 404
    assert alice.put("/settings/channels/webhook", json={"url": ""}).status_code == 403
    assert alice.get("/settings/channels/teams").status_code == 403

    script = upload(alice, FINE, name=unique("channels"))
    url = f"/scripts/{script['id']}/notifications"
    r = alice.put(url, json={"channels": ["teams"]})  # a good body, a server without Teams
    assert r.status_code == 409 and "Microsoft Teams" in r.json()["detail"]
    for bad in (["pigeon"], [], "email", [1]):
        assert alice.put(url, json={"channels": bad}).status_code == 422, bad
    assert alice.put(url, json={"on_failure": True}).json()["channels"] == ["email"]


def test_it_saves_a_teams_channel_as_prefects_own_block(admin, prefect):
    # Apprise posts only to Microsoft's hosts: what runs here is the saved block, not a post.
    url = (
        "https://prod-01.westus.logic.azure.com:443/workflows/abc123/triggers/manual/paths/"
        "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cret"
    )
    r = admin.put("/settings/channels/teams", json={"url": url})
    assert r.status_code == 200, r.text
    assert r.json()["host"] == "prod-01.westus.logic.azure.com" and "s3cret" not in r.text
    try:
        block = prefect.get(
            "/block_types/slug/ms-teams-webhook/block_documents/name/scriptflow-teams"
        ).json()
        assert "s3cret" not in str(block["data"])  # a secret in Prefect too
    finally:
        assert admin.put("/settings/channels/teams", json={"url": None}).status_code == 200


# -- resilience and noise ----------------------------------------------------------------------
def test_it_retries_while_the_smtp_server_is_down(alice, mailbox, prefect):
    script = upload(alice, FAILING, name=unique("during-outage"))
    mailbox.stop()
    try:
        assert run(alice, script["id"])["status"] == "failed"
        # The first try is refused (the block sends ~2 s after the run ends); wait for the
        # retry event, or long enough, before the server comes back.
        deadline = time.monotonic() + 8
        while (
            time.monotonic() < deadline
            and not prefect.post(
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": ["scriptflow.email.retrying"]},
                        "resource": {"id": [f"scriptflow.script.{script['id']}"]},
                    }
                },
            ).json()["events"]
        ):
            time.sleep(0.5)
    finally:
        mailbox.start()
    mailbox.wait_for(script["name"], timeout=60)
    [item] = history(alice, lambda items: items, script_id=script["id"])
    assert item["status"] == "sent" and item["attempts"] >= 2
    assert any("refused" in e.lower() for e in item["errors"]), item


def test_it_holds_back_a_flapping_script(admin, alice, mailbox):
    assert (
        admin.put("/settings/notifications", json={"throttle_minutes": 0.1}).status_code == 200
    )  # 6 s
    try:
        script = upload(alice, FAILING, name=unique("flapping"))
        started = [alice.post(f"/scripts/{script['id']}/runs").json() for _ in range(2)]
        for r in started:  # two failures a moment apart: one email, one held back
            wait_run(alice, r["id"])
        first = mailbox.wait_for(script["name"])
        items = history(alice, lambda items: len(items) >= 2, script_id=script["id"])
        assert sorted(i["status"] for i in items) == ["held", "sent"]
        assert "held back" not in body(first)
        # The quiet period began before the first email was recorded as sent: it is over
        # 6 s after that record (the server's clock is this machine's).
        [sent] = [i for i in items if i["status"] == "sent"]
        quiet_until = datetime.fromisoformat(sent["at"]) + timedelta(minutes=0.1)
        wait_until(
            lambda: datetime.now(UTC) >= quiet_until, timeout=15, what="the quiet period ending"
        )
        run(alice, script["id"])
        deadline = time.monotonic() + 60
        while len(mailbox.about(script["name"])) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        second = mailbox.about(script["name"])[1]
        assert "1 more email about this script was held back" in body(second)
    finally:
        admin.put("/settings/notifications", json={"throttle_minutes": 15})


def test_a_refused_login_shows_in_history_and_on_the_dashboard(stack, admin, alice, mailbox):
    refusing = Mailbox(authenticator=lambda *args: AuthResult(success=False, handled=False))
    refusing.start()
    good = admin.get("/settings/email").json()
    try:
        r = admin.put(
            "/settings/email",
            json={
                "host": "127.0.0.1",
                "port": refusing.port,
                "security": "none",
                "username": "scriptflow",
                "password": "wrong-secret",
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["password_set"] is True and "wrong-secret" not in r.text
        r = admin.post("/settings/email/test", json={"to": "ops@example.test"})
        assert r.status_code == 502
        assert "535" in r.json()["detail"]  # the SMTP server's own words

        script = upload(alice, FAILING, name=unique("unlucky"))
        run(alice, script["id"])
        [item] = history(alice, lambda items: items, script_id=script["id"])
        assert item["status"] == "failed" and "535" in item["reason"]
        assert item["attempts"] == 1  # a refused login is not retried

        page = signed_in(stack, "alice", "alice-pass-123")
        try:
            deadline = time.monotonic() + 20
            while "could not be sent" not in (line := page.get("/notifications/alert").text):
                assert time.monotonic() < deadline, line
                time.sleep(0.5)
            assert script["name"] in line and "535" in line
            assert "could not be sent" in page.get("/").text  # the dashboard's line
            assert "535" in page.get(f"/notifications?script_id={script['id']}").text
        finally:
            page.close()
    finally:
        admin.put(
            "/settings/email",
            json={
                **{k: good[k] for k in ("host", "port", "security", "from_address")},
                "username": "",
                "password": "",
            },
        )
        refusing.stop()


def test_a_failed_automation_action_shows_in_history(admin, alice, prefect):
    script = upload(alice, FAILING, name=unique("orphaned"))
    deadline = time.monotonic() + 15
    while not (found := automations_of(prefect, script["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    good = admin.get("/settings/email").json()
    try:  # the block the automation names is gone: Prefect's action fails before any SMTP
        block_id = found[0]["actions"][0]["block_document_id"]
        r = prefect.delete(f"/block_documents/{block_id}")
        assert r.status_code == 204, (r.status_code, r.text, found)
        run(alice, script["id"])
        [item] = history(alice, lambda items: items, script_id=script["id"])
        assert item["status"] == "failed" and item["kind"] == "automation"
        assert item["reason"] and item["script_id"] == script["id"]
        everything = admin.get("/notifications", params={"per_page": 100}).json()["items"]
        assert item["id"] in [i["id"] for i in everything]  # an admin's unfiltered view too
    finally:  # saving the settings again saves the block and points the automations at it
        admin.put(
            "/settings/email",
            json={k: good[k] for k in ("host", "port", "security", "from_address")},
        )


# -- digests ----------------------------------------------------------------------------------
def test_it_sends_a_daily_digest(alice, mailbox, prefect):
    failing = upload(alice, FAILING, name=unique("digest-failing"))
    fine = upload(alice, FINE, name=unique("digest-fine"))
    for script in (failing, fine):
        r = alice.put(
            f"/scripts/{script['id']}/notifications", json={"digest": "daily", "on_failure": False}
        )
        assert r.status_code == 200, r.text
        run(alice, script["id"])
    run(alice, fine["id"])

    deployment = prefect.get("/deployments/name/send_digest/daily").json()
    assert deployment["schedules"][0]["schedule"]["cron"] == "0 8 * * *"
    recipients = deployment["parameters"]["recipients"]
    assert [r["email"] for r in recipients] == ["alice@example.test"]
    assert (
        prefect.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).status_code == 201
    )
    msg = mailbox.wait_for("ScriptFlow daily summary", timeout=60)
    assert msg["To"] == "alice@example.test"
    assert "3 runs, 1 failed" in msg["Subject"]
    text = body(msg)
    assert f"- {failing['name']}: 1 failure / 1 run" in text
    assert "Slowest scripts" in text and fine["name"] in text
    assert "What runs next" in text
    assert f"https://scriptflow.example.test/scripts/{failing['id']}" in text


# -- in the browser ----------------------------------------------------------------------------
@pytest.mark.browser
def test_an_admin_sets_up_email_and_switches_a_failure_email_on(page, alice, mailbox, prefect):
    from browser.fixtures import axe_check, login, screenshot

    script = upload(alice, FAILING, name=unique("browser-mail"))
    alice.put(f"/scripts/{script['id']}/notifications", json={"on_failure": False})
    login(page, "admin")
    page.goto("/settings")
    page.get_by_label("SMTP server (host name; empty: no email)").fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(mailbox.port))
    page.get_by_label("Security").select_option("none")
    page.get_by_label("From address").fill("alerts@example.test")
    page.get_by_role("button", name="Save email settings").click()
    page.get_by_role("status").filter(has_text="Email settings saved.").wait_for()
    axe_check(page)
    screenshot(page, "settings-email")

    page.get_by_label("Send it to").fill("browser@example.test")
    page.get_by_role("button", name="Send test email").click()
    page.get_by_role("status").filter(
        has_text="A test email was sent to browser@example.test."
    ).wait_for()
    test_mail = mailbox.wait_for("ScriptFlow test email", to="browser@example.test")
    assert test_mail["From"] == "alerts@example.test"

    page.goto(f"/scripts/{script['id']}")
    section = page.locator("#notifications")
    checkbox = section.get_by_label("Tell when a run fails, times out or crashes")
    assert not checkbox.is_checked()
    checkbox.check()
    section.get_by_role("button", name="Save notifications").click()
    page.get_by_role("status").filter(has_text="Notifications of").wait_for()
    assert (
        page.locator("#notifications")
        .get_by_label("Tell when a run fails, times out or crashes")
        .is_checked()
    )
    assert section.get_by_role("checkbox", name="Email", exact=True).is_checked()  # default
    axe_check(page)
    screenshot(page, "script-notifications")
    assert [a["name"] for a in automations_of(prefect, script["id"])] == [
        f"ScriptFlow · {script['name']} · failure"
    ]

    page.goto("/notifications")
    assert page.get_by_role("heading", level=1).inner_text() == "Notification history"
    axe_check(page)
    screenshot(page, "notification-history")
