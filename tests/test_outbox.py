"""The durable email outbox: written before the first try, retried with back-off for a day,
delivered once, late deliveries and give-ups told in the history and on the dashboard.

Two parts. The outbox itself (notifications/outbox.py, attempts.py) on a real SQLite
database, a real SMTP server on loopback (aiosmtpd) and Prefect's test server for the outcome
events; only the clock is moved where a day must pass. Then a real `scriptflow up` whose SMTP
server is down when a run fails, comes back, stays down past the give-up time, and a restart
of the whole stack between a failure and the delivery."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import free_port, run_async, start_stack, stop_stack, unique, upload, wait_until
from sqlalchemy import select
from test_notifications import FAILING, Mailbox, run

from scriptflow_prefect.notifications import attempts, events, outbox
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.notifications.history import late_text
from scriptflow_prefect.notifications.models import OutboxEntry
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.platform.db import Database
from scriptflow_prefect.platform.settings import Settings, parse_durations

pytest_plugins = ["browser.fixtures"]

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
FAST = outbox.Backoff(delays=(1.0,), give_up_after=3600.0, late_after=120.0)


# -- helpers -----------------------------------------------------------------------------------
class Refusing(Mailbox):
    """An SMTP server that refuses `nobody@...` for good (550) and takes everyone else."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@example.test>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


SMTP_PORT = free_port()  # the stack's SMTP server: down until a test starts it
RETRY, GIVE_UP, LATE_AFTER = "2s", "40s", "3s"


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    box.port = SMTP_PORT
    yield box
    box.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`scriptflow up` whose SMTP server is down at first, with back-off in seconds."""
    home = tmp_path_factory.mktemp("outbox-home")
    holder = StackHolder(home)
    try:
        yield holder
    finally:
        holder.stop()


class StackHolder:
    """The module's stack, which one test stops and starts again on the same home."""

    ENV = {
        "SCRIPTFLOW_SMTP_HOST": "127.0.0.1",
        "SCRIPTFLOW_SMTP_PORT": str(SMTP_PORT),
        "SCRIPTFLOW_SMTP_SECURITY": "none",
        "SCRIPTFLOW_SMTP_FROM": "scriptflow@example.test",
        "SCRIPTFLOW_NOTIFICATION_RETRY": RETRY,
        "SCRIPTFLOW_NOTIFICATION_GIVE_UP": GIVE_UP,
        "SCRIPTFLOW_NOTIFICATION_LATE_AFTER": LATE_AFTER,
    }

    def __init__(self, home):
        self.home = home
        self.current = start_stack(home, self.ENV)
        r = self.current.cli(
            "user", "add", "alice", "--email", "alice@example.test", "--password-stdin",
            input="alice-pass-123\n",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        self.tokens()

    def tokens(self) -> None:
        for name in ("admin", "alice"):
            r = self.current.cli("token", "create", name)
            assert r.returncode == 0, r.stderr
            self.current.tokens[name] = r.stdout.strip()

    def restart(self, meanwhile) -> None:
        """Stop the stack (SIGTERM), call `meanwhile`, start it again on the same home."""
        stop_stack(self.current)
        meanwhile()
        self.current = start_stack(self.home, self.ENV)
        self.tokens()

    def stop(self) -> None:
        stop_stack(self.current)

    @property
    def url(self) -> str:  # the browser fixture's base URL
        return self.current.url


@pytest.fixture
def alice(stack):
    with stack.current.client("alice") as c:
        yield c


@pytest.fixture
def admin(stack):
    with stack.current.client("admin") as c:
        yield c


@pytest.fixture(scope="module")
def prefect_events(stack):
    """This process's Prefect client pointed at the stack's server: where the outcome events
    of the outbox tests go, and are read back."""
    import prefect.settings as ps

    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    updates = {
        ps.PREFECT_API_URL: stack.current.prefect_url + "/api",
        ps.PREFECT_API_AUTH_STRING: auth,
    }
    with ps.temporary_settings(updates=updates):
        yield


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'overlay.db'}")
    database.migrate()
    yield database
    database.engine.dispose()


def smtp(port: int) -> mailer.SmtpConfig:
    return mailer.SmtpConfig(host="127.0.0.1", port=port, security="none", timeout=5)


