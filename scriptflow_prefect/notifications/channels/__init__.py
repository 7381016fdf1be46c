"""Notification channels: where ScriptFlow's automations tell people about runs.

A channel is a folder here with a `Channel` (channels/base.py: its settings, its Prefect
notification block, the automation action, a test message) and one line below. Adding one:
a new folder `channels/<kind>/` and a line in CHANNELS; pages and the API list them from here."""

from __future__ import annotations

from scriptflow_prefect.notifications.channels import slack, teams, webhook
from scriptflow_prefect.notifications.channels.base import Channel, UrlChannel
from scriptflow_prefect.notifications.channels.email import channel as email

CHANNELS: dict[str, Channel] = {
    c.kind: c
    for c in (
        email.CHANNEL,
        teams.CHANNEL,
        slack.CHANNEL,
        webhook.CHANNEL,
    )
}
DEFAULT = ("email",)

__all__ = ["CHANNELS", "DEFAULT", "Channel", "UrlChannel"]
