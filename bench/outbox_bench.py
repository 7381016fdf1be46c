"""The email outbox through an SMTP outage: delivered count, duplicates, lateness per email.

A real `scriptflow up` (tests/conftest.start_stack) whose SMTP settings point at a loopback
port where nothing listens. N emails are written to its outbox as the email block writes them
after a refused first try (queued over the first half of the outage, so they are at different
points of their back-off); the stack's own sender loop retries them. After `--outage` seconds
a real aiosmtpd server starts on that port. The bench waits until every email arrived (or the
give-up time passed), then prints, per email and in sum: delivered, duplicates (the same
Message-ID received twice), and lateness (SMTP receipt - queue time) beside its baseline from
the same run: the part of the outage still to come when the email was queued (what an email
retried without any back-off would wait). The difference is the cost of the back-off: at most
the wait in effect when the server came back.

Usage: .venv/bin/python bench/outbox_bench.py [--emails 50] [--outage 600]
       [--retry 1m,2m,5m,10m,30m,1h]
The default schedule is the production one (SCRIPTFLOW_NOTIFICATION_RETRY's default); with a
600 s outage the last emails wait for the 10-minute step, so a full run takes ~20 minutes.
Nothing here passes or fails. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (start_stack / stop_stack: the real `scriptflow up`)

from scriptflow_prefect.notifications import events, outbox  # noqa: E402
from scriptflow_prefect.notifications.channels.email import mailer  # noqa: E402
from scriptflow_prefect.platform.db import Database  # noqa: E402
from scriptflow_prefect.platform.settings import Settings  # noqa: E402


class Inbox:
    def __init__(self, port: int):
        self.port = port
        self.received: list[tuple[datetime, str, str]] = []  # (when, Message-ID, Subject)
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.received.append((datetime.now(UTC), str(msg["Message-ID"]), str(msg["Subject"])))
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emails", type=int, default=50)
    ap.add_argument("--outage", type=float, default=600.0, help="seconds the SMTP server is down")
    ap.add_argument("--retry", default="1m,2m,5m,10m,30m,1h")
    args = ap.parse_args()

    port = conftest.free_port()
    home = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    stack = conftest.start_stack(
        home,
        {
            "SCRIPTFLOW_SMTP_HOST": "127.0.0.1",
            "SCRIPTFLOW_SMTP_PORT": str(port),
            "SCRIPTFLOW_SMTP_SECURITY": "none",
            "SCRIPTFLOW_SMTP_FROM": "scriptflow@example.test",
            "SCRIPTFLOW_NOTIFICATION_RETRY": args.retry,
        },
    )
    inbox = Inbox(port)
    backoff = outbox.Backoff.from_settings(Settings(notification_retry=args.retry))
    db = Database(f"sqlite:///{home / 'scriptflow.db'}")
    queued: dict[str, datetime] = {}  # Message-ID -> queued at
    try:
        down_at = datetime.now(UTC)
        up_at = down_at + timedelta(seconds=args.outage)
        spread = args.outage / 2 / max(args.emails, 1)
        print(f"SMTP down at {down_at:%H:%M:%S}, up at {up_at:%H:%M:%S}; schedule {args.retry}")
        for n in range(args.emails):
            msg = mailer.build_message(
                sender="scriptflow@example.test",
                to=f"ops{n}@example.test",
                rendered=mailer.Rendered(f"bench email {n}", "The backup failed.\n", ""),
            )
            q = outbox.enqueue(
                db,
                channel="email",
                message=bytes(msg),
                resource_id=events.script_resource(0),
                resource_name="bench",
                payload={"kind": "run", "subject": f"bench email {n}"},
                recipient=f"ops{n}@example.test",
            )
            assert q is not None
            # As the block leaves it after a refused first try: the loop retries it.
            now = datetime.now(UTC)
            outbox.finish(
                db,
                q.id,
                q.claim,
                status=outbox.PENDING,
                error="bench: connection refused",
                next_at=backoff.next_attempt(now, 1, now),
                now=now,
            )
            queued[str(msg["Message-ID"])] = now
            time.sleep(spread)
        while datetime.now(UTC) < up_at:
            time.sleep(0.5)
        inbox.start()
        print(f"SMTP up at {datetime.now(UTC):%H:%M:%S}")
        deadline = time.monotonic() + 2 * max(backoff.delays) + 120
        while time.monotonic() < deadline:
            with inbox.lock:
                got = {mid for _t, mid, _s in inbox.received}
            if got >= set(queued):
                break
            time.sleep(1)
        time.sleep(5)  # a duplicate would come within a sender round
    finally:
        inbox.stop()
        conftest.stop_stack(stack)
        db.engine.dispose()

    counts = Counter(mid for _t, mid, _s in inbox.received)
    first = {}
    for when, mid, _s in sorted(inbox.received):
        first.setdefault(mid, when)
    rows = []
    for mid, at in queued.items():
        baseline = max((up_at - at).total_seconds(), 0.0)
        late = (first[mid] - at).total_seconds() if mid in first else None
        rows.append((at, baseline, late, counts.get(mid, 0)))
    print(f"\n{'queued':>8} {'baseline s':>11} {'late s':>8} {'extra s':>8} received")
    for at, baseline, late, n in rows:
        extra = f"{late - baseline:8.1f}" if late is not None else "       -"
        shown = f"{late:8.1f}" if late is not None else "   never"
        print(f"{at:%H:%M:%S} {baseline:11.1f} {shown} {extra} {n}")
    delivered = [r for r in rows if r[2] is not None]
    dupes = sum(n - 1 for *_r, n in rows if n > 1)
    extras = [r[2] - r[1] for r in delivered]
    print(
        f"\nemails {len(rows)}, delivered {len(delivered)}, duplicates {dupes}; "
        f"outage {args.outage:.0f} s; lateness median "
        f"{statistics.median([r[2] for r in delivered]) if delivered else 0:.1f} s "
        f"(baseline median {statistics.median([r[1] for r in rows]):.1f} s), "
        f"back-off cost median {statistics.median(extras) if extras else 0:.1f} s, "
        f"max {max(extras) if extras else 0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