def queue(db, to: str, subject: str, **kw) -> outbox.Queued:
    msg = mailer.build_message(
        sender="scriptflow@example.test",
        to=to,
        rendered=mailer.Rendered(subject, "The backup failed.\n", ""),
    )
    queued = outbox.enqueue(
        db,
        channel="email",
        message=bytes(msg),
        resource_id=events.script_resource(7),
        resource_name="backup",
        payload={"kind": "run", "script_id": 7, "subject": subject},
        recipient=to,
        script_id=7,
        **kw,
    )
    assert queued is not None
    return queued


def entry(db, entry_id: int) -> OutboxEntry:
    found = outbox.get(db, entry_id)
    assert found is not None
    return found


def recorded(name: str, subject: str, timeout: float = 20) -> dict:
    """The payload of the outcome event `name` about the message `subject`."""
    from prefect.events.worker import EventsWorker

    from scriptflow_prefect.notifications import prefect as notifications_prefect

    EventsWorker.drain_all(timeout=10)

    async def read():
        found, _total = await notifications_prefect.read_events(
            names=[name], since=datetime.now(UTC) - timedelta(days=400)
        )
        return [e.payload for e in found if e.payload.get("subject") == subject]

    return wait_until(lambda: run_async(read()), timeout, f"a {name} event about {subject}")[0]


# -- the back-off schedule and its setting ------------------------------------------------------
def test_it_backs_off_1_2_5_10_30_minutes_then_hourly_until_a_day_after_the_first_try():
    backoff = outbox.Backoff.from_settings(Settings())
    at, tries, waits = T0, 1, []
    while (nxt := backoff.next_attempt(T0, tries, at)) is not None:
        waits.append((nxt - at).total_seconds() / 60)
        at, tries = nxt, tries + 1
    assert waits[:7] == [1, 2, 5, 10, 30, 60, 60]
    assert at == T0 + timedelta(hours=24)  # the last try is at the give-up time, not after
    assert tries == 1 + 7 + 22  # 0h58 after the first try, hourly to 23h58, then 24h


def test_the_schedule_is_a_setting_in_seconds_minutes_or_hours():
    s = Settings(notification_retry="2s, 1.5m,1h", notification_give_up="90")
    assert s.notification_retry_seconds == (2.0, 90.0, 3600.0)
    assert s.notification_give_up_seconds == 90.0
    for bad in ("", "soon", "5x", "-1m", "0", "45d"):
        with pytest.raises(ValueError, match="notification_retry"):
            Settings(notification_retry=bad)
    assert parse_durations("30s,2m") == (30.0, 120.0)


# -- the outbox on its own -----------------------------------------------------------------------
def test_an_email_refused_for_now_waits_with_its_next_try_then_is_delivered_late(
    db, prefect_events
):
    port = free_port()  # nothing listens there yet
    subject = unique("outage")
    caused = datetime.now(UTC) - timedelta(hours=2)
    queued = queue(db, "alice@example.test", subject, caused_at=caused)
    assert entry(db, queued.id).status == outbox.SENDING  # on disk before the first try

    outcome = attempts.attempt(db, queued.id, queued.claim, attempts.smtp_sender(smtp(port)), FAST)
    assert outcome == "retrying"
    waiting = entry(db, queued.id)
    assert waiting.status == outbox.PENDING and waiting.attempts == 1
    assert "refused" in waiting.errors[0].lower()
    assert waiting.next_attempt_at - waiting.first_attempt_at == timedelta(seconds=1)
    retrying = recorded(events.RETRYING, subject)
    assert retrying["attempt"] == 1 and retrying["retry_at"]

    box = Mailbox()
    box.port = port
    box.start()
    try:
        wait_until(lambda: outbox.due(db), 5, "the retry falling due")
        token = outbox.claim(db, queued.id)
        assert token and outbox.claim(db, queued.id) is None  # claimed once
        assert attempts.attempt(db, queued.id, token, attempts.smtp_sender(smtp(port)), FAST) == (
            "sent"
        )
        [msg] = box.about(subject)
        assert msg["To"] == "alice@example.test"
    finally:
        box.stop()
    assert entry(db, queued.id).status == outbox.SENT and not outbox.due(db)
    sent = recorded(events.SENT, subject)
    assert 7200 <= sent["late_seconds"] < 7200 + 60 and sent["attempts"] == 2
    assert late_text(sent["late_seconds"]) == "delivered 2 hours late"
    token = i18n.set_locale("pt_BR")
    try:
        assert late_text(sent["late_seconds"]) == "entregue com 2 horas de atraso"
    finally:
        i18n._current.reset(token)


