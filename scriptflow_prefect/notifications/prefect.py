"""Notifications in Prefect: email blocks, automations, digest deployments, events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.blocks.core import Block
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.events.filters import AutomationFilter, AutomationFilterTags
from prefect.exceptions import ObjectNotFound
from prefect_email import EmailServerCredentials

from scriptflow_prefect.notifications.channels.email.block import ScriptFlowEmail
from scriptflow_prefect.platform.prefect import call
from scriptflow_prefect.platform.prefect_names import (
    CREDENTIALS_BLOCK,
    DIGEST_ENTRYPOINT,
    DIGEST_FLOW,
    DIGEST_TAG,
    EMAIL_BLOCK,
    EMAIL_TAG,
    WORK_POOL,
    script_tag,
)

# The send_digest flow's parameters, for the Prefect UI (core does not import flows/).
DIGEST_PARAMETERS = {
    "title": "Parameters",
    "type": "object",
    "properties": {
        "period": {
            "default": "daily",
            "enum": ["daily", "weekly"],
            "position": 0,
            "title": "period",
            "type": "string",
        },
        "recipients": {
            "anyOf": [
                {"items": {"additionalProperties": True, "type": "object"}, "type": "array"},
                {"type": "null"},
            ],
            "default": None,
            "position": 1,
            "title": "recipients",
        },
        "block_name": {
            "default": EMAIL_BLOCK,
            "position": 2,
            "title": "block_name",
            "type": "string",
        },
    },
    "definitions": {},
}


async def save_email_blocks(
    *,
    host: str,
    port: int,
    smtp_type: str,
    username: str | None,
    password: str | None,
    email_fields: dict[str, Any],
) -> UUID:
    """Save the SMTP credentials (password as a secret; None keeps the stored one) and the
    ScriptFlow email block that uses them; returns the email block's document id."""

    async def _do() -> UUID:
        secret = password
        if secret is None:
            try:
                old = await EmailServerCredentials.aload(CREDENTIALS_BLOCK)
                secret = old.password.get_secret_value()
            except ValueError:  # not saved yet
                secret = ""
        creds = EmailServerCredentials(
            smtp_server=host,
            smtp_port=port,
            smtp_type=smtp_type,
            username=username or None,
            password=secret,
        )
        await creds.asave(CREDENTIALS_BLOCK, overwrite=True)
        return await ScriptFlowEmail(credentials=creds, **email_fields).asave(
            EMAIL_BLOCK, overwrite=True
        )

    return await call(_do())


async def load_email_block():
    """The ScriptFlow email block with its secrets, or None if it was never saved."""

    async def _do():
        try:
            return await ScriptFlowEmail.aload(EMAIL_BLOCK)
        except ValueError:
            return None

    return await call(_do())


async def save_block(block: Block, name: str) -> UUID:
    """Save (or overwrite) a channel's notification block; returns its document id."""
    return await call(block.asave(name, overwrite=True))


async def delete_block(block_type: type[Block], name: str) -> None:
    async def _do():
        async with get_client() as client:
            try:
                await client.delete_block_document(
                    (
                        await client.read_block_document_by_name(
                            name, block_type.get_block_type_slug()
                        )
                    ).id
                )
            except ObjectNotFound:
                pass

    await call(_do())


async def notify(block_type: type[Block], name: str, body: str, subject: str) -> None:
    """Send one message through a saved block, here (a test message)."""

    async def _do():
        block = await block_type.aload(name)
        with block.raise_on_failure():
            await block.notify(body, subject)

    await call(_do())


async def read_email_automations(script_id: int | None = None) -> list:
    """ScriptFlow's email automations (of one script, or all of them)."""
    tags = [EMAIL_TAG] + ([script_tag(script_id)] if script_id is not None else [])

    async def _do():
        async with get_client() as client:
            return await client.read_automations(
                automations=AutomationFilter(tags=AutomationFilterTags(all_=tags))
            )

    return await call(_do())


async def create_automation(automation) -> UUID:
    async def _do():
        async with get_client() as client:
            return await client.create_automation(automation)

    return await call(_do())


async def update_automation(automation_id: UUID, automation) -> None:
    # The API takes an owner only when an automation is created (an update with one is a 422).
    core = type(automation).model_validate(automation.model_dump(exclude={"owner_resource"}))

    async def _do():
        async with get_client() as client:
            await client.update_automation(automation_id, core)

    await call(_do())


async def delete_automation(automation_id: UUID) -> None:
    async def _do():
        async with get_client() as client:
            await client.delete_automation(automation_id)

    await call(_do())


async def upsert_digest_deployment(
    name: str, parameters: dict[str, Any], schedules: list[DeploymentScheduleCreate]
) -> UUID:
    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(DIGEST_FLOW)
            return await client.create_deployment(
                flow_id=flow_id,
                name=name,
                tags=[DIGEST_TAG],
                description="ScriptFlow's email summary of the runs (managed by ScriptFlow).",
                parameters=parameters,
                parameter_openapi_schema=DIGEST_PARAMETERS,
                work_pool_name=WORK_POOL,
                entrypoint=DIGEST_ENTRYPOINT,
                schedules=schedules,
                enforce_parameter_schema=False,
            )

    return await call(_do())


async def delete_digest_deployment(name: str) -> None:
    async def _do():
        async with get_client() as client:
            try:
                deployment = await client.read_deployment_by_name(f"{DIGEST_FLOW}/{name}")
            except ObjectNotFound:
                return
            await client.delete_deployment(deployment.id)

    await call(_do())


async def read_events(
    *,
    names: list[str],
    since: datetime,
    resource_ids: list[str] | None = None,
    resource_prefixes: list[str] | None = None,
    resource_labels: dict[str, Any] | None = None,
    limit: int = 50,
    wanted: int = 50,
) -> tuple[list, int]:
    """Events newest first: at least `wanted` of them when there are (Prefect pages by 50),
    and the total that match."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.events.schemas.events import ResourceSpecification

    resource = EventResourceFilter(
        id=resource_ids,
        id_prefix=resource_prefixes,
        labels=ResourceSpecification(resource_labels) if resource_labels else None,
    )

    async def _do():
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(
                    occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                    event=EventNameFilter(name=names),
                    resource=resource,
                ),
                limit=min(limit, 50),
            )
            events, total = list(page.events), page.total
            while len(events) < wanted and page.next_page:
                page = await client.read_events_page(str(page.next_page))
                events += page.events
            return events, total

    return await call(_do())
