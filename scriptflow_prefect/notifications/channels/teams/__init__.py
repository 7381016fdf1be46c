"""The Microsoft Teams channel: a Teams Workflows (Power Automate) webhook, through Prefect's
own `MicrosoftTeamsWebhook` block."""

from __future__ import annotations

from prefect.blocks.notifications import MicrosoftTeamsWebhook

from scriptflow_prefect.notifications.channels.base import UrlChannel
from scriptflow_prefect.platform.i18n import N_


class TeamsChannel(UrlChannel):
    kind = "teams"
    label = N_("Microsoft Teams")
    block_name = "scriptflow-teams"
    block_class = MicrosoftTeamsWebhook

    def make_block(self, url: str) -> MicrosoftTeamsWebhook:
        # Prefect's block refuses an address that is not a Teams Workflows one (ValueError).
        return MicrosoftTeamsWebhook(url=url)


CHANNEL = TeamsChannel()