def test_a_permanent_refusal_gives_up_at_once(db, prefect_events):
    box = Refusing()
    box.start()
    try:
        subject = unique("no-such-user")
        queued = queue(db, "nobody@example.test", subject)
        send = attempts.smtp_sender(smtp(box.port))
        assert attempts.attempt(db, queued.id, queued.claim, send, FAST) == "failed"
    finally:
        box.stop()
    done = entry(db, queued.id)
    assert done.status == outbox.FAILED and done.attempts == 1 and not outbox.due(db)
    failed = recorded(events.FAILED, subject)
    assert "550" in failed["reason"] and failed["gave_up"] is False


def test_past_the_give_up_time_it_gives_up(db, prefect_events):
    port = free_port()  # down for the whole day
    subject = unique("long-outage")
    backoff = outbox.Backoff.from_settings(Settings())
    queued = queue(db, "alice@example.test", subject, now=T0)
    send = attempts.smtp_sender(smtp(port))
    assert attempts.attempt(db, queued.id, queued.claim, send, backoff, now=lambda: T0) == (
        "retrying"
    )
    at, outcome = T0, "retrying"
    while outcome == "retrying":
        at = entry(db, queued.id).next_attempt_at
        assert outbox.due(db, at - timedelta(seconds=1)) == []  # not before its time
        token = outbox.claim(db, queued.id, now=at)
        assert token
        outcome = attempts.attempt(db, queued.id, token, send, backoff, now=lambda a=at: a)
    assert outcome == "gave_up" and at == T0 + timedelta(hours=24)
    done = entry(db, queued.id)
    assert done.status == outbox.FAILED and done.attempts == 30
    failed = recorded(events.FAILED, subject)
    assert failed["gave_up"] is True and "refused" in failed["reason"].lower()


def test_a_dead_senders_entry_is_taken_over_after_its_lease(db, prefect_events):
    box = Mailbox()
    box.start()
    try:
        subject = unique("orphaned-claim")
        dead = queue(db, "alice@example.test", subject, now=T0)  # its writer died here
        assert outbox.due(db, T0 + outbox.LEASE - timedelta(seconds=1)) == []
        later = T0 + outbox.LEASE + timedelta(seconds=1)
        assert outbox.due(db, later) == [dead.id]
        token = outbox.claim(db, dead.id, now=later)
        assert token and token != dead.claim
        send = attempts.smtp_sender(smtp(box.port))
        assert attempts.attempt(db, dead.id, token, send, FAST) == "sent"
        # The first claimer, had it lived on, cannot write an outcome over it.
        assert outbox.finish(db, dead.id, dead.claim, status=outbox.FAILED) is None
        assert len(box.about(subject)) == 1
    finally:
        box.stop()


def test_an_entry_claimed_by_a_dead_process_of_this_host_is_released_at_start(db):
    import socket
    import subprocess
    import sys

    from sqlalchemy import update

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists: Prefect's server killed during a try
    killed = queue(db, "alice@example.test", unique("killed"))
    alive = queue(db, "alice@example.test", unique("alive"))  # claimed by this process
    with db.session() as s:
        s.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == killed.id)
            .values(claimed_by=f"{socket.gethostname()[:40]}:{gone.pid}:0123456789ab")
        )
    assert outbox.due(db) == []
    assert outbox.release_orphans(db) == 1
    assert outbox.due(db) == [killed.id]
    assert outbox.claim(db, alive.id) is None  # a live claim waits for its lease


def test_two_senders_racing_deliver_each_email_once(db, prefect_events):
    box = Mailbox()
    box.start()
    port = box.port
    try:
        subjects = [unique("race") for _ in range(30)]
        for s in subjects:  # every first try failed: all are waiting, due now
            q = queue(db, "alice@example.test", s)
            outbox.finish(db, q.id, q.claim, status=outbox.PENDING, error="421 busy")
        go = threading.Barrier(2)
        sent: list[int] = []

        def sender():
            go.wait()
            while ids := outbox.due(db, limit=5):
                for i in ids:
                    token = outbox.claim(db, i)
                    send = attempts.smtp_sender(smtp(port))
                    if token and attempts.attempt(db, i, token, send, FAST) == "sent":
                        sent.append(i)

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(sent) == sorted(set(sent)) and len(sent) == 30
        for s in subjects:
            assert len(box.about(s)) == 1, s
    finally:
        box.stop()


