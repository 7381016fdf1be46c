"""The ScriptFlow email block: a Prefect notification block that sends ScriptFlow's emails."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.abstract import NotificationBlock, NotificationError
from prefect_email import EmailServerCredentials
from pydantic import Field

from scriptflow_prefect.notifications.channels.email import deliveries


class ScriptFlowEmail(NotificationBlock):
    """Emails about ScriptFlow scripts, sent through an SMTP server described by prefect-email's
    Email Server Credentials block (which keeps the password as a secret).

    ScriptFlow's own automations ("ScriptFlow · <script> · failure") send this block a small
    JSON request naming the flow run and the recipients. The block then reads the run and the
    last 50 lines of its output from Prefect, writes a plain-text and HTML email in each
    recipient's language, writes it to ScriptFlow's outbox (retried for up to a day when the
    SMTP server fails for now), holds back repeats of a flapping script, and records every
    outcome as a `scriptflow.email.*` event. Any other body (an automation made by hand in the
    Prefect UI) is sent as it is to `to`.

    Example:
        Send a message with the block ScriptFlow saved:
        ```python
        from scriptflow_prefect.blocks import ScriptFlowEmail

        email = ScriptFlowEmail.load("BLOCK_NAME")
        email.notify("The nightly backup needs a look.", subject="Backups")
        ```
    """

    _block_type_name = "ScriptFlow Email"
    _block_type_slug = "scriptflow-email"
    _logo_url = EmailServerCredentials._logo_url
    _documentation_url = "https://docs.prefect.io/v3/automate/events/automations-triggers"  # type: ignore[assignment]

    credentials: EmailServerCredentials = Field(
        title="SMTP server",
        description="The SMTP server, its security and login (an Email Server Credentials block).",
    )
    from_address: str = Field(
        title="From address",
        description="The sender of every message, for example scriptflow@example.com.",
    )
    to: list[str] = Field(
        default_factory=list,
        title="Default recipients",
        description="Who gets a message whose body is not one of ScriptFlow's own requests.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        title="ScriptFlow address",
        description="The web address of ScriptFlow that the links in messages point to.",
    )
    language: Literal["en", "pt_BR"] = Field(
        default="en",
        title="Language",
        description="The language for recipients whose own language is not known.",
    )
    timezone: str = Field(
        default="UTC",
        title="Time zone",
        description="The time zone of dates in messages, for recipients without their own.",
    )
    throttle_minutes: float = Field(
        default=15,
        ge=0,
        le=1440,
        title="Quiet period (minutes)",
        description="At most one message per script and recipient in this many minutes; "
        "later ones are held back and counted in the next message.",
    )
    retry_delays: list[float] = Field(
        default_factory=lambda: [10.0, 40.0],
        title="Retry delays (seconds)",
        description="How long to wait before each new try when the SMTP server fails "
        "temporarily, on a Prefect server without ScriptFlow's outbox (which retries for a "
        "day: SCRIPTFLOW_NOTIFICATION_RETRY).",
    )

    async def notify(self, body: str, subject: str | None = None) -> None:
        request = deliveries.parse_run_request(body)
        if request is not None:
            deliveries.start_run_email(self, request)
            return
        errors = await deliveries.send_plain(self, body, subject)
        if errors and self._raise_on_failure:
            raise NotificationError(log="; ".join(errors))
