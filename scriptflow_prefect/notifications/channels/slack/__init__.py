"""The Slack channel: a Slack incoming webhook, through Prefect's own `SlackWebhook` block."""

from __future__ import annotations

import re

from prefect.blocks.notifications import SlackWebhook

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


CHANNEL = SlackChannel()