def test_the_same_request_twice_is_written_once(db):
    subject = unique("twice")
    assert queue(db, "alice@example.test", subject, dedupe_key=f"run:{subject}")
    msg = bytes(mailer.build_message(sender="a@example.test", to="b@example.test",
                                     rendered=mailer.Rendered("x", "y", "")))  # fmt: skip
    again = outbox.enqueue(
        db,
        channel="email",
        message=msg,
        resource_id="r",
        resource_name="n",
        payload={},
        dedupe_key=f"run:{subject}",
    )
    assert again is None


def test_a_flood_drops_the_oldest_waiting_email_and_says_so(db, prefect_events):
    subjects = [unique("flood") for _ in range(5)]
    ids = []
    for n, s in enumerate(subjects):
        q = queue(db, "alice@example.test", s, now=T0 + timedelta(seconds=n), limit=3)
        ids.append(q.id)
        outbox.finish(db, q.id, q.claim, status=outbox.PENDING, error="421 busy")
        attempts.record_dropped(q.dropped)
    statuses = [entry(db, i).status for i in ids]
    assert statuses == [outbox.DROPPED] * 2 + [outbox.PENDING] * 3
    dropped = recorded(events.FAILED, subjects[0])
    assert dropped["dropped"] is True


def test_finished_entries_are_pruned_after_the_history_retention(db):
    old = queue(db, "alice@example.test", unique("old"), now=T0)
    outbox.finish(db, old.id, old.claim, status=outbox.SENT, now=T0)
    new = queue(db, "alice@example.test", unique("new"), now=T0 + timedelta(days=29))
    outbox.finish(db, new.id, new.claim, status=outbox.SENT, now=T0 + timedelta(days=29))
    waiting = queue(db, "alice@example.test", unique("waiting"), now=T0)
    assert outbox.prune(db, 30, now=T0 + timedelta(days=31)) == 1
    assert outbox.get(db, old.id) is None
    assert outbox.get(db, new.id) and outbox.get(db, waiting.id)  # a waiting one stays


