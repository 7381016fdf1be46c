"""The outbox in front of the Teams, Slack and webhook channels.

Their automations' action is this block, not Prefect's own: it writes the message to the
outbox (notifications/outbox.py) and makes the first try through the channel's Prefect block
(loaded by name at each try, so a changed address is used); a failure is retried by the
overlay's sender loops for up to a day, as emails are."""

from __future__ import annotations

import asyncio
import json

from prefect.blocks.abstract import NotificationBlock, NotificationError
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from pydantic import Field

from scriptflow_prefect.notifications import attempts, outbox
from scriptflow_prefect.notifications.models import OutboxEntry


async def post(target: str, subject: str | None, body: str) -> None:
    """Send through the Prefect notification block `target` ("<type slug>/<name>")."""
    block = await Block.aload(target)
    if not isinstance(block, NotificationBlock):
        raise NotificationError(log=f"{target} is not a notification block")
    with block.raise_on_failure():
        await block.notify(body, subject)


def send_entry(entry: OutboxEntry) -> None:
    """An outbox entry of a channel, posted (blocking: attempts run in a thread)."""
    data = json.loads(entry.message)
    asyncio.run(post(data["target"], data.get("subject"), data["body"]))


class ScriptFlowOutbox(NotificationBlock):
    """Sends through another notification block, durably: each message is written to
    ScriptFlow's outbox first and retried with back-off for up to a day when it fails.

    ScriptFlow makes one for each of its Teams, Slack and webhook channels and uses it as the
    action of its automations.

    Example:
        Send a message through the outbox block ScriptFlow saved for a channel:
        ```python
        from scriptflow_prefect.blocks import ScriptFlowOutbox

        outbox = ScriptFlowOutbox.load("BLOCK_NAME")
        outbox.notify("The nightly backup needs a look.", subject="Backups")
        ```
    """

    _block_type_name = "ScriptFlow Outbox"
    _block_type_slug = "scriptflow-outbox"
    _logo_url = CustomWebhookNotificationBlock._logo_url
    _documentation_url = "https://docs.prefect.io/v3/automate/events/automations-triggers"  # type: ignore[assignment]

    channel: str = Field(
        title="Channel", description="The ScriptFlow channel it sends for: teams, slack, webhook."
    )
    target: str = Field(
        title="Notification block",
        description="The block that posts the message, as <block type slug>/<block name>.",
    )

    async def notify(self, body: str, subject: str | None = None) -> None:
        db = await asyncio.to_thread(outbox.local_db)
        if db is None:  # a Prefect server that ScriptFlow did not start: no outbox here
            await post(self.target, subject, body)
            return
        message = {"target": self.target, "subject": subject, "body": body}
        outcome = await asyncio.to_thread(
            attempts.write_and_try,
            db,
            send_entry,
            channel=self.channel,
            message=json.dumps(message).encode(),
            resource_id=f"scriptflow.channel.{self.channel}",
            resource_name=self.channel,
            payload={"kind": self.channel, "subject": subject},
        )
        if outcome in ("failed", "gave_up") and self._raise_on_failure:
            raise NotificationError(log=f"{self.channel}: {outcome}")
