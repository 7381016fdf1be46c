"""The generic webhook channel, through Prefect's own `CustomWebhookNotificationBlock`."""

from __future__ import annotations

from prefect.blocks.notifications import CustomWebhookNotificationBlock

from scriptflow_prefect.notifications.channels.base import UrlChannel
from scriptflow_prefect.platform.i18n import N_


class WebhookChannel(UrlChannel):
    """POSTs JSON to any address: {"subject", "body", "text"} (`text` = both, which chat
    tools with Slack-like incoming webhooks show as it is)."""

    kind = "webhook"
    label = N_("Webhook")
    block_name = "scriptflow-webhook"
    block_class = CustomWebhookNotificationBlock
    schemes = ("https", "http")

    def make_block(self, url: str) -> CustomWebhookNotificationBlock:
        # The address may carry a token: it goes into the block's secrets, not its url field.
        return CustomWebhookNotificationBlock(
            name="ScriptFlow",
            url="{{url}}",
            json_data={
                "subject": "{{subject}}",
                "body": "{{body}}",
                "text": "{{subject}}\n{{body}}",
            },
            secrets={"url": url},
        )


CHANNEL = WebhookChannel()