# -- the whole stack ---------------------------------------------------------------------------
def settled(client, script_id: int, until, timeout: float = 60) -> list[dict]:
    """The script's history (waiting emails included) once `until(items)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        items = client.get("/notifications", params={"script_id": script_id}).json()["items"]
        if until(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.5)


def outbox_rows(stack, script_id: int) -> list[OutboxEntry]:
    db = Database(f"sqlite:///{stack.home / 'scriptflow.db'}")
    try:
        with db.session() as s:
            return list(s.scalars(select(OutboxEntry).where(OutboxEntry.script_id == script_id)))
    finally:
        db.engine.dispose()


def test_a_run_email_waits_while_smtp_is_down_and_arrives_late_when_it_is_back(
    stack, alice, mailbox
):
    script = upload(alice, FAILING, name=unique("smtp-down"))
    assert run(alice, script["id"])["status"] == "failed"
    [item] = settled(
        alice, script["id"], lambda items: items and (items[0].get("attempts") or 0) >= 2
    )
    assert item["status"] == "pending" and item["recipient"] == "alice@example.test"
    assert "refused" in item["reason"].lower() and item["next_attempt_at"]
    time.sleep(4)  # down a while longer than LATE_AFTER, so the delivery is late
    mailbox.start()
    msg = mailbox.wait_for(script["name"], timeout=30)
    assert msg["To"] == "alice@example.test"
    [sent] = settled(alice, script["id"], lambda items: items and items[0]["status"] == "sent")
    assert sent["status"] == "sent" and sent["attempts"] >= 3
    ended = datetime.fromisoformat(run_of(alice, sent["run_id"])["ended_at"])
    delivered = datetime.fromisoformat(sent["at"])
    assert abs(sent["late_seconds"] - (delivered - ended).total_seconds()) < 2, sent
    assert sent["late"] == late_text(sent["late_seconds"]) and "late" in sent["late"]
    [row] = outbox_rows(stack.current, script["id"])
    assert row.status == outbox.SENT and len(mailbox.about(script["name"])) == 1


def run_of(client, run_id: str) -> dict:
    return client.get(f"/runs/{run_id}").json()


class Receiver:
    """A webhook receiver on a given loopback port, started late."""

    def __init__(self, port: int):
        import http.server

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, text: str) -> list[bytes]:
        return [r for r in list(self.received) if text.encode() in r]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def channel_rows(stack, channel: str, text: str) -> list[OutboxEntry]:
    db = Database(f"sqlite:///{stack.home / 'scriptflow.db'}")
    try:
        with db.session() as s:
            rows = s.scalars(select(OutboxEntry).where(OutboxEntry.channel == channel))
            return [r for r in rows if text in str(r.payload.get("subject"))]
    finally:
        db.engine.dispose()


def test_a_webhook_post_waits_while_the_receiver_is_down_and_is_posted_once_back(
    stack, alice, admin
):
    port = free_port()
    r = admin.put("/settings/channels/webhook", json={"url": f"http://127.0.0.1:{port}/in"})
    assert r.status_code == 200, r.text
    receiver = None
    try:
        script = upload(alice, FAILING, name=unique("hook-down"))
        r = alice.put(f"/scripts/{script['id']}/notifications", json={"channels": ["webhook"]})
        assert r.status_code == 200, r.text
        assert run(alice, script["id"])["status"] == "failed"
        [row] = wait_until(
            lambda: [
                x for x in channel_rows(stack.current, "webhook", script["name"]) if x.attempts >= 2
            ],
            60,
            "a second try of the webhook post",
        )
        assert row.status == outbox.PENDING and row.errors
        receiver = Receiver(port)
        wait_until(lambda: receiver.about(script["name"]), 30, "the webhook post")
        wait_until(
            lambda: channel_rows(stack.current, "webhook", script["name"])[0].status == outbox.SENT,
            10,
            "the post recorded as sent",
        )
        assert len(receiver.about(script["name"])) == 1
    finally:
        admin.put("/settings/channels/webhook", json={"url": None})
        if receiver is not None:
            receiver.close()


def test_past_the_give_up_time_the_history_and_the_dashboard_say_gave_up(
    stack, alice, mailbox, page
):
    from browser.fixtures import axe_check, login, screenshot

    mailbox.stop()
    script = upload(alice, FAILING, name=unique("gave-up"))
    assert run(alice, script["id"])["status"] == "failed"
    [item] = settled(
        alice,
        script["id"],
        lambda items: items and items[0]["status"] == "failed",
        timeout=90,
    )
    assert item["gave_up"] is True and item["attempts"] >= 3
    assert item["reason"].startswith("Gave up after") and "refused" in item["reason"].lower()
    [row] = outbox_rows(stack.current, script["id"])
    assert row.status == outbox.FAILED
    waited = (row.done_at - row.first_attempt_at).total_seconds()
    assert waited >= parse_durations(GIVE_UP)[0]

    login(page, "alice")
    page.goto("/")
    alert = page.locator("#email-alert")
    alert.get_by_text("Gave up after").wait_for()
    assert script["name"] in alert.inner_text()
    page.goto(f"/notifications?script_id={script['id']}")
    row_el = page.locator("#notification-history tbody tr").first
    assert "Gave up" in row_el.inner_text()
    page.goto("/notifications")
    late = page.locator("[data-late]").first
    assert late.inner_text().startswith("delivered ") and late.inner_text().endswith(" late")
    axe_check(page)
    screenshot(page, "notification-history-outbox")


def test_an_email_waiting_across_a_restart_of_the_stack_is_delivered_once(stack, alice, mailbox):
    mailbox.stop()
    script = upload(alice, FAILING, name=unique("restart"))
    assert run(alice, script["id"])["status"] == "failed"
    settled(alice, script["id"], lambda items: items and items[0]["status"] == "pending")
    # SMTP comes back while ScriptFlow is stopped: the restarted sender delivers at once.
    stack.restart(meanwhile=mailbox.start)
    msg = mailbox.wait_for(script["name"], timeout=60)
    assert msg["To"] == "alice@example.test"
    with stack.current.client("alice") as client:
        settled(client, script["id"], lambda items: items and items[0]["status"] == "sent")
    [row] = outbox_rows(stack.current, script["id"])
    assert row.status == outbox.SENT
    assert len(mailbox.about(script["name"])) == 1
