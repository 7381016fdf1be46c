"""The Slack channel and the generic webhook channel, through Prefect's own `SlackWebhook`
and `CustomWebhookNotificationBlock` blocks."""

from __future__ import annotations

import re

from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

from scriptflow_prefect.notifications.channels.base import UrlChannel
from scriptflow_prefect.platform.i18n import N_

SLACK_URL = re.compile(
    r"^https://hooks\.slack(-gov)?\.com/services/[A-Z0-9]+/[A-Z0-9]+/[A-Z0-9]+/?$", re.I
)


class SlackChannel(UrlChannel):
    kind = "slack"
    label = N_("Slack")
    block_name = "scriptflow-slack"
    block_class = SlackWebhook

    def make_block(self, url: str) -> SlackWebhook:
        # Apprise posts only to Slack's own incoming-webhook addresses.
        if not SLACK_URL.match(url):
            raise ValueError(
                "not a Slack incoming webhook (https://hooks.slack.com/services/T…/B…/…)"
            )
        return SlackWebhook(url=url)


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


SLACK = SlackChannel()
WEBHOOK = WebhookChannel()
