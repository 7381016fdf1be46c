"""The outcome of every notification, recorded as a Prefect event.

`scriptflow.email.sent|failed|held|retrying`, resource `scriptflow.script.<id>` (or a digest,
the test message, a hand-made automation's message), related `scriptflow.recipient.<address>`
and the flow run: the history and the flapping throttle live in Prefect beside the runs they
are about, and the overlay reads them back through its gateway."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

log = logging.getLogger("scriptflow.email")

SENT = "scriptflow.email.sent"
FAILED = "scriptflow.email.failed"
HELD = "scriptflow.email.held"
RETRYING = "scriptflow.email.retrying"
ACTION_FAILED = "prefect.automation.action.failed"
TEST_RESOURCE = "scriptflow.email.test"
OTHER_RESOURCE = "scriptflow.email.other"


def script_resource(script_id: int | str) -> str:
    return f"scriptflow.script.{script_id}"


def digest_resource(period: str) -> str:
    return f"scriptflow.digest.{period}"


def recipient_resource(email: str) -> str:
    return f"scriptflow.recipient.{email.lower()}"


def record(
    event: str,
    resource_id: str,
    name: str,
    *,
    recipient: str | None = None,
    run_id: UUID | str | None = None,
    payload: dict[str, Any],
) -> None:
    """Emit one outcome event; losing it must never lose the email itself."""
    from prefect.events import emit_event

    related = []
    if recipient:
        related.append(
            {
                "prefect.resource.id": recipient_resource(recipient),
                "prefect.resource.role": "recipient",
                "prefect.resource.name": recipient,
            }
        )
    if run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    try:
        emit_event(
            event=event,
            resource={
                "prefect.resource.id": resource_id,
                "prefect.resource.name": name or resource_id,
            },
            related=related,
            payload={"recipient": recipient, **payload},
        )
    except Exception:  # noqa: BLE001 - the history is best effort, the email is not
        log.exception("could not record %s for %s", event, resource_id)
