"""The `send_digest` flow: a daily or weekly summary email of each recipient's scripts.

ScriptFlow keeps one deployment per period (`send_digest/daily`, `send_digest/weekly`) with
the recipients as a parameter and the digest time as its schedule; ScriptFlow's worker runs
it. Run one by hand, for example::

    prefect deployment run 'send_digest/daily'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_client, get_run_logger
from prefect.runtime import flow_run

from scriptflow_prefect import blocks
from scriptflow_prefect.notifications import digests
from scriptflow_prefect.notifications.channels.email import mailer
from scriptflow_prefect.platform.prefect_names import EMAIL_BLOCK


@flow(name="send_digest", persist_result=False, log_prints=False, validate_parameters=True)
def send_digest(
    period: Literal["daily", "weekly"] = "daily",
    recipients: list[dict[str, Any]] | None = None,
    block_name: str = EMAIL_BLOCK,
) -> dict[str, int]:
    """Email each recipient what their scripts did over the last day or week.

    `recipients` is a list of `{"email", "language", "timezone", "scripts": [{"id", "name"}]}`.
    Example: `send_digest("weekly", [{"email": "ops@example.com", "scripts": [{"id": 1,
    "name": "backup"}]}])`.
    """
    logger = get_run_logger()
    block = blocks.ScriptFlowEmail.load(block_name, _sync=True)  # type: ignore[call-arg]
    config = mailer.SmtpConfig.from_credentials(block.credentials)
    until = datetime.now(UTC)
    since = until - digests.PERIODS[period]
    recipients = [r for r in recipients or [] if mailer.is_email(r.get("email"))]
    names = {
        int(s["id"]): str(s.get("name") or s["id"])
        for r in recipients
        for s in r.get("scripts", [])
    }
    with get_client(sync_client=True) as client:
        facts = digests.collect(client, names, since, until)

    counts = {"sent": 0, "failed": 0}
    run_id = str(flow_run.id) if flow_run.id else None  # a run sends each digest once
    for r in recipients:
        context = facts.summary([int(s["id"]) for s in r.get("scripts", [])], block.public_url)
        context["period"] = period
        rendered = mailer.render(
            "digest",
            context,
            language=r.get("language") or block.language,
            zone=r.get("timezone") or block.timezone,
        )
        msg = mailer.build_message(sender=block.from_address, to=r["email"], rendered=rendered)
        payload = {
            "kind": "digest",
            "period": period,
            "subject": rendered.subject,
            "runs": context["runs"],
            "failures": context["failures"],
        }
        outcome = digests.send_digest_email(
            config, msg, block.retry_delays, period, r["email"], payload, run_id
        )
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome not in ("sent", "retrying", "duplicate"):
            logger.warning("The %s digest to %s was not sent (%s)", period, r["email"], outcome)
    logger.info(
        "%s digest: %s sent, %s to be tried again, %s not sent",
        period,
        counts["sent"],
        counts.get("retrying", 0),
        counts["failed"] + counts.get("gave_up", 0),
    )
    return counts


__all__ = ["send_digest"]
